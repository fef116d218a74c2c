//! What can go wrong in replication, each with what a person needs to act on it.

use std::path::PathBuf;

use drchain_support::H256;

use crate::chunk::ChunkingParams;

/// A replication failure.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// A file or directory could not be read.
    #[error("cannot read {what}: {reason}")]
    Read {
        /// What was being read.
        what: String,
        /// Why not.
        reason: String,
    },
    /// A file or directory could not be written (disk full, permissions).
    #[error("cannot write {path}: {source}")]
    Write {
        /// Where.
        path: PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// Chunking parameters outside FastCDC's limits or ours.
    #[error("chunking parameters {params:?} are invalid (even sizes, a power-of-two average, max at most 1 MiB)")]
    BadChunkingParams {
        /// The params.
        params: ChunkingParams,
    },
    /// Bytes claimed to be chunk `id` are not (corrupted or forged).
    #[error("chunk {id} does not match its name: {reason}")]
    BadChunk {
        /// The chunk's name.
        id: H256,
        /// What was wrong.
        reason: String,
    },
    /// A manifest whose bytes do not hash to the root it was asked for.
    #[error("manifest does not match root {expected} (it hashes to {actual})")]
    ManifestRootMismatch {
        /// The root asked for.
        expected: H256,
        /// What the bytes hash to.
        actual: H256,
    },
    /// A manifest that does not decode or breaks the format's rules.
    #[error("invalid manifest: {reason}")]
    BadManifest {
        /// What is wrong.
        reason: String,
    },
    /// A transfer message from a peer that does not decode or exceeds its bounds.
    #[error("invalid transfer message: {reason}")]
    BadMessage {
        /// What is wrong.
        reason: String,
    },
    /// A chunk or dictionary the operation needs is not in the store.
    #[error("{what} {id} is not in the chunk store")]
    Missing {
        /// `chunk` or `dictionary`.
        what: &'static str,
        /// Its name.
        id: H256,
    },
    /// zstd failed.
    #[error("compression: {reason}")]
    Compression {
        /// zstd's message.
        reason: String,
    },
    /// The target exists and is not a checkpoint link drchain manages.
    #[error(
        "{path} exists and is not a link drchain manages; move it away or choose another target"
    )]
    TargetNotManaged {
        /// The target.
        path: PathBuf,
    },
}

impl ReplicationError {
    /// A write failure at `path`.
    pub fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Write {
            path: path.into(),
            source,
        }
    }

    /// A read failure of `what`.
    pub fn read(what: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Self::Read {
            what: what.to_string(),
            reason: reason.to_string(),
        }
    }
}
