//! certkeeper: keeps commercial certificates from the InterNetX AutoDNS SSL Manager valid and
//! installed with no human step, and never pays twice for one.
//!
//! See ARCHITECTURE.md for the map of modules and the invariants they keep.

pub mod config;
pub mod keys;
pub mod x509;
