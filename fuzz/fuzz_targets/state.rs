//! A state file's bytes, through serde_json and Store::load.
#![no_main]

use std::sync::OnceLock;

use certkeeper::store::Store;
use libfuzzer_sys::fuzz_target;

static STORE: OnceLock<Store> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let store = STORE.get_or_init(|| certkeeper_fuzz::state_store("state"));
    certkeeper_fuzz::state_bytes(data, store);
});
