//! The machine's vocabulary: time, roles, hooks, the actions it asks of its host, and its
//! settings.

use std::ops::Deref;
use std::time::Duration;

pub use drchain_consensus::clock::Now;
use drchain_support::{AccountId, Epoch, Health, ServiceName};
use serde::Serialize;

/// The agent's view of its own role (the chain's role, except that `active` also needs the
/// lease and a successful `on_promote`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalRole {
    /// Serving.
    Active,
    /// Elected; restoring and starting.
    Promoting,
    /// Ready to take over.
    Standby,
    /// Unavailable (health, failed promotion, or the chain says so).
    Failed,
    /// Must not serve: deposed holder, or the lease ran out.
    Fenced,
    /// The service is unknown on chain or this node is not one of its candidates.
    None,
}

impl LocalRole {
    /// Its name, as hooks and logs show it.
    pub fn as_str(&self) -> &'static str {
        match self {
            LocalRole::Active => "active",
            LocalRole::Promoting => "promoting",
            LocalRole::Standby => "standby",
            LocalRole::Failed => "failed",
            LocalRole::Fenced => "fenced",
            LocalRole::None => "none",
        }
    }
}

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    /// `on_promote`.
    OnPromote,
    /// `on_demote`.
    OnDemote,
    /// `on_role_change`.
    OnRoleChange,
}

impl HookKind {
    /// Its name.
    pub fn as_str(&self) -> &'static str {
        match self {
            HookKind::OnPromote => "on_promote",
            HookKind::OnDemote => "on_demote",
            HookKind::OnRoleChange => "on_role_change",
        }
    }
}

/// One hook invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    pub kind: HookKind,
    /// The role it is about.
    pub role: LocalRole,
    /// The fencing token: the epoch it is about.
    pub epoch: Epoch,
    /// The service's latest checkpoint on chain.
    pub checkpoint: Option<u64>,
}

/// Something the host must do. Nothing is done by the machine itself.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Sign and submit a heartbeat. The machine recorded its send time already; the host
    /// reports the extrinsic's hash (or that it was refused) with
    /// [`ServiceMachine::on_heartbeat_submitted`], which is how the lease knows it when a
    /// block applies it.
    Heartbeat {
        /// Its id: tell the machine the extrinsic's hash with
        /// [`ServiceMachine::on_heartbeat_submitted`] once submitted.
        id: u64,
        /// Reported health.
        health: Health,
        /// The epoch this node has acted on.
        epoch_seen: Epoch,
    },
    /// Sign and submit `PromotionComplete(epoch)`. The chain's answer arrives in a block.
    CompletePromotion {
        /// The epoch of the election.
        epoch: Epoch,
    },
    /// Run a hook; resume with [`ServiceMachine::on_hook_finished`] when it exits or times out.
    RunHook(HookRun),
    /// Started serving (log it: the role log the tests read).
    StartedServing {
        /// The epoch served.
        epoch: Epoch,
        /// When the lease it serves under ends (Unix ms).
        lease_end_ms: u64,
    },
    /// Stopped serving (log it). `until_ms` is when serving really ended: now, or the lease
    /// end if the node noticed late (it was hung).
    StoppedServing {
        /// The epoch served.
        epoch: Epoch,
        /// End of serving, Unix ms.
        until_ms: u64,
        reason: &'static str,
    },
    /// The lease moved forward while serving (log it at debug: the role log's renewals).
    LeaseRenewed {
        /// The epoch served.
        epoch: Epoch,
        /// The new lease end, Unix ms.
        lease_end_ms: u64,
    },
    /// `on_demote` failed or timed out: the node stays out of service, does not acknowledge
    /// the epoch, and runs it again in `retry_in_ms` (the machine does; on a tick). Alert:
    /// the old service may still run beside the new active.
    DemoteFailed {
        /// The epoch it was demoting from.
        epoch: Epoch,
        /// Failures in a row.
        failures: u32,
        /// Until the next try, ms.
        retry_in_ms: u64,
    },
    /// The local role changed (log it).
    RoleChanged {
        from: LocalRole,
        to: LocalRole,
        /// The chain's epoch.
        epoch: Epoch,
    },
}

/// What one input asks of the host, in order. Every action must be carried out (see
/// [`Action`] for how each one resumes the machine).
#[must_use = "the host must carry out every action"]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actions(Vec<Action>);

impl Actions {
    /// The actions, to execute in order.
    pub fn into_vec(self) -> Vec<Action> {
        self.0
    }
}

impl From<Vec<Action>> for Actions {
    fn from(actions: Vec<Action>) -> Self {
        Self(actions)
    }
}

impl Deref for Actions {
    type Target = [Action];

    fn deref(&self) -> &[Action] {
        &self.0
    }
}

impl IntoIterator for Actions {
    type Item = Action;
    type IntoIter = std::vec::IntoIter<Action>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Static settings of one service's machine.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    pub service: ServiceName,
    /// This node.
    pub me: AccountId,
    /// Heartbeat period; `None`: a quarter of the chain's `heartbeat_timeout_ms`.
    pub heartbeat_interval: Option<Duration>,
    /// `ε` of the lease argument.
    pub clock_error_ms: u64,
    /// After a failed `on_promote`, how long the node reports itself failed (so the chain
    /// does not elect it again at once and promotions do not ping-pong).
    pub failed_promotion_holdoff: Duration,
}
