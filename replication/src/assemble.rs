//! Writing a checkpoint's files straight from its chunks as they arrive — in any order, from
//! several threads: every file is created at its final size, and each verified chunk is
//! written at every offset it occupies. `drchain restore` uses it so a received chunk is
//! written once, into the files, instead of into a chunk store and then out of it again.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::chunk::ChunkId;
use crate::compress::{decode_chunk, Dictionary};
use crate::error::ReplicationError;
use crate::manifest::Manifest;
use crate::store::{sync_filesystem, ChunkStore};

/// Where one chunk goes: its plain length and each (file, offset) it fills.
#[derive(Debug)]
struct Placement {
    len: u32,
    at: Vec<(usize, u64)>,
}

/// The files of one manifest being filled in under a new directory.
#[derive(Debug)]
pub struct Assembly {
    dir: PathBuf,
    /// Each file's path under `dir` and mode, in manifest order.
    files: Vec<(PathBuf, u32)>,
    chunks: HashMap<ChunkId, usize>,
    placements: Vec<Placement>,
    written: Vec<AtomicBool>,
    remaining: AtomicUsize,
}

impl Assembly {
    /// Creates `dir` (which must not exist) and every file of `manifest` in it at its final
    /// size; the chunks are then written with [`Assembly::place`].
    pub fn create(manifest: &Manifest, dir: &Path) -> Result<Self, ReplicationError> {
        manifest.validate()?;
        fs::create_dir(dir).map_err(|e| ReplicationError::write(dir, e))?;
        let mut files = Vec::with_capacity(manifest.files.len());
        let mut chunks = HashMap::new();
        let mut placements: Vec<Placement> = vec![];
        for (index, entry) in manifest.files.iter().enumerate() {
            let path = dir.join(&entry.path);
            if let Some(parent) = path.parent().filter(|p| !p.is_dir()) {
                fs::create_dir_all(parent).map_err(|e| ReplicationError::write(parent, e))?;
            }
            let file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| ReplicationError::write(&path, e))?;
            file.set_len(entry.size())
                .map_err(|e| ReplicationError::write(&path, e))?;
            let mut offset = 0u64;
            for chunk in &entry.chunks {
                let slot = *chunks.entry(chunk.id).or_insert_with(|| {
                    placements.push(Placement {
                        len: chunk.len,
                        at: vec![],
                    });
                    placements.len() - 1
                });
                let placement = &mut placements[slot];
                if placement.len != chunk.len {
                    return Err(ReplicationError::BadManifest {
                        reason: format!(
                            "chunk {} listed with {} and {} bytes",
                            chunk.id, placement.len, chunk.len
                        ),
                    });
                }
                placement.at.push((index, offset));
                offset += u64::from(chunk.len);
            }
            files.push((path, entry.mode));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            written: placements.iter().map(|_| AtomicBool::new(false)).collect(),
            remaining: AtomicUsize::new(placements.len()),
            chunks,
            placements,
        })
    }

    /// Every distinct chunk the files need and that is not written yet, in no particular
    /// order.
    pub fn unwritten(&self) -> Vec<ChunkId> {
        self.chunks
            .iter()
            .filter(|(_, slot)| !self.written[**slot].load(Ordering::Acquire))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Chunks not written yet.
    pub fn remaining(&self) -> usize {
        self.remaining.load(Ordering::Acquire)
    }

    /// Decodes an object as stored or received (`encoded`), checks it is chunk `id` of this
    /// manifest, and writes it wherever the files use it. Returns whether it was new.
    pub fn place_encoded(
        &self,
        id: &ChunkId,
        encoded: &[u8],
        dictionary: Option<&Dictionary>,
    ) -> Result<bool, ReplicationError> {
        let plain = decode_chunk(id, encoded, dictionary)?;
        self.place(id, &plain)
    }

    /// Writes verified chunk `id` (`plain`, its bytes, which hash to `id`) wherever the files
    /// use it. Returns whether it was new; a chunk the manifest does not list is an error.
    pub fn place(&self, id: &ChunkId, plain: &[u8]) -> Result<bool, ReplicationError> {
        let Some(&slot) = self.chunks.get(id) else {
            return Err(ReplicationError::BadChunk {
                id: *id,
                reason: "not a chunk of this checkpoint".to_owned(),
            });
        };
        let placement = &self.placements[slot];
        if plain.len() != placement.len as usize {
            return Err(ReplicationError::BadChunk {
                id: *id,
                reason: format!("{} bytes, the manifest says {}", plain.len(), placement.len),
            });
        }
        if self.written[slot].load(Ordering::Acquire) {
            return Ok(false);
        }
        let mut open: Option<(usize, fs::File)> = None;
        for &(index, offset) in &placement.at {
            let path = &self.files[index].0;
            if open.as_ref().is_none_or(|(i, _)| *i != index) {
                let file = fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| ReplicationError::write(path, e))?;
                open = Some((index, file));
            }
            if let Some((_, file)) = &open {
                file.write_all_at(plain, offset)
                    .map_err(|e| ReplicationError::write(path, e))?;
            }
        }
        // Two threads may write the same chunk at once; the bytes are equal, so only the
        // count needs to be right.
        if !self.written[slot].swap(true, Ordering::AcqRel) {
            self.remaining.fetch_sub(1, Ordering::AcqRel);
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes every chunk not written yet that `store` holds intact, on `threads` threads (at
    /// least one): decoding and verifying are most of a restore from local chunks, and they
    /// then run on every core. A chunk the store lacks, holds damaged (then removed from it,
    /// as [`ChunkStore::get`] does, so a fetched copy can take its place) or that cannot be
    /// written is left unwritten, for the caller to fetch (and to report a write error for).
    /// Returns how many chunks it wrote.
    pub fn place_from_store(&self, store: &ChunkStore, threads: usize) -> usize {
        let ids = self.unwritten();
        let next = AtomicUsize::new(0);
        let placed = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..threads.clamp(1, ids.len().max(1)) {
                scope.spawn(|| {
                    while let Some(id) = ids.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let new = store.get(id).and_then(|plain| self.place(id, &plain));
                        if matches!(new, Ok(true)) {
                            placed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        placed.into_inner()
    }

    /// Once every chunk is written: gives the files their modes and makes them durable. The
    /// caller then renames the directory into place.
    pub fn finish(self) -> Result<PathBuf, ReplicationError> {
        let missing = self.remaining();
        if missing > 0 {
            return Err(ReplicationError::BadManifest {
                reason: format!("{missing} chunks were never written"),
            });
        }
        for (path, mode) in &self.files {
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                .map_err(|e| ReplicationError::write(path, e))?;
        }
        sync_filesystem(&self.dir)?;
        Ok(self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkingParams;
    use crate::snapshot::snapshot_dir;
    use crate::testdata::pseudo_random;

    fn source() -> (tempfile::TempDir, ChunkStore, Manifest) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        let blob = pseudo_random(300_000, 1);
        std::fs::write(data.join("a"), &blob).unwrap();
        // The same content twice, and once inside another file: chunks used in several places.
        std::fs::write(data.join("sub/b"), &blob).unwrap();
        let mut c = pseudo_random(5_000, 2);
        c.extend_from_slice(&blob);
        std::fs::write(data.join("c"), &c).unwrap();
        std::fs::write(data.join("empty"), b"").unwrap();
        std::fs::set_permissions(data.join("c"), fs::Permissions::from_mode(0o640)).unwrap();
        let store = ChunkStore::open(dir.path().join("store")).unwrap();
        let (manifest, _) = snapshot_dir(&data, &store, ChunkingParams::default(), None).unwrap();
        (dir, store, manifest)
    }

    fn tree(dir: &Path) -> Vec<(String, Vec<u8>, u32)> {
        let mut out = vec![];
        for name in ["a", "sub/b", "c", "empty"] {
            let path = dir.join(name);
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
            out.push((name.to_owned(), fs::read(&path).unwrap(), mode));
        }
        out
    }

    #[test]
    fn chunks_placed_in_any_order_rebuild_the_files_byte_for_byte() {
        let (dir, store, manifest) = source();
        let out = dir.path().join("out");
        let assembly = Assembly::create(&manifest, &out).unwrap();
        let mut ids = assembly.unwritten();
        assert!(ids.len() < manifest.files.iter().map(|f| f.chunks.len()).sum());
        ids.reverse();
        for id in &ids {
            let encoded = store.get_encoded(id).unwrap();
            assert!(assembly.place_encoded(id, &encoded, None).unwrap());
            assert!(!assembly.place_encoded(id, &encoded, None).unwrap());
        }
        assert_eq!(assembly.remaining(), 0);
        assert!(assembly.unwritten().is_empty());
        assembly.finish().unwrap();
        assert_eq!(tree(&out), tree(&dir.path().join("data")));
    }

    #[test]
    fn chunks_the_store_holds_intact_are_placed_from_several_threads_the_rest_left_to_fetch() {
        let (dir, store, manifest) = source();
        let out = dir.path().join("out");
        let assembly = Assembly::create(&manifest, &out).unwrap();
        let ids = assembly.unwritten();
        let (lost, damaged) = (ids[0], ids[1]);
        let lost_bytes = store.get_encoded(&lost).unwrap();
        let damaged_bytes = store.get_encoded(&damaged).unwrap();
        fs::remove_file(store.object_path(&lost)).unwrap();
        fs::write(store.object_path(&damaged), b"not the chunk").unwrap();

        assert_eq!(assembly.place_from_store(&store, 3), ids.len() - 2);
        assert!(
            !store.contains(&damaged),
            "a damaged chunk stays in the store"
        );
        let mut left = assembly.unwritten();
        left.sort();
        let mut expected = vec![lost, damaged];
        expected.sort();
        assert_eq!(left, expected);
        // What the caller then fetches elsewhere completes the files.
        assert!(assembly.place_encoded(&lost, &lost_bytes, None).unwrap());
        assert!(assembly
            .place_encoded(&damaged, &damaged_bytes, None)
            .unwrap());
        assembly.finish().unwrap();
        assert_eq!(tree(&out), tree(&dir.path().join("data")));
    }

    #[test]
    fn a_wrong_or_foreign_chunk_is_refused_and_an_unfinished_assembly_says_so() {
        let (dir, store, manifest) = source();
        let assembly = Assembly::create(&manifest, &dir.path().join("out")).unwrap();
        let ids = assembly.unwritten();
        let encoded = store.get_encoded(&ids[0]).unwrap();
        let refused = assembly.place_encoded(&ids[1], &encoded, None);
        assert!(matches!(refused, Err(ReplicationError::BadChunk { .. })));
        let foreign = drchain_support::blake3_hash(b"elsewhere");
        assert!(assembly.place(&foreign, b"elsewhere").is_err());
        let finished = assembly.finish();
        assert!(
            finished
                .as_ref()
                .is_err_and(|e| e.to_string().contains("never written")),
            "{finished:?}"
        );
    }

    #[test]
    fn chunks_compressed_with_a_dictionary_need_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path().join("store")).unwrap();
        let samples: Vec<Vec<u8>> = (0..200u64)
            .map(|i| {
                format!("row {i}; status=shipped; warehouse=eu-west-{}", i % 7)
                    .repeat(40)
                    .into_bytes()
            })
            .collect();
        let dictionary = Dictionary::train(&samples).expect("trained");
        let data = samples[3].clone();
        let (id, _) = store.put(&data, Some(&dictionary)).unwrap();
        let manifest = Manifest::new(
            ChunkingParams::default(),
            Some(dictionary.id()),
            vec![crate::manifest::FileEntry {
                path: "f".to_owned(),
                mode: 0o644,
                chunks: vec![crate::manifest::ChunkRef {
                    id,
                    len: data.len() as u32,
                }],
            }],
        );
        let out = dir.path().join("out");
        let assembly = Assembly::create(&manifest, &out).unwrap();
        let encoded = store.get_encoded(&id).unwrap();
        assert!(assembly.place_encoded(&id, &encoded, None).is_err());
        assert!(assembly
            .place_encoded(&id, &encoded, Some(&dictionary))
            .unwrap());
        assembly.finish().unwrap();
        assert_eq!(fs::read(out.join("f")).unwrap(), data);
    }

    #[test]
    fn an_existing_directory_is_not_written_into() {
        let (dir, _store, manifest) = source();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        assert!(Assembly::create(&manifest, &out).is_err());
    }
}
