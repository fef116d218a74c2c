//! The chain store: finalized blocks, their commit certificates, the number→hash index, the
//! state (entries and trie) of the finalized head, metadata, and the consensus WAL.
//!
//! With BFT finality there are no forks: only finalized blocks are stored, and the state is the
//! finalized head's. Importing a block is one atomic batch (block, certificate, index, state
//! writes, trie writes, the new head, and deleting the height's WAL), so a node killed at any
//! moment reopens either before or after the block, never in between.

pub mod kv;
mod pruning;
mod reader;
mod state;

use pruning::UndoLog;
pub use pruning::{BlocksPruning, StatePruning};
use reader::failover_key;
pub use reader::{ChainReader, FailoverRecord};
pub use state::StoreState;

use std::collections::BTreeMap;

use drchain_runtime::{Block, EventRecord, ExecutedBlock, Genesis, Header, RuntimeEvent};
use drchain_support::trie::{self, NodeKey};
use drchain_support::trie_proof;
use drchain_support::{Backend, ChangeSet, ServiceName, StateRead, TrieDelta, H256};
use parity_scale_codec::{Decode, Encode};

use crate::codec::{WalRecord, WireCertificate};
use crate::state_sync::{Entries, SetChange, SyncTarget};
use drchain_support::trie_proof::SubtreeId;
use kv::{DbError, KeyValueDb, Write};

const META_GENESIS: &[u8] = b"m/genesis";
const META_FINALIZED: &[u8] = b"m/finalized";
const HASH_BY_NUMBER: &[u8] = b"h/";
const BLOCK_BY_HASH: &[u8] = b"b/";
const CERTIFICATE: &[u8] = b"c/";
const STATE: &[u8] = b"s/";
const LEAF: &[u8] = b"l/";
const NODE: &[u8] = b"n/";
const WAL: &[u8] = b"w/";
const EVENTS: &[u8] = b"e/";
const FAILOVER_LOG: &[u8] = b"f/";
const FAILOVER_COUNT: &[u8] = b"m/failover/";
const SET_CHANGES: &[u8] = b"v/";
const META_BASE: &[u8] = b"m/base";
const SYNC_PROGRESS: &[u8] = b"y/";
/// Block number → the values its changes replaced (`UndoLog`): the state of earlier blocks.
const UNDO: &[u8] = b"u/";
/// The lowest block whose state can be read (undo logs above it are kept).
const META_STATE_BASE: &[u8] = b"m/state-base";
/// Trie path → blake3 of the value: what a proof of absence shows of the key in the way.
const VALUE_HASH: &[u8] = b"p/";
/// Set once `p/` covers the whole state (databases from before it get it at open).
const META_VALUE_HASHES: &[u8] = b"m/value-hashes";

/// The kinds of data the store keeps and their key prefixes: what a node measures to report
/// its database's size per kind.
pub const KEY_SPACES: &[(&str, &[&[u8]])] = &[
    ("blocks", &[BLOCK_BY_HASH]),
    ("certificates", &[CERTIFICATE]),
    ("height_index", &[HASH_BY_NUMBER]),
    ("state", &[STATE, LEAF, NODE, VALUE_HASH]),
    ("events", &[EVENTS, FAILOVER_LOG, SET_CHANGES]),
    ("state_sync_progress", &[SYNC_PROGRESS]),
    ("state_history", &[UNDO]),
    ("consensus_wal", &[WAL]),
];

/// A chain store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The database holds another chain.
    #[error(
        "the database holds chain {found}, not {expected}; use another --base-path or purge-chain"
    )]
    WrongChain {
        /// Genesis of the chain asked for.
        expected: H256,
        /// Genesis found on disk.
        found: H256,
    },
    /// Stored bytes do not decode: the database is damaged.
    #[error("corrupt database entry {key}: {reason}")]
    Corrupt {
        /// The key, hex.
        key: String,
        reason: String,
    },
    /// The state of a block outside the state retention was asked for.
    #[error(
        "the state of block #{number} is not kept (kept: #{base} to #{head}; --state-pruning archive keeps every block's)"
    )]
    StateNotKept { number: u64, base: u64, head: u64 },
    /// A block was imported out of order.
    #[error("block #{got} does not extend the finalized head #{head}")]
    NotNext {
        /// The finalized head's number.
        head: u64,
        /// The number of the block offered.
        got: u64,
    },
}

fn key(prefix: &[u8], suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + suffix.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(suffix);
    k
}

fn node_key(node: &NodeKey) -> Vec<u8> {
    let mut k = key(NODE, &[node.0]);
    k.extend_from_slice(&node.1);
    k
}

fn wal_key(height: u64, seq: u64) -> Vec<u8> {
    let mut k = key(WAL, &height.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The chain store over a key-value database.
#[derive(Debug)]
pub struct ChainStore<D> {
    db: D,
    genesis: H256,
    head: Header,
    wal_next: u64,
    pruning: BlocksPruning,
    /// The lowest block kept besides genesis (0: every block).
    base: u64,
    state_pruning: StatePruning,
    /// The lowest block whose state can be read.
    state_base: u64,
}

impl<D: KeyValueDb> ChainStore<D> {
    /// Opens the store, writing `genesis` into an empty database, or checking that a used one
    /// holds the same chain.
    pub fn open(db: D, genesis: &Genesis) -> Result<Self, StoreError> {
        let expected = genesis.hash();
        match db.get(META_GENESIS)? {
            Some(found) => {
                let found = decode::<H256>(META_GENESIS, &found)?;
                if found != expected {
                    return Err(StoreError::WrongChain { expected, found });
                }
            }
            None => Self::write_genesis(&db, genesis)?,
        }
        let finalized = match db.get(META_FINALIZED)? {
            Some(bytes) => decode::<u64>(META_FINALIZED, &bytes)?,
            None => 0,
        };
        let mut store = Self {
            db,
            genesis: expected,
            head: genesis.header.clone(),
            wal_next: 0,
            pruning: BlocksPruning::Archive,
            base: 0,
            state_pruning: StatePruning::Archive,
            state_base: 0,
        };
        store.base = store.reader().base_number()?;
        store.state_base = store.reader().state_base()?;
        let head = store.block(finalized)?.ok_or_else(|| StoreError::Corrupt {
            key: format!("block #{finalized}"),
            reason: "the finalized block is missing".into(),
        })?;
        store.head = head.header;
        store.wal_next = store.wal(finalized + 1)?.len() as u64;
        // A database from before undo logs: only its head's state can be read.
        if finalized > 0
            && store.db.get(META_STATE_BASE)?.is_none()
            && store
                .db
                .get(&key(UNDO, &finalized.to_be_bytes()))?
                .is_none()
        {
            store.db.write(
                vec![(META_STATE_BASE.to_vec(), Some(finalized.encode()))],
                true,
            )?;
            store.state_base = finalized;
        }
        if store.db.get(META_VALUE_HASHES)?.is_none() {
            store.index_value_hashes()?;
        }
        // A crash between a block's import and its set-change record (see `import`).
        if let Some(events) = store.reader().events(finalized)? {
            store.record_set_change(&events)?;
        }
        Ok(store)
    }

    fn write_genesis(db: &D, genesis: &Genesis) -> Result<(), StoreError> {
        let changes: ChangeSet = genesis
            .state
            .scan_prefix(&[])
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        // Trie writes of the genesis state, computed over the (empty) database.
        let empty = StoreState { db };
        let delta = empty.prepare(&changes);
        let block = Block {
            header: genesis.header.clone(),
            extrinsics: vec![],
        };
        let mut batch = state_writes(changes, delta);
        batch.extend(block_writes(&block, None));
        batch.push((META_FINALIZED.to_vec(), Some(0u64.encode())));
        batch.push((META_GENESIS.to_vec(), Some(genesis.hash().encode())));
        batch.push((META_VALUE_HASHES.to_vec(), Some(vec![1])));
        db.write(batch, true)?;
        Ok(())
    }

    /// Writes `p/` for the whole state: a database from before proofs of absence.
    fn index_value_hashes(&self) -> Result<(), StoreError> {
        let mut batch: Vec<Write> = self
            .state()
            .scan_prefix(b"")
            .into_iter()
            .map(|(k, v)| {
                let hash = drchain_support::blake3_hash(&v).0.to_vec();
                (key(VALUE_HASH, &trie::key_path(&k)), Some(hash))
            })
            .collect();
        batch.push((META_VALUE_HASHES.to_vec(), Some(vec![1])));
        self.db.write(batch, true)?;
        Ok(())
    }

    /// The chain's genesis hash.
    pub fn genesis_hash(&self) -> H256 {
        self.genesis
    }

    /// The finalized head.
    pub fn head(&self) -> &Header {
        &self.head
    }

    /// The finalized state.
    pub fn state(&self) -> StoreState<'_, D> {
        StoreState { db: &self.db }
    }

    /// Reads of finalized blocks, certificates, events and state.
    pub fn reader(&self) -> ChainReader<'_, D> {
        ChainReader { db: &self.db }
    }

    /// The hash of finalized block `number`.
    pub fn hash(&self, number: u64) -> Result<Option<H256>, StoreError> {
        self.reader().hash(number)
    }

    /// Finalized block `number`.
    pub fn block(&self, number: u64) -> Result<Option<Block>, StoreError> {
        self.reader().block(number)
    }

    /// The commit certificate of finalized block `number` (none for genesis).
    pub fn certificate(&self, number: u64) -> Result<Option<WireCertificate>, StoreError> {
        self.reader().certificate(number)
    }

    /// Imports the next finalized block with its execution and certificate, atomically and
    /// durably; the WAL of its height goes in the same batch.
    pub fn import(
        &mut self,
        block: &Block,
        executed: ExecutedBlock,
        certificate: &WireCertificate,
    ) -> Result<(), StoreError> {
        let number = block.header.number;
        if number != self.head.number + 1 {
            return Err(StoreError::NotNext {
                head: self.head.number,
                got: number,
            });
        }
        let failover_writes = self.failover_log_writes(&block.header, &executed.events)?;
        let (history, state_base) = self.history_writes(number, &executed.changes)?;
        let mut batch = state_writes(executed.changes, executed.trie);
        batch.extend(history);
        batch.extend(block_writes(block, Some(certificate)));
        batch.push((
            key(EVENTS, &number.to_be_bytes()),
            Some(executed.events.encode()),
        ));
        batch.extend(failover_writes);
        batch.push((META_FINALIZED.to_vec(), Some(number.encode())));
        batch.extend(self.wal_deletes(number)?);
        let (pruned, base) = self.prune_writes(number)?;
        batch.extend(pruned);
        self.db.write(batch, true)?;
        self.head = block.header.clone();
        self.wal_next = 0;
        self.base = base;
        self.state_base = state_base;
        self.record_set_change(&executed.events)
    }

    /// When the head block changed the validator set, records the proof a joining node needs
    /// to follow the change ([`SetChange`]): the new set is read-proven against the head's
    /// state, which is only at hand now. Written after the block (the proof needs its trie);
    /// `open` writes it again after a crash in between.
    fn record_set_change(&self, events: &[EventRecord]) -> Result<(), StoreError> {
        let Some(validators) = events.iter().find_map(|record| match &record.event {
            RuntimeEvent::Membership(pallet_membership::Event::ValidatorSetChanged {
                validators,
            }) => Some(validators.clone()),
            _ => None,
        }) else {
            return Ok(());
        };
        let number = self.head.number;
        let k = key(SET_CHANGES, &number.to_be_bytes());
        if self.db.get(&k)?.is_some() {
            return Ok(());
        }
        let parent = self.block(number - 1)?.ok_or_else(|| StoreError::Corrupt {
            key: format!("block #{}", number - 1),
            reason: "the parent of the head is missing".into(),
        })?;
        let Some(proof) = trie_proof::prove(&self.state(), &pallet_membership::Validators::key())
        else {
            return Err(StoreError::Corrupt {
                key: "validator set".into(),
                reason: "the head's state has no validator set".into(),
            });
        };
        let change = SetChange {
            parent: parent.header,
            parent_certificate: self.certificate(number - 1)?,
            header: self.head.clone(),
            validators,
            proof,
        };
        self.db.write(vec![(k, Some(change.encode()))], false)?;
        Ok(())
    }

    /// Keeps subtrees a state sync checked, so that it resumes after a restart (dropped when
    /// the state is installed). Not synced to disk: losing some only costs fetching them again.
    pub fn keep_sync_progress(&self, checked: Vec<(SubtreeId, Entries)>) -> Result<(), StoreError> {
        if checked.is_empty() {
            return Ok(());
        }
        let batch = checked
            .into_iter()
            .map(|(id, entries)| (key(SYNC_PROGRESS, &id.encode()), Some(entries.encode())))
            .collect();
        self.db.write(batch, false)?;
        Ok(())
    }

    /// The subtrees kept by [`Self::keep_sync_progress`].
    pub fn sync_progress(&self) -> Result<Vec<(SubtreeId, Entries)>, StoreError> {
        let mut out = vec![];
        for item in self.db.iter_from(SYNC_PROGRESS) {
            let (k, v) = item?;
            let Some(id) = k.strip_prefix(SYNC_PROGRESS) else {
                break;
            };
            out.push((decode(&k, id)?, decode(&k, &v)?));
        }
        Ok(out)
    }

    /// Replaces the state and head with the state of a block checked by state sync (the
    /// caller checked `target` and that `entries` give its state root; this checks the root
    /// again). Blocks below it are dropped (but genesis): the target is the lowest block this
    /// node has.
    pub fn install_state(
        &mut self,
        target: &SyncTarget,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let block = &target.block;
        let number = block.header.number;
        if number <= self.head.number {
            return Err(StoreError::NotNext {
                head: self.head.number,
                got: number,
            });
        }
        let changes: ChangeSet = entries.into_iter().map(|(k, v)| (k, Some(v))).collect();
        let delta = drchain_support::StateTrie::default().prepare(&changes);
        if delta.root != block.header.state_root {
            return Err(StoreError::Corrupt {
                key: format!("state of block #{number}"),
                reason: format!(
                    "the entries give root {}, the header {}",
                    delta.root, block.header.state_root
                ),
            });
        }
        let mut batch: Vec<Write> = vec![];
        // A node that fell behind keeps no block before the gap: its history would have a hole.
        for item in self.db.iter_from(HASH_BY_NUMBER) {
            let (k, v) = item?;
            let Some(n) = k.strip_prefix(HASH_BY_NUMBER) else {
                break;
            };
            let n: [u8; 8] = n.try_into().map_err(|_| StoreError::Corrupt {
                key: hex::encode(&k),
                reason: "not a height".into(),
            })?;
            if u64::from_be_bytes(n) == 0 {
                continue;
            }
            let hash: H256 = decode(&k, &v)?;
            batch.push((key(BLOCK_BY_HASH, &hash.0), None));
            batch.push((key(CERTIFICATE, &n), None));
            batch.push((key(EVENTS, &n), None));
            batch.push((k, None));
        }
        for prefix in [STATE, LEAF, NODE, VALUE_HASH, WAL, SYNC_PROGRESS, UNDO] {
            for item in self.db.iter_from(prefix) {
                let (k, _) = item?;
                if !k.starts_with(prefix) {
                    break;
                }
                batch.push((k, None));
            }
        }
        batch.extend(state_writes(changes, delta));
        batch.extend(block_writes(block, Some(&target.certificate)));
        for change in &target.set_changes {
            batch.push((
                key(SET_CHANGES, &change.header.number.to_be_bytes()),
                Some(change.encode()),
            ));
        }
        batch.push((META_FINALIZED.to_vec(), Some(number.encode())));
        batch.push((META_BASE.to_vec(), Some(number.encode())));
        batch.push((META_STATE_BASE.to_vec(), Some(number.encode())));
        self.db.write(batch, true)?;
        self.head = block.header.clone();
        self.wal_next = 0;
        self.base = number;
        self.state_base = number;
        Ok(())
    }

    /// Appends the block's failover events to each service's log (see
    /// [`ChainReader::failover_log`]).
    fn failover_log_writes(
        &self,
        header: &Header,
        events: &[EventRecord],
    ) -> Result<Vec<Write>, StoreError> {
        let mut next: BTreeMap<ServiceName, u64> = BTreeMap::new();
        let mut batch = vec![];
        for record in events {
            let RuntimeEvent::Failover(event) = &record.event else {
                continue;
            };
            let service = event.service().clone();
            let sequence = match next.get(&service) {
                Some(n) => *n,
                None => self.reader().failover_count(&service)?,
            };
            let entry = FailoverRecord {
                sequence,
                block: header.number,
                timestamp: header.timestamp,
                event: event.clone(),
            };
            batch.push((failover_key(&service, sequence), Some(entry.encode())));
            next.insert(service, sequence + 1);
        }
        for (service, count) in next {
            batch.push((
                key(FAILOVER_COUNT, service.as_str().as_bytes()),
                Some(count.encode()),
            ));
        }
        Ok(batch)
    }

    fn wal_deletes(&self, height: u64) -> Result<Vec<Write>, StoreError> {
        let prefix = key(WAL, &height.to_be_bytes());
        let mut out = vec![];
        for item in self.db.iter_from(&prefix) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push((k, None));
        }
        Ok(out)
    }

    /// Appends records to the WAL of `height`; with `durable`, they (and every write before
    /// them) are synced to disk before this returns.
    pub fn wal_append(
        &mut self,
        height: u64,
        records: &[WalRecord],
        durable: bool,
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let batch = records
            .iter()
            .enumerate()
            .map(|(i, r)| (wal_key(height, self.wal_next + i as u64), Some(r.encode())))
            .collect();
        self.db.write(batch, durable)?;
        self.wal_next += records.len() as u64;
        Ok(())
    }

    /// The WAL records of `height`, in order.
    pub fn wal(&self, height: u64) -> Result<Vec<WalRecord>, StoreError> {
        let prefix = key(WAL, &height.to_be_bytes());
        let mut out = vec![];
        for item in self.db.iter_from(&prefix) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }
}

fn decode<T: Decode>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    T::decode(&mut &bytes[..]).map_err(|e| StoreError::Corrupt {
        key: hex::encode(key),
        reason: e.to_string(),
    })
}

fn state_writes(changes: ChangeSet, delta: TrieDelta) -> Vec<Write> {
    let mut batch: Vec<Write> = Vec::with_capacity(changes.len() * 2);
    for (k, v) in changes {
        let hash = v
            .as_ref()
            .map(|v| drchain_support::blake3_hash(v).0.to_vec());
        batch.push((key(VALUE_HASH, &trie::key_path(&k)), hash));
        batch.push((key(STATE, &k), v));
    }
    batch.extend(
        delta
            .leaves
            .into_iter()
            .map(|(path, h)| (key(LEAF, &path), h.map(|h| h.0.to_vec()))),
    );
    batch.extend(
        delta
            .nodes
            .into_iter()
            .map(|(node, h)| (node_key(&node), h.map(|h| h.0.to_vec()))),
    );
    batch.push((b"m/root".to_vec(), Some(delta.root.0.to_vec())));
    batch
}

fn block_writes(block: &Block, certificate: Option<&WireCertificate>) -> Vec<Write> {
    let number = block.header.number;
    let hash = block.hash();
    let mut batch = vec![
        (
            key(HASH_BY_NUMBER, &number.to_be_bytes()),
            Some(hash.encode()),
        ),
        (key(BLOCK_BY_HASH, &hash.0), Some(block.encode())),
    ];
    if let Some(c) = certificate {
        batch.push((key(CERTIFICATE, &number.to_be_bytes()), Some(c.encode())));
    }
    batch
}

#[cfg(test)]
mod tests;
