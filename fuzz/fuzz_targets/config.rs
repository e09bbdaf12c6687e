//! The configuration file, with and without the password in the environment.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

static DIR: OnceLock<PathBuf> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| certkeeper_fuzz::config_dir("config"));
    if let Ok(text) = std::str::from_utf8(data) {
        certkeeper_fuzz::config_text(text, dir, data.len().is_multiple_of(2));
    }
});
