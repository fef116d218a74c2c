//! The joining side of state sync: find a target, check it, download its state subtree by
//! subtree from every peer that serves it, check each piece, hand out the whole state.

use std::collections::BTreeMap;

use drchain_support::trie_proof::{summarize_entries, LeafCount, SubtreeId, SubtreeSummary};
use drchain_support::H256;

use super::target::{verify_target, SyncTarget, TargetError, TrustRoot};
use super::{StateSyncRequest, StateSyncResponse};

/// How long to collect offers after the first one before choosing the highest.
pub const OFFER_WAIT_MS: u64 = 1_500;
/// How long to wait for any offer above our head before following the chain block by block.
pub const GIVE_UP_MS: u64 = 15_000;
/// A target is worth taking only this far ahead of our head (one sync point): closer, the
/// node replays the blocks instead.
pub const MIN_GAIN: u64 = super::SYNC_POINT_INTERVAL;
/// Peers that must have answered before the client gives up on state sync without waiting
/// for [`GIVE_UP_MS`] (a peer that just restarted has no sync point yet).
const ANSWERS_TO_GIVE_UP: usize = 2;
/// Subtree requests in flight to one peer at once.
pub const IN_FLIGHT_PER_PEER: usize = 4;

/// What a peer did that proves it faulty: the host disconnects it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Misbehaviour {
    /// Its target does not check.
    #[error("bad sync target: {0}")]
    BadTarget(#[from] TargetError),
    /// A subtree's entries or split do not give the summary its parent vouched for.
    #[error("bad state chunk for subtree at depth {depth}: {reason}")]
    BadChunk { depth: u16, reason: String },
    /// An answer of the wrong kind.
    #[error("an answer that does not fit the request")]
    Unexpected,
}

/// The state of a checked target, ready to be installed.
#[derive(Debug, Clone)]
pub struct Finished {
    pub target: SyncTarget,
    /// Every key and value of the state after `target.block`.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the sync came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The state of a recent block, checked.
    Synced(Box<Finished>),
    /// No peer offered a sync point above our head: follow the chain block by block.
    FullSync,
}

/// A subtree's entries: keys and values.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Debug, Default)]
struct Peer {
    asked_target: bool,
    /// The height of its latest sync point, once it answered (0: none).
    offer: Option<u64>,
    in_flight: usize,
    /// It answered `Unavailable` for the current target.
    lacks_target: bool,
    /// It sent something provably wrong: never asked again.
    faulty: bool,
}

/// The joining side of state sync, generic over the peer id so tests need no network.
#[derive(Debug)]
pub struct StateSyncClient<P> {
    root: TrustRoot,
    own_head: u64,
    started_ms: Option<u64>,
    first_offer_ms: Option<u64>,
    peers: BTreeMap<P, Peer>,
    /// Checked offers by height.
    offers: BTreeMap<u64, SyncTarget>,
    target: Option<SyncTarget>,
    /// Subtrees still to fetch, with the summary each must give.
    pending: Vec<(SubtreeId, SubtreeSummary)>,
    in_flight: BTreeMap<SubtreeId, (P, SubtreeSummary)>,
    /// Checked subtrees of the current target.
    collected: BTreeMap<SubtreeId, Entries>,
    /// Checked subtrees of earlier targets, by hash: reused when a later target has them.
    earlier: BTreeMap<(SubtreeId, H256), Entries>,
    /// Subtrees checked since [`Self::take_checked`] was last called.
    fresh: Vec<SubtreeId>,
    outcome: Option<Outcome>,
}

impl<P: Ord + Clone> StateSyncClient<P> {
    /// A client for a node whose finalized head is `own_head`.
    pub fn new(root: TrustRoot, own_head: u64) -> Self {
        Self {
            root,
            own_head,
            started_ms: None,
            first_offer_ms: None,
            peers: BTreeMap::new(),
            offers: BTreeMap::new(),
            target: None,
            pending: vec![],
            in_flight: BTreeMap::new(),
            collected: BTreeMap::new(),
            earlier: BTreeMap::new(),
            fresh: vec![],
            outcome: None,
        }
    }

    /// Takes in subtrees an interrupted run checked (kept by the host through
    /// [`Self::take_checked`]): those the new target still has are not fetched again.
    pub fn resume(&mut self, checked: Vec<(SubtreeId, Entries)>) {
        for (id, entries) in checked {
            if let Ok(summary) = summarize_entries(&id, &entries) {
                self.earlier.insert((id, summary.hash), entries);
            }
        }
    }

    /// The non-empty subtrees checked since the last call, for the host to keep so that a
    /// restart can [`Self::resume`].
    pub fn take_checked(&mut self) -> Vec<(SubtreeId, Entries)> {
        std::mem::take(&mut self.fresh)
            .into_iter()
            .filter_map(|id| {
                self.collected
                    .get(&id)
                    .filter(|e| !e.is_empty())
                    .map(|e| (id, e.clone()))
            })
            .collect()
    }

    /// The target being downloaded, if chosen.
    pub fn target_height(&self) -> Option<u64> {
        self.target.as_ref().map(|t| t.block.header.number)
    }

    /// Subtrees fetched and checked for the current target.
    pub fn subtrees_done(&self) -> usize {
        self.collected.len()
    }

    /// A peer is connected.
    pub fn peer_connected(&mut self, peer: P) {
        self.peers.entry(peer).or_default();
    }

    /// A peer is gone: what it was asked is asked of others.
    pub fn peer_disconnected(&mut self, peer: &P) {
        self.peers.remove(peer);
        self.requeue_all_of(peer);
    }

    /// Everything `peer` was asked and has not answered is asked of others.
    fn requeue_all_of(&mut self, peer: &P) {
        let theirs: Vec<SubtreeId> = self
            .in_flight
            .iter()
            .filter(|(_, (p, _))| p == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in theirs {
            self.requeue(&id);
        }
    }

    /// What the sync came to, once it has.
    pub fn take_outcome(&mut self) -> Option<Outcome> {
        self.outcome.take()
    }

    /// The requests to send now.
    pub fn requests(&mut self, now_ms: u64) -> Vec<(P, StateSyncRequest)> {
        let started = *self.started_ms.get_or_insert(now_ms);
        let mut out = vec![];
        for (peer, state) in &mut self.peers {
            if !state.asked_target && !state.faulty {
                state.asked_target = true;
                out.push((peer.clone(), StateSyncRequest::Target));
            }
        }
        if self.outcome.is_some() {
            return vec![];
        }
        if self.target.is_none() {
            self.choose_target(now_ms, started);
        }
        let Some(height) = self.target_height() else {
            return out;
        };
        if self.pending.is_empty() && self.in_flight.is_empty() {
            self.finish();
            return out;
        }
        let mut servers: Vec<(&P, &mut Peer)> = self
            .peers
            .iter_mut()
            .filter(|(_, s)| !s.faulty && !s.lacks_target && s.offer.is_some_and(|o| o >= height))
            .collect();
        if servers.is_empty() && self.in_flight.is_empty() {
            // Every peer that had this target moved past it: choose again, keeping what we have.
            self.drop_target();
            return out;
        }
        while !self.pending.is_empty() {
            servers.sort_by_key(|(_, s)| s.in_flight);
            let Some((peer, state)) = servers.first_mut() else {
                break;
            };
            if state.in_flight >= IN_FLIGHT_PER_PEER {
                break;
            }
            let Some((id, expected)) = self.pending.pop() else {
                break;
            };
            state.in_flight += 1;
            self.in_flight.insert(id, ((*peer).clone(), expected));
            out.push(((*peer).clone(), StateSyncRequest::Subtree { height, id }));
        }
        out
    }

    fn choose_target(&mut self, now_ms: u64, started: u64) {
        let all_answered = self
            .peers
            .values()
            .all(|s| s.faulty || s.offer.is_some() || !s.asked_target);
        let best = self.offers.keys().next_back().copied();
        match best {
            Some(height) if height > self.own_head + MIN_GAIN => {
                let waited = self
                    .first_offer_ms
                    .is_some_and(|t| now_ms.saturating_sub(t) >= OFFER_WAIT_MS);
                if waited || all_answered {
                    if let Some(target) = self.offers.remove(&height) {
                        self.start_target(target);
                    }
                }
            }
            _ => {
                let answered = self.peers.values().filter(|s| s.offer.is_some()).count();
                if (all_answered && answered >= ANSWERS_TO_GIVE_UP)
                    || now_ms.saturating_sub(started) >= GIVE_UP_MS
                {
                    self.outcome = Some(Outcome::FullSync);
                }
            }
        }
    }

    fn start_target(&mut self, target: SyncTarget) {
        tracing::info!(
            target_height = target.block.header.number,
            "state sync: downloading the state of a checked block"
        );
        let root = SubtreeSummary {
            hash: target.block.header.state_root,
            // The root's class is not known in advance; `check` does not ask it of the root.
            leaves: LeafCount::Many,
        };
        self.pending = vec![(SubtreeId::ROOT, root)];
        self.target = Some(target);
        for state in self.peers.values_mut() {
            state.lacks_target = false;
        }
    }

    fn drop_target(&mut self) {
        tracing::info!("state sync: no peer serves the target any more; choosing another");
        for (id, entries) in std::mem::take(&mut self.collected) {
            if let Ok(s) = summarize_entries(&id, &entries) {
                self.earlier.insert((id, s.hash), entries);
            }
        }
        self.target = None;
        self.started_ms = None;
        self.pending.clear();
        self.offers.clear();
        self.first_offer_ms = None;
        for state in self.peers.values_mut() {
            state.asked_target = false;
            state.offer = None;
        }
    }

    fn finish(&mut self) {
        let Some(target) = self.target.take() else {
            return;
        };
        let entries = std::mem::take(&mut self.collected)
            .into_values()
            .flatten()
            .collect();
        self.earlier.clear();
        self.outcome = Some(Outcome::Synced(Box::new(Finished { target, entries })));
    }

    fn requeue(&mut self, id: &SubtreeId) {
        if let Some((peer, expected)) = self.in_flight.remove(id) {
            if let Some(state) = self.peers.get_mut(&peer) {
                state.in_flight = state.in_flight.saturating_sub(1);
            }
            self.pending.push((*id, expected));
        }
    }

    /// A request to `peer` failed (timeout, connection lost): it is asked of another.
    pub fn request_failed(&mut self, peer: &P, request: &StateSyncRequest) {
        match request {
            StateSyncRequest::Target => {
                if let Some(state) = self.peers.get_mut(peer) {
                    state.offer = Some(0);
                }
            }
            StateSyncRequest::Subtree { id, .. } => {
                if self.in_flight.get(id).is_some_and(|(p, _)| p == peer) {
                    self.requeue(id);
                }
                if let Some(state) = self.peers.get_mut(peer) {
                    state.lacks_target = true;
                }
            }
        }
    }

    /// `peer` answered `request`. An error means the peer is faulty: the host disconnects it.
    pub fn response(
        &mut self,
        peer: &P,
        now_ms: u64,
        request: &StateSyncRequest,
        response: StateSyncResponse,
    ) -> Result<(), Misbehaviour> {
        let result = match request {
            StateSyncRequest::Target => self.target_answer(peer, now_ms, response),
            StateSyncRequest::Subtree { height, id } => {
                self.subtree_answer(peer, *height, id, response)
            }
        };
        if result.is_err() {
            if let Some(state) = self.peers.get_mut(peer) {
                state.faulty = true;
            }
            self.requeue_all_of(peer);
        }
        result
    }

    fn target_answer(
        &mut self,
        peer: &P,
        now_ms: u64,
        response: StateSyncResponse,
    ) -> Result<(), Misbehaviour> {
        let StateSyncResponse::Target(offer) = response else {
            return Err(Misbehaviour::Unexpected);
        };
        let height = match offer {
            None => 0,
            Some(target) => {
                verify_target(&self.root, &target)?;
                let height = target.block.header.number;
                if height > self.own_head + MIN_GAIN {
                    self.first_offer_ms.get_or_insert(now_ms);
                    self.offers.entry(height).or_insert(*target);
                }
                height
            }
        };
        if let Some(state) = self.peers.get_mut(peer) {
            state.offer = Some(height);
        }
        Ok(())
    }

    fn subtree_answer(
        &mut self,
        peer: &P,
        height: u64,
        id: &SubtreeId,
        response: StateSyncResponse,
    ) -> Result<(), Misbehaviour> {
        if self.target_height() != Some(height)
            || self.in_flight.get(id).is_none_or(|(p, _)| p != peer)
        {
            // Late: the subtree was asked again elsewhere, or the target changed.
            return Ok(());
        }
        let Some((_, expected)) = self.in_flight.remove(id) else {
            return Ok(());
        };
        if let Some(state) = self.peers.get_mut(peer) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        let is_root = *id == SubtreeId::ROOT;
        let bad = |reason: String| Misbehaviour::BadChunk {
            depth: id.depth,
            reason,
        };
        match response {
            StateSyncResponse::Entries(entries) => {
                let found = summarize_entries(id, &entries);
                match found {
                    Ok(found) if matches(&expected, &found, is_root) => {
                        self.collected.insert(*id, entries);
                        self.fresh.push(*id);
                        Ok(())
                    }
                    Ok(found) => {
                        self.pending.push((*id, expected));
                        Err(bad(format!(
                            "the entries hash to {}, not {}",
                            found.hash, expected.hash
                        )))
                    }
                    Err(e) => {
                        self.pending.push((*id, expected));
                        Err(bad(e.to_string()))
                    }
                }
            }
            StateSyncResponse::Split { left, right } => {
                let children = id.children();
                let combined = SubtreeSummary::combine(&left, &right);
                match children {
                    Some((l, r))
                        if left.is_well_formed()
                            && right.is_well_formed()
                            && matches(&expected, &combined, is_root) =>
                    {
                        for (child, summary) in [(l, left), (r, right)] {
                            self.expect(child, summary);
                        }
                        Ok(())
                    }
                    _ => {
                        self.pending.push((*id, expected));
                        Err(bad("its halves do not combine into it".into()))
                    }
                }
            }
            StateSyncResponse::Unavailable => {
                self.pending.push((*id, expected));
                if let Some(state) = self.peers.get_mut(peer) {
                    state.lacks_target = true;
                }
                Ok(())
            }
            StateSyncResponse::Target(_) => {
                self.pending.push((*id, expected));
                Err(Misbehaviour::Unexpected)
            }
        }
    }

    /// A subtree vouched for: nothing to fetch when empty, or when an earlier target had it.
    fn expect(&mut self, id: SubtreeId, summary: SubtreeSummary) {
        if summary.leaves == LeafCount::Empty {
            // Well formed (checked with the split): nothing to fetch.
            self.collected.insert(id, vec![]);
            return;
        }
        if let Some(entries) = self.earlier.remove(&(id, summary.hash)) {
            self.collected.insert(id, entries);
            return;
        }
        self.pending.push((id, summary));
    }
}

/// Whether `found` is the subtree `expected` vouches for (the root's class is not known).
fn matches(expected: &SubtreeSummary, found: &SubtreeSummary, is_root: bool) -> bool {
    found.hash == expected.hash && (is_root || found.leaves == expected.leaves)
}
