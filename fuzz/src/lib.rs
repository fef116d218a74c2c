//! What the fuzz targets share: the local chain's genesis, a node's consensus driver over an
//! in-memory store, and a node for the RPC methods (its store, pool answers and chunk store),
//! all real code: only the network is absent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use drchain_consensus::context::SigningProvider;
use drchain_consensus::pool::{PoolError, TransactionPool};
use drchain_consensus::store::kv::{KeyValueDb, MemoryDb};
use drchain_consensus::store::ChainStore;
use drchain_consensus::{ConsensusDriver, DriverConfig};
use drchain_replication::{ChunkStore, Manifest};
use drchain_rpc::{Announcement, ChainStatus, FinalizedBlock, NodeApi, NodeStopped, PeerInfo};
use drchain_runtime::dev::{dev_key, specs};
use drchain_runtime::{Genesis, UncheckedExtrinsic};
use drchain_support::{AccountId, ServiceName, H256};
use tokio::sync::broadcast;

/// The local testnet's genesis (four validators), built once.
pub fn genesis() -> &'static Genesis {
    static GENESIS: OnceLock<Genesis> = OnceLock::new();
    GENESIS.get_or_init(|| specs::local().unwrap().build_genesis().unwrap())
}

/// The dev CA, parsed, as the pinned anchors of a certificate check.
pub fn dev_anchors() -> &'static [pallet_membership::x509::ParsedCertificate] {
    static ANCHORS: OnceLock<Vec<pallet_membership::x509::ParsedCertificate>> = OnceLock::new();
    ANCHORS.get_or_init(|| {
        let (_, der) = specs::dev_ca().unwrap();
        vec![pallet_membership::x509::parse(&der).unwrap()]
    })
}

/// The wall-clock time the targets run at: a second after genesis.
pub fn now() -> u64 {
    genesis().header.timestamp + 1_000
}

/// A fresh store of the local chain.
pub fn store() -> ChainStore<MemoryDb> {
    ChainStore::open(MemoryDb::new(), genesis()).unwrap()
}

/// Alice's driver on a fresh store of the local chain, started.
pub fn driver() -> ConsensusDriver<MemoryDb> {
    driver_over(store())
}

/// Alice's driver over `store`, not started.
pub fn driver_over(store: ChainStore<MemoryDb>) -> ConsensusDriver<MemoryDb> {
    let signer = SigningProvider::new(genesis().hash(), dev_key("alice"));
    ConsensusDriver::new(store, signer, DriverConfig::default(), true)
}

/// A node for the RPC methods: the local chain's genesis in memory, a real pool's answers,
/// an empty chunk store; nothing is ever finalized or announced.
#[derive(Debug)]
pub struct FuzzNode {
    db: MemoryDb,
    pool: std::sync::Mutex<TransactionPool>,
    chunks: Arc<ChunkStore>,
    finalized: broadcast::Sender<Arc<FinalizedBlock>>,
    announcements: broadcast::Sender<Announcement>,
    _dir: tempfile::TempDir,
}

impl FuzzNode {
    pub fn new() -> Self {
        let db = MemoryDb::new();
        ChainStore::open(db.clone(), genesis()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        Self {
            db,
            pool: std::sync::Mutex::new(TransactionPool::new(genesis().hash(), 1024)),
            chunks: Arc::new(ChunkStore::open(dir.path().join("chunks")).unwrap()),
            finalized: broadcast::channel(4).0,
            announcements: broadcast::channel(4).0,
            _dir: dir,
        }
    }
}

impl Default for FuzzNode {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl NodeApi for FuzzNode {
    async fn submit(&self, x: UncheckedExtrinsic) -> Result<Result<H256, PoolError>, NodeStopped> {
        let mut pool = self.pool.lock().unwrap();
        Ok(pool.submit(&genesis().state, x))
    }
    async fn pending(&self) -> Result<Vec<UncheckedExtrinsic>, NodeStopped> {
        Ok(self.pool.lock().unwrap().pending())
    }
    async fn next_nonce(&self, account: AccountId) -> Result<u64, NodeStopped> {
        Ok(self.pool.lock().unwrap().next_nonce(&account, 0))
    }
    async fn peers(&self) -> Result<Vec<PeerInfo>, NodeStopped> {
        Ok(vec![])
    }
    async fn remove(&self, hashes: Vec<H256>) -> Result<Vec<H256>, NodeStopped> {
        Ok(self.pool.lock().unwrap().withdraw(&hashes))
    }
    fn status(&self) -> ChainStatus {
        ChainStatus::default()
    }
    fn subscribe_finalized(&self) -> broadcast::Receiver<Arc<FinalizedBlock>> {
        self.finalized.subscribe()
    }
    fn snapshot(&self) -> Box<dyn KeyValueDb + '_> {
        Box::new(self.db.clone())
    }
    fn chunk_store(&self) -> Arc<ChunkStore> {
        self.chunks.clone()
    }
    async fn fetch_checkpoint(
        &self,
        root: H256,
        _timeout: std::time::Duration,
    ) -> Result<Result<Manifest, String>, NodeStopped> {
        Ok(Err(format!("no member holds {root}")))
    }
    async fn announce_checkpoint(
        &self,
        _service: ServiceName,
        _sequence: u64,
        _root: H256,
    ) -> Result<(), NodeStopped> {
        Ok(())
    }
    fn subscribe_announcements(&self) -> broadcast::Receiver<Announcement> {
        self.announcements.subscribe()
    }
}
