//! `drchain proxy`: an L4 TCP proxy that follows the chain.
//!
//! It subscribes to finalized heads on a node's RPC and, at each one, asks for the service
//! (`failover_service`). New connections go to the endpoint of the node the chain has as
//! **active** (a promoting node is not yet serving); while the service has no active node, or
//! the proxy has lost the chain, new connections are refused (closed at once). When the active
//! node or the epoch changes, connections to the old one are closed: its lease is over, and a
//! client must reconnect to the new active rather than keep writing to a deposed one.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use drchain_support::{AccountId, Epoch, ServiceName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::client::{Described, RpcClient};
use drchain_rpc::views::ServiceView;
use drchain_rpc::{DrchainApiClient, SubstrateApiClient};

/// Where new connections go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The active node.
    pub node: AccountId,
    pub epoch: Epoch,
    /// Its endpoint for the service.
    pub address: String,
}

/// The target a service view implies: its active node's endpoint, if it has both.
pub fn target_of(view: &ServiceView) -> Option<Target> {
    let node = view.active?;
    let address = view
        .nodes
        .iter()
        .find(|n| n.node == node)?
        .endpoint
        .clone()?;
    Some(Target {
        node,
        epoch: view.epoch,
        address,
    })
}

/// Follows `service` over the RPC nodes in `urls` (the next one when one fails), publishing
/// the target. Never returns; publishes `None` while it has no chain to follow.
pub async fn follow(
    urls: Vec<String>,
    service: ServiceName,
    targets: watch::Sender<Option<Target>>,
) {
    let mut attempt = 0usize;
    loop {
        let url = &urls[attempt % urls.len()];
        attempt += 1;
        if let Err(e) = follow_one(url, &service, &targets).await {
            tracing::warn!(%url, "lost the chain: {e:#}");
        }
        if targets.send_replace(None).is_some() {
            tracing::warn!(service = %service, "refusing connections until the chain is back");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn follow_one(
    url: &str,
    service: &ServiceName,
    targets: &watch::Sender<Option<Target>>,
) -> Result<()> {
    let client = RpcClient::connect(url).await?;
    let mut heads = client
        .chain_subscribe_finalized_heads()
        .await
        .doing("following finalized heads")?;
    tracing::info!(%url, service = %service, "following the chain");
    loop {
        let view: ServiceView = client
            .failover_service(service.clone())
            .await
            .doing("reading the service")?;
        let target = target_of(&view);
        let changed = targets.send_if_modified(|t| {
            let changed = *t != target;
            *t = target.clone();
            changed
        });
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
                    view.epoch,
                    view.phase
                ),
            }
        }
        match heads.next().await {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("finalized heads subscription"),
            None => anyhow::bail!("the node closed the subscription"),
        }
    }
}

/// Accepts connections on `listener` and forwards each to the current target.
pub async fn serve(
    listener: TcpListener,
    targets: watch::Receiver<Option<Target>>,
    connect_timeout: Duration,
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
            tracing::debug!(%peer, "refused: no active node");
            continue;
        };
        let targets = targets.clone();
        tokio::spawn(async move {
            forward(client, peer, target, targets, connect_timeout).await;
        });
    }
}

async fn forward(
    mut client: TcpStream,
    peer: SocketAddr,
    target: Target,
    mut targets: watch::Receiver<Option<Target>>,
    connect_timeout: Duration,
) {
    let connect = tokio::time::timeout(connect_timeout, TcpStream::connect(&target.address)).await;
    let mut upstream = match connect {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, address = %target.address, error = %e, "active endpoint refused");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, address = %target.address, "active endpoint timed out");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let moved = targets.wait_for(|t| t.as_ref() != Some(&target));
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = moved => {
            tracing::info!(%peer, node = %target.node, epoch = target.epoch, "closing a connection to a node that is no longer active");
        }
    }
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
        let (tx, rx) = watch::channel(None);
        tokio::spawn(follow(args.rpc, service, tx));
        let connect_timeout = Duration::from_millis(args.connect_timeout_ms);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            () = serve(listener, rx, connect_timeout) => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok(())
    })
}
