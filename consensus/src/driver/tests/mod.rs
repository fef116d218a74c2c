//! Driver tests with hand-made inputs: each checks one decision a validator makes. Those
//! about locks (what a validator that precommitted a value may vote for later) are in
//! [`locks`].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod locks;

use drchain_runtime::dev::{dev_account, dev_key, specs};
use drchain_runtime::{build_block, Block, Genesis};
use drchain_support::{Signature, H256};
use ed25519_dalek::Signer as _;
use malachitebft_core_types::{Round, TimeoutKind};

use super::{ConsensusDriver, DriverConfig, Output, SyncRejected, TimerKey, Verdict};
use crate::codec::{self, ConsensusMessage, WireProposal, WireVote};
use crate::context::{Height, SigningProvider, ValidatorSet};
use crate::store::kv::MemoryDb;
use crate::store::ChainStore;

const NAMES: [&str; 4] = ["alice", "bob", "charlie", "dave"];

struct Chain {
    genesis: Genesis,
}

impl Chain {
    fn local() -> Self {
        Self {
            genesis: specs::local().unwrap().build_genesis().unwrap(),
        }
    }

    fn dev() -> Self {
        Self {
            genesis: specs::dev().unwrap().build_genesis().unwrap(),
        }
    }

    fn now(&self) -> u64 {
        self.genesis.header.timestamp + 1_000
    }

    fn driver(&self, name: &str, db: &MemoryDb) -> ConsensusDriver<MemoryDb> {
        let store = ChainStore::open(db.clone(), &self.genesis).unwrap();
        let signer = SigningProvider::new(self.genesis.hash(), dev_key(name));
        ConsensusDriver::new(store, signer, DriverConfig::default(), true)
    }

    /// The dev name of the proposer of (height, round).
    fn proposer(&self, height: u64, round: u32) -> &'static str {
        let set = ValidatorSet::new(NAMES.iter().map(|n| dev_account(n)));
        let account = set.proposer(Height(height), Round::new(round)).unwrap();
        use malachitebft_core_types::Validator as _;
        let account = account.address().0;
        NAMES
            .into_iter()
            .find(|n| dev_account(n) == account)
            .unwrap()
    }

    fn block(&self, timestamp: u64) -> Block {
        let g = &self.genesis;
        build_block(&g.state, &g.header, timestamp, &g.hash(), [], 10)
            .unwrap()
            .block
    }

    /// A proposal of `block` for (1, round), signed by `name`.
    fn proposal(&self, name: &str, round: i64, block: Block) -> ConsensusMessage {
        let mut p = WireProposal {
            height: 1,
            round,
            pol_round: -1,
            proposer: dev_account(name),
            block,
            signature: Signature([0; 64]),
        };
        let core = codec::proposal_from_wire(p.clone()).unwrap();
        let bytes = core.message.sign_bytes(&self.genesis.hash());
        p.signature = Signature(dev_key(name).sign(&bytes).to_bytes());
        ConsensusMessage::Proposal(p)
    }

    fn vote(&self, name: &str, vote_type: u8, round: i64, value: Option<H256>) -> ConsensusMessage {
        self.vote_at(name, 1, vote_type, round, value)
    }

    fn vote_at(
        &self,
        name: &str,
        height: u64,
        vote_type: u8,
        round: i64,
        value: Option<H256>,
    ) -> ConsensusMessage {
        let mut v = WireVote {
            vote_type,
            height,
            round,
            value,
            validator: dev_account(name),
            signature: Signature([0; 64]),
        };
        let core = codec::vote_from_wire(v.clone()).unwrap();
        let bytes = core.message.sign_bytes(&self.genesis.hash());
        v.signature = Signature(dev_key(name).sign(&bytes).to_bytes());
        ConsensusMessage::Vote(v)
    }
}

/// The votes of `who` among broadcast outputs, as (type, round, value).
fn votes_of(outputs: &[Output], who: &str) -> Vec<(u8, i64, Option<H256>)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Broadcast(ConsensusMessage::Vote(v)) if v.validator == dev_account(who) => {
                Some((v.vote_type, v.round, v.value))
            }
            _ => None,
        })
        .collect()
}

fn finalized(outputs: &[Output]) -> Vec<u64> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Finalized { header, .. } => Some(header.number),
            _ => None,
        })
        .collect()
}

#[test]
fn a_lone_validator_proposes_and_finalizes_at_once() {
    let chain = Chain::dev();
    let db = MemoryDb::new();
    let mut d = chain.driver("alice", &db);
    let out = d.start(chain.now()).unwrap();
    let build = out
        .iter()
        .find_map(|o| match o {
            Output::BuildBlock { height, round } => Some((*height, *round)),
            _ => None,
        })
        .expect("the proposer is asked for a block at start");
    assert_eq!(build, (1, 0));
    let g = &chain.genesis;
    let built = build_block(&g.state, &g.header, chain.now(), &g.hash(), [], 10).unwrap();
    let out = d
        .on_block_built(chain.now(), 1, 0, built.block, built.executed)
        .unwrap();
    assert_eq!(finalized(&out), vec![1]);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::ScheduleTimer {
            key: TimerKey::Idle,
            ..
        }
    )));
    assert_eq!(d.height(), 2);
    assert!(d.store().certificate(1).unwrap().is_some());
}

/// A voter's answer to the round-0 proposal of `block`: a nil prevote, the block counted
/// invalid.
fn assert_nil_prevote_on(chain: &Chain, block: Block) {
    let proposer = chain.proposer(1, 0);
    let voter = NAMES.into_iter().find(|n| *n != proposer).unwrap();
    let mut d = chain.driver(voter, &MemoryDb::new());
    let _ = d.start(chain.now()).unwrap();
    let out = d
        .on_message(chain.now(), chain.proposal(proposer, 0, block))
        .unwrap();
    assert_eq!(votes_of(&out, voter), vec![(0, 0, None)]);
    assert_eq!(d.stats().invalid_proposals, 1);
}

#[test]
fn a_block_with_a_wrong_state_root_gets_a_nil_prevote() {
    let chain = Chain::local();
    let mut block = chain.block(chain.now());
    block.header.state_root = H256([0xee; 32]);
    assert_nil_prevote_on(&chain, block);
}

/// A block names the round it was proposed in, and block execution takes the proposers of
/// the rounds before it as having missed their turn: a round-0 proposal of a block naming
/// round 1 would wrongly mark the round-0 proposer, and gets a nil prevote.
#[test]
fn a_block_naming_another_round_gets_a_nil_prevote() {
    let chain = Chain::local();
    let g = &chain.genesis;
    let block = drchain_runtime::build_block_in_round(
        &g.state,
        &g.header,
        chain.now(),
        1,
        &g.hash(),
        [],
        10,
    )
    .unwrap()
    .block;
    assert_nil_prevote_on(&chain, block);
}

#[test]
fn a_block_stamped_too_far_from_our_clock_gets_a_nil_prevote() {
    let chain = Chain::local();
    let proposer = chain.proposer(1, 0);
    let voter = NAMES.into_iter().find(|n| *n != proposer).unwrap();
    // (block time, validator's clock): 10 s ahead of it, then 10 s behind it.
    for (stamp, clock) in [
        (chain.now() + 10_000, chain.now()),
        (chain.now(), chain.now() + 10_000),
    ] {
        let mut d = chain.driver(voter, &MemoryDb::new());
        let _ = d.start(clock).unwrap();
        let block = chain.block(stamp);
        let out = d
            .on_message(clock, chain.proposal(proposer, 0, block))
            .unwrap();
        assert_eq!(
            votes_of(&out, voter),
            vec![(0, 0, None)],
            "stamp {stamp} clock {clock}"
        );
    }
}

#[test]
fn a_valid_block_gets_a_prevote_and_others_are_ignored() {
    let chain = Chain::local();
    let proposer = chain.proposer(1, 0);
    let impostor = NAMES.into_iter().find(|n| *n != proposer).unwrap();
    let voter = NAMES
        .into_iter()
        .find(|n| *n != proposer && *n != impostor)
        .unwrap();
    let mut d = chain.driver(voter, &MemoryDb::new());
    let _ = d.start(chain.now()).unwrap();
    // Not the proposer of the round: dropped, no vote.
    let block = chain.block(chain.now());
    let out = d
        .on_message(chain.now(), chain.proposal(impostor, 0, block.clone()))
        .unwrap();
    assert!(votes_of(&out, voter).is_empty());
    assert_eq!(d.stats().invalid_messages, 1);
    // A forged signature: dropped.
    let mut forged = chain.proposal(proposer, 0, block.clone());
    if let ConsensusMessage::Proposal(p) = &mut forged {
        p.signature = Signature([5; 64]);
    }
    let out = d.on_message(chain.now(), forged).unwrap();
    assert!(votes_of(&out, voter).is_empty());
    assert_eq!(d.stats().invalid_messages, 2);
    // The real one.
    let out = d
        .on_message(chain.now(), chain.proposal(proposer, 0, block.clone()))
        .unwrap();
    assert_eq!(votes_of(&out, voter), vec![(0, 0, Some(block.hash()))]);
}

#[test]
fn second_votes_for_a_slot_are_dropped() {
    let chain = Chain::local();
    let mut d = chain.driver("alice", &MemoryDb::new());
    let _ = d.start(chain.now()).unwrap();
    let v = chain.vote("bob", 0, 0, None);
    let _ = d.on_message(chain.now(), v.clone()).unwrap();
    let _ = d.on_message(chain.now(), v).unwrap();
    let conflicting = chain.vote("bob", 0, 0, Some(H256([1; 32])));
    let _ = d.on_message(chain.now(), conflicting).unwrap();
    assert_eq!(d.stats().duplicates, 2);
}

#[test]
fn a_restarted_validator_re_signs_exactly_what_it_had_signed() {
    let chain = Chain::local();
    let proposer = chain.proposer(1, 0);
    let voter = NAMES.into_iter().find(|n| *n != proposer).unwrap();
    let db = MemoryDb::new();
    let block = chain.block(chain.now());
    let before = {
        let mut d = chain.driver(voter, &db);
        let _ = d.start(chain.now()).unwrap();
        let out = d
            .on_message(chain.now(), chain.proposal(proposer, 0, block.clone()))
            .unwrap();
        votes_of(&out, voter)
    };
    assert_eq!(before, vec![(0, 0, Some(block.hash()))]);
    // "Crash": the driver is gone, the database stays. On restart the WAL is replayed.
    let mut d = chain.driver(voter, &db);
    let out = d.start(chain.now() + 5_000).unwrap();
    assert!(d.stats().wal_records_replayed >= 2);
    assert_eq!(
        votes_of(&out, voter),
        before,
        "the same prevote, republished"
    );
    // Its propose timer fires later: having prevoted, it must not prevote nil now.
    let out = d
        .on_timer(
            chain.now() + 6_000,
            TimerKey::Consensus(malachitebft_core_types::Timeout::new(
                Round::new(0),
                TimeoutKind::Propose,
            )),
        )
        .unwrap();
    assert!(votes_of(&out, voter).is_empty());
}

#[test]
fn synced_blocks_need_a_valid_certificate() {
    let chain = Chain::dev();
    // Alice finalizes block 1 alone; a follower gets it by sync.
    let (block, certificate) = block_one_finalized_by_alice(&chain);
    let mut follower = follower(&chain);
    let mut forged = certificate.clone();
    forged.signatures[0].1 = Signature([1; 64]);
    assert!(follower
        .on_synced_block(chain.now(), block.clone(), forged)
        .unwrap()
        .is_err());
    let mut empty = certificate.clone();
    empty.signatures.clear();
    assert!(follower
        .on_synced_block(chain.now(), block.clone(), empty)
        .unwrap()
        .is_err());
    let mut doubled = certificate.clone();
    doubled.signatures.push(doubled.signatures[0]);
    assert!(follower
        .on_synced_block(chain.now(), block.clone(), doubled)
        .unwrap()
        .is_err());
    assert_eq!(follower.height(), 1);
    let out = follower
        .on_synced_block(chain.now(), block, certificate)
        .unwrap()
        .unwrap();
    assert_eq!(finalized(&out), vec![1]);
    assert_eq!(follower.height(), 2);
}

/// The proposer's signature covers the header, not the body: a relay that alters the body
/// must not make the round's proposal look invalid. Its copy is dropped, and the genuine copy
/// arriving after it gets the prevote.
#[test]
fn a_relayed_proposal_with_an_altered_body_does_not_shadow_the_genuine_one() {
    let chain = Chain::local();
    let proposer = chain.proposer(1, 0);
    let voter = NAMES.into_iter().find(|n| *n != proposer).unwrap();
    let mut d = chain.driver(voter, &MemoryDb::new());
    let _ = d.start(chain.now()).unwrap();
    let block = chain.block(chain.now());
    let mut altered = block.clone();
    altered.extrinsics.push(removal_by_alice(&chain));
    let out = d
        .on_message(chain.now(), chain.proposal(proposer, 0, altered))
        .unwrap();
    assert!(
        votes_of(&out, voter).is_empty(),
        "no vote on an altered copy"
    );
    let out = d
        .on_message(chain.now(), chain.proposal(proposer, 0, block.clone()))
        .unwrap();
    assert_eq!(votes_of(&out, voter), vec![(0, 0, Some(block.hash()))]);
    assert_eq!(d.stats().invalid_proposals, 0);
}

/// Certificates are logged in the WAL (replay needs them), so what gets logged must be bounded:
/// a certificate stripped below its quorum, or one already applied, is dropped before the
/// WAL. Otherwise any member could grow the WAL, and replay time, without bound in a stall.
#[test]
fn only_new_certificates_with_a_quorum_reach_the_wal() {
    let chain = Chain::local();
    let mut d = chain.driver("alice", &MemoryDb::new());
    let _ = d.start(chain.now()).unwrap();
    let value = H256([7; 32]);
    let signature = |name: &str, vote_type: u8, round: i64, value: Option<H256>| match chain
        .vote(name, vote_type, round, value)
    {
        ConsensusMessage::Vote(v) => (dev_account(name), v.signature),
        _ => unreachable!(),
    };
    let polka = |signers: &[&str]| {
        ConsensusMessage::PolkaCertificate(codec::WirePolkaCertificate {
            height: 1,
            round: 0,
            block_hash: value,
            signatures: signers
                .iter()
                .map(|n| signature(n, 0, 0, Some(value)))
                .collect(),
        })
    };
    let skip = |signers: &[&str]| {
        ConsensusMessage::RoundCertificate(codec::WireRoundCertificate {
            height: 1,
            round: 3,
            kind: 0,
            signatures: signers
                .iter()
                .map(|n| {
                    let (who, sig) = signature(n, 1, 3, None);
                    (1, None, who, sig)
                })
                .collect(),
        })
    };
    let wal_len = |d: &ConsensusDriver<MemoryDb>| d.store().wal(1).unwrap().len();
    let before = wal_len(&d);
    for _ in 0..10 {
        let _ = d.on_message(chain.now(), polka(&["bob"])).unwrap();
        let _ = d.on_message(chain.now(), skip(&["bob"])).unwrap();
    }
    // Below quorum the certificates are not logged; the two valid votes in them (bob's
    // prevote of round 0, his precommit of round 3) count once each, as if they had come
    // alone, however many copies arrive.
    assert_eq!(
        wal_len(&d),
        before + 2,
        "below quorum: only its votes, once"
    );
    let before = wal_len(&d);
    let _ = d
        .on_message(chain.now(), polka(&["bob", "charlie", "dave"]))
        .unwrap();
    let after_first = wal_len(&d);
    assert!(after_first > before, "a quorum certificate is logged");
    for _ in 0..10 {
        let _ = d
            .on_message(chain.now(), polka(&["bob", "charlie", "dave"]))
            .unwrap();
        let _ = d
            .on_message(chain.now(), polka(&["charlie", "dave", "bob"]))
            .unwrap();
    }
    assert_eq!(wal_len(&d), after_first, "repeats are not logged again");
}

/// Messages for the next height wait in a buffer until this node gets there. Only what a
/// validator of that height signed gets in, once per vote slot: a member flooding forged or
/// repeated messages must not crowd out the honest validators' messages (nor fill memory).
#[test]
fn the_next_height_buffer_keeps_honest_messages_whatever_a_flood_holds() {
    let chain = Chain::local();
    let mut d = chain.driver("alice", &MemoryDb::new());
    let _ = d.start(chain.now()).unwrap();
    let value = Some(H256([3; 32]));
    let mut forged = chain.vote_at("bob", 2, 0, 0, value);
    if let ConsensusMessage::Vote(v) = &mut forged {
        v.signature = Signature([9; 64]);
    }
    let repeated = chain.vote_at("bob", 2, 0, 0, value);
    for _ in 0..3_000 {
        let _ = d.on_message(chain.now(), forged.clone()).unwrap();
        let _ = d.on_message(chain.now(), repeated.clone()).unwrap();
    }
    let dropped = d.stats().future_dropped;
    let honest = chain.vote_at("charlie", 2, 0, 0, value);
    let _ = d.on_message(chain.now(), honest).unwrap();
    assert_eq!(
        d.stats().future_dropped,
        dropped,
        "an honest validator's message for the next height was dropped"
    );
    assert!(
        d.stats().invalid_messages >= 3_000,
        "forged messages are refused before buffering"
    );
}

/// What gossip forwards depends on the driver's verdict: a forged message is rejected (its
/// relay is penalized and it goes no further), a repeat or a stale one is ignored (no
/// penalty, not forwarded), a good one accepted.
#[test]
fn gossip_verdicts_follow_what_the_driver_made_of_a_message() {
    let chain = Chain::local();
    let mut d = chain.driver("alice", &MemoryDb::new());
    let _ = d.start(chain.now()).unwrap();
    let vote = chain.vote("bob", 0, 0, None);
    let mut forged = vote.clone();
    if let ConsensusMessage::Vote(v) = &mut forged {
        v.signature = Signature([9; 64]);
    }
    let verdict = |d: &mut ConsensusDriver<MemoryDb>, m: ConsensusMessage| {
        d.on_gossip(chain.now(), m).unwrap().0
    };
    assert_eq!(verdict(&mut d, forged), Verdict::Reject);
    assert_eq!(verdict(&mut d, vote.clone()), Verdict::Accept);
    assert_eq!(verdict(&mut d, vote), Verdict::Ignore);
    let next = chain.vote_at("charlie", 2, 0, 0, None);
    assert_eq!(
        verdict(&mut d, next),
        Verdict::Accept,
        "kept for the next height"
    );
}

/// A certificate the core refuses (a skip certificate for the round this node is already in)
/// must not swallow its votes: they were marked as seen, so the same votes arriving on their
/// own were dropped as repeats and the core never counted them. Found by the Byzantine
/// simulation (seed 102462): the validators stayed in one round for good.
#[test]
fn votes_in_a_refused_certificate_still_count() {
    let chain = Chain::local();
    let proposer = chain.proposer(1, 0);
    let others: Vec<&str> = NAMES.into_iter().filter(|n| *n != proposer).collect();
    let (me, peers) = (others[0], &others[1..]);
    let mut d = chain.driver(me, &MemoryDb::new());
    let _ = d.start(chain.now()).unwrap();
    let propose_timeout = TimerKey::Consensus(malachitebft_core_types::Timeout::new(
        Round::new(0),
        TimeoutKind::Propose,
    ));
    let out = d.on_timer(chain.now(), propose_timeout).unwrap();
    assert_eq!(votes_of(&out, me), vec![(0, 0, None)]);
    let signature = |name: &str| match chain.vote(name, 0, 0, None) {
        ConsensusMessage::Vote(v) => (0u8, None, dev_account(name), v.signature),
        _ => unreachable!(),
    };
    // A skip certificate for round 0, which this node is in: the core refuses it.
    let skip = ConsensusMessage::RoundCertificate(codec::WireRoundCertificate {
        height: 1,
        round: 0,
        kind: 0,
        signatures: peers.iter().map(|p| signature(p)).collect(),
    });
    let mut sent = d.on_message(chain.now(), skip).unwrap();
    for peer in peers {
        sent.extend(
            d.on_message(chain.now(), chain.vote(peer, 0, 0, None))
                .unwrap(),
        );
    }
    assert!(
        votes_of(&sent, me).contains(&(1, 0, None)),
        "three nil prevotes of four: a nil precommit, got {:?}",
        votes_of(&sent, me)
    );
}

/// A finalized block with a genuine certificate but an altered body (the header, and so the
/// certificate, still match) is the peer's lie, not a divergence of our state: it is refused
/// like a bad certificate, and the genuine block from another peer imports.
#[test]
fn a_synced_block_with_an_altered_body_is_refused_not_fatal() {
    let chain = Chain::dev();
    let (block, certificate) = block_one_finalized_by_alice(&chain);
    let mut follower = follower(&chain);
    let mut tampered = block.clone();
    tampered.extrinsics.push(removal_by_alice(&chain));
    let refused = follower
        .on_synced_block(chain.now(), tampered, certificate.clone())
        .expect("a peer's tampered block must not stop the node");
    assert!(
        matches!(refused, Err(SyncRejected::BadBody { number: 1, .. })),
        "{refused:?}"
    );
    assert_eq!(follower.height(), 1);
    let out = follower
        .on_synced_block(chain.now(), block, certificate)
        .unwrap()
        .unwrap();
    assert_eq!(finalized(&out), vec![1]);
}

/// Block 1 of the dev chain as alice alone finalizes it, with its commit certificate.
fn block_one_finalized_by_alice(chain: &Chain) -> (Block, codec::WireCertificate) {
    let mut alice = chain.driver("alice", &MemoryDb::new());
    let _ = alice.start(chain.now()).unwrap();
    let g = &chain.genesis;
    let built = build_block(&g.state, &g.header, chain.now(), &g.hash(), [], 10).unwrap();
    let _ = alice
        .on_block_built(chain.now(), 1, 0, built.block, built.executed)
        .unwrap();
    let block = alice.store().block(1).unwrap().unwrap();
    let certificate = alice.store().certificate(1).unwrap().unwrap();
    (block, certificate)
}

/// A started follower (bob's key, not voting) on a fresh store of `chain`.
fn follower(chain: &Chain) -> ConsensusDriver<MemoryDb> {
    let store = ChainStore::open(MemoryDb::new(), &chain.genesis).unwrap();
    let signer = SigningProvider::new(chain.genesis.hash(), dev_key("bob"));
    let mut follower = ConsensusDriver::new(store, signer, DriverConfig::default(), false);
    let _ = follower.start(chain.now()).unwrap();
    follower
}

/// A signed transaction of alice's (any will do where only the bytes matter).
fn removal_by_alice(chain: &Chain) -> drchain_runtime::UncheckedExtrinsic {
    let call = drchain_runtime::RuntimeCall::Failover(
        drchain_runtime::pallet_failover::Call::RemoveService {
            name: drchain_support::ServiceName::new("db").unwrap(),
        },
    );
    drchain_runtime::UncheckedExtrinsic::sign(&dev_key("alice"), &chain.genesis.hash(), 0, call)
}

/// A crashed proposer costs a round. Once 2/3+ precommits of the round are nil no value can
/// be decided in it, so the validator goes on to the next round's proposer at once rather
/// than waiting out the precommit timeout; a quorum with a value precommit still waits.
#[test]
fn a_round_with_nil_precommits_from_two_thirds_moves_on_at_once() {
    let chain = Chain::local();
    let dead = chain.proposer(1, 0);
    let others: Vec<&str> = NAMES.into_iter().filter(|n| *n != dead).collect();
    let (me, peers) = (others[0], &others[1..]);
    let propose_timeout = TimerKey::Consensus(malachitebft_core_types::Timeout::new(
        Round::new(0),
        TimeoutKind::Propose,
    ));
    let nil_round = |precommits: &[(&str, Option<H256>)]| {
        let mut d = chain.driver(me, &MemoryDb::new());
        let _ = d.start(chain.now()).unwrap();
        let out = d.on_timer(chain.now(), propose_timeout).unwrap();
        assert_eq!(votes_of(&out, me), vec![(0, 0, None)]);
        for peer in peers {
            let out = d
                .on_message(chain.now(), chain.vote(peer, 0, 0, None))
                .unwrap();
            if !votes_of(&out, me).is_empty() {
                assert_eq!(votes_of(&out, me), vec![(1, 0, None)]);
            }
        }
        for (peer, value) in precommits {
            let _ = d
                .on_message(chain.now(), chain.vote(peer, 1, 0, *value))
                .unwrap();
        }
        d.round()
    };
    // Ours and two peers' nil precommits: round 1 without the precommit timer.
    assert_eq!(nil_round(&[(peers[0], None), (peers[1], None)]), Some(1));
    // A quorum that holds a value precommit: the timeout still decides.
    assert_eq!(
        nil_round(&[(peers[0], None), (dead, Some(H256([7; 32])))]),
        Some(0)
    );
}
