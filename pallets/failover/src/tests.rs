//! Failover tests over the real membership, service-status and checkpoints pallets. Each
//! `block` advances the live clock directly; the runtime's live clock (which ignores stalls)
//! has its own tests in the runtime.

use drchain_support::{BlockInfo, Env, Health, Hooks, MemoryState, Overlay, H256};
use ed25519_dalek::SigningKey;
use pallet_membership::certgen::{self, CaKey, CertParams};
use pallet_membership::MemberRole;
use proptest::prelude::*;

use super::*;

const T0: u64 = 1_767_225_600_000;
const YEAR: u64 = 365 * 86_400_000;

#[derive(Debug)]
enum Ev {
    Failover(Event),
    Other,
}

impl From<Event> for Ev {
    fn from(e: Event) -> Self {
        Ev::Failover(e)
    }
}
impl From<pallet_service_status::Event> for Ev {
    fn from(_: pallet_service_status::Event) -> Self {
        Ev::Other
    }
}
impl From<pallet_membership::Event> for Ev {
    fn from(_: pallet_membership::Event) -> Self {
        Ev::Other
    }
}
impl From<pallet_checkpoints::Event> for Ev {
    fn from(_: pallet_checkpoints::Event) -> Self {
        Ev::Other
    }
}

/// What a test does inside a block.
#[derive(Debug, Clone)]
enum Op {
    /// Node heartbeats with this health, having seen the current epoch.
    Hb(usize, Health),
    /// Node heartbeats having seen this epoch.
    HbSeen(usize, Health, Epoch),
    /// Node claims promotion completion for the current epoch.
    Complete(usize),
    /// Node claims promotion completion for this epoch.
    CompleteAt(usize, Epoch),
    /// Admin switchover.
    Switchover(Option<usize>),
    /// The active node records checkpoint `seq`.
    Checkpoint(usize, u64),
    /// A standby acknowledges checkpoint `seq`.
    Ack(usize, u64),
    /// Admin revokes a node.
    Revoke(usize),
    /// Admin replaces the candidate list.
    Candidates(Vec<usize>),
    /// Admin pauses the service.
    Pause,
    /// Admin resumes the service.
    Resume,
}

struct Chain {
    state: MemoryState,
    number: u64,
    live: u64,
    nodes: Vec<AccountId>,
    applied: Vec<Option<u64>>,
    config: ServiceConfig,
}

fn db() -> ServiceName {
    ServiceName::new("db").unwrap()
}

impl Chain {
    fn new(tweak: impl FnOnce(&mut ServiceConfig)) -> Self {
        let ca_key = CaKey::Ed25519(SigningKey::from_bytes(&[200; 32]));
        let p = |subject: &str, serial| CertParams {
            subject: subject.into(),
            serial,
            not_before_ms: T0 - YEAR,
            not_after_ms: T0 + YEAR,
        };
        let ca = certgen::new_ca(&ca_key, &p("CN=test ca", 1)).unwrap();
        let keys: Vec<SigningKey> = (0..4u8)
            .map(|i| SigningKey::from_bytes(&[i + 1; 32]))
            .collect();
        let nodes: Vec<AccountId> = keys.iter().map(AccountId::from).collect();
        let members = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    certgen::issue(&ca_key, &ca, n, &p(&format!("CN=n{i}"), 10 + i as u64))
                        .unwrap(),
                    MemberRole::Validator,
                )
            })
            .collect();
        let mut config = ServiceConfig::new(nodes.clone());
        tweak(&mut config);
        let mut state = MemoryState::new();
        let changes = {
            let mut o = Overlay::new(&state);
            let genesis = pallet_membership::GenesisConfig {
                trust_anchors: vec![ca],
                admins: vec![AccountId([99; 32])],
                admin_threshold: 1,
                members,
            };
            pallet_membership::build_genesis(&mut o, &genesis, T0).unwrap();
            build_genesis(&mut o, &[(db(), config.clone())]).unwrap();
            o.into_changes()
        };
        state.commit(changes);
        Chain {
            state,
            number: 0,
            live: 0,
            nodes,
            applied: vec![None; 4],
            config,
        }
    }

    fn view(&self) -> Overlay<'_> {
        Overlay::new(&self.state)
    }

    fn st(&self) -> ServiceState {
        States::get(&self.view(), &db()).unwrap()
    }

    fn epoch(&self) -> Epoch {
        self.st().epoch
    }

    fn holder(&self) -> Option<usize> {
        self.st().phase.holder().map(|h| self.index(&h))
    }

    fn index(&self, a: &AccountId) -> usize {
        self.nodes.iter().position(|n| n == a).unwrap()
    }

    fn role(&self, i: usize) -> Option<Role> {
        Nodes::get(&self.view(), &db(), &self.nodes[i]).map(|r| r.role)
    }

    /// One block `advance` ms of live time after the previous one; returns failover events and
    /// the result of each op.
    fn block(&mut self, advance: u64, ops: &[Op]) -> (Vec<Event>, Vec<Result<(), String>>) {
        self.number += 1;
        self.live += advance;
        let block = BlockInfo {
            number: self.number,
            timestamp: T0 + self.live,
            live_now: self.live,
            parent_hash: H256::default(),
        };
        let mut events: Vec<Ev> = vec![];
        let mut results = vec![];
        let changes = {
            let mut o = Overlay::new(&self.state);
            {
                let mut env = Env::new(&mut o, block, &mut events);
                <pallet_membership::Pallet as Hooks<Ev>>::on_initialize(&mut env);
                for op in ops {
                    env.state.start_transaction();
                    let r = self.apply(&mut env, op);
                    if r.is_ok() {
                        env.state.commit_transaction();
                    } else {
                        env.state.rollback_transaction();
                    }
                    results.push(r);
                }
                <Pallet as Hooks<Ev>>::on_finalize(&mut env);
            }
            o.into_changes()
        };
        self.state.commit(changes);
        let events = events
            .into_iter()
            .filter_map(|e| {
                if let Ev::Failover(e) = e {
                    Some(e)
                } else {
                    None
                }
            })
            .collect();
        (events, results)
    }

    fn apply(&self, env: &mut Env<'_, '_, Ev>, op: &Op) -> Result<(), String> {
        let epoch = States::get(env.state, &db()).map(|s| s.epoch).unwrap_or(0);
        let signed = |i: usize| Origin::Signed(self.nodes[i]);
        let hb = |env: &mut Env<'_, '_, Ev>, i: usize, health, seen| {
            let call = pallet_service_status::Call::Heartbeat {
                service: db(),
                epoch_seen: seen,
                health,
                applied_checkpoint: self.applied[i],
            };
            pallet_service_status::dispatch(env, &Directory, signed(i), call)
                .map_err(|e| e.to_string())
        };
        let s = |r: Result<(), Error>| r.map_err(|e| e.to_string());
        match op {
            Op::Hb(i, h) => hb(env, *i, *h, epoch),
            Op::HbSeen(i, h, seen) => hb(env, *i, *h, *seen),
            Op::Complete(i) => s(dispatch(
                env,
                signed(*i),
                Call::PromotionComplete {
                    service: db(),
                    epoch,
                },
            )),
            Op::CompleteAt(i, e) => s(dispatch(
                env,
                signed(*i),
                Call::PromotionComplete {
                    service: db(),
                    epoch: *e,
                },
            )),
            Op::Switchover(t) => s(dispatch(
                env,
                Origin::Admin,
                Call::Switchover {
                    service: db(),
                    target: t.map(|i| self.nodes[i]),
                },
            )),
            Op::Checkpoint(i, seq) => {
                let call = pallet_checkpoints::Call::Submit {
                    service: db(),
                    epoch,
                    sequence: *seq,
                    manifest_root: H256([1; 32]),
                    size_bytes: 1,
                    changed_bytes: 1,
                };
                pallet_checkpoints::dispatch(env, &Directory, signed(*i), call)
                    .map_err(|e| e.to_string())
            }
            Op::Ack(i, seq) => {
                let call = pallet_checkpoints::Call::Acknowledge {
                    service: db(),
                    sequence: *seq,
                };
                pallet_checkpoints::dispatch(env, &Directory, signed(*i), call)
                    .map_err(|e| e.to_string())
            }
            Op::Revoke(i) => {
                let call = pallet_membership::Call::Revoke {
                    account: self.nodes[*i],
                    reason: "test".into(),
                };
                pallet_membership::dispatch(env, Origin::Admin, call).map_err(|e| e.to_string())
            }
            Op::Pause => s(dispatch(env, Origin::Admin, Call::Pause { service: db() })),
            Op::Resume => s(dispatch(env, Origin::Admin, Call::Resume { service: db() })),
            Op::Candidates(list) => {
                let config = ServiceConfig {
                    candidates: list.iter().map(|i| self.nodes[*i]).collect(),
                    ..self.config.clone()
                };
                s(dispatch(
                    env,
                    Origin::Admin,
                    Call::UpdateService { name: db(), config },
                ))
            }
        }
    }

    fn heartbeats(nodes: &[usize]) -> Vec<Op> {
        nodes.iter().map(|i| Op::Hb(*i, Health::Healthy)).collect()
    }

    /// Brings node 0 to active at epoch 1.
    fn with_active(mut self) -> Self {
        let (events, _) = self.block(100, &Self::heartbeats(&[0, 1, 2, 3]));
        assert!(events.contains(&Event::Elected {
            service: db(),
            node: self.nodes[0],
            epoch: 1,
            previous: None,
            reason: Reason::Vacancy
        }));
        let mut ops = Self::heartbeats(&[0, 1, 2, 3]);
        ops.push(Op::Complete(0));
        let (_, results) = self.block(100, &ops);
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        assert_eq!(
            self.st().phase,
            Phase::Active {
                node: self.nodes[0]
            }
        );
        assert_eq!(self.role(0), Some(Role::Active));
        assert_eq!(self.role(1), Some(Role::Standby));
        self
    }

    /// Whether node `i` could be elected at the head, under the current configuration.
    fn eligibility_of(&self, i: usize) -> Result<Option<u64>, Ineligible> {
        let config = Services::get(&self.view(), &db()).unwrap();
        let mut events: Vec<Event> = vec![];
        let mut o = Overlay::new(&self.state);
        let block = BlockInfo {
            number: self.number,
            timestamp: T0 + self.live,
            live_now: self.live,
            ..Default::default()
        };
        let env = Env::new(&mut o, block, &mut events);
        eligibility(&env, &db(), &config, &self.nodes[i])
    }

    /// Blocks every 200 ms with heartbeats from `alive` until an election or `max_ms` passes.
    fn run_until_election(&mut self, alive: &[usize], max_ms: u64) -> Vec<Event> {
        let start = self.live;
        while self.live - start < max_ms {
            let (events, _) = self.block(200, &Self::heartbeats(alive));
            if events
                .iter()
                .any(|e| matches!(e, Event::Elected { .. } | Event::WentVacant { .. }))
            {
                return events;
            }
        }
        vec![]
    }
}

fn elected(events: &[Event]) -> Option<(AccountId, Epoch, Reason)> {
    events.iter().find_map(|e| match e {
        Event::Elected {
            node,
            epoch,
            reason,
            ..
        } => Some((*node, *epoch, *reason)),
        _ => None,
    })
}

#[test]
fn stale_heartbeat_elects_the_next_candidate_after_the_timeout() {
    let mut c = Chain::new(|_| {}).with_active();
    let last_heartbeat = c.live;
    let events = c.run_until_election(&[1, 2, 3], 5000);
    // Stale means strictly older than the timeout on the live clock.
    assert_eq!(c.live - last_heartbeat, 1200);
    assert_eq!(
        elected(&events),
        Some((c.nodes[1], 2, Reason::HeartbeatStale))
    );
    assert!(events.contains(&Event::Deposed {
        service: db(),
        node: c.nodes[0],
        epoch: 1,
        reason: Reason::HeartbeatStale
    }));
    assert_eq!(c.role(0), Some(Role::Failed));
    assert_eq!(c.role(1), Some(Role::Promoting));
}

#[test]
fn failed_promotion_elects_the_next_candidate() {
    let mut c = Chain::new(|cfg| cfg.promotion_timeout_ms = 1000).with_active();
    c.run_until_election(&[1, 2, 3], 5000);
    assert_eq!(c.holder(), Some(1));
    // Node 1 keeps heartbeating but never completes its promotion.
    let events = c.run_until_election(&[1, 2, 3], 5000);
    assert!(events.contains(&Event::Deposed {
        service: db(),
        node: c.nodes[1],
        epoch: 2,
        reason: Reason::PromotionTimeout
    }));
    assert_eq!(
        elected(&events),
        Some((c.nodes[2], 3, Reason::PromotionTimeout))
    );
    assert_eq!(c.role(1), Some(Role::Failed));
    // It may be elected again once it reports having seen the newer epoch.
    c.block(100, &[Op::Hb(1, Health::Healthy)]);
    assert_eq!(c.role(1), Some(Role::Standby));
}

#[test]
fn returning_old_active_stays_fenced_until_it_sees_the_new_epoch() {
    let mut c = Chain::new(|_| {}).with_active();
    c.run_until_election(&[1, 2, 3], 5000);
    let mut ops = Chain::heartbeats(&[1, 2, 3]);
    ops.push(Op::Complete(1));
    c.block(100, &ops);
    assert_eq!(c.st().phase, Phase::Active { node: c.nodes[1] });
    // Node 0 comes back, still believing in epoch 1.
    let (_, r) = c.block(
        100,
        &[
            Op::HbSeen(0, Health::Healthy, 1),
            Op::Hb(1, Health::Healthy),
            Op::Hb(2, Health::Healthy),
        ],
    );
    assert!(r.iter().all(|r| r.is_ok()));
    assert_eq!(c.role(0), Some(Role::Fenced));
    // The new active fails: node 2 is elected, not the fenced node 0 despite its priority.
    let (events, _) = c.block(
        100,
        &[
            Op::HbSeen(0, Health::Healthy, 1),
            Op::Hb(1, Health::Failed),
            Op::Hb(2, Health::Healthy),
        ],
    );
    assert_eq!(
        elected(&events),
        Some((c.nodes[2], 3, Reason::ReportedFailed))
    );
    assert_eq!(c.role(0), Some(Role::Fenced));
    // Once it reports the current epoch it is a standby again.
    c.block(
        100,
        &[Op::Hb(0, Health::Healthy), Op::Hb(2, Health::Healthy)],
    );
    assert_eq!(c.role(0), Some(Role::Standby));
}

#[test]
fn no_eligible_candidate_goes_vacant_then_recovers() {
    let mut c = Chain::new(|_| {}).with_active();
    let events = c.run_until_election(&[], 5000);
    assert!(events.contains(&Event::WentVacant {
        service: db(),
        epoch: 2,
        reason: Reason::HeartbeatStale
    }));
    assert_eq!(c.st().phase, Phase::Vacant);
    // Retried every block: nothing happens while nobody is eligible...
    let (events, _) = c.block(200, &[]);
    assert!(events.iter().all(|e| !matches!(e, Event::Elected { .. })));
    // ...and the first fresh heartbeat gets elected, the old active included once it has seen
    // the vacancy epoch.
    let (events, _) = c.block(
        200,
        &[
            Op::Hb(3, Health::Healthy),
            Op::HbSeen(0, Health::Healthy, 1),
        ],
    );
    assert_eq!(elected(&events), Some((c.nodes[3], 3, Reason::Vacancy)));
}

#[test]
fn switchover_moves_the_service_and_fences_the_old_active() {
    let mut c = Chain::new(|_| {}).with_active();
    let (events, r) = c.block(100, &[Op::Switchover(Some(2))]);
    assert_eq!(r, vec![Ok(())]);
    assert_eq!(elected(&events), Some((c.nodes[2], 2, Reason::Switchover)));
    assert_eq!(c.role(0), Some(Role::Fenced));
    // While promoting, no further switchover.
    let (_, r) = c.block(100, &[Op::Switchover(None)]);
    assert!(
        r[0].as_ref().unwrap_err().contains("is promoting a node"),
        "{r:?}"
    );
}

#[test]
fn switchover_to_an_ineligible_target_is_refused() {
    let mut c = Chain::new(|_| {}).with_active();
    // Node 3 stops heartbeating; 1.2 s later it is stale.
    for _ in 0..6 {
        c.block(200, &Chain::heartbeats(&[0, 1, 2]));
    }
    let (_, r) = c.block(100, &[Op::Switchover(Some(0))]);
    assert!(
        r[0].as_ref()
            .unwrap_err()
            .contains("already the active node"),
        "{r:?}"
    );
    let (_, r) = c.block(100, &[Op::Switchover(Some(3))]);
    assert!(
        r[0].as_ref().unwrap_err().contains("cannot take over"),
        "{r:?}"
    );
    assert_eq!(c.holder(), Some(0));
    assert_eq!(c.epoch(), 1);
}

/// Rule 2, one row per reason a standby (node 1) cannot be elected while node 0 is active.
#[test]
fn eligibility_table() {
    use Ineligible::*;
    // (case, live-clock advance, ops in the block, node 1's eligibility after it)
    type Row = (&'static str, u64, Vec<Op>, Result<Option<u64>, Ineligible>);
    let table: Vec<Row> = vec![
        (
            "fresh and healthy",
            100,
            vec![Op::Hb(1, Health::Healthy)],
            Ok(None),
        ),
        (
            "exactly at the timeout",
            1000,
            vec![Op::Hb(0, Health::Healthy)],
            Ok(None),
        ),
        (
            "past the timeout",
            1001,
            vec![Op::Hb(0, Health::Healthy)],
            Err(Stale { age_ms: 1001 }),
        ),
        (
            "degraded",
            100,
            vec![Op::Hb(1, Health::Degraded)],
            Err(Unhealthy {
                health: Health::Degraded,
            }),
        ),
        (
            "reports failure",
            100,
            vec![Op::Hb(1, Health::Failed)],
            Err(Unhealthy {
                health: Health::Failed,
            }),
        ),
        ("revoked", 100, vec![Op::Revoke(1)], Err(NotAdmitted)),
        (
            "removed from the candidates",
            100,
            vec![Op::Candidates(vec![0, 2, 3])],
            Err(NotACandidate),
        ),
        (
            "holds no checkpoint while there is one",
            100,
            vec![Op::Checkpoint(0, 1), Op::Hb(1, Health::Healthy)],
            Err(Lagging {
                lag_ms: None,
                max_lag_ms: 1000,
            }),
        ),
    ];
    for (case, advance, ops, expected) in table {
        let mut c = Chain::new(|_| {}).with_active();
        let (_, results) = c.block(advance, &ops);
        assert!(results.iter().all(|r| r.is_ok()), "{case}: {results:?}");
        assert_eq!(c.eligibility_of(1), expected, "{case}");
    }
    // Never heartbeated.
    let c = Chain::new(|_| {});
    assert_eq!(c.eligibility_of(1), Err(NoHeartbeat));
}

/// Rule 1, one row per reason the holder (node 0) is deposed.
#[test]
fn deposition_table() {
    let table: Vec<(&str, u64, Vec<Op>, Reason, Role)> = vec![
        (
            "silent past the timeout",
            1001,
            vec![Op::Hb(1, Health::Healthy)],
            Reason::HeartbeatStale,
            Role::Failed,
        ),
        (
            "reports failure",
            100,
            vec![Op::Hb(0, Health::Failed), Op::Hb(1, Health::Healthy)],
            Reason::ReportedFailed,
            Role::Failed,
        ),
        (
            "revoked",
            100,
            vec![Op::Revoke(0), Op::Hb(1, Health::Healthy)],
            Reason::NotAdmitted,
            Role::Fenced,
        ),
        (
            "switched over",
            100,
            vec![Op::Switchover(Some(1))],
            Reason::Switchover,
            Role::Fenced,
        ),
    ];
    for (case, advance, ops, reason, role) in table {
        let mut c = Chain::new(|_| {}).with_active();
        let (events, _) = c.block(advance, &ops);
        assert!(
            events.contains(&Event::Deposed {
                service: db(),
                node: c.nodes[0],
                epoch: 1,
                reason
            }),
            "{case}: {events:?}"
        );
        assert_eq!(elected(&events), Some((c.nodes[1], 2, reason)), "{case}");
        assert_eq!(c.role(0), Some(role), "{case}");
    }
}

/// Node 0 (active) records checkpoint 1 at live 300, 2 at 900, 3 at 1600; the standbys hold
/// what `held` says (index 0 ignored).
fn with_checkpoints(c: &mut Chain, held: [Option<u64>; 4]) {
    for (seq, advance) in [(1, 100), (2, 600), (3, 700)] {
        let mut ops = Chain::heartbeats(&[0, 1, 2, 3]);
        ops.push(Op::Checkpoint(0, seq));
        let (_, r) = c.block(advance, &ops);
        assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
    }
    let acks: Vec<Op> = (1..4)
        .filter_map(|i| held[i].map(|seq| Op::Ack(i, seq)))
        .collect();
    let (_, r) = c.block(100, &acks);
    assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
}

#[test]
fn election_prefers_the_freshest_data_within_the_rpo_then_priority() {
    let mut c = Chain::new(|cfg| cfg.max_lag_ms = 800).with_active();
    // Node 1 has priority but its data is 1300 ms old; node 2 holds 2 (700 ms); node 3 the
    // latest.
    with_checkpoints(&mut c, [None, Some(1), Some(2), Some(3)]);
    assert_eq!(
        c.eligibility_of(1),
        Err(Ineligible::Lagging {
            lag_ms: Some(1300),
            max_lag_ms: 800
        })
    );
    assert_eq!(c.eligibility_of(2), Ok(Some(2)));
    let events = c.run_until_election(&[1, 2, 3], 5000);
    assert_eq!(elected(&events).map(|e| e.0), Some(c.nodes[3]));
}

#[test]
fn equal_checkpoints_fall_back_to_priority() {
    let mut c = Chain::new(|_| {}).with_active();
    with_checkpoints(&mut c, [None, Some(3), Some(3), Some(3)]);
    let events = c.run_until_election(&[1, 2, 3], 5000);
    assert_eq!(elected(&events).map(|e| e.0), Some(c.nodes[1]));
}

#[test]
fn without_a_standby_within_the_rpo_nobody_is_promoted_and_the_chain_says_why() {
    let mut c = Chain::new(|cfg| cfg.max_lag_ms = 500).with_active();
    with_checkpoints(&mut c, [None, Some(1), Some(2), None]);
    let events = c.run_until_election(&[1, 2, 3], 5000);
    assert!(elected(&events).is_none(), "{events:?}");
    assert!(
        events.contains(&Event::PromotionWithheld {
            service: db(),
            epoch: 2,
            candidate: c.nodes[2],
            lag_ms: Some(700),
            max_lag_ms: 500,
        }),
        "the freshest live candidate and its lag are named: {events:?}"
    );
    assert_eq!(c.st().phase, Phase::Vacant);
    // It stays vacant while the data is too old...
    for _ in 0..10 {
        let (events, _) = c.block(200, &Chain::heartbeats(&[1, 2, 3]));
        assert!(elected(&events).is_none());
    }
    // ... until an admin names a node and accepts the loss.
    let (events, r) = c.block(100, &[Op::Switchover(Some(1))]);
    assert!(r[0].is_ok(), "{r:?}");
    assert_eq!(elected(&events).map(|e| e.0), Some(c.nodes[1]));
    assert!(events.contains(&Event::DataLossAccepted {
        service: db(),
        node: c.nodes[1],
        epoch: 3,
        held: Some(1),
        latest: Some(3),
        lag_ms: Some(1300),
    }));
}

#[test]
fn allow_data_loss_promotes_the_freshest_and_records_the_loss() {
    let mut c = Chain::new(|cfg| {
        cfg.max_lag_ms = 500;
        cfg.allow_data_loss = true;
    })
    .with_active();
    with_checkpoints(&mut c, [None, Some(1), Some(2), None]);
    let events = c.run_until_election(&[1, 2, 3], 5000);
    assert_eq!(elected(&events).map(|e| e.0), Some(c.nodes[2]));
    assert!(
        events.contains(&Event::DataLossAccepted {
            service: db(),
            node: c.nodes[2],
            epoch: 2,
            held: Some(2),
            latest: Some(3),
            lag_ms: Some(700),
        }),
        "{events:?}"
    );
}

#[test]
fn a_returning_active_that_produced_the_latest_checkpoint_is_eligible_again() {
    let mut c = Chain::new(|_| {}).with_active();
    with_checkpoints(&mut c, [None, Some(3), None, None]);
    // Node 0 dies; node 1 (holding the latest) takes over.
    let events = c.run_until_election(&[1, 2, 3], 5000);
    assert_eq!(elected(&events).map(|e| e.0), Some(c.nodes[1]));
    // Node 0 comes back having seen the new epoch: it holds checkpoint 3, which it produced.
    c.block(100, &[Op::Hb(0, Health::Healthy)]);
    assert_eq!(c.eligibility_of(0), Ok(Some(3)));
}

#[test]
fn a_revoked_active_is_replaced_in_the_same_block() {
    let mut c = Chain::new(|_| {}).with_active();
    let (events, r) = c.block(100, &[Op::Revoke(0), Op::Hb(1, Health::Healthy)]);
    assert_eq!(r, vec![Ok(()), Ok(())]);
    assert_eq!(elected(&events), Some((c.nodes[1], 2, Reason::NotAdmitted)));
    assert_eq!(c.role(0), Some(Role::Fenced));
}

#[test]
fn removing_the_active_from_the_candidates_deposes_it() {
    let mut c = Chain::new(|_| {}).with_active();
    let (events, r) = c.block(
        100,
        &[Op::Candidates(vec![1, 2]), Op::Hb(1, Health::Healthy)],
    );
    assert_eq!(r, vec![Ok(()), Ok(())]);
    assert_eq!(
        elected(&events),
        Some((c.nodes[1], 2, Reason::RemovedFromCandidates))
    );
    assert_eq!(c.role(0), None);
}

#[test]
fn a_paused_service_keeps_its_silent_active_until_resumed() {
    let mut c = Chain::new(|_| {}).with_active();
    let (events, r) = c.block(100, &[Op::Pause]);
    assert_eq!(r, vec![Ok(())]);
    assert!(events.contains(&Event::Paused { service: db() }));
    assert!(pause::paused(&c.view(), &db()).is_some());
    // The active goes silent for far longer than the timeout: no election while paused.
    assert!(c.run_until_election(&[1, 2, 3], 5000).is_empty());
    assert_eq!(c.holder(), Some(0));
    assert_eq!(c.epoch(), 1);
    // Only a resume (or a switchover) moves it; after the resume the next block elects.
    let (_, r) = c.block(100, &[Op::Pause]);
    assert_eq!(r, vec![Err("service db is already paused".into())]);
    let (events, r) = c.block(100, &[Op::Resume]);
    assert_eq!(r, vec![Ok(())]);
    assert!(events.contains(&Event::Resumed { service: db() }));
    assert_eq!(
        elected(&events),
        Some((c.nodes[1], 2, Reason::HeartbeatStale))
    );
    let (_, r) = c.block(100, &[Op::Resume]);
    assert_eq!(r, vec![Err("service db is not paused".into())]);
}

#[test]
fn a_paused_service_still_deposes_a_revoked_active_and_stays_vacant() {
    let mut c = Chain::new(|_| {}).with_active();
    c.block(100, &[Op::Pause]);
    let (events, r) = c.block(100, &[Op::Revoke(0), Op::Hb(1, Health::Healthy)]);
    assert_eq!(r, vec![Ok(()), Ok(())]);
    assert_eq!(elected(&events), None);
    assert!(events.contains(&Event::WentVacant {
        service: db(),
        epoch: 2,
        reason: Reason::NotAdmitted
    }));
    assert_eq!(c.holder(), None);
    // An admin switchover still fills it while paused.
    let (events, r) = c.block(
        100,
        &[
            Op::Hb(1, Health::Healthy),
            Op::Hb(2, Health::Healthy),
            Op::Switchover(Some(2)),
        ],
    );
    assert_eq!(r, vec![Ok(()), Ok(()), Ok(())]);
    assert_eq!(elected(&events), Some((c.nodes[2], 3, Reason::Switchover)));
}

#[test]
fn a_stale_holder_is_reported_with_how_long_it_was_silent() {
    let mut c = Chain::new(|_| {}).with_active();
    let events = c.run_until_election(&[1, 2, 3], 5000);
    assert!(events.contains(&Event::HeartbeatsStopped {
        service: db(),
        node: c.nodes[0],
        epoch: 1,
        silent_ms: Some(1200),
    }));
}

#[test]
fn only_the_elected_node_completes_and_only_for_its_epoch() {
    let mut c = Chain::new(|_| {});
    c.block(100, &Chain::heartbeats(&[0, 1]));
    assert_eq!(c.holder(), Some(0));
    let (_, r) = c.block(
        100,
        &[
            Op::Complete(1),
            Op::CompleteAt(0, 7),
            Op::Hb(0, Health::Healthy),
        ],
    );
    assert!(r[0].as_ref().unwrap_err().contains("was not elected"));
    assert!(r[1].as_ref().unwrap_err().contains("not the current epoch"));
    assert!(matches!(c.st().phase, Phase::Promoting { .. }));
}

#[test]
fn degraded_active_stays_but_degraded_standby_is_not_elected() {
    let mut c = Chain::new(|_| {}).with_active();
    let (events, _) = c.block(
        100,
        &[
            Op::Hb(0, Health::Degraded),
            Op::Hb(1, Health::Degraded),
            Op::Hb(2, Health::Healthy),
        ],
    );
    assert!(elected(&events).is_none());
    let events = c.run_until_election(&[], 5000);
    // Node 1 degraded and now stale, node 2 stale too: vacant.
    assert!(events.iter().any(|e| matches!(e, Event::WentVacant { .. })));
}

/// One random block: live-clock advance, heartbeats as (node, health code, saw the previous
/// epoch), whether the holder completes, and an optional switchover (to a target or the best).
type RandomBlock = (u64, Vec<(usize, u8, bool)>, bool, Option<Option<usize>>);

/// Ops for one random block.
fn arb_block() -> impl Strategy<Value = RandomBlock> {
    (
        prop_oneof![Just(0u64), Just(100), Just(300), Just(700), Just(1200)],
        prop::collection::vec((0usize..4, 0u8..4, any::<bool>()), 0..5),
        any::<bool>(),
        prop::option::weighted(0.05, prop::option::of(0usize..4)),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Over random heartbeats, timing, completions and switchovers: at most one node holds the
    /// service and its role matches the phase, epochs strictly increase at every transition,
    /// an active node completed its promotion for that epoch, and every elected node was
    /// eligible.
    #[test]
    fn election_invariants_hold(blocks in prop::collection::vec(arb_block(), 1..60)) {
        let mut c = Chain::new(|cfg| cfg.promotion_timeout_ms = 800);
        let mut last_epoch = 0;
        let mut completed: Vec<(AccountId, Epoch)> = vec![];
        for (advance, beats, complete, switchover) in blocks {
            let epoch_before = c.epoch();
            let mut ops: Vec<Op> = beats
                .into_iter()
                .map(|(i, h, stale_epoch)| {
                    let health = match h { 0 | 1 => Health::Healthy, 2 => Health::Degraded, _ => Health::Failed };
                    let seen = if stale_epoch { epoch_before.saturating_sub(1) } else { epoch_before };
                    Op::HbSeen(i, health, seen)
                })
                .collect();
            if complete {
                if let Some(h) = c.holder() { ops.push(Op::Complete(h)); }
            }
            if let Some(t) = switchover { ops.push(Op::Switchover(t)); }
            let (events, _) = c.block(advance, &ops);

            for e in &events {
                match e {
                    Event::Elected { node, epoch, .. } => {
                        prop_assert!(*epoch > last_epoch);
                        last_epoch = *epoch;
                        // Eligible: fresh, healthy, admitted, not failed/fenced for what it saw.
                        let o = c.view();
                        let s = pallet_service_status::status(&o, &db(), node).unwrap();
                        prop_assert!(c.live - s.live_at <= c.config.heartbeat_timeout_ms);
                        prop_assert_eq!(s.health, Health::Healthy);
                        prop_assert!(pallet_membership::is_admitted(&o, node, T0 + c.live));
                        let r = Nodes::get(&o, &db(), node).unwrap();
                        prop_assert!(r.failed_epoch.is_none_or(|f| s.epoch_seen > f));
                        prop_assert!(r.fenced_epoch.is_none_or(|d| s.epoch_seen > d));
                    }
                    Event::WentVacant { epoch, .. } => {
                        prop_assert!(*epoch > last_epoch);
                        last_epoch = *epoch;
                    }
                    Event::PromotionCompleted { node, epoch, .. } => completed.push((*node, *epoch)),
                    _ => {}
                }
            }
            let st = c.st();
            prop_assert!(st.epoch >= epoch_before);
            let holders: Vec<usize> = (0..4)
                .filter(|i| matches!(c.role(*i), Some(Role::Active | Role::Promoting)))
                .collect();
            prop_assert!(holders.len() <= 1, "two holders: {:?}", holders);
            prop_assert_eq!(holders.first().copied(), c.holder());
            if let Phase::Active { node } = st.phase {
                prop_assert!(completed.contains(&(node, st.epoch)));
                prop_assert_eq!(c.role(c.index(&node)), Some(Role::Active));
            }
        }
    }
}
