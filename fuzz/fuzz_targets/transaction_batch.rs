//! A gossiped batch of transactions, decoded with its limits; each one offered to a pool.
#![no_main]

use drchain_consensus::pool::TransactionPool;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = drchain_runtime::extrinsic::decode_transaction_batch(data, 1024) {
        let g = drchain_fuzz::genesis();
        let mut pool = TransactionPool::new(g.hash(), 64);
        for x in batch {
            let _ = pool.submit(&g.state, x);
        }
    }
});
