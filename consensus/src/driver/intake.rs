//! What the driver does with a message from a peer before the core sees it: height and
//! round bounds, signature and proposer checks, one vote per slot, certificate filtering,
//! and validation of proposed blocks by executing them.

use std::collections::BTreeSet;

use drchain_runtime::{check_body, check_proposal_time, execute_block};
use drchain_support::{Signature, H256};
use malachitebft_core_consensus::{Input, ProposedValue};
use malachitebft_core_types::{
    self as mc, Round, RoundCertificateType, SignedProposal, SignedVote, ThresholdParams, Validity,
};
use parity_scale_codec::Encode as _;

use super::future::{Buffered, FutureLimits, FutureSlot};
use super::{vote_slot, ConsensusDriver, DriverError, Output, Phase, Verdict};
use crate::codec::{self, ConsensusMessage, WalRecord};
use crate::context::{nil_or_value, vote_type_code, BlockValue, Ctx, Height, ValidatorSet};
use crate::store::kv::KeyValueDb;

/// What a message for a later height is worth keeping as.
enum FutureCheck {
    Valid(FutureSlot),
    /// Fine, but not kept (a certificate).
    NotKept,
    /// Not signed by a validator of its height, or malformed.
    Invalid,
}

/// Which kind of certificate, in [`CertificateKey`].
const CERT_POLKA: u8 = 0;
const CERT_SKIP_ROUND: u8 = 1;
const CERT_PRECOMMIT_ROUND: u8 = 2;

/// A certificate's identity within a height: (kind, round, value for a polka).
pub(super) type CertificateKey = (u8, i64, Option<H256>);

/// The voting power a certificate must carry.
#[derive(Clone, Copy)]
enum Threshold {
    /// 2/3+ (polka, precommit round certificate).
    Quorum,
    /// 1/3+ (skip round certificate).
    Honest,
}

impl<D: KeyValueDb> ConsensusDriver<D> {
    /// A consensus message from gossip: [`Self::on_message`], with the verdict the gossip
    /// layer needs (read off what the driver counted while handling it: every refusal is
    /// counted where it is decided).
    pub fn on_gossip(
        &mut self,
        now_ms: u64,
        message: ConsensusMessage,
    ) -> Result<(Verdict, Vec<Output>), DriverError> {
        let stale = message.height() < self.host.height;
        let before = self.stats;
        let outputs = self.on_message(now_ms, message)?;
        let after = self.stats;
        let verdict = if after.invalid_messages > before.invalid_messages {
            Verdict::Reject
        } else if stale
            || after.duplicates > before.duplicates
            || after.future_dropped > before.future_dropped
            || after.invalid_proposals > before.invalid_proposals
            || after.polka_contradictions > before.polka_contradictions
        {
            Verdict::Ignore
        } else {
            Verdict::Accept
        };
        Ok((verdict, outputs))
    }

    pub(super) fn message(&mut self, message: ConsensusMessage) -> Result<(), DriverError> {
        let height = message.height();
        let current = self.host.height;
        if height < current {
            return Ok(());
        }
        if height > current {
            self.buffer_future(height, message);
            self.maybe_request_sync();
            return Ok(());
        }
        if self.phase == Phase::Idle {
            self.start_height()?;
        }
        match message {
            ConsensusMessage::Vote(v) => {
                let Ok(vote) = codec::vote_from_wire(v) else {
                    self.stats.invalid_messages += 1;
                    return Ok(());
                };
                self.vote(vote)
            }
            ConsensusMessage::Proposal(p) => {
                let Ok(proposal) = codec::proposal_from_wire(p) else {
                    self.stats.invalid_messages += 1;
                    return Ok(());
                };
                self.proposal(proposal)
            }
            ConsensusMessage::PolkaCertificate(c) => self.polka_certificate(c),
            ConsensusMessage::RoundCertificate(c) => self.round_certificate(c),
        }
    }

    /// Whether a certificate's signature may reach the core: it verifies, its signer is a
    /// validator, and it is not a second signature of a vote accepted before (that would put
    /// the same vote twice into a commit certificate and fail it). A signed vote for another
    /// value than the one seen first is kept: it is the equivocator's, the core counts only
    /// the first, and the certificate needs it to reach its quorum.
    ///
    /// A signature accepted for a slot not seen before is also pushed to `fresh` as a vote:
    /// the slot is now marked as seen, so the same vote arriving on its own will be dropped,
    /// and the core must get it even if it refuses the certificate (see `feed_fresh`).
    fn accept_signature(
        &mut self,
        vote: &crate::context::Vote,
        signature: &Signature,
        fresh: &mut Vec<SignedVote<Ctx>>,
    ) -> bool {
        let slot = (
            vote_type_code(vote.vote_type),
            vote.round.as_i64(),
            vote.validator.0,
        );
        let value = nil_or_value(&vote.value);
        if let Some((seen_value, seen_signature)) = self.host.current.seen_votes.get(&slot) {
            if *seen_value == value {
                return seen_signature == signature;
            }
        }
        let bytes = vote.sign_bytes(self.host.ctx.genesis());
        if !self.host.vset.contains(&vote.validator.0)
            || !self
                .host
                .check_signature(&vote.validator.0, &bytes, signature)
        {
            return false;
        }
        if let std::collections::btree_map::Entry::Vacant(e) =
            self.host.current.seen_votes.entry(slot)
        {
            e.insert((value, *signature));
            fresh.push(SignedVote::new(vote.clone(), *signature));
        }
        true
    }

    /// Feeds the votes first seen in a certificate to the core one by one, after the
    /// certificate itself: the core ignores those it already counted, and counts those of a
    /// certificate it refused (one for a round it has reached, say), which would otherwise be
    /// lost for good.
    fn feed_fresh(&mut self, fresh: Vec<SignedVote<Ctx>>) -> Result<(), DriverError> {
        for vote in fresh {
            self.feed(Input::Vote(vote))?;
        }
        Ok(())
    }

    fn polka_certificate(&mut self, wire: codec::WirePolkaCertificate) -> Result<(), DriverError> {
        let Ok(mut c) = codec::polka_from_wire(wire) else {
            self.stats.invalid_messages += 1;
            return Ok(());
        };
        if self.round_too_far(c.round) {
            self.stats.invalid_messages += 1;
            return Ok(());
        }
        let (height, round, value) = (c.height, c.round, c.value_id);
        let mut signers = BTreeSet::new();
        c.polka_signatures.retain(|s| signers.insert(s.address));
        let mut fresh = vec![];
        c.polka_signatures.retain(|s| {
            let vote = mc::Context::new_prevote(
                &self.host.ctx,
                height,
                round,
                mc::NilOrVal::Val(value),
                s.address,
            );
            self.accept_signature(&vote, &s.signature, &mut fresh)
        });
        let key = (CERT_POLKA, round.as_i64(), Some(value));
        if self.new_with_quorum(key, c.polka_signatures.len(), Threshold::Quorum) {
            self.log_certificate(ConsensusMessage::PolkaCertificate(codec::polka_to_wire(&c)));
            self.feed(Input::PolkaCertificate(c))?;
        }
        self.feed_fresh(fresh)
    }

    /// Whether a certificate, its bad and repeated signatures already removed, still reaches
    /// its threshold (validators weigh one each) and was not applied before. Only such a
    /// certificate may reach the core and the WAL: anything else would let a member grow the
    /// WAL with copies the core refuses or ignores.
    fn new_with_quorum(
        &mut self,
        key: CertificateKey,
        signers: usize,
        threshold: Threshold,
    ) -> bool {
        let total = self.host.vset.len() as u64;
        let thresholds = ThresholdParams::default();
        let met = match threshold {
            Threshold::Quorum => thresholds.quorum.is_met(signers as u64, total),
            Threshold::Honest => thresholds.honest.is_met(signers as u64, total),
        };
        if !met {
            self.stats.invalid_messages += 1;
            return false;
        }
        if !self.host.current.applied_certificates.insert(key) {
            self.stats.duplicates += 1;
            return false;
        }
        true
    }

    fn round_certificate(&mut self, wire: codec::WireRoundCertificate) -> Result<(), DriverError> {
        let Ok(mut c) = codec::round_certificate_from_wire(wire) else {
            self.stats.invalid_messages += 1;
            return Ok(());
        };
        if self.round_too_far(c.round) {
            self.stats.invalid_messages += 1;
            return Ok(());
        }
        let (height, round) = (c.height, c.round);
        let precommits_only = c.cert_type == RoundCertificateType::Precommit;
        let mut fresh = vec![];
        let mut slots = BTreeSet::new();
        c.round_signatures.retain(|s| {
            !(precommits_only && s.vote_type == mc::VoteType::Prevote)
                && slots.insert((vote_type_code(s.vote_type), s.address))
        });
        c.round_signatures.retain(|s| {
            let vote = crate::context::Vote {
                vote_type: s.vote_type,
                height,
                round,
                value: s.value_id,
                validator: s.address,
            };
            self.accept_signature(&vote, &s.signature, &mut fresh)
        });
        // A validator may sign both vote types of a round: power counts each validator once.
        let signers: BTreeSet<_> = c.round_signatures.iter().map(|s| s.address).collect();
        let (kind, threshold) = if precommits_only {
            (CERT_PRECOMMIT_ROUND, Threshold::Quorum)
        } else {
            (CERT_SKIP_ROUND, Threshold::Honest)
        };
        if self.new_with_quorum((kind, round.as_i64(), None), signers.len(), threshold) {
            self.log_certificate(ConsensusMessage::RoundCertificate(
                codec::round_certificate_to_wire(&c),
            ));
            self.feed(Input::RoundCertificate(c))?;
        }
        self.feed_fresh(fresh)
    }

    /// The core does not log certificates, but applying one changes what it will sign: log it
    /// so a replay after a crash reaches the same state.
    fn log_certificate(&mut self, message: ConsensusMessage) {
        if !self.host.recovering {
            self.host
                .current
                .wal_buffer
                .push(WalRecord::Message(message));
        }
    }

    fn round_too_far(&self, round: Round) -> bool {
        let current = self.state.round().as_u32().unwrap_or(0);
        round.as_u32().unwrap_or(0) > current.saturating_add(self.host.config.max_round_ahead)
    }

    fn vote(&mut self, vote: SignedVote<Ctx>) -> Result<(), DriverError> {
        // One vote per (type, round, validator): a second signature (even for the same vote)
        // would put a duplicate into the commit certificate. Checked first: rebroadcast
        // copies are the common case and need no signature check.
        let slot = vote_slot(&vote);
        if self.host.current.seen_votes.contains_key(&slot) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        let v = &vote.message;
        let bytes = v.sign_bytes(self.host.ctx.genesis());
        if !self.host.vset.contains(&v.validator.0)
            || self.round_too_far(v.round)
            || !self
                .host
                .check_signature(&v.validator.0, &bytes, &vote.signature)
        {
            self.stats.invalid_messages += 1;
            return Ok(());
        }
        self.host
            .current
            .seen_votes
            .insert(slot, (nil_or_value(&vote.message.value), vote.signature));
        self.feed(Input::Vote(vote))
    }

    fn proposal(&mut self, signed: SignedProposal<Ctx>) -> Result<(), DriverError> {
        let p = &signed.message;
        if self.host.current.seen_proposals.contains(&p.round.as_i64()) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        let expected = self.host.vset.proposer(p.height, p.round).map(|v| {
            use malachitebft_core_types::Validator as _;
            *v.address()
        });
        let bytes = p.sign_bytes(self.host.ctx.genesis());
        // The signature covers the header only, so a relay can swap the body: such a copy is
        // the relay's, not the proposer's, and must not take the round's place (the genuine
        // copy may still come).
        if expected != Some(p.proposer)
            || self.round_too_far(p.round)
            || !self
                .host
                .check_signature(&p.proposer.0, &bytes, &signed.signature)
            || check_body(p.value.block()).is_err()
        {
            self.stats.invalid_messages += 1;
            return Ok(());
        }
        self.host.current.seen_proposals.insert(p.round.as_i64());
        let validity = match check_round(p)
            .and_then(|()| self.validate(&p.value, p.pol_round.is_nil()))
        {
            Ok(()) => Validity::Valid,
            Err(reason) => {
                self.stats.invalid_proposals += 1;
                tracing::warn!(height = p.height.0, round = %p.round, %reason, "invalid proposal");
                Validity::Invalid
            }
        };
        let value = ProposedValue {
            height: p.height,
            round: p.round,
            valid_round: p.pol_round,
            proposer: p.proposer,
            value: p.value.clone(),
            validity,
        };
        self.offer_proposal(value, signed)
    }

    /// Executes a proposed block on the finalized state; a new value's timestamp must also be
    /// within the chain's drift of our clock.
    fn validate(&mut self, value: &BlockValue, new_value: bool) -> Result<(), String> {
        let state = self.host.store.state();
        let head = self.host.store.head();
        if new_value {
            check_proposal_time(&state, &value.block().header, self.now_ms)
                .map_err(|e| e.to_string())?;
        }
        if self.host.current.executed.contains_key(&value.hash()) {
            return Ok(());
        }
        let executed = execute_block(&state, head, value.block(), self.host.ctx.genesis())
            .map_err(|e| e.to_string())?;
        self.host.current.executed.insert(value.hash(), executed);
        Ok(())
    }

    /// Keeps a message for a later height if a validator of that height signed it and there
    /// is room (see [`FutureBuffer`]). Beyond the heights whose validator set is known, or
    /// for certificates (peers send them again when they matter), it is dropped: sync will
    /// bring this node there.
    fn buffer_future(&mut self, height: u64, message: ConsensusMessage) {
        let vset = (height <= self.host.height + self.host.config.future_heights)
            .then(|| self.host.validator_set(height))
            .flatten();
        let Some(vset) = vset else {
            self.stats.future_dropped += 1;
            return;
        };
        let slot = match self.verify_future(&vset, height, &message) {
            FutureCheck::Valid(slot) => slot,
            FutureCheck::NotKept => {
                self.stats.future_dropped += 1;
                return;
            }
            FutureCheck::Invalid => {
                self.stats.invalid_messages += 1;
                return;
            }
        };
        let limits = FutureLimits {
            total_bytes: self.host.config.max_future_bytes,
            per_validator_bytes: self.host.config.max_future_bytes_per_validator,
        };
        match self
            .future
            .insert(slot, message.encoded_size(), message, limits)
        {
            Buffered::Added => {}
            Buffered::Duplicate => self.stats.duplicates += 1,
            Buffered::Full => self.stats.future_dropped += 1,
        }
    }

    /// Checks a message for a later `height` against that height's validators: the cheap
    /// checks (signer in the set, its proposer turn, round bound, body against header) before
    /// the signature.
    fn verify_future(
        &mut self,
        vset: &ValidatorSet,
        height: u64,
        message: &ConsensusMessage,
    ) -> FutureCheck {
        let max_round = i64::from(self.host.config.max_round_ahead);
        match message {
            ConsensusMessage::Vote(v) => {
                if !vset.contains(&v.validator) || !(0..=max_round).contains(&v.round) {
                    return FutureCheck::Invalid;
                }
                let Ok(vote) = codec::vote_from_wire(v.clone()) else {
                    return FutureCheck::Invalid;
                };
                let bytes = vote.message.sign_bytes(self.host.ctx.genesis());
                if !self
                    .host
                    .check_signature(&v.validator, &bytes, &vote.signature)
                {
                    return FutureCheck::Invalid;
                }
                let kind = 1 + vote_type_code(vote.message.vote_type);
                FutureCheck::Valid((height, kind, v.round, v.validator))
            }
            ConsensusMessage::Proposal(p) => {
                let expected = u32::try_from(p.round)
                    .ok()
                    .and_then(|r| vset.proposer(Height(height), Round::new(r)))
                    .map(|v| {
                        use malachitebft_core_types::Validator as _;
                        v.address().0
                    });
                if expected != Some(p.proposer)
                    || p.round > max_round
                    || check_body(&p.block).is_err()
                {
                    return FutureCheck::Invalid;
                }
                let Ok(proposal) = codec::proposal_from_wire(p.clone()) else {
                    return FutureCheck::Invalid;
                };
                let bytes = proposal.message.sign_bytes(self.host.ctx.genesis());
                if !self
                    .host
                    .check_signature(&p.proposer, &bytes, &proposal.signature)
                {
                    return FutureCheck::Invalid;
                }
                FutureCheck::Valid((height, 0, p.round, p.proposer))
            }
            ConsensusMessage::PolkaCertificate(_) | ConsensusMessage::RoundCertificate(_) => {
                FutureCheck::NotKept
            }
        }
    }

    fn maybe_request_sync(&mut self) {
        let height = self.host.height;
        let due = match self.last_sync_request {
            Some((h, at)) => h != height || self.now_ms >= at + self.host.config.sync_retry_ms,
            None => true,
        };
        if due {
            self.last_sync_request = Some((height, self.now_ms));
            self.host.outputs.push(Output::RequestSync { from: height });
        }
    }
}

/// The round a proposed block names must be the one it was built for: a new value's is the
/// proposal's round, a re-proposed value's at most its proof-of-lock round. Block execution
/// records the proposers of the rounds before it as having missed their turn.
fn check_round(p: &crate::context::Proposal) -> Result<(), String> {
    let named = i64::from(p.value.block().header.round);
    let fits = if p.pol_round.is_nil() {
        named == p.round.as_i64()
    } else {
        named <= p.pol_round.as_i64()
    };
    if fits {
        Ok(())
    } else {
        Err(format!(
            "the block names round {named}, proposed in round {} (proof-of-lock round {})",
            p.round, p.pol_round
        ))
    }
}
