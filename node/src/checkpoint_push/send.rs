//! The sending end: a writer task per candidate, on the direct connection once it is up, on a
//! libp2p stream until then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use drchain_replication::push::{CheckpointPush, MAX_PUSH_BYTES};
use drchain_support::AccountId;
use futures::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use libp2p_stream::Control;
use parity_scale_codec::Encode;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::direct::{Dialer, DirectStream, Hello};
use super::{Path, PushContext, PROTOCOL, STREAM_TIMEOUT};
use crate::network;

/// Pushes waiting for one candidate's connection at most; more are dropped (the candidate fetches
/// the checkpoint when a block records it).
const QUEUED_PER_CANDIDATE: usize = 2;
/// While a candidate's pushes go through the libp2p connection because a direct one could not
/// be made, one is tried again this often.
const DIRECT_RETRY: Duration = Duration::from_secs(30);

/// Pushes sent, by the path they took.
#[derive(Debug, Clone, Default)]
pub struct PushCounters {
    /// Over a direct connection.
    pub direct: Counter,
    /// Through a stream of the libp2p connection.
    pub libp2p: Counter,
}

/// The sending end: a writer task and connection per candidate, started on first use.
pub struct Pusher {
    control: Control,
    context: PushContext,
    dialer: Dialer,
    sent: PushCounters,
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
    /// Pushes over direct connections made by `dialer`, or through `control` (the swarm's
    /// stream behaviour), counting each in `sent`.
    pub fn new(control: Control, context: PushContext, dialer: Dialer, sent: PushCounters) -> Self {
        Self {
            control,
            context,
            dialer,
            sent,
            writers: Mutex::default(),
            accounts: Mutex::default(),
        }
    }

    /// Sends `push` to the service's admitted, connected candidates, without waiting: a
    /// candidate whose connection is behind misses it (and fetches the checkpoint when recorded).
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
        let writer = Writer {
            peer,
            control: self.control.clone(),
            dialer: self.dialer.clone(),
            sent: self.sent.clone(),
        };
        tokio::spawn(writer.run(rx));
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

/// What a direct connection attempt found: the candidate's push port, if it told one, and the
/// connection.
struct Dialed {
    port: Option<u16>,
    connection: Result<DirectStream, String>,
}

/// One candidate's pushes, written by one task on one connection at a time.
struct Writer {
    peer: PeerId,
    control: Control,
    dialer: Dialer,
    sent: PushCounters,
}

impl Writer {
    /// Writes the frames queued for the candidate until the pusher goes: on the direct
    /// connection once it is up, else on a libp2p stream, opened (again) when needed.
    async fn run(mut self, mut frames: mpsc::Receiver<Arc<Vec<u8>>>) {
        let peer = self.peer;
        let mut carrier: Option<(Box<dyn AsyncWrite + Unpin + Send>, Path)> = None;
        // A direct connection being made, the candidate's push port once it told it, and
        // when the last attempt started.
        let mut dialing: Option<JoinHandle<Dialed>> = None;
        let mut port: Option<u16> = None;
        let mut last_attempt: Option<tokio::time::Instant> = None;
        // Why the first attempt failed is told at info, the retries' at debug.
        let mut told_why = false;
        loop {
            let frame = tokio::select! {
                frame = frames.recv() => match frame {
                    Some(frame) => frame,
                    None => return,
                },
                Some(dialed) = finished(&mut dialing) => {
                    port = dialed.port.or(port);
                    match dialed.connection {
                        Ok(connection) => {
                            tracing::debug!(%peer, "checkpoint pushes go over a direct connection");
                            carrier = Some((Box::new(connection), Path::Direct));
                        }
                        Err(reason) if told_why => tracing::debug!(%peer, %reason, "no direct connection for checkpoint pushes"),
                        Err(reason) => {
                            told_why = true;
                            tracing::info!(%peer, %reason, "no direct connection for checkpoint pushes: they go through the libp2p connection (tried again every 30 s)");
                        }
                    }
                    continue;
                }
            };
            // On the libp2p stream, a direct connection is tried again now and then.
            let retry_due = last_attempt.is_none_or(|at| at.elapsed() >= DIRECT_RETRY);
            if let (Some(port), None, Some((_, Path::Libp2p)), true) =
                (port.filter(|p| *p != 0), &dialing, &carrier, retry_due)
            {
                last_attempt = Some(tokio::time::Instant::now());
                let dialer = self.dialer.clone();
                dialing = Some(tokio::spawn(async move {
                    Dialed {
                        port: Some(port),
                        connection: dialer.connect(peer, port).await,
                    }
                }));
            }
            // A connection that broke since the last push (the peer restarted or
            // reconnected) is replaced once.
            for _ in 0..2 {
                if carrier.is_none() {
                    let Some(stream) = self.open_stream().await else {
                        break;
                    };
                    let (mut hello, write) = stream.split();
                    carrier = Some((Box::new(write), Path::Libp2p));
                    if dialing.is_none() {
                        // The candidate tells its push port first; the direct connection
                        // is made beside the pushes the stream carries meanwhile.
                        last_attempt = Some(tokio::time::Instant::now());
                        let dialer = self.dialer.clone();
                        dialing = Some(tokio::spawn(async move {
                            let told =
                                tokio::time::timeout(STREAM_TIMEOUT, Hello::read(&mut hello)).await;
                            match told {
                                Ok(Ok(Hello(0))) => Dialed {
                                    port: Some(0),
                                    connection: Err(
                                        "the candidate takes no direct connection".into()
                                    ),
                                },
                                Ok(Ok(Hello(port))) => Dialed {
                                    port: Some(port),
                                    connection: dialer.connect(peer, port).await,
                                },
                                Ok(Err(e)) => Dialed {
                                    port: None,
                                    connection: Err(format!("reading its push port: {e}")),
                                },
                                Err(_) => Dialed {
                                    port: None,
                                    connection: Err("it did not tell its push port".into()),
                                },
                            }
                        }));
                    }
                }
                let Some((connection, path)) = carrier.as_mut() else {
                    break;
                };
                let written = tokio::time::timeout(STREAM_TIMEOUT, async {
                    connection.write_all(&frame).await?;
                    connection.flush().await
                })
                .await;
                match written {
                    Ok(Ok(())) => {
                        match path {
                            Path::Direct => self.sent.direct.inc(),
                            Path::Libp2p => self.sent.libp2p.inc(),
                        };
                        break;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, ?path, "checkpoint push connection broke");
                        carrier = None;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, ?path, "checkpoint push connection stalled: dropped");
                        carrier = None;
                        break;
                    }
                }
            }
        }
    }

    /// A new push stream to the candidate through libp2p.
    async fn open_stream(&mut self) -> Option<Stream> {
        let peer = self.peer;
        let opened =
            tokio::time::timeout(STREAM_TIMEOUT, self.control.open_stream(peer, PROTOCOL)).await;
        match opened {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "cannot open a checkpoint push stream");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "opening a checkpoint push stream timed out");
                None
            }
        }
    }
}

/// The output of `task` once it finished (`None` if it failed), then no more of it; never,
/// without one.
async fn finished<T>(task: &mut Option<JoinHandle<T>>) -> Option<T> {
    let Some(handle) = task.as_mut() else {
        return std::future::pending().await;
    };
    let output = handle.await.ok();
    *task = None;
    output
}
