//! Clients: each writes a unique value through one path (HAProxy or `drchain proxy`) in a loop
//! and records, on one clock, when it sent and when the reply came and what answered.

use std::io::{BufRead, BufReader, Write};
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
                        let answer = write_once(addr, &format!("{path}-{client}-{seq}"));
                        let received = origin.elapsed();
                        if let Some((node, epoch)) = answer {
                            acks.lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(Ack {
                                    path,
                                    node,
                                    epoch,
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
