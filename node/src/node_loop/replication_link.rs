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

/// The node loop's end of the link.
pub(crate) struct ReplicationLink {
    pub(crate) to_task: mpsc::UnboundedSender<NetIn>,
    /// Admitted, connected members: whom the task may ask.
    pub(crate) peers: watch::Sender<Vec<PeerId>>,
    /// Checkpoints members announced, for the agent.
    announcements: broadcast::Sender<Announcement>,
    inbound: HashMap<u64, ResponseChannel<TransferResponse>>,
    outbound: HashMap<OutboundRequestId, u64>,
    next_token: u64,
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
            inbound: HashMap::new(),
            outbound: HashMap::new(),
            next_token: 0,
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
                if !self.admitted(&peer) || self.replication.inbound.len() >= MAX_PENDING_INBOUND {
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
                let token = self.replication.next_token;
                self.replication.next_token += 1;
                self.replication.inbound.insert(token, channel);
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
                if let Some(channel) = self.replication.inbound.remove(&token) {
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
