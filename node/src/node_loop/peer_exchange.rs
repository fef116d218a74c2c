//! Peer discovery's networking (`crate::discovery` keeps the books): what identify says a
//! member listens on, the peer exchange with members, and dialing the members not connected.

use std::collections::HashSet;
use std::time::Instant;

use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{identify, request_response, PeerId};

use crate::discovery::{PeersAnswer, PeersRequest};

use super::NodeLoop;

impl NodeLoop {
    /// A member told us its addresses: remembered, and we ask it whom it knows.
    pub(super) fn identified(&mut self, peer: PeerId, info: identify::Info) {
        if !self.admitted(&peer) {
            return;
        }
        self.discovery.learn_from_itself(peer, info.listen_addrs);
        self.swarm
            .behaviour_mut()
            .peers
            .send_request(&peer, PeersRequest);
    }

    pub(super) fn peers_message(
        &mut self,
        peer: PeerId,
        message: request_response::Message<PeersRequest, PeersAnswer>,
    ) {
        if !self.admitted(&peer) {
            return; // a request's channel drops: the asker sees a failure
        }
        match message {
            request_response::Message::Request { channel, .. } => {
                let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                let members: Vec<PeerId> =
                    connected.into_iter().filter(|p| self.admitted(p)).collect();
                let answer = self.discovery.answer(&members, &peer);
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .peers
                    .send_response(channel, answer);
            }
            request_response::Message::Response { response, .. } => {
                let me = *self.swarm.local_peer_id();
                for entry in &response.peers {
                    let Some((member, addresses)) = entry.parse() else {
                        continue;
                    };
                    // Only members of our finalized state are worth dialing.
                    if member != me && self.is_member(&member) {
                        self.discovery.learn(member, addresses);
                    }
                }
                self.dial_members();
            }
        }
    }

    /// Dials the members whose addresses we know and are not connected to (each with its
    /// backoff).
    pub(super) fn dial_members(&mut self) {
        let me = *self.swarm.local_peer_id();
        let connected: HashSet<PeerId> = self.swarm.connected_peers().copied().collect();
        for (peer, addresses) in self.discovery.due(Instant::now(), &me, &connected) {
            let opts = DialOpts::peer_id(peer)
                .addresses(addresses)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%peer, error = %e, "dialing a member failed");
            }
        }
    }
}
