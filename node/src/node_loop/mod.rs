//! The node loop: one tokio task that owns the swarm, the consensus driver, the store and
//! the pool, and executes the driver's outputs. Everything protocol-related is decided by the
//! driver; this loop only moves bytes and time.
//!
//! Layout: this module starts the task and runs its `select!`; [`ingress`] is what clients
//! (RPC, agent, tests) send it; [`swarm_events`] admits peers and takes in gossip;
//! [`sync_server`] answers and applies block-sync messages; [`replication_link`] moves
//! replication messages between the swarm and the replication task; [`subscriptions`]
//! reconnects peers whose gossip topics were lost; [`effects`] executes the driver's outputs.

mod effects;
mod expiry;
mod ingress;
mod peer_exchange;
mod replication_link;
mod state_sync;
mod subscriptions;
mod swarm_events;
mod sync_server;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use drchain_runtime::Genesis;
use ed25519_dalek::SigningKey;
use futures::StreamExt;
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::{broadcast, mpsc, watch};

use crate::checkpoint_push::{
    Dialer, Handshake, PeerHosts, PushContext, PushReceiver, Pusher, RecentPushes,
};
use crate::metrics::Metrics;
use crate::network::{self, Behaviour, Topics};
use crate::replication::{NetOut, ReplicationTask};
use crate::rocks::RocksDb;
use drchain_consensus::clock::Clock;
use drchain_consensus::context::SigningProvider;
use drchain_consensus::pool::TransactionPool;
use drchain_consensus::store::ChainStore;
use drchain_consensus::{ConsensusDriver, DriverConfig, Output, TimerKey};
use drchain_replication::ChunkStore;
use drchain_rpc::{ChainStatus, FinalizedBlock};
use replication_link::ReplicationLink;

use ingress::Command;
pub use ingress::{NodeClient, NodeHandle};
use state_sync::StateSyncLink;
pub use state_sync::SyncMode;

pub use drchain_consensus::host::{BLOCK_LIMIT, POOL_LIMIT};
/// How often bootnodes we are not connected to are dialled again (and peers whose gossip
/// topics were lost are disconnected).
const REDIAL: Duration = Duration::from_secs(2);
/// How often a joining node's state sync looks at its timers (offers collected, requests
/// to send).
const STATE_SYNC_TICK: Duration = Duration::from_millis(250);
/// Transactions submitted here are gossiped at once when none were in the last
/// `GOSSIP_BATCH_WINDOW`, else together at its end: light load keeps its latency, heavy load
/// sends few large messages instead of many small ones.
const GOSSIP_BATCH_WINDOW: Duration = Duration::from_millis(3);
/// Finalized blocks a slow subscriber may fall behind before it misses some.
const FINALIZED_BACKLOG: usize = 1024;
/// Checkpoint announcements kept for a subscriber that is behind (one per checkpoint of each
/// service: far more than a standby needs, as it only wants the newest).
const ANNOUNCEMENT_BACKLOG: usize = 256;

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The chain.
    pub genesis: Genesis,
    /// Where the database lives.
    pub database: PathBuf,
    /// The member key: signs votes and is the network identity.
    pub key: SigningKey,
    /// A name for logs.
    pub name: String,
    /// Whether to take part in consensus when the key is in the validator set.
    pub validator: bool,
    /// Where to listen.
    pub listen: Multiaddr,
    /// Peers to dial (and redial).
    pub bootnodes: Vec<Multiaddr>,
    /// Addresses members are told to reach this node at, besides those it listens on.
    pub public_addrs: Vec<Multiaddr>,
    /// Where to listen for direct checkpoint push connections (port 0: any free port; `None`:
    /// pushes come only through libp2p).
    pub push_listen: Option<std::net::SocketAddr>,
    /// Consensus timers and limits.
    pub driver: DriverConfig,
    /// Where the node reads wall-clock time (block timestamps, the driver's `now_ms`).
    pub clock: Arc<dyn Clock>,
    /// How a node with an empty database gets the state: by replay, or by state sync.
    pub sync: SyncMode,
    /// Which finalized blocks to keep.
    pub blocks_pruning: drchain_consensus::store::BlocksPruning,
    /// Which past states to keep for queries.
    pub state_pruning: drchain_consensus::store::StatePruning,
}

/// Opens the store, starts listening, and spawns the node's task.
pub async fn start(config: NodeConfig) -> anyhow::Result<NodeHandle> {
    std::fs::create_dir_all(&config.database)
        .with_context(|| format!("creating {}", config.database.display()))?;
    let db = RocksDb::open(&config.database)
        .with_context(|| format!("opening the database {}", config.database.display()))?;
    let shared_db = db.clone();
    let mut store = ChainStore::open(db, &config.genesis)?;
    store.set_blocks_pruning(config.blocks_pruning);
    store.set_state_pruning(config.state_pruning);
    // A node with blocks takes a state only when it is more than a sync point behind.
    let state_sync = if config.sync == SyncMode::Fast {
        let head = store.head().number;
        StateSyncLink::joining(&config.genesis, head, store.sync_progress()?)
    } else {
        StateSyncLink::default()
    };
    // Beside the database, one per node: `<database>.chunks`.
    let chunk_dir = PathBuf::from(format!("{}.chunks", config.database.display()));
    let database_path = config.database.clone();
    let chunk_store = Arc::new(
        ChunkStore::open(&chunk_dir)
            .with_context(|| format!("opening the chunk store {}", chunk_dir.display()))?,
    );
    let genesis_hash = config.genesis.hash();
    let signer = SigningProvider::new(genesis_hash, config.key.clone());
    let driver = ConsensusDriver::new(store, signer, config.driver, config.validator);
    let mut swarm = network::build_swarm(&config.key, &genesis_hash)?;
    let topics = Topics::new(&genesis_hash);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topics.consensus)?;
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topics.transactions)?;
    for address in &config.public_addrs {
        // Identify tells members these along with the listen addresses.
        swarm.add_external_address(address.clone());
    }
    swarm
        .listen_on(config.listen.clone())
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let peer_id = *swarm.local_peer_id();
    let (listening_tx, listening) = watch::channel(vec![]);
    let (status_tx, status) = watch::channel(ChainStatus::default());
    let (commands, commands_rx) = mpsc::channel(1024);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (finalized, _) = broadcast::channel(FINALIZED_BACKLOG);
    let metrics = Arc::new(Metrics::new());
    let (to_task, task_in) = mpsc::unbounded_channel();
    let (task_out, replication_out) = mpsc::unbounded_channel();
    let (peers_tx, peers_rx) = watch::channel(vec![]);
    let (fetches, fetches_rx) = mpsc::channel(64);
    let (announcements, _) = broadcast::channel(ANNOUNCEMENT_BACKLOG);
    // Bounded by MAX_SYNC_SERVING answers in flight.
    let (sync_answers, sync_answers_rx) = mpsc::unbounded_channel();
    let push_context = PushContext::new(shared_db.clone(), peers_rx.clone(), status.clone());
    let mut push_control = swarm.behaviour().push_streams.new_control();
    let incoming_pushes = push_control
        .accept(crate::checkpoint_push::PROTOCOL)
        .map_err(|e| anyhow::anyhow!("checkpoint push protocol: {e}"))?;
    let handshake = Handshake::new(network::keypair(&config.key)?, &genesis_hash);
    let (direct_pushes_tx, direct_pushes) = mpsc::channel(8);
    let direct_port = match config.push_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for checkpoint pushes on {address}"))?;
            let port = listener.local_addr()?.port();
            tracing::info!(address = %std::net::SocketAddr::new(address.ip(), port), "listening for direct checkpoint pushes");
            tokio::spawn(handshake.clone().accept(listener, direct_pushes_tx));
            port
        }
        None => 0,
    };
    let recent_pushes = Arc::new(RecentPushes::default());
    tokio::spawn(
        PushReceiver {
            context: push_context.clone(),
            me: network::account_of(&peer_id),
            store: chunk_store.clone(),
            recent: recent_pushes.clone(),
            announcements: announcements.clone(),
            out: task_out.clone(),
        }
        .run(incoming_pushes, direct_pushes, direct_port),
    );
    let peer_hosts = Arc::new(PeerHosts::default());
    let dialer = Dialer {
        handshake,
        hosts: peer_hosts.clone(),
    };
    let pusher = Arc::new(Pusher::new(
        push_control,
        push_context,
        dialer,
        metrics.checkpoint_push_counters(),
    ));
    tokio::spawn(
        ReplicationTask::new(chunk_store.clone(), peers_rx, task_out).run(task_in, fetches_rx),
    );
    tracing::info!(name = %config.name, %peer_id, validator = config.validator, "node starting");
    let node_loop = NodeLoop {
        clock: config.clock.clone(),
        pool: TransactionPool::new(genesis_hash, POOL_LIMIT),
        driver,
        swarm,
        topics,
        timers: BTreeMap::new(),
        work: VecDeque::new(),
        bootnodes: config.bootnodes,
        listening: listening_tx,
        status: status_tx,
        stats: ChainStatus::default(),
        sync_peer: 0,
        empty_sync_answers: 0,
        empty_sync_warned: None,
        admission: HashMap::new(),
        penalized: HashMap::new(),
        connected_since: HashMap::new(),
        expiry_warned: HashMap::new(),
        db: shared_db.clone(),
        sync_rates: HashMap::new(),
        sync_serving: 0,
        sync_answers,
        finalized: finalized.clone(),
        metrics: metrics.clone(),
        outbox: network::TransactionBatch::default(),
        last_gossip: Instant::now(),
        flush_at: None,
        replication: ReplicationLink::new(to_task, peers_tx, announcements.clone()),
        discovery: crate::discovery::Discovery::default(),
        state_sync,
        peer_hosts,
    };
    let task =
        tokio::spawn(node_loop.run(commands_rx, shutdown_rx, replication_out, sync_answers_rx));
    Ok(NodeHandle {
        peer_id,
        listening,
        status,
        metrics,
        db: shared_db,
        finalized,
        commands,
        shutdown,
        task,
        chunk_store,
        fetches,
        announcements,
        pusher,
        recent_pushes,
        db_path: database_path,
        direct_push_port: direct_port,
    })
}

struct NodeLoop {
    clock: Arc<dyn Clock>,
    driver: ConsensusDriver<RocksDb>,
    pool: TransactionPool,
    swarm: Swarm<Behaviour>,
    topics: Topics,
    timers: BTreeMap<TimerKey, Instant>,
    work: VecDeque<Output>,
    bootnodes: Vec<Multiaddr>,
    listening: watch::Sender<Vec<Multiaddr>>,
    status: watch::Sender<ChainStatus>,
    stats: ChainStatus,
    sync_peer: usize,
    /// Block-sync answers in a row that carried no block.
    empty_sync_answers: u32,
    /// When the node last warned that peers send it no blocks.
    empty_sync_warned: Option<Instant>,
    /// Admission answers for the current head (see [`NodeLoop::admitted`]).
    admission: HashMap<PeerId, bool>,
    /// Peers kept out until then for sending provably bad data.
    penalized: HashMap<PeerId, Instant>,
    /// When the first of the connections to each admitted peer came up.
    connected_since: HashMap<PeerId, Instant>,
    /// When each member's coming expiry was last warned about.
    expiry_warned: HashMap<drchain_support::AccountId, Instant>,
    /// The database, for reads off the consensus task (sync answers).
    db: RocksDb,
    /// Each peer's sync request rate.
    sync_rates: HashMap<PeerId, sync_server::RateLimit>,
    /// Sync answers being read.
    sync_serving: usize,
    /// Where those reads send their answers.
    sync_answers: mpsc::UnboundedSender<sync_server::SyncAnswer>,
    finalized: broadcast::Sender<Arc<FinalizedBlock>>,
    metrics: Arc<Metrics>,
    /// Transactions submitted here, not gossiped yet.
    outbox: network::TransactionBatch,
    last_gossip: Instant,
    flush_at: Option<Instant>,
    replication: ReplicationLink,
    /// Members' addresses learned from identify and peer exchange.
    discovery: crate::discovery::Discovery,
    /// Sync points served and, while joining, the state being fetched.
    state_sync: StateSyncLink,
    /// Where each admitted peer's connection came from, for direct checkpoint pushes.
    peer_hosts: Arc<PeerHosts>,
}

impl NodeLoop {
    /// Wall-clock time for the driver, ms.
    fn now_ms(&self) -> u64 {
        self.clock.now().wall_ms
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
        mut replication_out: mpsc::UnboundedReceiver<NetOut>,
        mut sync_answers: mpsc::UnboundedReceiver<sync_server::SyncAnswer>,
    ) -> anyhow::Result<()> {
        let head = self.driver.store().head().clone();
        self.stats.finalized = head.number;
        self.stats.hash = head.hash();
        self.publish_status();
        if self.state_sync.is_joining() {
            tracing::info!("State sync: asking peers for a recent sync point");
            self.stats.syncing = true;
        } else {
            let outputs = self.driver.start(self.now_ms())?;
            self.execute(outputs)?;
        }
        self.dial_bootnodes();
        let mut redial = tokio::time::interval(REDIAL);
        let mut state_sync_tick = tokio::time::interval(STATE_SYNC_TICK);
        loop {
            let next_timer = self.timers.values().min().copied();
            let sleep = async {
                match next_timer {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => futures::future::pending().await,
                }
            };
            let flush_at = self.flush_at;
            let flush = async {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => {
                    tracing::info!("node stopping");
                    return Ok(());
                }
                Some(command) = commands.recv() => self.command(command)?,
                Some(out) = replication_out.recv() => self.replication_out(out),
                Some(answer) = sync_answers.recv() => self.answer_sync(answer),
                event = self.swarm.select_next_some() => self.swarm_event(event)?,
                _ = sleep => self.fire_timers()?,
                _ = flush => self.gossip_transactions(),
                _ = state_sync_tick.tick(), if self.state_sync.is_joining() => {
                    self.drive_state_sync()?;
                }
                _ = redial.tick() => {
                    self.reconnect_peers_missing_topics();
                    self.dial_bootnodes();
                    self.dial_members();
                }
            }
        }
    }

    fn publish_status(&mut self) {
        self.stats.peers = self.swarm.connected_peers().count();
        self.status.send_replace(self.stats);
        self.metrics.peers.set(self.stats.peers as i64);
        self.metrics.pool_size.set(self.pool.len() as i64);
        self.metrics
            .consensus_height
            .set(self.driver.height() as i64);
        self.metrics
            .consensus_round
            .set(self.driver.round().map_or(-1, i64::from));
    }

    fn dial_bootnodes(&mut self) {
        let connected: BTreeSet<PeerId> = self.swarm.connected_peers().copied().collect();
        let me = *self.swarm.local_peer_id();
        for addr in self.bootnodes.clone() {
            let peer = addr.iter().find_map(|p| match p {
                libp2p::multiaddr::Protocol::P2p(id) => Some(id),
                _ => None,
            });
            if peer.is_some_and(|p| p == me || connected.contains(&p)) {
                continue;
            }
            if peer.is_none() && !connected.is_empty() {
                continue;
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "dial failed");
            }
        }
    }

    fn fire_timers(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let due: Vec<TimerKey> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.timers.remove(&key);
            let started = Instant::now();
            let outputs = self.driver.on_timer(self.now_ms(), key)?;
            self.observe_import(started, &outputs);
            self.execute(outputs)?;
        }
        Ok(())
    }
}
