//! certkeeper: keeps commercial certificates from the InterNetX AutoDNS SSL Manager valid and
//! installed with no human step, and never pays twice for one.
//!
//! See ARCHITECTURE.md for the map of modules and the invariants they keep.

pub mod api;
pub mod config;
pub mod dns;
pub mod hooks;
pub mod keys;
pub mod store;
pub mod x509;
