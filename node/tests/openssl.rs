//! Certificates made with the `openssl` command line work with drchain, and drchain's verify
//! with openssl. Skipped when openssl is missing, unless DRCHAIN_REQUIRE_OPENSSL is set (CI sets
//! it, so the test cannot silently pass there).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{fails, field, new_ca, new_member, ok, sh};

fn have_openssl() -> bool {
    let present = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present && std::env::var_os("DRCHAIN_REQUIRE_OPENSSL").is_some() {
        panic!("openssl is required (DRCHAIN_REQUIRE_OPENSSL is set) but not installed");
    }
    if !present {
        eprintln!("openssl not installed: skipping");
    }
    present
}

/// An openssl CA of `ca_alg` (`ed25519` or `p256`) issuing an Ed25519 member certificate.
fn openssl_ca_and_member(d: &Path, ca_alg: &str) {
    match ca_alg {
        "ed25519" => sh(
            d,
            "openssl",
            &["genpkey", "-algorithm", "ed25519", "-out", "ca.key"],
        ),
        _ => sh(
            d,
            "openssl",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "ca.key",
            ],
        ),
    };
    sh(
        d,
        "openssl",
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/O=ossl/CN=openssl CA",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-days",
            "30",
            "-out",
            "ca.pem",
        ],
    );
    // What an operator's CA typically puts into a client certificate: a leaf that may sign.
    std::fs::write(
        d.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=clientAuth,serverAuth\nsubjectKeyIdentifier=hash\n\
         authorityKeyIdentifier=keyid\n",
    )
    .unwrap();
    sh(
        d,
        "openssl",
        &["genpkey", "-algorithm", "ed25519", "-out", "m.key"],
    );
    sh(
        d,
        "openssl",
        &[
            "req",
            "-new",
            "-key",
            "m.key",
            "-subj",
            "/O=ossl/OU=validator/CN=m1",
            "-out",
            "m.csr",
        ],
    );
    sign_member_request(d, "7", "leaf.ext", "m.pem");
}

/// The openssl CA in `d` signs the member's request `m.csr` with the extensions in `extfile`.
fn sign_member_request(d: &Path, serial: &str, extfile: &str, out: &str) {
    sh(
        d,
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "m.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            serial,
            "-days",
            "10",
            "-extfile",
            extfile,
            "-out",
            out,
        ],
    );
}

#[test]
fn openssl_made_certificates_verify_and_admit() {
    if !have_openssl() {
        return;
    }
    for ca_alg in ["ed25519", "p256"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl_ca_and_member(d, ca_alg);
        let verified = ok(d, &["cert", "verify", "--ca", "ca.pem", "m.pem"]);
        // openssl's Ed25519 key file is a key drchain reads, and it is the certificate's account.
        assert_eq!(
            field(&verified, "account:"),
            ok(d, &["key", "inspect", "m.key"]).trim()
        );
        assert_eq!(field(&verified, "role:"), "validator");

        // A chain spec pinning the openssl CA admits the openssl member at genesis.
        let ca = std::fs::read_to_string(d.join("ca.pem")).unwrap();
        let member = std::fs::read_to_string(d.join("m.pem")).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let spec = serde_json::json!({
            "name": "openssl", "id": "ossl", "genesis_time_ms": now,
            "trust_anchors": [ca],
            "admins": {"accounts": [field(&verified, "account:")], "threshold": 1},
            "members": [{"name": "m1", "role": "validator", "certificate": member}],
        });
        std::fs::write(d.join("spec.json"), spec.to_string()).unwrap();
        ok(d, &["build-spec", "--chain", "spec.json"]);

        // drchain can also issue from the openssl CA key.
        new_member(d, "n", "member");
        sh(d, "openssl", &["verify", "-CAfile", "ca.pem", "n.pem"]);
    }
}

#[test]
fn drchain_certificates_verify_with_openssl() {
    if !have_openssl() {
        return;
    }
    for alg in ["ed25519", "p256"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        new_ca(d, alg);
        new_member(d, "m", "member");
        let out = sh(d, "openssl", &["verify", "-CAfile", "ca.pem", "m.pem"]);
        assert!(out.contains("OK"), "{out}");
    }
}

/// What openssl lets an operator make but drchain must refuse, each with an error that names
/// the reason: a member certificate that is a CA, and one whose keyUsage forbids signing.
#[test]
fn openssl_made_certificates_that_are_not_signing_leaves_are_refused() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl_ca_and_member(d, "ed25519");
    for (extensions, expected) in [
        ("basicConstraints=critical,CA:TRUE\n", "is a CA"),
        (
            "keyUsage=critical,keyEncipherment\n",
            "keyUsage does not allow digitalSignature",
        ),
    ] {
        std::fs::write(d.join("bad.ext"), extensions).unwrap();
        sign_member_request(d, "8", "bad.ext", "bad.pem");
        let err = fails(d, &["cert", "verify", "--ca", "ca.pem", "bad.pem"]);
        assert!(err.contains(expected), "{extensions}: {err}");
    }
}
