//! What the RPC server and the failover agent need of a running node, as a trait: the node
//! implements it over its own task and database, so neither crate depends on the node's
//! network or storage engine.

use std::sync::Arc;

use async_trait::async_trait;
use drchain_consensus::pool::PoolError;
use drchain_consensus::store::kv::KeyValueDb;
use drchain_replication::push::{CheckpointPush, VerifiedPush};
use drchain_replication::{ChunkStore, Manifest};
use drchain_runtime::{EventRecord, Header, UncheckedExtrinsic};
use drchain_support::{AccountId, ServiceName, H256};
use tokio::sync::broadcast;

/// The chain and the node as the node's task last published them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChainStatus {
    /// Finalized height.
    pub finalized: u64,
    /// Hash of the finalized head.
    pub hash: H256,
    /// Connected peers (members only: others are disconnected).
    pub peers: usize,
    /// Malformed or invalid network messages dropped since start.
    pub dropped_messages: u64,
    /// Peers disconnected since start for not being members.
    pub rejected_peers: u64,
    /// Transactions in blocks finalized since start.
    pub included_transactions: u64,
    /// Blocks imported by sync (rather than decided with us) since start.
    pub synced_blocks: u64,
    /// Whether the node is catching up with peers by sync.
    pub syncing: bool,
    /// Whether the node has finalized a block through consensus since it started: its state
    /// is the network's present, not history it is replaying while it catches up.
    pub caught_up: bool,
}

/// A block as it is finalized, for subscribers (RPC subscriptions, the agent, metrics).
#[derive(Debug, Clone)]
pub struct FinalizedBlock {
    /// Its header.
    pub header: Header,
    /// Its hash.
    pub hash: H256,
    /// Hashes of its extrinsics, in block order.
    pub extrinsics: Vec<H256>,
    /// What happened in it.
    pub events: Vec<EventRecord>,
    /// Pending transactions the pool dropped after it, with the reason.
    pub dropped: Vec<(H256, String)>,
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its libp2p peer id, as text.
    pub peer_id: String,
    /// Its member account (the same Ed25519 key), if the id carries one.
    pub account: Option<AccountId>,
}

/// A member said it took a checkpoint (before any block records it), so standbys fetch it at
/// once. Only what the chain's active node of the service announces deserves a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The admitted member that sent it.
    pub from: AccountId,
    /// The service.
    pub service: ServiceName,
    /// The sequence it submits the checkpoint under.
    pub sequence: u64,
    /// The checkpoint's manifest root.
    pub root: H256,
}

/// The node's task is gone (stopped, or stopped on a fatal error).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the node stopped")]
pub struct NodeStopped;

/// A running node, seen from the RPC server and the agent. Calls that go through the node's
/// task fail with [`NodeStopped`] once it is gone; reads go to a database snapshot instead.
#[async_trait]
pub trait NodeApi: Send + Sync + std::fmt::Debug + 'static {
    /// Submits a transaction: validated against the finalized state, pooled, gossiped. The
    /// inner error is the pool's refusal.
    async fn submit(&self, x: UncheckedExtrinsic) -> Result<Result<H256, PoolError>, NodeStopped>;
    /// Transactions waiting in the pool.
    async fn pending(&self) -> Result<Vec<UncheckedExtrinsic>, NodeStopped>;
    /// The nonce `account`'s next transaction should use: the chain's, past its pending ones.
    async fn next_nonce(&self, account: AccountId) -> Result<u64, NodeStopped>;
    /// Connected peers.
    async fn peers(&self) -> Result<Vec<PeerInfo>, NodeStopped>;
    /// Takes transactions out of the pool; returns the hashes of those that were there.
    async fn remove(&self, hashes: Vec<H256>) -> Result<Vec<H256>, NodeStopped>;
    /// The chain as the node last published it.
    fn status(&self) -> ChainStatus;
    /// Blocks as they are finalized, from now on. A receiver that falls behind by more than
    /// the node's backlog misses blocks (and is told so by `Lagged`).
    fn subscribe_finalized(&self) -> broadcast::Receiver<Arc<FinalizedBlock>>;
    /// A consistent read-only view of the node's chain store: every read through it sees one
    /// moment, so a query of several keys never mixes two blocks.
    fn snapshot(&self) -> Box<dyn KeyValueDb + '_>;
    /// The node's chunk store: the chunks, dictionaries and manifests of the checkpoints it
    /// produced or fetched.
    fn chunk_store(&self) -> Arc<ChunkStore>;
    /// Fetches checkpoint `root` into the chunk store from connected members (admitted ones
    /// only; every byte verified); the manifest once every object is there (written, not yet
    /// flushed: flush the store before acknowledging it). The inner error says why not (no
    /// member had it within `timeout`, the local disk).
    async fn fetch_checkpoint(
        &self,
        root: H256,
        timeout: std::time::Duration,
    ) -> Result<Result<Manifest, String>, NodeStopped>;
    /// [`NodeApi::fetch_checkpoint`], asking `holder` (a member known to have it: the active
    /// that announced it) first, so no request goes to members that do not have it yet.
    async fn fetch_checkpoint_from(
        &self,
        root: H256,
        holder: AccountId,
        timeout: std::time::Duration,
    ) -> Result<Result<Manifest, String>, NodeStopped> {
        let _ = holder;
        self.fetch_checkpoint(root, timeout).await
    }
    /// Tells every connected member that this node took checkpoint `sequence` of `service`.
    async fn announce_checkpoint(
        &self,
        service: ServiceName,
        sequence: u64,
        root: H256,
    ) -> Result<(), NodeStopped>;
    /// Pushes checkpoint `push` (its manifest and new objects) to the service's connected
    /// candidates, which store it and tell their agents as an announcement. Without a push
    /// path: announces it.
    async fn push_checkpoint(&self, push: CheckpointPush) -> Result<(), NodeStopped> {
        self.announce_checkpoint(push.service, push.sequence, push.root)
            .await
    }
    /// Checkpoints announced by members, from now on.
    fn subscribe_announcements(&self) -> broadcast::Receiver<Announcement>;
    /// Checkpoint `root` as its holder pushed it, verified, with its new chunks in memory
    /// (being stored meanwhile), if it is among the last few pushed here: a standby that
    /// holds the rest applies it without a fetch or a read.
    fn pushed_checkpoint(&self, root: &H256) -> Option<Arc<VerifiedPush>> {
        let _ = root;
        None
    }
    /// The database's size and its disk's free space, measured now; `None` where the node
    /// has no database on disk.
    async fn disk(&self) -> Option<crate::views::DiskView> {
        None
    }
}
