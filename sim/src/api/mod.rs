//! The HTTP face of the simulator: the JSON API under `/v1` and the management API under `/_sim`.
//!
//! Every API request goes through the same steps, in the real API's order: route, User-Agent,
//! authentication, rate limit, fault dice, body, operation. Every answer, error or not, is the
//! API's envelope; nothing answers a bare 500 or a plain-text error.
//!
//! `routes` finds a request's route, `pipeline` takes it through those steps to the operation,
//! `envelope` writes the answer, and `manage` serves `/_sim`.

use std::sync::Arc;

use axum::Router;

use crate::shared::Shared;

mod envelope;
mod gateway;
mod manage;
mod pipeline;
mod routes;
mod xml;

pub use envelope::DropConnection;
pub use routes::ROUTE_KEYS;

/// Builds the router for both APIs.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .merge(manage::routes())
        .route("/gateway", axum::routing::post(gateway::handle))
        .fallback(pipeline::api)
        .with_state(shared)
}
