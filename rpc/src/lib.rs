//! The JSON-RPC server: HTTP and WebSocket on one port (default 9944), Substrate's method
//! names where they exist ([`substrate`]) and drchain's own under `failover_`, `status_`,
//! `config_`, `checkpoints_` and `membership_` ([`drchain`]). `docs/rpc.md` documents each.
//!
//! Reads go to a database snapshot, never through the node's task, so queries neither wait
//! for consensus nor slow it; submissions and pool and peer queries are messages to the task.

pub mod drchain;
pub mod metrics;
pub mod node_api;
pub mod substrate;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use drchain_consensus::pool::PoolError;
use drchain_consensus::store::kv::KeyValueDb;
use drchain_consensus::store::{ChainReader, StoreError};
use drchain_support::H256;
use jsonrpsee::server::{BatchRequestConfig, ServerBuilder, ServerConfig, ServerHandle};
use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::{PendingSubscriptionSink, RpcModule};
use serde::Serialize;

pub use metrics::RpcMetrics;
pub use node_api::{ChainStatus, FinalizedBlock, NodeApi, NodeStopped, PeerInfo};

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
}

/// Reads of the chain through one database snapshot.
pub type SnapshotReader<'a> = ChainReader<'a, dyn KeyValueDb + 'a>;

/// What every method handler gets.
#[derive(Debug)]
pub struct RpcContext {
    node: Arc<dyn NodeApi>,
    metrics: RpcMetrics,
    info: NodeInfo,
    deny_unsafe: bool,
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
}

impl RpcError {
    fn invalid(reason: impl Into<String>) -> Self {
        RpcError::InvalidParams {
            reason: reason.into(),
        }
    }

    fn code(&self) -> i32 {
        match self {
            RpcError::InvalidParams { .. } => -32602,
            RpcError::NotFound { .. } => -32004,
            RpcError::Unsafe { .. } => -32601,
            RpcError::Refused(_) => 1010,
            RpcError::Store(_) | RpcError::Stopped(_) => -32603,
        }
    }
}

impl From<RpcError> for ErrorObjectOwned {
    fn from(e: RpcError) -> Self {
        ErrorObjectOwned::owned(e.code(), e.to_string(), None::<()>)
    }
}

/// Positional params of a method, as a tuple: how many it takes.
pub trait Arity {
    /// The number of params.
    const N: usize;
}

impl<A> Arity for (A,) {
    const N: usize = 1;
}

impl<A, B> Arity for (A, B) {
    const N: usize = 2;
}

/// Parses positional params into the tuple `T`. Missing trailing params read as `null`, so
/// `Option`s at the end are optional; extra params and named params are refused.
fn parse<T: serde::de::DeserializeOwned + Arity>(params: &Params<'_>) -> Result<T, RpcError> {
    let given: Vec<serde_json::Value> = match params.as_str().map(str::trim) {
        None | Some("null") => vec![],
        Some(text) => match serde_json::from_str(text) {
            Ok(serde_json::Value::Array(items)) => items,
            Ok(_) => {
                return Err(RpcError::invalid(
                    "params must be a JSON array (positional)",
                ))
            }
            Err(e) => return Err(RpcError::invalid(e.to_string())),
        },
    };
    if given.len() > T::N {
        return Err(RpcError::invalid(format!(
            "expected at most {} params, got {}",
            T::N,
            given.len()
        )));
    }
    let mut padded = given;
    padded.resize(T::N, serde_json::Value::Null);
    serde_json::from_value(serde_json::Value::Array(padded))
        .map_err(|e| RpcError::invalid(e.to_string()))
}

/// Registers a method answered from the chain or the node's metadata, counting calls.
fn method<T, F>(module: &mut RpcModule<RpcContext>, name: &'static str, f: F)
where
    T: Serialize + Clone + 'static,
    F: Fn(&RpcContext, Params<'_>) -> Result<T, RpcError> + Send + Sync + 'static,
{
    let registered = module.register_method(name, move |params, ctx, _| {
        let result = f(ctx, params);
        ctx.metrics.call(name, result.is_err());
        result.map_err(ErrorObjectOwned::from)
    });
    if let Err(e) = registered {
        tracing::error!(method = name, error = %e, "RPC method registered twice");
    }
}

/// Registers a method that asks the node's task, counting calls.
fn async_method<T, F, Fut>(module: &mut RpcModule<RpcContext>, name: &'static str, f: F)
where
    T: Serialize + Clone + 'static,
    F: Fn(Arc<RpcContext>, Params<'static>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, RpcError>> + Send,
{
    let registered = module.register_async_method(name, move |params, ctx, _| {
        let f = f.clone();
        async move {
            let result = f(ctx.clone(), params).await;
            ctx.metrics.call(name, result.is_err());
            result.map_err(ErrorObjectOwned::from)
        }
    });
    if let Err(e) = registered {
        tracing::error!(method = name, error = %e, "RPC method registered twice");
    }
}

/// Refuses params for a method that takes none.
fn no_params(params: &Params<'_>) -> Result<(), RpcError> {
    match params.as_str().map(str::trim) {
        None | Some("[]") | Some("null") | Some("{}") => Ok(()),
        Some(_) => Err(RpcError::invalid("this method takes no params")),
    }
}

/// [`method`] for a method without params.
fn method0<T, F>(module: &mut RpcModule<RpcContext>, name: &'static str, f: F)
where
    T: Serialize + Clone + 'static,
    F: Fn(&RpcContext) -> Result<T, RpcError> + Send + Sync + 'static,
{
    method(module, name, move |ctx, params| {
        no_params(&params)?;
        f(ctx)
    });
}

/// [`async_method`] for a method without params.
fn async_method0<T, F, Fut>(module: &mut RpcModule<RpcContext>, name: &'static str, f: F)
where
    T: Serialize + Clone + 'static,
    F: Fn(Arc<RpcContext>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, RpcError>> + Send,
{
    async_method(module, name, move |ctx, params| {
        let f = f.clone();
        async move {
            no_params(&params)?;
            f(ctx).await
        }
    });
}

/// Registers a subscription, counting subscribe calls.
fn subscription<F, Fut>(module: &mut RpcModule<RpcContext>, names: [&'static str; 3], f: F)
where
    F: Fn(Arc<RpcContext>, Params<'static>, PendingSubscriptionSink) -> Fut
        + Clone
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let [subscribe, notification, unsubscribe] = names;
    let registered = module.register_subscription(
        subscribe,
        notification,
        unsubscribe,
        move |params, pending, ctx, _| {
            ctx.metrics.call(subscribe, false);
            f(ctx, params, pending)
        },
    );
    if let Err(e) = registered {
        tracing::error!(method = subscribe, error = %e, "RPC subscription registered twice");
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

/// Every method, for the node `node` with `info`.
pub fn module(
    node: Arc<dyn NodeApi>,
    metrics: RpcMetrics,
    info: NodeInfo,
    deny_unsafe: bool,
) -> RpcModule<RpcContext> {
    let ctx = RpcContext {
        node,
        metrics,
        info,
        deny_unsafe,
    };
    let mut module = RpcModule::new(ctx);
    substrate::register(&mut module);
    drchain::register(&mut module);
    let mut names: Vec<&str> = module.method_names().collect();
    names.sort_unstable();
    let names: Vec<String> = names.into_iter().map(str::to_owned).collect();
    method0(&mut module, "rpc_methods", move |_| {
        Ok(serde_json::json!({ "methods": names }))
    });
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
    let http_middleware = tower::ServiceBuilder::new().layer(
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
    let server = ServerBuilder::default()
        .set_config(server_config)
        .set_http_middleware(http_middleware)
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
    let handle = server.start(module(node, metrics, info, deny_unsafe));
    tracing::info!(%addr, unsafe_methods = !deny_unsafe, "JSON-RPC server listening (HTTP and WebSocket)");
    Ok((addr, handle))
}

#[cfg(test)]
mod tests {
    use drchain_support::ServiceName;
    use jsonrpsee::types::Params;

    use super::{no_params, parse, Cors, RpcError};

    fn params(json: &'static str) -> Params<'static> {
        Params::new(Some(json))
    }

    fn reason(e: RpcError) -> String {
        match e {
            RpcError::InvalidParams { reason } => reason,
            other => panic!("not an invalid-params error: {other}"),
        }
    }

    #[test]
    fn positional_params_parse_and_missing_trailing_ones_read_as_null() {
        let (name, limit): (ServiceName, Option<u64>) = parse(&params(r#"["db"]"#)).unwrap();
        assert_eq!(name.as_str(), "db");
        assert_eq!(limit, None);
        let (_, limit): (ServiceName, Option<u64>) = parse(&params(r#"["db", 7]"#)).unwrap();
        assert_eq!(limit, Some(7));
    }

    #[test]
    fn extra_named_and_malformed_params_are_refused_with_the_reason() {
        let extra = parse::<(ServiceName,)>(&params(r#"["db", 1]"#)).unwrap_err();
        assert!(reason(extra).contains("at most 1 params, got 2"));
        let named = parse::<(ServiceName,)>(&params(r#"{"service": "db"}"#)).unwrap_err();
        assert!(reason(named).contains("JSON array"));
        let bad = parse::<(ServiceName,)>(&params(r#"["Bad Name"]"#)).unwrap_err();
        assert!(reason(bad).contains("service name"));
        let missing = parse::<(ServiceName,)>(&params("[]")).unwrap_err();
        assert!(!reason(missing).is_empty());
    }

    #[test]
    fn methods_without_params_refuse_some() {
        assert!(no_params(&Params::new(None)).is_ok());
        assert!(no_params(&params("[]")).is_ok());
        let given = no_params(&params("[1]")).unwrap_err();
        assert!(reason(given).contains("takes no params"));
    }

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
