//! The chunk store: every chunk, dictionary and manifest a node holds, once, under its blake3
//! name (`objects/ab/abcd…`, `manifests/<root>`), shared by every checkpoint and service of
//! the node. Writes are atomic (temporary file, rename) and made durable together by
//! [`ChunkStore::sync`] (one `syncfs`, not an fsync per chunk: a checkpoint has thousands).
//! Every read is verified, so an object a crash left torn before its sync is found, removed
//! and fetched again rather than used.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use drchain_support::{blake3_hash, H256};

use crate::chunk::{ChunkId, MAX_CHUNK_BYTES};
use crate::compress::{
    decode_chunk, encode_chunk, needed_dictionary, CompressionStats, Dictionary,
};
use crate::error::ReplicationError;
use crate::manifest::{Manifest, MAX_MANIFEST_BYTES};

/// A directory of content-addressed objects.
#[derive(Debug)]
pub struct ChunkStore {
    dir: PathBuf,
    dictionaries: Mutex<HashMap<H256, Arc<Dictionary>>>,
    temp_counter: AtomicU64,
    /// Writers and readers now using objects no manifest may hold yet (see [`StoreHold`]).
    holds: Arc<Mutex<Holds>>,
    /// Objects removed since the store was opened (see [`ChunkStore::removals`]).
    removals: AtomicU64,
    /// Compression measured on what this store wrote.
    pub stats: CompressionStats,
}

/// While alive, garbage collection removes nothing: taken by whoever writes or uses objects
/// that no kept manifest names yet (a snapshot being cut, a checkpoint being fetched or
/// applied). A collection already running stops before its next removal.
#[derive(Debug)]
#[must_use = "the hold protects objects only while it is alive"]
pub struct StoreHold {
    holds: Arc<Mutex<Holds>>,
}

impl Drop for StoreHold {
    fn drop(&mut self) {
        let mut holds = self.holds.lock().unwrap_or_else(PoisonError::into_inner);
        holds.alive = holds.alive.saturating_sub(1);
        holds.changes += 1;
    }
}

/// The [`StoreHold`]s alive, and how many were taken or dropped since the store was opened.
#[derive(Debug, Default)]
struct Holds {
    alive: u64,
    changes: u64,
}

fn hex_name(id: &H256) -> String {
    hex::encode(id.0)
}

impl ChunkStore {
    /// Opens (creating) the store in `dir`, removing temporary files a crash left.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ReplicationError> {
        let dir = dir.into();
        for sub in ["objects", "manifests"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(|e| ReplicationError::write(&path, e))?;
        }
        let store = Self {
            dir,
            dictionaries: Mutex::default(),
            temp_counter: AtomicU64::new(0),
            holds: Arc::default(),
            removals: AtomicU64::new(0),
            stats: CompressionStats::default(),
        };
        store.remove_temporaries()?;
        Ok(store)
    }

    /// Where the store lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn object_path(&self, id: &H256) -> PathBuf {
        let name = hex_name(id);
        self.dir.join("objects").join(&name[..2]).join(name)
    }

    fn manifest_path(&self, root: &H256) -> PathBuf {
        self.dir.join("manifests").join(hex_name(root))
    }

    fn remove_temporaries(&self) -> Result<(), ReplicationError> {
        for path in self.files()? {
            if path.extension().is_some_and(|e| e == "tmp") {
                let _ = fs::remove_file(&path);
            }
        }
        Ok(())
    }

    /// Every file under the store.
    fn files(&self) -> Result<Vec<PathBuf>, ReplicationError> {
        let mut out = vec![];
        let mut dirs = vec![self.dir.join("objects"), self.dir.join("manifests")];
        while let Some(dir) = dirs.pop() {
            let entries =
                fs::read_dir(&dir).map_err(|e| ReplicationError::read(dir.display(), e))?;
            for entry in entries {
                let entry = entry.map_err(|e| ReplicationError::read(dir.display(), e))?;
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(path);
                } else {
                    out.push(path);
                }
            }
        }
        Ok(out)
    }

    /// Writes `bytes` at `path` atomically.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), ReplicationError> {
        let parent = path.parent().unwrap_or(&self.dir);
        fs::create_dir_all(parent).map_err(|e| ReplicationError::write(parent, e))?;
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let temp = path.with_extension(format!("{}-{n}.tmp", std::process::id()));
        let result = (|| {
            let mut file = fs::File::create(&temp)?;
            file.write_all(bytes)?;
            fs::rename(&temp, path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&temp);
            return Err(ReplicationError::write(path, e));
        }
        Ok(())
    }

    /// Makes every write so far durable, renames included: call before a checkpoint is
    /// recorded or acknowledged.
    pub fn sync(&self) -> Result<(), ReplicationError> {
        sync_filesystem(&self.dir)
    }

    /// Whether object `id` (chunk or dictionary) is here.
    pub fn contains(&self, id: &H256) -> bool {
        self.object_path(id).is_file()
    }

    /// Stores a chunk's plain bytes (compressed with `dictionary` if given); returns its name
    /// and whether it was new.
    pub fn put(
        &self,
        data: &[u8],
        dictionary: Option<&Dictionary>,
    ) -> Result<(ChunkId, bool), ReplicationError> {
        let id = blake3_hash(data);
        if self.contains(&id) {
            return Ok((id, false));
        }
        let encoded = encode_chunk(data, dictionary, &self.stats)?;
        self.write_atomic(&self.object_path(&id), &encoded)?;
        Ok((id, true))
    }

    /// Chunk `data`'s name and its encoding for the store, if neither `known` nor the store
    /// holds it yet (`None`: one does). Writes nothing: [`ChunkStore::put_verified`] stores it later.
    pub(crate) fn encode_new(
        &self,
        data: &[u8],
        dictionary: Option<&Dictionary>,
        known: impl Fn(&ChunkId) -> bool,
    ) -> Result<(ChunkId, Option<Vec<u8>>), ReplicationError> {
        let (id, new) = self.name_new(data, known);
        if !new {
            return Ok((id, None));
        }
        Ok((id, Some(encode_chunk(data, dictionary, &self.stats)?)))
    }

    /// Chunk `data`'s name, and whether it is new: neither `known` nor the store holds it.
    pub(crate) fn name_new(
        &self,
        data: &[u8],
        known: impl Fn(&ChunkId) -> bool,
    ) -> (ChunkId, bool) {
        let id = blake3_hash(data);
        (id, !known(&id) && !self.contains(&id))
    }

    /// Stores a dictionary (raw, as an object of its own: peers fetch it like a chunk).
    pub fn put_dictionary(&self, dictionary: &Dictionary) -> Result<(), ReplicationError> {
        if !self.contains(&dictionary.id()) {
            let mut encoded = vec![0u8];
            encoded.extend_from_slice(dictionary.bytes());
            self.write_atomic(&self.object_path(&dictionary.id()), &encoded)?;
        }
        Ok(())
    }

    /// Stores an encoded object as received from a peer, after decoding and verifying it
    /// (a chunk compressed with a dictionary needs that dictionary here first).
    pub fn put_encoded(&self, id: &H256, encoded: &[u8]) -> Result<(), ReplicationError> {
        if self.contains(id) {
            return Ok(());
        }
        let dictionary = match needed_dictionary(encoded) {
            Some(d) => Some(self.dictionary(&d)?),
            None => None,
        };
        decode_chunk(id, encoded, dictionary.as_deref())?;
        self.write_atomic(&self.object_path(id), encoded)
    }

    /// Stores an encoded object already verified against its name (by the caller, in memory).
    pub(crate) fn put_verified(&self, id: &H256, encoded: &[u8]) -> Result<(), ReplicationError> {
        if self.contains(id) {
            return Ok(());
        }
        self.write_atomic(&self.object_path(id), encoded)
    }

    /// The encoded bytes of object `id`, as stored (to send to a peer).
    pub fn get_encoded(&self, id: &H256) -> Result<Vec<u8>, ReplicationError> {
        let path = self.object_path(id);
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ReplicationError::Missing {
                what: "chunk",
                id: *id,
            },
            _ => ReplicationError::read(path.display(), e),
        })?;
        if bytes.len() > MAX_CHUNK_BYTES as usize + 64 {
            return Err(ReplicationError::BadChunk {
                id: *id,
                reason: format!("{} bytes on disk", bytes.len()),
            });
        }
        Ok(bytes)
    }

    /// The plain bytes of object `id`, verified. An object that fails verification (torn by
    /// a crash, or damaged on disk) is removed, so that it reads as missing and is fetched
    /// again.
    pub fn get(&self, id: &H256) -> Result<Vec<u8>, ReplicationError> {
        let encoded = self.get_encoded(id)?;
        let dictionary = match needed_dictionary(&encoded) {
            Some(d) => Some(self.dictionary(&d)?),
            None => None,
        };
        let decoded = decode_chunk(id, &encoded, dictionary.as_deref());
        if let Err(ReplicationError::BadChunk { .. }) = &decoded {
            self.removals.fetch_add(1, Ordering::Relaxed);
            let _ = fs::remove_file(self.object_path(id));
        }
        decoded
    }

    /// Dictionary `id`, prepared (cached after the first use).
    pub fn dictionary(&self, id: &H256) -> Result<Arc<Dictionary>, ReplicationError> {
        if let Some(d) = self
            .dictionaries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
        {
            return Ok(d.clone());
        }
        let bytes = self.get(id).map_err(|e| match e {
            ReplicationError::Missing { id, .. } => ReplicationError::Missing {
                what: "dictionary",
                id,
            },
            other => other,
        })?;
        let dictionary = Arc::new(Dictionary::new(bytes));
        self.dictionaries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(*id, dictionary.clone());
        Ok(dictionary)
    }

    /// Keeps a manifest (its canonical bytes, under its root).
    pub fn put_manifest(&self, manifest: &Manifest) -> Result<H256, ReplicationError> {
        let encoded = manifest.encoded();
        self.put_encoded_manifest(&encoded.root, &encoded.bytes)?;
        Ok(encoded.root)
    }

    /// Keeps a manifest's canonical `bytes` under their `root`, which the caller took from
    /// them ([`Manifest::encoded`]) or checked ([`Manifest::decode_verified`]).
    pub(crate) fn put_encoded_manifest(
        &self,
        root: &H256,
        bytes: &[u8],
    ) -> Result<(), ReplicationError> {
        let path = self.manifest_path(root);
        if !path.is_file() {
            self.write_atomic(&path, bytes)?;
        }
        Ok(())
    }

    /// Stores manifest bytes received from a peer, if they match `root`.
    pub fn put_manifest_bytes(
        &self,
        root: &H256,
        bytes: &[u8],
    ) -> Result<Manifest, ReplicationError> {
        let manifest = Manifest::decode_verified(bytes, root)?;
        self.put_encoded_manifest(root, bytes)?;
        Ok(manifest)
    }

    /// The canonical bytes of manifest `root`, if here.
    pub fn manifest_bytes(&self, root: &H256) -> Result<Vec<u8>, ReplicationError> {
        let path = self.manifest_path(root);
        match fs::metadata(&path) {
            Ok(m) if m.len() > MAX_MANIFEST_BYTES as u64 => {
                return Err(ReplicationError::BadManifest {
                    reason: format!("{} is {} bytes", path.display(), m.len()),
                })
            }
            _ => {}
        }
        fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ReplicationError::Missing {
                what: "manifest",
                id: *root,
            },
            _ => ReplicationError::read(path.display(), e),
        })
    }

    /// Manifest `root`, verified.
    pub fn manifest(&self, root: &H256) -> Result<Manifest, ReplicationError> {
        Manifest::decode_verified(&self.manifest_bytes(root)?, root)
    }

    /// How many objects this store removed since it was opened (garbage collection, damaged
    /// ones): what was present stays present while this does not change — but for removals
    /// by anything else.
    pub fn removals(&self) -> u64 {
        self.removals.load(Ordering::Relaxed)
    }

    /// Keeps garbage collection from removing anything until the hold is dropped.
    pub fn hold(&self) -> StoreHold {
        let mut holds = self.holds.lock().unwrap_or_else(PoisonError::into_inner);
        holds.alive += 1;
        holds.changes += 1;
        drop(holds);
        StoreHold {
            holds: self.holds.clone(),
        }
    }

    /// Removes every object and manifest that none of `keep` needs; returns what it freed.
    /// Stops early (`interrupted`) when a [`StoreHold`] is alive: each removal happens under
    /// the holds' lock, so an object is either gone before a hold begins (and written again
    /// by its holder, who finds it missing) or kept.
    pub fn collect_garbage(&self, keep: &[&Manifest]) -> Result<GcStats, ReplicationError> {
        self.collect_garbage_keeping(|| keep.iter().map(|m| (*m).clone()).collect())
    }

    /// [`ChunkStore::collect_garbage`] of what the manifests `keep` returns do not need, asked
    /// again whenever a [`StoreHold`] was taken or dropped since it last answered: a writer
    /// makes its checkpoint one to keep before it lets go of its hold, and the objects it
    /// wrote meanwhile may already be in this collection's listing.
    pub fn collect_garbage_keeping(
        &self,
        mut keep: impl FnMut() -> Vec<Manifest>,
    ) -> Result<GcStats, ReplicationError> {
        let mut live = |holds_seen: &mut u64| {
            *holds_seen = self
                .holds
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .changes;
            let mut live: BTreeSet<String> = BTreeSet::new();
            for manifest in keep() {
                live.insert(hex_name(&manifest.root()));
                live.extend(manifest.chunk_ids().iter().map(hex_name));
                live.extend(manifest.dictionary.iter().map(hex_name));
            }
            live
        };
        let mut holds_seen = 0;
        let mut live_now = live(&mut holds_seen);
        let mut stats = GcStats::default();
        let mut files = self.files()?.into_iter().peekable();
        while let Some(path) = files.peek() {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if live_now.contains(name) {
                stats.kept_bytes += fs::metadata(path).map_or(0, |m| m.len());
                files.next();
                continue;
            }
            let bytes = fs::metadata(path).map_or(0, |m| m.len());
            let holds = self.holds.lock().unwrap_or_else(PoisonError::into_inner);
            if holds.alive > 0 {
                stats.interrupted = true;
                break;
            }
            if holds.changes != holds_seen {
                // A writer came and went: what to keep may have grown. This file again.
                drop(holds);
                live_now = live(&mut holds_seen);
                continue;
            }
            let Some(path) = files.next() else { break };
            self.removals.fetch_add(1, Ordering::Relaxed);
            fs::remove_file(&path).map_err(|e| ReplicationError::write(&path, e))?;
            drop(holds);
            stats.removed += 1;
            stats.freed_bytes += bytes;
        }
        self.dictionaries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|id, _| live_now.contains(&hex_name(id)));
        Ok(stats)
    }

    /// Bytes the store holds on disk (file sizes).
    pub fn disk_usage(&self) -> Result<u64, ReplicationError> {
        Ok(self
            .files()?
            .iter()
            .map(|p| fs::metadata(p).map_or(0, |m| m.len()))
            .sum())
    }
}

/// Flushes the filesystem that holds `path` (`syncfs`).
pub fn sync_filesystem(path: &Path) -> Result<(), ReplicationError> {
    fs::File::open(path)
        .and_then(|f| rustix::fs::syncfs(&f).map_err(std::io::Error::from))
        .map_err(|e| ReplicationError::write(path, e))
}

/// What garbage collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Files removed.
    pub removed: u64,
    /// Their bytes.
    pub freed_bytes: u64,
    /// Bytes of what stayed (counted up to where it stopped, if interrupted).
    pub kept_bytes: u64,
    /// A [`StoreHold`] stopped it before it was through.
    pub interrupted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkingParams;
    use crate::manifest::{ChunkRef, FileEntry};

    #[test]
    fn objects_are_stored_once_verified_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let (id, new) = store.put(b"hello chunk", None).unwrap();
        assert!(new);
        assert!(!store.put(b"hello chunk", None).unwrap().1, "deduplicated");
        store.sync().unwrap();
        drop(store);
        let store = ChunkStore::open(dir.path()).unwrap();
        assert_eq!(store.get(&id).unwrap(), b"hello chunk");

        // A chunk corrupted on disk is refused on read, not served.
        let path = store.object_path(&id);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(
            store.get(&id),
            Err(ReplicationError::BadChunk { .. })
        ));
        assert!(
            !store.contains(&id),
            "a damaged object reads as missing, to be fetched again"
        );
    }

    #[test]
    fn received_objects_are_verified_before_they_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let id = blake3_hash(b"payload");
        assert!(store.put_encoded(&id, b"\0not the payload").is_err());
        assert!(!store.contains(&id), "nothing kept under a wrong name");
        store.put_encoded(&id, b"\0payload").unwrap();
        assert_eq!(store.get(&id).unwrap(), b"payload");
    }

    #[test]
    fn garbage_collection_keeps_exactly_what_the_kept_manifests_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let (a, _) = store.put(b"kept chunk", None).unwrap();
        let (b, _) = store.put(b"old chunk", None).unwrap();
        let manifest = |id: H256, len: u32| {
            Manifest::new(
                ChunkingParams::default(),
                None,
                vec![FileEntry {
                    path: "f".into(),
                    mode: 0o600,
                    chunks: vec![ChunkRef { id, len }],
                }],
            )
        };
        let new = manifest(a, 10);
        let old = manifest(b, 9);
        store.put_manifest(&new).unwrap();
        store.put_manifest(&old).unwrap();
        let stats = store.collect_garbage(&[&new]).unwrap();
        assert_eq!(stats.removed, 2, "the old chunk and the old manifest");
        assert!(store.contains(&a) && !store.contains(&b));
        assert_eq!(store.manifest(&new.root()).unwrap(), new);
        assert!(store.manifest(&old.root()).is_err());
        assert_eq!(store.disk_usage().unwrap(), stats.kept_bytes);
        assert!(!stats.interrupted);
    }

    #[test]
    fn nothing_is_collected_while_a_writer_holds_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        // A snapshot in progress: its chunk is stored, its manifest not yet.
        let hold = store.hold();
        let (chunk, _) = store.put(b"chunk of a checkpoint being cut", None).unwrap();
        let stats = store.collect_garbage(&[]).unwrap();
        assert!(stats.interrupted && stats.removed == 0);
        assert!(store.contains(&chunk));
        drop(hold);
        let stats = store.collect_garbage(&[]).unwrap();
        assert!(!stats.interrupted && stats.removed == 1);
        assert!(!store.contains(&chunk));
    }

    #[test]
    fn a_checkpoint_written_while_a_collection_runs_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let (garbage, _) = store
            .put(b"a chunk no checkpoint uses any more", None)
            .unwrap();
        // A checkpoint being written, under a hold: its chunk and manifest are stored.
        let mut hold = Some(store.hold());
        let (chunk, _) = store
            .put(b"chunk of the checkpoint being recorded", None)
            .unwrap();
        let checkpoint = Manifest::new(
            ChunkingParams::default(),
            None,
            vec![FileEntry {
                path: "f".into(),
                mode: 0o600,
                chunks: vec![ChunkRef { id: chunk, len: 38 }],
            }],
        );
        store.put_manifest(&checkpoint).unwrap();
        // The collection asks what to keep before the writer said "this one"; the writer says
        // it, then lets go of its hold, before the collection removes anything (the objects
        // are in its listing already).
        let mut asked = 0;
        let stats = store
            .collect_garbage_keeping(|| {
                asked += 1;
                if asked == 1 {
                    hold.take();
                    vec![]
                } else {
                    vec![checkpoint.clone()]
                }
            })
            .unwrap();
        assert_eq!(asked, 2, "asked again after the writer let go");
        assert!(store.contains(&chunk), "the new checkpoint's chunk is kept");
        assert_eq!(store.manifest(&checkpoint.root()).unwrap(), checkpoint);
        assert!(!store.contains(&garbage) && stats.removed == 1);
        assert!(!stats.interrupted);
    }
}
