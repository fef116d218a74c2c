//! The transaction pool: transactions validated against the finalized state, kept per sender
//! in nonce order, bounded in count and bytes, in all and per sender. Failover-critical transactions (heartbeats, promotion
//! completions) come first in blocks and may evict ordinary ones when the pool is full, so a
//! flood of ordinary transactions never starves failure detection.

use std::collections::{BTreeMap, HashMap};

use drchain_runtime::executive::PRIORITY_FAILOVER;
use drchain_runtime::{
    build_block_in_round, proposal_timestamp, revalidate_transaction, validate_transaction,
    BlockError, BuiltBlock, Header, TransactionError, UncheckedExtrinsic,
};
use drchain_support::{AccountId, Backend, H256};

/// Why a transaction was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The runtime refuses it.
    #[error("invalid transaction: {0}")]
    Invalid(#[from] TransactionError),
    /// Already in the pool.
    #[error("transaction {hash} is already pending")]
    AlreadyKnown { hash: H256 },
    /// Another pending transaction of the sender has this nonce.
    #[error("nonce {nonce} of {sender} is already taken by a pending transaction")]
    NonceTaken { sender: AccountId, nonce: u64 },
    /// No room.
    #[error("the pool is full ({max} transactions)")]
    Full {
        /// The limit.
        max: usize,
    },
    /// No room left in the pool's byte budget.
    #[error("the pool is full ({max_bytes} bytes)")]
    FullBytes {
        /// The limit.
        max_bytes: usize,
    },
    /// The sender's pending transactions already take its share of the pool.
    #[error("{sender} has {pending_bytes} bytes pending; at most {max_bytes} per sender")]
    SenderQuota {
        sender: AccountId,
        /// What it has pending.
        pending_bytes: usize,
        /// [`MAX_SENDER_BYTES`].
        max_bytes: usize,
    },
}

/// Most bytes of pending transactions per sender: one block's worth, so that no member can
/// fill blocks (or the pool) on its own.
pub const MAX_SENDER_BYTES: usize = drchain_runtime::executive::MAX_BLOCK_BODY_BYTES;
/// Most bytes of pending transactions in all.
pub const MAX_POOL_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
struct Entry {
    extrinsic: UncheckedExtrinsic,
    sender: AccountId,
    nonce: u64,
    priority: u8,
    arrival: u64,
    /// Encoded size.
    bytes: usize,
}

/// The pool.
#[derive(Debug)]
pub struct TransactionPool {
    genesis: H256,
    max: usize,
    entries: HashMap<H256, Entry>,
    by_sender: BTreeMap<AccountId, BTreeMap<u64, H256>>,
    arrivals: u64,
    /// Encoded size of all entries.
    bytes: usize,
}

impl TransactionPool {
    /// An empty pool of at most `max` transactions for the chain `genesis`.
    pub fn new(genesis: H256, max: usize) -> Self {
        Self {
            genesis,
            max,
            entries: HashMap::new(),
            by_sender: BTreeMap::new(),
            arrivals: 0,
            bytes: 0,
        }
    }

    /// Number of pending transactions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `hash` is pending.
    pub fn contains(&self, hash: &H256) -> bool {
        self.entries.contains_key(hash)
    }

    /// Every pending transaction (for RPC), in block order.
    pub fn pending(&self) -> Vec<UncheckedExtrinsic> {
        self.block_candidates()
    }

    /// Validates `x` against `state` (the finalized state) and adds it.
    pub fn submit(
        &mut self,
        state: &dyn Backend,
        x: UncheckedExtrinsic,
    ) -> Result<H256, PoolError> {
        let valid = validate_transaction(state, &x, &self.genesis)?;
        if self.entries.contains_key(&valid.hash) {
            return Err(PoolError::AlreadyKnown { hash: valid.hash });
        }
        if self
            .by_sender
            .get(&valid.sender)
            .is_some_and(|n| n.contains_key(&valid.nonce))
        {
            return Err(PoolError::NonceTaken {
                sender: valid.sender,
                nonce: valid.nonce,
            });
        }
        let bytes = parity_scale_codec::Encode::encoded_size(&x);
        let pending_bytes = self.sender_bytes(&valid.sender);
        if pending_bytes + bytes > MAX_SENDER_BYTES {
            return Err(PoolError::SenderQuota {
                sender: valid.sender,
                pending_bytes,
                max_bytes: MAX_SENDER_BYTES,
            });
        }
        if self.entries.len() >= self.max && !self.evict_for(valid.priority) {
            return Err(PoolError::Full { max: self.max });
        }
        while self.bytes + bytes > MAX_POOL_BYTES {
            if !self.evict_for(valid.priority) {
                return Err(PoolError::FullBytes {
                    max_bytes: MAX_POOL_BYTES,
                });
            }
        }
        self.arrivals += 1;
        self.bytes += bytes;
        self.by_sender
            .entry(valid.sender)
            .or_default()
            .insert(valid.nonce, valid.hash);
        self.entries.insert(
            valid.hash,
            Entry {
                extrinsic: x,
                sender: valid.sender,
                nonce: valid.nonce,
                priority: valid.priority,
                arrival: self.arrivals,
                bytes,
            },
        );
        Ok(valid.hash)
    }

    /// Makes room for a failover-critical transaction by dropping the newest ordinary one
    /// with the highest nonce of its sender (so no gap is left behind a kept transaction).
    fn evict_for(&mut self, priority: u8) -> bool {
        if priority < PRIORITY_FAILOVER {
            return false;
        }
        let victim = self
            .by_sender
            .values()
            .filter_map(|nonces| nonces.values().next_back())
            .filter_map(|h| self.entries.get(h).map(|e| (h, e)))
            .filter(|(_, e)| e.priority < PRIORITY_FAILOVER)
            .max_by_key(|(_, e)| e.arrival)
            .map(|(h, _)| *h);
        match victim {
            Some(hash) => {
                self.remove(&hash);
                true
            }
            None => false,
        }
    }

    /// The nonce after `sender`'s pending transactions that follow `next` (the chain's next
    /// nonce for it) without a gap: what its next transaction should use.
    pub fn next_nonce(&self, sender: &AccountId, next: u64) -> u64 {
        let mut nonce = next;
        if let Some(pending) = self.by_sender.get(sender) {
            for n in pending.range(next..).map(|(n, _)| *n) {
                if n != nonce {
                    break;
                }
                nonce += 1;
            }
        }
        nonce
    }

    /// Takes these transactions out of the pool (an operator's `author_removeExtrinsic`);
    /// returns those that were there.
    pub fn withdraw(&mut self, hashes: &[H256]) -> Vec<H256> {
        hashes
            .iter()
            .filter(|h| self.remove(h).is_some())
            .copied()
            .collect()
    }

    /// Bytes `sender` has pending.
    fn sender_bytes(&self, sender: &AccountId) -> usize {
        self.by_sender.get(sender).map_or(0, |nonces| {
            nonces
                .values()
                .filter_map(|h| self.entries.get(h))
                .map(|e| e.bytes)
                .sum()
        })
    }

    fn remove(&mut self, hash: &H256) -> Option<Entry> {
        let entry = self.entries.remove(hash)?;
        self.bytes -= entry.bytes;
        if let Some(nonces) = self.by_sender.get_mut(&entry.sender) {
            nonces.remove(&entry.nonce);
            if nonces.is_empty() {
                self.by_sender.remove(&entry.sender);
            }
        }
        Some(entry)
    }

    /// Transactions in the order a block should try them: senders whose next transaction is
    /// failover-critical first, then by arrival; each sender's transactions in nonce order.
    pub fn block_candidates(&self) -> Vec<UncheckedExtrinsic> {
        let mut senders: Vec<(u8, u64, &BTreeMap<u64, H256>)> = self
            .by_sender
            .values()
            .filter_map(|nonces| {
                let first = nonces.values().next()?;
                let e = self.entries.get(first)?;
                let priority = nonces
                    .values()
                    .filter_map(|h| self.entries.get(h))
                    .map(|e| e.priority)
                    .max()
                    .unwrap_or(e.priority);
                Some((priority, e.arrival, nonces))
            })
            .collect();
        senders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        senders
            .into_iter()
            .flat_map(|(_, _, nonces)| nonces.values())
            .filter_map(|h| self.entries.get(h).map(|e| e.extrinsic.clone()))
            .collect()
    }

    /// Builds a block for consensus round `round` on `head` (whose state is `state`) from the
    /// pending transactions, at most `max_extrinsics`, stamped with the local clock (after
    /// the parent's time).
    pub fn build_block(
        &self,
        state: &dyn Backend,
        head: &Header,
        now_ms: u64,
        round: u32,
        max_extrinsics: usize,
    ) -> Result<BuiltBlock, BlockError> {
        let timestamp = proposal_timestamp(head, now_ms);
        build_block_in_round(
            state,
            head,
            timestamp,
            round,
            &self.genesis,
            self.block_candidates(),
            max_extrinsics,
        )
    }

    /// After block `block_number` is finalized: drops its transactions, and re-checks the rest
    /// against the state (permission and nonce; signatures were checked on entry), dropping
    /// those that can no longer be included. Returns the dropped ones with the reason.
    ///
    /// `state` is at `state_number`; when it is already past the block (a batch of synced
    /// blocks is applied before their outcomes are handled), the re-check waits for the last
    /// block of the batch: a later block may include a transaction the state already counts.
    pub fn finalized(
        &mut self,
        state: &dyn Backend,
        state_number: u64,
        block_number: u64,
        included: &[H256],
    ) -> Vec<(H256, TransactionError)> {
        for hash in included {
            self.remove(hash);
        }
        if state_number > block_number {
            return vec![];
        }
        let mut dropped = vec![];
        let hashes: Vec<H256> = self.entries.keys().copied().collect();
        for hash in hashes {
            let Some(entry) = self.entries.get(&hash) else {
                continue;
            };
            if let Err(e) = revalidate_transaction(state, &entry.extrinsic) {
                self.remove(&hash);
                dropped.push((hash, e));
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use drchain_runtime::dev::{dev_key, specs};
    use drchain_runtime::support::{Health, ServiceName};
    use drchain_runtime::{pallet_network_config, pallet_service_status, Genesis, RuntimeCall};

    use super::*;

    fn genesis() -> Genesis {
        specs::local().unwrap().build_genesis().unwrap()
    }

    fn ordinary(g: &Genesis, who: &str, nonce: u64) -> UncheckedExtrinsic {
        let call = RuntimeCall::NetworkConfig(pallet_network_config::Call::SetBootnodes {
            bootnodes: vec![format!("/dns4/n{nonce}/tcp/1")],
        });
        UncheckedExtrinsic::sign(&dev_key(who), &g.hash(), nonce, call)
    }

    fn heartbeat(g: &Genesis, who: &str, nonce: u64) -> UncheckedExtrinsic {
        let call = RuntimeCall::ServiceStatus(pallet_service_status::Call::Heartbeat {
            service: ServiceName::new("demo-db").unwrap(),
            epoch_seen: 0,
            health: Health::Healthy,
            applied_checkpoint: None,
        });
        UncheckedExtrinsic::sign(&dev_key(who), &g.hash(), nonce, call)
    }

    /// A valid transaction of about `bytes` bytes (a call whose failure does not matter: a
    /// block includes it all the same).
    fn large(g: &Genesis, who: &str, nonce: u64, bytes: usize) -> UncheckedExtrinsic {
        let call = RuntimeCall::NetworkConfig(pallet_network_config::Call::SetBootnodes {
            bootnodes: vec!["x".repeat(bytes)],
        });
        UncheckedExtrinsic::sign(&dev_key(who), &g.hash(), nonce, call)
    }

    /// Gossip carries a proposal (with its whole block) in one message of at most
    /// `MAX_MESSAGE_BYTES`: however many valid transactions are pending, the block built must
    /// fit, or no proposal is ever published and the chain halts.
    #[test]
    fn a_block_fits_in_one_gossip_message_whatever_the_pool_holds() {
        let g = genesis();
        let mut pool = TransactionPool::new(g.hash(), 65_536);
        for who in ["alice", "bob", "charlie", "dave", "eve"] {
            for nonce in 0..=drchain_runtime::executive::MAX_FUTURE_NONCES {
                let _ = pool.submit(&g.state, large(&g, who, nonce, 60_000));
            }
        }
        let built = pool
            .build_block(&g.state, &g.header, g.header.timestamp + 100, 0, 4096)
            .unwrap();
        assert!(!built.block.extrinsics.is_empty());
        let proposal = crate::codec::ConsensusMessage::Proposal(crate::codec::WireProposal {
            height: 1,
            round: 0,
            pol_round: -1,
            proposer: drchain_runtime::dev::dev_account("alice"),
            block: built.block,
            signature: drchain_runtime::support::Signature([0; 64]),
        });
        let size = parity_scale_codec::Encode::encoded_size(&proposal);
        assert!(
            size <= crate::codec::MAX_MESSAGE_BYTES,
            "a proposal of {size} bytes cannot be gossiped"
        );
    }

    /// One member cannot fill the pool (or every block): its pending transactions are held
    /// to a byte quota, and others' transactions still get in.
    #[test]
    fn each_sender_has_a_byte_quota() {
        let g = genesis();
        let mut pool = TransactionPool::new(g.hash(), 65_536);
        let mut accepted = 0;
        let refused = loop {
            match pool.submit(&g.state, large(&g, "eve", accepted, 60_000)) {
                Ok(_) => accepted += 1,
                Err(e) => break e,
            }
        };
        assert!(
            matches!(refused, PoolError::SenderQuota { .. }),
            "{refused:?}"
        );
        assert_eq!(accepted as usize, MAX_SENDER_BYTES / 60_000);
        pool.submit(&g.state, large(&g, "bob", 0, 60_000)).unwrap();
        pool.submit(&g.state, heartbeat(&g, "bob", 1)).unwrap();
    }

    #[test]
    fn refuses_what_cannot_be_included_with_the_reason() {
        let g = genesis();
        let mut pool = TransactionPool::new(g.hash(), 16);
        let x = ordinary(&g, "bob", 0);
        pool.submit(&g.state, x.clone()).unwrap();
        assert_eq!(
            pool.submit(&g.state, x.clone()),
            Err(PoolError::AlreadyKnown { hash: x.hash() })
        );
        let mut forged = ordinary(&g, "bob", 1);
        forged.nonce = 2;
        assert_eq!(
            pool.submit(&g.state, forged),
            Err(PoolError::Invalid(TransactionError::BadSignature))
        );
        let stranger = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
        let call = RuntimeCall::NetworkConfig(pallet_network_config::Call::SetBootnodes {
            bootnodes: vec![],
        });
        let x = UncheckedExtrinsic::sign(&stranger, &g.hash(), 0, call);
        assert!(matches!(
            pool.submit(&g.state, x),
            Err(PoolError::Invalid(TransactionError::NotPermitted { .. }))
        ));
        let taken = heartbeat(&g, "bob", 0);
        assert!(matches!(
            pool.submit(&g.state, taken),
            Err(PoolError::NonceTaken { nonce: 0, .. })
        ));
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn a_sender_s_transactions_go_into_blocks_in_nonce_order() {
        let g = genesis();
        let mut pool = TransactionPool::new(g.hash(), 16);
        for nonce in [2, 0, 1] {
            pool.submit(&g.state, ordinary(&g, "bob", nonce)).unwrap();
        }
        let nonces: Vec<u64> = pool.block_candidates().iter().map(|x| x.nonce).collect();
        assert_eq!(nonces, vec![0, 1, 2]);
        let built = pool
            .build_block(&g.state, &g.header, g.header.timestamp + 100, 0, 100)
            .unwrap();
        assert_eq!(built.block.extrinsics.len(), 3);
        assert!(built.rejected.is_empty());
    }

    #[test]
    fn the_next_nonce_follows_the_pending_run_without_gaps() {
        let g = genesis();
        let mut pool = TransactionPool::new(g.hash(), 16);
        let bob = drchain_runtime::dev::dev_account("bob");
        assert_eq!(pool.next_nonce(&bob, 0), 0);
        for nonce in [0, 1, 3] {
            pool.submit(&g.state, ordinary(&g, "bob", nonce)).unwrap();
        }
        // 0 and 1 are pending; 3 waits for 2, which is what bob should send next.
        assert_eq!(pool.next_nonce(&bob, 0), 2);
        assert_eq!(pool.next_nonce(&bob, 5), 5);
        let alice = drchain_runtime::dev::dev_account("alice");
        assert_eq!(pool.next_nonce(&alice, 7), 7);
    }

    #[test]
    fn heartbeats_come_first_and_are_never_refused_for_room() {
        let g = genesis();
        let mut pool = TransactionPool::new(g.hash(), 3);
        for nonce in 0..3 {
            pool.submit(&g.state, ordinary(&g, "dave", nonce)).unwrap();
        }
        assert_eq!(
            pool.submit(&g.state, ordinary(&g, "eve", 0)),
            Err(PoolError::Full { max: 3 })
        );
        // A heartbeat evicts the newest ordinary transaction (the end of dave's chain).
        let hb = heartbeat(&g, "alice", 0);
        pool.submit(&g.state, hb.clone()).unwrap();
        assert_eq!(pool.len(), 3);
        let candidates = pool.block_candidates();
        assert_eq!(candidates[0], hb);
        let dave: Vec<u64> = candidates[1..].iter().map(|x| x.nonce).collect();
        assert_eq!(dave, vec![0, 1], "no gap is left in dave's nonces");
        // With only heartbeats in the pool, another heartbeat is refused: nothing to evict.
        let mut full = TransactionPool::new(g.hash(), 1);
        full.submit(&g.state, heartbeat(&g, "alice", 0)).unwrap();
        assert_eq!(
            full.submit(&g.state, heartbeat(&g, "bob", 0)),
            Err(PoolError::Full { max: 1 })
        );
    }

    #[test]
    fn finalized_blocks_remove_their_transactions_and_stale_ones() {
        let g = genesis();
        let mut pool = TransactionPool::new(g.hash(), 16);
        let included = ordinary(&g, "bob", 0);
        pool.submit(&g.state, included.clone()).unwrap();
        pool.submit(&g.state, ordinary(&g, "bob", 1)).unwrap();
        // Another node's block used bob's nonce 0 with a different transaction.
        let rival = heartbeat(&g, "bob", 0);
        let built = drchain_runtime::build_block(
            &g.state,
            &g.header,
            g.header.timestamp + 100,
            &g.hash(),
            [rival.clone()],
            10,
        )
        .unwrap();
        let mut state = g.state.clone();
        state.apply(built.executed.changes, built.executed.trie);
        let dropped = pool.finalized(&state, 1, 1, &[rival.hash()]);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].0, included.hash());
        assert!(matches!(
            dropped[0].1,
            TransactionError::StaleNonce {
                expected: 1,
                got: 0
            }
        ));
        assert_eq!(pool.len(), 1, "bob's nonce 1 is now ready and stays");
    }

    /// A sync batch finalizes several blocks before the node handles the first one's outcome:
    /// the state is then ahead of that block. A transaction included by a later block of the
    /// batch must not be reported invalid ("nonce already used") at the earlier block — a
    /// client watching it would be told its finalized transaction failed.
    #[test]
    fn a_transaction_in_a_later_block_of_a_batch_is_not_dropped_at_an_earlier_one() {
        let g = genesis();
        let mut pool = TransactionPool::new(g.hash(), 16);
        let first = ordinary(&g, "alice", 0);
        let second = ordinary(&g, "bob", 0);
        pool.submit(&g.state, first.clone()).unwrap();
        pool.submit(&g.state, second.clone()).unwrap();
        let mut state = g.state.clone();
        let one = drchain_runtime::build_block(
            &state,
            &g.header,
            g.header.timestamp + 100,
            &g.hash(),
            [first.clone()],
            10,
        )
        .unwrap();
        state.apply(one.executed.changes, one.executed.trie);
        let two = drchain_runtime::build_block(
            &state,
            &one.block.header,
            one.block.header.timestamp + 100,
            &g.hash(),
            [second.clone()],
            10,
        )
        .unwrap();
        state.apply(two.executed.changes, two.executed.trie);

        // The state is at #2 when #1's outcome is handled.
        let dropped = pool.finalized(&state, 2, 1, &[first.hash()]);
        assert!(dropped.is_empty(), "dropped at #1: {dropped:?}");
        let dropped = pool.finalized(&state, 2, 2, &[second.hash()]);
        assert!(dropped.is_empty(), "dropped at #2: {dropped:?}");
        assert!(pool.is_empty());
    }
}
