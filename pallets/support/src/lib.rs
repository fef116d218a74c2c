//! drchain-support: the primitives and the small pallet framework every pallet and the runtime
//! share.
//!
//! Nothing here performs I/O or reads a clock: the runtime built on it must be deterministic,
//! so the same parent state and the same block give the same state root on every node.

#![forbid(unsafe_code)]

pub mod dispatch;
pub mod primitives;
pub mod service;
pub mod storage;
pub mod trie;
pub mod trie_proof;

pub use dispatch::{BlockInfo, Env, Hooks, Origin};
pub use primitives::{
    blake3_hash, AccountId, BlockNumber, Epoch, Hash, Moment, Nonce, Signature, H256,
};
pub use service::{
    Health, ServiceDirectory, ServiceError, ServiceName, ServiceNameError, StaticDirectory,
    StaticService,
};
pub use storage::{Backend, MemoryState, Overlay, StateRead};
pub use trie::{ChangeSet, StateTrie, TrieDelta, TrieStore};

/// Re-exported so the storage macros work in crates that name the codec differently.
pub use parity_scale_codec as codec;
