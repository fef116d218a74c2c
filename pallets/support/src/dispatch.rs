//! Dispatch: who calls, in which block, and where events go.

use parity_scale_codec::{Decode, Encode};

use crate::primitives::{AccountId, BlockNumber, Moment, H256};
use crate::storage::Overlay;

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum Origin {
    /// A transaction signed by this account (already verified by the runtime).
    Signed(AccountId),
    /// The admins, after enough of them approved the call.
    Admin,
}

/// Error for a call made by the wrong kind of origin. Every pallet's `Error` wraps it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, thiserror::Error)]
#[error("bad origin: this call needs {needed} origin")]
pub struct BadOrigin {
    /// The origin the call needs.
    pub needed: String,
}

impl BadOrigin {
    /// An error saying the call needs `needed` origin.
    pub fn needs(needed: &str) -> Self {
        Self {
            needed: needed.to_string(),
        }
    }
}

impl Origin {
    /// The signing account, or an error for admin origin.
    pub fn signed(&self) -> Result<AccountId, BadOrigin> {
        match self {
            Origin::Signed(who) => Ok(*who),
            Origin::Admin => Err(BadOrigin::needs("a signed")),
        }
    }

    /// Ok for admin origin.
    pub fn admin(&self) -> Result<(), BadOrigin> {
        match self {
            Origin::Admin => Ok(()),
            Origin::Signed(_) => Err(BadOrigin::needs("admin")),
        }
    }
}

/// The block being built or executed, as the pallets see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockInfo {
    /// Height of the block.
    pub number: BlockNumber,
    /// Header timestamp (ms since the Unix epoch), chosen by the proposer.
    pub timestamp: Moment,
    /// The live clock at this block: it advances by at most the chain's max gap per block, so a
    /// consensus stall does not age heartbeats.
    pub live_now: Moment,
    /// Hash of the parent block.
    pub parent_hash: H256,
}

/// What a pallet function works on: the state, the block, and an event sink.
pub struct Env<'e, 's, E> {
    /// State with this block's pending writes.
    pub state: &'e mut Overlay<'s>,
    pub block: BlockInfo,
    events: &'e mut Vec<E>,
}

impl<E> std::fmt::Debug for Env<'_, '_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").field("block", &self.block).finish()
    }
}

impl<'e, 's, E> Env<'e, 's, E> {
    /// An environment over `state` for `block`, appending events to `events`.
    pub fn new(state: &'e mut Overlay<'s>, block: BlockInfo, events: &'e mut Vec<E>) -> Self {
        Self {
            state,
            block,
            events,
        }
    }

    /// Records an event.
    pub fn deposit(&mut self, event: impl Into<E>) {
        self.events.push(event.into());
    }

    /// Number of events recorded so far (so a caller can drop those of a rolled-back call).
    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// Drops events recorded after `count`.
    pub fn truncate_events(&mut self, count: usize) {
        self.events.truncate(count);
    }
}

/// A pallet's block hooks, called by the runtime for every pallet in index order. The defaults
/// do nothing.
pub trait Hooks<E> {
    /// Start of the block, before any extrinsic.
    fn on_initialize(_env: &mut Env<'_, '_, E>) {}
    /// End of the block, after every extrinsic.
    fn on_finalize(_env: &mut Env<'_, '_, E>) {}
}
