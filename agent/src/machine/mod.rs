//! The role state machine of one service on this node: pure, no I/O, no clock of its own.
//!
//! Inputs are the finalized chain ([`ServiceMachine::on_block`]), health-check results
//! ([`ServiceMachine::on_health`]), time ([`ServiceMachine::on_tick`]), finished hooks
//! ([`ServiceMachine::on_hook_finished`]) and the node stopping
//! ([`ServiceMachine::on_shutdown`]). Each returns the [`Action`]s the host must carry out.
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
//!   epoch reported in heartbeats (`epoch_seen`) moves past an epoch only after that hook
//!   *succeeded*, which is what a newly elected node waits for (or for the lease bound). A
//!   failed or timed-out `on_demote` is retried with a growing delay; the node neither serves
//!   nor acknowledges the epoch meanwhile ([`Action::DemoteFailed`] alerts).
//! - A machine starts assuming its service may still run from the agent's previous life: the
//!   first time the node is not to serve, `on_demote` runs even though this life promoted
//!   nothing.
//! - One hook at a time: hooks queue.

mod finished;
mod lease;
mod report;
#[cfg(test)]
mod tests;
mod types;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use drchain_runtime::pallet_failover::{Phase, Role};
use drchain_support::{AccountId, Epoch, Health, ServiceName, H256};

use crate::chain::{ChainView, ServiceSnapshot};
pub use lease::lease_ms;
use lease::{InFlight, Lease};
pub use report::{HeartbeatReport, LastHook, ServiceReport};
pub use types::{Action, Actions, HookKind, HookRun, LocalRole, MachineConfig, Now};

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
    Nothing,
    /// Elected at `epoch`.
    Promoting {
        epoch: Epoch,
        stage: Stage,
    },
    /// Active on chain at `epoch`; `promoted` once `on_promote` succeeded for this stint.
    Active {
        epoch: Epoch,
        promote: Promote,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Promote {
    Needed,
    Running,
    Done,
}

/// One service's machine.
#[derive(Debug)]
pub struct ServiceMachine {
    cfg: MachineConfig,
    role: LocalRole,
    holding: Holding,
    serving: Option<Epoch>,
    lease: Option<Lease>,
    /// Heartbeats sent and not yet seen applied, oldest first.
    in_flight: VecDeque<InFlight>,
    /// The id of the next heartbeat.
    next_heartbeat_id: u64,
    health: Health,
    /// Latest chain epoch seen, and the epoch heartbeats report.
    chain_epoch: Epoch,
    epoch_seen: Epoch,
    next_heartbeat: Option<Instant>,
    hooks: VecDeque<HookRun>,
    running: Option<HookRun>,
    hook_failures: u64,
    /// The chain's live clock when this node first saw itself elected, per epoch.
    elected_at: Option<(Epoch, u64)>,
    /// A failed `on_demote`, to run again at that time.
    demote_retry: Option<(HookRun, Instant)>,
    /// `on_demote` failures in a row.
    demote_failures: u32,
    view: Option<ChainView>,
    /// Reports failed until then, after a failed `on_promote`.
    failed_until: Option<Instant>,
    /// When this machine saw each recent heartbeat of the nodes that hold or held the
    /// service: (node, heartbeat's block, seen at), newest last, a few per node.
    holder_beats: VecDeque<(AccountId, u64, Instant)>,
    /// When this machine first saw the chain.
    started: Option<Instant>,
    /// Until the first `on_demote` is queued: the agent's previous life (before a crash or
    /// a stop on an error) may have left the service running as active, so the first time
    /// this node is not to serve, it fences.
    left_running: bool,
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
            next_heartbeat_id: 0,
            health: Health::Healthy,
            chain_epoch: 0,
            epoch_seen: 0,
            next_heartbeat: None,
            hooks: VecDeque::new(),
            running: None,
            hook_failures: 0,
            elected_at: None,
            demote_retry: None,
            demote_failures: 0,
            view: None,
            failed_until: None,
            holder_beats: VecDeque::new(),
            started: None,
            left_running: true,
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

    /// Whether an `on_demote` is queued, running, or failed and waiting to run again: until
    /// it succeeds, the node neither serves nor acknowledges a newer epoch.
    fn demote_pending(&self) -> bool {
        let is_demote = |h: &HookRun| h.kind == HookKind::OnDemote;
        self.demote_retry.is_some()
            || self.running.as_ref().is_some_and(is_demote)
            || self.hooks.iter().any(is_demote)
    }

    /// Queues the failed `on_demote` again once its delay is over.
    fn retry_demote_if_due(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.demote_retry.as_ref().is_none_or(|(_, at)| now < *at) {
            return;
        }
        if let Some((run, _)) = self.demote_retry.take() {
            self.hooks.push_back(run);
            self.start_next_hook(out);
        }
    }

    fn queue(&mut self, kind: HookKind, role: LocalRole, epoch: Epoch, out: &mut Vec<Action>) {
        if kind == HookKind::OnDemote {
            self.left_running = false;
        }
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
        let started = self.left_running
            || match self.holding {
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
            || self.failed_until.is_some_and(|t| now.mono < t)
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
    pub fn on_block(&mut self, mut view: ChainView, now: Now) -> Actions {
        let mut out = vec![];
        if !view.caught_up {
            // Its node is replaying the chain's past to catch up: the service's state then is
            // not now, and a heartbeat of this node applied back then may have been sent by an
            // earlier run of this agent (same key, nonce and content sign to the same
            // extrinsic) — taken for one just sent, it would give a lease nobody holds. Nothing
            // is taken from such a view: whatever this node started is fenced meanwhile.
            view.service = None;
            view.applied.clear();
        }
        let caught_up = view.caught_up;
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
        if caught_up {
            // What a holder did before this is known only from views of the present.
            self.started.get_or_insert(now.mono);
        }
        self.note_holder_beats(now.mono);
        let Some(snap) = self.snapshot().cloned() else {
            let reason = if caught_up {
                "not a candidate"
            } else {
                "its node is catching up with the chain"
            };
            self.let_go(now, reason, LocalRole::None, &mut out);
            self.epoch_seen = self.chain_epoch;
            return out.into();
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
                if self.holding == Holding::Nothing && self.serving.is_none() && !self.left_running
                {
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
        out.into()
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
                let live_now = self.view.as_ref().map_or(0, |v| v.live_now);
                self.elected_at = Some((epoch, live_now));
                self.set_role(LocalRole::Promoting, out);
            }
        }
        let Holding::Promoting { stage, .. } = self.holding else {
            return;
        };
        match stage {
            Stage::AwaitRelease
                if (snap.others_may_serve.is_empty() || self.lease_bound_passed(snap))
                    && self.holders_leases_over(snap, now.mono)
                    && !self.demote_pending() =>
            {
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

    /// Whether more than the heartbeat timeout of chain time passed since this node saw its
    /// election: a deposed holder's lease has ended by then, whether or not its `on_demote`
    /// succeeded (the bound is argued in docs/architecture.md, "Elections that do not wait for
    /// staleness"). Counting from when this node *saw* the election only waits longer.
    fn lease_bound_passed(&self, snap: &ServiceSnapshot) -> bool {
        let live_now = self.view.as_ref().map_or(0, |v| v.live_now);
        self.elected_at.is_some_and(|(epoch, at)| {
            epoch == snap.epoch && live_now.saturating_sub(at) > snap.heartbeat_timeout_ms
        })
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
        if promote != Promote::Needed || self.left_running {
            self.queue(HookKind::OnDemote, role, epoch, out);
        }
    }

    /// The node is stopping (a signal or a fatal error): stop serving and fence whatever this
    /// node started, since the chain elects another once heartbeats stop. Hooks queued for
    /// anything else are dropped; a running one finishes first.
    pub fn on_shutdown(&mut self, now: Now) -> Actions {
        let mut out = vec![];
        self.hooks.retain(|h| h.kind == HookKind::OnDemote);
        if let Some((run, _)) = self.demote_retry.take() {
            self.hooks.push_back(run);
        }
        self.let_go(now, "the node is stopping", LocalRole::None, &mut out);
        self.start_next_hook(&mut out);
        out.into()
    }

    /// Whether a hook runs or waits to run.
    pub fn hooks_pending(&self) -> bool {
        self.running.is_some() || !self.hooks.is_empty()
    }

    /// A health-check result.
    pub fn on_health(&mut self, health: Health, now: Now) -> Actions {
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
        out.into()
    }

    /// Time passes: the lease may run out; a heartbeat may be due.
    pub fn on_tick(&mut self, now: Now) -> Actions {
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
                .is_some_and(|h| now.mono.duration_since(h.sent.mono) > horizon)
            {
                self.in_flight.pop_front();
            }
        }
        if let Holding::Promoting { .. } = self.holding {
            if let Some(snap) = self.snapshot().cloned() {
                self.elected(&snap, now, &mut out);
            }
        }
        self.retry_demote_if_due(now.mono, &mut out);
        self.try_serve(now, &mut out);
        out.extend(self.heartbeat_if_due(now));
        out.into()
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
        let id = self.next_heartbeat_id;
        self.next_heartbeat_id += 1;
        self.in_flight.push_back(InFlight {
            id,
            sent: now,
            hash: None,
        });
        Some(Action::Heartbeat {
            id,
            health: self.reported_health(now.mono),
            epoch_seen: self.epoch_seen,
        })
    }

    /// Heartbeat `id` was submitted as the extrinsic `hash` (`None`: the pool refused it or
    /// the node could not be reached; it will not be applied). Only an applied extrinsic of
    /// ours renews the lease: another heartbeat signed with the same key (a manual `drchain
    /// tx`, a second agent) tells nothing about when this agent was alive.
    pub fn on_heartbeat_submitted(&mut self, id: u64, hash: Option<H256>) {
        match hash {
            Some(hash) => {
                if let Some(h) = self.in_flight.iter_mut().find(|h| h.id == id) {
                    h.hash = Some(hash);
                }
            }
            None => self.in_flight.retain(|h| h.id != id),
        }
    }
}
