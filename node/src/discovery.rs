//! Peer discovery among members: a node needs one reachable bootnode. Each member's listen
//! (and `--public-addr`) addresses are learned from identify when connected to it, and members
//! exchange what they learned (`/drchain/peers/1`): a node asks every member it connects to
//! for the addresses of the members that one is connected to, and dials those it is not
//! connected to, backing off after failures. Only members of the finalized state are dialed
//! or told about, and every list is bounded, so a member cannot make the network dial
//! strangers without end or grow this table past the membership.
//!
//! This module is the bookkeeping; the node loop does the networking.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use parity_scale_codec::{Decode, Encode};

/// Addresses kept per member (identify may report one per interface).
pub const MAX_ADDRESSES_PER_PEER: usize = 8;
/// Members in one answer.
pub const MAX_PEERS_PER_ANSWER: usize = 64;
/// Bytes of one encoded address at most (a multiaddr with DNS names stays far below).
pub const MAX_ADDRESS_BYTES: usize = 256;
/// The largest answer on the wire: every entry full.
pub const MAX_ANSWER_BYTES: usize =
    MAX_PEERS_PER_ANSWER * (64 + MAX_ADDRESSES_PER_PEER * (MAX_ADDRESS_BYTES + 4)) + 16;
/// The first wait before dialing a member again after a failed dial; it doubles per failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// The longest wait between dials of one member.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A request for the members the answering node is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct PeersRequest;

/// Members and their addresses, as sent: bytes, checked on receipt ([`PeerEntry::parse`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct PeersAnswer {
    pub peers: Vec<PeerEntry>,
}

/// One member: its peer id and addresses, encoded.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct PeerEntry {
    pub peer: Vec<u8>,
    pub addresses: Vec<Vec<u8>>,
}

impl PeerEntry {
    /// The peer id and the addresses that parse (bounded); `None` if the peer id does not.
    pub fn parse(&self) -> Option<(PeerId, Vec<Multiaddr>)> {
        let peer = PeerId::from_bytes(&self.peer).ok()?;
        let addresses = self
            .addresses
            .iter()
            .take(MAX_ADDRESSES_PER_PEER)
            .filter(|a| a.len() <= MAX_ADDRESS_BYTES)
            .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
            .collect();
        Some((peer, addresses))
    }
}

/// A member's dial state.
#[derive(Debug, Clone)]
struct Known {
    /// What the member itself reported (identify): kept apart so that another member's
    /// answers cannot push them out.
    own: Vec<Multiaddr>,
    /// What other members said, newest first.
    heard: Vec<Multiaddr>,
    /// Not dialed again before this.
    next_dial: Instant,
    /// The wait after the next failure.
    backoff: Duration,
}

/// What this node knows of the members' addresses.
#[derive(Debug, Default)]
pub struct Discovery {
    known: HashMap<PeerId, Known>,
}

/// `address` without a trailing `/p2p/…`, if it names `peer` or no one; `None` if it names
/// another peer.
fn for_peer(address: Multiaddr, peer: &PeerId) -> Option<Multiaddr> {
    let mut address = address;
    match address.iter().last() {
        Some(Protocol::P2p(id)) if id == *peer => {
            address.pop();
            Some(address)
        }
        Some(Protocol::P2p(_)) => None,
        _ => Some(address),
    }
}

impl Known {
    /// The addresses to dial or tell: its own first, then what others said, at most
    /// [`MAX_ADDRESSES_PER_PEER`].
    fn addresses(&self) -> Vec<Multiaddr> {
        let mut out = self.own.clone();
        for a in &self.heard {
            if out.len() >= MAX_ADDRESSES_PER_PEER {
                break;
            }
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }
}

impl Discovery {
    /// Learns `addresses` of member `peer` from itself (identify); they replace what it said
    /// before.
    pub fn learn_from_itself(
        &mut self,
        peer: PeerId,
        addresses: impl IntoIterator<Item = Multiaddr>,
    ) {
        let known = self.entry(peer);
        known.own = addresses
            .into_iter()
            .filter_map(|a| for_peer(a, &peer))
            .filter(|a| a.iter().next().is_some())
            .take(MAX_ADDRESSES_PER_PEER)
            .collect();
    }

    /// Learns `addresses` of member `peer` from another member, keeping the newest
    /// [`MAX_ADDRESSES_PER_PEER`].
    pub fn learn(&mut self, peer: PeerId, addresses: impl IntoIterator<Item = Multiaddr>) {
        let known = self.entry(peer);
        for address in addresses.into_iter().filter_map(|a| for_peer(a, &peer)) {
            if address.iter().next().is_none() || known.heard.contains(&address) {
                continue;
            }
            known.heard.insert(0, address);
            known.heard.truncate(MAX_ADDRESSES_PER_PEER);
        }
    }

    fn entry(&mut self, peer: PeerId) -> &mut Known {
        self.known.entry(peer).or_insert_with(|| Known {
            own: vec![],
            heard: vec![],
            next_dial: Instant::now(),
            backoff: FIRST_BACKOFF,
        })
    }

    /// `peer` is connected: the next failure starts the backoff afresh.
    pub fn connected(&mut self, peer: &PeerId) {
        if let Some(k) = self.known.get_mut(peer) {
            k.backoff = FIRST_BACKOFF;
        }
    }

    /// Forgets whoever `is_member` no longer accepts (after a block).
    pub fn retain_members(&mut self, is_member: impl Fn(&PeerId) -> bool) {
        self.known.retain(|peer, _| is_member(peer));
    }

    /// What to tell `asker`: the members in `connected` (but the asker) with their addresses.
    pub fn answer(&self, connected: &[PeerId], asker: &PeerId) -> PeersAnswer {
        let peers = connected
            .iter()
            .filter(|p| *p != asker)
            .filter_map(|p| {
                let addresses = self.known.get(p)?.addresses();
                (!addresses.is_empty()).then(|| PeerEntry {
                    peer: p.to_bytes(),
                    addresses: addresses.iter().map(|a| a.to_vec()).collect(),
                })
            })
            .take(MAX_PEERS_PER_ANSWER)
            .collect();
        PeersAnswer { peers }
    }

    /// The members to dial now: known addresses, not `me`, not in `connected`, and not dialed
    /// within their backoff (which each dial returned here doubles).
    pub fn due(
        &mut self,
        now: Instant,
        me: &PeerId,
        connected: &HashSet<PeerId>,
    ) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut out = vec![];
        for (peer, known) in &mut self.known {
            let addresses = known.addresses();
            if peer == me
                || connected.contains(peer)
                || addresses.is_empty()
                || known.next_dial > now
            {
                continue;
            }
            known.next_dial = now + known.backoff;
            known.backoff = (known.backoff * 2).min(MAX_BACKOFF);
            out.push((*peer, addresses));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/10.0.0.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn learned_members_are_dialed_with_backoff_and_told_to_others() {
        let (me, bob, carol) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut d = Discovery::default();
        d.learn(bob, [addr(1), addr(1), addr(2)]);
        // An address naming another peer is not bob's.
        d.learn(bob, [addr(3).with(Protocol::P2p(carol))]);
        d.learn(me, [addr(9)]);
        let now = Instant::now();
        let due = d.due(now, &me, &HashSet::new());
        assert_eq!(due, vec![(bob, vec![addr(2), addr(1)])]);
        // Dialed: not again before its backoff, then with a doubled one.
        assert!(d
            .due(now + Duration::from_secs(1), &me, &HashSet::new())
            .is_empty());
        assert_eq!(d.due(now + FIRST_BACKOFF, &me, &HashSet::new()).len(), 1);
        assert!(d
            .due(now + FIRST_BACKOFF * 2, &me, &HashSet::new())
            .is_empty());
        assert_eq!(
            d.due(now + FIRST_BACKOFF * 3, &me, &HashSet::new()).len(),
            1
        );
        // Connected peers are not dialed; they are what an answer lists (but the asker).
        let connected: HashSet<PeerId> = [bob].into();
        assert!(d.due(now + MAX_BACKOFF * 2, &me, &connected).is_empty());
        let answer = d.answer(&[bob, carol], &carol);
        assert_eq!(answer.peers.len(), 1);
        assert_eq!(answer.peers[0].parse(), Some((bob, vec![addr(2), addr(1)])));
        assert!(d.answer(&[bob], &bob).peers.is_empty());
    }

    #[test]
    fn what_a_member_sends_is_bounded_and_checked() {
        let bob = PeerId::random();
        let entry = PeerEntry {
            peer: bob.to_bytes(),
            addresses: (0..100u16)
                .map(|p| addr(p).to_vec())
                .chain([vec![0xff; 10], vec![4; MAX_ADDRESS_BYTES + 1]])
                .collect(),
        };
        let (peer, addresses) = entry.parse().unwrap();
        assert_eq!(peer, bob);
        assert_eq!(addresses.len(), MAX_ADDRESSES_PER_PEER);
        let garbage = PeerEntry {
            peer: vec![1, 2, 3],
            addresses: vec![],
        };
        assert_eq!(garbage.parse(), None);
        let mut d = Discovery::default();
        d.learn(bob, addresses.iter().cloned().chain((200..300).map(addr)));
        assert_eq!(d.known[&bob].addresses().len(), MAX_ADDRESSES_PER_PEER);
        // What bob says of himself stays first whatever others say.
        d.learn_from_itself(bob, [addr(7)]);
        d.learn(bob, (300..400).map(addr));
        assert_eq!(d.known[&bob].addresses()[0], addr(7));
        // The largest answer fits the wire bound.
        let full = PeersAnswer {
            peers: (0..MAX_PEERS_PER_ANSWER)
                .map(|_| PeerEntry {
                    peer: PeerId::random().to_bytes(),
                    addresses: vec![vec![7; MAX_ADDRESS_BYTES]; MAX_ADDRESSES_PER_PEER],
                })
                .collect(),
        };
        assert!(full.encode().len() <= MAX_ANSWER_BYTES);
    }

    #[test]
    fn members_that_left_are_forgotten() {
        let (bob, carol) = (PeerId::random(), PeerId::random());
        let mut d = Discovery::default();
        d.learn(bob, [addr(1)]);
        d.learn(carol, [addr(2)]);
        d.retain_members(|p| *p == bob);
        assert_eq!(d.known.len(), 1);
        assert!(d.known.contains_key(&bob));
    }
}
