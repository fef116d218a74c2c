//! The simulation's Byzantine actors, besides the equivocating validator:
//!
//! - **eve**, an admitted member that is not a validator, sits in every node's mesh and sees
//!   every broadcast. She relays each proposal to the honest validators with a body the
//!   header does not cover (ahead of the genuine copy when her link is faster), answers sync
//!   requests (she is a peer honest nodes may ask) with tampered bodies under genuine
//!   certificates, and every tick floods each validator with forged messages for the next
//!   height, oversized and badly signed transactions, and replays of old messages.
//! - the **Byzantine validator** (the equivocator) also floods the next height with votes it
//!   really signed, for every round, to spend other validators' buffers.
//!
//! What they must not achieve is what the simulation checks for every run: no fork, no node
//! failing, and finalization going on once the network heals.

use drchain_consensus::codec::{self, ConsensusMessage, WireCertificate, WireVote};
use drchain_runtime::support::{Signature, H256};
use drchain_runtime::{pallet_network_config, Block, RuntimeCall, UncheckedExtrinsic};
use ed25519_dalek::Signer as _;
use rand::Rng;

use super::{Event, Simulation};

/// How often the attackers flood, ms.
pub(super) const TICK_MS: u64 = 50;
/// Old messages eve keeps to replay.
const REPLAY_BACKLOG: usize = 512;
/// How long a node keeps a peer that lied in a sync answer out (as a node does).
const PENALTY_MS: u64 = 60_000;

/// eve's state: what she saw, and which nodes caught her lying (until when).
#[derive(Debug, Default)]
pub(super) struct Eve {
    seen: Vec<ConsensusMessage>,
    penalized_until: Vec<u64>,
    /// Her garbage transactions, made once (signing 70 kB each tick would only slow runs).
    garbage: Vec<UncheckedExtrinsic>,
    /// Tampered sync answers the honest nodes refused.
    pub(super) refused_answers: u64,
}

impl Simulation {
    /// eve's id as a link end: after the validators, never in a partition.
    pub(super) fn eve_id(&self) -> usize {
        self.nodes.len()
    }

    /// eve sees a broadcast of `from`: she keeps it to replay, and relays a proposal with a
    /// swapped body to every other validator.
    pub(super) fn eve_sees(&mut self, from: usize, message: &ConsensusMessage) {
        let Some(eve) = self.eve.as_mut() else {
            return;
        };
        if eve.seen.len() >= REPLAY_BACKLOG {
            eve.seen.remove(0);
        }
        eve.seen.push(message.clone());
        if let ConsensusMessage::Proposal(p) = message {
            let mut altered = p.clone();
            altered.block = tampered(&p.block, self.rng.gen());
            let altered = ConsensusMessage::Proposal(altered);
            let eve_id = self.eve_id();
            for to in (0..self.nodes.len()).filter(|t| *t != from) {
                let message = Box::new(altered.clone());
                // Her copy races the genuine one: often it comes first.
                let at = self.now + self.rng.gen_range(0..=self.faults.delay_ms.0);
                if !self.cut(eve_id, to) {
                    self.schedule(at, Event::Deliver { to, message });
                }
            }
        }
    }

    /// Whether `node` may ask eve for blocks now (it has not caught her lying lately).
    pub(super) fn eve_askable(&self, node: usize) -> bool {
        self.eve.as_ref().is_some_and(|eve| {
            eve.penalized_until
                .get(node)
                .is_none_or(|until| *until <= self.now)
        })
    }

    /// eve answers `to`'s sync request from `height`: genuine certificates (she has the
    /// blocks, like any member) over bodies she altered.
    pub(super) fn eve_answers_sync(&mut self, to: usize, height: u64) {
        let Some(source) = (0..self.nodes.len())
            .filter(|n| self.nodes[*n].driver.is_some())
            .max_by_key(|n| self.nodes[*n].finalized.len())
        else {
            return;
        };
        let mut blocks: Vec<(Block, WireCertificate)> = vec![];
        if let Some(d) = self.nodes[source].driver.as_ref() {
            let store = d.store();
            for n in height..=store.head().number.min(height + 16) {
                if let (Ok(Some(b)), Ok(Some(c))) = (store.block(n), store.certificate(n)) {
                    blocks.push((b, c));
                }
            }
        }
        if blocks.is_empty() {
            return;
        }
        let blocks = blocks
            .into_iter()
            .map(|(b, c)| (tampered(&b, self.rng.gen()), c))
            .collect();
        let eve_id = self.eve_id();
        self.send(
            eve_id,
            to,
            Event::SyncResponse {
                to,
                blocks,
                byzantine: true,
            },
        );
    }

    /// `node` refused eve's answer: it keeps her out for a while, as a node does.
    pub(super) fn eve_caught(&mut self, node: usize) {
        let until = self.now + PENALTY_MS;
        if let Some(eve) = self.eve.as_mut() {
            eve.refused_answers += 1;
            if eve.penalized_until.len() <= node {
                eve.penalized_until.resize(node + 1, 0);
            }
            eve.penalized_until[node] = until;
        }
    }

    /// One round of flooding by eve and the Byzantine validator; schedules the next.
    pub(super) fn byzantine_tick(&mut self) {
        self.schedule(self.now + TICK_MS, Event::ByzantineTick);
        let next_height = (0..self.nodes.len())
            .map(|n| self.nodes[n].finalized.len() as u64)
            .max()
            .unwrap_or(0)
            + 2;
        let eve_id = self.eve_id();
        for to in 0..self.nodes.len() {
            if self.eve.is_some() {
                // A vote for the next height in a validator's name, forged.
                let validator = drchain_runtime::dev::dev_account(
                    super::VALIDATORS[self.rng.gen_range(0..super::VALIDATORS.len())],
                );
                let forged = ConsensusMessage::Vote(WireVote {
                    vote_type: self.rng.gen_range(0..2),
                    height: next_height,
                    round: self.rng.gen_range(0..64),
                    value: Some(H256(self.rng.gen())),
                    validator,
                    signature: Signature([self.rng.gen(); 64]),
                });
                let message = Box::new(forged);
                self.send(eve_id, to, Event::Deliver { to, message });
                // An old message again.
                let replay = self.eve.as_ref().and_then(|eve| {
                    (!eve.seen.is_empty())
                        .then(|| eve.seen[self.rng.gen_range(0..eve.seen.len())].clone())
                });
                if let Some(old) = replay {
                    let message = Box::new(old);
                    self.send(eve_id, to, Event::Deliver { to, message });
                }
                // Transactions no pool may take: oversized, and badly signed.
                for tx in self.garbage_transactions() {
                    let tx = Box::new(tx);
                    self.send(eve_id, to, Event::DeliverTx { to, tx });
                }
            }
            if let Some(byzantine) = self.faults.equivocator {
                if to != byzantine {
                    if let Some(vote) = self.signed_future_vote(byzantine, next_height - 1) {
                        let message = Box::new(vote);
                        self.send(byzantine, to, Event::Deliver { to, message });
                    }
                }
            }
        }
    }

    /// A vote the Byzantine validator really signs for `height` (usually the next one), at a
    /// random round and value.
    fn signed_future_vote(&mut self, node: usize, height: u64) -> Option<ConsensusMessage> {
        let key = self.nodes[node].key.clone();
        let mut vote = WireVote {
            vote_type: self.rng.gen_range(0..2),
            height,
            round: self.rng.gen_range(0..64),
            value: Some(H256(self.rng.gen())),
            validator: drchain_runtime::support::AccountId::from(&key),
            signature: Signature([0; 64]),
        };
        let core = codec::vote_from_wire(vote.clone()).ok()?;
        vote.signature = Signature(
            key.sign(&core.message.sign_bytes(&self.genesis.hash()))
                .to_bytes(),
        );
        Some(ConsensusMessage::Vote(vote))
    }

    /// eve's transactions: one larger than any extrinsic may be, one with a bad signature.
    fn garbage_transactions(&mut self) -> Vec<UncheckedExtrinsic> {
        if let Some(made) = self.eve.as_ref().filter(|e| !e.garbage.is_empty()) {
            return made.garbage.clone();
        }
        let eve = drchain_runtime::dev::dev_key("eve");
        let nonce = 0;
        let big = RuntimeCall::NetworkConfig(pallet_network_config::Call::SetBootnodes {
            bootnodes: vec!["x".repeat(70_000)],
        });
        let oversized = UncheckedExtrinsic::sign(&eve, &self.genesis.hash(), nonce, big);
        let small = RuntimeCall::NetworkConfig(pallet_network_config::Call::SetBootnodes {
            bootnodes: vec![],
        });
        let mut forged = UncheckedExtrinsic::sign(&eve, &self.genesis.hash(), nonce, small);
        forged.signature = Signature([self.rng.gen(); 64]);
        let garbage = vec![oversized, forged];
        if let Some(eve) = self.eve.as_mut() {
            eve.garbage = garbage.clone();
        }
        garbage
    }
}

/// `block` with one more extrinsic than its header commits to (`salt` varies it).
fn tampered(block: &Block, salt: u64) -> Block {
    let call = RuntimeCall::NetworkConfig(pallet_network_config::Call::SetBootnodes {
        bootnodes: vec![format!("/dns4/eve-{salt}/tcp/1")],
    });
    let mut altered = block.clone();
    altered.extrinsics.push(UncheckedExtrinsic::sign(
        &drchain_runtime::dev::dev_key("eve"),
        &H256::default(),
        0,
        call,
    ));
    altered
}
