//! Membership seen from a running network: certificates expire on chain time, and the rule
//! that stops admitting an expired member also takes it out of the validator set, so the
//! chain goes on with the validators that remain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::validators::{bootnodes, NodeProcess};
use drchain_runtime::dev::{dev_account, specs};
use pallet_membership::certgen::{self, CertParams};

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The local spec, starting now, where charlie's and dave's certificates expire at
/// `expires_ms` (issued together, expiring together).
fn spec_with_expiring(dir: &Path, expires_ms: u64) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("chain-spec/local.json")).unwrap();
    let mut spec: serde_json::Value = serde_json::from_str(&text).unwrap();
    spec["id"] = "expiry-test".into();
    spec["genesis_time_ms"] = wall_ms().into();
    spec["services"] = serde_json::json!([]);
    let ca = specs::dev_ca().unwrap();
    for member in spec["members"].as_array_mut().unwrap() {
        let name = member["name"].as_str().unwrap().to_owned();
        if name == "charlie" || name == "dave" {
            let params = CertParams {
                subject: format!("CN={name},OU=validator,O=drchain"),
                serial: 100,
                not_before_ms: specs::NOT_BEFORE_MS,
                not_after_ms: expires_ms,
            };
            let der = certgen::issue(&ca.0, &ca.1, &dev_account(&name), &params).unwrap();
            member["certificate"] = certgen::to_pem(&der).unwrap().into();
        }
    }
    let path = dir.join("spec.json");
    std::fs::write(&path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    path
}

/// The highest block `node` logged as finalized.
fn finalized(node: &NodeProcess) -> u64 {
    node.lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| l.split("Finalized #").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

fn wait_for_height(nodes: &[&NodeProcess], height: u64, within: Duration, why: &str) {
    let deadline = Instant::now() + within;
    while nodes.iter().any(|n| finalized(n) < height) {
        if Instant::now() > deadline {
            let logs: String = nodes
                .iter()
                .map(|n| n.dump(|l| l.contains("WARN") || l.contains("ERROR")))
                .collect();
            panic!("{why}: not at #{height} within {within:?}\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Two of four validators' certificates expire at the same moment. Before, the other two
/// refused them as peers while the validator set still counted them: no quorum, for good.
/// Now they leave the set two blocks after the first block past their expiry, and alice and
/// bob finalize on their own.
#[test]
fn two_of_four_validators_expire_and_the_chain_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let expires_ms = wall_ms() + 15_000;
    let spec = spec_with_expiring(dir.path(), expires_ms);
    let mut nodes: Vec<NodeProcess> = ["alice", "bob", "charlie", "dave"]
        .into_iter()
        .map(|n| NodeProcess::new(dir.path(), n))
        .collect();
    let boot = bootnodes(&nodes);
    for node in &mut nodes {
        // Per-block lines (debug) say what each node finalized.
        node.spawn(
            &spec,
            &boot,
            None,
            "info,libp2p=warn,drchain_node::node_loop::effects=debug",
        );
    }
    let (alice, bob) = (&nodes[0], &nodes[1]);
    wait_for_height(&[alice, bob], 5, Duration::from_secs(30), "before expiry");
    let now = wall_ms();
    if now < expires_ms + 1_000 {
        std::thread::sleep(Duration::from_millis(expires_ms + 1_000 - now));
    }
    let at_expiry = finalized(alice);
    wait_for_height(
        &[alice, bob],
        at_expiry + 30,
        Duration::from_secs(30),
        "after charlie's and dave's certificates expired",
    );
    let lines = alice.lines.lock().unwrap().join("\n");
    assert!(
        lines.contains("disconnecting a peer that is not an admitted member"),
        "the expired validators are refused once they left the set"
    );
    // The change is in the log at info, naming the two that remain.
    let remaining = format!(
        "membership: validator set now {}",
        [dev_account("alice"), dev_account("bob")]
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let reversed = format!(
        "membership: validator set now {},{}",
        dev_account("bob"),
        dev_account("alice")
    );
    assert!(
        lines.contains(&remaining) || lines.contains(&reversed),
        "no '{remaining}' line in alice's log"
    );
}
