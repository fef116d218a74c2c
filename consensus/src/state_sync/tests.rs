#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use drchain_runtime::dev::{dev_account, dev_key, specs};
use drchain_runtime::{pallet_membership, AdminCall, Genesis, RuntimeCall, UncheckedExtrinsic};
use drchain_support::{Backend, Overlay, StateRead};

use super::client::Outcome;
use super::*;
use crate::store::kv::MemoryDb;
use crate::store::ChainStore;
use crate::testing::{import_signed, signed_certificate};

const FOUR: &[&str] = &["alice", "bob", "charlie", "dave"];
const THREE: &[&str] = &["alice", "bob", "charlie"];

fn trust_root(g: &Genesis) -> TrustRoot {
    TrustRoot {
        genesis_hash: g.hash(),
        genesis: g.header.clone(),
        validators: pallet_membership::validators(&Overlay::new(&g.state)),
    }
}

/// A chain of `blocks` blocks whose validator set loses dave at block 3 (revoked in block 1).
fn chain(blocks: u64) -> (Genesis, ChainStore<MemoryDb>) {
    let g = specs::local().unwrap().build_genesis().unwrap();
    let mut store = ChainStore::open(MemoryDb::new(), &g).unwrap();
    let revoke = RuntimeCall::Membership(pallet_membership::Call::Revoke {
        account: dev_account("dave"),
        reason: "decommissioned".into(),
    });
    let propose = RuntimeCall::Admin(AdminCall::Propose {
        call: Box::new(revoke),
    });
    let x = UncheckedExtrinsic::sign(&dev_key("alice"), &g.hash(), 0, propose);
    import_signed(&mut store, &g, vec![x], FOUR);
    for n in 2..=blocks {
        let signers = if n < 3 { FOUR } else { THREE };
        import_signed(&mut store, &g, vec![], signers);
    }
    (g, store)
}

fn snapshot(store: &ChainStore<MemoryDb>) -> StateSnapshot {
    let number = store.head().number;
    let target = SyncTarget {
        block: store.block(number).unwrap().unwrap(),
        certificate: store.certificate(number).unwrap().unwrap(),
        set_changes: store.reader().set_changes(number).unwrap(),
    };
    StateSnapshot::new(target, store.state().scan_prefix(b"")).unwrap()
}

/// A serving peer: honest, or one that changes a byte of every value it sends.
struct Server {
    snapshot: StateSnapshot,
    corrupt: bool,
}

impl Server {
    fn answer(&self, request: &StateSyncRequest) -> StateSyncResponse {
        match request {
            StateSyncRequest::Target => {
                StateSyncResponse::Target(Some(Box::new(self.snapshot.target().clone())))
            }
            StateSyncRequest::Subtree { height, id } => {
                if *height != self.snapshot.number() {
                    return StateSyncResponse::Unavailable;
                }
                match self.snapshot.answer(id) {
                    StateSyncResponse::Entries(mut entries) if self.corrupt => {
                        if let Some((_, v)) = entries.first_mut() {
                            v.push(0xff);
                        }
                        StateSyncResponse::Entries(entries)
                    }
                    other => other,
                }
            }
        }
    }
}

/// Peers serving the head of `store`, each honest or corrupting (`true`).
fn servers(
    store: &ChainStore<MemoryDb>,
    peers: &[(&'static str, bool)],
) -> BTreeMap<&'static str, Server> {
    peers
        .iter()
        .map(|(name, corrupt)| {
            let server = Server {
                snapshot: snapshot(store),
                corrupt: *corrupt,
            };
            (*name, server)
        })
        .collect()
}

/// Runs the client against `servers` until it finishes; returns the outcome and the peers it
/// found faulty.
fn run(
    client: &mut StateSyncClient<&'static str>,
    servers: &BTreeMap<&'static str, Server>,
) -> (Outcome, Vec<&'static str>) {
    for name in servers.keys() {
        client.peer_connected(*name);
    }
    let mut faulty = vec![];
    for step in 0..10_000u64 {
        let now = step * 10;
        for (peer, request) in client.requests(now) {
            let response = servers[peer].answer(&request);
            if client.response(&peer, now, &request, response).is_err() && !faulty.contains(&peer) {
                faulty.push(peer);
            }
        }
        if let Some(outcome) = client.take_outcome() {
            return (outcome, faulty);
        }
    }
    panic!("the sync never finished");
}

#[test]
fn a_joining_node_takes_the_state_of_a_checked_block_and_follows_the_chain_from_it() {
    let (g, mut store) = chain(300);
    let servers = servers(&store, &[("bob", false), ("charlie", false)]);
    let mut client = StateSyncClient::new(trust_root(&g), 0);
    let (outcome, faulty) = run(&mut client, &servers);
    assert!(faulty.is_empty());
    let Outcome::Synced(finished) = outcome else {
        panic!("no state synced");
    };
    assert_eq!(finished.target.block.header.number, 300);

    let mut joined = ChainStore::open(MemoryDb::new(), &g).unwrap();
    joined
        .install_state(&finished.target, finished.entries)
        .unwrap();
    assert_eq!(joined.head().number, 300);
    assert_eq!(joined.state().root(), store.head().state_root);
    assert_eq!(joined.reader().base_number().unwrap(), 300);
    assert!(joined.block(299).unwrap().is_none());
    // It serves the set change it followed, and imports the chain's next block.
    assert_eq!(joined.reader().set_changes(300).unwrap().len(), 1);
    let next = import_signed(&mut store, &g, vec![], THREE);
    let block = store.block(301).unwrap().unwrap();
    let executed =
        drchain_runtime::execute_block(&joined.state(), joined.head(), &block, &g.hash()).unwrap();
    joined
        .import(&block, executed, &store.certificate(301).unwrap().unwrap())
        .unwrap();
    assert_eq!(joined.head().hash(), next);
}

/// The chain's state at block 300 plus about 3 MiB more (as if a block had written it): more
/// than one answer can carry. Returns the snapshot and every entry.
fn large_snapshot(g: &Genesis, store: &ChainStore<MemoryDb>) -> (StateSnapshot, Entries) {
    let big: BTreeMap<Vec<u8>, Option<Vec<u8>>> = (0..3000u32)
        .map(|i| {
            (
                format!("filler/{i}").into_bytes(),
                Some(vec![i as u8; 1024]),
            )
        })
        .collect();
    let target_block = store.block(300).unwrap().unwrap();
    let mut entries = store.state().scan_prefix(b"");
    entries.extend(big.into_iter().map(|(k, v)| (k, v.unwrap_or_default())));
    // A snapshot whose root is that of the filled state (as if a block had written it).
    let mut header = target_block.header.clone();
    let changes = entries
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    header.state_root = drchain_support::StateTrie::default().prepare(&changes).root;
    let block = drchain_runtime::Block {
        header,
        extrinsics: target_block.extrinsics.clone(),
    };
    let target = SyncTarget {
        certificate: signed_certificate(g, 300, block.hash(), THREE),
        block,
        set_changes: store.reader().set_changes(300).unwrap(),
    };
    (
        StateSnapshot::new(target, entries.clone()).unwrap(),
        entries,
    )
}

#[test]
fn a_large_state_comes_in_many_checked_pieces() {
    let (g, store) = chain(300);
    let (snapshot, mut entries) = large_snapshot(&g, &store);
    assert!(matches!(
        snapshot.answer(&drchain_support::trie_proof::SubtreeId::ROOT),
        StateSyncResponse::Split { .. }
    ));
    let servers = BTreeMap::from([(
        "bob",
        Server {
            snapshot,
            corrupt: false,
        },
    )]);
    let mut client = StateSyncClient::new(trust_root(&g), 0);
    let (outcome, _) = run(&mut client, &servers);
    let Outcome::Synced(finished) = outcome else {
        panic!("no state synced");
    };
    let mut got = finished.entries;
    got.sort();
    entries.sort();
    assert_eq!(got, entries);
}

/// Subtree requests a client sends before it finishes, or `limit` if it gets there first
/// (an interruption). The checked subtrees are kept in `store` as a node keeps them.
fn fetch(
    client: &mut StateSyncClient<&'static str>,
    server: &Server,
    store: &ChainStore<MemoryDb>,
    limit: usize,
) -> usize {
    client.peer_connected("bob");
    let mut subtrees = 0;
    for step in 0..10_000u64 {
        for (peer, request) in client.requests(step * 10) {
            if matches!(request, StateSyncRequest::Subtree { .. }) {
                if subtrees == limit {
                    store.keep_sync_progress(client.take_checked()).unwrap();
                    return subtrees;
                }
                subtrees += 1;
            }
            let response = server.answer(&request);
            client
                .response(&peer, step * 10, &request, response)
                .unwrap();
        }
        store.keep_sync_progress(client.take_checked()).unwrap();
        if client.take_outcome().is_some() {
            return subtrees;
        }
    }
    panic!("the sync never finished");
}

#[test]
fn an_interrupted_state_sync_resumes_without_fetching_again_what_it_had() {
    let (g, store) = chain(300);
    let (snapshot, _) = large_snapshot(&g, &store);
    let server = Server {
        snapshot,
        corrupt: false,
    };
    let whole = fetch(
        &mut StateSyncClient::new(trust_root(&g), 0),
        &server,
        &ChainStore::open(MemoryDb::new(), &g).unwrap(),
        usize::MAX,
    );

    let joining = ChainStore::open(MemoryDb::new(), &g).unwrap();
    // Interrupted once the splits are done and some leaves of the trie are in.
    fetch(
        &mut StateSyncClient::new(trust_root(&g), 0),
        &server,
        &joining,
        whole * 3 / 4,
    );
    let kept = joining.sync_progress().unwrap();
    assert!(!kept.is_empty());
    // Restarted: the subtrees kept are not asked again.
    let mut client = StateSyncClient::new(trust_root(&g), 0);
    let reused = kept.len();
    client.resume(kept);
    let second = fetch(&mut client, &server, &joining, usize::MAX);
    assert!(
        second == whole - reused,
        "{second} subtrees fetched after the restart, {whole} for the whole state, {reused} kept"
    );
}

#[test]
fn a_peer_serving_a_corrupted_state_chunk_is_refused_and_the_chunk_fetched_elsewhere() {
    let (g, store) = chain(300);
    // Mallory is asked first: her name sorts first.
    let servers = servers(&store, &[("mallory", true), ("trent", false)]);
    let mut client = StateSyncClient::new(trust_root(&g), 0);
    let (outcome, faulty) = run(&mut client, &servers);
    assert_eq!(faulty, vec!["mallory"]);
    let Outcome::Synced(finished) = outcome else {
        panic!("no state synced");
    };
    let mut joined = ChainStore::open(MemoryDb::new(), &g).unwrap();
    joined
        .install_state(&finished.target, finished.entries)
        .unwrap();
    assert_eq!(joined.state().root(), store.head().state_root);
}

#[test]
fn targets_with_forged_certificates_or_set_changes_are_refused() {
    let (g, store) = chain(300);
    let root = trust_root(&g);
    let good = snapshot(&store).target().clone();
    target::verify_target(&root, &good).unwrap();

    // Signed by a member that is no validator.
    let mut forged = good.clone();
    forged.certificate = signed_certificate(&g, 300, good.block.hash(), &["alice", "bob", "eve"]);
    assert!(matches!(
        target::verify_target(&root, &forged),
        Err(TargetError::BadCertificate { .. })
    ));
    // Too few signers.
    let mut thin = good.clone();
    thin.certificate = signed_certificate(&g, 300, good.block.hash(), &["alice", "bob"]);
    assert!(target::verify_target(&root, &thin).is_err());
    // A set change claiming another set than its state holds.
    let mut swapped = good.clone();
    swapped.set_changes[0].validators = vec![dev_account("eve")];
    assert!(matches!(
        target::verify_target(&root, &swapped),
        Err(TargetError::ChangeBadProof { .. })
    ));
    // A body its header does not commit to.
    let mut body = good.clone();
    body.block.extrinsics.push(UncheckedExtrinsic::sign(
        &dev_key("bob"),
        &g.hash(),
        0,
        RuntimeCall::Admin(AdminCall::Approve {
            proposal: drchain_support::H256::default(),
        }),
    ));
    assert!(target::verify_target(&root, &body).is_err());

    // The client refuses such a peer and syncs from the honest one.
    let mut client = StateSyncClient::new(root, 0);
    client.peer_connected("mallory");
    let requests = client.requests(0);
    assert_eq!(requests, vec![("mallory", StateSyncRequest::Target)]);
    let lie = StateSyncResponse::Target(Some(Box::new(forged)));
    assert!(matches!(
        client.response(&"mallory", 0, &StateSyncRequest::Target, lie),
        Err(Misbehaviour::BadTarget(_))
    ));
}

#[test]
fn a_node_close_behind_follows_block_by_block_and_one_far_behind_takes_the_state() {
    let (g, store) = chain(700);
    let servers = servers(&store, &[("bob", false), ("charlie", false)]);
    // 700 is not a sync point, but the servers here take any head as one.
    let mut close = StateSyncClient::new(trust_root(&g), 500);
    let (outcome, _) = run(&mut close, &servers);
    assert!(
        matches!(outcome, Outcome::FullSync),
        "500 is one sync point behind 700"
    );
    let mut far = StateSyncClient::new(trust_root(&g), 400);
    let (outcome, _) = run(&mut far, &servers);
    assert!(matches!(outcome, Outcome::Synced(_)));
}

#[test]
fn with_no_sync_point_above_its_head_a_node_follows_block_by_block() {
    let (g, _store) = chain(5);
    let mut client: StateSyncClient<&str> = StateSyncClient::new(trust_root(&g), 0);
    client.peer_connected("bob");
    for (peer, request) in client.requests(0) {
        client
            .response(&peer, 0, &request, StateSyncResponse::Target(None))
            .unwrap();
    }
    assert!(client.take_outcome().is_none());
    client.requests(client::GIVE_UP_MS);
    assert!(matches!(client.take_outcome(), Some(Outcome::FullSync)));
}
