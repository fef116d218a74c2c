//! The lease file: the lease as a service on the same machine can check it itself.
//!
//! The agent fences a service with `on_demote`, but a hook runs only when the agent runs: a
//! machine frozen whole (a paused VM, SIGSTOP of every process) resumes with the service
//! answering before the agent notices its lease ended. A service that reads this file before
//! acknowledging a write closes that gap: the file holds the epoch and the lease's end on the
//! machine's monotonic clock, so it expires by itself, with no agent running to expire it.
//!
//! Format, one line: `EPOCH DEADLINE_NS BOOT_ID` — `DEADLINE_NS` on `CLOCK_MONOTONIC` (0: not
//! serving) and the kernel's boot id, since the monotonic clock restarts at boot. Written
//! atomically (temporary file, rename).

use std::path::{Path, PathBuf};
use std::time::Instant;

use drchain_support::Epoch;
use rustix::time::{clock_gettime, ClockId};

/// Now on `CLOCK_MONOTONIC`, ns.
pub fn monotonic_ns() -> u64 {
    let t = clock_gettime(ClockId::Monotonic);
    (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), or empty if unreadable.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// One lease as the file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The epoch served.
    pub epoch: Epoch,
    /// The lease's end on `CLOCK_MONOTONIC`, ns; 0 when not serving.
    pub deadline_ns: u64,
    /// The boot the deadline belongs to.
    pub boot_id: String,
}

impl LeaseRecord {
    /// Whether it allows serving `epoch` now: the same epoch, this boot, before the deadline.
    pub fn allows(&self, epoch: Epoch) -> bool {
        self.epoch == epoch && self.boot_id == boot_id() && monotonic_ns() < self.deadline_ns
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let epoch = words.next()?.parse().ok()?;
        let deadline_ns = words.next()?.parse().ok()?;
        let boot_id = words.next().unwrap_or_default().to_owned();
        Some(Self {
            epoch,
            deadline_ns,
            boot_id,
        })
    }

    /// Reads `path`; `None` when it is absent or malformed.
    pub fn read(path: &Path) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(path).ok()?)
    }
}

/// Keeps one service's lease file up to date.
#[derive(Debug)]
pub struct LeaseFile {
    path: PathBuf,
    boot_id: String,
    written: Option<(Epoch, u64)>,
}

impl LeaseFile {
    /// The file at `path`, marked not serving at once: whatever a previous run wrote is void.
    pub fn open(path: PathBuf) -> std::io::Result<Self> {
        let mut file = Self {
            path,
            boot_id: boot_id(),
            written: None,
        };
        file.write(0, 0)?;
        Ok(file)
    }

    /// Records the lease: serving `epoch` until `end` (monotonic), or nothing (`None`).
    pub fn set(&mut self, epoch: Epoch, end: Option<Instant>) -> std::io::Result<()> {
        let deadline_ns = end.map_or(0, |end| {
            let left = end.saturating_duration_since(Instant::now());
            monotonic_ns().saturating_add(left.as_nanos() as u64)
        });
        self.write(epoch, deadline_ns)
    }

    fn write(&mut self, epoch: Epoch, deadline_ns: u64) -> std::io::Result<()> {
        if self.written == Some((epoch, deadline_ns)) {
            return Ok(());
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, format!("{epoch} {deadline_ns} {}\n", self.boot_id))?;
        std::fs::rename(&tmp, &self.path)?;
        self.written = Some((epoch, deadline_ns));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_lease_allows_its_epoch_until_its_end_and_then_by_itself_no_longer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.lease");
        let mut file = LeaseFile::open(path.clone()).unwrap();
        assert!(!LeaseRecord::read(&path).unwrap().allows(0));
        file.set(3, Some(Instant::now() + Duration::from_millis(150)))
            .unwrap();
        let record = LeaseRecord::read(&path).unwrap();
        assert!(record.allows(3));
        assert!(!record.allows(2), "another epoch");
        std::thread::sleep(Duration::from_millis(200));
        assert!(!record.allows(3), "the lease ended with no one writing");
        file.set(3, None).unwrap();
        assert_eq!(LeaseRecord::read(&path).unwrap().deadline_ns, 0);
    }

    #[test]
    fn a_deadline_from_another_boot_allows_nothing() {
        let record = LeaseRecord {
            epoch: 1,
            deadline_ns: u64::MAX,
            boot_id: "not-this-boot".into(),
        };
        assert!(!record.allows(1));
        assert_eq!(LeaseRecord::parse("garbage"), None);
    }
}
