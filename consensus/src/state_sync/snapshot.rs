//! The state of one sync point, kept in memory to answer joining nodes.

use std::collections::BTreeMap;

use drchain_support::trie::{key_path, ChangeSet, Path};
use drchain_support::trie_proof::{summary, SubtreeId};
use drchain_support::{StateTrie, H256};

use super::{StateSyncResponse, SyncTarget, MAX_SUBTREE_BYTES};

/// Why a snapshot could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The entries read do not give the block's state root: they were read at another height.
    #[error("the state read has root {found}, block #{number} has {expected}")]
    WrongRoot {
        number: u64,
        expected: H256,
        found: H256,
    },
}

/// The state after a sync point's block, indexed by trie path.
#[derive(Debug, Clone)]
pub struct StateSnapshot {
    target: SyncTarget,
    by_path: BTreeMap<Path, (Vec<u8>, Vec<u8>)>,
    trie: StateTrie,
}

impl StateSnapshot {
    /// The snapshot of `entries`, which must be the whole state after `target.block`.
    pub fn new(
        target: SyncTarget,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Self, SnapshotError> {
        let changes: ChangeSet = entries
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        let mut trie = StateTrie::default();
        trie.apply(trie.prepare(&changes));
        let header = &target.block.header;
        if trie.root() != header.state_root {
            return Err(SnapshotError::WrongRoot {
                number: header.number,
                expected: header.state_root,
                found: trie.root(),
            });
        }
        let by_path = entries
            .into_iter()
            .map(|(k, v)| (key_path(&k), (k, v)))
            .collect();
        Ok(Self {
            target,
            by_path,
            trie,
        })
    }

    /// The sync point's height.
    pub fn number(&self) -> u64 {
        self.target.block.header.number
    }

    /// The target a joining node checks before asking for the state.
    pub fn target(&self) -> &SyncTarget {
        &self.target
    }

    /// The answer to a request for subtree `id`: its entries when they fit in
    /// [`MAX_SUBTREE_BYTES`] (a single path always fits), else the summaries of its halves.
    pub fn answer(&self, id: &SubtreeId) -> StateSyncResponse {
        if !id.is_valid() {
            return StateSyncResponse::Unavailable;
        }
        let mut bytes = 0;
        let mut entries = vec![];
        for (k, v) in self.by_path.range(id.span()).map(|(_, kv)| kv) {
            bytes += k.len() + v.len();
            if bytes > MAX_SUBTREE_BYTES && !entries.is_empty() {
                if let Some((left, right)) = id.children() {
                    return StateSyncResponse::Split {
                        left: summary(&self.trie, &left),
                        right: summary(&self.trie, &right),
                    };
                }
            }
            entries.push((k.clone(), v.clone()));
        }
        StateSyncResponse::Entries(entries)
    }
}
