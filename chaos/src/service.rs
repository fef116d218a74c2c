//! The protected service a chaos run fences: one per candidate, in the candidate's namespace.
//! A client sends `WRITE <value>`; while the epoch file (written by the agent's `on_promote`,
//! removed by `on_demote`) exists and the agent's lease file allows that epoch now, the
//! service appends the value to its data and answers `NAME EPOCH`, otherwise `NAME standby`:
//! a lease-aware service, as docs/operations.md describes. `READ` answers `NAME EPOCH` and then
//! every value its data holds, one per line (the checker's final read). The data is what the
//! agent replicates; `on_promote` restores it from the checkpoint the node holds.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use drchain_agent::lease_file::LeaseRecord;

/// Serves `listen` until killed.
pub fn serve(name: &str, listen: &str, files: Files) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let name: Arc<str> = name.into();
    let files = Arc::new(files);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (name, files) = (name.clone(), files.clone());
        std::thread::spawn(move || {
            let _ = answer(stream, &name, &files);
        });
    }
    Ok(())
}

/// The service's files.
#[derive(Debug, Clone)]
pub struct Files {
    /// Written by `on_promote` with the epoch, removed by `on_demote`.
    pub epoch: PathBuf,
    /// The agent's lease file.
    pub lease: PathBuf,
    /// Where acknowledged values are appended.
    pub data: PathBuf,
    /// Ignore the lease file (the harness's self-check: a service that is not lease-aware).
    pub ignore_lease: bool,
}

/// The epoch this service may acknowledge in now, if any.
fn serving_epoch(files: &Files) -> Option<u64> {
    let epoch = std::fs::read_to_string(&files.epoch)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if files.ignore_lease {
        return Some(epoch);
    }
    LeaseRecord::read(&files.lease)
        .filter(|lease| lease.allows(epoch))
        .map(|_| epoch)
}

fn answer(stream: TcpStream, name: &str, files: &Files) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(stream.try_clone()?)
        .take(256)
        .read_line(&mut line)?;
    let line = line.trim();
    // Check the epoch and lease as late as possible: they are what fences this answer.
    let reply = match serving_epoch(files) {
        Some(epoch) if line == "READ" => {
            let data = std::fs::read_to_string(&files.data).unwrap_or_default();
            format!("{name} {epoch}\n{data}")
        }
        Some(epoch) => match line.strip_prefix("WRITE ") {
            Some(value) if !value.is_empty() && !value.contains(char::is_whitespace) => {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&files.data)?;
                // One write per value: a snapshot copying the file concurrently sees whole
                // lines only.
                file.write_all(format!("{value}\n").as_bytes())?;
                format!("{name} {epoch}\n")
            }
            _ => format!("{name} refused\n"),
        },
        None => format!("{name} standby\n"),
    };
    (&stream).write_all(reply.as_bytes())?;
    Ok(())
}
