//! # Checkpoints pallet
//!
//! Recovery checkpoints of replicated service data. The active node of a service records each
//! checkpoint it produces (a blake3 manifest root of the content-addressed snapshot) under the
//! epoch it holds; standbys acknowledge the checkpoints they have applied. Each node's highest
//! held checkpoint (acknowledged, or produced: the producer holds what it recorded) is kept,
//! and [`data_lag`] says how much older, on the recording blocks' clock, a node's data is than
//! the latest checkpoint: the failover pallet elects only candidates within the service's RPO.

#![forbid(unsafe_code)]

#[cfg(test)]
mod tests;

use drchain_support::{
    storage_double_map, storage_map, AccountId, BlockNumber, Env, Epoch, Moment, Origin, Overlay,
    ServiceDirectory, ServiceError, ServiceName, H256,
};
use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// Checkpoints kept per service; older ones are pruned.
pub const RETAINED_CHECKPOINTS: u64 = 128;
/// How far beyond the latest recorded checkpoint an acknowledgement that comes before its
/// record may name (the active numbers its next checkpoints from the latest record).
pub const MAX_EARLY_ACK_AHEAD: u64 = 16;

/// A recorded checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Epoch of the active node that produced it.
    pub epoch: Epoch,
    /// The node that produced it.
    pub producer: AccountId,
    /// blake3 root of the manifest of chunks.
    pub manifest_root: H256,
    /// Size of the snapshot, bytes.
    pub size_bytes: u64,
    /// Bytes of chunks the producer did not hold before this checkpoint: about what changed
    /// since the previous one, and what a standby holding that one must fetch.
    pub changed_bytes: u64,
    /// Header timestamp of the block that recorded it.
    pub timestamp: Moment,
    /// That block's number.
    pub block: BlockNumber,
}

storage_double_map!(
    /// Checkpoints by service and sequence.
    pub Checkpoints: (ServiceName, u64) => Checkpoint, "Checkpoints"
);
storage_map!(
    /// Latest sequence per service.
    pub Latest: ServiceName => u64, "Checkpoints"
);
storage_double_map!(
    /// Highest sequence each node holds, per service: acknowledged by a standby, or recorded
    /// by the node as the active.
    pub Acks: (ServiceName, AccountId) => u64, "Checkpoints"
);
storage_double_map!(
    /// A standby's [`Call::AcknowledgeRoot`] that came before the checkpoint it names was
    /// recorded, per service: `(sequence, root)`, counted when the active records that root
    /// under that sequence, dropped once a record reaches that sequence otherwise. One per
    /// node: a newer one replaces it.
    pub EarlyAcks: (ServiceName, AccountId) => (u64, H256), "Checkpoints"
);

/// How far a node's data is behind a service's latest checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct DataLag {
    /// The newest checkpoint the node holds.
    pub held: Option<u64>,
    /// The service's latest checkpoint.
    pub latest: Option<u64>,
    /// Milliseconds between the blocks that recorded `held` and `latest` (0 when nothing was
    /// ever recorded); `None` when the node holds no retained checkpoint while there are some.
    pub lag_ms: Option<u64>,
    /// The changed bytes of the checkpoints after `held` up to `latest`: about how much data
    /// the node lacks (`None` like `lag_ms`).
    pub lag_bytes: Option<u64>,
}

impl DataLag {
    /// Whether the lag is within `max_lag_ms`.
    pub fn within(&self, max_lag_ms: u64) -> bool {
        self.lag_ms.is_some_and(|lag| lag <= max_lag_ms)
    }
}

/// Calls of this pallet. Indices are fixed: they are the wire format.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    /// Signed by the active node of `service` at `epoch`: record a checkpoint.
    #[codec(index = 0)]
    Submit {
        service: ServiceName,
        /// The epoch the producer holds (the fencing token).
        epoch: Epoch,
        /// Strictly greater than the latest sequence.
        sequence: u64,
        /// blake3 manifest root.
        manifest_root: H256,
        /// Snapshot size, bytes.
        size_bytes: u64,
        /// Bytes new since the producer's previous checkpoint (at most `size_bytes`).
        changed_bytes: u64,
    },
    /// Signed by a standby (a candidate other than the active node): it has applied
    /// checkpoint `sequence`.
    #[codec(index = 1)]
    Acknowledge {
        service: ServiceName,
        /// A recorded sequence, not below the node's previous acknowledgement.
        sequence: u64,
    },
    /// [`Call::Acknowledge`], naming the manifest root the standby applied: it counts only if
    /// the chain records that root under `sequence`. A standby sends it as soon as it applied
    /// a checkpoint the active pushed, before it sees the checkpoint recorded; one that
    /// executes before the record (an earlier block, or earlier in the same one) is held
    /// ([`EarlyAcks`], up to [`MAX_EARLY_ACK_AHEAD`] beyond the latest record) and counted in
    /// the record's block, instead of a block after the standby saw the record.
    #[codec(index = 2)]
    AcknowledgeRoot {
        service: ServiceName,
        /// A recorded sequence, not below the node's previous acknowledgement, or one not
        /// recorded yet (held until it is).
        sequence: u64,
        /// The root recorded, or to be recorded, under `sequence`.
        manifest_root: H256,
    },
}

/// Events of this pallet.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A checkpoint was recorded.
    #[codec(index = 0)]
    CheckpointRecorded {
        service: ServiceName,
        sequence: u64,
        /// Producer's epoch.
        epoch: Epoch,
        producer: AccountId,
        manifest_root: H256,
    },
    /// A node acknowledged a checkpoint.
    #[codec(index = 1)]
    CheckpointAcknowledged {
        service: ServiceName,
        node: AccountId,
        sequence: u64,
    },
}

/// Errors of this pallet.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum Error {
    /// Wrong origin for the call.
    #[error(transparent)]
    BadOrigin(#[from] drchain_support::dispatch::BadOrigin),
    /// The service is unknown, or the node is not one of its candidates.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// Only the active node (promotion completed) may record checkpoints.
    #[error("{node} is not the active node of {service}")]
    NotActive {
        service: ServiceName,
        /// The sender.
        node: AccountId,
    },
    /// The epoch is not the service's current one (a fenced node).
    #[error("checkpoint for epoch {given} but the service is at epoch {current}")]
    WrongEpoch {
        /// Current epoch.
        current: Epoch,
        /// Given epoch.
        given: Epoch,
    },
    /// Sequences must increase.
    #[error("sequence {given} is not above the latest {latest}")]
    SequenceNotIncreasing {
        /// Latest recorded.
        latest: u64,
        given: u64,
    },
    /// No such checkpoint (never recorded, or pruned).
    #[error("no checkpoint {sequence} for {service}")]
    UnknownCheckpoint { service: ServiceName, sequence: u64 },
    /// The active node produced the checkpoint; only standbys acknowledge.
    #[error("{node} is the active node of {service}; only standbys acknowledge checkpoints")]
    ActiveCannotAcknowledge {
        service: ServiceName,
        /// The active node.
        node: AccountId,
    },
    /// Acknowledgements must not go backwards.
    #[error("already acknowledged {previous}, cannot go back to {given}")]
    AckRegression {
        /// Previous acknowledgement.
        previous: u64,
        given: u64,
    },
    /// The acknowledged root is not the one recorded under the sequence.
    #[error("checkpoint {sequence} of {service} was recorded with root {recorded}, not {given}")]
    RootMismatch {
        service: ServiceName,
        sequence: u64,
        /// What the chain recorded.
        recorded: H256,
        /// What the standby applied.
        given: H256,
    },
}

/// The pallet, for its block hooks (none: everything happens in calls).
#[derive(Debug)]
pub struct Pallet;

impl<E> drchain_support::Hooks<E> for Pallet {}

/// Latest recorded sequence of `service`.
pub fn latest(state: &Overlay<'_>, service: &ServiceName) -> Option<u64> {
    Latest::get(state, service)
}

/// A recorded checkpoint.
pub fn checkpoint(state: &Overlay<'_>, service: &ServiceName, sequence: u64) -> Option<Checkpoint> {
    Checkpoints::get(state, service, &sequence)
}

/// Retained checkpoints of `service`, oldest first.
pub fn checkpoints(state: &Overlay<'_>, service: &ServiceName) -> Vec<(u64, Checkpoint)> {
    let mut all = Checkpoints::iter_prefix(state, service);
    all.sort_by_key(|(seq, _)| *seq);
    all
}

/// The highest checkpoint each node holds for `service`.
pub fn acks(state: &Overlay<'_>, service: &ServiceName) -> Vec<(AccountId, u64)> {
    Acks::iter_prefix(state, service)
}

/// How far `node`'s data of `service` is behind the latest checkpoint.
pub fn data_lag(state: &Overlay<'_>, service: &ServiceName, node: &AccountId) -> DataLag {
    let held = Acks::get(state, service, node);
    let Some(latest) = Latest::get(state, service) else {
        return DataLag {
            held,
            latest: None,
            lag_ms: Some(0),
            lag_bytes: Some(0),
        };
    };
    let timestamp =
        |sequence: u64| Checkpoints::get(state, service, &sequence).map(|c| c.timestamp);
    let lag_ms = match (held.and_then(timestamp), timestamp(latest)) {
        (Some(held_at), Some(latest_at)) => Some(latest_at.saturating_sub(held_at)),
        _ => None,
    };
    let lag_bytes = lag_ms.and(held).map(|held| {
        Checkpoints::iter_prefix(state, service)
            .into_iter()
            .filter(|(seq, _)| *seq > held && *seq <= latest)
            .map(|(_, c)| c.changed_bytes)
            .fold(0u64, u64::saturating_add)
    });
    DataLag {
        held,
        latest: Some(latest),
        lag_ms,
        lag_bytes,
    }
}

/// Drops everything about a removed service.
pub fn clear_service(state: &mut Overlay<'_>, service: &ServiceName) {
    Checkpoints::remove_prefix(state, service);
    Acks::remove_prefix(state, service);
    EarlyAcks::remove_prefix(state, service);
    Latest::remove(state, service);
}

/// Executes a call.
pub fn dispatch<E: From<Event>>(
    env: &mut Env<'_, '_, E>,
    directory: &dyn ServiceDirectory,
    origin: Origin,
    call: Call,
) -> Result<(), Error> {
    let node = origin.signed()?;
    match call {
        Call::Submit {
            service,
            epoch,
            sequence,
            manifest_root,
            size_bytes,
            changed_bytes,
        } => {
            let current = directory.existing_epoch(env.state, &service)?;
            if epoch != current {
                return Err(Error::WrongEpoch {
                    current,
                    given: epoch,
                });
            }
            match directory.active(env.state, &service) {
                Some((active, _)) if active == node => {}
                _ => return Err(Error::NotActive { service, node }),
            }
            let latest = Latest::get(env.state, &service);
            if let Some(latest) = latest.filter(|l| sequence <= *l) {
                return Err(Error::SequenceNotIncreasing {
                    latest,
                    given: sequence,
                });
            }
            let record = Checkpoint {
                epoch,
                producer: node,
                manifest_root,
                size_bytes,
                changed_bytes: changed_bytes.min(size_bytes),
                timestamp: env.block.timestamp,
                block: env.block.number,
            };
            Checkpoints::insert(env.state, &service, &sequence, &record);
            Latest::insert(env.state, &service, &sequence);
            // The producer holds what it recorded.
            Acks::insert(env.state, &service, &node, &sequence);
            prune(env.state, &service, sequence);
            env.deposit(Event::CheckpointRecorded {
                service: service.clone(),
                sequence,
                epoch,
                producer: node,
                manifest_root,
            });
            settle_early_acks(env, directory, &service, sequence, manifest_root);
            Ok(())
        }
        Call::Acknowledge { service, sequence } => {
            acknowledge(env, directory, node, service, sequence, None)
        }
        Call::AcknowledgeRoot {
            service,
            sequence,
            manifest_root,
        } => acknowledge(env, directory, node, service, sequence, Some(manifest_root)),
    }
}

/// `node` holds checkpoint `sequence` of `service` (with root `root`, if it says).
fn acknowledge<E: From<Event>>(
    env: &mut Env<'_, '_, E>,
    directory: &dyn ServiceDirectory,
    node: AccountId,
    service: ServiceName,
    sequence: u64,
    root: Option<H256>,
) -> Result<(), Error> {
    directory.candidate_epoch(env.state, &service, &node)?;
    if directory
        .active(env.state, &service)
        .is_some_and(|(active, _)| active == node)
    {
        return Err(Error::ActiveCannotAcknowledge { service, node });
    }
    let Some(recorded) = Checkpoints::get(env.state, &service, &sequence) else {
        // Before the record, with the root it will have to match: held until then.
        let latest = Latest::get(env.state, &service).unwrap_or(0);
        return match root {
            Some(root) if sequence > latest && sequence - latest <= MAX_EARLY_ACK_AHEAD => {
                EarlyAcks::insert(env.state, &service, &node, &(sequence, root));
                Ok(())
            }
            _ => Err(Error::UnknownCheckpoint { service, sequence }),
        };
    };
    if let Some(given) = root.filter(|r| *r != recorded.manifest_root) {
        return Err(Error::RootMismatch {
            service,
            sequence,
            recorded: recorded.manifest_root,
            given,
        });
    }
    if let Some(previous) = Acks::get(env.state, &service, &node).filter(|p| *p > sequence) {
        return Err(Error::AckRegression {
            previous,
            given: sequence,
        });
    }
    Acks::insert(env.state, &service, &node, &sequence);
    env.deposit(Event::CheckpointAcknowledged {
        service,
        node,
        sequence,
    });
    Ok(())
}

/// Counts the held acknowledgements of checkpoint `sequence` of `service`, just recorded with
/// `root`, from nodes still its candidates; drops every held one this record settles (for
/// `sequence` or before: none of those can be recorded any more).
fn settle_early_acks<E: From<Event>>(
    env: &mut Env<'_, '_, E>,
    directory: &dyn ServiceDirectory,
    service: &ServiceName,
    sequence: u64,
    root: H256,
) {
    for (node, (acked, acked_root)) in EarlyAcks::iter_prefix(env.state, service) {
        if acked > sequence {
            continue;
        }
        EarlyAcks::remove(env.state, service, &node);
        let counts = acked == sequence
            && acked_root == root
            && directory.candidate_epoch(env.state, service, &node).is_ok()
            && Acks::get(env.state, service, &node).is_none_or(|held| held < sequence);
        if counts {
            Acks::insert(env.state, service, &node, &sequence);
            env.deposit(Event::CheckpointAcknowledged {
                service: service.clone(),
                node,
                sequence,
            });
        }
    }
}

/// Keeps the newest [`RETAINED_CHECKPOINTS`] checkpoints of a service.
fn prune(state: &mut Overlay<'_>, service: &ServiceName, newest: u64) {
    let Some(cutoff) = newest.checked_sub(RETAINED_CHECKPOINTS) else {
        return;
    };
    for (seq, _) in Checkpoints::iter_prefix(state, service) {
        if seq <= cutoff {
            Checkpoints::remove(state, service, &seq);
        }
    }
}
