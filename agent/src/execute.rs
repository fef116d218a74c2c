//! Carrying out what the machines decided: heartbeats and promotions to the chain, hooks,
//! the serving state in logs, metrics and the lease file.

use std::collections::VecDeque;
use std::time::Duration;

use drchain_support::Epoch;
use tokio::sync::mpsc;

use crate::machine::{self, Action, Actions};
use crate::submit::{completion_call, heartbeat_call};
use crate::{hooks, HookDone, Runner};

impl Runner {
    /// Brings service `i`'s lease file (if it has one) up to date: the lease `epoch` is served
    /// under, or none.
    pub(crate) fn record_lease(&mut self, i: usize, epoch: Epoch, serving: bool) {
        let end = serving
            .then(|| self.machines[i].report().lease_end())
            .flatten();
        if let Some(file) = self.lease_files[i].as_mut() {
            if let Err(e) = file.set(epoch, end) {
                let service = &self.services[i].name;
                tracing::error!(%service, error = %e, "cannot write the lease file");
            }
        }
    }

    pub(crate) async fn execute(
        &mut self,
        i: usize,
        actions: Actions,
        hooks: &mpsc::Sender<HookDone>,
    ) {
        let mut queue: VecDeque<Action> = actions.into_vec().into();
        while let Some(action) = queue.pop_front() {
            let service = self.services[i].name.clone();
            match action {
                Action::Heartbeat {
                    id,
                    health,
                    epoch_seen,
                } => {
                    let call = heartbeat_call(service, epoch_seen, health, self.applied(i));
                    let hash = self.submitter.submit_for_hash(call, "heartbeat").await;
                    self.machines[i].on_heartbeat_submitted(id, hash);
                }
                Action::CompletePromotion { epoch } => {
                    tracing::info!(
                        "promotion complete service={service} epoch={epoch}: telling the chain"
                    );
                    let call = completion_call(service, epoch);
                    self.submitter.submit(call, "promotion completion").await;
                }
                Action::RunHook(run) => {
                    let config = &self.services[i];
                    let command = match run.kind {
                        machine::HookKind::OnPromote => config.on_promote.clone(),
                        machine::HookKind::OnDemote => config.on_demote.clone(),
                        machine::HookKind::OnRoleChange => config.on_role_change.clone(),
                    };
                    match command {
                        Some(command) => {
                            let timeout = Duration::from_millis(config.hook_timeout_ms);
                            let hooks = hooks.clone();
                            let me = self.me;
                            // A replicated service starts from the checkpoint its target shows,
                            // or keeps its own data where that is newer than any checkpoint.
                            let applied = self.replicas[i]
                                .as_ref()
                                .and_then(|r| r.applied.borrow().clone());
                            let keep_data = self.replicas[i].is_some()
                                && self.checkpoints.get(i).is_some_and(|c| c.latest_is_own);
                            let metrics = self.ctx.metrics.clone();
                            tokio::spawn(async move {
                                let started = std::time::Instant::now();
                                let outcome = hooks::run_hook(
                                    &command,
                                    &service,
                                    &me,
                                    &run,
                                    applied.as_ref(),
                                    keep_data,
                                    timeout,
                                )
                                .await;
                                let took = started.elapsed();
                                metrics.hook_took(&service, run.kind.as_str(), took);
                                let _ = hooks.send((i, run, outcome, took)).await;
                            });
                        }
                        // No hook configured: it trivially succeeded.
                        None => queue.extend(self.machines[i].on_hook_finished(
                            &run,
                            true,
                            self.ctx.clock.now(),
                        )),
                    }
                }
                Action::StartedServing {
                    epoch,
                    lease_end_ms,
                } => {
                    tracing::info!(
                        "serving service={service} epoch={epoch} since_ms={} lease_end_ms={lease_end_ms}",
                        self.ctx.clock.now().wall_ms
                    );
                    self.ctx.metrics.set_serving(&service, true);
                    self.record_lease(i, epoch, true);
                }
                Action::StoppedServing {
                    epoch,
                    until_ms,
                    reason,
                } => {
                    self.record_lease(i, epoch, false);
                    tracing::warn!(
                        "stopped serving service={service} epoch={epoch} until_ms={until_ms} reason={reason:?}"
                    );
                    self.ctx.metrics.set_serving(&service, false);
                }
                Action::LeaseRenewed {
                    epoch,
                    lease_end_ms,
                } => {
                    self.record_lease(i, epoch, true);
                    tracing::debug!(
                        "lease service={service} epoch={epoch} lease_end_ms={lease_end_ms}"
                    )
                }
                Action::DemoteFailed {
                    epoch,
                    failures,
                    retry_in_ms,
                } => {
                    self.ctx.metrics.set_demote_failing(&service, failures);
                    tracing::error!(
                        "on_demote failed {failures} time(s) in a row service={service} epoch={epoch}: \
                         the old service may still run; this node does not serve, does not \
                         acknowledge the new epoch (the successor waits for the lease bound) and \
                         tries again in {retry_in_ms} ms"
                    )
                }
                Action::RoleChanged { from, to, epoch } => tracing::info!(
                    "role service={service} from={} to={} epoch={epoch}",
                    from.as_str(),
                    to.as_str()
                ),
            }
        }
    }
}
