//! Gossip subscriptions kept whole. libp2p-gossipsub tells a peer our topics once, when the
//! first connection to it comes up, through a send queue that all connections to that peer
//! share; when that announcement is lost (seen with two connections racing between two
//! validators), the peer never learns we are on the topic and nothing repeats it. Consensus
//! between the two then only runs through third nodes, and halts when those stop. Every
//! drchain node is on all the chain's topics, so a connected member that gossip does not know
//! on one of them after [`SUBSCRIPTION_GRACE`] missed an announcement: it is disconnected, and
//! the next connection (the dialing side redials within seconds) announces both ways again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::gossipsub::TopicHash;
use libp2p::PeerId;

use super::NodeLoop;

/// How long after its first connection a peer's topics must be known: announcements arrive
/// within milliseconds on a working connection.
pub(super) const SUBSCRIPTION_GRACE: Duration = Duration::from_secs(5);

/// The peers connected since at least `grace` before `now` that `known` (each peer's topics,
/// as gossip has them) does not have on every one of `topics`, in a stable order.
pub(super) fn peers_missing_topics(
    connected_since: &HashMap<PeerId, Instant>,
    known: &HashMap<PeerId, Vec<TopicHash>>,
    topics: &[TopicHash],
    now: Instant,
    grace: Duration,
) -> Vec<PeerId> {
    let mut missing: Vec<PeerId> = connected_since
        .iter()
        .filter(|(_, since)| now.saturating_duration_since(**since) >= grace)
        .filter(|(peer, _)| {
            let theirs = known.get(*peer).map(Vec::as_slice).unwrap_or_default();
            topics.iter().any(|t| !theirs.contains(t))
        })
        .map(|(peer, _)| *peer)
        .collect();
    missing.sort();
    missing
}

impl NodeLoop {
    /// Disconnects the members whose subscription announcements were lost (see the module).
    pub(super) fn reconnect_peers_missing_topics(&mut self) {
        let topics = [
            self.topics.consensus.hash(),
            self.topics.transactions.hash(),
        ];
        let known: HashMap<PeerId, Vec<TopicHash>> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .map(|(peer, topics)| (*peer, topics.into_iter().cloned().collect()))
            .collect();
        let missing = peers_missing_topics(
            &self.connected_since,
            &known,
            &topics,
            Instant::now(),
            SUBSCRIPTION_GRACE,
        );
        for peer in missing {
            let theirs: Vec<String> = known
                .get(&peer)
                .map(|t| t.iter().map(ToString::to_string).collect())
                .unwrap_or_default();
            tracing::warn!(
                %peer,
                known_topics = ?theirs,
                "reconnecting a peer not known on all gossip topics (a lost subscription announcement)"
            );
            self.metrics.gossip_reconnects.inc();
            // Forget when it came: a peer that stays connected (the disconnect is refused or
            // races a new connection) gets the full grace again.
            self.connected_since.insert(peer, Instant::now());
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicHash {
        TopicHash::from_raw(name)
    }

    #[test]
    fn only_peers_past_the_grace_and_missing_a_topic_are_reconnected() {
        let start = Instant::now();
        let grace = Duration::from_secs(5);
        let topics = [topic("consensus"), topic("tx")];
        let [whole, half, none, unknown, young] = [(); 5].map(|()| PeerId::random());
        let connected_since: HashMap<PeerId, Instant> = [
            (whole, start),
            (half, start),
            (none, start),
            (unknown, start),
            (young, start + Duration::from_secs(3)),
        ]
        .into();
        let known: HashMap<PeerId, Vec<TopicHash>> = [
            (whole, topics.to_vec()),
            (half, vec![topic("tx"), topic("other")]),
            (none, vec![]),
            (young, vec![]),
        ]
        .into();
        let at = |secs| start + Duration::from_secs(secs);
        assert!(peers_missing_topics(&connected_since, &known, &topics, at(4), grace).is_empty());
        let mut expected = vec![half, none, unknown];
        expected.sort();
        assert_eq!(
            peers_missing_topics(&connected_since, &known, &topics, at(5), grace),
            expected
        );
        expected.push(young);
        expected.sort();
        assert_eq!(
            peers_missing_topics(&connected_since, &known, &topics, at(8), grace),
            expected
        );
    }
}
