//! A certificate (PEM or DER) offered for admission or as a trust anchor: read, parsed, and
//! verified against the dev CA at the dev chains' genesis time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pallet_membership::x509;

fuzz_target!(|data: &[u8]| {
    let Ok(der) = x509::certificate_der(data) else {
        return;
    };
    let _ = x509::check_trust_anchor(&der);
    let anchors = drchain_fuzz::dev_anchors();
    let _ = x509::verify_member(
        &der,
        anchors,
        drchain_runtime::dev::specs::GENESIS_TIME_MS,
        |_| false,
    );
});
