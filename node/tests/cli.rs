//! The `drchain` binary's key, cert and build-spec commands, run as a user would.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{drchain, fails, field, new_ca, new_member, ok};

#[test]
fn key_generate_and_inspect_agree() {
    let dir = tempfile::tempdir().unwrap();
    let out = drchain(dir.path(), &["key", "generate", "--out", "node.key"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let account = field(&stderr, "Account:");
    assert_eq!(
        ok(dir.path(), &["key", "inspect", "node.key"]).trim(),
        account
    );
    // Never overwrites a key.
    assert!(fails(dir.path(), &["key", "generate", "--out", "node.key"]).contains("must not exist"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("node.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn dev_keys_are_the_documented_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = drchain(dir.path(), &["key", "generate", "--dev", "alice"]);
    let account = field(&String::from_utf8_lossy(&out.stderr), "Account:");
    assert_eq!(
        account,
        drchain_runtime::dev::dev_account("alice").to_string()
    );
}

#[test]
fn ca_issue_verify_round_trip_for_both_ca_algorithms() {
    for algorithm in ["ed25519", "p256"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        new_ca(d, algorithm);
        new_member(d, "m", "validator");
        let verified = ok(d, &["cert", "verify", "--ca", "ca.pem", "m.pem"]);
        assert_eq!(
            field(&verified, "account:"),
            ok(d, &["key", "inspect", "m.key"]).trim()
        );
        assert_eq!(field(&verified, "role:"), "validator");

        // Another CA does not vouch for it.
        ok(
            d,
            &[
                "cert",
                "ca-new",
                "--key-out",
                "other.key",
                "--cert-out",
                "other.pem",
                "--subject",
                "CN=other",
            ],
        );
        let err = fails(d, &["cert", "verify", "--ca", "other.pem", "m.pem"]);
        assert!(err.contains("is not a pinned CA"), "{err}");
        // Not valid a year and a day from now.
        let later = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            + 366 * 86_400_000)
            .to_string();
        let err = fails(
            d,
            &[
                "cert", "verify", "--ca", "ca.pem", "m.pem", "--at-ms", &later,
            ],
        );
        assert!(err.contains("expired"), "{err}");
    }
}

#[test]
fn garbage_certificates_and_keys_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("junk.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(d.join("junk.key"), "not a key").unwrap();
    ok(
        d,
        &[
            "cert",
            "ca-new",
            "--key-out",
            "ca.key",
            "--cert-out",
            "ca.pem",
        ],
    );
    assert!(fails(d, &["cert", "verify", "--ca", "ca.pem", "junk.pem"])
        .contains("malformed certificate"));
    assert!(fails(d, &["key", "inspect", "junk.key"]).contains("not a PKCS#8 PEM Ed25519 key"));
    assert!(
        fails(d, &["cert", "verify", "--ca", "ca.pem", "missing.pem"])
            .contains("reading certificate")
    );
    let huge = u64::MAX.to_string();
    let err = fails(
        d,
        &[
            "cert",
            "ca-new",
            "--key-out",
            "big.key",
            "--cert-out",
            "big.pem",
            "--days",
            &huge,
        ],
    );
    assert!(err.contains("too large"), "{err}");
    let err = fails(
        d,
        &[
            "cert",
            "issue",
            "--ca-cert",
            "ca.pem",
            "--ca-key",
            "ca.key",
            "--account",
            "0x12",
            "--name",
            "x",
            "--out",
            "x.pem",
        ],
    );
    assert!(err.contains("--account"), "{err}");
}

#[test]
fn checked_in_chain_specs_are_the_generated_ones() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for chain in ["dev", "local"] {
        let generated = ok(&root, &["build-spec", "--chain", chain]);
        let file = std::fs::read_to_string(root.join(format!("chain-spec/{chain}.json"))).unwrap();
        assert_eq!(generated, file, "chain-spec/{chain}.json is stale: run `drchain build-spec --chain {chain} --out chain-spec/{chain}.json`");
        let from_file = ok(
            &root,
            &["build-spec", "--chain", &format!("chain-spec/{chain}.json")],
        );
        assert_eq!(from_file, file);
    }
}

#[test]
fn a_malformed_spec_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let spec = std::fs::read_to_string(root.join("chain-spec/local.json")).unwrap();
    std::fs::write(
        d.join("bad.json"),
        spec.replace(
            "\"genesis_time_ms\": 1767225600000",
            "\"genesis_time_ms\": -1",
        ),
    )
    .unwrap();
    let err = fails(d, &["build-spec", "--chain", "bad.json"]);
    assert!(err.contains("`genesis_time_ms`"), "{err}");
    std::fs::write(
        d.join("bad2.json"),
        spec.replace("127.0.0.1:15433", "nowhere"),
    )
    .unwrap();
    let err = fails(d, &["build-spec", "--chain", "bad2.json"]);
    assert!(err.contains("services[0].endpoints.bob"), "{err}");
}

#[test]
fn run_refuses_bad_configuration_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = fails(d, &["run", "--chain", "missing.json", "--tmp"]);
    assert!(err.contains("missing.json"), "{err}");
    let err = fails(
        d,
        &["run", "--dev", "--tmp", "--bootnodes", "not-an-address"],
    );
    assert!(
        err.contains("bootnode \"not-an-address\" is not a multiaddr"),
        "{err}"
    );
    let err = fails(
        d,
        &[
            "run",
            "--dev",
            "--tmp",
            "--public-addr",
            "203.0.113.7:30333",
        ],
    );
    assert!(
        err.contains("--public-addr \"203.0.113.7:30333\" is not a multiaddr"),
        "{err}"
    );
    std::fs::write(d.join("junk.pem"), "junk").unwrap();
    let err = fails(d, &["run", "--dev", "--tmp", "--node-key-file", "junk.pem"]);
    assert!(err.contains("junk.pem"), "{err}");
    let err = fails(d, &["run", "--tmp", "--base-path", "x"]);
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn completion_scripts_cover_the_operator_commands_and_parse_in_their_shell() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let script = common::ok(dir.path(), &["completions", shell]);
        for word in ["switchover", "history", "pause", "resume", "output"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
        // The shell itself must accept it (checked where the shell is installed).
        if shell == "bash" {
            let path = dir.path().join("drchain.bash");
            std::fs::write(&path, &script).unwrap();
            common::sh(dir.path(), "bash", &["-n", path.to_str().unwrap()]);
        }
    }
    let err = common::fails(dir.path(), &["completions", "tcsh"]);
    assert!(err.contains("possible values"), "{err}");
}

#[test]
fn operator_commands_say_which_node_they_could_not_reach() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port().to_string();
    let rpc = format!("ws://127.0.0.1:{port}");
    for args in [
        vec!["list", "--rpc", &rpc],
        vec!["history", "svc", "--rpc", &rpc],
        vec!["pause", "svc", "--rpc", &rpc, "--force"],
    ] {
        let err = common::fails(dir.path(), &args);
        assert!(err.contains(&rpc), "{args:?}: {err}");
    }
}
