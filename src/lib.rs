//! certkeeper: keeps commercial certificates from the InterNetX AutoDNS SSL Manager valid and
//! installed with no human step, and never pays twice for one.
//!
//! See ARCHITECTURE.md for the map of modules and the invariants they keep. What is `pub` here
//! is what the binary, the tests, the benchmarks and the fuzz targets use; the rest is the
//! crate's own (`unreachable_pub` is on, in Cargo.toml).

pub(crate) mod adopt;
pub mod api;
pub(crate) mod campaign;
pub mod cli;
#[cfg(feature = "cluster")]
pub(crate) mod cluster;
pub mod config;
pub(crate) mod control;
pub(crate) mod daemon;
#[cfg(feature = "demo")]
pub(crate) mod demo;
pub mod dns;
pub(crate) mod hooks;
pub(crate) mod host;
pub mod keys;
pub(crate) mod online;
pub mod order;
pub(crate) mod p12;
pub(crate) mod pause;
pub(crate) mod plan;
pub mod revoke;
pub(crate) mod run;
pub(crate) mod schedule;
pub(crate) mod served;
pub(crate) mod status;
pub mod store;
pub(crate) mod text;
pub mod trust;
pub mod webroot;
pub mod x509;

/// Whether this process may talk to the API: always, except a fleet member that does not lead
/// (its lease ended, or another member leads), which asks nothing of the API at all.
pub(crate) fn may_call_api() -> bool {
    #[cfg(feature = "cluster")]
    return cluster::leading().is_ok();
    #[cfg(not(feature = "cluster"))]
    true
}
