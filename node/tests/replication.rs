//! Replication end to end, with real processes: four validators; service `svc` on alice, bob
//! and charlie, each running the agent with `[service.replication]`, over a real SQLite
//! database (`snapshot_command` = `sqlite3 .backup`) or over a `watch`ed directory of files
//! replaced atomically. A client writes numbered rows into the active node's data all along
//! and remembers when each write was acknowledged.
//!
//! The active machine is SIGKILLed. Judged from outside: the new active's `on_promote` got the
//! checkpoint its target shows; that target equals, byte for byte, the checkpoint as the chain
//! recorded it (rebuilt from the dead node's chunk store); the checkpoint was recorded no more
//! than `max_lag_ms` before the kill; it holds every row the client had acknowledged before
//! the checkpoint, as a gap-free prefix. The dead node comes back, drops what it wrote after
//! that checkpoint and follows the new active as a standby.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::validators::{bootnodes, NodeProcess};
use drchain_replication::manifest::missing;
use drchain_replication::{materialize, ChunkStore};
use drchain_runtime::dev::dev_account;
use drchain_support::H256;

const NAMES: [&str; 4] = ["alice", "bob", "charlie", "dave"];
const CANDIDATES: [&str; 3] = ["alice", "bob", "charlie"];
const WAIT: Duration = Duration::from_secs(60);
const MAX_LAG_MS: u64 = 1000;

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn sqlite_available() -> bool {
    Command::new("sqlite3")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// How the service keeps its data, and so how it is replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A SQLite database, copied consistently by `snapshot_command` (`sqlite3 .backup`).
    Sqlite,
    /// One file per row, each written aside and renamed into the `watch`ed directory.
    Watch,
}

impl Mode {
    /// The `[service.replication]` lines that differ.
    fn consistency(self) -> &'static str {
        match self {
            Mode::Sqlite => {
                r#"snapshot_command = "sqlite3 -cmd '.timeout 5000' \"$DRCHAIN_SOURCE/db.sqlite\" \".backup '$1/db.sqlite'\"""#
            }
            Mode::Watch => "watch = true",
        }
    }

    /// Shell lines of `on_promote` that restore `data` from the checkpoint the target shows
    /// (none on the very first promotion: the service starts empty), unless the node's own
    /// data is newer than any checkpoint (`DRCHAIN_KEEP_DATA=1`).
    fn restore(self, data: &Path) -> String {
        let data = data.display();
        match self {
            Mode::Sqlite => format!(
                r#"mkdir -p {data} && if [ "$DRCHAIN_KEEP_DATA" = 1 ]; then :; elif [ -n "$DRCHAIN_CHECKPOINT_PATH" ]; then cp "$DRCHAIN_CHECKPOINT_PATH/db.sqlite" {data}/db.tmp && mv {data}/db.tmp {data}/db.sqlite; else rm -f {data}/db.sqlite; fi"#
            ),
            Mode::Watch => format!(
                r#"if [ "$DRCHAIN_KEEP_DATA" = 1 ]; then mkdir -p {data}; else rm -rf {data} && mkdir -p {data} && if [ -n "$DRCHAIN_CHECKPOINT_PATH" ]; then cp -a "$DRCHAIN_CHECKPOINT_PATH/." {data}/; fi; fi"#
            ),
        }
    }

    /// Writes row `n` into the service's data in `data`; whether it was acknowledged.
    fn write(self, data: &Path, n: u64) -> bool {
        match self {
            Mode::Sqlite => {
                let sql = format!(
                    "create table if not exists t(id integer primary key, v text); insert into t values({n}, '{}');",
                    "x".repeat(200)
                );
                Command::new("sqlite3")
                    .args(["-cmd", ".timeout 5000"])
                    .arg(data.join("db.sqlite"))
                    .arg(&sql)
                    .output()
                    .is_ok_and(|o| o.status.success())
            }
            Mode::Watch => {
                let aside = data.join(format!(".row-{n}.tmp"));
                std::fs::write(&aside, vec![(n % 251) as u8; 4096]).is_ok()
                    && std::fs::rename(&aside, data.join(format!("row-{n}"))).is_ok()
            }
        }
    }

    /// The rows in a copy of the data.
    fn rows(self, dir: &Path) -> Vec<u64> {
        match self {
            Mode::Sqlite => {
                let out = Command::new("sqlite3")
                    .arg(dir.join("db.sqlite"))
                    .arg("select id from t order by id")
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(|l| l.parse().unwrap())
                    .collect()
            }
            Mode::Watch => {
                let mut rows: Vec<u64> = files(dir)
                    .into_iter()
                    .filter_map(|(name, bytes)| {
                        let n = name.strip_prefix("row-")?.parse().ok()?;
                        assert_eq!(bytes, vec![(n % 251) as u8; 4096], "row {n} is torn");
                        Some(n)
                    })
                    .collect();
                rows.sort();
                rows
            }
        }
    }
}

/// Where the test keeps a node's service data.
trait ServiceDirs {
    fn data(&self) -> PathBuf;
    fn replica(&self) -> PathBuf;
    /// Written by `on_promote`: `EPOCH CHECKPOINT PATH`; removed by `on_demote`.
    fn promoted(&self) -> PathBuf;
    fn chunk_store(&self) -> PathBuf;
}

impl ServiceDirs for NodeProcess {
    fn data(&self) -> PathBuf {
        self.base.join("data")
    }
    fn replica(&self) -> PathBuf {
        self.base.join("replica")
    }
    fn promoted(&self) -> PathBuf {
        self.base.join("promoted")
    }
    fn chunk_store(&self) -> PathBuf {
        self.base.join("chains/replication-test/db.chunks")
    }
}

struct Cluster {
    nodes: Vec<NodeProcess>,
    spec: PathBuf,
    mode: Mode,
    /// More `[service.replication]` lines (the defaults otherwise).
    replication: &'static str,
    /// Last: fields drop in order, and the nodes must be dead before their directories go
    /// (a live node would recreate them, leaking them in the system's temporary directory).
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(mode: Mode) -> Self {
        Self::start_with(mode, false, "")
    }

    /// A cluster whose service has `allow_data_loss` as given, and `replication`'s lines in
    /// each agent's `[service.replication]`.
    fn start_with(mode: Mode, allow_data_loss: bool, replication: &'static str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let spec = write_spec(dir.path(), allow_data_loss);
        let nodes = NAMES
            .iter()
            .map(|name| NodeProcess::new(dir.path(), name))
            .collect();
        let mut cluster = Self {
            _dir: dir,
            nodes,
            spec,
            mode,
            replication,
        };
        for i in 0..NAMES.len() {
            cluster.spawn(i);
        }
        cluster
    }

    fn node(&self, name: &str) -> &NodeProcess {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    fn spawn(&mut self, i: usize) {
        let boot = bootnodes(&self.nodes);
        let node = &mut self.nodes[i];
        let config = CANDIDATES
            .contains(&node.name)
            .then(|| agent_config(node, self.mode, self.replication));
        node.spawn(
            &self.spec,
            &boot,
            config,
            "info,libp2p=warn,informalsystems_malachitebft_core_consensus=error,drchain_agent::replica=debug",
        );
    }

    /// Sends `signal` (`STOP`, `CONT`) to `name`'s node process.
    fn signal(&self, name: &str, signal: &str) {
        let pid = self.node(name).child.as_ref().unwrap().id();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {name}");
    }

    fn kill(&mut self, name: &str) {
        let node = self.nodes.iter_mut().find(|n| n.name == name).unwrap();
        let mut child = node.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The node whose `on_promote` ran last and whose `on_demote` has not: `(name, epoch)`.
    fn active(&self) -> Option<(&'static str, u64, Option<u64>)> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .filter_map(|n| {
                let text = std::fs::read_to_string(n.promoted()).ok()?;
                let mut words = text.split_whitespace();
                let epoch = words.next()?.parse().ok()?;
                let checkpoint = words.next().and_then(|c| c.parse().ok());
                Some((n.name, epoch, checkpoint))
            })
            .max_by_key(|(_, e, _)| *e)
    }

    fn wait_for<T>(&self, what: &str, f: impl FnMut() -> Option<T>) -> T {
        self.wait_within(WAIT, what, f)
    }

    /// [`Self::wait_for`] with a bound of its own, looking a hundred times within it (at
    /// most every 50 ms).
    fn wait_within<T>(&self, bound: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}\n{}", self.dump());
            std::thread::sleep((bound / 100).min(Duration::from_millis(50)));
        }
    }

    /// Waits for an active; returns it, the standby next in line (the first other candidate by
    /// priority), the active's source and that standby's target.
    fn active_and_next_in_line(&self) -> (&'static str, &'static str, PathBuf, PathBuf) {
        let (first, _, _) = self.wait_for("no node was promoted", || self.active());
        let next = CANDIDATES.into_iter().find(|n| *n != first).unwrap();
        (
            first,
            next,
            self.node(first).data(),
            self.node(next).replica(),
        )
    }

    /// A JSON-RPC call to dave (never killed).
    fn rpc(&self, method: &str, params: serde_json::Value) -> serde_json::Value {
        common::rpc_call(self.node("dave").rpc, method, &params)
            .unwrap_or_else(|e| panic!("{method} to dave: {e}"))
    }

    /// Recorded checkpoints: sequence → (manifest root, block timestamp ms).
    fn checkpoints(&self) -> BTreeMap<u64, (H256, u64)> {
        self.rpc("checkpoints_list", serde_json::json!(["svc"]))
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let cp = &c["checkpoint"];
                (
                    c["sequence"].as_u64().unwrap(),
                    (
                        cp["manifest_root"].as_str().unwrap().parse().unwrap(),
                        cp["timestamp"].as_u64().unwrap(),
                    ),
                )
            })
            .collect()
    }

    /// How many blocks after the one that recorded checkpoint `sequence` the block carrying
    /// `node`'s acknowledgement of it was (a standby acknowledges what the chain recorded:
    /// one at best).
    fn blocks_to_acknowledgement(&self, node: &str, sequence: u64) -> u64 {
        let recorded = self
            .rpc("checkpoints_list", serde_json::json!(["svc"]))
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["sequence"].as_u64() == Some(sequence))
            .and_then(|c| c["checkpoint"]["block"].as_u64())
            .unwrap_or_else(|| panic!("checkpoint {sequence} is not recorded"));
        let account = dev_account(node).to_string();
        let mut number = recorded;
        loop {
            let hash = self.rpc("chain_getBlockHash", serde_json::json!([number]));
            assert!(
                !hash.is_null(),
                "no block after #{recorded} carries {node}'s acknowledgement of {sequence}"
            );
            let events = self.rpc("chain_getEvents", serde_json::json!([hash]));
            let acknowledged = events["events"].as_array().unwrap().iter().any(|e| {
                let ack = &e["event"]["checkpoints"]["checkpoint_acknowledged"];
                ack["node"].as_str() == Some(account.as_str())
                    && ack["sequence"].as_u64() == Some(sequence)
            });
            if acknowledged {
                return number - recorded;
            }
            number += 1;
        }
    }

    /// The checkpoint each candidate holds on chain.
    fn acks(&self) -> BTreeMap<&'static str, u64> {
        let acks = self.rpc("checkpoints_acks", serde_json::json!(["svc"]));
        CANDIDATES
            .into_iter()
            .filter_map(|name| {
                let account = dev_account(name).to_string();
                acks.as_array()
                    .unwrap()
                    .iter()
                    .find(|a| a["node"].as_str() == Some(account.as_str()))
                    .map(|a| (name, a["sequence"].as_u64().unwrap()))
            })
            .collect()
    }

    /// Each running node's view in one line (head, finalized head, peers), then the
    /// service's latest failover events: what a failure message shows first.
    fn summary(&self) -> String {
        let mut out = String::new();
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            let number = |method: &str| {
                let head = common::rpc_call(n.rpc, method, &serde_json::json!([])).ok()?;
                let hash = head.as_str().map(|h| serde_json::json!([h]));
                let header = match hash {
                    Some(hash) => common::rpc_call(n.rpc, "chain_getHeader", &hash).ok()?,
                    None => head,
                };
                header["number"].as_str().map(str::to_owned)
            };
            let peers = common::rpc_call(n.rpc, "system_health", &serde_json::json!([]))
                .map(|h| h["peers"].to_string())
                .unwrap_or_else(|e| e.to_string());
            out.push_str(&format!(
                "{}: head {:?}, finalized {:?}, peers {peers}\n",
                n.name,
                number("chain_getHeader"),
                number("chain_getFinalizedHead"),
            ));
        }
        if let Ok(history) = common::rpc_call(
            self.node("dave").rpc,
            "failover_history",
            &serde_json::json!(["svc"]),
        ) {
            let events = history["events"].as_array().cloned().unwrap_or_default();
            for e in events.iter().rev().take(6).rev() {
                out.push_str(&format!("{e}\n"));
            }
        }
        out
    }

    fn dump(&self) -> String {
        let summary = self.summary();
        summary
            + &self
                .nodes
                .iter()
                .map(|n| {
                    n.dump(|l| {
                        l.contains("agent")
                            || l.contains("checkpoint")
                            || l.contains("WARN")
                            || l.contains("ERROR")
                    })
                })
                .collect::<String>()
    }
}

fn agent_config(node: &NodeProcess, mode: Mode, replication: &str) -> String {
    let data = node.data();
    let promoted = node.promoted();
    // Restores the data from the checkpoint its target shows, then says which one it was.
    let on_promote = format!(
        r#"{} && echo "$DRCHAIN_EPOCH $DRCHAIN_CHECKPOINT $DRCHAIN_CHECKPOINT_PATH" > {promoted}"#,
        mode.restore(&data),
        promoted = promoted.display()
    );
    format!(
        r#"
[[service]]
name = "svc"
on_promote = '{on_promote}'
on_demote = "rm -f {promoted}"
[service.health_check]
kind = "none"
[service.replication]
source = "{data}"
{consistency}
target = "{replica}"
{replication}
"#,
        consistency = mode.consistency(),
        promoted = promoted.display(),
        data = data.display(),
        replica = node.replica().display(),
    )
}

fn write_spec(dir: &Path, allow_data_loss: bool) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("chain-spec/local.json")).unwrap();
    let mut spec: serde_json::Value = serde_json::from_str(&text).unwrap();
    spec["id"] = "replication-test".into();
    spec["services"] = serde_json::json!([{
        "name": "svc",
        "candidates": CANDIDATES,
        "heartbeat_timeout_ms": 1000,
        "promotion_timeout_ms": 5000,
        "max_lag_ms": MAX_LAG_MS,
        "allow_data_loss": allow_data_loss,
    }]);
    let path = dir.join("spec.json");
    std::fs::write(&path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    path
}

/// An acknowledged write: row, the node that took it, when (Unix ms).
type Ack = (u64, &'static str, u64);
/// Where the client writes: the active node and its data; `None` while there is none.
type Route = Arc<Mutex<Option<(&'static str, PathBuf)>>>;

/// A client of the service: inserts row 1, 2, 3, … into the active node's database, each
/// acknowledged when `sqlite3` committed it; remembers when.
struct Writer {
    acked: Arc<Mutex<Vec<Ack>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(active: Route, mode: Mode) -> Self {
        let acked = Arc::new(Mutex::new(vec![]));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, stopped) = (acked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut next = 1u64;
            while !stopped.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
                let Some((name, data)) = active.lock().unwrap().clone() else {
                    continue;
                };
                if mode.write(&data, next) {
                    log.lock().unwrap().push((next, name, wall_ms()));
                    next += 1;
                }
            }
        });
        Self {
            acked,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies the directories and files under `from` into `to`; a file that goes away meanwhile
/// (a live node's temporary) is left out.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let (path, copy) = (entry.path(), to.join(entry.file_name()));
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => copy_tree(&path, &copy),
            Ok(kind) if kind.is_file() => {
                let _ = std::fs::copy(&path, &copy);
            }
            _ => {}
        }
    }
}

/// Every file under `dir`, relative path → bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    try_files(dir).unwrap_or_else(|| panic!("cannot read {}", dir.display()))
}

/// The files of `dir`, or `None` if it or one of them went away while being read.
fn try_files(dir: &Path) -> Option<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        out.insert(
            entry.file_name().to_string_lossy().into_owned(),
            std::fs::read(entry.path()).ok()?,
        );
    }
    Some(out)
}

#[test]
fn a_killed_active_s_sqlite_data_survives_on_the_new_active_within_the_rpo() {
    if !sqlite_available() {
        eprintln!("skipped: the sqlite3 command is not installed (apt install sqlite3)");
        return;
    }
    kill_the_active_and_check_the_data(Mode::Sqlite);
}

#[test]
fn a_killed_active_s_watched_files_survive_on_the_new_active_within_the_rpo() {
    kill_the_active_and_check_the_data(Mode::Watch);
}

fn kill_the_active_and_check_the_data(mode: Mode) {
    let mut c = Cluster::start(mode);
    let target: Route = Arc::default();
    let writer = Writer::start(target.clone(), mode);
    let (first, e1, _) = c.wait_for("no node was promoted", || c.active());
    *target.lock().unwrap() = Some((first, c.node(first).data()));

    // Replication runs: checkpoints are recorded and both standbys acknowledge one that
    // holds rows.
    c.wait_for("standbys never acknowledged a checkpoint with rows", || {
        let acks = c.acks();
        let latest = *c.checkpoints().keys().last()?;
        let standbys: Vec<_> = CANDIDATES.iter().filter(|n| **n != first).collect();
        let caught_up = standbys
            .iter()
            .all(|s| acks.get(**s).is_some_and(|a| *a >= 5 && *a + 5 >= latest));
        (latest >= 5 && caught_up).then_some(())
    });

    // A standby is SIGKILLed, in the middle of applying a checkpoint as likely as not (it
    // applies several a second): its target is exactly a checkpoint the active took (and the
    // chain records), and once restarted it catches up.
    let standby = CANDIDATES.into_iter().find(|n| *n != first).unwrap();
    let acked_before = c.acks()[standby];
    c.kill(standby);
    assert_target_is_a_recorded_checkpoint(&c, standby);
    // Then as if the machine had lost power right after showing that checkpoint (shown
    // before it is flushed): one of its files never reached the disk, and no flush completed.
    let replica = c.node(standby).replica();
    let shown_dir = std::fs::canonicalize(&replica).unwrap();
    let file = std::fs::read_dir(&shown_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_file())
        .expect("the target holds files");
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, vec![0u8; 100]).unwrap();
    let versions = replica.with_file_name(".replica.checkpoints");
    std::fs::write(versions.join(".durable"), "0-never-flushed").unwrap();
    c.spawn(NAMES.iter().position(|n| *n == standby).unwrap());
    c.wait_for("the restarted standby never caught up", || {
        (c.acks()[standby] >= acked_before + 3).then_some(())
    });
    // It noticed and did not trust the torn checkpoint; what it shows now is whole.
    let log = c
        .node(standby)
        .dump(|l| l.contains("torn by an unclean stop"));
    assert!(log.lines().count() > 1, "{log}");
    assert_target_is_a_recorded_checkpoint(&c, standby);
    std::thread::sleep(Duration::from_millis(1500));

    // The active machine dies; its service (the client's writes) goes with it.
    let killed_at = wall_ms();
    c.kill(first);
    *target.lock().unwrap() = None;
    let (second, e2, applied) = c.wait_for("no new active", || {
        c.active().filter(|(n, e, _)| *n != first && *e > e1)
    });
    let applied = applied.expect("on_promote named the checkpoint it started from");
    let replica = c.node(second).replica();

    // The target equals, byte for byte, the checkpoint the dead active took (rebuilt here
    // from its chunk store, or the new active's): one the chain recorded, or a newer one it
    // announced and the standby applied before a block could record it. The standby
    // acknowledged the newest recorded checkpoint its data covers.
    let checkpoints = c.checkpoints();
    let (root, recorded_at) = match checkpoints.get(&applied) {
        Some((root, at)) => {
            assert_eq!(
                c.acks().get(second),
                Some(&applied),
                "it acknowledged what it holds"
            );
            (*root, *at)
        }
        None => {
            let (sequence, root) = shown_checkpoint(&replica);
            assert_eq!(sequence, applied);
            assert!(c.acks().get(second).is_some_and(|a| *a < applied));
            assert!(
                checkpoints.keys().all(|s| *s < applied),
                "applied behind the chain"
            );
            (root, killed_at)
        }
    };
    // The dead active pushes a checkpoint before storing it (its store write comes after the
    // push): killed in between, it never stored one the standby applied from the push. The
    // standby stored that one before making it durable; its store is copied, not opened in
    // place (opening a store removes the temporary files of writes under way).
    let dead = ChunkStore::open(c.node(first).chunk_store()).unwrap();
    let copied = tempfile::tempdir().unwrap();
    let (store, manifest) = match dead.manifest(&root) {
        Ok(manifest) => (dead, manifest),
        Err(_) => {
            copy_tree(&c.node(second).chunk_store(), copied.path());
            let store = ChunkStore::open(copied.path()).unwrap();
            let manifest = store.manifest(&root).unwrap_or_else(|e| {
                panic!("neither the dead active nor {second} holds checkpoint {root}: {e}")
            });
            (store, manifest)
        }
    };
    let rebuilt = tempfile::tempdir().unwrap();
    let rebuilt_target = rebuilt.path().join("svc");
    materialize(&manifest, &store, &rebuilt_target, "check").unwrap();
    assert_eq!(files(&replica), files(&rebuilt_target));
    assert!(
        recorded_at + MAX_LAG_MS >= killed_at,
        "checkpoint {applied} was recorded {} ms before the kill",
        killed_at - recorded_at
    );

    // From the client's side: the new active holds a gap-free prefix of the acknowledged
    // writes; everything acknowledged well before the checkpoint was recorded (or, for one
    // never recorded, before the kill) is in it.
    let held = mode.rows(&replica);
    assert_eq!(held, (1..=held.len() as u64).collect::<Vec<_>>(), "a gap");
    let acked = writer.acked.lock().unwrap().clone();
    let lost: Vec<_> = acked
        .iter()
        .filter(|(id, _, _)| !held.contains(id))
        .collect();
    for (id, _, at) in &lost {
        assert!(
            *at + MAX_LAG_MS > recorded_at,
            "row {id}, acknowledged {} ms before checkpoint {applied} was recorded, is lost",
            recorded_at - at
        );
    }
    eprintln!(
        "{first} killed; {second} (epoch {e1} -> {e2}) started from checkpoint {applied} with {} rows; {} acknowledged rows lost, the oldest acknowledged {} ms before the kill",
        held.len(),
        lost.len(),
        lost.first().map_or(0, |(_, _, at)| killed_at.saturating_sub(*at))
    );

    // `drchain restore` rebuilds the same checkpoint through dave, who holds none of it and
    // gathers it from the members that do.
    let restored = tempfile::tempdir().unwrap();
    let out = restored.path().join("svc");
    let rpc = format!("http://127.0.0.1:{}", c.node("dave").rpc);
    let checkpoint = applied.to_string();
    let restore = |out: &Path, extra: &[&str]| {
        let mut args = vec!["restore", "--service", "svc", "--checkpoint", &checkpoint];
        args.extend(["--out", out.to_str().unwrap(), "--rpc", &rpc]);
        args.extend(extra);
        common::ok(restored.path(), &args)
    };
    let report = restore(&out, &[]);
    assert!(report.contains("restored svc checkpoint"), "{report}");
    assert_eq!(files(&out), files(&replica));
    assert!(!report.contains("; 0 bytes received"), "{report}");
    // With a cache: the first restore fills it, the second takes every chunk from it.
    let cache = restored.path().join("cache");
    let cache = cache.to_str().unwrap();
    let restore_cached = |i: usize, all_cached: bool| {
        let again = restored.path().join(format!("svc-{i}"));
        let report = restore(&again, &["--cache", cache]);
        assert_eq!(files(&again), files(&replica));
        assert_eq!(
            report.contains("; 0 bytes received"),
            all_cached,
            "{report}"
        );
    };
    restore_cached(1, false);
    restore_cached(2, true);
    // A damaged cache: every object in it overwritten. The restore fetches them instead, and
    // the good copies replace the damaged ones, so the next restore needs nothing.
    let objects = Path::new(cache).join("objects");
    for prefix in std::fs::read_dir(&objects).unwrap() {
        for object in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
            std::fs::write(object.unwrap().path(), b"damaged on disk").unwrap();
        }
    }
    restore_cached(3, false);
    restore_cached(4, true);
    let refused = common::fails(
        restored.path(),
        &[
            "restore",
            "--service",
            "svc",
            "--out",
            out.to_str().unwrap(),
            "--rpc",
            &rpc,
        ],
    );
    assert!(refused.contains("is not empty"), "{refused}");
    let fresh = restored.path().join("svc-none");
    let fresh = fresh.to_str().unwrap();
    for (args, reason) in [
        (
            vec!["--checkpoint", "999999"],
            "no checkpoint 999999 of svc",
        ),
        (
            vec!["--checkpoint", "newest"],
            "neither a number nor latest",
        ),
    ] {
        let mut all = vec!["restore", "--service", "svc", "--out", fresh, "--rpc", &rpc];
        all.extend(args);
        let refused = common::fails(restored.path(), &all);
        assert!(refused.contains(reason), "{refused}");
    }

    // The service goes on at the new active, which records checkpoints under its epoch.
    *target.lock().unwrap() = Some((second, c.node(second).data()));
    let after = *checkpoints.keys().last().unwrap();
    let first_new = c.wait_for("the new active recorded no checkpoint", || {
        let latest = *c.checkpoints().keys().last()?;
        (latest > after).then_some(latest)
    });
    // The remaining standby follows the new active: whatever the dead one had pushed it and
    // no block recorded is gone from its target, which shows what the chain recorded.
    let third = CANDIDATES
        .into_iter()
        .find(|n| *n != first && *n != second)
        .unwrap();
    // The client pauses so the data settles: the active takes a last checkpoint (well within
    // a second), and the standby acknowledges it.
    *target.lock().unwrap() = None;
    std::thread::sleep(Duration::from_secs(1));
    c.wait_for(
        "the remaining standby never acknowledged the new active's last checkpoint",
        || {
            let latest = *c.checkpoints().keys().last()?;
            let settled = latest >= first_new
                && c.acks().get(third) == Some(&latest)
                && shown_checkpoint(&c.node(third).replica()).0 == latest;
            settled.then_some(())
        },
    );
    assert_target_is_a_recorded_checkpoint(&c, third);
    *target.lock().unwrap() = Some((second, c.node(second).data()));

    // The dead node returns: it drops its dead branch and follows as a standby.
    let restart = NAMES.iter().position(|n| *n == first).unwrap();
    c.spawn(restart);
    c.wait_for("the old active never caught up as a standby", || {
        let latest = *c.checkpoints().keys().last()?;
        let held = *c.acks().get(first)?;
        (held > after && held + 5 >= latest).then_some(())
    });
    let old_rows = mode.rows(&c.node(first).replica());
    assert!(
        old_rows.len() > held.len(),
        "{first} follows the new active's data"
    );
    drop(writer);
}

/// The chain stalls (two of four validators frozen) while the active serves: its lease runs
/// out and it fences its service with writes acknowledged since the last checkpoint the chain
/// recorded. The validators resume, nobody else was elected, and it serves again — and must
/// still hold every write it acknowledged: the newest checkpoint on chain is its own, so its
/// data is newer than any checkpoint (`DRCHAIN_KEEP_DATA=1`; restoring from the target would
/// drop the writes since). Found by the chaos harness (schedules 2 and 3).
#[test]
fn an_active_that_lost_its_lease_and_serves_again_keeps_every_acknowledged_write() {
    let mode = Mode::Watch;
    let c = Cluster::start(mode);
    let (first, e1, _) = c.wait_for("no node was promoted", || c.active());
    let node = c.node(first);
    let (data, promoted) = (node.data(), node.promoted());
    // A client of a service fenced by its hooks: it writes only while `promoted` exists.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, data, promoted) = (stop.clone(), data.clone(), promoted.clone());
        std::thread::spawn(move || {
            let mut acked = vec![];
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
                let next = acked.len() as u64 + 1;
                if promoted.exists() && mode.write(&data, next) {
                    acked.push(next);
                }
            }
            acked
        })
    };
    c.wait_for("no checkpoints recorded", || {
        (*c.checkpoints().keys().last()? >= 3).then_some(())
    });

    let frozen: Vec<&str> = [
        "dave",
        CANDIDATES.into_iter().find(|n| *n != first).unwrap(),
    ]
    .into();
    for name in &frozen {
        c.signal(name, "STOP");
    }
    c.wait_for("the active never fenced itself", || {
        (!promoted.exists()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1000));
    for name in &frozen {
        c.signal(name, "CONT");
    }
    let (again, e2, _) = c.wait_for("nobody serves again", || c.active());
    stop.store(true, Ordering::SeqCst);
    let acked = writer.join().unwrap();
    assert!(
        again == first && e2 == e1,
        "the service moved ({first} epoch {e1} -> {again} epoch {e2}): this test needs the \
         same active to serve again\n{}",
        c.dump()
    );
    let held = mode.rows(&data);
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|r| !held.contains(r))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost without a failover: {lost:?}",
        lost.len(),
        acked.len()
    );
}

/// A standby applies the active's checkpoint as soon as it is announced, before any block
/// records it: with two of four validators frozen nothing is finalized, yet a file written on
/// the active reaches the standby's target. It acknowledges the checkpoint only once the
/// chain, running again, records it — the same root it applied.
#[test]
fn a_standby_applies_the_active_s_checkpoint_before_a_block_records_it() {
    let c = Cluster::start(Mode::Watch);
    let (first, _, _) = c.wait_for("no node was promoted", || c.active());
    let mut standbys = CANDIDATES.into_iter().filter(|n| *n != first);
    let (frozen_standby, watched) = (standbys.next().unwrap(), standbys.next().unwrap());
    c.wait_for("the standby never acknowledged a checkpoint", || {
        c.acks().get(watched).copied()
    });

    // Dave (the test's RPC node) and one standby stop: no block can be finalized.
    for name in ["dave", frozen_standby] {
        c.signal(name, "STOP");
    }
    let data = c.node(first).data();
    std::fs::write(
        data.join(".during-stall.tmp"),
        b"written while the chain stalls",
    )
    .unwrap();
    std::fs::rename(data.join(".during-stall.tmp"), data.join("during-stall")).unwrap();
    let replica = c.node(watched).replica();
    let shown = c.wait_for("the standby never applied the announced checkpoint", || {
        std::fs::read(replica.join("during-stall"))
            .ok()
            .map(|_| shown_checkpoint(&replica))
    });
    for name in ["dave", frozen_standby] {
        c.signal(name, "CONT");
    }

    // The chain records exactly what the standby applied, and the standby acknowledges it.
    let (sequence, root) = shown;
    let recorded = c.wait_for("the applied checkpoint was never recorded", || {
        c.checkpoints().get(&sequence).map(|(r, _)| *r)
    });
    assert_eq!(
        recorded, root,
        "the chain recorded another checkpoint {sequence}"
    );
    c.wait_for(
        "the standby never acknowledged the checkpoint it applied",
        || (c.acks().get(watched).copied()? >= sequence).then_some(()),
    );
    assert_target_is_a_recorded_checkpoint(&c, watched);
}

/// inotify misses some changes (a file written through a hard link outside the watched
/// source is one: its events go to the other directory); the active reads the whole source
/// every `interval_ms` for them. That reading must come while writes inotify does see keep
/// the active busy with checkpoints of what they named — a service written to all the time
/// is the one that needs it.
#[test]
fn a_change_inotify_misses_reaches_the_standby_while_seen_writes_keep_coming() {
    let c = Cluster::start(Mode::Watch);
    let (_, _, data, replica) = c.active_and_next_in_line();
    write_renamed(&data, "linked", b"as first written");
    c.wait_for("the standby never applied the linked file", || {
        std::fs::read(replica.join("linked")).ok()
    });
    let outside = data.with_file_name("outside-the-source");
    std::fs::hard_link(data.join("linked"), &outside).unwrap();

    // A write inotify sees every 100 ms, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = std::thread::spawn({
        let (stop, data) = (stop.clone(), data.clone());
        move || {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                write_renamed(&data, &format!("seen-{i}"), format!("seen {i}").as_bytes());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    c.wait_for("the seen writes never reached the standby", || {
        std::fs::read(replica.join("seen-3")).ok()
    });
    let missed = b"changed where inotify does not look";
    std::fs::write(&outside, missed).unwrap();
    let changed = Instant::now();
    // Read whole every `interval_ms` (the default, 1 s); the bound leaves room for a slow
    // machine but not for the full check of the store's chunks every minute.
    c.wait_within(
        Duration::from_secs(10),
        "the change inotify missed was not on the standby 10 s later",
        || (std::fs::read(replica.join("linked")).ok()? == missed).then_some(()),
    );
    println!(
        "the change inotify missed was on the standby {} ms after it was made",
        changed.elapsed().as_millis()
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

/// `min_interval_ms` is the shortest time between two checkpoints, not between two readings
/// of the source: a write after a quiet while is checkpointed at once, even though the
/// periodic reading (`interval_ms`) just found nothing to checkpoint. Both are 2 s here, so a
/// write waiting for the next reading would show it.
#[test]
fn a_write_after_a_quiet_while_reaches_the_standby_at_once() {
    let c = Cluster::start_with(
        Mode::Watch,
        false,
        "interval_ms = 2000\nmin_interval_ms = 2000",
    );
    let (_, watched, data, replica) = c.active_and_next_in_line();
    c.wait_for("the standby never acknowledged a checkpoint", || {
        c.acks().get(watched).copied()
    });
    for i in 0..4 {
        // Quiet for longer than min_interval_ms: the periodic reading finds nothing new.
        std::thread::sleep(Duration::from_millis(2500));
        let name = format!("after-quiet-{i}");
        write_renamed(&data, &name, b"written after a quiet while");
        let written = Instant::now();
        c.wait_within(
            Duration::from_millis(500),
            &format!("{name} was not on the standby 500 ms after it was written"),
            || replica.join(&name).exists().then_some(()),
        );
        println!(
            "{name} on the standby after {} ms",
            written.elapsed().as_millis()
        );
    }
}

/// The active trains its compression dictionary (every 64 checkpoints, on up to 1,024 of the
/// service's chunks) beside its checkpoints, not instead of them: a write made while a
/// training runs reaches the standby before the training ends. (Awaited on the replication
/// task, a training held every write behind it: 0.5–1.7 s on these 16 MiB on the 2-vCPU VM of
/// docs/benchmarks.md.)
#[test]
fn writes_reach_the_standby_while_the_active_trains_its_dictionary() {
    // A checkpoint for each write (not one per 100 ms), so 64 come quickly.
    let c = Cluster::start_with(Mode::Watch, false, "min_interval_ms = 5");
    let (first, watched, data, replica) = c.active_and_next_in_line();
    c.wait_for("the standby never acknowledged a checkpoint", || {
        c.acks().get(watched).copied()
    });
    // 16 MiB of records: enough chunks to train on, and a training long enough to write in.
    for file in 0..256 {
        write_renamed(&data, &format!("records-{file}"), &records(file, 64 * 1024));
    }
    c.wait_within(WAIT, "the records never reached the standby", || {
        replica.join("records-255").exists().then_some(())
    });
    // Writes every 20 ms until a training was seen from start to end in the active's log;
    // when each was written and when the standby showed it.
    let log = c.node(first).lines.clone();
    let mut read = log.lock().unwrap().len();
    let mut training: Option<(Instant, Option<Instant>)> = None;
    let mut writes: Vec<(String, Instant, Option<Instant>)> = vec![];
    let mut next_write = Instant::now();
    let deadline = Instant::now() + WAIT;
    loop {
        let now = Instant::now();
        assert!(now < deadline, "no dictionary training came\n{}", c.dump());
        let lines = log.lock().unwrap();
        for line in lines[read..].iter() {
            if line.contains("training a compression dictionary") {
                training = Some((now, None));
            } else if line.contains("compression dictionary") && line.contains(" ms=") {
                if let Some((_, end)) = training.as_mut() {
                    end.get_or_insert(now);
                }
            }
        }
        read = lines.len();
        drop(lines);
        for (name, _, shown) in writes.iter_mut().filter(|w| w.2.is_none()) {
            if replica.join(&*name).exists() {
                *shown = Some(now);
            }
        }
        if let Some((started, Some(ended))) = training {
            // Once every write made during the training was shown.
            let after = |w: &&(String, Instant, Option<Instant>)| w.1 >= started && w.1 < ended;
            if writes.iter().filter(after).all(|w| w.2.is_some()) {
                break;
            }
        }
        if now >= next_write {
            let name = format!("during-{}", writes.len());
            write_renamed(&data, &name, format!("written at {now:?}").as_bytes());
            writes.push((name, now, None));
            next_write = now + Duration::from_millis(20);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (started, ended) = training.map(|(s, e)| (s, e.unwrap())).unwrap();
    let lasted = ended - started;
    // Each write made during it: its name, when after the training's start it was written,
    // and how long after that the standby showed it.
    let during: Vec<(&String, Duration, Duration)> = writes
        .iter()
        .filter(|w| w.1 >= started && w.1 < ended)
        .map(|(name, written, shown)| {
            let took = shown.unwrap().duration_since(*written);
            (name, written.duration_since(started), took)
        })
        .collect();
    println!("training seen for {lasted:?}; writes made meanwhile: {during:?}");
    // The log is read every millisecond: a write shown 10 ms before the training's end was
    // seen was shown while it ran.
    assert!(
        during
            .iter()
            .any(|(_, at, took)| started + *at + *took + Duration::from_millis(10) <= ended),
        "no write made during the training ({lasted:?}) reached the standby before it ended: {during:?}"
    );
}

/// After a garbage collection removed objects, the active looks every cached chunk up in the
/// store again (what it removed may be named by the next checkpoint): on a turn of its own,
/// reading the source whole, not on the way of the next write. Source read whole only every
/// minute here, so nothing else does that look-up first.
#[test]
fn after_a_collection_the_next_write_does_not_look_up_every_chunk() {
    let c = Cluster::start_with(
        Mode::Watch,
        false,
        "interval_ms = 60000\nkeep_checkpoints = 1",
    );
    let (first, watched, data, replica) = c.active_and_next_in_line();
    let write = |name: &str| {
        write_renamed(
            &data,
            name,
            format!("{name}: a row of the service's data").as_bytes(),
        );
        c.wait_within(WAIT, &format!("{name} never reached {watched}"), || {
            replica.join(name).exists().then_some(())
        });
    };
    // A write a second: checkpoints beyond the one kept, garbage for the next collection
    // (every 30 s, when the task has a turn), until one removed something.
    let log = c.node(first).lines.clone();
    let seen = log.lock().unwrap().len();
    let collected = || {
        let lines = log.lock().unwrap();
        lines[seen..]
            .iter()
            .any(|l| l.contains("chunk store collected: removed="))
    };
    for i in 0.. {
        assert!(i < 60, "no collection removed anything\n{}", c.dump());
        write(&format!("before-{i}"));
        if collected() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // Its own turn comes at once; the write after it finds every cached chunk looked up.
    std::thread::sleep(Duration::from_millis(500));
    let seen = log.lock().unwrap().len();
    write("after-collection");
    let taken = c.wait_within(WAIT, "the write's checkpoint was not logged", || {
        let lines = log.lock().unwrap();
        lines[seen..]
            .iter()
            .find(|l| l.contains("checkpoint taken"))
            .cloned()
    });
    assert!(
        taken.contains(" chunks_looked_up=0 "),
        "the write's checkpoint looked chunks up: {taken}"
    );
}

/// Writes `bytes` to `dir/name` as a service should: aside, then renamed into place.
fn write_renamed(dir: &Path, name: &str, bytes: &[u8]) {
    let aside = dir.join(format!(".{name}.tmp"));
    std::fs::write(&aside, bytes).unwrap();
    std::fs::rename(&aside, dir.join(name)).unwrap();
}

/// `bytes` of text records, as a service's table dump or log: the same fields and words in
/// every record, ids and values that differ (seeded, deterministic).
fn records(seed: u64, bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 256);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let statuses = ["pending", "shipped", "delivered", "returned"];
    while out.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(
            format!(
                "{{\"order\":{},\"customer\":\"c-{:06}\",\"status\":\"{}\",\"warehouse\":\"eu-west-{}\",\"amount_cents\":{},\"note\":\"{:016x}\"}}\n",
                x % 10_000_000,
                (x >> 20) % 1_000_000,
                statuses[(x >> 40) as usize % 4],
                (x >> 44) % 9,
                (x >> 8) % 100_000,
                x.rotate_left(29)
            )
            .as_bytes(),
        );
    }
    out.truncate(bytes);
    out
}

/// The checkpoint a target shows: its sequence and root (from the label it links to).
fn shown_checkpoint(target: &Path) -> (u64, H256) {
    let link = std::fs::read_link(target).unwrap();
    let label = link.file_name().unwrap().to_str().unwrap();
    let (sequence, root) = label.split_once('-').unwrap();
    (sequence.parse().unwrap(), root.parse().unwrap())
}

/// `name`'s target shows a checkpoint the chain records (at once, or shortly: one the live
/// active announced), byte for byte: rebuilt from the manifest and chunks in its own store,
/// each verified against the chain's root.
fn assert_target_is_a_recorded_checkpoint(c: &Cluster, name: &str) {
    let node = c.node(name);
    // What the target shows, read at once (a live standby moves on to newer checkpoints),
    // and read again if the link moved meanwhile.
    let replica = node.replica();
    let (sequence, root, shown) = loop {
        let before = shown_checkpoint(&replica);
        let shown = std::fs::canonicalize(&replica)
            .ok()
            .and_then(|dir| try_files(&dir));
        if let Some(shown) = shown.filter(|_| shown_checkpoint(&replica) == before) {
            break (before.0, before.1, shown);
        }
    };
    let recorded = c.wait_for("the checkpoint a standby shows is never recorded", || {
        c.checkpoints().get(&sequence).map(|(r, _)| *r)
    });
    assert_eq!(recorded, root, "{name} shows checkpoint {sequence}");
    // Its own store, or (a push applied from memory when the kill came before the store had
    // it) the active's.
    let stores = std::iter::once(name)
        .chain(CANDIDATES.into_iter().filter(|n| *n != name))
        .map(|n| ChunkStore::open(c.node(n).chunk_store()).unwrap());
    let (store, manifest) = stores
        .filter_map(|store| {
            let manifest = store.manifest(&root).ok()?;
            missing(&manifest, |id| store.contains(id))
                .is_empty()
                .then_some((store, manifest))
        })
        .next()
        .unwrap_or_else(|| panic!("no store holds checkpoint {sequence}"));
    let rebuilt = tempfile::tempdir().unwrap();
    let target = rebuilt.path().join("svc");
    materialize(&manifest, &store, &target, "check").unwrap();
    assert_eq!(shown, files(&target), "{name}'s target is torn");
}

/// Starts a cluster, lets the first active record checkpoints while the standbys cannot apply
/// them (their targets are taken by a file the agent must not replace) until their data is
/// well beyond the RPO, then kills the active. Returns the cluster, the writer, the killed
/// node, its epoch and the standbys.
fn standbys_beyond_the_rpo_then_kill(
    allow_data_loss: bool,
) -> (Cluster, Writer, &'static str, u64, Vec<&'static str>) {
    let mut c = Cluster::start_with(Mode::Watch, allow_data_loss, "");
    let target: Route = Arc::default();
    let writer = Writer::start(target.clone(), Mode::Watch);
    let (first, e1, _) = c.wait_for("no node was promoted", || c.active());
    *target.lock().unwrap() = Some((first, c.node(first).data()));
    let standbys: Vec<&str> = CANDIDATES.into_iter().filter(|n| *n != first).collect();
    c.wait_for("the standbys never held a checkpoint", || {
        let acks = c.acks();
        standbys.iter().all(|s| acks.contains_key(s)).then_some(())
    });
    // A file where the agent keeps its link stops the standbys applying. An apply already
    // past its check when the file is written renames its link over it, so the file is put
    // back until the standbys have fallen behind.
    let block_targets = || {
        for name in &standbys {
            let replica = c.node(name).replica();
            if std::fs::symlink_metadata(&replica).is_ok_and(|m| m.is_file()) {
                continue;
            }
            let _ = std::fs::remove_file(&replica);
            let _ = std::fs::remove_dir_all(&replica);
            std::fs::write(&replica, "not the agent's").unwrap();
        }
    };
    c.wait_for("the standbys never fell behind the RPO", || {
        block_targets();
        let checkpoints = c.checkpoints();
        let (_, (_, latest_at)) = checkpoints.last_key_value()?;
        let acks = c.acks();
        standbys
            .iter()
            .all(|s| {
                let held_at = acks
                    .get(s)
                    .and_then(|a| checkpoints.get(a))
                    .map(|(_, t)| *t);
                held_at.is_none_or(|t| t + 3 * MAX_LAG_MS < *latest_at)
            })
            .then_some(())
    });
    c.kill(first);
    *target.lock().unwrap() = None;
    (c, writer, first, e1, standbys)
}

/// With `allow_data_loss` off: nobody is promoted and the chain says why; an admin's
/// switchover to a named standby then promotes it, and the chain records the loss.
#[test]
fn with_every_standby_beyond_the_rpo_nobody_is_promoted_until_an_admin_accepts_the_loss() {
    let (c, writer, first, e1, standbys) = standbys_beyond_the_rpo_then_kill(false);
    let history = || {
        c.rpc("failover_history", serde_json::json!(["svc"]))
            .to_string()
    };
    c.wait_for("the chain never said why it promoted nobody", || {
        history().contains("promotion_withheld").then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        c.active().is_none_or(|(n, _, _)| n == first),
        "a lagging standby was promoted: {:?}\n{}",
        c.active(),
        c.dump()
    );

    // `drchain status` says why, and dave's metrics count it.
    let http = format!("http://127.0.0.1:{}", c.node("dave").rpc);
    let status = common::ok(Path::new("."), &["status", "--rpc", &http]);
    assert!(
        status.contains("no promotion: every live candidate"),
        "{status}"
    );

    // The admin accepts the loss and names a standby.
    let chosen = standbys[0];
    let call = format!(r#"{{"service":"svc","target":"{}"}}"#, dev_account(chosen));
    let rpc = format!("ws://127.0.0.1:{}", c.node("dave").rpc);
    let dir = tempfile::tempdir().unwrap();
    common::ok(
        dir.path(),
        &[
            "tx",
            "--dev",
            "alice",
            "--admin",
            "--rpc",
            &rpc,
            "failover",
            "switchover",
            &call,
        ],
    );
    let (promoted, e2, _) = c.wait_for("the admin's choice was never promoted", || {
        c.active().filter(|(n, e, _)| *n == chosen && *e > e1)
    });
    assert_eq!(promoted, chosen);
    let log = history();
    assert!(log.contains("data_loss_accepted"), "{log}");
    eprintln!("{first} killed; nobody promoted until the admin named {chosen} (epoch {e2})");
    drop(writer);
}

/// With `allow_data_loss` on, the freshest standby is promoted at once and the chain records
/// how much older its data is than the latest checkpoint.
#[test]
fn with_allow_data_loss_the_freshest_standby_is_promoted_and_the_loss_recorded() {
    let (c, writer, first, e1, _) = standbys_beyond_the_rpo_then_kill(true);
    let (promoted, e2, _) = c.wait_for("nobody was promoted", || {
        c.active().filter(|(n, e, _)| *n != first && *e > e1)
    });
    let log = c.rpc("failover_history", serde_json::json!(["svc"]));
    let loss = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e.to_string().contains("data_loss_accepted"))
        .unwrap_or_else(|| panic!("no data_loss_accepted in {log}"));
    let lag = loss["event"]["data_loss_accepted"]["lag_ms"].as_u64();
    assert!(lag.is_some_and(|l| l > MAX_LAG_MS), "{loss}");
    eprintln!("{first} killed; {promoted} promoted at once (epoch {e2}): {loss}");
    drop(writer);
}

/// Tells when a link in a directory is switched (renamed into place) or a file created there:
/// how a reader of a standby's target learns of a new checkpoint at once. The benchmark used to
/// look every 0.2 ms instead, which added ~0.2–0.4 ms (half a poll period and the sleeping
/// thread's wake-up) to every measurement.
struct LinkSwitches {
    inotify: rustix::fd::OwnedFd,
}

impl LinkSwitches {
    fn watch(dir: &Path) -> Self {
        use rustix::fs::inotify;
        let inotify =
            inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).unwrap();
        inotify::add_watch(
            &inotify,
            dir,
            inotify::WatchFlags::MOVED_TO | inotify::WatchFlags::CREATE,
        )
        .unwrap();
        Self { inotify }
    }

    /// Returns after the next switch in the directory, or after `at_most`; forgets earlier ones.
    fn wait(&self, at_most: Duration) {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let timeout = Timespec {
            tv_sec: 0,
            tv_nsec: at_most.as_nanos().min(999_999_999) as _,
        };
        let mut fds = [PollFd::new(&self.inotify, PollFlags::IN)];
        let _ = poll(&mut fds, Some(&timeout));
        let mut events = [0u8; 4096];
        while rustix::io::read(&self.inotify, &mut events).is_ok_and(|n| n > 0) {}
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Replication's latencies and restore speed, with processes (opt-in; build with --release):
/// a 4 KiB file renamed into the active's watched source → on a standby's target, and →
/// acknowledged on chain (next to the block interval); then `drchain restore` of a 64 MiB
/// checkpoint from a standby that holds it and through a node that holds none of it.
#[test]
#[ignore = "benchmark: cargo test --release -p drchain-node --test replication -- --ignored --nocapture"]
fn replication_benchmark() {
    let trials: usize = std::env::var("DRCHAIN_REPLICATION_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(50);
    let c = Cluster::start(Mode::Watch);
    let (first, _, _) = c.wait_for("no node was promoted", || c.active());
    let data = c.node(first).data();
    let standby = CANDIDATES.into_iter().find(|n| *n != first).unwrap();
    let replica = c.node(standby).replica();
    c.wait_for("the standby never applied a checkpoint", || {
        c.acks().get(standby).copied()
    });
    let height = |c: &Cluster| {
        let head = c.rpc("chain_getHeader", serde_json::json!([]));
        let number = head["number"].as_str().unwrap().trim_start_matches("0x");
        u64::from_str_radix(number, 16).unwrap()
    };
    let switches = LinkSwitches::watch(replica.parent().unwrap());
    let (h0, t0) = (height(&c), Instant::now());
    let (mut writing, mut applied, mut durable, mut acked) = (vec![], vec![], vec![], vec![]);
    let mut blocks_to_ack: BTreeMap<u64, usize> = BTreeMap::new();
    for i in 0..trials {
        std::thread::sleep(Duration::from_millis(300));
        let name = format!("bench-{i}");
        let aside = data.join(format!(".{name}.tmp"));
        let started = Instant::now();
        std::fs::write(&aside, pseudo_page(i as u64)).unwrap();
        std::fs::rename(&aside, data.join(&name)).unwrap();
        // Written: renamed into place, the moment a reader of the source sees it (the writer's
        // own file creation before that is not replication's).
        let written = Instant::now();
        writing.push((written - started).as_secs_f64() * 1000.0);
        let on_target = replica.join(&name);
        while !on_target.exists() {
            assert!(written.elapsed() < WAIT, "{name} never reached {standby}");
            switches.wait(Duration::from_millis(5));
        }
        applied.push(written.elapsed().as_secs_f64() * 1000.0);
        let link = std::fs::read_link(&replica).unwrap();
        let label = link.file_name().unwrap().to_string_lossy().into_owned();
        let sequence: u64 = label.split_once('-').unwrap().0.parse().unwrap();
        // Shown first, flushed next: when the standby recorded it durable.
        let marker = replica
            .with_file_name(".replica.checkpoints")
            .join(".durable");
        let flushed = || {
            let label = std::fs::read_to_string(&marker).unwrap_or_default();
            let flushed = label
                .split_once('-')
                .and_then(|(s, _)| s.parse::<u64>().ok());
            flushed.is_some_and(|s| s >= sequence)
        };
        while !flushed() {
            assert!(written.elapsed() < WAIT, "{standby} never flushed {label}");
            std::thread::sleep(Duration::from_micros(200));
        }
        durable.push(written.elapsed().as_secs_f64() * 1000.0);
        while c.acks().get(standby).is_none_or(|a| *a < sequence) {
            assert!(
                written.elapsed() < WAIT,
                "{standby} never acknowledged {sequence}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        acked.push(written.elapsed().as_secs_f64() * 1000.0);
        *blocks_to_ack
            .entry(c.blocks_to_acknowledgement(standby, sequence))
            .or_insert(0usize) += 1;
    }
    let block_ms = t0.elapsed().as_secs_f64() * 1000.0 / (height(&c) - h0).max(1) as f64;
    for list in [&mut writing, &mut applied, &mut durable, &mut acked] {
        list.sort_by(f64::total_cmp);
    }
    println!(
        "4 KiB write (written aside and renamed into place: p50 {:.2} ms) → on the standby's target ({trials} trials): p50 {:.2} ms, p99 {:.1} ms; → flushed there: p50 {:.1} ms, p99 {:.1} ms; → acknowledged on chain: p50 {:.1} ms, p99 {:.1} ms; mean block interval {block_ms:.0} ms",
        percentile(&writing, 50.0),
        percentile(&applied, 50.0),
        percentile(&applied, 99.0),
        percentile(&durable, 50.0),
        percentile(&durable, 99.0),
        percentile(&acked, 50.0),
        percentile(&acked, 99.0),
    );
    // Acknowledgements sent twice (one early that was still on its way when the record
    // showed, or one that came before the record and was sent again).
    let (mut per_sequence, head) = (BTreeMap::<u64, usize>::new(), height(&c));
    let account = dev_account(standby).to_string();
    for number in h0..=head {
        let hash = c.rpc("chain_getBlockHash", serde_json::json!([number]));
        let events = c.rpc("chain_getEvents", serde_json::json!([hash]));
        for e in events["events"].as_array().unwrap() {
            let ack = &e["event"]["checkpoints"]["checkpoint_acknowledged"];
            if ack["node"].as_str() == Some(account.as_str()) {
                *per_sequence
                    .entry(ack["sequence"].as_u64().unwrap())
                    .or_insert(0) += 1;
            }
        }
    }
    let twice = per_sequence.values().filter(|n| **n > 1).count();
    let blocks: Vec<String> = blocks_to_ack
        .iter()
        .map(|(after, n)| format!("{after} after: {n}"))
        .collect();
    println!(
        "  the acknowledgement's block, counted from the one that recorded the checkpoint: {}; acknowledged twice: {twice} of {} checkpoints",
        blocks.join(", "),
        per_sequence.len()
    );

    // 64 MiB in 16 files of 4 MiB (half compressible), then a cold restore through dave.
    for f in 0..16u64 {
        let bytes: Vec<u8> = (0..1024u64).flat_map(pseudo_page_of(f)).collect();
        let aside = data.join(format!(".blob-{f}.tmp"));
        std::fs::write(&aside, bytes).unwrap();
        std::fs::rename(&aside, data.join(format!("blob-{f}"))).unwrap();
    }
    // The sequence and the size from one answer (the latest may move between two).
    let sequence = c.wait_for("the 64 MiB checkpoint was never recorded", || {
        let latest = c.rpc("checkpoints_latest", serde_json::json!(["svc"]));
        let size = latest["checkpoint"]["size_bytes"].as_u64()?;
        (size >= 64 << 20).then_some(latest["sequence"].as_u64()?)
    });
    c.wait_for(
        "the standby never acknowledged the 64 MiB checkpoint",
        || (c.acks().get(standby).copied()? >= sequence).then_some(()),
    );
    // From a standby that holds the checkpoint (as restic reads its repository), then through
    // dave, who holds none of it and gathers it from the members first.
    for (via, holds) in [
        (standby, "a standby holding it"),
        ("dave", "a node holding none of it"),
    ] {
        let out = tempfile::tempdir().unwrap();
        let rpc = format!("http://127.0.0.1:{}", c.node(via).rpc);
        let started = Instant::now();
        let report = common::ok(
            out.path(),
            &[
                "restore",
                "--service",
                "svc",
                "--checkpoint",
                &sequence.to_string(),
                "--out",
                out.path().join("svc").to_str().unwrap(),
                "--rpc",
                &rpc,
            ],
        );
        println!(
            "drchain restore of checkpoint {sequence} {} from {via}, {holds}\n  {}",
            speed(&out.path().join("svc"), started),
            report.trim()
        );
    }
    // With DRCHAIN_TEST_LOGS set, the nodes' logs are kept (with debug logging: where the time
    // of each write goes).
    let _ = c.dump();
    // restic on the same files: back up the active's source, restore from the local repository.
    let restic = |args: &[&str]| {
        std::process::Command::new("restic")
            .args(args)
            .env("RESTIC_PASSWORD", "bench")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    let repo = repo.to_str().unwrap();
    let into = work.path().join("restored");
    if !restic(&["version"]) {
        println!("restic: not installed (apt install restic)");
    } else if restic(&["-r", repo, "init", "--quiet"])
        && restic(&["-r", repo, "backup", "--quiet", data.to_str().unwrap()])
    {
        let started = Instant::now();
        assert!(restic(&[
            "-r",
            repo,
            "restore",
            "latest",
            "--quiet",
            "--target",
            into.to_str().unwrap()
        ]));
        println!(
            "restic restore of the same files {} from a local repository",
            speed(&into.join(data.strip_prefix("/").unwrap()), started)
        );
    } else {
        println!("restic: init or backup failed");
    }
}

/// `(N MiB): S s, M MB/s end to end` for the files under `dir`, written since `started`.
fn speed(dir: &Path, started: Instant) -> String {
    let secs = started.elapsed().as_secs_f64();
    let size: u64 = files(dir).values().map(|b| b.len() as u64).sum();
    format!(
        "({:.1} MiB): {secs:.2} s, {:.0} MB/s end to end",
        size as f64 / (1 << 20) as f64,
        size as f64 / 1e6 / secs
    )
}

/// A 4 KiB page: half varying bytes, half text (compresses about 2:1, like database pages).
fn pseudo_page(seed: u64) -> Vec<u8> {
    let mut page = drchain_replication::testdata::pseudo_random(2048, seed);
    page.extend(
        b"row;status=shipped;warehouse=eu-west-3;"
            .iter()
            .cycle()
            .take(2048),
    );
    page
}

fn pseudo_page_of(file: u64) -> impl Fn(u64) -> Vec<u8> {
    move |i| pseudo_page(file * 1_000_003 + i)
}
