//! The consensus driver: sans-I/O. The host feeds it inputs (a message arrived, a timer fired,
//! a block was built, a synced block arrived, transactions are pending) together with the
//! local time, and executes the [`Output`]s it returns, in order. The driver never touches the
//! network or a clock; the same code runs in a node (driven by the node loop, a tokio task)
//! and in the deterministic simulation (driven by a virtual clock).
//!
//! Storage is synchronous and injected ([`ChainStore`] over any [`KeyValueDb`]): before an
//! input's outputs are returned, the WAL records it produced are durably written, so nothing
//! that leaves the node (a vote, a proposal) can be forgotten by a crash.
//!
//! Proposals are validated here, before the core sees them (the core's ProposalOnly mode would
//! otherwise mark every proposal valid): signature, proposer, timestamp drift for a new value,
//! and full execution of the block on the finalized state, state root included.

use std::collections::BTreeMap;

use drchain_runtime::{Block, ExecutedBlock};
use drchain_support::{AccountId, Overlay};
use malachitebft_core_consensus::{
    process, Input, LocallyProposedValue, Params, State, ValuePayload,
};
use malachitebft_core_types::{
    self as mc, CommitCertificate, Round, SignedVote, ThresholdParams, ValueOrigin,
};

use crate::codec::{self, ConsensusMessage, Replayed, WalRecord, WireCertificate};
use crate::context::{
    vote_type_code, Address, BlockValue, Ctx, Height, SigningProvider, ValidatorSet,
};
use crate::store::kv::KeyValueDb;
use crate::store::ChainStore;
use effects::Host;
use future::FutureBuffer;
use height::HeightState;

mod effects;
mod future;
mod height;
mod intake;
mod lock_guard;
mod synced;
#[cfg(test)]
mod tests;
mod types;

pub use types::{
    DriverConfig, DriverError, DriverStats, Output, SyncRejected, Timeouts, TimerKey, Verdict,
};

/// Whether the driver is waiting to start the next height.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for transactions, a peer's message, or the idle timer.
    Idle,
    /// Running consensus for the height.
    Running,
}

/// The consensus driver of one node.
pub struct ConsensusDriver<D> {
    state: State<Ctx>,
    host: Host<D>,
    me: Address,
    phase: Phase,
    now_ms: u64,
    future: FutureBuffer,
    last_sync_request: Option<(u64, u64)>,
    stats: DriverStats,
}

impl<D> std::fmt::Debug for ConsensusDriver<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsensusDriver")
            .field("me", &self.me)
            .field("height", &self.host.height)
            .field("phase", &self.phase)
            .field("stats", &self.stats)
            .finish()
    }
}

type Outputs = Result<Vec<Output>, DriverError>;

impl<D: KeyValueDb> ConsensusDriver<D> {
    /// A driver over `store`, signing with `signer` if `validator` (and the key is in the
    /// validator set); otherwise it follows consensus without voting. Call [`Self::start`]
    /// next.
    pub fn new(
        store: ChainStore<D>,
        signer: SigningProvider,
        config: DriverConfig,
        validator: bool,
    ) -> Self {
        let ctx = Ctx::new(store.genesis_hash());
        // A follower takes an address no validator can have, so the core never asks it to sign.
        let me = Address(if validator {
            signer.account()
        } else {
            AccountId([0; 32])
        });
        let height = store.head().number + 1;
        let params = Params {
            initial_height: Height(height),
            initial_validator_set: ValidatorSet::new([]),
            address: me,
            threshold_params: ThresholdParams::default(),
            value_payload: ValuePayload::ProposalOnly,
        };
        let state = State::new(ctx.clone(), params, 0);
        let mut host = Host {
            ctx,
            signer,
            store,
            config,
            height,
            vset: ValidatorSet::new([]),
            durations: BTreeMap::new(),
            recovering: false,
            outputs: vec![],
            decided: None,
            current: HeightState::default(),
        };
        host.reset_durations();
        Self {
            state,
            host,
            me,
            phase: Phase::Idle,
            now_ms: 0,
            future: FutureBuffer::default(),
            last_sync_request: None,
            stats: DriverStats::default(),
        }
    }

    /// The store (read it to build blocks and to serve sync requests).
    pub fn store(&self) -> &ChainStore<D> {
        &self.host.store
    }

    /// The height being decided.
    pub fn height(&self) -> u64 {
        self.host.height
    }

    /// The current round, if the height is running.
    pub fn round(&self) -> Option<u32> {
        match self.phase {
            Phase::Running => self.state.round().as_u32(),
            Phase::Idle => None,
        }
    }

    /// What was dropped and decided so far.
    pub fn stats(&self) -> DriverStats {
        DriverStats {
            future_buffered_bytes: self.future.bytes() as u64,
            ..self.stats
        }
    }

    /// Starts (or, after a crash, resumes) consensus at the height after the finalized head.
    /// A WAL left by a previous run is replayed first, so the node re-signs exactly the votes
    /// it had signed and nothing else.
    pub fn start(&mut self, now_ms: u64) -> Outputs {
        self.now_ms = now_ms;
        let height = self.host.height;
        let records = self.host.store.wal(height)?;
        if records.is_empty() {
            // A fresh start proposes at once: nothing to wait for after downtime.
            self.start_height()?;
            self.after_input()?;
        } else {
            tracing::info!(height, records = records.len(), "replaying consensus WAL");
            self.stats.wal_records_replayed += records.len() as u64;
            self.host.recovering = true;
            let result = self.replay(height, records);
            self.host.recovering = false;
            result?;
            self.after_input()?;
        }
        self.finish()
    }

    fn replay(&mut self, height: u64, records: Vec<WalRecord>) -> Result<(), DriverError> {
        self.start_height()?;
        for record in records {
            if self.host.height != height {
                // Decided during replay: the rest of the log is for a finished height.
                break;
            }
            let replayed = codec::replay_record(record).map_err(|e| DriverError::CorruptWal {
                height,
                reason: e.to_string(),
            })?;
            match replayed {
                Replayed::Proposal(p) => {
                    self.host
                        .current
                        .seen_proposals
                        .insert(p.message.round.as_i64());
                    self.feed(Input::Proposal(p))?;
                }
                Replayed::Vote(v) => {
                    self.host.current.seen_votes.insert(
                        vote_slot(&v),
                        (crate::context::nil_or_value(&v.message.value), v.signature),
                    );
                    self.feed(Input::Vote(v))?;
                }
                Replayed::PolkaCertificate(c) => {
                    for s in &c.polka_signatures {
                        self.host
                            .current
                            .seen_votes
                            .entry((0, c.round.as_i64(), s.address.0))
                            .or_insert((Some(c.value_id), s.signature));
                    }
                    self.feed(Input::PolkaCertificate(c))?;
                }
                Replayed::RoundCertificate(c) => {
                    for s in &c.round_signatures {
                        let slot = (vote_type_code(s.vote_type), c.round.as_i64(), s.address.0);
                        let value = crate::context::nil_or_value(&s.value_id);
                        self.host
                            .current
                            .seen_votes
                            .entry(slot)
                            .or_insert((value, s.signature));
                    }
                    self.feed(Input::RoundCertificate(c))?;
                }
                Replayed::Timeout(t) => {
                    self.host.bump(t.kind);
                    self.feed(Input::TimeoutElapsed(t))?;
                }
                Replayed::ProposedValue(v) => {
                    if v.proposer == self.me {
                        if let Some(round) = v.round.as_u32() {
                            self.host
                                .current
                                .own_proposals
                                .insert(round, v.value.clone());
                        }
                    }
                    self.feed(Input::ProposedValue(v, ValueOrigin::Consensus))?;
                }
            }
        }
        Ok(())
    }

    /// A consensus message from a peer (already decoded).
    pub fn on_message(&mut self, now_ms: u64, message: ConsensusMessage) -> Outputs {
        self.now_ms = now_ms;
        self.message(message)?;
        self.after_input()?;
        self.finish()
    }

    /// A timer fired.
    pub fn on_timer(&mut self, now_ms: u64, key: TimerKey) -> Outputs {
        self.now_ms = now_ms;
        match key {
            TimerKey::Idle => {
                if self.phase == Phase::Idle {
                    self.start_height()?;
                }
            }
            TimerKey::Consensus(t) => {
                if self.phase == Phase::Running {
                    self.host.bump(t.kind);
                    self.feed(Input::TimeoutElapsed(t))?;
                }
            }
        }
        self.after_input()?;
        self.finish()
    }

    /// Transactions are waiting in the pool: start the next height now rather than at the
    /// idle timer.
    pub fn on_transactions_pending(&mut self, now_ms: u64) -> Outputs {
        self.now_ms = now_ms;
        if self.phase == Phase::Idle {
            self.start_height()?;
            self.after_input()?;
        }
        self.finish()
    }

    /// The block asked for by [`Output::BuildBlock`].
    pub fn on_block_built(
        &mut self,
        now_ms: u64,
        height: u64,
        round: u32,
        block: Block,
        executed: ExecutedBlock,
    ) -> Outputs {
        self.now_ms = now_ms;
        if height == self.host.height
            && self.phase == Phase::Running
            && !self.host.current.own_proposals.contains_key(&round)
        {
            let value = BlockValue::new(block);
            self.host.current.executed.insert(value.hash(), executed);
            self.host.current.own_proposals.insert(round, value.clone());
            self.feed(Input::Propose(LocallyProposedValue::new(
                Height(height),
                Round::new(round),
                value,
            )))?;
            self.after_input()?;
        }
        self.finish()
    }

    /// Feeds one input to the core, then whatever it asked to follow.
    fn feed(&mut self, input: Input<Ctx>) -> Result<(), DriverError> {
        let host = &mut self.host;
        let result: Result<(), malachitebft_core_consensus::Error<Ctx>> = process!(
            input: input,
            state: &mut self.state,
            metrics: &(),
            with: effect => host.handle(effect)
        );
        if let Err(e) = result {
            tracing::debug!(error = ?e, "consensus core refused an input");
        }
        if let Some(certificate) = self.host.decided.take() {
            self.decided(certificate)?;
        }
        self.unpark_proposals()
    }

    /// After an input: a requested block is built (or our earlier one re-proposed).
    fn after_input(&mut self) -> Result<(), DriverError> {
        if self.host.recovering {
            return Ok(());
        }
        self.leave_nil_round()?;
        if let Some(round) = self.host.current.build_request.take() {
            if self.phase != Phase::Running {
                return Ok(());
            }
            match self.host.current.own_proposals.get(&round) {
                Some(value) => {
                    let value = value.clone();
                    self.feed(Input::Propose(LocallyProposedValue::new(
                        Height(self.host.height),
                        Round::new(round),
                        value,
                    )))?;
                }
                None => self.host.outputs.push(Output::BuildBlock {
                    height: self.host.height,
                    round,
                }),
            }
        }
        Ok(())
    }

    /// Tendermint waits out the precommit timeout after any 2/3+ precommits, in case a value
    /// is still gathering them. Once 2/3+ are for nil, no value can gather them in this round
    /// without equivocation (and a decision from a commit still counts in any later round),
    /// so the wait only delays the next proposer: a crashed validator would cost propose +
    /// precommit timeout at each height where it is due to propose. The next round starts
    /// now, through the core's own precommit-timeout path, so the WAL records it like a timer.
    fn leave_nil_round(&mut self) -> Result<(), DriverError> {
        if self.phase != Phase::Running {
            return Ok(());
        }
        let round = self.state.round();
        let precommit = vote_type_code(mc::VoteType::Precommit);
        let r = round.as_i64();
        let me = self.me.0;
        let from_peers = self
            .host
            .current
            .seen_votes
            .range((precommit, r, AccountId([0; 32]))..=(precommit, r, AccountId([0xff; 32])))
            .filter(|((_, _, who), (value, _))| value.is_none() && *who != me)
            .count();
        let ours = self.host.current.sign_guard.get(&(precommit, r)) == Some(&None);
        let nil = from_peers + usize::from(ours);
        if r < 0 || nil * 3 <= self.host.vset.len() * 2 {
            return Ok(());
        }
        let timeout = mc::Timeout::new(round, mc::TimeoutKind::Precommit);
        self.host.bump(timeout.kind);
        self.feed(Input::TimeoutElapsed(timeout))
    }

    /// Writes the WAL records of this input durably, then hands out the outputs.
    ///
    /// The write is synced only when something is about to leave the node: records of inputs
    /// that sent nothing (a vote received, say) may be lost in a crash without harm, since
    /// what we signed never depended on them, and the next synced write covers them anyway.
    fn finish(&mut self) -> Outputs {
        if !self.host.current.wal_buffer.is_empty() {
            let records = std::mem::take(&mut self.host.current.wal_buffer);
            let sends = self
                .host
                .outputs
                .iter()
                .any(|o| matches!(o, Output::Broadcast(_)));
            self.host
                .store
                .wal_append(self.host.height, &records, sends)?;
        }
        Ok(std::mem::take(&mut self.host.outputs))
    }

    fn decided(&mut self, certificate: CommitCertificate<Ctx>) -> Result<(), DriverError> {
        let Some((_, value)) = self.state.decided_value() else {
            return Ok(());
        };
        if value.hash() != certificate.value_id {
            return Ok(());
        }
        let block = value.block().clone();
        let executed = match self.host.current.executed.remove(&value.hash()) {
            Some(e) => e,
            None => self.execute_finalized(&block)?,
        };
        let wire = codec::certificate_to_wire(&certificate);
        // Records of the deciding input are written before the import deletes the height's WAL.
        let records = std::mem::take(&mut self.host.current.wal_buffer);
        if !self.host.recovering {
            // The import that follows is a synced write: it makes these durable too.
            self.host
                .store
                .wal_append(self.host.height, &records, false)?;
        }
        self.import(block, executed, wire, false)
    }

    fn import(
        &mut self,
        block: Block,
        executed: ExecutedBlock,
        certificate: WireCertificate,
        synced: bool,
    ) -> Result<(), DriverError> {
        let events = executed.events.clone();
        self.host.store.import(&block, executed, &certificate)?;
        if synced {
            self.stats.synced += 1;
        } else {
            self.stats.decided += 1;
        }
        let header = block.header.clone();
        let hash = block.hash();
        let round = certificate.round;
        self.host.outputs.push(Output::Finalized {
            hash,
            round,
            extrinsics: block.extrinsics.iter().map(|x| x.hash()).collect(),
            header,
            events,
            synced,
        });
        self.next_height()
    }

    fn next_height(&mut self) -> Result<(), DriverError> {
        self.host.height = self.host.store.head().number + 1;
        self.host.current = HeightState::default();
        let height = self.host.height;
        self.future.prune_below(height);
        self.phase = Phase::Idle;
        self.host.outputs.push(Output::CancelAllTimers);
        // The host calls `on_transactions_pending` again if its pool still holds some.
        if self.future.has(height) {
            self.start_height()
        } else {
            let state = self.host.store.state();
            let interval = drchain_runtime::pallet_network_config::params(&Overlay::new(&state))
                .max_block_interval_ms;
            self.host.outputs.push(Output::ScheduleTimer {
                key: TimerKey::Idle,
                after_ms: interval,
            });
            Ok(())
        }
    }

    fn start_height(&mut self) -> Result<(), DriverError> {
        let height = self.host.height;
        let vset = self
            .host
            .validator_set(height)
            .ok_or(DriverError::NoValidators { height })?;
        self.host.vset = vset.clone();
        self.phase = Phase::Running;
        self.host.outputs.push(Output::CancelTimer(TimerKey::Idle));
        self.feed(Input::StartHeight(Height(height), vset))?;
        for m in self.future.take(height) {
            self.message(m)?;
        }
        Ok(())
    }
}

fn vote_slot(v: &SignedVote<Ctx>) -> (u8, i64, AccountId) {
    (
        vote_type_code(v.message.vote_type),
        v.message.round.as_i64(),
        v.message.validator.0,
    )
}
