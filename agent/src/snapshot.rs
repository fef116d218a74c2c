//! Taking a checkpoint of a service's data on its active node: a consistent copy — the
//! service's snapshot command writing into an empty directory, or the watched source directory
//! as it is (its files replaced atomically by the service) — cut into the node's chunk store,
//! and its manifest; nothing when the data did not change since the previous checkpoint.
//!
//! The agent's loop decides when (every `interval_ms` while the node is active); this module
//! only takes one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use drchain_replication::manifest::EncodedManifest;
use drchain_replication::push::MAX_PUSH_BYTES;
use drchain_replication::snapshot::SnapshotStats;
use drchain_replication::store::StoreHold;
use drchain_replication::{
    snapshot_dir_deferred, Changes, ChunkStore, ChunkingParams, Dictionary, FileCache, Manifest,
    ReplicationError, Unwritten,
};
use drchain_support::{ServiceName, H256};

use crate::blocking::{Work, SMALL_BYTES, SMALL_CHANGED_FILES, SMALL_FILES};
use crate::process::{self, ProcessOutcome};

/// How a consistent copy of the service's data is obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consistency {
    /// `sh -c COMMAND drchain-snapshot DIR` writes a consistent copy into the empty `DIR`
    /// (also `$DRCHAIN_SNAPSHOT_DIR`; the source is `$DRCHAIN_SOURCE`).
    Command {
        /// The command.
        command: String,
        /// Longest it may run; then it is killed with its process group.
        timeout: Duration,
    },
    /// The source directory is read as it is.
    Watch,
}

/// Why no checkpoint was taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot command did not succeed.
    #[error("snapshot command {outcome}")]
    Command {
        /// How it ended.
        outcome: ProcessOutcome,
    },
    /// The snapshot command succeeded without writing anything.
    #[error("snapshot command succeeded but wrote nothing into {dir}")]
    Empty {
        /// The directory it was given.
        dir: PathBuf,
    },
    /// The watched source directory is gone.
    #[error("source directory {dir} does not exist")]
    SourceMissing {
        /// The source.
        dir: PathBuf,
    },
    /// The scratch directory could not be prepared.
    #[error("cannot prepare {path}: {source}")]
    Scratch {
        /// Where.
        path: PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// Chunking or storing failed (disk full, unreadable file).
    #[error(transparent)]
    Replication(#[from] ReplicationError),
}

impl SnapshotError {
    /// A label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SnapshotError::Command { outcome } => outcome.label(),
            SnapshotError::Empty { .. } => "empty",
            SnapshotError::SourceMissing { .. } => "source_missing",
            SnapshotError::Scratch { .. } | SnapshotError::Replication(_) => "storage",
        }
    }
}

/// A checkpoint taken.
#[derive(Debug)]
pub struct Taken {
    /// Its manifest.
    pub manifest: Arc<Manifest>,
    /// The manifest's encoding and root, computed once (the root is compared, recorded and
    /// pushed; the encoding pushed and stored).
    pub encoded: Arc<EncodedManifest>,
    /// What was read and stored.
    pub stats: SnapshotStats,
    /// How long taking it was expected to take: building its push is as small.
    pub(crate) work: Work,
    /// Its new objects not in the store yet (at most [`MAX_UNWRITTEN_BYTES`]: the rest is);
    /// neither is its manifest. Push them, then write both ([`Taken::write`]).
    unwritten: Unwritten,
    /// Keeps the store from collecting the new objects before the manifest naming them is
    /// written.
    hold: Option<StoreHold>,
    /// The producer's cache, which already counts the new objects as stored: cleared if they
    /// never are (a failed write, or dropped unwritten), else the next checkpoint would name
    /// chunks no store holds.
    cache: Arc<Mutex<FileCache>>,
}

/// New objects of a checkpoint held in memory at most before they are stored: as much as one
/// push carries (a larger checkpoint is announced, not pushed, and needs them stored first).
pub const MAX_UNWRITTEN_BYTES: usize = MAX_PUSH_BYTES;

impl Taken {
    /// What is not in the store yet.
    pub fn unwritten(&self) -> &Unwritten {
        &self.unwritten
    }

    /// Writes what is not in `store` yet (not flushed: the caller flushes before the
    /// checkpoint is recorded).
    pub async fn write(mut self, store: Arc<ChunkStore>) -> Result<(), ReplicationError> {
        let unwritten = std::mem::take(&mut self.unwritten);
        let (hold, cache, manifest) = (self.hold.take(), self.cache.clone(), self.encoded.clone());
        let dir = store.dir().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let written = unwritten.write(&store, &manifest);
            if written.is_err() {
                forget(&cache);
            }
            drop(hold);
            written
        })
        .await
        .unwrap_or_else(|e| {
            Err(ReplicationError::write(
                dir,
                std::io::Error::other(format!("storing task failed: {e}")),
            ))
        })
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if !self.unwritten.is_empty() {
            forget(&self.cache);
        }
    }
}

/// The next snapshot reads every file (whatever a watcher noted).
pub fn forget_changes(changes: &Mutex<Changes>) {
    changes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .note_everything();
}

/// Clears what `cache` knows: the next snapshot reads and stores every file again.
fn forget(cache: &Mutex<FileCache>) {
    *cache.lock().unwrap_or_else(PoisonError::into_inner) = FileCache::default();
}

/// Where and how one service's checkpoints are taken.
#[derive(Debug, Clone)]
pub struct Producer {
    /// The service.
    pub service: ServiceName,
    /// The directory the service writes.
    pub source: PathBuf,
    /// How to get a consistent copy.
    pub consistency: Consistency,
    /// A directory of the agent's own for snapshot commands' output.
    pub scratch: PathBuf,
    /// How files are cut.
    pub chunking: ChunkingParams,
    /// What the previous checkpoints read, so unchanged files of a watched source are not
    /// read again (a snapshot command's fresh copies are always read).
    pub cache: Arc<Mutex<FileCache>>,
    /// What changed in a watched source since the last checkpoint, as its watcher saw it:
    /// the next checkpoint looks at those paths only (everything, until a watcher notes
    /// otherwise; [`Changes::note_everything`] forces a full reading).
    pub changes: Arc<Mutex<Changes>>,
}

impl Producer {
    /// Takes a checkpoint into `store`, or `None` when its root equals `previous`.
    pub async fn take(
        &self,
        store: Arc<ChunkStore>,
        dictionary: Option<Arc<Dictionary>>,
        previous: Option<H256>,
    ) -> Result<Option<Taken>, SnapshotError> {
        // Until its manifest is stored, nothing names the new chunks: no collection meanwhile.
        let hold = store.hold();
        let (dir, scratch) = match &self.consistency {
            Consistency::Command { command, timeout } => {
                let dir = self.prepare_scratch()?;
                let dir_arg = dir.display().to_string();
                let mut cmd = process::shell(command, "drchain-snapshot", &[&dir_arg]);
                cmd.env("DRCHAIN_SNAPSHOT_DIR", &dir)
                    .env("DRCHAIN_SOURCE", &self.source)
                    .env("DRCHAIN_SERVICE", self.service.as_str());
                let outcome = process::run(cmd, *timeout).await;
                if !outcome.ok() {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(SnapshotError::Command { outcome });
                }
                if is_empty(&dir) {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(SnapshotError::Empty { dir });
                }
                (dir, true)
            }
            Consistency::Watch => {
                if !self.source.is_dir() {
                    return Err(SnapshotError::SourceMissing {
                        dir: self.source.clone(),
                    });
                }
                (self.source.clone(), false)
            }
        };
        let chunking = self.chunking;
        let read = dir.clone();
        let cache = self.cache.clone();
        // What the watcher notes from now on is for the next checkpoint.
        let changes = (!scratch).then(|| {
            let mut changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut *changes, Changes::none())
        });
        let size = match &changes {
            Some(changes) => {
                let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                work_of(&read, &cache, &store, changes)
            }
            None => Work::Large,
        };
        let result = crate::blocking::on_this_thread(size, move || {
            let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
            snapshot_dir_deferred(
                &read,
                &store,
                chunking,
                dictionary.as_deref(),
                &mut cache,
                MAX_UNWRITTEN_BYTES,
                changes.as_ref(),
            )
            .map(|(manifest, stats, unwritten)| {
                let encoded = manifest.encoded();
                (manifest, encoded, stats, unwritten)
            })
        })
        .unwrap_or_else(|e| {
            Err(ReplicationError::read(
                dir.display(),
                format!("chunking failed: {e}"),
            ))
        });
        if scratch {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let (manifest, encoded, stats, unwritten) = result.inspect_err(|_| {
            // The changes taken for this checkpoint are not in any: read everything next.
            forget_changes(&self.changes);
        })?;
        if Some(encoded.root) == previous {
            return Ok(None);
        }
        Ok(Some(Taken {
            manifest: Arc::new(manifest),
            encoded: Arc::new(encoded),
            stats,
            unwritten,
            hold: Some(hold),
            cache: self.cache.clone(),
            work: size,
        }))
    }

    /// An empty scratch directory for this service's snapshot command.
    fn prepare_scratch(&self) -> Result<PathBuf, SnapshotError> {
        let dir = self.scratch.join(format!("snapshot-{}", self.service));
        let scratch = |source| SnapshotError::Scratch {
            path: dir.clone(),
            source,
        };
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(scratch)?;
        }
        std::fs::create_dir_all(&dir).map_err(scratch)?;
        Ok(dir)
    }
}

/// Whether taking the watched `source`'s `changes` into `cache` is [`Work::Small`]: the
/// snapshot reads only the changed paths, the listing is short, and those paths are a few
/// small files (or gone; a directory may hold any number).
fn work_of(source: &Path, cache: &FileCache, store: &ChunkStore, changes: &Changes) -> Work {
    let Some(paths) = changes.paths() else {
        return Work::Large;
    };
    if cache.files() > SMALL_FILES
        || paths.len() > SMALL_CHANGED_FILES
        || !cache.reads_changes_only(store, true)
    {
        return Work::Large;
    }
    let mut bytes = 0;
    for path in paths {
        match std::fs::symlink_metadata(source.join(path)) {
            Ok(m) if m.is_file() => bytes += m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            _ => return Work::Large,
        }
    }
    Work::small_if(bytes <= SMALL_BYTES)
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Setup {
        _base: tempfile::TempDir,
        store: Arc<ChunkStore>,
        producer: Producer,
    }

    fn setup(consistency: Consistency) -> Setup {
        let base = tempfile::tempdir().unwrap();
        let source = base.path().join("data");
        std::fs::create_dir_all(&source).unwrap();
        std::fs::write(source.join("table.db"), b"rows 1..1000".repeat(500)).unwrap();
        let store = Arc::new(ChunkStore::open(base.path().join("store")).unwrap());
        let producer = Producer {
            service: ServiceName::new("db").unwrap(),
            source,
            consistency,
            scratch: base.path().join("scratch"),
            chunking: ChunkingParams::default(),
            cache: Arc::default(),
            changes: Arc::default(),
        };
        Setup {
            _base: base,
            store,
            producer,
        }
    }

    #[tokio::test]
    async fn new_chunks_are_stored_when_written_and_taken_again_if_never_written() {
        let s = setup(Consistency::Watch);
        let first = take(&s, None).await;
        let ids = first.manifest.chunk_ids();
        assert!(ids.iter().all(|id| !s.store.contains(id)), "not yet");
        assert!(ids.iter().all(|id| first.unwritten().object(id).is_some()));
        // Dropped unwritten (a failed push build, a failed write): the files are read and
        // their chunks kept again, not taken for stored.
        drop(first);
        let again = take(&s, None).await;
        assert!(ids.iter().all(|id| again.unwritten().object(id).is_some()));
        again.write(s.store.clone()).await.unwrap();
        assert!(ids.iter().all(|id| s.store.contains(id)));
        assert!(
            take(&s, None).await.unwritten().is_empty(),
            "stored: nothing new"
        );
    }

    /// What a watcher saw change is taken on the worker thread itself only when that is
    /// small: a few small files (or removals) in a short listing the cache holds whole.
    #[test]
    fn taking_a_few_small_changed_files_is_small_work_and_anything_more_is_not() {
        let s = setup(Consistency::Watch);
        let source = &s.producer.source;
        std::fs::write(source.join("big"), vec![7u8; SMALL_BYTES as usize + 1]).unwrap();
        std::fs::create_dir(source.join("dir")).unwrap();
        let mut cache = FileCache::default();
        let changed = |paths: &[&str]| {
            let mut changes = Changes::none();
            for path in paths {
                changes.note(source, &source.join(path));
            }
            changes
        };
        let read_all = |cache: &mut FileCache| {
            let chunking = ChunkingParams::default();
            drchain_replication::snapshot_dir_cached(source, &s.store, chunking, None, cache)
                .unwrap();
        };
        let one_page = changed(&["table.db"]);
        assert_eq!(
            work_of(source, &cache, &s.store, &one_page),
            Work::Large,
            "nothing cached yet: every file is read"
        );
        read_all(&mut cache);
        let work = |changes: &Changes| work_of(source, &cache, &s.store, changes);
        assert_eq!(work(&one_page), Work::Small);
        assert_eq!(work(&changed(&["table.db", "removed"])), Work::Small);
        assert_eq!(work(&changed(&["big"])), Work::Large);
        assert_eq!(work(&changed(&["dir"])), Work::Large);
        let many: Vec<String> = (0..=SMALL_CHANGED_FILES).map(|i| format!("f{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(work(&changed(&many)), Work::Large);
        assert_eq!(work(&Changes::everything()), Work::Large);

        for i in 0..SMALL_FILES {
            std::fs::write(source.join("dir").join(i.to_string()), i.to_string()).unwrap();
        }
        read_all(&mut cache);
        assert_eq!(
            work_of(source, &cache, &s.store, &one_page),
            Work::Large,
            "a long listing"
        );
    }

    /// A checkpoint of `s`'s source, which must give one.
    async fn take(s: &Setup, previous: Option<H256>) -> Taken {
        s.producer
            .take(s.store.clone(), None, previous)
            .await
            .unwrap()
            .expect("a checkpoint")
    }

    fn command(command: &str, timeout_ms: u64) -> Consistency {
        Consistency::Command {
            command: command.to_owned(),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[tokio::test]
    async fn a_snapshot_command_gives_a_checkpoint_and_an_unchanged_source_gives_none() {
        let s = setup(command(r#"cp "$DRCHAIN_SOURCE/table.db" "$1/""#, 10_000));
        let first = s
            .producer
            .take(s.store.clone(), None, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.manifest.files.len(), 1);
        assert_eq!(first.manifest.files[0].path, "table.db");
        assert_eq!(first.stats.bytes, 6000);
        let root = first.manifest.root();
        let again = s
            .producer
            .take(s.store.clone(), None, Some(root))
            .await
            .unwrap();
        assert!(again.is_none(), "no new checkpoint for unchanged data");
        std::fs::write(s.producer.source.join("table.db"), b"changed").unwrap();
        let changed = s
            .producer
            .take(s.store.clone(), None, Some(root))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(changed.manifest.root(), root);
        assert!(
            !s.producer.scratch.join("snapshot-db").exists(),
            "the command's output is removed once chunked"
        );
    }

    #[tokio::test]
    async fn failing_hanging_and_silent_snapshot_commands_give_no_checkpoint() {
        let failing = setup(command("echo 'database is locked' >&2; exit 5", 10_000));
        match failing
            .producer
            .take(failing.store.clone(), None, None)
            .await
        {
            Err(SnapshotError::Command {
                outcome: ProcessOutcome::Failed { detail, .. },
            }) => assert!(detail.contains("database is locked"), "{detail}"),
            other => panic!("{other:?}"),
        }

        let hanging = setup(command("sleep 30", 300));
        let started = std::time::Instant::now();
        let outcome = hanging
            .producer
            .take(hanging.store.clone(), None, None)
            .await;
        assert!(matches!(
            outcome,
            Err(SnapshotError::Command {
                outcome: ProcessOutcome::TimedOut
            })
        ));
        assert!(started.elapsed() < Duration::from_secs(5));

        let silent = setup(command("true", 10_000));
        let outcome = silent.producer.take(silent.store.clone(), None, None).await;
        assert!(
            matches!(outcome, Err(SnapshotError::Empty { .. })),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_watched_source_is_read_as_it_is_and_its_disappearance_is_told() {
        let s = setup(Consistency::Watch);
        let taken = s
            .producer
            .take(s.store.clone(), None, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(taken.manifest.size(), 6000);
        std::fs::remove_dir_all(&s.producer.source).unwrap();
        let outcome = s.producer.take(s.store.clone(), None, None).await;
        assert!(
            matches!(outcome, Err(SnapshotError::SourceMissing { .. })),
            "{outcome:?}"
        );
    }
}
