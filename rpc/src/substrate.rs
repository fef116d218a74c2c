//! Methods under Substrate's names: `system_*`, `chain_*`, `state_getStorage`, `author_*`.
//!
//! With BFT finality every imported block is final, so "new heads" and "finalized heads" are
//! the same stream, and a node keeps only the finalized head's state (`state_getStorage` at an
//! older block is refused with a clear error).

use std::sync::Arc;
use std::time::Duration;

use drchain_runtime::{Block, UncheckedExtrinsic};
use drchain_support::{AccountId, StateRead, H256};
use jsonrpsee::{PendingSubscriptionSink, RpcModule};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::views::{
    hex0x, BlockEvents, HeaderView, PeerView, SignedBlockView, SystemHealth, TransactionStatus,
};
use super::{
    async_method, async_method0, method, method0, notify, parse, subscription, RpcContext, RpcError,
};

/// How long `author_submitAndWatchExtrinsic` waits for finalization before it reports
/// `dropped` and ends.
const WATCH_TIMEOUT: Duration = Duration::from_secs(120);

/// A block number as Substrate clients send it: a number or a `0x` hex string.
#[derive(Debug, Clone, Copy)]
struct NumberParam(u64);

impl<'de> Deserialize<'de> for NumberParam {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => n.as_u64().map(NumberParam).ok_or_else(|| {
                D::Error::custom(format!("block number {n} is not a non-negative integer"))
            }),
            serde_json::Value::String(s) => {
                let digits = s.strip_prefix("0x").ok_or_else(|| {
                    D::Error::custom(format!("block number {s:?} must be a number or 0x hex"))
                })?;
                u64::from_str_radix(digits, 16)
                    .map(NumberParam)
                    .map_err(|e| D::Error::custom(format!("block number {s:?}: {e}")))
            }
            other => Err(D::Error::custom(format!(
                "block number must be a number or 0x hex, not {other}"
            ))),
        }
    }
}

/// The block `hash` names, or the finalized head; `NotFound` for an unknown hash.
fn block_at(
    reader: &crate::SnapshotReader<'_>,
    hash: Option<H256>,
) -> Result<Option<Block>, RpcError> {
    match hash {
        Some(h) => Ok(reader.block_by_hash(&h)?),
        None => Ok(reader.block(reader.finalized_number()?)?),
    }
}

fn decode_extrinsic(hex_bytes: &str) -> Result<UncheckedExtrinsic, RpcError> {
    let bytes = hex::decode(hex_bytes.strip_prefix("0x").unwrap_or(hex_bytes))
        .map_err(|e| RpcError::invalid(format!("extrinsic is not hex: {e}")))?;
    UncheckedExtrinsic::decode_untrusted(&bytes)
        .map_err(|e| RpcError::invalid(format!("extrinsic does not decode: {e}")))
}

/// Registers every Substrate-named method.
pub fn register(module: &mut RpcModule<RpcContext>) {
    register_system(module);
    register_chain(module);
    register_state_and_author(module);
}

fn register_system(module: &mut RpcModule<RpcContext>) {
    method0(module, "system_name", |ctx| Ok(ctx.info.name.clone()));
    method0(module, "system_version", |ctx| Ok(ctx.info.version.clone()));
    method0(module, "system_chain", |ctx| Ok(ctx.info.chain.clone()));
    method0(module, "system_localPeerId", |ctx| {
        Ok(ctx.info.peer_id.to_string())
    });
    method0(module, "system_genesisHash", |ctx| Ok(ctx.info.genesis));
    async_method0(module, "system_health", |ctx| async move {
        let peers = ctx.node.peers().await?.len();
        let status = ctx.node.status();
        Ok(SystemHealth {
            peers,
            is_syncing: status.syncing,
            should_have_peers: true,
        })
    });
    async_method0(module, "system_peers", |ctx| async move {
        ctx.check_unsafe("system_peers")?;
        Ok(ctx
            .node
            .peers()
            .await?
            .into_iter()
            .map(|p| PeerView {
                peer_id: p.peer_id.to_string(),
                account: p.account,
            })
            .collect::<Vec<_>>())
    });
    async_method(
        module,
        "system_accountNextIndex",
        |ctx, params| async move {
            let (account,): (AccountId,) = parse(&params)?;
            Ok(ctx.node.next_nonce(account).await?)
        },
    );
}

fn register_chain(module: &mut RpcModule<RpcContext>) {
    method(module, "chain_getHeader", |ctx, params| {
        let (hash,): (Option<H256>,) = parse(&params)?;
        ctx.read(|r| Ok(block_at(r, hash)?.map(|b| HeaderView::from(&b.header))))
    });
    method(module, "chain_getBlock", |ctx, params| {
        let (hash,): (Option<H256>,) = parse(&params)?;
        ctx.read(|r| {
            let Some(block) = block_at(r, hash)? else {
                return Ok(None);
            };
            let certificate = r.certificate(block.header.number)?;
            Ok(Some(SignedBlockView::new(&block, certificate.as_ref())))
        })
    });
    method(module, "chain_getBlockHash", |ctx, params| {
        let (number,): (Option<NumberParam>,) = parse(&params)?;
        ctx.read(|r| {
            let number = match number {
                Some(n) => n.0,
                None => r.finalized_number()?,
            };
            Ok(r.hash(number)?)
        })
    });
    method0(module, "chain_getFinalizedHead", |ctx| {
        ctx.read(|r| {
            let number = r.finalized_number()?;
            r.hash(number)?.ok_or_else(|| RpcError::NotFound {
                what: format!("finalized block #{number}"),
            })
        })
    });
    method(module, "chain_getEvents", |ctx, params| {
        let (hash,): (Option<H256>,) = parse(&params)?;
        ctx.read(|r| {
            let Some(block) = block_at(r, hash)? else {
                return Err(RpcError::NotFound {
                    what: format!("block {}", hash.unwrap_or_default()),
                });
            };
            let number = block.header.number;
            let events = r.events(number)?.unwrap_or_default();
            Ok(BlockEvents {
                block: block.hash(),
                number,
                events,
            })
        })
    });
    for (subscribe, notification, unsubscribe) in [
        (
            "chain_subscribeNewHeads",
            "chain_newHead",
            "chain_unsubscribeNewHeads",
        ),
        (
            "chain_subscribeFinalizedHeads",
            "chain_finalizedHead",
            "chain_unsubscribeFinalizedHeads",
        ),
    ] {
        subscription(
            module,
            [subscribe, notification, unsubscribe],
            |ctx, _, pending| heads(ctx, pending),
        );
    }
}

/// Streams every finalized header until the subscriber leaves. A subscriber too slow to keep
/// up skips ahead rather than holding the node back.
async fn heads(ctx: Arc<RpcContext>, pending: PendingSubscriptionSink) {
    let mut blocks = ctx.node.subscribe_finalized();
    let Ok(sink) = pending.accept().await else {
        return;
    };
    loop {
        tokio::select! {
            () = sink.closed() => return,
            block = blocks.recv() => match block {
                Ok(block) => {
                    if !notify(&sink, &HeaderView::from(&block.header)).await {
                        return;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::debug!(skipped = n, "slow head subscriber skipped blocks");
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}

fn register_state_and_author(module: &mut RpcModule<RpcContext>) {
    method(module, "state_getStorage", |ctx, params| {
        let (key, at): (String, Option<H256>) = parse(&params)?;
        let key = hex::decode(key.strip_prefix("0x").unwrap_or(&key))
            .map_err(|e| RpcError::invalid(format!("storage key is not hex: {e}")))?;
        ctx.read(|r| {
            if let Some(at) = at {
                let head = r.hash(r.finalized_number()?)?;
                if head != Some(at) {
                    return Err(RpcError::invalid(format!(
                        "state at {at} is not kept: a drchain node keeps only the finalized head's state ({})",
                        head.unwrap_or_default()
                    )));
                }
            }
            Ok(r.state().get(&key).map(|v| hex0x(&v)))
        })
    });
    async_method(module, "author_submitExtrinsic", |ctx, params| async move {
        let (bytes,): (String,) = parse(&params)?;
        let x = decode_extrinsic(&bytes)?;
        Ok(ctx.node.submit(x).await??)
    });
    async_method0(module, "author_pendingExtrinsics", |ctx| async move {
        Ok(ctx
            .node
            .pending()
            .await?
            .iter()
            .map(|x| hex0x(&parity_scale_codec::Encode::encode(x)))
            .collect::<Vec<_>>())
    });
    async_method(module, "author_removeExtrinsic", |ctx, params| async move {
        ctx.check_unsafe("author_removeExtrinsic")?;
        let (hashes,): (Vec<H256>,) = parse(&params)?;
        Ok(ctx.node.remove(hashes).await?)
    });
    subscription(
        module,
        [
            "author_submitAndWatchExtrinsic",
            "author_extrinsicUpdate",
            "author_unwatchExtrinsic",
        ],
        watch_extrinsic,
    );
}

/// Submits an extrinsic and reports `ready`, then `inBlock` and `finalized` (one block: BFT
/// finality) or `invalid`/`dropped`, and ends.
async fn watch_extrinsic(
    ctx: Arc<RpcContext>,
    params: jsonrpsee::types::Params<'static>,
    pending: PendingSubscriptionSink,
) {
    let parsed: Result<(String,), RpcError> = parse(&params);
    let x = match parsed.and_then(|(bytes,)| decode_extrinsic(&bytes)) {
        Ok(x) => x,
        Err(e) => return pending.reject(e).await,
    };
    // Subscribe before submitting, so the block that includes it cannot be missed.
    let mut blocks = ctx.node.subscribe_finalized();
    let hash = match ctx.node.submit(x).await {
        Ok(Ok(hash)) => hash,
        Ok(Err(refused)) => return pending.reject(RpcError::Refused(refused)).await,
        Err(stopped) => return pending.reject(RpcError::Stopped(stopped)).await,
    };
    let Ok(sink) = pending.accept().await else {
        return;
    };
    if !notify(&sink, &TransactionStatus::Ready).await {
        return;
    }
    let deadline = tokio::time::sleep(WATCH_TIMEOUT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = sink.closed() => return,
            () = &mut deadline => {
                notify(&sink, &TransactionStatus::Dropped).await;
                return;
            }
            block = blocks.recv() => match block {
                Ok(block) => {
                    if block.extrinsics.contains(&hash) {
                        notify(&sink, &TransactionStatus::InBlock(block.hash)).await;
                        notify(&sink, &TransactionStatus::Finalized(block.hash)).await;
                        return;
                    }
                    if let Some((_, reason)) = block.dropped.iter().find(|(h, _)| *h == hash) {
                        notify(&sink, &TransactionStatus::Invalid(reason.clone())).await;
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // Blocks were missed: look the transaction up in the chain instead.
                    if let Ok(Some(found)) = find_included(&ctx, &hash) {
                        notify(&sink, &TransactionStatus::InBlock(found)).await;
                        notify(&sink, &TransactionStatus::Finalized(found)).await;
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}

/// Searches the last blocks for the extrinsic `hash`.
fn find_included(ctx: &RpcContext, hash: &H256) -> Result<Option<H256>, RpcError> {
    const LOOKBACK: u64 = 2048;
    ctx.read(|r| {
        let head = r.finalized_number()?;
        for n in (head.saturating_sub(LOOKBACK)..=head).rev() {
            if let Some(block) = r.block(n)? {
                if block.extrinsics.iter().any(|x| x.hash() == *hash) {
                    return Ok(Some(block.hash()));
                }
            }
        }
        Ok(None)
    })
}
