//! Methods under Substrate's names: `system_*`, `chain_*`, `state_getStorage`, `author_*`.
//!
//! With BFT finality every imported block is final, so "new heads" and "finalized heads" are
//! the same stream, and a node keeps only the finalized head's state (`state_getStorage` at an
//! older block is refused with a clear error).

use std::time::Duration;

use async_trait::async_trait;
use drchain_runtime::{Block, UncheckedExtrinsic};
use drchain_support::{AccountId, StateRead, H256};
use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::PendingSubscriptionSink;
use parity_scale_codec::Encode;
use tokio::sync::broadcast::error::RecvError;

use crate::api::SubstrateApiServer;
use crate::views::{
    hex0x, BlockEvents, DiskView, HeaderView, KeyProofView, MethodsView, NumberParam, PeerView,
    ReadProofView, SignedBlockView, SystemHealth, TransactionStatus,
};
use crate::{notify, RpcContext, RpcError, SnapshotReader};

/// Keys one `state_getReadProof` call may ask for.
const MAX_PROOF_KEYS: usize = 64;

/// The number of block `at` when it is not the finalized head (`None`: the head's state).
fn state_block(r: &SnapshotReader<'_>, at: Option<H256>) -> Result<Option<u64>, RpcError> {
    let Some(at) = at else {
        return Ok(None);
    };
    let head = r.finalized_number()?;
    if r.hash(head)? == Some(at) {
        return Ok(None);
    }
    let block = r.block_by_hash(&at)?.ok_or_else(|| {
        RpcError::invalid(format!(
            "block {at} is not kept here (pruned, or not finalized)"
        ))
    })?;
    Ok(Some(block.header.number))
}

/// A past block's whole state, rebuilt from the undo logs with its trie, to prove keys in.
/// Costs a pass over the state: a control plane's is small.
struct PastState {
    entries: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    trie: drchain_support::StateTrie,
}

impl PastState {
    fn at(r: &SnapshotReader<'_>, number: u64) -> Result<Self, RpcError> {
        let entries = r.entries_at(number)?;
        let changes = entries
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        let mut trie = drchain_support::StateTrie::default();
        trie.apply(trie.prepare(&changes));
        Ok(Self { entries, trie })
    }

    fn proof(
        &self,
        key: &[u8],
    ) -> Result<(Option<Vec<u8>>, drchain_support::trie_proof::StorageProof), RpcError> {
        let by_path: std::collections::BTreeMap<_, _> = self
            .entries
            .iter()
            .map(|(k, v)| {
                (
                    drchain_support::trie::key_path(k),
                    drchain_support::blake3_hash(v),
                )
            })
            .collect();
        let value_hash = |p: &drchain_support::trie::Path| by_path.get(p).copied();
        let proof = drchain_support::trie_proof::prove_storage(&self.trie, key, &value_hash)
            .ok_or_else(|| RpcError::NotFound {
                what: "a proof in the rebuilt state".into(),
            })?;
        Ok((self.entries.get(key).cloned(), proof))
    }
}

/// How long `author_submitAndWatchExtrinsic` waits for finalization before it reports
/// `dropped` and ends.
const WATCH_TIMEOUT: Duration = Duration::from_secs(120);

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

#[async_trait]
impl SubstrateApiServer for RpcContext {
    async fn system_name(&self) -> Result<String, RpcError> {
        Ok(self.info.name.clone())
    }

    async fn system_version(&self) -> Result<String, RpcError> {
        Ok(self.info.version.clone())
    }

    async fn system_chain(&self) -> Result<String, RpcError> {
        Ok(self.info.chain.clone())
    }

    async fn system_local_peer_id(&self) -> Result<String, RpcError> {
        Ok(self.info.peer_id.clone())
    }

    async fn system_genesis_hash(&self) -> Result<H256, RpcError> {
        Ok(self.info.genesis)
    }

    async fn system_health(&self) -> Result<SystemHealth, RpcError> {
        let peers = self.node.peers().await?.len();
        let status = self.node.status();
        Ok(SystemHealth {
            peers,
            is_syncing: status.syncing,
            should_have_peers: true,
        })
    }

    async fn system_disk(&self) -> Result<Option<DiskView>, RpcError> {
        Ok(self.node.disk().await)
    }

    async fn system_peers(&self) -> Result<Vec<PeerView>, RpcError> {
        self.check_unsafe("system_peers")?;
        Ok(self
            .node
            .peers()
            .await?
            .into_iter()
            .map(|p| PeerView {
                peer_id: p.peer_id,
                account: p.account,
            })
            .collect())
    }

    async fn system_account_next_index(&self, account: AccountId) -> Result<u64, RpcError> {
        Ok(self.node.next_nonce(account).await?)
    }

    async fn chain_get_header(&self, hash: Option<H256>) -> Result<Option<HeaderView>, RpcError> {
        self.read(|r| Ok(block_at(r, hash)?.map(|b| HeaderView::from(&b.header))))
    }

    async fn chain_get_block(
        &self,
        hash: Option<H256>,
    ) -> Result<Option<SignedBlockView>, RpcError> {
        self.read(|r| {
            let Some(block) = block_at(r, hash)? else {
                return Ok(None);
            };
            let certificate = r.certificate(block.header.number)?;
            Ok(Some(SignedBlockView::new(&block, certificate.as_ref())))
        })
    }

    async fn chain_get_block_hash(
        &self,
        number: Option<NumberParam>,
    ) -> Result<Option<H256>, RpcError> {
        self.read(|r| {
            let number = match number {
                Some(n) => n.0,
                None => r.finalized_number()?,
            };
            Ok(r.hash(number)?)
        })
    }

    async fn chain_get_finalized_head(&self) -> Result<H256, RpcError> {
        self.read(|r| {
            let number = r.finalized_number()?;
            r.hash(number)?.ok_or_else(|| RpcError::NotFound {
                what: format!("finalized block #{number}"),
            })
        })
    }

    async fn chain_get_events(&self, hash: Option<H256>) -> Result<BlockEvents, RpcError> {
        self.read(|r| {
            let Some(block) = block_at(r, hash)? else {
                return Err(RpcError::NotFound {
                    what: format!("block {}", hash.unwrap_or_default()),
                });
            };
            let number = block.header.number;
            let events = r.events(number)?.unwrap_or_default();
            Ok(BlockEvents::new(block.hash(), number, &events)?)
        })
    }

    async fn chain_get_validator_set_changes(&self) -> Result<Vec<String>, RpcError> {
        self.read(|r| {
            let changes = r.set_changes(r.finalized_number()?)?;
            Ok(changes.iter().map(|c| hex0x(&c.encode())).collect())
        })
    }

    async fn chain_subscribe_new_heads(
        &self,
        pending: PendingSubscriptionSink,
    ) -> SubscriptionResult {
        heads(self, pending).await;
        Ok(())
    }

    async fn chain_subscribe_finalized_heads(
        &self,
        pending: PendingSubscriptionSink,
    ) -> SubscriptionResult {
        heads(self, pending).await;
        Ok(())
    }

    async fn state_get_storage(
        &self,
        key: String,
        at: Option<H256>,
    ) -> Result<Option<String>, RpcError> {
        let key = hex::decode(key.strip_prefix("0x").unwrap_or(&key))
            .map_err(|e| RpcError::invalid(format!("storage key is not hex: {e}")))?;
        self.read(|r| {
            let value = match state_block(r, at)? {
                None => r.state().get(&key),
                Some(number) => r.value_at(&key, number)?,
            };
            Ok(value.map(|v| hex0x(&v)))
        })
    }

    async fn state_get_read_proof(
        &self,
        keys: Vec<String>,
        at: Option<H256>,
    ) -> Result<ReadProofView, RpcError> {
        if keys.len() > MAX_PROOF_KEYS {
            return Err(RpcError::invalid(format!(
                "{} keys; at most {MAX_PROOF_KEYS} per call",
                keys.len()
            )));
        }
        let keys = keys
            .iter()
            .map(|k| {
                hex::decode(k.strip_prefix("0x").unwrap_or(k))
                    .map_err(|e| RpcError::invalid(format!("storage key {k:?} is not hex: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.read(|r| {
            let head = r.hash(r.finalized_number()?)?.unwrap_or_default();
            let past = match state_block(r, at)? {
                None => None,
                Some(number) => Some(PastState::at(r, number)?),
            };
            let proofs = keys
                .iter()
                .map(|k| {
                    let (value, proof) = match &past {
                        None => r.storage_proof(k)?,
                        Some(state) => state.proof(k)?,
                    };
                    Ok(KeyProofView {
                        key: hex0x(k),
                        value: value.map(|v| hex0x(&v)),
                        proof: hex0x(&proof.encode()),
                    })
                })
                .collect::<Result<Vec<_>, RpcError>>()?;
            Ok(ReadProofView {
                at: at.unwrap_or(head),
                proofs,
            })
        })
    }

    async fn author_submit_extrinsic(&self, extrinsic: String) -> Result<H256, RpcError> {
        let x = decode_extrinsic(&extrinsic)?;
        Ok(self.node.submit(x).await??)
    }

    async fn author_pending_extrinsics(&self) -> Result<Vec<String>, RpcError> {
        Ok(self
            .node
            .pending()
            .await?
            .iter()
            .map(|x| hex0x(&parity_scale_codec::Encode::encode(x)))
            .collect())
    }

    async fn author_remove_extrinsic(&self, hashes: Vec<H256>) -> Result<Vec<H256>, RpcError> {
        self.check_unsafe("author_removeExtrinsic")?;
        Ok(self.node.remove(hashes).await?)
    }

    async fn author_submit_and_watch_extrinsic(
        &self,
        pending: PendingSubscriptionSink,
        extrinsic: String,
    ) -> SubscriptionResult {
        watch_extrinsic(self, pending, &extrinsic).await;
        Ok(())
    }

    async fn rpc_methods(&self) -> Result<MethodsView, RpcError> {
        Ok(MethodsView {
            methods: self.methods.get().cloned().unwrap_or_default(),
        })
    }
}

/// Streams every finalized header until the subscriber leaves. A subscriber too slow to keep
/// up skips ahead rather than holding the node back.
async fn heads(ctx: &RpcContext, pending: PendingSubscriptionSink) {
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

/// Submits an extrinsic and reports `ready`, then `inBlock` and `finalized` (one block: BFT
/// finality) or `invalid`/`dropped`, and ends.
async fn watch_extrinsic(ctx: &RpcContext, pending: PendingSubscriptionSink, extrinsic: &str) {
    let x = match decode_extrinsic(extrinsic) {
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
                    if let Ok(Some(found)) = find_included(ctx, &hash) {
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
