//! State sync's networking (`drchain_consensus::state_sync` decides): every node serves the
//! state of its last sync points; a node started with `--sync fast` on an empty database
//! fetches one before it starts consensus, then follows the chain from there.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use drchain_consensus::state_sync::{
    Entries, Outcome, StateSnapshot, StateSyncClient, StateSyncRequest, StateSyncResponse,
    SyncTarget, TrustRoot, SNAPSHOTS_KEPT, SYNC_POINT_INTERVAL,
};
use drchain_runtime::{pallet_membership, Genesis};
use drchain_support::trie_proof::SubtreeId;
use drchain_support::{Overlay, StateRead};
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::PeerId;

use super::sync_server::RateLimit;
use super::NodeLoop;

/// State sync requests a peer may make per second on average, and at once: a joining node
/// keeps up to four subtrees in flight per peer.
const REQUESTS_PER_SECOND: f64 = 50.0;
const BURST: f64 = 100.0;

/// How a node that starts with an empty database gets the chain's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncMode {
    /// Replay every block from genesis.
    #[default]
    Full,
    /// Download the state of a recent sync point from peers, then follow blocks.
    Fast,
}

/// The node's state sync: the snapshots it serves and, while joining, its client.
#[derive(Debug, Default)]
pub(super) struct StateSyncLink {
    client: Option<StateSyncClient<PeerId>>,
    asked: HashMap<OutboundRequestId, (PeerId, StateSyncRequest)>,
    snapshots: VecDeque<StateSnapshot>,
    rates: HashMap<PeerId, RateLimit>,
    started: Option<Instant>,
}

impl StateSyncLink {
    /// A link that first syncs the state (a fresh node with `--sync fast`).
    /// `checked`: what an interrupted run kept (`ChainStore::sync_progress`).
    pub(super) fn joining(
        genesis: &Genesis,
        own_head: u64,
        checked: Vec<(SubtreeId, Entries)>,
    ) -> Self {
        let root = TrustRoot {
            genesis_hash: genesis.hash(),
            genesis: genesis.header.clone(),
            validators: pallet_membership::validators(&Overlay::new(
                &genesis.state as &dyn StateRead,
            )),
        };
        let mut client = StateSyncClient::new(root, own_head);
        if !checked.is_empty() {
            tracing::info!(
                subtrees = checked.len(),
                "State sync: resuming with the state pieces an earlier run checked"
            );
        }
        client.resume(checked);
        Self {
            client: Some(client),
            started: Some(Instant::now()),
            ..Self::default()
        }
    }

    /// Whether the node is still fetching its state (consensus waits meanwhile).
    pub(super) fn is_joining(&self) -> bool {
        self.client.is_some()
    }

    pub(super) fn peer_connected(&mut self, peer: PeerId) {
        if let Some(client) = &mut self.client {
            client.peer_connected(peer);
        }
    }

    pub(super) fn peer_disconnected(&mut self, peer: &PeerId) {
        if let Some(client) = &mut self.client {
            client.peer_disconnected(peer);
        }
        self.rates.remove(peer);
    }
}

impl NodeLoop {
    pub(super) fn state_sync_message(
        &mut self,
        peer: PeerId,
        message: request_response::Message<StateSyncRequest, StateSyncResponse>,
    ) -> anyhow::Result<()> {
        match message {
            request_response::Message::Request {
                request, channel, ..
            } => {
                if !self.admitted(&peer) {
                    return Ok(()); // the dropped channel tells the asker
                }
                let now = Instant::now();
                let allowed = self
                    .state_sync
                    .rates
                    .entry(peer)
                    .or_insert_with(|| RateLimit::full(now, BURST))
                    .allow(now, REQUESTS_PER_SECOND, BURST);
                if !allowed {
                    tracing::debug!(%peer, "state sync request refused: over the peer's rate");
                    self.metrics.sync_requests_refused.inc();
                    return Ok(());
                }
                let answer = self.state_sync_answer(&request);
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .state_sync
                    .send_response(channel, answer);
            }
            request_response::Message::Response {
                request_id,
                response,
            } => {
                let Some((asked, request)) = self.state_sync.asked.remove(&request_id) else {
                    return Ok(());
                };
                let now = self.now_ms();
                let Some(client) = &mut self.state_sync.client else {
                    return Ok(());
                };
                if let Err(e) = client.response(&asked, now, &request, response) {
                    tracing::warn!(%peer, error = %e, "peer sent bad state sync data; disconnecting");
                    self.penalize(peer, "bad_state_sync");
                }
                self.drive_state_sync()?;
            }
        }
        Ok(())
    }

    /// A state sync request of ours failed (timeout, connection lost): asked of another.
    pub(super) fn state_sync_failed(&mut self, request_id: OutboundRequestId) {
        let Some((peer, request)) = self.state_sync.asked.remove(&request_id) else {
            return;
        };
        if let Some(client) = &mut self.state_sync.client {
            client.request_failed(&peer, &request);
        }
    }

    fn state_sync_answer(&self, request: &StateSyncRequest) -> StateSyncResponse {
        match request {
            StateSyncRequest::Target => StateSyncResponse::Target(
                self.state_sync
                    .snapshots
                    .back()
                    .map(|s| Box::new(s.target().clone())),
            ),
            StateSyncRequest::Subtree { height, id } => self
                .state_sync
                .snapshots
                .iter()
                .find(|s| s.number() == *height)
                .map_or(StateSyncResponse::Unavailable, |s| s.answer(id)),
        }
    }

    /// Sends what the client wants sent and, once it is done, installs the state and starts
    /// consensus.
    pub(super) fn drive_state_sync(&mut self) -> anyhow::Result<()> {
        let now = self.now_ms();
        let Some(client) = &mut self.state_sync.client else {
            return Ok(());
        };
        for (peer, request) in client.requests(now) {
            let id = self
                .swarm
                .behaviour_mut()
                .state_sync
                .send_request(&peer, request.clone());
            self.state_sync.asked.insert(id, (peer, request));
        }
        let checked = client.take_checked();
        if let Err(e) = self.driver.store().keep_sync_progress(checked) {
            tracing::warn!(error = %e, "state sync progress not kept (a restart fetches it again)");
        }
        let Some(client) = &mut self.state_sync.client else {
            return Ok(());
        };
        let Some(outcome) = client.take_outcome() else {
            return Ok(());
        };
        self.state_sync.client = None;
        self.state_sync.asked.clear();
        let took = self.state_sync.started.map(|s| s.elapsed());
        match outcome {
            Outcome::Synced(finished) => {
                let number = finished.target.block.header.number;
                let entries = finished.entries.len();
                let target = finished.target.clone();
                let outputs = self.driver.on_synced_state(now, *finished)?;
                tracing::info!(
                    "State sync done: #{number} ({entries} state entries) in {:.1} s; following the chain",
                    took.unwrap_or_default().as_secs_f64()
                );
                self.metrics.state_sync_seconds.set(took.unwrap_or_default().as_secs_f64());
                self.execute(outputs)?;
                self.keep_snapshot(target);
            }
            Outcome::FullSync => tracing::info!(
                "State sync: no peer offers a sync point ahead of this node; following the chain block by block"
            ),
        }
        let outputs = self.driver.start(self.now_ms())?;
        self.execute(outputs)
    }

    /// After a finalized block: at a sync point, keeps its state to serve.
    pub(super) fn take_sync_point(&mut self, number: u64) {
        if number == 0 || !number.is_multiple_of(SYNC_POINT_INTERVAL) {
            return;
        }
        let store = self.driver.store();
        let target = (|| {
            Some(SyncTarget {
                block: store.block(number).ok()??,
                certificate: store.certificate(number).ok()??,
                set_changes: store.reader().set_changes(number).ok()?,
            })
        })();
        match target {
            Some(target) => self.keep_snapshot(target),
            None => tracing::warn!(number, "cannot read sync point #{number} to serve it"),
        }
    }

    fn keep_snapshot(&mut self, target: SyncTarget) {
        let started = Instant::now();
        let entries = self.driver.store().state().scan_prefix(b"");
        let count = entries.len();
        let number = target.block.header.number;
        match StateSnapshot::new(target, entries) {
            Ok(snapshot) => {
                self.state_sync.snapshots.push_back(snapshot);
                while self.state_sync.snapshots.len() > SNAPSHOTS_KEPT {
                    self.state_sync.snapshots.pop_front();
                }
                tracing::debug!(
                    number,
                    entries = count,
                    took_ms = started.elapsed().as_millis() as u64,
                    "kept the state of sync point #{number} to serve"
                );
            }
            Err(e) => tracing::warn!(number, error = %e, "sync point not kept"),
        }
    }
}
