//! A checkpoint of a directory: every regular file under it, cut into chunks that go into
//! the store, and the manifest that lists them. The directory must hold a consistent copy
//! while this runs (a snapshot command's output, or files replaced atomically).

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::chunk::{chunk_stream, ChunkingParams};
use crate::compress::Dictionary;
use crate::error::ReplicationError;
use crate::manifest::{ChunkRef, FileEntry, Manifest, MAX_PATH_BYTES};
use crate::store::ChunkStore;

/// What a snapshot read and stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Files in the checkpoint.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Chunks they were cut into.
    pub chunks: u64,
    /// Chunks the store did not hold yet.
    pub new_chunks: u64,
    /// Plain bytes of those.
    pub new_bytes: u64,
    /// Entries left out: symlinks, sockets, devices, names that are not UTF-8.
    pub skipped: Vec<String>,
    /// Files listed but gone before they could be read (replaced by a rename meanwhile).
    pub vanished: u64,
    /// Files not read again: unchanged since the previous snapshot (see [`FileCache`]).
    pub unchanged_files: u64,
}

/// A file's identity and change marks: equal stamps mean the same bytes, provided the change
/// time was safely in the past when the stamp was taken (see [`FileCache`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    fn of(m: &fs::Metadata) -> Self {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }
}

/// A file whose change time is closer than this to the snapshot's start is read again even
/// if its stamp matches: a write within the file system's timestamp granularity could leave
/// the stamp unchanged (git's "racy" entries).
const RACY: Duration = Duration::from_millis(100);

/// What the previous snapshots of a directory read: each file's stamp and chunk list, so an
/// unchanged file (same device, inode, size, modification and change time — a file replaced
/// by a rename is a new inode) is not read and chunked again. Its chunks must still be in the
/// store; if any is gone the file is read again. Looking each chunk up costs a `stat` per chunk
/// of the whole directory at every checkpoint (some 100 ms for a GiB), so it is done only when
/// the store removed objects since the last snapshot (garbage collection, a damaged object),
/// and every [`FULL_CHECK_EVERY`] against anything else that removes them.
#[derive(Debug, Default)]
pub struct FileCache {
    chunking: Option<ChunkingParams>,
    files: HashMap<String, (FileStamp, FileEntry)>,
    /// The store's removal count when the cached chunks were last known present, and when
    /// they were last each looked up.
    checked: Option<(u64, std::time::Instant)>,
}

/// The longest time cached files' chunks go without being looked up in the store.
pub const FULL_CHECK_EVERY: Duration = Duration::from_secs(60);

/// Snapshots `source` into `store`, durably.
pub fn snapshot_dir(
    source: &Path,
    store: &ChunkStore,
    chunking: ChunkingParams,
    dictionary: Option<&Dictionary>,
) -> Result<(Manifest, SnapshotStats), ReplicationError> {
    let taken = snapshot_dir_cached(
        source,
        store,
        chunking,
        dictionary,
        &mut FileCache::default(),
    )?;
    store.sync()?;
    Ok(taken)
}

/// [`snapshot_dir`], skipping the files `cache` knows unchanged, and updating it. What it
/// wrote is readable at once but not yet durable: call [`ChunkStore::sync`] before the
/// checkpoint is recorded (standbys may fetch it meanwhile; the flush need not delay them).
pub fn snapshot_dir_cached(
    source: &Path,
    store: &ChunkStore,
    chunking: ChunkingParams,
    dictionary: Option<&Dictionary>,
    cache: &mut FileCache,
) -> Result<(Manifest, SnapshotStats), ReplicationError> {
    chunking.validate()?;
    if cache.chunking != Some(chunking) {
        *cache = FileCache {
            chunking: Some(chunking),
            ..FileCache::default()
        };
    }
    let started_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    let settled_before = started_ns - RACY.as_nanos() as i128;
    let mut seen: HashMap<String, (FileStamp, FileEntry)> = HashMap::new();
    let removals = store.removals();
    let checked_at = match cache.checked {
        Some((r, at)) if r == removals && at.elapsed() < FULL_CHECK_EVERY => Some(at),
        _ => None,
    };
    if let Some(d) = dictionary {
        store.put_dictionary(d)?;
    }
    let mut stats = SnapshotStats::default();
    let mut files = vec![];
    let mut pending = vec![(source.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| ReplicationError::read(dir.display(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| ReplicationError::read(dir.display(), e))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                stats.skipped.push(path.display().to_string());
                continue;
            };
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let kind = entry
                .file_type()
                .map_err(|e| ReplicationError::read(path.display(), e))?;
            if kind.is_dir() {
                pending.push((path, relative));
            } else if kind.is_file() && relative.len() <= MAX_PATH_BYTES {
                let stamp = entry.metadata().ok().map(|m| FileStamp::of(&m));
                let known = cache.files.get(&relative).filter(|(old, file)| {
                    Some(*old) == stamp
                        && old.ctime_ns < settled_before
                        && (checked_at.is_some()
                            || file.chunks.iter().all(|c| store.contains(&c.id)))
                });
                if let Some((old, file)) = known {
                    stats.unchanged_files += 1;
                    stats.files += 1;
                    stats.bytes += file.size();
                    stats.chunks += file.chunks.len() as u64;
                    seen.insert(relative, (*old, file.clone()));
                    files.push(file.clone());
                    continue;
                }
                match snapshot_file(&path, relative, store, &chunking, dictionary, &mut stats)? {
                    Some(file) => {
                        if let Some(stamp) = stamp {
                            seen.insert(file.path.clone(), (stamp, file.clone()));
                        }
                        files.push(file)
                    }
                    // Renamed or removed since it was listed (a watched directory whose
                    // service replaces files): the change that did it brings a new checkpoint.
                    None => stats.vanished += 1,
                }
            } else {
                stats.skipped.push(relative);
            }
        }
    }
    let manifest = Manifest::new(chunking, dictionary.map(Dictionary::id), files);
    store.put_manifest(&manifest)?;
    cache.files = seen;
    // What is cached now is in the store (read or looked up in this snapshot), unless
    // something was removed meanwhile: then the count differs next time.
    cache.checked = Some((removals, checked_at.unwrap_or_else(std::time::Instant::now)));
    Ok((manifest, stats))
}

fn snapshot_file(
    path: &Path,
    relative: String,
    store: &ChunkStore,
    chunking: &ChunkingParams,
    dictionary: Option<&Dictionary>,
    stats: &mut SnapshotStats,
) -> Result<Option<FileEntry>, ReplicationError> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ReplicationError::read(path.display(), e)),
    };
    let mode = file
        .metadata()
        .map_err(|e| ReplicationError::read(path.display(), e))?
        .permissions()
        .mode()
        & 0o7777;
    let mut chunks = vec![];
    chunk_stream(std::io::BufReader::new(file), chunking, |chunk| {
        let len = chunk.data.len() as u32;
        let (id, new) = store.put(&chunk.data, dictionary)?;
        stats.chunks += 1;
        stats.bytes += u64::from(len);
        if new {
            stats.new_chunks += 1;
            stats.new_bytes += u64::from(len);
        }
        chunks.push(ChunkRef { id, len });
        Ok(())
    })?;
    stats.files += 1;
    Ok(Some(FileEntry {
        path: relative,
        mode,
        chunks,
    }))
}
