//! The election rules, one function per step. Everything reads chain state only.

use drchain_support::{AccountId, Env, Epoch, Health, ServiceError, ServiceName};
use pallet_checkpoints::DataLag;
use parity_scale_codec::{Decode, Encode};

use crate::{Error, Event, NodeRecord, Nodes, Phase, Reason, Role, ServiceConfig, States};

/// Why a candidate cannot be elected.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum Ineligible {
    /// Not in the service's candidate list.
    #[error("not a candidate")]
    NotACandidate,
    /// Not an admitted member at block time.
    #[error("not admitted (revoked, expired or CA unpinned)")]
    NotAdmitted,
    /// Never sent a heartbeat.
    #[error("no heartbeat yet")]
    NoHeartbeat,
    /// Last heartbeat too old on the live clock.
    #[error("heartbeat is {age_ms} ms old")]
    Stale {
        /// Age on the live clock.
        age_ms: u64,
    },
    /// Reports a health other than healthy.
    #[error("reports {health:?}")]
    Unhealthy {
        /// The reported health.
        health: Health,
    },
    /// Failed in an epoch it has not seen the end of.
    #[error("failed in epoch {epoch} and has not reported a newer one")]
    FailedInEpoch {
        /// The epoch of the failure.
        epoch: Epoch,
    },
    /// A deposed holder that has not seen the newer epoch.
    #[error("fenced since epoch {epoch}")]
    FencedInEpoch {
        /// The epoch it lost.
        epoch: Epoch,
    },
    /// Its data is older than the service's RPO allows.
    #[error("{} (max_lag_ms {max_lag_ms})", describe_lag(*lag_ms))]
    Lagging {
        /// How much older than the latest checkpoint its newest one is; `None`: it holds none.
        lag_ms: Option<u64>,
        /// The service's `max_lag_ms`.
        max_lag_ms: u64,
    },
}

fn describe_lag(lag_ms: Option<u64>) -> String {
    match lag_ms {
        Some(ms) => format!("its data is {ms} ms older than the latest checkpoint"),
        None => "it holds no retained checkpoint".to_owned(),
    }
}

/// Checks whether `node` may be elected for `service` in the current block. On success returns
/// the newest checkpoint it holds (for the preference order).
pub fn eligibility<E>(
    env: &Env<'_, '_, E>,
    service: &ServiceName,
    config: &ServiceConfig,
    node: &AccountId,
) -> Result<Option<u64>, Ineligible> {
    let lag = live_eligibility(env, service, config, node)?;
    if !lag.within(config.max_lag_ms) {
        return Err(Ineligible::Lagging {
            lag_ms: lag.lag_ms,
            max_lag_ms: config.max_lag_ms,
        });
    }
    Ok(lag.held)
}

/// Every rule but the data's: alive, healthy, admitted, not failed or fenced. Returns how far
/// its data is behind.
fn live_eligibility<E>(
    env: &Env<'_, '_, E>,
    service: &ServiceName,
    config: &ServiceConfig,
    node: &AccountId,
) -> Result<DataLag, Ineligible> {
    if config.priority(node).is_none() {
        return Err(Ineligible::NotACandidate);
    }
    if !pallet_membership::is_admitted(env.state, node, env.block.timestamp) {
        return Err(Ineligible::NotAdmitted);
    }
    let status =
        pallet_service_status::status(env.state, service, node).ok_or(Ineligible::NoHeartbeat)?;
    let age_ms = env.block.live_now.saturating_sub(status.live_at);
    if age_ms > config.heartbeat_timeout_ms {
        return Err(Ineligible::Stale { age_ms });
    }
    if status.health != Health::Healthy {
        return Err(Ineligible::Unhealthy {
            health: status.health,
        });
    }
    if let Some(record) = Nodes::get(env.state, service, node) {
        if let Some(epoch) = record.fenced_epoch.filter(|d| status.epoch_seen <= *d) {
            return Err(Ineligible::FencedInEpoch { epoch });
        }
        if let Some(epoch) = record.failed_epoch.filter(|f| status.epoch_seen <= *f) {
            return Err(Ineligible::FailedInEpoch { epoch });
        }
    }
    Ok(pallet_checkpoints::data_lag(env.state, service, node))
}

/// Whom to elect: the freshest eligible candidate, or, when only lagging ones are alive, the
/// freshest of those (elected only if the service accepts data loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    /// Within the RPO.
    Eligible(AccountId),
    /// Alive but holding older data than the RPO allows.
    Lagging(AccountId, DataLag),
    /// Nobody alive.
    Nobody,
}

/// The candidates other than `exclude`: newest held checkpoint first, then priority.
fn pick<E>(
    env: &Env<'_, '_, E>,
    service: &ServiceName,
    config: &ServiceConfig,
    exclude: Option<AccountId>,
) -> Pick {
    let live: Vec<(usize, AccountId, DataLag)> = config
        .candidates
        .iter()
        .enumerate()
        .filter(|(_, node)| Some(**node) != exclude)
        .filter_map(|(priority, node)| {
            live_eligibility(env, service, config, node)
                .ok()
                .map(|lag| (priority, *node, lag))
        })
        .collect();
    let freshest = |within: bool| {
        live.iter()
            .filter(|(_, _, lag)| !within || lag.within(config.max_lag_ms))
            .max_by(|a, b| a.2.held.cmp(&b.2.held).then(b.0.cmp(&a.0)))
            .copied()
    };
    match (freshest(true), freshest(false)) {
        (Some((_, node, _)), _) => Pick::Eligible(node),
        (None, Some((_, node, lag))) => Pick::Lagging(node, lag),
        (None, None) => Pick::Nobody,
    }
}

/// Fills the service after its holder `previous` was lost (or while it is vacant, with
/// `previous` `None`): elects whom [`pick`] chooses, or leaves it vacant and says why.
fn fill<E: From<Event>>(
    env: &mut Env<'_, '_, E>,
    service: &ServiceName,
    config: &ServiceConfig,
    previous: Option<AccountId>,
    reason: Reason,
) {
    let holder_lost = previous.is_some();
    match pick(env, service, config, previous) {
        Pick::Eligible(next) => {
            elect(env, service, config, next, previous, reason);
        }
        Pick::Lagging(next, lag) if config.allow_data_loss => {
            if let Some(epoch) = elect(env, service, config, next, previous, reason) {
                data_loss_accepted(env, service, next, epoch, lag);
            }
        }
        Pick::Lagging(candidate, lag) => {
            if holder_lost {
                if let Some(epoch) = vacate(env, service, reason) {
                    env.deposit(Event::PromotionWithheld {
                        service: service.clone(),
                        epoch,
                        candidate,
                        lag_ms: lag.lag_ms,
                        max_lag_ms: config.max_lag_ms,
                    });
                }
            }
        }
        Pick::Nobody => {
            if holder_lost {
                vacate(env, service, reason);
            }
        }
    }
}

fn data_loss_accepted<E: From<Event>>(
    env: &mut Env<'_, '_, E>,
    service: &ServiceName,
    node: AccountId,
    epoch: Epoch,
    lag: DataLag,
) {
    env.deposit(Event::DataLossAccepted {
        service: service.clone(),
        node,
        epoch,
        held: lag.held,
        latest: lag.latest,
        lag_ms: lag.lag_ms,
    });
}

/// What is wrong with the current holder, if anything.
fn holder_fault<E>(
    env: &Env<'_, '_, E>,
    service: &ServiceName,
    config: &ServiceConfig,
    node: &AccountId,
) -> Option<Reason> {
    if config.priority(node).is_none() {
        return Some(Reason::RemovedFromCandidates);
    }
    if !pallet_membership::is_admitted(env.state, node, env.block.timestamp) {
        return Some(Reason::NotAdmitted);
    }
    match pallet_service_status::status(env.state, service, node) {
        None => Some(Reason::HeartbeatStale),
        Some(s) if env.block.live_now.saturating_sub(s.live_at) > config.heartbeat_timeout_ms => {
            Some(Reason::HeartbeatStale)
        }
        Some(s) if s.health == Health::Failed => Some(Reason::ReportedFailed),
        Some(_) => None,
    }
}

/// Records a role, emitting `RoleChanged` if it differs.
pub(crate) fn set_role<E: From<Event>>(
    env: &mut Env<'_, '_, E>,
    service: &ServiceName,
    node: &AccountId,
    role: Role,
    epoch: Epoch,
) {
    let record = Nodes::get(env.state, service, node);
    let from = record.as_ref().map(|r| r.role);
    if from == Some(role) {
        return;
    }
    let mut record = record.unwrap_or(NodeRecord {
        role,
        failed_epoch: None,
        fenced_epoch: None,
    });
    record.role = role;
    Nodes::insert(env.state, service, node, &record);
    env.deposit(Event::RoleChanged {
        service: service.clone(),
        node: *node,
        from,
        to: role,
        epoch,
    });
}

/// Takes the service from its holder `node`, which held `epoch`.
fn depose<E: From<Event>>(
    env: &mut Env<'_, '_, E>,
    service: &ServiceName,
    config: &ServiceConfig,
    node: AccountId,
    epoch: Epoch,
    reason: Reason,
) {
    env.deposit(Event::Deposed {
        service: service.clone(),
        node,
        epoch,
        reason,
    });
    if config.priority(&node).is_none() {
        // No longer a candidate: nothing to remember about it.
        Nodes::remove(env.state, service, &node);
        return;
    }
    let mut record = Nodes::get(env.state, service, &node).unwrap_or(NodeRecord {
        role: Role::Fenced,
        failed_epoch: None,
        fenced_epoch: None,
    });
    if reason.needs_fencing() {
        record.fenced_epoch = Some(epoch);
    }
    if reason.is_failure() {
        record.failed_epoch = Some(epoch);
    }
    Nodes::insert(env.state, service, &node, &record);
    let role = if reason.is_failure() {
        Role::Failed
    } else {
        Role::Fenced
    };
    set_role(env, service, &node, role, epoch);
}

/// Elects `node` (already checked eligible) in a new epoch; returns it.
fn elect<E: From<Event>>(
    env: &mut Env<'_, '_, E>,
    service: &ServiceName,
    config: &ServiceConfig,
    node: AccountId,
    previous: Option<AccountId>,
    reason: Reason,
) -> Option<Epoch> {
    let mut st = States::get(env.state, service)?;
    st.epoch += 1;
    st.phase = Phase::Promoting {
        node,
        deadline: env.block.live_now + config.promotion_timeout_ms,
    };
    st.since_block = env.block.number;
    States::insert(env.state, service, &st);
    env.deposit(Event::Elected {
        service: service.clone(),
        node,
        epoch: st.epoch,
        previous,
        reason,
    });
    set_role(env, service, &node, Role::Promoting, st.epoch);
    Some(st.epoch)
}

/// Leaves the service without a holder in a new epoch; returns it.
fn vacate<E: From<Event>>(
    env: &mut Env<'_, '_, E>,
    service: &ServiceName,
    reason: Reason,
) -> Option<Epoch> {
    let mut st = States::get(env.state, service)?;
    st.epoch += 1;
    st.phase = Phase::Vacant;
    st.since_block = env.block.number;
    States::insert(env.state, service, &st);
    env.deposit(Event::WentVacant {
        service: service.clone(),
        epoch: st.epoch,
        reason,
    });
    Some(st.epoch)
}

/// The end-of-block step for one service: check the holder, elect if needed, refresh roles.
pub(crate) fn run<E: From<Event>>(
    env: &mut Env<'_, '_, E>,
    service: &ServiceName,
    config: &ServiceConfig,
) {
    let Some(st) = States::get(env.state, service) else {
        return;
    };
    let fault = match st.phase {
        Phase::Active { node } => holder_fault(env, service, config, &node).map(|r| (node, r)),
        Phase::Promoting { node, deadline } => holder_fault(env, service, config, &node)
            .or((env.block.live_now > deadline).then_some(Reason::PromotionTimeout))
            .map(|r| (node, r)),
        Phase::Vacant => None,
    };
    let paused = crate::pause::paused(env.state, service).is_some();
    let fault = fault.filter(|(_, reason)| !paused || crate::pause::overrides_pause(*reason));
    match (st.phase, fault) {
        (_, Some((node, reason))) => {
            if reason == Reason::HeartbeatStale {
                heartbeats_stopped(env, service, node, st.epoch);
            }
            depose(env, service, config, node, st.epoch, reason);
            if paused {
                vacate(env, service, reason);
            } else {
                fill(env, service, config, Some(node), reason);
            }
        }
        (Phase::Vacant, None) if !paused => fill(env, service, config, None, Reason::Vacancy),
        _ => {}
    }
    refresh_roles(env, service, config);
}

/// Records how long the holder had been silent when it was found stale.
fn heartbeats_stopped<E: From<Event>>(
    env: &mut Env<'_, '_, E>,
    service: &ServiceName,
    node: AccountId,
    epoch: Epoch,
) {
    let silent_ms = pallet_service_status::status(env.state, service, &node)
        .map(|s| env.block.live_now.saturating_sub(s.live_at));
    env.deposit(Event::HeartbeatsStopped {
        service: service.clone(),
        node,
        epoch,
        silent_ms,
    });
}

/// Roles of the candidates that do not hold the service, from their latest heartbeat.
fn refresh_roles<E: From<Event>>(
    env: &mut Env<'_, '_, E>,
    service: &ServiceName,
    config: &ServiceConfig,
) {
    let Some(st) = States::get(env.state, service) else {
        return;
    };
    let holder = st.phase.holder();
    for node in &config.candidates {
        if Some(*node) == holder {
            continue;
        }
        let Some(status) = pallet_service_status::status(env.state, service, node) else {
            continue;
        };
        let record = Nodes::get(env.state, service, node);
        let stale = env.block.live_now.saturating_sub(status.live_at) > config.heartbeat_timeout_ms;
        let seen = status.epoch_seen;
        let role = if stale || status.health == Health::Failed {
            Role::Failed
        } else if record
            .as_ref()
            .and_then(|r| r.fenced_epoch)
            .is_some_and(|d| seen <= d)
        {
            Role::Fenced
        } else if record
            .as_ref()
            .and_then(|r| r.failed_epoch)
            .is_some_and(|f| seen <= f)
        {
            Role::Failed
        } else {
            Role::Standby
        };
        set_role(env, service, node, role, st.epoch);
    }
}

/// Moves the service from its active node (or fills a vacancy) to `target` or the best
/// eligible candidate. A named target whose data is older than the RPO is elected anyway —
/// the admin's decision, recorded as [`Event::DataLossAccepted`].
pub(crate) fn switchover<E: From<Event>>(
    env: &mut Env<'_, '_, E>,
    service: &ServiceName,
    target: Option<AccountId>,
) -> Result<(), Error> {
    let config =
        crate::Services::get(env.state, service).ok_or_else(|| ServiceError::UnknownService {
            service: service.clone(),
        })?;
    let st = States::get(env.state, service).ok_or_else(|| ServiceError::UnknownService {
        service: service.clone(),
    })?;
    let current = match st.phase {
        Phase::Active { node } => Some(node),
        Phase::Vacant => None,
        Phase::Promoting { .. } => {
            return Err(Error::NotActive {
                service: service.clone(),
            })
        }
    };
    let (next, forced) = match target {
        Some(node) => {
            if Some(node) == current {
                return Err(Error::TargetIsActive { node });
            }
            match eligibility(env, service, &config, &node) {
                Ok(_) => (node, None),
                Err(Ineligible::Lagging { .. }) => {
                    let lag = live_eligibility(env, service, &config, &node)
                        .map_err(|why| Error::TargetNotEligible { node, why })?;
                    (node, Some(lag))
                }
                Err(why) => return Err(Error::TargetNotEligible { node, why }),
            }
        }
        None => match pick(env, service, &config, current) {
            Pick::Eligible(node) => (node, None),
            Pick::Lagging(..) | Pick::Nobody => {
                return Err(Error::NoEligibleCandidate {
                    service: service.clone(),
                })
            }
        },
    };
    if let Some(current) = current {
        depose(env, service, &config, current, st.epoch, Reason::Switchover);
    }
    let epoch = elect(env, service, &config, next, current, Reason::Switchover);
    if let (Some(lag), Some(epoch)) = (forced, epoch) {
        data_loss_accepted(env, service, next, epoch, lag);
    }
    Ok(())
}
