//! The lease watchdog: an OS thread of its own, outside the agent's event loop, that fences a
//! service whose lease ran out while that loop was stalled. The loop stops serving at the
//! lease end itself; but a loop that is blocked or starved (a runtime thread stuck in a
//! syscall, a CPU-starved process) would leave the service running past the lease while the
//! chain elects a successor. The health endpoints already re-check the lease on every request,
//! so routing stops on time; this thread also stops the service itself, by running its
//! `on_demote` hook (role `fenced`), when the lease has ended and the loop has not ticked
//! for [`STALL`].
//!
//! Patroni pairs the same idea with the Linux watchdog device, which also covers a process
//! that is stopped whole (SIGSTOP stops this thread too); that is not provided here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use drchain_support::{AccountId, Epoch, ServiceName};

use crate::hooks::run_hook;
use crate::machine::{HookKind, HookRun, LocalRole};
use crate::metrics::AgentMetrics;

/// How long past the lease end, without a tick of the loop, before the watchdog fences: the
/// loop ticks every few ms and fences at the lease end when it runs.
pub const STALL: Duration = Duration::from_millis(250);
/// How often the watchdog looks.
const POLL: Duration = Duration::from_millis(25);

/// What fencing one service takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub service: ServiceName,
    /// When its lease ends.
    pub lease_end: Instant,
    /// The epoch it serves.
    pub epoch: Epoch,
    /// Its `on_demote` hook; without one, fencing is only logged.
    pub on_demote: Option<String>,
    pub hook_timeout: Duration,
}

#[derive(Debug)]
struct State {
    last_tick: Instant,
    /// By service index, while serving.
    guards: HashMap<usize, Guard>,
}

/// The loop's handle on the watchdog thread (which runs as long as a handle exists).
#[derive(Debug, Clone)]
pub struct LeaseWatchdog {
    state: Arc<Mutex<State>>,
}

impl LeaseWatchdog {
    /// Starts the thread; `node` and `metrics` are for the hook's environment and counts.
    pub fn spawn(node: AccountId, metrics: AgentMetrics) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State {
            last_tick: Instant::now(),
            guards: HashMap::new(),
        }));
        // The thread ends once the agent dropped every handle.
        let watched = Arc::downgrade(&state);
        std::thread::Builder::new()
            .name("lease-watchdog".into())
            .spawn(move || watch(&watched, node, &metrics))?;
        Ok(Self { state })
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The loop is alive: called on every tick.
    pub fn tick(&self) {
        self.with(|s| s.last_tick = Instant::now());
    }

    /// Service `index` serves under `guard`'s lease (`None`: it does not serve).
    pub fn set(&self, index: usize, guard: Option<Guard>) {
        self.with(|s| match guard {
            Some(g) => {
                s.guards.insert(index, g);
            }
            None => {
                s.guards.remove(&index);
            }
        });
    }
}

fn watch(state: &Weak<Mutex<State>>, node: AccountId, metrics: &AgentMetrics) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the lease watchdog cannot start: no fencing of a stalled agent");
            return;
        }
    };
    loop {
        std::thread::sleep(POLL);
        let Some(state) = state.upgrade() else {
            return;
        };
        let due: Vec<Guard> = {
            let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if now.saturating_duration_since(s.last_tick) < STALL {
                continue;
            }
            let due: Vec<usize> = s
                .guards
                .iter()
                .filter(|(_, g)| now >= g.lease_end + STALL)
                .map(|(i, _)| *i)
                .collect();
            due.iter().filter_map(|i| s.guards.remove(i)).collect()
        };
        for guard in due {
            fence(&runtime, &guard, &node, metrics);
        }
    }
}

fn fence(
    runtime: &tokio::runtime::Runtime,
    guard: &Guard,
    node: &AccountId,
    metrics: &AgentMetrics,
) {
    let service = &guard.service;
    tracing::error!(
        "agent stalled past the lease of service={service} epoch={}: the watchdog fences it",
        guard.epoch
    );
    let Some(command) = &guard.on_demote else {
        metrics.hook_ran(service, "watchdog_on_demote", "not_configured");
        return;
    };
    let run = HookRun {
        kind: HookKind::OnDemote,
        role: LocalRole::Fenced,
        epoch: guard.epoch,
        checkpoint: None,
    };
    let outcome = runtime.block_on(run_hook(
        command,
        service,
        node,
        &run,
        None,
        false,
        guard.hook_timeout,
    ));
    metrics.hook_ran(service, "watchdog_on_demote", outcome.label());
    if outcome.ok() {
        tracing::warn!(
            "watchdog on_demote succeeded service={service} epoch={}",
            guard.epoch
        );
    } else {
        tracing::error!(
            "watchdog on_demote {outcome} service={service} epoch={}",
            guard.epoch
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(lease_ms: u64, out: &std::path::Path) -> Guard {
        Guard {
            service: ServiceName::new("db").unwrap(),
            lease_end: Instant::now() + Duration::from_millis(lease_ms),
            epoch: 7,
            on_demote: Some(format!("echo \"$1 $2 $3 $4\" >> {}", out.display())),
            hook_timeout: Duration::from_secs(5),
        }
    }

    fn ran(out: &std::path::Path) -> String {
        std::fs::read_to_string(out).unwrap_or_default()
    }

    /// The loop stops ticking while serving: at the lease end (and the stall margin) the
    /// watchdog runs `on_demote` itself, once.
    #[test]
    fn a_stalled_loop_past_its_lease_gets_its_service_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("demoted");
        let w = LeaseWatchdog::spawn(AccountId([1; 32]), AgentMetrics::default()).unwrap();
        w.tick();
        w.set(0, Some(guard(100, &out)));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            ran(&out),
            "",
            "fenced before the lease ended and the stall margin"
        );
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(ran(&out), "on_demote db fenced 7\n");
    }

    /// A loop that ticks handles its lease itself; a service no longer serving is not fenced.
    #[test]
    fn a_live_loop_or_a_service_not_serving_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("demoted");
        let w = LeaseWatchdog::spawn(AccountId([1; 32]), AgentMetrics::default()).unwrap();
        w.set(0, Some(guard(50, &out)));
        let until = Instant::now() + Duration::from_millis(800);
        while Instant::now() < until {
            w.tick();
            std::thread::sleep(Duration::from_millis(10));
        }
        w.set(0, None);
        w.set(1, Some(guard(50, &out)));
        w.set(1, None);
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(ran(&out), "");
    }
}
