//! Proposals reach the core only where they cannot break a lock. Core 0.5.0 pairs a polka
//! certificate it holds with a proposal by round alone, not by value (core-driver `mux.rs`,
//! `multiplex_proposal`; the certificates it holds include those it builds from votes):
//! holding a polka for block A in round `vr`, it takes a proposal of block B with
//! proof-of-lock round `vr` as justified and prevotes B though locked on A; holding a polka
//! for A in the current round, it precommits a late proposal of B. Two polkas for different
//! blocks in one round cannot both exist with at most f faulty validators, so such a proposal
//! is an equivocating proposer's: it is dropped here, and the round runs on its timeouts.
//!
//! The core also checks the proposals it holds for a round when it enters that round, against
//! the polkas known by then; so a proposal for a round the core has not reached is parked,
//! and offered when the core gets there.

use malachitebft_core_consensus::{Input, ProposedValue};
use malachitebft_core_types::{Round, SignedProposal, Value as _, ValueOrigin};

use super::{ConsensusDriver, DriverError};
use crate::context::{Ctx, Proposal};
use crate::store::kv::KeyValueDb;

impl<D: KeyValueDb> ConsensusDriver<D> {
    /// Feeds a proposal that passed intake (`value` carries its validity) to the core now,
    /// parks it for its round, or drops it if it contradicts a polka.
    pub(super) fn offer_proposal(
        &mut self,
        value: ProposedValue<Ctx>,
        signed: SignedProposal<Ctx>,
    ) -> Result<(), DriverError> {
        let round = signed.message.round;
        if round > self.state.round() {
            self.host
                .current
                .parked_proposals
                .insert(round.as_i64(), (value, signed));
            return Ok(());
        }
        if self.contradicts_a_polka(&signed.message) {
            self.stats.polka_contradictions += 1;
            tracing::warn!(
                height = signed.message.height.0,
                %round,
                pol_round = %signed.message.pol_round,
                proposer = %signed.message.proposer,
                "proposal dropped: a polka for another block exists in its round or its \
                 proof-of-lock round (its proposer equivocates)"
            );
            return Ok(());
        }
        self.feed(Input::ProposedValue(value, ValueOrigin::Consensus))?;
        self.feed(Input::Proposal(signed))
    }

    /// After an input: a proposal parked for the round the core is in now is offered;
    /// those of rounds it skipped are dropped.
    pub(super) fn unpark_proposals(&mut self) -> Result<(), DriverError> {
        let current = self.state.round();
        if current == Round::Nil {
            return Ok(());
        }
        let parked = &mut self.host.current.parked_proposals;
        let later = parked.split_off(&(current.as_i64() + 1));
        let due = std::mem::replace(parked, later).remove(&current.as_i64());
        match due {
            Some((value, signed)) => self.offer_proposal(value, signed),
            None => Ok(()),
        }
    }

    /// Whether the core holds a polka for another block than `proposal`'s in its
    /// proof-of-lock round or in its own round.
    fn contradicts_a_polka(&self, proposal: &Proposal) -> bool {
        let id = proposal.value.id();
        self.state.driver.polka_certificates().iter().any(|c| {
            (c.round == proposal.pol_round || c.round == proposal.round) && c.value_id != id
        })
    }
}
