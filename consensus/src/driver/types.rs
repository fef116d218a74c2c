//! The driver's inputs' companions: its settings, the timers it asks for, the outputs the
//! host executes, its errors and counters.

use drchain_runtime::{EventRecord, Header};
use drchain_support::H256;
use malachitebft_core_types::Timeout;

use super::effects::kind_code;
use crate::codec::ConsensusMessage;
use crate::store::StoreError;

/// Base durations of the consensus timers, in ms. Each elapse of a kind within a height adds
/// `delta_ms` to that kind, so rounds slow down until the network is fast enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Waiting for the proposal. Each height where a crashed validator is due to propose
    /// costs this much, and heartbeats age meanwhile; it must still cover a proposer that
    /// waits out `max_block_interval_ms` (200 by default) for transactions. 300 ms (plus
    /// `delta_ms` per elapse) suits the LAN and metro links a 1 s heartbeat timeout assumes.
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
            propose_ms: 300,
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
    /// Messages for later heights are kept only this far ahead (and only where the
    /// validator set of their height is known: at most 2 ahead of the finalized head).
    pub future_heights: u64,
    /// Bytes of messages for later heights kept at most, in all.
    pub max_future_bytes: usize,
    /// ... and per validator that signed them.
    pub max_future_bytes_per_validator: usize,
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
            max_future_bytes: 64 * 1024 * 1024,
            // Room for a few full proposals (2 MiB of extrinsics each) and many votes.
            max_future_bytes_per_validator: 8 * 1024 * 1024,
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
    BuildBlock { height: u64, round: u32 },
    /// A block was finalized and durably stored: drop its transactions from the pool.
    Finalized {
        header: Header,
        hash: H256,
        /// The consensus round that decided it (above 0: earlier rounds' proposers failed).
        round: i64,
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
    NoValidators { height: u64 },
    /// A WAL record does not decode.
    #[error("corrupt WAL at height {height}: {reason}")]
    CorruptWal { height: u64, reason: String },
    /// A block the network finalized does not execute here: state diverged or the store is
    /// damaged. The node must stop rather than go on with a wrong state.
    #[error("finalized block #{number} does not execute: {reason}")]
    Diverged {
        /// The block's number.
        number: u64,
        reason: String,
    },
}

/// What a message from gossip was worth, for the gossip layer (libp2p gossipsub's
/// validation): whether to forward it, and whether the peer that relayed it misbehaved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Used or kept: forward it.
    Accept,
    /// Harmless but useless here (a repeat, a stale height, no room, or a proposal whose
    /// block we judge invalid: its proposer's doing, not the relay's): do not forward, do not
    /// penalize.
    Ignore,
    /// Provably bad whoever sent it (malformed, not signed by a validator of its height,
    /// a body its header does not cover, a certificate without its quorum): do not forward,
    /// penalize the relay.
    Reject,
}

/// Why a synced block was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncRejected {
    /// Its certificate does not match it or does not verify.
    #[error("bad commit certificate for #{number}: {reason}")]
    BadCertificate {
        /// The block's number.
        number: u64,
        reason: String,
    },
    /// Its body is not the one its header (and so its certificate) commits to: the peer
    /// altered it. Our state has not diverged; the block is fetched from another peer.
    #[error("block #{number} was altered: {reason}")]
    BadBody {
        /// The block's number.
        number: u64,
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
    /// Proposals dropped because a polka for another block in their proof-of-lock round or
    /// their own round is known: only an equivocating proposer signs those (see
    /// `driver/lock_guard.rs`).
    pub polka_contradictions: u64,
    /// Future-height messages dropped: their budget was spent, they were too far ahead, or
    /// they were certificates.
    pub future_dropped: u64,
    /// Bytes of future-height messages held now.
    pub future_buffered_bytes: u64,
    /// Blocks finalized by consensus.
    pub decided: u64,
    /// Blocks imported by sync.
    pub synced: u64,
    /// WAL records replayed at start (after a crash or restart mid-height).
    pub wal_records_replayed: u64,
}
