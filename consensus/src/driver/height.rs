//! What consensus keeps for the height being decided. The driver replaces it with a fresh one
//! when the height is finalized, so nothing of one height leaks into the next.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use drchain_runtime::ExecutedBlock;
use drchain_support::{AccountId, Signature, H256};

use malachitebft_core_consensus::ProposedValue;
use malachitebft_core_types::SignedProposal;

use crate::codec::WalRecord;
use crate::context::{BlockValue, Ctx};

/// A vote slot: (vote type code, round, validator).
pub(super) type VoteSlot = (u8, i64, AccountId);

/// Per-height consensus state, outside the core's own.
#[derive(Default)]
pub(super) struct HeightState {
    /// Our signed vote per (type, round): never sign two different ones.
    pub(super) sign_guard: HashMap<(u8, i64), Option<H256>>,
    /// Signatures already verified (see `Host::check_signature`).
    pub(super) verified: HashSet<H256>,
    /// The round the core asked us to propose in, not yet answered.
    pub(super) build_request: Option<u32>,
    /// WAL records of the input being handled; written before its outputs leave.
    pub(super) wal_buffer: Vec<WalRecord>,
    /// The first vote accepted per slot, with its signature: a second, different one from the
    /// same validator is equivocation and is dropped.
    pub(super) seen_votes: BTreeMap<VoteSlot, (Option<H256>, Signature)>,
    /// Certificates applied (see `new_with_quorum`): repeats are dropped before the WAL.
    pub(super) applied_certificates: BTreeSet<super::intake::CertificateKey>,
    /// Rounds whose proposal was accepted.
    pub(super) seen_proposals: BTreeSet<i64>,
    /// Accepted proposals for rounds the core has not reached, by round (see
    /// `driver/lock_guard.rs`); at most one per round, rounds bounded by `max_round_ahead`.
    pub(super) parked_proposals: BTreeMap<i64, (ProposedValue<Ctx>, SignedProposal<Ctx>)>,
    /// Executions of the blocks validated, by hash (a decided one is imported without
    /// executing it again).
    pub(super) executed: HashMap<H256, ExecutedBlock>,
    /// Blocks we proposed, by round: a restarted proposer re-proposes the same block.
    pub(super) own_proposals: BTreeMap<u32, BlockValue>,
}
