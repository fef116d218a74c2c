//! Helpers shared by the binary's tests.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub mod browser;
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

/// A TCP port on loopback that was free a moment ago, and that no other test process is
/// likely to pick: each process takes ports in turn from its own block below the kernel's
/// ephemeral range (32768 and up here). A port the kernel hands out for `:0` or as an outgoing
/// connection's source port lies in that range, which is how ports picked by binding `:0` and
/// releasing were taken by another test before the node bound them ("Address already in use").
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_400;
    const BLOCK: u32 = 32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % (SPAN / BLOCK)) * BLOCK;
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST + (start + offset) % SPAN).expect("a port");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free TCP port on loopback between {FIRST} and {}",
        FIRST + SPAN
    )
}

/// A JSON-RPC call over HTTP to the node on `port`: its `result`, or why there is none (a
/// node that is down or hung answers nothing within a few seconds).
pub fn rpc_call(
    port: u16,
    method: &str,
    params: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        .to_string();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let json = response
        .split("\r\n\r\n")
        .nth(1)
        .ok_or_else(|| format!("no body in {response:?}"))?;
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(value["result"].clone())
}

/// Whether the tests run as root (CI does: they may install what they need).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Whether `program` runs; as root (CI), `package` is installed from apt first when it does
/// not (the package lists are refreshed if the first attempt fails).
pub fn program_or_apt(program: &str, package: &str) -> bool {
    let runs = || {
        std::process::Command::new(program)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if runs() || !is_root() {
        return runs();
    }
    let apt = |args: &[&str]| {
        std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = ["install", "-y", "-qq", "--no-install-recommends", package];
    if !apt(&install) {
        apt(&["update", "-qq"]);
        apt(&install);
    }
    runs()
}
