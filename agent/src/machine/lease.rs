//! The lease: how long this node may serve after a heartbeat the chain applied. The chain
//! cannot elect anyone else before it ends (the argument is in docs/architecture.md).

use std::time::{Duration, Instant};

use drchain_support::H256;

use super::{ChainView, Now, ServiceMachine};

/// A heartbeat sent and not yet seen applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct InFlight {
    /// The machine's id for it.
    pub(super) id: u64,
    /// When it was signed.
    pub(super) sent: Now,
    /// Its extrinsic, once the host submitted it.
    pub(super) hash: Option<H256>,
}

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

    /// Moves the lease forward if the chain applied heartbeats of ours since the last view:
    /// recognized by their extrinsic hash, so only heartbeats this machine sent count.
    pub(super) fn renew_lease(&mut self, view: &ChainView) {
        let Some(applied) = self
            .in_flight
            .iter()
            .rposition(|h| h.hash.is_some_and(|hash| view.applied.contains(&hash)))
        else {
            return;
        };
        // Nonces apply in order: the older ones in flight were applied before it or never
        // will be. Counting from the newest applied send time is the longest safe lease.
        let newest = self.in_flight[applied].sent;
        self.in_flight.drain(..=applied);
        if let Some(lease_ms) = lease_ms(view, self.cfg.clock_error_ms) {
            let end = newest.plus(Duration::from_millis(lease_ms));
            if self.lease.is_none_or(|l| l.end < end.mono) {
                self.lease = Some(Lease {
                    end: end.mono,
                    end_wall_ms: end.wall_ms,
                });
            }
        }
    }
}
