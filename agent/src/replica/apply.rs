//! The standby side: applying the active's checkpoints as it announces them, bringing the
//! target to the chain's latest recorded one otherwise, and acknowledging what the chain
//! recorded.
//!
//! An announced checkpoint is applied before a block records it — the write reaches the
//! standby in milliseconds, not a block later — but only from the node the chain says is
//! active, in the epoch the standby knows, and newer than what the target shows. Until the
//! chain records it the target is *ahead*: the standby acknowledges the latest recorded
//! checkpoint (its data is at least that new, so the election's view stays conservative)
//! and does not go back to it. If the chain records something else under that sequence, or
//! another node becomes active, the target returns to the chain's latest. Once durable, the
//! applied checkpoint is also acknowledged at once with its root, which the chain counts only
//! when it records that root under that sequence ([`Task::acknowledge_early`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use drchain_replication::materialize::{files_to_write, WithChunks};
use drchain_replication::push::VerifiedPush;
use drchain_replication::{materialize_after, Manifest, ReplicationError};
use drchain_runtime::pallet_checkpoints;
use drchain_runtime::RuntimeCall;
use drchain_support::{AccountId, Epoch, H256};
use tokio::sync::{mpsc, watch};

use drchain_rpc::Announcement;

use crate::blocking::{Work, SMALL_BYTES, SMALL_CHANGED_FILES, SMALL_CHUNKS, SMALL_FILES};

use super::{
    applies, label, root_of, Applied, ReplicaInput, Task, ACK_RESEND, EARLY_ACK_CHECK, RETRY,
};

/// An announced checkpoint whose manifest and chunks are all in the store, or in memory as
/// pushed.
#[derive(Debug)]
pub(super) struct Fetched {
    announced: Announcement,
    /// The epoch the standby knew when the announcement came.
    epoch: Epoch,
    manifest: Arc<Manifest>,
    /// The push it came in, its chunks in memory (`None`: fetched, all in the store).
    pushed: Option<Arc<VerifiedPush>>,
}

/// Why a checkpoint was not applied.
#[derive(Debug)]
pub(super) enum NotApplied {
    /// Chunks it needs are neither pushed nor stored here: fetch them first.
    Incomplete(String),
    /// Anything else (the target's disk, a failed task).
    Failed(String),
}

impl NotApplied {
    fn reason(&self) -> &str {
        match self {
            Self::Incomplete(r) | Self::Failed(r) => r,
        }
    }
}

/// The target shows a checkpoint the active announced and the chain has not recorded yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ahead {
    sequence: u64,
    root: H256,
    from: AccountId,
    epoch: Epoch,
}

impl Task {
    /// The active node announced a checkpoint: a standby fetches its chunks at once, in the
    /// background, and hands it to [`Task::apply_announced`] through `fetched`. Announcements
    /// from anyone else, or of what is already applied, are ignored, and so is one that
    /// arrives while a fetch runs (the next one, or the chain's record, brings the target up
    /// to date): an active that announces without end cannot pile up fetches.
    pub(super) fn prefetch(
        &self,
        input: &ReplicaInput,
        announced: Announcement,
        fetched: &mpsc::Sender<Fetched>,
    ) {
        if announced.service != self.service || !self.follows(input, &announced) {
            return;
        }
        if self.prefetching.swap(true, Ordering::AcqRel) {
            return;
        }
        let prefetching = self.prefetching.clone();
        let node = self.ctx.node.clone();
        let hold = self.store.hold();
        let timeout = Duration::from_millis(self.config.fetch_timeout_ms);
        let (service, epoch, fetched) = (self.service.clone(), input.epoch, fetched.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let result = node
                .fetch_checkpoint_from(announced.root, announced.from, timeout)
                .await;
            prefetching.store(false, Ordering::Release);
            match result {
                Ok(Ok(manifest)) => {
                    tracing::debug!(
                        "announced checkpoint fetched service={service} sequence={} ms={}",
                        announced.sequence,
                        started.elapsed().as_millis()
                    );
                    let _ = fetched
                        .send(Fetched {
                            announced,
                            epoch,
                            manifest: Arc::new(manifest),
                            pushed: None,
                        })
                        .await;
                }
                Ok(Err(reason)) => tracing::debug!(
                    "announced checkpoint not fetched service={service} sequence={}: {reason}",
                    announced.sequence
                ),
                Err(_) => {}
            }
            drop(hold);
        });
    }

    /// Whether `announced` is one this standby applies now: from the chain's active node,
    /// newer than the target and than the chain's latest record.
    fn follows(&self, input: &ReplicaInput, announced: &Announcement) -> bool {
        let newer_than_target = self
            .applied
            .borrow()
            .as_ref()
            .is_none_or(|a| a.sequence < announced.sequence);
        let newer_than_chain = input
            .chain
            .latest
            .is_none_or(|(s, _)| s < announced.sequence);
        applies(input)
            && input.chain.active == Some(announced.from)
            && newer_than_target
            && newer_than_chain
    }

    /// A member announced a checkpoint. One the active pushed here (the node keeps the last
    /// few, verified, chunks in memory) is applied at once from those chunks and the store, if
    /// this standby follows it; anything else is fetched first ([`Task::prefetch`]), and so
    /// is a push that needs chunks missing here (it carries only what is new since the
    /// active's previous checkpoint, which this standby may have missed).
    pub(super) async fn announced(
        &mut self,
        input: &ReplicaInput,
        announced: Announcement,
        fetched: &mpsc::Sender<Fetched>,
    ) {
        let pushed = self
            .ctx
            .node
            .pushed_checkpoint(&announced.root)
            .filter(|p| p.chunks.is_some());
        let Some(pushed) = pushed else {
            return self.prefetch(input, announced, fetched);
        };
        if announced.service != self.service || !self.follows(input, &announced) {
            return;
        }
        let applying = Fetched {
            announced,
            epoch: input.epoch,
            manifest: pushed.manifest.clone(),
            pushed: Some(pushed),
        };
        if let Some(Fetched { announced, .. }) = self.apply_announced(input, applying).await {
            self.prefetch(input, announced, fetched);
        }
    }

    /// Materializes an announced checkpoint if it still is one to follow (the role, the
    /// active and the epoch unchanged since it was announced), makes it durable, and keeps it
    /// as the target's until the chain records it. Gives the checkpoint back when chunks it
    /// needs are not here yet.
    pub(super) async fn apply_announced(
        &mut self,
        input: &ReplicaInput,
        fetched: Fetched,
    ) -> Option<Fetched> {
        let backing_off = self.retry_at.is_some_and(|t| Instant::now() < t);
        if fetched.epoch != input.epoch || !self.follows(input, &fetched.announced) || backing_off {
            return None;
        }
        let started = Instant::now();
        let hold = self.store.hold();
        let (sequence, root) = (fetched.announced.sequence, fetched.announced.root);
        let pushed = fetched.pushed.clone();
        match self
            .materialize(fetched.manifest.clone(), sequence, root, pushed.clone())
            .await
        {
            Ok(applied) => {
                self.ctx
                    .metrics
                    .replication_applied(&self.service, applied.sequence);
                self.ahead = Some(Ahead {
                    sequence,
                    root,
                    from: fetched.announced.from,
                    epoch: fetched.epoch,
                });
                self.applied.send_replace(Some(applied));
                let durable = self.make_durable(pushed).await;
                drop(hold);
                match durable {
                    Ok(()) => {
                        tracing::debug!(
                            "announced checkpoint applied service={} sequence={sequence} root={root} ms={}",
                            self.service,
                            started.elapsed().as_millis()
                        );
                        self.acknowledge_early(sequence, root).await;
                        self.prepare_next_apply().await;
                    }
                    Err(reason) => self.apply_failed(sequence, &reason),
                }
                None
            }
            Err(NotApplied::Incomplete(_)) if fetched.pushed.is_some() => Some(fetched),
            Err(e) => {
                self.apply_failed(sequence, e.reason());
                None
            }
        }
    }

    /// Whether the target shows an announced checkpoint newer than the chain's latest record
    /// `latest`, from the node still active in the same epoch: kept until recorded.
    fn ahead_of(&self, input: &ReplicaInput, latest: u64) -> bool {
        let applied = self.applied.borrow();
        self.ahead.as_ref().is_some_and(|a| {
            applied
                .as_ref()
                .is_some_and(|t| t.sequence == a.sequence && t.root == a.root)
                && a.sequence > latest
                && input.chain.active == Some(a.from)
                && input.epoch == a.epoch
        })
    }

    /// Brings the target to the chain's latest checkpoint and acknowledges it.
    pub(super) async fn apply(
        &mut self,
        input: &ReplicaInput,
        rx: &mut watch::Receiver<Option<ReplicaInput>>,
    ) {
        let Some((sequence, root)) = input.chain.latest else {
            return;
        };
        if self.ahead_of(input, sequence) {
            return self.acknowledge(input, sequence, root).await;
        }
        self.ahead = None;
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
            match self
                .materialize(Arc::new(manifest), sequence, root, None)
                .await
            {
                Ok(applied) => {
                    drop(hold);
                    // One a second or so per service: debug (the metrics and `drchain status` show
                    // replication at a glance).
                    tracing::debug!(
                        "checkpoint applied service={} sequence={sequence} root={root} ms={}",
                        self.service,
                        started.elapsed().as_millis()
                    );
                    self.ctx
                        .metrics
                        .replication_applied(&self.service, applied.sequence);
                    self.applied.send_replace(Some(applied));
                }
                Err(e) => return self.apply_failed(sequence, e.reason()),
            }
        }
        self.acknowledge(input, sequence, root).await;
        self.prepare_next_apply().await;
    }

    /// Shows the checkpoint in the target (not yet durable: see [`Task::make_durable`]).
    async fn materialize(
        &mut self,
        manifest: Arc<Manifest>,
        sequence: u64,
        root: H256,
        pushed: Option<Arc<VerifiedPush>>,
    ) -> Result<Applied, NotApplied> {
        let store = self.store.clone();
        let target = self.config.target.clone();
        let shown_root = self.applied.borrow().as_ref().map(|a| a.root);
        let cached = self
            .shown_manifest
            .take()
            .filter(|m| Some(m.0) == shown_root);
        let size = self.work_of_applying(&manifest, cached.as_ref().map(|(_, m)| &**m));
        let applying = manifest.clone();
        let applied = crate::blocking::on_this_thread(size, move || {
            // Unchanged files are linked from the checkpoint shown now, not written again (its
            // manifest kept from the last apply: reading and checking it costs its size).
            let shown = match cached {
                Some((_, m)) => Some(m),
                None => shown_root.and_then(|root| store.manifest(&root).ok().map(Arc::new)),
            };
            let manifest = applying;
            let no_chunks = HashMap::new();
            let chunks = WithChunks {
                verified: pushed
                    .as_ref()
                    .and_then(|p| p.chunks.as_ref())
                    .unwrap_or(&no_chunks),
                store: &store,
            };
            let path = materialize_after(
                &manifest,
                &chunks,
                &target,
                &label(sequence, &root),
                shown.as_deref(),
            )
            .map_err(|e| match e {
                e @ ReplicationError::Missing { .. } => NotApplied::Incomplete(e.to_string()),
                e => NotApplied::Failed(e.to_string()),
            })?;
            Ok(Applied {
                sequence,
                root,
                path,
            })
        })
        .unwrap_or_else(|e| Err(NotApplied::Failed(format!("apply failed: {e}"))));
        if let Ok(a) = &applied {
            self.shown_manifest = Some((a.root, manifest));
        }
        applied
    }

    /// Whether applying `manifest` over the shown checkpoint (`shown`, its manifest if at
    /// hand) is [`Work::Small`]: out of its prepared copy (else every file is linked), with a
    /// short listing and a few small files to write.
    fn work_of_applying(&self, manifest: &Manifest, shown: Option<&Manifest>) -> Work {
        let shown_durable = self.applied.borrow().as_ref().map(|a| (a.sequence, a.root));
        let prepared = self.durable.is_some()
            && self.next_prepared == self.durable
            && shown_durable == self.durable;
        // The listings' lengths first: comparing them costs a pass over both, here on the
        // task's thread.
        let short = |m: &Manifest| m.files.len() <= SMALL_FILES;
        let small = shown
            .filter(|s| prepared && short(s) && short(manifest))
            .is_some_and(|shown| {
                let to_write = files_to_write(manifest, shown);
                to_write.files <= SMALL_CHANGED_FILES
                    && to_write.bytes <= SMALL_BYTES
                    && to_write.chunks <= SMALL_CHUNKS
            });
        Work::small_if(small)
    }

    /// Makes what the target shows durable, with the chunks it was applied from (`pushed`,
    /// stored first if the node has not yet), before anything acknowledges it.
    async fn make_durable(&mut self, pushed: Option<Arc<VerifiedPush>>) -> Result<(), String> {
        let Some(shown) = self.applied.borrow().clone() else {
            return Ok(());
        };
        let store = self.store.clone();
        let target = self.config.target.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(pushed) = pushed {
                pushed.store(&store).map_err(|e| e.to_string())?;
            }
            // One flush covers the store too when both live on one filesystem.
            if !same_filesystem(store.dir(), &target) {
                store.sync().map_err(|e| e.to_string())?;
            }
            drchain_replication::materialize::make_durable(&target).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("flush task failed: {e}")))?;
        self.durable = Some((shown.sequence, shown.root));
        Ok(())
    }

    /// Readies the next apply once the shown checkpoint is durable and acknowledged
    /// (`materialize::prepare_next`: out of an older checkpoint's directory, relinking what
    /// changed since — the manifests come from the store, the shown one from memory — or a
    /// link per file; off the paths to showing and to acknowledging either way). Without it
    /// the next apply links every unchanged file itself.
    async fn prepare_next_apply(&mut self) {
        if self.durable.is_none() || self.next_prepared == self.durable {
            return;
        }
        let target = self.config.target.clone();
        let (store, shown) = (self.store.clone(), self.shown_manifest.clone());
        let prepared = tokio::task::spawn_blocking(move || {
            let manifest_of = |label: &str| {
                let root = root_of(label)?;
                match &shown {
                    Some((r, m)) if *r == root => Some(Manifest::clone(m)),
                    _ => store.manifest(&root).ok(),
                }
            };
            drchain_replication::materialize::prepare_next(&target, manifest_of)
        })
        .await;
        match prepared {
            Ok(Ok(())) => self.next_prepared = self.durable,
            Ok(Err(e)) => {
                tracing::debug!(service = %self.service, error = %e, "the next apply is not readied")
            }
            Err(_) => {}
        }
    }

    /// Whether the acknowledgement of `sequence` sent before its record is no longer in the
    /// pool while the chain does not show it: it was executed and the record did not count it
    /// (the chain recorded another root, or it named a sequence too far ahead).
    /// Still in the pool, it lands in the next block: the pool is looked at again in
    /// `EARLY_ACK_CHECK` (a block may show it, or the pool may drop it, without anything else
    /// waking this task).
    async fn came_too_early(&mut self, sequence: u64) -> bool {
        let Some((_, hash, _)) = self.early_ack.filter(|(s, _, _)| *s == sequence) else {
            return false;
        };
        let gone = match self.ctx.node.pending().await {
            Ok(pending) => !pending.iter().any(|x| x.hash() == hash),
            Err(_) => false,
        };
        if gone {
            tracing::debug!(
                "checkpoint acknowledgement service={} sequence={sequence} came before the checkpoint was recorded: sending it again",
                self.service
            );
        } else {
            self.early_ack = Some((sequence, hash, Instant::now() + EARLY_ACK_CHECK));
        }
        gone
    }

    fn apply_failed(&mut self, sequence: u64, reason: &str) {
        tracing::warn!(
            "cannot apply checkpoint service={} sequence={sequence}: {reason}; the target keeps the previous one",
            self.service
        );
        self.ctx.metrics.replication_apply_failed(&self.service);
        self.retry_at = Some(Instant::now() + RETRY);
    }

    /// Tells the chain at once that this node holds the announced checkpoint `sequence` it
    /// just made durable, naming its root: the acknowledgement counts once the chain records
    /// that root under `sequence` — in the recording block when it reaches a block no later
    /// than the record (one executed first is held by the chain until the record), else in
    /// the next. If it left the pool without the chain showing it, [`Task::acknowledge`] sends
    /// it again.
    async fn acknowledge_early(&mut self, sequence: u64, root: H256) {
        let call = RuntimeCall::Checkpoints(pallet_checkpoints::Call::AcknowledgeRoot {
            service: self.service.clone(),
            sequence,
            manifest_root: root,
        });
        let sent = self
            .ctx
            .submitter
            .submit_for_hash(call, "checkpoint acknowledgement")
            .await;
        if let Some(hash) = sent {
            self.ack_sent = Some((sequence, Instant::now() + ACK_RESEND));
            self.early_ack = Some((sequence, hash, Instant::now() + EARLY_ACK_CHECK));
        }
    }

    /// Tells the chain this node holds `sequence` (recorded with `root`), unless it knows or
    /// was told lately. What the target shows must be durable first.
    async fn acknowledge(&mut self, input: &ReplicaInput, sequence: u64, root: H256) {
        let shown = self.applied.borrow().as_ref().map(|a| (a.sequence, a.root));
        if shown.is_some() && shown != self.durable {
            if let Err(reason) = self.make_durable(None).await {
                return self.apply_failed(sequence, &reason);
            }
        }
        if let Some(held) = input.chain.held.filter(|h| *h >= sequence) {
            // Not one sent early for a newer checkpoint, still on its way.
            if self.ack_sent.is_some_and(|(s, _)| s <= held) {
                self.ack_sent = None;
                self.early_ack = None;
            }
            return;
        }
        if self
            .ack_sent
            .is_some_and(|(s, resend_at)| s == sequence && Instant::now() < resend_at)
            && !self.came_too_early(sequence).await
        {
            return;
        }
        let call = RuntimeCall::Checkpoints(pallet_checkpoints::Call::AcknowledgeRoot {
            service: self.service.clone(),
            sequence,
            manifest_root: root,
        });
        if self
            .ctx
            .submitter
            .submit(call, "checkpoint acknowledgement")
            .await
        {
            self.ack_sent = Some((sequence, Instant::now() + ACK_RESEND));
            self.early_ack = None;
            self.retry_at = None;
        } else {
            self.retry_at = Some(Instant::now() + RETRY);
        }
    }
}

/// Whether `a` and the directory holding `target` are on one filesystem (one `syncfs` covers
/// both).
fn same_filesystem(a: &Path, target: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let parent = target.parent().unwrap_or(Path::new("."));
    match (std::fs::metadata(a), std::fs::metadata(parent)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev(),
        _ => false,
    }
}
