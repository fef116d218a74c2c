//! Network events into the node loop: peer admission (members of the finalized state only)
//! and gossip (consensus messages, transactions).

use std::time::Instant;

use drchain_support::Overlay;
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, identify, request_response, PeerId};

use crate::network::{self, BehaviourEvent};
use drchain_consensus::codec::ConsensusMessage;
use drchain_consensus::pool::PoolError;
use drchain_consensus::Verdict;
use drchain_runtime::TransactionError;

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
        let admitted = self.is_member(peer);
        self.admission.insert(*peer, admitted);
        admitted
    }

    /// Whether `peer` is an admitted member by the finalized state, uncached (for peers that
    /// are not connected: the cache is for those that are).
    pub(super) fn is_member(&self, peer: &PeerId) -> bool {
        network::account_of(peer).is_some_and(|account| {
            let store = self.driver.store();
            let head = store.head();
            pallet_membership::is_admitted_peer(
                &Overlay::new(&store.state()),
                &account,
                head.timestamp,
                head.number,
            )
        })
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
        let mut discovery = std::mem::take(&mut self.discovery);
        discovery.retain_members(|p| self.is_member(p));
        self.discovery = discovery;
    }

    pub(super) fn swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) -> anyhow::Result<()> {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.listening.send_modify(|l| l.push(address));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                endpoint,
                ..
            } => {
                if self.admitted(&peer_id) {
                    tracing::debug!(peer = %peer_id, "peer connected");
                    self.peer_hosts
                        .connected(peer_id, endpoint.get_remote_address());
                    self.discovery.connected(&peer_id);
                    self.state_sync.peer_connected(peer_id);
                    if num_established.get() == 1 {
                        self.connected_since.insert(peer_id, Instant::now());
                    }
                } else {
                    tracing::warn!(peer = %peer_id, "disconnecting a peer that is not an admitted member");
                    self.stats.rejected_peers += 1;
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                }
                self.publish_status();
                self.publish_replication_peers();
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    self.connected_since.remove(&peer_id);
                    self.peer_hosts.disconnected(&peer_id);
                    self.state_sync.peer_disconnected(&peer_id);
                }
                self.publish_status();
                self.publish_replication_peers();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let topic = message.topic.clone();
                let verdict = self.gossip(propagation_source, message)?;
                self.report_gossip(&message_id, &propagation_source, &topic, verdict);
            }
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
            SwarmEvent::Behaviour(BehaviourEvent::StateSync(
                request_response::Event::Message { peer, message, .. },
            )) => self.state_sync_message(peer, message)?,
            SwarmEvent::Behaviour(BehaviourEvent::StateSync(
                request_response::Event::OutboundFailure {
                    request_id, error, ..
                },
            )) => {
                tracing::debug!(%error, "state sync request failed");
                self.state_sync_failed(request_id);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.identified(peer_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::Peers(request_response::Event::Message {
                peer,
                message,
                ..
            })) => self.peers_message(peer, message),
            SwarmEvent::Behaviour(BehaviourEvent::Replication(
                request_response::Event::OutboundFailure {
                    request_id, error, ..
                },
            )) => self.replication_failure(request_id, error.to_string()),
            _ => {}
        }
        self.drain()
    }

    /// Takes in one gossip message relayed by `from`; returns what it was worth (whether
    /// gossip forwards it, and whether `from` is penalized for it).
    pub(super) fn gossip(
        &mut self,
        from: PeerId,
        message: gossipsub::Message,
    ) -> anyhow::Result<Verdict> {
        if !self.admitted(&from) {
            self.stats.dropped_messages += 1;
            return Ok(Verdict::Ignore);
        }
        if self.state_sync.is_joining() {
            // Nothing to judge it against before the state is here.
            return Ok(Verdict::Ignore);
        }
        if message.topic == self.topics.consensus.hash() {
            match ConsensusMessage::decode_untrusted(&message.data) {
                Ok(m) => {
                    let started = Instant::now();
                    let (verdict, outputs) = self.driver.on_gossip(self.now_ms(), m)?;
                    self.observe_import(started, &outputs);
                    self.execute(outputs)?;
                    Ok(verdict)
                }
                Err(e) => {
                    self.stats.dropped_messages += 1;
                    tracing::debug!(peer = %from, error = %e, "malformed consensus message dropped");
                    Ok(Verdict::Reject)
                }
            }
        } else if message.topic == self.topics.transactions.hash() {
            match network::decode_transactions(&message.data) {
                Ok(transactions) => {
                    let mut verdict = Verdict::Ignore;
                    for x in transactions {
                        match self.submit(x)? {
                            Ok(_) if verdict == Verdict::Ignore => verdict = Verdict::Accept,
                            Ok(_) => {}
                            // A relay checks signatures before it forwards: a bad one is its
                            // doing. Other refusals (known, stale, no room) can be honest.
                            Err(PoolError::Invalid(TransactionError::BadSignature)) => {
                                verdict = Verdict::Reject;
                            }
                            Err(e) => {
                                tracing::trace!(error = %e, "gossiped transaction not pooled")
                            }
                        }
                    }
                    Ok(verdict)
                }
                Err(e) => {
                    self.stats.dropped_messages += 1;
                    tracing::debug!(peer = %from, error = %e, "malformed transactions dropped");
                    Ok(Verdict::Reject)
                }
            }
        } else {
            Ok(Verdict::Ignore)
        }
    }

    /// Tells gossip what `message_id` was worth: only accepted messages are forwarded, and a
    /// rejected one lowers `from`'s score. Counted per topic and verdict.
    fn report_gossip(
        &mut self,
        message_id: &gossipsub::MessageId,
        from: &PeerId,
        topic: &gossipsub::TopicHash,
        verdict: Verdict,
    ) {
        let acceptance = match verdict {
            Verdict::Accept => gossipsub::MessageAcceptance::Accept,
            Verdict::Ignore => gossipsub::MessageAcceptance::Ignore,
            Verdict::Reject => gossipsub::MessageAcceptance::Reject,
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(message_id, from, acceptance);
        let topic = if *topic == self.topics.consensus.hash() {
            "consensus"
        } else {
            "transactions"
        };
        let verdict = match verdict {
            Verdict::Accept => "accept",
            Verdict::Ignore => "ignore",
            Verdict::Reject => "reject",
        };
        self.metrics
            .gossip_messages
            .get_or_create(&vec![
                ("topic", topic.to_owned()),
                ("verdict", verdict.to_owned()),
            ])
            .inc();
    }
}
