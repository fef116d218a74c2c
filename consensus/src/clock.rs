//! The time source of the hosts around the driver (the node loop, the agent, the health
//! endpoints). The driver itself reads no clock: it takes `now_ms` as an input. Hosts read
//! time only through [`Clock`], so a test can hand them a clock it controls.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A point in time in both clocks: monotonic for deadlines, wall (Unix ms) for what goes on
/// chain and into logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time: deadlines, leases.
    pub mono: Instant,
    /// Unix time, ms: block timestamps, heartbeats, role logs.
    pub wall_ms: u64,
}

impl Now {
    /// `d` later.
    pub fn plus(self, d: Duration) -> Self {
        Self {
            mono: self.mono + d,
            wall_ms: self.wall_ms + d.as_millis() as u64,
        }
    }
}

/// Where a host reads the time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The time now.
    fn now(&self) -> Now;
}

/// The machine's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Now {
        Now {
            mono: Instant::now(),
            // Before 1970 only on a broken clock: read as 0, which every check refuses.
            wall_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }
}
