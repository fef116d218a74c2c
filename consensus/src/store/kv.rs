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

/// An in-memory database. Clones share the data, so a simulated node can "crash" (drop its
/// store) and reopen what it had written.
#[derive(Debug, Clone, Default)]
pub struct MemoryDb {
    data: Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>,
}

impl MemoryDb {
    /// An empty database.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Entries fetched per lock when iterating.
const CHUNK: usize = 64;

impl KeyValueDb for MemoryDb {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        let data = self.data.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(data.get(key).cloned())
    }

    fn write(&self, batch: Vec<Write>, _durable: bool) -> Result<(), DbError> {
        let mut data = self.data.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, value) in batch {
            match value {
                Some(v) => data.insert(key, v),
                None => data.remove(&key),
            };
        }
        Ok(())
    }

    fn iter_from<'a>(&'a self, from: &[u8]) -> Entries<'a> {
        let mut next: Option<(Vec<u8>, bool)> = Some((from.to_vec(), true));
        let mut buffer = std::collections::VecDeque::new();
        Box::new(std::iter::from_fn(move || {
            if buffer.is_empty() {
                let (cursor, inclusive) = next.take()?;
                let data = self.data.lock().unwrap_or_else(PoisonError::into_inner);
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
