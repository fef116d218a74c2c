//! Dispatching a call to its pallet, and the admins' proposals around calls that need their
//! threshold.

use drchain_support::{AccountId, Env, Origin, H256};
use parity_scale_codec::{DecodeLimit, Encode};

use crate::call::{AdminCall, DispatchError, RuntimeCall};
use crate::event::{AdminEvent, RuntimeEvent};
use crate::MAX_DECODE_DEPTH;

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
