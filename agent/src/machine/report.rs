//! What the health endpoints and `drchain status` show of one service.

use std::time::Instant;

use drchain_runtime::pallet_failover::Phase;
use drchain_support::{AccountId, Epoch, Health, ServiceName};
use serde::Serialize;

use super::{HookKind, LocalRole, ServiceMachine};

/// What the health endpoints and `drchain status` show of one service.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceReport {
    pub service: ServiceName,
    pub node: AccountId,
    /// The agent's role.
    pub role: LocalRole,
    /// The chain's epoch (the fencing token).
    pub epoch: Epoch,
    /// Whether this node serves now.
    pub serving: bool,
    /// Time left on the lease, ms (0 when none).
    pub lease_left_ms: u64,
    /// Latest health-check result.
    pub health: Health,
    /// The chain's phase (`active`, `promoting`, `vacant`, or `unknown`).
    pub chain_phase: &'static str,
    /// The chain's active node, if any.
    pub chain_active: Option<AccountId>,
    /// The last heartbeat of this node the chain applied.
    pub last_heartbeat: Option<HeartbeatReport>,
    /// A hook running now.
    pub hook_running: Option<HookKind>,
    /// Hooks that failed or timed out since start.
    pub hook_failures: u64,
    /// `on_demote` failed (this many times in a row) and will run again: the old service may
    /// still run, so the node acknowledges no newer epoch. 0 when not failing.
    pub demote_failures: u32,
    /// Finalized block the view is from.
    pub block: u64,
    /// The last run of each hook that ended, oldest first (set by the host, which runs them).
    pub last_hooks: Vec<LastHook>,
    #[serde(skip)]
    pub(super) lease_end: Option<Instant>,
}

impl ServiceReport {
    /// When the lease ends (monotonic), if there is one.
    pub fn lease_end(&self) -> Option<Instant> {
        self.lease_end
    }

    /// Serving, re-checked against the lease at `now` (the report may be a few ms old).
    pub fn serving_at(&self, now: Instant) -> bool {
        self.serving && self.lease_end.is_some_and(|end| now < end)
    }

    /// The report with the lease re-read at `now`.
    pub fn at(mut self, now: Instant) -> Self {
        self.serving = self.serving_at(now);
        self.lease_left_ms = self.lease_end.map_or(0, |end| {
            end.saturating_duration_since(now).as_millis() as u64
        });
        self
    }
}

/// How the last run of a hook ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastHook {
    pub hook: HookKind,
    /// `succeeded`, `failed`, `timed_out`, `not_started`.
    pub outcome: &'static str,
    /// The epoch it was about.
    pub epoch: Epoch,
    /// When it ended (Unix ms).
    pub finished_at_ms: u64,
    pub took_ms: u64,
}

/// The last applied heartbeat, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatReport {
    /// Block that included it.
    pub block: u64,
    /// Its age on the chain's live clock at the view's block, ms.
    pub age_ms: u64,
    /// Health it carried.
    pub health: Health,
    /// Epoch it reported.
    pub epoch_seen: Epoch,
}

impl ServiceMachine {
    /// What the health endpoints show.
    pub fn report(&self) -> ServiceReport {
        let snap = self.snapshot();
        let view = self.view.as_ref();
        let (chain_phase, chain_active) = match snap.map(|s| s.phase) {
            Some(Phase::Active { node }) => ("active", Some(node)),
            Some(Phase::Promoting { .. }) => ("promoting", None),
            Some(Phase::Vacant) => ("vacant", None),
            None => ("unknown", None),
        };
        let lease_end = self.serving.and(self.lease.map(|l| l.end));
        ServiceReport {
            service: self.cfg.service.clone(),
            node: self.cfg.me,
            role: self.role,
            epoch: self.chain_epoch,
            serving: self.serving.is_some(),
            lease_left_ms: 0,
            health: self.health,
            chain_phase,
            chain_active,
            last_heartbeat: snap.and_then(|s| {
                s.my_heartbeat.as_ref().map(|h| HeartbeatReport {
                    block: h.block,
                    age_ms: view.map_or(0, |v| v.live_now.saturating_sub(h.live_at)),
                    health: h.health,
                    epoch_seen: h.epoch_seen,
                })
            }),
            hook_running: self.running.as_ref().map(|r| r.kind),
            hook_failures: self.hook_failures,
            demote_failures: if self.demote_retry.is_some() {
                self.demote_failures
            } else {
                0
            },
            block: view.map_or(0, |v| v.block),
            last_hooks: vec![],
            lease_end,
        }
    }
}
