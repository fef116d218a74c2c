//! Reads of the finalized chain: blocks, certificates, events, the failover log, set-change
//! proofs, and the state (the head's, past blocks' within the retention, with proofs).

use std::collections::BTreeMap;

use drchain_runtime::{pallet_failover, Block};
use drchain_support::trie::Path;
use drchain_support::{trie_proof, ServiceName, StateRead, H256};
use parity_scale_codec::{Decode, Encode};

use super::kv::KeyValueDb;
use super::*;

/// A failover event as kept in a service's log.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct FailoverRecord {
    /// Position in the service's log, from 0.
    pub sequence: u64,
    /// The block it happened in.
    pub block: u64,
    /// That block's timestamp (ms).
    pub timestamp: u64,
    pub event: pallet_failover::Event,
}

pub(super) fn failover_key(service: &ServiceName, sequence: u64) -> Vec<u8> {
    // '/' cannot occur in a service name, so one service's keys never prefix another's.
    let mut k = key(FAILOVER_LOG, service.as_str().as_bytes());
    k.push(b'/');
    k.extend_from_slice(&sequence.to_be_bytes());
    k
}

/// Reads of the finalized chain over any database: the store's own, or a snapshot the RPC
/// server reads without involving the node's task.
#[derive(Debug)]
pub struct ChainReader<'a, D: ?Sized> {
    pub(super) db: &'a D,
}

impl<'a, D: KeyValueDb + ?Sized> ChainReader<'a, D> {
    /// Reads `db`, which holds a chain store.
    pub fn new(db: &'a D) -> Self {
        Self { db }
    }

    /// The finalized height.
    pub fn finalized_number(&self) -> Result<u64, StoreError> {
        Ok(match self.db.get(META_FINALIZED)? {
            Some(bytes) => decode::<u64>(META_FINALIZED, &bytes)?,
            None => 0,
        })
    }

    /// The lowest block kept besides genesis: 0 when every block is, else the block a state
    /// sync started at or the lowest one pruning left.
    pub fn base_number(&self) -> Result<u64, StoreError> {
        Ok(match self.db.get(META_BASE)? {
            Some(bytes) => decode::<u64>(META_BASE, &bytes)?,
            None => 0,
        })
    }

    /// The lowest block whose state can be read (`--state-pruning`).
    pub fn state_base(&self) -> Result<u64, StoreError> {
        Ok(match self.db.get(META_STATE_BASE)? {
            Some(bytes) => decode::<u64>(META_STATE_BASE, &bytes)?,
            None => 0,
        })
    }

    fn undo_log(&self, number: u64) -> Result<UndoLog, StoreError> {
        let k = key(UNDO, &number.to_be_bytes());
        match self.db.get(&k)? {
            Some(bytes) => decode(&k, &bytes),
            None => Err(StoreError::Corrupt {
                key: format!("undo log of #{number}"),
                reason: "missing within the state retention".into(),
            }),
        }
    }

    fn check_state_kept(&self, number: u64) -> Result<u64, StoreError> {
        let head = self.finalized_number()?;
        let base = self.state_base()?;
        if number < base || number > head {
            return Err(StoreError::StateNotKept { number, base, head });
        }
        Ok(head)
    }

    /// `key`'s value in the state after block `number` (the finalized head's or a past one
    /// within the state retention): the value the first change after it replaced, or the
    /// current value if none did. Costs one read per block since then.
    pub fn value_at(&self, key_bytes: &[u8], number: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let head = self.check_state_kept(number)?;
        for n in number + 1..=head {
            if let Some((_, before)) = self.undo_log(n)?.into_iter().find(|(k, _)| k == key_bytes) {
                return Ok(before);
            }
        }
        Ok(self.state().get(key_bytes))
    }

    /// The whole state after block `number` (within the state retention).
    pub fn entries_at(&self, number: u64) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
        let head = self.check_state_kept(number)?;
        let mut entries: BTreeMap<Vec<u8>, Vec<u8>> =
            self.state().scan_prefix(b"").into_iter().collect();
        for n in (number + 1..=head).rev() {
            for (k, before) in self.undo_log(n)? {
                match before {
                    Some(v) => entries.insert(k, v),
                    None => entries.remove(&k),
                };
            }
        }
        Ok(entries)
    }

    /// `key`'s value in the finalized state and the proof of it (or of its absence) against
    /// the head's state root.
    pub fn storage_proof(
        &self,
        key_bytes: &[u8],
    ) -> Result<(Option<Vec<u8>>, trie_proof::StorageProof), StoreError> {
        let state = self.state();
        let value = state.get(key_bytes);
        let value_hash = |path: &Path| -> Option<H256> {
            let bytes = self.db.get(&key(VALUE_HASH, path)).ok()??;
            <[u8; 32]>::try_from(bytes).ok().map(H256)
        };
        let proof = trie_proof::prove_storage(&state, key_bytes, &value_hash).ok_or_else(|| {
            StoreError::Corrupt {
                key: hex::encode(key_bytes),
                reason: "the state trie or its value hashes are incomplete".into(),
            }
        })?;
        Ok((value, proof))
    }

    /// The validator-set changes recorded at heights up to `number`, oldest first.
    pub fn set_changes(&self, number: u64) -> Result<Vec<SetChange>, StoreError> {
        let mut out = vec![];
        for item in self.db.iter_from(SET_CHANGES) {
            let (k, v) = item?;
            if !k.starts_with(SET_CHANGES) {
                break;
            }
            let change: SetChange = decode(&k, &v)?;
            if change.header.number > number {
                break;
            }
            out.push(change);
        }
        Ok(out)
    }

    /// The hash of finalized block `number`.
    pub fn hash(&self, number: u64) -> Result<Option<H256>, StoreError> {
        let k = key(HASH_BY_NUMBER, &number.to_be_bytes());
        self.db.get(&k)?.map(|b| decode(&k, &b)).transpose()
    }

    /// Finalized block `number`.
    pub fn block(&self, number: u64) -> Result<Option<Block>, StoreError> {
        let Some(hash) = self.hash(number)? else {
            return Ok(None);
        };
        self.block_by_hash(&hash)
    }

    /// A finalized block by hash.
    pub fn block_by_hash(&self, hash: &H256) -> Result<Option<Block>, StoreError> {
        let k = key(BLOCK_BY_HASH, &hash.0);
        self.db.get(&k)?.map(|b| decode(&k, &b)).transpose()
    }

    /// The commit certificate of finalized block `number` (none for genesis).
    pub fn certificate(&self, number: u64) -> Result<Option<WireCertificate>, StoreError> {
        let k = key(CERTIFICATE, &number.to_be_bytes());
        self.db.get(&k)?.map(|b| decode(&k, &b)).transpose()
    }

    /// The events of finalized block `number` (none for genesis).
    pub fn events(&self, number: u64) -> Result<Option<Vec<EventRecord>>, StoreError> {
        let k = key(EVENTS, &number.to_be_bytes());
        self.db.get(&k)?.map(|b| decode(&k, &b)).transpose()
    }

    /// The finalized state.
    pub fn state(&self) -> StoreState<'a, D> {
        StoreState { db: self.db }
    }

    /// How many failover events `service` has had.
    pub fn failover_count(&self, service: &ServiceName) -> Result<u64, StoreError> {
        let k = key(FAILOVER_COUNT, service.as_str().as_bytes());
        Ok(self
            .db
            .get(&k)?
            .map(|b| decode(&k, &b))
            .transpose()?
            .unwrap_or(0))
    }

    /// `service`'s failover events with sequence `>= from`, oldest first, at most `limit`.
    /// The log outlives the service's removal, so an audit can still read it.
    pub fn failover_log(
        &self,
        service: &ServiceName,
        from: u64,
        limit: usize,
    ) -> Result<Vec<FailoverRecord>, StoreError> {
        let prefix = failover_key(service, 0);
        let prefix = &prefix[..prefix.len() - 8];
        let mut out = vec![];
        for item in self.db.iter_from(&failover_key(service, from)).take(limit) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }
}
