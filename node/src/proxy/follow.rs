//! Following the chain for one service: which node is active, from the freshest RPC node
//! that keeps sending finalized heads.
//!
//! The proxy routes only on fresh information. When no head arrives from the followed node
//! within the bound (about the service's heartbeat timeout: a stopped, partitioned or
//! lagging node, or a stalled chain), it stops routing — by then the active it routes to may
//! have lost its lease — and follows whichever of its RPC nodes has the highest finalized
//! block.

use std::time::Duration;

use anyhow::{Context, Result};
use drchain_support::{Epoch, ServiceName};
use tokio::sync::watch;

use super::metrics::ProxyMetrics;
pub use super::target::{target_of, Target};
use super::verify::{Verified, Verifier, VerifyError};
use crate::client::{Described, RpcClient};
use drchain_rpc::views::ServiceView;
use drchain_rpc::{DrchainApiClient, SubstrateApiClient};

/// How the proxy follows the chain.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// WebSocket RPC URLs, the preferred one first.
    pub urls: Vec<String>,
    pub service: ServiceName,
    /// The longest wait for a finalized head (and for any answer) before the information is
    /// stale; `None`: the service's `heartbeat_timeout_ms`.
    pub max_head_age: Option<Duration>,
    /// With `--verify`: the chain whose genesis is all the proxy trusts (`super::verify`).
    pub verify: Option<drchain_runtime::Genesis>,
}

/// Used until the service's own heartbeat timeout is known.
const DEFAULT_MAX_HEAD_AGE: Duration = Duration::from_millis(1000);

/// Why following one node ended.
#[derive(Debug, thiserror::Error)]
enum Lost {
    /// Nothing arrived within the bound.
    #[error("no finalized head for {} ms", .0.as_millis())]
    Stale(Duration),
    /// The connection or a call failed.
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

/// Follows the service, publishing the target (`None` while it has no fresh chain). Never
/// returns.
pub async fn follow(
    config: FollowConfig,
    targets: watch::Sender<Option<Target>>,
    metrics: &ProxyMetrics,
) {
    let mut bound = config.max_head_age.unwrap_or(DEFAULT_MAX_HEAD_AGE);
    let mut following: Option<usize> = None;
    let mut next = 0usize;
    let mut failures_in_a_row = 0u64;
    let mut verifier = config.verify.as_ref().map(Verifier::new);
    loop {
        let (chosen, probed) = match freshest(&config.urls, next, bound).await {
            Some((i, client, number)) => (i, Some((client, number))),
            None => (next, None),
        };
        next = (chosen + 1) % config.urls.len();
        if following.is_some_and(|f| f != chosen) {
            metrics.rpc_switched();
        }
        following = Some(chosen);
        let url = &config.urls[chosen];
        let lost = follow_one(
            url,
            probed,
            &config,
            &mut bound,
            &targets,
            metrics,
            verifier.as_mut(),
        )
        .await;
        if matches!(lost, Lost::Stale(_)) {
            metrics.stale_head();
        }
        // Every loss of a routed chain is logged; then, while no node is fresh, only now
        // and then.
        let was_routing = targets.send_replace(None).is_some();
        failures_in_a_row = if was_routing {
            1
        } else {
            failures_in_a_row + 1
        };
        if was_routing || failures_in_a_row % 30 == 1 {
            tracing::warn!(%url, service = %config.service, "lost the chain: {lost}; refusing connections and following the freshest of the RPC nodes");
        }
        metrics.set_routing(false);
        if let Lost::Failed(_) = lost {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The URL whose node has the highest finalized block (ties: the first at or after
/// `from`), among those that answer within `bound`: its index, the connection to it, and
/// that block's number. `None` if none answers.
async fn freshest(
    urls: &[String],
    from: usize,
    bound: Duration,
) -> Option<(usize, RpcClient, u64)> {
    let probes = urls.iter().map(|url| async move {
        let probe = async {
            let client = RpcClient::connect(url).await?;
            let number = finalized_number(&client).await?;
            Ok::<_, anyhow::Error>((client, number))
        };
        tokio::time::timeout(bound, probe)
            .await
            .ok()
            .and_then(Result::ok)
    });
    let mut answers = futures::future::join_all(probes).await;
    let best = (0..urls.len())
        .map(|k| (from + k) % urls.len())
        .filter_map(|i| answers[i].as_ref().map(|(_, n)| (i, *n)))
        .fold(None, |best: Option<(usize, u64)>, (i, n)| match best {
            Some((_, b)) if b >= n => best,
            _ => Some((i, n)),
        })?;
    let (client, number) = answers[best.0].take()?;
    Some((best.0, client, number))
}

/// The number of the finalized head of the node behind `client`.
async fn finalized_number(client: &RpcClient) -> Result<u64> {
    let header = client
        .chain_get_header(None)
        .await
        .doing("reading the finalized head")?
        .context("no finalized head")?;
    number(&header.number)
}

/// Follows the service through `url` until it fails or sends no newer finalized head for
/// `bound` (which it updates from the service's heartbeat timeout unless configured). It
/// routes only after a head newer than the one the node had when it connected: a node that
/// answers but whose chain does not move (stalled, partitioned) gives nothing to route on.
async fn follow_one(
    url: &str,
    probed: Option<(RpcClient, u64)>,
    config: &FollowConfig,
    bound: &mut Duration,
    targets: &watch::Sender<Option<Target>>,
    metrics: &ProxyMetrics,
    mut verifier: Option<&mut Verifier>,
) -> Lost {
    let service = &config.service;
    let connected = tokio::time::timeout(*bound, async {
        let (client, newest) = match probed {
            Some(probed) => probed,
            None => {
                let client = RpcClient::connect(url).await?;
                let newest = finalized_number(&client).await?;
                (client, newest)
            }
        };
        let heads = client
            .chain_subscribe_finalized_heads()
            .await
            .doing("following finalized heads")?;
        Ok::<_, anyhow::Error>((client, heads, newest))
    })
    .await;
    let (client, mut heads, mut newest) = match connected {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Lost::Failed(e),
        Err(_) => return Lost::Stale(*bound),
    };
    tracing::info!(%url, service = %service, "following the chain");
    let mut deadline = tokio::time::Instant::now() + *bound;
    loop {
        let head = match tokio::time::timeout_at(deadline, heads.next()).await {
            Ok(Some(Ok(head))) => head,
            Ok(Some(Err(e))) => {
                return Lost::Failed(anyhow::Error::new(e).context("finalized heads subscription"))
            }
            Ok(None) => return Lost::Failed(anyhow::anyhow!("the node closed the subscription")),
            Err(_) => return Lost::Stale(*bound),
        };
        match number(&head.number) {
            Ok(n) if n > newest => newest = n,
            Ok(_) => continue,
            Err(e) => return Lost::Failed(e),
        }
        let read = tokio::time::timeout_at(deadline, async {
            match verifier.as_deref_mut() {
                Some(v) => match v.read(&client, service).await {
                    Ok(verified) => Ok(Some(Routing::from(verified))),
                    // Not a new head (this node lags behind one already verified).
                    Err(VerifyError::NotNewer { .. }) => Ok(None),
                    Err(e) => {
                        metrics.verify_failed();
                        Err(anyhow::Error::new(e))
                    }
                },
                None => client
                    .failover_service(service.clone())
                    .await
                    .doing("reading the service")
                    .map(|view| Some(Routing::from(&view))),
            }
        })
        .await;
        let routing = match read {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => return Lost::Failed(e),
            Err(_) => return Lost::Stale(*bound),
        };
        if config.max_head_age.is_none() {
            if let Some(ms) = routing.heartbeat_timeout_ms {
                *bound = Duration::from_millis(ms);
            }
        }
        deadline = tokio::time::Instant::now() + *bound;
        publish(service, &routing, targets, metrics);
    }
}

/// What one head says of the service, read plainly or verified.
#[derive(Debug, Clone)]
struct Routing {
    target: Option<Target>,
    heartbeat_timeout_ms: Option<u64>,
    epoch: Epoch,
    phase: String,
}

impl From<&ServiceView> for Routing {
    fn from(view: &ServiceView) -> Self {
        Self {
            target: target_of(view),
            heartbeat_timeout_ms: Some(view.config.heartbeat_timeout_ms),
            epoch: view.epoch,
            phase: view.phase.to_string(),
        }
    }
}

impl From<Verified> for Routing {
    fn from(v: Verified) -> Self {
        Self {
            target: v.target,
            heartbeat_timeout_ms: v.heartbeat_timeout_ms,
            epoch: v.epoch,
            phase: v.phase.to_owned(),
        }
    }
}

/// A block number as the RPC gives it (`0x` hex).
fn number(hex: &str) -> Result<u64> {
    u64::from_str_radix(hex.trim_start_matches("0x"), 16)
        .with_context(|| format!("block number {hex:?}"))
}

/// Publishes the target of `routing`, logging a change.
fn publish(
    service: &ServiceName,
    routing: &Routing,
    targets: &watch::Sender<Option<Target>>,
    metrics: &ProxyMetrics,
) {
    let target = routing.target.clone();
    let changed = targets.send_if_modified(|t| {
        let changed = *t != target;
        *t = target.clone();
        changed
    });
    metrics.set_routing(target.is_some());
    if changed {
        match &target {
            Some(t) => tracing::info!(
                "routing service={service} to node={} epoch={} address={}",
                t.node,
                t.epoch,
                t.address
            ),
            None => tracing::warn!(
                "no active node service={service} epoch={} phase={}: refusing connections",
                routing.epoch,
                routing.phase
            ),
        }
    }
}
