//! The consensus driver: sans-I/O. The host feeds it inputs (a message arrived, a timer fired,
//! a block was built, a synced block arrived, transactions are pending) together with the
//! local time, and executes the [`Output`]s it returns, in order. The driver never touches the
//! network or a clock; the same code runs in a node (driven by a tokio task, `crate::service`)
//! and in the deterministic simulation (driven by a virtual clock).
//!
//! Storage is synchronous and injected ([`ChainStore`] over any [`KeyValueDb`]): before an
//! input's outputs are returned, the WAL records it produced are durably written, so nothing
//! that leaves the node (a vote, a proposal) can be forgotten by a crash.
//!
//! Proposals are validated here, before the core sees them (the core's ProposalOnly mode would
//! otherwise mark every proposal valid): signature, proposer, timestamp drift for a new value,
//! and full execution of the block on the finalized state, state root included.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use drchain_runtime::{
    check_proposal_time, execute_block, Block, EventRecord, ExecutedBlock, Header,
};
use drchain_support::{AccountId, Overlay, Signature, H256};
use malachitebft_core_consensus::{
    process, Input, LocallyProposedValue, Params, ProposedValue, State, ValuePayload,
};
use malachitebft_core_types::{
    self as mc, CommitCertificate, Round, SignedProposal, SignedVote, SigningProviderExt,
    ThresholdParams, Timeout, Validity, ValueOrigin,
};

use super::codec::{self, ConsensusMessage, Replayed, WalRecord, WireCertificate};
use super::context::{
    vote_type_code, Address, BlockValue, Ctx, Height, SigningProvider, ValidatorSet,
};
use super::host::{kind_code, Host};
use crate::store::kv::KeyValueDb;
use crate::store::{ChainStore, StoreError};

/// Base durations of the consensus timers, in ms. Each elapse of a kind within a height adds
/// `delta_ms` to that kind, so rounds slow down until the network is fast enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Waiting for the proposal.
    pub propose_ms: u64,
    /// Waiting for more prevotes after 2/3 of any.
    pub prevote_ms: u64,
    /// Waiting for more precommits after 2/3 of any.
    pub precommit_ms: u64,
    /// Added per elapse.
    pub delta_ms: u64,
    /// Republishing our last votes, for peers that missed them.
    pub rebroadcast_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            propose_ms: 500,
            prevote_ms: 250,
            precommit_ms: 250,
            delta_ms: 100,
            rebroadcast_ms: 1000,
        }
    }
}

/// Driver settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverConfig {
    /// Consensus timers.
    pub timeouts: Timeouts,
    /// Messages for later heights are kept only this far ahead.
    pub future_heights: u64,
    /// At most this many future-height messages are kept.
    pub max_future_messages: usize,
    /// Messages for rounds further than this beyond the current one are dropped.
    pub max_round_ahead: u32,
    /// Sync is asked for at most this often while peers are ahead.
    pub sync_retry_ms: u64,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            timeouts: Timeouts::default(),
            future_heights: 2,
            max_future_messages: 4096,
            max_round_ahead: 64,
            sync_retry_ms: 300,
        }
    }
}

/// A timer the driver asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKey {
    /// A consensus timeout of the current height.
    Consensus(Timeout),
    /// The idle wait before starting the next height when no transaction is pending.
    Idle,
}

impl TimerKey {
    fn sort_key(&self) -> (u8, u8, i64) {
        match self {
            TimerKey::Consensus(t) => (0, kind_code(t.kind), t.round.as_i64()),
            TimerKey::Idle => (1, 0, 0),
        }
    }
}

impl PartialOrd for TimerKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TimerKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

/// What the host must do, in order. Each names how the driver resumes.
#[must_use]
#[derive(Debug, Clone)]
pub enum Output {
    /// Gossip to every peer (it is already in the WAL).
    Broadcast(ConsensusMessage),
    /// Arm (or re-arm) a timer; when it fires, call [`ConsensusDriver::on_timer`].
    ScheduleTimer {
        /// Which.
        key: TimerKey,
        /// In how many ms.
        after_ms: u64,
    },
    /// Disarm a timer.
    CancelTimer(TimerKey),
    /// Disarm every consensus timer (not the idle one).
    CancelAllTimers,
    /// Build a block on the finalized head for (height, round) from the pool and pass it to
    /// [`ConsensusDriver::on_block_built`].
    BuildBlock {
        /// Height.
        height: u64,
        /// Round.
        round: u32,
    },
    /// A block was finalized and durably stored: drop its transactions from the pool.
    Finalized {
        /// Its header.
        header: Header,
        /// Its hash.
        hash: H256,
        /// Hashes of its extrinsics.
        extrinsics: Vec<H256>,
        /// What happened in it.
        events: Vec<EventRecord>,
        /// Whether it came by sync rather than by our own consensus.
        synced: bool,
    },
    /// Peers are ahead: ask one for finalized blocks from `from` and pass each to
    /// [`ConsensusDriver::on_synced_block`], in order.
    RequestSync {
        /// The first height wanted.
        from: u64,
    },
}

/// Why a driver operation failed. Only storage failures stop the driver; everything a peer
/// sends that is wrong is dropped and counted instead.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chain has no validator for a height.
    #[error("no validators for height {height}")]
    NoValidators {
        /// The height.
        height: u64,
    },
    /// A WAL record does not decode.
    #[error("corrupt WAL at height {height}: {reason}")]
    CorruptWal {
        /// The height.
        height: u64,
        /// What is wrong.
        reason: String,
    },
    /// A block the network finalized does not execute here: state diverged or the store is
    /// damaged. The node must stop rather than go on with a wrong state.
    #[error("finalized block #{number} does not execute: {reason}")]
    Diverged {
        /// The block.
        number: u64,
        /// Why.
        reason: String,
    },
}

/// Why a synced block was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncRejected {
    /// Its certificate does not match it or does not verify.
    #[error("bad commit certificate for #{number}: {reason}")]
    BadCertificate {
        /// The block.
        number: u64,
        /// Why.
        reason: String,
    },
}

/// Counters of what the driver dropped, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Messages refused: bad signature, unknown validator, wrong proposer, far round.
    pub invalid_messages: u64,
    /// Proposals whose block failed validation (we prevote nil on them).
    pub invalid_proposals: u64,
    /// Second votes or proposals for the same slot (duplicates or equivocations).
    pub duplicates: u64,
    /// Future-height messages dropped because the buffer was full or too far ahead.
    pub future_dropped: u64,
    /// Blocks finalized by consensus.
    pub decided: u64,
    /// Blocks imported by sync.
    pub synced: u64,
    /// WAL records replayed at start (after a crash or restart mid-height).
    pub wal_records_replayed: u64,
}

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
    transactions_pending: bool,
    /// Per height: the first vote accepted per (type, round, validator) with its signature,
    /// and the rounds whose proposal was accepted.
    seen_votes: BTreeMap<(u8, i64, AccountId), (Option<H256>, Signature)>,
    seen_proposals: BTreeSet<i64>,
    /// Executions of blocks validated at this height, by hash.
    executed: HashMap<H256, ExecutedBlock>,
    /// Blocks we proposed at this height, by round (a restarted proposer re-proposes them).
    own_proposals: BTreeMap<u32, BlockValue>,
    future: BTreeMap<u64, Vec<ConsensusMessage>>,
    future_count: usize,
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
            wal_buffer: vec![],
            outputs: vec![],
            decided: None,
            build_request: None,
            sign_guard: HashMap::new(),
        };
        host.reset_durations();
        Self {
            state,
            host,
            me,
            phase: Phase::Idle,
            now_ms: 0,
            transactions_pending: false,
            seen_votes: BTreeMap::new(),
            seen_proposals: BTreeSet::new(),
            executed: HashMap::new(),
            own_proposals: BTreeMap::new(),
            future: BTreeMap::new(),
            future_count: 0,
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
        self.stats
    }

    /// The validator set of the current height.
    pub fn validators(&self) -> Result<ValidatorSet, DriverError> {
        self.host
            .validator_set(self.host.height)
            .ok_or(DriverError::NoValidators {
                height: self.host.height,
            })
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
                    self.seen_proposals.insert(p.message.round.as_i64());
                    self.feed(Input::Proposal(p))?;
                }
                Replayed::Vote(v) => {
                    self.seen_votes
                        .insert(vote_slot(&v), (vote_value(&v.message), v.signature));
                    self.feed(Input::Vote(v))?;
                }
                Replayed::PolkaCertificate(c) => {
                    for s in &c.polka_signatures {
                        self.seen_votes
                            .entry((0, c.round.as_i64(), s.address.0))
                            .or_insert((Some(c.value_id), s.signature));
                    }
                    self.feed(Input::PolkaCertificate(c))?;
                }
                Replayed::RoundCertificate(c) => {
                    for s in &c.round_signatures {
                        let slot = (vote_type_code(s.vote_type), c.round.as_i64(), s.address.0);
                        let value = match &s.value_id {
                            mc::NilOrVal::Nil => None,
                            mc::NilOrVal::Val(v) => Some(*v),
                        };
                        self.seen_votes.entry(slot).or_insert((value, s.signature));
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
                            self.own_proposals.insert(round, v.value.clone());
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
        self.transactions_pending = true;
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
            && !self.own_proposals.contains_key(&round)
        {
            let value = BlockValue::new(block);
            self.executed.insert(value.hash(), executed);
            self.own_proposals.insert(round, value.clone());
            self.feed(Input::Propose(LocallyProposedValue::new(
                Height(height),
                Round::new(round),
                value,
            )))?;
            self.after_input()?;
        }
        self.finish()
    }

    /// A finalized block with its certificate, fetched from a peer. Blocks for other heights
    /// are ignored; a bad certificate is refused (`Ok(Err(..))`) so the host can penalize the
    /// peer.
    pub fn on_synced_block(
        &mut self,
        now_ms: u64,
        block: Block,
        certificate: WireCertificate,
    ) -> Result<Result<Vec<Output>, SyncRejected>, DriverError> {
        self.now_ms = now_ms;
        let number = block.header.number;
        if number != self.host.height {
            return Ok(Ok(vec![]));
        }
        if let Err(reason) = self.check_certificate(&block, &certificate) {
            return Ok(Err(SyncRejected::BadCertificate { number, reason }));
        }
        let executed = self.execute_finalized(&block)?;
        self.import(block, executed, certificate, true)?;
        self.after_input()?;
        Ok(Ok(self.finish()?))
    }

    /// Executes a block the network finalized. It must execute: if it does not, this node's
    /// state has diverged and it must stop.
    fn execute_finalized(&self, block: &Block) -> Result<ExecutedBlock, DriverError> {
        let state = self.host.store.state();
        execute_block(
            &state,
            self.host.store.head(),
            block,
            self.host.ctx.genesis(),
        )
        .map_err(|e| DriverError::Diverged {
            number: block.header.number,
            reason: e.to_string(),
        })
    }

    fn check_certificate(&self, block: &Block, c: &WireCertificate) -> Result<(), String> {
        let number = block.header.number;
        if c.height != number || c.block_hash != block.hash() {
            return Err("it is for another block".into());
        }
        let vset = self
            .host
            .validator_set(number)
            .ok_or_else(|| "no validator set known for its height".to_string())?;
        let cert = codec::certificate_from_wire(c).map_err(|e| e.to_string())?;
        let mut seen = BTreeSet::new();
        if !c.signatures.iter().all(|(a, _)| seen.insert(*a)) {
            return Err("a validator signs twice".into());
        }
        self.host
            .signer
            .verify_commit_certificate(&self.host.ctx, &cert, &vset, ThresholdParams::default())
            .map_err(|e| format!("{e:?}"))
    }

    fn message(&mut self, message: ConsensusMessage) -> Result<(), DriverError> {
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
    fn accept_signature(&mut self, vote: &super::context::Vote, signature: &Signature) -> bool {
        let slot = (
            vote_type_code(vote.vote_type),
            vote.round.as_i64(),
            vote.validator.0,
        );
        let value = vote_value(vote);
        if let Some((seen_value, seen_signature)) = self.seen_votes.get(&slot) {
            if *seen_value == value {
                return seen_signature == signature;
            }
        }
        if !self.host.vset.contains(&vote.validator.0)
            || !vote
                .validator
                .0
                .verify(&vote.sign_bytes(self.host.ctx.genesis()), signature)
        {
            return false;
        }
        self.seen_votes.entry(slot).or_insert((value, *signature));
        true
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
        c.polka_signatures.retain(|s| {
            let vote = mc::Context::new_prevote(
                &self.host.ctx,
                height,
                round,
                mc::NilOrVal::Val(value),
                s.address,
            );
            self.accept_signature(&vote, &s.signature)
        });
        self.log_certificate(ConsensusMessage::PolkaCertificate(codec::polka_to_wire(&c)));
        self.feed(Input::PolkaCertificate(c))
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
        let mut slots = BTreeSet::new();
        c.round_signatures
            .retain(|s| slots.insert((vote_type_code(s.vote_type), s.address)));
        c.round_signatures.retain(|s| {
            let vote = super::context::Vote {
                vote_type: s.vote_type,
                height,
                round,
                value: s.value_id,
                validator: s.address,
            };
            self.accept_signature(&vote, &s.signature)
        });
        self.log_certificate(ConsensusMessage::RoundCertificate(
            codec::round_certificate_to_wire(&c),
        ));
        self.feed(Input::RoundCertificate(c))
    }

    /// The core does not log certificates, but applying one changes what it will sign: log it
    /// so a replay after a crash reaches the same state.
    fn log_certificate(&mut self, message: ConsensusMessage) {
        if !self.host.recovering {
            self.host.wal_buffer.push(WalRecord::Message(message));
        }
    }

    fn round_too_far(&self, round: Round) -> bool {
        let current = self.state.round().as_u32().unwrap_or(0);
        round.as_u32().unwrap_or(0) > current.saturating_add(self.host.config.max_round_ahead)
    }

    fn vote(&mut self, vote: SignedVote<Ctx>) -> Result<(), DriverError> {
        let v = &vote.message;
        let known = self.host.vset.contains(&v.validator.0);
        if !known
            || self.round_too_far(v.round)
            || !v
                .validator
                .0
                .verify(&v.sign_bytes(self.host.ctx.genesis()), &vote.signature)
        {
            self.stats.invalid_messages += 1;
            return Ok(());
        }
        // One vote per (type, round, validator): a second signature (even for the same vote)
        // would put a duplicate into the commit certificate.
        let slot = vote_slot(&vote);
        if self.seen_votes.contains_key(&slot) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        self.seen_votes
            .insert(slot, (vote_value(&vote.message), vote.signature));
        self.feed(Input::Vote(vote))
    }

    fn proposal(&mut self, signed: SignedProposal<Ctx>) -> Result<(), DriverError> {
        let p = &signed.message;
        let expected = self.host.vset.proposer(p.height, p.round).map(|v| {
            use malachitebft_core_types::Validator as _;
            *v.address()
        });
        if expected != Some(p.proposer)
            || self.round_too_far(p.round)
            || !p
                .proposer
                .0
                .verify(&p.sign_bytes(self.host.ctx.genesis()), &signed.signature)
        {
            self.stats.invalid_messages += 1;
            return Ok(());
        }
        if !self.seen_proposals.insert(p.round.as_i64()) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        let validity = match self.validate(&p.value, p.pol_round.is_nil()) {
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
        self.feed(Input::ProposedValue(value, ValueOrigin::Consensus))?;
        self.feed(Input::Proposal(signed))
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
        if self.executed.contains_key(&value.hash()) {
            return Ok(());
        }
        let executed = execute_block(&state, head, value.block(), self.host.ctx.genesis())
            .map_err(|e| e.to_string())?;
        self.executed.insert(value.hash(), executed);
        Ok(())
    }

    fn buffer_future(&mut self, height: u64, message: ConsensusMessage) {
        if height > self.host.height + self.host.config.future_heights
            || self.future_count >= self.host.config.max_future_messages
        {
            self.stats.future_dropped += 1;
            return;
        }
        self.future.entry(height).or_default().push(message);
        self.future_count += 1;
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
        Ok(())
    }

    /// After an input: a requested block is built (or our earlier one re-proposed).
    fn after_input(&mut self) -> Result<(), DriverError> {
        if self.host.recovering {
            return Ok(());
        }
        if let Some(round) = self.host.build_request.take() {
            if self.phase != Phase::Running {
                return Ok(());
            }
            match self.own_proposals.get(&round) {
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

    /// Writes the WAL records of this input durably, then hands out the outputs.
    fn finish(&mut self) -> Outputs {
        if !self.host.wal_buffer.is_empty() {
            let records = std::mem::take(&mut self.host.wal_buffer);
            self.host.store.wal_append(self.host.height, &records)?;
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
        let executed = match self.executed.remove(&value.hash()) {
            Some(e) => e,
            None => self.execute_finalized(&block)?,
        };
        let wire = codec::certificate_to_wire(&certificate);
        // Records of the deciding input are written before the import deletes the height's WAL.
        let records = std::mem::take(&mut self.host.wal_buffer);
        if !self.host.recovering {
            self.host.store.wal_append(self.host.height, &records)?;
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
        self.host.outputs.push(Output::Finalized {
            hash,
            extrinsics: block.extrinsics.iter().map(|x| x.hash()).collect(),
            header,
            events,
            synced,
        });
        self.next_height()
    }

    fn next_height(&mut self) -> Result<(), DriverError> {
        self.host.height = self.host.store.head().number + 1;
        self.host.wal_buffer.clear();
        self.host.sign_guard.clear();
        self.host.build_request = None;
        self.seen_votes.clear();
        self.seen_proposals.clear();
        self.executed.clear();
        self.own_proposals.clear();
        let height = self.host.height;
        let stale: Vec<u64> = self.future.range(..height).map(|(h, _)| *h).collect();
        for h in stale {
            if let Some(list) = self.future.remove(&h) {
                self.future_count -= list.len();
            }
        }
        self.phase = Phase::Idle;
        self.host.outputs.push(Output::CancelAllTimers);
        // The host signals pending transactions again if the pool still holds some.
        self.transactions_pending = false;
        if self.future.contains_key(&height) {
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
        self.transactions_pending = false;
        self.host.outputs.push(Output::CancelTimer(TimerKey::Idle));
        self.feed(Input::StartHeight(Height(height), vset))?;
        if let Some(messages) = self.future.remove(&height) {
            self.future_count -= messages.len();
            for m in messages {
                self.message(m)?;
            }
        }
        Ok(())
    }
}

fn vote_value(v: &super::context::Vote) -> Option<H256> {
    match &v.value {
        mc::NilOrVal::Nil => None,
        mc::NilOrVal::Val(h) => Some(*h),
    }
}

fn vote_slot(v: &SignedVote<Ctx>) -> (u8, i64, AccountId) {
    (
        vote_type_code(v.message.vote_type),
        v.message.round.as_i64(),
        v.message.validator.0,
    )
}
