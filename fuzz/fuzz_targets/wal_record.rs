//! WAL records as a damaged or crafted database holds them: decoded, written to a store's
//! WAL, and replayed by a restarting driver, which must refuse what it cannot use with an
//! error, never a panic.
#![no_main]

use drchain_consensus::codec::{decode_bounded, WalRecord};
use drchain_consensus::DriverError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = decode_bounded::<Vec<WalRecord>>(data, 1 << 20, "wal records") {
        let mut store = drchain_fuzz::store();
        if store.wal_append(1, &records, true).is_err() {
            return;
        }
        let mut driver = drchain_fuzz::driver_over(store);
        match driver.start(drchain_fuzz::now()) {
            Ok(_) | Err(DriverError::CorruptWal { .. }) => {}
            Err(e) => panic!("replay failed otherwise: {e}"),
        }
    }
});
