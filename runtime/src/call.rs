//! The runtime's calls and their dispatch.

use drchain_support::{blake3_hash, AccountId, Env, Origin, H256};
use parity_scale_codec::{Decode, DecodeLimit, Encode};
use serde::{Deserialize, Serialize};

use crate::event::{AdminEvent, RuntimeEvent};
use crate::MAX_DECODE_DEPTH;

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
    Cancel {
        /// The proposal.
        proposal: H256,
    },
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

/// Dispatches `call` from `origin`, emitting events into `env`.
pub fn dispatch(
    env: &mut Env<'_, '_, RuntimeEvent>,
    origin: Origin,
    call: RuntimeCall,
) -> Result<(), DispatchError> {
    let directory = pallet_failover::Directory;
    match call {
        RuntimeCall::Membership(c) => {
            pallet_membership::dispatch(env, origin, c).map_err(DispatchError::Membership)
        }
        RuntimeCall::ServiceStatus(c) => {
            pallet_service_status::dispatch(env, &directory, origin, c)
                .map_err(DispatchError::ServiceStatus)
        }
        RuntimeCall::NetworkConfig(c) => {
            pallet_network_config::dispatch(env, &directory, origin, c)
                .map_err(DispatchError::NetworkConfig)
        }
        RuntimeCall::Checkpoints(c) => pallet_checkpoints::dispatch(env, &directory, origin, c)
            .map_err(DispatchError::Checkpoints),
        RuntimeCall::Failover(c) => {
            pallet_failover::dispatch(env, origin, c).map_err(DispatchError::Failover)
        }
        RuntimeCall::Admin(c) => dispatch_admin(env, origin, c),
    }
}

fn admin_signer(origin: Origin) -> Result<AccountId, DispatchError> {
    origin
        .signed()
        .map_err(|e| DispatchError::Membership(e.into()))
}

fn dispatch_admin(
    env: &mut Env<'_, '_, RuntimeEvent>,
    origin: Origin,
    call: AdminCall,
) -> Result<(), DispatchError> {
    let who = admin_signer(origin)?;
    let number = env.block.number;
    let approval = match call {
        AdminCall::Propose { call } => {
            if matches!(*call, RuntimeCall::Admin(_)) {
                return Err(DispatchError::NestedAdminCall);
            }
            let encoded = call.encode();
            let (proposal, approval) = pallet_membership::propose(env.state, who, encoded, number)
                .map_err(DispatchError::Membership)?;
            env.deposit(AdminEvent::Proposed {
                proposal,
                proposer: who,
            });
            (proposal, approval)
        }
        AdminCall::Approve { proposal } => {
            let approval = pallet_membership::approve(env.state, who, proposal)
                .map_err(DispatchError::Membership)?;
            env.deposit(AdminEvent::Approved {
                proposal,
                admin: who,
            });
            (proposal, approval)
        }
        AdminCall::Cancel { proposal } => {
            pallet_membership::cancel(env.state, who, proposal)
                .map_err(DispatchError::Membership)?;
            env.deposit(AdminEvent::Cancelled { proposal });
            return Ok(());
        }
    };
    if let (proposal, pallet_membership::Approval::Approved { call }) = approval {
        execute_approved(env, proposal, &call);
    }
    Ok(())
}

/// Runs an approved proposal as admin in its own storage transaction. Its outcome is an event:
/// the approval itself succeeded whatever the call does.
fn execute_approved(env: &mut Env<'_, '_, RuntimeEvent>, proposal: H256, encoded: &[u8]) {
    let result = match RuntimeCall::decode_all_with_depth_limit(MAX_DECODE_DEPTH, &mut &encoded[..])
    {
        Ok(call) => {
            env.state.start_transaction();
            let events_before = env.event_count();
            let result = dispatch(env, Origin::Admin, call);
            if result.is_ok() {
                env.state.commit_transaction();
            } else {
                env.state.rollback_transaction();
                env.truncate_events(events_before);
            }
            result
        }
        Err(_) => Err(DispatchError::UndecodableProposal),
    };
    env.deposit(AdminEvent::Executed { proposal, result });
}

/// The proposal id of a call: blake3 of its encoding.
pub fn proposal_hash(call: &RuntimeCall) -> H256 {
    blake3_hash(&call.encode())
}
