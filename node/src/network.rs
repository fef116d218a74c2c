//! The libp2p network: TCP + noise + yamux; connection limits; gossipsub for consensus
//! messages and transactions; request-response for block sync, replication and peer exchange
//! (`crate::discovery`); long-lived streams for checkpoint pushes (`crate::checkpoint_push`);
//! identify and ping. The node key is the member's Ed25519
//! key, so a peer's libp2p identity *is* its member account, authenticated by noise.

use std::io;
use std::time::Duration;

use drchain_runtime::{Block, UncheckedExtrinsic};
use drchain_support::{AccountId, H256};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{
    connection_limits, gossipsub, identify, identity, noise, ping, request_response,
    swarm::NetworkBehaviour, tcp, yamux, PeerId, StreamProtocol, Swarm, SwarmBuilder,
};
use parity_scale_codec::{Decode, Encode};

use drchain_consensus::codec::{decode_bounded, WireCertificate, MAX_MESSAGE_BYTES};
use drchain_consensus::state_sync::{StateSyncRequest, StateSyncResponse};
use drchain_replication::transfer::{self, TransferRequest, TransferResponse};

use crate::discovery::{PeersAnswer, PeersRequest, MAX_ANSWER_BYTES};

pub use drchain_consensus::host::SYNC_BATCH;
/// Largest sync request accepted.
const MAX_SYNC_REQUEST: usize = 64;
/// Largest sync response accepted.
pub const MAX_SYNC_RESPONSE: usize = 64 * 1024 * 1024;

/// Asks for finalized blocks from `from`, at most `max`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SyncRequest {
    /// First height.
    pub from: u64,
    /// How many at most.
    pub max: u32,
}

/// Finalized blocks with their commit certificates, in height order.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SyncResponse {
    pub blocks: Vec<(Block, WireCertificate)>,
}

/// Reads one length-prefixed SCALE message of at most `max` bytes.
pub(crate) async fn read_framed<T: AsyncRead + Unpin + Send, M: Decode>(
    io: &mut T,
    max: usize,
    what: &'static str,
) -> io::Result<M> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} of {len} bytes exceeds {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    decode_bounded(&buf, max, what).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_framed<T: AsyncWrite + Unpin + Send, M: Encode>(
    io: &mut T,
    msg: &M,
) -> io::Result<()> {
    let bytes = msg.encode();
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&bytes).await?;
    io.close().await
}

/// Length-prefixed SCALE over a libp2p stream, reading requests of at most `MAX_REQUEST` and
/// responses of at most `MAX_RESPONSE` bytes.
pub struct FramedCodec<Req, Resp, const MAX_REQUEST: usize, const MAX_RESPONSE: usize>(
    std::marker::PhantomData<fn() -> (Req, Resp)>,
);

impl<Req, Resp, const A: usize, const B: usize> Default for FramedCodec<Req, Resp, A, B> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<Req, Resp, const A: usize, const B: usize> Clone for FramedCodec<Req, Resp, A, B> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<Req, Resp, const A: usize, const B: usize> std::fmt::Debug for FramedCodec<Req, Resp, A, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FramedCodec({A}, {B})")
    }
}

/// Block sync: a height range asked, blocks with certificates answered.
pub type SyncCodec = FramedCodec<SyncRequest, SyncResponse, MAX_SYNC_REQUEST, MAX_SYNC_RESPONSE>;

/// Replication's transfer messages (`drchain_replication::transfer`). The replication task
/// answers at most `MAX_OBJECTS_PER_REQUEST` objects of a request, whatever it asks.
pub type ReplicationCodec = FramedCodec<
    TransferRequest,
    TransferResponse,
    { transfer::MAX_REQUEST_BYTES },
    { transfer::MAX_RESPONSE_BYTES },
>;

#[async_trait::async_trait]
impl<Req, Resp, const MAX_REQUEST: usize, const MAX_RESPONSE: usize> request_response::Codec
    for FramedCodec<Req, Resp, MAX_REQUEST, MAX_RESPONSE>
where
    Req: Encode + Decode + Send + Sync + 'static,
    Resp: Encode + Decode + Send + Sync + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_framed(io, MAX_REQUEST, "request").await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_framed(io, MAX_RESPONSE, "response").await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, r: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_framed(io, &r).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, r: Resp) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_framed(io, &r).await
    }
}

/// State sync (`drchain_consensus::state_sync`): sync points and state subtrees. An answer
/// carries at most `MAX_SUBTREE_BYTES` of entries, or a target: a block and its set changes.
pub type StateSyncCodec =
    FramedCodec<StateSyncRequest, StateSyncResponse, 64, MAX_STATE_SYNC_RESPONSE>;
/// The largest state sync answer read.
pub const MAX_STATE_SYNC_RESPONSE: usize = 32 * 1024 * 1024;

/// Peer exchange among members (`crate::discovery`).
pub type PeersCodec = FramedCodec<PeersRequest, PeersAnswer, 16, MAX_ANSWER_BYTES>;

/// The node's network behaviours. (libp2p's behaviours do not implement `Debug`.)
#[allow(missing_debug_implementations)]
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Bounds on connections, checked before any other behaviour sees one.
    pub limits: connection_limits::Behaviour,
    /// Consensus messages and transactions.
    pub gossipsub: gossipsub::Behaviour,
    /// Block sync.
    pub sync: request_response::Behaviour<SyncCodec>,
    /// Replication: checkpoints' manifests and chunks between members.
    pub replication: request_response::Behaviour<ReplicationCodec>,
    /// Replication: the active's new checkpoints, pushed to the service's candidates over
    /// long-lived streams (`crate::checkpoint_push`).
    pub push_streams: libp2p_stream::Behaviour,
    /// Members' addresses, from the members they are connected to.
    pub peers: request_response::Behaviour<PeersCodec>,
    /// State sync for joining nodes.
    pub state_sync: request_response::Behaviour<StateSyncCodec>,
    /// Peer information (listen addresses, agent).
    pub identify: identify::Behaviour,
    /// Liveness.
    pub ping: ping::Behaviour,
}

/// Gossip topics of one chain.
#[derive(Debug, Clone)]
pub struct Topics {
    /// Proposals and votes.
    pub consensus: gossipsub::IdentTopic,
    pub transactions: gossipsub::IdentTopic,
}

impl Topics {
    /// The topics of the chain `genesis`.
    pub fn new(genesis: &H256) -> Self {
        let id = hex::encode(&genesis.0[..8]);
        Self {
            consensus: gossipsub::IdentTopic::new(format!("/drchain/{id}/consensus/1")),
            transactions: gossipsub::IdentTopic::new(format!("/drchain/{id}/tx/2")),
        }
    }
}

/// Most transactions in one gossip message.
pub const MAX_TRANSACTIONS_PER_MESSAGE: usize = 1024;

/// Most bytes of transactions in one gossip message: far below the gossip cap
/// (`MAX_MESSAGE_BYTES`) even with a transaction of the largest size on top.
pub const MAX_TRANSACTION_BATCH_BYTES: usize = 1024 * 1024;

/// Transactions submitted here and not gossiped yet, sent together in one message once full
/// (by count or bytes) or at the end of the batching window.
#[derive(Debug, Default)]
pub struct TransactionBatch {
    transactions: Vec<UncheckedExtrinsic>,
    bytes: usize,
}

impl TransactionBatch {
    /// Adds `x`; true when the batch is now full and should be sent at once.
    pub fn push(&mut self, x: UncheckedExtrinsic) -> bool {
        self.bytes += x.encoded_size();
        self.transactions.push(x);
        self.transactions.len() >= MAX_TRANSACTIONS_PER_MESSAGE
            || self.bytes >= MAX_TRANSACTION_BATCH_BYTES
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.transactions.is_empty()
    }

    /// The message carrying what waits, which is then empty.
    pub fn take(&mut self) -> Vec<u8> {
        let bytes = encode_transactions(&self.transactions);
        self.transactions.clear();
        self.bytes = 0;
        bytes
    }
}

/// A gossip message of the transaction topic: SCALE `Vec<UncheckedExtrinsic>`. Nodes batch
/// what they receive over a few milliseconds, so that under load a message (and its
/// per-message network and scheduling cost) carries many transactions.
pub fn encode_transactions(transactions: &[UncheckedExtrinsic]) -> Vec<u8> {
    transactions.encode()
}

/// Decodes a transaction gossip message from untrusted bytes: at most
/// [`MAX_TRANSACTIONS_PER_MESSAGE`], each bounded like a submitted extrinsic, no trailing
/// bytes.
pub fn decode_transactions(bytes: &[u8]) -> Result<Vec<UncheckedExtrinsic>, String> {
    drchain_runtime::extrinsic::decode_transaction_batch(bytes, MAX_TRANSACTIONS_PER_MESSAGE)
}

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The key could not be used as a libp2p identity.
    #[error("node key: {reason}")]
    Key { reason: String },
    /// A behaviour or transport failed to build.
    #[error("network setup: {reason}")]
    Setup { reason: String },
}

/// The libp2p identity of a member key.
pub fn keypair(secret: &ed25519_dalek::SigningKey) -> Result<identity::Keypair, NetworkError> {
    identity::Keypair::ed25519_from_bytes(secret.to_bytes()).map_err(|e| NetworkError::Key {
        reason: e.to_string(),
    })
}

/// The peer id of a member account.
pub fn peer_id_of(account: &AccountId) -> Option<PeerId> {
    let key = identity::ed25519::PublicKey::try_from_bytes(&account.0).ok()?;
    Some(PeerId::from_public_key(&identity::PublicKey::from(key)))
}

/// The member account behind a peer id (peer ids of Ed25519 keys embed the key).
pub fn account_of(peer: &PeerId) -> Option<AccountId> {
    let multihash = peer.as_ref();
    if multihash.code() != 0 {
        return None;
    }
    let key = identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    let key = key.try_into_ed25519().ok()?;
    Some(AccountId(key.to_bytes()))
}

/// Connections one peer may hold with us at once: one each way when both dial together.
pub const MAX_CONNECTIONS_PER_PEER: u32 = 2;
/// Connections in all (members are few; this bounds what a crowd of them, or half-open
/// dials, can take).
pub const MAX_CONNECTIONS: u32 = 256;
/// Handshakes in progress at once, each way.
const MAX_PENDING_CONNECTIONS: u32 = 64;

fn connection_limits() -> connection_limits::ConnectionLimits {
    connection_limits::ConnectionLimits::default()
        .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
        .with_max_established(Some(MAX_CONNECTIONS))
        .with_max_pending_incoming(Some(MAX_PENDING_CONNECTIONS))
        .with_max_pending_outgoing(Some(MAX_PENDING_CONNECTIONS))
}

/// Gossip peer scoring: only invalid messages count (P4: per topic, the count squared times
/// -10, the count halving each second), so a peer that relays a bad message now and then is
/// only no longer gossiped to, and one that relays three in a row on a topic is graylisted
/// (all it sends is ignored) until its count decays. The other components are off: members are
/// authenticated by certificate (IP colocation says nothing), and a quiet chain delivers few
/// messages (delivery-rate penalties would punish honest peers).
pub fn peer_scoring(
    topics: &Topics,
) -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.5,
        ..Default::default()
    };
    let params = gossipsub::PeerScoreParams {
        topics: [
            (topics.consensus.hash(), topic.clone()),
            (topics.transactions.hash(), topic),
        ]
        .into_iter()
        .collect(),
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    };
    (params, gossipsub::PeerScoreThresholds::default())
}

/// Builds the swarm of a node with key `secret` on chain `genesis`.
pub fn build_swarm(
    secret: &ed25519_dalek::SigningKey,
    genesis: &H256,
) -> Result<Swarm<Behaviour>, NetworkError> {
    let setup = |e: &dyn std::fmt::Display| NetworkError::Setup {
        reason: e.to_string(),
    };
    let swarm = SwarmBuilder::with_existing_identity(keypair(secret)?)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| setup(&e))?
        .with_behaviour(|key| {
            // Gossip is not signed by gossipsub: every payload carries its own signature
            // (proposals and votes by their validator, transactions by their sender), checked
            // by the driver and the pool, and the peer that relays a message is authenticated
            // by noise and must be an admitted member. Gossipsub's signatures would cost an
            // Ed25519 signature per publish and a verification per receipt and message,
            // which measured as a large share of a node's CPU under load. The author and a
            // sequence number still make each publication distinct (re-broadcasts go out).
            //
            // Nothing is forwarded before the node judged it (`validate_messages`): the node
            // reports accept, ignore or reject per message, and a rejected one counts against
            // the peer that relayed it (peer scoring), which is ignored once below the
            // graylist threshold.
            let gossip_config = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(500))
                .validation_mode(gossipsub::ValidationMode::Permissive)
                .validate_messages()
                .max_transmit_size(MAX_MESSAGE_BYTES)
                .build()?;
            let mut gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Author(key.public().to_peer_id()),
                gossip_config,
            )?;
            let (params, thresholds) = peer_scoring(&Topics::new(genesis));
            gossipsub.with_peer_score(params, thresholds)?;
            let sync = request_response::Behaviour::new(
                [(
                    StreamProtocol::new("/drchain/sync/1"),
                    request_response::ProtocolSupport::Full,
                )],
                request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
            );
            let replication = request_response::Behaviour::new(
                [(
                    StreamProtocol::new("/drchain/replication/1"),
                    request_response::ProtocolSupport::Full,
                )],
                request_response::Config::default().with_request_timeout(Duration::from_secs(30)),
            );
            let peers = request_response::Behaviour::new(
                [(
                    StreamProtocol::new("/drchain/peers/1"),
                    request_response::ProtocolSupport::Full,
                )],
                request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
            );
            let state_sync = request_response::Behaviour::new(
                [(
                    StreamProtocol::new("/drchain/state-sync/1"),
                    request_response::ProtocolSupport::Full,
                )],
                request_response::Config::default().with_request_timeout(Duration::from_secs(20)),
            );
            let identify = identify::Behaviour::new(identify::Config::new(
                format!("/drchain/{}", hex::encode(&genesis.0[..8])),
                key.public(),
            ));
            let ping = ping::Behaviour::new(ping::Config::new());
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(connection_limits()),
                gossipsub,
                sync,
                replication,
                push_streams: libp2p_stream::Behaviour::new(),
                peers,
                state_sync,
                identify,
                ping,
            })
        })
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    Ok(swarm)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use drchain_runtime::dev::dev_key;
    use drchain_runtime::{pallet_failover, RuntimeCall, UncheckedExtrinsic};
    use drchain_support::{ServiceName, H256};
    use parity_scale_codec::{Compact, Encode};

    use super::{decode_transactions, encode_transactions, MAX_TRANSACTIONS_PER_MESSAGE};

    fn transaction(nonce: u64) -> UncheckedExtrinsic {
        let call = RuntimeCall::Failover(pallet_failover::Call::RemoveService {
            name: ServiceName::new("db").unwrap(),
        });
        UncheckedExtrinsic::sign(&dev_key("alice"), &H256::default(), nonce, call)
    }

    /// Many large transactions submitted at once go out in messages gossip can carry.
    #[test]
    fn transaction_batches_fit_in_a_gossip_message() {
        let call = |n: u64| {
            RuntimeCall::NetworkConfig(drchain_runtime::pallet_network_config::Call::SetBootnodes {
                bootnodes: vec![format!("{n}{}", "x".repeat(60_000))],
            })
        };
        let mut batch = super::TransactionBatch::default();
        let mut messages = vec![];
        for nonce in 0..300 {
            let x =
                UncheckedExtrinsic::sign(&dev_key("alice"), &H256::default(), nonce, call(nonce));
            if batch.push(x) {
                messages.push(batch.take());
            }
        }
        messages.push(batch.take());
        assert!(batch.is_empty());
        let sent: usize = messages
            .iter()
            .map(|m| decode_transactions(m).unwrap().len())
            .sum();
        assert_eq!(sent, 300);
        for m in &messages {
            assert!(
                m.len() <= drchain_consensus::codec::MAX_MESSAGE_BYTES,
                "{}",
                m.len()
            );
        }
    }

    #[test]
    fn transaction_batches_round_trip_and_refuse_what_is_malformed() {
        let batch: Vec<_> = (0..3).map(transaction).collect();
        let bytes = encode_transactions(&batch);
        assert_eq!(decode_transactions(&bytes).unwrap(), batch);
        assert_eq!(
            decode_transactions(&encode_transactions(&[])).unwrap(),
            vec![]
        );
        // Trailing bytes, truncation, and a count above the limit are refused.
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode_transactions(&trailing)
            .unwrap_err()
            .contains("trailing"));
        assert!(decode_transactions(&bytes[..bytes.len() - 1]).is_err());
        let too_many = Compact((MAX_TRANSACTIONS_PER_MESSAGE + 1) as u32).encode();
        assert!(decode_transactions(&too_many)
            .unwrap_err()
            .contains("at most"));
        assert!(decode_transactions(&[]).is_err());
    }
}
