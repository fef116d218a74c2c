//! Helpers shared by the binary's tests.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub mod validators;

/// Runs `drchain` with `args` in `dir`.
pub fn drchain(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drchain"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run drchain")
}

/// Runs `drchain`, asserting success; returns stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = drchain(dir, args);
    assert!(
        out.status.success(),
        "drchain {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `drchain`, asserting failure; returns stderr.
pub fn fails(dir: &Path, args: &[&str]) -> String {
    let out = drchain(dir, args);
    assert!(
        !out.status.success(),
        "drchain {args:?} unexpectedly succeeded"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a program, asserting success.
pub fn sh(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value after `label` in `drchain cert verify` output.
pub fn field(output: &str, label: &str) -> String {
    output
        .lines()
        .find_map(|l| l.strip_prefix(label).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no {label} in {output}"))
}

/// `drchain cert ca-new` of `algorithm` writing `ca.key` and `ca.pem` in `dir`.
pub fn new_ca(dir: &Path, algorithm: &str) {
    ok(
        dir,
        &[
            "cert",
            "ca-new",
            "--algorithm",
            algorithm,
            "--key-out",
            "ca.key",
            "--cert-out",
            "ca.pem",
        ],
    );
}

/// A new member key `<name>.key` and its certificate `<name>.pem` issued by `ca.pem`/`ca.key`
/// in `dir` with `role`.
pub fn new_member(dir: &Path, name: &str, role: &str) {
    let key = format!("{name}.key");
    let cert = format!("{name}.pem");
    ok(dir, &["key", "generate", "--out", &key]);
    ok(
        dir,
        &[
            "cert",
            "issue",
            "--ca-cert",
            "ca.pem",
            "--ca-key",
            "ca.key",
            "--subject-key",
            &key,
            "--name",
            name,
            "--role",
            role,
            "--out",
            &cert,
        ],
    );
}

/// A TCP port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}
