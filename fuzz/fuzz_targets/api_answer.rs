//! An HTTP answer from the API: two bytes of status, one that says whether a Retry-After came
//! (and its next two bytes, in seconds), then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let status = 100 + u16::from_be_bytes([data[0], data[1]]) % 900;
    let (retry_after, body) = match data[2] {
        b'R' if data.len() >= 5 => (Some(u64::from(u16::from_be_bytes([data[3], data[4]]))), &data[5..]),
        _ => (None, &data[3..]),
    };
    certkeeper_fuzz::api_answer(status, retry_after, body);
});
