//! Effect handling for the Malachite core: everything the driver owns except the core's
//! state, so `process!` can borrow the state while effects borrow this. Each effect is
//! answered synchronously; outputs for the host collect in `outputs`, WAL records in
//! `wal_buffer` (written by the driver before the outputs leave).

use std::collections::BTreeMap;

use drchain_support::{AccountId, Overlay, H256};
use malachitebft_core_consensus::{Effect, Resumable};
use malachitebft_core_types::{self as mc, CommitCertificate, SigningProviderExt, TimeoutKind};

use super::height::HeightState;
use super::{DriverConfig, Output, TimerKey};
use crate::codec::{self, ConsensusMessage};
use crate::context::{Ctx, SigningProvider, ValidatorSet};
use crate::store::kv::KeyValueDb;
use crate::store::ChainStore;

/// Effect handling: everything but the core's own state, so effects can borrow it mutably
/// while `process!` borrows the state.
pub(super) struct Host<D> {
    pub(super) ctx: Ctx,
    pub(super) signer: SigningProvider,
    pub(super) store: ChainStore<D>,
    pub(super) config: DriverConfig,
    pub(super) height: u64,
    pub(super) vset: ValidatorSet,
    pub(super) durations: BTreeMap<u8, u64>,
    pub(super) recovering: bool,
    pub(super) outputs: Vec<Output>,
    pub(super) decided: Option<CommitCertificate<Ctx>>,
    /// What this height has seen and done; replaced at the next height.
    pub(super) current: HeightState,
}

pub(super) fn kind_code(kind: TimeoutKind) -> u8 {
    match kind {
        TimeoutKind::Propose => 0,
        TimeoutKind::Prevote => 1,
        TimeoutKind::Precommit => 2,
        TimeoutKind::Rebroadcast => 3,
    }
}

impl<D: KeyValueDb> Host<D> {
    pub(super) fn reset_durations(&mut self) {
        let t = self.config.timeouts;
        self.durations = BTreeMap::from([
            (0, t.propose_ms),
            (1, t.prevote_ms),
            (2, t.precommit_ms),
            (3, t.rebroadcast_ms),
        ]);
    }

    pub(super) fn duration(&self, kind: TimeoutKind) -> u64 {
        self.durations.get(&kind_code(kind)).copied().unwrap_or(0)
    }

    pub(super) fn bump(&mut self, kind: TimeoutKind) {
        if kind != TimeoutKind::Rebroadcast {
            let delta = self.config.timeouts.delta_ms;
            if let Some(d) = self.durations.get_mut(&kind_code(kind)) {
                *d = d.saturating_add(delta);
            }
        }
    }

    pub(super) fn validator_set(&self, height: u64) -> Option<ValidatorSet> {
        let head = self.store.head().number;
        if height <= head || height > head + 2 {
            return None;
        }
        let state = self.store.state();
        let state = Overlay::new(&state);
        let accounts = pallet_membership::validators_at(&state, height);
        let skipped = pallet_membership::skipped_proposers(&state, height);
        let set = ValidatorSet::new(accounts).skipping(skipped);
        (!set.is_empty()).then_some(set)
    }

    fn verify(
        &mut self,
        msg: &mc::SignedMessage<Ctx, malachitebft_core_consensus::ConsensusMsg<Ctx>>,
        key: &AccountId,
    ) -> bool {
        use malachitebft_core_consensus::ConsensusMsg;
        let bytes = match &msg.message {
            ConsensusMsg::Vote(v) => v.sign_bytes(self.ctx.genesis()),
            ConsensusMsg::Proposal(p) => p.sign_bytes(self.ctx.genesis()),
        };
        self.check_signature(key, &bytes, &msg.signature)
    }

    /// Verifies a signature, remembering successes for the height: every message is checked
    /// once on arrival and once more by the core, and Ed25519 verification dominates the
    /// cost of consensus.
    pub(super) fn check_signature(
        &mut self,
        key: &AccountId,
        bytes: &[u8],
        signature: &drchain_support::Signature,
    ) -> bool {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&key.0);
        hasher.update(&signature.0);
        hasher.update(bytes);
        let id = H256(*hasher.finalize().as_bytes());
        if self.current.verified.contains(&id) {
            return true;
        }
        let valid = key.verify(bytes, signature);
        if valid {
            self.current.verified.insert(id);
        }
        valid
    }

    pub(super) fn handle(
        &mut self,
        effect: Effect<Ctx>,
    ) -> Result<malachitebft_core_consensus::Resume<Ctx>, String> {
        use malachitebft_core_consensus::{LivenessMsg, SignedConsensusMsg};
        Ok(match effect {
            Effect::ResetTimeouts(r) => {
                self.reset_durations();
                r.resume_with(())
            }
            Effect::CancelAllTimeouts(r) => {
                self.outputs.push(Output::CancelAllTimers);
                r.resume_with(())
            }
            Effect::CancelTimeout(t, r) => {
                self.outputs
                    .push(Output::CancelTimer(TimerKey::Consensus(t)));
                r.resume_with(())
            }
            Effect::ScheduleTimeout(t, r) => {
                self.outputs.push(Output::ScheduleTimer {
                    key: TimerKey::Consensus(t),
                    after_ms: self.duration(t.kind),
                });
                r.resume_with(())
            }
            Effect::GetValidatorSet(h, r) => r.resume_with(self.validator_set(h.0)),
            Effect::StartRound(h, round, proposer, role, r) => {
                tracing::debug!(height = h.0, %round, %proposer, ?role, "round started");
                r.resume_with(())
            }
            Effect::PublishConsensusMsg(msg, r) => {
                let wire = match msg {
                    SignedConsensusMsg::Vote(v) => ConsensusMessage::Vote(codec::vote_to_wire(&v)),
                    SignedConsensusMsg::Proposal(p) => {
                        ConsensusMessage::Proposal(codec::proposal_to_wire(&p))
                    }
                };
                self.outputs.push(Output::Broadcast(wire));
                r.resume_with(())
            }
            Effect::PublishLivenessMsg(msg, r) => {
                let wire = match msg {
                    LivenessMsg::Vote(v) => ConsensusMessage::Vote(codec::vote_to_wire(&v)),
                    LivenessMsg::PolkaCertificate(c) => {
                        ConsensusMessage::PolkaCertificate(codec::polka_to_wire(&c))
                    }
                    LivenessMsg::SkipRoundCertificate(c) => {
                        ConsensusMessage::RoundCertificate(codec::round_certificate_to_wire(&c))
                    }
                };
                self.outputs.push(Output::Broadcast(wire));
                r.resume_with(())
            }
            Effect::RepublishVote(v, r) => {
                self.outputs.push(Output::Broadcast(ConsensusMessage::Vote(
                    codec::vote_to_wire(&v),
                )));
                r.resume_with(())
            }
            Effect::RepublishRoundCertificate(c, r) => {
                self.outputs
                    .push(Output::Broadcast(ConsensusMessage::RoundCertificate(
                        codec::round_certificate_to_wire(&c),
                    )));
                r.resume_with(())
            }
            Effect::GetValue(h, round, _, r) => {
                if h.0 == self.height {
                    self.current.build_request = round.as_u32();
                }
                r.resume_with(())
            }
            Effect::RestreamProposal(.., r) => r.resume_with(()),
            Effect::SyncValue(_, r) => r.resume_with(()),
            Effect::Decide(certificate, _, r) => {
                self.decided = Some(certificate);
                r.resume_with(())
            }
            Effect::SignVote(vote, r) => {
                let slot = (
                    crate::context::vote_type_code(vote.vote_type),
                    vote.round.as_i64(),
                );
                let value = crate::context::nil_or_value(&vote.value);
                match self.current.sign_guard.get(&slot) {
                    Some(signed) if *signed != value => {
                        return Err(format!(
                            "refusing to sign a second, different vote at height {} {slot:?}",
                            self.height
                        ))
                    }
                    _ => {
                        self.current.sign_guard.insert(slot, value);
                    }
                }
                r.resume_with(mc::SigningProvider::sign_vote(&self.signer, vote))
            }
            Effect::SignProposal(p, r) => {
                r.resume_with(mc::SigningProvider::sign_proposal(&self.signer, p))
            }
            Effect::VerifySignature(msg, key, r) => r.resume_with(self.verify(&msg, &key)),
            Effect::VerifyCommitCertificate(c, vs, t, r) => {
                r.resume_with(self.signer.verify_commit_certificate(&self.ctx, &c, &vs, t))
            }
            Effect::VerifyPolkaCertificate(c, vs, t, r) => {
                r.resume_with(self.signer.verify_polka_certificate(&self.ctx, &c, &vs, t))
            }
            Effect::VerifyRoundCertificate(c, vs, t, r) => {
                r.resume_with(self.signer.verify_round_certificate(&self.ctx, &c, &vs, t))
            }
            Effect::WalAppend(entry, r) => {
                if !self.recovering {
                    if let Some(record) = codec::wal_record(&entry) {
                        self.current.wal_buffer.push(record);
                    }
                }
                r.resume_with(())
            }
            Effect::ExtendVote(.., r) => r.resume_with(None),
            Effect::VerifyVoteExtension(.., r) => r.resume_with(Ok(())),
        })
    }
}
