//! A block from outside (in a proposal or a sync answer): decoded with the message limit,
//! its body checked against its header, then executed on the genesis state.
#![no_main]

use drchain_consensus::codec::{decode_bounded, MAX_MESSAGE_BYTES};
use drchain_runtime::{check_body, execute_block, Block};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(block) = decode_bounded::<Block>(data, MAX_MESSAGE_BYTES, "block") {
        let g = drchain_fuzz::genesis();
        if check_body(&block).is_ok() {
            let _ = execute_block(&g.state, &g.header, &block, &g.hash());
        }
    }
});
