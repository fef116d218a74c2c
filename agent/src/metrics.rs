//! The agent's Prometheus metrics, registered into the node's registry.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use drchain_replication::compress::CompressionStats;
use drchain_replication::snapshot::SnapshotStats;
use drchain_support::ServiceName;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Clones share the metrics.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    serving: Family<Labels, Gauge>,
    lease_remaining: Family<Labels, Gauge<f64, AtomicU64>>,
    hook_runs: Family<Labels, Counter>,
    hook_seconds: Family<Labels, Histogram>,
    demote_failing: Family<Labels, Gauge>,
    checkpoints: Family<Labels, Counter>,
    snapshot_failures: Family<Labels, Counter>,
    checkpoint_seconds: Family<Labels, Histogram>,
    checkpoint_bytes: Family<Labels, Counter>,
    checkpoint_new_bytes: Family<Labels, Counter>,
    dedup_ratio: Family<Labels, Gauge<f64, AtomicU64>>,
    applied_sequence: Family<Labels, Gauge>,
    apply_failures: Family<Labels, Counter>,
    store_bytes: Gauge,
    compression_ratio: Family<Labels, Gauge<f64, AtomicU64>>,
    dictionary_gain: Family<Labels, Gauge<f64, AtomicU64>>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self {
            serving: Family::default(),
            lease_remaining: Family::default(),
            hook_runs: Family::default(),
            // 10 ms .. ~5.5 min: hooks range from an echo to a database restore.
            hook_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.01, 2.0, 16))
            }),
            demote_failing: Family::default(),
            checkpoints: Family::default(),
            snapshot_failures: Family::default(),
            checkpoint_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
            checkpoint_bytes: Family::default(),
            checkpoint_new_bytes: Family::default(),
            dedup_ratio: Family::default(),
            applied_sequence: Family::default(),
            apply_failures: Family::default(),
            store_bytes: Gauge::default(),
            compression_ratio: Family::default(),
            dictionary_gain: Family::default(),
        }
    }
}

fn service_label(service: &ServiceName) -> Labels {
    vec![("service", service.to_string())]
}

impl AgentMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "agent_serving",
            "1 while this node's agent serves the service under its lease",
            metrics.serving.clone(),
        );
        registry.register(
            "agent_lease_remaining_seconds",
            "Seconds left on the lease this node serves the service under (0 when not serving); \
             it falls when the chain stops confirming the heartbeats, and the node stops serving \
             at 0",
            metrics.lease_remaining.clone(),
        );
        registry.register(
            "agent_hook_seconds",
            "How long each hook run took, per service and hook",
            metrics.hook_seconds.clone(),
        );
        registry.register(
            "agent_hook_runs",
            "Hook runs of this node's agent per service, hook and outcome",
            metrics.hook_runs.clone(),
        );
        registry.register(
            "agent_demote_failing",
            "on_demote failures in a row while it is being retried (0 when it succeeded): the \
             old service may still run beside the new active",
            metrics.demote_failing.clone(),
        );
        registry.register(
            "replication_checkpoints",
            "Checkpoints this node took and recorded as the active node, per service",
            metrics.checkpoints.clone(),
        );
        registry.register(
            "replication_snapshot_failures",
            "Checkpoints not taken: snapshot command failed/timed_out/not_started/empty, source_missing, storage",
            metrics.snapshot_failures.clone(),
        );
        registry.register(
            "replication_checkpoint_seconds",
            "Time to take one checkpoint (snapshot, chunking, storing)",
            metrics.checkpoint_seconds.clone(),
        );
        registry.register(
            "replication_checkpoint_bytes",
            "Bytes of the service's data read into checkpoints",
            metrics.checkpoint_bytes.clone(),
        );
        registry.register(
            "replication_checkpoint_new_bytes",
            "Bytes of those the chunk store did not hold yet (the rest was deduplicated)",
            metrics.checkpoint_new_bytes.clone(),
        );
        registry.register(
            "replication_dedup_ratio",
            "Bytes checkpointed per new byte stored, over this node's checkpoints of the service",
            metrics.dedup_ratio.clone(),
        );
        registry.register(
            "replication_applied_sequence",
            "The checkpoint this standby's target shows",
            metrics.applied_sequence.clone(),
        );
        registry.register(
            "replication_apply_failures",
            "Checkpoints a standby could not fetch or apply (retried)",
            metrics.apply_failures.clone(),
        );
        registry.register(
            "replication_store_bytes",
            "Bytes in this node's chunk store after its last garbage collection",
            metrics.store_bytes.clone(),
        );
        registry.register(
            "replication_compression_ratio",
            "Plain/stored bytes of the chunks this node stored: all of them (stored), and a sample compressed both with and without the dictionary",
            metrics.compression_ratio.clone(),
        );
        registry.register(
            "replication_dictionary_gain",
            "Fraction of zstd's output the service's trained dictionary saves (0: none in use)",
            metrics.dictionary_gain.clone(),
        );
        metrics
    }

    /// The chunk store's compression ratios.
    pub fn replication_compression(&self, stats: &CompressionStats) {
        for (kind, ratio) in [
            ("stored", stats.ratio()),
            ("with_dictionary", stats.ratio_with_dictionary()),
            ("without_dictionary", stats.ratio_without_dictionary()),
        ] {
            self.compression_ratio
                .get_or_create(&vec![("kind", kind.to_owned())])
                .set(ratio);
        }
    }

    /// What the service's dictionary saves.
    pub fn replication_dictionary_gain(&self, service: &ServiceName, gain: f64) {
        self.dictionary_gain
            .get_or_create(&service_label(service))
            .set(gain);
    }

    /// Counts a checkpoint taken of `service`.
    pub fn replication_checkpoint_taken(
        &self,
        service: &ServiceName,
        stats: &SnapshotStats,
        took: Duration,
    ) {
        let labels = service_label(service);
        self.checkpoints.get_or_create(&labels).inc();
        self.checkpoint_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        let read = self.checkpoint_bytes.get_or_create(&labels);
        read.inc_by(stats.bytes);
        let new = self.checkpoint_new_bytes.get_or_create(&labels);
        new.inc_by(stats.new_bytes);
        self.dedup_ratio
            .get_or_create(&labels)
            .set(read.get() as f64 / new.get().max(1) as f64);
    }

    /// Counts a checkpoint not taken, with why.
    pub fn replication_snapshot_failed(&self, service: &ServiceName, reason: &str) {
        self.snapshot_failures
            .get_or_create(&vec![
                ("service", service.to_string()),
                ("reason", reason.to_owned()),
            ])
            .inc();
    }

    /// The checkpoint the target shows.
    pub fn replication_applied(&self, service: &ServiceName, sequence: u64) {
        self.applied_sequence
            .get_or_create(&service_label(service))
            .set(i64::try_from(sequence).unwrap_or(i64::MAX));
    }

    /// Counts a failed fetch or apply.
    pub fn replication_apply_failed(&self, service: &ServiceName) {
        self.apply_failures
            .get_or_create(&service_label(service))
            .inc();
    }

    /// The chunk store's size.
    pub fn replication_store_bytes(&self, bytes: u64) {
        self.store_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Sets whether this node serves `service` (holds its lease).
    pub fn set_serving(&self, service: &ServiceName, serving: bool) {
        self.serving
            .get_or_create(&service_label(service))
            .set(i64::from(serving));
    }

    /// Sets how many times in a row `on_demote` failed for `service` (0: not failing).
    pub fn set_demote_failing(&self, service: &ServiceName, failures: u32) {
        self.demote_failing
            .get_or_create(&service_label(service))
            .set(i64::from(failures));
    }

    /// Sets the lease left on `service` (0 when not serving).
    pub fn set_lease_remaining(&self, service: &ServiceName, left: Duration) {
        self.lease_remaining
            .get_or_create(&service_label(service))
            .set(left.as_secs_f64());
    }

    /// Records how long a run of `hook` for `service` took.
    pub fn hook_took(&self, service: &ServiceName, hook: &str, took: Duration) {
        self.hook_seconds
            .get_or_create(&vec![
                ("service", service.to_string()),
                ("hook", hook.to_owned()),
            ])
            .observe(took.as_secs_f64());
    }

    /// Counts a run of `hook` for `service` that ended with `outcome`.
    pub fn hook_ran(&self, service: &ServiceName, hook: &str, outcome: &str) {
        self.hook_runs
            .get_or_create(&vec![
                ("service", service.to_string()),
                ("hook", hook.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }
}
