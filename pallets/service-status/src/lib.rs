//! # Service status pallet
//!
//! Heartbeats and health records. Every candidate node of a service sends a heartbeat at the
//! service's interval, carrying its health, the epoch it has seen and the last checkpoint it
//! applied. The latest heartbeat per (service, node) is kept with the **live-clock** time of the
//! block that included it; the failover pallet measures freshness on that clock. Health changes
//! are events, so the status history is auditable.

#![forbid(unsafe_code)]

#[cfg(test)]
mod tests;

use drchain_support::{
    storage_double_map, AccountId, BlockNumber, Env, Epoch, Health, Moment, Origin, Overlay,
    ServiceDirectory, ServiceError, ServiceName,
};
use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// The latest heartbeat of a node for a service.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct Status {
    /// Reported health.
    pub health: Health,
    /// The service epoch the node had seen finalized when it sent the heartbeat.
    pub epoch_seen: Epoch,
    /// Sequence of the last checkpoint the node applied, if any.
    pub applied_checkpoint: Option<u64>,
    /// Live-clock time of the block that included it.
    pub live_at: Moment,
    /// Header timestamp of that block.
    pub timestamp: Moment,
    /// Number of that block.
    pub block: BlockNumber,
    /// Heartbeats received from this node for this service.
    pub heartbeats: u64,
}

storage_double_map!(
    /// Latest status per service and node.
    pub Statuses: (ServiceName, AccountId) => Status, "ServiceStatus"
);

/// Calls of this pallet. Indices are fixed: they are the wire format.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    /// Signed by a candidate node of `service`: its heartbeat.
    #[codec(index = 0)]
    Heartbeat {
        service: ServiceName,
        /// Epoch the node has seen; must not be ahead of the chain's.
        epoch_seen: Epoch,
        health: Health,
        /// Last checkpoint it applied.
        applied_checkpoint: Option<u64>,
    },
}

/// Events of this pallet.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A node's health for a service changed (or was first reported).
    #[codec(index = 0)]
    HealthChanged {
        service: ServiceName,
        node: AccountId,
        /// Previous health, `None` for the first heartbeat.
        from: Option<Health>,
        /// New health.
        to: Health,
        /// Epoch the node has seen.
        epoch_seen: Epoch,
    },
}

/// Errors of this pallet.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum Error {
    /// Wrong origin for the call.
    #[error(transparent)]
    BadOrigin(#[from] drchain_support::dispatch::BadOrigin),
    /// The service is unknown, or the node is not one of its candidates.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The heartbeat claims an epoch the chain has not reached.
    #[error("heartbeat claims epoch {given} but the service is at epoch {current}")]
    EpochFromFuture {
        /// The chain's epoch.
        current: Epoch,
        /// The claimed one.
        given: Epoch,
    },
}

/// The pallet, for its block hooks (none: everything happens in calls).
#[derive(Debug)]
pub struct Pallet;

impl<E> drchain_support::Hooks<E> for Pallet {}

/// The latest status of `node` for `service`.
pub fn status(state: &Overlay<'_>, service: &ServiceName, node: &AccountId) -> Option<Status> {
    Statuses::get(state, service, node)
}

/// Every node's latest status for `service`.
pub fn statuses(state: &Overlay<'_>, service: &ServiceName) -> Vec<(AccountId, Status)> {
    Statuses::iter_prefix(state, service)
}

/// Drops the records of a removed service.
pub fn clear_service(state: &mut Overlay<'_>, service: &ServiceName) {
    Statuses::remove_prefix(state, service);
}

/// Drops the record of a node removed from a service's candidates.
pub fn clear_node(state: &mut Overlay<'_>, service: &ServiceName, node: &AccountId) {
    Statuses::remove(state, service, node);
}

/// Executes a call.
pub fn dispatch<E: From<Event>>(
    env: &mut Env<'_, '_, E>,
    directory: &dyn ServiceDirectory,
    origin: Origin,
    call: Call,
) -> Result<(), Error> {
    match call {
        Call::Heartbeat {
            service,
            epoch_seen,
            health,
            applied_checkpoint,
        } => {
            let node = origin.signed()?;
            let current = directory.candidate_epoch(env.state, &service, &node)?;
            if epoch_seen > current {
                return Err(Error::EpochFromFuture {
                    current,
                    given: epoch_seen,
                });
            }
            let previous = Statuses::get(env.state, &service, &node);
            let status = Status {
                health,
                epoch_seen,
                applied_checkpoint,
                live_at: env.block.live_now,
                timestamp: env.block.timestamp,
                block: env.block.number,
                heartbeats: previous.as_ref().map_or(0, |p| p.heartbeats) + 1,
            };
            Statuses::insert(env.state, &service, &node, &status);
            let from = previous.map(|p| p.health);
            if from != Some(health) {
                env.deposit(Event::HealthChanged {
                    service,
                    node,
                    from,
                    to: health,
                    epoch_seen,
                });
            }
            Ok(())
        }
    }
}
