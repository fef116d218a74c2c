//! An extrinsic from outside (RPC `author_submitExtrinsic`, a block body): decoded with its
//! limits, then validated as the pool would.
#![no_main]

use drchain_runtime::{validate_transaction, UncheckedExtrinsic};
use libfuzzer_sys::fuzz_target;
use parity_scale_codec::{Decode, Encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(x) = UncheckedExtrinsic::decode_untrusted(data) {
        let again = UncheckedExtrinsic::decode(&mut &x.encode()[..]).expect("re-decodes");
        assert_eq!(again, x);
        let g = drchain_fuzz::genesis();
        let _ = validate_transaction(&g.state, &x, &g.hash());
    }
});
