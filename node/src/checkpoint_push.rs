//! Checkpoint pushes: the active node of a service sends each new checkpoint (its manifest and
//! new chunks, `drchain_replication::push`) to the service's candidates the moment it is
//! taken, over one long-lived stream per candidate (`/drchain/replication-push/2`,
//! length-prefixed SCALE frames, no answer).
//!
//! Off the node loop on both ends: a write goes from the agent to a writer task and into the
//! connection; a read goes from the connection to a reader task, which checks, verifies and
//! announces the push to the agent. A stream stays open, so a push costs no protocol
//! negotiation; the node loop, busy with consensus, is not in the way.
//!
//! Bounds, against a member that sends anything: one reader per member (a new stream from it
//! replaces the old), one frame of at most `MAX_PUSH_BYTES` buffered by each, one push being
//! verified at a time by each, and at most `PUSHES_KEPT` verified pushes waiting to be stored
//! by each (a push the agent can apply from memory is stored `STORE_GRACE` later, unless the
//! agent stored it first: storing at once slowed that apply). A push is kept only from the
//! member the chain says holds the service, and only by a candidate of it; bytes that are not
//! a push, or a push whose chunks or manifest do not match their names, get the sender
//! disconnected. Verified pushes wait for the agent in a small ring ([`RecentPushes`]), each
//! within `MAX_PUSH_PLAIN_BYTES` decoded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use drchain_consensus::store::ChainReader;
use drchain_replication::push::{CheckpointPush, PushRejected, VerifiedPush, MAX_PUSH_BYTES};
use drchain_replication::ChunkStore;
use drchain_rpc::{Announcement, ChainStatus};
use drchain_runtime::pallet_failover;
use drchain_support::{AccountId, Overlay, ServiceName, StateRead, H256};
use futures::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams};
use parity_scale_codec::Encode;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::AbortHandle;

use crate::network;
use crate::replication::NetOut;
use crate::rocks::RocksDb;

/// The protocol of a push stream.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/drchain/replication-push/2");
/// Pushes waiting for one candidate's stream at most; more are dropped (the candidate fetches
/// the checkpoint when a block records it).
const QUEUED_PER_CANDIDATE: usize = 2;
/// Opening a stream or writing a push that takes longer drops the stream.
const STREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// A push of at most this many objects and manifest bytes is verified on the reader's task
/// (decoding at most four chunks of 64 KiB), a larger one on a blocking thread.
const INLINE_OBJECTS: usize = 4;
const INLINE_MANIFEST_BYTES: usize = 64 * 1024;
/// Verified pushes kept in memory for the agent, at most (each at most
/// `MAX_PUSH_PLAIN_BYTES` of chunks): the agent takes the one it was told of at once.
const PUSHES_KEPT: usize = 4;
/// A push kept in memory for the agent is stored by this node this long after it came, unless
/// the agent stored it first (it applies the push from memory, then stores it before
/// flushing). Storing at once competed with that apply for the CPU and the disk: on the
/// 2-vCPU VM of docs/benchmarks.md a write reached the standby's target at p50 1.9–2.2 ms
/// with it, 1.2–1.4 ms with the store put off by 20 ms (interleaved runs).
const STORE_GRACE: Duration = Duration::from_millis(50);

/// The last few verified pushes, with their chunks in memory, for the agent
/// (`NodeApi::pushed_checkpoint`).
#[derive(Debug, Default)]
pub struct RecentPushes(Mutex<VecDeque<Arc<VerifiedPush>>>);

impl RecentPushes {
    fn keep(&self, push: Arc<VerifiedPush>) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() >= PUSHES_KEPT {
            kept.pop_front();
        }
        kept.push_back(push);
    }

    /// Checkpoint `root`, if among the last pushed.
    pub fn get(&self, root: &H256) -> Option<Arc<VerifiedPush>> {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.iter().rev().find(|p| p.push.root == *root).cloned()
    }
}

/// The node holding a service on chain (active or promoting), and its candidates.
type Members = (Option<AccountId>, Vec<AccountId>);

/// The node holding `service` on chain (active or promoting) and its candidates.
fn service_members(state: &impl StateRead, service: &ServiceName) -> Members {
    let state = Overlay::new(state);
    let holder = pallet_failover::service_state(&state, service).and_then(|s| s.phase.holder());
    let candidates = pallet_failover::config(&state, service)
        .map(|c| c.candidates)
        .unwrap_or_default();
    (holder, candidates)
}

/// Services kept in [`KnownMembers`] at most; pushes for others read the state each time.
const MEMBERS_KEPT: usize = 64;

/// The members of the services pushes were sent or received for, as of the latest finalized
/// block. Reading them takes a database snapshot and decodes the service's state (40–50 µs
/// with a cold cache on the VM of docs/benchmarks.md), which every push needed at both ends
/// on the path of the write it carries; they are read again after each block instead
/// ([`refresh_members`]). Between a block and that refresh a push is checked against the
/// block before (the agent checks what it applies against its own view of the chain).
#[derive(Debug, Default)]
struct KnownMembers(std::sync::RwLock<HashMap<ServiceName, Members>>);

impl KnownMembers {
    /// `service`'s members: kept ones, or read with `read` (and kept, if the service exists).
    fn get(&self, service: &ServiceName, read: impl FnOnce() -> Members) -> Members {
        let kept = self.0.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(members) = kept.get(service) {
            return members.clone();
        }
        drop(kept);
        let members = read();
        // Only a service with candidates is kept: a push may name any service.
        let mut kept = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if !members.1.is_empty() && kept.len() < MEMBERS_KEPT {
            kept.insert(service.clone(), members.clone());
        }
        members
    }

    /// Reads the kept services' members again with `read`, dropping services without
    /// candidates any more.
    fn refresh(&self, read: impl Fn(&ServiceName) -> Members) {
        let services: Vec<ServiceName> = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        if services.is_empty() {
            return;
        }
        let fresh: HashMap<ServiceName, Members> = services
            .into_iter()
            .map(|service| {
                let members = read(&service);
                (service, members)
            })
            .filter(|(_, members)| !members.1.is_empty())
            .collect();
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = fresh;
    }
}

/// Reads the known services' members again whenever the node's status changes (a finalized
/// block, or a peer connecting or leaving), until the node stops.
async fn refresh_members(
    db: RocksDb,
    members: Arc<KnownMembers>,
    mut status: watch::Receiver<ChainStatus>,
) {
    while status.changed().await.is_ok() {
        let snapshot = db.snapshot();
        let state = ChainReader::new(&snapshot).state();
        members.refresh(|service| service_members(&state, service));
    }
}

/// What both ends read: the finalized state and the admitted, connected members.
#[derive(Clone)]
pub struct PushContext {
    /// The node's database, read through snapshots (the finalized state).
    db: RocksDb,
    /// Admitted, connected members (kept by the node loop).
    peers: watch::Receiver<Vec<PeerId>>,
    members: Arc<KnownMembers>,
}

impl std::fmt::Debug for PushContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushContext").finish_non_exhaustive()
    }
}

impl PushContext {
    /// The context of a node whose database is `db` and whose connected members are `peers`;
    /// the members of services are read again whenever `status` (the node's) changes, on a
    /// task of the current runtime.
    pub fn new(
        db: RocksDb,
        peers: watch::Receiver<Vec<PeerId>>,
        status: watch::Receiver<ChainStatus>,
    ) -> Self {
        let members = Arc::new(KnownMembers::default());
        tokio::spawn(refresh_members(db.clone(), members.clone(), status));
        Self { db, peers, members }
    }

    /// `service`'s holder and candidates in the finalized state.
    fn members(&self, service: &ServiceName) -> Members {
        self.members.get(service, || {
            let snapshot = self.db.snapshot();
            service_members(&ChainReader::new(&snapshot).state(), service)
        })
    }

    fn connected(&self, peer: &PeerId) -> bool {
        self.peers.borrow().contains(peer)
    }
}

/// The sending end: a writer task and stream per candidate, started on first use.
pub struct Pusher {
    control: Control,
    context: PushContext,
    writers: Mutex<HashMap<PeerId, mpsc::Sender<Arc<Vec<u8>>>>>,
    /// The connected peers' accounts: decoding one from its peer id (a curve point
    /// decompressed, ~20 µs) is done once, not for every peer on every push.
    accounts: Mutex<HashMap<PeerId, Option<AccountId>>>,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher").finish_non_exhaustive()
    }
}

impl Pusher {
    /// Pushes through `control` (the swarm's stream behaviour).
    pub fn new(control: Control, context: PushContext) -> Self {
        Self {
            control,
            context,
            writers: Mutex::default(),
            accounts: Mutex::default(),
        }
    }

    /// Sends `push` to the service's admitted, connected candidates, without waiting: a
    /// candidate whose stream is behind misses it (and fetches the checkpoint when recorded).
    pub fn push(&self, push: &CheckpointPush) {
        let (_, candidates) = self.context.members(&push.service);
        let connected = self.context.peers.borrow().clone();
        let peers: Vec<PeerId> = {
            let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
            accounts.retain(|peer, _| connected.contains(peer));
            connected
                .into_iter()
                .filter(|p| {
                    accounts
                        .entry(*p)
                        .or_insert_with(|| network::account_of(p))
                        .is_some_and(|a| candidates.contains(&a))
                })
                .collect()
        };
        if peers.is_empty() {
            return;
        }
        let Some(frame) = frame(push) else {
            return tracing::debug!(service = %push.service, "checkpoint push larger than a frame: not sent (announce it instead)");
        };
        let frame = Arc::new(frame);
        let mut writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        for peer in peers {
            let writer = writers
                .entry(peer)
                .or_insert_with(|| self.start_writer(peer));
            if let Err(mpsc::error::TrySendError::Closed(frame)) = writer.try_send(frame.clone()) {
                *writer = self.start_writer(peer);
                let _ = writer.try_send(frame);
            } else if writer.capacity() == 0 {
                tracing::debug!(%peer, "checkpoint pushes to this candidate are behind: later ones are dropped until it reads");
            }
        }
    }

    fn start_writer(&self, peer: PeerId) -> mpsc::Sender<Arc<Vec<u8>>> {
        let (tx, rx) = mpsc::channel(QUEUED_PER_CANDIDATE);
        tokio::spawn(write_pushes(peer, self.control.clone(), rx));
        tx
    }
}

/// `push` as it goes on the stream: its length (u32, big-endian), then its SCALE encoding;
/// `None` if larger than a receiver accepts.
fn frame(push: &CheckpointPush) -> Option<Vec<u8>> {
    let body = push.encode();
    let len = u32::try_from(body.len())
        .ok()
        .filter(|_| body.len() <= MAX_PUSH_BYTES)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    Some(frame)
}

/// Writes the frames queued for `peer` on one stream, opening it (again) when needed.
async fn write_pushes(
    peer: PeerId,
    mut control: Control,
    mut frames: mpsc::Receiver<Arc<Vec<u8>>>,
) {
    let mut stream: Option<Stream> = None;
    while let Some(frame) = frames.recv().await {
        // A stream that broke since the last push (the peer reconnected) is opened again once.
        for _ in 0..2 {
            if stream.is_none() {
                let opened =
                    tokio::time::timeout(STREAM_TIMEOUT, control.open_stream(peer, PROTOCOL)).await;
                match opened {
                    Ok(Ok(s)) => stream = Some(s),
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "cannot open a checkpoint push stream");
                        break;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "opening a checkpoint push stream timed out");
                        break;
                    }
                }
            }
            let Some(s) = stream.as_mut() else { break };
            let written = tokio::time::timeout(STREAM_TIMEOUT, async {
                s.write_all(&frame).await?;
                s.flush().await
            })
            .await;
            match written {
                Ok(Ok(())) => break,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "checkpoint push stream broke");
                    stream = None;
                }
                Err(_) => {
                    tracing::debug!(%peer, "checkpoint push stream stalled: dropped");
                    stream = None;
                    break;
                }
            }
        }
    }
}

/// The receiving end's context.
#[derive(Clone)]
pub struct PushReceiver {
    /// What both ends read.
    pub context: PushContext,
    /// This node's account (only a candidate keeps a push).
    pub me: Option<AccountId>,
    /// Where verified pushes are stored.
    pub store: Arc<ChunkStore>,
    /// Where the agent finds them before they are stored.
    pub recent: Arc<RecentPushes>,
    /// Where the agent hears of them.
    pub announcements: broadcast::Sender<Announcement>,
    /// To the node loop: disconnect a member that sent bad bytes.
    pub out: mpsc::UnboundedSender<NetOut>,
}

impl std::fmt::Debug for PushReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushReceiver").finish_non_exhaustive()
    }
}

impl PushReceiver {
    /// Accepts members' push streams until the node stops: one reader per member.
    pub async fn run(self, mut incoming: IncomingStreams) {
        let mut readers: HashMap<PeerId, AbortHandle> = HashMap::new();
        while let Some((peer, stream)) = incoming.next().await {
            if !self.context.connected(&peer) {
                tracing::debug!(%peer, "checkpoint push stream from a peer that is not an admitted member: closed");
                continue;
            }
            readers.retain(|_, reader| !reader.is_finished());
            let reader = tokio::spawn(self.clone().read_pushes(peer, stream)).abort_handle();
            if let Some(previous) = readers.insert(peer, reader) {
                previous.abort();
            }
        }
    }

    async fn read_pushes(self, peer: PeerId, mut stream: Stream) {
        // Decoded once per stream (a curve point decompressed), not per push.
        let from = network::account_of(&peer);
        // As many pushes wait to be stored as are kept for the agent (the same ones, shared),
        // and one is being stored: a member that pushes faster waits here (its stream is not
        // read meanwhile).
        let (store_later, waiting) = mpsc::channel(PUSHES_KEPT);
        tokio::spawn(store_when_due(self.store.clone(), waiting));
        loop {
            let read: std::io::Result<CheckpointPush> =
                network::read_framed(&mut stream, MAX_PUSH_BYTES, "checkpoint push").await;
            match read {
                Ok(push) => {
                    if let Err(reason) = self.receive(peer, from, push, &store_later).await {
                        return self.disconnect(peer, reason);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return self.disconnect(peer, e.to_string());
                }
                // The stream closed (the member went, or opened a new one).
                Err(_) => return,
            }
        }
    }

    fn disconnect(&self, peer: PeerId, reason: String) {
        tracing::warn!(%peer, %reason, "peer pushed bad replication data; disconnecting");
        let _ = self.out.send(NetOut::Disconnect { peer, reason });
    }

    /// Keeps `push` if it comes from the node holding its service and this node is a
    /// candidate: verified, announced to the agent with its chunks, then stored (`STORE_GRACE`
    /// later, unless the agent stored it while applying it). `Err` means
    /// the sender sent bad bytes.
    async fn receive(
        &self,
        peer: PeerId,
        from: Option<AccountId>,
        push: CheckpointPush,
        store_later: &mpsc::Sender<(tokio::time::Instant, Arc<VerifiedPush>)>,
    ) -> Result<(), String> {
        let Some(from) = from else {
            return Ok(());
        };
        let (holder, candidates) = self.context.members(&push.service);
        let candidate = self.me.is_some_and(|me| candidates.contains(&me));
        if !self.context.connected(&peer) || holder != Some(from) || !candidate {
            tracing::debug!(%peer, service = %push.service, "checkpoint push from a node not holding the service, or for a service this node is no candidate of: dropped");
            return Ok(());
        }
        let announcement = Announcement {
            from,
            service: push.service.clone(),
            sequence: push.sequence,
            root: push.root,
        };
        // A small push (a write or two) is checked here: a hop to a blocking thread costs
        // more than decoding a few chunks. Anything larger is checked on a blocking thread.
        let small =
            push.objects.len() <= INLINE_OBJECTS && push.manifest.len() <= INLINE_MANIFEST_BYTES;
        let verified = if small {
            push.verify(&self.store)
        } else {
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || push.verify(&store)).await {
                Ok(verified) => verified,
                Err(_) => return Ok(()),
            }
        };
        let verified = match verified {
            Ok(verified) => Arc::new(verified),
            Err(PushRejected::Bad { reason }) => return Err(reason),
            Err(e @ PushRejected::Local(_)) => {
                // Announced all the same: the agent fetches it.
                tracing::warn!(error = %e, "checkpoint push not kept");
                let _ = self.announcements.send(announcement);
                return Ok(());
            }
        };
        // With its chunks in memory the agent can apply it now, and this node stores it a
        // little later (`STORE_GRACE`); without (too large decoded), once stored.
        if verified.chunks.is_some() {
            self.recent.keep(verified.clone());
            let _ = self.announcements.send(announcement);
            let due = tokio::time::Instant::now() + STORE_GRACE;
            let _ = store_later.send((due, verified)).await;
            return Ok(());
        }
        store_push(self.store.clone(), verified).await;
        let _ = self.announcements.send(announcement);
        Ok(())
    }
}

/// Stores each push sent here once it is due, unless it was stored meanwhile (by the agent).
async fn store_when_due(
    store: Arc<ChunkStore>,
    mut waiting: mpsc::Receiver<(tokio::time::Instant, Arc<VerifiedPush>)>,
) {
    while let Some((due, push)) = waiting.recv().await {
        tokio::time::sleep_until(due).await;
        if !push.is_stored() {
            store_push(store.clone(), push).await;
        }
    }
}

async fn store_push(store: Arc<ChunkStore>, push: Arc<VerifiedPush>) {
    let stored = tokio::task::spawn_blocking(move || push.store(&store)).await;
    if let Ok(Err(e)) = stored {
        tracing::warn!(error = %e, "checkpoint push not stored");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str) -> ServiceName {
        ServiceName::new(name).unwrap()
    }

    fn held_by(holder: u8) -> Members {
        let account = |b: u8| AccountId([b; 32]);
        (Some(account(holder)), vec![account(1), account(2)])
    }

    #[test]
    fn members_are_read_once_then_again_after_each_block() {
        let known = KnownMembers::default();
        let reads = std::cell::Cell::new(0);
        let read = |holder: u8| {
            reads.set(reads.get() + 1);
            held_by(holder)
        };
        assert_eq!(known.get(&service("db"), || read(1)), held_by(1));
        assert_eq!(known.get(&service("db"), || read(9)), held_by(1));
        assert_eq!(reads.get(), 1, "the second push is checked without a read");
        // A block moves the service to node 2: the refresh reads it.
        known.refresh(|_| held_by(2));
        assert_eq!(known.get(&service("db"), || read(9)), held_by(2));
        // A block removes the service: it is not kept, and read again when named.
        known.refresh(|_| (None, vec![]));
        assert_eq!(known.get(&service("db"), || (None, vec![])), (None, vec![]));
        assert_eq!(reads.get(), 1);
    }

    #[test]
    fn pushes_naming_services_that_do_not_exist_are_not_kept() {
        let known = KnownMembers::default();
        for i in 0..(4 * MEMBERS_KEPT) {
            known.get(&service(&format!("nonexistent-{i}")), || (None, vec![]));
        }
        assert!(known.0.read().unwrap().is_empty());
        for i in 0..(4 * MEMBERS_KEPT) {
            known.get(&service(&format!("real-{i}")), || held_by(1));
        }
        assert_eq!(known.0.read().unwrap().len(), MEMBERS_KEPT);
    }
}
