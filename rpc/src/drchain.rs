//! drchain's own methods: `failover_*` (services, their holder, epoch and phase, the event
//! history and a live feed), `status_*` (heartbeats), `config_*` (chain parameters,
//! bootnodes, endpoints), `checkpoints_*` and `membership_*`.

use std::time::Duration;

use async_trait::async_trait;
use drchain_replication::transfer::{serve, TransferRequest};
use drchain_runtime::pallet_network_config::ChainParams;
use drchain_runtime::{
    pallet_checkpoints, pallet_failover, pallet_membership, pallet_network_config, RuntimeEvent,
};
use drchain_support::{AccountId, Overlay, ServiceName, StateRead, H256};
use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::PendingSubscriptionSink;
use parity_scale_codec::Encode;
use tokio::sync::broadcast::error::RecvError;

use crate::api::DrchainApiServer;
use crate::views::{
    service_view, AckView, AdminsView, CheckpointView, EndpointView, HistoryOptions, HistoryView,
    LiveFailoverEvent, ManifestSummary, MemberView, NodeHeartbeatView, NodeServiceView,
    ServiceView, TimelineView, TrustAnchorView, ValidatorActivityView, ValidatorsView,
    ONLINE_BLOCKS,
};
use crate::{notify, RpcContext, RpcError};

/// Finalized blocks `membership_validatorActivity` looks at.
pub const ACTIVITY_BLOCKS: u64 = 64;

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

#[async_trait]
impl DrchainApiServer for RpcContext {
    async fn failover_services(&self) -> Result<Vec<ServiceView>, RpcError> {
        with_state(self, |state| {
            Ok(pallet_failover::services(state)
                .iter()
                .filter_map(|(name, _, _)| service_view(state, name))
                .collect())
        })
    }

    async fn failover_service(&self, service: ServiceName) -> Result<ServiceView, RpcError> {
        with_state(self, |state| {
            service_view(state, &service).ok_or_else(|| unknown_service(&service))
        })
    }

    async fn failover_history(
        &self,
        service: ServiceName,
        options: Option<HistoryOptions>,
    ) -> Result<HistoryView, RpcError> {
        let options = options.unwrap_or_default();
        let limit = options.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_HISTORY {
            return Err(RpcError::invalid(format!(
                "limit must be between 1 and {MAX_HISTORY}"
            )));
        }
        self.read(|r| {
            let total = r.failover_count(&service)?;
            let from = options
                .from
                .unwrap_or_else(|| total.saturating_sub(limit as u64));
            let log = r.failover_log(&service, from, limit)?;
            Ok(HistoryView {
                events: log.iter().map(Into::into).collect(),
                service,
                total,
            })
        })
    }

    async fn failover_timeline(
        &self,
        service: ServiceName,
        limit: Option<usize>,
    ) -> Result<TimelineView, RpcError> {
        let limit = limit.unwrap_or(50);
        if limit == 0 || limit > MAX_HISTORY {
            return Err(RpcError::invalid(format!(
                "limit must be between 1 and {MAX_HISTORY}"
            )));
        }
        self.read(|r| {
            // The newest events of the log; each transition takes a handful (roles included).
            let total = r.failover_count(&service)?;
            let log = r.failover_log(
                &service,
                total.saturating_sub(MAX_HISTORY as u64),
                MAX_HISTORY,
            )?;
            let mut transitions = crate::timeline::transitions(&log);
            let skip = transitions.len().saturating_sub(limit);
            transitions.drain(..skip);
            Ok(TimelineView {
                service,
                transitions,
            })
        })
    }

    async fn failover_subscribe_events(
        &self,
        pending: PendingSubscriptionSink,
        service: Option<ServiceName>,
    ) -> SubscriptionResult {
        failover_events(self, pending, service).await;
        Ok(())
    }

    async fn status_heartbeats(
        &self,
        service: ServiceName,
    ) -> Result<Vec<NodeHeartbeatView>, RpcError> {
        with_state(self, |state| {
            let view = service_view(state, &service).ok_or_else(|| unknown_service(&service))?;
            Ok(view
                .nodes
                .into_iter()
                .map(|n| NodeHeartbeatView {
                    node: n.node,
                    role: n.role,
                    heartbeat: n.heartbeat,
                })
                .collect())
        })
    }

    async fn status_node(&self, node: AccountId) -> Result<Vec<NodeServiceView>, RpcError> {
        with_state(self, |state| {
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
                .collect())
        })
    }

    async fn config_params(&self) -> Result<ChainParams, RpcError> {
        with_state(self, |state| Ok(pallet_network_config::params(state)))
    }

    async fn config_bootnodes(&self) -> Result<Vec<String>, RpcError> {
        with_state(self, |state| Ok(pallet_network_config::bootnodes(state)))
    }

    async fn config_endpoints(&self, service: ServiceName) -> Result<Vec<EndpointView>, RpcError> {
        with_state(self, |state| {
            let config = pallet_failover::config(state, &service)
                .ok_or_else(|| unknown_service(&service))?;
            Ok(config
                .candidates
                .iter()
                .map(|node| EndpointView {
                    node: *node,
                    endpoint: pallet_network_config::endpoint(state, &service, node),
                })
                .collect())
        })
    }

    async fn checkpoints_latest(
        &self,
        service: ServiceName,
    ) -> Result<Option<CheckpointView>, RpcError> {
        with_state(self, |state| {
            Ok(
                pallet_checkpoints::latest(state, &service).and_then(|sequence| {
                    pallet_checkpoints::checkpoint(state, &service, sequence).map(|checkpoint| {
                        CheckpointView {
                            sequence,
                            checkpoint,
                        }
                    })
                }),
            )
        })
    }

    async fn checkpoints_list(
        &self,
        service: ServiceName,
    ) -> Result<Vec<CheckpointView>, RpcError> {
        with_state(self, |state| {
            Ok(pallet_checkpoints::checkpoints(state, &service)
                .into_iter()
                .map(|(sequence, checkpoint)| CheckpointView {
                    sequence,
                    checkpoint,
                })
                .collect())
        })
    }

    async fn replication_fetch(
        &self,
        root: H256,
        timeout_ms: Option<u64>,
    ) -> Result<ManifestSummary, RpcError> {
        self.check_unsafe("replication_fetch")?;
        let timeout = Duration::from_millis(timeout_ms.unwrap_or(60_000).clamp(1, 3_600_000));
        let manifest = self
            .node
            .fetch_checkpoint(root, timeout)
            .await?
            .map_err(|reason| RpcError::Unavailable {
                what: format!("checkpoint {root}"),
                reason,
            })?;
        Ok(ManifestSummary {
            root,
            files: manifest.files.len() as u64,
            size_bytes: manifest.size(),
            chunks: manifest.chunk_ids().len() as u64,
        })
    }

    async fn replication_transfer(&self, request: String) -> Result<String, RpcError> {
        self.check_unsafe("replication_transfer")?;
        let bytes = hex::decode(request.strip_prefix("0x").unwrap_or(&request))
            .map_err(|e| RpcError::invalid(format!("request is not hex: {e}")))?;
        let request = TransferRequest::decode_bounded(&bytes)
            .map_err(|e| RpcError::invalid(e.to_string()))?;
        let store = self.node.chunk_store();
        let response = tokio::task::spawn_blocking(move || serve(&store, &request))
            .await
            .map_err(|e| RpcError::Unavailable {
                what: "the chunk store".into(),
                reason: e.to_string(),
            })?;
        Ok(format!("0x{}", hex::encode(response.encode())))
    }

    async fn checkpoints_acks(&self, service: ServiceName) -> Result<Vec<AckView>, RpcError> {
        with_state(self, |state| {
            Ok(pallet_checkpoints::acks(state, &service)
                .into_iter()
                .map(|(node, sequence)| AckView { node, sequence })
                .collect())
        })
    }

    async fn membership_members(&self) -> Result<Vec<MemberView>, RpcError> {
        self.read(|r| {
            let now = r
                .block(r.finalized_number()?)?
                .map_or(0, |b| b.header.timestamp);
            let state = r.state();
            let state = Overlay::new(&state as &dyn StateRead);
            let validators = pallet_membership::validators(&state);
            Ok(pallet_membership::Members::iter(&state)
                .into_iter()
                .map(|(_, m)| MemberView::new(&state, m, now, &validators))
                .collect())
        })
    }

    async fn membership_member(&self, account: AccountId) -> Result<MemberView, RpcError> {
        self.read(|r| {
            let now = r
                .block(r.finalized_number()?)?
                .map_or(0, |b| b.header.timestamp);
            let state = r.state();
            let state = Overlay::new(&state as &dyn StateRead);
            let member =
                pallet_membership::member(&state, &account).ok_or_else(|| RpcError::NotFound {
                    what: format!("member {account}"),
                })?;
            Ok(MemberView::new(
                &state,
                member,
                now,
                &pallet_membership::validators(&state),
            ))
        })
    }

    async fn membership_validators(&self) -> Result<ValidatorsView, RpcError> {
        self.read(|r| {
            let at = r.finalized_number()?;
            let state = r.state();
            let state = Overlay::new(&state as &dyn StateRead);
            Ok(ValidatorsView {
                at,
                current: pallet_membership::validators_at(&state, at + 1),
                scheduled: pallet_membership::PendingValidators::iter(&state),
            })
        })
    }

    async fn agent_status(&self) -> Result<Option<serde_json::Value>, RpcError> {
        Ok(self.info.local_agent.reports())
    }

    async fn membership_validator_activity(&self) -> Result<Vec<ValidatorActivityView>, RpcError> {
        self.read(|r| {
            let at = r.finalized_number()?;
            let state = r.state();
            let state = Overlay::new(&state as &dyn StateRead);
            let mut views: Vec<ValidatorActivityView> =
                pallet_membership::validators_at(&state, at + 1)
                    .into_iter()
                    .map(|account| {
                        let member = pallet_membership::member(&state, &account);
                        ValidatorActivityView {
                            account,
                            name: member
                                .as_ref()
                                .map(|m| pallet_membership::common_name(&m.subject).to_owned())
                                .unwrap_or_default(),
                            window: 0,
                            signed: 0,
                            last_signed: None,
                            online: false,
                            missed_turns: pallet_membership::proposers::MissedTurns::get(
                                &state, &account,
                            )
                            .unwrap_or_default(),
                            admitted_until: member
                                .map(|m| pallet_membership::admitted_until(&state, &m))
                                .unwrap_or(0),
                        }
                    })
                    .collect();
            let first = at.saturating_sub(ACTIVITY_BLOCKS - 1).max(1);
            for number in (first..=at).rev() {
                let Some(certificate) = r.certificate(number)? else {
                    break; // pruned, or before a state sync
                };
                for view in &mut views {
                    view.window += 1;
                    if certificate
                        .signatures
                        .iter()
                        .any(|(who, _)| *who == view.account)
                    {
                        view.signed += 1;
                        view.last_signed = view.last_signed.or(Some(number));
                    }
                }
            }
            for view in &mut views {
                view.online = view
                    .last_signed
                    .is_some_and(|last| last + ONLINE_BLOCKS > at);
            }
            Ok(views)
        })
    }

    async fn membership_admins(&self) -> Result<AdminsView, RpcError> {
        with_state(self, |state| {
            Ok(AdminsView {
                admins: pallet_membership::Admins::get(state).unwrap_or_default(),
                threshold: pallet_membership::admin_threshold(state),
            })
        })
    }

    async fn membership_trust_anchors(&self) -> Result<Vec<TrustAnchorView>, RpcError> {
        with_state(self, |state| {
            Ok(pallet_membership::TrustAnchors::iter(state)
                .into_iter()
                .map(|(fingerprint, a)| TrustAnchorView {
                    fingerprint,
                    subject: a.subject,
                    not_before: a.not_before,
                    not_after: a.not_after,
                })
                .collect())
        })
    }
}

/// Streams failover events of every service (or of the one named) as blocks finalize.
async fn failover_events(
    ctx: &RpcContext,
    pending: PendingSubscriptionSink,
    filter: Option<ServiceName>,
) {
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
                event: event.clone(),
            };
            if !notify(&sink, &live).await {
                return;
            }
        }
    }
}
