//! rocksdb under the chain store. Durable writes are synced (fsync of rocksdb's log) before
//! they return: the consensus WAL relies on it.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB};

use drchain_consensus::store::kv::{DbError, Entries, KeyValueDb, Write};

/// A rocksdb database. Clones share it: the node loop writes, the RPC server and the agent
/// read through [`RocksDb::snapshot`].
#[derive(Debug, Clone)]
pub struct RocksDb {
    db: Arc<DB>,
}

fn backend(e: rocksdb::Error) -> DbError {
    DbError::Backend {
        reason: e.into_string(),
    }
}

impl RocksDb {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let db = DB::open(&options, path).map_err(backend)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// How much each kind of data takes, as RocksDB estimates it from its files (compressed;
    /// data still in memtables is counted apart).
    pub fn usage(&self) -> DbUsage {
        let kinds = drchain_consensus::store::KEY_SPACES
            .iter()
            .map(|(kind, prefixes)| {
                let bytes = prefixes
                    .iter()
                    .map(|prefix| {
                        let end = prefix_end(prefix);
                        self.db
                            .get_approximate_sizes(&[rocksdb::Range::new(prefix, &end)])
                            .first()
                            .copied()
                            .unwrap_or(0)
                    })
                    .sum();
                (*kind, bytes)
            })
            .collect();
        let property = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        DbUsage {
            kinds,
            memtables: property("rocksdb.cur-size-all-mem-tables"),
            sst_files: property("rocksdb.total-sst-files-size"),
        }
    }

    /// Writes the memtables to files (RocksDB does so by itself when they fill): what a
    /// measurement of the settled size calls first.
    pub fn flush(&self) -> Result<(), DbError> {
        self.db.flush().map_err(backend)
    }

    /// A consistent read-only view: every read sees the database as it was now, so a query of
    /// several keys never mixes two blocks' states.
    pub fn snapshot(&self) -> RocksSnapshot<'_> {
        RocksSnapshot {
            snapshot: self.db.snapshot(),
        }
    }
}

/// The first key after every key starting with `prefix` (prefixes here end in `/`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last = last.saturating_add(1);
    }
    end
}

/// The database's size by kind of data ([`RocksDb::usage`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbUsage {
    /// Bytes in files per kind (`blocks`, `certificates`, `height_index`, `state`, `events`,
    /// `consensus_wal`).
    pub kinds: Vec<(&'static str, u64)>,
    /// Bytes in memtables, not yet in files.
    pub memtables: u64,
    /// Bytes of all sorted-table files.
    pub sst_files: u64,
}

/// A point-in-time view of a [`RocksDb`]; writing to it is an error.
pub struct RocksSnapshot<'a> {
    snapshot: rocksdb::Snapshot<'a>,
}

impl std::fmt::Debug for RocksSnapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RocksSnapshot")
    }
}

impl KeyValueDb for RocksSnapshot<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        self.snapshot.get(key).map_err(backend)
    }

    fn write(&self, _batch: Vec<Write>, _durable: bool) -> Result<(), DbError> {
        Err(DbError::Backend {
            reason: "a snapshot is read-only".into(),
        })
    }

    fn iter_from<'b>(&'b self, from: &[u8]) -> Entries<'b> {
        Box::new(
            self.snapshot
                .iterator_opt(
                    IteratorMode::From(from, Direction::Forward),
                    ReadOptions::default(),
                )
                .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend)),
        )
    }
}

impl KeyValueDb for RocksDb {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        self.db.get(key).map_err(backend)
    }

    fn write(&self, batch: Vec<Write>, durable: bool) -> Result<(), DbError> {
        let mut wb = WriteBatch::default();
        for (key, value) in batch {
            match value {
                Some(v) => wb.put(key, v),
                None => wb.delete(key),
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(durable);
        self.db.write_opt(wb, &options).map_err(backend)
    }

    fn iter_from<'a>(&'a self, from: &[u8]) -> Entries<'a> {
        Box::new(
            self.db
                .iterator(IteratorMode::From(from, Direction::Forward))
                .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend)),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use drchain_consensus::store::ChainStore;
    use drchain_consensus::testing::{import_next, vote_record};
    use drchain_runtime::dev::specs;
    use drchain_support::Backend;

    use super::RocksDb;

    #[test]
    fn rocksdb_keeps_blocks_state_and_wal_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let g = specs::local().unwrap().build_genesis().unwrap();
        let hash = {
            let mut store = ChainStore::open(RocksDb::open(dir.path()).unwrap(), &g).unwrap();
            let hash = import_next(&mut store, &g);
            store.wal_append(2, &[vote_record(0)], true).unwrap();
            hash
        };
        let store = ChainStore::open(RocksDb::open(dir.path()).unwrap(), &g).unwrap();
        assert_eq!(store.head().number, 1);
        assert_eq!(store.head().hash(), hash);
        assert_eq!(store.state().root(), store.head().state_root);
        assert_eq!(store.wal(2).unwrap(), vec![vote_record(0)]);
    }
}
