//! The JSON-RPC server: HTTP and WebSocket on one port (default 9944), Substrate's method
//! names where they exist ([`substrate`]) and drchain's own under `failover_`, `status_`,
//! `config_`, `checkpoints_` and `membership_` ([`drchain`]). `docs/rpc.md` documents each.
//!
//! Reads go to a database snapshot, never through the node's task, so queries neither wait
//! for consensus nor slow it; submissions and pool and peer queries are messages to the task.

pub mod api;
pub mod dashboard;
pub mod drchain;
pub mod metrics;
pub mod node_api;
mod strict;
pub mod substrate;
pub mod timeline;
pub mod transfer_http;
pub mod views;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use drchain_consensus::pool::PoolError;
use drchain_consensus::store::kv::KeyValueDb;
use drchain_consensus::store::{ChainReader, StoreError};
use drchain_support::H256;
use jsonrpsee::server::middleware::rpc::RpcServiceBuilder;
use jsonrpsee::server::{BatchRequestConfig, ServerBuilder, ServerConfig, ServerHandle};
use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::RpcModule;
use serde::Serialize;

pub use api::{DrchainApiClient, DrchainApiServer, SubstrateApiClient, SubstrateApiServer};
pub use metrics::RpcMetrics;
pub use node_api::{Announcement, ChainStatus, FinalizedBlock, NodeApi, NodeStopped, PeerInfo};

/// Largest request body, bytes: a few maximal extrinsics in a batch.
pub const MAX_REQUEST_BYTES: u32 = 1024 * 1024;
/// Largest response body, bytes: a full block with its certificate fits.
pub const MAX_RESPONSE_BYTES: u32 = 64 * 1024 * 1024;
/// Open connections at most; more are refused.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 100;
/// Subscriptions per connection at most.
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: u32 = 1024;
/// Calls in one batch at most.
pub const MAX_BATCH: u32 = 256;

/// Which methods the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RpcMethods {
    /// Everything except methods that reveal or change the node's private state.
    Safe,
    /// Everything.
    Unsafe,
    /// `unsafe` when listening on loopback only, else `safe`.
    Auto,
}

/// Which origins browsers may call from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// Any origin.
    All,
    /// Only these origins (exactly as browsers send them, e.g. `http://localhost:3000`).
    List(Vec<String>),
}

impl std::str::FromStr for Cors {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "all" || s == "*" {
            return Ok(Cors::All);
        }
        let origins: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(bad) = origins
            .iter()
            .find(|o| !(o.starts_with("http://") || o.starts_with("https://")))
        {
            return Err(format!(
                "origin {bad:?} must start with http:// or https:// (or use \"all\")"
            ));
        }
        Ok(Cors::List(origins))
    }
}

impl Cors {
    /// The default: browser pages served from this machine.
    pub fn local() -> Self {
        let mut origins = vec![];
        for host in ["localhost", "127.0.0.1"] {
            for scheme in ["http", "https"] {
                origins.push(format!("{scheme}://{host}"));
            }
        }
        Cors::List(origins)
    }

    fn allows(&self, origin: &str) -> bool {
        match self {
            Cors::All => true,
            Cors::List(list) => list.iter().any(|allowed| {
                origin == allowed
                    || origin
                        .strip_prefix(allowed.as_str())
                        .is_some_and(|port| port.starts_with(':'))
            }),
        }
    }
}

/// How to run the RPC server.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Method policy.
    pub methods: RpcMethods,
    /// Allowed browser origins.
    pub cors: Cors,
    /// Open connections at most.
    pub max_connections: u32,
}

/// What the node says about itself in `system_*`.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// `--name`.
    pub name: String,
    /// The chain spec's name.
    pub chain: String,
    /// The node's version.
    pub version: String,
    /// Its libp2p peer id, as text.
    pub peer_id: String,
    /// The genesis hash.
    pub genesis: H256,
    /// This node's failover agent, once it runs (`agent_status`).
    pub local_agent: LocalAgent,
}

/// How the RPC reads this node's failover agent: its per-service reports as JSON. The agent
/// starts after the RPC server (it talks to the node through it), so the slot is filled later;
/// empty on a node without `--agent-config`.
#[derive(Clone, Default)]
pub struct LocalAgent(Arc<OnceLock<Box<dyn Fn() -> serde_json::Value + Send + Sync>>>);

impl LocalAgent {
    /// Makes `reports` the agent's view; once only (later calls are ignored).
    pub fn set(&self, reports: impl Fn() -> serde_json::Value + Send + Sync + 'static) {
        let _ = self.0.set(Box::new(reports));
    }

    /// The agent's reports, if an agent runs.
    pub fn reports(&self) -> Option<serde_json::Value> {
        self.0.get().map(|f| f())
    }
}

impl std::fmt::Debug for LocalAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LocalAgent")
            .field(&self.0.get().is_some())
            .finish()
    }
}

/// Reads of the chain through one database snapshot.
pub type SnapshotReader<'a> = ChainReader<'a, dyn KeyValueDb + 'a>;

/// What every method handler gets; clones share it.
#[derive(Debug, Clone)]
pub struct RpcContext {
    node: Arc<dyn NodeApi>,
    info: Arc<NodeInfo>,
    deny_unsafe: bool,
    /// Every method's name, sorted, once all are registered (`rpc_methods`).
    methods: Arc<OnceLock<Vec<String>>>,
}

impl RpcContext {
    /// Runs `f` over a consistent snapshot of the finalized chain.
    fn read<T>(
        &self,
        f: impl FnOnce(&SnapshotReader<'_>) -> Result<T, RpcError>,
    ) -> Result<T, RpcError> {
        let snapshot = self.node.snapshot();
        f(&ChainReader::new(&*snapshot))
    }

    fn check_unsafe(&self, method: &'static str) -> Result<(), RpcError> {
        if self.deny_unsafe {
            Err(RpcError::Unsafe { method })
        } else {
            Ok(())
        }
    }
}

/// Why a call failed; each becomes a JSON-RPC error with a message that says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The params are malformed or out of range (-32602).
    #[error("invalid params: {reason}")]
    InvalidParams {
        /// What is wrong.
        reason: String,
    },
    /// The named thing does not exist (-32004).
    #[error("{what} not found")]
    NotFound {
        /// What was asked for.
        what: String,
    },
    /// The method is unsafe and the server runs with `--rpc-methods safe` (-32601).
    #[error("{method} is an unsafe method; this node serves only safe methods (--rpc-methods)")]
    Unsafe {
        /// The method.
        method: &'static str,
    },
    /// The pool refused the transaction (1010, like Substrate's invalid transaction).
    #[error("transaction refused: {0}")]
    Refused(#[from] PoolError),
    /// The database failed (-32603).
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The node stopped (-32603).
    #[error(transparent)]
    Stopped(#[from] NodeStopped),
    /// The node could not get what was asked for in time (-32005).
    #[error("{what} is unavailable: {reason}")]
    Unavailable {
        /// What was asked for.
        what: String,
        /// Why not.
        reason: String,
    },
    /// An answer could not be rendered as JSON (-32603).
    #[error("answer not encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

impl RpcError {
    fn invalid(reason: impl Into<String>) -> Self {
        RpcError::InvalidParams {
            reason: reason.into(),
        }
    }

    fn code(&self) -> i32 {
        match self {
            RpcError::InvalidParams { .. } | RpcError::Store(StoreError::StateNotKept { .. }) => {
                -32602
            }
            RpcError::NotFound { .. } => -32004,
            RpcError::Unsafe { .. } => -32601,
            RpcError::Refused(_) => 1010,
            RpcError::Unavailable { .. } => -32005,
            RpcError::Store(_) | RpcError::Stopped(_) | RpcError::Encode(_) => -32603,
        }
    }
}

impl From<RpcError> for ErrorObjectOwned {
    fn from(e: RpcError) -> Self {
        ErrorObjectOwned::owned(e.code(), e.to_string(), None::<()>)
    }
}

/// Sends `value` as a notification; false once the subscriber is gone.
async fn notify<T: Serialize>(sink: &jsonrpsee::SubscriptionSink, value: &T) -> bool {
    match serde_json::value::to_raw_value(value) {
        Ok(raw) => sink.send(raw).await.is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "subscription notification not encoded");
            false
        }
    }
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve JSON-RPC on {addr}: {source}")]
pub struct RpcStartError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

/// Every method of the API, for the node `node` with `info`.
pub fn module(node: Arc<dyn NodeApi>, info: NodeInfo, deny_unsafe: bool) -> RpcModule<()> {
    let ctx = RpcContext {
        node,
        info: Arc::new(info),
        deny_unsafe,
        methods: Arc::default(),
    };
    let mut module = RpcModule::new(());
    let parts = [
        SubstrateApiServer::into_rpc(ctx.clone()).into(),
        DrchainApiServer::into_rpc(ctx.clone()).into(),
    ];
    for part in parts {
        let part: jsonrpsee::Methods = part;
        if let Err(e) = module.merge(part) {
            // The API's names are distinct by construction: this is a programming error.
            tracing::error!(error = %e, "RPC method defined twice");
        }
    }
    let mut names: Vec<String> = module.method_names().map(str::to_owned).collect();
    names.sort_unstable();
    let _ = ctx.methods.set(names);
    module
}

/// Starts the RPC server for `node`; it runs until the handle is stopped or dropped.
pub async fn start(
    config: &RpcConfig,
    node: Arc<dyn NodeApi>,
    metrics: RpcMetrics,
    info: NodeInfo,
) -> Result<(SocketAddr, ServerHandle), RpcStartError> {
    let deny_unsafe = match config.methods {
        RpcMethods::Safe => true,
        RpcMethods::Unsafe => false,
        RpcMethods::Auto => !config.listen.ip().is_loopback(),
    };
    let cors = config.cors.clone();
    let http_middleware = tower::ServiceBuilder::new()
        .layer(dashboard::DashboardLayer)
        .layer(transfer_http::TransferLayer::new(
            node.chunk_store(),
            deny_unsafe,
        ))
        .layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::AllowOrigin::predicate(
                    move |origin: &hyper::header::HeaderValue, _| {
                        origin.to_str().is_ok_and(|o| cors.allows(o))
                    },
                ))
                .allow_methods([hyper::Method::POST, hyper::Method::GET])
                .allow_headers([hyper::header::CONTENT_TYPE]),
        );
    let server_config = ServerConfig::builder()
        .max_request_body_size(MAX_REQUEST_BYTES)
        .max_response_body_size(MAX_RESPONSE_BYTES)
        .max_connections(config.max_connections)
        .max_subscriptions_per_connection(MAX_SUBSCRIPTIONS_PER_CONNECTION)
        .set_batch_request_config(BatchRequestConfig::Limit(MAX_BATCH))
        .build();
    let rpc_middleware = RpcServiceBuilder::new()
        .layer_fn(move |service| strict::StrictParams::new(service, metrics.clone()));
    let server = ServerBuilder::default()
        .set_config(server_config)
        .set_http_middleware(http_middleware)
        .set_rpc_middleware(rpc_middleware)
        .build(config.listen)
        .await
        .map_err(|source| RpcStartError {
            addr: config.listen,
            source,
        })?;
    let addr = server.local_addr().map_err(|source| RpcStartError {
        addr: config.listen,
        source,
    })?;
    let handle = server.start(module(node, info, deny_unsafe));
    tracing::info!(%addr, unsafe_methods = !deny_unsafe, "JSON-RPC server listening (HTTP and WebSocket)");
    Ok((addr, handle))
}

#[cfg(test)]
mod tests {
    use super::Cors;

    #[test]
    fn cors_allows_listed_origins_on_any_port_and_refuses_others() {
        let local = Cors::local();
        assert!(local.allows("http://localhost"));
        assert!(local.allows("http://localhost:3000"));
        assert!(!local.allows("http://localhost.evil.example"));
        assert!(!local.allows("https://example.com"));
        assert!("all".parse::<Cors>().unwrap().allows("https://example.com"));
        let bad = "example.com".parse::<Cors>().unwrap_err();
        assert!(bad.contains("http://"), "{bad}");
    }
}
