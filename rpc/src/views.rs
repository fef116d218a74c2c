//! The JSON shapes of RPC answers: readable field names, hashes and keys in `0x` hex.
//!
//! Substrate-named methods answer in Substrate's shapes (camelCase, block numbers as hex) so
//! its tools can read them; drchain's own methods answer in snake case with plain numbers.
//!
//! This file is longer than 600 lines because it holds the answer type of every method, each
//! documented field by field, so that one place describes the whole JSON surface.

use drchain_runtime::pallet_failover::{self, Phase, Role};
use drchain_runtime::pallet_membership::{self, MemberRole};
use drchain_runtime::pallet_service_status::{self, Status};
use drchain_runtime::{pallet_checkpoints, pallet_network_config};
use drchain_runtime::{system, Block, EventRecord, Header};
use drchain_support::{AccountId, Epoch, Health, Moment, Overlay, ServiceName, H256};
use parity_scale_codec::Encode;
use serde::{Deserialize, Serialize};

use drchain_consensus::codec::WireCertificate;
use drchain_consensus::store::FailoverRecord;

/// A header in Substrate's shape, with drchain's timestamp.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderView {
    pub parent_hash: H256,
    /// Height, as `0x` hex like Substrate.
    pub number: String,
    /// State root after the block.
    pub state_root: H256,
    /// Merkle root of the extrinsics.
    pub extrinsics_root: H256,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// The consensus round the block was proposed in: above 0, the proposers of the earlier
    /// rounds missed their turn.
    #[serde(default)]
    pub round: u32,
    /// Digest logs (always empty: drchain has no digests).
    pub digest: Digest,
    /// The block's hash.
    pub hash: H256,
}

/// Substrate's header digest; drchain has none.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Digest {
    /// Always empty.
    pub logs: Vec<String>,
}

impl From<&Header> for HeaderView {
    fn from(h: &Header) -> Self {
        Self {
            parent_hash: h.parent_hash,
            number: format!("0x{:x}", h.number),
            state_root: h.state_root,
            extrinsics_root: h.extrinsics_root,
            timestamp: h.timestamp,
            round: h.round,
            digest: Digest::default(),
            hash: h.hash(),
        }
    }
}

/// A block with its justification, in Substrate's `SignedBlock` shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedBlockView {
    pub block: BlockView,
    /// `[["DRBF", "0x<SCALE commit certificate>"]]`; `null` for genesis.
    pub justifications: Option<Vec<(String, String)>>,
}

/// A block: header and SCALE-encoded extrinsics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockView {
    pub header: HeaderView,
    /// Each extrinsic's SCALE encoding, `0x` hex.
    pub extrinsics: Vec<String>,
}

/// The justification engine id of drchain's commit certificates.
pub const JUSTIFICATION_ENGINE: &str = "DRBF";

impl SignedBlockView {
    /// A block and its certificate.
    pub fn new(block: &Block, certificate: Option<&WireCertificate>) -> Self {
        Self {
            block: BlockView {
                header: HeaderView::from(&block.header),
                extrinsics: block
                    .extrinsics
                    .iter()
                    .map(|x| hex0x(&x.encode()))
                    .collect(),
            },
            justifications: certificate
                .map(|c| vec![(JUSTIFICATION_ENGINE.to_owned(), hex0x(&c.encode()))]),
        }
    }
}

/// `0x`-prefixed hex.
pub fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// `system_health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemHealth {
    /// Connected peers.
    pub peers: usize,
    /// Whether the node is catching up (more than a couple of blocks behind a peer).
    pub is_syncing: bool,
    /// Whether the node expects peers (always true: a chain needs its validators).
    pub should_have_peers: bool,
}

/// `system_disk`: the node's database and the file system it lives on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskView {
    /// Per kind of data (blocks, certificates, height_index, state, events, consensus_wal):
    /// bytes in the database's files, as RocksDB estimates them.
    pub database_bytes: std::collections::BTreeMap<String, u64>,
    /// Every file in the database's directory (RocksDB's logs included).
    pub database_disk_bytes: u64,
    /// Free bytes on the file system holding the database, if it could be read.
    pub free_bytes: Option<u64>,
    /// That file system's size.
    pub total_bytes: Option<u64>,
    /// The oldest finalized block the node keeps besides genesis (0: none yet); older ones
    /// were pruned (`--blocks-pruning`) or precede its state sync.
    #[serde(default)]
    pub oldest_block: u64,
    /// How many finalized blocks it keeps besides genesis.
    #[serde(default)]
    pub blocks_retained: u64,
}

/// `state_getReadProof`: values with proofs against one block's state root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadProofView {
    /// The block whose `stateRoot` the proofs check against.
    pub at: H256,
    pub proofs: Vec<KeyProofView>,
}

/// One key's value and proof (`drchain_support::trie_proof::StorageProof`, SCALE as hex;
/// check it with `verify_storage_proof`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyProofView {
    /// The key, `0x` hex.
    pub key: String,
    /// Its value, `0x` hex, or `null` if absent.
    pub value: Option<String>,
    /// The proof, `0x` hex.
    pub proof: String,
}

/// One entry of `system_peers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerView {
    /// libp2p peer id.
    pub peer_id: String,
    /// The member account behind it (same Ed25519 key).
    pub account: Option<AccountId>,
}

/// A block's events (`chain_getEvents`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockEvents {
    /// The block's hash.
    pub block: H256,
    pub number: u64,
    /// Its events, each `{"phase": …, "event": …}` in the runtime's JSON rendering (errors as
    /// text, so it reads well but does not decode back into the runtime's types).
    pub events: Vec<serde_json::Value>,
}

impl BlockEvents {
    /// The events of block `number` (`block`).
    pub fn new(
        block: H256,
        number: u64,
        records: &[EventRecord],
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            block,
            number,
            events: records
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A protected service, its holder and its candidates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceView {
    /// The service's name.
    pub name: ServiceName,
    /// Fencing token.
    pub epoch: Epoch,
    /// `active`, `promoting` or `vacant`.
    pub phase: String,
    /// The node that completed its promotion and serves.
    pub active: Option<AccountId>,
    /// The node elected and promoting, with its deadline on the live clock.
    pub promoting: Option<Promoting>,
    /// Block of the last phase change.
    pub since_block: u64,
    /// In maintenance mode since this block (no automatic failover); `None`: not paused.
    pub paused_since_block: Option<u64>,
    /// Its configuration.
    pub config: pallet_failover::ServiceConfig,
    /// The chain's live clock at the finalized head (heartbeat ages count on it).
    pub live_clock_ms: Moment,
    /// Every candidate, in priority order.
    pub nodes: Vec<ServiceNodeView>,
}

/// An elected node that has not yet completed its promotion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Promoting {
    pub node: AccountId,
    /// Live-clock deadline.
    pub deadline_ms: Moment,
}

/// A candidate of a service: role, endpoint, and its last heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceNodeView {
    /// The node's account.
    pub node: AccountId,
    /// 0 is the highest priority.
    pub priority: usize,
    /// Its role (`standby` before it is first seen).
    pub role: Role,
    /// Where clients reach it for this service.
    pub endpoint: Option<String>,
    /// Epoch in which it last failed.
    pub failed_epoch: Option<Epoch>,
    /// Epoch it was fenced in.
    pub fenced_epoch: Option<Epoch>,
    /// Its last heartbeat, if any.
    pub heartbeat: Option<HeartbeatView>,
    /// The newest checkpoint it holds (acknowledged, or produced as the active).
    pub held_checkpoint: Option<u64>,
    /// How much older its data is than the latest checkpoint, ms (`null`: it holds no
    /// retained checkpoint while there are some); compared with the service's `max_lag_ms`.
    pub data_lag_ms: Option<u64>,
    /// About how many bytes of data it lacks: what the checkpoints after its held one
    /// changed (`null` like `data_lag_ms`).
    pub data_lag_bytes: Option<u64>,
}

/// A node's last heartbeat for a service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatView {
    /// Reported health.
    pub health: Health,
    /// The epoch the node had seen.
    pub epoch_seen: Epoch,
    /// Last checkpoint it applied.
    pub applied_checkpoint: Option<u64>,
    /// Block that included it.
    pub block: u64,
    /// That block's timestamp.
    pub timestamp: Moment,
    /// Live-clock age at the finalized head.
    pub age_ms: Moment,
    /// Whether it is older than the service's `heartbeat_timeout_ms`.
    pub stale: bool,
    /// Heartbeats counted from this node.
    pub heartbeats: u64,
}

impl HeartbeatView {
    fn new(status: &Status, live_clock: Moment, timeout: u64) -> Self {
        let age_ms = live_clock.saturating_sub(status.live_at);
        Self {
            health: status.health,
            epoch_seen: status.epoch_seen,
            applied_checkpoint: status.applied_checkpoint,
            block: status.block,
            timestamp: status.timestamp,
            age_ms,
            stale: age_ms > timeout,
            heartbeats: status.heartbeats,
        }
    }
}

/// The view of `service` in `state`, if it is registered.
pub fn service_view(state: &Overlay<'_>, name: &ServiceName) -> Option<ServiceView> {
    let config = pallet_failover::config(state, name)?;
    let service = pallet_failover::service_state(state, name)?;
    let live_clock = system::LiveClock::get(state).unwrap_or(0);
    let records = pallet_failover::node_records(state, name);
    let nodes = config
        .candidates
        .iter()
        .enumerate()
        .map(|(priority, node)| {
            let record = records.iter().find(|(n, _)| n == node).map(|(_, r)| r);
            let lag = pallet_checkpoints::data_lag(state, name, node);
            ServiceNodeView {
                node: *node,
                priority,
                role: record.map_or(Role::Standby, |r| r.role),
                endpoint: pallet_network_config::endpoint(state, name, node),
                failed_epoch: record.and_then(|r| r.failed_epoch),
                fenced_epoch: record.and_then(|r| r.fenced_epoch),
                heartbeat: pallet_service_status::status(state, name, node)
                    .map(|s| HeartbeatView::new(&s, live_clock, config.heartbeat_timeout_ms)),
                held_checkpoint: lag.held,
                data_lag_ms: lag.lag_ms,
                data_lag_bytes: lag.lag_bytes,
            }
        })
        .collect();
    let (phase, active, promoting) = match service.phase {
        Phase::Active { node } => ("active", Some(node), None),
        Phase::Promoting { node, deadline } => (
            "promoting",
            None,
            Some(Promoting {
                node,
                deadline_ms: deadline,
            }),
        ),
        Phase::Vacant => ("vacant", None, None),
    };
    Some(ServiceView {
        name: name.clone(),
        epoch: service.epoch,
        phase: phase.to_owned(),
        active,
        promoting,
        since_block: service.since_block,
        paused_since_block: pallet_failover::pause::paused(state, name).map(|p| p.since_block),
        config,
        live_clock_ms: live_clock,
        nodes,
    })
}

/// One node's standing in one service (`status_node`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeServiceView {
    pub service: ServiceName,
    /// The service's epoch.
    pub epoch: Epoch,
    /// The node's role and heartbeat.
    #[serde(flatten)]
    pub node: ServiceNodeView,
}

/// A failover event from a service's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailoverEventView {
    /// Position in the service's log.
    pub sequence: u64,
    /// Block it happened in.
    pub block: u64,
    /// That block's timestamp.
    pub timestamp: u64,
    pub event: pallet_failover::Event,
}

impl From<&FailoverRecord> for FailoverEventView {
    fn from(r: &FailoverRecord) -> Self {
        Self {
            sequence: r.sequence,
            block: r.block,
            timestamp: r.timestamp,
            event: r.event.clone(),
        }
    }
}

/// Options of `failover_history`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryOptions {
    /// Entries from this sequence on; default: the last `limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// At most this many (default 100, at most 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// A part of a service's failover log (`failover_history`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryView {
    pub service: ServiceName,
    /// Entries in the whole log.
    pub total: u64,
    /// The entries asked for, oldest first.
    pub events: Vec<FailoverEventView>,
}

/// A service's recent transitions (`failover_timeline`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimelineView {
    pub service: ServiceName,
    /// Oldest first.
    pub transitions: Vec<crate::timeline::Transition>,
}

/// A live failover event (`failover_subscribeEvents`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveFailoverEvent {
    /// The block it happened in.
    pub block: u64,
    /// That block's hash.
    pub hash: H256,
    /// That block's timestamp.
    pub timestamp: u64,
    pub event: pallet_failover::Event,
}

/// A candidate's last heartbeat for a service (`status_heartbeats`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeHeartbeatView {
    pub node: AccountId,
    /// Its role.
    pub role: Role,
    /// Its last heartbeat, if any.
    pub heartbeat: Option<HeartbeatView>,
}

/// Where clients reach a candidate (`config_endpoints`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointView {
    pub node: AccountId,
    /// Its endpoint for the service, if it announced one.
    pub endpoint: Option<String>,
}

/// A checkpoint's manifest, in numbers (`replication_fetch`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestSummary {
    /// The manifest root.
    pub root: H256,
    /// Files in the checkpoint.
    pub files: u64,
    /// Their bytes.
    pub size_bytes: u64,
    /// Distinct chunks.
    pub chunks: u64,
}

/// A recorded checkpoint and its sequence (`checkpoints_latest`, `checkpoints_list`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointView {
    pub sequence: u64,
    pub checkpoint: pallet_checkpoints::Checkpoint,
}

/// A node's last acknowledged checkpoint (`checkpoints_acks`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AckView {
    pub node: AccountId,
    /// The sequence it acknowledged.
    pub sequence: u64,
}

/// The admins (`membership_admins`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminsView {
    pub admins: Vec<AccountId>,
    /// Approvals an admin call needs.
    pub threshold: u32,
}

/// Every method the server answers (`rpc_methods`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodsView {
    /// Sorted by name.
    pub methods: Vec<String>,
}

/// A block number as Substrate clients send it: a number or a `0x` hex string. Sent as a
/// number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct NumberParam(pub u64);

impl<'de> Deserialize<'de> for NumberParam {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => n.as_u64().map(NumberParam).ok_or_else(|| {
                D::Error::custom(format!("block number {n} is not a non-negative integer"))
            }),
            serde_json::Value::String(s) => {
                let digits = s.strip_prefix("0x").ok_or_else(|| {
                    D::Error::custom(format!("block number {s:?} must be a number or 0x hex"))
                })?;
                u64::from_str_radix(digits, 16)
                    .map(NumberParam)
                    .map_err(|e| D::Error::custom(format!("block number {s:?}: {e}")))
            }
            other => Err(D::Error::custom(format!(
                "block number must be a number or 0x hex, not {other}"
            ))),
        }
    }
}

/// A member, without its certificate's bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberView {
    /// Its account (Ed25519 public key).
    pub account: AccountId,
    /// `member` or `validator`.
    pub role: MemberRole,
    /// Certificate subject.
    pub subject: String,
    /// Fingerprint of the issuing trust anchor.
    pub anchor: H256,
    /// Certificate validity start (ms).
    pub not_before: Moment,
    /// Certificate validity end (ms).
    pub not_after: Moment,
    /// When it stops being admitted by time (ms): the earlier end of its certificate's and
    /// its CA's validity. A validator leaves the set then (see docs/operations.md).
    #[serde(default)]
    pub admitted_until: Moment,
    /// Block it was admitted in.
    pub admitted_at: u64,
    /// Whether it is admitted now (not revoked, certificate valid at the head).
    pub admitted: bool,
    /// Revocation, if any.
    pub revoked: Option<pallet_membership::Revocation>,
    /// Whether it signs consensus votes now.
    pub validator: bool,
    /// Its libp2p peer id.
    pub peer_id: Option<String>,
}

impl MemberView {
    /// The view of `m` in `state` at time `now` with the current validator set.
    pub fn new(
        state: &drchain_support::Overlay<'_>,
        m: pallet_membership::Member,
        now: Moment,
        validators: &[AccountId],
    ) -> Self {
        let admitted = pallet_membership::is_admitted(state, &m.account, now);
        let admitted_until = pallet_membership::admitted_until(state, &m);
        Self {
            admitted_until,
            account: m.account,
            role: m.role,
            subject: m.subject,
            anchor: m.anchor,
            not_before: m.not_before,
            not_after: m.not_after,
            admitted_at: m.admitted_at,
            admitted,
            validator: validators.contains(&m.account),
            peer_id: peer_id_of(&m.account),
            revoked: m.revoked,
        }
    }
}

/// The validator set now and the changes scheduled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidatorsView {
    /// The finalized height.
    pub at: u64,
    /// Validators of the next height.
    pub current: Vec<AccountId>,
    /// Sets taking effect later: (height, set).
    pub scheduled: Vec<(u64, Vec<AccountId>)>,
}

/// A validator's recent activity (`membership_validatorActivity`), from the commit
/// certificates of the last finalized blocks and the chain's record of missed turns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidatorActivityView {
    pub account: AccountId,
    /// Its certificate's CN.
    pub name: String,
    /// Blocks examined (the last finalized ones this node holds certificates for).
    pub window: u64,
    /// Of those, how many certificates carry its precommit.
    pub signed: u64,
    /// The latest of them, if any.
    pub last_signed: Option<u64>,
    /// Its precommit is in one of the last [`ONLINE_BLOCKS`] certificates.
    pub online: bool,
    /// Heights of its latest missed proposer turns (at most two are kept on chain).
    pub missed_turns: Vec<u64>,
    /// When its admission ends (ms).
    pub admitted_until: Moment,
}

/// How recent a precommit must be for `online`.
pub const ONLINE_BLOCKS: u64 = 16;

/// A trust anchor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrustAnchorView {
    /// blake3 of its DER.
    pub fingerprint: H256,
    pub subject: String,
    /// Validity start (ms).
    pub not_before: Moment,
    /// Validity end (ms).
    pub not_after: Moment,
}

/// A status update of a watched extrinsic (`author_extrinsicUpdate`), in Substrate's shape.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum TransactionStatus {
    /// In the pool, valid.
    Ready,
    /// In a finalized block (with BFT finality, inclusion is finality).
    InBlock(H256),
    /// In a finalized block.
    Finalized(H256),
    /// Removed from the pool: no longer valid.
    Invalid(String),
    /// Not seen finalized in time; it may still be included later.
    Dropped,
}

/// The libp2p peer id of a member: its Ed25519 key is its network identity.
fn peer_id_of(account: &AccountId) -> Option<String> {
    let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(&account.0).ok()?;
    Some(libp2p_identity::PeerId::from_public_key(&key.into()).to_string())
}
