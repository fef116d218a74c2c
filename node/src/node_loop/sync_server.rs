//! Block sync over request-response: serve finalized blocks with their certificates to
//! admitted peers, and hand blocks received to the driver, which checks each certificate and
//! body. A peer that sent a bad block is disconnected and not asked again for a while.

use std::time::Instant;

use libp2p::{request_response, PeerId};

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
                let store = self.driver.store();
                let head = store.head().number;
                let last = head.min(
                    request
                        .from
                        .saturating_add(u64::from(request.max).min(network::SYNC_BATCH))
                        .saturating_sub(1),
                );
                let mut blocks = vec![];
                for n in request.from.max(1)..=last {
                    match (store.block(n)?, store.certificate(n)?) {
                        (Some(b), Some(c)) => blocks.push((b, c)),
                        _ => break,
                    }
                }
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
