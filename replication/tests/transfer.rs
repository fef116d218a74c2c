//! Fetching a checkpoint from several peers, some of them lying or silent, over the transfer
//! protocol's real messages (encoded and decoded as on the wire).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;

use drchain_replication::testdata::pseudo_random;
use drchain_replication::transfer::{
    serve, Fetch, PeerVerdict, TransferRequest, TransferResponse, MAX_OBJECTS_PER_REQUEST,
};
use drchain_replication::{materialize, snapshot_dir, ChunkStore, ChunkingParams, Dictionary};
use parity_scale_codec::Encode;

/// How a peer behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    Honest,
    /// Flips a byte in every object it sends.
    Corrupting,
    /// Sends another manifest than the one asked.
    WrongManifest,
    /// Never answers.
    Silent,
}

/// Runs a fetch to completion over `peers`, all serving `store` (with their faults); returns
/// the verdicts.
fn run(
    fetch: &mut Fetch<Peer>,
    peers: &[Peer],
    source: &ChunkStore,
    into: &ChunkStore,
) -> Vec<PeerVerdict<Peer>> {
    let mut verdicts = vec![];
    for _ in 0..1000 {
        if fetch.is_complete() {
            return verdicts;
        }
        assert!(
            !fetch.is_stalled(peers),
            "stalled with {} remaining",
            fetch.remaining()
        );
        for (peer, request) in fetch.next_requests(peers) {
            // Over the wire and back.
            let request = TransferRequest::decode_bounded(&request.encode()).unwrap();
            let response = match peer {
                Peer::Silent => {
                    fetch.on_failure(&peer, &request);
                    continue;
                }
                Peer::Honest => serve(source, &request),
                Peer::Corrupting => match serve(source, &request) {
                    TransferResponse::Objects { objects } => TransferResponse::Objects {
                        objects: objects
                            .into_iter()
                            .map(|(id, b)| {
                                (
                                    id,
                                    b.map(|mut b| {
                                        let last = b.len() - 1;
                                        b[last] ^= 1;
                                        b
                                    }),
                                )
                            })
                            .collect(),
                    },
                    other => other,
                },
                Peer::WrongManifest => match request {
                    TransferRequest::Manifest { .. } => TransferResponse::Manifest {
                        bytes: Some(b"\x01not the manifest".to_vec()),
                    },
                    _ => serve(source, &request),
                },
            };
            let response = TransferResponse::decode_bounded(&response.encode()).unwrap();
            if let Some(v) = fetch.on_response(&peer, &request, response, into).unwrap() {
                verdicts.push(v);
            }
        }
    }
    panic!("no progress");
}

fn dataset(dir: &Path) {
    fs::create_dir_all(dir.join("logs")).unwrap();
    fs::write(dir.join("blob.bin"), pseudo_random(3 * 1024 * 1024, 5)).unwrap();
    let rows: String = (0..40_000)
        .map(|i| format!("row {i} balance {}\n", (i * 7919) % 10_000))
        .collect();
    fs::write(dir.join("logs/rows.log"), rows).unwrap();
}

#[test]
fn a_checkpoint_is_fetched_from_honest_peers_despite_liars_and_silent_ones() {
    let base = tempfile::tempdir().unwrap();
    let source = base.path().join("source");
    dataset(&source);
    let active = ChunkStore::open(base.path().join("active")).unwrap();
    let samples: Vec<Vec<u8>> = fs::read(source.join("logs/rows.log"))
        .unwrap()
        .chunks(4096)
        .map(<[u8]>::to_vec)
        .collect();
    let dictionary = Dictionary::train(&samples).unwrap();
    let (manifest, _) = snapshot_dir(
        &source,
        &active,
        ChunkingParams::default(),
        Some(&dictionary),
    )
    .unwrap();
    let standby = ChunkStore::open(base.path().join("standby")).unwrap();

    let peers = [
        Peer::WrongManifest,
        Peer::Corrupting,
        Peer::Silent,
        Peer::Honest,
    ];
    let mut fetch = Fetch::new(manifest.root(), &standby);
    let verdicts = run(&mut fetch, &peers, &active, &standby);
    let bad: Vec<Peer> = verdicts
        .iter()
        .map(|PeerVerdict::Bad { peer, .. }| *peer)
        .collect();
    assert!(bad.contains(&Peer::Corrupting), "{verdicts:?}");
    assert!(!bad.contains(&Peer::Honest), "{verdicts:?}");
    assert_eq!(fetch.manifest(), Some(&manifest));

    let target = base.path().join("target");
    materialize(&manifest, &standby, &target, "1").unwrap();
    assert_eq!(
        fs::read(target.join("blob.bin")).unwrap(),
        fs::read(source.join("blob.bin")).unwrap()
    );
    assert_eq!(
        fs::read(target.join("logs/rows.log")).unwrap(),
        fs::read(source.join("logs/rows.log")).unwrap()
    );
}

/// An active store holding a checkpoint of the dataset, and an empty standby store.
fn fixture() -> (
    tempfile::TempDir,
    ChunkStore,
    ChunkStore,
    drchain_replication::Manifest,
) {
    let base = tempfile::tempdir().unwrap();
    let source = base.path().join("source");
    dataset(&source);
    let active = ChunkStore::open(base.path().join("active")).unwrap();
    let (manifest, _) = snapshot_dir(&source, &active, ChunkingParams::default(), None).unwrap();
    let standby = ChunkStore::open(base.path().join("standby")).unwrap();
    (base, active, standby, manifest)
}

#[test]
fn a_wrong_manifest_is_reported_and_fetched_elsewhere() {
    let (_base, active, standby, manifest) = fixture();
    let mut fetch = Fetch::new(manifest.root(), &standby);
    let verdicts = run(
        &mut fetch,
        &[Peer::WrongManifest, Peer::Honest],
        &active,
        &standby,
    );
    assert_eq!(verdicts.len(), 1);
    assert!(
        matches!(&verdicts[0], PeerVerdict::Bad { peer: Peer::WrongManifest, reason } if reason.contains("manifest"))
    );
}

#[test]
fn with_only_bad_or_silent_peers_the_fetch_says_it_is_stalled() {
    let (_base, active, standby, manifest) = fixture();
    let mut fetch: Fetch<Peer> = Fetch::new(manifest.root(), &standby);
    let peers = [Peer::Silent];
    for (peer, request) in fetch.next_requests(&peers) {
        fetch.on_failure(&peer, &request);
    }
    assert!(fetch.is_stalled(&peers));
    fetch.retry_skipped();
    assert!(!fetch.is_stalled(&peers));
    // An already complete checkpoint needs nothing.
    let done: Fetch<Peer> = Fetch::new(manifest.root(), &active);
    assert!(done.is_complete());
}

#[test]
fn oversized_or_malformed_messages_are_refused() {
    let too_many = TransferRequest::Objects {
        ids: vec![drchain_support::H256([1; 32]); MAX_OBJECTS_PER_REQUEST + 1],
    };
    assert!(TransferRequest::decode_bounded(&too_many.encode()).is_err());
    assert!(TransferRequest::decode_bounded(&[7, 1, 2]).is_err());
    let mut trailing = TransferRequest::Manifest {
        root: drchain_support::H256([2; 32]),
    }
    .encode();
    trailing.push(0);
    assert!(TransferRequest::decode_bounded(&trailing).is_err());
    assert!(TransferResponse::decode_bounded(&vec![1u8; 64 * 1024 * 1024]).is_err());
}
