//! Runtime benchmarks: prints numbers, asserts nothing.
//!
//!     cargo run --release -p drchain-tests --bin bench-runtime
//!
//! 1. State-root update cost against state size: the time to compute the new root for 100
//!    changed keys, in states of growing size. It should grow like log(size), not like size.
//! 2. Block execution: building (proposer) and executing (validator) blocks of signed
//!    heartbeats, in transactions per second on one core.

use std::time::{Duration, Instant};

use drchain_runtime::dev::{dev_key, specs};
use drchain_runtime::support::{blake3_hash, ChangeSet, Health, MemoryState, ServiceName};
use drchain_runtime::{
    build_block, execute_block, pallet_service_status, RuntimeCall, UncheckedExtrinsic,
};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn key(i: u64) -> Vec<u8> {
    blake3_hash(&i.to_le_bytes()).0.to_vec()
}

fn state_root_scaling() {
    println!("## State root: 100 changed keys");
    println!();
    println!("| keys in state | build from scratch | root for 100 changes (median of 31) | cached trie nodes |");
    println!("| ---: | ---: | ---: | ---: |");
    for size in [1_000u64, 10_000, 100_000, 1_000_000] {
        let mut state = MemoryState::new();
        let all: ChangeSet = (0..size).map(|i| (key(i), Some(vec![1u8; 32]))).collect();
        let start = Instant::now();
        state.commit(all);
        let build = start.elapsed();
        let mut samples = vec![];
        for round in 0..31u64 {
            let changes: ChangeSet = (0..100u64)
                .map(|j| {
                    (
                        key((round * 7919 + j * 104_729) % size),
                        Some(round.to_le_bytes().to_vec()),
                    )
                })
                .collect();
            let start = Instant::now();
            let delta = state.prepare(&changes);
            samples.push(start.elapsed());
            std::hint::black_box(delta.root);
        }
        println!(
            "| {size} | {:.1} ms | {:.1} µs | {} |",
            build.as_secs_f64() * 1e3,
            median(samples).as_secs_f64() * 1e6,
            state.trie_nodes()
        );
    }
    println!();
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn block_execution() -> Result<()> {
    println!("## Blocks of signed heartbeats (one core)");
    println!();
    println!("| extrinsics | build (proposer) | execute (validator) | executed tx/s |");
    println!("| ---: | ---: | ---: | ---: |");
    let spec = specs::local()?;
    let genesis = spec.build_genesis()?;
    let genesis_hash = genesis.hash();
    let service = ServiceName::new("demo-db")?;
    let signers: Vec<_> = ["alice", "bob", "charlie"]
        .iter()
        .map(|n| dev_key(n))
        .collect();
    for count in [100usize, 1000, 4000] {
        let txs: Vec<UncheckedExtrinsic> = (0..count)
            .map(|i| {
                let call = RuntimeCall::ServiceStatus(pallet_service_status::Call::Heartbeat {
                    service: service.clone(),
                    epoch_seen: 0,
                    health: Health::Healthy,
                    applied_checkpoint: Some(i as u64),
                });
                UncheckedExtrinsic::sign(&signers[i % 3], &genesis_hash, (i / 3) as u64, call)
            })
            .collect();
        let start = Instant::now();
        let built = build_block(
            &genesis.state,
            &genesis.header,
            genesis.header.timestamp + 200,
            &genesis_hash,
            txs,
            count,
        )?;
        let build = start.elapsed();
        if let Some((hash, why)) = built.rejected.first() {
            return Err(format!("the block left out {hash}: {why}").into());
        }
        let mut samples = vec![];
        for _ in 0..5 {
            let start = Instant::now();
            let executed =
                execute_block(&genesis.state, &genesis.header, &built.block, &genesis_hash)?;
            samples.push(start.elapsed());
            std::hint::black_box(executed.header.state_root);
        }
        let exec = median(samples);
        println!(
            "| {count} | {:.1} ms | {:.1} ms | {:.0} |",
            build.as_secs_f64() * 1e3,
            exec.as_secs_f64() * 1e3,
            count as f64 / exec.as_secs_f64()
        );
    }
    println!();
    Ok(())
}

fn main() -> Result<()> {
    state_root_scaling();
    block_execution()
}
