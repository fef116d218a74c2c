//! Helpers for tests of the chain store, here and over other backends (the node's rocksdb
//! tests use them): behind the `testing` feature, never in a release build of the node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drchain_runtime::{build_block, Genesis};
use drchain_support::H256;

use crate::codec::{ConsensusMessage, WalRecord, WireCertificate, WireVote};
use crate::store::kv::KeyValueDb;
use crate::store::ChainStore;

/// A certificate for block `number` with no signatures: the store does not check them.
pub fn certificate(number: u64, hash: H256) -> WireCertificate {
    WireCertificate {
        height: number,
        round: 0,
        block_hash: hash,
        signatures: vec![],
    }
}

/// Builds and imports the next (empty) block; returns its hash. Panics on failure.
pub fn import_next<D: KeyValueDb>(store: &mut ChainStore<D>, g: &Genesis) -> H256 {
    let head = store.head().clone();
    let built = {
        let state = store.state();
        build_block(&state, &head, head.timestamp + 200, &g.hash(), [], 10).unwrap()
    };
    let hash = built.block.hash();
    let number = built.block.header.number;
    store
        .import(&built.block, built.executed, &certificate(number, hash))
        .unwrap();
    hash
}

/// A WAL record of a (badly signed) prevote by alice at height 1 in `round`.
pub fn vote_record(round: i64) -> WalRecord {
    WalRecord::Message(ConsensusMessage::Vote(WireVote {
        vote_type: 0,
        height: 1,
        round,
        value: None,
        validator: drchain_runtime::dev::dev_account("alice"),
        signature: drchain_support::Signature([1; 64]),
    }))
}

/// A commit certificate for block `number` signed by the dev validators `signers`.
pub fn signed_certificate(
    g: &Genesis,
    number: u64,
    hash: H256,
    signers: &[&str],
) -> WireCertificate {
    let keys: Vec<_> = signers
        .iter()
        .map(|n| drchain_runtime::dev::dev_key(n))
        .collect();
    WireCertificate::signed_by(&g.hash(), number, hash, &keys)
}

/// Builds the next block with `extrinsics`, certifies it by `signers` and imports it.
pub fn import_signed<D: KeyValueDb>(
    store: &mut ChainStore<D>,
    g: &Genesis,
    extrinsics: Vec<drchain_runtime::UncheckedExtrinsic>,
    signers: &[&str],
) -> H256 {
    let head = store.head().clone();
    let built = {
        let state = store.state();
        build_block(
            &state,
            &head,
            head.timestamp + 200,
            &g.hash(),
            extrinsics,
            100,
        )
        .unwrap()
    };
    let hash = built.block.hash();
    let number = built.block.header.number;
    let certificate = signed_certificate(g, number, hash, signers);
    store
        .import(&built.block, built.executed, &certificate)
        .unwrap();
    hash
}
