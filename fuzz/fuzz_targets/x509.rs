//! A delivery: the bytes as PEM text (leaf, then the chain) and as the DER of one certificate.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        certkeeper_fuzz::x509_bundle(text);
    }
    certkeeper_fuzz::x509_der(data);
});
