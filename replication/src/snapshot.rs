//! A checkpoint of a directory: every regular file under it, cut into chunks that go into
//! the store, and the manifest that lists them. The directory must hold a consistent copy
//! while this runs (a snapshot command's output, or files replaced atomically).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::changes::Changes;
use crate::chunk::{chunk_stream, ChunkingParams};
use crate::compress::{encode_chunk, encode_raw, raw_bytes, Dictionary};
use crate::error::ReplicationError;
use crate::manifest::{ChunkRef, EncodedManifest, FileEntry, Manifest, MAX_PATH_BYTES};
use crate::store::ChunkStore;
use drchain_support::H256;

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
    /// Chunks of unchanged files looked up in the store (none unless it removed objects since,
    /// or the last look-up is older than [`FULL_CHECK_EVERY`]).
    pub chunks_looked_up: u64,
}

impl SnapshotStats {
    /// Counts a file not read again: unchanged since the previous snapshot.
    fn count_unchanged(&mut self, file: &FileEntry) {
        self.unchanged_files += 1;
        self.files += 1;
        self.bytes += file.size();
        self.chunks += file.chunks.len() as u64;
    }
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
/// and every [`FULL_CHECK_EVERY`] against anything else that removes them — by a reading of
/// the whole source, not by one of the paths a watcher named: that one carries a write to the
/// standbys, which must not wait for the whole directory's look-ups (a watched source is read
/// whole every `interval_ms` anyway).
#[derive(Debug, Default)]
pub struct FileCache {
    chunking: Option<ChunkingParams>,
    /// By path, in order: the next manifest's entries come sorted (sorting them again costs
    /// a pass, not a sort of every file on every checkpoint).
    files: BTreeMap<String, (FileStamp, FileEntry)>,
    /// The store's removal count when the cached chunks were last known present, and when
    /// they were last each looked up.
    checked: Option<(u64, std::time::Instant)>,
    /// Whether `files` lists every file of the last snapshot (one whose stamp could not be
    /// taken is not cached).
    complete: bool,
}

impl FileCache {
    /// How many files the last snapshot listed.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// Whether a snapshot with a watcher's changed paths ([`Changes::paths`]) reads only
    /// those: the cache lists every file and its chunks are known stored.
    pub fn reads_changes_only(&self, store: &ChunkStore, of_changed_paths: bool) -> bool {
        self.complete && self.checked_at(store, of_changed_paths).is_some()
    }

    /// When the cached files' chunks were last each looked up, if that still holds: no
    /// removal from the store since, and — for a reading of the whole source — not longer
    /// than [`FULL_CHECK_EVERY`] ago.
    fn checked_at(&self, store: &ChunkStore, of_changed_paths: bool) -> Option<std::time::Instant> {
        match self.checked {
            Some((r, at))
                if r == store.removals()
                    && (of_changed_paths || at.elapsed() < FULL_CHECK_EVERY) =>
            {
                Some(at)
            }
            _ => None,
        }
    }
}

/// The longest time cached files' chunks go without being looked up in the store.
pub const FULL_CHECK_EVERY: Duration = Duration::from_secs(60);

/// What a deferred snapshot ([`snapshot_dir_deferred`]) encoded but did not write: its new
/// objects, up to a budget of bytes (its manifest is not written either). The active pushes a checkpoint to its
/// standbys from these first — the two file creations of storing a small change would
/// otherwise come before the push — and then writes them with [`Unwritten::write`].
///
/// The first [`UNCOMPRESSED_BYTES`] of new chunks are held unencoded (RAW) and compressed
/// only when written: compressing a 4 KiB chunk with a dictionary that went cold in the
/// CPU's caches took 46–50 µs on the VM of docs/benchmarks.md, on the path from a write to
/// the standbys. A small change then travels uncompressed (a few KiB more on the wire); the
/// store, and what a member fetches from it, stays compressed.
#[derive(Debug, Default)]
pub struct Unwritten {
    /// Encoded bytes held at most; an object beyond that is written at once.
    budget: usize,
    bytes: usize,
    objects: HashMap<H256, Vec<u8>>,
    /// Plain bytes of the chunks held unencoded.
    uncompressed: usize,
    /// The chunks held unencoded, to compress when written.
    to_compress: Vec<H256>,
    /// The dictionary to compress them with.
    dictionary: Option<H256>,
}

/// Plain bytes of new chunks a deferred snapshot holds unencoded at most (within its
/// budget): a write or two, which a push carries as they are.
pub const UNCOMPRESSED_BYTES: usize = 64 * 1024;

impl Unwritten {
    fn with_budget(budget: usize) -> Self {
        Self {
            budget,
            ..Self::default()
        }
    }

    /// Whether it holds no object.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Object `id`'s encoding, if held here (unencoded — RAW — if small enough: see
    /// [`Unwritten`]).
    pub fn object(&self, id: &H256) -> Option<&[u8]> {
        self.objects.get(id).map(Vec::as_slice)
    }

    /// Stores chunk `data` (here, within the budget, or in `store`); whether it was new.
    fn put(
        &mut self,
        store: &ChunkStore,
        data: &[u8],
        dictionary: Option<&Dictionary>,
    ) -> Result<(H256, bool), ReplicationError> {
        let later = self.uncompressed + data.len() <= UNCOMPRESSED_BYTES
            && self.bytes + 1 + data.len() <= self.budget;
        if later {
            let (id, new) = store.name_new(data, |id| self.objects.contains_key(id));
            if new {
                self.uncompressed += data.len();
                self.bytes += data.len() + 1;
                self.objects.insert(id, encode_raw(data));
                self.to_compress.push(id);
                self.dictionary = dictionary.map(Dictionary::id);
            }
            return Ok((id, new));
        }
        let (id, encoded) =
            store.encode_new(data, dictionary, |id| self.objects.contains_key(id))?;
        let Some(encoded) = encoded else {
            return Ok((id, false));
        };
        if self.bytes + encoded.len() <= self.budget {
            self.bytes += encoded.len();
            self.objects.insert(id, encoded);
        } else {
            store.put_verified(&id, &encoded)?;
        }
        Ok((id, true))
    }

    /// Writes what is held into `store` (compressing what is held unencoded), then
    /// `manifest` — the encoding of the one the snapshot gave with this — which names them.
    /// Not flushed: call [`ChunkStore::sync`] before the checkpoint is recorded.
    pub fn write(
        mut self,
        store: &ChunkStore,
        manifest: &EncodedManifest,
    ) -> Result<(), ReplicationError> {
        let dictionary = match self.dictionary {
            Some(id) if !self.to_compress.is_empty() => Some(store.dictionary(&id)?),
            _ => None,
        };
        for id in std::mem::take(&mut self.to_compress) {
            let Some(plain) = self.objects.get(&id).and_then(|o| raw_bytes(o)) else {
                continue;
            };
            let encoded = encode_chunk(plain, dictionary.as_deref(), &store.stats)?;
            self.objects.insert(id, encoded);
        }
        for (id, encoded) in &self.objects {
            store.put_verified(id, encoded)?;
        }
        store.put_encoded_manifest(&manifest.root, &manifest.bytes)
    }
}

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
    // With no budget every object is written as it is read; the manifest after.
    let (manifest, stats, unwritten) =
        snapshot_dir_deferred(source, store, chunking, dictionary, cache, 0, None)?;
    unwritten.write(store, &manifest.encoded())?;
    Ok((manifest, stats))
}

/// [`snapshot_dir_cached`], keeping new objects (up to `budget` encoded bytes) and the
/// manifest in memory instead of writing them: store them with [`Unwritten::write`], and keep
/// the store from collecting garbage ([`ChunkStore::hold`]) until then.
///
/// With `changes` (what a watcher saw change since the previous snapshot into `cache`), only
/// those paths are looked at, if the cache allows: it must hold a listing of every file and
/// its chunks must be known stored; otherwise, or without `changes`, every file is.
pub fn snapshot_dir_deferred(
    source: &Path,
    store: &ChunkStore,
    chunking: ChunkingParams,
    dictionary: Option<&Dictionary>,
    cache: &mut FileCache,
    budget: usize,
    changes: Option<&Changes>,
) -> Result<(Manifest, SnapshotStats, Unwritten), ReplicationError> {
    let mut unwritten = Unwritten::with_budget(budget);
    let (manifest, stats) = snapshot_into(
        source,
        store,
        chunking,
        dictionary,
        cache,
        &mut unwritten,
        changes,
    )?;
    Ok((manifest, stats, unwritten))
}

fn snapshot_into(
    source: &Path,
    store: &ChunkStore,
    chunking: ChunkingParams,
    dictionary: Option<&Dictionary>,
    cache: &mut FileCache,
    unwritten: &mut Unwritten,
    changes: Option<&Changes>,
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
    let removals = store.removals();
    let of_changed_paths = changes.and_then(Changes::paths).is_some();
    let checked_at = cache.checked_at(store, of_changed_paths);
    if let Some(d) = dictionary {
        store.put_dictionary(d)?;
    }
    // Only what changed is looked at when the watcher saw every change since a snapshot that
    // listed the whole directory, and the cached files' chunks are known to be stored. The
    // other files' entries are moved into this snapshot, not copied: a write costs what it
    // changed, not a copy of the directory's listing.
    let changed = changes
        .and_then(Changes::paths)
        .filter(|_| cache.reads_changes_only(store, true))
        .map(|changed| outermost(changed));
    let mut listed = std::mem::take(&mut cache.files);
    let (known, carried) = match &changed {
        Some(roots) => {
            let again = roots
                .iter()
                .flat_map(|root| take_under(&mut listed, root))
                .collect();
            (again, listed)
        }
        None => (listed, BTreeMap::new()),
    };
    let mut scan = Scan {
        store,
        chunking,
        dictionary,
        known: &known,
        settled_before: started_ns - RACY.as_nanos() as i128,
        checked: checked_at.is_some(),
        unwritten,
        stats: SnapshotStats::default(),
        seen: carried,
        unstamped: vec![],
    };
    for (_, file) in scan.seen.values() {
        scan.stats.count_unchanged(file);
    }
    let scanned = match &changed {
        Some(roots) => scan.changed(source, roots),
        None => scan.walk(source.to_path_buf(), String::new()),
    };
    let Scan {
        stats,
        mut seen,
        unstamped,
        ..
    } = scan;
    if let Err(e) = scanned {
        // The listing as it was, without anything this snapshot read (the chunks of a file
        // new in it were never stored): the next snapshot compares with it again.
        match &changed {
            Some(roots) => {
                for root in roots {
                    take_under(&mut seen, root);
                }
                seen.extend(known);
                cache.files = seen;
            }
            None => cache.files = known,
        }
        return Err(e);
    }
    let files: Vec<FileEntry> = seen
        .values()
        .map(|(_, f)| f.clone())
        .chain(unstamped)
        .collect();
    cache.complete = files.len() == seen.len();
    let manifest = Manifest::new(chunking, dictionary.map(Dictionary::id), files);
    cache.files = seen;
    // What is cached now is in the store (read or looked up in this snapshot), unless
    // something was removed meanwhile: then the count differs next time.
    cache.checked = Some((removals, checked_at.unwrap_or_else(std::time::Instant::now)));
    Ok((manifest, stats))
}

/// One snapshot's reading of a directory.
struct Scan<'a> {
    store: &'a ChunkStore,
    chunking: ChunkingParams,
    dictionary: Option<&'a Dictionary>,
    /// The previous snapshot's entries of the files to look at (all of them, or those under
    /// the changed paths).
    known: &'a BTreeMap<String, (FileStamp, FileEntry)>,
    /// A file changed after this (ns since the epoch) is read even if its stamp matches.
    settled_before: i128,
    /// Whether the cached files' chunks are known to be in the store.
    checked: bool,
    unwritten: &'a mut Unwritten,
    stats: SnapshotStats,
    /// The files read or found unchanged, by path, with their stamps.
    seen: BTreeMap<String, (FileStamp, FileEntry)>,
    /// Files read whose stamp could not be taken (not cached: read again next time).
    unstamped: Vec<FileEntry>,
}

impl Scan<'_> {
    /// Reads every file under `dir`, whose path relative to the source is `prefix`.
    fn walk(&mut self, dir: std::path::PathBuf, prefix: String) -> Result<(), ReplicationError> {
        let mut pending = vec![(dir, prefix)];
        while let Some((dir, prefix)) = pending.pop() {
            let entries =
                fs::read_dir(&dir).map_err(|e| ReplicationError::read(dir.display(), e))?;
            for entry in entries {
                let entry = entry.map_err(|e| ReplicationError::read(dir.display(), e))?;
                let path = entry.path();
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    self.stats.skipped.push(path.display().to_string());
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
                } else if kind.is_file() {
                    let stamp = entry.metadata().ok().map(|m| FileStamp::of(&m));
                    self.file(&path, relative, stamp)?;
                } else {
                    self.stats.skipped.push(relative);
                }
            }
        }
        Ok(())
    }

    /// Reads `path` (`relative` to the source) unless the cache knows it unchanged.
    fn file(
        &mut self,
        path: &Path,
        relative: String,
        stamp: Option<FileStamp>,
    ) -> Result<(), ReplicationError> {
        if relative.len() > MAX_PATH_BYTES {
            self.stats.skipped.push(relative);
            return Ok(());
        }
        let (store, mut looked_up) = (self.store, 0);
        let known = self.known.get(&relative).filter(|(old, file)| {
            Some(*old) == stamp
                && old.ctime_ns < self.settled_before
                && (self.checked
                    || file.chunks.iter().all(|c| {
                        looked_up += 1;
                        store.contains(&c.id)
                    }))
        });
        self.stats.chunks_looked_up += looked_up;
        if let Some((old, file)) = known {
            self.keep(relative, *old, file.clone());
            return Ok(());
        }
        let read = snapshot_file(
            path,
            relative,
            self.store,
            &self.chunking,
            self.dictionary,
            &mut self.stats,
            self.unwritten,
        )?;
        match (read, stamp) {
            (Some(file), Some(stamp)) => {
                self.seen.insert(file.path.clone(), (stamp, file));
            }
            (Some(file), None) => self.unstamped.push(file),
            // Renamed or removed since it was listed (a watched directory whose service
            // replaces files): the change that did it brings a new checkpoint.
            (None, _) => self.stats.vanished += 1,
        }
        Ok(())
    }

    /// Counts a cached file, unchanged, into this snapshot.
    fn keep(&mut self, relative: String, stamp: FileStamp, file: FileEntry) {
        self.stats.count_unchanged(&file);
        self.seen.insert(relative, (stamp, file));
    }

    /// Looks at the files at or under the changed paths `roots` again ([`outermost`]).
    fn changed(&mut self, source: &Path, roots: &[&str]) -> Result<(), ReplicationError> {
        for &relative in roots {
            let path = source.join(relative);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => self.walk(path, relative.to_owned())?,
                Ok(m) if m.is_file() => {
                    self.file(&path, relative.to_owned(), Some(FileStamp::of(&m)))?
                }
                Ok(_) => self.stats.skipped.push(relative.to_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ReplicationError::read(path.display(), e)),
            }
        }
        Ok(())
    }
}

/// The changed paths that lie under no other changed path: each is looked at, once.
fn outermost(changed: &BTreeSet<String>) -> Vec<&str> {
    // Sorted, a path's descendants follow it.
    let mut roots: Vec<&str> = vec![];
    for path in changed {
        if !roots.last().is_some_and(|r| is_under(path, r)) {
            roots.push(path);
        }
    }
    roots
}

/// Takes the entries at or under `root` out of `listed` (the paths under it sort together,
/// between `root/` and `root0`: a lookup, not a pass over every file).
fn take_under<V>(listed: &mut BTreeMap<String, V>, root: &str) -> Vec<(String, V)> {
    use std::ops::Bound;
    let (from, to) = (format!("{root}/"), format!("{root}0"));
    let below: Vec<String> = listed
        .range::<str, _>((Bound::Included(from.as_str()), Bound::Excluded(to.as_str())))
        .map(|(path, _)| path.clone())
        .collect();
    std::iter::once(root.to_owned())
        .chain(below)
        .filter_map(|path| listed.remove_entry(&path))
        .collect()
}

/// Whether `path` is `root` or lies under it (relative paths, `/`-separated).
fn is_under(path: &str, root: &str) -> bool {
    path.strip_prefix(root)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn snapshot_file(
    path: &Path,
    relative: String,
    store: &ChunkStore,
    chunking: &ChunkingParams,
    dictionary: Option<&Dictionary>,
    stats: &mut SnapshotStats,
    unwritten: &mut Unwritten,
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
        let (id, new) = unwritten.put(store, &chunk.data, dictionary)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entries_under_a_changed_path_are_taken_and_only_those() {
        let paths = ["a", "a-b", "a.txt", "a/x", "a/y/z", "ab", "b/a"];
        let mut listed: BTreeMap<String, ()> = paths.iter().map(|p| (p.to_string(), ())).collect();
        let taken: Vec<String> = take_under(&mut listed, "a")
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(taken, ["a", "a/x", "a/y/z"]);
        let left: Vec<&str> = listed.keys().map(String::as_str).collect();
        assert_eq!(left, ["a-b", "a.txt", "ab", "b/a"]);
        assert!(take_under(&mut listed, "missing").is_empty());
        let taken: Vec<String> = take_under(&mut listed, "b")
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(taken, ["b/a"]);
    }

    #[test]
    fn the_periodic_look_up_of_every_chunk_waits_for_a_reading_of_the_whole_source() {
        let (source, store_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = ChunkStore::open(store_dir.path()).unwrap();
        let params = ChunkingParams::default();
        fs::write(source.path().join("kept"), b"a file nobody changes").unwrap();
        fs::write(source.path().join("written"), b"first version").unwrap();
        // Older than RACY: an unchanged file is trusted, not read again.
        std::thread::sleep(RACY + Duration::from_millis(50));
        let mut cache = FileCache::default();
        let snapshot = |cache: &mut FileCache, changes: Option<&Changes>| {
            snapshot_into(
                source.path(),
                &store,
                params,
                None,
                cache,
                &mut Unwritten::with_budget(0),
                changes,
            )
            .unwrap()
        };
        let (first, _) = snapshot(&mut cache, None);
        let kept_chunk = first.files[0].chunks[0].id;
        // Something other than the store removes the unchanged file's chunk, and the last
        // look-up of every chunk is older than FULL_CHECK_EVERY.
        fs::remove_file(store.object_path(&kept_chunk)).unwrap();
        let long_ago = std::time::Instant::now()
            .checked_sub(FULL_CHECK_EVERY * 2)
            .expect("the machine has been up for two minutes");
        cache.checked = cache.checked.map(|(removals, _)| (removals, long_ago));
        // A write the watcher named: only its path is read, no chunk looked up.
        fs::write(source.path().join("written"), b"second version").unwrap();
        let mut changes = Changes::none();
        changes.note(source.path(), &source.path().join("written"));
        let (_, stats) = snapshot(&mut cache, Some(&changes));
        assert_eq!(
            stats.unchanged_files, 1,
            "the unchanged file was not looked at"
        );
        assert!(
            !store.contains(&kept_chunk) && stats.chunks_looked_up == 0,
            "no look-up on the write's way"
        );
        // The next reading of the whole source looks every chunk up and stores the lost one.
        let (_, stats) = snapshot(&mut cache, None);
        assert_eq!(stats.chunks_looked_up, 1);
        assert!(
            store.contains(&kept_chunk),
            "looked up, read again and stored"
        );
    }
}
