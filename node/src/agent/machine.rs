//! The role state machine of one service on this node: pure, no I/O, no clock of its own.
//!
//! Inputs are the finalized chain ([`ServiceMachine::on_block`]), health-check results
//! ([`ServiceMachine::on_health`]), time ([`ServiceMachine::on_tick`]) and finished hooks
//! ([`ServiceMachine::on_hook_finished`]). Each returns the [`Action`]s the host must carry out.
//! The rules (design brief, failover semantics):
//!
//! - The node *serves* only while the chain says it is the active holder at the current epoch,
//!   its `on_promote` hook succeeded, its health is not failed, and its **lease** holds. The
//!   lease runs from when the latest heartbeat the chain applied was *signed* (a heartbeat
//!   cannot be in a block before it exists) for `heartbeat_timeout_ms - 2 * (max_drift_ms +
//!   clock_error_ms)`: the chain cannot elect anyone else before that (docs/architecture.md).
//! - Elected (`Promoting` at epoch E): wait until no deposed holder may still be serving, run
//!   `on_promote`, then submit `PromotionComplete(E)`. A failing `on_promote` reports the node
//!   failed, so the chain elects the next candidate at once.
//! - Losing the role, the lease or health: stop serving at once, then run `on_demote`. The
//!   epoch reported in heartbeats (`epoch_seen`) moves past an epoch only after that hook ran,
//!   which is what a newly elected node waits for.
//! - One hook at a time: hooks queue.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use drchain_runtime::pallet_failover::{Phase, Role};
use drchain_support::{AccountId, Epoch, Health, ServiceName};
use serde::Serialize;

use super::chain::{ChainView, ServiceSnapshot};

/// A point in time in both clocks: monotonic for deadlines, wall (Unix ms) for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub mono: Instant,
    /// Unix time, ms.
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

/// The agent's view of its own role (the chain's role, except that `active` also needs the
/// lease and a successful `on_promote`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalRole {
    /// Serving.
    Active,
    /// Elected; restoring and starting.
    Promoting,
    /// Ready to take over.
    Standby,
    /// Unavailable (health, failed promotion, or the chain says so).
    Failed,
    /// Must not serve: deposed holder, or the lease ran out.
    Fenced,
    /// The service is unknown on chain or this node is not one of its candidates.
    None,
}

impl LocalRole {
    /// Its name, as hooks and logs show it.
    pub fn as_str(&self) -> &'static str {
        match self {
            LocalRole::Active => "active",
            LocalRole::Promoting => "promoting",
            LocalRole::Standby => "standby",
            LocalRole::Failed => "failed",
            LocalRole::Fenced => "fenced",
            LocalRole::None => "none",
        }
    }
}

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    /// `on_promote`.
    OnPromote,
    /// `on_demote`.
    OnDemote,
    /// `on_role_change`.
    OnRoleChange,
}

impl HookKind {
    /// Its name.
    pub fn as_str(&self) -> &'static str {
        match self {
            HookKind::OnPromote => "on_promote",
            HookKind::OnDemote => "on_demote",
            HookKind::OnRoleChange => "on_role_change",
        }
    }
}

/// One hook invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    /// Which hook.
    pub kind: HookKind,
    /// The role it is about.
    pub role: LocalRole,
    /// The fencing token: the epoch it is about.
    pub epoch: Epoch,
    /// The service's latest checkpoint on chain.
    pub checkpoint: Option<u64>,
}

/// Something the host must do. Nothing is done by the machine itself.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Sign and submit a heartbeat. The machine recorded its send time already; the host need
    /// not report back.
    Heartbeat {
        /// Reported health.
        health: Health,
        /// The epoch this node has acted on.
        epoch_seen: Epoch,
    },
    /// Sign and submit `PromotionComplete(epoch)`. The chain's answer arrives in a block.
    CompletePromotion {
        /// The epoch of the election.
        epoch: Epoch,
    },
    /// Run a hook; resume with [`ServiceMachine::on_hook_finished`] when it exits or times out.
    RunHook(HookRun),
    /// Started serving (log it: the role log the tests read).
    StartedServing {
        /// The epoch served.
        epoch: Epoch,
        /// When the lease it serves under ends (Unix ms).
        lease_end_ms: u64,
    },
    /// Stopped serving (log it). `until_ms` is when serving really ended: now, or the lease
    /// end if the node noticed late (it was hung).
    StoppedServing {
        /// The epoch served.
        epoch: Epoch,
        /// End of serving, Unix ms.
        until_ms: u64,
        /// Why.
        reason: &'static str,
    },
    /// The lease moved forward while serving (log it at debug: the role log's renewals).
    LeaseRenewed {
        /// The epoch served.
        epoch: Epoch,
        /// The new lease end, Unix ms.
        lease_end_ms: u64,
    },
    /// The local role changed (log it).
    RoleChanged {
        /// From.
        from: LocalRole,
        /// To.
        to: LocalRole,
        /// The chain's epoch.
        epoch: Epoch,
    },
}

/// Where an elected node is in its promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// A deposed holder may still serve; wait for it to let go.
    AwaitRelease,
    /// `on_promote` queued or running.
    Hook,
    /// `PromotionComplete` sent at this time.
    Completing(Instant),
    /// `on_promote` failed; the node reports itself failed for this epoch.
    Failed,
}

/// What the node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holding {
    /// Nothing.
    Nothing,
    /// Elected at `epoch`.
    Promoting { epoch: Epoch, stage: Stage },
    /// Active on chain at `epoch`; `promoted` once `on_promote` succeeded for this stint.
    Active { epoch: Epoch, promote: Promote },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Promote {
    Needed,
    Running,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    end: Instant,
    end_wall_ms: u64,
}

/// Static settings of one service's machine.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// The service.
    pub service: ServiceName,
    /// This node.
    pub me: AccountId,
    /// Heartbeat period; `None`: a quarter of the chain's `heartbeat_timeout_ms`.
    pub heartbeat_interval: Option<Duration>,
    /// `ε` of the lease argument.
    pub clock_error_ms: u64,
    /// After a failed `on_promote`, how long the node reports itself failed (so the chain
    /// does not elect it again at once and promotions do not ping-pong).
    pub failed_promotion_holdoff: Duration,
}

/// What the health endpoints and `drchain status` show of one service.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceReport {
    /// The service.
    pub service: ServiceName,
    /// This node.
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
    /// Finalized block the view is from.
    pub block: u64,
    #[serde(skip)]
    lease_end: Option<Instant>,
}

impl ServiceReport {
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

/// One service's machine.
#[derive(Debug)]
pub struct ServiceMachine {
    cfg: MachineConfig,
    role: LocalRole,
    holding: Holding,
    serving: Option<Epoch>,
    lease: Option<Lease>,
    /// Send times of heartbeats not yet seen applied, oldest first.
    in_flight: VecDeque<Now>,
    /// The chain's heartbeat count for this node at the last view.
    applied_heartbeats: Option<u64>,
    health: Health,
    /// Latest chain epoch seen, and the epoch heartbeats report.
    chain_epoch: Epoch,
    epoch_seen: Epoch,
    next_heartbeat: Option<Instant>,
    hooks: VecDeque<HookRun>,
    running: Option<HookRun>,
    hook_failures: u64,
    view: Option<ChainView>,
    /// Reports failed until then, after a failed `on_promote`.
    failed_until: Option<Instant>,
}

/// The lease a heartbeat gives: `heartbeat_timeout_ms - 2 * (max_drift_ms + clock_error_ms)`,
/// or `None` when that is not positive (the chain's parameters leave no safe lease).
pub fn lease_ms(view: &ChainView, clock_error_ms: u64) -> Option<u64> {
    let timeout = view.service.as_ref()?.heartbeat_timeout_ms;
    let margin = 2 * (view.max_drift_ms + clock_error_ms);
    timeout.checked_sub(margin).filter(|l| *l > 0)
}

/// How long to wait for a `PromotionComplete` to land before sending it again.
const RESEND_COMPLETION: Duration = Duration::from_millis(1000);

impl ServiceMachine {
    /// A machine that has seen nothing yet: no role, not serving, healthy until a check says
    /// otherwise.
    pub fn new(cfg: MachineConfig) -> Self {
        Self {
            cfg,
            role: LocalRole::None,
            holding: Holding::Nothing,
            serving: None,
            lease: None,
            in_flight: VecDeque::new(),
            applied_heartbeats: None,
            health: Health::Healthy,
            chain_epoch: 0,
            epoch_seen: 0,
            next_heartbeat: None,
            hooks: VecDeque::new(),
            running: None,
            hook_failures: 0,
            view: None,
            failed_until: None,
        }
    }

    /// The service.
    pub fn service(&self) -> &ServiceName {
        &self.cfg.service
    }

    fn snapshot(&self) -> Option<&ServiceSnapshot> {
        self.view.as_ref().and_then(|v| v.service.as_ref())
    }

    fn timeout_ms(&self) -> Option<u64> {
        self.snapshot().map(|s| s.heartbeat_timeout_ms)
    }

    fn heartbeat_interval(&self) -> Duration {
        self.cfg.heartbeat_interval.unwrap_or_else(|| {
            Duration::from_millis(self.timeout_ms().map_or(250, |t| (t / 4).max(10)))
        })
    }

    fn lease_valid(&self, now: Instant) -> bool {
        self.lease.is_some_and(|l| now < l.end)
    }

    fn latest_checkpoint(&self) -> Option<u64> {
        self.snapshot().and_then(|s| s.latest_checkpoint)
    }

    /// The health heartbeats carry: failed while a promotion this epoch failed, and for the
    /// hold-off after it.
    fn reported_health(&self, now: Instant) -> Health {
        let failed_promotion = matches!(
            self.holding,
            Holding::Promoting {
                stage: Stage::Failed,
                ..
            }
        );
        if failed_promotion || self.failed_until.is_some_and(|t| now < t) {
            Health::Failed
        } else {
            self.health
        }
    }

    fn demote_pending(&self) -> bool {
        let is_demote = |h: &HookRun| h.kind == HookKind::OnDemote;
        self.running.as_ref().is_some_and(is_demote) || self.hooks.iter().any(is_demote)
    }

    fn queue(&mut self, kind: HookKind, role: LocalRole, epoch: Epoch, out: &mut Vec<Action>) {
        self.hooks.push_back(HookRun {
            kind,
            role,
            epoch,
            checkpoint: self.latest_checkpoint(),
        });
        self.start_next_hook(out);
    }

    fn start_next_hook(&mut self, out: &mut Vec<Action>) {
        if self.running.is_none() {
            if let Some(run) = self.hooks.pop_front() {
                self.running = Some(run.clone());
                out.push(Action::RunHook(run));
            }
        }
    }

    fn set_role(&mut self, role: LocalRole, out: &mut Vec<Action>) {
        if self.role == role {
            return;
        }
        let from = std::mem::replace(&mut self.role, role);
        out.push(Action::RoleChanged {
            from,
            to: role,
            epoch: self.chain_epoch,
        });
        if role != LocalRole::None {
            self.queue(HookKind::OnRoleChange, role, self.chain_epoch, out);
        }
    }

    /// Stops serving (if serving) and, when something was started, runs `on_demote`.
    fn let_go(&mut self, now: Now, reason: &'static str, role: LocalRole, out: &mut Vec<Action>) {
        let started = match self.holding {
            Holding::Nothing => false,
            Holding::Promoting { stage, .. } => stage != Stage::AwaitRelease,
            Holding::Active { promote, .. } => promote != Promote::Needed,
        };
        let epoch = match self.holding {
            Holding::Promoting { epoch, .. } | Holding::Active { epoch, .. } => epoch,
            Holding::Nothing => self.chain_epoch,
        };
        self.stop_serving(now, reason, out);
        self.holding = Holding::Nothing;
        // on_demote first: on_role_change tells the role once it is in effect.
        if started {
            self.queue(HookKind::OnDemote, role, epoch, out);
        }
        self.set_role(role, out);
    }

    fn stop_serving(&mut self, now: Now, reason: &'static str, out: &mut Vec<Action>) {
        if let Some(epoch) = self.serving.take() {
            let until_ms = self
                .lease
                .map_or(now.wall_ms, |l| l.end_wall_ms.min(now.wall_ms));
            out.push(Action::StoppedServing {
                epoch,
                until_ms,
                reason,
            });
        }
    }

    /// Serves if everything allows it, or starts `on_promote` when only that is missing.
    fn try_serve(&mut self, now: Now, out: &mut Vec<Action>) {
        let Holding::Active { epoch, promote } = self.holding else {
            return;
        };
        if self.serving.is_some()
            || self.health == Health::Failed
            || !self.lease_valid(now.mono)
            || self.demote_pending()
        {
            return;
        }
        match promote {
            Promote::Needed => {
                self.holding = Holding::Active {
                    epoch,
                    promote: Promote::Running,
                };
                self.queue(HookKind::OnPromote, LocalRole::Active, epoch, out);
            }
            Promote::Running => {}
            Promote::Done => {
                let lease_end_ms = self.lease.map_or(now.wall_ms, |l| l.end_wall_ms);
                self.serving = Some(epoch);
                out.push(Action::StartedServing {
                    epoch,
                    lease_end_ms,
                });
                self.set_role(LocalRole::Active, out);
            }
        }
    }

    /// A finalized block: the service as the chain now has it.
    pub fn on_block(&mut self, view: ChainView, now: Now) -> Vec<Action> {
        let mut out = vec![];
        let before = self.lease;
        self.renew_lease(&view);
        if let (Some(epoch), Some(lease)) = (self.serving, self.lease) {
            if before != Some(lease) {
                out.push(Action::LeaseRenewed {
                    epoch,
                    lease_end_ms: lease.end_wall_ms,
                });
            }
        }
        self.view = Some(view);
        let Some(snap) = self.snapshot().cloned() else {
            self.let_go(now, "not a candidate", LocalRole::None, &mut out);
            self.epoch_seen = self.chain_epoch;
            return out;
        };
        self.chain_epoch = snap.epoch;
        match snap.phase {
            Phase::Promoting { node, .. } if node == self.cfg.me => {
                self.elected(&snap, now, &mut out)
            }
            Phase::Active { node } if node == self.cfg.me => self.active(snap.epoch, now, &mut out),
            _ => {
                let role = match snap.my_role {
                    Some(Role::Failed) => LocalRole::Failed,
                    Some(Role::Fenced) => LocalRole::Fenced,
                    _ => LocalRole::Standby,
                };
                if self.holding == Holding::Nothing && self.serving.is_none() {
                    self.set_role(role, &mut out);
                } else {
                    self.let_go(now, "the chain moved on", role, &mut out);
                }
            }
        }
        if !self.demote_pending() {
            self.epoch_seen = self.chain_epoch;
        }
        if self.next_heartbeat.is_none() {
            self.next_heartbeat = Some(now.mono);
        }
        self.try_serve(now, &mut out);
        out.extend(self.heartbeat_if_due(now));
        out
    }

    /// Moves the lease forward if the chain applied heartbeats of ours since the last view.
    fn renew_lease(&mut self, view: &ChainView) {
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

    fn elected(&mut self, snap: &ServiceSnapshot, now: Now, out: &mut Vec<Action>) {
        let epoch = snap.epoch;
        match self.holding {
            Holding::Promoting { epoch: e, .. } if e == epoch => {}
            _ => {
                // A new election of this node (perhaps after holding an older epoch).
                self.stop_serving(now, "elected again in a newer epoch", out);
                self.holding = Holding::Promoting {
                    epoch,
                    stage: Stage::AwaitRelease,
                };
                self.set_role(LocalRole::Promoting, out);
            }
        }
        let Holding::Promoting { stage, .. } = self.holding else {
            return;
        };
        match stage {
            Stage::AwaitRelease if snap.others_may_serve.is_empty() => {
                self.holding = Holding::Promoting {
                    epoch,
                    stage: Stage::Hook,
                };
                self.queue(HookKind::OnPromote, LocalRole::Promoting, epoch, out);
            }
            Stage::Completing(sent) if now.mono.duration_since(sent) >= RESEND_COMPLETION => {
                self.holding = Holding::Promoting {
                    epoch,
                    stage: Stage::Completing(now.mono),
                };
                out.push(Action::CompletePromotion { epoch });
            }
            _ => {}
        }
    }

    fn active(&mut self, epoch: Epoch, now: Now, out: &mut Vec<Action>) {
        match self.holding {
            Holding::Active { epoch: e, .. } if e == epoch => {}
            Holding::Promoting {
                epoch: e,
                stage: Stage::Completing(_),
            } if e == epoch => {
                self.holding = Holding::Active {
                    epoch,
                    promote: Promote::Done,
                };
            }
            _ => {
                // Active on chain without this agent having promoted (it restarted): promote
                // again before serving.
                self.stop_serving(now, "epoch changed", out);
                self.holding = Holding::Active {
                    epoch,
                    promote: Promote::Needed,
                };
                self.set_role(LocalRole::Promoting, out);
            }
        }
    }

    /// Stops serving while the chain still has this node active (lease or health lost): it
    /// must run `on_promote` again before serving, and `on_demote` runs once for what the last
    /// `on_promote` started.
    fn step_down(
        &mut self,
        now: Now,
        reason: &'static str,
        role: LocalRole,
        out: &mut Vec<Action>,
    ) {
        let Holding::Active { epoch, promote } = self.holding else {
            return;
        };
        self.stop_serving(now, reason, out);
        self.holding = Holding::Active {
            epoch,
            promote: Promote::Needed,
        };
        self.set_role(role, out);
        if promote != Promote::Needed {
            self.queue(HookKind::OnDemote, role, epoch, out);
        }
    }

    /// A health-check result.
    pub fn on_health(&mut self, health: Health, now: Now) -> Vec<Action> {
        let mut out = vec![];
        let was = std::mem::replace(&mut self.health, health);
        if health == Health::Failed && was != Health::Failed {
            // Stop serving before the chain hears of the failure: a reported failure deposes
            // without waiting for the lease.
            self.step_down(now, "health check failed", LocalRole::Failed, &mut out);
        }
        if was != health {
            // Tell the chain now rather than at the next period.
            out.extend(self.heartbeat(now));
        }
        self.try_serve(now, &mut out);
        out
    }

    /// Time passes: the lease may run out; a heartbeat may be due.
    pub fn on_tick(&mut self, now: Now) -> Vec<Action> {
        let mut out = vec![];
        if self.serving.is_some() && !self.lease_valid(now.mono) {
            self.step_down(now, "lease expired", LocalRole::Fenced, &mut out);
        }
        if let Some(timeout) = self.timeout_ms() {
            // A heartbeat sent longer ago than the timeout can no longer give a lease.
            let horizon = Duration::from_millis(timeout);
            while self
                .in_flight
                .front()
                .is_some_and(|s| now.mono.duration_since(s.mono) > horizon)
            {
                self.in_flight.pop_front();
            }
        }
        if let Holding::Promoting { .. } = self.holding {
            if let Some(snap) = self.snapshot().cloned() {
                self.elected(&snap, now, &mut out);
            }
        }
        self.try_serve(now, &mut out);
        out.extend(self.heartbeat_if_due(now));
        out
    }

    fn heartbeat_if_due(&mut self, now: Now) -> Option<Action> {
        if self.next_heartbeat.is_some_and(|t| now.mono >= t) {
            self.heartbeat(now)
        } else {
            None
        }
    }

    fn heartbeat(&mut self, now: Now) -> Option<Action> {
        self.snapshot()?;
        self.next_heartbeat = Some(now.mono + self.heartbeat_interval());
        self.in_flight.push_back(now);
        Some(Action::Heartbeat {
            health: self.reported_health(now.mono),
            epoch_seen: self.epoch_seen,
        })
    }

    /// A hook finished (`ok`: exited 0 in time).
    pub fn on_hook_finished(&mut self, run: &HookRun, ok: bool, now: Now) -> Vec<Action> {
        let mut out = vec![];
        if self.running.as_ref() == Some(run) {
            self.running = None;
        }
        if !ok {
            self.hook_failures += 1;
        }
        match (run.kind, self.holding) {
            (
                HookKind::OnPromote,
                Holding::Promoting {
                    epoch,
                    stage: Stage::Hook,
                },
            ) if epoch == run.epoch => {
                if ok {
                    self.holding = Holding::Promoting {
                        epoch,
                        stage: Stage::Completing(now.mono),
                    };
                    out.push(Action::CompletePromotion { epoch });
                } else {
                    self.holding = Holding::Promoting {
                        epoch,
                        stage: Stage::Failed,
                    };
                    self.failed_until = Some(now.mono + self.cfg.failed_promotion_holdoff);
                    self.set_role(LocalRole::Failed, &mut out);
                    out.extend(self.heartbeat(now));
                }
            }
            (
                HookKind::OnPromote,
                Holding::Active {
                    epoch,
                    promote: Promote::Running,
                },
            ) if epoch == run.epoch => {
                if ok {
                    self.holding = Holding::Active {
                        epoch,
                        promote: Promote::Done,
                    };
                } else {
                    // Cannot serve: let the chain replace this node.
                    self.health = Health::Failed;
                    self.holding = Holding::Active {
                        epoch,
                        promote: Promote::Needed,
                    };
                    self.set_role(LocalRole::Failed, &mut out);
                    out.extend(self.heartbeat(now));
                }
            }
            (HookKind::OnDemote, _) if !self.demote_pending() => {
                self.epoch_seen = self.chain_epoch;
            }
            _ => {}
        }
        self.start_next_hook(&mut out);
        self.try_serve(now, &mut out);
        out
    }

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
            block: view.map_or(0, |v| v.block),
            lease_end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drchain_runtime::pallet_service_status::Status;

    const ME: AccountId = AccountId([1; 32]);
    const OTHER: AccountId = AccountId([2; 32]);

    struct Harness {
        m: ServiceMachine,
        t0: Instant,
        block: u64,
        heartbeats: u64,
    }

    fn at(t0: Instant, ms: u64) -> Now {
        Now {
            mono: t0 + Duration::from_millis(ms),
            wall_ms: 1_000_000 + ms,
        }
    }

    impl Harness {
        fn new() -> Self {
            Self {
                m: ServiceMachine::new(MachineConfig {
                    service: ServiceName::new("db").unwrap(),
                    me: ME,
                    heartbeat_interval: Some(Duration::from_millis(250)),
                    clock_error_ms: 25,
                    failed_promotion_holdoff: Duration::from_millis(1000),
                }),
                t0: Instant::now(),
                block: 0,
                heartbeats: 0,
            }
        }

        /// A block at `ms` with the service in `phase` at `epoch`; `applied` of our
        /// heartbeats were included in it.
        fn block(
            &mut self,
            ms: u64,
            epoch: Epoch,
            phase: Phase,
            applied: u64,
            others: Vec<AccountId>,
        ) -> Vec<Action> {
            self.block += 1;
            self.heartbeats += applied;
            let view = ChainView {
                block: self.block,
                live_now: ms,
                max_drift_ms: 100,
                service: Some(ServiceSnapshot {
                    epoch,
                    phase,
                    heartbeat_timeout_ms: 1000,
                    my_role: None,
                    my_heartbeat: (self.heartbeats > 0).then_some(Status {
                        health: Health::Healthy,
                        epoch_seen: epoch,
                        applied_checkpoint: None,
                        live_at: ms,
                        timestamp: ms,
                        block: self.block,
                        heartbeats: self.heartbeats,
                    }),
                    my_endpoint: None,
                    latest_checkpoint: Some(4),
                    others_may_serve: others,
                }),
            };
            self.m.on_block(view, at(self.t0, ms))
        }

        fn tick(&mut self, ms: u64) -> Vec<Action> {
            self.m.on_tick(at(self.t0, ms))
        }

        fn finish(&mut self, ms: u64, kind: HookKind, ok: bool) -> Vec<Action> {
            let run = self.m.running.clone().expect("a hook runs");
            assert_eq!(run.kind, kind, "running {run:?}");
            self.m.on_hook_finished(&run, ok, at(self.t0, ms))
        }
    }

    fn hooks(actions: &[Action]) -> Vec<HookKind> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::RunHook(r) => Some(r.kind),
                _ => None,
            })
            .collect()
    }

    fn heartbeat(actions: &[Action]) -> Option<(Health, Epoch)> {
        actions.iter().find_map(|a| match a {
            Action::Heartbeat { health, epoch_seen } => Some((*health, *epoch_seen)),
            _ => None,
        })
    }

    /// Elected at epoch 1, promoted, active and serving at about 60 ms.
    fn serving() -> Harness {
        let mut h = Harness::new();
        // First view: a heartbeat goes out at once (the chain has none of ours yet).
        let a = h.block(0, 0, Phase::Vacant, 0, vec![]);
        assert_eq!(heartbeat(&a), Some((Health::Healthy, 0)));
        // The first role the agent learns is told to on_role_change too.
        assert_eq!(hooks(&a), vec![HookKind::OnRoleChange]);
        h.finish(5, HookKind::OnRoleChange, true);
        let promoting = Phase::Promoting {
            node: ME,
            deadline: 5000,
        };
        let a = h.block(10, 1, promoting, 1, vec![]);
        assert_eq!(hooks(&a), vec![HookKind::OnRoleChange]);
        let a = h.finish(20, HookKind::OnRoleChange, true);
        assert_eq!(hooks(&a), vec![HookKind::OnPromote]);
        assert_eq!(h.m.running.as_ref().unwrap().checkpoint, Some(4));
        let a = h.finish(30, HookKind::OnPromote, true);
        assert!(a.contains(&Action::CompletePromotion { epoch: 1 }));
        let a = h.block(40, 1, Phase::Active { node: ME }, 0, vec![]);
        // The lease from the heartbeat sent at 0: 1000 - 2 * (100 + 25) = 750 ms.
        assert!(
            a.contains(&Action::StartedServing {
                epoch: 1,
                lease_end_ms: 1_000_750
            }),
            "{a:?}"
        );
        assert!(h.m.report().serving);
        h.finish(50, HookKind::OnRoleChange, true);
        h
    }

    #[test]
    fn an_elected_node_promotes_completes_and_serves_under_its_lease() {
        let h = serving();
        let r = h.m.report().at(h.t0 + Duration::from_millis(700));
        assert!(
            r.serving && r.lease_left_ms == 50 && r.role == LocalRole::Active,
            "{r:?}"
        );
        assert!(!h.m.report().serving_at(h.t0 + Duration::from_millis(750)));
    }

    #[test]
    fn the_lease_runs_out_unless_heartbeats_land_and_the_node_fences_itself() {
        let mut h = serving();
        // A heartbeat sent at 250 lands: the lease now ends at 1000.
        let a = h.tick(250);
        assert!(heartbeat(&a).is_some());
        h.block(260, 1, Phase::Active { node: ME }, 1, vec![]);
        assert!(h
            .tick(990)
            .iter()
            .all(|a| !matches!(a, Action::StoppedServing { .. })));
        // Nothing lands after that (cut off): the lease ends at 1000.
        let a = h.tick(1010);
        assert!(
            a.contains(&Action::StoppedServing {
                epoch: 1,
                until_ms: 1_001_000,
                reason: "lease expired"
            }),
            "{a:?}"
        );
        assert_eq!(hooks(&a), vec![HookKind::OnRoleChange]);
        assert_eq!(h.m.report().role, LocalRole::Fenced);
        let a = h.finish(1020, HookKind::OnRoleChange, true);
        assert_eq!(hooks(&a), vec![HookKind::OnDemote]);
        assert_eq!(h.m.running.as_ref().unwrap().role, LocalRole::Fenced);
    }

    #[test]
    fn a_hung_node_that_resumes_late_reports_its_lease_end_not_the_resume_time() {
        let mut h = serving();
        let a = h.tick(5000);
        assert!(
            a.contains(&Action::StoppedServing {
                epoch: 1,
                until_ms: 1_000_750,
                reason: "lease expired"
            }),
            "{a:?}"
        );
    }

    #[test]
    fn losing_the_role_stops_serving_and_acknowledges_the_epoch_only_after_on_demote() {
        let mut h = serving();
        let a = h.block(
            300,
            2,
            Phase::Promoting {
                node: OTHER,
                deadline: 9000,
            },
            0,
            vec![],
        );
        assert!(a
            .iter()
            .any(|a| matches!(a, Action::StoppedServing { epoch: 1, .. })));
        assert!(!h.m.report().serving);
        // on_demote, then on_role_change(standby); the epoch is acknowledged after on_demote.
        assert_eq!(heartbeat(&a), Some((Health::Healthy, 1)), "{a:?}");
        let a = h.finish(330, HookKind::OnDemote, false);
        assert_eq!(hooks(&a), vec![HookKind::OnRoleChange]);
        assert_eq!(h.m.report().hook_failures, 1);
        let a = h.tick(600);
        assert_eq!(heartbeat(&a), Some((Health::Healthy, 2)));
    }

    #[test]
    fn an_elected_node_waits_for_a_deposed_holder_to_let_go() {
        let mut h = Harness::new();
        let _ = h.block(0, 0, Phase::Vacant, 0, vec![]);
        h.finish(5, HookKind::OnRoleChange, true);
        let promoting = Phase::Promoting {
            node: ME,
            deadline: 5000,
        };
        let _ = h.block(10, 3, promoting, 1, vec![OTHER]);
        h.finish(20, HookKind::OnRoleChange, true);
        assert!(h.m.running.is_none(), "on_promote must wait");
        let a = h.block(30, 3, promoting, 0, vec![]);
        assert_eq!(hooks(&a), vec![HookKind::OnPromote]);
    }

    #[test]
    fn a_failed_on_promote_reports_the_node_failed_and_never_completes() {
        let mut h = Harness::new();
        let _ = h.block(0, 0, Phase::Vacant, 0, vec![]);
        h.finish(5, HookKind::OnRoleChange, true);
        let promoting = Phase::Promoting {
            node: ME,
            deadline: 5000,
        };
        let _ = h.block(10, 1, promoting, 1, vec![]);
        h.finish(20, HookKind::OnRoleChange, true);
        let a = h.finish(30, HookKind::OnPromote, false);
        assert!(!a
            .iter()
            .any(|a| matches!(a, Action::CompletePromotion { .. })));
        assert_eq!(heartbeat(&a), Some((Health::Failed, 1)));
        // The chain elects someone else: clean up with on_demote, then healthy again.
        let _ = h.block(
            100,
            2,
            Phase::Promoting {
                node: OTHER,
                deadline: 5000,
            },
            1,
            vec![],
        );
        let a = h.finish(110, HookKind::OnRoleChange, true);
        assert_eq!(hooks(&a), vec![HookKind::OnDemote]);
        h.finish(120, HookKind::OnDemote, true);
        // Still failed for the hold-off (1 s here), so it is not elected again at once.
        let a = h.tick(400);
        assert_eq!(heartbeat(&a), Some((Health::Failed, 2)));
        let a = h.tick(1100);
        assert_eq!(heartbeat(&a), Some((Health::Healthy, 2)));
    }

    #[test]
    fn a_failing_health_check_stops_serving_before_the_chain_hears_of_it() {
        let mut h = serving();
        let a = h.m.on_health(Health::Failed, at(h.t0, 100));
        let stopped = a
            .iter()
            .position(|a| matches!(a, Action::StoppedServing { .. }));
        let told = a.iter().position(|a| {
            matches!(
                a,
                Action::Heartbeat {
                    health: Health::Failed,
                    ..
                }
            )
        });
        assert!(
            stopped.is_some() && told.is_some() && stopped < told,
            "{a:?}"
        );
    }

    #[test]
    fn no_lease_when_the_chain_parameters_leave_no_margin() {
        let mut view = ChainView {
            block: 1,
            live_now: 0,
            max_drift_ms: 500,
            service: None,
        };
        assert_eq!(lease_ms(&view, 25), None);
        view.max_drift_ms = 100;
        view.service = Some(ServiceSnapshot {
            epoch: 0,
            phase: Phase::Vacant,
            heartbeat_timeout_ms: 1000,
            my_role: None,
            my_heartbeat: None,
            my_endpoint: None,
            latest_checkpoint: None,
            others_may_serve: vec![],
        });
        assert_eq!(lease_ms(&view, 25), Some(750));
        view.max_drift_ms = 500;
        assert_eq!(lease_ms(&view, 25), None);
    }
}
