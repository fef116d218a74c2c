//! The node's JSON-RPC from the other side: `drchain tx` and `drchain status`, and the client
//! the benchmark uses.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use drchain_runtime::{AdminCall, RuntimeCall, UncheckedExtrinsic};
use drchain_support::{AccountId, H256};
use ed25519_dalek::SigningKey;
use jsonrpsee::core::client::{ClientT, Subscription, SubscriptionClientT};
use jsonrpsee::core::params::ArrayParams;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use parity_scale_codec::Encode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli::{StatusArgs, TxArgs};
use drchain_rpc::views::{hex0x, HeaderView, ServiceView, TransactionStatus};

/// A JSON-RPC client over HTTP or WebSocket, chosen by the URL's scheme.
#[derive(Debug)]
pub enum RpcClient {
    /// `http://` or `https://`.
    Http(HttpClient),
    /// `ws://` or `wss://`: needed for subscriptions.
    Ws(WsClient),
}

impl RpcClient {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> Result<Self> {
        if url.starts_with("ws://") || url.starts_with("wss://") {
            let client = WsClientBuilder::default()
                .request_timeout(Duration::from_secs(60))
                .max_buffer_capacity_per_subscription(65_536)
                .build(url)
                .await
                .with_context(|| format!("cannot connect to {url}"))?;
            Ok(RpcClient::Ws(client))
        } else if url.starts_with("http://") || url.starts_with("https://") {
            let client = HttpClientBuilder::default()
                .request_timeout(Duration::from_secs(60))
                .build(url)
                .with_context(|| format!("bad RPC URL {url}"))?;
            Ok(RpcClient::Http(client))
        } else {
            bail!("RPC URL {url:?} must start with ws://, wss://, http:// or https://")
        }
    }

    /// Calls `method` with positional `params`.
    pub async fn call<T: DeserializeOwned>(&self, method: &str, params: ArrayParams) -> Result<T> {
        let result = match self {
            RpcClient::Http(c) => c.request(method, params).await,
            RpcClient::Ws(c) => c.request(method, params).await,
        };
        result.map_err(|e| describe(method, e))
    }

    /// Subscribes (WebSocket only).
    pub async fn subscribe<T: DeserializeOwned>(
        &self,
        method: &str,
        params: ArrayParams,
        unsubscribe: &str,
    ) -> Result<Subscription<T>> {
        match self {
            RpcClient::Ws(c) => c
                .subscribe(method, params, unsubscribe)
                .await
                .map_err(|e| describe(method, e)),
            RpcClient::Http(_) => bail!("{method} needs a ws:// RPC URL"),
        }
    }
}

/// An RPC failure as one line: the node's own message for call errors.
fn describe(method: &str, error: jsonrpsee::core::ClientError) -> anyhow::Error {
    match error {
        jsonrpsee::core::ClientError::Call(e) => anyhow::anyhow!("{method}: {}", e.message()),
        other => anyhow::anyhow!("{method}: {other}"),
    }
}

/// Builds positional params.
#[macro_export]
macro_rules! rpc_params {
    ($($p:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut params = jsonrpsee::core::params::ArrayParams::new();
        $( if let Err(e) = params.insert($p) {
            anyhow::bail!("RPC parameter not encoded: {e}");
        } )*
        params
    }};
}

/// Reads a call from the CLI's words: `pallet call '{fields}'`.
pub fn parse_call(pallet: &str, call: &str, fields: &str) -> Result<RuntimeCall> {
    let fields: Value = serde_json::from_str(fields)
        .with_context(|| format!("the call's fields are not JSON: {fields}"))?;
    let json = serde_json::json!({ pallet: { call: fields } });
    serde_json::from_value(json).map_err(|e| {
        anyhow::anyhow!(
            "not a call: {pallet} {call} {fields}: {e}\n\
             (pallets: membership, service_status, network_config, checkpoints, failover, admin; \
             calls and fields are in docs/rpc.md)"
        )
    })
}

/// The chain's genesis hash (it is covered by every signature).
pub async fn genesis_hash(client: &RpcClient) -> Result<H256> {
    let hash: Option<H256> = client
        .call("chain_getBlockHash", crate::rpc_params![0u64])
        .await?;
    hash.context("the node has no genesis block")
}

/// What became of a submitted transaction.
#[derive(Debug)]
pub struct Outcome {
    pub hash: H256,
    /// The block that finalized it.
    pub block: H256,
    /// That block's number.
    pub number: u64,
    /// `Ok` or the dispatch error's message.
    pub result: std::result::Result<(), String>,
    /// Its events (JSON).
    pub events: Vec<Value>,
}

/// Submits `x` and waits until it is finalized; returns what happened to it.
pub async fn submit_and_watch(
    client: &RpcClient,
    x: &UncheckedExtrinsic,
    timeout: Duration,
) -> Result<Outcome> {
    let block = watch_until_finalized(client, x, timeout).await?;
    outcome(client, x.hash(), block).await
}

/// Submits `x` with `author_submitAndWatchExtrinsic`; returns the block that finalized it.
pub async fn watch_until_finalized(
    client: &RpcClient,
    x: &UncheckedExtrinsic,
    timeout: Duration,
) -> Result<H256> {
    let hash = x.hash();
    let mut updates: Subscription<TransactionStatus> = client
        .subscribe(
            "author_submitAndWatchExtrinsic",
            crate::rpc_params![hex0x(&x.encode())],
            "author_unwatchExtrinsic",
        )
        .await?;
    tokio::time::timeout(timeout, async {
        while let Some(update) = updates.next().await {
            match update.context("bad status update")? {
                TransactionStatus::Finalized(block) => return Ok(block),
                TransactionStatus::Invalid(reason) => {
                    bail!("transaction {hash} became invalid: {reason}")
                }
                TransactionStatus::Dropped => bail!("transaction {hash} was not finalized in time"),
                TransactionStatus::Ready | TransactionStatus::InBlock(_) => {}
            }
        }
        bail!("the node closed the subscription")
    })
    .await
    .map_err(|_| anyhow::anyhow!("transaction {hash} not finalized within {timeout:?}"))?
}

async fn outcome(client: &RpcClient, hash: H256, block: H256) -> Result<Outcome> {
    let signed: Value = client
        .call("chain_getBlock", crate::rpc_params![block])
        .await?;
    let index = signed["block"]["extrinsics"]
        .as_array()
        .and_then(|xs| {
            xs.iter().position(|x| {
                x.as_str()
                    .and_then(|s| hex::decode(s.trim_start_matches("0x")).ok())
                    .is_some_and(|bytes| {
                        UncheckedExtrinsic::decode_untrusted(&bytes).is_ok_and(|x| x.hash() == hash)
                    })
            })
        })
        .with_context(|| format!("transaction {hash} is not in block {block}"))?;
    let number = signed["block"]["header"]["number"]
        .as_str()
        .and_then(|n| u64::from_str_radix(n.trim_start_matches("0x"), 16).ok())
        .unwrap_or_default();
    let events: Value = client
        .call("chain_getEvents", crate::rpc_params![block])
        .await?;
    let mine: Vec<Value> = events["events"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|e| e["phase"]["apply_extrinsic"].as_u64() == Some(index as u64))
                .map(|e| e["event"].clone())
                .collect()
        })
        .unwrap_or_default();
    let failure = mine.iter().find_map(|e| {
        e["system"]["extrinsic_failed"]["error"]
            .as_str()
            .map(str::to_owned)
    });
    Ok(Outcome {
        hash,
        block,
        number,
        result: failure.map_or(Ok(()), Err),
        events: mine,
    })
}

fn signing_key(args: &TxArgs) -> Result<SigningKey> {
    match (&args.key, &args.dev) {
        (Some(path), _) => crate::keys::read_ed25519(path),
        (None, Some(name)) => Ok(drchain_runtime::dev::dev_key(name)),
        (None, None) => bail!("give --key FILE or --dev NAME"),
    }
}

/// `drchain tx`.
pub fn tx(args: TxArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let key = signing_key(&args)?;
        let mut call = parse_call(&args.pallet, &args.call, &args.fields)?;
        if args.admin {
            call = RuntimeCall::Admin(AdminCall::Propose {
                call: Box::new(call),
            });
        }
        let client = RpcClient::connect(&args.rpc).await?;
        let genesis = genesis_hash(&client).await?;
        let signer = AccountId::from(&key);
        let nonce = match args.nonce {
            Some(n) => n,
            None => {
                client
                    .call("system_accountNextIndex", crate::rpc_params![signer])
                    .await?
            }
        };
        let x = UncheckedExtrinsic::sign(&key, &genesis, nonce, call);
        if args.no_wait {
            let hash: H256 = client
                .call(
                    "author_submitExtrinsic",
                    crate::rpc_params![hex0x(&x.encode())],
                )
                .await?;
            println!("submitted {hash} (signer {signer}, nonce {nonce})");
            return Ok(());
        }
        let outcome = submit_and_watch(&client, &x, Duration::from_secs(args.timeout)).await?;
        println!(
            "{} finalized in #{} ({}) — signer {signer}, nonce {nonce}",
            outcome.hash, outcome.number, outcome.block
        );
        for event in &outcome.events {
            println!("  event {event}");
        }
        match outcome.result {
            Ok(()) => {
                println!("result: success");
                Ok(())
            }
            Err(e) => bail!("the call failed: {e}"),
        }
    })
}

/// `drchain status`.
pub fn status(args: StatusArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = RpcClient::connect(&args.rpc).await?;
        let chain: String = client.call("system_chain", crate::rpc_params![]).await?;
        let name: String = client.call("system_name", crate::rpc_params![]).await?;
        let health: Value = client.call("system_health", crate::rpc_params![]).await?;
        let head: HeaderView = client
            .call::<Option<HeaderView>>("chain_getHeader", crate::rpc_params![])
            .await?
            .context("the node has no head")?;
        let services: Vec<ServiceView> = client
            .call("failover_services", crate::rpc_params![])
            .await?;
        let members: Vec<Value> = client
            .call("membership_members", crate::rpc_params![])
            .await?;
        if args.json {
            let out = serde_json::json!({
                "chain": chain, "node": name, "health": health, "head": head,
                "services": services,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        let names = member_names(&members);
        print!(
            "{}",
            render_status(&chain, &name, &health, &head, &services, &names)
        );
        Ok(())
    })
}

/// Short names of members from their certificate subjects (`CN=...`).
fn member_names(members: &[Value]) -> BTreeMap<String, String> {
    members
        .iter()
        .filter_map(|m| {
            let account = m["account"].as_str()?.to_owned();
            let subject = m["subject"].as_str()?;
            let cn = subject
                .split(',')
                .find_map(|part| part.trim().strip_prefix("CN="))
                .unwrap_or(subject);
            Some((account, cn.to_owned()))
        })
        .collect()
}

fn short(account: &AccountId, names: &BTreeMap<String, String>) -> String {
    let full = account.to_string();
    let abbreviated = format!("{}…", &full[..full.len().min(10)]);
    match names.get(&full) {
        Some(name) => format!("{name} ({abbreviated})"),
        None => abbreviated,
    }
}

/// The status tables.
pub fn render_status(
    chain: &str,
    node: &str,
    health: &Value,
    head: &HeaderView,
    services: &[ServiceView],
    names: &BTreeMap<String, String>,
) -> String {
    use std::fmt::Write as _;
    let number = u64::from_str_radix(head.number.trim_start_matches("0x"), 16).unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "chain {chain}, node {node}: finalized #{number} ({}), peers {}{}",
        head.hash,
        health["peers"],
        if health["isSyncing"].as_bool() == Some(true) {
            ", syncing"
        } else {
            ""
        }
    );
    if services.is_empty() {
        let _ = writeln!(out, "no services registered");
        return out;
    }
    for s in services {
        let holder = s
            .active
            .or(s.promoting.as_ref().map(|p| p.node))
            .map_or_else(|| "-".to_owned(), |a| short(&a, names));
        let _ = writeln!(
            out,
            "\nservice {}  epoch {}  phase {}  holder {}  since #{}",
            s.name, s.epoch, s.phase, holder, s.since_block
        );
        let _ = writeln!(
            out,
            "  {:<28} {:>4}  {:<10} {:<9} {:>13}  {:>10}  endpoint",
            "node", "prio", "role", "health", "heartbeat age", "checkpoint"
        );
        for n in &s.nodes {
            let role = serde_json::to_value(n.role)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let (health, age, checkpoint) = match &n.heartbeat {
                Some(h) => (
                    serde_json::to_value(h.health)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    format!("{} ms{}", h.age_ms, if h.stale { " !" } else { "" }),
                    h.applied_checkpoint
                        .map_or("-".to_owned(), |c| c.to_string()),
                ),
                None => ("-".to_owned(), "never".to_owned(), "-".to_owned()),
            };
            let _ = writeln!(
                out,
                "  {:<28} {:>4}  {:<10} {:<9} {:>13}  {:>10}  {}",
                short(&n.node, names),
                n.priority,
                role,
                health,
                age,
                checkpoint,
                n.endpoint.as_deref().unwrap_or("-")
            );
        }
    }
    out
}
