//! The floor a machine sets under the replication benchmark's 4 KiB write: the same steps
//! with the least software, to read drchain's number against. Four processes, as in the
//! benchmark: a writer renames a 4 KiB file into a watched directory; an "active" (one
//! blocking thread on inotify) reads it, hashes it and writes a frame over plain TCP to two
//! "standbys", then — 1 ms later, as drchain's active does — stores it and flushes; each
//! standby (one blocking thread) reads the frame, checks the hash, writes the file into a
//! readied directory, renames it into place and switches a link over its target, then
//! flushes and readies the next directory; the writer learns of the switch through inotify,
//! as the benchmark does. No encryption, no async runtime, no manifest, no chain: what is
//! over this in drchain's number is drchain's.
//!
//! ```sh
//! cargo run --release -p drchain-replication --example pipeline-floor -- [WRITES] [INTERVALS_MS] [DIR]
//! ```
//! Defaults: 100 writes at each interval of 300 (the benchmark's) and 30 ms, in the system's
//! temporary directory (give DIR to measure another filesystem). Before them, what a `stat`
//! and a small file's creation cost right after sleeping as long. See docs/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drchain_replication::store::sync_filesystem;
use rustix::fs::inotify;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("active") => active(&args[1..]),
        Some("standby") => standby(Path::new(&args[1])),
        _ => measure(&args),
    }
}

fn measure(args: &[String]) {
    let writes: usize = args.first().map_or(100, |w| w.parse().expect("WRITES"));
    let intervals: Vec<u64> = args
        .get(1)
        .map_or("300,30", String::as_str)
        .split(',')
        .map(|i| {
            i.parse()
                .expect("INTERVALS_MS: comma-separated milliseconds")
        })
        .collect();
    let parent = args.get(2).map_or_else(std::env::temp_dir, PathBuf::from);
    println!("waking after a sleep (40 rounds each, p50):");
    // 1 ms: a thread that just ran, for comparison.
    for interval in std::iter::once(&1).chain(&intervals) {
        let dir = tempfile::tempdir_in(&parent).unwrap();
        let (stat, create) = after_sleep(dir.path(), Duration::from_millis(*interval));
        println!(
            "  after {interval} ms: a stat {stat:.1} µs, then a 4 KiB file made {create:.1} µs"
        );
    }
    println!("{writes} writes of 4 KiB, writer → active → two standbys → writer sees the switch:");
    for interval in intervals {
        let dir = tempfile::tempdir_in(&parent).unwrap();
        let latencies = run(dir.path(), writes, Duration::from_millis(interval));
        let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
        println!(
            "  one write every {interval} ms: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
            q(0.5),
            q(0.9),
            q(0.99)
        );
    }
}

/// What the first system calls after sleeping `interval` cost: a `stat`, then creating and
/// writing a 4 KiB file in `dir` (medians, µs). On some VMs a thread that slept runs its
/// first calls many times slower than one that just ran.
fn after_sleep(dir: &Path, interval: Duration) -> (f64, f64) {
    let (mut stats, mut creates) = (vec![], vec![]);
    for round in 0..40 {
        std::thread::sleep(interval);
        let started = Instant::now();
        fs::metadata(dir).unwrap();
        let statted = Instant::now();
        fs::write(dir.join(format!("file-{round}")), page(round)).unwrap();
        stats.push((statted - started).as_secs_f64() * 1e6);
        creates.push(statted.elapsed().as_secs_f64() * 1e6);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(stats), median(creates))
}

/// Starts the three processes in `dir`, writes `writes` files `interval` apart and returns
/// the sorted times from each rename to the watched standby's switch being seen, in ms.
fn run(dir: &Path, writes: usize, interval: Duration) -> Vec<f64> {
    let (source, aside) = (dir.join("source"), dir.join("aside"));
    for d in [&source, &aside, &dir.join("store")] {
        fs::create_dir_all(d).unwrap();
    }
    let (watched, watched_port) =
        spawn(&["standby", &dir.join("watched/target").to_string_lossy()]);
    let (other, other_port) = spawn(&["standby", &dir.join("other/target").to_string_lossy()]);
    let (active, _) = spawn(&[
        "active",
        &source.to_string_lossy(),
        &dir.join("store").to_string_lossy(),
        &other_port,
        &watched_port,
    ]);
    let target = dir.join("watched/target");
    let switches = watch(target.parent().unwrap(), inotify::WatchFlags::MOVED_TO);
    let mut latencies = vec![];
    for i in 0..writes {
        std::thread::sleep(interval);
        let name = format!("write-{i}");
        let staged = aside.join(&name);
        fs::write(&staged, page(i)).unwrap();
        let written = Instant::now();
        fs::rename(&staged, source.join(&name)).unwrap();
        while !target.join(&name).exists() {
            next_event(&switches);
        }
        latencies.push(written.elapsed().as_secs_f64() * 1000.0);
    }
    for mut child in [active, watched, other] {
        let _ = child.kill();
        let _ = child.wait();
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

/// Starts this program as `role`; returns the child and the first line it prints.
fn spawn(role: &[&str]) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(role)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().to_owned())
}

fn page(i: usize) -> Vec<u8> {
    (0..4096).map(|b| (b * 31 + i * 7) as u8).collect()
}

fn watch(dir: &Path, flags: inotify::WatchFlags) -> rustix::fd::OwnedFd {
    let fd = inotify::init(inotify::CreateFlags::CLOEXEC).unwrap();
    inotify::add_watch(&fd, dir, flags).unwrap();
    fd
}

/// Blocks for the next inotify event; returns the name it carries.
fn next_event(fd: &rustix::fd::OwnedFd) -> Vec<u8> {
    let mut buf = [std::mem::MaybeUninit::uninit(); 4096];
    let mut reader = inotify::Reader::new(fd, &mut buf);
    let event = reader.next().unwrap();
    event
        .file_name()
        .map(|n| n.to_bytes().to_vec())
        .unwrap_or_default()
}

/// Frame: name length (u32), data length (u32), blake3 of the data, name, data.
fn active(args: &[String]) {
    let (source, store) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let mut standbys: Vec<TcpStream> = args[2..]
        .iter()
        .map(|port| {
            let stream = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
            stream.set_nodelay(true).unwrap();
            stream
        })
        .collect();
    let events = watch(&source, inotify::WatchFlags::MOVED_TO);
    println!("ready");
    loop {
        let name = next_event(&events);
        let data = fs::read(source.join(OsStr::from_bytes(&name))).unwrap();
        let hash = blake3::hash(&data);
        let mut frame = Vec::with_capacity(40 + name.len() + data.len());
        frame.extend_from_slice(&(name.len() as u32).to_le_bytes());
        frame.extend_from_slice(&(data.len() as u32).to_le_bytes());
        frame.extend_from_slice(hash.as_bytes());
        frame.extend_from_slice(&name);
        frame.extend_from_slice(&data);
        for standby in &mut standbys {
            standby.write_all(&frame).unwrap();
        }
        std::thread::sleep(Duration::from_millis(1));
        let stored = store.join(hash.to_hex().as_str());
        let temp = stored.with_extension("tmp");
        fs::write(&temp, &data).unwrap();
        fs::rename(&temp, &stored).unwrap();
        sync_filesystem(&store).unwrap();
    }
}

fn standby(target: &Path) {
    let versions = target.with_file_name(".checkpoints");
    let spare = versions.join(".spare");
    fs::create_dir_all(&spare).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    let (mut active, _) = listener.accept().unwrap();
    active.set_nodelay(true).unwrap();
    for sequence in 1u64.. {
        let mut head = [0u8; 40];
        if active.read_exact(&mut head).is_err() {
            return;
        }
        let name_len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
        let data_len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
        let mut body = vec![0u8; name_len + data_len];
        active.read_exact(&mut body).unwrap();
        let (name, data) = body.split_at(name_len);
        assert_eq!(
            blake3::hash(data).as_bytes(),
            &head[8..40],
            "a frame that does not match its hash"
        );
        fs::write(spare.join(OsStr::from_bytes(name)), data).unwrap();
        let label = sequence.to_string();
        fs::rename(&spare, versions.join(&label)).unwrap();
        let link = versions.join(".link");
        std::os::unix::fs::symlink(Path::new(".checkpoints").join(&label), &link).unwrap();
        fs::rename(&link, target).unwrap();
        sync_filesystem(&versions).unwrap();
        fs::create_dir(&spare).unwrap();
        if let Some(old) = sequence.checked_sub(2) {
            let _ = fs::remove_dir_all(versions.join(old.to_string()));
        }
    }
}
