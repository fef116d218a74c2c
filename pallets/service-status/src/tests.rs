use drchain_support::{BlockInfo, MemoryState, StaticDirectory, StaticService};

use super::*;

fn db() -> ServiceName {
    ServiceName::new("db").unwrap()
}

fn directory() -> StaticDirectory {
    let service = StaticService {
        candidates: vec![AccountId([1; 32])],
        epoch: 3,
        active: None,
    };
    StaticDirectory {
        services: [(db(), service)].into(),
    }
}

fn heartbeat(
    state: &mut MemoryState,
    live: Moment,
    who: u8,
    health: Health,
    epoch_seen: Epoch,
) -> (Result<(), Error>, Vec<Event>) {
    let mut events = vec![];
    let mut o = Overlay::new(state);
    let block = BlockInfo {
        number: live / 100,
        timestamp: 1_000_000 + live,
        live_now: live,
        ..Default::default()
    };
    let r = {
        let mut env = Env::new(&mut o, block, &mut events);
        let call = Call::Heartbeat {
            service: db(),
            epoch_seen,
            health,
            applied_checkpoint: Some(4),
        };
        dispatch(
            &mut env,
            &directory(),
            Origin::Signed(AccountId([who; 32])),
            call,
        )
    };
    let changes = o.into_changes();
    state.commit(changes);
    (r, events)
}

#[test]
fn heartbeats_record_live_time_and_health_changes_are_events() {
    let mut s = MemoryState::new();
    let node = AccountId([1; 32]);
    let (r, events) = heartbeat(&mut s, 500, 1, Health::Healthy, 3);
    r.unwrap();
    assert_eq!(
        events,
        vec![Event::HealthChanged {
            service: db(),
            node,
            from: None,
            to: Health::Healthy,
            epoch_seen: 3
        }]
    );
    // Same health again: recorded, but no event.
    let (r, events) = heartbeat(&mut s, 800, 1, Health::Healthy, 3);
    r.unwrap();
    assert!(events.is_empty());
    let st = status(&Overlay::new(&s), &db(), &node).unwrap();
    assert_eq!(
        (st.live_at, st.heartbeats, st.applied_checkpoint),
        (800, 2, Some(4))
    );
    let (_, events) = heartbeat(&mut s, 900, 1, Health::Failed, 3);
    assert_eq!(
        events,
        vec![Event::HealthChanged {
            service: db(),
            node,
            from: Some(Health::Healthy),
            to: Health::Failed,
            epoch_seen: 3
        }]
    );
}

#[test]
fn heartbeats_are_refused_from_strangers_and_from_the_future() {
    let mut s = MemoryState::new();
    assert!(matches!(
        heartbeat(&mut s, 1, 2, Health::Healthy, 3).0,
        Err(Error::Service(ServiceError::NotACandidate { .. }))
    ));
    assert_eq!(
        heartbeat(&mut s, 1, 1, Health::Healthy, 4).0,
        Err(Error::EpochFromFuture {
            current: 3,
            given: 4
        })
    );
    assert!(statuses(&Overlay::new(&s), &db()).is_empty());
}
