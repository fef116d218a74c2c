//! `drchain bench`: measures a running testnet from outside, through its JSON-RPC and
//! Prometheus endpoints, and prints the numbers (see `docs/benchmarks.md`).
//!
//! The workload is heartbeats of the dev validators for the local spec's demo services: the
//! transaction drchain carries most, signed, validated, executed and stored like any other.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use drchain_runtime::{pallet_service_status, RuntimeCall, UncheckedExtrinsic};
use drchain_support::{AccountId, Health, ServiceName, H256};
use ed25519_dalek::SigningKey;
use jsonrpsee::core::client::Subscription;
use parity_scale_codec::Encode;

use crate::cli::BenchArgs;
use crate::client::{
    genesis_hash, header_number, submit_and_watch, watch_until_finalized, Described, RpcClient,
};
use drchain_rpc::views::{hex0x, HeaderView};
use drchain_rpc::{DrchainApiClient, SubstrateApiClient};

/// Transactions in flight per sender during the load (the runtime accepts nonces up to 64
/// ahead of an account's next one).
const WINDOW: u64 = 60;

/// A sender with a service it may heartbeat for.
struct Sender {
    key: SigningKey,
    service: ServiceName,
}

fn heartbeat(sender: &Sender, genesis: &H256, nonce: u64) -> UncheckedExtrinsic {
    let call = RuntimeCall::ServiceStatus(pallet_service_status::Call::Heartbeat {
        service: sender.service.clone(),
        epoch_seen: 0,
        health: Health::Healthy,
        applied_checkpoint: None,
    });
    UncheckedExtrinsic::sign(&sender.key, genesis, nonce, call)
}

/// Picks, for each dev name, a service it is a candidate of.
async fn senders(client: &RpcClient, names: &str) -> Result<Vec<Sender>> {
    let services = client
        .failover_services()
        .await
        .doing("reading the services")?;
    let mut out = vec![];
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let key = drchain_runtime::dev::dev_key(name);
        let account = AccountId::from(&key);
        let service = services
            .iter()
            .find(|s| s.config.candidates.contains(&account))
            .with_context(|| {
                format!("{name} is a candidate of no service: use the local testnet's spec")
            })?;
        out.push(Sender {
            key,
            service: service.name.clone(),
        });
    }
    if out.is_empty() {
        bail!("no senders");
    }
    Ok(out)
}

async fn next_nonce(client: &RpcClient, key: &SigningKey) -> Result<u64> {
    client
        .system_account_next_index(AccountId::from(key))
        .await
        .doing("reading a sender's next nonce")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Submit→finalized latency, one transaction at a time, in milliseconds (sorted).
async fn latency(
    client: &RpcClient,
    sender: &Sender,
    genesis: &H256,
    samples: usize,
) -> Result<Vec<f64>> {
    let mut nonce = next_nonce(client, &sender.key).await?;
    // Warm up, and check that the workload succeeds in the runtime (not just gets included).
    let outcome = submit_and_watch(
        client,
        &heartbeat(sender, genesis, nonce),
        Duration::from_secs(30),
    )
    .await?;
    if let Err(e) = outcome.result {
        bail!("the benchmark's heartbeat fails in the runtime: {e}");
    }
    nonce += 1;
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let x = heartbeat(sender, genesis, nonce);
        let started = Instant::now();
        watch_until_finalized(client, &x, Duration::from_secs(30)).await?;
        out.push(started.elapsed().as_secs_f64() * 1000.0);
        nonce += 1;
        // Light load: let the chain go idle between samples.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// Keeps `WINDOW` transactions in flight per sender for `seconds`; returns finalized
/// transactions per second measured on the finalized blocks of that period.
async fn throughput(
    rpcs: &[String],
    senders: Vec<Sender>,
    genesis: H256,
    seconds: u64,
) -> Result<(f64, u64, u64)> {
    let watcher = RpcClient::connect(&rpcs[0]).await?;
    let mut heads: Subscription<HeaderView> = watcher
        .chain_subscribe_finalized_heads()
        .await
        .doing("following finalized heads")?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = vec![];
    for (i, sender) in senders.into_iter().enumerate() {
        let url = rpcs[i % rpcs.len()].clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let client = RpcClient::connect(&url).await?;
            let mut nonce = next_nonce(&client, &sender.key).await?;
            while !stop.load(Ordering::Relaxed) {
                let chain = next_chain_nonce(&client, &sender.key).await?;
                if nonce < chain {
                    nonce = chain; // some were dropped: resynchronize on the chain
                }
                // Refill the window above the chain's nonce, all requests in flight at once.
                let batch: Vec<UncheckedExtrinsic> = (nonce..chain + WINDOW)
                    .map(|n| heartbeat(&sender, &genesis, n))
                    .collect();
                let sends = batch
                    .iter()
                    .map(|x| client.author_submit_extrinsic(hex0x(&x.encode())));
                let results = futures::future::join_all(sends).await;
                let accepted = results.iter().take_while(|r| r.is_ok()).count() as u64;
                if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
                    tracing::debug!(error = %e, "benchmark submission refused");
                }
                nonce += accepted;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            anyhow::Ok(())
        }));
    }
    // Warm up, then count the finalized transactions of the blocks finalized in the window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut first: Option<(u64, u64)> = None;
    let mut last = (0u64, 0u64);
    let mut transactions = 0u64;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        let Ok(Some(header)) = tokio::time::timeout(Duration::from_secs(5), heads.next()).await
        else {
            break;
        };
        let header = header?;
        let block = watcher
            .chain_get_block(Some(header.hash))
            .await
            .doing("reading a finalized block")?;
        let count = block.map_or(0, |b| b.block.extrinsics.len()) as u64;
        let number = header_number(&header)?;
        match first {
            None => first = Some((number, header.timestamp)),
            Some(_) => transactions += count,
        }
        last = (number, header.timestamp);
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    let Some(first) = first else {
        bail!("no block was finalized under load");
    };
    let span_ms = last.1.saturating_sub(first.1).max(1);
    Ok((
        transactions as f64 * 1000.0 / span_ms as f64,
        transactions,
        last.0 - first.0,
    ))
}

/// The account's nonce in the finalized state (without pending transactions), read with
/// `state_getStorage` like any Substrate client would.
async fn next_chain_nonce(client: &RpcClient, key: &SigningKey) -> Result<u64> {
    let storage_key = drchain_runtime::system::Nonces::key(&AccountId::from(key));
    let value = client
        .state_get_storage(hex0x(&storage_key), None)
        .await
        .doing("reading a sender's nonce")?;
    let Some(value) = value else {
        return Ok(0);
    };
    let bytes = hex::decode(value.trim_start_matches("0x"))?;
    <u64 as parity_scale_codec::Decode>::decode(&mut &bytes[..]).context("nonce does not decode")
}

/// Completed `chain_getHeader` and `failover_services` calls per second over `clients`
/// concurrent WebSocket connections to one node.
async fn rpc_rate(url: &str, clients: usize, seconds: u64) -> Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = vec![];
    for i in 0..clients {
        let url = url.to_owned();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let client = RpcClient::connect(&url).await?;
            let mut n = 0u64;
            while Instant::now() < deadline {
                if (n + i as u64).is_multiple_of(2) {
                    client
                        .chain_get_header(None)
                        .await
                        .doing("reading the head")?;
                } else {
                    client
                        .failover_services()
                        .await
                        .doing("reading the services")?;
                }
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    for task in tasks {
        task.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// Resident memory of a node, from its `/metrics`.
async fn resident_memory(url: &str) -> Result<u64> {
    let text = http_get(&format!("{}/metrics", url.trim_end_matches('/'))).await?;
    text.lines()
        .find_map(|l| l.strip_prefix("drchain_process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("{url}/metrics has no drchain_process_resident_memory_bytes"))
}

/// A plain HTTP/1.1 GET (for `/metrics`) that must succeed.
pub async fn http_get(url: &str) -> Result<String> {
    let (status, body) = drchain_agent::http::get(url).await?;
    if !status.is_success() {
        bail!("GET {url}: {status}");
    }
    Ok(body)
}

/// `drchain bench`.
pub fn bench(args: BenchArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let first = args.rpc.first().context("give at least one --rpc URL")?;
        let client = RpcClient::connect(first).await?;
        let genesis = genesis_hash(&client).await?;
        let senders = senders(&client, &args.senders).await?;
        let mut results = BTreeMap::new();

        eprintln!("latency: {} transactions one at a time through {first}...", args.latency_samples);
        let samples = latency(&client, &senders[0], &genesis, args.latency_samples).await?;
        let (p50, p99) = (percentile(&samples, 50.0), percentile(&samples, 99.0));
        println!("submit→finalized latency (light load, n={}): p50 {p50:.1} ms, p99 {p99:.1} ms, max {:.1} ms",
            samples.len(), samples.last().copied().unwrap_or(f64::NAN));
        results.insert("latency_p50_ms", serde_json::json!(p50));
        results.insert("latency_p99_ms", serde_json::json!(p99));

        eprintln!("throughput: {} s of load from {} senders...", args.load_seconds, senders.len());
        let (tps, transactions, blocks) =
            throughput(&args.rpc, senders, genesis, args.load_seconds).await?;
        println!("sustained finalized throughput: {tps:.0} tx/s ({transactions} transactions in {blocks} blocks)");
        results.insert("finalized_tx_per_s", serde_json::json!(tps));

        eprintln!("RPC: {} s with {} clients on {first}...", args.rpc_seconds, args.rpc_clients);
        let rate = rpc_rate(first, args.rpc_clients, args.rpc_seconds).await?;
        println!("RPC requests per second on one node: {rate:.0}");
        results.insert("rpc_requests_per_s", serde_json::json!(rate));

        let mut rss = vec![];
        for url in &args.prometheus {
            match resident_memory(url).await {
                Ok(bytes) => {
                    println!("resident memory {url}: {:.1} MiB", bytes as f64 / 1048576.0);
                    rss.push(serde_json::json!({ "node": url, "bytes": bytes }));
                }
                Err(e) => eprintln!("resident memory {url}: {e:#}"),
            }
        }
        results.insert("resident_memory", serde_json::json!(rss));
        if let Some(path) = args.json_out {
            std::fs::write(&path, serde_json::to_string_pretty(&results)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    })
}
