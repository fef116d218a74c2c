//! The RPC server's Prometheus metrics, registered into the node's registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Calls and errors per method. Clones share the counters.
#[derive(Debug, Clone, Default)]
pub struct RpcMetrics {
    calls: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
}

impl RpcMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "rpc_calls",
            "JSON-RPC calls per method",
            metrics.calls.clone(),
        );
        registry.register(
            "rpc_errors",
            "JSON-RPC calls that returned an error, per method",
            metrics.errors.clone(),
        );
        metrics
    }

    /// Counts a call of `method` and whether it failed.
    pub fn call(&self, method: &str, failed: bool) {
        let labels = vec![("method", method.to_owned())];
        self.calls.get_or_create(&labels).inc();
        if failed {
            self.errors.get_or_create(&labels).inc();
        }
    }
}
