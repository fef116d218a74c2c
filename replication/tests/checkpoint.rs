//! A directory → snapshot → another node's store → materialized target, as a standby sees it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use drchain_replication::manifest::missing;
use drchain_replication::materialize::{
    applied_label, durable_label, files_to_write, materialize_after, recover, Recovery,
};
use drchain_replication::testdata::pseudo_random;
use drchain_replication::{
    materialize, snapshot_dir, ChunkStore, ChunkingParams, Dictionary, ReplicationError,
};

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// Every file under `dir`, relative path → bytes.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                pending.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Copies what `to` lacks of `root` from `from`, as the transfer does: encoded objects,
/// verified on arrival.
fn transfer(from: &ChunkStore, to: &ChunkStore, root: &drchain_support::H256) -> usize {
    let manifest = to
        .put_manifest_bytes(root, &from.manifest_bytes(root).unwrap())
        .unwrap();
    let need = missing(&manifest, |id| to.contains(id));
    for id in &need {
        to.put_encoded(id, &from.get_encoded(id).unwrap()).unwrap();
    }
    need.len()
}

#[test]
fn a_standby_materializes_checkpoints_byte_for_byte_and_incrementally() {
    let base = tempfile::tempdir().unwrap();
    let source = base.path().join("source");
    write(&source.join("db.bin"), &pseudo_random(2 * 1024 * 1024, 1));
    write(
        &source.join("logs/app.log"),
        &b"line of log text\n".repeat(20_000),
    );
    write(&source.join("empty"), b"");
    fs::set_permissions(source.join("db.bin"), fs::Permissions::from_mode(0o600)).unwrap();

    let active = ChunkStore::open(base.path().join("active-store")).unwrap();
    let standby = ChunkStore::open(base.path().join("standby-store")).unwrap();
    let target = base.path().join("target");

    let (first, stats) = snapshot_dir(&source, &active, ChunkingParams::default(), None).unwrap();
    assert_eq!(stats.files, 3);
    assert_eq!(first.size(), stats.bytes);
    let sent_first = transfer(&active, &standby, &first.root());
    materialize(&first, &standby, &target, "1").unwrap();
    assert_eq!(tree(&target), tree(&source));
    assert_eq!(applied_label(&target).unwrap().as_deref(), Some("1"));
    let mode = fs::metadata(target.join("db.bin"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "modes are kept");

    // A 4 KiB insertion in the middle of the database and an appended log line: only the
    // chunks around them travel.
    let mut db = fs::read(source.join("db.bin")).unwrap();
    db.splice(1_000_000..1_000_000, pseudo_random(4096, 2));
    write(&source.join("db.bin"), &db);
    let mut log = fs::read(source.join("logs/app.log")).unwrap();
    log.extend_from_slice(b"one more line\n");
    write(&source.join("logs/app.log"), &log);
    let (second, stats) = snapshot_dir(&source, &active, ChunkingParams::default(), None).unwrap();
    assert_ne!(second.root(), first.root());
    let sent_second = transfer(&active, &standby, &second.root());
    assert!(
        sent_second * 10 < sent_first,
        "an incremental checkpoint sends a few chunks: {sent_second} vs {sent_first} (new {})",
        stats.new_chunks
    );
    materialize(&second, &standby, &target, "2").unwrap();
    assert_eq!(tree(&target), tree(&source));

    // An unchanged source gives the same root.
    let (again, stats) = snapshot_dir(&source, &active, ChunkingParams::default(), None).unwrap();
    assert_eq!(again.root(), second.root());
    assert_eq!(stats.new_chunks, 0);
}

#[test]
fn a_crash_mid_apply_leaves_the_previous_checkpoint_and_the_next_apply_recovers() {
    let base = tempfile::tempdir().unwrap();
    let source = base.path().join("source");
    write(&source.join("a"), b"first version");
    let store = ChunkStore::open(base.path().join("store")).unwrap();
    let target = base.path().join("target");
    let (first, _) = snapshot_dir(&source, &store, ChunkingParams::default(), None).unwrap();
    materialize(&first, &store, &target, "1").unwrap();

    // The second apply dies half way: a staging directory with a partial file is left.
    write(&source.join("a"), b"second version");
    let (second, _) = snapshot_dir(&source, &store, ChunkingParams::default(), None).unwrap();
    let versions = base.path().join(".target.checkpoints");
    write(&versions.join("2.staging/a"), b"sec");
    assert_eq!(fs::read(target.join("a")).unwrap(), b"first version");

    materialize(&second, &store, &target, "2").unwrap();
    assert_eq!(fs::read(target.join("a")).unwrap(), b"second version");
    assert!(!versions.join("2.staging").exists());

    // A chunk missing from the store fails the apply cleanly; the target is untouched.
    write(&source.join("b"), b"a file whose chunk will go missing");
    let (third, _) = snapshot_dir(&source, &store, ChunkingParams::default(), None).unwrap();
    store.collect_garbage(&[&second]).unwrap();
    let err = materialize(&third, &store, &target, "3").unwrap_err();
    assert!(matches!(err, ReplicationError::Missing { .. }), "{err}");
    assert_eq!(applied_label(&target).unwrap().as_deref(), Some("2"));
    assert!(!versions.join("3.staging").exists() && !versions.join("3").exists());
}

/// A crash after the target shows a checkpoint and before it is flushed: `make_durable`
/// never ran. At the next start `recover` keeps what checks out against its manifest and
/// goes back to the last durable checkpoint from anything torn.
#[test]
fn after_a_crash_between_showing_and_flushing_the_target_is_checked_and_kept_or_reverted() {
    let base = tempfile::tempdir().unwrap();
    let source = base.path().join("source");
    write(&source.join("a"), b"first version");
    write(&source.join("dir/b"), b"unchanged");
    let store = ChunkStore::open(base.path().join("store")).unwrap();
    let target = base.path().join("target");
    let versions = base.path().join(".target.checkpoints");
    let snapshot = || {
        snapshot_dir(&source, &store, ChunkingParams::default(), None)
            .unwrap()
            .0
    };
    let first = snapshot();
    materialize(&first, &store, &target, "1").unwrap();
    assert_eq!(durable_label(&target).unwrap().as_deref(), Some("1"));
    assert_eq!(recover(&target, |_| None).unwrap(), Recovery::Intact);

    // Shown, not flushed, intact: checked and made durable.
    write(&source.join("a"), b"second version");
    let second = snapshot();
    materialize_after(&second, &store, &target, "2", Some(&first)).unwrap();
    assert_eq!(fs::read(target.join("a")).unwrap(), b"second version");
    assert_eq!(durable_label(&target).unwrap().as_deref(), Some("1"));
    let second_of = |label: &str| (label == "2").then(|| second.clone());
    assert_eq!(
        recover(&target, second_of).unwrap(),
        Recovery::Verified {
            label: "2".to_owned()
        }
    );
    assert_eq!(durable_label(&target).unwrap().as_deref(), Some("2"));

    // Shown, not flushed, and torn by the crash (a file's data never reached the disk):
    // back to the durable checkpoint, the torn directory gone.
    write(&source.join("a"), b"third version!");
    let third = snapshot();
    materialize_after(&third, &store, &target, "3", Some(&second)).unwrap();
    fs::write(versions.join("3/a"), b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0").unwrap();
    let third_of = |label: &str| (label == "3").then(|| third.clone());
    assert_eq!(
        recover(&target, third_of).unwrap(),
        Recovery::Reverted {
            from: "3".to_owned(),
            to: Some("2".to_owned())
        }
    );
    assert_eq!(applied_label(&target).unwrap().as_deref(), Some("2"));
    assert_eq!(
        tree(&target),
        tree_of(&[
            ("a", b"second version".to_vec()),
            ("dir/b", b"unchanged".to_vec())
        ])
    );
    assert!(!versions.join("3").exists());
    // The apply runs again and completes.
    materialize(&third, &store, &target, "3").unwrap();
    assert_eq!(fs::read(target.join("a")).unwrap(), b"third version!");

    // A directory renamed into place but never shown nor flushed is not trusted later: the
    // start removes it, so an apply under its label writes it anew.
    write(&versions.join("4/a"), b"half");
    assert_eq!(recover(&target, |_| None).unwrap(), Recovery::Intact);
    assert!(!versions.join("4").exists());

    // Torn with no durable checkpoint recorded: the target goes, and is applied again.
    fs::remove_file(versions.join(".durable")).unwrap();
    fs::write(versions.join("3/dir/b"), b"torn").unwrap();
    assert_eq!(
        recover(&target, third_of).unwrap(),
        Recovery::Reverted {
            from: "3".to_owned(),
            to: None
        }
    );
    assert!(applied_label(&target).unwrap().is_none() && !target.exists());
}

#[test]
fn a_target_that_is_not_drchains_is_left_alone() {
    let base = tempfile::tempdir().unwrap();
    let source = base.path().join("source");
    write(&source.join("a"), b"data");
    let store = ChunkStore::open(base.path().join("store")).unwrap();
    let (m, _) = snapshot_dir(&source, &store, ChunkingParams::default(), None).unwrap();
    let target = base.path().join("precious");
    write(&target.join("keep-me"), b"operator's file");
    let err = materialize(&m, &store, &target, "1").unwrap_err();
    assert!(
        matches!(err, ReplicationError::TargetNotManaged { .. }),
        "{err}"
    );
    assert_eq!(
        fs::read(target.join("keep-me")).unwrap(),
        b"operator's file"
    );
    // An empty directory is taken over.
    let empty = base.path().join("empty");
    fs::create_dir(&empty).unwrap();
    materialize(&m, &store, &empty, "1").unwrap();
    assert_eq!(fs::read(empty.join("a")).unwrap(), b"data");
}

#[test]
fn a_dictionary_travels_with_the_chunks_that_need_it() {
    let base = tempfile::tempdir().unwrap();
    let source = base.path().join("source");
    let rows: String = (0..60_000)
        .map(|i| {
            format!(
                "{{\"id\":{i},\"name\":\"customer-{}\",\"balance\":{}}}\n",
                i % 977,
                (i * 7919) % 100_000
            )
        })
        .collect();
    write(&source.join("rows.jsonl"), rows.as_bytes());
    let active = ChunkStore::open(base.path().join("active")).unwrap();
    let samples: Vec<Vec<u8>> = rows.as_bytes().chunks(4096).map(<[u8]>::to_vec).collect();
    let dictionary = Dictionary::train(&samples).expect("trained");
    let (m, _) = snapshot_dir(
        &source,
        &active,
        ChunkingParams::default(),
        Some(&dictionary),
    )
    .unwrap();
    assert_eq!(m.dictionary, Some(dictionary.id()));
    let standby = ChunkStore::open(base.path().join("standby")).unwrap();
    transfer(&active, &standby, &m.root());
    let target = base.path().join("target");
    materialize(&m, &standby, &target, "1").unwrap();
    assert_eq!(
        fs::read(target.join("rows.jsonl")).unwrap(),
        rows.as_bytes()
    );
    assert!(active.stats.ratio() > 2.0, "ratio {}", active.stats.ratio());
}

/// Runs `mount ARGS`; whether it worked (it needs root, as CI has).
fn mount(args: &[&str]) -> bool {
    std::process::Command::new("mount")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// Unmounts `dir` when dropped.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn a_full_disk_on_the_standby_leaves_the_previous_checkpoint_and_the_apply_recovers_with_space() {
    let base = tempfile::tempdir().unwrap();
    let disk = base.path().join("disk");
    fs::create_dir_all(&disk).unwrap();
    if !mount(&[
        "-t",
        "tmpfs",
        "-o",
        "size=4m",
        "tmpfs",
        disk.to_str().unwrap(),
    ]) {
        assert!(
            std::env::var_os("DRCHAIN_REQUIRE_ROOT").is_none(),
            "mounting a tmpfs failed (DRCHAIN_REQUIRE_ROOT is set)"
        );
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs as root)");
        return;
    }
    let _mounted = Mounted(&disk);
    let source = base.path().join("source");
    let store = ChunkStore::open(base.path().join("store")).unwrap();
    let target = disk.join("target");
    write(&source.join("small"), &pseudo_random(64 * 1024, 1));
    let (first, _) = snapshot_dir(&source, &store, ChunkingParams::default(), None).unwrap();
    materialize(&first, &store, &target, "1").unwrap();

    // The next checkpoint does not fit on the standby's 4 MiB disk.
    write(&source.join("big"), &pseudo_random(6 * 1024 * 1024, 2));
    let (second, _) = snapshot_dir(&source, &store, ChunkingParams::default(), None).unwrap();
    let err = materialize(&second, &store, &target, "2").unwrap_err();
    assert!(
        err.to_string().contains("No space left on device"),
        "a clear error: {err}"
    );
    assert_eq!(applied_label(&target).unwrap().as_deref(), Some("1"));
    assert_eq!(
        tree(&target),
        tree_of(&[("small", pseudo_random(64 * 1024, 1))])
    );
    let versions = disk.join(".target.checkpoints");
    assert!(
        !versions.join("2.staging").exists(),
        "the partial copy is removed"
    );

    // Space returns: the same apply succeeds.
    assert!(mount(&["-o", "remount,size=32m", disk.to_str().unwrap()]));
    materialize(&second, &store, &target, "2").unwrap();
    assert_eq!(applied_label(&target).unwrap().as_deref(), Some("2"));
    assert_eq!(tree(&target), tree(&source));
}

fn tree_of(files: &[(&str, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    files
        .iter()
        .map(|(name, bytes)| ((*name).to_owned(), bytes.clone()))
        .collect()
}

#[test]
fn applying_after_a_shown_checkpoint_links_unchanged_files_and_writes_only_the_changed() {
    use std::os::unix::fs::MetadataExt;
    let base = tempfile::tempdir().unwrap();
    let source = base.path().join("source");
    write(&source.join("big.db"), &pseudo_random(1 << 20, 1));
    write(&source.join("log/1"), b"first entry");
    let store = ChunkStore::open(base.path().join("store")).unwrap();
    let target = base.path().join("target");
    let (first, _) = snapshot_dir(&source, &store, ChunkingParams::default(), None).unwrap();
    drchain_replication::materialize_after(&first, &store, &target, "1", None).unwrap();
    let inode = |p: &Path| fs::metadata(p).unwrap().ino();
    let big_before = inode(&target.join("big.db"));

    write(&source.join("log/1"), b"first entry, then a second");
    let (second, _) = snapshot_dir(&source, &store, ChunkingParams::default(), None).unwrap();
    drchain_replication::materialize_after(&second, &store, &target, "2", Some(&first)).unwrap();
    assert_eq!(tree(&target), tree(&source));
    assert_eq!(
        inode(&target.join("big.db")),
        big_before,
        "unchanged: linked"
    );
    // The previous checkpoint, still kept for its readers, is untouched.
    let previous = base.path().join(".target.checkpoints/1");
    assert_eq!(fs::read(previous.join("log/1")).unwrap(), b"first entry");

    // What the agent weighs before applying: the changed and new files, not the unchanged
    // or removed ones.
    write(&source.join("log/2"), b"a new file");
    fs::remove_file(source.join("log/1")).unwrap();
    let (third, _) = snapshot_dir(&source, &store, ChunkingParams::default(), None).unwrap();
    use drchain_replication::Manifest;
    let to_write = |m: &Manifest, shown: &Manifest| {
        let w = files_to_write(m, shown);
        (w.files, w.bytes, w.chunks)
    };
    assert_eq!(to_write(&second, &first), (1, 26, 1));
    assert_eq!(to_write(&third, &second), (1, 10, 1));
    assert_eq!(to_write(&third, &third), (0, 0, 0));
    assert_eq!(to_write(&first, &third), (1, 11, 1));
    let big = files_to_write(&first, &Manifest::new(first.chunking, None, vec![]));
    assert_eq!((big.files, big.bytes), (2, (1 << 20) + 11));
    assert_eq!(
        big.chunks,
        first.files.iter().map(|f| f.chunks.len()).sum::<usize>()
    );
    assert!(big.chunks > 2, "a MiB of random bytes is several chunks");
}

#[test]
fn an_apply_after_a_durable_one_changes_its_copy_and_leaves_the_shown_checkpoint_as_it_was() {
    use drchain_replication::materialize::{make_durable, prepare_next};
    use std::os::unix::fs::MetadataExt;
    let base = tempfile::tempdir().unwrap();
    let source = base.path().join("source");
    write(&source.join("big.db"), &pseudo_random(1 << 20, 1));
    write(&source.join("log/1"), b"first entry");
    write(&source.join("old/only"), b"goes away with its directory");
    write(&source.join("keep"), b"unchanged");
    let store = ChunkStore::open(base.path().join("store")).unwrap();
    let target = base.path().join("target");
    let versions = base.path().join(".target.checkpoints");
    let (first, _) = snapshot_dir(&source, &store, ChunkingParams::default(), None).unwrap();
    materialize(&first, &store, &target, "1").unwrap();
    assert!(
        versions.join(".next-1").is_dir(),
        "a durable checkpoint leaves its copy"
    );
    let inode = |p: &Path| fs::metadata(p).unwrap().ino();
    let big_before = inode(&target.join("big.db"));

    // Changed in place by the service, removed with its directory, added in a new one, and
    // the mode of one changed.
    write(&source.join("log/1"), b"first entry, then a second");
    fs::remove_dir_all(source.join("old")).unwrap();
    write(&source.join("new/dir/file"), b"added");
    fs::set_permissions(source.join("keep"), fs::Permissions::from_mode(0o600)).unwrap();
    let (second, _) = snapshot_dir(&source, &store, ChunkingParams::default(), None).unwrap();
    materialize_after(&second, &store, &target, "2", Some(&first)).unwrap();
    assert_eq!(tree(&target), tree(&source));
    assert!(
        !target.join("old").exists(),
        "an emptied directory goes too"
    );
    assert_eq!(
        fs::metadata(target.join("keep")).unwrap().mode() & 0o7777,
        0o600
    );
    assert_eq!(inode(&target.join("big.db")), big_before, "unchanged: kept");
    assert!(
        !versions.join(".next-1").exists(),
        "the copy became checkpoint 2"
    );
    // Checkpoint 1, shown until the switch and kept for its readers, shares the unchanged
    // files' inodes with the copy: none was written through.
    let previous = versions.join("1");
    assert_eq!(fs::read(previous.join("log/1")).unwrap(), b"first entry");
    assert_eq!(fs::read(previous.join("keep")).unwrap(), b"unchanged");
    let mode_before = first.files.iter().find(|f| f.path == "keep").unwrap().mode;
    assert_ne!(mode_before, 0o600);
    assert_eq!(
        fs::metadata(previous.join("keep")).unwrap().mode() & 0o7777,
        mode_before,
        "a mode change is a new file, not a chmod of the shared one"
    );
    assert!(previous.join("old/only").is_file());

    make_durable(&target).unwrap();
    assert!(
        !versions.join(".next-2").exists(),
        "made after acknowledging"
    );
    prepare_next(&target, |_| None).unwrap();
    assert!(versions.join(".next-2").is_dir());
    assert!(!versions.join(".next-1").exists());
    assert_eq!(tree(&versions.join(".next-2")), tree(&source));

    // Disk stays bounded: once the third is durable and the next apply readied, only it, the
    // one it replaced (readers may be inside) and the copy remain.
    write(&source.join("log/1"), b"third");
    let (third, _) = snapshot_dir(&source, &store, ChunkingParams::default(), None).unwrap();
    materialize_after(&third, &store, &target, "3", Some(&second)).unwrap();
    make_durable(&target).unwrap();
    prepare_next(&target, |_| None).unwrap();
    assert_eq!(
        names(&versions),
        [".durable", ".next-3", ".spare", "2", "3"]
    );
    assert_eq!(tree(&target), tree(&source));
}

#[test]
fn readying_the_next_apply_reuses_a_checkpoint_no_reader_needs_and_relinks_only_what_changed() {
    use drchain_replication::materialize::{make_durable, prepare_next};
    use drchain_replication::Manifest;
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    let base = tempfile::tempdir().unwrap();
    let source = base.path().join("source");
    write(&source.join("same"), b"never changes");
    write(&source.join("log/1"), b"first");
    write(&source.join("old/only"), b"goes away with its directory");
    write(&source.join("mode"), b"its mode changes");
    let store = ChunkStore::open(base.path().join("store")).unwrap();
    let target = base.path().join("target");
    let versions = base.path().join(".target.checkpoints");
    let inode = |p: &Path| fs::metadata(p).unwrap().ino();
    let snapshot = || {
        snapshot_dir(&source, &store, ChunkingParams::default(), None)
            .unwrap()
            .0
    };
    let mut manifests: HashMap<String, Manifest> = HashMap::new();

    let first = snapshot();
    materialize(&first, &store, &target, "1").unwrap();
    manifests.insert("1".into(), first.clone());
    write(&source.join("log/1"), b"second");
    let second = snapshot();
    materialize_after(&second, &store, &target, "2", Some(&first)).unwrap();
    make_durable(&target).unwrap();
    manifests.insert("2".into(), second.clone());
    // Checkpoint 1 is the one 2 replaced: readers may be in it, so the copy is linked anew.
    prepare_next(&target, |l| manifests.get(l).cloned()).unwrap();
    assert!(versions.join("1").is_dir());
    assert_eq!(tree(&versions.join(".next-2")), tree(&source));

    fs::remove_dir_all(source.join("old")).unwrap();
    write(&source.join("new/dir/file"), b"added");
    fs::set_permissions(source.join("mode"), fs::Permissions::from_mode(0o600)).unwrap();
    let third = snapshot();
    materialize_after(&third, &store, &target, "3", Some(&second)).unwrap();
    // The link the switch replaced keeps a name of its own until the next apply is readied
    // (then its removal frees it, off the way to showing a checkpoint).
    let replaced = versions.join(".replaced-link");
    assert_eq!(
        fs::read_link(&replaced).unwrap(),
        Path::new(".target.checkpoints/2")
    );
    assert_eq!(
        fs::read_link(&target).unwrap(),
        Path::new(".target.checkpoints/3")
    );
    make_durable(&target).unwrap();
    manifests.insert("3".into(), third.clone());
    let unneeded = inode(&versions.join("1"));
    prepare_next(&target, |l| manifests.get(l).cloned()).unwrap();

    let copy = versions.join(".next-3");
    assert_eq!(
        inode(&copy),
        unneeded,
        "checkpoint 1's directory became the copy"
    );
    assert_eq!(tree(&copy), tree(&source));
    for file in &third.files {
        assert_eq!(
            inode(&copy.join(&file.path)),
            inode(&versions.join("3").join(&file.path)),
            "{} is the shown checkpoint's file",
            file.path
        );
    }
    assert!(!copy.join("old").exists(), "an emptied directory goes too");
    assert_eq!(
        fs::metadata(copy.join("mode")).unwrap().mode() & 0o7777,
        0o600
    );
    // Checkpoint 2, the one 3 replaced, is as it was for its readers.
    assert_eq!(fs::read(versions.join("2/log/1")).unwrap(), b"second");
    assert!(versions.join("2/old/only").is_file());
    assert_eq!(
        names(&versions),
        [".durable", ".next-3", ".spare", "2", "3"]
    );

    // The next applies turn each copy into their checkpoint; whichever directory a copy was
    // made of, the checkpoint just replaced stays as it was for its readers.
    let mut shown = third;
    for sequence in 4..=9 {
        let label = sequence.to_string();
        write(&source.join("log/1"), label.as_bytes());
        let next = snapshot();
        materialize_after(&next, &store, &target, &label, Some(&shown)).unwrap();
        assert_eq!(tree(&target), tree(&source));
        make_durable(&target).unwrap();
        manifests.insert(label.clone(), next.clone());
        let replaced = versions.join((sequence - 1).to_string());
        let before = tree(&replaced);
        prepare_next(&target, |l| manifests.get(l).cloned()).unwrap();
        assert_eq!(
            tree(&replaced),
            before,
            "checkpoint {} changed",
            sequence - 1
        );
        assert_eq!(
            tree(&versions.join(format!(".next-{label}"))),
            tree(&source)
        );
        shown = next;
    }
}

#[test]
fn an_apply_that_fails_halfway_through_the_copy_does_not_leave_it_for_the_next() {
    use drchain_replication::materialize::make_durable;
    let base = tempfile::tempdir().unwrap();
    let source = base.path().join("source");
    write(&source.join("a"), b"one");
    write(&source.join("b"), b"two");
    let active = ChunkStore::open(base.path().join("active")).unwrap();
    let standby = ChunkStore::open(base.path().join("standby")).unwrap();
    let target = base.path().join("target");
    let versions = base.path().join(".target.checkpoints");
    let (first, _) = snapshot_dir(&source, &active, ChunkingParams::default(), None).unwrap();
    transfer(&active, &standby, &first.root());
    materialize(&first, &standby, &target, "1").unwrap();

    write(&source.join("a"), b"one, changed");
    write(&source.join("b"), b"two, changed");
    let (second, _) = snapshot_dir(&source, &active, ChunkingParams::default(), None).unwrap();
    standby
        .put_manifest_bytes(
            &second.root(),
            &active.manifest_bytes(&second.root()).unwrap(),
        )
        .unwrap();
    // Only one of the two changed files' chunks is here.
    let b = second.files.iter().find(|f| f.path == "b").unwrap();
    for chunk in &b.chunks {
        standby
            .put_encoded(&chunk.id, &active.get_encoded(&chunk.id).unwrap())
            .unwrap();
    }
    let err = materialize_after(&second, &standby, &target, "2", Some(&first)).unwrap_err();
    assert!(matches!(err, ReplicationError::Missing { .. }), "{err}");
    assert_eq!(applied_label(&target).unwrap().as_deref(), Some("1"));
    assert_eq!(fs::read(target.join("a")).unwrap(), b"one");
    assert!(
        !versions.join(".next-1").exists(),
        "a half-changed copy is not kept"
    );

    transfer(&active, &standby, &second.root());
    materialize_after(&second, &standby, &target, "2", Some(&first)).unwrap();
    make_durable(&target).unwrap();
    assert_eq!(tree(&target), tree(&source));
}

#[test]
fn a_deferred_snapshot_writes_nothing_until_told_and_its_push_carries_the_new_objects() {
    use drchain_replication::push::CheckpointPush;
    use drchain_replication::{snapshot_dir_deferred, FileCache};
    let base = tempfile::tempdir().unwrap();
    let source = base.path().join("source");
    write(&source.join("a"), &pseudo_random(100 * 1024, 1));
    let store = ChunkStore::open(base.path().join("store")).unwrap();
    let params = ChunkingParams::default();
    let mut cache = FileCache::default();
    let (first, _, unwritten) =
        snapshot_dir_deferred(&source, &store, params, None, &mut cache, 1 << 20, None).unwrap();
    assert!(first.chunk_ids().iter().all(|id| !store.contains(id)));
    assert!(
        store.manifest(&first.root()).is_err(),
        "nothing written yet"
    );
    let push = CheckpointPush::build_with(
        &store,
        &unwritten,
        drchain_support::ServiceName::new("svc").unwrap(),
        1,
        &first,
        &first.encoded(),
        || None,
    )
    .unwrap()
    .unwrap();
    assert_eq!(push.objects.len(), first.chunk_ids().len());
    unwritten.write(&store, &first.encoded()).unwrap();
    assert_eq!(store.manifest(&first.root()).unwrap(), first);
    assert!(first.chunk_ids().iter().all(|id| store.contains(id)));

    // Beyond the budget, objects are written at once (a push could not carry them anyway).
    write(&source.join("b"), &pseudo_random(100 * 1024, 2));
    let (second, stats, unwritten) =
        snapshot_dir_deferred(&source, &store, params, None, &mut cache, 0, None).unwrap();
    assert!(stats.new_chunks > 0);
    assert!(second.chunk_ids().iter().all(|id| store.contains(id)));
    assert!(store.manifest(&second.root()).is_err());
    unwritten.write(&store, &second.encoded()).unwrap();
    assert_eq!(store.manifest(&second.root()).unwrap(), second);
}

#[test]
fn a_snapshot_told_what_changed_reads_only_that_and_agrees_with_a_full_one() {
    use drchain_replication::{snapshot_dir_cached, snapshot_dir_deferred, Changes, FileCache};
    let base = tempfile::tempdir().unwrap();
    let source = base.path().join("source");
    for name in ["a", "b", "c", "old/x", "old/y", "keep/z"] {
        write(&source.join(name), name.as_bytes());
    }
    let store = ChunkStore::open(base.path().join("store")).unwrap();
    let params = ChunkingParams::default();
    let mut cache = FileCache::default();
    let take = |cache: &mut FileCache, changes: &Changes| {
        let (m, stats, unwritten) =
            snapshot_dir_deferred(&source, &store, params, None, cache, 1 << 20, Some(changes))
                .unwrap();
        unwritten.write(&store, &m.encoded()).unwrap();
        (m, stats)
    };
    let full = |dir: &Path| {
        let (m, _) =
            snapshot_dir_cached(dir, &store, params, None, &mut FileCache::default()).unwrap();
        m
    };
    // Nothing cached yet: everything is read whatever the watcher says.
    let (first, stats) = take(&mut cache, &Changes::none());
    assert_eq!(stats.files, 6);
    assert_eq!(first, full(&source));
    // Let the files' change times settle (a file changed just before a snapshot is read
    // again by a full one).
    std::thread::sleep(std::time::Duration::from_millis(150));

    let mut changes = Changes::none();
    write(&source.join("a"), b"a, changed");
    fs::remove_file(source.join("b")).unwrap();
    fs::rename(source.join("old"), source.join("moved")).unwrap();
    write(&source.join("new/dir/file"), b"added");
    for changed in ["a", "b", "old", "moved", "new"] {
        changes.note(&source, &source.join(changed));
    }
    let (second, stats) = take(&mut cache, &changes);
    assert_eq!(
        second,
        full(&source),
        "the same checkpoint as a full reading"
    );
    assert_eq!(stats.files, 6);
    assert_eq!(stats.unchanged_files, 2, "c and keep/z were not looked at");

    // A snapshot that fails on a changed path (under a file: not a directory) loses none of
    // what the earlier ones listed and keeps nothing it read before failing (a new file's
    // chunks were never stored): the next one told nothing changed gives the same files.
    write(&source.join("0-new"), b"read, then the snapshot fails");
    let mut bad = Changes::none();
    bad.note(&source, &source.join("0-new"));
    bad.note(&source, &source.join("a/under-a-file"));
    let failed = snapshot_dir_deferred(
        &source,
        &store,
        params,
        None,
        &mut cache,
        1 << 20,
        Some(&bad),
    );
    assert!(failed.is_err());
    let (after_failure, stats) = take(&mut cache, &Changes::none());
    assert_eq!(after_failure, second);
    assert_eq!(stats.unchanged_files, 6);

    // A change the watcher did not report is not seen until a full reading.
    write(&source.join("c"), b"c, changed behind the watcher's back");
    let (third, _) = take(&mut cache, &Changes::none());
    assert_eq!(third, second);
    std::thread::sleep(std::time::Duration::from_millis(150));
    let (fourth, _) = take(&mut cache, &Changes::everything());
    assert_eq!(fourth, full(&source));
    assert_ne!(fourth, second);
}

#[test]
fn a_cached_snapshot_skips_unchanged_files_and_gives_the_same_manifest() {
    use drchain_replication::{snapshot_dir_cached, FileCache};
    let base = tempfile::tempdir().unwrap();
    let source = base.path().join("source");
    write(&source.join("big.db"), &pseudo_random(1 << 20, 1));
    write(&source.join("log/1"), b"first entry");
    let store = ChunkStore::open(base.path().join("store")).unwrap();
    let params = ChunkingParams::default();
    let mut cache = FileCache::default();
    let (first, stats) = snapshot_dir_cached(&source, &store, params, None, &mut cache).unwrap();
    assert_eq!(stats.unchanged_files, 0);
    // Changes settle (a change within the file system's timestamp granularity is re-read).
    std::thread::sleep(std::time::Duration::from_millis(150));
    let (again, stats) = snapshot_dir_cached(&source, &store, params, None, &mut cache).unwrap();
    assert_eq!(again, first);
    assert_eq!(stats.unchanged_files, 2);

    // A file replaced by a rename (a new inode, same size) and one appended to are read again.
    write(&source.join(".tmp"), &pseudo_random(1 << 20, 2));
    fs::rename(source.join(".tmp"), source.join("big.db")).unwrap();
    write(&source.join("log/1"), b"first entry, second");
    std::thread::sleep(std::time::Duration::from_millis(150));
    let (changed, stats) = snapshot_dir_cached(&source, &store, params, None, &mut cache).unwrap();
    assert_eq!(stats.unchanged_files, 0);
    let (plain, _) = snapshot_dir(&source, &store, params, None).unwrap();
    assert_eq!(
        changed, plain,
        "the cache never changes what a checkpoint holds"
    );

    // A chunk the store lost makes the file be read (and stored) again.
    std::thread::sleep(std::time::Duration::from_millis(150));
    store.collect_garbage(&[]).unwrap();
    let (rebuilt, stats) = snapshot_dir_cached(&source, &store, params, None, &mut cache).unwrap();
    assert_eq!((rebuilt, stats.unchanged_files), (plain.clone(), 0));
    assert!(store.manifest(&changed.root()).is_ok());

    // Unchanged and nothing removed: the cached files are trusted without a lookup per chunk.
    let (same, stats) = snapshot_dir_cached(&source, &store, params, None, &mut cache).unwrap();
    assert_eq!((same, stats.unchanged_files), (plain.clone(), 2));
    // A damaged object the store finds (and removes) on a read: the file is read again.
    let log_chunk = plain
        .files
        .iter()
        .find(|f| f.path == "log/1")
        .unwrap()
        .chunks[0]
        .id;
    let hex = log_chunk.to_string();
    let hex = hex.trim_start_matches("0x");
    let object = base.path().join("store/objects").join(&hex[..2]).join(hex);
    let mut bytes = fs::read(&object).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    fs::write(&object, bytes).unwrap();
    assert!(store.get(&log_chunk).is_err());
    let (repaired, stats) = snapshot_dir_cached(&source, &store, params, None, &mut cache).unwrap();
    assert_eq!((repaired, stats.unchanged_files), (plain, 1));
    assert!(store.get(&log_chunk).is_ok());
}
