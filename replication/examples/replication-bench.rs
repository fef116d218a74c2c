//! Replication benchmark: a seeded service dataset (a SQLite database, append-only logs,
//! binary blobs), one mutation of it (1 % of the rows updated in place, 2 MiB of logs
//! appended, small blob edits and a 4 KiB insertion), and what drchain, `rsync -az` and
//! `restic` need for the full and the incremental copy: bytes on the wire, bytes stored, wall
//! and CPU time, restore speed. Prints a table; see docs/benchmarks.md.
//!
//! ```sh
//! cargo run --release -p drchain-replication --example replication-bench -- [MiB] [seed]
//! ```
//! Needs `sqlite3`, and `rsync` and `restic` for the comparison (apt); a tool that is missing
//! is reported and its rows skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use drchain_replication::manifest::missing;
use drchain_replication::store::sync_filesystem;
use drchain_replication::{
    materialize, snapshot_dir, Assembly, ChunkStore, ChunkingParams, Dictionary, Manifest,
};

/// xorshift64*: the same seed gives the same dataset.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn word(&mut self) -> &'static str {
        const WORDS: [&str; 16] = [
            "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
            "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
        ];
        WORDS[self.below(16) as usize]
    }
}

const ROW_BYTES: u64 = 400;

/// Flushes every filesystem (`sync(2)`), not only the one the restore writes to: when that
/// one is a loop-mounted image, what this program wrote before is flushed into the image
/// file's page cache, and its write-back to the disk below otherwise runs during the next
/// timed restore (the first restore of a run measured 155–215 MB/s then, the others 500+).
fn flush_everything() {
    rustix::fs::sync();
}

fn sqlite(db: &Path, sql: &str) {
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sqlite3 (apt install sqlite3)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "sqlite3 failed");
}

fn row(rng: &mut Rng, id: u64) -> String {
    format!(
        "({id},'{} {} {}',{},'{}')",
        rng.word(),
        rng.word(),
        rng.word(),
        rng.below(1_000_000),
        (0..6)
            .map(|_| rng.word())
            .collect::<Vec<_>>()
            .join(" ")
            .repeat(5)
    )
}

/// The dataset: `mib` MiB in all, about 40 % database, 30 % logs, 30 % blobs.
fn generate(dir: &Path, mib: u64, seed: u64) -> u64 {
    let mut rng = Rng(seed | 1);
    fs::create_dir_all(dir.join("logs")).unwrap();
    fs::create_dir_all(dir.join("blobs")).unwrap();
    let rows = mib * 1024 * 1024 * 4 / 10 / ROW_BYTES;
    let mut sql = String::from("PRAGMA page_size=4096; PRAGMA journal_mode=DELETE; CREATE TABLE accounts(id INTEGER PRIMARY KEY, name TEXT, balance INTEGER, notes TEXT); BEGIN;\n");
    for id in 0..rows {
        if id % 500 == 0 {
            sql.push_str(if id == 0 {
                "INSERT INTO accounts VALUES "
            } else {
                ";\nINSERT INTO accounts VALUES "
            });
        } else {
            sql.push(',');
        }
        sql.push_str(&row(&mut rng, id));
    }
    sql.push_str(";\nCOMMIT;\n");
    sqlite(&dir.join("db.sqlite"), &sql);
    for n in 0..3 {
        let mut log = String::new();
        while (log.len() as u64) < mib * 1024 * 1024 / 10 {
            log.push_str(&format!(
                "2026-12-02T10:{:02}:{:02}.{:03}Z INFO request id={} user={} path=/api/{}/{} status=200 ms={}\n",
                rng.below(60), rng.below(60), rng.below(1000), rng.next(), rng.word(), rng.word(), rng.word(), rng.below(900)
            ));
        }
        fs::write(dir.join(format!("logs/app-{n}.log")), log).unwrap();
    }
    for n in 0..3 {
        fs::write(
            dir.join(format!("blobs/blob-{n}.bin")),
            rng.bytes((mib * 1024 * 1024 / 10) as usize),
        )
        .unwrap();
    }
    rows
}

/// The mutation between two checkpoints.
fn mutate(dir: &Path, rows: u64, seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(31) | 1);
    let mut sql = String::from("BEGIN;\n");
    for _ in 0..rows / 100 {
        sql.push_str(&format!(
            "UPDATE accounts SET balance={}, name='{} {}' WHERE id={};\n",
            rng.below(1_000_000),
            rng.word(),
            rng.word(),
            rng.below(rows)
        ));
    }
    sql.push_str("COMMIT;\n");
    sqlite(&dir.join("db.sqlite"), &sql);
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(dir.join("logs/app-0.log"))
        .unwrap();
    let mut appended = 0;
    while appended < 2 * 1024 * 1024 {
        let line = format!(
            "2026-12-02T11:00:00.000Z INFO request id={} user={} status=200\n",
            rng.next(),
            rng.word()
        );
        appended += line.len();
        log.write_all(line.as_bytes()).unwrap();
    }
    let path = dir.join("blobs/blob-1.bin");
    let mut blob = fs::read(&path).unwrap();
    for _ in 0..8 {
        let at = rng.below(blob.len() as u64 - 64) as usize;
        blob[at..at + 64].copy_from_slice(&rng.bytes(64));
    }
    let at = blob.len() / 2;
    blob.splice(at..at, rng.bytes(4096));
    fs::write(&path, blob).unwrap();
}

/// User + system CPU seconds of this process and its waited-for children.
fn cpu_seconds() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime stime cutime cstime are fields 14-17 (1-based); after ')' the first is field 3.
    let ticks: u64 = fields[11..15]
        .iter()
        .map(|f| f.parse::<u64>().unwrap())
        .sum();
    ticks as f64 / 100.0
}

fn du(path: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![path.to_path_buf()];
    while let Some(p) = pending.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                pending.push(e.unwrap().path());
            }
        } else {
            total += meta.len();
        }
    }
    total
}

struct Measure {
    wire: u64,
    stored: u64,
    wall: f64,
    cpu: f64,
}

fn timed(f: impl FnOnce() -> (u64, u64)) -> Measure {
    let (start, cpu) = (Instant::now(), cpu_seconds());
    let (wire, stored) = f();
    Measure {
        wire,
        stored,
        wall: start.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - cpu,
    }
}

/// drchain: snapshot on the active, transfer of what the standby lacks (encoded objects and
/// the manifest), apply on the standby.
fn drchain_round(
    source: &Path,
    active: &ChunkStore,
    standby: &ChunkStore,
    target: &Path,
    chunking: ChunkingParams,
    dictionary: Option<&Dictionary>,
    label: &str,
) -> (Manifest, Measure) {
    let mut manifest = None;
    let m = timed(|| {
        let (m, _) = snapshot_dir(source, active, chunking, dictionary).unwrap();
        let bytes = active.manifest_bytes(&m.root()).unwrap();
        let mut wire = bytes.len() as u64;
        let m = standby.put_manifest_bytes(&m.root(), &bytes).unwrap();
        for id in missing(&m, |id| standby.contains(id)) {
            let encoded = active.get_encoded(&id).unwrap();
            wire += encoded.len() as u64 + 32;
            standby.put_encoded(&id, &encoded).unwrap();
        }
        standby.sync().unwrap();
        materialize(&m, standby, target, label).unwrap();
        manifest = Some(m);
        (wire, du(active.dir()))
    });
    (manifest.unwrap(), m)
}

fn tool(name: &str, version: &str) -> bool {
    Command::new(name)
        .arg(version)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn rsync_round(source: &Path, dest: &Path) -> Measure {
    timed(|| {
        let out = Command::new("rsync")
            .args(["-az", "--stats", "--delete"])
            .arg(format!("{}/", source.display()))
            .arg(dest)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let sent = text
            .lines()
            .find_map(|l| l.strip_prefix("Total bytes sent: "))
            .map(|v| v.replace(',', "").trim().parse::<u64>().unwrap())
            .unwrap_or(0);
        let received = text
            .lines()
            .find_map(|l| l.strip_prefix("Total bytes received: "))
            .map(|v| v.replace(',', "").trim().parse::<u64>().unwrap())
            .unwrap_or(0);
        (sent + received, du(dest))
    })
}

fn restic(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("restic")
        .arg("-r")
        .arg(repo)
        .args(args)
        .env("RESTIC_PASSWORD", "bench")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restic {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn restic_round(source: &Path, repo: &Path) -> Measure {
    timed(|| {
        let before = du(repo);
        restic(
            repo,
            &[
                "backup",
                "--quiet",
                "--host",
                "bench",
                &source.display().to_string(),
            ],
        );
        let after = du(repo);
        (after - before, after)
    })
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let seed: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(7);
    let base = tempfile::Builder::new()
        .prefix("replication-bench")
        .tempdir_in(std::env::var("TMPDIR").unwrap_or("/tmp".into()))
        .unwrap();
    let work = base.path();
    let source = work.join("source");
    eprintln!("generating {size} MiB (seed {seed})...");
    let rows = generate(&source, size, seed);
    let data = du(&source);
    println!(
        "dataset: {} in {} files ({rows} SQLite rows, 4 KiB pages; logs; random blobs)",
        mib(data),
        7
    );

    // Chunk size: bytes on the wire for the incremental copy, per average size.
    let mutated = work.join("mutated");
    let copy = |from: &Path, to: &Path| {
        assert!(Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .unwrap()
            .success());
    };
    copy(&source, &mutated);
    mutate(&mutated, rows, seed);
    println!("\nchunk size (no dictionary): incremental bytes on the wire, manifest size");
    for avg in [4096u32, 8192, 16384, 32768, 65536] {
        let chunking = ChunkingParams {
            min: avg / 4,
            avg,
            max: avg * 4,
            normalization: 1,
        };
        let dir = work.join(format!("cdc-{avg}"));
        let active = ChunkStore::open(dir.join("a")).unwrap();
        let standby = ChunkStore::open(dir.join("s")).unwrap();
        let target = dir.join("t");
        drchain_round(&source, &active, &standby, &target, chunking, None, "1");
        let (m, inc) = drchain_round(&mutated, &active, &standby, &target, chunking, None, "2");
        println!(
            "  avg {:>2} KiB: incremental {:>10}, manifest {:>9}, full store {:>10}",
            avg / 1024,
            mib(inc.wire),
            mib(m.to_bytes().len() as u64),
            mib(du(active.dir()))
        );
        let _ = fs::remove_dir_all(&dir);
    }

    // The dictionary's gain, on the dataset's chunks.
    let samples: Vec<Vec<u8>> = {
        let mut s = vec![];
        for f in ["db.sqlite", "logs/app-1.log"] {
            let bytes = fs::read(source.join(f)).unwrap();
            s.extend(
                bytes
                    .chunks(16 * 1024)
                    .step_by(4)
                    .take(1000)
                    .map(<[u8]>::to_vec),
            );
        }
        s
    };
    let started = Instant::now();
    let dictionary = Dictionary::train(&samples);
    println!(
        "\ndictionary: {} trained on {} samples in {:.2} s",
        dictionary
            .as_ref()
            .map_or("none".into(), |d| mib(d.bytes().len() as u64)),
        samples.len(),
        started.elapsed().as_secs_f64()
    );

    println!(
        "\n{:<26} {:>12} {:>12} {:>12} {:>9} {:>9}",
        "", "full wire", "incr. wire", "stored", "wall s", "CPU s"
    );
    let mut results = vec![];
    for (name, dict) in [
        ("drchain (no dictionary)", None),
        ("drchain (dictionary)", dictionary.as_ref()),
    ] {
        let dir = work.join(name.replace([' ', '(', ')'], ""));
        let active = ChunkStore::open(dir.join("a")).unwrap();
        let standby = ChunkStore::open(dir.join("s")).unwrap();
        let target = dir.join("t");
        let (_, full) = drchain_round(
            &source,
            &active,
            &standby,
            &target,
            ChunkingParams::default(),
            dict,
            "1",
        );
        let (m, inc) = drchain_round(
            &mutated,
            &active,
            &standby,
            &target,
            ChunkingParams::default(),
            dict,
            "2",
        );
        println!(
            "{name:<26} {:>12} {:>12} {:>12} {:>9.2} {:>9.2}",
            mib(full.wire),
            mib(inc.wire),
            mib(inc.stored),
            full.wall + inc.wall,
            full.cpu + inc.cpu
        );
        if dict.is_some() {
            println!("  compression of stored chunks: {:.2}x; sampled with the dictionary {:.2}x, without {:.2}x", active.stats.ratio(), active.stats.ratio_with_dictionary(), active.stats.ratio_without_dictionary());
        }
        // Restore: a fresh target from the store. What this program wrote before is flushed
        // first: the restore's own flush must not pay for it.
        let restore = dir.join("restore");
        flush_everything();
        let start = Instant::now();
        materialize(&m, &standby, &restore, "r").unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "  restore from the local store, flushed: {:.0} MB/s",
            du(&mutated) as f64 / 1e6 / secs
        );
        // What `drchain restore` does with the chunks on local disk (`--cache`, or run on a
        // node that holds them): files made at their size, chunks written from every core.
        let assembled = dir.join("assembled");
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        flush_everything();
        let start = Instant::now();
        let assembly = Assembly::create(&m, &assembled).unwrap();
        assembly.place_from_store(&standby, cores);
        assembly.finish().unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "  restore as `drchain restore` writes it, from local chunks on {cores} threads, flushed: {:.0} MB/s",
            du(&mutated) as f64 / 1e6 / secs
        );
        results.push((name, inc.wire));
        let _ = fs::remove_dir_all(&dir);
    }
    if tool("rsync", "--version") {
        let dest = work.join("rsync");
        let full = rsync_round(&source, &dest);
        let inc = rsync_round(&mutated, &dest);
        println!(
            "{:<26} {:>12} {:>12} {:>12} {:>9.2} {:>9.2}",
            "rsync -az",
            mib(full.wire),
            mib(inc.wire),
            mib(inc.stored),
            full.wall + inc.wall,
            full.cpu + inc.cpu
        );
        results.push(("rsync -az", inc.wire));
    } else {
        println!("rsync: not installed (apt install rsync)");
    }
    if tool("restic", "version") {
        let repo = work.join("restic");
        restic(&repo, &["init", "--quiet"]);
        let full = restic_round(&source, &repo);
        let inc = restic_round(&mutated, &repo);
        println!(
            "{:<26} {:>12} {:>12} {:>12} {:>9.2} {:>9.2}",
            "restic (repo growth)",
            mib(full.wire),
            mib(inc.wire),
            mib(inc.stored),
            full.wall + inc.wall,
            full.cpu + inc.cpu
        );
        let out = work.join("restic-restore");
        flush_everything();
        let start = Instant::now();
        restic(
            &repo,
            &[
                "restore",
                "latest",
                "--quiet",
                "--target",
                &out.display().to_string(),
            ],
        );
        let restored = start.elapsed().as_secs_f64();
        // restic does not flush what it restores; drchain's restore above does (one syncfs):
        // both figures, so the comparison can be made either way.
        sync_filesystem(&out).unwrap();
        let flushed = start.elapsed().as_secs_f64();
        println!(
            "  restic restore: {:.0} MB/s ({:.0} MB/s with a flush to disk after it, as drchain's includes)",
            du(&mutated) as f64 / 1e6 / restored,
            du(&mutated) as f64 / 1e6 / flushed
        );
    } else {
        println!("restic: not installed (apt install restic)");
    }
    if let (Some((_, ours)), Some((_, rsync))) = (
        results.iter().find(|r| r.0 == "drchain (dictionary)"),
        results.iter().find(|r| r.0 == "rsync -az"),
    ) {
        println!(
            "\nincremental bytes on the wire, drchain / rsync -az: {:.2} (target ≤ 0.7)",
            *ours as f64 / *rsync as f64
        );
    }
}
