//! Replication of one service's data: a task per service, driven by what the agent's loop
//! knows of this node's role and of the chain's checkpoints ([`ReplicaInput`]).
//!
//! - While this node **serves** the service (active, under its lease) it takes a checkpoint
//!   every `interval_ms` — at once on a change in `watch` mode — into the node's chunk store,
//!   and records it on chain under its epoch (the chain refuses a fenced epoch). Unchanged
//!   data gives no checkpoint.
//! - As a **standby** (also failed or fenced: a deposed active resyncs here, dropping what it
//!   wrote after the chain's latest checkpoint) it fetches the chain's latest checkpoint from
//!   the members that hold it, materializes it in `target` atomically, and acknowledges it.
//! - While **promoting** it does neither: `on_promote` restores the service from the target,
//!   which must not change under it.
//!
//! Layout: this module (what the agent's loop sees, the task and its loop), [`produce`] (the
//! active side and the compression dictionary), [`apply`] (the standby side), [`gc`] (the
//! shared chunk store's collection).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use drchain_replication::materialize::Recovery;
use drchain_replication::{ChunkStore, ChunkingParams, Dictionary, Manifest};
use drchain_support::{Epoch, ServiceName, H256};
use tokio::sync::{broadcast, mpsc, watch};

use drchain_rpc::NodeApi;

use crate::chain::CheckpointView;
use crate::config::ReplicationConfig;
use crate::machine::LocalRole;
use crate::metrics::AgentMetrics;
use crate::snapshot::{forget_changes, Consistency, Producer};
use crate::submit::Submitter;

mod apply;
mod gc;
mod produce;

pub use gc::KeptRoots;

/// After a failed fetch or apply, the standby waits this long before trying again.
const RETRY: Duration = Duration::from_secs(1);
/// An acknowledgement the chain has not shown after this long is sent again.
const ACK_RESEND: Duration = Duration::from_secs(3);
/// How often a standby looks whether an acknowledgement it sent before the checkpoint was
/// recorded is still in the pool (it lands in the next block) or gone without counting (the
/// record it waited for never came).
const EARLY_ACK_CHECK: Duration = Duration::from_millis(50);
/// In `watch` mode, a change that does not complete a write (a file created or written) waits
/// this long at most for one that does (its rename into place), so a write and its rename make
/// one checkpoint; a rename or removal is acted on at once.
const WATCH_SETTLE: Duration = Duration::from_millis(2);
/// How often a source that could not be watched is tried again.
const WATCH_RETRY: Duration = Duration::from_secs(10);
/// The shortest time between two garbage collections of the chunk store.
const GC_EVERY: Duration = Duration::from_secs(30);
/// A dictionary is trained (or retrained, kept only if it pays more) every this many
/// checkpoints, on chunks of the latest one.
const TRAIN_EVERY: u64 = 64;
/// Chunks sampled for training and measuring a dictionary, at most.
const TRAINING_SAMPLES: usize = 1024;
/// Fewer chunks than this: no dictionary yet (zstd cannot learn from a handful).
const MIN_TRAINING_SAMPLES: usize = 64;

/// What the agent's loop tells the replication task, after every block and role change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInput {
    /// This node's role.
    pub role: LocalRole,
    /// Whether it serves now (active, lease held).
    pub serving: bool,
    /// The chain's epoch of the service (the fencing token checkpoints are recorded under).
    pub epoch: Epoch,
    /// The chain's checkpoints.
    pub chain: CheckpointView,
}

/// A checkpoint materialized in the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Its sequence on chain.
    pub sequence: u64,
    /// Its manifest root.
    pub root: H256,
    /// The directory holding its files (what the target links to).
    pub path: PathBuf,
}

/// What a replication task needs from the agent.
#[derive(Debug, Clone)]
pub struct ReplicaContext {
    /// The node: its chunk store and fetches from members.
    pub node: Arc<dyn NodeApi>,
    /// Records checkpoints and acknowledgements on chain.
    pub submitter: Arc<Submitter>,
    /// Where it counts what it does.
    pub metrics: AgentMetrics,
    /// Shared by every service's task of this agent.
    pub kept: Arc<KeptRoots>,
}

/// A running replication task; stops when dropped.
#[derive(Debug)]
pub struct Replica {
    /// Feed it after every block and role change.
    pub input: watch::Sender<Option<ReplicaInput>>,
    /// The checkpoint the target shows.
    pub applied: watch::Receiver<Option<Applied>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The label of a materialized checkpoint: its sequence and root.
fn label(sequence: u64, root: &H256) -> String {
    format!("{sequence}-{root}")
}

/// The root in a checkpoint's [`label`].
fn root_of(label: &str) -> Option<H256> {
    label.split_once('-')?.1.parse().ok()
}

/// The checkpoint `target` shows, if the agent materialized it.
fn applied_in(target: &Path) -> Option<Applied> {
    let label = match drchain_replication::materialize::applied_label(target) {
        Ok(label) => label?,
        Err(e) => {
            tracing::warn!(error = %e, "replication target is not usable");
            return None;
        }
    };
    let (sequence, root) = label.split_once('-')?;
    let parent = target.parent().unwrap_or(Path::new("."));
    let path = std::fs::canonicalize(target).unwrap_or_else(|_| parent.join(&label));
    Some(Applied {
        sequence: sequence.parse().ok()?,
        root: root.parse().ok()?,
        path,
    })
}

/// Before the target is used: if a crash came between showing a checkpoint and making it
/// durable, checks it against its manifest and keeps it, or goes back to the last durable one.
/// Rare and at start, but it reads the whole shown checkpoint: the runtime's other tasks (the
/// node's) move to other threads meanwhile.
fn recover_target(service: &ServiceName, target: &Path, store: &ChunkStore) {
    let manifest_of = |label: &str| store.manifest(&root_of(label)?).ok();
    let recover = || drchain_replication::materialize::recover(target, manifest_of);
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let recovered = if multi_thread {
        tokio::task::block_in_place(recover)
    } else {
        recover()
    };
    match recovered {
        Ok(Recovery::Intact) => {}
        Ok(Recovery::Verified { label }) => tracing::info!(
            "replication target checked after an unclean stop service={service} checkpoint={label}: complete, kept"
        ),
        Ok(Recovery::Reverted { from, to }) => tracing::warn!(
            "replication target torn by an unclean stop service={service} checkpoint={from}: back to {}",
            to.as_deref().unwrap_or("none (applied again)")
        ),
        Err(e) => tracing::warn!(service = %service, error = %e, "cannot check the replication target"),
    }
}

/// Starts replicating `service` as `config` says.
pub fn start(service: ServiceName, config: ReplicationConfig, ctx: ReplicaContext) -> Replica {
    let (input, input_rx) = watch::channel(None);
    let store = ctx.node.chunk_store();
    recover_target(&service, &config.target, &store);
    let applied_now = applied_in(&config.target);
    let (applied_tx, applied) = watch::channel(applied_now.clone());
    if let Some(a) = &applied_now {
        ctx.metrics.replication_applied(&service, a.sequence);
    }
    let consistency = match &config.snapshot_command {
        Some(command) => Consistency::Command {
            command: command.clone(),
            timeout: Duration::from_millis(config.snapshot_timeout_ms),
        },
        None => Consistency::Watch,
    };
    let scratch = scratch_dir(&config.target);
    let task = Task {
        producer: Producer {
            service: service.clone(),
            source: config.source.clone(),
            consistency,
            scratch,
            chunking: ChunkingParams::default(),
            cache: Arc::default(),
            changes: Arc::default(),
        },
        store,
        service,
        config,
        ctx,
        applied: applied_tx,
        last_taken: None,
        last_manifest: None,
        last_submitted: None,
        dictionary: None,
        taken: 0,
        next_training: 1,
        training: false,
        next_checkpoint: Instant::now(),
        last_checkpoint: None,
        last_rescan: None,
        ack_sent: None,
        early_ack: None,
        retry_at: None,
        prefetching: Arc::default(),
        ahead: None,
        durable: applied_now.as_ref().map(|a| (a.sequence, a.root)),
        next_prepared: None,
        shown_manifest: None,
    };
    Replica {
        input,
        applied,
        task: tokio::spawn(task.run(input_rx)),
    }
}

/// Whether a change in a watched source completes a write: a file renamed into place or
/// removed. A file being created or written is usually followed by its rename. The first half
/// of a rename (its old name) is not: the checkpoint would be taken before the watcher noted
/// the new name, and the file would wait for the next one (`min_interval_ms` later); a file
/// renamed out of the source is checkpointed `WATCH_SETTLE` after it.
fn completes_a_write(kind: &notify::EventKind) -> bool {
    use notify::event::{EventKind, ModifyKind, RenameMode};
    matches!(
        kind,
        EventKind::Modify(ModifyKind::Name(
            RenameMode::To | RenameMode::Both | RenameMode::Any | RenameMode::Other
        )) | EventKind::Remove(_)
    )
}

/// Beside the target: where snapshot commands write (`.NAME.snapshot`).
fn scratch_dir(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target
        .parent()
        .unwrap_or(Path::new("/"))
        .join(format!(".{name}.snapshot"))
}

struct Task {
    service: ServiceName,
    config: ReplicationConfig,
    producer: Producer,
    store: Arc<ChunkStore>,
    ctx: ReplicaContext,
    applied: watch::Sender<Option<Applied>>,
    /// The root of the last checkpoint this node took (unchanged data gives none).
    last_taken: Option<H256>,
    /// Its manifest (the next push carries what is new since).
    last_manifest: Option<Arc<Manifest>>,
    /// The last sequence it recorded.
    last_submitted: Option<u64>,
    /// The dictionary new chunks are compressed with, while it pays.
    dictionary: Option<Arc<Dictionary>>,
    /// Checkpoints taken since start, and the count at which a dictionary is next trained.
    taken: u64,
    next_training: u64,
    /// Whether a dictionary is being trained (beside the task: `produce::Trained`).
    training: bool,
    /// When the next checkpoint is due while serving.
    next_checkpoint: Instant,
    /// When the last one was taken.
    last_checkpoint: Option<Instant>,
    /// When a watched source was last read whole (for changes inotify missed).
    last_rescan: Option<Instant>,
    /// The last acknowledgement sent, and when it is sent again if the chain does not show it.
    ack_sent: Option<(u64, Instant)>,
    /// One sent before its checkpoint was seen recorded: the sequence, the extrinsic, and
    /// when to look at the pool again.
    early_ack: Option<(u64, H256, Instant)>,
    /// After a failure, when the standby tries again.
    retry_at: Option<Instant>,
    /// Whether a prefetch of an announced checkpoint runs (one at a time).
    prefetching: Arc<AtomicBool>,
    /// The target shows an announced checkpoint the chain has not recorded yet.
    ahead: Option<apply::Ahead>,
    /// The checkpoint last made durable in the target (only that one is acknowledged).
    durable: Option<(u64, H256)>,
    /// The durable checkpoint whose copy the next apply changes is made
    /// (`materialize::prepare_next`).
    next_prepared: Option<(u64, H256)>,
    /// The manifest of the checkpoint the target shows, once this task applied one.
    shown_manifest: Option<(H256, Arc<Manifest>)>,
}

/// Whether the role applies checkpoints (everything but serving and promoting).
fn applies(input: &ReplicaInput) -> bool {
    matches!(
        input.role,
        LocalRole::Standby | LocalRole::Failed | LocalRole::Fenced
    )
}

fn produces(input: &ReplicaInput) -> bool {
    input.serving && input.role == LocalRole::Active
}

impl Task {
    async fn run(mut self, mut input: watch::Receiver<Option<ReplicaInput>>) {
        let (changes_tx, mut changes) = mpsc::channel::<bool>(64);
        let mut watcher: Option<notify::RecommendedWatcher> = None;
        // A source that cannot be watched (missing yet) is tried again this often, not on
        // every turn: the periodic rescan covers it meanwhile.
        let mut watch_again = Instant::now();
        let mut announcements = self.ctx.node.subscribe_announcements();
        let (fetched_tx, mut fetched) = mpsc::channel(1);
        let (trained_tx, mut trained) = mpsc::channel(1);
        let mut collected = self.ctx.kept.removals();
        loop {
            let wake = self.wake_at(input.borrow().as_ref(), watcher.is_some());
            // Whether this turn comes from a change the watcher saw.
            let mut seen_change = false;
            tokio::select! {
                changed = input.changed() => if changed.is_err() { return },
                announced = announcements.recv() => match announced {
                    Ok(a) => {
                        let now = input.borrow().clone();
                        if let Some(now) = now {
                            self.announced(&now, a, &fetched_tx).await;
                        }
                        continue;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                Some(t) = trained.recv() => {
                    self.use_trained(t);
                    continue;
                }
                Ok(()) = collected.changed() => {
                    // The store removed objects: the next snapshot looks every cached chunk
                    // up. A reading of the whole source does it now, on this turn, not the
                    // checkpoint of the next write.
                    self.last_rescan = None;
                }
                Some(f) = fetched.recv() => {
                    let now = input.borrow().clone();
                    if let Some(now) = now {
                        // Fetched: everything is here.
                        let _ = self.apply_announced(&now, f).await;
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
                Some(completes) = changes.recv() => {
                    // A change in the watched source: a checkpoint once a write is complete
                    // (or WATCH_SETTLE passed) and min_interval_ms has passed since the last.
                    let settle = tokio::time::sleep(WATCH_SETTLE);
                    tokio::pin!(settle);
                    let mut complete = completes;
                    while !complete {
                        tokio::select! {
                            next = changes.recv() => complete = next.unwrap_or(true),
                            () = &mut settle => complete = true,
                        }
                    }
                    while changes.try_recv().is_ok() {}
                    let min = Duration::from_millis(self.config.min_interval_ms);
                    let earliest = self.last_checkpoint.map_or_else(Instant::now, |t| t + min);
                    self.next_checkpoint = self.next_checkpoint.min(earliest.max(Instant::now()));
                    seen_change = true;
                }
            }
            let Some(now) = input.borrow().clone() else {
                continue;
            };
            if produces(&now) {
                if self.config.watch && watcher.is_none() && Instant::now() >= watch_again {
                    watcher = self.watch_source(&changes_tx);
                    watch_again = Instant::now() + WATCH_RETRY;
                }
                let rescan = watcher.is_some() && !seen_change && self.rescan_due();
                if Instant::now() >= self.next_checkpoint || rescan {
                    self.produce(&now, watcher.is_none() || rescan, &trained_tx)
                        .await;
                }
            } else {
                watcher = None;
                if applies(&now) {
                    self.apply(&now, &mut input).await;
                }
            }
            self.collect_garbage(&now);
        }
    }

    /// When a watched source is next read whole, for the changes inotify missed: every
    /// `interval_ms`, on a turn of its own. Not on the way of a change the watcher saw, which
    /// is read from the paths it named: reading a source whole looks at every file (150 files
    /// ~0.3 ms, 10,000 ~30 ms) and would delay one write in every interval by that.
    fn rescan_at(&self) -> Option<Instant> {
        let interval = Duration::from_millis(self.config.interval_ms);
        self.last_rescan.map(|t| t + interval)
    }

    fn rescan_due(&self) -> bool {
        self.rescan_at().is_none_or(|t| Instant::now() >= t)
    }

    /// When the loop must look again without news. A retry or resend time already past was
    /// acted on by the turn that just ran, so only future ones count (else the loop spins);
    /// a reading of the watched source whole that is due waits for a turn without a change.
    fn wake_at(&self, input: Option<&ReplicaInput>, watching: bool) -> Instant {
        let now = Instant::now();
        let later = now + Duration::from_secs(3600);
        match input {
            Some(i) if produces(i) && watching => self
                .rescan_at()
                .map_or(self.next_checkpoint, |t| t.min(self.next_checkpoint)),
            Some(i) if produces(i) => self.next_checkpoint,
            Some(i) if applies(i) => [
                self.retry_at,
                self.ack_sent.map(|(_, resend_at)| resend_at),
                self.early_ack.map(|(_, _, check_at)| check_at),
            ]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min()
            .unwrap_or(later),
            _ => later,
        }
    }

    /// Watches the source for changes (inotify); the periodic checkpoint remains the fallback.
    fn watch_source(&self, changes: &mpsc::Sender<bool>) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher;
        let changes = changes.clone();
        let (noted, source) = (self.producer.changes.clone(), self.producer.source.clone());
        // Whatever changed before the watch began is unknown.
        forget_changes(&noted);
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let event = match event {
                Ok(event) if !event.kind.is_access() => event,
                Ok(_) => return,
                Err(_) => return forget_changes(&noted),
            };
            {
                let mut noted = noted.lock().unwrap_or_else(PoisonError::into_inner);
                if event.need_rescan() || event.paths.is_empty() {
                    noted.note_everything();
                }
                for path in &event.paths {
                    noted.note(&source, path);
                }
            }
            // Full means a checkpoint is already coming.
            let _ = changes.try_send(completes_a_write(&event.kind));
        })
        .map_err(|e| tracing::warn!(error = %e, "cannot watch for changes; rescanning every interval_ms only"))
        .ok()?;
        match watcher.watch(&self.config.source, notify::RecursiveMode::Recursive) {
            Ok(()) => Some(watcher),
            Err(e) => {
                tracing::warn!(
                    service = %self.service,
                    source = %self.config.source.display(),
                    error = %e,
                    "cannot watch the source; rescanning every interval_ms only"
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, EventKind, ModifyKind, RemoveKind, RenameMode};

    use super::completes_a_write;

    #[test]
    fn a_write_completes_when_its_file_has_its_new_name_not_before() {
        let renamed = |mode| EventKind::Modify(ModifyKind::Name(mode));
        assert!(!completes_a_write(&renamed(RenameMode::From)));
        assert!(completes_a_write(&renamed(RenameMode::To)));
        assert!(completes_a_write(&renamed(RenameMode::Both)));
        assert!(completes_a_write(&EventKind::Remove(RemoveKind::File)));
        assert!(!completes_a_write(&EventKind::Create(CreateKind::File)));
    }
}
