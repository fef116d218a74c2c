//! Replication messages between the swarm and the replication task (`crate::replication`):
//! requests from admitted members go to the task with a token for their response channel;
//! the task's requests go out and their answers come back by token. Nothing here touches the
//! disk.

use std::collections::HashMap;

use drchain_support::{ServiceName, H256};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::PeerId;
use tokio::sync::{broadcast, mpsc, watch};

use crate::network;
use crate::replication::{NetIn, NetOut};
use drchain_replication::transfer::{TransferRequest, TransferResponse};
use drchain_rpc::Announcement;

use super::NodeLoop;

/// Inbound requests waiting for the task's answer at most; more are dropped (the asker's
/// request fails and it asks another member).
const MAX_PENDING_INBOUND: usize = 256;
/// Of those, from one member at most: one that asks without end cannot crowd out the others.
const MAX_PENDING_PER_PEER: usize = 32;

/// Inbound requests waiting for the task's answer, each with its response channel, counted
/// per member and bounded ([`MAX_PENDING_INBOUND`], [`MAX_PENDING_PER_PEER`]).
#[derive(Debug)]
pub(crate) struct InboundSlots<C> {
    waiting: HashMap<u64, (PeerId, C)>,
    per_peer: HashMap<PeerId, usize>,
    next_token: u64,
}

impl<C> Default for InboundSlots<C> {
    fn default() -> Self {
        Self {
            waiting: HashMap::new(),
            per_peer: HashMap::new(),
            next_token: 0,
        }
    }
}

impl<C> InboundSlots<C> {
    /// Keeps `channel` for `peer`'s request and returns its token; `None` when the member or
    /// everyone is at the bound (the channel is dropped: the asker sees a failure).
    pub(crate) fn admit(&mut self, peer: PeerId, channel: C) -> Option<u64> {
        let from_peer = self.per_peer.get(&peer).copied().unwrap_or(0);
        if self.waiting.len() >= MAX_PENDING_INBOUND || from_peer >= MAX_PENDING_PER_PEER {
            return None;
        }
        let token = self.next_token;
        self.next_token += 1;
        self.waiting.insert(token, (peer, channel));
        self.per_peer.insert(peer, from_peer + 1);
        Some(token)
    }

    /// The channel to answer `token` on, freeing its slot.
    pub(crate) fn release(&mut self, token: u64) -> Option<C> {
        let (peer, channel) = self.waiting.remove(&token)?;
        if let Some(n) = self.per_peer.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(&peer);
            }
        }
        Some(channel)
    }
}

/// The node loop's end of the link.
pub(crate) struct ReplicationLink {
    pub(crate) to_task: mpsc::UnboundedSender<NetIn>,
    /// Admitted, connected members: whom the task may ask.
    pub(crate) peers: watch::Sender<Vec<PeerId>>,
    /// Checkpoints members announced, for the agent.
    announcements: broadcast::Sender<Announcement>,
    inbound: InboundSlots<ResponseChannel<TransferResponse>>,
    outbound: HashMap<OutboundRequestId, u64>,
}

impl ReplicationLink {
    pub(crate) fn new(
        to_task: mpsc::UnboundedSender<NetIn>,
        peers: watch::Sender<Vec<PeerId>>,
        announcements: broadcast::Sender<Announcement>,
    ) -> Self {
        Self {
            to_task,
            peers,
            announcements,
            inbound: InboundSlots::default(),
            outbound: HashMap::new(),
        }
    }
}

impl NodeLoop {
    pub(super) fn replication_message(
        &mut self,
        peer: PeerId,
        message: request_response::Message<TransferRequest, TransferResponse>,
    ) {
        match message {
            request_response::Message::Request {
                request, channel, ..
            } => {
                if !self.admitted(&peer) {
                    return; // the channel drops: the asker sees a failure
                }
                if let TransferRequest::Announce {
                    service,
                    sequence,
                    root,
                } = request
                {
                    // Passed on as is: the agent listens only to the service's active node.
                    if let Some(from) = network::account_of(&peer) {
                        let _ = self.replication.announcements.send(Announcement {
                            from,
                            service,
                            sequence,
                            root,
                        });
                    }
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .replication
                        .send_response(channel, TransferResponse::Announced);
                    return;
                }
                let Some(token) = self.replication.inbound.admit(peer, channel) else {
                    return; // at the bound: the channel drops, the asker sees a failure
                };
                let _ = self
                    .replication
                    .to_task
                    .send(NetIn::Inbound { token, request });
            }
            request_response::Message::Response {
                request_id,
                response,
            } => {
                if let Some(token) = self.replication.outbound.remove(&request_id) {
                    let _ = self.replication.to_task.send(NetIn::Response {
                        token,
                        response: Ok(response),
                    });
                }
            }
        }
    }

    /// Tells every admitted, connected member about a checkpoint this node took; their
    /// answers are not awaited (a member that misses it fetches when a block records it).
    pub(super) fn announce(&mut self, service: ServiceName, sequence: u64, root: H256) {
        let peers = self.replication.peers.borrow().clone();
        for peer in peers {
            let request = TransferRequest::Announce {
                service: service.clone(),
                sequence,
                root,
            };
            self.swarm
                .behaviour_mut()
                .replication
                .send_request(&peer, request);
        }
    }

    pub(super) fn replication_failure(&mut self, request_id: OutboundRequestId, error: String) {
        if let Some(token) = self.replication.outbound.remove(&request_id) {
            let _ = self.replication.to_task.send(NetIn::Response {
                token,
                response: Err(error),
            });
        }
    }

    pub(super) fn replication_out(&mut self, out: NetOut) {
        match out {
            NetOut::Respond { token, response } => {
                if let Some(channel) = self.replication.inbound.release(token) {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .replication
                        .send_response(channel, response);
                }
            }
            NetOut::Request {
                token,
                peer,
                request,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .replication
                    .send_request(&peer, request);
                self.replication.outbound.insert(id, token);
            }
            NetOut::Disconnect { peer, reason } => {
                tracing::warn!(%peer, %reason, "disconnecting a peer that sent bad replication data");
                self.stats.dropped_messages += 1;
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }

    /// Tells the replication task which members it may ask now.
    pub(super) fn publish_replication_peers(&mut self) {
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        let admitted: Vec<PeerId> = connected.into_iter().filter(|p| self.admitted(p)).collect();
        self.replication.peers.send_if_modified(|peers| {
            let changed = *peers != admitted;
            *peers = admitted;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_member_asking_without_end_leaves_room_for_the_others() {
        let mut slots = InboundSlots::default();
        let (greedy, other) = (PeerId::random(), PeerId::random());
        let held: Vec<u64> = (0..1000).filter_map(|_| slots.admit(greedy, ())).collect();
        assert_eq!(held.len(), MAX_PENDING_PER_PEER);
        assert!(
            slots.admit(other, ()).is_some(),
            "another member is refused"
        );
        // An answered request frees its member's slot.
        assert_eq!(slots.release(held[0]), Some(()));
        assert_eq!(slots.release(held[0]), None);
        assert!(slots.admit(greedy, ()).is_some());
        assert!(slots.admit(greedy, ()).is_none());
    }

    #[test]
    fn all_members_together_stay_within_the_total_bound() {
        let mut slots = InboundSlots::default();
        let admitted = (0..MAX_PENDING_INBOUND)
            .filter_map(|_| {
                let peer = PeerId::random();
                slots.admit(peer, ())
            })
            .count();
        assert_eq!(admitted, MAX_PENDING_INBOUND);
        assert!(slots.admit(PeerId::random(), ()).is_none());
    }
}
