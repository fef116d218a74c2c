//! The node service: one tokio task that owns the swarm, the consensus driver, the store and
//! the pool, and executes the driver's outputs. Everything protocol-related is decided by the
//! driver; this loop only moves bytes and time.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use drchain_runtime::{EventRecord, Genesis, Header, UncheckedExtrinsic};
use drchain_support::{Overlay, H256};
use ed25519_dalek::SigningKey;
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, request_response, Multiaddr, PeerId, Swarm};
use parity_scale_codec::Encode;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::consensus::codec::ConsensusMessage;
use crate::consensus::context::SigningProvider;
use crate::consensus::{ConsensusDriver, DriverConfig, Output, TimerKey};
use crate::metrics::Metrics;
use crate::network::{self, Behaviour, BehaviourEvent, SyncRequest, SyncResponse, Topics};
use crate::pool::{PoolError, TransactionPool};
use crate::store::rocks::RocksDb;
use crate::store::ChainStore;

/// Pending transactions at most.
pub const POOL_LIMIT: usize = 65_536;
/// Extrinsics per block at most.
pub const BLOCK_LIMIT: usize = 4096;
/// How often bootnodes we are not connected to are dialled again.
const REDIAL: Duration = Duration::from_secs(2);
/// Transactions submitted here are gossiped at once when none were in the last
/// `GOSSIP_BATCH_WINDOW`, else together at its end: light load keeps its latency, heavy load
/// sends few large messages instead of many small ones.
const GOSSIP_BATCH_WINDOW: Duration = Duration::from_millis(3);
/// Finalized blocks a slow subscriber may fall behind before it misses some.
const FINALIZED_BACKLOG: usize = 1024;

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
    /// Consensus timers and limits.
    pub driver: DriverConfig,
}

/// What happened to the chain, as seen from outside the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChainStatus {
    /// Finalized height.
    pub finalized: u64,
    /// Finalized hash.
    pub hash: H256,
    /// Connected peers.
    pub peers: usize,
    /// Malformed or invalid network messages dropped.
    pub dropped_messages: u64,
    /// Peers disconnected for not being members.
    pub rejected_peers: u64,
    /// Transactions in blocks finalized since start.
    pub included_transactions: u64,
    /// Blocks imported by sync since start.
    pub synced_blocks: u64,
    /// Whether the node is catching up with peers by sync.
    pub syncing: bool,
}

/// A block as it is finalized, for subscribers (RPC subscriptions, metrics).
#[derive(Debug, Clone)]
pub struct FinalizedBlock {
    /// Its header.
    pub header: Header,
    /// Its hash.
    pub hash: H256,
    /// Hashes of its extrinsics, in order.
    pub extrinsics: Vec<H256>,
    /// What happened in it.
    pub events: Vec<EventRecord>,
    /// Pending transactions dropped from the pool after it, and why.
    pub dropped: Vec<(H256, String)>,
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its libp2p id.
    pub peer_id: PeerId,
    /// Its member account (the same Ed25519 key), if the id carries one.
    pub account: Option<drchain_support::AccountId>,
}

enum Command {
    Submit(UncheckedExtrinsic, oneshot::Sender<Result<H256, PoolError>>),
    FinalizedHash(u64, oneshot::Sender<Option<H256>>),
    Pending(oneshot::Sender<Vec<UncheckedExtrinsic>>),
    NextNonce(drchain_support::AccountId, oneshot::Sender<u64>),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Withdraw(Vec<H256>, oneshot::Sender<Vec<H256>>),
}

/// A running node, for the binary and for in-process tests.
#[derive(Debug)]
pub struct NodeHandle {
    /// Its peer id.
    pub peer_id: PeerId,
    /// Addresses it listens on, once bound.
    pub listening: watch::Receiver<Vec<Multiaddr>>,
    /// The chain as it goes.
    pub status: watch::Receiver<ChainStatus>,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
    /// The database, shared for reads (see [`RocksDb::snapshot`]).
    pub db: RocksDb,
    finalized: broadcast::Sender<Arc<FinalizedBlock>>,
    commands: mpsc::Sender<Command>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// The node's task is gone (stopped, or stopped on a fatal error).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the node stopped")]
pub struct NodeStopped;

/// What the RPC server and the metrics need from a running node: cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeClient {
    commands: mpsc::Sender<Command>,
    finalized: broadcast::Sender<Arc<FinalizedBlock>>,
    status: watch::Receiver<ChainStatus>,
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

    /// Submits a transaction (validated, pooled, gossiped).
    pub async fn submit(
        &self,
        x: UncheckedExtrinsic,
    ) -> Result<Result<H256, PoolError>, NodeStopped> {
        self.ask(|tx| Command::Submit(x, tx)).await
    }

    /// Transactions waiting in the pool.
    pub async fn pending(&self) -> Result<Vec<UncheckedExtrinsic>, NodeStopped> {
        self.ask(Command::Pending).await
    }

    /// The nonce `account`'s next transaction should use: the chain's, past its pending ones.
    pub async fn next_nonce(
        &self,
        account: drchain_support::AccountId,
    ) -> Result<u64, NodeStopped> {
        self.ask(|tx| Command::NextNonce(account, tx)).await
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NodeStopped> {
        self.ask(Command::Peers).await
    }

    /// Takes transactions out of the pool; returns those that were there.
    pub async fn remove(&self, hashes: Vec<H256>) -> Result<Vec<H256>, NodeStopped> {
        self.ask(|tx| Command::Withdraw(hashes, tx)).await
    }

    /// The chain as the node last published it.
    pub fn status(&self) -> ChainStatus {
        *self.status.borrow()
    }

    /// Blocks as they are finalized, from now on.
    pub fn subscribe_finalized(&self) -> broadcast::Receiver<Arc<FinalizedBlock>> {
        self.finalized.subscribe()
    }
}

impl NodeHandle {
    /// A client of this node for the RPC server.
    pub fn client(&self) -> NodeClient {
        NodeClient {
            commands: self.commands.clone(),
            finalized: self.finalized.clone(),
            status: self.status.clone(),
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

/// Log lines an operator can grep for every failover transition in a finalized block.
fn log_failover_events(events: &[drchain_runtime::EventRecord]) {
    use drchain_runtime::pallet_failover::Event;
    for record in events {
        let drchain_runtime::RuntimeEvent::Failover(event) = &record.event else {
            continue;
        };
        match event {
            Event::Elected {
                service,
                node,
                epoch,
                previous,
                reason,
            } => tracing::info!(
                "failover service={service} epoch={epoch} from={} to={node} reason={reason:?}",
                previous.map_or_else(|| "none".to_owned(), |p| p.to_string())
            ),
            Event::PromotionCompleted {
                service,
                node,
                epoch,
            } => tracing::info!("promoted service={service} epoch={epoch} node={node}"),
            Event::Deposed {
                service,
                node,
                epoch,
                reason,
            } => tracing::info!(
                "deposed service={service} epoch={epoch} node={node} reason={reason:?}"
            ),
            Event::WentVacant {
                service,
                epoch,
                reason,
            } => tracing::warn!("vacant service={service} epoch={epoch} reason={reason:?}"),
            _ => {}
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Opens the store, starts listening, and spawns the node's task.
pub async fn start(config: NodeConfig) -> anyhow::Result<NodeHandle> {
    std::fs::create_dir_all(&config.database)
        .with_context(|| format!("creating {}", config.database.display()))?;
    let db = RocksDb::open(&config.database)
        .with_context(|| format!("opening the database {}", config.database.display()))?;
    let shared_db = db.clone();
    let store = ChainStore::open(db, &config.genesis)?;
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
    tracing::info!(name = %config.name, %peer_id, validator = config.validator, "node starting");
    let service = Service {
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
        admission: HashMap::new(),
        finalized: finalized.clone(),
        metrics: metrics.clone(),
        outbox: vec![],
        last_gossip: Instant::now(),
        flush_at: None,
    };
    let task = tokio::spawn(service.run(commands_rx, shutdown_rx));
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
    })
}

struct Service {
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
    /// Admission answers for the current head (see [`Service::admitted`]).
    admission: HashMap<PeerId, bool>,
    finalized: broadcast::Sender<Arc<FinalizedBlock>>,
    metrics: Arc<Metrics>,
    /// Transactions submitted here, not gossiped yet.
    outbox: Vec<UncheckedExtrinsic>,
    last_gossip: Instant,
    flush_at: Option<Instant>,
}

impl Service {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let head = self.driver.store().head().clone();
        self.stats.finalized = head.number;
        self.stats.hash = head.hash();
        self.publish_status();
        let outputs = self.driver.start(now_ms())?;
        self.execute(outputs)?;
        self.dial_bootnodes();
        let mut redial = tokio::time::interval(REDIAL);
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
                event = self.swarm.select_next_some() => self.swarm_event(event)?,
                _ = sleep => self.fire_timers()?,
                _ = flush => self.gossip_transactions(),
                _ = redial.tick() => self.dial_bootnodes(),
            }
        }
    }

    /// Gossips the transactions submitted here since the last time, in one message.
    fn gossip_transactions(&mut self) {
        self.flush_at = None;
        self.last_gossip = Instant::now();
        if self.outbox.is_empty() {
            return;
        }
        let bytes = network::encode_transactions(&self.outbox);
        self.outbox.clear();
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topics.transactions.clone(), bytes)
        {
            tracing::debug!(error = %e, "transactions not gossiped");
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
            let outputs = self.driver.on_timer(now_ms(), key)?;
            self.observe_import(started, &outputs);
            self.execute(outputs)?;
        }
        Ok(())
    }

    fn command(&mut self, command: Command) -> anyhow::Result<()> {
        match command {
            Command::Submit(x, reply) => {
                let result = self.submit(x.clone())?;
                if result.is_ok() {
                    self.outbox.push(x);
                    let idle = self.last_gossip.elapsed() >= GOSSIP_BATCH_WINDOW;
                    if (idle && self.flush_at.is_none())
                        || self.outbox.len() >= network::MAX_TRANSACTIONS_PER_MESSAGE
                    {
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
                        peer_id: *p,
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
    fn submit(&mut self, x: UncheckedExtrinsic) -> anyhow::Result<Result<H256, PoolError>> {
        let result = {
            let store = self.driver.store();
            self.pool.submit(&store.state(), x)
        };
        if result.is_ok() {
            let outputs = self.driver.on_transactions_pending(now_ms())?;
            self.work.extend(outputs);
        }
        Ok(result)
    }

    /// Whether `peer` is an admitted, unrevoked member of the finalized state. Asked for every
    /// gossip message, so answers are kept until the next block.
    fn admitted(&mut self, peer: &PeerId) -> bool {
        if let Some(known) = self.admission.get(peer) {
            return *known;
        }
        let admitted = network::account_of(peer).is_some_and(|account| {
            let store = self.driver.store();
            let at = store.head().timestamp;
            pallet_membership::is_admitted(&Overlay::new(&store.state()), &account, at)
        });
        self.admission.insert(*peer, admitted);
        admitted
    }

    /// After a block: forgets cached admissions and disconnects peers no longer admitted.
    fn enforce_membership(&mut self) {
        self.admission.clear();
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            if !self.admitted(&peer) {
                tracing::warn!(%peer, "disconnecting a peer that is not an admitted member");
                self.stats.rejected_peers += 1;
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }

    fn swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) -> anyhow::Result<()> {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.listening.send_modify(|l| l.push(address));
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                if self.admitted(&peer_id) {
                    tracing::debug!(peer = %peer_id, "peer connected");
                } else {
                    tracing::warn!(peer = %peer_id, "disconnecting a peer that is not an admitted member");
                    self.stats.rejected_peers += 1;
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                }
                self.publish_status();
            }
            SwarmEvent::ConnectionClosed { .. } => self.publish_status(),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message,
                ..
            })) => self.gossip(propagation_source, message)?,
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                peer,
                message,
                ..
            })) => self.sync_message(peer, message)?,
            SwarmEvent::Behaviour(BehaviourEvent::Sync(
                request_response::Event::OutboundFailure { peer, error, .. },
            )) => tracing::debug!(%peer, %error, "sync request failed"),
            _ => {}
        }
        self.drain()
    }

    fn gossip(&mut self, from: PeerId, message: gossipsub::Message) -> anyhow::Result<()> {
        if !self.admitted(&from) {
            self.stats.dropped_messages += 1;
            return Ok(());
        }
        if message.topic == self.topics.consensus.hash() {
            match ConsensusMessage::decode_untrusted(&message.data) {
                Ok(m) => {
                    let started = Instant::now();
                    let outputs = self.driver.on_message(now_ms(), m)?;
                    self.observe_import(started, &outputs);
                    self.execute(outputs)?;
                }
                Err(e) => {
                    self.stats.dropped_messages += 1;
                    tracing::debug!(peer = %from, error = %e, "malformed consensus message dropped");
                }
            }
        } else if message.topic == self.topics.transactions.hash() {
            match network::decode_transactions(&message.data) {
                Ok(transactions) => {
                    for x in transactions {
                        if let Err(e) = self.submit(x)? {
                            tracing::trace!(error = %e, "gossiped transaction not pooled");
                        }
                    }
                }
                Err(e) => {
                    self.stats.dropped_messages += 1;
                    tracing::debug!(peer = %from, error = %e, "malformed transactions dropped");
                }
            }
        }
        Ok(())
    }

    fn sync_message(
        &mut self,
        peer: PeerId,
        message: request_response::Message<SyncRequest, SyncResponse>,
    ) -> anyhow::Result<()> {
        match message {
            request_response::Message::Request {
                request, channel, ..
            } => {
                if !self.admitted(&peer) {
                    return Ok(());
                }
                let store = self.driver.store();
                let head = store.head().number;
                let last = head.min(
                    request
                        .from
                        .saturating_add(u64::from(request.max).min(network::SYNC_BATCH))
                        .saturating_sub(1),
                );
                let mut blocks = vec![];
                for n in request.from.max(1)..=last {
                    match (store.block(n)?, store.certificate(n)?) {
                        (Some(b), Some(c)) => blocks.push((b, c)),
                        _ => break,
                    }
                }
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, SyncResponse { blocks });
            }
            request_response::Message::Response { response, .. } => {
                for (block, certificate) in response.blocks {
                    let started = Instant::now();
                    match self.driver.on_synced_block(now_ms(), block, certificate)? {
                        Ok(outputs) => {
                            self.observe_import(started, &outputs);
                            self.execute(outputs)?;
                        }
                        Err(rejected) => {
                            tracing::warn!(%peer, %rejected, "peer sent a bad block; disconnecting");
                            self.stats.dropped_messages += 1;
                            let _ = self.swarm.disconnect_peer_id(peer);
                            break;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A driver call that finalized a block validated, executed and stored it: its duration
    /// is that block's import time.
    fn observe_import(&self, started: Instant, outputs: &[Output]) {
        if outputs
            .iter()
            .any(|o| matches!(o, Output::Finalized { .. }))
        {
            self.metrics
                .block_import
                .observe(started.elapsed().as_secs_f64());
        }
    }

    fn execute(&mut self, outputs: Vec<Output>) -> anyhow::Result<()> {
        self.work.extend(outputs);
        self.drain()
    }

    fn drain(&mut self) -> anyhow::Result<()> {
        while let Some(output) = self.work.pop_front() {
            self.output(output)?;
        }
        Ok(())
    }

    fn output(&mut self, output: Output) -> anyhow::Result<()> {
        match output {
            Output::Broadcast(message) => {
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.topics.consensus.clone(), message.encode())
                {
                    tracing::trace!(error = %e, "consensus message not gossiped");
                }
            }
            Output::ScheduleTimer { key, after_ms } => {
                self.timers
                    .insert(key, Instant::now() + Duration::from_millis(after_ms));
            }
            Output::CancelTimer(key) => {
                self.timers.remove(&key);
            }
            Output::CancelAllTimers => self.timers.retain(|k, _| *k == TimerKey::Idle),
            Output::BuildBlock { height, round } => {
                let now = now_ms();
                let built = {
                    let store = self.driver.store();
                    self.pool
                        .build_block(&store.state(), store.head(), now, BLOCK_LIMIT)
                };
                match built {
                    Ok(built) => {
                        for (hash, reason) in &built.rejected {
                            tracing::debug!(%hash, %reason, "transaction left out of the block");
                        }
                        let started = Instant::now();
                        let outputs = self.driver.on_block_built(
                            now,
                            height,
                            round,
                            built.block,
                            built.executed,
                        )?;
                        self.observe_import(started, &outputs);
                        self.work.extend(outputs);
                    }
                    Err(e) => tracing::error!(error = %e, "could not build a block"),
                }
            }
            Output::Finalized {
                header,
                hash,
                round,
                extrinsics,
                events,
                synced,
            } => {
                tracing::info!(
                    "Imported #{} ({hash}) txs={} round={round} via={}",
                    header.number,
                    extrinsics.len(),
                    if synced { "sync" } else { "consensus" }
                );
                tracing::info!("Finalized #{} ({hash})", header.number);
                log_failover_events(&events);
                let dropped = {
                    let store = self.driver.store();
                    self.pool.finalized(&store.state(), &extrinsics)
                };
                for (hash, reason) in &dropped {
                    tracing::info!(%hash, %reason, "transaction dropped from the pool");
                }
                self.stats.finalized = header.number;
                self.stats.hash = hash;
                self.stats.included_transactions += extrinsics.len() as u64;
                if synced {
                    self.stats.synced_blocks += 1;
                } else {
                    self.stats.syncing = false;
                }
                self.enforce_membership();
                self.metrics
                    .block_finalized(&header, extrinsics.len(), &events);
                self.metrics.record_services(&self.driver.store().state());
                let _ = self.finalized.send(Arc::new(FinalizedBlock {
                    header,
                    hash,
                    extrinsics,
                    events,
                    dropped: dropped
                        .into_iter()
                        .map(|(h, reason)| (h, reason.to_string()))
                        .collect(),
                }));
                self.publish_status();
                if !self.pool.is_empty() {
                    let outputs = self.driver.on_transactions_pending(now_ms())?;
                    self.work.extend(outputs);
                }
            }
            Output::RequestSync { from } => {
                self.stats.syncing = true;
                let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                if !peers.is_empty() {
                    self.sync_peer = (self.sync_peer + 1) % peers.len();
                    let peer = peers[self.sync_peer];
                    tracing::debug!(%peer, from, "asking for blocks");
                    self.swarm.behaviour_mut().sync.send_request(
                        &peer,
                        SyncRequest {
                            from,
                            max: network::SYNC_BATCH as u32,
                        },
                    );
                }
            }
        }
        Ok(())
    }
}
