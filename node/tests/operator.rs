//! The operator's tools against a real `drchain run --dev` process: `drchain tx` signs, submits
//! and reports the runtime's verdict; `drchain status` prints the services; `/metrics` serves
//! Prometheus text; the RPC port answers plain HTTP JSON-RPC as `docs/rpc.md` shows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct DevNode {
    child: Child,
    rpc: u16,
    metrics: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl DevNode {
    fn start() -> Self {
        let (rpc, metrics) = (common::free_port(), common::free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_drchain"))
            .args(["run", "--dev", "--tmp", "--port", "0"])
            .args(["--rpc-port", &rpc.to_string()])
            .args(["--prometheus-port", &metrics.to_string()])
            // Waits for a per-block line (debug).
            .env("RUST_LOG", "info,drchain_node::node_loop::effects=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let node = Self {
            child,
            rpc,
            metrics,
            lines,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !node.logged("Finalized #2 ") {
            assert!(
                Instant::now() < deadline,
                "the dev node did not finalize: {:?}",
                node.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    fn logged(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    fn tx_args(&self, args: &[&str]) -> Vec<String> {
        let rpc = format!("ws://127.0.0.1:{}", self.rpc);
        let mut all: Vec<String> = vec!["tx".into(), "--rpc".into(), rpc];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all
    }

    /// Runs `drchain tx ARGS`; it must succeed. Returns its stdout.
    fn tx_succeeds(&self, args: &[&str]) -> String {
        let all = self.tx_args(args);
        common::ok(
            Path::new("."),
            &all.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    }

    /// Runs `drchain tx ARGS`; it must fail saying `reason`.
    fn tx_fails(&self, args: &[&str], reason: &str) {
        let all = self.tx_args(args);
        let stderr = common::fails(
            Path::new("."),
            &all.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}

impl Drop for DevNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw HTTP/1.1 request; returns the whole response.
fn http(port: u16, request: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn post(port: u16, body: &str) -> String {
    http(
        port,
        &format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn tx_status_metrics_and_plain_http_rpc_work_against_a_running_node() {
    let node = DevNode::start();

    const HEARTBEAT: &str =
        r#"{"service":"demo","epoch_seen":0,"health":"healthy","applied_checkpoint":null}"#;
    // A heartbeat signed with alice's dev key is finalized and succeeds.
    let stdout = node.tx_succeeds(&["--dev", "alice", "service_status", "heartbeat", HEARTBEAT]);
    assert!(stdout.contains("finalized in #"), "{stdout}");
    assert!(stdout.contains("result: success"), "{stdout}");
    assert!(
        stdout.contains("health_changed"),
        "the events are shown: {stdout}"
    );
    // A call that needs the admins fails in the runtime: exit 1 with the runtime's reason...
    node.tx_fails(
        &[
            "--dev",
            "alice",
            "failover",
            "switchover",
            r#"{"service":"demo"}"#,
        ],
        "needs admin origin",
    );
    // ... and succeeds as an admin proposal (alice is the dev chain's admin, threshold 1).
    node.tx_succeeds(&[
        "--dev",
        "alice",
        "--admin",
        "network_config",
        "set_bootnodes",
        r#"{"bootnodes":[]}"#,
    ]);
    // A malformed call is refused before anything is sent.
    node.tx_fails(&["--dev", "alice", "failover", "fly", "{}"], "not a call");
    // A non-member's transaction is refused by the pool with the reason.
    node.tx_fails(
        &["--dev", "mallory", "service_status", "heartbeat", HEARTBEAT],
        "not a member",
    );

    // drchain status shows the chain and the service with alice's heartbeat.
    let rpc = format!("http://127.0.0.1:{}", node.rpc);
    let stdout = common::ok(Path::new("."), &["status", "--rpc", &rpc]);
    assert!(stdout.contains("finalized #"), "{stdout}");
    assert!(stdout.contains("service demo"), "{stdout}");
    assert!(stdout.contains("alice"), "{stdout}");
    assert!(stdout.contains("healthy"), "{stdout}");
    assert!(
        stdout.contains("admitted until"),
        "the members table: {stdout}"
    );
    assert!(stdout.contains("validator yes"), "alice votes: {stdout}");
    // …and the database on disk with the free space left.
    assert!(stdout.contains("disk: database "), "{stdout}");
    assert!(stdout.contains(" GB free of "), "{stdout}");
    let unreachable = common::fails(Path::new("."), &["status", "--rpc", "http://127.0.0.1:1"]);
    assert!(unreachable.contains("system_chain"), "{unreachable}");
    assert!(
        unreachable.contains("http://127.0.0.1:1"),
        "the error names the node that did not answer: {unreachable}"
    );

    // Prometheus text on /metrics.
    let metrics = http(
        node.metrics,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    for name in [
        "drchain_finalized_height ",
        "drchain_best_height ",
        "drchain_peers ",
        "drchain_pool_transactions ",
        "drchain_consensus_height ",
        "drchain_consensus_round ",
        "drchain_block_import_seconds_count ",
        "drchain_service_epoch{service=\"demo\"}",
        "drchain_service_role{",
        "drchain_rpc_calls_total{method=\"author_submitAndWatchExtrinsic\"}",
        "drchain_process_resident_memory_bytes ",
        // Replication's, named in docs/operations.md ("Replicating a service").
        "# TYPE drchain_replication_lag_ms gauge",
        "# TYPE drchain_checkpoint_sequence gauge",
        "# TYPE drchain_promotions_withheld counter",
        "# TYPE drchain_data_loss_accepted counter",
        "# TYPE drchain_replication_checkpoints counter",
        "# TYPE drchain_replication_snapshot_failures counter",
        "# TYPE drchain_replication_checkpoint_seconds histogram",
        "# TYPE drchain_replication_dedup_ratio gauge",
        "# TYPE drchain_replication_compression_ratio gauge",
        "# TYPE drchain_replication_dictionary_gain gauge",
        "# TYPE drchain_replication_applied_sequence gauge",
        "# TYPE drchain_replication_apply_failures counter",
        "drchain_replication_store_bytes ",
        // Defences and expiry, named in docs/operations.md and docs/security.md.
        "drchain_member_expiry_seconds{",
        "# TYPE drchain_peer_misbehaviour counter",
        "# TYPE drchain_gossip_publish_failures counter",
        // Disk, named in docs/operations.md ("Disk").
        "drchain_database_bytes{kind=\"blocks\"}",
        "drchain_database_bytes{kind=\"state\"}",
        "drchain_database_bytes{kind=\"consensus_wal\"}",
        "drchain_database_memtable_bytes ",
        "drchain_database_sst_bytes ",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    // The database takes space on a disk that has some left.
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{metrics}"))
    };
    assert!(value("drchain_database_disk_bytes ") > 0);
    let (free, total) = (
        value("drchain_disk_free_bytes "),
        value("drchain_disk_total_bytes "),
    );
    assert!(free > 0 && free <= total, "free {free} of {total}");
    let missing = http(
        node.metrics,
        "GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    // Plain HTTP JSON-RPC, as curl sends it; malformed JSON gets a parse error.
    let health = post(
        node.rpc,
        r#"{"jsonrpc":"2.0","id":1,"method":"system_health"}"#,
    );
    assert!(health.contains("\"isSyncing\":false"), "{health}");
    let garbage = post(node.rpc, "{not json");
    assert!(garbage.contains("-32700"), "{garbage}");
    let still = post(
        node.rpc,
        r#"{"jsonrpc":"2.0","id":2,"method":"system_chain"}"#,
    );
    assert!(
        still.contains("\"result\""),
        "the node keeps serving: {still}"
    );
}

/// `deploy/prometheus/alerts.yml` names only metrics a running node serves, and promtool
/// accepts it (installed from apt as root; skipped with a reason otherwise).
#[test]
fn the_alert_rules_and_the_grafana_dashboard_check_and_name_only_metrics_a_node_serves() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let rules_path = deploy.join("prometheus/alerts.yml");
    let rules = std::fs::read_to_string(&rules_path).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy.join("grafana/drchain.json")).unwrap(),
    )
    .expect("the Grafana dashboard is JSON");
    let queries = grafana_queries(&dashboard);
    assert!(queries.len() >= 25, "{queries:?}");

    let metric_names = |text: &str| -> Vec<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|t| t.starts_with("drchain_"))
            .map(str::to_owned)
            .collect()
    };
    let mut named: std::collections::BTreeSet<String> = metric_names(&rules).into_iter().collect();
    assert!(named.len() >= 12, "{named:?}");
    for query in &queries {
        named.extend(metric_names(query));
    }
    // What the issue asks the dashboard to show.
    for needed in [
        "drchain_finality_latency_seconds_bucket",
        "drchain_block_interval_seconds_bucket",
        "drchain_peers",
        "drchain_failovers_total",
        "drchain_agent_lease_remaining_seconds",
        "drchain_agent_hook_seconds_bucket",
        "drchain_rpc_calls_total",
        "drchain_process_cpu_seconds",
        "drchain_process_resident_memory_bytes",
    ] {
        assert!(
            queries.iter().any(|q| q.contains(needed)),
            "the dashboard does not chart {needed}"
        );
    }

    let node = DevNode::start();
    let metrics = http(
        node.metrics,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    let served: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for name in &named {
        let family = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        assert!(
            served.contains(family),
            "{name} is in the alert rules or the dashboard but not on a node's /metrics"
        );
    }

    if !common::program_or_apt("promtool", "prometheus") {
        eprintln!("skipped the promtool checks: promtool is missing and this is not root");
        return;
    }
    promtool_check_rules(&rules_path);
    // promtool parses the dashboard's queries too, as recording rules, with Grafana's
    // variables given values.
    let dir = tempfile::tempdir().unwrap();
    let recorded: Vec<String> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let expr = q
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".*");
            format!(
                "      - record: dashboard:query{i}\n        expr: {}\n",
                serde_json::Value::String(expr)
            )
        })
        .collect();
    let path = dir.path().join("dashboard-queries.yml");
    std::fs::write(
        &path,
        format!(
            "groups:\n  - name: dashboard\n    rules:\n{}",
            recorded.concat()
        ),
    )
    .unwrap();
    promtool_check_rules(&path);
}

/// Every query of every panel, with the panel's title checked present.
fn grafana_queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut ids = std::collections::BTreeSet::new();
    let mut queries = vec![];
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(panel["id"].as_u64().expect("a panel id")),
            "duplicate id: {panel}"
        );
        assert!(
            panel["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{panel}"
        );
        assert!(panel["gridPos"]["w"].as_u64().is_some(), "{panel}");
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{panel}");
        for target in targets {
            queries.push(target["expr"].as_str().expect("a PromQL expr").to_owned());
        }
    }
    queries
}

fn promtool_check_rules(path: &Path) {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool refuses {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
