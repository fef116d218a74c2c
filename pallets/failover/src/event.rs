//! The pallet's events, and what readers of them (store, node log, metrics, RPC) ask of one.

use drchain_support::{AccountId, Epoch, ServiceName};
use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::{Reason, Role, ServiceConfig};

/// Events of this pallet.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A service is now protected.
    #[codec(index = 0)]
    ServiceRegistered {
        /// The service.
        service: ServiceName,
        /// Its configuration.
        config: ServiceConfig,
    },
    /// A service's configuration changed.
    #[codec(index = 1)]
    ServiceUpdated {
        /// The service.
        service: ServiceName,
        /// New configuration.
        config: ServiceConfig,
    },
    /// A service is no longer protected.
    #[codec(index = 2)]
    ServiceRemoved {
        /// The service.
        service: ServiceName,
    },
    /// A node was elected and must now promote.
    #[codec(index = 3)]
    Elected {
        /// The service.
        service: ServiceName,
        /// The elected node.
        node: AccountId,
        /// The new epoch.
        epoch: Epoch,
        /// The previous holder, if any.
        previous: Option<AccountId>,
        /// Why.
        reason: Reason,
    },
    /// The elected node completed its promotion and is active.
    #[codec(index = 4)]
    PromotionCompleted {
        /// The service.
        service: ServiceName,
        /// The node.
        node: AccountId,
        /// Its epoch.
        epoch: Epoch,
    },
    /// A holder lost the service.
    #[codec(index = 5)]
    Deposed {
        /// The service.
        service: ServiceName,
        /// The node.
        node: AccountId,
        /// The epoch it held.
        epoch: Epoch,
        /// Why.
        reason: Reason,
    },
    /// No candidate was eligible: the service has no holder.
    #[codec(index = 6)]
    WentVacant {
        /// The service.
        service: ServiceName,
        /// The new epoch.
        epoch: Epoch,
        /// Why the holder was lost.
        reason: Reason,
    },
    /// A candidate's role changed.
    #[codec(index = 7)]
    RoleChanged {
        /// The service.
        service: ServiceName,
        /// The node.
        node: AccountId,
        /// Previous role, `None` for a node never seen before.
        from: Option<Role>,
        /// New role.
        to: Role,
        /// The service's epoch.
        epoch: Epoch,
    },
    /// The holder was lost and no live candidate holds data within `max_lag_ms`:
    /// `allow_data_loss` is off, so nobody is promoted (an admin switchover can force it).
    #[codec(index = 8)]
    PromotionWithheld {
        /// The service.
        service: ServiceName,
        /// The (vacant) epoch.
        epoch: Epoch,
        /// The freshest live candidate.
        candidate: AccountId,
        /// How much older its data is than the latest checkpoint (`None`: it holds none).
        lag_ms: Option<u64>,
        /// The service's RPO.
        max_lag_ms: u64,
    },
    /// A node was elected with data older than `max_lag_ms` (`allow_data_loss`, or an admin
    /// switchover): the newer checkpoints are lost.
    #[codec(index = 9)]
    DataLossAccepted {
        /// The service.
        service: ServiceName,
        /// The elected node.
        node: AccountId,
        /// Its epoch.
        epoch: Epoch,
        /// The checkpoint it holds.
        held: Option<u64>,
        /// The latest checkpoint.
        latest: Option<u64>,
        /// How much older its data is (`None`: it holds none).
        lag_ms: Option<u64>,
    },
    /// An admin paused the service: no automatic election until it is resumed.
    #[codec(index = 10)]
    Paused {
        /// The service.
        service: ServiceName,
    },
    /// An admin resumed the service: the election rules apply again.
    #[codec(index = 11)]
    Resumed {
        /// The service.
        service: ServiceName,
    },
    /// The holder's heartbeats stopped arriving: emitted with the `Deposed` it causes, so a
    /// timeline can show how long detection took.
    #[codec(index = 12)]
    HeartbeatsStopped {
        /// The service.
        service: ServiceName,
        /// The holder.
        node: AccountId,
        /// The epoch it held.
        epoch: Epoch,
        /// Live-clock time since its last heartbeat was recorded (`None`: it never sent one).
        silent_ms: Option<u64>,
    },
}

impl Event {
    /// The service the event is about.
    pub fn service(&self) -> &ServiceName {
        match self {
            Event::ServiceRegistered { service, .. }
            | Event::ServiceUpdated { service, .. }
            | Event::ServiceRemoved { service }
            | Event::Elected { service, .. }
            | Event::PromotionCompleted { service, .. }
            | Event::Deposed { service, .. }
            | Event::WentVacant { service, .. }
            | Event::RoleChanged { service, .. }
            | Event::PromotionWithheld { service, .. }
            | Event::DataLossAccepted { service, .. }
            | Event::Paused { service }
            | Event::Resumed { service }
            | Event::HeartbeatsStopped { service, .. } => service,
        }
    }

    /// Whether it is a failover: an election that replaced a holder or filled a vacancy. The
    /// very first election of a service is not one.
    pub fn is_failover(&self) -> bool {
        matches!(
            self,
            Event::Elected { previous, reason, .. }
                if previous.is_some() || *reason != Reason::Vacancy
        )
    }

    /// The line an operator greps for in the node's log, for transitions of the active role
    /// (`failover service=S epoch=E from=A to=B reason=R`, `promoted`, `deposed`, `vacant`);
    /// `None` for configuration and per-candidate role events.
    pub fn operator_line(&self) -> Option<String> {
        Some(match self {
            Event::Elected {
                service,
                node,
                epoch,
                previous,
                reason,
            } => format!(
                "failover service={service} epoch={epoch} from={} to={node} reason={reason:?}",
                previous.map_or_else(|| "none".to_owned(), |p| p.to_string())
            ),
            Event::PromotionCompleted {
                service,
                node,
                epoch,
            } => format!("promoted service={service} epoch={epoch} node={node}"),
            Event::Deposed {
                service,
                node,
                epoch,
                reason,
            } => format!("deposed service={service} epoch={epoch} node={node} reason={reason:?}"),
            Event::WentVacant {
                service,
                epoch,
                reason,
            } => format!("vacant service={service} epoch={epoch} reason={reason:?}"),
            Event::PromotionWithheld {
                service,
                epoch,
                candidate,
                lag_ms,
                max_lag_ms,
            } => format!(
                "withheld service={service} epoch={epoch} candidate={candidate} lag_ms={} max_lag_ms={max_lag_ms} (allow_data_loss is off)",
                lag_ms.map_or_else(|| "none".to_owned(), |l| l.to_string())
            ),
            Event::DataLossAccepted {
                service,
                node,
                epoch,
                held,
                latest,
                lag_ms,
            } => format!(
                "data-loss service={service} epoch={epoch} node={node} held={} latest={} lag_ms={}",
                held.map_or_else(|| "none".to_owned(), |l| l.to_string()),
                latest.map_or_else(|| "none".to_owned(), |l| l.to_string()),
                lag_ms.map_or_else(|| "none".to_owned(), |l| l.to_string())
            ),
            Event::Paused { service } => {
                format!("paused service={service} (no automatic failover until resumed)")
            }
            Event::Resumed { service } => format!("resumed service={service}"),
            Event::HeartbeatsStopped {
                service,
                node,
                epoch,
                silent_ms,
            } => format!(
                "heartbeats-stopped service={service} epoch={epoch} node={node} silent_ms={}",
                silent_ms.map_or_else(|| "none".to_owned(), |l| l.to_string())
            ),
            Event::ServiceRegistered { .. }
            | Event::ServiceUpdated { .. }
            | Event::ServiceRemoved { .. }
            | Event::RoleChanged { .. } => return None,
        })
    }
}
