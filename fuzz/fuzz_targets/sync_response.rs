//! A block-sync answer: blocks with commit certificates, decoded with the answer limit and
//! offered to a follower's driver one by one. A bad one is refused, never fatal.
#![no_main]

use drchain_consensus::codec::{decode_bounded, WireCertificate};
use drchain_runtime::Block;
use libfuzzer_sys::fuzz_target;

/// What a node reads of a sync answer at most (node::network::MAX_SYNC_RESPONSE).
const MAX_SYNC_RESPONSE: usize = 64 * 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    type Answer = Vec<(Block, WireCertificate)>;
    if let Ok(blocks) = decode_bounded::<Answer>(data, MAX_SYNC_RESPONSE, "sync response") {
        let mut driver = drchain_fuzz::driver();
        let now = drchain_fuzz::now();
        let _ = driver.start(now).expect("starts");
        for (block, certificate) in blocks {
            match driver
                .on_synced_block(now, block, certificate)
                .expect("a peer's answer never stops the driver")
            {
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
});
