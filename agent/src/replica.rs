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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use drchain_replication::compress::{measure, train_and_measure, DictionaryGain};
use drchain_replication::{materialize_after, ChunkStore, ChunkingParams, Dictionary, Manifest};
use drchain_runtime::pallet_checkpoints;
use drchain_runtime::RuntimeCall;
use drchain_support::{Epoch, ServiceName, H256};
use tokio::sync::{broadcast, mpsc, watch};

use drchain_rpc::{Announcement, NodeApi};

use crate::chain::CheckpointView;
use crate::config::ReplicationConfig;
use crate::machine::LocalRole;
use crate::metrics::AgentMetrics;
use crate::snapshot::{Consistency, Producer};
use crate::submit::Submitter;

/// After a failed fetch or apply, the standby waits this long before trying again.
const RETRY: Duration = Duration::from_secs(1);
/// An acknowledgement the chain has not shown after this long is sent again.
const ACK_RESEND: Duration = Duration::from_secs(3);
/// In `watch` mode, changes closer together than this make one checkpoint (a write and its
/// rename arrive as separate events).
const WATCH_SETTLE: Duration = Duration::from_millis(2);
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

/// The manifest roots each service's task needs kept, for collecting the shared chunk store.
#[derive(Debug)]
pub struct KeptRoots {
    services: usize,
    by_service: Mutex<Vec<(ServiceName, Vec<H256>)>>,
    last_collection: Mutex<Option<Instant>>,
}

impl KeptRoots {
    /// For an agent replicating `services` services: nothing is collected before each of them
    /// said what it keeps.
    pub fn new(services: usize) -> Self {
        Self {
            services,
            by_service: Mutex::default(),
            last_collection: Mutex::default(),
        }
    }

    fn set(&self, service: &ServiceName, roots: Vec<H256>) {
        let mut all = self
            .by_service
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match all.iter_mut().find(|(s, _)| s == service) {
            Some((_, r)) => *r = roots,
            None => all.push((service.clone(), roots)),
        }
    }

    fn all(&self) -> Vec<H256> {
        let all = self
            .by_service
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        all.iter().flat_map(|(_, r)| r.iter().copied()).collect()
    }

    /// Whether a collection is due; if so, marks it started.
    fn due(&self, now: Instant) -> bool {
        let known = self
            .by_service
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        if known < self.services {
            return false;
        }
        let mut last = self
            .last_collection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|t| now.duration_since(t) < GC_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }
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

/// Starts replicating `service` as `config` says.
pub fn start(service: ServiceName, config: ReplicationConfig, ctx: ReplicaContext) -> Replica {
    let (input, input_rx) = watch::channel(None);
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
        },
        store: ctx.node.chunk_store(),
        service,
        config,
        ctx,
        applied: applied_tx,
        last_taken: None,
        last_submitted: None,
        dictionary: None,
        taken: 0,
        next_training: 1,
        next_checkpoint: Instant::now(),
        last_checkpoint: None,
        ack_sent: None,
        retry_at: None,
    };
    Replica {
        input,
        applied,
        task: tokio::spawn(task.run(input_rx)),
    }
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
    /// The last sequence it recorded.
    last_submitted: Option<u64>,
    /// The dictionary new chunks are compressed with, while it pays.
    dictionary: Option<Arc<Dictionary>>,
    /// Checkpoints taken since start, and the count at which a dictionary is next trained.
    taken: u64,
    next_training: u64,
    /// When the next checkpoint is due while serving.
    next_checkpoint: Instant,
    /// When the last one was taken.
    last_checkpoint: Option<Instant>,
    /// The last acknowledgement sent and when.
    ack_sent: Option<(u64, Instant)>,
    /// After a failure, when the standby tries again.
    retry_at: Option<Instant>,
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
        let (changes_tx, mut changes) = mpsc::channel::<()>(1);
        let mut watcher: Option<notify::RecommendedWatcher> = None;
        let mut announcements = self.ctx.node.subscribe_announcements();
        loop {
            let wake = self.wake_at(input.borrow().as_ref());
            tokio::select! {
                changed = input.changed() => if changed.is_err() { return },
                announced = announcements.recv() => match announced {
                    Ok(a) => {
                        let now = input.borrow().clone();
                        if let Some(now) = now {
                            self.prefetch(&now, a);
                        }
                        continue;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep_until(wake.into()) => {}
                Some(()) = changes.recv() => {
                    // A change in the watched source: a checkpoint as soon as it settles and
                    // min_interval_ms has passed since the last one.
                    tokio::time::sleep(WATCH_SETTLE).await;
                    while changes.try_recv().is_ok() {}
                    let min = Duration::from_millis(self.config.min_interval_ms);
                    let earliest = self.last_checkpoint.map_or_else(Instant::now, |t| t + min);
                    self.next_checkpoint = self.next_checkpoint.min(earliest.max(Instant::now()));
                }
            }
            let Some(now) = input.borrow().clone() else {
                continue;
            };
            if produces(&now) {
                if self.config.watch && watcher.is_none() {
                    watcher = self.watch_source(&changes_tx);
                }
                if Instant::now() >= self.next_checkpoint {
                    self.produce(&now).await;
                }
            } else {
                watcher = None;
                if applies(&now) {
                    self.apply(&now, &mut input).await;
                }
            }
            self.collect_garbage(&now).await;
        }
    }

    fn wake_at(&self, input: Option<&ReplicaInput>) -> Instant {
        let later = Instant::now() + Duration::from_secs(3600);
        match input {
            Some(i) if produces(i) => self.next_checkpoint,
            Some(i) if applies(i) => self
                .retry_at
                .or(self.ack_sent.map(|(_, at)| at + ACK_RESEND))
                .unwrap_or(later),
            _ => later,
        }
    }

    /// Watches the source for changes (inotify); the periodic checkpoint remains the fallback.
    fn watch_source(&self, changes: &mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher;
        let changes = changes.clone();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                // Full means a checkpoint is already coming.
                let _ = changes.try_send(());
            }
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

    /// Takes a checkpoint and records it on chain.
    async fn produce(&mut self, input: &ReplicaInput) {
        let started = Instant::now();
        self.next_checkpoint = started + Duration::from_millis(self.config.interval_ms);
        self.last_checkpoint = Some(started);
        // After a promotion the service starts from the applied checkpoint: unchanged, it
        // needs no new one.
        let previous = self
            .last_taken
            .or_else(|| self.applied.borrow().as_ref().map(|a| a.root));
        let dictionary = self.dictionary.clone();
        let taken = match self
            .producer
            .take(self.store.clone(), dictionary, previous)
            .await
        {
            Ok(Some(taken)) => taken,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(service = %self.service, error = %e, "no checkpoint this time");
                self.ctx
                    .metrics
                    .replication_snapshot_failed(&self.service, e.label());
                return;
            }
        };
        let root = taken.manifest.root();
        let latest = input.chain.latest.map(|(s, _)| s);
        let sequence = latest.max(self.last_submitted).map_or(1, |s| s + 1);
        // Standbys start fetching now, while the block that records it is being decided.
        if let Err(e) = self
            .ctx
            .node
            .announce_checkpoint(self.service.clone(), sequence, root)
            .await
        {
            tracing::warn!(error = %e, "cannot announce a checkpoint");
        }
        let call = RuntimeCall::Checkpoints(pallet_checkpoints::Call::Submit {
            service: self.service.clone(),
            epoch: input.epoch,
            sequence,
            manifest_root: root,
            size_bytes: taken.stats.bytes,
            changed_bytes: taken.stats.new_bytes,
        });
        if !self.ctx.submitter.submit(call, "checkpoint").await {
            return;
        }
        self.last_taken = Some(root);
        self.last_submitted = Some(sequence);
        self.ctx.metrics.replication_checkpoint_taken(
            &self.service,
            &taken.stats,
            started.elapsed(),
        );
        tracing::info!(
            "checkpoint taken service={} sequence={sequence} epoch={} root={root} files={} bytes={} new_bytes={} ms={}",
            self.service,
            input.epoch,
            taken.stats.files,
            taken.stats.bytes,
            taken.stats.new_bytes,
            started.elapsed().as_millis()
        );
        self.ctx.metrics.replication_compression(&self.store.stats);
        self.taken += 1;
        if self.taken >= self.next_training {
            self.train_dictionary(&taken.manifest).await;
        }
    }

    /// Trains a dictionary on the chunks of `manifest` and uses it if it pays — more than the
    /// one in use, if any; drops the one in use when it no longer pays (the data changed).
    async fn train_dictionary(&mut self, manifest: &Manifest) {
        let ids: Vec<H256> = manifest.chunk_ids().into_iter().collect();
        if ids.len() < MIN_TRAINING_SAMPLES {
            self.next_training = self.taken + 1;
            return;
        }
        self.next_training = self.taken + TRAIN_EVERY;
        let step = ids.len().div_ceil(TRAINING_SAMPLES);
        let sample: Vec<H256> = ids.into_iter().step_by(step).collect();
        let store = self.store.clone();
        let current = self.dictionary.clone();
        let trained = tokio::task::spawn_blocking(move || {
            let chunks: Vec<Vec<u8>> = sample.iter().filter_map(|id| store.get(id).ok()).collect();
            let candidate = train_and_measure(&chunks)?;
            let current_gain = match &current {
                Some(d) => Some(measure(d, &chunks)?),
                None => None,
            };
            if let Some((d, _)) = &candidate {
                store.put_dictionary(d)?;
            }
            Ok::<_, drchain_replication::ReplicationError>((candidate, current_gain))
        })
        .await;
        let (candidate, current_gain) = match trained {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => {
                return tracing::warn!(error = %e, "cannot train a compression dictionary")
            }
            Err(e) => return tracing::warn!(error = %e, "dictionary training task failed"),
        };
        let current_gain = current_gain.map_or(0.0, |g: DictionaryGain| g.gain());
        let chosen = match candidate {
            Some((d, gain)) if gain.pays() && gain.gain() > current_gain + 0.02 => {
                tracing::info!(
                    "compression dictionary trained service={} gain={:.1}% (zstd alone: {} bytes, with it: {} bytes): in use",
                    self.service,
                    gain.gain() * 100.0,
                    gain.without,
                    gain.with
                );
                self.dictionary = Some(Arc::new(d));
                gain.gain()
            }
            _ if current_gain >= drchain_replication::compress::MIN_DICTIONARY_GAIN => current_gain,
            other => {
                if self.dictionary.take().is_some() || other.is_some() {
                    tracing::info!(
                        "compression dictionary not used service={}: it saves less than {:.0}% on this data",
                        self.service,
                        drchain_replication::compress::MIN_DICTIONARY_GAIN * 100.0
                    );
                }
                0.0
            }
        };
        self.ctx
            .metrics
            .replication_dictionary_gain(&self.service, chosen);
    }

    /// The active node announced a checkpoint: a standby fetches its chunks at once, in the
    /// background, so applying it when a block records it is local work. Announcements from
    /// anyone else, or of what is already applied, are ignored.
    fn prefetch(&self, input: &ReplicaInput, announced: Announcement) {
        let from_active = input.chain.active == Some(announced.from);
        let newer = self
            .applied
            .borrow()
            .as_ref()
            .is_none_or(|a| a.sequence < announced.sequence);
        if announced.service != self.service || !from_active || !newer || !applies(input) {
            return;
        }
        let node = self.ctx.node.clone();
        let hold = self.store.hold();
        let timeout = Duration::from_millis(self.config.fetch_timeout_ms);
        let service = self.service.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let fetched = node.fetch_checkpoint(announced.root, timeout).await;
            drop(hold);
            match fetched {
                Ok(Ok(_)) => tracing::debug!(
                    "announced checkpoint fetched service={service} sequence={} ms={}",
                    announced.sequence,
                    started.elapsed().as_millis()
                ),
                Ok(Err(reason)) => tracing::debug!(
                    "announced checkpoint not fetched service={service} sequence={}: {reason}",
                    announced.sequence
                ),
                Err(_) => {}
            }
        });
    }

    /// Brings the target to the chain's latest checkpoint and acknowledges it.
    async fn apply(
        &mut self,
        input: &ReplicaInput,
        rx: &mut watch::Receiver<Option<ReplicaInput>>,
    ) {
        let Some((sequence, root)) = input.chain.latest else {
            return;
        };
        let current = self.applied.borrow().clone();
        let up_to_date = current
            .as_ref()
            .is_some_and(|a| a.sequence == sequence && a.root == root);
        if !up_to_date {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return;
            }
            self.retry_at = None;
            let started = Instant::now();
            let hold = self.store.hold();
            let timeout = Duration::from_millis(self.config.fetch_timeout_ms);
            let fetch = self.ctx.node.fetch_checkpoint(root, timeout);
            // A promotion while fetching: stop, the target must not change under on_promote.
            let manifest = tokio::select! {
                fetched = fetch => fetched,
                _ = rx.wait_for(|i| !i.as_ref().is_some_and(applies)) => return,
            };
            let manifest = match manifest {
                Ok(Ok(m)) => m,
                Ok(Err(reason)) => return self.apply_failed(sequence, &reason),
                Err(e) => return self.apply_failed(sequence, &e.to_string()),
            };
            match self.materialize(manifest, sequence, root).await {
                Ok(applied) => {
                    drop(hold);
                    tracing::info!(
                        "checkpoint applied service={} sequence={sequence} root={root} ms={}",
                        self.service,
                        started.elapsed().as_millis()
                    );
                    self.ctx
                        .metrics
                        .replication_applied(&self.service, applied.sequence);
                    self.applied.send_replace(Some(applied));
                }
                Err(reason) => return self.apply_failed(sequence, &reason),
            }
        }
        self.acknowledge(input, sequence).await;
    }

    async fn materialize(
        &self,
        manifest: Manifest,
        sequence: u64,
        root: H256,
    ) -> Result<Applied, String> {
        let store = self.store.clone();
        let target = self.config.target.clone();
        let shown = self.applied.borrow().as_ref().map(|a| a.root);
        tokio::task::spawn_blocking(move || {
            // Unchanged files are linked from the checkpoint shown now, not written again.
            let shown = shown.and_then(|root| store.manifest(&root).ok());
            materialize_after(
                &manifest,
                &store,
                &target,
                &label(sequence, &root),
                shown.as_ref(),
            )
            .map(|path| Applied {
                sequence,
                root,
                path,
            })
            .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("apply task failed: {e}")))
    }

    fn apply_failed(&mut self, sequence: u64, reason: &str) {
        tracing::warn!(
            "cannot apply checkpoint service={} sequence={sequence}: {reason}; the target keeps the previous one",
            self.service
        );
        self.ctx.metrics.replication_apply_failed(&self.service);
        self.retry_at = Some(Instant::now() + RETRY);
    }

    /// Tells the chain this node holds `sequence`, unless it knows or was told lately.
    async fn acknowledge(&mut self, input: &ReplicaInput, sequence: u64) {
        if input.chain.held.is_some_and(|h| h >= sequence) {
            self.ack_sent = None;
            return;
        }
        if self
            .ack_sent
            .is_some_and(|(s, at)| s == sequence && at.elapsed() < ACK_RESEND)
        {
            return;
        }
        let call = RuntimeCall::Checkpoints(pallet_checkpoints::Call::Acknowledge {
            service: self.service.clone(),
            sequence,
        });
        if self
            .ctx
            .submitter
            .submit(call, "checkpoint acknowledgement")
            .await
        {
            self.ack_sent = Some((sequence, Instant::now()));
        } else {
            self.retry_at = Some(Instant::now() + RETRY);
        }
    }

    /// Removes from the shared chunk store what no service's kept checkpoints need.
    async fn collect_garbage(&self, input: &ReplicaInput) {
        let mut roots = input.chain.keep_roots.clone();
        roots.extend(self.last_taken);
        roots.extend(self.applied.borrow().as_ref().map(|a| a.root));
        self.ctx.kept.set(&self.service, roots);
        if !self.ctx.kept.due(Instant::now()) {
            return;
        }
        let store = self.store.clone();
        let roots = self.ctx.kept.all();
        let metrics = self.ctx.metrics.clone();
        let collected = tokio::task::spawn_blocking(move || {
            let manifests: Vec<Manifest> = roots
                .iter()
                .filter_map(|r| store.manifest(r).ok())
                .collect();
            let keep: Vec<&Manifest> = manifests.iter().collect();
            let stats = store.collect_garbage(&keep)?;
            metrics.replication_store_bytes(store.disk_usage()?);
            Ok::<_, drchain_replication::ReplicationError>(stats)
        })
        .await;
        match collected {
            Ok(Ok(stats)) if stats.removed > 0 => tracing::info!(
                "chunk store collected: removed={} freed_bytes={} kept_bytes={}",
                stats.removed,
                stats.freed_bytes,
                stats.kept_bytes
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "chunk store collection failed"),
            Err(e) => tracing::warn!(error = %e, "chunk store collection task failed"),
        }
    }
}
