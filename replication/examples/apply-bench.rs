//! What applying a checkpoint costs a standby when one small file of many changed: the
//! target switches whole directories, so every unchanged file is linked into the new one.
//! Prints, per service size, the time until the target shows the checkpoint
//! (`materialize_after`) and until it is durable (`make_durable`); see docs/benchmarks.md.
//!
//! ```sh
//! cargo run --release -p drchain-replication --example apply-bench -- [FILES,...] [ROUNDS] [DIR]
//! ```
//! Defaults: 100,1000,10000 files of 4 KiB, 30 rounds each, in the system's temporary
//! directory (give DIR to measure another filesystem).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Instant;

use drchain_replication::materialize::make_durable;
use drchain_replication::testdata::pseudo_random;
use drchain_replication::{materialize, materialize_after, snapshot_dir, ChunkStore};

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
        let (mut shown, _) = snapshot_dir(&source, &store, chunking, None).unwrap();
        materialize(&shown, &store, &target, "0-first").unwrap();
        let (mut visible, mut durable) = (vec![], vec![]);
        for round in 1..=rounds {
            let changed = source.join(format!("f{}", round % files));
            std::fs::write(&changed, pseudo_random(4096, (files + round) as u64)).unwrap();
            let (manifest, _) = snapshot_dir(&source, &store, chunking, None).unwrap();
            store.sync().unwrap();
            let started = Instant::now();
            let label = format!("{round}-apply");
            materialize_after(&manifest, &store, &target, &label, Some(&shown)).unwrap();
            visible.push(started.elapsed().as_secs_f64() * 1000.0);
            make_durable(&target).unwrap();
            durable.push(started.elapsed().as_secs_f64() * 1000.0);
            shown = manifest;
        }
        visible.sort_by(f64::total_cmp);
        durable.sort_by(f64::total_cmp);
        let at = |list: &[f64], p: usize| list[(list.len() * p / 100).min(list.len() - 1)];
        println!(
            "{files:>6} files: shown p50 {:.2} ms, p90 {:.2} ms ({:.1} µs per file); durable p50 {:.2} ms, p90 {:.2} ms",
            at(&visible, 50),
            at(&visible, 90),
            at(&visible, 50) * 1000.0 / files as f64,
            at(&durable, 50),
            at(&durable, 90),
        );
    }
}
