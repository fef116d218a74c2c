//! The node's JSON-RPC from the other side: the client, `drchain tx`, and what the benchmark
//! uses. `drchain status` renders in [`crate::status`].

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

use crate::cli::TxArgs;
use drchain_rpc::views::{hex0x, HeaderView, NumberParam, TransactionStatus};
use drchain_rpc::SubstrateApiClient;

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

/// The key of `--key FILE` or `--dev NAME`.
pub fn signing_key(key: Option<&std::path::Path>, dev: Option<&str>) -> Result<SigningKey> {
    match (key, dev) {
        (Some(path), _) => crate::keys::read_ed25519(path),
        (None, Some(name)) => Ok(drchain_runtime::dev::dev_key(name)),
        (None, None) => bail!("give --key FILE or --dev NAME"),
    }
}

/// How often `drchain tx` signs again when the nonce it read was taken meanwhile.
const NONCE_ATTEMPTS: u32 = 5;

/// Whether `e` says the transaction's nonce was already used (the runtime's
/// `TransactionError::StaleNonce`, refused at submission or dropped from a later block) or is
/// held by a transaction waiting in the node's pool (`PoolError::NonceTaken`). Either way ours
/// was not accepted.
fn nonce_was_taken(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    text.contains("already used; next is")
        || text.contains("already taken by a pending transaction")
}

/// Signs `call` with `key`, submits it and waits until it is finalized. Without a fixed
/// `nonce` it reads the signer's next one, and signs again with the next when another holder
/// of the key took it meanwhile. Returns the outcome and the nonce used.
pub async fn sign_and_watch(
    client: &RpcClient,
    key: &SigningKey,
    call: &RuntimeCall,
    nonce: Option<u64>,
    timeout: Duration,
) -> Result<(Outcome, u64)> {
    let genesis = genesis_hash(client).await?;
    let signer = AccountId::from(key);
    let mut attempt = 1;
    loop {
        let next = match nonce {
            Some(n) => n,
            None => client
                .system_account_next_index(signer)
                .await
                .doing("reading the signer's next nonce")?,
        };
        let x = UncheckedExtrinsic::sign(key, &genesis, next, call.clone());
        match submit_and_watch(client, &x, timeout).await {
            Ok(outcome) => return Ok((outcome, next)),
            // Another holder of the key (the node's own agent, say) took the nonce we read.
            // Ours was refused or never included, so signing again with the next one cannot
            // execute the call twice.
            Err(e) if nonce.is_none() && nonce_was_taken(&e) && attempt < NONCE_ATTEMPTS => {
                eprintln!("nonce {next} was taken by another transaction of {signer}; retrying");
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// `drchain tx`.
pub fn tx(args: TxArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let key = signing_key(args.key.as_deref(), args.dev.as_deref())?;
        let mut call = parse_call(&args.pallet, &args.call, &args.fields)?;
        if args.admin {
            call = RuntimeCall::Admin(AdminCall::Propose {
                call: Box::new(call),
            });
        }
        let client = RpcClient::connect(&args.rpc).await?;
        let signer = AccountId::from(&key);
        if args.no_wait {
            let genesis = genesis_hash(&client).await?;
            let nonce = match args.nonce {
                Some(n) => n,
                None => client
                    .system_account_next_index(signer)
                    .await
                    .doing("reading the signer's next nonce")?,
            };
            let x = UncheckedExtrinsic::sign(&key, &genesis, nonce, call);
            let hash = client
                .author_submit_extrinsic(hex0x(&x.encode()))
                .await
                .doing("submitting the transaction")?;
            println!("submitted {hash} (signer {signer}, nonce {nonce})");
            return Ok(());
        }
        let (outcome, nonce) = sign_and_watch(
            &client,
            &key,
            &call,
            args.nonce,
            Duration::from_secs(args.timeout),
        )
        .await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use drchain_runtime::TransactionError;

    #[test]
    fn a_taken_nonce_is_recognised_from_the_runtimes_own_message() {
        let stale = TransactionError::StaleNonce {
            expected: 47,
            got: 33,
        };
        // As the watch reports it, and as a refused submission reports it.
        let dropped = anyhow::anyhow!("transaction 0x83 became invalid: {stale}");
        let refused = anyhow::anyhow!("{stale}").context("submitting the transaction");
        assert!(nonce_was_taken(&dropped));
        assert!(nonce_was_taken(&refused));
        let other = anyhow::anyhow!("{}", TransactionError::BadSignature);
        assert!(!nonce_was_taken(&other));
    }

    #[test]
    fn a_nonce_held_by_a_pending_transaction_is_taken_too() {
        // The node's own agent signed with the same key a moment before: the pool refuses ours.
        let pending = drchain_consensus::pool::PoolError::NonceTaken {
            sender: drchain_runtime::dev::dev_account("alice"),
            nonce: 29,
        };
        let refused =
            anyhow::anyhow!("transaction refused: {pending}").context("submitting the transaction");
        assert!(nonce_was_taken(&refused));
    }
}
