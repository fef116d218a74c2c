//! A checkpoint of a directory: every regular file under it, cut into chunks that go into
//! the store, and the manifest that lists them. The directory must hold a consistent copy
//! while this runs (a snapshot command's output, or files replaced atomically).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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
}

/// Snapshots `source` into `store`.
pub fn snapshot_dir(
    source: &Path,
    store: &ChunkStore,
    chunking: ChunkingParams,
    dictionary: Option<&Dictionary>,
) -> Result<(Manifest, SnapshotStats), ReplicationError> {
    chunking.validate()?;
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
                match snapshot_file(&path, relative, store, &chunking, dictionary, &mut stats)? {
                    Some(file) => files.push(file),
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
    store.sync()?;
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
