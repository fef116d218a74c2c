//! What the agent reads of the finalized chain for one service: plain data, so the state
//! machine stays pure.

use drchain_runtime::pallet_failover::{self, Phase, Role};
use drchain_runtime::pallet_service_status::Status;
use drchain_runtime::{pallet_checkpoints, pallet_network_config, pallet_service_status, system};
use drchain_runtime::{EventRecord, RuntimeEvent, SystemEvent};
use drchain_support::{AccountId, Epoch, Overlay, ServiceName, H256};

/// The chain at one finalized block, for one service and this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainView {
    pub block: u64,
    /// The live clock at that block, ms.
    pub live_now: u64,
    /// The chain's `max_drift_ms` (enters the lease).
    pub max_drift_ms: u64,
    /// The service, if it exists and this node is one of its candidates.
    pub service: Option<ServiceSnapshot>,
    /// Extrinsics that succeeded in the finalized blocks received since the previous view
    /// (empty after a gap: heartbeats applied in blocks not seen give no lease, which is safe).
    pub applied: Vec<H256>,
    /// Whether the node has finalized a block through consensus since it started. Until then
    /// the view is history the node replays while it catches up, and the machine takes nothing
    /// from it (see `ServiceMachine::on_block`). [`read`] leaves it false; the host sets it.
    pub caught_up: bool,
}

/// The service's state as it concerns this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSnapshot {
    /// Current epoch (the fencing token).
    pub epoch: Epoch,
    /// Who holds it.
    pub phase: Phase,
    /// The service's heartbeat timeout.
    pub heartbeat_timeout_ms: u64,
    /// This node's role on chain.
    pub my_role: Option<Role>,
    /// This node's latest applied heartbeat.
    pub my_heartbeat: Option<Status>,
    /// This node's endpoint for the service.
    pub my_endpoint: Option<String>,
    /// The latest checkpoint on chain.
    pub latest_checkpoint: Option<u64>,
    /// Deposed holders that may still believe they serve: fenced, not yet reporting a newer
    /// epoch, and with a heartbeat fresh enough that their lease may hold. An elected node
    /// waits for this to be empty before it starts the service.
    pub others_may_serve: Vec<AccountId>,
    /// The nodes other than this one that hold the service (active or elected) or held it and
    /// have not yet reported a newer epoch, whatever the chain's clock says, each with the
    /// block of its latest applied heartbeat (0: none).
    pub may_hold: Vec<(AccountId, u64)>,
    /// The block of the service's last phase change (for an elected node: its election).
    pub since_block: u64,
}

/// Reads the view of `service` for `me` from the state at `block`.
pub fn read(state: &Overlay<'_>, block: u64, service: &ServiceName, me: &AccountId) -> ChainView {
    let live_now = system::LiveClock::get(state).unwrap_or(0);
    let max_drift_ms = pallet_network_config::params(state).max_drift_ms;
    let snapshot = (|| {
        let config = pallet_failover::config(state, service)?;
        config.priority(me)?;
        let st = pallet_failover::service_state(state, service)?;
        let records = pallet_failover::node_records(state, service);
        let timeout = config.heartbeat_timeout_ms;
        let others_may_serve = records
            .iter()
            .filter(|(node, _)| node != me)
            .filter_map(|(node, record)| {
                let fenced = record.fenced_epoch?;
                let hb = pallet_service_status::status(state, service, node)?;
                let fresh = live_now.saturating_sub(hb.live_at) <= timeout;
                (fresh && hb.epoch_seen <= fenced).then_some(*node)
            })
            .collect();
        let holder = match st.phase {
            Phase::Active { node } | Phase::Promoting { node, .. } => Some(node),
            Phase::Vacant => None,
        };
        let may_hold = records
            .iter()
            .filter(|(node, _)| node != me)
            .filter_map(|(node, record)| {
                let hb = pallet_service_status::status(state, service, node);
                let deposed = record
                    .fenced_epoch
                    .is_some_and(|fenced| hb.as_ref().is_none_or(|hb| hb.epoch_seen <= fenced));
                (holder == Some(*node) || deposed).then(|| (*node, hb.map_or(0, |hb| hb.block)))
            })
            .collect();
        Some(ServiceSnapshot {
            may_hold,
            since_block: st.since_block,
            epoch: st.epoch,
            phase: st.phase,
            heartbeat_timeout_ms: timeout,
            my_role: records.iter().find(|(n, _)| n == me).map(|(_, r)| r.role),
            my_heartbeat: pallet_service_status::status(state, service, me),
            my_endpoint: pallet_network_config::endpoint(state, service, me),
            latest_checkpoint: pallet_checkpoints::latest(state, service),
            others_may_serve,
        })
    })();
    ChainView {
        block,
        live_now,
        max_drift_ms,
        service: snapshot,
        applied: vec![],
        caught_up: false,
    }
}

/// The extrinsics of a finalized block that succeeded (the ones its `ExtrinsicSuccess` events
/// name): only those renew a lease.
pub fn succeeded(extrinsics: &[H256], events: &[EventRecord]) -> Vec<H256> {
    events
        .iter()
        .filter_map(|record| match &record.event {
            RuntimeEvent::System(SystemEvent::ExtrinsicSuccess { index }) => {
                extrinsics.get(*index as usize).copied()
            }
            _ => None,
        })
        .collect()
}

/// What replication reads of the chain for one service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointView {
    /// The latest recorded checkpoint: its sequence and manifest root.
    pub latest: Option<(u64, H256)>,
    /// The newest checkpoint the chain says this node holds (acknowledged, or produced).
    pub held: Option<u64>,
    /// This node produced the latest recorded checkpoint: its service's own data holds that
    /// checkpoint and everything it acknowledged since, so it is newer than any checkpoint.
    pub latest_is_own: bool,
    /// The service's active node: the only one whose announcements a standby follows.
    pub active: Option<AccountId>,
    /// Manifest roots whose data the chunk store keeps: the newest `keep` checkpoints and the
    /// one each node holds (a standby that is behind fetches it from here).
    pub keep_roots: Vec<H256>,
}

/// Reads the checkpoints of `service` that concern `me`.
pub fn read_checkpoints(
    state: &Overlay<'_>,
    service: &ServiceName,
    me: &AccountId,
    keep: usize,
) -> CheckpointView {
    let retained = pallet_checkpoints::checkpoints(state, service);
    let latest = retained.last().map(|(seq, c)| (*seq, c.manifest_root));
    let latest_is_own = retained.last().is_some_and(|(_, c)| c.producer == *me);
    let acks = pallet_checkpoints::acks(state, service);
    let held = acks.iter().find(|(n, _)| n == me).map(|(_, s)| *s);
    let mut keep_roots: Vec<H256> = retained
        .iter()
        .rev()
        .take(keep)
        .map(|(_, c)| c.manifest_root)
        .collect();
    for (_, sequence) in &acks {
        if let Some((_, c)) = retained.iter().find(|(s, _)| s == sequence) {
            keep_roots.push(c.manifest_root);
        }
    }
    keep_roots.sort();
    keep_roots.dedup();
    let active = match pallet_failover::service_state(state, service).map(|s| s.phase) {
        Some(Phase::Active { node }) => Some(node),
        _ => None,
    };
    CheckpointView {
        latest,
        held,
        latest_is_own,
        active,
        keep_roots,
    }
}
