//! The transfer protocol between members, without the network: its messages (SCALE, bounded)
//! and the state of one fetch — which objects a node still needs for a checkpoint, which peer
//! each request goes to, and what happens when a peer answers with bad bytes (the objects go
//! back to the queue for another peer, the peer is reported) or not at all.
//!
//! The node carries the messages over libp2p request-response between admitted members; the
//! active announces each new checkpoint so standbys fetch it at once instead of at the next
//! block.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use drchain_support::{ServiceName, H256};
use parity_scale_codec::{Decode, DecodeLimit, Encode};

use crate::chunk::MAX_CHUNK_BYTES;
use crate::error::ReplicationError;
use crate::manifest::{missing, Manifest, MAX_MANIFEST_BYTES};
use crate::store::ChunkStore;

/// Objects asked for in one request at most.
pub const MAX_OBJECTS_PER_REQUEST: usize = 64;
/// Largest request, bytes.
pub const MAX_REQUEST_BYTES: usize = 64 + MAX_OBJECTS_PER_REQUEST * 33;
/// Largest response, bytes: a full manifest, or a request's objects up to this budget.
pub const MAX_RESPONSE_BYTES: usize = MAX_MANIFEST_BYTES + 4096;
/// Requests in flight to one peer at most.
pub const MAX_IN_FLIGHT_PER_PEER: usize = 4;

/// What one member asks another.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum TransferRequest {
    /// The manifest with this root.
    #[codec(index = 0)]
    Manifest {
        /// Its root.
        root: H256,
    },
    /// These objects (chunks or dictionaries), encoded as stored.
    #[codec(index = 1)]
    Objects {
        /// At most [`MAX_OBJECTS_PER_REQUEST`].
        ids: Vec<H256>,
    },
    /// The active node of `service` took checkpoint `sequence`: fetch it now, before a block
    /// records it. Only the chain's active node is listened to.
    #[codec(index = 2)]
    Announce {
        /// The service.
        service: ServiceName,
        /// The sequence it is submitting the checkpoint under.
        sequence: u64,
        /// Its manifest root.
        root: H256,
    },
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum TransferResponse {
    /// The manifest's canonical bytes, if the peer has it.
    #[codec(index = 0)]
    Manifest {
        /// `None`: not here.
        bytes: Option<Vec<u8>>,
    },
    /// Each object asked for, in order, if the peer has it (and it fit the byte budget).
    #[codec(index = 1)]
    Objects {
        /// `(id, encoded bytes)`.
        objects: Vec<(H256, Option<Vec<u8>>)>,
    },
    /// An announcement was received.
    #[codec(index = 2)]
    Announced,
}

fn decode_bounded<T: Decode>(bytes: &[u8], max: usize, what: &str) -> Result<T, ReplicationError> {
    let bad = |reason: String| ReplicationError::BadMessage {
        reason: format!("{what}: {reason}"),
    };
    if bytes.len() > max {
        return Err(bad(format!("{} bytes, more than {max}", bytes.len())));
    }
    let mut input = bytes;
    let value = T::decode_with_depth_limit(8, &mut input).map_err(|e| bad(e.to_string()))?;
    if !input.is_empty() {
        return Err(bad(format!("{} trailing bytes", input.len())));
    }
    Ok(value)
}

impl TransferRequest {
    /// Decodes a request from a peer, refusing oversized ones.
    pub fn decode_bounded(bytes: &[u8]) -> Result<Self, ReplicationError> {
        let request: Self = decode_bounded(bytes, MAX_REQUEST_BYTES, "transfer request")?;
        match &request {
            Self::Objects { ids } if ids.len() > MAX_OBJECTS_PER_REQUEST => {
                Err(ReplicationError::BadMessage {
                    reason: format!("transfer request for {} objects", ids.len()),
                })
            }
            _ => Ok(request),
        }
    }
}

impl TransferResponse {
    /// Decodes a response from a peer, refusing oversized ones.
    pub fn decode_bounded(bytes: &[u8]) -> Result<Self, ReplicationError> {
        decode_bounded(bytes, MAX_RESPONSE_BYTES, "transfer response")
    }
}

/// Answers `request` from `store`; objects are included up to the response budget, the rest
/// are answered `None` (the asker asks again).
pub fn serve(store: &ChunkStore, request: &TransferRequest) -> TransferResponse {
    match request {
        TransferRequest::Manifest { root } => TransferResponse::Manifest {
            bytes: store.manifest_bytes(root).ok(),
        },
        TransferRequest::Objects { ids } => {
            let mut budget = MAX_RESPONSE_BYTES - 1024;
            let objects = ids
                .iter()
                .take(MAX_OBJECTS_PER_REQUEST)
                .map(|id| {
                    let bytes = store
                        .get_encoded(id)
                        .ok()
                        .filter(|b| b.len() + 48 <= budget);
                    if let Some(b) = &bytes {
                        budget -= b.len() + 48;
                    }
                    (*id, bytes)
                })
                .collect();
            TransferResponse::Objects { objects }
        }
        TransferRequest::Announce { .. } => TransferResponse::Announced,
    }
}

/// What a fetch learned about a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerVerdict<P> {
    /// It sent bytes that are not what it was asked for: disconnect it, fetch elsewhere.
    Bad {
        /// The peer.
        peer: P,
        /// What it did.
        reason: String,
    },
}

/// Fetching one checkpoint (manifest root) into a store from peers.
#[derive(Debug)]
pub struct Fetch<P> {
    root: H256,
    manifest: Option<Manifest>,
    /// Objects still needed, not in flight; the dictionary first.
    queue: VecDeque<H256>,
    /// Requests in flight: peer → objects asked (an empty list is the manifest request).
    in_flight: BTreeMap<P, Vec<Vec<H256>>>,
    /// Peers that lacked what they were asked or failed to answer: skipped until
    /// [`Fetch::retry_skipped`].
    avoid: BTreeSet<P>,
    /// Peers that sent bad bytes: never asked again by this fetch.
    bad: BTreeSet<P>,
    /// Whether the manifest request is in flight.
    manifest_asked: bool,
}

impl<P: Ord + Clone + std::fmt::Debug> Fetch<P> {
    /// A fetch of checkpoint `root` into `store` (using the manifest if already there).
    pub fn new(root: H256, store: &ChunkStore) -> Self {
        let mut fetch = Self {
            root,
            manifest: None,
            queue: VecDeque::new(),
            in_flight: BTreeMap::new(),
            avoid: BTreeSet::new(),
            bad: BTreeSet::new(),
            manifest_asked: false,
        };
        if let Ok(manifest) = store.manifest(&root) {
            fetch.set_manifest(manifest, store);
        }
        fetch
    }

    fn set_manifest(&mut self, manifest: Manifest, store: &ChunkStore) {
        self.queue = missing(&manifest, |id| store.contains(id)).into();
        self.manifest = Some(manifest);
    }

    /// The checkpoint's root.
    pub fn root(&self) -> H256 {
        self.root
    }

    /// The manifest, once fetched and verified.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// Whether everything is in the store (the checkpoint can be applied).
    pub fn is_complete(&self) -> bool {
        self.manifest.is_some()
            && self.queue.is_empty()
            && self.in_flight.values().all(Vec::is_empty)
    }

    /// Objects still missing (queued or in flight).
    pub fn remaining(&self) -> usize {
        self.queue.len()
            + self
                .in_flight
                .values()
                .flatten()
                .map(Vec::len)
                .sum::<usize>()
    }

    /// Requests to send now to `peers` (those that may have the checkpoint), spreading the
    /// work and keeping at most [`MAX_IN_FLIGHT_PER_PEER`] per peer. A dictionary-compressed
    /// chunk needs its dictionary first, so the dictionary is fetched alone.
    pub fn next_requests(&mut self, peers: &[P]) -> Vec<(P, TransferRequest)> {
        let usable: Vec<&P> = peers
            .iter()
            .filter(|p| !self.avoid.contains(*p) && !self.bad.contains(*p))
            .collect();
        let mut out = vec![];
        if self.manifest.is_none() {
            if !self.manifest_asked {
                if let Some(peer) = usable.iter().min_by_key(|p| self.load(p)) {
                    self.manifest_asked = true;
                    self.in_flight
                        .entry((*peer).clone())
                        .or_default()
                        .push(vec![]);
                    out.push((
                        (*peer).clone(),
                        TransferRequest::Manifest { root: self.root },
                    ));
                }
            }
            return out;
        }
        let dictionary = self.manifest.as_ref().and_then(|m| m.dictionary);
        let dictionary_pending = dictionary.is_some_and(|d| {
            self.queue.contains(&d)
                || self
                    .in_flight
                    .values()
                    .flatten()
                    .any(|ids| ids.contains(&d))
        });
        while let Some(peer) = usable
            .iter()
            .filter(|p| self.load(p) < MAX_IN_FLIGHT_PER_PEER)
            .min_by_key(|p| self.load(p))
        {
            let ids: Vec<H256> = if dictionary_pending {
                match dictionary.filter(|d| self.queue.front() == Some(d)) {
                    Some(d) => {
                        self.queue.pop_front();
                        vec![d]
                    }
                    None => break, // in flight: chunks wait for it
                }
            } else {
                let n = self.queue.len().min(MAX_OBJECTS_PER_REQUEST);
                self.queue.drain(..n).collect()
            };
            if ids.is_empty() {
                break;
            }
            self.in_flight
                .entry((*peer).clone())
                .or_default()
                .push(ids.clone());
            out.push(((*peer).clone(), TransferRequest::Objects { ids }));
            if dictionary_pending {
                break;
            }
        }
        out
    }

    fn load(&self, peer: &P) -> usize {
        self.in_flight.get(peer).map_or(0, Vec::len)
    }

    /// Takes the in-flight request to `peer` that asked `ids` (the manifest for an empty list).
    fn complete(&mut self, peer: &P, ids: &[H256]) -> bool {
        let Some(requests) = self.in_flight.get_mut(peer) else {
            return false;
        };
        let Some(i) = requests.iter().position(|r| r == ids) else {
            return false;
        };
        requests.swap_remove(i);
        true
    }

    /// `peer` answered `request` with `response`: verified objects go into `store`; anything
    /// else goes back to the queue. Returns a verdict when the peer misbehaved. The same as
    /// [`store_response`] followed by [`Fetch::on_stored`].
    pub fn on_response(
        &mut self,
        peer: &P,
        request: &TransferRequest,
        response: TransferResponse,
        store: &ChunkStore,
    ) -> Result<Option<PeerVerdict<P>>, ReplicationError> {
        let stored = store_response(store, &self.root, request, response)?;
        Ok(self.on_stored(peer, request, stored))
    }

    /// What [`store_response`] did with `peer`'s answer to `request`: the fetch moves on
    /// (the manifest known, missed objects queued again, the peer skipped or reported).
    pub fn on_stored(
        &mut self,
        peer: &P,
        request: &TransferRequest,
        stored: Stored,
    ) -> Option<PeerVerdict<P>> {
        match (request, stored) {
            (TransferRequest::Manifest { .. }, Stored::Manifest(outcome)) => {
                self.complete(peer, &[]);
                self.manifest_asked = false;
                match outcome {
                    Ok(Some((manifest, missing))) => {
                        if self.manifest.is_none() {
                            self.queue = missing.into();
                            self.manifest = Some(manifest);
                        }
                        None
                    }
                    Ok(None) => {
                        self.avoid.insert(peer.clone());
                        None
                    }
                    Err(reason) => Some(self.bad(peer, format!("manifest: {reason}"))),
                }
            }
            (TransferRequest::Objects { ids }, Stored::Objects { missed, bad }) => {
                if !self.complete(peer, ids) {
                    return None; // not ours (a late answer after a failure was handled)
                }
                if missed.len() == ids.len() && bad.is_none() {
                    self.avoid.insert(peer.clone()); // it has none of them
                }
                // What was not delivered goes back, dictionaries first.
                let dictionary = self.manifest.as_ref().and_then(|m| m.dictionary);
                for id in missed.into_iter().rev() {
                    if Some(id) == dictionary {
                        self.queue.push_front(id);
                    } else {
                        self.queue.push_back(id);
                    }
                }
                bad.map(|reason| self.bad(peer, reason))
            }
            (_, _) => {
                self.on_failure(peer, request);
                Some(self.bad(peer, "answered a different kind of request".to_owned()))
            }
        }
    }

    /// `request` to `peer` failed (timeout, disconnect): its objects go back to the queue and
    /// the peer is not asked again by this fetch.
    pub fn on_failure(&mut self, peer: &P, request: &TransferRequest) {
        self.avoid.insert(peer.clone());
        match request {
            TransferRequest::Manifest { .. } => {
                self.complete(peer, &[]);
                self.manifest_asked = false;
            }
            TransferRequest::Objects { ids } => {
                if self.complete(peer, ids) {
                    for id in ids.iter().rev() {
                        self.queue.push_front(*id);
                    }
                }
            }
            // Not a fetch's request.
            TransferRequest::Announce { .. } => {}
        }
    }

    /// Whether nothing can progress: objects are needed, none is in flight and every peer in
    /// `peers` was skipped. The caller waits (new peers, the active's next announcement) and
    /// calls [`Fetch::retry_skipped`].
    pub fn is_stalled(&self, peers: &[P]) -> bool {
        !self.is_complete()
            && self.in_flight.values().all(Vec::is_empty)
            && peers
                .iter()
                .all(|p| self.avoid.contains(p) || self.bad.contains(p))
    }

    /// Asks the peers that lacked objects or failed again (not those that sent bad bytes).
    pub fn retry_skipped(&mut self) {
        self.avoid.clear();
    }

    fn bad(&mut self, peer: &P, reason: String) -> PeerVerdict<P> {
        self.bad.insert(peer.clone());
        PeerVerdict::Bad {
            peer: peer.clone(),
            reason,
        }
    }
}

/// What storing one answer did, for [`Fetch::on_stored`].
#[derive(Debug)]
pub enum Stored {
    /// A manifest answer: the verified manifest and what the store lacks of it, `None` when
    /// the peer does not have it, or why its bytes are bad.
    Manifest(Result<Option<(Manifest, Vec<H256>)>, String>),
    /// An objects answer.
    Objects {
        /// Asked objects the store still lacks (not sent, bad, or their dictionary missing).
        missed: Vec<H256>,
        /// What the peer did wrong, if anything.
        bad: Option<String>,
    },
    /// The answer is of another kind than the request.
    Mismatch,
}

/// Verifies the answer to `request` (part of the fetch of checkpoint `root`) and keeps what is
/// good in `store`. Disk and CPU work without the fetch's state, so several answers can be
/// stored at once; [`Fetch::on_stored`] then updates the fetch.
pub fn store_response(
    store: &ChunkStore,
    root: &H256,
    request: &TransferRequest,
    response: TransferResponse,
) -> Result<Stored, ReplicationError> {
    match (request, response) {
        (TransferRequest::Manifest { .. }, TransferResponse::Manifest { bytes }) => {
            let Some(bytes) = bytes else {
                return Ok(Stored::Manifest(Ok(None)));
            };
            match store.put_manifest_bytes(root, &bytes) {
                Ok(manifest) => {
                    let missing = missing(&manifest, |id| store.contains(id));
                    Ok(Stored::Manifest(Ok(Some((manifest, missing)))))
                }
                Err(
                    e @ (ReplicationError::ManifestRootMismatch { .. }
                    | ReplicationError::BadManifest { .. }),
                ) => Ok(Stored::Manifest(Err(e.to_string()))),
                Err(e) => Err(e),
            }
        }
        (TransferRequest::Objects { ids }, TransferResponse::Objects { objects }) => {
            let mut bad = None;
            let mut answered = BTreeSet::new();
            for (id, bytes) in objects {
                if !ids.contains(&id) || !answered.insert(id) {
                    bad = Some(format!("sent {id}, which was not asked"));
                    continue;
                }
                let Some(bytes) = bytes else { continue };
                if bytes.len() > MAX_CHUNK_BYTES as usize + 64 {
                    bad = Some(format!("object {id} of {} bytes", bytes.len()));
                    continue;
                }
                match store.put_encoded(&id, &bytes) {
                    Ok(()) => {}
                    Err(e @ ReplicationError::BadChunk { .. }) => bad = Some(e.to_string()),
                    // Its dictionary is not here yet: asked again after it.
                    Err(ReplicationError::Missing { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            let missed: Vec<H256> = ids
                .iter()
                .filter(|id| !store.contains(id))
                .copied()
                .collect();
            Ok(Stored::Objects { missed, bad })
        }
        (_, _) => Ok(Stored::Mismatch),
    }
}
