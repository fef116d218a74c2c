//! The standby side: prefetching announced checkpoints, applying the chain's latest one
//! atomically, and acknowledging it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use drchain_replication::{materialize_after, Manifest};
use drchain_runtime::pallet_checkpoints;
use drchain_runtime::RuntimeCall;
use drchain_support::H256;
use tokio::sync::watch;

use drchain_rpc::Announcement;

use super::{applies, label, Applied, ReplicaInput, Task, ACK_RESEND, RETRY};

impl Task {
    /// The active node announced a checkpoint: a standby fetches its chunks at once, in the
    /// background, so applying it when a block records it is local work. Announcements from
    /// anyone else, or of what is already applied, are ignored, and so is one that arrives
    /// while a prefetch runs (the next recorded checkpoint is fetched anyway): an active that
    /// announces without end cannot pile up fetches.
    pub(super) fn prefetch(&self, input: &ReplicaInput, announced: Announcement) {
        let from_active = input.chain.active == Some(announced.from);
        let newer = self
            .applied
            .borrow()
            .as_ref()
            .is_none_or(|a| a.sequence < announced.sequence);
        if announced.service != self.service || !from_active || !newer || !applies(input) {
            return;
        }
        if self.prefetching.swap(true, Ordering::AcqRel) {
            return;
        }
        let prefetching = self.prefetching.clone();
        let node = self.ctx.node.clone();
        let hold = self.store.hold();
        let timeout = Duration::from_millis(self.config.fetch_timeout_ms);
        let service = self.service.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let fetched = node.fetch_checkpoint(announced.root, timeout).await;
            drop(hold);
            prefetching.store(false, Ordering::Release);
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
    pub(super) async fn apply(
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
            self.retry_at = None;
        } else {
            self.retry_at = Some(Instant::now() + RETRY);
        }
    }
}
