//! certkeeper: keeps commercial certificates from the InterNetX AutoDNS SSL Manager valid and
//! installed with no human step, and never pays twice for one.
//!
//! See ARCHITECTURE.md for the map of modules and the invariants they keep.

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
#[cfg(feature = "demo")]
pub mod demo;
pub mod dns;
pub mod hooks;
pub mod host;
pub mod keys;
pub mod order;
pub mod run;
pub mod schedule;
pub mod status;
pub mod store;
pub mod text;
pub mod x509;
