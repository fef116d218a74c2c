//! Failover end to end, with real processes and real signals: four validators of a chain that
//! protects service `svc` on alice, bob and charlie (each running the agent, with hooks), a
//! real TCP service per node started by the test, and `drchain proxy` following dave's RPC.
//! Clients always go through the proxy.
//!
//! One run walks through the three failures in turn (each needs three live validators):
//! the active is SIGKILLed (with its service: the machine died); the new active is SIGSTOPped
//! (a hung node), later resumes and must fence itself; the next candidate's `on_promote`
//! fails, so the one after it wins. Every time: clients are served by the new active, the
//! epoch increased, and the agents' role logs show no two nodes serving at once.
//!
//! `failover_benchmark` (opt-in: `--ignored`) measures kill → first answer from the new active.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::validators::{bootnodes, NodeProcess};
use drchain_agent::lease_file::LeaseRecord;

const NAMES: [&str; 4] = ["alice", "bob", "charlie", "dave"];
const CANDIDATES: [&str; 3] = ["alice", "bob", "charlie"];
const WAIT: Duration = Duration::from_secs(30);

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The protected TCP service on one node: answers each connection with one line, `NAME EPOCH`
/// while its epoch file (written by `on_promote`, removed by `on_demote`) exists, else
/// `NAME standby`. Stopped by dropping the flag's owner.
struct TcpService {
    port: u16,
    up: Arc<AtomicBool>,
}

impl TcpService {
    fn start(name: &'static str, epoch_file: PathBuf, port: u16) -> Self {
        // A restarted service takes its old port (the endpoint on chain) once it is free.
        let deadline = Instant::now() + WAIT;
        let listener = loop {
            match std::net::TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cannot bind port {port}: {e}"),
            }
        };
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if !flag.load(Ordering::SeqCst) {
                    // The machine died: nothing answers any more.
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let epoch = std::fs::read_to_string(&epoch_file)
                    .map(|e| e.trim().to_owned())
                    .unwrap_or_else(|_| "standby".into());
                let _ = writeln!(stream, "{name} {epoch}");
            }
        });
        Self { port, up }
    }

    /// Stops answering: the listener closes at the next connection attempt.
    fn stop(&self) {
        self.up.store(false, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

struct Cluster {
    nodes: Vec<NodeProcess>,
    services: BTreeMap<&'static str, TcpService>,
    spec: PathBuf,
    proxy: Option<Child>,
    proxy_port: u16,
    proxy_metrics_port: u16,
    /// Last: fields drop in order, and the nodes must be dead before their directories go
    /// (a live node would recreate them, leaking them in the system's temporary directory).
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Starts it with `prepare` applied to each node process first.
    fn start_with(prepare: impl Fn(&mut NodeProcess)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut services = BTreeMap::new();
        for name in CANDIDATES {
            services.insert(
                name,
                TcpService::start(name, dir.path().join(format!("{name}.epoch")), 0),
            );
        }
        let spec = write_spec(dir.path(), &services);
        let nodes = NAMES
            .iter()
            .map(|name| {
                let mut node = NodeProcess::new(dir.path(), name);
                prepare(&mut node);
                node
            })
            .collect();
        let mut cluster = Self {
            dir,
            nodes,
            services,
            spec,
            proxy: None,
            proxy_port: common::free_port(),
            proxy_metrics_port: common::free_port(),
        };
        for i in 0..NAMES.len() {
            cluster.spawn(i);
        }
        cluster.start_proxy();
        cluster
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn index(&self, name: &str) -> usize {
        NAMES.iter().position(|n| *n == name).unwrap()
    }

    fn spawn(&mut self, i: usize) {
        let boot = bootnodes(&self.nodes);
        let dir = self.dir.path().to_owned();
        let node = &mut self.nodes[i];
        let config = CANDIDATES
            .contains(&node.name)
            .then(|| agent_config(&dir, node.name));
        node.spawn(
            &self.spec,
            &boot,
            config,
            "info,libp2p=warn,informalsystems_malachitebft_core_consensus=error,drchain_agent=debug",
        );
    }

    fn start_proxy(&mut self) {
        let dave = &self.nodes[3];
        let child = Command::new(env!("CARGO_BIN_EXE_drchain"))
            .args(["proxy", "--service", "svc"])
            .args(["--listen", &format!("127.0.0.1:{}", self.proxy_port)])
            .args(["--prometheus-port", &self.proxy_metrics_port.to_string()])
            .args(["--rpc", &format!("ws://127.0.0.1:{}", dave.rpc)])
            .args(["--rpc", &format!("ws://127.0.0.1:{}", self.nodes[0].rpc)])
            .args(["--rpc", &format!("ws://127.0.0.1:{}", self.nodes[1].rpc)])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path("proxy.log")).unwrap())
            .spawn()
            .expect("proxy runs");
        self.proxy = Some(child);
    }

    /// One request through the proxy: the answering node and its epoch.
    fn ask(&self) -> Option<(String, String)> {
        ask_at(self.proxy_port)
    }

    /// Asks until an active node (not `except`) answers with a numeric epoch above `above`.
    fn served(&self, except: Option<&str>, above: u64, within: Duration) -> (String, u64) {
        let deadline = Instant::now() + within;
        loop {
            if let Some((node, epoch)) = self.ask() {
                if let Ok(e) = epoch.parse::<u64>() {
                    if Some(node.as_str()) != except && e > above {
                        return (node, e);
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no active node other than {except:?} served an epoch above {above}\n{}",
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&mut self, name: &str, signal: &str) {
        let i = self.index(name);
        let pid = self.nodes[i].child.as_ref().unwrap().id();
        common::sh(
            Path::new("."),
            "kill",
            &[&format!("-{signal}"), &pid.to_string()],
        );
        if signal == "KILL" {
            let mut child = self.nodes[i].child.take().unwrap();
            child.wait().unwrap();
        }
    }

    /// The machine dies: its node is SIGKILLed and its service goes with it.
    fn crash(&mut self, name: &str) {
        self.signal(name, "KILL");
        self.services[name].stop();
    }

    /// A crashed machine comes back: its service (on the same port, no epoch file) and its
    /// node; returns once its agent is a healthy standby again.
    fn restart(&mut self, name: &str) {
        let i = self.index(name);
        let name = NAMES[i];
        let port = self.services[name].port;
        let _ = std::fs::remove_file(self.path(&format!("{name}.epoch")));
        self.services.insert(
            name,
            TcpService::start(name, self.path(&format!("{name}.epoch")), port),
        );
        self.spawn(i);
        let deadline = Instant::now() + WAIT;
        while self.health_status(name, "/replica?service=svc") != 200 {
            assert!(
                Instant::now() < deadline,
                "{name} never became a standby again\n{}",
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn health_status(&self, name: &str, path: &str) -> u16 {
        http_get(self.nodes[self.index(name)].health, path)
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    /// A sample of the proxy's metric `name` (with its labels), if it exports it.
    fn proxy_metric(&self, name: &str) -> Option<f64> {
        http_get(self.proxy_metrics_port, "/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    }

    /// The RPC node the proxy follows now, from its log.
    fn proxy_follows(&self) -> Option<&'static str> {
        let log = std::fs::read_to_string(self.path("proxy.log")).ok()?;
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("following the chain"))?;
        self.nodes
            .iter()
            .find(|n| line.contains(&format!("url=ws://127.0.0.1:{} ", n.rpc)))
            .map(|n| n.name)
    }

    fn lines(&self, name: &str) -> Vec<String> {
        self.nodes[self.index(name)].lines.lock().unwrap().clone()
    }

    fn count(&self, name: &str, needle: &str) -> usize {
        self.lines(name)
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn wait_for_line(&self, name: &str, needle: &str) {
        self.wait_for_more(name, needle, 0);
    }

    /// Waits until `name` logged `needle` more than `before` times (its log spans restarts).
    fn wait_for_more(&self, name: &str, needle: &str, before: usize) {
        let deadline = Instant::now() + WAIT;
        while self.count(name, needle) <= before {
            assert!(
                Instant::now() < deadline,
                "{name} never logged {needle:?}\n{}",
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every node's serving intervals from its role log; for a node killed at `killed_at`,
    /// an open interval ends at its last logged lease end.
    fn serving_intervals(&self) -> Vec<Interval> {
        let mut all = vec![];
        for node in &self.nodes {
            all.extend(intervals(node.name, &node.lines.lock().unwrap()));
        }
        all
    }

    /// Asserts that no two nodes' serving intervals overlap.
    fn assert_never_two_active(&self) {
        let all = self.serving_intervals();
        for a in &all {
            for b in &all {
                if a.node != b.node {
                    assert!(
                        a.end <= b.start || b.end <= a.start,
                        "{a:?} and {b:?} overlap\n{}",
                        self.dump()
                    );
                }
            }
        }
    }

    fn dump(&self) -> String {
        let proxy = std::fs::read_to_string(self.path("proxy.log")).unwrap_or_default();
        let nodes: String = self
            .nodes
            .iter()
            .map(|n| n.dump(|l| l.contains("agent") || l.contains("WARN") || l.contains("ERROR")))
            .collect();
        format!("---- proxy\n{proxy}{nodes}")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut proxy) = self.proxy.take() {
            let _ = proxy.kill();
            let _ = proxy.wait();
        }
    }
}

trait IntoSocketAddr {
    fn into_socket_addr(self) -> std::net::SocketAddr;
}

impl IntoSocketAddr for (&str, u16) {
    fn into_socket_addr(self) -> std::net::SocketAddr {
        format!("{}:{}", self.0, self.1).parse().unwrap()
    }
}

/// One request to the service behind loopback `port`: the answering node and its epoch.
fn ask_at(port: u16) -> Option<(String, String)> {
    let addr = ("127.0.0.1", port);
    let mut stream =
        TcpStream::connect_timeout(&addr.into_socket_addr(), Duration::from_millis(500)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let mut words = answer.split_whitespace();
    Some((words.next()?.to_owned(), words.next()?.to_owned()))
}

/// When one node served one epoch (Unix ms).
#[derive(Debug, Clone)]
struct Interval {
    node: &'static str,
    epoch: u64,
    start: u64,
    end: u64,
}

fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.trim_end_matches(':').parse().ok())
}

/// Parses a node's role log: `serving ... since_ms= lease_end_ms=`, `lease ... lease_end_ms=`,
/// `stopped serving ... until_ms=`. An interval never closed (the node was killed, or still
/// serves) ends at its last lease end: the node could not have served past it.
fn intervals(node: &'static str, lines: &[String]) -> Vec<Interval> {
    let mut out = vec![];
    let mut open: Option<Interval> = None;
    for line in lines {
        if line.contains("stopped serving service=svc") {
            if let (Some(mut i), Some(until)) = (open.take(), field(line, "until_ms")) {
                i.end = until;
                out.push(i);
            }
        } else if line.contains("serving service=svc") {
            // A node killed while serving and restarted: its old interval ended at its lease.
            out.extend(open.take());
            open = Some(Interval {
                node,
                epoch: field(line, "epoch").unwrap(),
                start: field(line, "since_ms").unwrap(),
                end: field(line, "lease_end_ms").unwrap(),
            });
        } else if line.contains("lease service=svc") {
            if let (Some(i), Some(end)) = (open.as_mut(), field(line, "lease_end_ms")) {
                i.end = i.end.max(end);
            }
        }
    }
    out.extend(open);
    out
}

fn agent_config(dir: &Path, name: &str) -> String {
    let epoch_file = dir.join(format!("{name}.epoch"));
    let fail_marker = dir.join(format!("{name}.fail-promote"));
    let fail_demote = dir.join(format!("{name}.fail-demote"));
    let roles = dir.join(format!("{name}.roles"));
    let lease = dir.join(format!("{name}.lease"));
    format!(
        r#"
[[service]]
name = "svc"
on_promote = "test ! -e {fail} && echo $DRCHAIN_EPOCH > {epoch}"
on_demote = "test ! -e {fail_demote} && rm -f {epoch}"
on_role_change = "echo \"$DRCHAIN_ROLE $DRCHAIN_EPOCH\" >> {roles}"
failed_promotion_holdoff_ms = 30000
lease_file = "{lease}"
[service.health_check]
kind = "tcp"
interval_ms = 200
"#,
        fail = fail_marker.display(),
        fail_demote = fail_demote.display(),
        epoch = epoch_file.display(),
        roles = roles.display(),
        lease = lease.display(),
    )
}

/// The local spec with one service, `svc`, on alice, bob and charlie at the test's ports.
fn write_spec(dir: &Path, services: &BTreeMap<&'static str, TcpService>) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("chain-spec/local.json")).unwrap();
    let mut spec: serde_json::Value = serde_json::from_str(&text).unwrap();
    spec["id"] = "failover-test".into();
    let endpoints: serde_json::Map<String, serde_json::Value> = services
        .iter()
        .map(|(name, s)| ((*name).to_owned(), format!("127.0.0.1:{}", s.port).into()))
        .collect();
    spec["services"] = serde_json::json!([{
        "name": "svc",
        "candidates": CANDIDATES,
        "heartbeat_timeout_ms": 1000,
        "promotion_timeout_ms": 5000,
        "max_lag_ms": 1000,
        "endpoints": endpoints,
    }]);
    let path = dir.join("spec.json");
    std::fs::write(&path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    path
}

/// The whole answer to `GET path` on loopback `port` (empty if nothing answers).
fn http_get(port: u16, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// The candidate after `except` by priority (all are equally caught up: no checkpoints).
fn next_candidate(except: &[&str]) -> &'static str {
    CANDIDATES
        .into_iter()
        .find(|c| !except.contains(c))
        .unwrap()
}

#[test]
fn failover_survives_a_crash_a_hang_a_failed_promotion_and_a_failing_demotion() {
    let mut c = Cluster::start();
    let (first, e1) = c.served(None, 0, WAIT);
    // HAProxy's view: only the active says 200 on /primary; the others are healthy replicas.
    for name in CANDIDATES {
        let primary = c.health_status(name, "/primary?service=svc");
        assert_eq!(primary == 200, name == first, "{name} /primary {primary}");
    }
    let replica = next_candidate(&[&first]);
    assert_eq!(c.health_status(replica, "/replica?service=svc"), 200);
    assert_eq!(c.health_status(replica, "/liveness"), 200);
    assert_eq!(c.health_status(replica, "/primary?service=nope"), 404);

    // 1. The active machine dies: its node is SIGKILLed and its service goes with it.
    c.crash(&first);
    let (second, e2) = c.served(Some(&first), e1, WAIT);
    assert!(e2 > e1);
    c.assert_never_two_active();
    // It comes back (a new machine, service up) and rejoins as a standby.
    c.restart(&first);

    // 2. The new active hangs (SIGSTOP); another takes over; when it resumes it must find its
    //    lease gone and fence itself (on_demote removes its epoch file).
    c.signal(&second, "STOP");
    let (third, e3) = c.served(Some(&second), e2, WAIT);
    assert!(e3 > e2);
    // Frozen, its agent cannot run on_demote: the epoch file is still there. The lease file
    // a lease-aware service checks has expired by itself.
    assert!(c.path(&format!("{second}.epoch")).exists());
    let lease = LeaseRecord::read(&c.path(&format!("{second}.lease"))).unwrap();
    assert_eq!(lease.epoch, e2);
    assert!(!lease.allows(e2), "{lease:?} still allows serving");
    let lease = LeaseRecord::read(&c.path(&format!("{third}.lease"))).unwrap();
    assert!(lease.allows(e3), "the new active's {lease:?}");
    c.signal(&second, "CONT");
    c.wait_for_line(&second, "stopped serving service=svc");
    let deadline = Instant::now() + WAIT;
    while c.path(&format!("{second}.epoch")).exists() {
        assert!(Instant::now() < deadline, "{second} never ran on_demote");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_ne!(
        c.health_status(&second, "/primary?service=svc"),
        200,
        "{second} still says it is the primary\n{}",
        c.dump()
    );
    c.assert_never_two_active();

    // 3. The active is killed and the next candidate's on_promote fails: the one after wins.
    let failing = next_candidate(&[&third]);
    std::fs::write(c.path(&format!("{failing}.fail-promote")), "").unwrap();
    c.crash(&third);
    let (fourth, e4) = c.served(Some(&third), e3, WAIT);
    assert_ne!(fourth, failing, "a node whose on_promote failed served");
    assert!(
        e4 > e3 + 1,
        "the failed promotion must have used an epoch: {e3} -> {e4}"
    );
    c.wait_for_line(failing, "hook on_promote failed service=svc");
    c.assert_never_two_active();
    assert!(
        !intervals(NAMES[c.index(failing)], &c.lines(failing))
            .iter()
            .any(|i| i.epoch > e3),
        "{failing} served after its failed promotion"
    );

    // 4. An admin switches over from an active whose on_demote keeps failing: it stops
    //    serving at once and acknowledges nothing, and the new node promotes once the old
    //    one's lease bound has passed instead of waiting for the hook forever.
    c.restart(&third);
    std::fs::write(c.path(&format!("{fourth}.fail-demote")), "").unwrap();
    let call = format!(
        r#"{{"service":"svc","target":"{}"}}"#,
        drchain_runtime::dev::dev_account(&third)
    );
    let rpc = format!("ws://127.0.0.1:{}", c.nodes[3].rpc);
    let dir = tempfile::tempdir().unwrap();
    let args = ["tx", "--dev", "alice", "--admin", "--rpc", &rpc];
    let args = [&args[..], &["failover", "switchover", &call]].concat();
    common::ok(dir.path(), &args);
    let (fifth, e5) = c.served(Some(&fourth), e4, WAIT);
    assert_eq!(fifth, third);
    assert!(e5 > e4);
    c.wait_for_line(&fourth, "on_demote failed 1 time(s) in a row service=svc");
    assert_ne!(c.health_status(&fourth, "/primary?service=svc"), 200);
    // On chain it stays fenced, reporting the epoch it lost, while the hook keeps failing...
    let record = |c: &Cluster| {
        let view = common::rpc_call(
            c.nodes[3].rpc,
            "failover_service",
            &serde_json::json!(["svc"]),
        )
        .unwrap();
        let account = drchain_runtime::dev::dev_account(&fourth).to_string();
        let nodes = view["nodes"].as_array().cloned().unwrap_or_default();
        let node = nodes.into_iter().find(|n| n["node"] == account.as_str());
        node.map(|n| (n["role"].to_string(), n["heartbeat"]["epoch_seen"].as_u64()))
    };
    c.wait_for_line(&fourth, "on_demote failed 2 time(s) in a row service=svc");
    let (role, epoch_seen) = record(&c).unwrap();
    assert!(
        role == "\"fenced\"" && epoch_seen.is_some_and(|e| e <= e4),
        "{fourth} acknowledged the switchover without demoting: {role} {epoch_seen:?}"
    );
    // ...and becomes a standby once the hook succeeds.
    std::fs::remove_file(c.path(&format!("{fourth}.fail-demote"))).unwrap();
    let deadline = Instant::now() + WAIT;
    while record(&c).is_none_or(|(role, _)| role != "\"standby\"") {
        assert!(Instant::now() < deadline, "{fourth} never became a standby");
        std::thread::sleep(Duration::from_millis(100));
    }
    c.assert_never_two_active();
}

/// The proxy follows the chain through its first RPC node until that node stops sending
/// heads (SIGSTOP: its connections stay open, nothing arrives); it must then refuse to route
/// on stale information and follow a live node, so a failover while that node is stopped
/// still reaches clients.
/// `systemctl stop` on the active node: the node stops heartbeating, so the chain elects
/// another within the heartbeat timeout; the service it promoted must not outlive it. The
/// agent runs `on_demote` before the process exits.
#[test]
fn a_node_stopped_while_active_fences_its_service_before_it_exits() {
    let mut c = Cluster::start();
    let (first, e1) = c.served(None, 0, WAIT);
    let epoch_file = c.path(&format!("{first}.epoch"));
    assert!(epoch_file.exists());
    c.signal(&first, "TERM");
    let i = c.index(&first);
    let mut child = c.nodes[i].child.take().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !epoch_file.exists(),
        "{first} exited ({status}) with its service still promoted\n{}",
        c.dump()
    );
    let (second, e2) = c.served(Some(&first), e1, WAIT);
    assert!(e2 > e1);
    c.assert_never_two_active();
    eprintln!("{first} stopped and fenced; {second} serves epoch {e2}");
}

/// `drchain ARGS` against dave's RPC; its output.
fn operator(c: &Cluster, args: &[&str]) -> std::process::Output {
    let rpc = format!("ws://127.0.0.1:{}", c.nodes[3].rpc);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--rpc", &rpc]);
    common::drchain(c.dir.path(), &all)
}

fn operator_ok(c: &Cluster, args: &[&str]) -> String {
    let out = operator(c, args);
    assert!(
        out.status.success(),
        "drchain {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.dump()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn operator_fails(c: &Cluster, args: &[&str]) -> String {
    let out = operator(c, args);
    assert!(!out.status.success(), "drchain {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `drchain switchover svc --to TARGET`, signed by the admin alice, unprompted; its output.
/// Sent once the chain has the target's first heartbeat: the chain refuses to hand the
/// service to a node it has not heard from ("no heartbeat yet"), and a candidate's first
/// heartbeat can come after another's promotion.
fn switch_over(c: &Cluster, target: &str) -> String {
    let account = drchain_runtime::dev::dev_account(target).to_string();
    let deadline = Instant::now() + WAIT;
    loop {
        let view = common::rpc_call(
            c.nodes[3].rpc,
            "failover_service",
            &serde_json::json!(["svc"]),
        )
        .unwrap_or_default();
        let heartbeating = view["nodes"].as_array().is_some_and(|nodes| {
            nodes
                .iter()
                .any(|n| n["node"] == account.as_str() && !n["heartbeat"].is_null())
        });
        if heartbeating {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{target} never heartbeated\n{}",
            c.dump()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    operator_ok(
        c,
        &[
            "switchover",
            "svc",
            "--to",
            target,
            "--dev",
            "alice",
            "--force",
        ],
    )
}

#[test]
fn operators_list_switch_over_pause_resume_and_read_the_history() {
    let mut c = Cluster::start();
    let (first, e1) = c.served(None, 0, WAIT);
    let list = operator_ok(&c, &["list"]);
    for name in CANDIDATES {
        assert!(list.contains(name), "{list}");
    }
    assert!(
        list.contains("active") && list.contains("standby"),
        "{list}"
    );

    // A switchover needs an admin's key, and confirmation unless --force.
    let target = next_candidate(&[&first]);
    let no_key = operator_fails(&c, &["switchover", "svc", "--to", target]);
    assert!(
        no_key.contains("signed by an admin") && no_key.contains("alice"),
        "{no_key}"
    );
    let not_admin = operator_fails(&c, &["switchover", "svc", "--to", target, "--dev", "dave"]);
    assert!(not_admin.contains("is not an admin's"), "{not_admin}");
    let unconfirmed = operator_fails(&c, &["switchover", "svc", "--to", target, "--dev", "alice"]);
    assert!(unconfirmed.contains("--force"), "{unconfirmed}");
    assert_eq!(
        c.served(None, 0, WAIT).0,
        first,
        "nothing moved without confirmation"
    );

    let done = switch_over(&c, target);
    assert!(
        done.contains(&format!("{target} is active in epoch")),
        "{done}"
    );
    let (second, e2) = c.served(Some(&first), e1, WAIT);
    assert_eq!(second, target);

    // Paused: the active's machine dies and nobody takes over until the resume.
    operator_ok(&c, &["pause", "svc", "--dev", "alice", "--force"]);
    let list = operator_ok(&c, &["list", "svc"]);
    assert!(list.contains("maintenance mode"), "{list}");
    c.crash(&second);
    std::thread::sleep(Duration::from_secs(4));
    let view: serde_json::Value =
        serde_json::from_str(&operator_ok(&c, &["list", "--output", "json"])).unwrap();
    assert_eq!(view[0]["epoch"], e2, "no election while paused: {view}");
    assert!(
        c.ask().is_none(),
        "nobody serves while the paused active is down"
    );
    operator_ok(&c, &["resume", "svc", "--dev", "alice", "--force"]);
    let (third, e3) = c.served(Some(&second), e2, WAIT);
    c.assert_never_two_active();

    // The history shows each transition with its cause and durations.
    let history: serde_json::Value =
        serde_json::from_str(&operator_ok(&c, &["history", "svc", "-o", "json"])).unwrap();
    let transitions = history["transitions"].as_array().unwrap();
    let switch = transitions
        .iter()
        .find(|t| t["reason"] == "switchover")
        .unwrap_or_else(|| panic!("no switchover in {history}"));
    assert_eq!(switch["outcome"], "promoted");
    assert!(switch["promoted_after_ms"].as_u64().is_some(), "{switch}");
    let stale = transitions
        .iter()
        .find(|t| t["reason"] == "heartbeat_stale" && t["epoch"] == e3)
        .unwrap_or_else(|| panic!("no failover to epoch {e3} in {history}"));
    // Silence on the chain's live clock, which skips stalls (at most `live_clock_max_gap_ms`
    // a block): with a validator down, rounds it should have proposed time out, so the 4 s
    // the active was dead can read as less — but always more than the heartbeat timeout.
    assert!(stale["silent_ms"].as_u64().unwrap() > 1000, "{stale}");
    assert!(transitions.iter().any(|t| t["kind"] == "paused"));
    assert!(transitions.iter().any(|t| t["kind"] == "resumed"));
    let table = operator_ok(&c, &["history", "svc"]);
    assert!(
        table.contains("failover") && table.contains(third.as_str()),
        "{table}"
    );
    eprintln!("{table}");
}

#[test]
fn the_dashboard_shows_the_active_node_and_follows_a_switchover_live() {
    let browsers = common::browser::installed();
    if browsers.is_empty() {
        eprintln!("skipped: no browser to open the dashboard in (apt-get install chromium firefox-esr; CI installs them)");
        return;
    }
    let c = Cluster::start();
    let (first, _) = c.served(None, 0, WAIT);
    // The page of the node the service will move to: its own agent's hooks show there.
    let target = next_candidate(&[&first]);
    let url = format!("http://127.0.0.1:{}/", c.nodes[c.index(target)].rpc);
    let mut pages: Vec<_> = browsers
        .iter()
        .map(|(name, program)| common::browser::Browser::open(name, program, &url))
        .collect();
    let active = "document.querySelector('[data-service=svc] .active-node')?.textContent";
    for page in &mut pages {
        page.wait_for(&format!("{active} === '{first}'"), WAIT);
        page.wait_for(
            "document.querySelectorAll('[data-service=svc] tr.transition').length >= 1",
            WAIT,
        );
        page.wait_for(
            "document.querySelectorAll('#validators tr[data-validator]').length === 4 \
             && document.querySelector('#validators').innerText.includes('online')",
            WAIT,
        );
        page.wait_for(
            "document.getElementById('finalized').textContent.startsWith('#')",
            WAIT,
        );
        // Anything set now is lost if the page reloads.
        page.eval("window.testMarker = 'same page'");
    }
    switch_over(&c, target);
    for page in &mut pages {
        page.wait_for(&format!("{active} === '{target}'"), WAIT);
        page.wait_for(
            "[...document.querySelectorAll('[data-service=svc] tr.transition')] \
             .some(r => r.innerText.includes('switchover') && r.innerText.includes('promoted'))",
            WAIT,
        );
        page.wait_for(
            &format!(
                "document.querySelector('[data-service=svc] tr[data-node={target}] .last-hook') \
                 ?.innerText.includes('on_promote succeeded')"
            ),
            WAIT,
        );
        assert_eq!(
            page.eval("window.testMarker"),
            "same page",
            "{}: the page reloaded",
            page.name
        );
        let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
            "../target/test-artifacts/dashboard-{}.png",
            page.name
        ));
        page.screenshot(&shot);
        eprintln!("dashboard in {}: {}", page.name, shot.display());
    }
}

#[test]
fn the_proxy_leaves_a_stopped_rpc_node_for_a_live_one() {
    let mut c = Cluster::start();
    let (first, e1) = c.served(None, 0, WAIT);
    let followed = c.proxy_follows().expect("the proxy follows a node");
    c.signal(followed, "STOP");
    // The active's service dies: its health check fails, and the chain elects another (or,
    // if the stopped node was the active's, its heartbeats stop).
    c.services[first.as_str()].stop();
    let (second, e2) = c.served(Some(&first), e1, WAIT);
    assert!(e2 > e1, "{first} -> {second}: epoch {e1} -> {e2}");
    let now = c.proxy_follows();
    assert!(now.is_some_and(|n| n != followed), "{followed} -> {now:?}");
    let stale = c.proxy_metric("drchain_proxy_stale_heads_total{service=\"svc\"}");
    assert!(stale.is_some_and(|n| n >= 1.0), "{stale:?}\n{}", c.dump());
    let switches = c.proxy_metric("drchain_proxy_rpc_switches_total{service=\"svc\"}");
    assert!(switches.is_some_and(|n| n >= 1.0), "{switches:?}");
    assert_eq!(
        c.proxy_metric("drchain_proxy_routing{service=\"svc\"}"),
        Some(1.0)
    );
    c.signal(followed, "CONT");
}

/// What the lying RPC node does to the answers it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lie {
    /// Nothing: it forwards faithfully.
    Not,
    /// Changes a byte of every commit certificate (`chain_getBlock`'s justification).
    Certificate,
    /// Changes every storage value it forwards, keeping the proof.
    Value,
}

/// A JSON-RPC server in front of a real node: it forwards what a proxy asks, and lies when
/// told to. Stops when dropped.
struct LyingRpc {
    port: u16,
    lie: Arc<std::sync::Mutex<Lie>>,
    _server: jsonrpsee::server::ServerHandle,
    _runtime: tokio::runtime::Runtime,
}

impl LyingRpc {
    fn start(upstream: u16) -> Self {
        use jsonrpsee::core::client::{ClientT, SubscriptionClientT};
        use jsonrpsee::types::ErrorObjectOwned;
        use serde_json::Value;
        type Ctx = (jsonrpsee::ws_client::WsClient, Arc<std::sync::Mutex<Lie>>);

        let runtime = tokio::runtime::Runtime::new().unwrap();
        let lie = Arc::new(std::sync::Mutex::new(Lie::Not));
        let (port, server) = runtime.block_on(async {
            let client = jsonrpsee::ws_client::WsClientBuilder::default()
                .build(format!("ws://127.0.0.1:{upstream}"))
                .await
                .unwrap();
            let mut module = jsonrpsee::RpcModule::new((client, lie.clone()));
            for method in [
                "chain_getHeader",
                "chain_getBlock",
                "state_getReadProof",
                "chain_getValidatorSetChanges",
            ] {
                module
                    .register_async_method(method, move |params, ctx: Arc<Ctx>, _| async move {
                        let (client, lie) = &*ctx;
                        let params: Vec<Value> = params.parse().unwrap_or_default();
                        let mut array = jsonrpsee::core::params::ArrayParams::new();
                        for p in params {
                            array.insert(p).unwrap();
                        }
                        let mut answer: Value =
                            client.request(method, array).await.map_err(|e| {
                                ErrorObjectOwned::owned(-32000, e.to_string(), None::<()>)
                            })?;
                        let lie = *lie.lock().unwrap();
                        let flip = |v: &mut Value| {
                            if let Some(hex) = v.as_str() {
                                let last = if hex.ends_with('0') { '1' } else { '0' };
                                *v = Value::String(format!("{}{last}", &hex[..hex.len() - 1]));
                            }
                        };
                        match (method, lie) {
                            ("chain_getBlock", Lie::Certificate) => {
                                flip(&mut answer["justifications"][0][1]);
                            }
                            ("state_getReadProof", Lie::Value) => {
                                if let Some(proofs) = answer["proofs"].as_array_mut() {
                                    for p in proofs {
                                        flip(&mut p["value"]);
                                    }
                                }
                            }
                            _ => {}
                        }
                        Ok::<Value, ErrorObjectOwned>(answer)
                    })
                    .unwrap();
            }
            module
                .register_subscription(
                    "chain_subscribeFinalizedHeads",
                    "chain_finalizedHead",
                    "chain_unsubscribeFinalizedHeads",
                    |_, pending, ctx: Arc<Ctx>, _| async move {
                        let mut heads: jsonrpsee::core::client::Subscription<Value> = ctx
                            .0
                            .subscribe(
                                "chain_subscribeFinalizedHeads",
                                jsonrpsee::rpc_params![],
                                "chain_unsubscribeFinalizedHeads",
                            )
                            .await?;
                        let sink = pending.accept().await?;
                        while let Some(Ok(head)) = heads.next().await {
                            sink.send(serde_json::value::to_raw_value(&head)?).await?;
                        }
                        jsonrpsee::core::SubscriptionResult::Ok(())
                    },
                )
                .unwrap();
            let server = jsonrpsee::server::Server::builder()
                .build("127.0.0.1:0")
                .await
                .unwrap();
            let port = server.local_addr().unwrap().port();
            (port, server.start(module))
        });
        Self {
            port,
            lie,
            _server: server,
            _runtime: runtime,
        }
    }

    fn lie(&self, lie: Lie) {
        *self.lie.lock().unwrap() = lie;
    }
}

/// `drchain proxy --verify` trusts the chain spec, not its RPC node: in front of a node that
/// forges certificates or storage values, it stops routing (and counts the failures); when the
/// node tells the truth again, it routes again.
#[test]
fn a_verifying_proxy_refuses_a_node_that_forges_certificates_or_storage() {
    let c = Cluster::start();
    let (active, epoch) = c.served(None, 0, WAIT);
    let rpc = LyingRpc::start(c.nodes[3].rpc);
    let port = common::free_port();
    let metrics = common::free_port();
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_drchain"))
        .args(["proxy", "--service", "svc", "--verify", "--chain"])
        .arg(&c.spec)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--prometheus-port", &metrics.to_string()])
        .args(["--rpc", &format!("ws://127.0.0.1:{}", rpc.port)])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(c.path("verify-proxy.log")).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(c.path("verify-proxy.log")).unwrap_or_default();
    let until = |what: &str, ok: &dyn Fn(Option<(String, String)>) -> bool| {
        let deadline = Instant::now() + WAIT;
        while !ok(ask_at(port)) {
            assert!(Instant::now() < deadline, "{what}\n{}", log());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let failures = || {
        http_get(metrics, "/metrics")
            .lines()
            .find_map(|l| {
                l.strip_prefix("drchain_proxy_verify_failures_total{service=\"svc\"}")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let routed = |a: Option<(String, String)>| {
        a.is_some_and(|(node, e)| node == active && e == epoch.to_string())
    };
    until("the verifying proxy routes through an honest node", &routed);
    for lie in [Lie::Certificate, Lie::Value] {
        let before = failures();
        rpc.lie(lie);
        // Connections accepted meanwhile are closed at once: no answer.
        until(&format!("the proxy still routes with {lie:?}"), &|a| {
            a.is_none()
        });
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            ask_at(port).is_none(),
            "routed again while the node lies ({lie:?})"
        );
        assert!(
            failures() > before,
            "no verify failure counted for {lie:?}\n{}",
            log()
        );
        rpc.lie(Lie::Not);
        until(
            "the proxy routes again once the node tells the truth",
            &routed,
        );
    }
    assert!(log().contains("does not check"), "{}", log());
    let _ = proxy.kill();
    let _ = proxy.wait();
}

/// libfaketime's multithreaded preload library, installed from apt when missing and root.
fn libfaketime() -> Option<PathBuf> {
    let find = || {
        std::fs::read_dir("/usr/lib")
            .ok()?
            .filter_map(Result::ok)
            .map(|d| d.path().join("faketime/libfaketimeMT.so.1"))
            .find(|p| p.exists())
    };
    if find().is_none() && common::is_root() {
        let _ = Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "libfaketime",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    find()
}

/// Wall-clock steps on validators (a bad NTP step), judged from what clients see through the
/// proxy. Each node runs under libfaketime with its own offset file; only `CLOCK_REALTIME`
/// moves, as in a real step (monotonic time, which leases use, does not). A block's timestamp
/// is its proposer's clock and voters refuse one further than `max_drift_ms` from theirs, so a
/// validator 10 s ahead has its proposals refused and refuses everyone else's: with one
/// stepped (f = 1) the chain goes on and the active keeps serving; with two, no quorum shares
/// a clock, so the chain stops and the active fences itself when its lease runs out, but
/// nobody is elected early and no two nodes serve. Once the clocks are right again one node
/// serves.
#[test]
fn clock_steps_on_validators_bring_no_early_failover_and_no_overlap() {
    let Some(lib) = libfaketime() else {
        eprintln!("skipped: libfaketime is not installed (apt-get install libfaketime)");
        return;
    };
    let offset = |node: &NodeProcess| node.base.with_extension("clock");
    let c = Cluster::start_with(|node| {
        std::fs::create_dir_all(node.base.parent().unwrap()).unwrap();
        std::fs::write(offset(node), "+0\n").unwrap();
        node.env = vec![
            ("LD_PRELOAD".into(), lib.display().to_string()),
            (
                "FAKETIME_TIMESTAMP_FILE".into(),
                offset(node).display().to_string(),
            ),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ];
    });
    let step = |c: &Cluster, name: &str, to: &str| {
        std::fs::write(offset(&c.nodes[c.index(name)]), format!("{to}\n")).unwrap();
    };
    let (first, e1) = c.served(None, 0, WAIT);
    let second = CANDIDATES.into_iter().find(|n| *n != first).unwrap();
    let mut history = vec![];
    // Asks for `span`: what answered, in order.
    let watch = |c: &Cluster, span: Duration, history: &mut Vec<(String, u64)>| {
        let (mut asked, mut answered) = (0, 0);
        let until = Instant::now() + span;
        while Instant::now() < until {
            asked += 1;
            if let Some((node, epoch)) = c.ask() {
                if let Ok(epoch) = epoch.parse::<u64>() {
                    answered += 1;
                    history.push((node, epoch));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (asked, answered)
    };

    step(&c, "dave", "+10s");
    let (asked, answered) = watch(&c, Duration::from_secs(5), &mut history);
    assert!(
        history.iter().all(|(n, e)| *n == first && *e == e1),
        "one validator 10 s ahead moved the service: {history:?}"
    );
    eprintln!("one validator 10 s ahead: {answered} of {asked} requests served");
    // The chain goes on: the active's heartbeats land and it keeps serving (most requests;
    // a loaded machine may let a lease lapse for a moment).
    assert!(
        answered * 2 > asked,
        "one validator 10 s ahead: {answered} of {asked} requests served\n{}",
        c.dump()
    );

    // The step took: dave refused the others' blocks as too far behind his clock.
    let dave = c.nodes[c.index("dave")].dump(|l| l.contains("ms behind our clock"));
    assert!(
        dave.lines().count() > 1,
        "dave's clock never stepped:\n{dave}"
    );

    step(&c, second, "+10s");
    let (asked, answered) = watch(&c, Duration::from_secs(5), &mut history);
    eprintln!("two validators 10 s ahead: {answered} of {asked} requests served");
    assert!(
        history.iter().all(|(n, e)| *n == first && *e == e1),
        "two validators 10 s ahead: a failover while the chain cannot agree on time: {history:?}"
    );

    step(&c, "dave", "+0");
    step(&c, second, "+0");
    let (node, epoch) = c.served(None, 0, WAIT);
    history.push((node, epoch));
    // Clients saw epochs only go up, each served by one node.
    for pair in history.windows(2) {
        let ((n1, e1), (n2, e2)) = (&pair[0], &pair[1]);
        assert!(
            e2 > e1 || (e2 == e1 && n1 == n2),
            "{n1}@{e1} then {n2}@{e2}"
        );
    }
}

/// HAProxy in front of the three services as docs/operations.md shows it (httpchk on each
/// node's `/primary`, `inter 100ms fall 1 rise 1`), on a free port; `None` when `haproxy` is
/// not installed.
fn start_haproxy(c: &Cluster) -> Option<(Child, u16)> {
    let port = common::free_port();
    let servers: String = CANDIDATES
        .iter()
        .map(|name| {
            format!(
                "    server {name} 127.0.0.1:{} check port {}\n",
                c.services[name].port,
                c.nodes[c.index(name)].health
            )
        })
        .collect();
    let config = format!(
        "global\n    maxconn 256\ndefaults\n    mode tcp\n    timeout connect 500ms\n    \
         timeout client 5s\n    timeout server 5s\nfrontend svc\n    bind 127.0.0.1:{port}\n    \
         default_backend svc\nbackend svc\n    option httpchk GET /primary?service=svc\n    \
         http-check expect status 200\n    \
         default-server inter 100ms fall 1 rise 1 on-marked-down shutdown-sessions\n{servers}"
    );
    let path = c.path("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(c.path("haproxy.log")).unwrap())
        .spawn()
        .ok()?;
    Some((child, port))
}

/// min, p50, mean, p99 and max of `times`, for the benchmark's summary.
fn summary(times: &mut [Duration]) -> String {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |p: f64| times[((p * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
    let mean = times.iter().map(|d| ms(*d)).sum::<f64>() / times.len() as f64;
    format!(
        "{} trials: min {:.0} ms, p50 {:.0} ms, mean {mean:.0} ms, p99 {:.0} ms, max {:.0} ms",
        times.len(),
        ms(times[0]),
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(times[times.len() - 1]),
    )
}

/// Failover time: SIGKILL of the active machine → the first client request answered by the
/// new active, at the default `heartbeat_timeout_ms` of 1000, through `drchain proxy` and (when
/// installed) through HAProxy checking `/primary` every 100 ms. Prints each trial and
/// p50/p99; asserts only that the trials happened and never two nodes served at once.
#[test]
#[ignore = "benchmark: cargo test --release -p drchain-node --test failover -- --ignored --nocapture"]
fn failover_benchmark() {
    let trials: usize = std::env::var("DRCHAIN_FAILOVER_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(20);
    let mut c = Cluster::start();
    let mut haproxy = start_haproxy(&c);
    if haproxy.is_none() {
        println!("haproxy is not installed: timing drchain proxy only");
    }
    let (mut active, mut epoch) = c.served(None, 0, WAIT);
    let (mut via_proxy, mut via_haproxy) = (vec![], vec![]);
    for trial in 1..=trials {
        let killed = active.clone();
        let started = Instant::now();
        let killed_at = wall_ms();
        c.crash(&killed);
        // Both paths asked in turn until each was answered by the new active.
        let (mut proxy_took, mut haproxy_took) = (None, haproxy.as_ref().map(|_| None));
        let mut next = None;
        while proxy_took.is_none() || haproxy_took.is_some_and(|t: Option<Duration>| t.is_none()) {
            assert!(started.elapsed() < WAIT, "no new active\n{}", c.dump());
            let moved = |answer: Option<(String, String)>| {
                answer.and_then(|(node, e)| {
                    let e = e.parse::<u64>().ok()?;
                    (node != killed && e > epoch).then_some((node, e))
                })
            };
            if proxy_took.is_none() {
                if let Some(served) = moved(c.ask()) {
                    proxy_took = Some(started.elapsed());
                    next = Some(served);
                }
            }
            if let (Some(None), Some((_, port))) = (haproxy_took, &haproxy) {
                if moved(ask_at(*port)).is_some() {
                    haproxy_took = Some(Some(started.elapsed()));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let (next, e) = next.unwrap();
        let took = proxy_took.unwrap();
        let haproxy_ms = haproxy_took
            .flatten()
            .map(|t| format!(", HAProxy {} ms", t.as_millis()))
            .unwrap_or_default();
        println!(
            "trial {trial:2}: {killed} -> {next} (epoch {epoch} -> {e}) in {} ms{haproxy_ms} (killed at {killed_at})",
            took.as_millis()
        );
        via_proxy.push(took);
        via_haproxy.extend(haproxy_took.flatten());
        c.restart(&killed);
        (active, epoch) = (next, e);
    }
    c.assert_never_two_active();
    // dump() writes every node's whole log when DRCHAIN_TEST_LOGS names a directory.
    let _ = c.dump();
    println!(
        "failover through drchain proxy over {}",
        summary(&mut via_proxy)
    );
    if !via_haproxy.is_empty() {
        println!(
            "failover through HAProxy over {}",
            summary(&mut via_haproxy)
        );
    }
    if let Some((mut child, _)) = haproxy.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
