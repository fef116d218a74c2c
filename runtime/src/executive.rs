//! Block execution: header checks, the block hooks, extrinsic application, and the roots.
//!
//! Longer than 600 lines because building, executing and validating share one apply path
//! (the same checks in the same order); apart, that invariant would span files.

use drchain_support::{
    AccountId, Backend, BlockInfo, ChangeSet, Env, Hooks, Nonce, Origin, Overlay, TrieDelta, H256,
};
use parity_scale_codec::Encode;

use crate::block::{extrinsics_root, Block, Header};
use crate::call::RuntimeCall;
use crate::dispatch::dispatch;
use crate::event::{EventRecord, Phase, RuntimeEvent, SystemEvent};
use crate::extrinsic::{UncheckedExtrinsic, MAX_EXTRINSIC_BYTES};
use crate::system;

/// Most extrinsics in one block.
pub const MAX_BLOCK_EXTRINSICS: usize = 8192;
/// How far ahead of the account's nonce the pool accepts transactions.
pub const MAX_FUTURE_NONCES: u64 = 64;
/// Most bytes of a block's extrinsics (SCALE-encoded, length prefix included). A proposal
/// carries its block in one gossip message (at most 8 MiB) and sync responses carry several
/// blocks: 2 MiB leaves room for both while holding 30 transactions of the largest size, or
/// thousands of heartbeats.
pub const MAX_BLOCK_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Why a transaction cannot be included. A block holding one is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    /// Encoded size over the limit.
    #[error("transaction of {size} bytes exceeds {max}")]
    TooLarge {
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The signature does not verify for this chain.
    #[error("bad signature (or signed for another chain)")]
    BadSignature,
    /// The signer is neither an unrevoked member nor an admin.
    #[error("{signer} is not a member or admin of this chain")]
    NotPermitted { signer: AccountId },
    /// The nonce was already used.
    #[error("nonce {got} already used; next is {expected}")]
    StaleNonce {
        /// Next nonce.
        expected: Nonce,
        got: Nonce,
    },
    /// The block already holds the most extrinsics it may.
    #[error("the block is full ({max} extrinsics)")]
    BlockFull {
        /// The limit.
        max: usize,
    },
    /// The block's byte budget has no room left for it (it may fit in the next block).
    #[error("no room for {size} bytes in the block ({used} of {max} used)")]
    BlockOutOfSpace {
        /// The transaction's encoded size.
        size: usize,
        /// Bytes of the block's extrinsics so far.
        used: usize,
        /// [`MAX_BLOCK_BODY_BYTES`].
        max: usize,
    },
    /// The nonce is ahead of the account's next nonce.
    #[error("nonce {got} is ahead of the next nonce {expected}")]
    FutureNonce {
        /// Next nonce.
        expected: Nonce,
        got: Nonce,
    },
}

/// Why a block is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Parent hash mismatch.
    #[error("parent hash {got} is not {expected}")]
    WrongParent {
        /// The parent we execute on.
        expected: H256,
        /// What the header says.
        got: H256,
    },
    /// Number is not parent + 1.
    #[error("block number {got}, expected {expected}")]
    WrongNumber {
        /// parent + 1.
        expected: u64,
        /// What the header says.
        got: u64,
    },
    /// Timestamp not after the parent's.
    #[error("timestamp {got} is not after the parent's {parent}")]
    TimestampNotIncreasing {
        /// Parent timestamp.
        parent: u64,
        /// Header timestamp.
        got: u64,
    },
    #[error("{count} extrinsics exceed the limit of {max}")]
    TooManyExtrinsics {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The extrinsics exceed [`MAX_BLOCK_BODY_BYTES`].
    #[error("the extrinsics take {size} bytes, more than the block budget of {max}")]
    TooLarge {
        /// Their encoded size.
        size: usize,
        /// The budget.
        max: usize,
    },
    /// Extrinsics root mismatch.
    #[error("extrinsics root {got} does not match the extrinsics ({computed})")]
    BadExtrinsicsRoot {
        computed: H256,
        /// In the header.
        got: H256,
    },
    /// An extrinsic that cannot be included.
    #[error("extrinsic {index}: {error}")]
    InvalidExtrinsic {
        /// Its position.
        index: usize,
        error: TransactionError,
    },
    /// State root mismatch.
    #[error("state root {got} does not match the executed state ({computed})")]
    BadStateRoot {
        computed: H256,
        /// In the header.
        got: H256,
    },
}

/// The result of executing a block: what to write, and what happened.
#[derive(Debug, Clone)]
pub struct ExecutedBlock {
    /// The header (with the roots).
    pub header: Header,
    /// State writes.
    pub changes: ChangeSet,
    /// State trie writes for those changes.
    pub trie: TrieDelta,
    /// Events, in order.
    pub events: Vec<EventRecord>,
}

/// A block built by a proposer.
#[derive(Debug, Clone)]
pub struct BuiltBlock {
    pub block: Block,
    /// Its execution.
    pub executed: ExecutedBlock,
    /// Candidate transactions left out, and why.
    pub rejected: Vec<(H256, TransactionError)>,
}

/// A transaction that may enter the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidTransaction {
    pub hash: H256,
    /// Signer.
    pub sender: AccountId,
    pub nonce: Nonce,
    /// Whether it can be included now (its nonce is the next one).
    pub ready: bool,
    /// Higher goes first: heartbeats and promotion completions are never starved.
    pub priority: u8,
}

/// Priority of failover-critical calls.
pub const PRIORITY_FAILOVER: u8 = 2;
/// Priority of everything else.
pub const PRIORITY_NORMAL: u8 = 1;

fn priority(call: &RuntimeCall) -> u8 {
    match call {
        RuntimeCall::ServiceStatus(_)
        | RuntimeCall::Failover(pallet_failover::Call::PromotionComplete { .. }) => {
            PRIORITY_FAILOVER
        }
        _ => PRIORITY_NORMAL,
    }
}

/// Checks what does not depend on the exact nonce; returns the account's next nonce. The
/// cheap checks (size, the signer's permission and nonce: state reads) come before the
/// signature, so that what a stranger floods costs no verification.
fn check(
    state: &Overlay<'_>,
    x: &UncheckedExtrinsic,
    genesis_hash: &H256,
) -> Result<Nonce, TransactionError> {
    let size = x.encoded_size();
    if size > MAX_EXTRINSIC_BYTES {
        return Err(TransactionError::TooLarge {
            size,
            max: MAX_EXTRINSIC_BYTES,
        });
    }
    let expected = check_against_state(state, x)?;
    if !x.verify(genesis_hash) {
        return Err(TransactionError::BadSignature);
    }
    Ok(expected)
}

/// What a new block can change: the signer's permission and nonce. Returns the next nonce.
fn check_against_state(
    state: &Overlay<'_>,
    x: &UncheckedExtrinsic,
) -> Result<Nonce, TransactionError> {
    if !pallet_membership::may_transact(state, &x.signer) {
        return Err(TransactionError::NotPermitted { signer: x.signer });
    }
    let expected = system::nonce(state, &x.signer);
    if x.nonce < expected {
        return Err(TransactionError::StaleNonce {
            expected,
            got: x.nonce,
        });
    }
    Ok(expected)
}

/// Re-checks a transaction that passed [`validate_transaction`] against a newer state: only
/// what a block can change (permission, nonce), not the signature, which cannot change. A
/// pool runs this over every pending transaction after each block.
pub fn revalidate_transaction(
    backend: &dyn Backend,
    x: &UncheckedExtrinsic,
) -> Result<(), TransactionError> {
    check_against_state(&Overlay::new(backend), x).map(|_| ())
}

/// Validates a transaction for the pool against the best state.
pub fn validate_transaction(
    backend: &dyn Backend,
    x: &UncheckedExtrinsic,
    genesis_hash: &H256,
) -> Result<ValidTransaction, TransactionError> {
    let state = Overlay::new(backend);
    let expected = check(&state, x, genesis_hash)?;
    if x.nonce > expected + MAX_FUTURE_NONCES {
        return Err(TransactionError::FutureNonce {
            expected,
            got: x.nonce,
        });
    }
    Ok(ValidTransaction {
        hash: x.hash(),
        sender: x.signer,
        nonce: x.nonce,
        ready: x.nonce == expected,
        priority: priority(&x.call),
    })
}

/// Every pallet's start-of-block hook, in pallet index order.
fn on_initialize_all(env: &mut Env<'_, '_, RuntimeEvent>) {
    pallet_membership::Pallet::on_initialize(env);
    pallet_service_status::Pallet::on_initialize(env);
    pallet_network_config::Pallet::on_initialize(env);
    pallet_checkpoints::Pallet::on_initialize(env);
    pallet_failover::Pallet::on_initialize(env);
}

/// Every pallet's end-of-block hook, in pallet index order.
fn on_finalize_all(env: &mut Env<'_, '_, RuntimeEvent>) {
    pallet_membership::Pallet::on_finalize(env);
    pallet_service_status::Pallet::on_finalize(env);
    pallet_network_config::Pallet::on_finalize(env);
    pallet_checkpoints::Pallet::on_finalize(env);
    pallet_failover::Pallet::on_finalize(env);
}

/// A block being executed.
struct Execution<'a> {
    state: Overlay<'a>,
    block: BlockInfo,
    events: Vec<EventRecord>,
    genesis_hash: H256,
}

impl<'a> Execution<'a> {
    /// Header-independent start of a block: time checks, the live clock, start-of-block hooks.
    fn start(
        backend: &'a dyn Backend,
        parent: &Header,
        timestamp: u64,
        round: u32,
        genesis_hash: H256,
    ) -> Result<Self, BlockError> {
        if timestamp <= parent.timestamp {
            return Err(BlockError::TimestampNotIncreasing {
                parent: parent.timestamp,
                got: timestamp,
            });
        }
        let mut state = Overlay::new(backend);
        let params = pallet_network_config::params(&state);
        let parent_live = system::LiveClock::get(&state).unwrap_or(0);
        let live_now = system::advance_live_clock(
            parent_live,
            parent.timestamp,
            timestamp,
            params.live_clock_max_gap_ms,
        );
        let block = BlockInfo {
            number: parent.number + 1,
            timestamp,
            live_now,
            parent_hash: parent.hash(),
        };
        // On the parent's state, before this block's hooks: the order consensus used.
        pallet_membership::record_missed_turns(&mut state, block.number, round);
        system::Number::put(&mut state, &block.number);
        system::ParentHash::put(&mut state, &block.parent_hash);
        system::Timestamp::put(&mut state, &timestamp);
        system::LiveClock::put(&mut state, &live_now);
        let mut exec = Self {
            state,
            block,
            events: vec![],
            genesis_hash,
        };
        exec.in_phase(Phase::Initialization, on_initialize_all);
        Ok(exec)
    }

    fn in_phase<R>(
        &mut self,
        phase: Phase,
        f: impl FnOnce(&mut Env<'_, '_, RuntimeEvent>) -> R,
    ) -> R {
        let mut events = vec![];
        let r = f(&mut Env::new(&mut self.state, self.block, &mut events));
        self.events
            .extend(events.into_iter().map(|event| EventRecord { phase, event }));
        r
    }

    /// Applies one extrinsic. `Err` means it cannot be in this block (nothing was written);
    /// a failing call is `Ok`, recorded as `ExtrinsicFailed` with its writes rolled back.
    fn apply(&mut self, index: u32, x: &UncheckedExtrinsic) -> Result<(), TransactionError> {
        let expected = check(&self.state, x, &self.genesis_hash)?;
        if x.nonce != expected {
            return Err(TransactionError::FutureNonce {
                expected,
                got: x.nonce,
            });
        }
        system::Nonces::insert(&mut self.state, &x.signer, &(expected + 1));
        let call = x.call.clone();
        let origin = Origin::Signed(x.signer);
        self.in_phase(Phase::ApplyExtrinsic(index), |env| {
            env.state.start_transaction();
            let before = env.event_count();
            match dispatch(env, origin, call) {
                Ok(()) => {
                    env.state.commit_transaction();
                    env.deposit(SystemEvent::ExtrinsicSuccess { index });
                }
                Err(error) => {
                    env.state.rollback_transaction();
                    env.truncate_events(before);
                    env.deposit(SystemEvent::ExtrinsicFailed { index, error });
                }
            }
        });
        Ok(())
    }

    /// End-of-block hooks; returns the writes and events.
    fn finish(mut self) -> (ChangeSet, Vec<EventRecord>) {
        self.in_phase(Phase::Finalization, on_finalize_all);
        (self.state.into_changes(), self.events)
    }
}

/// Builds a block one extrinsic at a time, as a proposer draining its pool does: it can stop
/// at any point (time budget, size) and seal what it has.
pub struct BlockBuilder<'a> {
    backend: &'a dyn Backend,
    parent_hash: H256,
    /// The consensus round it is proposed in.
    round: u32,
    exec: Execution<'a>,
    included: Vec<UncheckedExtrinsic>,
    /// Sum of the encoded sizes of `included`.
    included_bytes: usize,
}

impl std::fmt::Debug for BlockBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockBuilder")
            .field("number", &self.exec.block.number)
            .field("included", &self.included.len())
            .finish()
    }
}

impl<'a> BlockBuilder<'a> {
    /// Starts block `parent.number + 1` at `timestamp` (which must be after the parent's) on
    /// `backend`, the parent's state; runs the start-of-block hooks.
    pub fn new(
        backend: &'a dyn Backend,
        parent: &Header,
        timestamp: u64,
        genesis_hash: &H256,
    ) -> Result<Self, BlockError> {
        Self::in_round(backend, parent, timestamp, 0, genesis_hash)
    }

    /// [`Self::new`] for a block proposed in consensus round `round`.
    pub fn in_round(
        backend: &'a dyn Backend,
        parent: &Header,
        timestamp: u64,
        round: u32,
        genesis_hash: &H256,
    ) -> Result<Self, BlockError> {
        let exec = Execution::start(backend, parent, timestamp, round, *genesis_hash)?;
        Ok(Self {
            backend,
            parent_hash: parent.hash(),
            round,
            exec,
            included: vec![],
            included_bytes: 0,
        })
    }

    /// Applies one extrinsic. `Err` means it cannot be in this block and nothing was written;
    /// a call that fails is `Ok` (included, recorded as `ExtrinsicFailed`).
    pub fn apply_extrinsic(&mut self, x: UncheckedExtrinsic) -> Result<(), TransactionError> {
        if self.included.len() >= MAX_BLOCK_EXTRINSICS {
            return Err(TransactionError::BlockFull {
                max: MAX_BLOCK_EXTRINSICS,
            });
        }
        let size = x.encoded_size();
        if body_bytes(self.included.len() + 1, self.included_bytes + size) > MAX_BLOCK_BODY_BYTES {
            return Err(TransactionError::BlockOutOfSpace {
                size,
                used: body_bytes(self.included.len(), self.included_bytes),
                max: MAX_BLOCK_BODY_BYTES,
            });
        }
        self.exec.apply(self.included.len() as u32, &x)?;
        self.included.push(x);
        self.included_bytes += size;
        Ok(())
    }

    /// Extrinsics applied so far.
    pub fn len(&self) -> usize {
        self.included.len()
    }

    /// Whether no extrinsic was applied.
    pub fn is_empty(&self) -> bool {
        self.included.is_empty()
    }

    /// Runs the end-of-block hooks and seals the block with both roots.
    pub fn finish(self) -> (Block, ExecutedBlock) {
        let number = self.exec.block.number;
        let timestamp = self.exec.block.timestamp;
        let (changes, events) = self.exec.finish();
        let trie = self.backend.prepare(&changes);
        let header = Header {
            parent_hash: self.parent_hash,
            number,
            timestamp,
            extrinsics_root: extrinsics_root(&self.included),
            state_root: trie.root,
            round: self.round,
        };
        let executed = ExecutedBlock {
            header: header.clone(),
            changes,
            trie,
            events,
        };
        (
            Block {
                header,
                extrinsics: self.included,
            },
            executed,
        )
    }
}

/// Builds a block on `parent` at `timestamp` from `candidates` (in order), leaving out those
/// that cannot be included, up to `max_extrinsics`.
pub fn build_block(
    backend: &dyn Backend,
    parent: &Header,
    timestamp: u64,
    genesis_hash: &H256,
    candidates: impl IntoIterator<Item = UncheckedExtrinsic>,
    max_extrinsics: usize,
) -> Result<BuiltBlock, BlockError> {
    build_block_in_round(
        backend,
        parent,
        timestamp,
        0,
        genesis_hash,
        candidates,
        max_extrinsics,
    )
}

/// [`build_block`] for a block proposed in consensus round `round`.
pub fn build_block_in_round(
    backend: &dyn Backend,
    parent: &Header,
    timestamp: u64,
    round: u32,
    genesis_hash: &H256,
    candidates: impl IntoIterator<Item = UncheckedExtrinsic>,
    max_extrinsics: usize,
) -> Result<BuiltBlock, BlockError> {
    let mut builder = BlockBuilder::in_round(backend, parent, timestamp, round, genesis_hash)?;
    let mut rejected = vec![];
    for x in candidates {
        if builder.len() >= max_extrinsics.min(MAX_BLOCK_EXTRINSICS) {
            break;
        }
        let hash = x.hash();
        if let Err(e) = builder.apply_extrinsic(x) {
            rejected.push((hash, e));
        }
    }
    let (block, executed) = builder.finish();
    Ok(BuiltBlock {
        block,
        executed,
        rejected,
    })
}

/// The encoded size of `count` extrinsics of `sum` bytes in all: their length prefix plus
/// them.
fn body_bytes(count: usize, sum: usize) -> usize {
    parity_scale_codec::Compact(count as u32).encoded_size() + sum
}

/// Whether `block`'s body is the one its header commits to (and within the limits). Cheap
/// next to execution, and needs no state: a block whose header a commit certificate or a
/// proposer's signature covers is checked with it before anything trusts its body.
pub fn check_body(block: &Block) -> Result<(), BlockError> {
    if block.extrinsics.len() > MAX_BLOCK_EXTRINSICS {
        return Err(BlockError::TooManyExtrinsics {
            count: block.extrinsics.len(),
            max: MAX_BLOCK_EXTRINSICS,
        });
    }
    let size = block.extrinsics.encoded_size();
    if size > MAX_BLOCK_BODY_BYTES {
        return Err(BlockError::TooLarge {
            size,
            max: MAX_BLOCK_BODY_BYTES,
        });
    }
    let computed = extrinsics_root(&block.extrinsics);
    if computed != block.header.extrinsics_root {
        return Err(BlockError::BadExtrinsicsRoot {
            computed,
            got: block.header.extrinsics_root,
        });
    }
    Ok(())
}

/// Executes `block` on `parent`'s state, checking the header: parent, number, timestamp,
/// extrinsics root, every extrinsic, and the state root.
pub fn execute_block(
    backend: &dyn Backend,
    parent: &Header,
    block: &Block,
    genesis_hash: &H256,
) -> Result<ExecutedBlock, BlockError> {
    let h = &block.header;
    let parent_hash = parent.hash();
    if h.parent_hash != parent_hash {
        return Err(BlockError::WrongParent {
            expected: parent_hash,
            got: h.parent_hash,
        });
    }
    if h.number != parent.number + 1 {
        return Err(BlockError::WrongNumber {
            expected: parent.number + 1,
            got: h.number,
        });
    }
    check_body(block)?;
    let mut exec = Execution::start(backend, parent, h.timestamp, h.round, *genesis_hash)?;
    for (index, x) in block.extrinsics.iter().enumerate() {
        exec.apply(index as u32, x)
            .map_err(|error| BlockError::InvalidExtrinsic { index, error })?;
    }
    let (changes, events) = exec.finish();
    let trie = backend.prepare(&changes);
    if trie.root != h.state_root {
        return Err(BlockError::BadStateRoot {
            computed: trie.root,
            got: h.state_root,
        });
    }
    Ok(ExecutedBlock {
        header: h.clone(),
        changes,
        trie,
        events,
    })
}

/// Why a validator refuses a proposal's timestamp (see the lease argument in
/// `docs/architecture.md`: both bounds are needed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// Further ahead of the validator's clock than `max_drift_ms`.
    #[error("timestamp {timestamp} is {ahead_ms} ms ahead of our clock (max {max_drift_ms})")]
    TooFarAhead {
        /// The proposal's timestamp.
        timestamp: u64,
        /// How far ahead.
        ahead_ms: u64,
        /// The chain's limit.
        max_drift_ms: u64,
    },
    /// Further behind the validator's clock than `max_drift_ms`.
    #[error("timestamp {timestamp} is {behind_ms} ms behind our clock (max {max_drift_ms})")]
    TooFarBehind {
        /// The proposal's timestamp.
        timestamp: u64,
        /// How far behind.
        behind_ms: u64,
        /// The chain's limit.
        max_drift_ms: u64,
    },
}

/// The timestamp a proposer puts in its block: its clock, but always after the parent's.
pub fn proposal_timestamp(parent: &Header, local_now_ms: u64) -> u64 {
    local_now_ms.max(parent.timestamp + 1)
}

/// Checks a proposed header's timestamp against the validator's clock, within the chain's
/// `max_drift_ms` (from the parent state) in both directions.
///
/// Apply it only when a value is first proposed (a proposal without a proof-of-lock round).
/// A value re-proposed in a later round carries a polka from validators that found it timely
/// when it was new; checking it again against a later clock would refuse a locked value and
/// stall consensus. This is the "timely" rule of proposer-based timestamps in CometBFT.
pub fn check_proposal_time(
    parent_state: &dyn Backend,
    header: &Header,
    local_now_ms: u64,
) -> Result<(), TimestampError> {
    let max_drift_ms = pallet_network_config::params(&Overlay::new(parent_state)).max_drift_ms;
    let timestamp = header.timestamp;
    let ahead_ms = timestamp.saturating_sub(local_now_ms);
    if ahead_ms > max_drift_ms {
        return Err(TimestampError::TooFarAhead {
            timestamp,
            ahead_ms,
            max_drift_ms,
        });
    }
    let behind_ms = local_now_ms.saturating_sub(timestamp);
    if behind_ms > max_drift_ms {
        return Err(TimestampError::TooFarBehind {
            timestamp,
            behind_ms,
            max_drift_ms,
        });
    }
    Ok(())
}
