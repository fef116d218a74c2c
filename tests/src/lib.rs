//! Test harnesses for drchain's cross-crate tests.
//!
//! [`Replicas`] runs several independent copies of the runtime, as validators would: one
//! proposer builds each block, every replica executes it from its own state, and all must
//! reach the same state root.

#![forbid(unsafe_code)]
// A test harness: failing loudly is its job.
#![allow(clippy::expect_used, clippy::panic)]

pub mod net;
pub mod sim;

use std::collections::BTreeMap;

use drchain_runtime::dev::{dev_account, dev_key, specs};
use drchain_runtime::support::{AccountId, MemoryState, Overlay, H256};
use drchain_runtime::{
    build_block, execute_block, EventRecord, Header, RuntimeCall, UncheckedExtrinsic,
};

/// One node's copy of the chain.
#[derive(Debug)]
pub struct Replica {
    pub state: MemoryState,
    pub head: Header,
}

/// Several replicas of the local testnet chain.
#[derive(Debug)]
pub struct Replicas {
    pub replicas: Vec<Replica>,
    /// The chain's genesis hash.
    pub genesis_hash: H256,
    nonces: BTreeMap<AccountId, u64>,
    /// Events of every block, in order.
    pub events: Vec<(u64, EventRecord)>,
}

impl Replicas {
    /// `n` replicas of the local spec's genesis.
    pub fn local(n: usize) -> Self {
        let spec = specs::local().expect("local spec builds");
        let replicas = (0..n)
            .map(|_| {
                let g = spec.build_genesis().expect("genesis builds");
                Replica {
                    state: g.state,
                    head: g.header,
                }
            })
            .collect::<Vec<_>>();
        let genesis_hash = replicas[0].head.hash();
        Self {
            replicas,
            genesis_hash,
            nonces: BTreeMap::new(),
            events: vec![],
        }
    }

    /// Signs `call` as the dev account `who` with its next nonce.
    pub fn tx(&mut self, who: &str, call: RuntimeCall) -> UncheckedExtrinsic {
        let nonce = self.nonces.entry(dev_account(who)).or_default();
        let x = UncheckedExtrinsic::sign(&dev_key(who), &self.genesis_hash, *nonce, call);
        *nonce += 1;
        x
    }

    /// Replica `proposer` builds a block `dt` ms after the head; every replica executes and
    /// imports it. Panics if any replica disagrees. Returns the new head.
    pub fn block(&mut self, proposer: usize, dt: u64, txs: Vec<UncheckedExtrinsic>) -> Header {
        let p = &self.replicas[proposer];
        let built = build_block(
            &p.state,
            &p.head,
            p.head.timestamp + dt,
            &self.genesis_hash,
            txs,
            8192,
        )
        .expect("proposer builds");
        assert!(
            built.rejected.is_empty(),
            "proposer rejected {:?}",
            built.rejected
        );
        let number = built.block.header.number;
        for (i, r) in self.replicas.iter_mut().enumerate() {
            let executed = execute_block(&r.state, &r.head, &built.block, &self.genesis_hash)
                .unwrap_or_else(|e| panic!("replica {i} refused block #{number}: {e}"));
            r.state.apply(executed.changes, executed.trie);
            assert_eq!(
                r.state.root(),
                built.block.header.state_root,
                "replica {i} diverged at #{number}"
            );
            r.head = executed.header;
        }
        self.events
            .extend(built.executed.events.into_iter().map(|e| (number, e)));
        self.replicas[0].head.clone()
    }

    /// A read view of replica `i`'s state.
    pub fn view(&self, i: usize) -> Overlay<'_> {
        Overlay::new(&self.replicas[i].state)
    }
}
