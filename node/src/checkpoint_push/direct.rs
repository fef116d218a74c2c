//! Direct push connections: a TCP connection of its own per candidate, secured by a noise
//! handshake with the members' keys — the same authentication as the libp2p connection —
//! and nothing else: no multiplexer, and no connection task between the writer's task and the
//! socket or between the socket and the reader's task. Through the libp2p connection a push
//! passes two more tasks and yamux; on the 2-vCPU VM of docs/benchmarks.md that cost about
//! 0.2 ms of the write-to-standby time, and spread it.
//!
//! How a pair finds the path: a candidate listens on its push port (`--push-port`, any free
//! port by default) and, on each push stream the active opens through libp2p, first writes
//! that port ([`Hello`]). The active dials the address its libp2p connection to the candidate
//! came from, on that port, and runs the handshake; the candidate must turn out to be the
//! very member the stream came from, and the active a member connected over libp2p. Until the
//! direct connection is up — and whenever it cannot be made (a firewall, an address only
//! known by name) — pushes go through the libp2p stream, as before.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade};
use libp2p::multiaddr::Protocol;
use libp2p::{identity, noise, Multiaddr, PeerId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use drchain_support::H256;

/// A push connection made directly, after its handshake.
pub type DirectStream = noise::Output<libp2p::tcp::tokio::TcpStream>;

/// Connecting and the handshake, each, take at most this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Handshakes running at once on the listener, at most: more connections are closed at once
/// (each costs a key exchange and a signature check; only members get past it).
const MAX_HANDSHAKES: usize = 8;
/// What the noise handshake is bound to besides the keys: this protocol and the chain, so a
/// handshake for anything else fails.
const PROLOGUE: &[u8] = b"/drchain/replication-push/direct/1";

/// What a candidate writes first on a push stream: the port of its direct listener (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello(pub u16);

impl Hello {
    /// As it goes on the stream.
    pub fn bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }

    /// Reads one from `io`.
    pub async fn read<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<Self> {
        let mut port = [0u8; 2];
        io.read_exact(&mut port).await?;
        Ok(Self(u16::from_be_bytes(port)))
    }
}

/// The address each connected peer's libp2p connection came from (kept by the node loop): a
/// direct connection dials the same host.
#[derive(Debug, Default)]
pub struct PeerHosts(RwLock<HashMap<PeerId, IpAddr>>);

impl PeerHosts {
    /// `peer` connected over `address` (its listen address when this node dialed, the address
    /// the connection came from otherwise). An address without an IP (a DNS name) is not kept.
    pub fn connected(&self, peer: PeerId, address: &Multiaddr) {
        let ip = address.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
            Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
            _ => None,
        });
        let mut hosts = self.0.write().unwrap_or_else(PoisonError::into_inner);
        match ip {
            Some(ip) => hosts.insert(peer, ip),
            None => hosts.remove(&peer),
        };
    }

    /// `peer` has no connection left.
    pub fn disconnected(&self, peer: &PeerId) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(peer);
    }

    fn get(&self, peer: &PeerId) -> Option<IpAddr> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(peer)
            .copied()
    }
}

/// This node's side of the handshake: its member key, bound to the chain.
#[derive(Clone)]
pub struct Handshake {
    key: identity::Keypair,
    prologue: Vec<u8>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake").finish_non_exhaustive()
    }
}

/// Why a direct connection was not made.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    #[error("connecting to {address}: {source}")]
    Connect {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("handshake: {reason}")]
    Handshake { reason: String },
    #[error("timed out")]
    Timeout,
    #[error("the other end is {found}, not {expected}")]
    WrongPeer {
        expected: Box<PeerId>,
        found: Box<PeerId>,
    },
}

impl Handshake {
    /// The handshake of the member whose key is `key`, on the chain whose genesis is
    /// `genesis`.
    pub fn new(key: identity::Keypair, genesis: &H256) -> Self {
        let mut prologue = PROLOGUE.to_vec();
        prologue.extend_from_slice(&genesis.0);
        Self { key, prologue }
    }

    fn config(&self) -> Result<noise::Config, DirectError> {
        noise::Config::new(&self.key)
            .map(|c| c.with_prologue(self.prologue.clone()))
            .map_err(|e| DirectError::Handshake {
                reason: e.to_string(),
            })
    }

    /// Connects to `peer` at `address` and makes sure it is `peer`.
    pub async fn dial(
        &self,
        peer: PeerId,
        address: SocketAddr,
    ) -> Result<DirectStream, DirectError> {
        let config = self.config()?;
        let (found, stream) = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            let socket = TcpStream::connect(address)
                .await
                .map_err(|source| DirectError::Connect { address, source })?;
            let _ = socket.set_nodelay(true);
            config
                .upgrade_outbound(libp2p::tcp::tokio::TcpStream(socket), "/noise")
                .await
                .map_err(|e| DirectError::Handshake {
                    reason: e.to_string(),
                })
        })
        .await
        .map_err(|_| DirectError::Timeout)??;
        if found != peer {
            return Err(DirectError::WrongPeer {
                expected: Box::new(peer),
                found: Box::new(found),
            });
        }
        Ok(stream)
    }

    /// Accepts connections on `listener` until `accepted` closes (the node stopped), and
    /// sends each whose handshake succeeded, with the peer it authenticated, to `accepted`.
    pub async fn accept(
        self,
        listener: TcpListener,
        accepted: mpsc::Sender<(PeerId, DirectStream)>,
    ) {
        let running = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        loop {
            let connection = tokio::select! {
                connection = listener.accept() => connection,
                () = accepted.closed() => return,
            };
            let (socket, from) = match connection {
                Ok(connection) => connection,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "push listener cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = running.clone().try_acquire_owned() else {
                tracing::debug!(%from, "too many push handshakes at once: connection closed");
                continue;
            };
            let _ = socket.set_nodelay(true);
            let (handshake, accepted) = (self.clone(), accepted.clone());
            tokio::spawn(async move {
                let upgraded = async {
                    handshake
                        .config()?
                        .upgrade_inbound(libp2p::tcp::tokio::TcpStream(socket), "/noise")
                        .await
                        .map_err(|e| DirectError::Handshake {
                            reason: e.to_string(),
                        })
                };
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, upgraded).await {
                    Ok(Ok(connection)) => {
                        drop(permit);
                        let _ = accepted.send(connection).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%from, error = %e, "push handshake failed"),
                    Err(_) => tracing::debug!(%from, "push handshake timed out"),
                }
            });
        }
    }
}

/// What the writer of one candidate's pushes needs to connect directly.
#[derive(Debug, Clone)]
pub struct Dialer {
    pub handshake: Handshake,
    pub hosts: Arc<PeerHosts>,
}

impl Dialer {
    /// A direct connection to `peer`, whose push listener is on `port` of the host its libp2p
    /// connection came from.
    pub async fn connect(&self, peer: PeerId, port: u16) -> Result<DirectStream, String> {
        let host = self
            .hosts
            .get(&peer)
            .ok_or("its address is not an IP address")?;
        self.handshake
            .dial(peer, SocketAddr::new(host, port))
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::AsyncWriteExt;

    fn member(seed: u8) -> (identity::Keypair, PeerId) {
        let key = identity::Keypair::ed25519_from_bytes([seed; 32]).unwrap();
        let peer = key.public().to_peer_id();
        (key, peer)
    }

    async fn listening(
        key: identity::Keypair,
        genesis: H256,
    ) -> (SocketAddr, mpsc::Receiver<(PeerId, DirectStream)>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(Handshake::new(key, &genesis).accept(listener, tx));
        (address, rx)
    }

    #[tokio::test]
    async fn both_ends_learn_who_the_other_is_and_bytes_go_through() {
        let genesis = H256([7; 32]);
        let ((active_key, active), (candidate_key, candidate)) = (member(1), member(2));
        let (address, mut accepted) = listening(candidate_key, genesis).await;
        let mut out = Handshake::new(active_key, &genesis)
            .dial(candidate, address)
            .await
            .unwrap();
        out.write_all(b"a push").await.unwrap();
        out.flush().await.unwrap();
        let (from, mut inbound) = accepted.recv().await.unwrap();
        assert_eq!(from, active);
        let mut read = [0u8; 6];
        inbound.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"a push");
    }

    #[tokio::test]
    async fn a_listener_that_is_not_the_expected_member_is_refused() {
        let genesis = H256([7; 32]);
        let (impostor_key, impostor) = member(3);
        let (address, _accepted) = listening(impostor_key, genesis).await;
        let (active_key, _) = member(1);
        let (_, candidate) = member(2);
        let refused = Handshake::new(active_key, &genesis)
            .dial(candidate, address)
            .await;
        assert!(
            matches!(&refused, Err(DirectError::WrongPeer { expected, found }) if **expected == candidate && **found == impostor),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_handshake_for_another_chain_fails() {
        let (candidate_key, candidate) = member(2);
        let (address, mut accepted) = listening(candidate_key, H256([7; 32])).await;
        let dialed = Handshake::new(member(1).0, &H256([8; 32]))
            .dial(candidate, address)
            .await;
        assert!(
            matches!(dialed, Err(DirectError::Handshake { .. })),
            "{dialed:?}"
        );
        let nothing = tokio::time::timeout(Duration::from_millis(300), accepted.recv()).await;
        assert!(
            nothing.is_err(),
            "the listener accepted a handshake for another chain"
        );
    }
}
