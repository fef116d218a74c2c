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
//! another node becomes active, the target returns to the chain's latest.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use drchain_replication::{materialize_after, Manifest};
use drchain_runtime::pallet_checkpoints;
use drchain_runtime::RuntimeCall;
use drchain_support::{AccountId, Epoch, H256};
use tokio::sync::{mpsc, watch};

use drchain_rpc::Announcement;

use super::{applies, label, Applied, ReplicaInput, Task, ACK_RESEND, RETRY};

/// An announced checkpoint whose manifest and chunks are all in the store.
#[derive(Debug)]
pub(super) struct Fetched {
    announced: Announcement,
    /// The epoch the standby knew when the announcement came.
    epoch: Epoch,
    manifest: Manifest,
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
                            manifest,
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

    /// Materializes a fetched announced checkpoint if it still is one to follow (the role,
    /// the active and the epoch unchanged since it was announced).
    pub(super) async fn apply_announced(&mut self, input: &ReplicaInput, fetched: Fetched) {
        let Fetched {
            announced,
            epoch,
            manifest,
        } = fetched;
        let backing_off = self.retry_at.is_some_and(|t| Instant::now() < t);
        if epoch != input.epoch || !self.follows(input, &announced) || backing_off {
            return;
        }
        let started = Instant::now();
        let hold = self.store.hold();
        match self
            .materialize(manifest, announced.sequence, announced.root)
            .await
        {
            Ok(applied) => {
                drop(hold);
                tracing::debug!(
                    "announced checkpoint applied service={} sequence={} root={} ms={}",
                    self.service,
                    applied.sequence,
                    applied.root,
                    started.elapsed().as_millis()
                );
                self.ctx
                    .metrics
                    .replication_applied(&self.service, applied.sequence);
                self.ahead = Some(Ahead {
                    sequence: applied.sequence,
                    root: applied.root,
                    from: announced.from,
                    epoch,
                });
                self.applied.send_replace(Some(applied));
            }
            Err(reason) => self.apply_failed(announced.sequence, &reason),
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
            return self.acknowledge(input, sequence).await;
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
            match self.materialize(manifest, sequence, root).await {
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
            let path = materialize_after(
                &manifest,
                &store,
                &target,
                &label(sequence, &root),
                shown.as_ref(),
            )
            .map_err(|e| e.to_string())?;
            // The fetch left the chunks unflushed; the target's flush covered them if both
            // live on one filesystem. Durable either way before anything is acknowledged.
            if !same_filesystem(store.dir(), &target) {
                store.sync().map_err(|e| e.to_string())?;
            }
            Ok(Applied {
                sequence,
                root,
                path,
            })
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
