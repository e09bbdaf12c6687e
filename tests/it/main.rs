//! certkeeper's integration tests, against an in-process autodns-sim.

// Test helpers are shared between the modules of this one binary, and tests report what they
// skip on stderr.
#![allow(unreachable_pub, clippy::print_stderr)]

mod support;

/// Mass reissues: each certificate once, through kills, with progress.
mod campaign;

/// Orders bought by hand before certkeeper: adopted, or a choice asked for; never bought twice.
mod adopt;
/// `check`: configuration errors, hook programs, product limits, `--online`.
mod check;
/// The lock, the demo, log filters and formats, --renew-now's combinations.
mod cli;
/// Paid steps the config does not allow: nothing prepared, told once, done once allowed.
mod consent;
/// Killed at every journal step, ghost commits: never a second paid order.
mod crash;
/// The daemon on a compressed clock: reissues, term renewals, live config, faults.
mod daemon;
/// Fleet mode: three members on a real etcd cluster, one order per certificate, all serving it.
mod fleet;
/// Fuzzing's short run: property tests over the parsers of untrusted input.
mod fuzz;
/// A hostile host: directories, links and files another local user planted are refused.
mod host;
/// A hostile API: DCV lines that read files, hang or inject records are refused.
mod hostile;
/// `make install` into a staging root: files, modes, units, and the example config's `check`.
mod install;
/// Issue, reissue, both DNS modes, both key families, files checked by openssl.
mod issue;
/// The poll queue as the real API keeps it: foreign heads, DEFERRED jobs, job history; one reader.
mod poll;
/// A hostile network in front of the simulator, for the tests of lost answers.
mod proxy;
/// The real API's published answers, read by certkeeper's client.
mod real;
/// Lost answers to paid requests: failing searches, a clock ahead, unparseable answers, kills.
mod reconcile;
/// Spoiled deliveries are refused; reload failures roll back.
mod refuse;
/// `revoke`: replaced first, then revoked once, whatever point a run is killed at.
mod revoke;
/// Real servers: BIND9 with the RFC 2136 hook, nginx and Apache with the reload hooks.
mod servers;
/// S/MIME: ordered as MAIL, approved, installed with its PKCS#12 bundle, reissued.
mod smime;
/// FILE and EMAIL validation: hostile FILE answers refused, approvals waited for and told.
mod validation;
