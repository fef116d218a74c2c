//! Disk as an operated resource: every [`EVERY`] the node measures its database (RocksDB's
//! estimate of each kind of data, and the files on disk, its own log included) and the free
//! space of the file system it lives on, publishes them as metrics, and warns when that file
//! system is nearly full. (A write that fails for lack of space stops the node cleanly: the
//! database refuses it, the node exits with the error and its agent fences first.)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::rocks::{DbUsage, RocksDb};

/// How often the node measures.
pub const EVERY: Duration = Duration::from_secs(10);
/// Below this share of the file system free, the node warns…
const LOW_FREE_SHARE: f64 = 0.05;
/// …or below this many bytes free, whichever comes first.
const LOW_FREE_BYTES: u64 = 1 << 30;
/// How often the warning repeats while space stays low.
const WARN_EVERY: Duration = Duration::from_secs(600);

/// Space on a file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged writer may still use.
    pub free: u64,
    /// The file system's size.
    pub total: u64,
}

impl Space {
    /// Whether so little is left that an operator must act soon.
    pub fn is_low(&self) -> bool {
        let share = if self.total == 0 {
            0.0
        } else {
            self.free as f64 / self.total as f64
        };
        self.free < LOW_FREE_BYTES || share < LOW_FREE_SHARE
    }
}

/// The free space of the file system holding `path`.
pub fn space(path: &Path) -> std::io::Result<Space> {
    let s = rustix::fs::statvfs(path)?;
    Ok(Space {
        free: s.f_bavail.saturating_mul(s.f_frsize),
        total: s.f_blocks.saturating_mul(s.f_frsize),
    })
}

/// Bytes of the files under `dir` (not following links).
pub fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some(if meta.is_dir() {
                bytes_under(&e.path())
            } else {
                meta.len()
            })
        })
        .sum()
}

/// The finalized blocks a database keeps (besides genesis).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetainedBlocks {
    /// The oldest (0 when there is none but genesis).
    pub oldest: u64,
    pub count: u64,
}

/// What `db` keeps of the chain: pruning and state sync leave a suffix of it.
pub fn retained_blocks(db: &RocksDb) -> Option<RetainedBlocks> {
    let reader = drchain_consensus::store::ChainReader::new(db);
    let head = reader.finalized_number().ok()?;
    if head == 0 {
        return Some(RetainedBlocks::default());
    }
    let oldest = reader.base_number().ok()?.clamp(1, head);
    Some(RetainedBlocks {
        oldest,
        count: head - oldest + 1,
    })
}

/// The database's and its disk's metrics.
#[derive(Debug, Clone, Default)]
pub struct DiskMetrics {
    /// Per kind of data: bytes in the database's files (RocksDB's estimate).
    database: Family<Vec<(&'static str, String)>, Gauge>,
    memtables: Gauge,
    sst_files: Gauge,
    on_disk: Gauge,
    free: Gauge,
    total: Gauge,
    blocks_retained: Gauge,
    oldest_block: Gauge,
}

impl DiskMetrics {
    /// Creates and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "database_bytes",
            "Per kind of data (blocks, certificates, height_index, state, events, consensus_wal): bytes in the database's files, as RocksDB estimates them",
            m.database.clone(),
        );
        registry.register(
            "database_memtable_bytes",
            "Bytes of the database still in memory tables, not yet in files",
            m.memtables.clone(),
        );
        registry.register(
            "database_sst_bytes",
            "Bytes of the database's sorted-table files",
            m.sst_files.clone(),
        );
        registry.register(
            "database_disk_bytes",
            "Bytes of every file in the database's directory (RocksDB's logs included)",
            m.on_disk.clone(),
        );
        registry.register(
            "blocks_retained",
            "Finalized blocks the database keeps besides genesis (--blocks-pruning)",
            m.blocks_retained.clone(),
        );
        registry.register(
            "oldest_block",
            "The oldest block the database keeps besides genesis (0: none yet)",
            m.oldest_block.clone(),
        );
        registry.register(
            "disk_free_bytes",
            "Free bytes on the file system holding the database",
            m.free.clone(),
        );
        registry.register(
            "disk_total_bytes",
            "Size of the file system holding the database",
            m.total.clone(),
        );
        m
    }

    fn record_database(&self, usage: &DbUsage, on_disk: u64) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for (kind, bytes) in &usage.kinds {
            self.database
                .get_or_create(&vec![("kind", (*kind).to_owned())])
                .set(gauge(*bytes));
        }
        self.memtables.set(gauge(usage.memtables));
        self.sst_files.set(gauge(usage.sst_files));
        self.on_disk.set(gauge(on_disk));
    }

    fn record_blocks(&self, retained: RetainedBlocks) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.blocks_retained.set(gauge(retained.count));
        self.oldest_block.set(gauge(retained.oldest));
    }

    fn record_disk(&self, space: Space) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.free.set(gauge(space.free));
        self.total.set(gauge(space.total));
    }
}

/// Measures the database at `path` every [`EVERY`] until dropped (run it as a task).
pub async fn watch(db: RocksDb, path: PathBuf, metrics: DiskMetrics) {
    let mut tick = tokio::time::interval(EVERY);
    let mut warned: Option<Instant> = None;
    loop {
        tick.tick().await;
        let (db2, dir) = (db.clone(), path.clone());
        let measured = tokio::task::spawn_blocking(move || {
            let retained = retained_blocks(&db2);
            (db2.usage(), bytes_under(&dir), space(&dir), retained)
        })
        .await;
        let Ok((usage, on_disk, space, retained)) = measured else {
            return;
        };
        metrics.record_database(&usage, on_disk);
        if let Some(retained) = retained {
            metrics.record_blocks(retained);
        }
        match space {
            Ok(space) => {
                metrics.record_disk(space);
                if space.is_low() && warned.is_none_or(|w| w.elapsed() >= WARN_EVERY) {
                    warned = Some(Instant::now());
                    tracing::warn!(
                        path = %path.display(),
                        free_bytes = space.free,
                        total_bytes = space.total,
                        "the database's disk is nearly full: free space or the node stops \
                         when a write fails"
                    );
                } else if !space.is_low() {
                    warned = None;
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the file system's free space"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn nearly_full_means_under_five_percent_or_one_gib() {
        let gib = 1u64 << 30;
        assert!(!Space {
            free: 50 * gib,
            total: 100 * gib
        }
        .is_low());
        assert!(Space {
            free: 4 * gib,
            total: 100 * gib
        }
        .is_low());
        assert!(Space {
            free: gib / 2,
            total: 4 * gib
        }
        .is_low());
        assert!(Space { free: 0, total: 0 }.is_low());
    }

    #[test]
    fn the_blocks_kept_follow_pruning() {
        use drchain_consensus::store::{BlocksPruning, ChainStore};
        use drchain_consensus::testing::import_next;
        let dir = tempfile::tempdir().unwrap();
        let g = drchain_runtime::dev::specs::local()
            .unwrap()
            .build_genesis()
            .unwrap();
        let db = RocksDb::open(dir.path()).unwrap();
        let mut store = ChainStore::open(db.clone(), &g).unwrap();
        assert_eq!(retained_blocks(&db), Some(RetainedBlocks::default()));
        import_next(&mut store, &g);
        assert_eq!(
            retained_blocks(&db),
            Some(RetainedBlocks {
                oldest: 1,
                count: 1
            })
        );
        store.set_blocks_pruning(BlocksPruning::Last(256));
        for _ in 0..299 {
            import_next(&mut store, &g);
        }
        assert_eq!(
            retained_blocks(&db),
            Some(RetainedBlocks {
                oldest: 45,
                count: 256
            })
        );
    }

    #[test]
    fn the_free_space_and_the_files_of_a_directory_are_measured() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("sub/b"), [0u8; 24]).unwrap();
        assert_eq!(bytes_under(dir.path()), 1024);
        let space = space(dir.path()).unwrap();
        assert!(space.total > 0 && space.free <= space.total, "{space:?}");
    }
}
