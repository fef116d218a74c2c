//! `drchain bench-disk`: how a node's database grows with the chain, pruned and archive (see
//! `docs/benchmarks.md`).
//!
//! It writes blocks of the local testnet through the node's own store over RocksDB — the same
//! writes a node makes for each finalized block (block, certificate, events, state and trie,
//! undo log, and what pruning deletes) — idle (empty blocks) and loaded (a heartbeat of each
//! validator in every block), and prints the database's size on disk as the chain grows.
//! Consensus is not run: it adds nothing to the database but the WAL, deleted at each block.

use std::time::Instant;

use anyhow::{Context, Result};
use drchain_consensus::codec::WireCertificate;
use drchain_consensus::store::{BlocksPruning, ChainStore, StatePruning};
use drchain_runtime::dev::{dev_key, specs};
use drchain_runtime::{build_block, pallet_failover, pallet_service_status, RuntimeCall};
use drchain_runtime::{Genesis, UncheckedExtrinsic};
use drchain_support::{AccountId, Health, Overlay, ServiceName, StateRead};

use crate::cli::BenchDiskArgs;
use crate::rocks::RocksDb;

const VALIDATORS: [&str; 4] = ["alice", "bob", "charlie", "dave"];
/// Block time of the written chain (the local spec's idle interval).
const BLOCK_MS: u64 = 200;

/// Runs the benchmark and prints one row per checkpoint.
pub fn bench_disk(args: BenchDiskArgs) -> Result<()> {
    let spec = specs::local()?;
    let genesis = spec.build_genesis().map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("| workload | pruning | blocks | database on disk | its log |");
    println!("| --- | --- | ---: | ---: | ---: |");
    let configs = [
        ("defaults", BlocksPruning::DEFAULT, StatePruning::DEFAULT),
        ("archive", BlocksPruning::Archive, StatePruning::Archive),
    ];
    for loaded in [false, true] {
        for (label, blocks, states) in configs {
            let dir = tempfile::tempdir()?;
            let db = RocksDb::open(dir.path())?;
            let mut store = ChainStore::open(db.clone(), &genesis)?;
            store.set_blocks_pruning(blocks);
            store.set_state_pruning(states);
            let senders = if loaded { senders(&genesis)? } else { vec![] };
            let started = Instant::now();
            let mut written = 0;
            for checkpoint in 1..=args.checkpoints {
                let target = args.blocks * checkpoint / args.checkpoints;
                write_blocks(&mut store, &genesis, &senders, target - written)?;
                written = target;
                // Settled: what is in memory goes to files, whose size is what stays.
                db.flush()?;
                let bytes = crate::disk::bytes_under(dir.path());
                let log = log_bytes(dir.path());
                let workload = if loaded {
                    "4 heartbeats per block"
                } else {
                    "idle"
                };
                println!(
                    "| {workload} | {label} | {written} | {:.1} MB | {:.1} MB |",
                    bytes as f64 / 1e6,
                    log as f64 / 1e6,
                );
            }
            eprintln!(
                "{} blocks in {:.0} s",
                args.blocks,
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Bytes of RocksDB's write-ahead log files in `dir` (`*.log`): bounded by the memtables'
/// size rather than by the chain.
fn log_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Each validator with a service it is a candidate of, and its next nonce.
fn senders(genesis: &Genesis) -> Result<Vec<(ed25519_dalek::SigningKey, ServiceName)>> {
    let services = pallet_failover::services(&Overlay::new(&genesis.state as &dyn StateRead));
    VALIDATORS
        .iter()
        .map(|name| {
            let key = dev_key(name);
            let account = AccountId::from(&key);
            let (service, _, _) = services
                .iter()
                .find(|(_, config, _)| config.candidates.contains(&account))
                .with_context(|| format!("{name} is a candidate of no service"))?;
            Ok((key, service.clone()))
        })
        .collect()
}

/// Builds, certifies and imports `count` blocks, each with one heartbeat per sender.
fn write_blocks<D: drchain_consensus::store::kv::KeyValueDb>(
    store: &mut ChainStore<D>,
    genesis: &Genesis,
    senders: &[(ed25519_dalek::SigningKey, ServiceName)],
    count: u64,
) -> Result<()> {
    let keys: Vec<_> = VALIDATORS.iter().map(|n| dev_key(n)).collect();
    let genesis_hash = genesis.hash();
    for _ in 0..count {
        let head = store.head().clone();
        let heartbeats: Vec<UncheckedExtrinsic> = senders
            .iter()
            .map(|(key, service)| {
                let call = RuntimeCall::ServiceStatus(pallet_service_status::Call::Heartbeat {
                    service: service.clone(),
                    epoch_seen: 0,
                    health: Health::Healthy,
                    applied_checkpoint: None,
                });
                // One transaction per sender per block: the nonce is the block's number - 1.
                UncheckedExtrinsic::sign(key, &genesis_hash, head.number, call)
            })
            .collect();
        let built = build_block(
            &store.state(),
            &head,
            head.timestamp + BLOCK_MS,
            &genesis_hash,
            heartbeats,
            senders.len().max(1),
        )?;
        if built.block.extrinsics.len() != senders.len() {
            anyhow::bail!("a heartbeat was left out of block #{}", head.number + 1);
        }
        let number = built.block.header.number;
        let certificate =
            WireCertificate::signed_by(&genesis_hash, number, built.block.hash(), &keys);
        store.import(&built.block, built.executed, &certificate)?;
    }
    Ok(())
}
