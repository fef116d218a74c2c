//! Clients: each writes a unique value through one path (HAProxy or `drchain proxy`) in a loop
//! and records, on one clock, when it sent and when the reply came and what answered.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::checker::Ack;

/// Running clients; [`Workload::stop`] returns what they saw.
#[derive(Debug)]
pub struct Workload {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    threads: Vec<JoinHandle<()>>,
}

/// One request to `addr`: the answering node and its epoch, if it served it.
pub fn write_once(addr: SocketAddr, value: &str) -> Option<(String, u64)> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    (&stream)
        .write_all(format!("WRITE {value}\n").as_bytes())
        .ok()?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let node = words.next()?.to_owned();
    let epoch = words.next()?.parse().ok()?;
    Some((node, epoch))
}

/// What a node serving the service holds: its name, its epoch and every value in its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub node: String,
    pub epoch: u64,
    pub values: BTreeSet<String>,
}

/// Reads everything the service at `addr` holds, if it serves.
pub fn read_all(addr: SocketAddr) -> Option<Holding> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    (&stream).write_all(b"READ\n").ok()?;
    let mut text = String::new();
    // About 20 bytes a value and a few thousand values a minute: far below this.
    (&stream).take(256 << 20).read_to_string(&mut text).ok()?;
    let (header, data) = text.split_once('\n')?;
    let mut words = header.split_whitespace();
    let node = words.next()?.to_owned();
    let epoch = words.next()?.parse().ok()?;
    // A value is whole only with its newline.
    let values = data
        .split_inclusive('\n')
        .filter_map(|line| line.strip_suffix('\n'))
        .map(str::to_owned)
        .collect();
    Some(Holding {
        node,
        epoch,
        values,
    })
}

impl Workload {
    /// Starts `per_path` clients on each of `paths` (a label and the addresses a client takes
    /// in turn); times are measured from `origin`.
    pub fn start(
        paths: &[(&'static str, Vec<SocketAddr>)],
        per_path: usize,
        origin: Instant,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(vec![]));
        let mut threads = vec![];
        for (path, addrs) in paths {
            for client in 0..per_path {
                let (stop, acks) = (stop.clone(), acks.clone());
                let (path, addrs) = (*path, addrs.clone());
                threads.push(std::thread::spawn(move || {
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        seq += 1;
                        let addr = addrs[(seq as usize + client) % addrs.len()];
                        let sent = origin.elapsed();
                        let value = format!("{path}-{client}-{seq}");
                        let answer = write_once(addr, &value);
                        let received = origin.elapsed();
                        if let Some((node, epoch)) = answer {
                            acks.lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(Ack {
                                    path,
                                    node,
                                    epoch,
                                    value,
                                    sent,
                                    received,
                                });
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }));
            }
        }
        Self {
            stop,
            acks,
            threads,
        }
    }

    /// The acknowledgements so far.
    pub fn acks(&self) -> Vec<Ack> {
        self.acks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the clients; returns every acknowledgement.
    pub fn stop(mut self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        self.acks()
    }
}
