//! The lease: how long this node may serve after a heartbeat the chain applied. The chain
//! cannot elect anyone else before it ends (the argument is in docs/architecture.md). And,
//! for an elected node, when the lease of the holder it replaces has surely ended by its own
//! clock.

use std::time::{Duration, Instant};

use drchain_support::H256;

use drchain_support::AccountId;

use super::{ChainView, Now, ServiceMachine, ServiceSnapshot};

/// Heartbeats of holders remembered (a few seconds' worth for three candidates).
const HOLDER_BEATS_KEPT: usize = 64;

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

    /// Records when this machine first saw each new heartbeat of the nodes that hold or held
    /// the service.
    pub(super) fn note_holder_beats(&mut self, now: Instant) {
        let Some(snap) = self.snapshot() else {
            return;
        };
        let fresh: Vec<(AccountId, u64)> = snap
            .may_hold
            .iter()
            .filter(|(node, block)| {
                !self
                    .holder_beats
                    .iter()
                    .any(|(n, b, _)| n == node && b == block)
            })
            .copied()
            .collect();
        for (node, block) in fresh {
            self.holder_beats.push_back((node, block, now));
        }
        while self.holder_beats.len() > HOLDER_BEATS_KEPT {
            self.holder_beats.pop_front();
        }
    }

    /// Whether every node that held the service before this node's election has surely lost
    /// its lease by this machine's own monotonic clock: the lease length has passed since this
    /// machine saw that node's last heartbeat from before the election (or since it started,
    /// if it saw none). The chain's clock is not trusted here: if every validator's clock
    /// stepped forward together, the chain may call a heartbeat stale that real time does not.
    pub(super) fn holders_leases_over(&self, snap: &ServiceSnapshot, now: Instant) -> bool {
        let Some(lease) = self
            .view
            .as_ref()
            .and_then(|v| lease_ms(v, self.cfg.clock_error_ms))
        else {
            return true;
        };
        let lease = Duration::from_millis(lease);
        snap.may_hold.iter().all(|(node, _)| {
            let seen = self
                .holder_beats
                .iter()
                .rev()
                .find(|(n, block, _)| n == node && *block <= snap.since_block)
                .map(|(_, _, at)| *at)
                .or(self.started);
            seen.is_none_or(|at| now.saturating_duration_since(at) >= lease)
        })
    }
}
