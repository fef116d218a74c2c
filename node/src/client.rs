//! The node's JSON-RPC from the other side: `drchain tx` and `drchain status`, and the client
//! the benchmark uses.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use drchain_runtime::{AdminCall, RuntimeCall, UncheckedExtrinsic};
use drchain_support::{AccountId, H256};
use ed25519_dalek::SigningKey;
use jsonrpsee::core::client::{
    BatchResponse, ClientT, Error as ClientError, Subscription, SubscriptionClientT,
};
use jsonrpsee::core::params::BatchRequestBuilder;
use jsonrpsee::core::traits::ToRpcParams;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use parity_scale_codec::Encode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli::{StatusArgs, TxArgs};
use drchain_rpc::views::{
    hex0x, HeaderView, MemberView, NumberParam, ServiceView, SystemHealth, TransactionStatus,
};
use drchain_rpc::{DrchainApiClient, SubstrateApiClient};

/// A JSON-RPC client over HTTP or WebSocket, chosen by the URL's scheme. It is a jsonrpsee
/// client, so the API's typed client traits ([`SubstrateApiClient`], [`DrchainApiClient`])
/// work on it; subscriptions need WebSocket.
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
                .max_response_size(drchain_rpc::MAX_RESPONSE_BYTES)
                .max_buffer_capacity_per_subscription(65_536)
                .build(url)
                .await
                .with_context(|| format!("cannot connect to {url}"))?;
            Ok(RpcClient::Ws(client))
        } else if url.starts_with("http://") || url.starts_with("https://") {
            let client = HttpClientBuilder::default()
                .request_timeout(Duration::from_secs(60))
                .max_response_size(drchain_rpc::MAX_RESPONSE_BYTES)
                .build(url)
                .with_context(|| format!("bad RPC URL {url}"))?;
            Ok(RpcClient::Http(client))
        } else {
            bail!("RPC URL {url:?} must start with ws://, wss://, http:// or https://")
        }
    }
}

impl ClientT for RpcClient {
    async fn notification<Params>(&self, method: &str, params: Params) -> Result<(), ClientError>
    where
        Params: ToRpcParams + Send,
    {
        match self {
            RpcClient::Http(c) => c.notification(method, params).await,
            RpcClient::Ws(c) => c.notification(method, params).await,
        }
    }

    async fn request<R, Params>(&self, method: &str, params: Params) -> Result<R, ClientError>
    where
        R: DeserializeOwned,
        Params: ToRpcParams + Send,
    {
        match self {
            RpcClient::Http(c) => c.request(method, params).await,
            RpcClient::Ws(c) => c.request(method, params).await,
        }
    }

    async fn batch_request<'a, R>(
        &self,
        batch: BatchRequestBuilder<'a>,
    ) -> Result<BatchResponse<'a, R>, ClientError>
    where
        R: DeserializeOwned + std::fmt::Debug + 'a,
    {
        match self {
            RpcClient::Http(c) => c.batch_request(batch).await,
            RpcClient::Ws(c) => c.batch_request(batch).await,
        }
    }
}

impl SubscriptionClientT for RpcClient {
    async fn subscribe<'a, Notif, Params>(
        &self,
        subscribe_method: &'a str,
        params: Params,
        unsubscribe_method: &'a str,
    ) -> Result<Subscription<Notif>, ClientError>
    where
        Params: ToRpcParams + Send,
        Notif: DeserializeOwned,
    {
        match self {
            RpcClient::Ws(c) => {
                c.subscribe(subscribe_method, params, unsubscribe_method)
                    .await
            }
            RpcClient::Http(_) => Err(ClientError::Custom(format!(
                "{subscribe_method} needs a ws:// RPC URL"
            ))),
        }
    }

    async fn subscribe_to_method<Notif>(
        &self,
        method: &str,
    ) -> Result<Subscription<Notif>, ClientError>
    where
        Notif: DeserializeOwned,
    {
        match self {
            RpcClient::Ws(c) => c.subscribe_to_method(method).await,
            RpcClient::Http(_) => Err(ClientError::Custom(format!(
                "{method} needs a ws:// RPC URL"
            ))),
        }
    }
}

/// Turns an RPC failure into one line that says what was being done: the node's own message
/// for call errors (it says what is wrong), the transport's error otherwise.
pub trait Described<T> {
    /// `doing: why`.
    fn doing(self, doing: &str) -> Result<T>;
}

impl<T> Described<T> for Result<T, ClientError> {
    fn doing(self, doing: &str) -> Result<T> {
        self.map_err(|error| match error {
            ClientError::Call(e) => anyhow::anyhow!("{doing}: {}", e.message()),
            other => anyhow::anyhow!("{doing}: {other}"),
        })
    }
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
    client
        .chain_get_block_hash(Some(NumberParam(0)))
        .await
        .doing("reading the genesis hash")?
        .context("the node has no genesis block")
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
        .author_submit_and_watch_extrinsic(hex0x(&x.encode()))
        .await
        .doing("submitting the transaction")?;
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
    let signed = client
        .chain_get_block(Some(block))
        .await
        .doing("reading the finalizing block")?
        .with_context(|| format!("block {block} is not on the node"))?;
    let index = signed
        .block
        .extrinsics
        .iter()
        .position(|x| {
            hex::decode(x.trim_start_matches("0x")).is_ok_and(|bytes| {
                UncheckedExtrinsic::decode_untrusted(&bytes).is_ok_and(|x| x.hash() == hash)
            })
        })
        .with_context(|| format!("transaction {hash} is not in block {block}"))?;
    let number = header_number(&signed.block.header)?;
    let events = client
        .chain_get_events(Some(block))
        .await
        .doing("reading the block's events")?;
    let mine: Vec<Value> = events
        .events
        .iter()
        .filter(|e| e["phase"]["apply_extrinsic"].as_u64() == Some(index as u64))
        .map(|e| e["event"].clone())
        .collect();
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

/// A header's number (Substrate sends it as `0x` hex).
pub fn header_number(header: &HeaderView) -> Result<u64> {
    u64::from_str_radix(header.number.trim_start_matches("0x"), 16)
        .with_context(|| format!("block number {:?} is not 0x hex", header.number))
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
            None => client
                .system_account_next_index(signer)
                .await
                .doing("reading the signer's next nonce")?,
        };
        let x = UncheckedExtrinsic::sign(&key, &genesis, nonce, call);
        if args.no_wait {
            let hash = client
                .author_submit_extrinsic(hex0x(&x.encode()))
                .await
                .doing("submitting the transaction")?;
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
        // The first call is where an unreachable node shows: say which.
        let chain = client.system_chain().await.doing(&format!(
            "asking {} for the chain's name (system_chain)",
            args.rpc
        ))?;
        let name = client
            .system_name()
            .await
            .doing("reading the node's name")?;
        let health = client
            .system_health()
            .await
            .doing("reading the node's health")?;
        let head = client
            .chain_get_header(None)
            .await
            .doing("reading the finalized head")?
            .context("the node has no head")?;
        let services = client
            .failover_services()
            .await
            .doing("reading the services")?;
        let members = client
            .membership_members()
            .await
            .doing("reading the members")?;
        if args.json {
            let out = serde_json::json!({
                "chain": chain, "node": name, "health": health, "head": head,
                "services": services,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        print!(
            "{}",
            render_status(&chain, &name, &health, &head, &services, &members)
        );
        Ok(())
    })
}

/// Short names of members from their certificate subjects (`CN=...`).
fn member_names(members: &[MemberView]) -> BTreeMap<String, String> {
    members
        .iter()
        .map(|m| {
            let cn = crate::metrics::common_name(&m.subject);
            (m.account.to_string(), cn.to_owned())
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
    health: &SystemHealth,
    head: &HeaderView,
    services: &[ServiceView],
    members: &[MemberView],
) -> String {
    use std::fmt::Write as _;
    let names = &member_names(members);
    let number = header_number(head).unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "chain {chain}, node {node}: finalized #{number} ({}), peers {}{}",
        head.hash,
        health.peers,
        if health.is_syncing { ", syncing" } else { "" }
    );
    if services.is_empty() {
        let _ = writeln!(out, "no services registered");
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
            "  {:<28} {:>4}  {:<10} {:<9} {:>13}  {:>26}  endpoint",
            "node", "prio", "role", "health", "heartbeat age", "checkpoint (lag)"
        );
        for n in &s.nodes {
            let role = serde_json::to_value(n.role)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let (health, age) = match &n.heartbeat {
                Some(h) => (
                    serde_json::to_value(h.health)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    format!("{} ms{}", h.age_ms, if h.stale { " !" } else { "" }),
                ),
                None => ("-".to_owned(), "never".to_owned()),
            };
            // `!` marks data older than the service's RPO: not electable.
            let checkpoint = match (n.held_checkpoint, n.data_lag_ms) {
                (None, Some(_)) => "-".to_owned(), // nothing recorded yet
                (None, None) => "none !".to_owned(),
                (Some(held), None) => format!("{held} (pruned) !"),
                (Some(held), Some(lag)) => format!(
                    "{held} ({lag} ms{}){}",
                    n.data_lag_bytes
                        .filter(|b| *b > 0)
                        .map_or_else(String::new, |b| format!(", {}", human_bytes(b))),
                    if lag > s.config.max_lag_ms { " !" } else { "" }
                ),
            };
            let _ = writeln!(
                out,
                "  {:<28} {:>4}  {:<10} {:<9} {:>13}  {:>26}  {}",
                short(&n.node, names),
                n.priority,
                role,
                health,
                age,
                checkpoint,
                n.endpoint.as_deref().unwrap_or("-")
            );
        }
        if let Some(why) = withheld(s) {
            let _ = writeln!(out, "  {why}");
        }
    }
    render_members(&mut out, members, head.timestamp, names);
    out
}

/// Certificates that end within this are marked `!`: time to rotate.
const EXPIRY_WARNING_MS: u64 = 14 * 86_400_000;

/// The members table: role, whether each votes, and when its admission ends (its certificate
/// or its CA), relative to the head's time.
fn render_members(
    out: &mut String,
    members: &[MemberView],
    now: u64,
    names: &BTreeMap<String, String>,
) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "
members
  {:<28} {:<9} {:<6} admitted until",
        "node", "role", "votes"
    );
    for m in members.iter().filter(|m| m.revoked.is_none()) {
        let role = if m.role == pallet_membership::MemberRole::Validator {
            "validator"
        } else {
            "member"
        };
        let until = if m.admitted_until <= now {
            format!("expired {} ago !", human_duration(now - m.admitted_until))
        } else {
            let left = m.admitted_until - now;
            let mark = if left < EXPIRY_WARNING_MS { " !" } else { "" };
            format!("in {}{mark}", human_duration(left))
        };
        let _ = writeln!(
            out,
            "  {:<28} {:<9} {:<6} {until}",
            short(&m.account, names),
            role,
            if m.validator { "yes" } else { "no" },
        );
    }
}

/// `3 d`, `5 h`, `12 min`, `40 s`.
fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        s if s >= 2 * 86_400 => format!("{} d", s / 86_400),
        s if s >= 2 * 3_600 => format!("{} h", s / 3_600),
        s if s >= 120 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// `1.2 MB`, `340 kB`, `12 B`.
fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.0} kB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

/// Why a vacant service stays vacant, when it is the RPO: every live candidate's data is
/// older than `max_lag_ms` and losing it was not allowed.
fn withheld(s: &ServiceView) -> Option<String> {
    if s.phase != "vacant" || s.config.allow_data_loss {
        return None;
    }
    let live: Vec<_> = s
        .nodes
        .iter()
        .filter(|n| n.heartbeat.as_ref().is_some_and(|h| !h.stale))
        .collect();
    let beyond = |n: &&drchain_rpc::views::ServiceNodeView| {
        n.data_lag_ms.is_none_or(|lag| lag > s.config.max_lag_ms)
    };
    (!live.is_empty() && live.iter().all(beyond)).then(|| {
        format!(
            "no promotion: every live candidate's data is older than the RPO (max_lag_ms {}); \
             `drchain tx --admin failover switchover` naming one accepts the loss",
            s.config.max_lag_ms
        )
    })
}
