//! Block sync over request-response: serve finalized blocks with their certificates to
//! admitted peers (off the consensus task, each peer within a rate), and hand blocks received
//! to the driver, which checks each certificate and body. A peer that sent a bad block is
//! disconnected and not asked again for a while.

use std::time::Instant;

use drchain_consensus::codec::WireCertificate;
use drchain_consensus::host::sync_batch;
use drchain_consensus::store::{ChainReader, StoreError};
use drchain_runtime::Block;
use libp2p::{request_response, PeerId};

use crate::network::{SyncRequest, SyncResponse};

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
            } => self.serve_sync(peer, request, channel),
            request_response::Message::Response { response, .. } => {
                self.note_empty_sync_answers(response.blocks.is_empty());
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

impl NodeLoop {
    /// Peers answer a node that is behind with nothing when they no longer keep the blocks it
    /// lacks (pruned): it cannot catch up block by block, and says so.
    fn note_empty_sync_answers(&mut self, empty: bool) {
        if !empty {
            self.empty_sync_answers = 0;
            return;
        }
        self.empty_sync_answers += 1;
        let now = Instant::now();
        let quiet = self
            .empty_sync_warned
            .is_some_and(|at| now.duration_since(at) < EMPTY_SYNC_WARNING_INTERVAL);
        if self.empty_sync_answers >= EMPTY_SYNC_ANSWERS && !quiet {
            self.empty_sync_warned = Some(now);
            tracing::warn!(
                from = self.driver.height(),
                "peers are ahead but send no block from #{}: they may have pruned them \
                 (--blocks-pruning); restart this node with --sync fast to take a recent state",
                self.driver.height()
            );
        }
    }

    /// Answers a member's sync request off the consensus task (a blocking task reads a
    /// database snapshot), within the peer's rate and [`MAX_SYNC_SERVING`] at once; a request
    /// beyond either is refused (its channel dropped: the asker tries another peer).
    fn serve_sync(
        &mut self,
        peer: PeerId,
        request: SyncRequest,
        channel: request_response::ResponseChannel<SyncResponse>,
    ) {
        if !self.admitted(&peer) {
            return;
        }
        let now = Instant::now();
        let allowed = self
            .sync_rates
            .entry(peer)
            .or_insert_with(|| RateLimit::full(now, SYNC_BURST))
            .allow(now, SYNC_REQUESTS_PER_SECOND, SYNC_BURST);
        if !allowed || self.sync_serving >= MAX_SYNC_SERVING {
            tracing::debug!(%peer, "sync request refused: over the peer's rate or too many at once");
            self.metrics.sync_requests_refused.inc();
            return;
        }
        self.sync_serving += 1;
        let db = self.db.clone();
        let answers = self.sync_answers.clone();
        tokio::task::spawn_blocking(move || {
            let snapshot = db.snapshot();
            let blocks = sync_batch(
                &ChainReader::new(&snapshot),
                request.from,
                u64::from(request.max),
            );
            let _ = answers.send((channel, blocks));
        });
    }

    /// A sync answer read off the consensus task: sent to the peer that asked.
    pub(super) fn answer_sync(&mut self, answer: SyncAnswer) {
        self.sync_serving = self.sync_serving.saturating_sub(1);
        let (channel, blocks) = answer;
        match blocks {
            Ok(blocks) => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, SyncResponse { blocks });
            }
            Err(e) => tracing::warn!(error = %e, "could not read blocks to answer a sync request"),
        }
    }
}

/// A sync request's answer, read off the consensus task, with the channel to send it on.
pub(super) type SyncAnswer = (
    request_response::ResponseChannel<SyncResponse>,
    Result<Vec<(Block, WireCertificate)>, StoreError>,
);

/// Empty answers in a row (from any peers) before a node behind warns that it is stuck...
const EMPTY_SYNC_ANSWERS: u32 = 4;
/// ...and how often it says so again.
const EMPTY_SYNC_WARNING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// Sync requests a peer may make per second on average...
const SYNC_REQUESTS_PER_SECOND: f64 = 10.0;
/// ...and at once. A node catching up asks again as soon as an answer is imported, each
/// answer up to 32 blocks: this lets it take hundreds of blocks a second.
const SYNC_BURST: f64 = 20.0;
/// Answers being read at once, for all peers.
const MAX_SYNC_SERVING: usize = 4;

/// A token bucket: `burst` requests at once, refilled at a steady rate.
#[derive(Debug, Clone, Copy)]
pub(super) struct RateLimit {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    pub(super) fn full(now: Instant, burst: f64) -> Self {
        Self {
            tokens: burst,
            at: now,
        }
    }

    /// Whether a request at `now` is within the rate (and takes its token if so).
    pub(super) fn allow(&mut self, now: Instant, per_second: f64, burst: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::network;
    use drchain_consensus::store::kv::MemoryDb;
    use drchain_consensus::store::ChainStore;
    use drchain_consensus::testing::certificate;
    use drchain_runtime::dev::{dev_key, specs};
    use drchain_runtime::{build_block, pallet_network_config, RuntimeCall, UncheckedExtrinsic};
    use parity_scale_codec::Encode;

    /// A lagging node asks for up to `SYNC_BATCH` blocks at once; however large the blocks, the
    /// answer must stay within what the asker reads (`MAX_SYNC_RESPONSE`), or it never catches
    /// up.
    #[test]
    fn a_peer_gets_its_burst_then_the_steady_rate() {
        let start = Instant::now();
        let mut limit = RateLimit::full(start, 5.0);
        let at_once = (0..10).filter(|_| limit.allow(start, 2.0, 5.0)).count();
        assert_eq!(at_once, 5);
        let later = start + std::time::Duration::from_millis(1500);
        let refilled = (0..10).filter(|_| limit.allow(later, 2.0, 5.0)).count();
        assert_eq!(refilled, 3, "1.5 s at 2/s");
    }

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
        let blocks = sync_batch(&store.reader(), 1, network::SYNC_BATCH).unwrap();
        assert!(!blocks.is_empty());
        let size = SyncResponse { blocks }.encoded_size();
        assert!(
            size <= network::MAX_SYNC_RESPONSE,
            "a response of {size} bytes (the asker reads at most {})",
            network::MAX_SYNC_RESPONSE
        );
    }
}
