//! drchain's own methods: `failover_*` (services, their holder, epoch and phase, the event
//! history and a live feed), `status_*` (heartbeats), `config_*` (chain parameters,
//! bootnodes, endpoints), `checkpoints_*` and `membership_*`.

use std::sync::Arc;

use drchain_runtime::{
    pallet_checkpoints, pallet_failover, pallet_membership, pallet_network_config, RuntimeEvent,
};
use drchain_support::{AccountId, Overlay, ServiceName, StateRead};
use jsonrpsee::{PendingSubscriptionSink, RpcModule};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::views::{
    service_view, FailoverEventView, LiveFailoverEvent, MemberView, NodeServiceView, ServiceView,
    TrustAnchorView, ValidatorsView,
};
use super::{method, method0, notify, parse, subscription, RpcContext, RpcError};

/// Most history entries one call returns.
pub const MAX_HISTORY: usize = 1000;

/// Runs `f` over the finalized state.
fn with_state<T>(
    ctx: &RpcContext,
    f: impl FnOnce(&Overlay<'_>) -> Result<T, RpcError>,
) -> Result<T, RpcError> {
    ctx.read(|r| {
        let state = r.state();
        f(&Overlay::new(&state as &dyn StateRead))
    })
}

fn unknown_service(name: &ServiceName) -> RpcError {
    RpcError::NotFound {
        what: format!("service {name:?}"),
    }
}

/// Options of `failover_history`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryOptions {
    /// Entries from this sequence on; default: the last `limit`.
    from: Option<u64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// Registers drchain's methods.
pub fn register(module: &mut RpcModule<RpcContext>) {
    register_failover(module);
    register_status_and_config(module);
    register_checkpoints(module);
    register_membership(module);
}

fn register_failover(module: &mut RpcModule<RpcContext>) {
    method0(module, "failover_services", |ctx| {
        with_state(ctx, |state| {
            Ok(pallet_failover::services(state)
                .iter()
                .filter_map(|(name, _, _)| service_view(state, name))
                .collect::<Vec<ServiceView>>())
        })
    });
    method(module, "failover_service", |ctx, params| {
        let (name,): (ServiceName,) = parse(&params)?;
        with_state(ctx, |state| {
            service_view(state, &name).ok_or_else(|| unknown_service(&name))
        })
    });
    method(module, "failover_history", |ctx, params| {
        let (name, options): (ServiceName, Option<HistoryOptions>) = parse(&params)?;
        let options = options.unwrap_or_default();
        let limit = options.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_HISTORY {
            return Err(RpcError::invalid(format!(
                "limit must be between 1 and {MAX_HISTORY}"
            )));
        }
        ctx.read(|r| {
            let count = r.failover_count(&name)?;
            let from = options
                .from
                .unwrap_or_else(|| count.saturating_sub(limit as u64));
            let log = r.failover_log(&name, from, limit)?;
            let views: Vec<FailoverEventView<'_>> = log.iter().map(Into::into).collect();
            Ok(serde_json::json!({ "service": name, "total": count, "events": views }))
        })
    });
    subscription(
        module,
        [
            "failover_subscribeEvents",
            "failover_event",
            "failover_unsubscribeEvents",
        ],
        failover_events,
    );
}

/// Streams failover events of every service (or of the one named) as blocks finalize.
async fn failover_events(
    ctx: Arc<RpcContext>,
    params: jsonrpsee::types::Params<'static>,
    pending: PendingSubscriptionSink,
) {
    let filter: Option<ServiceName> = match parse::<(Option<ServiceName>,)>(&params) {
        Ok((filter,)) => filter,
        Err(e) => return pending.reject(e).await,
    };
    let mut blocks = ctx.node.subscribe_finalized();
    let Ok(sink) = pending.accept().await else {
        return;
    };
    loop {
        let block = tokio::select! {
            () = sink.closed() => return,
            block = blocks.recv() => block,
        };
        let block = match block {
            Ok(block) => block,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(skipped = n, "slow failover subscriber missed blocks");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        for record in &block.events {
            let RuntimeEvent::Failover(event) = &record.event else {
                continue;
            };
            let service = event.service();
            if filter.as_ref().is_some_and(|f| f != service) {
                continue;
            }
            let live = LiveFailoverEvent {
                block: block.header.number,
                hash: block.hash,
                timestamp: block.header.timestamp,
                event,
            };
            if !notify(&sink, &live).await {
                return;
            }
        }
    }
}

fn register_status_and_config(module: &mut RpcModule<RpcContext>) {
    method(module, "status_heartbeats", |ctx, params| {
        let (name,): (ServiceName,) = parse(&params)?;
        with_state(ctx, |state| {
            let view = service_view(state, &name).ok_or_else(|| unknown_service(&name))?;
            Ok(view
                .nodes
                .into_iter()
                .map(|n| serde_json::json!({ "node": n.node, "role": n.role, "heartbeat": n.heartbeat }))
                .collect::<Vec<_>>())
        })
    });
    method(module, "status_node", |ctx, params| {
        let (node,): (AccountId,) = parse(&params)?;
        with_state(ctx, |state| {
            Ok(pallet_failover::services(state)
                .iter()
                .filter_map(|(name, _, _)| service_view(state, name))
                .filter_map(|view| {
                    let node = view.nodes.into_iter().find(|n| n.node == node)?;
                    Some(NodeServiceView {
                        service: view.name,
                        epoch: view.epoch,
                        node,
                    })
                })
                .collect::<Vec<_>>())
        })
    });
    method0(module, "config_params", |ctx| {
        with_state(ctx, |state| Ok(pallet_network_config::params(state)))
    });
    method0(module, "config_bootnodes", |ctx| {
        with_state(ctx, |state| Ok(pallet_network_config::bootnodes(state)))
    });
    method(module, "config_endpoints", |ctx, params| {
        let (name,): (ServiceName,) = parse(&params)?;
        with_state(ctx, |state| {
            let config =
                pallet_failover::config(state, &name).ok_or_else(|| unknown_service(&name))?;
            Ok(config
                .candidates
                .iter()
                .map(|node| {
                    serde_json::json!({
                        "node": node,
                        "endpoint": pallet_network_config::endpoint(state, &name, node),
                    })
                })
                .collect::<Vec<_>>())
        })
    });
}

fn register_checkpoints(module: &mut RpcModule<RpcContext>) {
    method(module, "checkpoints_latest", |ctx, params| {
        let (name,): (ServiceName,) = parse(&params)?;
        with_state(ctx, |state| {
            Ok(
                pallet_checkpoints::latest(state, &name).and_then(|sequence| {
                    pallet_checkpoints::checkpoint(state, &name, sequence)
                        .map(|c| serde_json::json!({ "sequence": sequence, "checkpoint": c }))
                }),
            )
        })
    });
    method(module, "checkpoints_list", |ctx, params| {
        let (name,): (ServiceName,) = parse(&params)?;
        with_state(ctx, |state| {
            Ok(pallet_checkpoints::checkpoints(state, &name)
                .into_iter()
                .map(|(sequence, c)| serde_json::json!({ "sequence": sequence, "checkpoint": c }))
                .collect::<Vec<_>>())
        })
    });
    method(module, "checkpoints_acks", |ctx, params| {
        let (name,): (ServiceName,) = parse(&params)?;
        with_state(ctx, |state| {
            Ok(pallet_checkpoints::acks(state, &name)
                .into_iter()
                .map(|(node, sequence)| serde_json::json!({ "node": node, "sequence": sequence }))
                .collect::<Vec<_>>())
        })
    });
}

fn register_membership(module: &mut RpcModule<RpcContext>) {
    method0(module, "membership_members", |ctx| {
        ctx.read(|r| {
            let now = r
                .block(r.finalized_number()?)?
                .map_or(0, |b| b.header.timestamp);
            let state = r.state();
            let state = Overlay::new(&state as &dyn StateRead);
            let validators = pallet_membership::validators(&state);
            Ok(pallet_membership::Members::iter(&state)
                .into_iter()
                .map(|(account, m)| {
                    let admitted = pallet_membership::is_admitted(&state, &account, now);
                    MemberView::new(m, admitted, &validators)
                })
                .collect::<Vec<_>>())
        })
    });
    method(module, "membership_member", |ctx, params| {
        let (account,): (AccountId,) = parse(&params)?;
        ctx.read(|r| {
            let now = r
                .block(r.finalized_number()?)?
                .map_or(0, |b| b.header.timestamp);
            let state = r.state();
            let state = Overlay::new(&state as &dyn StateRead);
            let member =
                pallet_membership::member(&state, &account).ok_or_else(|| RpcError::NotFound {
                    what: format!("member {account}"),
                })?;
            let admitted = pallet_membership::is_admitted(&state, &account, now);
            Ok(MemberView::new(
                member,
                admitted,
                &pallet_membership::validators(&state),
            ))
        })
    });
    method0(module, "membership_validators", |ctx| {
        ctx.read(|r| {
            let at = r.finalized_number()?;
            let state = r.state();
            let state = Overlay::new(&state as &dyn StateRead);
            Ok(ValidatorsView {
                at,
                current: pallet_membership::validators_at(&state, at + 1),
                scheduled: pallet_membership::PendingValidators::iter(&state),
            })
        })
    });
    method0(module, "membership_admins", |ctx| {
        with_state(ctx, |state| {
            Ok(serde_json::json!({
                "admins": pallet_membership::Admins::get(state).unwrap_or_default(),
                "threshold": pallet_membership::admin_threshold(state),
            }))
        })
    });
    method0(module, "membership_trustAnchors", |ctx| {
        with_state(ctx, |state| {
            Ok(pallet_membership::TrustAnchors::iter(state)
                .into_iter()
                .map(|(fingerprint, a)| TrustAnchorView {
                    fingerprint,
                    subject: a.subject,
                    not_before: a.not_before,
                    not_after: a.not_after,
                })
                .collect::<Vec<_>>())
        })
    });
}
