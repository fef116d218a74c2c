//! A short chaos run in the default suite (the long one is `scripts/chaos.sh`): real nodes in
//! network namespaces, real faults, judged from the clients' history. Needs root (namespaces,
//! nftables, tmpfs), nftables and HAProxy: as root (CI) they are installed when missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the harness can run here, installing what is missing when root.
fn ready() -> bool {
    if !is_root() {
        eprintln!("skipped: the chaos harness needs root (network namespaces, nftables, tmpfs)");
        return false;
    }
    let missing: Vec<&str> = [
        ("nft", "nftables"),
        ("haproxy", "haproxy"),
        ("ip", "iproute2"),
    ]
    .into_iter()
    .filter(|(program, _)| !has(program))
    .map(|(_, package)| package)
    .collect();
    if !missing.is_empty() {
        let status = Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "could not install {missing:?} with apt-get"
        );
    }
    true
}

fn drchain() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_drchain-chaos")).with_file_name("drchain");
    assert!(
        path.exists(),
        "no drchain binary at {}: build it first (cargo build -p drchain-node), as \
         `cargo nextest run --workspace` does",
        path.display()
    );
    path
}

fn chaos(args: &[&str]) -> Output {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../chain-spec/local.json");
    let out = Command::new(env!("CARGO_BIN_EXE_drchain-chaos"))
        .arg("run")
        .arg("--drchain")
        .arg(drchain())
        .arg("--spec")
        .arg(spec)
        .args(args)
        .output()
        .expect("drchain-chaos runs");
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Schedule 50 crashes the active and then pauses the new active (node and service frozen
/// together); clients through HAProxy, `drchain proxy` and straight to each candidate see one
/// node serve at a time, the chain agrees on every block, and the service's data (replicated
/// by checkpoints, restored by `on_promote`) holds every write the RPO promises. Then the
/// harness checks itself: with fencing broken on purpose (no `on_demote`, services that ignore
/// their lease), the active isolated by schedule 27 keeps serving beside its successor, and the
/// run says so: clients saw two nodes serve, and the deposed one's writes are lost.
#[test]
fn a_short_chaos_run_shows_clients_one_active_and_catches_a_node_that_does_not_fence() {
    if !ready() {
        return;
    }
    let out = chaos(&[
        "--seed",
        "50",
        "--fault-seconds",
        "10",
        "--tag",
        "dcsmk",
        "--subnet",
        "201",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "violations or an error");
    assert!(
        stdout.contains("crash ") && stdout.contains("pause "),
        "{stdout}"
    );
    assert!(stdout.contains("0 with violations"), "{stdout}");

    let out = chaos(&[
        "--seed",
        "27",
        "--fault-seconds",
        "6",
        "--tag",
        "dcsmk",
        "--subnet",
        "201",
        "--unfenced",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "the unfenced run passed");
    assert!(stdout.contains("VIOLATION stale epoch"), "{stdout}");
    assert!(stdout.contains("VIOLATION lost write"), "{stdout}");
}
