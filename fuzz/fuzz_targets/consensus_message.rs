//! A consensus message from gossip: decoded, then handed to a validator's driver as the node
//! does. Whatever it holds, the driver must not fail (only storage failures may stop it).
#![no_main]

use drchain_consensus::codec::ConsensusMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = ConsensusMessage::decode_untrusted(data) {
        let mut driver = drchain_fuzz::driver();
        let now = drchain_fuzz::now();
        let _ = driver.start(now).expect("starts");
        driver
            .on_gossip(now, message)
            .expect("a peer's message never stops the driver");
    }
});
