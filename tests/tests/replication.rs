//! Checkpoints travel between the nodes of an in-process network over the real libp2p
//! protocol: a standby fetches what the active's node holds, verified, and a node that is not
//! a member, or no longer one, gets nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::time::Duration;

use drchain_replication::testdata::pseudo_random;
use drchain_replication::{materialize, snapshot_dir, ChunkingParams};
use drchain_rpc::NodeApi;
use drchain_runtime::dev::{dev_account, dev_key};
use drchain_runtime::pallet_membership;
use drchain_tests::net::TestNetwork;
use ed25519_dalek::SigningKey;

const WAIT: Duration = Duration::from_secs(30);

fn dataset(dir: &std::path::Path, seed: u8) {
    fs::create_dir_all(dir.join("wal")).unwrap();
    let blob = pseudo_random(3 * 1024 * 1024, u64::from(seed));
    fs::write(dir.join("data.bin"), blob).unwrap();
    fs::write(dir.join("wal/000001.log"), b"commit 1\n".repeat(10_000)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_fetches_a_checkpoint_from_members_and_a_non_member_gets_nothing() {
    let mut net = TestNetwork::local_validators().await;
    net.wait_for_height(&[0, 1, 2, 3], 1, WAIT).await;
    let source = tempfile::tempdir().unwrap();
    dataset(source.path(), 1);

    // The active's agent took a checkpoint into alice's node's store.
    let alice = net.nodes[0].handle.as_ref().unwrap().client();
    let (manifest, _) = snapshot_dir(
        source.path(),
        &alice.chunk_store(),
        ChunkingParams::default(),
        None,
    )
    .unwrap();

    // Bob's node fetches it from the members it is connected to.
    let bob = net.nodes[1].handle.as_ref().unwrap().client();
    let fetched = bob
        .fetch_checkpoint(manifest.root(), WAIT)
        .await
        .unwrap()
        .expect("fetched");
    assert_eq!(fetched, manifest);
    let target = tempfile::tempdir().unwrap();
    let target = target.path().join("db");
    materialize(&fetched, &bob.chunk_store(), &target, "1").unwrap();
    assert_eq!(
        fs::read(target.join("data.bin")).unwrap(),
        fs::read(source.path().join("data.bin")).unwrap()
    );
    assert_eq!(
        fs::read(target.join("wal/000001.log")).unwrap(),
        fs::read(source.path().join("wal/000001.log")).unwrap()
    );

    // An incremental checkpoint: charlie already holds the first (fetched from bob or alice),
    // then fetches the second, which shares most chunks.
    let charlie = net.nodes[2].handle.as_ref().unwrap().client();
    charlie
        .fetch_checkpoint(manifest.root(), WAIT)
        .await
        .unwrap()
        .expect("fetched");
    let mut log = fs::read(source.path().join("wal/000001.log")).unwrap();
    log.extend_from_slice(b"commit 2\n");
    fs::write(source.path().join("wal/000001.log"), log).unwrap();
    let (second, stats) = snapshot_dir(
        source.path(),
        &alice.chunk_store(),
        ChunkingParams::default(),
        None,
    )
    .unwrap();
    assert!(stats.new_chunks <= 2, "{stats:?}");
    let fetched = charlie
        .fetch_checkpoint(second.root(), WAIT)
        .await
        .unwrap()
        .expect("fetched");
    assert_eq!(fetched, second);

    // A node whose key is no member: the members refuse it (and disconnect it).
    let mallory = net
        .add("mallory", SigningKey::from_bytes(&[66; 32]), false)
        .await;
    let mallory = net.nodes[mallory].handle.as_ref().unwrap().client();
    let refused = mallory
        .fetch_checkpoint(manifest.root(), Duration::from_secs(3))
        .await
        .unwrap();
    assert!(refused.is_err(), "a non-member got a checkpoint");
    assert!(!mallory
        .chunk_store()
        .contains(&fetched.files[0].chunks[0].id));

    // Eve, a member, fetches like anyone; once an admin revokes her, nothing more.
    let eve = net.add("eve", dev_key("eve"), false).await;
    let eve_client = net.nodes[eve].handle.as_ref().unwrap().client();
    eve_client
        .fetch_checkpoint(manifest.root(), WAIT)
        .await
        .unwrap()
        .expect("a member fetches");
    net.as_admin(pallet_membership::Call::Revoke {
        account: dev_account("eve"),
        reason: "test".into(),
    })
    .await;
    let mut status = net.nodes[0].handle.as_ref().unwrap().status.clone();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.rejected_peers >= 2))
        .await
        .expect("alice disconnects eve once she is revoked")
        .unwrap();
    let refused = eve_client
        .fetch_checkpoint(second.root(), Duration::from_secs(3))
        .await
        .unwrap();
    assert!(refused.is_err(), "a revoked member got a checkpoint");
}
