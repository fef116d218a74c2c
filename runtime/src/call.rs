//! The runtime's calls and why a dispatched one fails (dispatching is in `dispatch.rs`).

use drchain_support::{blake3_hash, H256};
use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// Every call of the chain. Pallet indices are fixed: they are the wire format. In JSON (the
/// CLI's `drchain tx`), a call is `{"pallet": {"call": {fields}}}` in snake case.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeCall {
    /// Membership: CAs, members, validators, admins.
    #[codec(index = 1)]
    Membership(pallet_membership::Call),
    /// Heartbeats.
    #[codec(index = 2)]
    ServiceStatus(pallet_service_status::Call),
    /// Chain parameters, bootnodes, endpoints.
    #[codec(index = 3)]
    NetworkConfig(pallet_network_config::Call),
    /// Recovery checkpoints.
    #[codec(index = 4)]
    Checkpoints(pallet_checkpoints::Call),
    /// Services and elections.
    #[codec(index = 5)]
    Failover(pallet_failover::Call),
    /// Calls that need the admins' approval.
    #[codec(index = 6)]
    Admin(AdminCall),
}

/// Multi-admin approval of calls that need admin origin.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminCall {
    /// Signed by an admin: propose `call` for dispatch as admin. With a threshold of 1 it is
    /// dispatched at once; otherwise it waits for [`AdminCall::Approve`]s.
    #[codec(index = 0)]
    Propose {
        /// The call to run as admin; it may not itself be an admin call.
        call: Box<RuntimeCall>,
    },
    /// Signed by an admin: approve a pending proposal; the approval that reaches the
    /// threshold dispatches it.
    #[codec(index = 1)]
    Approve {
        /// blake3 of the proposed call's encoding.
        proposal: H256,
    },
    /// Signed by an admin: withdraw a pending proposal.
    #[codec(index = 2)]
    Cancel { proposal: H256 },
}

/// Why a dispatched call failed. The transaction is still included (its nonce is used) and
/// its writes are rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum DispatchError {
    /// Membership pallet error.
    #[error("membership: {0}")]
    #[codec(index = 1)]
    Membership(pallet_membership::Error),
    /// Service-status pallet error.
    #[error("service-status: {0}")]
    #[codec(index = 2)]
    ServiceStatus(pallet_service_status::Error),
    /// Network-config pallet error.
    #[error("network-config: {0}")]
    #[codec(index = 3)]
    NetworkConfig(pallet_network_config::Error),
    /// Checkpoints pallet error.
    #[error("checkpoints: {0}")]
    #[codec(index = 4)]
    Checkpoints(pallet_checkpoints::Error),
    /// Failover pallet error.
    #[error("failover: {0}")]
    #[codec(index = 5)]
    Failover(pallet_failover::Error),
    /// An admin call wrapped another admin call.
    #[error("an admin proposal cannot wrap another admin call")]
    #[codec(index = 6)]
    NestedAdminCall,
    /// A stored proposal no longer decodes (runtime upgrade changed the call format).
    #[error("the approved call no longer decodes")]
    #[codec(index = 7)]
    UndecodableProposal,
}

/// The proposal id of a call: blake3 of its encoding.
pub fn proposal_hash(call: &RuntimeCall) -> H256 {
    blake3_hash(&call.encode())
}
