//! What `drchain proxy` exports on `--prometheus-port`: whether it routes, why it stopped, how
//! often it changed RPC node, and what became of client connections.

use std::net::SocketAddr;
use std::sync::Arc;

use drchain_support::ServiceName;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// The proxy's metrics, all labelled with its service.
#[derive(Debug)]
pub struct ProxyMetrics {
    registry: Registry,
    service: ServiceName,
    routing: Family<Labels, Gauge>,
    stale_heads: Family<Labels, Counter>,
    rpc_switches: Family<Labels, Counter>,
    connections: Family<Labels, Counter>,
    verify_failures: Family<Labels, Counter>,
}

/// What became of a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionOutcome {
    /// Forwarded to the active node.
    Forwarded,
    /// Closed at once: no active node, or the proxy has no fresh chain.
    Refused,
    /// The active node's endpoint did not accept it in time.
    UpstreamFailed,
}

impl ConnectionOutcome {
    fn label(self) -> &'static str {
        match self {
            ConnectionOutcome::Forwarded => "forwarded",
            ConnectionOutcome::Refused => "refused",
            ConnectionOutcome::UpstreamFailed => "upstream_failed",
        }
    }
}

impl ProxyMetrics {
    /// The metrics of a proxy for `service`.
    pub fn new(service: ServiceName) -> Self {
        let (routing, stale_heads, rpc_switches, connections) = Default::default();
        let verify_failures = Family::<Labels, Counter>::default();
        let mut registry = Registry::with_prefix("drchain_proxy");
        registry.register(
            "routing",
            "1 while the proxy routes new connections (the chain is fresh and has an active node)",
            Family::<Labels, Gauge>::clone(&routing),
        );
        registry.register(
            "stale_heads",
            "Times no finalized head arrived from the followed RPC node within the bound",
            Family::<Labels, Counter>::clone(&stale_heads),
        );
        registry.register(
            "rpc_switches",
            "Times the proxy started following a different RPC node",
            Family::<Labels, Counter>::clone(&rpc_switches),
        );
        registry.register(
            "connections",
            "Client connections by outcome (forwarded, refused, upstream_failed)",
            Family::<Labels, Counter>::clone(&connections),
        );
        registry.register(
            "verify_failures",
            "With --verify: answers of the followed RPC node that did not check (a forged certificate, a value that does not match its proof)",
            Family::<Labels, Counter>::clone(&verify_failures),
        );
        Self {
            registry,
            service,
            routing,
            stale_heads,
            rpc_switches,
            connections,
            verify_failures,
        }
    }

    fn labels(&self) -> Labels {
        vec![("service", self.service.to_string())]
    }

    /// Whether new connections are routed.
    pub fn set_routing(&self, routing: bool) {
        self.routing
            .get_or_create(&self.labels())
            .set(i64::from(routing));
    }

    /// No head arrived in time.
    pub fn stale_head(&self) {
        self.stale_heads.get_or_create(&self.labels()).inc();
    }

    /// An answer of the followed node did not check (`--verify`).
    pub fn verify_failed(&self) {
        self.verify_failures.get_or_create(&self.labels()).inc();
    }

    /// The proxy follows another RPC node.
    pub fn rpc_switched(&self) {
        self.rpc_switches.get_or_create(&self.labels()).inc();
    }

    /// A client connection ended up as `outcome`.
    pub fn connection(&self, outcome: ConnectionOutcome) {
        let mut labels = self.labels();
        labels.push(("outcome", outcome.label().to_owned()));
        self.connections.get_or_create(&labels).inc();
    }

    fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics not encoded");
        }
        out
    }
}

/// Serves `metrics` at `/metrics` on `addr`.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<ProxyMetrics>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    Ok(
        drchain_agent::http::serve(addr, "proxy metrics", move |request| {
            crate::metrics::respond(request, || metrics.render())
        })
        .await?,
    )
}
