//! The files in deploy/: the systemd unit passes `systemd-analyze verify` and scores as
//! hardened, the compose network's Prometheus config loads the alert rules, its four
//! validators' command lines (run as written, each in its own network namespace) find each
//! other and finalize, and (opt-in: it
//! needs a release build and cargo-deb) the .deb holds what docs/operations.md says and
//! installs, creating the service user.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    if !common::program_or_apt("systemd-analyze", "systemd") {
        eprintln!("skipped: no systemd-analyze (apt-get install systemd); CI installs it");
        return;
    }
    let unit = std::fs::read_to_string(deploy("systemd/drchain.service")).unwrap();
    for setting in [
        "User=drchain",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "StateDirectory=drchain",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting}");
    }
    // verify checks that ExecStart's program exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drchain.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/drchain", env!("CARGO_BIN_EXE_drchain")),
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let (ok, out) = run("systemd-analyze", &["verify", path]);
    assert!(ok && out.trim().is_empty(), "systemd-analyze verify: {out}");
    // systemd's own exposure score, 0 (locked down) to 10: under 2 is "OK".
    let (ok, out) = run(
        "systemd-analyze",
        &["security", "--offline=true", "--threshold=20", path],
    );
    assert!(ok, "exposure too high:\n{out}");
    assert!(out.contains("Overall exposure level"), "{out}");
}

#[test]
fn the_compose_networks_prometheus_loads_the_alert_rules() {
    if !common::program_or_apt("promtool", "prometheus") {
        eprintln!("skipped: no promtool (apt-get install prometheus); CI installs it");
        return;
    }
    let config = std::fs::read_to_string(deploy("prometheus/prometheus.yml")).unwrap();
    // In the container the rules are mounted at /etc/prometheus/alerts.yml.
    let rules = deploy("prometheus/alerts.yml");
    assert!(config.contains("/etc/prometheus/alerts.yml"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prometheus.yml");
    std::fs::write(
        &path,
        config.replace("/etc/prometheus/alerts.yml", rules.to_str().unwrap()),
    )
    .unwrap();
    let (ok, out) = run("promtool", &["check", "config", path.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("rules found"), "{out}");
}

/// The `command:` of each service of the compose file that runs `drchain run`, in file order.
/// Our compose file writes them as one-line-per-group flow sequences: `[run, --chain, ...]`.
fn compose_commands(compose: &str) -> Vec<(String, Vec<String>)> {
    let mut out = vec![];
    let mut service = String::new();
    let mut lines = compose.lines();
    while let Some(line) = lines.next() {
        if let Some(name) = line
            .strip_prefix("  ")
            .and_then(|l| l.strip_suffix(':'))
            .filter(|n| !n.starts_with(' ') && !n.starts_with('#'))
        {
            service = name.to_owned();
        }
        let Some(start) = line.trim_start().strip_prefix("command: [run,") else {
            continue;
        };
        let mut text = start.to_owned();
        while !text.contains(']') {
            text.push_str(lines.next().expect("the sequence ends"));
        }
        let words = text
            .split(']')
            .next()
            .unwrap()
            .split(',')
            .map(|w| w.trim().to_owned())
            .filter(|w| !w.is_empty());
        out.push((
            service.clone(),
            std::iter::once("run".to_owned()).chain(words).collect(),
        ));
    }
    out
}

/// A JSON-RPC call over plain HTTP to `addr`; the result.
fn rpc(addr: &str, method: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":[]}}"#);
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let json: serde_json::Value = serde_json::from_str(response.split("\r\n\r\n").nth(1)?).ok()?;
    Some(json["result"].clone())
}

#[test]
fn the_compose_networks_validators_find_each_other_and_finalize() {
    if !common::is_root() {
        eprintln!("skipped: network namespaces need root (CI runs as root)");
        return;
    }
    let compose = std::fs::read_to_string(deploy("docker-compose.yml")).unwrap();
    let commands = compose_commands(&compose);
    let names: Vec<&str> = commands.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "charlie", "dave"]);
    let net = drchain_chaos::netns::Network::create("dcpose", 202, 4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The compose network's addresses are 172.28.0.11-14; here they are this network's.
    let readdress = |word: &str| {
        (0..4).fold(word.to_owned(), |w, i| {
            w.replace(&format!("172.28.0.{}", 11 + i), &net.ip(i).to_string())
        })
    };
    let mut nodes: Vec<std::process::Child> = vec![];
    for (i, (name, args)) in commands.iter().enumerate() {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                readdress(a).replace("/var/lib/drchain", dir.path().join(name).to_str().unwrap())
            })
            .collect();
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
        nodes.push(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &net.namespace(i),
                    env!("CARGO_BIN_EXE_drchain"),
                ])
                .args(&args)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let ready = |i: usize| {
        let addr = format!("{}:9944", net.ip(i));
        let peers = rpc(&addr, "system_health").and_then(|h| h["peers"].as_u64());
        let head = rpc(&addr, "chain_getHeader")
            .and_then(|h| h["number"].as_str().map(str::to_owned))
            .and_then(|n| u64::from_str_radix(n.trim_start_matches("0x"), 16).ok());
        peers == Some(3) && head.is_some_and(|h| h >= 10)
    };
    while !(0..4).all(ready) {
        if std::time::Instant::now() > deadline {
            for mut node in nodes {
                let _ = node.kill();
            }
            let logs: String = names
                .iter()
                .map(|n| {
                    std::fs::read_to_string(dir.path().join(format!("{n}.log"))).unwrap_or_default()
                })
                .collect();
            panic!("the compose network did not connect and finalize:\n{logs}");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for mut node in nodes {
        let _ = node.kill();
        let _ = node.wait();
    }
}

#[test]
#[ignore = "builds a release binary and the .deb: cargo test -p drchain-node --test packaging -- --ignored"]
fn the_deb_installs_the_binary_the_unit_and_the_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if !run("cargo", &["deb", "--version"]).0 {
        let (ok, out) = run("cargo", &["install", "cargo-deb", "--locked"]);
        assert!(ok, "cannot install cargo-deb: {out}");
    }
    let out = Command::new("cargo")
        .current_dir(&root)
        .args(["deb", "-p", "drchain-node", "--locked"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo deb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (ok, listing) = run("dpkg-deb", &["-c", &deb]);
    assert!(ok, "{listing}");
    for path in [
        "./usr/bin/drchain",
        "./lib/systemd/system/drchain.service",
        "./etc/drchain/drchain.env",
        "./usr/share/doc/drchain/operations.md",
        "./usr/share/drchain/grafana/drchain.json",
    ] {
        assert!(listing.contains(path), "{path} is not in {deb}:\n{listing}");
    }
    if !common::is_root() {
        eprintln!("built and listed {deb}; installing it needs root");
        return;
    }
    let (ok, out) = run("dpkg", &["-i", &deb]);
    assert!(ok, "dpkg -i: {out}");
    let (ok, out) = run("/usr/bin/drchain", &["--version"]);
    assert!(ok && out.starts_with("drchain"), "{out}");
    let (ok, out) = run("getent", &["passwd", "drchain"]);
    assert!(
        ok && out.contains("/var/lib/drchain"),
        "the service user: {out}"
    );
    let (ok, out) = run("dpkg", &["--purge", "drchain"]);
    assert!(ok, "dpkg --purge: {out}");
    assert!(
        !run("getent", &["passwd", "drchain"]).0,
        "purge removes the user"
    );
}
