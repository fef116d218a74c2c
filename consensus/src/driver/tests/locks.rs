//! Locks: a validator that precommitted a value in a round may later prevote another value
//! only on a polka (2/3+ prevotes) for that other value, in a round at or after its lock.
//! An equivocating proposer (f = 1 allows one) signs proposals for two values with the same
//! proof-of-lock round; only the one whose polka exists may win the prevotes of locked
//! validators, or two different blocks can be finalized at one height.

use drchain_runtime::dev::{dev_account, dev_key};
use drchain_support::{Signature, H256};
use ed25519_dalek::Signer as _;
use malachitebft_core_types::{Round, Timeout, TimeoutKind};

use super::{votes_of, Chain, NAMES};
use crate::codec::{self, ConsensusMessage};
use crate::driver::{ConsensusDriver, TimerKey};
use crate::store::kv::MemoryDb;

const PREVOTE: u8 = 0;
const PRECOMMIT: u8 = 1;

impl Chain {
    /// `proposal` with its proof-of-lock round set to `pol_round`, signed again by `name`.
    fn with_pol_round(
        &self,
        name: &str,
        proposal: ConsensusMessage,
        pol_round: i64,
    ) -> ConsensusMessage {
        let ConsensusMessage::Proposal(mut p) = proposal else {
            panic!("not a proposal");
        };
        p.pol_round = pol_round;
        let core = codec::proposal_from_wire(p.clone()).unwrap();
        let bytes = core.message.sign_bytes(&self.genesis.hash());
        p.signature = Signature(dev_key(name).sign(&bytes).to_bytes());
        ConsensusMessage::Proposal(p)
    }

    /// A polka certificate for `value` in `round` of height 1, signed by `signers`.
    fn polka(&self, round: i64, value: H256, signers: &[&str]) -> ConsensusMessage {
        let signatures = signers
            .iter()
            .map(|n| match self.vote(n, PREVOTE, round, Some(value)) {
                ConsensusMessage::Vote(v) => (dev_account(n), v.signature),
                _ => unreachable!(),
            })
            .collect();
        ConsensusMessage::PolkaCertificate(codec::WirePolkaCertificate {
            height: 1,
            round,
            block_hash: value,
            signatures,
        })
    }
}

/// A validator locked on block A in round 0 (it saw A's polka as a certificate and
/// precommitted A), now in round 1 at the propose step, and the names of round 1's proposer.
struct Locked {
    driver: ConsensusDriver<MemoryDb>,
    me: &'static str,
    proposer_1: &'static str,
    a: H256,
    /// Our votes since round 1 began.
    round_1_votes: Vec<(u8, i64, Option<H256>)>,
}

/// Round 1's proposal of B (another block than A) with proof-of-lock round `pol_round`.
fn proposal_of_b(chain: &Chain, proposer_1: &str, pol_round: i64) -> (ConsensusMessage, H256) {
    let b = chain.block(chain.now() + 1);
    let proposal = chain.proposal(proposer_1, 1, b.clone());
    (
        chain.with_pol_round(proposer_1, proposal, pol_round),
        b.hash(),
    )
}

/// With `early`, messages delivered while still in round 0, before A's polka.
fn locked_on_a(chain: &Chain, early: &[ConsensusMessage]) -> Locked {
    let proposer_0 = chain.proposer(1, 0);
    let proposer_1 = chain.proposer(1, 1);
    let me = NAMES
        .into_iter()
        .find(|n| *n != proposer_0 && *n != proposer_1)
        .unwrap();
    let others: Vec<&str> = NAMES.into_iter().filter(|n| *n != me).collect();
    let mut d = chain.driver(me, &MemoryDb::new());
    let _ = d.start(chain.now()).unwrap();
    let a = chain.block(chain.now());
    let out = d
        .on_message(chain.now(), chain.proposal(proposer_0, 0, a.clone()))
        .unwrap();
    assert_eq!(votes_of(&out, me), vec![(PREVOTE, 0, Some(a.hash()))]);
    for message in early {
        let out = d.on_message(chain.now(), message.clone()).unwrap();
        assert!(votes_of(&out, me).is_empty());
    }
    let out = d
        .on_message(chain.now(), chain.polka(0, a.hash(), &others))
        .unwrap();
    assert_eq!(
        votes_of(&out, me),
        vec![(PRECOMMIT, 0, Some(a.hash()))],
        "locked on A"
    );
    // Round 0 ends undecided: nil precommits of two others, then the precommit timeout.
    for peer in &others[..2] {
        let _ = d
            .on_message(chain.now(), chain.vote(peer, PRECOMMIT, 0, None))
            .unwrap();
    }
    let timeout = TimerKey::Consensus(Timeout::new(Round::new(0), TimeoutKind::Precommit));
    let out = d.on_timer(chain.now(), timeout).unwrap();
    assert_eq!(d.round(), Some(1));
    Locked {
        driver: d,
        me,
        proposer_1,
        a: a.hash(),
        round_1_votes: votes_of(&out, me),
    }
}

/// Round 1's proposer equivocates: it proposes block B with proof-of-lock round 0, where
/// the polka was for A. Without a polka for B the locked validator must not prevote B.
#[test]
fn a_validator_locked_on_a_does_not_prevote_b_on_a_polka_for_a() {
    let chain = Chain::local();
    let Locked {
        driver: mut d,
        me,
        proposer_1,
        a,
        ..
    } = locked_on_a(&chain, &[]);
    let (proposal, b) = proposal_of_b(&chain, proposer_1, 0);
    assert_ne!(b, a);
    let out = d.on_message(chain.now(), proposal).unwrap();
    assert!(
        !votes_of(&out, me).contains(&(PREVOTE, 1, Some(b))),
        "prevoted B on A's polka: {:?}",
        votes_of(&out, me)
    );
    assert_eq!(d.stats().polka_contradictions, 1);
    // Its propose timeout: nil, never B.
    let timeout = TimerKey::Consensus(Timeout::new(Round::new(1), TimeoutKind::Propose));
    let out = d.on_timer(chain.now(), timeout).unwrap();
    assert_eq!(votes_of(&out, me), vec![(PREVOTE, 1, None)]);
    // The genuine re-proposal of A with its proof of lock still gets a prevote.
    let mut d = locked_on_a(&chain, &[]).driver;
    let a_block = chain.block(chain.now());
    let proposal = chain.with_pol_round(proposer_1, chain.proposal(proposer_1, 1, a_block), 0);
    let out = d.on_message(chain.now(), proposal).unwrap();
    assert_eq!(votes_of(&out, me), vec![(PREVOTE, 1, Some(a))]);
}

/// The same when B's proposal arrives early, while the validator is still in round 0 and
/// has not seen A's polka: entering round 1 must not turn it into a prevote for B.
#[test]
fn an_early_proposal_of_b_is_not_prevoted_on_entering_its_round() {
    let chain = Chain::local();
    let (proposal, b) = proposal_of_b(&chain, chain.proposer(1, 1), 0);
    let locked = locked_on_a(&chain, &[proposal]);
    assert!(
        !locked.round_1_votes.contains(&(PREVOTE, 1, Some(b))),
        "prevoted B on entering round 1: {:?}",
        locked.round_1_votes
    );
    assert_eq!(locked.driver.stats().polka_contradictions, 1);
}

/// The same in the current round: with a polka certificate for A in round 1, round 1's
/// other proposal, B, arriving late must not get the validator's precommit.
#[test]
fn a_polka_for_a_does_not_make_a_validator_precommit_b() {
    let chain = Chain::local();
    let Locked {
        driver: mut d,
        me,
        proposer_1,
        a,
        ..
    } = locked_on_a(&chain, &[]);
    let others: Vec<&str> = NAMES.into_iter().filter(|n| *n != me).collect();
    let timeout = TimerKey::Consensus(Timeout::new(Round::new(1), TimeoutKind::Propose));
    let out = d.on_timer(chain.now(), timeout).unwrap();
    assert_eq!(votes_of(&out, me), vec![(PREVOTE, 1, None)]);
    let _ = d
        .on_message(chain.now(), chain.polka(1, a, &others))
        .unwrap();
    let (proposal, b) = proposal_of_b(&chain, proposer_1, -1);
    let out = d.on_message(chain.now(), proposal).unwrap();
    assert!(
        !votes_of(&out, me).contains(&(PRECOMMIT, 1, Some(b))),
        "precommitted B on A's polka: {:?}",
        votes_of(&out, me)
    );
    assert_eq!(d.stats().polka_contradictions, 1);
}
