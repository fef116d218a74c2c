//! Four `drchain run` processes of the local chain on loopback, killed for real: they finalize
//! the same blocks; one SIGKILLed, the other three go on; restarted, it catches up by sync;
//! two of four killed, finalization halts without a fork and resumes when one returns; a node
//! whose key is not a member is disconnected; a member that joins with `--sync fast` takes
//! the state of a recent block instead of replaying the chain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drchain_node::network::peer_id_of;
use drchain_runtime::dev::dev_account;

const NAMES: [&str; 4] = ["alice", "bob", "charlie", "dave"];
const WAIT: Duration = Duration::from_secs(40);

/// What a node's log said: finalized hashes by height, and whole lines.
#[derive(Default)]
struct Log {
    finalized: BTreeMap<u64, String>,
    lines: Vec<String>,
}

struct Node {
    name: String,
    /// `local`, or a chain spec file (then the node's key is passed as a file).
    chain: String,
    base: PathBuf,
    port: u16,
    child: Option<Child>,
    log: Arc<Mutex<Log>>,
}

fn spawn(node: &mut Node, bootnodes: &str, extra: &[&str]) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drchain"));
    cmd.args(["run", "--chain", &node.chain, "--name", &node.name])
        .arg("--base-path")
        .arg(&node.base)
        .args(["--port", &node.port.to_string(), "--bootnodes", bootnodes])
        .args(["--rpc-port", "0", "--prometheus-port", "0"])
        .args(extra)
        // The per-block lines (debug) are what this harness follows the chain by.
        .env(
            "RUST_LOG",
            "info,libp2p=warn,drchain_node::node_loop::effects=debug",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("drchain runs");
    let stderr = child.stderr.take().unwrap();
    let log = node.log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = log.lock().unwrap();
            if let Some(rest) = line.split("Finalized #").nth(1) {
                let mut parts = rest.split_whitespace();
                let number = parts.next().and_then(|n| n.parse().ok());
                let hash = parts
                    .next()
                    .map(|h| h.trim_matches(|c| c == '(' || c == ')'));
                if let (Some(n), Some(h)) = (number, hash) {
                    log.finalized.insert(n, h.to_string());
                }
            }
            log.lines.push(line);
        }
    });
    node.child = Some(child);
}

struct Testnet {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Testnet {
    fn new() -> Self {
        let mut net = Self::unstarted();
        for i in 0..4 {
            net.start(i);
        }
        net
    }

    fn unstarted() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let nodes = NAMES
            .iter()
            .map(|name| Node {
                name: (*name).into(),
                chain: "local".into(),
                base: dir.path().join(name),
                port: common::free_port(),
                child: None,
                log: Arc::default(),
            })
            .collect();
        Self { nodes, _dir: dir }
    }

    fn bootnodes(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let peer = peer_id_of(&dev_account(&n.name)).unwrap();
                format!("/ip4/127.0.0.1/tcp/{}/p2p/{peer}", n.port)
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    fn start(&mut self, i: usize) {
        let boot = self.bootnodes();
        spawn(&mut self.nodes[i], &boot, &["--validator"]);
    }

    /// Starts node `i` knowing only node `boot`'s address.
    fn start_with_one_bootnode(&mut self, i: usize, boot: usize) {
        let n = &self.nodes[boot];
        let peer = peer_id_of(&dev_account(&n.name)).unwrap();
        let address = format!("/ip4/127.0.0.1/tcp/{}/p2p/{peer}", n.port);
        spawn(&mut self.nodes[i], &address, &["--validator"]);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
    }

    fn height(&self, i: usize) -> u64 {
        let log = self.nodes[i].log.lock().unwrap();
        log.finalized.keys().next_back().copied().unwrap_or(0)
    }

    fn hash(&self, i: usize, n: u64) -> Option<String> {
        self.nodes[i].log.lock().unwrap().finalized.get(&n).cloned()
    }

    fn wait_for(&self, which: &[usize], height: u64) {
        let deadline = Instant::now() + WAIT;
        while which.iter().any(|i| self.height(*i) < height) {
            if Instant::now() > deadline {
                let heights: Vec<(String, u64)> = which
                    .iter()
                    .map(|i| (self.nodes[*i].name.clone(), self.height(*i)))
                    .collect();
                let tail: Vec<String> = which
                    .iter()
                    .flat_map(|i| {
                        let log = self.nodes[*i].log.lock().unwrap();
                        log.lines
                            .iter()
                            .rev()
                            .take(15)
                            .rev()
                            .cloned()
                            .collect::<Vec<_>>()
                    })
                    .collect();
                panic!(
                    "not at height {height} in time: {heights:?}\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every height finalized by any two of `which` has the same hash in both.
    fn assert_no_fork(&self, which: &[usize]) {
        let top = which.iter().map(|i| self.height(*i)).max().unwrap_or(0);
        for n in 1..=top {
            let hashes: Vec<String> = which.iter().filter_map(|i| self.hash(*i, n)).collect();
            assert!(
                hashes.windows(2).all(|w| w[0] == w[1]),
                "fork at #{n}: {hashes:?}"
            );
        }
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// Every node is given alice's address only. They learn the other members' addresses from
/// her (and from each other) and connect to all of them: with alice SIGKILLed, the other
/// three still form a quorum and finalize.
#[test]
fn nodes_given_one_bootnode_find_every_member() {
    let mut net = Testnet::unstarted();
    for i in 0..4 {
        net.start_with_one_bootnode(i, 0);
    }
    let all = [0, 1, 2, 3];
    net.wait_for(&all, 3);
    // Discovery takes a moment after the first connection; give it a few blocks.
    let h = net.height(0);
    net.wait_for(&all, h + 10);
    net.kill(0);
    let h = net.height(1);
    net.wait_for(&[1, 2, 3], h + 5);
    net.assert_no_fork(&all);
}

#[test]
fn four_processes_survive_kills_halt_without_quorum_and_resume() {
    let mut net = Testnet::new();
    let all = [0, 1, 2, 3];
    net.wait_for(&all, 3);
    net.assert_no_fork(&all);

    // SIGKILL dave: the other three keep finalizing.
    net.kill(3);
    let h = net.height(0);
    net.wait_for(&[0, 1, 2], h + 5);

    // Restarted, dave catches up by sync (his WAL and database survived the kill).
    net.start(3);
    let target = net.height(0) + 2;
    net.wait_for(&all, target);
    net.assert_no_fork(&all);
    let synced = net.nodes[3]
        .log
        .lock()
        .unwrap()
        .lines
        .iter()
        .any(|l| l.contains("via=sync"));
    assert!(synced, "dave imported blocks by sync");

    // SIGKILL two of four: no quorum, finalization halts.
    net.kill(2);
    net.kill(3);
    std::thread::sleep(Duration::from_secs(1));
    let halted = net.height(0).max(net.height(1));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        net.height(0) <= halted && net.height(1) <= halted,
        "blocks finalized without a quorum"
    );
    // One returns: finalization resumes, without a fork.
    net.start(2);
    net.wait_for(&[0, 1, 2], halted + 3);
    net.assert_no_fork(&all);
}

fn wait_for_line(log: &Arc<Mutex<Log>>, needle: &str) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if log.lock().unwrap().lines.iter().any(|l| l.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn write_key(dir: &Path, seed: u8) -> PathBuf {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let pem = key.to_pkcs8_pem(Default::default()).unwrap();
    let path = dir.join("stranger.pem");
    std::fs::write(&path, pem.as_bytes()).unwrap();
    path
}

/// The local testnet's members on a chain that makes blocks as fast as it can (a 10 ms idle
/// interval), to pass sync points (#256, #512, ...) soon. Node 4 is eve, a member that is not
/// a validator. Keys are passed as files (dev names pick dev keys on built-in chains only).
struct FastChain {
    net: Testnet,
    boot: String,
    dir: tempfile::TempDir,
}

impl FastChain {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = drchain_runtime::dev::specs::local().unwrap();
        spec.params.max_block_interval_ms = 10;
        let spec_path = dir.path().join("fast.json");
        std::fs::write(&spec_path, spec.to_json()).unwrap();
        let mut net = Testnet::unstarted();
        net.nodes.push(Node {
            name: "eve".into(),
            chain: String::new(),
            base: dir.path().join("eve"),
            port: common::free_port(),
            child: None,
            log: Arc::default(),
        });
        for node in &mut net.nodes {
            node.chain = spec_path.to_str().unwrap().into();
        }
        let boot = net.bootnodes();
        Self { net, boot, dir }
    }

    fn start(&mut self, i: usize, extra: &[&str]) {
        let name = self.net.nodes[i].name.clone();
        let key = self.dir.path().join(format!("{name}.pem"));
        std::fs::write(&key, dev_pem(&name)).unwrap();
        let mut args = vec!["--node-key-file", key.to_str().unwrap()];
        args.extend(extra);
        let log = Arc::default();
        self.net.nodes[i].log = log;
        spawn(&mut self.net.nodes[i], &self.boot, &args);
    }

    /// The lowest block a node's log shows finalized in its current run.
    fn first_block(&self, i: usize) -> u64 {
        let log = self.net.nodes[i].log.lock().unwrap();
        *log.finalized.keys().next().unwrap()
    }
}

/// A member that joins late with `--sync fast` takes the state of a recent sync point from its
/// peers instead of replaying the chain, then follows blocks with the others.
#[test]
fn a_member_joining_with_fast_sync_follows_the_chain_without_replaying_it() {
    let mut chain = FastChain::new();
    for i in 0..4 {
        chain.start(i, &["--validator"]);
    }
    // Past #512: a sync point more than one interval ahead of an empty node.
    chain.net.wait_for(&[0, 1, 2, 3], 600);
    let eve = 4;
    chain.start(eve, &["--sync", "fast"]);
    assert!(
        wait_for_line(&chain.net.nodes[eve].log, "State sync done: #"),
        "eve did not sync the state"
    );
    let h = chain.net.height(0);
    chain.net.wait_for(&[eve], h + 20);
    let first = chain.first_block(eve);
    assert!(
        first >= 512 && first.is_multiple_of(256),
        "eve's first block is #{first}, not a sync point: she replayed the chain"
    );
    chain.net.assert_no_fork(&[0, 1, 2, 3, eve]);
}

/// A validator down for longer than its peers keep blocks (`--blocks-pruning 256`) cannot
/// catch up block by block and says so; restarted with `--sync fast` it takes a recent state
/// and finalizes with the others again.
#[test]
fn a_validator_behind_the_pruned_history_rejoins_with_fast_sync() {
    let mut chain = FastChain::new();
    let pruning = ["--validator", "--blocks-pruning", "256"];
    for i in 0..4 {
        chain.start(i, &pruning);
    }
    chain.net.wait_for(&[0, 1, 2, 3], 20);
    let dave = 3;
    chain.net.kill(dave);
    let h = chain.net.height(0);
    chain.net.wait_for(&[0, 1, 2], h + 900);

    chain.start(dave, &pruning);
    assert!(
        wait_for_line(&chain.net.nodes[dave].log, "may have pruned them"),
        "dave did not say why he cannot catch up"
    );
    chain.net.kill(dave);
    let mut fast = pruning.to_vec();
    fast.extend(["--sync", "fast"]);
    chain.start(dave, &fast);
    assert!(
        wait_for_line(&chain.net.nodes[dave].log, "State sync done: #"),
        "dave did not sync the state"
    );
    let h = chain.net.height(0);
    chain.net.wait_for(&[dave], h + 20);
    assert!(
        chain.first_block(dave) > h - 600,
        "dave replayed pruned blocks"
    );
    chain.net.assert_no_fork(&[0, 1, 2, dave]);
}

fn dev_pem(name: &str) -> String {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let key = drchain_runtime::dev::dev_key(name);
    key.to_pkcs8_pem(Default::default()).unwrap().to_string()
}

#[test]
fn a_non_member_node_is_disconnected() {
    let net = Testnet::new();
    net.wait_for(&[0, 1, 2, 3], 1);
    let dir = tempfile::tempdir().unwrap();
    let key = write_key(dir.path(), 9);
    let mut stranger = Node {
        name: "stranger".into(),
        chain: "local".into(),
        base: dir.path().join("base"),
        port: common::free_port(),
        child: None,
        log: Arc::default(),
    };
    let boot = net.bootnodes();
    spawn(
        &mut stranger,
        &boot,
        &["--node-key-file", key.to_str().unwrap()],
    );
    let disconnected = wait_for_line(
        &net.nodes[0].log,
        "disconnecting a peer that is not an admitted member",
    );
    if let Some(mut c) = stranger.child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(disconnected, "alice did not disconnect the non-member");
    assert!(
        stranger.log.lock().unwrap().finalized.is_empty(),
        "the non-member received blocks"
    );
}

#[test]
fn dev_mode_finalizes_within_seconds() {
    let mut node = Node {
        name: "alice".into(),
        chain: "dev".into(),
        base: PathBuf::new(),
        port: 0,
        child: None,
        log: Arc::default(),
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drchain"));
    cmd.args(["run", "--dev", "--tmp", "--port", "0", "--rpc-port", "0"])
        .args(["--prometheus-port", "0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = node.log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log.lock().unwrap().lines.push(line);
        }
    });
    node.child = Some(child);
    let started = Instant::now();
    // At info, the informant's line every few seconds says it; no line per block.
    let finalized = wait_for_line(&node.log, " blocks/s, ");
    let took = started.elapsed();
    let mut child = node.child.take().unwrap();
    // SIGTERM stops it cleanly (and removes the temporary base path).
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        finalized,
        "no block finalized: {:?}",
        node.log.lock().unwrap().lines
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(status.success(), "exit status {status:?}");
    let lines = node.log.lock().unwrap().lines.clone();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("INFO") && l.contains("finalized #")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("Imported #")),
        "a line per block at info: {lines:?}"
    );
}

#[test]
fn a_validator_killed_again_and_again_restarts_consistent() {
    let mut net = Testnet::new();
    let all = [0, 1, 2, 3];
    net.wait_for(&all, 2);
    // Kill dave at arbitrary moments: mid-vote, mid-import, mid-sync.
    for delay_ms in [130, 470, 50, 820, 260] {
        std::thread::sleep(Duration::from_millis(delay_ms));
        net.kill(3);
        net.start(3);
    }
    let target = net.height(0) + 3;
    net.wait_for(&all, target);
    net.assert_no_fork(&all);
}

#[test]
fn purge_chain_deletes_the_database_only_when_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let mut child = Command::new(env!("CARGO_BIN_EXE_drchain"))
        .args(["run", "--dev", "--port", "0", "--no-rpc", "--no-prometheus"])
        .arg("--base-path")
        .arg(&base)
        // Waits for a per-block line (debug).
        .env("RUST_LOG", "info,drchain_node::node_loop::effects=debug")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let log: Arc<Mutex<Log>> = Arc::default();
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().lines.push(line);
        }
    });
    assert!(wait_for_line(&log, "Finalized #2 "));
    child.kill().unwrap();
    child.wait().unwrap();
    let db = base.join("chains/dev/db");
    assert!(db.is_dir());

    let purge = |answer: &str, yes: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_drchain"));
        cmd.args(["purge-chain", "--chain", "dev", "--base-path"])
            .arg(&base)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if yes {
            cmd.arg("-y");
        }
        let mut child = cmd.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let refused = purge("n\n", false);
    assert!(!refused.status.success());
    assert!(db.is_dir(), "a refused purge keeps the database");
    let done = purge("", true);
    assert!(done.status.success());
    assert!(!db.exists());
    assert!(base.join("chains").exists(), "only the database goes");
    let again = purge("", true);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to purge"));
}
