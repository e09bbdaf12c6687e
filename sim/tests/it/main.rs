//! autodns-sim's tests: every route, error path and fault knob, against a running simulator.

mod support;

/// FILE validation by an HTTP GET of the file, EMAIL validation waiting for its approval.
mod validation;

/// The DNS server: provisioning, delay, RFC 2136 updates.
mod dns;
/// The request examples from InterNetX's help pages, and sim/README.md's curl walk-through.
mod docs;
/// Error paths and their exact envelopes.
mod errors;
/// Every fault knob.
mod faults;
/// The XML gateway: the help pages' XML examples replayed, the S/MIME flow.
mod gateway;
/// The defaults the real samples dictate, and the knob behind each other form.
mod knobs;
/// Malformed requests always get the error envelope.
mod malformed;
/// The order flow, route by route, every answer checked against the spec.
mod routes;
/// Every real sample in shared/autodns/real/ against the simulator's answer: the same shape.
mod samples;
