//! The active side: taking checkpoints, recording and announcing them, and the compression
//! dictionary they use.

use std::sync::Arc;
use std::time::{Duration, Instant};

use drchain_replication::compress::{measure, train_and_measure, DictionaryGain};
use drchain_replication::push::CheckpointPush;
use drchain_replication::{Dictionary, Manifest, ReplicationError};
use drchain_runtime::pallet_checkpoints;
use drchain_runtime::RuntimeCall;
use drchain_support::H256;
use tokio::sync::mpsc;

use super::{ReplicaInput, Task, MIN_TRAINING_SAMPLES, TRAINING_SAMPLES, TRAIN_EVERY};
use crate::snapshot::forget_changes;

/// How long the active's own store write, flush and record of a checkpoint wait after its
/// push has been handed to the candidates' writers. The push is what a write's latency hangs
/// on; the record has a block (~50 ms) to be acknowledged in. Begun at once, the flush (a
/// journal commit) and the record (signed, gossiped and checked by every validator, then a
/// block) ran while the candidates applied the push. On the 2-vCPU VM of docs/benchmarks.md,
/// where the nodes share the CPUs and the disk, a write reached a standby's target at p50
/// 1.01–1.29 ms with this pause against 1.20–1.42 ms without (4 runs each, alternated); the
/// acknowledgement on chain came no later (26–30 ms), in the recording block 9 times in 10.
const AFTER_PUSH: Duration = Duration::from_millis(1);

/// What a dictionary training found, sent back to the replication task when it is done: a
/// new dictionary and what it saves, if one could be trained, and what the one in use when it
/// started saves on the same chunks.
#[derive(Debug)]
pub(super) struct Trained {
    started: Instant,
    result: Result<Result<Candidates, ReplicationError>, tokio::task::JoinError>,
}

type Candidates = (Option<(Dictionary, DictionaryGain)>, Option<DictionaryGain>);

impl Task {
    /// Takes a checkpoint and records it on chain. It reads the whole source if `read_whole`
    /// (no watcher, or the periodic reading for changes inotify missed — in a directory made
    /// just before its watch was added, through a hard link from elsewhere), else only what
    /// the watcher saw change.
    pub(super) async fn produce(
        &mut self,
        input: &ReplicaInput,
        read_whole: bool,
        trained: &mpsc::Sender<Trained>,
    ) {
        let started = Instant::now();
        if read_whole {
            forget_changes(&self.producer.changes);
            self.last_rescan = Some(started);
        }
        self.next_checkpoint = started + Duration::from_millis(self.config.interval_ms);
        // After a promotion the service starts from the applied checkpoint: unchanged, it
        // needs no new one — if the chain recorded it as its latest. One the old active
        // announced but never recorded (or an older one) is recorded now, under this epoch, so
        // the standbys follow the data this node serves.
        let previous = self.last_taken.or_else(|| {
            self.applied
                .borrow()
                .as_ref()
                .filter(|a| input.chain.latest == Some((a.sequence, a.root)))
                .map(|a| a.root)
        });
        let dictionary = self.dictionary.clone();
        let taken = match self
            .producer
            .take(self.store.clone(), dictionary, previous)
            .await
        {
            Ok(Some(taken)) => taken,
            // Nothing new: not a checkpoint, so the next change need not wait
            // `min_interval_ms` after this reading.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(service = %self.service, error = %e, "no checkpoint this time");
                self.ctx
                    .metrics
                    .replication_snapshot_failed(&self.service, e.label());
                return;
            }
        };
        self.last_checkpoint = Some(started);
        let root = taken.encoded.root;
        // Kept from now: a collection must not remove what it writes once it lets go of its
        // hold on the store (after writing, before the chain records it).
        self.ctx.kept.keep_also(&self.service, root);
        let latest = input.chain.latest.map(|(s, _)| s);
        let sequence = latest.max(self.last_submitted).map_or(1, |s| s + 1);
        // Standbys get it now, while the block that records it is being decided: pushed with
        // what is new in it when that is small (from memory: it is stored after), else
        // announced (they fetch it, from the store: stored first).
        let known = self
            .last_manifest
            .clone()
            .filter(|_| self.last_taken.is_some() && self.last_taken == previous);
        let (store, service) = (self.store.clone(), self.service.clone());
        let built = crate::blocking::on_this_thread(taken.work, move || {
            let previous = || match known {
                Some(m) => Some(m),
                None => previous.and_then(|root| store.manifest(&root).ok().map(Arc::new)),
            };
            let push = CheckpointPush::build_with(
                &store,
                taken.unwritten(),
                service,
                sequence,
                &taken.manifest,
                &taken.encoded,
                previous,
            );
            (push, taken)
        });
        let Ok((push, taken)) = built else {
            return tracing::warn!(service = %self.service, "building a checkpoint push failed: no checkpoint this time");
        };
        let stats = taken.stats.clone();
        let manifest = taken.manifest.clone();
        let written = match push {
            Ok(Some(push)) => {
                if let Err(e) = self.ctx.node.push_checkpoint(push).await {
                    tracing::warn!(error = %e, "cannot push a checkpoint");
                }
                tokio::time::sleep(AFTER_PUSH).await;
                taken.write(self.store.clone()).await
            }
            _ => {
                let written = taken.write(self.store.clone()).await;
                if written.is_ok() {
                    let announced = self
                        .ctx
                        .node
                        .announce_checkpoint(self.service.clone(), sequence, root)
                        .await;
                    if let Err(e) = announced {
                        tracing::warn!(error = %e, "cannot announce a checkpoint");
                    }
                }
                written
            }
        };
        // Durable before the chain records it (members fetch from this store after a crash).
        let store = self.store.clone();
        let flushed = match written {
            Ok(()) => tokio::task::spawn_blocking(move || store.sync())
                .await
                .unwrap_or_else(|e| {
                    Err(drchain_replication::ReplicationError::read(
                        "the chunk store",
                        format!("flush task failed: {e}"),
                    ))
                }),
            Err(e) => Err(e),
        };
        if let Err(e) = flushed {
            return tracing::warn!(service = %self.service, error = %e, "checkpoint not recorded: the chunk store cannot be written or flushed");
        }
        let call = RuntimeCall::Checkpoints(pallet_checkpoints::Call::Submit {
            service: self.service.clone(),
            epoch: input.epoch,
            sequence,
            manifest_root: root,
            size_bytes: stats.bytes,
            changed_bytes: stats.new_bytes,
        });
        if !self.ctx.submitter.submit(call, "checkpoint").await {
            return;
        }
        self.last_taken = Some(root);
        self.last_manifest = Some(manifest.clone());
        self.last_submitted = Some(sequence);
        self.ctx
            .metrics
            .replication_checkpoint_taken(&self.service, &stats, started.elapsed());
        // One per interval: debug, like the per-block lines.
        tracing::debug!(
            "checkpoint taken service={} sequence={sequence} epoch={} root={root} files={} unchanged_files={} chunks_looked_up={} bytes={} new_bytes={} ms={}",
            self.service,
            input.epoch,
            stats.files,
            stats.unchanged_files,
            stats.chunks_looked_up,
            stats.bytes,
            stats.new_bytes,
            started.elapsed().as_millis()
        );
        self.ctx.metrics.replication_compression(&self.store.stats);
        self.taken += 1;
        if self.taken >= self.next_training && !self.training {
            self.train_dictionary(&manifest, trained);
        }
    }

    /// Starts training a dictionary on the chunks of `manifest`, beside this task: 0.5–1.7 s
    /// of a CPU for 500–900 sampled chunks of 16 KiB on the VM of docs/benchmarks.md, which writes must
    /// not wait for. [`Task::use_trained`] takes what it found when it sends it on `trained`.
    fn train_dictionary(&mut self, manifest: &Manifest, trained: &mpsc::Sender<Trained>) {
        let ids: Vec<H256> = manifest.chunk_ids().into_iter().collect();
        if ids.len() < MIN_TRAINING_SAMPLES {
            self.next_training = self.taken + 1;
            return;
        }
        let step = ids.len().div_ceil(TRAINING_SAMPLES);
        let sample: Vec<H256> = ids.into_iter().step_by(step).collect();
        let started = Instant::now();
        tracing::debug!(
            "training a compression dictionary service={} samples={}",
            self.service,
            sample.len()
        );
        let store = self.store.clone();
        let current = self.dictionary.clone();
        let trained = trained.clone();
        self.training = true;
        let training = tokio::task::spawn_blocking(move || {
            let chunks: Vec<Vec<u8>> = sample.iter().filter_map(|id| store.get(id).ok()).collect();
            let candidate = train_and_measure(&chunks)?;
            let current_gain = match &current {
                Some(d) => Some(measure(d, &chunks)?),
                None => None,
            };
            if let Some((d, _)) = &candidate {
                store.put_dictionary(d)?;
            }
            Ok::<_, ReplicationError>((candidate, current_gain))
        });
        tokio::spawn(async move {
            let result = training.await;
            // Not sent when the task stopped meanwhile: nobody uses the dictionary then.
            let _ = trained.send(Trained { started, result }).await;
        });
    }

    /// Uses the dictionary a training found if it pays — more than the one in use, if any;
    /// drops the one in use when it no longer pays (the data changed).
    pub(super) fn use_trained(&mut self, trained: Trained) {
        self.training = false;
        // Counted from here, not from its start: checkpoints taken while it ran (a busy
        // source takes one every `min_interval_ms`) would make the next one due at once.
        self.next_training = self.taken + TRAIN_EVERY;
        let Trained { started, result } = trained;
        let (candidate, current_gain) = match result {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => {
                return tracing::warn!(error = %e, "cannot train a compression dictionary")
            }
            Err(e) => return tracing::warn!(error = %e, "dictionary training task failed"),
        };
        let current_gain = current_gain.map_or(0.0, |g: DictionaryGain| g.gain());
        let ms = started.elapsed().as_millis();
        let chosen = match candidate {
            Some((d, gain)) if gain.pays() && gain.gain() > current_gain + 0.02 => {
                tracing::info!(
                    "compression dictionary trained service={} gain={:.1}% (zstd alone: {} bytes, with it: {} bytes): in use ms={ms}",
                    self.service,
                    gain.gain() * 100.0,
                    gain.without,
                    gain.with
                );
                self.dictionary = Some(Arc::new(d));
                gain.gain()
            }
            _ if current_gain >= drchain_replication::compress::MIN_DICTIONARY_GAIN => {
                tracing::debug!(
                    "compression dictionary trained service={}: no better than the one in use ({:.1}% saved), which stays ms={ms}",
                    self.service,
                    current_gain * 100.0
                );
                current_gain
            }
            other => {
                let said = self.dictionary.take().is_some() || other.is_some();
                let message = format!(
                    "compression dictionary not used service={}: it saves less than {:.0}% on this data ms={ms}",
                    self.service,
                    drchain_replication::compress::MIN_DICTIONARY_GAIN * 100.0
                );
                // When one was dropped or a new one did not pay; else (too few samples) for who
                // debugs.
                if said {
                    tracing::info!("{message}");
                } else {
                    tracing::debug!("{message}");
                }
                0.0
            }
        };
        self.ctx
            .metrics
            .replication_dictionary_gain(&self.service, chosen);
    }
}
