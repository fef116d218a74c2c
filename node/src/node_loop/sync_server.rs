//! Block sync over request-response: serve finalized blocks with their certificates to
//! admitted peers, and hand blocks received to the driver, which checks each certificate and
//! body. A peer that sent a bad block is disconnected and not asked again for a while.

use std::time::Instant;

use drchain_consensus::codec::WireCertificate;
use drchain_consensus::store::kv::KeyValueDb;
use drchain_consensus::store::{ChainStore, StoreError};
use drchain_runtime::Block;
use libp2p::{request_response, PeerId};
use parity_scale_codec::Encode;

use crate::network::{self, SyncRequest, SyncResponse};

use super::NodeLoop;

impl NodeLoop {
    pub(super) fn sync_message(
        &mut self,
        peer: PeerId,
        message: request_response::Message<SyncRequest, SyncResponse>,
    ) -> anyhow::Result<()> {
        match message {
            request_response::Message::Request {
                request, channel, ..
            } => {
                if !self.admitted(&peer) {
                    return Ok(());
                }
                let blocks = sync_batch(self.driver.store(), &request)?;
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, SyncResponse { blocks });
            }
            request_response::Message::Response { response, .. } => {
                for (block, certificate) in response.blocks {
                    let started = Instant::now();
                    match self
                        .driver
                        .on_synced_block(self.now_ms(), block, certificate)?
                    {
                        Ok(outputs) => {
                            self.observe_import(started, &outputs);
                            self.execute(outputs)?;
                        }
                        Err(rejected) => {
                            tracing::warn!(%peer, %rejected, "peer sent a bad block; disconnecting");
                            self.stats.dropped_messages += 1;
                            self.penalize(peer, "bad_sync_block");
                            break;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Bytes of blocks a sync response holds at most (it always holds one if we have it): well
/// within the asker's `MAX_SYNC_RESPONSE`, whatever the blocks' sizes.
pub(crate) const SYNC_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The finalized blocks with certificates that answer `request`: from its first height, at
/// most [`network::SYNC_BATCH`], what it asks for and [`SYNC_RESPONSE_BYTES`], stopping at the
/// first one we lack. The asker asks again from where the answer ends.
pub(crate) fn sync_batch<D: KeyValueDb>(
    store: &ChainStore<D>,
    request: &SyncRequest,
) -> Result<Vec<(Block, WireCertificate)>, StoreError> {
    let head = store.head().number;
    let last = head.min(
        request
            .from
            .saturating_add(u64::from(request.max).min(network::SYNC_BATCH))
            .saturating_sub(1),
    );
    let mut blocks = vec![];
    let mut bytes = 0;
    for n in request.from.max(1)..=last {
        match (store.block(n)?, store.certificate(n)?) {
            (Some(b), Some(c)) => {
                let size = b.encoded_size() + c.encoded_size();
                if !blocks.is_empty() && bytes + size > SYNC_RESPONSE_BYTES {
                    break;
                }
                bytes += size;
                blocks.push((b, c));
            }
            _ => break,
        }
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use drchain_consensus::store::kv::MemoryDb;
    use drchain_consensus::testing::certificate;
    use drchain_runtime::dev::{dev_key, specs};
    use drchain_runtime::{build_block, pallet_network_config, RuntimeCall, UncheckedExtrinsic};

    /// A lagging node asks for up to `SYNC_BATCH` blocks at once; however large the blocks, the
    /// answer must stay within what the asker reads (`MAX_SYNC_RESPONSE`), or it never catches
    /// up.
    #[test]
    fn a_sync_response_of_full_blocks_stays_within_what_a_peer_reads() {
        let g = specs::local().unwrap().build_genesis().unwrap();
        let mut store = ChainStore::open(MemoryDb::new(), &g).unwrap();
        let mut nonce = 0;
        for _ in 0..network::SYNC_BATCH {
            let head = store.head().clone();
            let txs: Vec<UncheckedExtrinsic> = (0..40)
                .map(|_| {
                    let call =
                        RuntimeCall::NetworkConfig(pallet_network_config::Call::SetBootnodes {
                            bootnodes: vec!["x".repeat(60_000)],
                        });
                    nonce += 1;
                    UncheckedExtrinsic::sign(&dev_key("alice"), &g.hash(), nonce - 1, call)
                })
                .collect();
            let built = {
                let state = store.state();
                build_block(&state, &head, head.timestamp + 200, &g.hash(), txs, 4096).unwrap()
            };
            // What did not fit is built into the next block, as a pool would.
            nonce -= 40 - built.block.extrinsics.len() as u64;
            let hash = built.block.hash();
            let number = built.block.header.number;
            store
                .import(&built.block, built.executed, &certificate(number, hash))
                .unwrap();
        }
        let blocks = sync_batch(
            &store,
            &SyncRequest {
                from: 1,
                max: network::SYNC_BATCH as u32,
            },
        )
        .unwrap();
        assert!(!blocks.is_empty());
        let size = SyncResponse { blocks }.encoded_size();
        assert!(
            size <= SYNC_RESPONSE_BYTES,
            "a response of {size} bytes (the asker reads at most {})",
            network::MAX_SYNC_RESPONSE
        );
    }
}
