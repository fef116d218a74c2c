//! Manifests: which files a checkpoint holds, each as an ordered list of chunks, encoded
//! canonically (SCALE, files sorted by path) so that equal content has one root, the blake3
//! of the encoding. The root is what goes on chain; a manifest from a peer is checked against
//! it before anything in it is believed.

use std::collections::{BTreeSet, HashSet};

use drchain_support::{blake3_hash, H256};
use parity_scale_codec::{Decode, DecodeLimit, Encode};

use crate::chunk::{ChunkId, ChunkingParams, MAX_CHUNK_BYTES};
use crate::error::ReplicationError;

/// The format version this code writes and reads.
pub const MANIFEST_VERSION: u8 = 1;
/// Largest encoded manifest accepted, bytes (about 450,000 chunks: 7 TiB at 16 KiB).
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024 * 1024;
/// Longest relative path in a manifest, bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// A manifest's canonical encoding and its root ([`Manifest::encoded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedManifest {
    /// The canonical encoding.
    pub bytes: Vec<u8>,
    /// blake3 of `bytes`.
    pub root: H256,
}

/// A chunk of a file: its name and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct ChunkRef {
    /// blake3 of its plain bytes.
    pub id: ChunkId,
    /// Its length, bytes.
    pub len: u32,
}

/// A regular file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct FileEntry {
    /// Relative, `/`-separated, no `.`/`..`/empty components.
    pub path: String,
    /// Unix permission bits (`0o7777` at most).
    pub mode: u32,
    /// Its chunks in order; their lengths add up to the file's size.
    pub chunks: Vec<ChunkRef>,
}

impl FileEntry {
    /// The file's size, bytes.
    pub fn size(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.len)).sum()
    }
}

/// A checkpoint's content.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub version: u8,
    /// How the files were cut.
    pub chunking: ChunkingParams,
    /// The zstd dictionary the chunks were compressed with, if any (needed to decode them).
    pub dictionary: Option<H256>,
    /// The files, sorted by path, unique.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// A manifest of `files` (sorted here).
    pub fn new(
        chunking: ChunkingParams,
        dictionary: Option<H256>,
        mut files: Vec<FileEntry>,
    ) -> Self {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Self {
            version: MANIFEST_VERSION,
            chunking,
            dictionary,
            files,
        }
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode()
    }

    /// The canonical encoding and the root, from one encoding: for whoever needs both (a
    /// service of 10,000 files has a manifest of ~650 KB, encoded in ~0.2 ms and hashed in
    /// ~0.1 ms on the VM of docs/benchmarks.md).
    pub fn encoded(&self) -> EncodedManifest {
        let bytes = self.encode();
        let root = blake3_hash(&bytes);
        EncodedManifest { bytes, root }
    }

    /// blake3 of the canonical encoding: the checkpoint's name on chain.
    pub fn root(&self) -> H256 {
        blake3_hash(&self.encode())
    }

    /// Total size of the files, bytes.
    pub fn size(&self) -> u64 {
        self.files.iter().map(FileEntry::size).sum()
    }

    /// Every distinct chunk the files use.
    pub fn chunk_ids(&self) -> BTreeSet<ChunkId> {
        self.files
            .iter()
            .flat_map(|f| f.chunks.iter().map(|c| c.id))
            .collect()
    }

    /// The objects this manifest uses (its dictionary first, then its chunks in the order the
    /// files list them) that `previous` does not, each once.
    pub fn new_since(&self, previous: Option<&Manifest>) -> Vec<H256> {
        let chunks = |m: &Manifest| -> usize { m.files.iter().map(|f| f.chunks.len()).sum() };
        let mut had: HashSet<H256> = HashSet::with_capacity(previous.map_or(0, chunks) + 1);
        if let Some(previous) = previous {
            had.extend(previous.dictionary);
            had.extend(
                previous
                    .files
                    .iter()
                    .flat_map(|f| f.chunks.iter().map(|c| c.id)),
            );
        }
        let used = self.dictionary.into_iter().chain(
            self.files
                .iter()
                .flat_map(|f| f.chunks.iter().map(|c| c.id)),
        );
        // Once taken, an object counts as had: each comes once.
        used.filter(|id| had.insert(*id)).collect()
    }

    /// Decodes `bytes` from a peer or from disk, checking them against `root` first and the
    /// format's rules after.
    pub fn decode_verified(bytes: &[u8], root: &H256) -> Result<Self, ReplicationError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ReplicationError::BadManifest {
                reason: format!("{} bytes, more than {MAX_MANIFEST_BYTES}", bytes.len()),
            });
        }
        let actual = blake3_hash(bytes);
        if actual != *root {
            return Err(ReplicationError::ManifestRootMismatch {
                expected: *root,
                actual,
            });
        }
        let mut input = bytes;
        let manifest = Manifest::decode_with_depth_limit(8, &mut input).map_err(|e| {
            ReplicationError::BadManifest {
                reason: e.to_string(),
            }
        })?;
        if !input.is_empty() {
            return Err(ReplicationError::BadManifest {
                reason: format!("{} trailing bytes", input.len()),
            });
        }
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the format's rules: version, chunking params, sorted unique safe paths, chunk
    /// lengths within the params.
    pub fn validate(&self) -> Result<(), ReplicationError> {
        let bad = |reason: String| Err(ReplicationError::BadManifest { reason });
        if self.version != MANIFEST_VERSION {
            return bad(format!(
                "version {} (this node reads {MANIFEST_VERSION})",
                self.version
            ));
        }
        self.chunking.validate()?;
        for pair in self.files.windows(2) {
            if pair[0].path >= pair[1].path {
                return bad(format!("paths not sorted and unique at {:?}", pair[1].path));
            }
        }
        for file in &self.files {
            check_path(&file.path)
                .or_else(|reason| bad(format!("path {:?}: {reason}", file.path)))?;
            if file.mode > 0o7777 {
                return bad(format!("{:?}: mode {:o}", file.path, file.mode));
            }
            if let Some(c) = file
                .chunks
                .iter()
                .find(|c| c.len == 0 || c.len > self.chunking.max.min(MAX_CHUNK_BYTES))
            {
                return bad(format!(
                    "{:?}: chunk {} of {} bytes",
                    file.path, c.id, c.len
                ));
            }
        }
        Ok(())
    }
}

/// Why `path` is not a safe relative path, if it is not. Directory paths in a manifest are
/// implied by files, and a path that is a prefix directory of another file is refused so the
/// tree can be materialized.
fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES {
        return Err("empty or too long".to_owned());
    }
    if path.starts_with('/') {
        return Err("absolute".to_owned());
    }
    if path.contains('\0') {
        return Err("contains NUL".to_owned());
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("empty, `.` or `..` component".to_owned());
    }
    Ok(())
}

/// What a store holding `have` still needs to hold `manifest`: its dictionary and chunks.
pub fn missing(manifest: &Manifest, have: impl Fn(&ChunkId) -> bool) -> Vec<ChunkId> {
    manifest
        .dictionary
        .iter()
        .copied()
        .chain(manifest.chunk_ids())
        .filter(|id| !have(id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, chunks: &[(u8, u32)]) -> FileEntry {
        FileEntry {
            path: path.to_owned(),
            mode: 0o644,
            chunks: chunks
                .iter()
                .map(|(b, len)| ChunkRef {
                    id: H256([*b; 32]),
                    len: *len,
                })
                .collect(),
        }
    }

    fn sample() -> Manifest {
        Manifest::new(
            ChunkingParams::default(),
            None,
            vec![
                file("db/main.sqlite", &[(1, 5000), (2, 7000)]),
                file("a.log", &[(2, 7000)]),
            ],
        )
    }

    #[test]
    fn the_root_is_canonical_and_checked_before_use() {
        let m = sample();
        let bytes = m.to_bytes();
        let back = Manifest::decode_verified(&bytes, &m.root()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.files[0].path, "a.log", "sorted");
        assert_eq!(m.size(), 19_000);
        assert_eq!(m.chunk_ids().len(), 2, "distinct chunks");

        let mut tampered = bytes.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            Manifest::decode_verified(&tampered, &m.root()),
            Err(ReplicationError::ManifestRootMismatch { .. })
        ));
    }

    #[test]
    fn unsafe_or_malformed_manifests_are_refused_even_with_a_matching_root() {
        let cases = [
            file("../etc/passwd", &[(1, 10)]),
            file("/abs", &[(1, 10)]),
            file("a//b", &[(1, 10)]),
            file("a/./b", &[(1, 10)]),
            file("big", &[(1, 2 * 1024 * 1024)]),
            file("empty-chunk", &[(1, 0)]),
        ];
        for entry in cases {
            let m = Manifest {
                files: vec![entry.clone()],
                ..sample()
            };
            let err = Manifest::decode_verified(&m.to_bytes(), &m.root()).unwrap_err();
            assert!(
                matches!(err, ReplicationError::BadManifest { .. }),
                "{entry:?}: {err}"
            );
        }
        // Unsorted or duplicate paths (a forged encoding, not one Manifest::new makes).
        let m = Manifest {
            files: vec![file("b", &[]), file("a", &[])],
            ..sample()
        };
        assert!(Manifest::decode_verified(&m.to_bytes(), &m.root()).is_err());
        let mut garbage = vec![1u8];
        garbage.extend([0xff; 40]);
        assert!(Manifest::decode_verified(&garbage, &blake3_hash(&garbage)).is_err());
    }

    #[test]
    fn the_encoding_and_root_come_from_one_encoding() {
        let m = sample();
        let encoded = m.encoded();
        assert_eq!(encoded.bytes, m.to_bytes());
        assert_eq!(encoded.root, m.root());
    }

    #[test]
    fn what_is_new_since_a_checkpoint_is_each_object_it_did_not_use_once() {
        let previous = sample();
        // A chunk moved to another file and one the previous checkpoint had elsewhere are not
        // new; a chunk used twice is listed once; a new dictionary comes first.
        let next = Manifest::new(
            ChunkingParams::default(),
            Some(H256([9; 32])),
            vec![
                file("a.log", &[(2, 7000), (3, 100), (3, 100)]),
                file("copy", &[(1, 5000), (4, 10)]),
                file("db/main.sqlite", &[(4, 10)]),
            ],
        );
        assert_eq!(
            next.new_since(Some(&previous)),
            vec![H256([9; 32]), H256([3; 32]), H256([4; 32])]
        );
        // Without a previous checkpoint, everything is new; with the same dictionary, it is
        // not.
        assert_eq!(previous.new_since(None), vec![H256([2; 32]), H256([1; 32])]);
        let mut with_dictionary = previous.clone();
        with_dictionary.dictionary = Some(H256([9; 32]));
        assert_eq!(
            with_dictionary.new_since(Some(&with_dictionary)),
            Vec::<H256>::new()
        );
        assert_eq!(next.new_since(Some(&next)), Vec::<H256>::new());
    }

    #[test]
    fn missing_lists_the_dictionary_and_absent_chunks() {
        let mut m = sample();
        m.dictionary = Some(H256([9; 32]));
        let have = |id: &ChunkId| *id == H256([1; 32]);
        assert_eq!(missing(&m, have), vec![H256([9; 32]), H256([2; 32])]);
    }
}
