//! Executing the driver's outputs: gossip, timers, block building, and what a finalized
//! block means for the pool, the peers, the metrics and the subscribers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::{gossipsub, PeerId};
use parity_scale_codec::Encode;

use crate::network::{self, SyncRequest};
use drchain_consensus::host::{self, ProposeError};
use drchain_consensus::{Output, TimerKey};
use drchain_rpc::FinalizedBlock;

use super::NodeLoop;

impl NodeLoop {
    /// A driver call that finalized a block validated, executed and stored it: its duration
    /// is that block's import time.
    pub(super) fn observe_import(&self, started: Instant, outputs: &[Output]) {
        if outputs
            .iter()
            .any(|o| matches!(o, Output::Finalized { .. }))
        {
            self.metrics
                .block_import
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// Gossips `bytes` on `topic` (`name` in logs and metrics). Having no peer yet is normal
    /// (a lone dev node, a restart); any other failure means a message that should have left
    /// did not (one too large, say), which can stall the chain: loud.
    pub(super) fn publish(&mut self, topic: gossipsub::IdentTopic, bytes: Vec<u8>, name: &str) {
        let size = bytes.len();
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) | Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
            Err(e) => {
                tracing::warn!(topic = name, size, error = %e, "gossip message not published");
                self.metrics
                    .gossip_publish_failures
                    .get_or_create(&vec![("topic", name.to_owned())])
                    .inc();
            }
        }
    }

    pub(super) fn execute(&mut self, outputs: Vec<Output>) -> anyhow::Result<()> {
        self.work.extend(outputs);
        self.drain()
    }

    pub(super) fn drain(&mut self) -> anyhow::Result<()> {
        while let Some(output) = self.work.pop_front() {
            self.output(output)?;
        }
        Ok(())
    }

    pub(super) fn output(&mut self, output: Output) -> anyhow::Result<()> {
        match output {
            Output::Broadcast(message) => {
                let topic = self.topics.consensus.clone();
                self.publish(topic, message.encode(), "consensus");
            }
            Output::ScheduleTimer { key, after_ms } => {
                self.timers
                    .insert(key, Instant::now() + Duration::from_millis(after_ms));
            }
            Output::CancelTimer(key) => {
                self.timers.remove(&key);
            }
            Output::CancelAllTimers => self.timers.retain(|k, _| *k == TimerKey::Idle),
            Output::BuildBlock { height, round } => {
                let (started, now) = (Instant::now(), self.now_ms());
                match host::propose(&mut self.driver, &self.pool, now, height, round) {
                    Ok(proposed) => {
                        for (hash, reason) in &proposed.left_out {
                            tracing::debug!(%hash, %reason, "transaction left out of the block");
                        }
                        self.observe_import(started, &proposed.outputs);
                        self.work.extend(proposed.outputs);
                    }
                    Err(ProposeError::Build(e)) => {
                        tracing::error!(error = %e, "could not build a block")
                    }
                    Err(ProposeError::Driver(e)) => return Err(e.into()),
                }
            }
            Output::Finalized {
                header,
                hash,
                round,
                extrinsics,
                events,
                synced,
            } => {
                // Per block: debug; at info the informant sums up every few seconds.
                tracing::debug!(
                    "Imported #{} ({hash}) txs={} round={round} via={}",
                    header.number,
                    extrinsics.len(),
                    if synced { "sync" } else { "consensus" }
                );
                tracing::debug!("Finalized #{} ({hash})", header.number);
                log_failover_events(&events);
                let number = header.number;
                let now = self.now_ms();
                let (dropped, outputs) = host::finalized_into_pool(
                    &mut self.driver,
                    &mut self.pool,
                    now,
                    header.number,
                    &extrinsics,
                )?;
                for (hash, reason) in &dropped {
                    tracing::debug!(%hash, %reason, "transaction dropped from the pool");
                }
                self.stats.finalized = header.number;
                self.stats.hash = hash;
                self.stats.included_transactions += extrinsics.len() as u64;
                if synced {
                    self.stats.synced_blocks += 1;
                } else {
                    self.stats.syncing = false;
                    self.stats.caught_up = true;
                }
                self.enforce_membership();
                self.metrics
                    .block_finalized(&header, extrinsics.len(), &events);
                self.metrics.record_services(&self.driver.store().state());
                let signers: Vec<drchain_support::AccountId> =
                    match self.driver.store().certificate(number) {
                        Ok(Some(c)) => c.signatures.iter().map(|(who, _)| *who).collect(),
                        _ => vec![],
                    };
                self.metrics.record_finality(
                    &header,
                    now,
                    synced,
                    &signers,
                    &self.driver.store().state(),
                );
                self.watch_expiries(header.timestamp);
                let _ = self.finalized.send(Arc::new(FinalizedBlock {
                    header,
                    hash,
                    extrinsics,
                    events,
                    dropped: dropped
                        .into_iter()
                        .map(|(h, reason)| (h, reason.to_string()))
                        .collect(),
                }));
                self.publish_status();
                self.work.extend(outputs);
                self.take_sync_point(number);
            }
            Output::RequestSync { from } => {
                self.stats.syncing = true;
                let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                if !peers.is_empty() {
                    self.sync_peer = (self.sync_peer + 1) % peers.len();
                    let peer = peers[self.sync_peer];
                    tracing::debug!(%peer, from, "asking for blocks");
                    self.swarm.behaviour_mut().sync.send_request(
                        &peer,
                        SyncRequest {
                            from,
                            max: network::SYNC_BATCH as u32,
                        },
                    );
                }
            }
        }
        Ok(())
    }
}

/// Log lines an operator can grep for every failover transition and every membership change
/// in a finalized block.
fn log_failover_events(events: &[drchain_runtime::EventRecord]) {
    use drchain_runtime::pallet_failover::Event;
    use drchain_runtime::RuntimeEvent;
    for record in events {
        match &record.event {
            RuntimeEvent::Failover(event) => match (event.operator_line(), event) {
                (Some(line), Event::WentVacant { .. }) => tracing::warn!("{line}"),
                (Some(line), _) => tracing::info!("{line}"),
                (None, _) => {}
            },
            RuntimeEvent::Membership(event) => tracing::info!("{}", event.operator_line()),
            _ => {}
        }
    }
}
