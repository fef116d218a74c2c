//! Helpers shared by the binary's tests.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

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
