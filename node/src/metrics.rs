//! Prometheus metrics: what the node and the chain are doing, served as text on
//! `--prometheus-port` (default 9615) at `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use drchain_runtime::{pallet_checkpoints, pallet_failover, EventRecord, Header, RuntimeEvent};
use drchain_support::{AccountId, Overlay, StateRead};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use drchain_agent::AgentMetrics;
use drchain_rpc::RpcMetrics;

type Labels = Vec<(&'static str, String)>;

/// Every metric the node exports. Updating one is an atomic operation, so the node loop
/// and the RPC server update them directly.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Best block height (with BFT finality, the finalized one).
    pub best_height: Gauge,
    /// Finalized block height.
    pub finalized_height: Gauge,
    /// Connected peers.
    pub peers: Gauge,
    /// Transactions in the pool.
    pub pool_size: Gauge,
    /// Height consensus is deciding.
    pub consensus_height: Gauge,
    /// Round consensus is in (-1 when idle).
    pub consensus_round: Gauge,
    /// Time to validate, execute and store a block, per finalized block.
    pub block_import: Histogram,
    /// Transactions in finalized blocks.
    pub finalized_transactions: Counter,
    /// Per service: the epoch.
    pub service_epoch: Family<Labels, Gauge>,
    /// Per service, node and role: 1 for each candidate's current role.
    pub service_role: Family<Labels, Gauge>,
    /// Per service: elections that replaced or filled a holder (not the first election).
    pub failovers: Family<Labels, Counter>,
    /// Per service: blocks in which no candidate within the RPO could be promoted.
    pub promotions_withheld: Family<Labels, Counter>,
    /// Per service: elections of a node whose data was older than the RPO.
    pub data_loss_accepted: Family<Labels, Counter>,
    /// Per service and candidate: how much older its data is than the latest checkpoint, ms
    /// (absent while it holds no retained checkpoint).
    pub replication_lag: Family<Labels, Gauge>,
    /// Per service: the latest recorded checkpoint.
    pub checkpoint_sequence: Family<Labels, Gauge>,
    /// Per reason: peers caught sending provably bad data (kept out for a while).
    pub peer_misbehaviour: Family<Labels, Counter>,
    /// Connections dropped because gossip did not know the peer on every topic.
    pub gossip_reconnects: Counter,
    /// Per topic: gossip messages that could not be published (not for want of peers).
    pub gossip_publish_failures: Family<Labels, Counter>,
    /// Per topic and verdict (accept, ignore, reject): gossip messages received.
    pub gossip_messages: Family<Labels, Counter>,
    /// Sync requests refused: over the peer's rate, or too many being answered.
    pub sync_requests_refused: Counter,
    /// Per path (`direct`, `libp2p`): checkpoint pushes sent to candidates.
    pub checkpoint_pushes: Family<Labels, Counter>,
    /// How long this node's state sync took (0: it did not join by state sync).
    pub state_sync_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Per unrevoked member: seconds from the head's time until its admission ends (its
    /// certificate's or its CA's end; negative once past).
    pub member_expiry: Family<Labels, Gauge>,
    /// The RPC server's.
    pub rpc: RpcMetrics,
    /// Resident memory of the process.
    pub resident_memory: Gauge,
    /// CPU time the process used (user and system), seconds.
    pub cpu_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Per block finalized by consensus here: from its timestamp (set by its proposer) to
    /// this node finalizing it.
    pub finality_latency: Histogram,
    /// Between the timestamps of consecutive finalized blocks.
    pub block_interval: Histogram,
    /// Per validator: the latest finalized block whose commit certificate carries its
    /// precommit.
    pub validator_last_signed: Family<Labels, Gauge>,
    /// Per validator: turns as proposer that did not produce the block (seen since start).
    pub validator_missed_turns: Family<Labels, Counter>,
    /// The previous finalized block's timestamp, for `block_interval`.
    last_timestamp: std::sync::atomic::AtomicU64,
    /// The failover agent's.
    pub agent: AgentMetrics,
    /// The database's size and its disk's free space.
    pub disk: crate::disk::DiskMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("drchain");
        let best_height = Gauge::default();
        let finalized_height = Gauge::default();
        let peers = Gauge::default();
        let pool_size = Gauge::default();
        let consensus_height = Gauge::default();
        let consensus_round = Gauge::default();
        let block_import = Histogram::new(exponential_buckets(0.000_5, 2.0, 14));
        let finalized_transactions = Counter::default();
        let service_epoch = Family::default();
        let service_role = Family::default();
        let failovers = Family::default();
        let resident_memory = Gauge::default();
        registry.register("best_height", "Best block height", best_height.clone());
        registry.register(
            "finalized_height",
            "Finalized block height",
            finalized_height.clone(),
        );
        registry.register("peers", "Connected peers", peers.clone());
        registry.register(
            "pool_transactions",
            "Transactions in the pool",
            pool_size.clone(),
        );
        registry.register(
            "consensus_height",
            "Height consensus is deciding",
            consensus_height.clone(),
        );
        registry.register(
            "consensus_round",
            "Round consensus is in (-1 when idle)",
            consensus_round.clone(),
        );
        registry.register(
            "block_import_seconds",
            "Time to validate, execute and store a finalized block",
            block_import.clone(),
        );
        registry.register(
            "finalized_transactions",
            "Transactions in finalized blocks",
            finalized_transactions.clone(),
        );
        registry.register("service_epoch", "Epoch per service", service_epoch.clone());
        registry.register(
            "service_role",
            "1 for each candidate's current role per service",
            service_role.clone(),
        );
        registry.register(
            "failovers",
            "Elections that replaced a holder or filled a vacancy, per service",
            failovers.clone(),
        );
        let promotions_withheld = Family::default();
        registry.register(
            "promotions_withheld",
            "Blocks in which no candidate within the service's RPO (max_lag_ms) could be promoted",
            promotions_withheld.clone(),
        );
        let data_loss_accepted = Family::default();
        registry.register(
            "data_loss_accepted",
            "Elections of a node whose data was older than the RPO (allow_data_loss or an admin)",
            data_loss_accepted.clone(),
        );
        let replication_lag = Family::default();
        registry.register(
            "replication_lag_ms",
            "Per service and candidate: how much older its data is than the latest checkpoint, on chain",
            replication_lag.clone(),
        );
        let checkpoint_sequence = Family::default();
        registry.register(
            "checkpoint_sequence",
            "The latest checkpoint recorded per service",
            checkpoint_sequence.clone(),
        );
        let peer_misbehaviour = Family::default();
        registry.register(
            "peer_misbehaviour",
            "Peers caught sending provably bad data, per reason; each is disconnected and kept out for a while",
            peer_misbehaviour.clone(),
        );
        let gossip_reconnects = Counter::default();
        registry.register(
            "gossip_reconnects",
            "Connections to a member dropped because gossip did not know it on every topic (a lost subscription announcement); the next connection repeats it",
            gossip_reconnects.clone(),
        );
        let gossip_publish_failures = Family::default();
        registry.register(
            "gossip_publish_failures",
            "Gossip messages not published for another reason than having no peer, per topic",
            gossip_publish_failures.clone(),
        );
        let gossip_messages = Family::default();
        registry.register(
            "gossip_messages",
            "Gossip messages received per topic and verdict: accept (forwarded), ignore, reject (the relay is penalized)",
            gossip_messages.clone(),
        );
        let sync_requests_refused = Counter::default();
        registry.register(
            "sync_requests_refused",
            "Block-sync requests refused: over the asking peer's rate, or too many being answered at once",
            sync_requests_refused.clone(),
        );
        let checkpoint_pushes = Family::default();
        registry.register(
            "checkpoint_pushes",
            "Checkpoint pushes sent to candidates, per path: direct (a connection of their own) or libp2p (a stream of the member connection, when no direct one could be made)",
            checkpoint_pushes.clone(),
        );
        let state_sync_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "state_sync_duration_seconds",
            "How long this node's state sync took when it joined (--sync fast); 0 if it did not",
            state_sync_seconds.clone(),
        );
        let member_expiry = Family::default();
        registry.register(
            "member_expiry_seconds",
            "Per member: seconds until its certificate or its CA ends, at the head's time (a validator leaves the set then)",
            member_expiry.clone(),
        );
        let rpc = RpcMetrics::register(&mut registry);
        let agent = AgentMetrics::register(&mut registry);
        let disk = crate::disk::DiskMetrics::register(&mut registry);
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the node process",
            resident_memory.clone(),
        );
        let cpu_seconds = Gauge::default();
        registry.register(
            "process_cpu_seconds",
            "CPU time the node process used, user and system (a counter: rate() it)",
            cpu_seconds.clone(),
        );
        // 10 ms .. ~40 s.
        let finality_latency = Histogram::new(exponential_buckets(0.01, 2.0, 12));
        registry.register(
            "finality_latency_seconds",
            "From a block's timestamp to this node finalizing it through consensus",
            finality_latency.clone(),
        );
        let block_interval = Histogram::new(exponential_buckets(0.01, 2.0, 12));
        registry.register(
            "block_interval_seconds",
            "Between the timestamps of consecutive finalized blocks",
            block_interval.clone(),
        );
        let validator_last_signed = Family::<Labels, Gauge>::default();
        registry.register(
            "validator_last_signed_height",
            "Per validator: the latest finalized block whose commit certificate carries its precommit",
            validator_last_signed.clone(),
        );
        let validator_missed_turns = Family::<Labels, Counter>::default();
        registry.register(
            "validator_missed_turns",
            "Per validator: proposer turns that did not produce the block (seen by this node since it started)",
            validator_missed_turns.clone(),
        );
        Self {
            registry,
            best_height,
            finalized_height,
            peers,
            pool_size,
            consensus_height,
            consensus_round,
            block_import,
            finalized_transactions,
            service_epoch,
            service_role,
            failovers,
            promotions_withheld,
            data_loss_accepted,
            replication_lag,
            checkpoint_sequence,
            peer_misbehaviour,
            gossip_reconnects,
            gossip_publish_failures,
            gossip_messages,
            sync_requests_refused,
            checkpoint_pushes,
            state_sync_seconds,
            member_expiry,
            rpc,
            resident_memory,
            cpu_seconds,
            finality_latency,
            block_interval,
            validator_last_signed,
            validator_missed_turns,
            last_timestamp: std::sync::atomic::AtomicU64::new(0),
            agent,
            disk,
        }
    }

    /// The counters of checkpoint pushes sent, one per path.
    pub fn checkpoint_push_counters(&self) -> crate::checkpoint_push::PushCounters {
        let path = |p: &str| {
            self.checkpoint_pushes
                .get_or_create(&vec![("path", p.to_owned())])
                .clone()
        };
        crate::checkpoint_push::PushCounters {
            direct: path("direct"),
            libp2p: path("libp2p"),
        }
    }

    /// Records a finalized block.
    pub fn block_finalized(&self, header: &Header, transactions: usize, events: &[EventRecord]) {
        self.best_height.set(header.number as i64);
        self.finalized_height.set(header.number as i64);
        self.finalized_transactions.inc_by(transactions as u64);
        for record in events {
            if let RuntimeEvent::Failover(event) = &record.event {
                let service = vec![("service", event.service().to_string())];
                if event.is_failover() {
                    self.failovers.get_or_create(&service).inc();
                }
                match event {
                    pallet_failover::Event::PromotionWithheld { .. } => {
                        self.promotions_withheld.get_or_create(&service).inc();
                    }
                    pallet_failover::Event::DataLossAccepted { .. } => {
                        self.data_loss_accepted.get_or_create(&service).inc();
                    }
                    _ => {}
                }
            }
        }
    }

    /// Records a block this node finalized: how long finality took (`now_ms` is when; only
    /// for blocks decided by consensus here, `synced` ones are history), the block interval,
    /// which validators signed its certificate and which missed their proposer turn.
    pub fn record_finality(
        &self,
        header: &Header,
        now_ms: u64,
        synced: bool,
        signers: &[AccountId],
        state: &dyn StateRead,
    ) {
        use std::sync::atomic::Ordering;
        if !synced {
            self.finality_latency
                .observe(now_ms.saturating_sub(header.timestamp) as f64 / 1000.0);
        }
        let previous = self
            .last_timestamp
            .swap(header.timestamp, Ordering::Relaxed);
        if previous != 0 && header.timestamp >= previous {
            self.block_interval
                .observe((header.timestamp - previous) as f64 / 1000.0);
        }
        let overlay = Overlay::new(state);
        let label = |account: &AccountId| {
            let name = pallet_membership::member(&overlay, account)
                .map(|m| common_name(&m.subject).to_owned())
                .unwrap_or_default();
            vec![("validator", account.to_string()), ("name", name)]
        };
        for signer in signers {
            self.validator_last_signed
                .get_or_create(&label(signer))
                .set(i64::try_from(header.number).unwrap_or(i64::MAX));
        }
        // A miss at this height was recorded by this block (`record_missed_turns`).
        for (account, misses) in pallet_membership::proposers::MissedTurns::iter(&overlay) {
            if misses.last() == Some(&header.number) {
                self.validator_missed_turns
                    .get_or_create(&label(&account))
                    .inc();
            }
        }
    }

    /// Sets the per-service gauges from the finalized state.
    pub fn record_services(&self, state: &dyn StateRead) {
        let overlay = Overlay::new(state);
        self.service_epoch.clear();
        self.service_role.clear();
        self.replication_lag.clear();
        self.checkpoint_sequence.clear();
        for (name, config, service) in pallet_failover::services(&overlay) {
            self.service_epoch
                .get_or_create(&vec![("service", name.to_string())])
                .set(service.epoch as i64);
            if let Some(latest) = pallet_checkpoints::latest(&overlay, &name) {
                self.checkpoint_sequence
                    .get_or_create(&vec![("service", name.to_string())])
                    .set(i64::try_from(latest).unwrap_or(i64::MAX));
            }
            for node in &config.candidates {
                let lag = pallet_checkpoints::data_lag(&overlay, &name, node);
                if let Some(ms) = lag.lag_ms {
                    self.replication_lag
                        .get_or_create(&vec![
                            ("service", name.to_string()),
                            ("node", node.to_string()),
                        ])
                        .set(i64::try_from(ms).unwrap_or(i64::MAX));
                }
            }
            for (node, record) in pallet_failover::node_records(&overlay, &name) {
                let role = crate::words::json_word(&record.role);
                self.service_role
                    .get_or_create(&vec![
                        ("service", name.to_string()),
                        ("node", node.to_string()),
                        ("role", role),
                    ])
                    .set(1);
            }
        }
    }

    /// Sets the members' expiry gauges from the finalized state at the head's time `now`.
    pub fn record_members(&self, state: &dyn StateRead, now: u64) {
        let overlay = Overlay::new(state);
        self.member_expiry.clear();
        for (account, m) in pallet_membership::Members::iter(&overlay) {
            if m.revoked.is_some() {
                continue;
            }
            let until = pallet_membership::admitted_until(&overlay, &m);
            let seconds = (i128::from(until) - i128::from(now)) / 1000;
            self.member_expiry
                .get_or_create(&vec![
                    ("account", account.to_string()),
                    ("name", common_name(&m.subject).to_owned()),
                ])
                .set(i64::try_from(seconds).unwrap_or(i64::MIN));
        }
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        if let Some(rss) = resident_memory_bytes() {
            self.resident_memory.set(rss as i64);
        }
        if let Some(cpu) = cpu_seconds() {
            self.cpu_seconds.set(cpu);
        }
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics not encoded");
        }
        out
    }
}

pub use pallet_membership::common_name;

/// The process's resident set size, from `/proc/self/statm` (Linux).
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The process's CPU time (user + system), from `/proc/self/stat` (Linux).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second = rustix::param::clock_ticks_per_second();
    (per_second > 0).then(|| ticks as f64 / per_second as f64)
}

/// Serves `GET /metrics` on `addr` until the returned task is dropped or aborted. Binding
/// fails with the address in the error.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    Ok(drchain_agent::http::serve(addr, "metrics", move |request| {
        respond(request, || metrics.render())
    })
    .await?)
}

/// Answers a request to a metrics endpoint: `render()` at `GET /metrics`, 404 or 405 else.
pub(crate) fn respond<B>(
    request: &Request<B>,
    render: impl FnOnce() -> String,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&hyper::Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(),
        ),
        (&hyper::Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: metrics are at /metrics\n".to_owned(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET is served\n".to_owned(),
        ),
    };
    drchain_agent::http::response(status, content_type, body)
}
