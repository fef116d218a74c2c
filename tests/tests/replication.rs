//! Checkpoints travel between the nodes of an in-process network over the real libp2p
//! protocol: a standby fetches what the active's node holds, verified, and a node that is not
//! a member, or no longer one, gets nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::time::Duration;

use drchain_replication::push::CheckpointPush;
use drchain_replication::testdata::pseudo_random;
use drchain_replication::{materialize, snapshot_dir, ChunkingParams};
use drchain_rpc::NodeApi;
use drchain_runtime::dev::{dev_account, dev_key};
use drchain_runtime::pallet_membership;
use drchain_runtime::support::{Health, ServiceName};
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

/// The active node pushes a checkpoint with what is new in it; a candidate keeps it (and tells
/// its agent) only from the node holding the service on chain. Another member's push, for the
/// same service, is dropped: nobody else can make a candidate store anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_checkpoint_is_kept_only_from_the_node_holding_the_service() {
    let net = TestNetwork::local_validators().await;
    net.wait_for_height(&[0, 1, 2, 3], 1, WAIT).await;
    let service = ServiceName::new("demo-db").unwrap();
    let client = |i: usize| net.nodes[i].handle.as_ref().unwrap().client();
    let (alice, bob, dave) = (client(0), client(1), client(3));

    // Alice, a candidate of demo-db (alice, bob, charlie), reports healthy and is elected.
    let heartbeat = drchain_runtime::RuntimeCall::ServiceStatus(
        drchain_runtime::pallet_service_status::Call::Heartbeat {
            service: service.clone(),
            epoch_seen: 0,
            health: Health::Healthy,
            applied_checkpoint: None,
        },
    );
    let x = drchain_runtime::UncheckedExtrinsic::sign(
        &dev_key("alice"),
        &net.genesis.hash(),
        0,
        heartbeat,
    );
    net.submit_until_finalized(0, x).await;

    let push_of = |node: &drchain_node::node_loop::NodeClient, seed: u8| {
        let source = tempfile::tempdir().unwrap();
        fs::write(
            source.path().join("rows"),
            pseudo_random(100_000, u64::from(seed)),
        )
        .unwrap();
        let store = node.chunk_store();
        let (manifest, _) =
            snapshot_dir(source.path(), &store, ChunkingParams::default(), None).unwrap();
        CheckpointPush::build(&store, service.clone(), 1, &manifest, || None)
            .unwrap()
            .expect("small enough to push")
    };

    // Dave holds nothing: bob drops his push.
    let forged = push_of(&dave, 1);
    dave.push_checkpoint(forged.clone()).await.unwrap();

    // Alice's push reaches bob, who stores it and announces it to his agent.
    let mut announced = bob.subscribe_announcements();
    let push = push_of(&alice, 2);
    let deadline = tokio::time::Instant::now() + WAIT;
    while bob.chunk_store().manifest(&push.root).is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob never kept alice's push"
        );
        // Until a block elects alice, her pushes are dropped too.
        alice.push_checkpoint(push.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let announcement = tokio::time::timeout(WAIT, announced.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (announcement.from, announcement.root),
        (dev_account("alice"), push.root)
    );
    for (id, _) in &push.objects {
        assert!(bob.chunk_store().contains(id));
    }
    // Dave is no candidate: alice does not push to him.
    assert!(dave.chunk_store().manifest(&push.root).is_err());

    // Dave's push, sent again now that alice holds the service, is still dropped.
    dave.push_checkpoint(forged.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(bob.chunk_store().manifest(&forged.root).is_err());
    assert!(!bob.chunk_store().contains(&forged.objects[0].0));
}

/// A member that sends anything but checkpoint pushes on a push stream — a frame larger than
/// any push, or bytes that are not one — is disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_sending_garbage_on_a_push_stream_is_disconnected() {
    use futures::{AsyncWriteExt, StreamExt};
    use libp2p::swarm::SwarmEvent;

    let net = TestNetwork::local_validators().await;
    net.wait_for_height(&[0, 1, 2, 3], 1, WAIT).await;
    let genesis = net.genesis.hash();
    let bob = net.nodes[1].handle.as_ref().unwrap().peer_id;
    let oversized = u32::MAX.to_be_bytes().to_vec();
    let not_a_push = [&8u32.to_be_bytes()[..], &[0xff; 8]].concat();
    for frame in [oversized, not_a_push] {
        let mut swarm = drchain_node::network::build_swarm(&dev_key("eve"), &genesis).unwrap();
        let mut control = swarm.behaviour().push_streams.new_control();
        swarm.dial(net.nodes[1].address.clone().unwrap()).unwrap();
        let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        let eve = tokio::spawn(async move {
            while let Some(event) = swarm.next().await {
                if let SwarmEvent::ConnectionClosed { peer_id, .. } = event {
                    let _ = closed_tx.send(peer_id);
                }
            }
        });
        // Bob reads a stream only once it has admitted eve: until then, send again.
        let disconnected = tokio::time::timeout(WAIT, async {
            loop {
                let opened = control
                    .open_stream(bob, drchain_node::checkpoint_push::PROTOCOL)
                    .await;
                if let Ok(mut stream) = opened {
                    let _ = stream.write_all(&frame).await;
                    let _ = stream.flush().await;
                }
                let wait = tokio::time::sleep(Duration::from_millis(500));
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        Some(peer) = closed.recv() => if peer == bob { return },
                        () = &mut wait => break,
                    }
                }
            }
        })
        .await;
        assert!(
            disconnected.is_ok(),
            "bob kept eve connected after {frame:?}"
        );
        eve.abort();
    }
    // Each counted as a bad message (the status is published after the disconnect).
    let mut status = net.nodes[1].handle.as_ref().unwrap().status.clone();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.dropped_messages >= 2))
        .await
        .expect("bob counts both")
        .unwrap();
}
