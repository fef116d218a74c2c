use drchain_support::{BlockInfo, MemoryState, StaticDirectory, StaticService};

use super::*;

fn db() -> ServiceName {
    ServiceName::new("db").unwrap()
}

const ACTIVE: AccountId = AccountId([1; 32]);
const STANDBY: AccountId = AccountId([2; 32]);

fn directory() -> StaticDirectory {
    let service = StaticService {
        candidates: vec![ACTIVE, STANDBY],
        epoch: 5,
        active: Some(ACTIVE),
    };
    StaticDirectory {
        services: [(db(), service)].into(),
    }
}

fn call(state: &mut MemoryState, who: AccountId, c: Call) -> (Result<(), Error>, Vec<Event>) {
    call_at(state, who, c, 99)
}

fn call_at(
    state: &mut MemoryState,
    who: AccountId,
    c: Call,
    timestamp: Moment,
) -> (Result<(), Error>, Vec<Event>) {
    let mut events = vec![];
    let mut o = Overlay::new(state);
    let r = {
        let mut env = Env::new(
            &mut o,
            BlockInfo {
                number: 9,
                timestamp,
                ..Default::default()
            },
            &mut events,
        );
        dispatch(&mut env, &directory(), Origin::Signed(who), c)
    };
    let changes = o.into_changes();
    state.commit(changes);
    (r, events)
}

fn ack_root(sequence: u64, root: H256) -> Call {
    Call::AcknowledgeRoot {
        service: db(),
        sequence,
        manifest_root: root,
    }
}

fn submit(epoch: Epoch, sequence: u64) -> Call {
    Call::Submit {
        service: db(),
        epoch,
        sequence,
        manifest_root: H256([sequence as u8; 32]),
        size_bytes: 10,
        changed_bytes: sequence,
    }
}

#[test]
fn only_the_active_at_the_current_epoch_records_checkpoints() {
    let mut s = MemoryState::new();
    let (r, events) = call(&mut s, ACTIVE, submit(5, 1));
    r.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(latest(&Overlay::new(&s), &db()), Some(1));
    assert_eq!(
        call(&mut s, STANDBY, submit(5, 2)).0,
        Err(Error::NotActive {
            service: db(),
            node: STANDBY
        })
    );
    assert_eq!(
        call(&mut s, ACTIVE, submit(4, 2)).0,
        Err(Error::WrongEpoch {
            current: 5,
            given: 4
        })
    );
    assert_eq!(
        call(&mut s, ACTIVE, submit(5, 1)).0,
        Err(Error::SequenceNotIncreasing {
            latest: 1,
            given: 1
        })
    );
}

#[test]
fn standbys_acknowledge_recorded_checkpoints_monotonically() {
    let mut s = MemoryState::new();
    call(&mut s, ACTIVE, submit(5, 1)).0.unwrap();
    call(&mut s, ACTIVE, submit(5, 2)).0.unwrap();
    let ack = |sequence| Call::Acknowledge {
        service: db(),
        sequence,
    };
    call(&mut s, STANDBY, ack(2)).0.unwrap();
    assert_eq!(
        call(&mut s, STANDBY, ack(1)).0,
        Err(Error::AckRegression {
            previous: 2,
            given: 1
        })
    );
    assert_eq!(
        call(&mut s, STANDBY, ack(7)).0,
        Err(Error::UnknownCheckpoint {
            service: db(),
            sequence: 7
        })
    );
    assert!(matches!(
        call(&mut s, AccountId([9; 32]), ack(2)).0,
        Err(Error::Service(ServiceError::NotACandidate { .. }))
    ));
    assert_eq!(
        call(&mut s, ACTIVE, ack(2)).0,
        Err(Error::ActiveCannotAcknowledge {
            service: db(),
            node: ACTIVE
        })
    );
    // The producer holds what it recorded, the standby what it acknowledged.
    assert_eq!(
        acks(&Overlay::new(&s), &db()),
        vec![(ACTIVE, 2), (STANDBY, 2)]
    );
}

/// A standby may acknowledge a pushed checkpoint before it sees it recorded: naming the root
/// it applied, the acknowledgement counts only once the chain recorded that very root.
#[test]
fn an_acknowledgement_naming_its_root_counts_only_for_the_root_recorded() {
    let mut s = MemoryState::new();
    // Sent before the record with another root: held, and not counted when it lands.
    call(&mut s, STANDBY, ack_root(1, H256([7; 32]))).0.unwrap();
    call(&mut s, ACTIVE, submit(5, 1)).0.unwrap();
    // Another root than the one recorded (a checkpoint the chain never saw): refused.
    assert_eq!(
        call(&mut s, STANDBY, ack_root(1, H256([7; 32]))).0,
        Err(Error::RootMismatch {
            service: db(),
            sequence: 1,
            recorded: H256([1; 32]),
            given: H256([7; 32]),
        })
    );
    assert_eq!(acks(&Overlay::new(&s), &db()), vec![(ACTIVE, 1)]);
    let (result, events) = call(&mut s, STANDBY, ack_root(1, H256([1; 32])));
    result.unwrap();
    assert_standby_acknowledged_first(&s, &events);
    // The wire format: a call of its own, index 2.
    assert_eq!(ack_root(1, H256([1; 32])).encode()[0], 2);
}

/// `events` are the standby's acknowledgement of checkpoint 1, which both nodes now hold.
fn assert_standby_acknowledged_first(s: &MemoryState, events: &[Event]) {
    let acknowledged = Event::CheckpointAcknowledged {
        service: db(),
        node: STANDBY,
        sequence: 1,
    };
    assert_eq!(events, [acknowledged]);
    assert_eq!(
        acks(&Overlay::new(s), &db()),
        vec![(ACTIVE, 1), (STANDBY, 1)]
    );
}

/// A standby acknowledges a pushed checkpoint as soon as it applied it, which can be before
/// the active's record executes (an earlier block, or earlier in the same one): held, and
/// counted in the record's block if the root matches.
#[test]
fn an_acknowledgement_that_comes_before_the_record_counts_when_the_record_lands() {
    let mut s = MemoryState::new();
    let (result, events) = call(&mut s, STANDBY, ack_root(1, H256([1; 32])));
    result.unwrap();
    assert_eq!(events, vec![], "nothing counted before the record");
    assert_eq!(acks(&Overlay::new(&s), &db()), vec![]);
    let (result, events) = call(&mut s, ACTIVE, submit(5, 1));
    result.unwrap();
    assert_standby_acknowledged_first(&s, &events[1..]);

    // Held for another root than the one recorded: not counted, and dropped.
    call(&mut s, STANDBY, ack_root(2, H256([9; 32]))).0.unwrap();
    let (result, events) = call(&mut s, ACTIVE, submit(5, 2));
    result.unwrap();
    assert_eq!(events.len(), 1, "only the record: {events:?}");
    assert_eq!(data_lag(&Overlay::new(&s), &db(), &STANDBY).held, Some(1));
    // A newer one replaces the one held; one for a sequence the record skipped is dropped.
    call(&mut s, STANDBY, ack_root(3, H256([3; 32]))).0.unwrap();
    call(&mut s, STANDBY, ack_root(4, H256([4; 32]))).0.unwrap();
    call(&mut s, ACTIVE, submit(5, 3)).0.unwrap();
    assert_eq!(data_lag(&Overlay::new(&s), &db(), &STANDBY).held, Some(1));
    call(&mut s, STANDBY, ack_root(5, H256([5; 32]))).0.unwrap();
    call(&mut s, ACTIVE, submit(5, 6)).0.unwrap();
    call(&mut s, ACTIVE, submit(5, 5)).0.unwrap_err();
    assert_eq!(data_lag(&Overlay::new(&s), &db(), &STANDBY).held, Some(1));

    // Not without a root, not by the active, not far beyond the latest record.
    let unknown = |sequence| {
        Err(Error::UnknownCheckpoint {
            service: db(),
            sequence,
        })
    };
    let plain = Call::Acknowledge {
        service: db(),
        sequence: 7,
    };
    assert_eq!(call(&mut s, STANDBY, plain).0, unknown(7));
    assert!(matches!(
        call(&mut s, ACTIVE, ack_root(7, H256([7; 32]))).0,
        Err(Error::ActiveCannotAcknowledge { .. })
    ));
    let far = 6 + MAX_EARLY_ACK_AHEAD + 1;
    assert_eq!(
        call(&mut s, STANDBY, ack_root(far, H256([1; 32]))).0,
        unknown(far)
    );
}

#[test]
fn data_lag_is_the_time_between_the_held_and_the_latest_checkpoint() {
    let mut s = MemoryState::new();
    let lag = |s: &MemoryState, node| data_lag(&Overlay::new(s), &db(), &node);
    // Nothing recorded: nothing to lose.
    assert_eq!(lag(&s, STANDBY).lag_ms, Some(0));
    assert!(lag(&s, STANDBY).within(0));
    call_at(&mut s, ACTIVE, submit(5, 1), 1_000).0.unwrap();
    call_at(&mut s, ACTIVE, submit(5, 2), 1_800).0.unwrap();
    call_at(&mut s, ACTIVE, submit(5, 3), 2_500).0.unwrap();
    // Holding nothing while checkpoints exist: unbounded.
    assert_eq!(lag(&s, STANDBY).lag_ms, None);
    assert!(!lag(&s, STANDBY).within(u64::MAX));
    let ack = Call::Acknowledge {
        service: db(),
        sequence: 1,
    };
    call(&mut s, STANDBY, ack).0.unwrap();
    assert_eq!(
        lag(&s, STANDBY),
        DataLag {
            held: Some(1),
            latest: Some(3),
            lag_ms: Some(1_500),
            // What checkpoints 2 and 3 changed.
            lag_bytes: Some(2 + 3),
        }
    );
    assert!(lag(&s, STANDBY).within(1_500) && !lag(&s, STANDBY).within(1_499));
    assert_eq!(
        lag(&s, ACTIVE).lag_ms,
        Some(0),
        "the producer holds the latest"
    );
}

#[test]
fn old_checkpoints_are_pruned() {
    let mut s = MemoryState::new();
    for seq in 1..=RETAINED_CHECKPOINTS + 3 {
        call(&mut s, ACTIVE, submit(5, seq)).0.unwrap();
    }
    let kept = checkpoints(&Overlay::new(&s), &db());
    assert_eq!(kept.len() as u64, RETAINED_CHECKPOINTS);
    assert_eq!(kept.first().map(|(seq, _)| *seq), Some(4));
}
