//! prepareOrder's DCV line, read strictly; an accepted record is clean and reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        certkeeper_fuzz::dcv_line(line);
    }
});
