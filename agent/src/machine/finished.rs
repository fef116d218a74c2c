//! A finished hook: what its success or failure means for the promotion, the service and
//! the epoch this node acknowledges.

use std::time::Duration;

use super::{
    Action, Actions, Holding, HookKind, HookRun, LocalRole, Now, Promote, ServiceMachine, Stage,
};

/// A failed `on_demote` runs again after this, doubling per failure in a row...
const DEMOTE_RETRY: Duration = Duration::from_millis(1000);
/// ...up to this.
const DEMOTE_RETRY_MAX: Duration = Duration::from_secs(30);

impl ServiceMachine {
    /// A hook finished (`ok`: exited 0 in time).
    pub fn on_hook_finished(&mut self, run: &HookRun, ok: bool, now: Now) -> Actions {
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
                    // Cannot serve now: reported failed for the hold-off so the chain may
                    // replace this node, then tried again (a lasting `Failed` health would
                    // keep it out for good when every candidate failed once).
                    self.failed_until = Some(now.mono + self.cfg.failed_promotion_holdoff);
                    self.holding = Holding::Active {
                        epoch,
                        promote: Promote::Needed,
                    };
                    self.set_role(LocalRole::Failed, &mut out);
                    out.extend(self.heartbeat(now));
                }
            }
            (HookKind::OnDemote, _) if !ok => {
                // The old service may still run: keep the epoch unacknowledged, so the
                // successor waits for this node's lease bound, and try again.
                self.demote_failures = self.demote_failures.saturating_add(1);
                let delay = DEMOTE_RETRY
                    .saturating_mul(1 << (self.demote_failures - 1).min(5))
                    .min(DEMOTE_RETRY_MAX);
                self.demote_retry = Some((run.clone(), now.mono + delay));
                out.push(Action::DemoteFailed {
                    epoch: run.epoch,
                    failures: self.demote_failures,
                    retry_in_ms: delay.as_millis() as u64,
                });
            }
            (HookKind::OnDemote, _) => {
                self.demote_failures = 0;
                if !self.demote_pending() {
                    self.epoch_seen = self.chain_epoch;
                }
            }
            _ => {}
        }
        self.start_next_hook(&mut out);
        self.try_serve(now, &mut out);
        out.into()
    }
}
