//! Signing and submitting the agent's transactions. One at a time: the nonce is read from the
//! node's pool and the transaction submitted under one lock, so the replication tasks and the
//! role loop never sign two transactions with the same nonce.

use std::sync::Arc;

use drchain_runtime::{pallet_failover, pallet_service_status, RuntimeCall, UncheckedExtrinsic};
use drchain_support::{AccountId, Epoch, Health, ServiceName, H256};
use ed25519_dalek::SigningKey;

use drchain_rpc::NodeApi;

/// The heartbeat the machine's [`crate::machine::Action::Heartbeat`] asks for.
pub fn heartbeat_call(
    service: ServiceName,
    epoch_seen: Epoch,
    health: Health,
    applied_checkpoint: Option<u64>,
) -> RuntimeCall {
    RuntimeCall::ServiceStatus(pallet_service_status::Call::Heartbeat {
        service,
        epoch_seen,
        health,
        applied_checkpoint,
    })
}

/// The completion the machine's [`crate::machine::Action::CompletePromotion`] asks for.
pub fn completion_call(service: ServiceName, epoch: Epoch) -> RuntimeCall {
    RuntimeCall::Failover(pallet_failover::Call::PromotionComplete { service, epoch })
}

/// Submits transactions signed with the node's member key.
pub struct Submitter {
    key: SigningKey,
    genesis: H256,
    me: AccountId,
    node: Arc<dyn NodeApi>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Submitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitter").field("me", &self.me).finish()
    }
}

impl Submitter {
    /// A submitter for `key` on the chain `genesis`, through `node`.
    pub fn new(key: SigningKey, genesis: H256, node: Arc<dyn NodeApi>) -> Self {
        Self {
            me: AccountId::from(&key),
            key,
            genesis,
            node,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// Signs and submits `call`; whether the pool took it. A failure is logged with `what`
    /// (the callers send again when it matters: heartbeats every period, the rest on their
    /// next turn).
    pub async fn submit(&self, call: RuntimeCall, what: &str) -> bool {
        self.submit_for_hash(call, what).await.is_some()
    }

    /// [`Self::submit`], returning the extrinsic's hash when the pool took it.
    pub async fn submit_for_hash(&self, call: RuntimeCall, what: &str) -> Option<H256> {
        let _turn = self.one_at_a_time.lock().await;
        let nonce = match self.node.next_nonce(self.me).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "agent cannot submit a {what}");
                return None;
            }
        };
        let x = UncheckedExtrinsic::sign(&self.key, &self.genesis, nonce, call);
        match self.node.submit(x).await {
            Ok(Ok(hash)) => Some(hash),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the pool refused the agent's {what}");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "agent cannot submit a {what}");
                None
            }
        }
    }
}
