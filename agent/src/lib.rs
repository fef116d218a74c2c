//! The failover agent: runs inside `drchain run --agent-config FILE` and protects the services
//! the file names on this node.
//!
//! Per service it checks the service's health, sends heartbeats, and follows the role state
//! machine ([`machine`]) over the **finalized** chain: it promotes (hook, then
//! `PromotionComplete`) when elected, serves only under its lease, and demotes when it loses
//! the role, the lease or its health. The health endpoints ([`health`]) show what it decided.
//!
//! Where a service's data is replicated, a task per service ([`replica`]) takes checkpoints
//! while this node serves it and applies the chain's latest one while it is a standby.
//!
//! Layout: [`config`] (the file), [`chain`] (what it reads of the chain), [`machine`] (the pure
//! state machine), [`checks`] and [`hooks`] (the I/O it needs), [`lease_file`] (the lease for
//! services that check it), [`replica`] and [`snapshot`] (replication), [`submit`] (its
//! transactions), this module (the loop) and `execute` (carrying out the machines' actions).

mod blocking;
pub mod chain;
pub mod checks;
pub mod config;
mod execute;
pub mod health;
pub mod hooks;
pub mod http;
pub mod lease_file;
pub mod machine;
pub mod metrics;
pub mod process;
pub mod replica;
pub mod snapshot;
pub mod submit;
pub mod watchdog;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use drchain_support::{AccountId, Overlay, StateRead, H256};
use ed25519_dalek::SigningKey;
use tokio::sync::{broadcast, mpsc, watch};

use drchain_consensus::clock::Clock;
use drchain_consensus::store::ChainReader;
use drchain_rpc::NodeApi;

pub use metrics::AgentMetrics;

pub use config::AgentConfig;
use config::ServiceAgentConfig;
use hooks::HookOutcome;
use machine::{Action, Actions, HookRun, MachineConfig, ServiceMachine, ServiceReport};
use replica::{Replica, ReplicaContext, ReplicaInput};
use submit::Submitter;

/// How often the agent looks at the clock (lease expiry, heartbeats due). The health
/// endpoints re-check the lease on every request, so this only bounds how late the hook runs.
const TICK: Duration = Duration::from_millis(10);

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    /// What each service's machine last decided, for the health endpoints.
    pub reports: watch::Receiver<Vec<ServiceReport>>,
    /// Unix ms of the loop's latest turn (for `/liveness`).
    pub alive: Arc<AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
    stop: watch::Sender<bool>,
    /// How long [`Agent::stop`] waits for the `on_demote` hooks.
    stop_bound: Duration,
}

impl Agent {
    /// Stops the agent as its node stops: every service this node started is fenced
    /// (`on_demote`) before this returns, or the wait for the hooks runs out (logged).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            if tokio::time::timeout(self.stop_bound, task).await.is_err() {
                tracing::error!(
                    "the agent did not finish fencing its services within {:?}: a service may \
                     still run as active",
                    self.stop_bound
                );
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// What the agent needs from the node.
#[derive(Debug, Clone)]
pub struct AgentContext {
    /// The member key heartbeats are signed with.
    pub key: SigningKey,
    /// The chain's genesis hash (part of every signature).
    pub genesis: H256,
    /// The node: to submit transactions, follow finalized blocks and read the chain.
    pub node: Arc<dyn NodeApi>,
    /// Where the agent counts what it does.
    pub metrics: AgentMetrics,
    /// Where it reads the time.
    pub clock: Arc<dyn Clock>,
}

/// Starts the agent for the services of `config`.
pub fn start(config: AgentConfig, ctx: AgentContext) -> Agent {
    let me = AccountId::from(&ctx.key);
    let machines = config
        .services
        .iter()
        .map(|s| {
            ServiceMachine::new(MachineConfig {
                service: s.name.clone(),
                me,
                heartbeat_interval: s.heartbeat_interval_ms.map(Duration::from_millis),
                clock_error_ms: config.clock_error_ms,
                failed_promotion_holdoff: Duration::from_millis(s.failed_promotion_holdoff_ms),
            })
        })
        .collect::<Vec<_>>();
    let (reports_tx, reports) = watch::channel(machines.iter().map(|m| m.report()).collect());
    let alive = Arc::new(AtomicU64::new(ctx.clock.now().wall_ms));
    let submitter = Arc::new(Submitter::new(
        ctx.key.clone(),
        ctx.genesis,
        ctx.node.clone(),
    ));
    let replicated = config
        .services
        .iter()
        .filter(|s| s.replication.is_some())
        .count();
    let replica_ctx = ReplicaContext {
        node: ctx.node.clone(),
        submitter: submitter.clone(),
        metrics: ctx.metrics.clone(),
        kept: Arc::new(replica::KeptRoots::new(replicated)),
    };
    let replicas = config
        .services
        .iter()
        .map(|s| {
            s.replication
                .clone()
                .map(|r| replica::start(s.name.clone(), r, replica_ctx.clone()))
        })
        .collect();
    // Outside the event loop: fences a service whose lease ran out while the loop stalled.
    let watchdog = watchdog::LeaseWatchdog::spawn(me, ctx.metrics.clone())
        .map_err(
            |e| tracing::error!(error = %e, "no lease watchdog: a stalled agent is not fenced"),
        )
        .ok();
    // A running hook, then on_demote, each within its timeout.
    let stop_bound = Duration::from_millis(
        2 * config
            .services
            .iter()
            .map(|s| s.hook_timeout_ms)
            .max()
            .unwrap_or(0),
    ) + Duration::from_secs(1);
    let lease_files = config
        .services
        .iter()
        .map(|s| {
            let path = s.lease_file.clone()?;
            lease_file::LeaseFile::open(path.clone())
                .map_err(|e| {
                    tracing::error!(
                        service = %s.name, path = %path.display(), error = %e,
                        "cannot write the lease file: a service that checks it will not serve"
                    )
                })
                .ok()
        })
        .collect();
    let services_count = config.services.len();
    let runner = Runner {
        me,
        watchdog,
        services: config.services,
        machines,
        ctx,
        submitter,
        replicas,
        checkpoints: vec![],
        reports: reports_tx,
        alive: alive.clone(),
        endpoints: vec![],
        applied: vec![],
        lease_files,
        last_hooks: vec![vec![]; services_count],
    };
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(runner.run(stop_rx));
    Agent {
        reports,
        alive,
        task: Some(task),
        stop,
        stop_bound,
    }
}

struct Runner {
    me: AccountId,
    watchdog: Option<watchdog::LeaseWatchdog>,
    services: Vec<ServiceAgentConfig>,
    machines: Vec<ServiceMachine>,
    ctx: AgentContext,
    submitter: Arc<Submitter>,
    /// Per service: its replication task, if its data is replicated.
    replicas: Vec<Option<Replica>>,
    /// Per service: the chain's checkpoints at the latest finalized block.
    checkpoints: Vec<chain::CheckpointView>,
    reports: watch::Sender<Vec<ServiceReport>>,
    alive: Arc<AtomicU64>,
    /// Per service: this node's endpoint on chain, the default target of a TCP check.
    endpoints: Vec<watch::Sender<Option<String>>>,
    /// Extrinsics that succeeded in the finalized blocks received since the last view.
    applied: Vec<H256>,
    /// Per service: its lease file, if configured (and writable).
    lease_files: Vec<Option<lease_file::LeaseFile>>,
    /// Per service: the last run of each hook that ended, oldest first, for the reports.
    last_hooks: Vec<Vec<machine::LastHook>>,
}

/// A hook run that ended: service index, the run, how it ended, how long it took.
type HookDone = (usize, HookRun, HookOutcome, Duration);

impl Runner {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let (health_tx, mut health_rx) = mpsc::channel(64);
        for (i, service) in self.services.iter().enumerate() {
            let (tx, rx) = watch::channel(None);
            self.endpoints.push(tx);
            tokio::spawn(check_loop(
                i,
                service.health_check.clone(),
                rx,
                health_tx.clone(),
            ));
        }
        let (hook_tx, mut hook_rx) = mpsc::channel::<HookDone>(16);
        let mut finalized = self.ctx.node.subscribe_finalized();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(
            services = self.services.len(),
            node = %self.me,
            "failover agent started"
        );
        self.chain_changed(&hook_tx).await;
        loop {
            tokio::select! {
                block = finalized.recv() => match block {
                    Ok(block) => {
                        self.applied.extend(chain::succeeded(&block.extrinsics, &block.events));
                        self.chain_changed(&hook_tx).await;
                    }
                    // Blocks missed: heartbeats they applied renew no lease (shorter: safe).
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.chain_changed(&hook_tx).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = ticker.tick() => {
                    let t = self.ctx.clock.now();
                    self.alive.store(t.wall_ms, Ordering::Relaxed);
                    if let Some(w) = &self.watchdog {
                        w.tick();
                    }
                    for i in 0..self.machines.len() {
                        let actions = self.machines[i].on_tick(t);
                        self.execute(i, actions, &hook_tx).await;
                    }
                }
                Some((i, health)) = health_rx.recv() => {
                    let actions = self.machines[i].on_health(health, self.ctx.clock.now());
                    self.execute(i, actions, &hook_tx).await;
                }
                Some((i, run, outcome, took)) = hook_rx.recv() => {
                    self.hook_finished(i, &run, &outcome, took);
                    let actions = self.machines[i].on_hook_finished(&run, outcome.ok(), self.ctx.clock.now());
                    self.execute(i, actions, &hook_tx).await;
                }
                _ = stop.changed() => break,
            }
            self.publish();
        }
        self.fence_before_exit(&hook_tx, &mut hook_rx).await;
        tracing::info!("failover agent stopped: the node stopped");
    }

    /// The node stops: each machine lets go and runs `on_demote` for what it started; waits
    /// for the hooks (each has its timeout). Nothing is sent to the chain any more.
    async fn fence_before_exit(
        &mut self,
        hook_tx: &mpsc::Sender<HookDone>,
        hook_rx: &mut mpsc::Receiver<HookDone>,
    ) {
        let for_exit = |actions: Actions| -> Actions {
            actions
                .into_vec()
                .into_iter()
                .filter(|a| {
                    !matches!(
                        a,
                        Action::Heartbeat { .. } | Action::CompletePromotion { .. }
                    )
                })
                .collect::<Vec<_>>()
                .into()
        };
        for i in 0..self.machines.len() {
            let actions = for_exit(self.machines[i].on_shutdown(self.ctx.clock.now()));
            self.execute(i, actions, hook_tx).await;
        }
        while self.machines.iter().any(ServiceMachine::hooks_pending) {
            let Some((i, run, outcome, took)) = hook_rx.recv().await else {
                break;
            };
            self.hook_finished(i, &run, &outcome, took);
            let actions =
                self.machines[i].on_hook_finished(&run, outcome.ok(), self.ctx.clock.now());
            self.execute(i, for_exit(actions), hook_tx).await;
        }
        self.publish();
    }

    /// Reads the finalized state and feeds it to every machine.
    async fn chain_changed(&mut self, hooks: &mpsc::Sender<HookDone>) {
        let (views, checkpoints): (Vec<_>, Vec<_>) = {
            let snapshot = self.ctx.node.snapshot();
            let reader = ChainReader::new(&*snapshot);
            let number = match reader.finalized_number() {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "agent cannot read the chain");
                    return;
                }
            };
            let state = reader.state();
            let overlay = Overlay::new(&state as &dyn StateRead);
            self.services
                .iter()
                .map(|s| {
                    // Only a replicated service's task needs its checkpoints.
                    let checkpoints = s.replication.as_ref().map(|r| {
                        let keep = r.keep_checkpoints as usize;
                        chain::read_checkpoints(&overlay, &s.name, &self.me, keep)
                    });
                    (
                        chain::read(&overlay, number, &s.name, &self.me),
                        checkpoints.unwrap_or_default(),
                    )
                })
                .unzip()
        };
        self.checkpoints = checkpoints;
        let applied = std::mem::take(&mut self.applied);
        let caught_up = self.ctx.node.status().caught_up;
        let t = self.ctx.clock.now();
        for (i, mut view) in views.into_iter().enumerate() {
            view.applied.clone_from(&applied);
            view.caught_up = caught_up;
            let endpoint = view.service.as_ref().and_then(|s| s.my_endpoint.clone());
            if let Some(tx) = self.endpoints.get(i) {
                tx.send_if_modified(|e| {
                    let changed = *e != endpoint;
                    *e = endpoint;
                    changed
                });
            }
            let actions = self.machines[i].on_block(view, t);
            self.execute(i, actions, hooks).await;
        }
        self.publish();
    }

    /// Tells the health endpoints and the replication tasks what the machines decided.
    fn publish(&self) {
        let reports: Vec<ServiceReport> = self
            .machines
            .iter()
            .zip(&self.last_hooks)
            .map(|(m, last)| {
                let mut report = m.report();
                report.last_hooks = last.clone();
                report
            })
            .collect();
        let now = self.ctx.clock.now().mono;
        for (report, config) in reports.iter().zip(&self.services) {
            let left = report
                .lease_end()
                .filter(|_| report.serving)
                .map_or(Duration::ZERO, |end| end.saturating_duration_since(now));
            self.ctx.metrics.set_lease_remaining(&config.name, left);
        }
        for ((report, replica), chain) in reports.iter().zip(&self.replicas).zip(&self.checkpoints)
        {
            if let Some(replica) = replica {
                // Called on every tick: compare before cloning anything.
                replica.input.send_if_modified(|old| {
                    let same = old.as_ref().is_some_and(|o| {
                        o.role == report.role
                            && o.serving == report.serving
                            && o.epoch == report.epoch
                            && o.chain == *chain
                    });
                    if !same {
                        *old = Some(ReplicaInput {
                            role: report.role,
                            serving: report.serving,
                            epoch: report.epoch,
                            chain: chain.clone(),
                        });
                    }
                    !same
                });
            }
        }
        if let Some(w) = &self.watchdog {
            for (i, (report, config)) in reports.iter().zip(&self.services).enumerate() {
                let guard = report
                    .lease_end()
                    .filter(|_| report.serving)
                    .map(|lease_end| watchdog::Guard {
                        service: config.name.clone(),
                        lease_end,
                        epoch: report.epoch,
                        on_demote: config.on_demote.clone(),
                        hook_timeout: Duration::from_millis(config.hook_timeout_ms),
                    });
                w.set(i, guard);
            }
        }
        self.reports.send_replace(reports);
    }

    /// The checkpoint service `i`'s data is at on this node: the replica's target, or the
    /// file the operator's own tooling writes.
    fn applied(&self, i: usize) -> Option<u64> {
        match &self.replicas[i] {
            Some(replica) => replica.applied.borrow().as_ref().map(|a| a.sequence),
            None => self.services[i]
                .applied_checkpoint_file
                .as_deref()
                .and_then(read_checkpoint),
        }
    }

    fn hook_finished(&mut self, i: usize, run: &HookRun, outcome: &HookOutcome, took: Duration) {
        let last = &mut self.last_hooks[i];
        last.retain(|h| h.hook != run.kind);
        last.push(machine::LastHook {
            hook: run.kind,
            outcome: outcome.label(),
            epoch: run.epoch,
            finished_at_ms: self.ctx.clock.now().wall_ms,
            took_ms: took.as_millis() as u64,
        });
        let service = &self.services[i].name;
        self.ctx
            .metrics
            .hook_ran(service, run.kind.as_str(), outcome.label());
        if run.kind == machine::HookKind::OnDemote && outcome.ok() {
            self.ctx.metrics.set_demote_failing(service, 0);
        }
        match outcome {
            HookOutcome::Succeeded => tracing::info!(
                "hook {} succeeded service={service} role={} epoch={}",
                run.kind.as_str(),
                run.role.as_str(),
                run.epoch
            ),
            HookOutcome::Failed { detail, .. } | HookOutcome::NotStarted { detail } => {
                tracing::error!(
                    "hook {} failed service={service} role={} epoch={}: {detail}",
                    run.kind.as_str(),
                    run.role.as_str(),
                    run.epoch
                )
            }
            HookOutcome::TimedOut => tracing::error!(
                "hook {} timed out after {} ms and was killed service={service} epoch={}",
                run.kind.as_str(),
                self.services[i].hook_timeout_ms,
                run.epoch
            ),
        }
    }
}

/// The applied-checkpoint file's number; absent, empty or unreadable: none.
fn read_checkpoint(path: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    match text.trim() {
        "" => None,
        t => match t.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                tracing::warn!(path = %path.display(), "applied checkpoint file does not hold a number");
                None
            }
        },
    }
}

/// Checks one service's health at its interval, forever, reporting debounced results.
async fn check_loop(
    i: usize,
    config: config::HealthCheckConfig,
    endpoint: watch::Receiver<Option<String>>,
    results: mpsc::Sender<(usize, drchain_support::Health)>,
) {
    let mut debounce = checks::Debounce::new(config.failures);
    let mut ticker = tokio::time::interval(Duration::from_millis(config.interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let default = endpoint.borrow().clone();
        let health = debounce.feed(checks::check_once(&config, default.as_deref()).await);
        if results.send((i, health)).await.is_err() {
            return;
        }
    }
}
