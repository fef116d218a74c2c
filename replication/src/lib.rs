//! # drchain-replication
//!
//! The data half of a disaster-recovery checkpoint. The active node of a service cuts its
//! data into content-defined chunks ([`chunk`]), keeps them once in a compressed,
//! content-addressed store ([`store`], [`compress`] with a zstd dictionary trained on the
//! service's own chunks) and lists them in a manifest ([`manifest`]) whose blake3 root is what
//! the chain records. A standby fetches what it lacks, verifies every byte against those
//! names, and switches its target directory to the checkpoint atomically ([`materialize`]).
//!
//! Nothing here uses tokio or the network: the node moves chunks between peers, the agent
//! decides when to take and apply checkpoints.

#![forbid(unsafe_code)]

pub mod assemble;
pub mod changes;
pub mod chunk;
pub mod compress;
pub mod error;
pub mod manifest;
pub mod materialize;
pub mod push;
pub mod snapshot;
pub mod store;
#[doc(hidden)]
pub mod testdata;
pub mod transfer;

pub use assemble::Assembly;
pub use changes::Changes;
pub use chunk::{ChunkId, ChunkingParams};
pub use compress::Dictionary;
pub use error::ReplicationError;
pub use manifest::Manifest;
pub use materialize::{materialize, materialize_after};
pub use snapshot::{
    snapshot_dir, snapshot_dir_cached, snapshot_dir_deferred, FileCache, Unwritten,
};
pub use store::ChunkStore;
