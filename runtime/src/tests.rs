//! Runtime tests: blocks built and executed from the local dev spec.

use std::collections::BTreeMap;

use drchain_support::{AccountId, Health, MemoryState, Overlay, ServiceName, Signature, H256};
use pallet_failover::{Phase as ElectionPhase, Reason};
use parity_scale_codec::Encode;

use crate::dev::{dev_account, dev_key, specs};
use crate::*;

struct Chain {
    genesis_hash: H256,
    state: MemoryState,
    head: Header,
    nonces: BTreeMap<AccountId, u64>,
}

impl Chain {
    fn local() -> Self {
        let g = specs::local().unwrap().build_genesis().unwrap();
        Chain {
            genesis_hash: g.hash(),
            head: g.header.clone(),
            state: g.state,
            nonces: BTreeMap::new(),
        }
    }

    fn tx(&mut self, who: &str, call: RuntimeCall) -> UncheckedExtrinsic {
        let account = dev_account(who);
        let nonce = self.nonces.entry(account).or_default();
        let x = UncheckedExtrinsic::sign(&dev_key(who), &self.genesis_hash, *nonce, call);
        *nonce += 1;
        x
    }

    /// Builds a block `dt` ms after the head and imports it through `execute_block`.
    fn produce(&mut self, dt: u64, txs: Vec<UncheckedExtrinsic>) -> ExecutedBlock {
        let built = self.build(dt, txs);
        assert!(built.rejected.is_empty(), "rejected: {:?}", built.rejected);
        let executed =
            execute_block(&self.state, &self.head, &built.block, &self.genesis_hash).unwrap();
        assert_eq!(executed.header, built.block.header);
        self.head = executed.header.clone();
        self.state
            .apply(executed.changes.clone(), executed.trie.clone());
        assert_eq!(self.state.root(), self.head.state_root);
        executed
    }

    fn build(&self, dt: u64, txs: Vec<UncheckedExtrinsic>) -> BuiltBlock {
        build_block(
            &self.state,
            &self.head,
            self.head.timestamp + dt,
            &self.genesis_hash,
            txs,
            1000,
        )
        .unwrap()
    }

    fn view(&self) -> Overlay<'_> {
        Overlay::new(&self.state)
    }

    fn service(&self, name: &str) -> pallet_failover::ServiceState {
        pallet_failover::service_state(&self.view(), &svc(name)).unwrap()
    }
}

fn svc(name: &str) -> ServiceName {
    ServiceName::new(name).unwrap()
}

fn heartbeat(service: &str, epoch_seen: u64) -> RuntimeCall {
    RuntimeCall::ServiceStatus(pallet_service_status::Call::Heartbeat {
        service: svc(service),
        epoch_seen,
        health: Health::Healthy,
        applied_checkpoint: None,
    })
}

fn failover_events(x: &ExecutedBlock) -> Vec<pallet_failover::Event> {
    x.events
        .iter()
        .filter_map(|r| match &r.event {
            RuntimeEvent::Failover(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn genesis_is_deterministic_and_specs_differ_by_id() {
    let a = specs::local().unwrap().build_genesis().unwrap();
    let b = specs::local().unwrap().build_genesis().unwrap();
    assert_eq!(a.hash(), b.hash());
    let mut other = specs::local().unwrap();
    other.id = "other".into();
    assert_ne!(other.build_genesis().unwrap().hash(), a.hash());
    let o = Overlay::new(&a.state);
    assert_eq!(pallet_membership::validators(&o).len(), 4);
}

#[test]
fn a_block_executed_twice_from_the_same_state_gives_the_same_root() {
    let mut chain = Chain::local();
    let txs = vec![
        chain.tx("alice", heartbeat("demo-db", 0)),
        chain.tx("bob", heartbeat("demo-db", 0)),
    ];
    let built = chain.build(200, txs);
    let one = execute_block(&chain.state, &chain.head, &built.block, &chain.genesis_hash).unwrap();
    let fresh = Chain::local();
    let two = execute_block(&fresh.state, &fresh.head, &built.block, &fresh.genesis_hash).unwrap();
    assert_eq!(one.header.state_root, two.header.state_root);
    assert_eq!(one.changes, two.changes);
    assert_eq!(one.events, two.events);
    assert_eq!(one.header.state_root, built.block.header.state_root);
}

#[test]
fn a_bad_signature_is_refused_by_the_pool_and_in_blocks() {
    let mut chain = Chain::local();
    let mut x = chain.tx("alice", heartbeat("demo-db", 0));
    x.signature = Signature([7; 64]);
    assert_eq!(
        validate_transaction(&chain.state, &x, &chain.genesis_hash),
        Err(TransactionError::BadSignature)
    );
    let mut built = chain.build(200, vec![]);
    built.block.extrinsics.push(x);
    built.block.header.extrinsics_root = block::extrinsics_root(&built.block.extrinsics);
    let err =
        execute_block(&chain.state, &chain.head, &built.block, &chain.genesis_hash).unwrap_err();
    assert_eq!(
        err,
        BlockError::InvalidExtrinsic {
            index: 0,
            error: TransactionError::BadSignature
        }
    );
}

#[test]
fn a_replayed_nonce_is_refused() {
    let mut chain = Chain::local();
    let x = chain.tx("alice", heartbeat("demo-db", 0));
    chain.produce(200, vec![x.clone()]);
    assert_eq!(
        validate_transaction(&chain.state, &x, &chain.genesis_hash),
        Err(TransactionError::StaleNonce {
            expected: 1,
            got: 0
        })
    );
    let built = chain.build(200, vec![x.clone()]);
    assert_eq!(
        built.rejected,
        vec![(
            x.hash(),
            TransactionError::StaleNonce {
                expected: 1,
                got: 0
            }
        )]
    );
    let mut block = built.block;
    block.extrinsics = vec![x];
    block.header.extrinsics_root = block::extrinsics_root(&block.extrinsics);
    assert!(matches!(
        execute_block(&chain.state, &chain.head, &block, &chain.genesis_hash),
        Err(BlockError::InvalidExtrinsic {
            error: TransactionError::StaleNonce { .. },
            ..
        })
    ));
}

#[test]
fn a_transaction_signed_for_another_chain_is_refused() {
    let chain = Chain::local();
    let other_genesis = H256([1; 32]);
    let x = UncheckedExtrinsic::sign(
        &dev_key("alice"),
        &other_genesis,
        0,
        heartbeat("demo-db", 0),
    );
    assert_eq!(
        validate_transaction(&chain.state, &x, &chain.genesis_hash),
        Err(TransactionError::BadSignature)
    );
}

#[test]
fn header_checks_refuse_wrong_roots_parents_and_times() {
    let mut chain = Chain::local();
    let x = chain.tx("alice", heartbeat("demo-db", 0));
    let good = chain.build(200, vec![x]).block;
    let run = |b: &Block| execute_block(&chain.state, &chain.head, b, &chain.genesis_hash);

    let mut b = good.clone();
    b.header.state_root = H256([9; 32]);
    assert!(matches!(run(&b), Err(BlockError::BadStateRoot { .. })));

    let mut b = good.clone();
    b.header.parent_hash = H256([9; 32]);
    assert!(matches!(run(&b), Err(BlockError::WrongParent { .. })));

    let mut b = good.clone();
    b.header.extrinsics_root = H256([9; 32]);
    assert!(matches!(run(&b), Err(BlockError::BadExtrinsicsRoot { .. })));

    let mut b = good.clone();
    b.header.timestamp = chain.head.timestamp;
    assert!(matches!(
        run(&b),
        Err(BlockError::TimestampNotIncreasing { .. })
    ));

    let mut b = good;
    b.header.number = 5;
    assert!(matches!(
        run(&b),
        Err(BlockError::WrongNumber {
            expected: 1,
            got: 5
        })
    ));
}

/// Gossip carries a proposal in one message: a block bigger than the byte budget (well under
/// that message cap) is invalid however consistent its roots are, and a builder never makes
/// one whatever it is given.
#[test]
fn blocks_stay_within_the_byte_budget() {
    let mut chain = Chain::local();
    let big = |chain: &mut Chain, who: &str| {
        let call = RuntimeCall::NetworkConfig(pallet_network_config::Call::SetBootnodes {
            bootnodes: vec!["x".repeat(60_000)],
        });
        chain.tx(who, call)
    };
    let count = executive::MAX_BLOCK_BODY_BYTES / 60_000 + 2;
    let txs: Vec<UncheckedExtrinsic> = (0..count).map(|_| big(&mut chain, "alice")).collect();
    let built = chain.build(200, txs.clone());
    let body = built.block.extrinsics.encoded_size();
    assert!(
        body <= executive::MAX_BLOCK_BODY_BYTES,
        "built a body of {body} bytes"
    );
    assert!(built.block.extrinsics.len() < count);
    let mut oversized = built.block;
    oversized.extrinsics = txs;
    oversized.header.extrinsics_root = block::extrinsics_root(&oversized.extrinsics);
    assert!(matches!(
        check_body(&oversized),
        Err(BlockError::TooLarge { .. })
    ));
}

/// Whether the signer may transact at all is a cheap state read; a signature check is not.
/// A stranger's transactions (forged or not) are refused by the first, so a flood of them
/// costs no signature verification.
#[test]
fn membership_is_checked_before_the_signature() {
    let chain = Chain::local();
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let mut x =
        UncheckedExtrinsic::sign(&stranger, &chain.genesis_hash, 0, heartbeat("demo-db", 0));
    x.signature = Signature([7; 64]);
    assert_eq!(
        validate_transaction(&chain.state, &x, &chain.genesis_hash),
        Err(TransactionError::NotPermitted {
            signer: AccountId::from(&stranger)
        })
    );
}

#[test]
fn strangers_cannot_transact() {
    let chain = Chain::local();
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let x = UncheckedExtrinsic::sign(&stranger, &chain.genesis_hash, 0, heartbeat("demo-db", 0));
    assert_eq!(
        validate_transaction(&chain.state, &x, &chain.genesis_hash),
        Err(TransactionError::NotPermitted {
            signer: AccountId::from(&stranger)
        })
    );
}

#[test]
fn a_failing_call_is_included_uses_its_nonce_and_writes_nothing() {
    let mut chain = Chain::local();
    // dave is not a candidate of demo-db.
    let x = chain.tx("dave", heartbeat("demo-db", 0));
    let executed = chain.produce(200, vec![x]);
    assert!(executed.events.iter().any(|r| matches!(
        &r.event,
        RuntimeEvent::System(SystemEvent::ExtrinsicFailed {
            index: 0,
            error: DispatchError::ServiceStatus(pallet_service_status::Error::Service(
                drchain_support::ServiceError::NotACandidate { .. }
            ))
        })
    )));
    assert_eq!(system::nonce(&chain.view(), &dev_account("dave")), 1);
    assert!(pallet_service_status::statuses(&chain.view(), &svc("demo-db")).is_empty());
}

#[test]
fn malformed_extrinsic_bytes_are_refused_with_a_reason() {
    assert!(UncheckedExtrinsic::decode_untrusted(b"garbage").is_err());
    assert!(UncheckedExtrinsic::decode_untrusted(&vec![0u8; 70_000])
        .unwrap_err()
        .contains("exceeds"));
    // Deeply nested admin proposals are cut off by the depth limit rather than the stack.
    let mut call = heartbeat("demo-db", 0);
    for _ in 0..40 {
        call = RuntimeCall::Admin(AdminCall::Propose {
            call: Box::new(call),
        });
    }
    let x = UncheckedExtrinsic {
        signer: dev_account("alice"),
        nonce: 0,
        call,
        signature: Signature([0; 64]),
    };
    assert!(UncheckedExtrinsic::decode_untrusted(&x.encode()).is_err());
}

/// Heartbeats from alice, bob and charlie every 200 ms until demo-db has an active node.
fn establish_active(chain: &mut Chain) {
    let beat = |chain: &mut Chain, who: &[&str]| {
        let epoch = chain.service("demo-db").epoch;
        who.iter()
            .map(|w| chain.tx(w, heartbeat("demo-db", epoch)))
            .collect::<Vec<_>>()
    };
    let txs = beat(chain, &["alice", "bob", "charlie"]);
    chain.produce(200, txs);
    assert!(matches!(
        chain.service("demo-db").phase,
        ElectionPhase::Promoting { .. }
    ));
    let mut txs = beat(chain, &["alice", "bob", "charlie"]);
    txs.push(chain.tx(
        "alice",
        RuntimeCall::Failover(pallet_failover::Call::PromotionComplete {
            service: svc("demo-db"),
            epoch: 1,
        }),
    ));
    chain.produce(200, txs);
    assert_eq!(
        chain.service("demo-db").phase,
        ElectionPhase::Active {
            node: dev_account("alice")
        }
    );
}

#[test]
fn a_consensus_stall_does_not_trigger_failover() {
    let mut chain = Chain::local();
    establish_active(&mut chain);
    // The chain stalls for 10 s: the next block carries no heartbeat at all, yet nothing is
    // stale, because the live clock advanced by at most live_clock_max_gap_ms (400 ms).
    let executed = chain.produce(10_000, vec![]);
    assert!(
        failover_events(&executed).is_empty(),
        "{:?}",
        failover_events(&executed)
    );
    assert_eq!(
        chain.service("demo-db").phase,
        ElectionPhase::Active {
            node: dev_account("alice")
        }
    );
    // Afterwards heartbeats age normally: with alice silent, bob takes over once alice's last
    // heartbeat is more than 1000 ms old on the live clock.
    let mut elected = None;
    for _ in 0..10 {
        let txs = vec![
            chain.tx("bob", heartbeat("demo-db", 1)),
            chain.tx("charlie", heartbeat("demo-db", 1)),
        ];
        let executed = chain.produce(200, txs);
        elected = failover_events(&executed)
            .into_iter()
            .find_map(|e| match e {
                pallet_failover::Event::Elected { node, reason, .. } => Some((node, reason)),
                _ => None,
            });
        if elected.is_some() {
            break;
        }
    }
    assert_eq!(elected, Some((dev_account("bob"), Reason::HeartbeatStale)));
}

#[test]
fn admin_calls_run_once_the_threshold_approves() {
    let mut chain = Chain::local();
    // Raise the threshold to 2 (threshold 1: alice alone).
    let set_admins = RuntimeCall::Membership(pallet_membership::Call::SetAdmins {
        admins: vec![dev_account("alice"), dev_account("bob")],
        threshold: 2,
    });
    let x = chain.tx(
        "alice",
        RuntimeCall::Admin(AdminCall::Propose {
            call: Box::new(set_admins),
        }),
    );
    chain.produce(200, vec![x]);
    assert_eq!(pallet_membership::admin_threshold(&chain.view()), 2);

    let register = RuntimeCall::Failover(pallet_failover::Call::RegisterService {
        name: svc("cache"),
        config: pallet_failover::ServiceConfig::new(vec![dev_account("dave")]),
    });
    let proposal = call::proposal_hash(&register);
    let x = chain.tx(
        "alice",
        RuntimeCall::Admin(AdminCall::Propose {
            call: Box::new(register),
        }),
    );
    chain.produce(200, vec![x]);
    assert!(pallet_failover::config(&chain.view(), &svc("cache")).is_none());
    let x = chain.tx("bob", RuntimeCall::Admin(AdminCall::Approve { proposal }));
    let executed = chain.produce(200, vec![x]);
    assert!(executed.events.iter().any(|r| r.event
        == RuntimeEvent::Admin(AdminEvent::Executed {
            proposal,
            result: Ok(())
        })));
    assert!(pallet_failover::config(&chain.view(), &svc("cache")).is_some());

    // A non-admin cannot propose, and admin origin cannot be forged by calling directly.
    let direct = RuntimeCall::Failover(pallet_failover::Call::RemoveService { name: svc("cache") });
    let x = chain.tx("dave", direct);
    let executed = chain.produce(200, vec![x]);
    assert!(executed.events.iter().any(|r| matches!(
        r.event,
        RuntimeEvent::System(SystemEvent::ExtrinsicFailed { .. })
    )));
    assert!(pallet_failover::config(&chain.view(), &svc("cache")).is_some());
}

#[test]
fn validator_set_changes_apply_two_blocks_later() {
    let mut chain = Chain::local();
    let revoke = RuntimeCall::Membership(pallet_membership::Call::Revoke {
        account: dev_account("dave"),
        reason: "decommissioned".into(),
    });
    let x = chain.tx(
        "alice",
        RuntimeCall::Admin(AdminCall::Propose {
            call: Box::new(revoke),
        }),
    );
    chain.produce(200, vec![x]);
    assert_eq!(pallet_membership::validators(&chain.view()).len(), 4);
    assert_eq!(pallet_membership::validators_at(&chain.view(), 3).len(), 3);
    chain.produce(200, vec![]);
    assert_eq!(pallet_membership::validators(&chain.view()).len(), 4);
    chain.produce(200, vec![]);
    assert_eq!(pallet_membership::validators(&chain.view()).len(), 3);
}

#[test]
fn malformed_specs_name_the_field() {
    let json = specs::local().unwrap().to_json();
    let broken = json.replacen("\"threshold\": 1", "\"threshold\": \"one\"", 1);
    let err = ChainSpec::from_json(broken.as_bytes()).unwrap_err();
    assert_eq!(err.field, "admins.threshold");

    let mut spec = specs::local().unwrap();
    spec.members[2].certificate =
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into();
    assert_eq!(
        spec.build_genesis().unwrap_err().field,
        "members[2].certificate"
    );

    let mut spec = specs::local().unwrap();
    spec.services[0].candidates.push("mallory".into());
    assert_eq!(
        spec.build_genesis().unwrap_err().field,
        "services[0].candidates[3]"
    );

    let unknown = json.replacen("\"id\"", "\"idd\"", 1);
    assert!(ChainSpec::from_json(unknown.as_bytes()).is_err());
}

#[test]
fn the_block_builder_applies_one_extrinsic_at_a_time() {
    let mut chain = Chain::local();
    let good = chain.tx("alice", heartbeat("demo-db", 0));
    let skipped_nonce = UncheckedExtrinsic::sign(
        &dev_key("bob"),
        &chain.genesis_hash,
        5,
        heartbeat("demo-db", 0),
    );
    let mut builder = BlockBuilder::new(
        &chain.state,
        &chain.head,
        chain.head.timestamp + 200,
        &chain.genesis_hash,
    )
    .unwrap();
    builder.apply_extrinsic(good.clone()).unwrap();
    assert_eq!(
        builder.apply_extrinsic(skipped_nonce),
        Err(TransactionError::FutureNonce {
            expected: 0,
            got: 5
        })
    );
    assert_eq!(builder.len(), 1);
    let (block, executed) = builder.finish();
    let same = chain.build(200, vec![good]);
    assert_eq!(block, same.block);
    assert_eq!(executed.header.state_root, same.executed.header.state_root);
    assert!(execute_block(&chain.state, &chain.head, &block, &chain.genesis_hash).is_ok());
}

proptest::proptest! {
    /// Untrusted bytes never panic the decoders: they decode or they are refused.
    #[test]
    fn random_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = UncheckedExtrinsic::decode_untrusted(&bytes);
        let _ = <Block as parity_scale_codec::DecodeLimit>::decode_all_with_depth_limit(MAX_DECODE_DEPTH, &mut &bytes[..]);
        let _ = ChainSpec::from_json(&bytes);
    }

    /// Valid extrinsics with flipped bytes are refused or, if they still decode, fail the
    /// signature check: nothing signed can be altered.
    #[test]
    fn altered_extrinsics_do_not_verify(flip in 0usize..200, bit in 0u8..8) {
        let mut chain = Chain::local();
        let x = chain.tx("alice", heartbeat("demo-db", 0));
        let mut bytes = x.encode();
        let i = flip % bytes.len();
        bytes[i] ^= 1 << bit;
        if let Ok(altered) = UncheckedExtrinsic::decode_untrusted(&bytes) {
            proptest::prop_assert!(!altered.verify(&chain.genesis_hash));
        }
    }
}

#[test]
fn proposal_timestamps_must_be_near_the_validators_clock() {
    let mut chain = Chain::local();
    chain.produce(200, vec![]);
    let parent = chain.head.clone();
    let now = parent.timestamp + 10_000;
    let at = |ts: u64| Header {
        timestamp: ts,
        ..parent.clone()
    };
    // max_drift_ms is 100 in the local spec.
    assert_eq!(
        check_proposal_time(&chain.state, &at(now + 100), now),
        Ok(())
    );
    assert!(matches!(
        check_proposal_time(&chain.state, &at(now + 101), now),
        Err(TimestampError::TooFarAhead { ahead_ms: 101, .. })
    ));
    assert_eq!(
        check_proposal_time(&chain.state, &at(now - 100), now),
        Ok(())
    );
    assert!(matches!(
        check_proposal_time(&chain.state, &at(now - 101), now),
        Err(TimestampError::TooFarBehind { behind_ms: 101, .. })
    ));
    // A proposer uses its clock, but never a time at or before the parent's.
    assert_eq!(proposal_timestamp(&parent, now), now);
    assert_eq!(
        proposal_timestamp(&parent, parent.timestamp - 5),
        parent.timestamp + 1
    );
}

/// A block proposed in round 2 records the proposers of rounds 0 and 1 as having missed their
/// turn; from two heights on they propose after the others, for `SKIP_HEIGHTS` heights.
#[test]
fn a_block_of_a_later_round_moves_the_proposers_that_missed_to_the_end() {
    use pallet_membership::proposers::{MISS_DELAY, SKIP_HEIGHTS};
    let mut chain = Chain::local();
    let height = chain.head.number + 1;
    let before = pallet_membership::proposer_order_at(&chain.view(), height);
    let built = build_block_in_round(
        &chain.state,
        &chain.head,
        chain.head.timestamp + 200,
        2,
        &chain.genesis_hash,
        [],
        10,
    )
    .unwrap();
    assert_eq!(built.block.header.round, 2);
    let executed =
        execute_block(&chain.state, &chain.head, &built.block, &chain.genesis_hash).unwrap();
    chain.head = executed.header.clone();
    chain.state.apply(executed.changes, executed.trie);
    let missed: std::collections::BTreeSet<AccountId> = before[..2].iter().copied().collect();
    // Not yet at the next height (a node two heights back must compute the same order)...
    assert!(pallet_membership::skipped_proposers(&chain.view(), height + 1).is_empty());
    // ...from the one after, for SKIP_HEIGHTS heights.
    for h in [height + MISS_DELAY, height + MISS_DELAY + SKIP_HEIGHTS - 1] {
        assert_eq!(
            pallet_membership::skipped_proposers(&chain.view(), h),
            missed
        );
        let order = pallet_membership::proposer_order_at(&chain.view(), h);
        assert!(
            missed.contains(&order[2]) && missed.contains(&order[3]),
            "{order:?}"
        );
    }
    let later = height + MISS_DELAY + SKIP_HEIGHTS;
    assert!(pallet_membership::skipped_proposers(&chain.view(), later).is_empty());
    // The same block claiming another round has another state root: the round is executed.
    let mut other = built.block.clone();
    other.header.round = 1;
    let parent_state = {
        let chain = Chain::local();
        (chain.state, chain.head)
    };
    assert!(matches!(
        execute_block(
            &parent_state.0,
            &parent_state.1,
            &other,
            &chain.genesis_hash
        ),
        Err(BlockError::BadStateRoot { .. })
    ));
}
