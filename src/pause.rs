//! The crash tests' pause points: with `CERTKEEPER_TEST_PAUSE_AT=POINT` certkeeper stops at
//! that point and waits to be killed. Points: a journal step's name (the journal just reached
//! it), `answered` (`order::ANSWERED`), a revocation's (`revoke`), `replacing` (a file's new
//! copy written and synced, not yet renamed into place) and `generation_written` (a new
//! generation's files written, its directory not yet renamed into place).

use std::time::Duration;

/// The environment variable that makes certkeeper stop (and wait to be killed) at the named
/// point. For crash tests only.
pub const PAUSE_ENV: &str = "CERTKEEPER_TEST_PAUSE_AT";

/// Stops at `point` when `CERTKEEPER_TEST_PAUSE_AT` names it, so that a test can kill the
/// process there; `name` says for what (a certificate, a file).
///
/// The crash tests read its line from stderr whatever the log filter, so it is printed.
#[allow(clippy::print_stderr)]
pub(crate) fn pause_for_tests(point: &str, name: &str) {
    let Some(wanted) = std::env::var_os(PAUSE_ENV) else {
        return;
    };
    if wanted == point {
        eprintln!("certkeeper: paused at {point} for {name}");
        std::thread::sleep(Duration::from_secs(120));
        std::process::exit(99);
    }
    // `panic:POINT`: the order's task panics there, as a bug would (for the daemon's tests).
    if wanted.to_str().and_then(|w| w.strip_prefix("panic:")) == Some(point) {
        panic!("test panic at {point} for {name}");
    }
}
