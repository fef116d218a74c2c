//! Checkpoints travel between the nodes of an in-process network over the real libp2p
//! protocol: a standby fetches what the active's node holds, verified, and a node that is not
//! a member, or no longer one, gets nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::time::Duration;

use drchain_node::node_loop::NodeClient;
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
    alice_reports_healthy(&net, &service).await;
    let push_of = |node: &NodeClient, seed: u8| push_of(node, &service, seed);

    // Dave holds nothing: bob drops his push.
    let forged = push_of(&dave, 1);
    dave.push_checkpoint(forged.clone()).await.unwrap();

    // Alice's push reaches bob, who stores it and announces it to his agent.
    let mut announced = bob.subscribe_announcements();
    let push = push_of(&alice, 2);
    push_until_kept(&alice, &[&bob], &push).await;
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

/// Alice, a candidate of `service` (alice, bob, charlie), reports healthy: a block elects her.
async fn alice_reports_healthy(net: &TestNetwork, service: &ServiceName) {
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
}

/// A checkpoint of 100 kB of data made from `seed`, in `node`'s store, as a push.
fn push_of(node: &NodeClient, service: &ServiceName, seed: u8) -> CheckpointPush {
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
}

/// Pushes `push` from `from` every 300 ms until each of `to` keeps it (until a block elects
/// the sender, and until the stream to a candidate is open, pushes are dropped).
async fn push_until_kept(from: &NodeClient, to: &[&NodeClient], push: &CheckpointPush) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while to
        .iter()
        .any(|n| n.chunk_store().manifest(&push.root).is_err())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a candidate never kept the push"
        );
        from.push_checkpoint(push.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Pushes sent by `node` over `path` (`direct` or `libp2p`).
fn pushes_sent(node: &drchain_node::node_loop::NodeHandle, path: &str) -> u64 {
    node.metrics
        .checkpoint_pushes
        .get_or_create(&vec![("path", path.to_owned())])
        .get()
}

/// The active's pushes reach a candidate listening for direct connections over one, and a
/// candidate that takes none through the libp2p connection: both keep every push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_go_direct_to_a_candidate_that_listens_and_through_libp2p_to_one_that_does_not() {
    let mut net = TestNetwork::local_validators().await;
    net.stop(2).await;
    // As in the network tests: the stopped node's last tasks let go of its database shortly.
    tokio::time::sleep(Duration::from_secs(2)).await;
    net.nodes[2].direct_pushes = false;
    net.start(2).await;
    net.wait_for_height(&[0, 1, 2, 3], 1, WAIT).await;
    let service = ServiceName::new("demo-db").unwrap();
    let client = |i: usize| net.nodes[i].handle.as_ref().unwrap().client();
    let (alice, bob, charlie) = (client(0), client(1), client(2));
    alice_reports_healthy(&net, &service).await;
    push_until_kept(&alice, &[&bob, &charlie], &push_of(&alice, &service, 10)).await;
    let alice_node = net.nodes[0].handle.as_ref().unwrap();
    // The direct connection is made beside the first pushes; later ones take it. (Seeds are
    // even: `pseudo_random` makes the same bytes of 2k and 2k + 1.)
    let mut seed = 20;
    while pushes_sent(alice_node, "direct") == 0 {
        assert!(seed < 80, "no push ever went over a direct connection");
        push_until_kept(&alice, &[&bob], &push_of(&alice, &service, seed)).await;
        seed += 2;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // With the direct connection to bob up, one push goes to each candidate its way.
    let before = (
        pushes_sent(alice_node, "direct"),
        pushes_sent(alice_node, "libp2p"),
    );
    let push = push_of(&alice, &service, 90);
    alice.push_checkpoint(push.clone()).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while [&bob, &charlie]
        .iter()
        .any(|n| n.chunk_store().manifest(&push.root).is_err())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a candidate did not keep the push"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        (
            pushes_sent(alice_node, "direct"),
            pushes_sent(alice_node, "libp2p")
        ),
        (before.0 + 1, before.1 + 1),
        "one push to bob directly, one to charlie through libp2p"
    );
}

/// A node that is not a member gets through the handshake of a direct push connection (it
/// has a key) and no further: its connection is closed unread and nothing it sends is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_push_connection_from_a_non_member_is_closed_unread() {
    use futures::{AsyncReadExt, AsyncWriteExt};

    let net = TestNetwork::local_validators().await;
    net.wait_for_height(&[0, 1, 2, 3], 1, WAIT).await;
    let service = ServiceName::new("demo-db").unwrap();
    let bob = net.nodes[1].handle.as_ref().unwrap();
    let stranger = drchain_node::network::keypair(&SigningKey::from_bytes(&[42; 32])).unwrap();
    let handshake = drchain_node::checkpoint_push::Handshake::new(stranger, &net.genesis.hash());
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], bob.direct_push_port));
    let mut connection = handshake.dial(bob.peer_id, address).await.unwrap();
    let push = push_of(&net.nodes[3].handle.as_ref().unwrap().client(), &service, 9);
    let body = parity_scale_codec::Encode::encode(&push);
    let _ = connection
        .write_all(&[&(body.len() as u32).to_be_bytes()[..], &body].concat())
        .await;
    let _ = connection.flush().await;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, connection.read(&mut byte))
        .await
        .expect("bob closes the connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(bob.chunk_store.manifest(&push.root).is_err());
}

/// Eve, a member, dials node `i` from a swarm of her own: her stream control, the peers whose
/// connections to her closed, and the task driving her swarm.
fn eve_dials(
    net: &TestNetwork,
    i: usize,
) -> (
    libp2p_stream::Control,
    tokio::sync::mpsc::UnboundedReceiver<libp2p::PeerId>,
    tokio::task::JoinHandle<()>,
) {
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;

    let mut swarm =
        drchain_node::network::build_swarm(&dev_key("eve"), &net.genesis.hash()).unwrap();
    let control = swarm.behaviour().push_streams.new_control();
    swarm.dial(net.nodes[i].address.clone().unwrap()).unwrap();
    let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
    let eve = tokio::spawn(async move {
        while let Some(event) = swarm.next().await {
            if let SwarmEvent::ConnectionClosed { peer_id, .. } = event {
                let _ = closed_tx.send(peer_id);
            }
        }
    });
    (control, closed, eve)
}

/// A member that sends anything but checkpoint pushes on a push stream — a frame larger than
/// any push, or bytes that are not one — is disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_sending_garbage_on_a_push_stream_is_disconnected() {
    use futures::AsyncWriteExt;

    let net = TestNetwork::local_validators().await;
    net.wait_for_height(&[0, 1, 2, 3], 1, WAIT).await;
    let bob = net.nodes[1].handle.as_ref().unwrap().peer_id;
    let oversized = u32::MAX.to_be_bytes().to_vec();
    let not_a_push = [&8u32.to_be_bytes()[..], &[0xff; 8]].concat();
    for frame in [oversized, not_a_push] {
        let (mut control, mut closed, eve) = eve_dials(&net, 1);
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

/// A member that sends bytes that are not a push on a direct push connection is disconnected,
/// as on a push stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_sending_garbage_on_a_direct_push_connection_is_disconnected() {
    use drchain_node::checkpoint_push::{Handshake, Hello, PROTOCOL};
    use futures::AsyncWriteExt;

    let net = TestNetwork::local_validators().await;
    net.wait_for_height(&[0, 1, 2, 3], 1, WAIT).await;
    let genesis = net.genesis.hash();
    let bob = net.nodes[1].handle.as_ref().unwrap().peer_id;
    let (mut control, mut closed, eve) = eve_dials(&net, 1);
    let handshake = Handshake::new(
        drchain_node::network::keypair(&dev_key("eve")).unwrap(),
        &genesis,
    );
    let not_a_push = [&8u32.to_be_bytes()[..], &[0xff; 8]].concat();
    let disconnected = tokio::time::timeout(WAIT, async {
        loop {
            // Bob answers a push stream with his push port once he has admitted eve.
            if let Ok(mut stream) = control.open_stream(bob, PROTOCOL).await {
                if let Ok(Ok(Hello(port))) =
                    tokio::time::timeout(Duration::from_secs(1), Hello::read(&mut stream)).await
                {
                    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                    let mut direct = handshake.dial(bob, address).await.unwrap();
                    direct.write_all(&not_a_push).await.unwrap();
                    direct.flush().await.unwrap();
                    while let Some(peer) = closed.recv().await {
                        if peer == bob {
                            return;
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert!(disconnected.is_ok(), "bob kept eve connected");
    eve.abort();
}
