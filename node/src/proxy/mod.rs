//! `drchain proxy`: an L4 TCP proxy that follows the chain.
//!
//! It subscribes to finalized heads on a node's RPC and, at each new one, asks for the
//! service (`failover_service`) ([`follow`]). New connections go to the endpoint of the node
//! the chain has as **active** (a promoting node is not yet serving); while the service has
//! no active node, or the proxy has no fresh chain (no newer head within about the heartbeat
//! timeout), new connections are refused (closed at once). When the active node or the epoch
//! changes, or the chain goes stale, connections to the old one are closed: its lease may be
//! over, and a client must reconnect to the new active rather than keep writing to a deposed
//! one.

pub mod follow;
pub mod metrics;
pub mod target;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use drchain_support::ServiceName;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use follow::{target_of, FollowConfig, Target};
use metrics::{ConnectionOutcome, ProxyMetrics};

/// Accepts connections on `listener` and forwards each to the current target.
pub async fn serve(
    listener: TcpListener,
    targets: watch::Receiver<Option<Target>>,
    connect_timeout: Duration,
    metrics: Arc<ProxyMetrics>,
) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let target = targets.borrow().clone();
        let Some(target) = target else {
            tracing::debug!(%peer, "refused: no active node, or no fresh chain");
            metrics.connection(ConnectionOutcome::Refused);
            continue;
        };
        let targets = targets.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let outcome = forward(client, peer, target, targets, connect_timeout).await;
            metrics.connection(outcome);
        });
    }
}

async fn forward(
    mut client: TcpStream,
    peer: SocketAddr,
    target: Target,
    mut targets: watch::Receiver<Option<Target>>,
    connect_timeout: Duration,
) -> ConnectionOutcome {
    let connect = tokio::time::timeout(connect_timeout, TcpStream::connect(&target.address)).await;
    let mut upstream = match connect {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, address = %target.address, error = %e, "active endpoint refused");
            return ConnectionOutcome::UpstreamFailed;
        }
        Err(_) => {
            tracing::debug!(%peer, address = %target.address, "active endpoint timed out");
            return ConnectionOutcome::UpstreamFailed;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let moved = targets.wait_for(|t| t.as_ref() != Some(&target));
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = moved => {
            tracing::info!(%peer, node = %target.node, epoch = target.epoch, "closing a connection: the node is no longer active, or the chain went stale");
        }
    }
    ConnectionOutcome::Forwarded
}

/// `drchain proxy`.
pub fn proxy(args: crate::cli::ProxyArgs) -> Result<()> {
    crate::run::init_logging();
    let service = ServiceName::new(args.service.clone())
        .map_err(|e| anyhow::anyhow!("--service {:?}: {e}", args.service))?;
    if args.rpc.is_empty() {
        anyhow::bail!("give at least one --rpc ws://HOST:PORT");
    }
    for url in &args.rpc {
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            anyhow::bail!("--rpc {url:?}: the proxy subscribes, so it needs a ws:// URL");
        }
    }
    let verify = if args.verify {
        let spec = crate::chain_spec::load(&args.chain)?;
        Some(
            spec.build_genesis()
                .map_err(|e| anyhow::anyhow!("--chain {}: {e}", args.chain))?,
        )
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        tracing::info!(
            "proxy for service={service} listening on {}",
            listener.local_addr()?
        );
        let metrics = Arc::new(ProxyMetrics::new(service.clone()));
        metrics.set_routing(false);
        if let Some(port) = args.prometheus_port {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let (bound, _) = metrics::serve(addr, metrics.clone())
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            tracing::info!("proxy metrics at http://{bound}/metrics");
        }
        let (tx, rx) = watch::channel(None);
        let config = FollowConfig {
            urls: args.rpc,
            service,
            max_head_age: args.max_head_age_ms.map(Duration::from_millis),
            verify,
        };
        let following = metrics.clone();
        tokio::spawn(async move { follow::follow(config, tx, &following).await });
        let connect_timeout = Duration::from_millis(args.connect_timeout_ms);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            () = serve(listener, rx, connect_timeout, metrics) => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok(())
    })
}
