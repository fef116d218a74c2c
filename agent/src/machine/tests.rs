use super::*;
use drchain_runtime::pallet_service_status::Status;
use drchain_support::{AccountId, H256};

const ME: AccountId = AccountId([1; 32]);
const OTHER: AccountId = AccountId([2; 32]);

struct Harness {
    m: ServiceMachine,
    t0: Instant,
    block: u64,
    heartbeats: u64,
    /// Our heartbeats submitted and not yet applied, oldest first.
    submitted: VecDeque<H256>,
    /// What the next blocks say of the nodes that hold or held the service (other than us),
    /// each with its latest heartbeat's block.
    may_hold: Vec<(AccountId, u64)>,
    /// The block of the service's last phase change, as the next blocks say.
    since_block: u64,
    /// Whether the node has caught up with the chain, as the next blocks say.
    caught_up: bool,
}

/// The extrinsic hash the harness gives heartbeat `id`.
fn extrinsic(id: u64) -> H256 {
    let mut bytes = [0; 32];
    bytes[..8].copy_from_slice(&id.to_le_bytes());
    H256(bytes)
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
            submitted: VecDeque::new(),
            may_hold: vec![],
            since_block: 0,
            caught_up: true,
        }
    }

    /// Submits every heartbeat in `actions`, as the host does.
    fn submit(&mut self, actions: Vec<Action>) -> Vec<Action> {
        for a in &actions {
            if let Action::Heartbeat { id, .. } = a {
                self.m.on_heartbeat_submitted(*id, Some(extrinsic(*id)));
                self.submitted.push_back(extrinsic(*id));
            }
        }
        actions
    }

    /// A block at `ms` with the service in `phase` at `epoch`; the oldest `applied` of our
    /// submitted heartbeats were included in it.
    fn block(
        &mut self,
        ms: u64,
        epoch: Epoch,
        phase: Phase,
        applied: u64,
        others: Vec<AccountId>,
    ) -> Vec<Action> {
        let included = (0..applied)
            .filter_map(|_| self.submitted.pop_front())
            .collect();
        self.block_with(ms, epoch, phase, included, others)
    }

    fn block_with(
        &mut self,
        ms: u64,
        epoch: Epoch,
        phase: Phase,
        included: Vec<H256>,
        others: Vec<AccountId>,
    ) -> Vec<Action> {
        self.block += 1;
        self.heartbeats += included.len() as u64;
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
                may_hold: self.may_hold.clone(),
                since_block: self.since_block,
            }),
            applied: included,
            caught_up: self.caught_up,
        };
        let actions = self.m.on_block(view, at(self.t0, ms)).into_vec();
        self.submit(actions)
    }

    /// A block at `ms` (service active on us at epoch 1) that applied a heartbeat signed with
    /// our key that this machine did not send.
    fn foreign_heartbeat(&mut self, ms: u64) -> Vec<Action> {
        let theirs = H256([9; 32]);
        self.block_with(ms, 1, Phase::Active { node: ME }, vec![theirs], vec![])
    }

    fn tick(&mut self, ms: u64) -> Vec<Action> {
        let actions = self.m.on_tick(at(self.t0, ms)).into_vec();
        self.submit(actions)
    }

    fn finish(&mut self, ms: u64, kind: HookKind, ok: bool) -> Vec<Action> {
        let run = self.m.running.clone().expect("a hook runs");
        assert_eq!(run.kind, kind, "running {run:?}");
        let actions = self
            .m
            .on_hook_finished(&run, ok, at(self.t0, ms))
            .into_vec();
        self.submit(actions)
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
        Action::Heartbeat {
            health, epoch_seen, ..
        } => Some((*health, *epoch_seen)),
        _ => None,
    })
}

/// What the machine says when the lease it served epoch 1 under ended at `until_ms`.
fn lease_expired(until_ms: u64) -> Action {
    Action::StoppedServing {
        epoch: 1,
        until_ms,
        reason: "lease expired",
    }
}

/// Elected at epoch 1, promoted, active and serving at about 60 ms.
fn serving() -> Harness {
    let mut h = Harness::new();
    // First view: a heartbeat goes out at once (the chain has none of ours yet).
    let a = h.block(0, 0, Phase::Vacant, 0, vec![]);
    assert_eq!(heartbeat(&a), Some((Health::Healthy, 0)));
    // A fresh agent first fences what its previous life may have left running; the first
    // role it learns is told to on_role_change too.
    assert_eq!(hooks(&a), vec![HookKind::OnDemote]);
    h.finish(2, HookKind::OnDemote, true);
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
    assert!(a.contains(&lease_expired(1_001_000)), "{a:?}");
    assert_eq!(hooks(&a), vec![HookKind::OnRoleChange]);
    assert_eq!(h.m.report().role, LocalRole::Fenced);
    let a = h.finish(1020, HookKind::OnRoleChange, true);
    assert_eq!(hooks(&a), vec![HookKind::OnDemote]);
    assert_eq!(h.m.running.as_ref().unwrap().role, LocalRole::Fenced);
}

/// The lease lapsed (a stalled chain), the node fenced, then its heartbeats land again and it
/// runs `on_promote` to serve again — which fails once. It reports itself failed for the
/// hold-off, so the chain may pick another, and then tries again: with nobody else to take
/// over it serves again. Found by the simulation (seed 12641): the failure marked the node's
/// health failed for good, and with every candidate hit once nobody served again.
#[test]
fn a_failed_on_promote_after_a_lapse_holds_off_then_tries_again() {
    let mut h = serving();
    let a = h.tick(1010);
    assert!(a.contains(&lease_expired(1_000_750)), "{a:?}");
    h.finish(1020, HookKind::OnRoleChange, true);
    h.finish(1030, HookKind::OnDemote, true);
    // Heartbeats land again: the lease is back and on_promote runs.
    let sent: Vec<Action> = [1100, 1260].into_iter().flat_map(|ms| h.tick(ms)).collect();
    assert!(heartbeat(&sent).is_some(), "{sent:?}");
    let a = h.block(1270, 1, Phase::Active { node: ME }, 99, vec![]);
    let a: Vec<Action> = a.into_iter().chain(h.tick(1280)).collect();
    assert_eq!(
        h.m.running.as_ref().map(|r| r.kind),
        Some(HookKind::OnPromote),
        "{a:?}"
    );
    let a = h.finish(1130, HookKind::OnPromote, false);
    assert_eq!(
        heartbeat(&a).map(|(health, _)| health),
        Some(Health::Failed),
        "{a:?}"
    );
    h.finish(1140, HookKind::OnRoleChange, true);
    // During the hold-off: no new attempt, and heartbeats say failed.
    let a = h.tick(1600);
    assert!(!hooks(&a).contains(&HookKind::OnPromote), "{a:?}");
    h.block(1610, 1, Phase::Active { node: ME }, 99, vec![]);
    // After it, still the chain's active with a lease: it tries again and serves.
    let mut tried = vec![];
    for ms in (2300..2700).step_by(50) {
        let a = h.tick(ms);
        h.block(ms + 5, 1, Phase::Active { node: ME }, 99, vec![]);
        tried.extend(a);
        if h.m
            .running
            .as_ref()
            .is_some_and(|r| r.kind == HookKind::OnPromote)
        {
            break;
        }
    }
    assert_eq!(
        h.m.running.as_ref().map(|r| r.kind),
        Some(HookKind::OnPromote),
        "{tried:?}"
    );
    let a = h.finish(2700, HookKind::OnPromote, true);
    assert!(
        a.iter().any(|x| matches!(x, Action::StartedServing { .. })),
        "{a:?}"
    );
}

#[test]
fn another_heartbeat_signed_with_the_same_key_does_not_renew_the_lease() {
    let mut h = serving();
    // Our heartbeat sent at 250 is not applied; one signed elsewhere with our key (a manual
    // `drchain tx`, a second agent) is.
    assert!(heartbeat(&h.tick(250)).is_some());
    h.foreign_heartbeat(260);
    let a = h.tick(760);
    assert!(a.contains(&lease_expired(1_000_750)), "{a:?}");
}

#[test]
fn a_hung_node_that_resumes_late_reports_its_lease_end_not_the_resume_time() {
    let mut h = serving();
    let a = h.tick(5000);
    assert!(a.contains(&lease_expired(1_000_750)), "{a:?}");
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
    let a = h.finish(330, HookKind::OnDemote, true);
    assert_eq!(hooks(&a), vec![HookKind::OnRoleChange]);
    let a = h.tick(600);
    assert_eq!(heartbeat(&a), Some((Health::Healthy, 2)));
}

#[test]
fn a_failed_on_demote_leaves_the_epoch_unacknowledged_and_is_retried_until_it_succeeds() {
    let mut h = serving();
    let promoting_other = Phase::Promoting {
        node: OTHER,
        deadline: 9000,
    };
    let _ = h.block(300, 2, promoting_other, 0, vec![]);
    let a = h.finish(330, HookKind::OnDemote, false);
    assert!(
        a.contains(&Action::DemoteFailed {
            epoch: 1,
            failures: 1,
            retry_in_ms: 1000
        }),
        "{a:?}"
    );
    h.finish(340, HookKind::OnRoleChange, true);
    assert_eq!(h.m.report().demote_failures, 1);
    // The old service may still run: the successor must not be told it let go.
    let a = h.tick(600);
    assert_eq!(heartbeat(&a), Some((Health::Healthy, 1)), "{a:?}");
    let a = h.block(700, 2, promoting_other, 1, vec![]);
    assert!(!h.m.report().serving);
    assert_eq!(heartbeat(&a), None);
    // Tried again a second after it failed; acknowledged once it succeeds.
    assert!(hooks(&h.tick(1000)).is_empty());
    let a = h.tick(1340);
    assert_eq!(hooks(&a), vec![HookKind::OnDemote], "{a:?}");
    // A second failure waits twice as long.
    let a = h.finish(1350, HookKind::OnDemote, false);
    assert!(a.iter().any(|a| matches!(
        a,
        Action::DemoteFailed {
            failures: 2,
            retry_in_ms: 2000,
            ..
        }
    )));
    assert!(hooks(&h.tick(3000)).is_empty());
    assert_eq!(hooks(&h.tick(3350)), vec![HookKind::OnDemote]);
    let _ = h.finish(3360, HookKind::OnDemote, true);
    assert_eq!(h.m.report().demote_failures, 0);
    let a = h.tick(3600);
    assert_eq!(heartbeat(&a), Some((Health::Healthy, 2)), "{a:?}");
}

/// Elected at epoch 3 (chain time 10) while `OTHER`, deposed, may still serve.
fn elected_while_other_may_serve() -> (Harness, Phase) {
    let mut h = Harness::new();
    let _ = h.block(0, 0, Phase::Vacant, 0, vec![]);
    h.finish(2, HookKind::OnDemote, true);
    h.finish(5, HookKind::OnRoleChange, true);
    let promoting = Phase::Promoting {
        node: ME,
        deadline: 5000,
    };
    let _ = h.block(10, 3, promoting, 1, vec![OTHER]);
    h.finish(20, HookKind::OnRoleChange, true);
    (h, promoting)
}

#[test]
fn an_elected_node_waits_for_a_deposed_holder_to_let_go() {
    let (mut h, promoting) = elected_while_other_may_serve();
    assert!(h.m.running.is_none(), "on_promote must wait");
    let a = h.block(30, 3, promoting, 0, vec![]);
    assert_eq!(hooks(&a), vec![HookKind::OnPromote]);
}

#[test]
fn an_elected_node_waits_for_a_deposed_holder_at_most_the_lease_bound() {
    // The deposed holder keeps heartbeating with the old epoch (its on_demote keeps failing).
    let (mut h, promoting) = elected_while_other_may_serve();
    let a = h.block(1000, 3, promoting, 0, vec![OTHER]);
    assert!(hooks(&a).is_empty(), "{a:?}");
    // More than the heartbeat timeout (1000 ms) of chain time since the election: whatever
    // lease the deposed holder had has ended, hook or not.
    let a = h.block(1011, 3, promoting, 0, vec![OTHER]);
    assert_eq!(hooks(&a), vec![HookKind::OnPromote], "{a:?}");
}

#[test]
fn a_failed_on_promote_reports_the_node_failed_and_never_completes() {
    let mut h = Harness::new();
    let _ = h.block(0, 0, Phase::Vacant, 0, vec![]);
    h.finish(2, HookKind::OnDemote, true);
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
        applied: vec![],
        caught_up: true,
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
        may_hold: vec![],
        since_block: 0,
    });
    assert_eq!(lease_ms(&view, 25), Some(750));
    view.max_drift_ms = 500;
    assert_eq!(lease_ms(&view, 25), None);
}

/// The agent restarted (its node crashed, or stopped on an error) while the service it had
/// promoted may still run: with the chain naming another node, `on_demote` runs before
/// anything else, and the new epoch is acknowledged only once it succeeded.
#[test]
fn a_restarted_agent_fences_a_service_left_running_by_its_previous_life() {
    let mut h = Harness::new();
    let a = h.block(0, 2, Phase::Active { node: OTHER }, 0, vec![]);
    assert_eq!(hooks(&a), vec![HookKind::OnDemote], "{a:?}");
    assert_eq!(heartbeat(&a), Some((Health::Healthy, 0)));
    h.finish(10, HookKind::OnDemote, true);
    h.finish(20, HookKind::OnRoleChange, true);
    assert_eq!(heartbeat(&h.tick(300)), Some((Health::Healthy, 2)));
    // Once fenced, later blocks run no more hooks.
    assert_eq!(
        hooks(&h.block(400, 2, Phase::Active { node: OTHER }, 1, vec![])),
        vec![]
    );
}

/// Restarted while the chain still names it active, then deposed before its `on_promote`
/// ran: whatever its previous life started is fenced all the same.
#[test]
fn a_restarted_agent_deposed_before_promoting_again_still_fences() {
    let mut h = Harness::new();
    let a = h.block(0, 1, Phase::Active { node: ME }, 0, vec![]);
    assert_eq!(h.m.report().role, LocalRole::Promoting, "{a:?}");
    // No lease yet (no heartbeat of this life applied): nothing is promoted.
    assert!(!hooks(&a).contains(&HookKind::OnPromote), "{a:?}");
    h.finish(5, HookKind::OnRoleChange, true);
    let promoting_other = Phase::Promoting {
        node: OTHER,
        deadline: 5000,
    };
    let a = h.block(100, 2, promoting_other, 0, vec![]);
    assert_eq!(hooks(&a), vec![HookKind::OnDemote], "{a:?}");
}

/// The node restarted behind the chain and replays old blocks: they name this node elected,
/// and one applied a heartbeat whose extrinsic equals the first one this new run sends (same
/// key, the stale nonce, the same content: ed25519 signs deterministically) — sent by the
/// previous run before it died. Found by the chaos harness: taken for its own, it gave the new
/// run a lease and it served an epoch the chain had already replaced. Until its node has
/// caught up, the machine takes nothing from a view: it fences, sends no heartbeat and serves
/// nothing; once caught up it acts on the present.
#[test]
fn a_restarted_agent_takes_nothing_from_blocks_its_node_replays_while_catching_up() {
    let mut h = Harness::new();
    h.caught_up = false;
    let elected = Phase::Promoting {
        node: ME,
        deadline: 5000,
    };
    let a = h.block(0, 1, elected, 0, vec![]);
    assert_eq!(hooks(&a), vec![HookKind::OnDemote], "{a:?}");
    assert_eq!(heartbeat(&a), None, "{a:?}");
    h.finish(10, HookKind::OnDemote, true);
    assert_eq!(heartbeat(&h.tick(300)), None);
    // Replayed: a block applying "our" heartbeat (the previous run's, same extrinsic).
    let replayed = h.block_with(
        400,
        1,
        Phase::Active { node: ME },
        vec![extrinsic(0)],
        vec![],
    );
    let a: Vec<Action> = replayed.into_iter().chain(h.tick(500)).collect();
    assert!(
        !a.iter().any(|x| matches!(x, Action::StartedServing { .. }))
            && !hooks(&a).contains(&HookKind::OnPromote),
        "{a:?}"
    );
    assert_eq!(h.m.report().role, LocalRole::None);
    // Caught up: the chain's present names another node; this one heartbeats as a standby.
    h.caught_up = true;
    let a = h.block(600, 2, Phase::Active { node: OTHER }, 0, vec![]);
    assert_eq!(heartbeat(&a), Some((Health::Healthy, 2)), "{a:?}");
    assert!(!hooks(&a).contains(&HookKind::OnPromote), "{a:?}");
}

/// The node stops while serving: the machine stops serving and runs `on_demote`, dropping the
/// `on_role_change` it had queued.
#[test]
fn a_stopping_node_stops_serving_and_fences() {
    let mut h = serving();
    assert!(!h.m.hooks_pending());
    let a = h.m.on_shutdown(at(h.t0, 100)).into_vec();
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::StoppedServing { epoch: 1, .. })),
        "{a:?}"
    );
    assert_eq!(hooks(&a), vec![HookKind::OnDemote], "{a:?}");
    h.finish(110, HookKind::OnDemote, true);
    assert!(!h.m.hooks_pending());
}

/// The chain's time can outrun real time (every validator's clock stepping forward at once),
/// so the chain may call the old holder's heartbeat stale, and elect this node, while the old
/// holder's lease, on its monotonic clock, still holds. An elected node therefore also waits
/// out that lease on its own clock: the lease length from when it saw the deposed holder's
/// last heartbeat from before the election applied. Later heartbeats of the deposed holder
/// (it lives on, its on_demote failing) give it no lease and do not prolong the wait.
#[test]
fn an_elected_node_waits_out_the_deposed_holders_lease_on_its_own_clock() {
    let mut h = Harness::new();
    // OTHER holds the service; its heartbeat of block 1 is applied when we see block 1 at 0 ms.
    h.may_hold = vec![(OTHER, 1)];
    let _ = h.block(0, 1, Phase::Active { node: OTHER }, 0, vec![]);
    h.finish(2, HookKind::OnDemote, true);
    h.finish(5, HookKind::OnRoleChange, true);
    // At 100 ms the chain, its clock ahead, deposes OTHER as stale and elects us in block 2;
    // nothing says OTHER may still serve.
    h.since_block = 2;
    let promoting = Phase::Promoting {
        node: ME,
        deadline: 5000,
    };
    let _ = h.block(100, 2, promoting, 1, vec![]);
    let a = h.finish(110, HookKind::OnRoleChange, true);
    assert!(!hooks(&a).contains(&HookKind::OnPromote), "{a:?}");
    // OTHER, alive, heartbeats again (block 3, after the election): that gives it no lease.
    h.may_hold = vec![(OTHER, 3)];
    let a = h.block(400, 2, promoting, 0, vec![]);
    assert!(!hooks(&a).contains(&HookKind::OnPromote), "{a:?}");
    assert!(!hooks(&h.tick(740)).contains(&HookKind::OnPromote));
    // 750 ms (the lease) after we saw its last heartbeat from before the election.
    assert_eq!(hooks(&h.tick(760)), vec![HookKind::OnPromote]);
}
