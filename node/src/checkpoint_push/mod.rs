//! Checkpoint pushes: the active node of a service sends each new checkpoint (its manifest and
//! new chunks, `drchain_replication::push`) to the service's candidates the moment it is
//! taken, over one long-lived connection per candidate: a direct one (`direct.rs`) when it
//! can be made, else a stream of the libp2p connection (`/drchain/replication-push/3`, on
//! which the candidate first tells its direct port). Either carries length-prefixed SCALE
//! frames, no answer.
//!
//! Off the node loop on both ends: a write goes from the agent to a writer task and into the
//! connection; a read goes from the connection to a reader task, which checks, verifies and
//! announces the push to the agent. A connection stays open, so a push costs no protocol
//! negotiation; the node loop, busy with consensus, is not in the way.
//! `send.rs` holds the writers, `receive.rs` the readers, `direct.rs` the direct connections;
//! here is what both ends read.
//!
//! Bounds, against a member that sends anything: one reader per member and path (a new stream
//! or direct connection from it replaces the old one of its kind; a direct one is read only
//! while the member is connected over libp2p), one frame of at most `MAX_PUSH_BYTES`
//! buffered by each, one push being verified at a time by each, and at most `PUSHES_KEPT`
//! verified pushes waiting to be stored by each (a push the agent can apply from memory is stored `STORE_GRACE` later, unless the
//! agent stored it first: storing at once slowed that apply). A push is kept only from the
//! member the chain says holds the service, and only by a candidate of it; bytes that are not
//! a push, or a push whose chunks or manifest do not match their names, get the sender
//! disconnected. Verified pushes wait for the agent in a small ring ([`RecentPushes`]), each
//! within `MAX_PUSH_PLAIN_BYTES` decoded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use drchain_consensus::store::ChainReader;
use drchain_replication::push::VerifiedPush;
use drchain_rpc::ChainStatus;
use drchain_runtime::pallet_failover;
use drchain_support::{AccountId, Overlay, ServiceName, StateRead, H256};
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::watch;

use crate::rocks::RocksDb;

mod direct;
mod receive;
mod send;

pub use direct::{Dialer, DirectStream, Handshake, Hello, PeerHosts};
pub use receive::PushReceiver;
pub use send::{PushCounters, Pusher};

/// The protocol of a push stream.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/drchain/replication-push/3");
/// Opening a stream, telling or reading the push port, or writing a push that takes longer
/// drops the connection.
const STREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// Verified pushes kept in memory for the agent, at most (each at most
/// `MAX_PUSH_PLAIN_BYTES` of chunks): the agent takes the one it was told of at once.
const PUSHES_KEPT: usize = 4;

/// The last few verified pushes, with their chunks in memory, for the agent
/// (`NodeApi::pushed_checkpoint`).
#[derive(Debug, Default)]
pub struct RecentPushes(Mutex<VecDeque<Arc<VerifiedPush>>>);

impl RecentPushes {
    fn keep(&self, push: Arc<VerifiedPush>) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() >= PUSHES_KEPT {
            kept.pop_front();
        }
        kept.push_back(push);
    }

    /// Checkpoint `root`, if among the last pushed.
    pub fn get(&self, root: &H256) -> Option<Arc<VerifiedPush>> {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.iter().rev().find(|p| p.push.root == *root).cloned()
    }
}

/// The node holding a service on chain (active or promoting), and its candidates.
type Members = (Option<AccountId>, Vec<AccountId>);

/// The node holding `service` on chain (active or promoting) and its candidates.
fn service_members(state: &impl StateRead, service: &ServiceName) -> Members {
    let state = Overlay::new(state);
    let holder = pallet_failover::service_state(&state, service).and_then(|s| s.phase.holder());
    let candidates = pallet_failover::config(&state, service)
        .map(|c| c.candidates)
        .unwrap_or_default();
    (holder, candidates)
}

/// Services kept in [`KnownMembers`] at most; pushes for others read the state each time.
const MEMBERS_KEPT: usize = 64;

/// The members of the services pushes were sent or received for, as of the latest finalized
/// block. Reading them takes a database snapshot and decodes the service's state (40–50 µs
/// with a cold cache on the VM of docs/benchmarks.md), which every push needed at both ends
/// on the path of the write it carries; they are read again after each block instead
/// ([`refresh_members`]). Between a block and that refresh a push is checked against the
/// block before (the agent checks what it applies against its own view of the chain).
#[derive(Debug, Default)]
struct KnownMembers(std::sync::RwLock<HashMap<ServiceName, Members>>);

impl KnownMembers {
    /// `service`'s members: kept ones, or read with `read` (and kept, if the service exists).
    fn get(&self, service: &ServiceName, read: impl FnOnce() -> Members) -> Members {
        let kept = self.0.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(members) = kept.get(service) {
            return members.clone();
        }
        drop(kept);
        let members = read();
        // Only a service with candidates is kept: a push may name any service.
        let mut kept = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if !members.1.is_empty() && kept.len() < MEMBERS_KEPT {
            kept.insert(service.clone(), members.clone());
        }
        members
    }

    /// Reads the kept services' members again with `read`, dropping services without
    /// candidates any more.
    fn refresh(&self, read: impl Fn(&ServiceName) -> Members) {
        let services: Vec<ServiceName> = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        if services.is_empty() {
            return;
        }
        let fresh: HashMap<ServiceName, Members> = services
            .into_iter()
            .map(|service| {
                let members = read(&service);
                (service, members)
            })
            .filter(|(_, members)| !members.1.is_empty())
            .collect();
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = fresh;
    }
}

/// Reads the known services' members again whenever the node's status changes (a finalized
/// block, or a peer connecting or leaving), until the node stops.
async fn refresh_members(
    db: RocksDb,
    members: Arc<KnownMembers>,
    mut status: watch::Receiver<ChainStatus>,
) {
    while status.changed().await.is_ok() {
        let snapshot = db.snapshot();
        let state = ChainReader::new(&snapshot).state();
        members.refresh(|service| service_members(&state, service));
    }
}

/// What both ends read: the finalized state and the admitted, connected members.
#[derive(Clone)]
pub struct PushContext {
    /// The node's database, read through snapshots (the finalized state).
    db: RocksDb,
    /// Admitted, connected members (kept by the node loop).
    peers: watch::Receiver<Vec<PeerId>>,
    members: Arc<KnownMembers>,
}

impl std::fmt::Debug for PushContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushContext").finish_non_exhaustive()
    }
}

impl PushContext {
    /// The context of a node whose database is `db` and whose connected members are `peers`;
    /// the members of services are read again whenever `status` (the node's) changes, on a
    /// task of the current runtime.
    pub fn new(
        db: RocksDb,
        peers: watch::Receiver<Vec<PeerId>>,
        status: watch::Receiver<ChainStatus>,
    ) -> Self {
        let members = Arc::new(KnownMembers::default());
        tokio::spawn(refresh_members(db.clone(), members.clone(), status));
        Self { db, peers, members }
    }

    /// `service`'s holder and candidates in the finalized state.
    pub(crate) fn members(&self, service: &ServiceName) -> Members {
        self.members.get(service, || {
            let snapshot = self.db.snapshot();
            service_members(&ChainReader::new(&snapshot).state(), service)
        })
    }

    pub(crate) fn connected(&self, peer: &PeerId) -> bool {
        self.peers.borrow().contains(peer)
    }
}

/// Which way a candidate's pushes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Path {
    /// A connection of its own.
    Direct,
    /// A stream of the libp2p connection.
    Libp2p,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str) -> ServiceName {
        ServiceName::new(name).unwrap()
    }

    fn held_by(holder: u8) -> Members {
        let account = |b: u8| AccountId([b; 32]);
        (Some(account(holder)), vec![account(1), account(2)])
    }

    #[test]
    fn members_are_read_once_then_again_after_each_block() {
        let known = KnownMembers::default();
        let reads = std::cell::Cell::new(0);
        let read = |holder: u8| {
            reads.set(reads.get() + 1);
            held_by(holder)
        };
        assert_eq!(known.get(&service("db"), || read(1)), held_by(1));
        assert_eq!(known.get(&service("db"), || read(9)), held_by(1));
        assert_eq!(reads.get(), 1, "the second push is checked without a read");
        // A block moves the service to node 2: the refresh reads it.
        known.refresh(|_| held_by(2));
        assert_eq!(known.get(&service("db"), || read(9)), held_by(2));
        // A block removes the service: it is not kept, and read again when named.
        known.refresh(|_| (None, vec![]));
        assert_eq!(known.get(&service("db"), || (None, vec![])), (None, vec![]));
        assert_eq!(reads.get(), 1);
    }

    #[test]
    fn pushes_naming_services_that_do_not_exist_are_not_kept() {
        let known = KnownMembers::default();
        for i in 0..(4 * MEMBERS_KEPT) {
            known.get(&service(&format!("nonexistent-{i}")), || (None, vec![]));
        }
        assert!(known.0.read().unwrap().is_empty());
        for i in 0..(4 * MEMBERS_KEPT) {
            known.get(&service(&format!("real-{i}")), || held_by(1));
        }
        assert_eq!(known.0.read().unwrap().len(), MEMBERS_KEPT);
    }
}
