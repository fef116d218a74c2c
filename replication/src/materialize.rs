//! Applying a checkpoint: its files are written into a new directory beside the target, made
//! durable, and then the target — a symbolic link — is switched to it with one rename. A
//! reader of the target sees the previous checkpoint or the new one, never a mix, and a crash
//! at any point leaves the previous one in place (the next apply removes the leftovers). The
//! files are flushed with one `syncfs` before the directory is renamed into place.
//!
//! Layout for a target `/srv/db`: `/srv/.db.checkpoints/<label>/…` holds the applied
//! checkpoints (the current one and the one before it, for readers still inside it) and
//! `/srv/db -> .db.checkpoints/<label>`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::ReplicationError;
use crate::manifest::Manifest;
use crate::store::{sync_filesystem, ChunkStore};

const STAGING: &str = ".staging";

/// Where the checkpoints of `target` live, and the link's name there.
fn layout(target: &Path) -> Result<(PathBuf, String), ReplicationError> {
    let name = target.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        ReplicationError::TargetNotManaged {
            path: target.to_path_buf(),
        }
    })?;
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((
        parent.join(format!(".{name}.checkpoints")),
        format!(".{name}.checkpoints"),
    ))
}

/// The label of the checkpoint `target` shows, if it is a link this module made.
pub fn applied_label(target: &Path) -> Result<Option<String>, ReplicationError> {
    let (_, versions) = layout(target)?;
    match fs::read_link(target) {
        Ok(link) => Ok(link
            .strip_prefix(&versions)
            .ok()
            .and_then(|l| l.to_str())
            .map(str::to_owned)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(_) if target.exists() => Err(ReplicationError::TargetNotManaged {
            path: target.to_path_buf(),
        }),
        Err(e) => Err(ReplicationError::read(target.display(), e)),
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ReplicationError + '_ {
    move |e| ReplicationError::write(path, e)
}

fn sync_dir(path: &Path) -> Result<(), ReplicationError> {
    fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io(path))
}

/// Writes `manifest`'s files from `store` and switches `target` to them under `label` (a
/// name unique to the checkpoint, e.g. its sequence and root). Returns the directory the
/// target now points to.
pub fn materialize(
    manifest: &Manifest,
    store: &ChunkStore,
    target: &Path,
    label: &str,
) -> Result<PathBuf, ReplicationError> {
    materialize_after(manifest, store, target, label, None)
}

/// [`materialize`], knowing the manifest of the checkpoint the target shows now: a file
/// whose chunks and mode did not change is hard-linked from it instead of written again, so
/// applying a checkpoint costs what changed. (Applied checkpoints are read-only: a reader
/// that needs to write copies the files out, as `on_promote` does.)
pub fn materialize_after(
    manifest: &Manifest,
    store: &ChunkStore,
    target: &Path,
    label: &str,
    shown: Option<&Manifest>,
) -> Result<PathBuf, ReplicationError> {
    if label.is_empty() || label.contains('/') || label.starts_with('.') || label.ends_with(STAGING)
    {
        return Err(ReplicationError::BadManifest {
            reason: format!("checkpoint label {label:?}"),
        });
    }
    let (versions, versions_name) = layout(target)?;
    // Refuse to replace anything that is not ours (an empty directory is taken over).
    match fs::symlink_metadata(target) {
        Ok(m) if m.file_type().is_symlink() => {
            if applied_label(target)?.is_none() {
                return Err(ReplicationError::TargetNotManaged {
                    path: target.to_path_buf(),
                });
            }
        }
        Ok(m)
            if m.is_dir()
                && fs::read_dir(target)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false) =>
        {
            fs::remove_dir(target).map_err(io(target))?;
        }
        Ok(_) => {
            return Err(ReplicationError::TargetNotManaged {
                path: target.to_path_buf(),
            })
        }
        Err(_) => {}
    }
    fs::create_dir_all(&versions).map_err(io(&versions))?;
    let done = versions.join(label);
    if !done.is_dir() {
        let staging = versions.join(format!("{label}{STAGING}"));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io(&staging))?;
        }
        let previous = match (shown, applied_label(target)?) {
            (Some(m), Some(l)) if l != label => Some((m, versions.join(l))),
            _ => None,
        };
        let written = write_files(manifest, store, &staging, previous);
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        // Every file durable before the directory gets its final name: one flush for all.
        sync_filesystem(&staging)?;
        fs::rename(&staging, &done).map_err(io(&done))?;
        sync_dir(&versions)?;
    }
    switch_link(target, &versions, &versions_name, label)?;
    remove_old(&versions, label)?;
    Ok(done)
}

/// Writes the files of `manifest` into `staging`; a file unchanged from `previous` (the
/// manifest and directory of the checkpoint shown now) is hard-linked from there.
fn write_files(
    manifest: &Manifest,
    store: &ChunkStore,
    staging: &Path,
    previous: Option<(&Manifest, PathBuf)>,
) -> Result<(), ReplicationError> {
    fs::create_dir_all(staging).map_err(io(staging))?;
    let unchanged: std::collections::HashMap<&str, &crate::manifest::FileEntry> = previous
        .as_ref()
        .map(|(m, _)| m.files.iter().map(|f| (f.path.as_str(), f)).collect())
        .unwrap_or_default();
    for entry in &manifest.files {
        let path = staging.join(&entry.path);
        if let Some(parent) = path.parent().filter(|p| !p.exists()) {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        if let (Some(old), Some((_, dir))) = (unchanged.get(entry.path.as_str()), &previous) {
            let source = dir.join(&entry.path);
            let same_size = fs::metadata(&source).is_ok_and(|m| m.len() == entry.size());
            if *old == entry && same_size && fs::hard_link(&source, &path).is_ok() {
                continue;
            }
        }
        let mut file = std::io::BufWriter::new(fs::File::create(&path).map_err(io(&path))?);
        for chunk in &entry.chunks {
            let data = store.get(&chunk.id)?;
            if data.len() != chunk.len as usize {
                return Err(ReplicationError::BadChunk {
                    id: chunk.id,
                    reason: format!("{} bytes, the manifest says {}", data.len(), chunk.len),
                });
            }
            file.write_all(&data).map_err(io(&path))?;
        }
        let file = file.into_inner().map_err(|e| io(&path)(e.into_error()))?;
        file.set_permissions(fs::Permissions::from_mode(entry.mode))
            .map_err(io(&path))?;
    }
    Ok(())
}

fn switch_link(
    target: &Path,
    versions: &Path,
    versions_name: &str,
    label: &str,
) -> Result<(), ReplicationError> {
    let parent = versions.parent().unwrap_or(Path::new("."));
    let temp = versions.join(format!("link{STAGING}"));
    let _ = fs::remove_file(&temp);
    std::os::unix::fs::symlink(Path::new(versions_name).join(label), &temp).map_err(io(&temp))?;
    fs::rename(&temp, target).map_err(io(target))?;
    sync_dir(parent)
}

/// Keeps the applied checkpoint and the one it replaced; removes older ones and leftovers.
fn remove_old(versions: &Path, current: &str) -> Result<(), ReplicationError> {
    let mut labels: Vec<(std::time::SystemTime, PathBuf)> = vec![];
    for entry in
        fs::read_dir(versions).map_err(|e| ReplicationError::read(versions.display(), e))?
    {
        let entry = entry.map_err(|e| ReplicationError::read(versions.display(), e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == current {
            continue;
        }
        let path = entry.path();
        if name.ends_with(STAGING) {
            let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
            continue;
        }
        let modified = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        labels.push((modified, path));
    }
    labels.sort();
    // The newest other one is the checkpoint just replaced: readers may still be in it.
    labels.pop();
    for (_, path) in labels {
        fs::remove_dir_all(&path).map_err(io(&path))?;
    }
    Ok(())
}
