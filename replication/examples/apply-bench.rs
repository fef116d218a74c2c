//! What one small file changed among many costs: on the active, taking the checkpoint — every
//! file looked at again (its stamp against the cache), or only the one a watcher reported —
//! and building its push (the manifest's root and encoding, the objects new since the shown
//! checkpoint; none when the manifest is too large to push); on a standby, checking the push
//! (the manifest against its root, each object against its name and the manifest), and
//! applying it: the time until the target shows it (`materialize_after`),
//! until it is durable (`make_durable`), and readying the next apply (`prepare_next`, after
//! acknowledging: out of an older checkpoint, relinking what changed, or linking every file).
//! See docs/benchmarks.md.
//!
//! ```sh
//! cargo run --release -p drchain-replication --example apply-bench -- [FILES,...] [ROUNDS] [DIR]
//! ```
//! Defaults: 100,1000,10000 files of 4 KiB, 30 rounds each, in the system's temporary
//! directory (give DIR to measure another filesystem).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use drchain_replication::materialize::{make_durable, prepare_next};
use drchain_replication::push::CheckpointPush;
use drchain_replication::testdata::pseudo_random;
use drchain_replication::{
    materialize, materialize_after, snapshot_dir_cached, snapshot_dir_deferred, Changes,
    ChunkStore, FileCache,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sizes: Vec<usize> = args
        .first()
        .map_or("100,1000,10000", String::as_str)
        .split(',')
        .map(|n| n.parse().expect("FILES: comma-separated counts"))
        .collect();
    let rounds: usize = args.get(1).map_or(30, |r| r.parse().expect("ROUNDS"));
    let parent = args.get(2).map_or_else(std::env::temp_dir, PathBuf::from);
    println!(
        "one 4 KiB file changed among N, {rounds} rounds each, in {}",
        parent.display()
    );
    for files in sizes {
        let dir = tempfile::tempdir_in(&parent).unwrap();
        let source = dir.path().join("source");
        std::fs::create_dir_all(&source).unwrap();
        for f in 0..files {
            std::fs::write(source.join(format!("f{f}")), pseudo_random(4096, f as u64)).unwrap();
        }
        let store = ChunkStore::open(dir.path().join("store")).unwrap();
        let target = dir.path().join("target");
        let chunking = drchain_replication::ChunkingParams::default();
        let mut cache = FileCache::default();
        let (mut shown, _) =
            snapshot_dir_cached(&source, &store, chunking, None, &mut cache).unwrap();
        materialize(&shown, &store, &target, "0-first").unwrap();
        let mut manifests =
            std::collections::HashMap::from([("0-first".to_owned(), shown.clone())]);
        // Change times must be older than the snapshot's racy window to be trusted.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (mut every, mut told) = (vec![], vec![]);
        let (mut visible, mut without_copy) = (vec![], vec![]);
        let (mut durable, mut recycled, mut linked) = (vec![], vec![], vec![]);
        let (mut built, mut checked) = (vec![], vec![]);
        let service = drchain_support::ServiceName::new("bench").unwrap();
        for round in 1..=rounds {
            let name = format!("f{}", round % files);
            let changed = source.join(&name);
            std::fs::write(&changed, pseudo_random(4096, (files + round) as u64)).unwrap();
            // The active: every file's stamp looked at, then only the changed one (both keep
            // what is new in memory, as the agent does).
            let mut take = |changes: Option<&Changes>| {
                let started = Instant::now();
                let taken = snapshot_dir_deferred(
                    &source,
                    &store,
                    chunking,
                    None,
                    &mut cache,
                    usize::MAX,
                    changes,
                )
                .unwrap();
                (taken, started.elapsed().as_secs_f64() * 1000.0)
            };
            let ((full, _, _), ms) = take(None);
            every.push(ms);
            let mut changes = Changes::none();
            changes.note(&source, &changed);
            let ((manifest, _, unwritten), ms) = take(Some(&changes));
            told.push(ms);
            assert_eq!(manifest, full);
            let previous = Arc::new(shown.clone());
            let started = Instant::now();
            let encoded = manifest.encoded();
            let push = CheckpointPush::build_with(
                &store,
                &unwritten,
                service.clone(),
                round as u64,
                &manifest,
                &encoded,
                || Some(previous),
            )
            .unwrap();
            built.push(started.elapsed().as_secs_f64() * 1000.0);
            if let Some(push) = push {
                let started = Instant::now();
                let verified = push.verify(&store).unwrap();
                checked.push(started.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(*verified.manifest, manifest);
            }
            unwritten.write(&store, &encoded).unwrap();
            store.sync().unwrap();
            // A standby. Every other round starts without the copy prepare_next leaves (as
            // after a restart): it links every file while the write waits.
            let started = Instant::now();
            let label = format!("{round}-apply");
            materialize_after(&manifest, &store, &target, &label, Some(&shown)).unwrap();
            let shown_after = started.elapsed().as_secs_f64() * 1000.0;
            if round % 2 == 1 {
                without_copy.push(shown_after);
            } else {
                visible.push(shown_after);
            }
            let started = Instant::now();
            make_durable(&target).unwrap();
            durable.push(started.elapsed().as_secs_f64() * 1000.0);
            // Out of an older checkpoint's directory in odd rounds (the standby's agent knows
            // the manifests), linking every file in even ones.
            manifests.insert(label.clone(), manifest.clone());
            let started = Instant::now();
            if round % 2 == 1 {
                prepare_next(&target, |l| manifests.get(l).cloned()).unwrap();
                recycled.push(started.elapsed().as_secs_f64() * 1000.0);
            } else {
                prepare_next(&target, |_| None).unwrap();
                linked.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            if round % 2 == 0 {
                let versions = dir.path().join(".target.checkpoints");
                std::fs::remove_dir_all(versions.join(format!(".next-{label}"))).unwrap();
            }
            shown = manifest;
        }
        for list in [
            &mut every,
            &mut told,
            &mut built,
            &mut checked,
            &mut visible,
            &mut without_copy,
            &mut durable,
            &mut recycled,
            &mut linked,
        ] {
            list.sort_by(f64::total_cmp);
        }
        let at = |list: &[f64], p: usize| list[(list.len() * p / 100).min(list.len() - 1)];
        let pushed = if checked.is_empty() {
            "not pushed (manifest too large), ".to_owned()
        } else {
            format!("push checked {:.3} ms, ", at(&checked, 50))
        };
        println!(
            "{files:>6} files, p50: active, taking the checkpoint, every file looked at {:.2} ms, only the changed one {:.2} ms, its push built {:.3} ms; standby, {pushed}shown {:.2} ms from the readied copy, {:.2} ms without; flushed {:.2} ms; readying the next apply {:.2} ms out of an older checkpoint, {:.2} ms linking every file",
            at(&every, 50),
            at(&told, 50),
            at(&built, 50),
            at(&visible, 50),
            at(&without_copy, 50),
            at(&durable, 50),
            at(&recycled, 50),
            at(&linked, 50),
        );
    }
}
