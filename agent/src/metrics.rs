//! The agent's Prometheus metrics, registered into the node's registry.

use drchain_support::ServiceName;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Clones share the metrics.
#[derive(Debug, Clone, Default)]
pub struct AgentMetrics {
    serving: Family<Labels, Gauge>,
    hook_runs: Family<Labels, Counter>,
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
            "agent_hook_runs",
            "Hook runs of this node's agent per service, hook and outcome",
            metrics.hook_runs.clone(),
        );
        metrics
    }

    /// Sets whether this node serves `service` (holds its lease).
    pub fn set_serving(&self, service: &ServiceName, serving: bool) {
        self.serving
            .get_or_create(&vec![("service", service.to_string())])
            .set(i64::from(serving));
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
