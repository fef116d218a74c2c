//! Independent replicas of the runtime agree block by block through a whole failover story,
//! and under random transaction mixes.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drchain_runtime::dev::dev_account;
use drchain_runtime::pallet_failover::{self, Phase, Reason, Role};
use drchain_runtime::support::{Health, ServiceName, StateRead, H256};
use drchain_runtime::{
    pallet_checkpoints, pallet_service_status, AdminCall, RuntimeCall, RuntimeEvent,
};
use drchain_tests::Replicas;
use proptest::prelude::*;

fn db() -> ServiceName {
    ServiceName::new("demo-db").unwrap()
}

fn hb(epoch: u64, health: Health, applied: Option<u64>) -> RuntimeCall {
    RuntimeCall::ServiceStatus(pallet_service_status::Call::Heartbeat {
        service: db(),
        epoch_seen: epoch,
        health,
        applied_checkpoint: applied,
    })
}

fn epoch(r: &Replicas) -> u64 {
    pallet_failover::service_state(&r.view(0), &db())
        .unwrap()
        .epoch
}

fn phase(r: &Replicas) -> Phase {
    pallet_failover::service_state(&r.view(0), &db())
        .unwrap()
        .phase
}

fn failover_events(r: &Replicas) -> Vec<pallet_failover::Event> {
    r.events
        .iter()
        .filter_map(|(_, e)| match &e.event {
            RuntimeEvent::Failover(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

/// The seed's story: A is active and checkpoints, B fails to promote, C takes over, A returns
/// fenced. Four replicas with rotating proposers agree on every block.
#[test]
fn failover_story_replicates_identically() {
    let mut r = Replicas::local(4);
    let mut n = 0usize;
    let mut next = || {
        n += 1;
        n % 4
    };
    // All three candidates heartbeat; alice is elected and completes.
    let txs = ["alice", "bob", "charlie"]
        .iter()
        .map(|w| r.tx(w, hb(0, Health::Healthy, None)))
        .collect();
    r.block(next(), 200, txs);
    assert!(matches!(phase(&r), Phase::Promoting { .. }));
    let done = RuntimeCall::Failover(pallet_failover::Call::PromotionComplete {
        service: db(),
        epoch: 1,
    });
    let txs = vec![r.tx("alice", done)];
    r.block(next(), 200, txs);
    assert_eq!(
        phase(&r),
        Phase::Active {
            node: dev_account("alice")
        }
    );

    // Alice records checkpoints 1..=3; bob and charlie apply and acknowledge them.
    for seq in 1..=3u64 {
        let submit = RuntimeCall::Checkpoints(pallet_checkpoints::Call::Submit {
            service: db(),
            epoch: 1,
            sequence: seq,
            manifest_root: H256([seq as u8; 32]),
            size_bytes: 1 << 20,
            changed_bytes: 1 << 20,
        });
        let ack = || {
            RuntimeCall::Checkpoints(pallet_checkpoints::Call::Acknowledge {
                service: db(),
                sequence: seq,
            })
        };
        let txs = vec![
            r.tx("alice", submit),
            r.tx("alice", hb(1, Health::Healthy, Some(seq))),
            r.tx("bob", hb(1, Health::Healthy, Some(seq))),
            r.tx("charlie", hb(1, Health::Healthy, Some(seq))),
            r.tx("bob", ack()),
            r.tx("charlie", ack()),
        ];
        r.block(next(), 200, txs);
    }

    // Alice dies. Bob (priority) is elected but never completes; charlie takes over.
    let mut guard = 0;
    while !matches!(phase(&r), Phase::Promoting { node, .. } if node == dev_account("charlie")) {
        let e = epoch(&r);
        let txs = vec![
            r.tx("bob", hb(e, Health::Healthy, Some(3))),
            r.tx("charlie", hb(e, Health::Healthy, Some(3))),
        ];
        r.block(next(), 250, txs);
        guard += 1;
        assert!(guard < 60, "no takeover: {:?}", failover_events(&r));
    }
    let events = failover_events(&r);
    assert!(events.iter().any(|e| matches!(e, pallet_failover::Event::Elected { node, reason: Reason::HeartbeatStale, .. } if *node == dev_account("bob"))));
    assert!(events.iter().any(|e| matches!(e, pallet_failover::Event::Deposed { node, reason: Reason::PromotionTimeout, .. } if *node == dev_account("bob"))));
    let e = epoch(&r);
    assert_eq!(e, 3);
    let done = RuntimeCall::Failover(pallet_failover::Call::PromotionComplete {
        service: db(),
        epoch: e,
    });
    let txs = vec![
        r.tx("charlie", done),
        r.tx("bob", hb(e, Health::Healthy, Some(3))),
    ];
    r.block(next(), 200, txs);
    assert_eq!(
        phase(&r),
        Phase::Active {
            node: dev_account("charlie")
        }
    );

    // Alice returns believing in epoch 1: fenced, and cannot record checkpoints.
    let stale = RuntimeCall::Checkpoints(pallet_checkpoints::Call::Submit {
        service: db(),
        epoch: 1,
        sequence: 4,
        manifest_root: H256([4; 32]),
        size_bytes: 1,
        changed_bytes: 1,
    });
    let txs = vec![
        r.tx("alice", hb(1, Health::Healthy, Some(3))),
        r.tx("alice", stale),
        r.tx("charlie", hb(e, Health::Healthy, Some(3))),
    ];
    r.block(next(), 200, txs);
    let roles = pallet_failover::node_records(&r.view(0), &db());
    let alice = roles
        .iter()
        .find(|(a, _)| *a == dev_account("alice"))
        .unwrap();
    assert_eq!(alice.1.role, Role::Fenced);
    assert_eq!(pallet_checkpoints::latest(&r.view(0), &db()), Some(3));

    // Finally an admin switches the service back to alice once she has caught up.
    let txs = vec![
        r.tx("alice", hb(e, Health::Healthy, Some(3))),
        r.tx("charlie", hb(e, Health::Healthy, Some(3))),
    ];
    r.block(next(), 200, txs);
    let switch = RuntimeCall::Failover(pallet_failover::Call::Switchover {
        service: db(),
        target: Some(dev_account("alice")),
    });
    let txs = vec![r.tx(
        "bob",
        RuntimeCall::Admin(AdminCall::Propose {
            call: Box::new(switch),
        }),
    )];
    r.block(next(), 200, txs);
    assert!(matches!(phase(&r), Phase::Promoting { node, .. } if node == dev_account("alice")));
    assert_eq!(epoch(&r), 4);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random heartbeat mixes and timings: three replicas never diverge, and the committed
    /// root always equals the root computed from scratch over the whole state.
    #[test]
    fn replicas_agree_and_roots_match_a_full_recomputation(
        blocks in prop::collection::vec(
            (prop::collection::vec((0usize..4, 0u8..3), 0..6), 50u64..1500), 1..25)
    ) {
        let names = ["alice", "bob", "charlie", "dave"];
        let mut r = Replicas::local(3);
        for (i, (beats, dt)) in blocks.into_iter().enumerate() {
            let e = epoch(&r);
            let txs = beats
                .into_iter()
                .map(|(who, h)| {
                    let health = [Health::Healthy, Health::Degraded, Health::Failed][h as usize];
                    r.tx(names[who], hb(e, health, None))
                })
                .collect();
            r.block(i % 3, dt, txs);
        }
        let all = r.replicas[0].state.scan_prefix(b"");
        let scratch = drchain_runtime::support::trie::root_from_scratch(
            all.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        );
        prop_assert_eq!(scratch, r.replicas[0].state.root());
    }
}
