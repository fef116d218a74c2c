//! The runtime's events.

use drchain_support::{AccountId, H256};
use parity_scale_codec::{Decode, Encode};
use serde::{Serialize, Serializer};

use crate::call::DispatchError;

/// Every event of the chain. Indices match [`crate::RuntimeCall`]'s pallets.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeEvent {
    /// Extrinsic outcomes.
    #[codec(index = 0)]
    System(SystemEvent),
    #[codec(index = 1)]
    Membership(pallet_membership::Event),
    /// Heartbeats.
    #[codec(index = 2)]
    ServiceStatus(pallet_service_status::Event),
    /// Network configuration.
    #[codec(index = 3)]
    NetworkConfig(pallet_network_config::Event),
    #[codec(index = 4)]
    Checkpoints(pallet_checkpoints::Event),
    /// Elections.
    #[codec(index = 5)]
    Failover(pallet_failover::Event),
    /// Admin proposals.
    #[codec(index = 6)]
    Admin(AdminEvent),
}

/// Outcome of each extrinsic.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemEvent {
    /// The extrinsic at `index` succeeded.
    #[codec(index = 0)]
    ExtrinsicSuccess {
        /// Its position in the block.
        index: u32,
    },
    /// The extrinsic at `index` failed; its writes were rolled back, its nonce is used.
    #[codec(index = 1)]
    ExtrinsicFailed {
        /// Its position in the block.
        index: u32,
        #[serde(serialize_with = "error_text")]
        error: DispatchError,
    },
}

/// Admin proposal events.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminEvent {
    /// A call was proposed.
    #[codec(index = 0)]
    Proposed {
        /// Its hash.
        proposal: H256,
        /// The proposing admin.
        proposer: AccountId,
    },
    /// An admin approved.
    #[codec(index = 1)]
    Approved { proposal: H256, admin: AccountId },
    /// The threshold was reached and the call ran as admin.
    #[codec(index = 2)]
    Executed {
        proposal: H256,
        /// What the call returned.
        #[serde(serialize_with = "result_text")]
        result: Result<(), DispatchError>,
    },
    /// A proposal was withdrawn.
    #[codec(index = 3)]
    Cancelled { proposal: H256 },
}

/// When in the block an event happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// In the start-of-block hooks.
    #[codec(index = 0)]
    Initialization,
    /// While applying the extrinsic at this index.
    #[codec(index = 1)]
    ApplyExtrinsic(u32),
    /// In the end-of-block hooks (elections).
    #[codec(index = 2)]
    Finalization,
}

/// An event with its phase.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct EventRecord {
    /// When.
    pub phase: Phase,
    pub event: RuntimeEvent,
}

macro_rules! from_event {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for RuntimeEvent {
            fn from(e: $ty) -> Self {
                RuntimeEvent::$variant(e)
            }
        })*
    };
}

from_event!(
    System(SystemEvent),
    Membership(pallet_membership::Event),
    ServiceStatus(pallet_service_status::Event),
    NetworkConfig(pallet_network_config::Event),
    Checkpoints(pallet_checkpoints::Event),
    Failover(pallet_failover::Event),
    Admin(AdminEvent),
);

/// Dispatch errors read as their message in JSON.
fn error_text<S: Serializer>(error: &DispatchError, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(error)
}

/// `Ok(())` reads as `"ok"`, an error as its message.
fn result_text<S: Serializer>(result: &Result<(), DispatchError>, s: S) -> Result<S::Ok, S::Error> {
    match result {
        Ok(()) => s.serialize_str("ok"),
        Err(e) => s.collect_str(e),
    }
}
