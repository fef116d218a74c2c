//! The lease: how long this node may serve after a heartbeat the chain applied. The chain
//! cannot elect anyone else before it ends (the argument is in docs/architecture.md).

use std::time::{Duration, Instant};

use super::{ChainView, ServiceMachine};

/// When the lease ends, in both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Lease {
    /// Monotonic: what serving is checked against.
    pub(super) end: Instant,
    /// Unix ms: for logs and the role log.
    pub(super) end_wall_ms: u64,
}

/// The lease a heartbeat gives: `heartbeat_timeout_ms - 2 * (max_drift_ms + clock_error_ms)`,
/// or `None` when that is not positive (the chain's parameters leave no safe lease).
pub fn lease_ms(view: &ChainView, clock_error_ms: u64) -> Option<u64> {
    let timeout = view.service.as_ref()?.heartbeat_timeout_ms;
    let margin = 2 * (view.max_drift_ms + clock_error_ms);
    timeout.checked_sub(margin).filter(|l| *l > 0)
}

impl ServiceMachine {
    pub(super) fn lease_valid(&self, now: Instant) -> bool {
        self.lease.is_some_and(|l| now < l.end)
    }

    /// Moves the lease forward if the chain applied heartbeats of ours since the last view.
    pub(super) fn renew_lease(&mut self, view: &ChainView) {
        let count = view
            .service
            .as_ref()
            .map(|s| s.my_heartbeat.as_ref().map_or(0, |h| h.heartbeats));
        let previous = std::mem::replace(&mut self.applied_heartbeats, count);
        let (Some(count), Some(previous)) = (count, previous) else {
            return;
        };
        // Heartbeats apply in the order they were sent; any that were dropped only make the
        // send time we pick older, so the lease shorter: safe.
        let mut newest = None;
        for _ in 0..count.saturating_sub(previous) {
            match self.in_flight.pop_front() {
                Some(sent) => newest = Some(sent),
                None => break,
            }
        }
        if let (Some(sent), Some(lease_ms)) = (newest, lease_ms(view, self.cfg.clock_error_ms)) {
            let end = sent.plus(Duration::from_millis(lease_ms));
            if self.lease.is_none_or(|l| l.end < end.mono) {
                self.lease = Some(Lease {
                    end: end.mono,
                    end_wall_ms: end.wall_ms,
                });
            }
        }
    }
}
