//! What a node keeps of the past: blocks (`--blocks-pruning`) and states (`--state-pruning`).

use drchain_support::{ChangeSet, StateRead};
use parity_scale_codec::Encode;

use super::kv::{KeyValueDb, Write};
use super::*;

/// Which finalized blocks a node keeps (`--blocks-pruning`, Substrate's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlocksPruning {
    /// Every block. With BFT finality every stored block is canonical, so Substrate's
    /// `archive` and `archive-canonical` are the same here.
    Archive,
    /// The last N finalized blocks with their certificates, events and height index
    /// (genesis, the failover log and validator-set change proofs are always kept).
    Last(u64),
}

impl BlocksPruning {
    /// The fewest blocks a pruning node keeps: lagging peers sync from them.
    pub const MIN_KEPT: u64 = 256;
    /// The default: about an hour at the idle block rate.
    pub const DEFAULT: Self = Self::Last(16_384);
}

impl std::str::FromStr for BlocksPruning {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "archive" | "archive-canonical" => Ok(Self::Archive),
            n => match n.parse::<u64>() {
                Ok(n) if n >= Self::MIN_KEPT => Ok(Self::Last(n)),
                _ => Err(format!(
                    "expected archive, archive-canonical or a number of blocks of at least {}",
                    Self::MIN_KEPT
                )),
            },
        }
    }
}

/// Which past states a node can answer queries at (`--state-pruning`, Substrate's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatePruning {
    /// The state of every block since the node's first (genesis, or its state sync).
    Archive,
    /// The state of the last N finalized blocks.
    Last(u64),
}

impl StatePruning {
    /// Substrate's default.
    pub const DEFAULT: Self = Self::Last(256);
}

impl std::str::FromStr for StatePruning {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "archive" | "archive-canonical" => Ok(Self::Archive),
            n => match n.parse::<u64>() {
                Ok(n) if n >= 1 => Ok(Self::Last(n)),
                _ => Err("expected archive or a number of blocks of at least 1".into()),
            },
        }
    }
}

/// What one block's changes replaced: each changed key with its value before the block
/// (`None`: it was absent).
pub(super) type UndoLog = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Blocks pruned at most per import: a node restarted with a smaller `--blocks-pruning` works
/// off its backlog a little at each block instead of stalling on it.
pub(super) const PRUNED_PER_IMPORT: u64 = 64;

impl<D: KeyValueDb> ChainStore<D> {
    /// Keeps only the past states `pruning` says from the next import on.
    pub fn set_state_pruning(&mut self, pruning: StatePruning) {
        self.state_pruning = pruning;
    }

    /// The undo log of a block's `changes` (read before they are written), and the deletes of
    /// the undo logs that fall out of the state retention (at most [`PRUNED_PER_IMPORT`]),
    /// with the new state base.
    pub(super) fn history_writes(
        &self,
        number: u64,
        changes: &ChangeSet,
    ) -> Result<(Vec<Write>, u64), StoreError> {
        let state = self.state();
        let undo: UndoLog = changes
            .keys()
            .map(|k| (k.clone(), StateRead::get(&state, k)))
            .collect();
        let mut batch = vec![(key(UNDO, &number.to_be_bytes()), Some(undo.encode()))];
        let StatePruning::Last(keep) = self.state_pruning else {
            return Ok((batch, self.state_base));
        };
        // The state of `number - keep` needs the undo logs above it.
        let lowest = number.saturating_sub(keep);
        let to = lowest.min(self.state_base + PRUNED_PER_IMPORT);
        if to <= self.state_base {
            return Ok((batch, self.state_base));
        }
        for n in self.state_base + 1..=to {
            batch.push((key(UNDO, &n.to_be_bytes()), None));
        }
        batch.push((META_STATE_BASE.to_vec(), Some(to.encode())));
        Ok((batch, to))
    }

    /// Keeps only the blocks `pruning` says from the next import on.
    pub fn set_blocks_pruning(&mut self, pruning: BlocksPruning) {
        self.pruning = pruning;
    }

    /// The deletes that prune blocks below the retention after importing block `number`, and
    /// the new base (at most [`PRUNED_PER_IMPORT`] blocks at a time).
    pub(super) fn prune_writes(&self, number: u64) -> Result<(Vec<Write>, u64), StoreError> {
        let BlocksPruning::Last(keep) = self.pruning else {
            return Ok((vec![], self.base));
        };
        let lowest_kept = (number + 1).saturating_sub(keep).max(1);
        let from = self.base.max(1);
        let to = lowest_kept.min(from + PRUNED_PER_IMPORT);
        let mut batch = vec![];
        for n in from..to {
            let index = key(HASH_BY_NUMBER, &n.to_be_bytes());
            if let Some(hash) = self.hash(n)? {
                batch.push((key(BLOCK_BY_HASH, &hash.0), None));
            }
            batch.push((index, None));
            batch.push((key(CERTIFICATE, &n.to_be_bytes()), None));
            batch.push((key(EVENTS, &n.to_be_bytes()), None));
        }
        if to > from {
            batch.push((META_BASE.to_vec(), Some(to.encode())));
            return Ok((batch, to));
        }
        Ok((batch, self.base))
    }
}
