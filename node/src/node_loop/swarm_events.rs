//! Network events into the node loop: peer admission (members of the finalized state only)
//! and gossip (consensus messages, transactions).

use std::time::Instant;

use drchain_support::Overlay;
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, request_response, PeerId};

use crate::network::{self, BehaviourEvent};
use drchain_consensus::codec::ConsensusMessage;

use super::NodeLoop;

/// How long a peer that sent provably bad data is kept out. Only members are admitted, so the
/// map of penalized peers is bounded by the membership.
const PENALTY: std::time::Duration = std::time::Duration::from_secs(60);

impl NodeLoop {
    /// Whether `peer` is an admitted, unrevoked member of the finalized state, or a validator
    /// of the next heights (`is_admitted_peer`). Asked for every gossip message, so answers
    /// are kept until the next block.
    pub(super) fn admitted(&mut self, peer: &PeerId) -> bool {
        if self
            .penalized
            .get(peer)
            .is_some_and(|until| *until > Instant::now())
        {
            return false;
        }
        if let Some(known) = self.admission.get(peer) {
            return *known;
        }
        let admitted = network::account_of(peer).is_some_and(|account| {
            let store = self.driver.store();
            let head = store.head();
            pallet_membership::is_admitted_peer(
                &Overlay::new(&store.state()),
                &account,
                head.timestamp,
                head.number,
            )
        });
        self.admission.insert(*peer, admitted);
        admitted
    }

    /// `peer` sent provably bad data (`reason`, a metric label): it is disconnected and
    /// treated as not admitted for [`PENALTY`], so we neither ask nor hear it meanwhile.
    pub(super) fn penalize(&mut self, peer: PeerId, reason: &'static str) {
        let now = Instant::now();
        self.penalized.retain(|_, until| *until > now);
        self.penalized.insert(peer, now + PENALTY);
        self.metrics
            .peer_misbehaviour
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    /// After a block: forgets cached admissions and disconnects peers no longer admitted.
    pub(super) fn enforce_membership(&mut self) {
        self.admission.clear();
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            if !self.admitted(&peer) {
                tracing::warn!(%peer, "disconnecting a peer that is not an admitted member");
                self.stats.rejected_peers += 1;
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
        self.publish_replication_peers();
    }

    pub(super) fn swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) -> anyhow::Result<()> {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.listening.send_modify(|l| l.push(address));
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                if self.admitted(&peer_id) {
                    tracing::debug!(peer = %peer_id, "peer connected");
                } else {
                    tracing::warn!(peer = %peer_id, "disconnecting a peer that is not an admitted member");
                    self.stats.rejected_peers += 1;
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                }
                self.publish_status();
                self.publish_replication_peers();
            }
            SwarmEvent::ConnectionClosed { .. } => {
                self.publish_status();
                self.publish_replication_peers();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message,
                ..
            })) => self.gossip(propagation_source, message)?,
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                peer,
                message,
                ..
            })) => self.sync_message(peer, message)?,
            SwarmEvent::Behaviour(BehaviourEvent::Sync(
                request_response::Event::OutboundFailure { peer, error, .. },
            )) => tracing::debug!(%peer, %error, "sync request failed"),
            SwarmEvent::Behaviour(BehaviourEvent::Replication(
                request_response::Event::Message { peer, message, .. },
            )) => self.replication_message(peer, message),
            SwarmEvent::Behaviour(BehaviourEvent::Replication(
                request_response::Event::OutboundFailure {
                    request_id, error, ..
                },
            )) => self.replication_failure(request_id, error.to_string()),
            _ => {}
        }
        self.drain()
    }

    pub(super) fn gossip(
        &mut self,
        from: PeerId,
        message: gossipsub::Message,
    ) -> anyhow::Result<()> {
        if !self.admitted(&from) {
            self.stats.dropped_messages += 1;
            return Ok(());
        }
        if message.topic == self.topics.consensus.hash() {
            match ConsensusMessage::decode_untrusted(&message.data) {
                Ok(m) => {
                    let started = Instant::now();
                    let outputs = self.driver.on_message(self.now_ms(), m)?;
                    self.observe_import(started, &outputs);
                    self.execute(outputs)?;
                }
                Err(e) => {
                    self.stats.dropped_messages += 1;
                    tracing::debug!(peer = %from, error = %e, "malformed consensus message dropped");
                }
            }
        } else if message.topic == self.topics.transactions.hash() {
            match network::decode_transactions(&message.data) {
                Ok(transactions) => {
                    for x in transactions {
                        if let Err(e) = self.submit(x)? {
                            tracing::trace!(error = %e, "gossiped transaction not pooled");
                        }
                    }
                }
                Err(e) => {
                    self.stats.dropped_messages += 1;
                    tracing::debug!(peer = %from, error = %e, "malformed transactions dropped");
                }
            }
        }
        Ok(())
    }
}
