//! The failover agent in the simulation: the real role state machine (drchain-agent's
//! `ServiceMachine`) on each candidate of demo-db (alice, bob, charlie), fed by its node's
//! finalized blocks through the agent's own `chain::read` (as an event after the node handled
//! the block: the real agent runs in its own task), a 10 ms tick and hooks that take
//! 1–30 ms and fail one time in twenty; its heartbeats and `PromotionComplete`s enter its
//! node's pool with the pool's next nonce, as the real agent's do. A crash takes the agent
//! down with its node; it restarts as a fresh machine. The check, at every start of serving:
//! no other agent serves at that virtual instant, serving as the machine has it (from its
//! `StartedServing` until its `StoppedServing`, which its tick reports at most 10 ms after the
//! lease ends): what runs the hooks, not the lease the endpoints re-check.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use drchain_agent::chain;
use drchain_agent::machine::{Action, HookKind, HookRun, MachineConfig, Now, ServiceMachine};
use drchain_agent::submit::{completion_call, heartbeat_call};
use drchain_runtime::dev::{dev_account, dev_key};
use drchain_runtime::support::{Overlay, ServiceName, H256};
use drchain_runtime::{system, RuntimeCall, UncheckedExtrinsic};
use rand::Rng;

use super::{Event, Simulation, VALIDATORS};

/// The service the agents protect (the local spec's).
const SERVICE: &str = "demo-db";
/// Nodes `0..CANDIDATES` run an agent.
const CANDIDATES: usize = 3;
/// How often an agent looks at its clock (the real agent's tick).
const TICK_MS: u64 = 10;

/// One node's agent.
pub(super) struct SimAgent {
    machine: ServiceMachine,
}

/// A start of serving: who, which epoch, when (virtual ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serving {
    pub node: usize,
    pub epoch: u64,
    pub at: u64,
}

fn service() -> ServiceName {
    ServiceName::new(SERVICE).expect("a valid service name")
}

impl Simulation {
    /// The agent's clocks on `node`: monotonic is virtual time (same rate everywhere), wall is
    /// the node's skewed clock.
    fn agent_now(&self, node: usize) -> Now {
        Now {
            mono: self.origin + Duration::from_millis(self.now),
            wall_ms: self.local_time(node),
        }
    }

    /// `node` (re)started: with agents on and a candidate, a fresh agent starts ticking.
    pub(super) fn start_agent(&mut self, node: usize) {
        if !self.faults.agents || node >= CANDIDATES {
            return;
        }
        let machine = ServiceMachine::new(MachineConfig {
            service: service(),
            me: dev_account(VALIDATORS[node]),
            heartbeat_interval: None,
            clock_error_ms: 25,
            failed_promotion_holdoff: Duration::from_millis(1000),
        });
        self.nodes[node].agent = Some(SimAgent { machine });
        self.schedule(self.now + TICK_MS, Event::AgentTick { node });
    }

    pub(super) fn agent_tick(&mut self, node: usize) {
        let now = self.agent_now(node);
        let Some(agent) = self.nodes[node].agent.as_mut() else {
            return;
        };
        let actions = agent.machine.on_tick(now).into_vec();
        self.schedule(self.now + TICK_MS, Event::AgentTick { node });
        self.agent_actions(node, actions);
        if self.someone_serves() {
            self.last_served_at = Some(self.now);
        }
    }

    /// `node` finalized block `number`, in which `applied` succeeded: its agent reads the
    /// chain.
    pub(super) fn agent_block(&mut self, node: usize, number: u64, applied: Vec<H256>) {
        let now = self.agent_now(node);
        let n = &mut self.nodes[node];
        let (Some(agent), Some(d)) = (n.agent.as_mut(), n.driver.as_ref()) else {
            return;
        };
        let state = d.store().state();
        let mut view = chain::read(
            &Overlay::new(&state),
            number,
            &service(),
            &dev_account(VALIDATORS[node]),
        );
        view.applied = applied;
        // As the real node reports it: a block decided through consensus since the restart.
        view.caught_up = d.stats().decided > 0;
        let actions = agent.machine.on_block(view, now).into_vec();
        self.agent_actions(node, actions);
    }

    pub(super) fn hook_done(&mut self, node: usize, run: &HookRun, ok: bool) {
        let now = self.agent_now(node);
        let Some(agent) = self.nodes[node].agent.as_mut() else {
            return;
        };
        let actions = agent.machine.on_hook_finished(run, ok, now).into_vec();
        self.agent_actions(node, actions);
    }

    fn agent_actions(&mut self, node: usize, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            if self.print_events && !matches!(action, Action::Heartbeat { .. }) {
                eprintln!("{:>6} ms node {node} agent: {action:?}", self.now);
            }
            match action {
                Action::Heartbeat {
                    id,
                    health,
                    epoch_seen,
                } => {
                    let call = heartbeat_call(service(), epoch_seen, health, None);
                    let hash = self.agent_submit(node, call);
                    if let Some(agent) = self.nodes[node].agent.as_mut() {
                        agent.machine.on_heartbeat_submitted(id, hash);
                    }
                }
                Action::CompletePromotion { epoch } => {
                    self.agent_submit(node, completion_call(service(), epoch));
                }
                Action::RunHook(run) => {
                    let after = self.rng.gen_range(1..=30);
                    let ok = run.kind == HookKind::OnRoleChange || !self.rng.gen_bool(0.05);
                    self.schedule(self.now + after, Event::HookDone { node, run, ok });
                }
                Action::StartedServing { epoch, .. } => self.started_serving(node, epoch),
                _ => {}
            }
        }
    }

    /// Signs `call` with `node`'s key at its pool's next nonce and submits it there (and
    /// gossips it); its hash if the pool took it.
    fn agent_submit(&mut self, node: usize, call: RuntimeCall) -> Option<H256> {
        let now = self.local_time(node);
        let n = &self.nodes[node];
        let d = n.driver.as_ref()?;
        let account = dev_account(VALIDATORS[node]);
        let next = system::nonce(&Overlay::new(&d.store().state()), &account);
        let nonce = n.pool.next_nonce(&account, next);
        let tx = UncheckedExtrinsic::sign(
            &dev_key(VALIDATORS[node]),
            &self.genesis.hash(),
            nonce,
            call,
        );
        let hash = tx.hash();
        let outputs = self
            .pool_submit(node, now, tx.clone())
            .unwrap_or_else(|e| panic!("seed {}: node {node} driver failed: {e}", self.seed))?;
        for to in (0..self.nodes.len()).filter(|p| *p != node) {
            let tx = Box::new(tx.clone());
            self.send(node, to, Event::DeliverTx { to, tx });
        }
        self.execute(node, outputs);
        Some(hash)
    }

    /// `node` started serving `epoch`: nobody else may be serving now.
    fn started_serving(&mut self, node: usize, epoch: u64) {
        let mono = self.origin + Duration::from_millis(self.now);
        for (other, n) in self.nodes.iter().enumerate() {
            let Some(agent) = n.agent.as_ref().filter(|_| other != node) else {
                continue;
            };
            let report = agent.machine.report();
            assert!(
                !report.serving,
                "seed {}: TWO ACTIVE at {} ms: node {node} started serving epoch {epoch} while \
                 node {other} serves epoch {} (lease left {} ms)",
                self.seed,
                self.now,
                report.epoch,
                report.clone().at(mono).lease_left_ms
            );
        }
        self.servings.push(Serving {
            node,
            epoch,
            at: self.now,
        });
    }

    /// Whether some agent serves now.
    pub(super) fn someone_serves(&self) -> bool {
        let mono: Instant = self.origin + Duration::from_millis(self.now);
        self.nodes
            .iter()
            .filter_map(|n| n.agent.as_ref())
            .any(|a| a.machine.report().serving_at(mono))
    }
}
