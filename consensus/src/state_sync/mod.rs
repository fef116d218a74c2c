//! State sync (`--sync fast`): a node with an empty database downloads the state of a recent
//! finalized block from its peers instead of replaying every block since genesis, then follows
//! the chain from there. Join time grows with the state and the number of validator-set
//! changes, not with the chain's length.
//!
//! - Serving ([`StateSnapshot`]): every node keeps the state of its last [`SNAPSHOTS_KEPT`]
//!   sync points (finalized heights that are multiples of [`SYNC_POINT_INTERVAL`]) in memory,
//!   so every peer serves the same heights while the chain moves on.
//! - Trusting ([`target`]): the target block's certificate is checked against the validator
//!   set, followed from genesis through each proven set change.
//! - Downloading ([`StateSyncClient`]): the state is fetched one subtree of the state trie at
//!   a time, from several peers at once; each answer is checked against the summary its
//!   parent vouched for (down from the target's state root), so a peer that sends one wrong
//!   byte is caught at once and the subtree is asked of another.
//!
//! Sans-I/O like the driver: the node moves the messages and the time.

mod client;
mod snapshot;
pub mod target;

use drchain_support::trie_proof::{SubtreeId, SubtreeSummary};
use parity_scale_codec::{Decode, Encode};

pub use client::{Entries, Finished, Misbehaviour, Outcome, StateSyncClient};
pub use snapshot::{SnapshotError, StateSnapshot};
pub use target::{SetChange, SyncTarget, TargetError, TrustRoot};

/// Sync points are the finalized heights that are multiples of this: about a minute apart at
/// the idle block rate, so a joining node has minutes to download a snapshot's state.
pub const SYNC_POINT_INTERVAL: u64 = 256;
/// Sync points whose state a node keeps to serve.
pub const SNAPSHOTS_KEPT: usize = 3;
/// The most entry bytes (keys and values) one answer carries: a larger subtree is split.
pub const MAX_SUBTREE_BYTES: usize = 512 * 1024;

/// A question to a peer about its sync points.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum StateSyncRequest {
    /// Its latest sync point.
    #[codec(index = 0)]
    Target,
    /// One subtree of the state at a sync point.
    #[codec(index = 1)]
    Subtree { height: u64, id: SubtreeId },
}

/// A peer's answer.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum StateSyncResponse {
    /// Its latest sync point, if it has one.
    #[codec(index = 0)]
    Target(Option<Box<SyncTarget>>),
    /// Every entry of the subtree asked for.
    #[codec(index = 1)]
    Entries(Vec<(Vec<u8>, Vec<u8>)>),
    /// The subtree is too large for one answer: the summaries of its halves.
    #[codec(index = 2)]
    Split {
        left: SubtreeSummary,
        right: SubtreeSummary,
    },
    /// It keeps no state of that height (any more).
    #[codec(index = 3)]
    Unavailable,
}

#[cfg(test)]
mod tests;
