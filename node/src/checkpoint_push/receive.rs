//! The receiving end: one reader task per member and path, checking, verifying and keeping
//! pushes for the agent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use drchain_replication::push::{CheckpointPush, PushRejected, VerifiedPush, MAX_PUSH_BYTES};
use drchain_replication::ChunkStore;
use drchain_rpc::Announcement;
use drchain_support::AccountId;
use futures::{AsyncRead, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use libp2p_stream::IncomingStreams;
use tokio::sync::{broadcast, mpsc};
use tokio::task::AbortHandle;

use super::direct::{DirectStream, Hello};
use super::{Path, PushContext, RecentPushes, PUSHES_KEPT, STREAM_TIMEOUT};
use crate::network;
use crate::replication::NetOut;

/// A push of at most this many objects and manifest bytes is verified on the reader's task
/// (decoding at most four chunks of 64 KiB), a larger one on a blocking thread.
const INLINE_OBJECTS: usize = 4;
const INLINE_MANIFEST_BYTES: usize = 64 * 1024;
/// A push kept in memory for the agent is stored by this node this long after it came, unless
/// the agent stored it first (it applies the push from memory, then stores it before
/// flushing). Storing at once competed with that apply for the CPU and the disk: on the
/// 2-vCPU VM of docs/benchmarks.md a write reached the standby's target at p50 1.9–2.2 ms
/// with it, 1.2–1.4 ms with the store put off by 20 ms (interleaved runs).
const STORE_GRACE: Duration = Duration::from_millis(50);

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
    /// Accepts members' push streams (`incoming`) and direct connections (`direct`, after
    /// their handshake) until the node stops (`incoming` ends): one reader per member and
    /// path. A push stream is first told `direct_port` (0: none), for the member to connect
    /// directly.
    pub async fn run(
        self,
        mut incoming: IncomingStreams,
        mut direct: mpsc::Receiver<(PeerId, DirectStream)>,
        direct_port: u16,
    ) {
        let mut readers: HashMap<(PeerId, Path), AbortHandle> = HashMap::new();
        loop {
            let (peer, path, reader) = tokio::select! {
                stream = incoming.next() => {
                    // The swarm is gone: the node stopped.
                    let Some((peer, stream)) = stream else { return };
                    if !self.context.connected(&peer) {
                        tracing::debug!(%peer, "checkpoint push stream from a peer that is not an admitted member: closed");
                        continue;
                    }
                    let reader = self.clone().tell_port_then_read(peer, stream, direct_port);
                    (peer, Path::Libp2p, tokio::spawn(reader))
                }
                Some((peer, connection)) = direct.recv() => {
                    if !self.context.connected(&peer) {
                        tracing::debug!(%peer, "direct push connection from a peer that is not a connected member: closed");
                        continue;
                    }
                    (peer, Path::Direct, tokio::spawn(self.clone().read_pushes(peer, connection)))
                }
            };
            readers.retain(|_, reader| !reader.is_finished());
            if let Some(previous) = readers.insert((peer, path), reader.abort_handle()) {
                previous.abort();
            }
        }
    }

    async fn tell_port_then_read(self, peer: PeerId, mut stream: Stream, direct_port: u16) {
        let told = tokio::time::timeout(STREAM_TIMEOUT, async {
            stream.write_all(&Hello(direct_port).bytes()).await?;
            stream.flush().await
        })
        .await;
        if matches!(told, Ok(Ok(()))) {
            self.read_pushes(peer, stream).await;
        }
    }

    async fn read_pushes<S: AsyncRead + Unpin + Send>(self, peer: PeerId, mut connection: S) {
        // Decoded once per connection (a curve point decompressed), not per push.
        let from = network::account_of(&peer);
        // As many pushes wait to be stored as are kept for the agent (the same ones, shared),
        // and one is being stored: a member that pushes faster waits here (its connection is
        // not read meanwhile).
        let (store_later, waiting) = mpsc::channel(PUSHES_KEPT);
        tokio::spawn(store_when_due(self.store.clone(), waiting));
        loop {
            let read: std::io::Result<CheckpointPush> =
                network::read_framed(&mut connection, MAX_PUSH_BYTES, "checkpoint push").await;
            match read {
                Ok(push) => {
                    if let Err(reason) = self.receive(peer, from, push, &store_later).await {
                        return self.disconnect(peer, reason);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return self.disconnect(peer, e.to_string());
                }
                // Closed (the member went, or replaced the connection).
                Err(_) => return,
            }
            // A member that left (revoked, say) is read no more.
            if !self.context.connected(&peer) {
                return;
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
