//! What enters the node loop from clients: the handle, the cheap client the RPC server and
//! the agent use, and the commands they send; and how the loop answers them.

use std::sync::Arc;
use std::time::Instant;

use drchain_consensus::store::kv::KeyValueDb;
use drchain_runtime::UncheckedExtrinsic;
use drchain_support::{AccountId, Overlay, ServiceName, H256};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::metrics::Metrics;
use crate::network::{self};
use crate::replication::FetchCommand;
use crate::rocks::RocksDb;
use drchain_consensus::pool::PoolError;
use drchain_replication::push::{CheckpointPush, VerifiedPush};

use crate::checkpoint_push::{Pusher, RecentPushes};
use drchain_replication::{ChunkStore, Manifest};
use drchain_rpc::{Announcement, ChainStatus, FinalizedBlock, NodeApi, NodeStopped, PeerInfo};

use super::{NodeLoop, GOSSIP_BATCH_WINDOW};

pub(super) enum Command {
    Submit(UncheckedExtrinsic, oneshot::Sender<Result<H256, PoolError>>),
    FinalizedHash(u64, oneshot::Sender<Option<H256>>),
    Pending(oneshot::Sender<Vec<UncheckedExtrinsic>>),
    NextNonce(AccountId, oneshot::Sender<u64>),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Withdraw(Vec<H256>, oneshot::Sender<Vec<H256>>),
    /// Tell the connected members about a checkpoint this node took.
    Announce {
        service: ServiceName,
        sequence: u64,
        root: H256,
    },
}

/// A running node, for the binary and for in-process tests.
#[derive(Debug)]
pub struct NodeHandle {
    pub peer_id: PeerId,
    /// Addresses it listens on, once bound.
    pub listening: watch::Receiver<Vec<Multiaddr>>,
    /// The chain as it goes.
    pub status: watch::Receiver<ChainStatus>,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
    /// The database, shared for reads (see [`RocksDb::snapshot`]).
    pub db: RocksDb,
    pub(super) finalized: broadcast::Sender<Arc<FinalizedBlock>>,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) shutdown: watch::Sender<bool>,
    pub(super) task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The node's chunk store (replication).
    pub chunk_store: Arc<ChunkStore>,
    pub(super) fetches: mpsc::Sender<FetchCommand>,
    pub(super) announcements: broadcast::Sender<Announcement>,
    pub(super) pusher: Arc<Pusher>,
    pub(super) recent_pushes: Arc<RecentPushes>,
    pub(super) db_path: std::path::PathBuf,
    /// The port it takes direct checkpoint push connections on (0: none).
    pub direct_push_port: u16,
}

/// What the RPC server and the metrics need from a running node: cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeClient {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) finalized: broadcast::Sender<Arc<FinalizedBlock>>,
    pub(super) status: watch::Receiver<ChainStatus>,
    pub(super) db: RocksDb,
    pub(super) chunk_store: Arc<ChunkStore>,
    pub(super) fetches: mpsc::Sender<FetchCommand>,
    pub(super) announcements: broadcast::Sender<Announcement>,
    /// Sends this node's checkpoints to the candidates of their services.
    pub(super) pusher: Arc<Pusher>,
    /// Pushes received lately, verified, chunks in memory.
    pub(super) recent_pushes: Arc<RecentPushes>,
    /// Where the database lives (its size and free space, `disk`).
    pub(super) db_path: std::path::PathBuf,
}

impl NodeClient {
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeStopped> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .await
            .map_err(|_| NodeStopped)?;
        rx.await.map_err(|_| NodeStopped)
    }

    /// Has the replication task fetch checkpoint `root`, asking `prefer` first.
    async fn fetch(
        &self,
        root: H256,
        prefer: Option<PeerId>,
        timeout: std::time::Duration,
    ) -> Result<Result<Manifest, String>, NodeStopped> {
        let (reply, rx) = oneshot::channel();
        self.fetches
            .send(FetchCommand {
                root,
                prefer,
                timeout,
                reply,
            })
            .await
            .map_err(|_| NodeStopped)?;
        rx.await.map_err(|_| NodeStopped)
    }
}

#[async_trait::async_trait]
impl NodeApi for NodeClient {
    async fn submit(&self, x: UncheckedExtrinsic) -> Result<Result<H256, PoolError>, NodeStopped> {
        self.ask(|tx| Command::Submit(x, tx)).await
    }

    async fn pending(&self) -> Result<Vec<UncheckedExtrinsic>, NodeStopped> {
        self.ask(Command::Pending).await
    }

    async fn next_nonce(&self, account: AccountId) -> Result<u64, NodeStopped> {
        self.ask(|tx| Command::NextNonce(account, tx)).await
    }

    async fn peers(&self) -> Result<Vec<PeerInfo>, NodeStopped> {
        self.ask(Command::Peers).await
    }

    async fn remove(&self, hashes: Vec<H256>) -> Result<Vec<H256>, NodeStopped> {
        self.ask(|tx| Command::Withdraw(hashes, tx)).await
    }

    fn status(&self) -> ChainStatus {
        *self.status.borrow()
    }

    fn subscribe_finalized(&self) -> broadcast::Receiver<Arc<FinalizedBlock>> {
        self.finalized.subscribe()
    }

    fn snapshot(&self) -> Box<dyn KeyValueDb + '_> {
        Box::new(self.db.snapshot())
    }

    fn chunk_store(&self) -> Arc<ChunkStore> {
        self.chunk_store.clone()
    }

    async fn announce_checkpoint(
        &self,
        service: ServiceName,
        sequence: u64,
        root: H256,
    ) -> Result<(), NodeStopped> {
        self.commands
            .send(Command::Announce {
                service,
                sequence,
                root,
            })
            .await
            .map_err(|_| NodeStopped)
    }

    async fn push_checkpoint(&self, push: CheckpointPush) -> Result<(), NodeStopped> {
        self.pusher.push(&push);
        Ok(())
    }

    fn subscribe_announcements(&self) -> broadcast::Receiver<Announcement> {
        self.announcements.subscribe()
    }

    fn pushed_checkpoint(&self, root: &H256) -> Option<Arc<VerifiedPush>> {
        self.recent_pushes.get(root)
    }

    async fn disk(&self) -> Option<drchain_rpc::views::DiskView> {
        let (db, path) = (self.db.clone(), self.db_path.clone());
        tokio::task::spawn_blocking(move || {
            let usage = db.usage();
            let space = crate::disk::space(&path).ok();
            let retained = crate::disk::retained_blocks(&db).unwrap_or_default();
            drchain_rpc::views::DiskView {
                oldest_block: retained.oldest,
                blocks_retained: retained.count,
                database_bytes: usage
                    .kinds
                    .into_iter()
                    .map(|(kind, bytes)| (kind.to_owned(), bytes))
                    .collect(),
                database_disk_bytes: crate::disk::bytes_under(&path),
                free_bytes: space.map(|s| s.free),
                total_bytes: space.map(|s| s.total),
            }
        })
        .await
        .ok()
    }

    async fn fetch_checkpoint(
        &self,
        root: H256,
        timeout: std::time::Duration,
    ) -> Result<Result<Manifest, String>, NodeStopped> {
        self.fetch(root, None, timeout).await
    }

    async fn fetch_checkpoint_from(
        &self,
        root: H256,
        holder: AccountId,
        timeout: std::time::Duration,
    ) -> Result<Result<Manifest, String>, NodeStopped> {
        self.fetch(root, crate::network::peer_id_of(&holder), timeout)
            .await
    }
}

impl NodeHandle {
    /// A client of this node for the RPC server.
    pub fn client(&self) -> NodeClient {
        NodeClient {
            commands: self.commands.clone(),
            finalized: self.finalized.clone(),
            status: self.status.clone(),
            db: self.db.clone(),
            chunk_store: self.chunk_store.clone(),
            fetches: self.fetches.clone(),
            announcements: self.announcements.clone(),
            pusher: self.pusher.clone(),
            recent_pushes: self.recent_pushes.clone(),
            db_path: self.db_path.clone(),
        }
    }

    /// Submits a transaction (validated, pooled, gossiped).
    pub async fn submit(&self, x: UncheckedExtrinsic) -> anyhow::Result<Result<H256, PoolError>> {
        Ok(self.client().submit(x).await?)
    }

    /// The hash of finalized block `number`, if the node has it.
    pub async fn finalized_hash(&self, number: u64) -> anyhow::Result<Option<H256>> {
        Ok(self
            .client()
            .ask(|tx| Command::FinalizedHash(number, tx))
            .await?)
    }

    /// Stops the node and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await?
    }

    /// Aborts the node's task at its next await point, without a clean shutdown, and waits
    /// until its resources (the database lock among them) are released.
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Runs until `signal` completes (then stops cleanly) or the node stops on its own, which
    /// only a fatal error does (a failing database, a diverged state): that error is returned,
    /// so the process exits instead of lingering without a node.
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let mut task = self.task;
        tokio::select! {
            result = &mut task => result?,
            () = signal => {
                let _ = self.shutdown.send(true);
                task.await?
            }
        }
    }
}

impl NodeLoop {
    /// Gossips the transactions submitted here since the last time, in one message.
    pub(super) fn gossip_transactions(&mut self) {
        self.flush_at = None;
        self.last_gossip = Instant::now();
        if self.outbox.is_empty() {
            return;
        }
        let bytes = self.outbox.take();
        let topic = self.topics.transactions.clone();
        self.publish(topic, bytes, "transactions");
    }

    pub(super) fn command(&mut self, command: Command) -> anyhow::Result<()> {
        match command {
            Command::Submit(x, reply) => {
                let result = self.submit(x.clone())?;
                if result.is_ok() {
                    let full = self.outbox.push(x);
                    let idle = self.last_gossip.elapsed() >= GOSSIP_BATCH_WINDOW;
                    if (idle && self.flush_at.is_none()) || full {
                        self.gossip_transactions();
                    } else if self.flush_at.is_none() {
                        self.flush_at = Some(self.last_gossip + GOSSIP_BATCH_WINDOW);
                    }
                }
                let _ = reply.send(result);
            }
            Command::FinalizedHash(number, reply) => {
                let _ = reply.send(self.driver.store().hash(number)?);
            }
            Command::Withdraw(hashes, reply) => {
                let _ = reply.send(self.pool.withdraw(&hashes));
            }
            Command::Announce {
                service,
                sequence,
                root,
            } => self.announce(service, sequence, root),
            Command::NextNonce(account, reply) => {
                let chain = {
                    let state = self.driver.store().state();
                    drchain_runtime::system::nonce(&Overlay::new(&state), &account)
                };
                let _ = reply.send(self.pool.next_nonce(&account, chain));
            }
            Command::Pending(reply) => {
                let _ = reply.send(self.pool.pending());
            }
            Command::Peers(reply) => {
                let peers = self
                    .swarm
                    .connected_peers()
                    .map(|p| PeerInfo {
                        peer_id: p.to_string(),
                        account: network::account_of(p),
                    })
                    .collect();
                let _ = reply.send(peers);
            }
        }
        self.drain()
    }

    /// Pools a transaction; a new one starts the next height if the driver is idle. The
    /// outer error is the driver's (fatal), the inner one the pool's answer.
    pub(super) fn submit(
        &mut self,
        x: UncheckedExtrinsic,
    ) -> anyhow::Result<Result<H256, PoolError>> {
        let result = {
            let store = self.driver.store();
            self.pool.submit(&store.state(), x)
        };
        if result.is_ok() && !self.state_sync.is_joining() {
            let outputs = self.driver.on_transactions_pending(self.now_ms())?;
            self.work.extend(outputs);
        }
        Ok(result)
    }
}
