//! The files in deploy/: the systemd unit passes `systemd-analyze verify` and scores as
//! hardened, the compose network's Prometheus config loads the alert rules, and (opt-in: it
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
