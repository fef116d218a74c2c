//! `drchain bench-join`: how long a new member takes to follow the chain, by the chain's
//! length and the sync mode (see `docs/benchmarks.md`).
//!
//! For each length it builds a chain of at least that many empty blocks of the local testnet
//! (certified by its four dev validators, written straight into their databases: producing
//! 100,000 blocks through consensus would take hours), starts the four validators on it (as
//! archive nodes: a node that replays from genesis needs peers that keep every block), and
//! times eve, a member, joining with `--sync fast` and then with `--sync full`: from her start
//! until her finalized head reaches the height the validators had finalized when she started.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use drchain_consensus::codec::WireCertificate;
use drchain_consensus::state_sync::SYNC_POINT_INTERVAL;
use drchain_consensus::store::kv::{KeyValueDb, MemoryDb};
use drchain_consensus::store::ChainStore;
use drchain_rpc::SubstrateApiClient;
use drchain_runtime::dev::{dev_account, dev_key, specs};
use drchain_runtime::{build_block, ChainSpec, Genesis};

use crate::cli::BenchJoinArgs;
use crate::client::{header_number, RpcClient};
use crate::network::peer_id_of;
use crate::rocks::RocksDb;
use crate::run::database_path;

const VALIDATORS: [&str; 4] = ["alice", "bob", "charlie", "dave"];
/// Block time of the generated chain (the local spec's idle interval).
const BLOCK_MS: u64 = 200;
/// The longest a join may take before the run gives up on it.
const JOIN_LIMIT: Duration = Duration::from_secs(1800);

/// Runs the benchmark and prints one row per chain length and mode.
pub fn bench_join(args: BenchJoinArgs) -> Result<()> {
    let exe = std::env::current_exe().context("finding the drchain binary")?;
    let spec = specs::local()?;
    let genesis = spec.build_genesis().map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!("| blocks | sync | seconds to follow the head | blocks/s replayed |");
    println!("| ---: | --- | ---: | ---: |");
    for &wanted in &args.blocks {
        let dir = tempfile::tempdir()?;
        // Just before a sync point, so the validators serve one soon after they start.
        let blocks =
            wanted.div_ceil(SYNC_POINT_INTERVAL) * SYNC_POINT_INTERVAL + SYNC_POINT_INTERVAL - 6;
        let started = Instant::now();
        build_chain(dir.path(), &spec, &genesis, blocks)?;
        eprintln!(
            "built {blocks} blocks into four databases in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        let mut net = Network::start(&exe, dir.path())?;
        runtime.block_on(net.wait_for_sync_point(blocks))?;
        for mode in ["fast", "full"] {
            let (seconds, replayed) = runtime.block_on(net.join(&exe, dir.path(), mode))?;
            let rate = match replayed {
                Some(n) => format!("{:.0}", n as f64 / seconds),
                None => "-".into(),
            };
            println!("| {blocks} | {mode} | {seconds:.1} | {rate} |");
        }
    }
    Ok(())
}

/// Writes `blocks` certified empty blocks after genesis into each validator's database.
fn build_chain(dir: &Path, spec: &ChainSpec, genesis: &Genesis, blocks: u64) -> Result<()> {
    let memory = MemoryDb::new();
    let mut store = ChainStore::open(memory.clone(), genesis)?;
    let keys: Vec<_> = VALIDATORS.iter().map(|n| dev_key(n)).collect();
    let genesis_hash = genesis.hash();
    for _ in 0..blocks {
        let head = store.head().clone();
        let built = build_block(
            &store.state(),
            &head,
            head.timestamp + BLOCK_MS,
            &genesis_hash,
            [],
            1,
        )?;
        let number = built.block.header.number;
        let certificate =
            WireCertificate::signed_by(&genesis_hash, number, built.block.hash(), &keys);
        store.import(&built.block, built.executed, &certificate)?;
    }
    for name in VALIDATORS {
        let path = database_path(&dir.join(name), spec);
        std::fs::create_dir_all(&path)?;
        let db = RocksDb::open(&path)?;
        let mut batch = vec![];
        for item in memory.iter_from(b"") {
            let (k, v) = item?;
            batch.push((k, Some(v)));
            if batch.len() == 100_000 {
                db.write(std::mem::take(&mut batch), false)?;
            }
        }
        db.write(batch, true)?;
    }
    Ok(())
}

/// A child process, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Network {
    _validators: Vec<Process>,
    bootnodes: String,
    alice_rpc: String,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn(
    exe: &Path,
    dir: &Path,
    name: &str,
    port: u16,
    rpc: u16,
    extra: &[&str],
) -> Result<Process> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let child = Command::new(exe)
        .args([
            "run",
            "--chain",
            "local",
            "--name",
            name,
            "--worker-threads",
            "1",
        ])
        .arg("--base-path")
        .arg(dir.join(name))
        .args(["--port", &port.to_string(), "--rpc-port", &rpc.to_string()])
        .arg("--no-prometheus")
        .args(extra)
        .env("RUST_LOG", "info,libp2p=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Process(child))
}

async fn finalized(url: &str) -> Option<u64> {
    let client = RpcClient::connect(url).await.ok()?;
    let header = client.chain_get_header(None).await.ok()??;
    header_number(&header).ok()
}

impl Network {
    fn start(exe: &Path, dir: &Path) -> Result<Self> {
        let ports: Vec<(u16, u16)> = VALIDATORS
            .iter()
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<_>>()?;
        let mut bootnodes = vec![];
        for (name, (port, _)) in VALIDATORS.iter().zip(&ports) {
            let peer = peer_id_of(&dev_account(name)).context("a dev key's peer id")?;
            bootnodes.push(format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}"));
        }
        let bootnodes = bootnodes.join(",");
        let mut validators = vec![];
        for (name, (port, rpc)) in VALIDATORS.iter().zip(&ports) {
            // Archive: a node that replays from genesis needs peers that keep every block.
            let args = [
                "--validator",
                "--bootnodes",
                &bootnodes,
                "--blocks-pruning",
                "archive",
            ];
            validators.push(spawn(exe, dir, name, *port, *rpc, &args)?);
        }
        Ok(Self {
            _validators: validators,
            bootnodes,
            alice_rpc: format!("http://127.0.0.1:{}", ports[0].1),
        })
    }

    /// Waits until the validators finalized past the first sync point after the built chain.
    async fn wait_for_sync_point(&self, built: u64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let point = (built / SYNC_POINT_INTERVAL + 1) * SYNC_POINT_INTERVAL;
        while finalized(&self.alice_rpc).await.unwrap_or(0) <= point {
            if Instant::now() > deadline {
                bail!("the validators did not reach #{point} in 2 minutes");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Starts eve with `--sync mode` on an empty database; returns the seconds until she
    /// follows the head, and how many blocks she replayed (full sync).
    async fn join(&mut self, exe: &Path, dir: &Path, mode: &str) -> Result<(f64, Option<u64>)> {
        let base = dir.join("eve");
        if base.exists() {
            std::fs::remove_dir_all(&base)?;
        }
        let rpc = free_port()?;
        let url = format!("http://127.0.0.1:{rpc}");
        let target = finalized(&self.alice_rpc).await.context("alice's RPC")?;
        let started = Instant::now();
        let _eve = spawn(
            exe,
            dir,
            "eve",
            free_port()?,
            rpc,
            &["--sync", mode, "--bootnodes", &self.bootnodes],
        )?;
        loop {
            if finalized(&url).await.unwrap_or(0) >= target {
                break;
            }
            if started.elapsed() > JOIN_LIMIT {
                bail!("eve did not reach #{target} with --sync {mode} in {JOIN_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        Ok((seconds, (mode == "full").then_some(target)))
    }
}
