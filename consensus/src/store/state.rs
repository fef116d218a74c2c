//! The finalized state as the runtime and the trie read it from the database.

use std::ops::RangeInclusive;

use drchain_support::trie::{self, NodeKey, Path};
use drchain_support::{Backend, ChangeSet, StateRead, TrieDelta, TrieStore, H256};

use super::kv::KeyValueDb;
use super::{key, node_key, LEAF, STATE};

/// The finalized state, read from the database. Reads that fail are logged and read as
/// absent: execution then yields a different state root and the block is refused, which is
/// the safe outcome.
#[derive(Debug)]
pub struct StoreState<'a, D: ?Sized> {
    pub(super) db: &'a D,
}

impl<D: KeyValueDb + ?Sized> StoreState<'_, D> {
    fn read(&self, k: &[u8]) -> Option<Vec<u8>> {
        match self.db.get(k) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(key = %hex::encode(k), error = %e, "state read failed");
                None
            }
        }
    }
}

impl<D: KeyValueDb + ?Sized> StateRead for StoreState<'_, D> {
    fn get(&self, k: &[u8]) -> Option<Vec<u8>> {
        self.read(&key(STATE, k))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let full = key(STATE, prefix);
        let mut out = vec![];
        for item in self.db.iter_from(&full) {
            match item {
                Ok((k, v)) if k.starts_with(&full) => out.push((k[STATE.len()..].to_vec(), v)),
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, "state scan failed");
                    break;
                }
            }
        }
        out
    }
}

impl<D: KeyValueDb + ?Sized> TrieStore for StoreState<'_, D> {
    fn leaves<'b>(
        &'b self,
        range: RangeInclusive<Path>,
    ) -> Box<dyn Iterator<Item = (Path, drchain_support::H256)> + 'b> {
        let end = *range.end();
        Box::new(
            self.db
                .iter_from(&key(LEAF, range.start()))
                .map_while(move |item| {
                    let (k, v) = item.ok()?;
                    let path: Path = k.strip_prefix(LEAF)?.try_into().ok()?;
                    let hash: [u8; 32] = v.try_into().ok()?;
                    (path <= end).then_some((path, H256(hash)))
                }),
        )
    }

    fn node(&self, node: &NodeKey) -> Option<H256> {
        let bytes = self.read(&node_key(node))?;
        bytes.try_into().ok().map(H256)
    }
}

impl<D: KeyValueDb + ?Sized> Backend for StoreState<'_, D> {
    fn prepare(&self, changes: &ChangeSet) -> TrieDelta {
        trie::prepare(self, changes)
    }

    fn root(&self) -> H256 {
        self.read(b"m/root")
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(H256)
            .unwrap_or_default()
    }
}
