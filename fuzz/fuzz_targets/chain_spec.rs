//! A chain spec file (JSON), as `--chain PATH` reads it: parsed, then its genesis built with
//! every certificate checked.
#![no_main]

use drchain_runtime::ChainSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = ChainSpec::from_json(data) {
        let _ = spec.build_genesis();
    }
});
