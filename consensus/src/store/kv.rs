//! The key-value database under the chain store: rocksdb on disk (the node's `rocks.rs`), or
//! [`MemoryDb`] for simulations and tests. The chain store's logic is written once over this
//! trait, so the simulation exercises the same code a node runs.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database reported an error.
    #[error("database error: {reason}")]
    Backend {
        /// What it said.
        reason: String,
    },
}

/// Entries read in key order.
pub type Entries<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), DbError>> + 'a>;

/// A write: `None` deletes.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// An ordered key-value database with atomic batches.
pub trait KeyValueDb: Send + Sync {
    /// The value under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError>;
    /// Applies every write or none; with `durable`, returns only once they are on disk.
    fn write(&self, batch: Vec<Write>, durable: bool) -> Result<(), DbError>;
    /// Entries with keys `>= from`, in key order, read lazily.
    fn iter_from<'a>(&'a self, from: &[u8]) -> Entries<'a>;
}

/// An in-memory database. Clones share the data, so a simulated node can crash (drop its
/// store, and with [`MemoryDb::crash`] lose what was not written durably) and reopen what
/// survived, as after a power loss: durability bugs show in the simulation.
#[derive(Debug, Clone, Default)]
pub struct MemoryDb {
    inner: Arc<Mutex<Layers>>,
}

/// What reads see, and what a crash keeps.
#[derive(Debug, Default)]
struct Layers {
    /// Every write applied: what reads see.
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Writes up to the last durable one: what survives a crash.
    durable: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Batches written without durability since then, in order.
    volatile: Vec<Vec<Write>>,
}

fn apply(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, batch: &[Write]) {
    for (key, value) in batch {
        match value {
            Some(v) => map.insert(key.clone(), v.clone()),
            None => map.remove(key),
        };
    }
}

impl MemoryDb {
    /// An empty database.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loses every write not made durable (by a durable write of its own or one after it),
    /// as a machine losing power would.
    pub fn crash(&self) {
        let mut layers = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        layers.volatile.clear();
        layers.data = layers.durable.clone();
    }
}

/// Entries fetched per lock when iterating.
const CHUNK: usize = 64;

impl KeyValueDb for MemoryDb {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        let layers = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(layers.data.get(key).cloned())
    }

    fn write(&self, batch: Vec<Write>, durable: bool) -> Result<(), DbError> {
        let mut layers = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        apply(&mut layers.data, &batch);
        if durable {
            // A durable write makes everything before it durable too (one log, in order).
            let volatile = std::mem::take(&mut layers.volatile);
            for earlier in &volatile {
                apply(&mut layers.durable, earlier);
            }
            apply(&mut layers.durable, &batch);
        } else {
            layers.volatile.push(batch);
        }
        Ok(())
    }

    fn iter_from<'a>(&'a self, from: &[u8]) -> Entries<'a> {
        let mut next: Option<(Vec<u8>, bool)> = Some((from.to_vec(), true));
        let mut buffer = std::collections::VecDeque::new();
        Box::new(std::iter::from_fn(move || {
            if buffer.is_empty() {
                let (cursor, inclusive) = next.take()?;
                let layers = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
                let data = &layers.data;
                let start = if inclusive {
                    Bound::Included(cursor)
                } else {
                    Bound::Excluded(cursor)
                };
                buffer.extend(
                    data.range::<Vec<u8>, _>((start, Bound::Unbounded))
                        .take(CHUNK)
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
                if buffer.len() == CHUNK {
                    next = buffer
                        .back()
                        .map(|(k, _): &(Vec<u8>, Vec<u8>)| (k.clone(), false));
                }
            }
            buffer.pop_front().map(Ok)
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_crash_keeps_what_a_durable_write_covered_and_loses_the_rest() {
        let db = MemoryDb::new();
        let w = |k: &str, v: &str| (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()));
        db.write(vec![w("a", "1")], false).unwrap();
        db.write(vec![w("b", "2")], true).unwrap();
        db.write(vec![w("c", "3")], false).unwrap();
        db.write(vec![(b"a".to_vec(), None)], false).unwrap();
        assert_eq!(db.get(b"c").unwrap(), Some(b"3".to_vec()));
        assert_eq!(db.get(b"a").unwrap(), None);
        db.crash();
        // "a" was covered by the durable write after it; "c" and the deletion were not.
        assert_eq!(db.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(db.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(db.get(b"c").unwrap(), None);
        let keys: Vec<Vec<u8>> = db.iter_from(b"").map(|e| e.unwrap().0).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
    }
}
