#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drchain_runtime::dev::specs;
use drchain_runtime::{build_block, Genesis};
use drchain_support::{Backend, StateRead};

use super::kv::{KeyValueDb, MemoryDb};
use super::{ChainStore, StoreError};
use crate::testing::{certificate, import_next, vote_record};

fn local() -> Genesis {
    specs::local().unwrap().build_genesis().unwrap()
}

#[test]
fn genesis_is_written_once_and_read_back() {
    let g = local();
    let db = MemoryDb::new();
    let store = ChainStore::open(db.clone(), &g).unwrap();
    assert_eq!(store.head(), &g.header);
    assert_eq!(store.state().root(), g.state.root());
    assert_eq!(store.state().scan_prefix(&[]), g.state.scan_prefix(&[]));
    drop(store);
    let reopened = ChainStore::open(db, &g).unwrap();
    assert_eq!(reopened.head().hash(), g.hash());
    assert_eq!(reopened.hash(0).unwrap(), Some(g.hash()));
}

#[test]
fn a_database_of_another_chain_is_refused() {
    let db = MemoryDb::new();
    ChainStore::open(db.clone(), &local()).unwrap();
    let dev = specs::dev().unwrap().build_genesis().unwrap();
    match ChainStore::open(db, &dev) {
        Err(StoreError::WrongChain { expected, found }) => {
            assert_eq!(expected, dev.hash());
            assert_eq!(found, local().hash());
        }
        other => panic!("expected WrongChain, got {other:?}"),
    }
}

#[test]
fn imported_blocks_their_certificates_and_state_survive_a_reopen() {
    let g = local();
    let db = MemoryDb::new();
    let mut store = ChainStore::open(db.clone(), &g).unwrap();
    let mut replica = g.state.clone();
    let mut hashes = vec![];
    for _ in 0..5 {
        let head = store.head().clone();
        let built = build_block(&replica, &head, head.timestamp + 200, &g.hash(), [], 10).unwrap();
        replica.apply(built.executed.changes.clone(), built.executed.trie.clone());
        hashes.push(import_next(&mut store, &g));
        assert_eq!(
            store.state().root(),
            replica.root(),
            "trie kept on disk agrees"
        );
    }
    assert_eq!(store.head().number, 5);
    let reopened = ChainStore::open(db, &g).unwrap();
    assert_eq!(reopened.head().number, 5);
    for (i, hash) in hashes.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(reopened.hash(n).unwrap(), Some(*hash));
        assert_eq!(reopened.block(n).unwrap().unwrap().hash(), *hash);
        assert_eq!(reopened.certificate(n).unwrap().unwrap().block_hash, *hash);
    }
    assert_eq!(reopened.state().root(), replica.root());
}

#[test]
fn only_the_next_block_can_be_imported() {
    let g = local();
    let mut store = ChainStore::open(MemoryDb::new(), &g).unwrap();
    let head = store.head().clone();
    let built = {
        let state = store.state();
        build_block(&state, &head, head.timestamp + 200, &g.hash(), [], 10).unwrap()
    };
    let mut block = built.block.clone();
    block.header.number = 7;
    let hash = block.hash();
    match store.import(&block, built.executed, &certificate(7, hash)) {
        Err(StoreError::NotNext { head: 0, got: 7 }) => {}
        other => panic!("expected NotNext, got {other:?}"),
    }
    assert_eq!(store.head().number, 0);
}

#[test]
fn the_wal_survives_a_reopen_and_goes_with_its_block() {
    let g = local();
    let db = MemoryDb::new();
    let mut store = ChainStore::open(db.clone(), &g).unwrap();
    store
        .wal_append(1, &[vote_record(0), vote_record(1)], true)
        .unwrap();
    drop(store);
    let mut store = ChainStore::open(db.clone(), &g).unwrap();
    store.wal_append(1, &[vote_record(2)], false).unwrap();
    assert_eq!(
        store.wal(1).unwrap(),
        vec![vote_record(0), vote_record(1), vote_record(2)],
        "appends after a reopen do not overwrite"
    );
    import_next(&mut store, &g);
    assert!(
        store.wal(1).unwrap().is_empty(),
        "importing #1 drops its WAL"
    );
    drop(store);
    assert!(ChainStore::open(db, &g).unwrap().wal(1).unwrap().is_empty());
}

#[test]
fn events_and_the_failover_log_are_kept_per_block_and_per_service() {
    use drchain_runtime::{pallet_failover, pallet_service_status, RuntimeCall, RuntimeEvent};
    use drchain_support::{Health, ServiceName};

    let g = local();
    let db = MemoryDb::new();
    let mut store = ChainStore::open(db.clone(), &g).unwrap();
    // Alice's heartbeat makes her eligible: demo-db elects her at the end of the block.
    let heartbeat = drchain_runtime::UncheckedExtrinsic::sign(
        &drchain_runtime::dev::dev_key("alice"),
        &g.hash(),
        0,
        RuntimeCall::ServiceStatus(pallet_service_status::Call::Heartbeat {
            service: ServiceName::new("demo-db").unwrap(),
            epoch_seen: 0,
            health: Health::Healthy,
            applied_checkpoint: None,
        }),
    );
    let head = store.head().clone();
    let built = {
        let state = store.state();
        build_block(
            &state,
            &head,
            head.timestamp + 200,
            &g.hash(),
            [heartbeat],
            10,
        )
        .unwrap()
    };
    let expected = built.executed.events.clone();
    let hash = built.block.hash();
    store
        .import(&built.block, built.executed, &certificate(1, hash))
        .unwrap();
    import_next(&mut store, &g);
    drop(store);

    let store = ChainStore::open(db, &g).unwrap();
    let reader = store.reader();
    assert_eq!(reader.finalized_number().unwrap(), 2);
    assert_eq!(reader.events(1).unwrap(), Some(expected.clone()));
    assert_eq!(reader.events(0).unwrap(), None);
    let db_service = ServiceName::new("demo-db").unwrap();
    let failover: Vec<_> = expected
        .iter()
        .filter_map(|r| match &r.event {
            RuntimeEvent::Failover(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    assert!(
        failover
            .iter()
            .any(|e| matches!(e, pallet_failover::Event::Elected { .. })),
        "{failover:?}"
    );
    assert_eq!(
        reader.failover_count(&db_service).unwrap(),
        failover.len() as u64
    );
    let log = reader.failover_log(&db_service, 0, 100).unwrap();
    assert_eq!(
        log.iter().map(|r| r.event.clone()).collect::<Vec<_>>(),
        failover
    );
    assert!(log
        .iter()
        .enumerate()
        .all(|(i, r)| r.sequence == i as u64 && r.block == 1));
    // Paging, and no leaking between services whose names share a prefix.
    assert_eq!(
        reader.failover_log(&db_service, 1, 1).unwrap(),
        log[1..2].to_vec()
    );
    let api = ServiceName::new("demo-api").unwrap();
    assert!(reader.failover_log(&api, 0, 100).unwrap().is_empty());
    let prefix = ServiceName::new("demo").unwrap();
    assert!(reader.failover_log(&prefix, 0, 100).unwrap().is_empty());
    assert_eq!(reader.failover_count(&prefix).unwrap(), 0);
}

#[test]
fn a_pruning_store_keeps_the_last_blocks_and_genesis() {
    use super::BlocksPruning;
    let g = local();
    let db = MemoryDb::new();
    let mut store = ChainStore::open(db.clone(), &g).unwrap();
    // Archive first: 600 blocks.
    for _ in 0..600 {
        import_next(&mut store, &g);
    }
    assert!(store.block(1).unwrap().is_some());
    drop(store);
    // Restarted keeping 256: the backlog goes a little at each block, never all at once.
    let mut store = ChainStore::open(db.clone(), &g).unwrap();
    store.set_blocks_pruning(BlocksPruning::Last(256));
    import_next(&mut store, &g);
    assert_eq!(store.reader().base_number().unwrap(), 65);
    assert!(store.block(64).unwrap().is_none());
    assert!(store.block(65).unwrap().is_some());
    for _ in 0..400 {
        import_next(&mut store, &g);
    }
    let head = store.head().number;
    assert_eq!(head, 1001);
    let lowest = head - 255;
    assert_eq!(store.reader().base_number().unwrap(), lowest);
    for n in [1, 500, lowest - 1] {
        assert!(store.hash(n).unwrap().is_none(), "#{n} is kept");
        assert!(store.block(n).unwrap().is_none());
        assert!(store.certificate(n).unwrap().is_none());
        assert!(store.reader().events(n).unwrap().is_none());
    }
    for n in [lowest, head] {
        assert!(store.block(n).unwrap().is_some(), "#{n} is gone");
        assert!(store.certificate(n).unwrap().is_some());
    }
    assert_eq!(store.hash(0).unwrap(), Some(g.hash()), "genesis is kept");
    // Nothing of a pruned block is left behind: only the retained blocks' keys remain.
    let blocks = db
        .iter_from(b"b/")
        .take_while(|e| e.as_ref().unwrap().0.starts_with(b"b/"))
        .count();
    assert_eq!(blocks as u64, 256 + 1);
    drop(store);
    let store = ChainStore::open(db, &g).unwrap();
    assert_eq!(store.reader().base_number().unwrap(), lowest);
}

#[test]
fn blocks_pruning_takes_substrates_values() {
    use super::BlocksPruning;
    assert_eq!("archive".parse(), Ok(BlocksPruning::Archive));
    assert_eq!("archive-canonical".parse(), Ok(BlocksPruning::Archive));
    assert_eq!("4096".parse(), Ok(BlocksPruning::Last(4096)));
    assert!("10".parse::<BlocksPruning>().is_err(), "below the minimum");
    assert!("all".parse::<BlocksPruning>().is_err());
}

#[test]
fn storage_proofs_of_values_and_absences_check_against_the_head_and_survive_an_old_database() {
    use drchain_support::trie_proof::verify_storage_proof;
    let g = local();
    let db = MemoryDb::new();
    let mut store = ChainStore::open(db.clone(), &g).unwrap();
    for _ in 0..5 {
        import_next(&mut store, &g);
    }
    let root = store.head().state_root;
    let check = |store: &ChainStore<MemoryDb>| {
        for (k, v) in store.state().scan_prefix(b"") {
            let (value, proof) = store.reader().storage_proof(&k).unwrap();
            assert_eq!(value.as_deref(), Some(v.as_slice()));
            assert!(verify_storage_proof(&root, &k, Some(&v), &proof));
        }
        for absent in [b"no such key".as_slice(), b"x", b"Membership"] {
            let (value, proof) = store.reader().storage_proof(absent).unwrap();
            assert_eq!(value, None);
            assert!(verify_storage_proof(&root, absent, None, &proof));
        }
    };
    check(&store);
    drop(store);
    // A database from before the value-hash index: it is built when the store opens.
    let old: Vec<Vec<u8>> = db
        .iter_from(b"p/")
        .map(|e| e.unwrap().0)
        .take_while(|k| k.starts_with(b"p/"))
        .chain([b"m/value-hashes".to_vec()])
        .collect();
    db.write(old.into_iter().map(|k| (k, None)).collect(), true)
        .unwrap();
    let store = ChainStore::open(db, &g).unwrap();
    check(&store);
}

#[test]
fn past_states_are_read_back_exactly_within_the_state_retention() {
    use super::StatePruning;
    use std::collections::BTreeMap;
    let g = local();
    let mut store = ChainStore::open(MemoryDb::new(), &g).unwrap();
    let mut seen: Vec<BTreeMap<Vec<u8>, Vec<u8>>> =
        vec![store.state().scan_prefix(b"").into_iter().collect()];
    for _ in 0..12 {
        import_next(&mut store, &g);
        seen.push(store.state().scan_prefix(b"").into_iter().collect());
    }
    let reader = store.reader();
    for (number, state) in seen.iter().enumerate() {
        let number = number as u64;
        assert_eq!(
            &reader.entries_at(number).unwrap(),
            state,
            "state of #{number}"
        );
        for (k, v) in state {
            assert_eq!(reader.value_at(k, number).unwrap().as_ref(), Some(v));
        }
    }
    // Some key changed along the way, or this test shows nothing.
    assert_ne!(seen[0], seen[12]);

    store.set_state_pruning(StatePruning::Last(4));
    import_next(&mut store, &g);
    let reader = store.reader();
    assert_eq!(reader.state_base().unwrap(), 9);
    assert!(matches!(
        reader.entries_at(8),
        Err(StoreError::StateNotKept { number: 8, .. })
    ));
    assert_eq!(&reader.entries_at(9).unwrap(), &seen[9]);
    assert!("archive".parse::<StatePruning>() == Ok(StatePruning::Archive));
    assert!("0".parse::<StatePruning>().is_err());
}

/// The key spaces that grow with the chain unless pruned, and how many keys each holds.
fn growing_key_counts(db: &MemoryDb) -> Vec<(&'static str, usize)> {
    [
        ("blocks", b"b/".as_slice()),
        ("certificates", b"c/"),
        ("events", b"e/"),
        ("height_index", b"h/"),
        ("undo_logs", b"u/"),
        ("state", b"s/"),
    ]
    .into_iter()
    .map(|(kind, prefix)| {
        let count = db
            .iter_from(prefix)
            .take_while(|e| e.as_ref().is_ok_and(|(k, _)| k.starts_with(prefix)))
            .count();
        (kind, count)
    })
    .collect()
}

#[test]
fn with_pruning_a_long_run_of_heartbeat_blocks_keeps_the_database_bounded() {
    use super::{BlocksPruning, StatePruning};
    use crate::testing::import_signed;
    use drchain_runtime::{pallet_service_status, RuntimeCall};
    use drchain_support::{Health, ServiceName};

    let g = local();
    let db = MemoryDb::new();
    let mut store = ChainStore::open(db.clone(), &g).unwrap();
    store.set_blocks_pruning(BlocksPruning::Last(256));
    store.set_state_pruning(StatePruning::Last(256));
    let mut counts = vec![];
    for nonce in 0..1600u64 {
        let heartbeat = drchain_runtime::UncheckedExtrinsic::sign(
            &drchain_runtime::dev::dev_key("alice"),
            &g.hash(),
            nonce,
            RuntimeCall::ServiceStatus(pallet_service_status::Call::Heartbeat {
                service: ServiceName::new("demo-db").unwrap(),
                epoch_seen: 0,
                health: Health::Healthy,
                applied_checkpoint: None,
            }),
        );
        import_signed(&mut store, &g, vec![heartbeat], &[]);
        if (nonce + 1) % 800 == 0 {
            counts.push(growing_key_counts(&db));
        }
    }
    // After 800 blocks and after 1600: the same number of keys of every kind.
    assert_eq!(counts[0], counts[1]);
    let kept = |kind: &str| counts[1].iter().find(|(k, _)| *k == kind).unwrap().1;
    assert_eq!(kept("blocks"), 256 + 1, "the last 256 and genesis");
    assert_eq!(kept("certificates"), 256);
    assert_eq!(kept("undo_logs"), 256);
}
