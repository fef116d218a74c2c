//! The node's side of replication: its chunk store, answering members' transfer requests and
//! fetching checkpoints from members for the agent (pushes: `crate::checkpoint_push`). It runs as tasks of its own and does its
//! disk work on blocking threads, so serving chunks never delays consensus; the node loop only
//! moves the messages between it and the swarm (`node_loop/replication_link.rs`), for
//! admitted members only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use drchain_replication::transfer::{
    serve, store_response, Fetch, PeerVerdict, Stored, TransferRequest, TransferResponse,
};
use drchain_replication::{ChunkStore, Manifest};
use drchain_support::H256;
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinSet;

/// How often a stalled fetch asks the peers it skipped again.
const RETRY_SKIPPED: Duration = Duration::from_secs(1);
/// Members' requests answered at once at most (each reads up to a request's objects from
/// disk); the node loop bounds how many wait.
const CONCURRENT_ANSWERS: usize = 4;

/// From the node loop to the replication task.
#[derive(Debug)]
pub enum NetIn {
    /// An admitted member asks; answer with [`NetOut::Respond`] and the same token.
    Inbound {
        token: u64,
        request: TransferRequest,
    },
    /// The answer (or the failure) of a request sent for [`NetOut::Request`] `token`.
    Response {
        token: u64,
        response: Result<TransferResponse, String>,
    },
}

/// From the replication task to the node loop.
#[derive(Debug)]
pub enum NetOut {
    /// Send `response` on inbound request `token`'s channel.
    Respond {
        token: u64,
        response: TransferResponse,
    },
    /// Send `request` to `peer`; report back with [`NetIn::Response`] and `token`.
    Request {
        token: u64,
        peer: PeerId,
        request: TransferRequest,
    },
    /// The peer sent bytes that are not what it was asked for.
    Disconnect { peer: PeerId, reason: String },
}

/// A fetch asked by the agent (or `drchain restore`).
#[derive(Debug)]
pub struct FetchCommand {
    /// The checkpoint's manifest root.
    pub root: H256,
    /// A member known to hold it (the active that announced it): asked first.
    pub prefer: Option<PeerId>,
    /// How long it may take.
    pub timeout: Duration,
    /// The verified manifest once every object is in the store (not flushed yet), or why not.
    pub reply: oneshot::Sender<Result<Manifest, String>>,
}

struct Fetching {
    fetch: Fetch<PeerId>,
    prefer: Option<PeerId>,
    waiters: Vec<oneshot::Sender<Result<Manifest, String>>>,
    started: Instant,
    /// The latest deadline of its waiters.
    deadline: Instant,
}

/// The task's state.
pub struct ReplicationTask {
    store: Arc<ChunkStore>,
    peers: watch::Receiver<Vec<PeerId>>,
    out: mpsc::UnboundedSender<NetOut>,
    fetches: HashMap<H256, Fetching>,
    /// Requests in flight: token → (fetch root, peer, request).
    in_flight: HashMap<u64, (H256, PeerId, TransferRequest)>,
    next_token: u64,
    /// Answers being verified and stored on blocking threads, several at once.
    storing: JoinSet<StoredAnswer>,
    /// Bounds the members' requests answered at once.
    answering: Arc<Semaphore>,
}

/// An answer once [`store_response`] is through with it.
struct StoredAnswer {
    root: H256,
    peer: PeerId,
    request: TransferRequest,
    stored: Result<Stored, String>,
}

impl std::fmt::Debug for ReplicationTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationTask")
            .field("fetches", &self.fetches.len())
            .field("in_flight", &self.in_flight.len())
            .finish()
    }
}

impl ReplicationTask {
    /// A task over `store`, fetching from the admitted peers `peers` publishes.
    pub fn new(
        store: Arc<ChunkStore>,
        peers: watch::Receiver<Vec<PeerId>>,
        out: mpsc::UnboundedSender<NetOut>,
    ) -> Self {
        Self {
            store,
            peers,
            out,
            fetches: HashMap::new(),
            in_flight: HashMap::new(),
            next_token: 0,
            storing: JoinSet::new(),
            answering: Arc::new(Semaphore::new(CONCURRENT_ANSWERS)),
        }
    }

    /// Runs until both inputs close.
    pub async fn run(
        mut self,
        mut net: mpsc::UnboundedReceiver<NetIn>,
        mut commands: mpsc::Receiver<FetchCommand>,
    ) {
        let mut tick = tokio::time::interval(RETRY_SKIPPED);
        loop {
            tokio::select! {
                message = net.recv() => match message {
                    Some(NetIn::Inbound { token, request }) => self.answer(token, request),
                    Some(NetIn::Response { token, response }) => self.on_response(token, response),
                    None => return,
                },
                Some(joined) = self.storing.join_next(), if !self.storing.is_empty() => {
                    match joined {
                        Ok(answer) => self.on_stored(answer),
                        Err(e) => tracing::warn!(error = %e, "storing a transfer answer failed"),
                    }
                }
                command = commands.recv() => match command {
                    Some(c) => self.start(c),
                    None => return,
                },
                _ = tick.tick() => self.check_stalled(),
                changed = self.peers.changed() => {
                    if changed.is_err() {
                        return; // the node loop is gone
                    }
                    let roots: Vec<H256> = self.fetches.keys().copied().collect();
                    for root in roots {
                        self.drive(root);
                    }
                }
            }
        }
    }

    /// Answers a member's request in the background, [`CONCURRENT_ANSWERS`] at a time, so
    /// serving never holds up this node's own fetches.
    fn answer(&mut self, token: u64, request: TransferRequest) {
        let (store, out, answering) =
            (self.store.clone(), self.out.clone(), self.answering.clone());
        tokio::spawn(async move {
            let Ok(_permit) = answering.acquire_owned().await else {
                return;
            };
            let response = tokio::task::spawn_blocking(move || serve(&store, &request))
                .await
                .unwrap_or(TransferResponse::Objects { objects: vec![] });
            let _ = out.send(NetOut::Respond { token, response });
        });
    }

    fn start(&mut self, command: FetchCommand) {
        let root = command.root;
        let deadline = Instant::now() + command.timeout;
        if let Some(f) = self.fetches.get_mut(&root) {
            f.waiters.push(command.reply);
            f.deadline = f.deadline.max(deadline);
            return;
        }
        let fetch = Fetch::new(root, &self.store);
        self.fetches.insert(
            root,
            Fetching {
                fetch,
                prefer: command.prefer,
                waiters: vec![command.reply],
                started: Instant::now(),
                deadline,
            },
        );
        self.drive(root);
    }

    /// Sends what the fetch of `root` wants next, or finishes it.
    fn drive(&mut self, root: H256) {
        let mut peers = self.peers.borrow().clone();
        let Some(fetching) = self.fetches.get_mut(&root) else {
            return;
        };
        // Among peers equally loaded the first is asked: the one known to hold it.
        if let Some(i) = fetching
            .prefer
            .and_then(|p| peers.iter().position(|q| *q == p))
        {
            peers[..=i].rotate_right(1);
        }
        let fetch = &mut fetching.fetch;
        if fetch.is_complete() {
            let manifest = fetch.manifest().cloned();
            if let Some(done) = self.fetches.remove(&root) {
                // Not flushed here: whoever acknowledges it flushes first (the agent, with the
                // target it materializes), and a restore does not need it durable.
                let result = manifest.ok_or_else(|| "no manifest".to_owned());
                tracing::debug!(%root, secs = done.started.elapsed().as_secs_f64(), "checkpoint fetched");
                for waiter in done.waiters {
                    let _ = waiter.send(result.clone());
                }
            }
            return;
        }
        for (peer, request) in fetch.next_requests(&peers) {
            let token = self.next_token;
            self.next_token += 1;
            self.in_flight.insert(token, (root, peer, request.clone()));
            let _ = self.out.send(NetOut::Request {
                token,
                peer,
                request,
            });
        }
    }

    fn on_response(&mut self, token: u64, response: Result<TransferResponse, String>) {
        let Some((root, peer, request)) = self.in_flight.remove(&token) else {
            return;
        };
        let Some(fetching) = self.fetches.get_mut(&root) else {
            return;
        };
        let response = match response {
            Ok(r) => r,
            Err(error) => {
                tracing::debug!(%peer, %error, "transfer request failed");
                fetching.fetch.on_failure(&peer, &request);
                self.drive(root);
                return;
            }
        };
        // The request stays in flight for the fetch until its answer is stored.
        let store = self.store.clone();
        self.storing.spawn_blocking(move || {
            let stored =
                store_response(&store, &root, &request, response).map_err(|e| e.to_string());
            StoredAnswer {
                root,
                peer,
                request,
                stored,
            }
        });
    }

    fn on_stored(&mut self, answer: StoredAnswer) {
        let StoredAnswer {
            root,
            peer,
            request,
            stored,
        } = answer;
        let Some(fetching) = self.fetches.get_mut(&root) else {
            return;
        };
        let stored = match stored {
            Ok(s) => s,
            Err(e) => return self.fail(root, format!("local chunk store: {e}")),
        };
        if let Some(PeerVerdict::Bad { peer, reason }) =
            fetching.fetch.on_stored(&peer, &request, stored)
        {
            tracing::warn!(%peer, %reason, "peer sent bad replication data; disconnecting");
            let _ = self.out.send(NetOut::Disconnect { peer, reason });
        }
        self.drive(root);
    }

    fn fail(&mut self, root: H256, reason: String) {
        if let Some(done) = self.fetches.remove(&root) {
            tracing::warn!(%root, %reason, "checkpoint fetch failed");
            for waiter in done.waiters {
                let _ = waiter.send(Err(reason.clone()));
            }
        }
        self.in_flight.retain(|_, (r, _, _)| *r != root);
    }

    /// Retries peers a stalled fetch skipped; fails fetches past their deadline.
    fn check_stalled(&mut self) {
        let peers = self.peers.borrow().clone();
        let mut expired = vec![];
        let mut retry = vec![];
        for (root, f) in &mut self.fetches {
            if Instant::now() > f.deadline {
                expired.push(*root);
            } else if f.fetch.is_stalled(&peers) {
                f.fetch.retry_skipped();
                retry.push(*root);
            }
        }
        for root in expired {
            let remaining = self.fetches.get(&root).map_or(0, |f| f.fetch.remaining());
            self.fail(
                root,
                format!(
                    "not complete in time ({remaining} objects missing, or the manifest: no connected member had them)"
                ),
            );
        }
        for root in retry {
            self.drive(root);
        }
    }
}
