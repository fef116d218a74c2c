//! Garbage collection of the chunk store, which every replicated service of the node shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::watch;

use drchain_replication::Manifest;
use drchain_support::{ServiceName, H256};

use super::{ReplicaInput, Task, GC_EVERY};

/// The manifest roots each service's task needs kept, for collecting the shared chunk store.
#[derive(Debug)]
pub struct KeptRoots {
    services: usize,
    by_service: Mutex<Vec<(ServiceName, Vec<H256>)>>,
    last_collection: Mutex<Option<Instant>>,
    /// A collection runs (one at a time).
    collecting: AtomicBool,
    /// Collections that removed objects, counted: each service's task then reads its source
    /// whole, on a turn of its own, to look its cached chunks up in the store.
    removed: watch::Sender<u64>,
}

impl KeptRoots {
    /// For an agent replicating `services` services: nothing is collected before each of them
    /// said what it keeps.
    pub fn new(services: usize) -> Self {
        Self {
            services,
            by_service: Mutex::default(),
            last_collection: Mutex::default(),
            collecting: AtomicBool::new(false),
            removed: watch::Sender::new(0),
        }
    }

    /// Changes after each collection that removed objects.
    pub(super) fn removals(&self) -> watch::Receiver<u64> {
        self.removed.subscribe()
    }

    pub(super) fn set(&self, service: &ServiceName, roots: Vec<H256>) {
        let mut all = self
            .by_service
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match all.iter_mut().find(|(s, _)| s == service) {
            Some((_, r)) => *r = roots,
            None => all.push((service.clone(), roots)),
        }
    }

    /// Adds `root` to what `service` keeps until its next [`KeptRoots::set`]: a checkpoint
    /// being written, made one to keep before its writer lets go of the store's hold (a
    /// collection running meanwhile asks again what to keep once the hold is gone).
    pub(super) fn keep_also(&self, service: &ServiceName, root: H256) {
        let mut all = self
            .by_service
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match all.iter_mut().find(|(s, _)| s == service) {
            Some((_, r)) => r.push(root),
            None => all.push((service.clone(), vec![root])),
        }
    }

    pub(super) fn all(&self) -> Vec<H256> {
        let all = self
            .by_service
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        all.iter().flat_map(|(_, r)| r.iter().copied()).collect()
    }

    /// Whether a collection is due and none runs; if so, marks it started (call
    /// [`KeptRoots::finished`] when it ends).
    pub(super) fn due(&self, now: Instant) -> bool {
        if self.collecting.load(Ordering::Acquire) {
            return false;
        }
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
        self.collecting.store(true, Ordering::Release);
        true
    }

    fn finished(&self) {
        self.collecting.store(false, Ordering::Release);
    }
}

impl Task {
    /// Removes from the shared chunk store what no service's kept checkpoints need, beside
    /// this task: a checkpoint to take or apply does not wait for a collection (tens of
    /// milliseconds of removals on a busy disk). A checkpoint being taken or applied holds
    /// the store, which stops a collection early; one taken is kept (`KeptRoots::keep_also`)
    /// before its hold ends, and the collection asks again what to keep after any hold ended.
    pub(super) fn collect_garbage(&self, input: &ReplicaInput) {
        let mut roots = input.chain.keep_roots.clone();
        roots.extend(self.last_taken);
        roots.extend(self.applied.borrow().as_ref().map(|a| a.root));
        self.ctx.kept.set(&self.service, roots);
        if !self.ctx.kept.due(Instant::now()) {
            return;
        }
        let store = self.store.clone();
        let kept = self.ctx.kept.clone();
        let metrics = self.ctx.metrics.clone();
        tokio::spawn(async move {
            let kept_roots = kept.clone();
            let collected = tokio::task::spawn_blocking(move || {
                // Asked again after any checkpoint was written meanwhile.
                let keep = || -> Vec<Manifest> {
                    kept_roots
                        .all()
                        .iter()
                        .filter_map(|r| store.manifest(r).ok())
                        .collect()
                };
                let stats = store.collect_garbage_keeping(keep)?;
                metrics.replication_store_bytes(store.disk_usage()?);
                Ok::<_, drchain_replication::ReplicationError>(stats)
            })
            .await;
            kept.finished();
            if matches!(&collected, Ok(Ok(stats)) if stats.removed > 0) {
                kept.removed.send_modify(|n| *n += 1);
            }
            match collected {
                Ok(Ok(stats)) if stats.removed > 0 => tracing::info!(
                    "chunk store collected: removed={} freed_bytes={} kept_bytes={}",
                    stats.removed,
                    stats.freed_bytes,
                    stats.kept_bytes
                ),
                Ok(Ok(stats)) => tracing::debug!(
                    "chunk store collected: nothing to remove kept_bytes={} interrupted={}",
                    stats.kept_bytes,
                    stats.interrupted
                ),
                Ok(Err(e)) => tracing::warn!(error = %e, "chunk store collection failed"),
                Err(e) => tracing::warn!(error = %e, "chunk store collection task failed"),
            }
        });
    }
}
