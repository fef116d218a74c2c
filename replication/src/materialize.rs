//! Applying a checkpoint: its files are written into a new directory beside the target and
//! the target — a symbolic link — is switched to it with one rename. A reader of the target
//! sees the previous checkpoint or the new one, never a mix.
//!
//! Visible first, durable next: [`materialize_after`] returns once the target shows the new
//! checkpoint (a reader has it at once); [`make_durable`] then flushes the filesystem — files,
//! the renamed directory and the switched link in one `syncfs` — and records the label as
//! durable. Nothing may be acknowledged before that. After a crash in between, [`recover`]
//! (run before the target is used) checks the shown checkpoint against its manifest, byte for
//! byte, and goes back to the last durable one if anything is missing or torn: a crash at any
//! point leaves a complete checkpoint in the target.
//!
//! Once durable and acknowledged, [`prepare_next`] readies the next apply: a copy of the
//! shown checkpoint, its files hard-linked, which the next apply turns into its checkpoint by
//! writing only what changed (linking every unchanged file costs ~20 µs a file, on the path
//! from a write to the standby showing it). The copy is made out of the oldest checkpoint
//! directory no reader needs any more, relinking only the files that differ, when the
//! manifests of both are at hand; else every file is linked.
//!
//! Layout for a target `/srv/db`: `/srv/.db.checkpoints/<label>/…` holds the applied
//! checkpoints (the current one, the one before it for readers still inside it, and the last
//! durable one), `/srv/.db.checkpoints/.durable` names the last durable label,
//! `/srv/.db.checkpoints/.next-<label>` is the copy of the durable checkpoint for the next
//! apply (`.spare`, an empty directory, when there is none),
//! `/srv/.db.checkpoints/.replaced-link` is the link the last switch replaced (removed by the
//! next [`prepare_next`]), and `/srv/db -> .db.checkpoints/<label>`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use drchain_support::H256;

use crate::error::ReplicationError;
use crate::manifest::{FileEntry, Manifest};
use crate::store::{sync_filesystem, ChunkStore};

const STAGING: &str = ".staging";
/// In the checkpoints directory: an empty directory made ready for the next apply.
const SPARE: &str = ".spare";
/// In the checkpoints directory: the label of the last checkpoint made durable.
const DURABLE: &str = ".durable";
/// In the checkpoints directory, `.next-LABEL`: checkpoint LABEL's files hard-linked into a
/// directory of their own once it is durable, so the next apply writes only what changed
/// instead of linking every unchanged file on the way to showing it.
const NEXT: &str = ".next-";
/// In the checkpoints directory: the link the last switch replaced, kept until the next
/// [`prepare_next`] (see [`switch_link`]).
const REPLACED_LINK: &str = ".replaced-link";

/// Where an apply reads the plain bytes of a checkpoint's chunks.
pub trait ChunkSource {
    /// Chunk `id`, verified against its name.
    fn chunk(&self, id: &H256) -> Result<Cow<'_, [u8]>, ReplicationError>;
}

impl ChunkSource for ChunkStore {
    fn chunk(&self, id: &H256) -> Result<Cow<'_, [u8]>, ReplicationError> {
        self.get(id).map(Cow::Owned)
    }
}

/// Chunks verified in memory (a pushed checkpoint's), the store for the rest.
#[derive(Debug)]
pub struct WithChunks<'a> {
    /// Plain bytes by name, each already verified against it.
    pub verified: &'a HashMap<H256, Vec<u8>>,
    /// Where the others are.
    pub store: &'a ChunkStore,
}

impl ChunkSource for WithChunks<'_> {
    fn chunk(&self, id: &H256) -> Result<Cow<'_, [u8]>, ReplicationError> {
        match self.verified.get(id) {
            Some(plain) => Ok(Cow::Borrowed(plain)),
            None => self.store.get(id).map(Cow::Owned),
        }
    }
}

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

/// Writes `manifest`'s files from `store`, switches `target` to them under `label` (a name
/// unique to the checkpoint, e.g. its sequence and root) and makes that durable. Returns the
/// directory the target now points to.
pub fn materialize(
    manifest: &Manifest,
    store: &ChunkStore,
    target: &Path,
    label: &str,
) -> Result<PathBuf, ReplicationError> {
    let done = materialize_after(manifest, store, target, label, None)?;
    make_durable(target)?;
    prepare_next(target, |_| None)?;
    Ok(done)
}

/// [`materialize`], knowing the manifest of the checkpoint the target shows now: a file
/// whose chunks and mode did not change is hard-linked from it instead of written again, so
/// applying a checkpoint costs what changed. (Applied checkpoints are read-only: a reader
/// that needs to write copies the files out, as `on_promote` does.)
///
/// Returns once the target shows the checkpoint, before it is durable: call [`make_durable`]
/// before acknowledging it.
pub fn materialize_after(
    manifest: &Manifest,
    chunks: &dyn ChunkSource,
    target: &Path,
    label: &str,
    shown: Option<&Manifest>,
) -> Result<PathBuf, ReplicationError> {
    if !is_label(label) {
        return Err(ReplicationError::BadManifest {
            reason: format!("checkpoint label {label:?}"),
        });
    }
    let (versions, versions_name) = layout(target)?;
    let not_managed = || ReplicationError::TargetNotManaged {
        path: target.to_path_buf(),
    };
    // Refuse to replace anything that is not ours (an empty directory is taken over).
    let shown_label = match fs::symlink_metadata(target) {
        Ok(m) if m.file_type().is_symlink() => {
            Some(applied_label(target)?.ok_or_else(not_managed)?)
        }
        Ok(m)
            if m.is_dir()
                && fs::read_dir(target)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false) =>
        {
            fs::remove_dir(target).map_err(io(target))?;
            None
        }
        Ok(_) => return Err(not_managed()),
        Err(_) => None,
    };
    fs::create_dir_all(&versions).map_err(io(&versions))?;
    let done = versions.join(label);
    if !done.is_dir() {
        let previous = match (shown, shown_label) {
            (Some(m), Some(l)) if l != label => Some((m, l)),
            _ => None,
        };
        // The shown checkpoint's copy [`prepare_next`] left, if there: only what changed is
        // written into it.
        let mirror = previous
            .as_ref()
            .map(|(_, l)| versions.join(format!("{NEXT}{l}")))
            .filter(|p| p.is_dir());
        let (staging, written) = match (mirror, previous) {
            (Some(mirror), Some((shown, _))) => {
                let staging = versions.join(format!("{label}{STAGING}"));
                if staging.exists() {
                    fs::remove_dir_all(&staging).map_err(io(&staging))?;
                }
                fs::rename(&mirror, &staging).map_err(io(&staging))?;
                let written = update_files(manifest, chunks, &staging, shown);
                (staging, written)
            }
            (_, previous) => {
                // The empty directory the last flush left ready, if there: creating a
                // directory is among the slowest steps of an apply on a busy filesystem.
                let spare = versions.join(SPARE);
                let staging = if is_empty_dir(&spare) {
                    spare
                } else {
                    versions.join(format!("{label}{STAGING}"))
                };
                if staging.exists() && !is_empty_dir(&staging) {
                    fs::remove_dir_all(&staging).map_err(io(&staging))?;
                }
                let previous = previous.map(|(m, l)| (m, versions.join(l)));
                let written = write_files(manifest, chunks, &staging, previous);
                (staging, written)
            }
        };
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        fs::rename(&staging, &done).map_err(io(&done))?;
    }
    switch_link(target, &versions, &versions_name, label)?;
    Ok(done)
}

/// What [`materialize_after`] writes to apply a manifest over the checkpoint shown now, out
/// of its prepared copy ([`files_to_write`]). The rest is a pass over both listings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ToWrite {
    /// Files written (changed or new).
    pub files: usize,
    /// Their bytes, as the manifest gives them.
    pub bytes: u64,
    /// Their chunks: a look-up each, however small (a manifest may name chunks of 1 byte).
    pub chunks: usize,
}

/// What applying `manifest` over the checkpoint shown now (`shown`) writes.
pub fn files_to_write(manifest: &Manifest, shown: &Manifest) -> ToWrite {
    // Both listings are sorted by path.
    let mut before = shown.files.iter().peekable();
    let mut to_write = ToWrite::default();
    for entry in &manifest.files {
        while before.next_if(|f| f.path < entry.path).is_some() {}
        let unchanged = before
            .next_if(|f| f.path == entry.path)
            .is_some_and(|f| f == entry);
        if !unchanged {
            to_write.files += 1;
            to_write.bytes += entry.size();
            to_write.chunks += entry.chunks.len();
        }
    }
    to_write
}

/// Makes what the target shows durable — its files, its directory and the link, with one
/// flush — and records its label as the last durable one. Older checkpoints stay until
/// [`prepare_next`].
pub fn make_durable(target: &Path) -> Result<(), ReplicationError> {
    let Some(label) = applied_label(target)? else {
        return Ok(());
    };
    let (versions, _) = layout(target)?;
    sync_filesystem(&versions)?;
    // Not flushed itself: if it survives a crash, the flush before it completed; if it does
    // not, [`recover`] checks the data instead.
    let marker = versions.join(DURABLE);
    let temp = versions.join(format!("{DURABLE}{STAGING}"));
    fs::write(&temp, label.as_bytes()).map_err(io(&temp))?;
    fs::rename(&temp, &marker).map_err(io(&marker))
}

/// Tidies up after the shown checkpoint was made durable and readies the next apply: removes
/// checkpoints older than the one it replaced, and makes a copy of the shown one, its files
/// hard-linked, in a directory of its own (`.next-LABEL`), which the next apply changes into
/// its checkpoint — writing what changed — instead of linking every unchanged file while a
/// write waits to be shown. Call it after acknowledging. Does nothing if the shown checkpoint
/// is not durable; nothing more if its copy is made.
///
/// The copy is made out of the newest checkpoint directory no reader needs any more (older
/// than the one the shown checkpoint replaced) when `manifest_of` gives the manifests of both
/// (by label): only the files that differ are removed or linked — a call per changed file,
/// not per file (10,000 files: ~100 ms of links and as many removals otherwise, on every
/// apply). Without them every file is linked into a new directory.
pub fn prepare_next(
    target: &Path,
    mut manifest_of: impl FnMut(&str) -> Option<Manifest>,
) -> Result<(), ReplicationError> {
    let (Some(label), durable) = (applied_label(target)?, durable_label(target)?) else {
        return Ok(());
    };
    if durable.as_deref() != Some(label.as_str()) {
        return Ok(());
    }
    let (versions, _) = layout(target)?;
    let next = versions.join(format!("{NEXT}{label}"));
    let reusable = if next.is_dir() {
        None
    } else {
        unneeded(&versions, &label)?.pop()
    };
    remove_old(&versions, &label, reusable.as_deref())?;
    // The empty directory an apply without a copy starts from.
    match fs::create_dir(versions.join(SPARE)) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(io(&versions)(e)),
        _ => Ok(()),
    }?;
    if next.is_dir() {
        return Ok(());
    }
    let temp = versions.join(format!("{NEXT}{label}{STAGING}"));
    if temp.exists() {
        fs::remove_dir_all(&temp).map_err(io(&temp))?;
    }
    let shown = versions.join(&label);
    let manifests = reusable
        .as_ref()
        .and_then(|old| Some((old, manifest_of(old)?, manifest_of(&label)?)));
    let made = match manifests {
        Some((old, from, to)) => fs::rename(versions.join(old), &temp)
            .map_err(io(&temp))
            .and_then(|()| relink_changed(&temp, &from, &to, &shown)),
        None => {
            if let Some(old) = &reusable {
                let old = versions.join(old);
                fs::remove_dir_all(&old).map_err(io(&old))?;
            }
            link_tree(&shown, &temp)
        }
    };
    if let Err(e) = made {
        let _ = fs::remove_dir_all(&temp);
        return Err(e);
    }
    fs::rename(&temp, &next).map_err(io(&next))
}

/// Turns `dir`, holding the files of manifest `from`, into a copy of the checkpoint `shown`,
/// whose manifest is `to`: removes the files `to` does not have or has otherwise, and links
/// from `shown` those that differ.
fn relink_changed(
    dir: &Path,
    from: &Manifest,
    to: &Manifest,
    shown: &Path,
) -> Result<(), ReplicationError> {
    let wanted: HashMap<&str, &FileEntry> = to.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let had: HashMap<&str, &FileEntry> = from.files.iter().map(|f| (f.path.as_str(), f)).collect();
    for old in &from.files {
        match wanted.get(old.path.as_str()) {
            Some(new) if *new == old => {}
            Some(_) => remove_if_there(&dir.join(&old.path))?,
            None => remove_with_emptied_parents(dir, &old.path)?,
        }
    }
    for new in &to.files {
        if had.get(new.path.as_str()) == Some(&new) {
            continue;
        }
        let path = dir.join(&new.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        fs::hard_link(shown.join(&new.path), &path).map_err(io(&path))?;
    }
    Ok(())
}

/// Recreates the directories under `from` at `to`, hard-linking each regular file.
fn link_tree(from: &Path, to: &Path) -> Result<(), ReplicationError> {
    fs::create_dir(to).map_err(io(to))?;
    for entry in fs::read_dir(from).map_err(|e| ReplicationError::read(from.display(), e))? {
        let entry = entry.map_err(|e| ReplicationError::read(from.display(), e))?;
        let kind = entry
            .file_type()
            .map_err(|e| ReplicationError::read(from.display(), e))?;
        let path = to.join(entry.file_name());
        if kind.is_dir() {
            link_tree(&entry.path(), &path)?;
        } else if kind.is_file() {
            fs::hard_link(entry.path(), &path).map_err(io(&path))?;
        }
    }
    Ok(())
}

fn is_empty_dir(path: &Path) -> bool {
    fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())
}

/// The label of the last checkpoint of `target` made durable, if recorded.
pub fn durable_label(target: &Path) -> Result<Option<String>, ReplicationError> {
    let (versions, _) = layout(target)?;
    let marker = versions.join(DURABLE);
    match fs::read(&marker) {
        Ok(bytes) => Ok(String::from_utf8(bytes).ok().filter(|l| is_label(l))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ReplicationError::read(marker.display(), e)),
    }
}

fn is_label(label: &str) -> bool {
    !(label.is_empty() || label.contains('/') || label.starts_with('.') || label.ends_with(STAGING))
}

/// What [`recover`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The target shows a durable checkpoint (or none).
    Intact,
    /// The shown checkpoint was not recorded durable but checks out: now it is.
    Verified { label: String },
    /// The shown checkpoint was torn or could not be checked: the target went back to the
    /// last durable one, `to` (none: the target was removed and is applied again).
    Reverted { from: String, to: Option<String> },
}

/// Run before the target is used after a start: if what it shows was not made durable (a
/// crash came between switching and flushing), checks its files against the manifest
/// `manifest_of(label)` gives and either makes it durable or goes back to the last durable
/// checkpoint.
pub fn recover(
    target: &Path,
    manifest_of: impl FnOnce(&str) -> Option<Manifest>,
) -> Result<Recovery, ReplicationError> {
    let shown = applied_label(target)?;
    let durable = durable_label(target)?;
    let (versions, versions_name) = layout(target)?;
    // A directory neither shown nor durable may have been renamed into place before a crash
    // and never flushed: it must not be taken for a complete checkpoint later.
    if versions.is_dir() {
        let keep = [shown.as_deref(), durable.as_deref()];
        remove_old_except(&versions, &keep)?;
    }
    let Some(shown) = shown else {
        return Ok(Recovery::Intact);
    };
    if durable.as_deref() == Some(shown.as_str()) {
        return Ok(Recovery::Intact);
    }
    let dir = versions.join(&shown);
    if manifest_of(&shown).is_some_and(|m| holds(&dir, &m)) {
        make_durable(target)?;
        return Ok(Recovery::Verified { label: shown });
    }
    let to = durable.filter(|l| versions.join(l).is_dir());
    match &to {
        Some(label) => switch_link(target, &versions, &versions_name, label)?,
        None => fs::remove_file(target).map_err(io(target))?,
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    sync_filesystem(&versions)?;
    Ok(Recovery::Reverted { from: shown, to })
}

/// Removes every checkpoint directory and leftover in `versions` but those named in `keep`.
fn remove_old_except(versions: &Path, keep: &[Option<&str>]) -> Result<(), ReplicationError> {
    for entry in
        fs::read_dir(versions).map_err(|e| ReplicationError::read(versions.display(), e))?
    {
        let entry = entry.map_err(|e| ReplicationError::read(versions.display(), e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == DURABLE || keep.contains(&Some(&*name)) {
            continue;
        }
        let path = entry.path();
        fs::remove_dir_all(&path)
            .or_else(|_| fs::remove_file(&path))
            .map_err(io(&path))?;
    }
    Ok(())
}

/// Whether `dir` holds exactly `manifest`'s files, byte for byte.
fn holds(dir: &Path, manifest: &Manifest) -> bool {
    let mut expected = 0usize;
    for entry in &manifest.files {
        expected += 1;
        if !file_matches(&dir.join(&entry.path), entry) {
            return false;
        }
    }
    count_files(dir).is_some_and(|n| n == expected)
}

fn file_matches(path: &Path, entry: &FileEntry) -> bool {
    let Ok(mut file) = fs::File::open(path) else {
        return false;
    };
    if !file
        .metadata()
        .is_ok_and(|m| m.is_file() && m.len() == entry.size())
    {
        return false;
    }
    let mut buffer = vec![];
    entry.chunks.iter().all(|chunk| {
        buffer.resize(chunk.len as usize, 0);
        file.read_exact(&mut buffer).is_ok() && blake3::hash(&buffer).as_bytes() == &chunk.id.0
    })
}

fn count_files(dir: &Path) -> Option<usize> {
    let mut count = 0;
    for entry in fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        let kind = entry.file_type().ok()?;
        if kind.is_dir() {
            count += count_files(&entry.path())?;
        } else {
            count += 1;
        }
    }
    Some(count)
}

/// Writes the files of `manifest` into `staging`; a file unchanged from `previous` (the
/// manifest and directory of the checkpoint shown now) is hard-linked from there.
fn write_files(
    manifest: &Manifest,
    chunks: &dyn ChunkSource,
    staging: &Path,
    previous: Option<(&Manifest, PathBuf)>,
) -> Result<(), ReplicationError> {
    fs::create_dir_all(staging).map_err(io(staging))?;
    // Directories made so far: each is made once, not looked up for every file in it (with
    // thousands of unchanged files to link, a lookup per file is a fifth of an apply).
    let mut made: std::collections::HashSet<PathBuf> = [staging.to_path_buf()].into();
    let unchanged: std::collections::HashMap<&str, &crate::manifest::FileEntry> = previous
        .as_ref()
        .map(|(m, _)| m.files.iter().map(|f| (f.path.as_str(), f)).collect())
        .unwrap_or_default();
    for entry in &manifest.files {
        let path = staging.join(&entry.path);
        if let Some(parent) = path.parent().filter(|p| !made.contains(*p)) {
            fs::create_dir_all(parent).map_err(io(parent))?;
            made.insert(parent.to_path_buf());
        }
        if let (Some(old), Some((_, dir))) = (unchanged.get(entry.path.as_str()), &previous) {
            let source = dir.join(&entry.path);
            let same_size = fs::metadata(&source).is_ok_and(|m| m.len() == entry.size());
            if *old == entry && same_size && fs::hard_link(&source, &path).is_ok() {
                continue;
            }
        }
        write_file(entry, chunks, &path)?;
    }
    Ok(())
}

/// Turns `dir`, a copy of the checkpoint `shown` (its files hard-linked), into `manifest`'s:
/// removes the files it no longer has and writes those that changed — each as a new file,
/// never into one shared with the checkpoint shown.
fn update_files(
    manifest: &Manifest,
    chunks: &dyn ChunkSource,
    dir: &Path,
    shown: &Manifest,
) -> Result<(), ReplicationError> {
    let kept: std::collections::HashSet<&str> =
        manifest.files.iter().map(|f| f.path.as_str()).collect();
    for gone in shown
        .files
        .iter()
        .filter(|f| !kept.contains(f.path.as_str()))
    {
        remove_with_emptied_parents(dir, &gone.path)?;
    }
    let before: HashMap<&str, &FileEntry> =
        shown.files.iter().map(|f| (f.path.as_str(), f)).collect();
    for entry in &manifest.files {
        if before.get(entry.path.as_str()) == Some(&entry) {
            continue;
        }
        let path = dir.join(&entry.path);
        remove_if_there(&path)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        write_file(entry, chunks, &path)?;
    }
    Ok(())
}

/// Removes `relative` from `dir`, and the directories it leaves empty: a checkpoint lists
/// files only.
fn remove_with_emptied_parents(dir: &Path, relative: &str) -> Result<(), ReplicationError> {
    let path = dir.join(relative);
    remove_if_there(&path)?;
    let mut parent = path.parent();
    while let Some(p) = parent.filter(|p| *p != dir) {
        if fs::remove_dir(p).is_err() {
            break;
        }
        parent = p.parent();
    }
    Ok(())
}

fn remove_if_there(path: &Path) -> Result<(), ReplicationError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// Writes `entry`'s bytes into a new file at `path`.
fn write_file(
    entry: &FileEntry,
    chunks: &dyn ChunkSource,
    path: &Path,
) -> Result<(), ReplicationError> {
    let created = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io(path))?;
    let mut file = std::io::BufWriter::new(created);
    for chunk in &entry.chunks {
        let data = chunks.chunk(&chunk.id)?;
        if data.len() != chunk.len as usize {
            return Err(ReplicationError::BadChunk {
                id: chunk.id,
                reason: format!("{} bytes, the manifest says {}", data.len(), chunk.len),
            });
        }
        file.write_all(&data).map_err(io(path))?;
    }
    let file = file.into_inner().map_err(|e| io(path)(e.into_error()))?;
    file.set_permissions(fs::Permissions::from_mode(entry.mode))
        .map_err(io(path))
}

fn switch_link(
    target: &Path,
    versions: &Path,
    versions_name: &str,
    label: &str,
) -> Result<(), ReplicationError> {
    let temp = versions.join(format!("link{STAGING}"));
    let _ = fs::remove_file(&temp);
    std::os::unix::fs::symlink(Path::new(versions_name).join(label), &temp).map_err(io(&temp))?;
    // The link being replaced keeps a name of its own until the next `prepare_next`, off the
    // way to showing the checkpoint: replacing its last name would free its inode and its
    // block (a link this long is not stored in the inode), which on a filesystem that
    // discards freed blocks at once (ext4 mounted with `discard`, as on the VM of
    // docs/benchmarks.md) waits for a discard — a rename over the link took ~180 µs instead
    // of ~20 µs there.
    let replaced = versions.join(REPLACED_LINK);
    if let Err(e) = fs::hard_link(target, &replaced) {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            let _ = fs::remove_file(&replaced);
            let _ = fs::hard_link(target, &replaced);
        }
    }
    fs::rename(&temp, target).map_err(io(target))
}

/// The checkpoints of `versions` no reader needs: all but `current` and the newest other one
/// (the checkpoint `current` replaced: readers may still be in it), oldest first.
///
/// Newest by change time: a checkpoint's directory is renamed to its label when it is
/// applied, which sets it (its modification time is older when a copy made long ago became it
/// with changes below its top level only).
fn unneeded(versions: &Path, current: &str) -> Result<Vec<String>, ReplicationError> {
    use std::os::unix::fs::MetadataExt;
    let mut labels: Vec<((i64, i64), String)> = vec![];
    for entry in
        fs::read_dir(versions).map_err(|e| ReplicationError::read(versions.display(), e))?
    {
        let entry = entry.map_err(|e| ReplicationError::read(versions.display(), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == current || !is_label(&name) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let changed = entry
            .metadata()
            .map_or((0, 0), |m| (m.ctime(), m.ctime_nsec()));
        labels.push((changed, name));
    }
    labels.sort();
    labels.pop();
    Ok(labels.into_iter().map(|(_, label)| label).collect())
}

/// Keeps the applied (and durable) checkpoint, the one it replaced, and `reused` (about to
/// become the next apply's copy); removes older ones and leftovers.
fn remove_old(
    versions: &Path,
    current: &str,
    reused: Option<&str>,
) -> Result<(), ReplicationError> {
    for entry in
        fs::read_dir(versions).map_err(|e| ReplicationError::read(versions.display(), e))?
    {
        let entry = entry.map_err(|e| ReplicationError::read(versions.display(), e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        if let Some(of) = name.strip_prefix(NEXT) {
            if of != current {
                fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        } else if name.ends_with(STAGING) && !name.starts_with(DURABLE) {
            let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
        } else if name == REPLACED_LINK {
            fs::remove_file(&path)
                .or_else(|_| fs::remove_dir_all(&path))
                .map_err(io(&path))?;
        }
    }
    for label in unneeded(versions, current)? {
        if Some(label.as_str()) != reused {
            let path = versions.join(label);
            fs::remove_dir_all(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}
