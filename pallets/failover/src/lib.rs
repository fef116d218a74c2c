//! # Failover pallet
//!
//! The election state machine of every protected service. Per service the chain holds a
//! configuration (candidates in priority order and timeouts), an `epoch` (the fencing token),
//! a phase (`Active`, `Promoting` or `Vacant`) and each candidate's role.
//!
//! All transitions happen in the end-of-block hook ([`Pallet`]'s `on_finalize`), after the
//! block's heartbeats were applied, and depend only on chain state, so every node computes the
//! same outcome:
//!
//! 1. An election starts when the holder's heartbeat is stale on the **live clock**, it
//!    reports itself failed, it is revoked or no longer admitted, it was removed from the
//!    candidates, or (through [`Call::Switchover`]) an admin asks.
//! 2. The elected node is an eligible candidate — admitted, fresh healthy heartbeat, not
//!    failed or fenced for the epoch it last saw, and holding data no more than `max_lag_ms`
//!    older than the latest checkpoint (the RPO; see `pallet_checkpoints::data_lag`) —
//!    preferring the newest held checkpoint, then priority. When the only live candidates lag
//!    further, the service stays `Vacant` ([`Event::PromotionWithheld`] says why) unless
//!    `allow_data_loss` is set, which elects the freshest of them
//!    ([`Event::DataLossAccepted`]); an admin switchover to a named node can force it too.
//!    With none eligible the election is retried every block.
//! 3. Election bumps the epoch and sets `Promoting` with a deadline; the node becomes `Active`
//!    only when it submits [`Call::PromotionComplete`] for that epoch. Missing the deadline
//!    marks it failed for the epoch and elects the next candidate.
//! 4. A deposed holder is `Fenced` (or `Failed`) until its heartbeats show it has seen a newer
//!    epoch; only then can it be a standby again.
//! 5. Every transition is an [`Event`].
//! 6. A paused service (maintenance mode, [`Call::Pause`]) gets no automatic election; see
//!    [`pause`].
//!
//! The live clock advances by at most the chain's `live_clock_max_gap_ms` per block, so a
//! consensus stall never makes heartbeats look stale.

#![forbid(unsafe_code)]

mod election;
mod event;
pub mod pause;
#[cfg(test)]
mod tests;

use drchain_support::{
    storage_double_map, storage_map, AccountId, BlockNumber, Env, Epoch, Hooks, Moment, Origin,
    Overlay, ServiceDirectory, ServiceError, ServiceName,
};
use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};

pub use election::{eligibility, Ineligible};
pub use event::Event;

/// Most candidates per service.
pub const MAX_CANDIDATES: usize = 16;

/// A service's failover configuration.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Candidate nodes, highest priority first.
    pub candidates: Vec<AccountId>,
    /// A heartbeat older than this on the live clock is stale.
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout_ms: u64,
    /// An elected node must complete its promotion within this (live clock).
    #[serde(default = "default_promotion_timeout")]
    pub promotion_timeout_ms: u64,
    /// The recovery point objective: a candidate whose newest held checkpoint was recorded
    /// more than this before the latest one is not elected.
    #[serde(default = "default_max_lag_ms")]
    pub max_lag_ms: u64,
    /// With no live candidate within `max_lag_ms`, elect the freshest one anyway (losing the
    /// newer checkpoints) rather than leave the service without an active node.
    #[serde(default)]
    pub allow_data_loss: bool,
}

/// The default `heartbeat_timeout_ms`: failure detection in about a second.
pub const DEFAULT_HEARTBEAT_TIMEOUT_MS: u64 = 1000;
/// The default `promotion_timeout_ms`: time for a restore and a start.
pub const DEFAULT_PROMOTION_TIMEOUT_MS: u64 = 5000;
/// The default `max_lag_ms`: one second of data at most.
pub const DEFAULT_MAX_LAG_MS: u64 = 1000;
/// The largest `max_lag_ms`: a day.
pub const MAX_MAX_LAG_MS: u64 = 86_400_000;

// Serde's `default` takes functions; the chain spec's service entries use these too.
#[doc(hidden)]
pub fn default_heartbeat_timeout() -> u64 {
    DEFAULT_HEARTBEAT_TIMEOUT_MS
}
#[doc(hidden)]
pub fn default_promotion_timeout() -> u64 {
    DEFAULT_PROMOTION_TIMEOUT_MS
}
#[doc(hidden)]
pub fn default_max_lag_ms() -> u64 {
    DEFAULT_MAX_LAG_MS
}

impl ServiceConfig {
    /// A configuration with the default timeouts.
    pub fn new(candidates: Vec<AccountId>) -> Self {
        Self {
            candidates,
            heartbeat_timeout_ms: default_heartbeat_timeout(),
            promotion_timeout_ms: default_promotion_timeout(),
            max_lag_ms: default_max_lag_ms(),
            allow_data_loss: false,
        }
    }

    /// Checks the configuration's shape; membership of the candidates is checked on dispatch.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |reason: String| Err(Error::InvalidConfig { reason });
        if self.candidates.is_empty() || self.candidates.len() > MAX_CANDIDATES {
            return bad(format!("need 1 to {MAX_CANDIDATES} candidates"));
        }
        let mut sorted = self.candidates.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != self.candidates.len() {
            return bad("duplicate candidate".into());
        }
        if !(50..=600_000).contains(&self.heartbeat_timeout_ms) {
            return bad("heartbeat_timeout_ms must be between 50 and 600000".into());
        }
        if !(100..=3_600_000).contains(&self.promotion_timeout_ms) {
            return bad("promotion_timeout_ms must be between 100 and 3600000".into());
        }
        if self.max_lag_ms > MAX_MAX_LAG_MS {
            return bad(format!("max_lag_ms must be at most {MAX_MAX_LAG_MS}"));
        }
        Ok(())
    }

    /// Priority of `node` (0 is highest), if it is a candidate.
    pub fn priority(&self, node: &AccountId) -> Option<usize> {
        self.candidates.iter().position(|c| c == node)
    }
}

/// Who holds a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// `node` completed its promotion and serves.
    #[codec(index = 0)]
    Active {
        /// The active node.
        node: AccountId,
    },
    /// `node` was elected and is restoring and starting the service.
    #[codec(index = 1)]
    Promoting {
        /// The elected node.
        node: AccountId,
        /// Live-clock time by which it must complete.
        deadline: Moment,
    },
    /// Nobody: no candidate was eligible. Retried every block.
    #[codec(index = 2)]
    Vacant,
}

impl Phase {
    /// The node holding the service (active or promoting).
    pub fn holder(&self) -> Option<AccountId> {
        match self {
            Phase::Active { node } | Phase::Promoting { node, .. } => Some(*node),
            Phase::Vacant => None,
        }
    }
}

/// A service's failover state.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct ServiceState {
    /// Fencing token; increases at every election and every vacancy.
    pub epoch: Epoch,
    /// Who holds the service.
    pub phase: Phase,
    /// Block of the last phase change.
    pub since_block: BlockNumber,
}

/// A candidate's role for a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds the service and serves.
    #[codec(index = 0)]
    Active,
    /// Ready to take over.
    #[codec(index = 1)]
    Standby,
    /// Elected, restoring and starting.
    #[codec(index = 2)]
    Promoting,
    /// Unavailable: stale, reporting failure, or failed a promotion, until it reports a newer
    /// epoch.
    #[codec(index = 3)]
    Failed,
    /// A deposed holder that has not yet seen the newer epoch; it must not serve.
    #[codec(index = 4)]
    Fenced,
}

/// What the chain remembers about a candidate beyond its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct NodeRecord {
    pub role: Role,
    /// Latest epoch in which it failed (stale, failed report, missed promotion).
    pub failed_epoch: Option<Epoch>,
    /// Latest epoch it held the service and lost it while it may still believe it holds it
    /// (unreachable, switched over, no longer admitted). It stays fenced until its heartbeats
    /// show a newer epoch.
    pub fenced_epoch: Option<Epoch>,
}

/// Why an election (or vacancy) happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The service had no holder (new service, or still vacant).
    #[codec(index = 0)]
    Vacancy,
    /// The holder's heartbeat went stale.
    #[codec(index = 1)]
    HeartbeatStale,
    /// The holder reported itself failed.
    #[codec(index = 2)]
    ReportedFailed,
    /// The holder is no longer admitted (revoked, expired, CA unpinned).
    #[codec(index = 3)]
    NotAdmitted,
    /// The holder was removed from the candidates.
    #[codec(index = 4)]
    RemovedFromCandidates,
    /// The elected node missed its promotion deadline.
    #[codec(index = 5)]
    PromotionTimeout,
    /// An admin asked for a switchover.
    #[codec(index = 6)]
    Switchover,
}

impl Reason {
    /// Whether this reason counts as a failure of the deposed node for its epoch.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Reason::HeartbeatStale | Reason::ReportedFailed | Reason::PromotionTimeout
        )
    }

    /// Whether the deposed node may still believe it holds the service, so it must be fenced:
    /// it was unreachable, moved away from, or expelled. A node that reported its own failure
    /// or never completed its promotion knows it does not serve.
    pub fn needs_fencing(&self) -> bool {
        matches!(
            self,
            Reason::HeartbeatStale | Reason::NotAdmitted | Reason::Switchover
        )
    }
}

storage_map!(
    /// Configuration per service.
    pub Services: ServiceName => ServiceConfig, "Failover"
);
storage_map!(
    /// Election state per service.
    pub States: ServiceName => ServiceState, "Failover"
);
storage_double_map!(
    /// Role and failure marks per service and candidate.
    pub Nodes: (ServiceName, AccountId) => NodeRecord, "Failover"
);

/// Calls of this pallet. Indices are fixed: they are the wire format.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    /// Admin: protect a new service. It starts `Vacant` at epoch 0; the first election happens
    /// once a candidate is eligible.
    #[codec(index = 0)]
    RegisterService {
        name: ServiceName,
        /// Its configuration; every candidate must be a member.
        config: ServiceConfig,
    },
    /// Admin: replace a service's configuration. A holder removed from the candidates is
    /// deposed at the end of the block.
    #[codec(index = 1)]
    UpdateService {
        /// The service.
        name: ServiceName,
        /// New configuration.
        config: ServiceConfig,
    },
    /// Admin: stop protecting a service and drop its records.
    #[codec(index = 2)]
    RemoveService {
        /// The service.
        name: ServiceName,
    },
    /// Signed by the elected node: it restored, started the service, and serves `epoch`.
    #[codec(index = 3)]
    PromotionComplete {
        service: ServiceName,
        /// The epoch it was elected in.
        epoch: Epoch,
    },
    /// Admin: move the service from its active node to `target` (or the best eligible
    /// candidate), or fill a vacant service. The old active is fenced; the target must
    /// complete a promotion. A named target whose data is older than `max_lag_ms` is elected
    /// anyway: the admin accepts the loss ([`Event::DataLossAccepted`]).
    #[codec(index = 4)]
    Switchover {
        service: ServiceName,
        /// Where to move it, or `None` for the best eligible candidate.
        target: Option<AccountId>,
    },
    /// Admin: maintenance mode — no automatic election for the service until
    /// [`Call::Resume`]. A holder that is revoked or removed from the candidates is still
    /// deposed (the service then stays vacant); an admin switchover still works.
    #[codec(index = 5)]
    Pause { service: ServiceName },
    /// Admin: end maintenance mode; the next block runs the election rules again.
    #[codec(index = 6)]
    Resume { service: ServiceName },
}

/// Errors of this pallet.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum Error {
    /// Wrong origin for the call.
    #[error(transparent)]
    BadOrigin(#[from] drchain_support::dispatch::BadOrigin),
    /// Bad configuration.
    #[error("invalid service configuration: {reason}")]
    InvalidConfig { reason: String },
    /// A candidate is not a member.
    #[error("candidate {node} is not an admitted member")]
    UnknownMember { node: AccountId },
    /// The service is already registered.
    #[error("service {service} already exists")]
    ServiceExists { service: ServiceName },
    /// The service is unknown, or the node is not one of its candidates.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The service is not promoting anyone.
    #[error("service {service} is not promoting a node")]
    NotPromoting { service: ServiceName },
    /// Someone other than the elected node claimed the promotion.
    #[error("{node} was not elected; {elected} was")]
    NotTheElectedNode {
        /// The sender.
        node: AccountId,
        /// The elected node.
        elected: AccountId,
    },
    /// The epoch is not the service's current one.
    #[error("epoch {given} is not the current epoch {current}")]
    WrongEpoch {
        /// Current epoch.
        current: Epoch,
        given: Epoch,
    },
    /// A node is promoting: switch over once it is active (or its promotion timed out).
    #[error("service {service} is promoting a node; switch over once it is active")]
    NotActive { service: ServiceName },
    /// No candidate can take over.
    #[error("no eligible candidate for {service}")]
    NoEligibleCandidate { service: ServiceName },
    /// The switchover target already holds the service.
    #[error("{node} is already the active node")]
    TargetIsActive {
        /// The target.
        node: AccountId,
    },
    /// The service is already in maintenance mode.
    #[error("service {service} is already paused")]
    AlreadyPaused { service: ServiceName },
    /// The service is not in maintenance mode.
    #[error("service {service} is not paused")]
    NotPaused { service: ServiceName },
    /// The requested switchover target cannot take over.
    #[error("{node} cannot take over: {why}")]
    TargetNotEligible {
        /// The target.
        node: AccountId,
        why: Ineligible,
    },
}

/// The [`ServiceDirectory`] the other service pallets consult, backed by this pallet.
#[derive(Debug, Clone, Copy, Default)]
pub struct Directory;

impl ServiceDirectory for Directory {
    fn exists(&self, state: &Overlay<'_>, service: &ServiceName) -> bool {
        Services::contains(state, service)
    }
    fn is_candidate(&self, state: &Overlay<'_>, service: &ServiceName, node: &AccountId) -> bool {
        Services::get(state, service).is_some_and(|c| c.candidates.contains(node))
    }
    fn epoch(&self, state: &Overlay<'_>, service: &ServiceName) -> Option<Epoch> {
        States::get(state, service).map(|s| s.epoch)
    }
    fn active(&self, state: &Overlay<'_>, service: &ServiceName) -> Option<(AccountId, Epoch)> {
        States::get(state, service).and_then(|s| match s.phase {
            Phase::Active { node } => Some((node, s.epoch)),
            _ => None,
        })
    }
}

/// A service's configuration.
pub fn config(state: &Overlay<'_>, service: &ServiceName) -> Option<ServiceConfig> {
    Services::get(state, service)
}

/// A service's election state.
pub fn service_state(state: &Overlay<'_>, service: &ServiceName) -> Option<ServiceState> {
    States::get(state, service)
}

/// Every service with its configuration and state.
pub fn services(state: &Overlay<'_>) -> Vec<(ServiceName, ServiceConfig, ServiceState)> {
    Services::iter(state)
        .into_iter()
        .filter_map(|(name, cfg)| States::get(state, &name).map(|st| (name, cfg, st)))
        .collect()
}

/// The role records of a service's candidates.
pub fn node_records(state: &Overlay<'_>, service: &ServiceName) -> Vec<(AccountId, NodeRecord)> {
    Nodes::iter_prefix(state, service)
}

fn check_members(state: &Overlay<'_>, config: &ServiceConfig) -> Result<(), Error> {
    for node in &config.candidates {
        if pallet_membership::member(state, node).is_none_or(|m| m.revoked.is_some()) {
            return Err(Error::UnknownMember { node: *node });
        }
    }
    Ok(())
}

fn register(
    state: &mut Overlay<'_>,
    name: &ServiceName,
    config: &ServiceConfig,
    at: BlockNumber,
) -> Result<(), Error> {
    config.validate()?;
    check_members(state, config)?;
    if Services::contains(state, name) {
        return Err(Error::ServiceExists {
            service: name.clone(),
        });
    }
    Services::insert(state, name, config);
    States::insert(
        state,
        name,
        &ServiceState {
            epoch: 0,
            phase: Phase::Vacant,
            since_block: at,
        },
    );
    Ok(())
}

/// Executes a call.
pub fn dispatch<E: From<Event>>(
    env: &mut Env<'_, '_, E>,
    origin: Origin,
    call: Call,
) -> Result<(), Error> {
    match call {
        Call::RegisterService { name, config } => {
            origin.admin()?;
            register(env.state, &name, &config, env.block.number)?;
            env.deposit(Event::ServiceRegistered {
                service: name,
                config,
            });
            Ok(())
        }
        Call::UpdateService { name, config } => {
            origin.admin()?;
            config.validate()?;
            check_members(env.state, &config)?;
            let old =
                Services::get(env.state, &name).ok_or_else(|| ServiceError::UnknownService {
                    service: name.clone(),
                })?;
            for gone in old
                .candidates
                .iter()
                .filter(|c| !config.candidates.contains(c))
            {
                Nodes::remove(env.state, &name, gone);
                pallet_service_status::clear_node(env.state, &name, gone);
            }
            Services::insert(env.state, &name, &config);
            env.deposit(Event::ServiceUpdated {
                service: name,
                config,
            });
            Ok(())
        }
        Call::RemoveService { name } => {
            origin.admin()?;
            if !Services::contains(env.state, &name) {
                return Err(ServiceError::UnknownService { service: name }.into());
            }
            Services::remove(env.state, &name);
            States::remove(env.state, &name);
            Nodes::remove_prefix(env.state, &name);
            pallet_service_status::clear_service(env.state, &name);
            pallet_checkpoints::clear_service(env.state, &name);
            pallet_network_config::clear_service(env.state, &name);
            pause::Paused::remove(env.state, &name);
            env.deposit(Event::ServiceRemoved { service: name });
            Ok(())
        }
        Call::PromotionComplete { service, epoch } => {
            let node = origin.signed()?;
            let mut st =
                States::get(env.state, &service).ok_or_else(|| ServiceError::UnknownService {
                    service: service.clone(),
                })?;
            let Phase::Promoting { node: elected, .. } = st.phase else {
                return Err(Error::NotPromoting { service });
            };
            if elected != node {
                return Err(Error::NotTheElectedNode { node, elected });
            }
            if epoch != st.epoch {
                return Err(Error::WrongEpoch {
                    current: st.epoch,
                    given: epoch,
                });
            }
            st.phase = Phase::Active { node };
            st.since_block = env.block.number;
            States::insert(env.state, &service, &st);
            env.deposit(Event::PromotionCompleted {
                service: service.clone(),
                node,
                epoch,
            });
            election::set_role(env, &service, &node, Role::Active, epoch);
            Ok(())
        }
        Call::Switchover { service, target } => {
            origin.admin()?;
            election::switchover(env, &service, target)
        }
        Call::Pause { service } => {
            origin.admin()?;
            pause::pause(env, service)
        }
        Call::Resume { service } => {
            origin.admin()?;
            pause::resume(env, service)
        }
    }
}

/// The pallet, for its block hooks.
#[derive(Debug)]
pub struct Pallet;

impl<E: From<Event>> Hooks<E> for Pallet {
    /// After the block's calls: runs elections and refreshes roles for every service.
    fn on_finalize(env: &mut Env<'_, '_, E>) {
        for (service, config) in Services::iter(env.state) {
            election::run(env, &service, &config);
        }
    }
}

/// Registers the genesis services (members must already be in place).
pub fn build_genesis(
    state: &mut Overlay<'_>,
    services: &[(ServiceName, ServiceConfig)],
) -> Result<(), (usize, Error)> {
    for (i, (name, config)) in services.iter().enumerate() {
        register(state, name, config, 0).map_err(|e| (i, e))?;
    }
    Ok(())
}
