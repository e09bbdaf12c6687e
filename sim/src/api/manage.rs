//! The management API under `/_sim`, for loopback clients only: the ledger, the request log,
//! the counters, faults, reset, DNS records, job control and the root CA.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State as AxState};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::ROUTE_KEYS;
use crate::dns::Value as DnsValue;
use crate::faults::Faults;
use crate::shared::Shared;

/// The `/_sim` routes, behind the loopback rule.
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sim/ledger", get(ledger))
        .route("/_sim/requests", get(requests))
        .route("/_sim/stats", get(stats))
        .route("/_sim/faults", get(get_faults).post(set_faults))
        .route("/_sim/reset", post(reset))
        .route("/_sim/dns", get(dns_list).post(dns_set))
        .route("/_sim/jobs/{id}", post(job_control))
        .route("/_sim/ca", get(ca_pem))
        .layer(middleware::from_fn(loopback_only))
}

/// Refuses management requests from anywhere but loopback.
async fn loopback_only(ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request, next: Next) -> Response {
    if !peer.ip().is_loopback() {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"error": "the management API answers loopback clients only"})),
        )
            .into_response();
    }
    next.run(req).await
}

fn bad(text: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": text.into()}))).into_response()
}

async fn ledger(AxState(s): AxState<Arc<Shared>>) -> Response {
    axum::Json(s.lock().ledger.clone()).into_response()
}

async fn requests(AxState(s): AxState<Arc<Shared>>) -> Response {
    axum::Json(s.lock().requests.clone()).into_response()
}

async fn stats(AxState(s): AxState<Arc<Shared>>) -> Response {
    axum::Json(s.lock().stats.clone()).into_response()
}

async fn get_faults(AxState(s): AxState<Arc<Shared>>) -> Response {
    axum::Json(s.lock().faults.clone()).into_response()
}

async fn set_faults(AxState(s): AxState<Arc<Shared>>, bytes: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&bytes) {
        Ok(f) => f,
        Err(e) => return bad(format!("faults: {e}")),
    };
    if let Err(e) = faults.validate() {
        return bad(e);
    }
    if let Some(unknown) = faults.routes.keys().find(|k| !ROUTE_KEYS.contains(&k.as_str())) {
        return bad(format!(
            "unknown route '{unknown}' (routes are named like 'POST /certificate')"
        ));
    }
    s.lock().faults = faults.clone();
    axum::Json(faults).into_response()
}

async fn reset(AxState(s): AxState<Arc<Shared>>) -> Response {
    s.lock().reset();
    s.zones.reset();
    s.rate_limits.clear();
    axum::Json(json!({"reset": true})).into_response()
}

async fn dns_list(AxState(s): AxState<Arc<Shared>>) -> Response {
    axum::Json(s.zones.list()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DnsChange {
    /// `set` (replace the record set), `add`, or `clear` (remove the set).
    action: String,
    name: String,
    #[serde(rename = "type", default = "txt")]
    kind: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default = "ttl")]
    ttl: u32,
    /// Seconds before the record becomes visible.
    #[serde(default)]
    delay: f64,
}

fn txt() -> String {
    "TXT".into()
}

fn ttl() -> u32 {
    300
}

async fn dns_set(AxState(s): AxState<Arc<Shared>>, bytes: Bytes) -> Response {
    let change: DnsChange = match serde_json::from_slice(&bytes) {
        Ok(c) => c,
        Err(e) => return bad(format!("dns change: {e}")),
    };
    let kind = match change.kind.to_ascii_uppercase().as_str() {
        "TXT" => hickory_proto::rr::RecordType::TXT,
        "CNAME" => hickory_proto::rr::RecordType::CNAME,
        "A" => hickory_proto::rr::RecordType::A,
        other => return bad(format!("type {other} is not supported (use TXT, CNAME or A)")),
    };
    if (change.action == "set" || change.action == "clear")
        && let Err(e) = s.zones.clear(&change.name, Some(kind))
    {
        return bad(e);
    }
    if change.action == "set" || change.action == "add" {
        let Some(value) = change.value else {
            return bad("value is required to set or add a record");
        };
        let value = match kind {
            hickory_proto::rr::RecordType::TXT => DnsValue::Txt(value),
            hickory_proto::rr::RecordType::A => match value.parse() {
                Ok(ip) => DnsValue::A(ip),
                Err(_) => return bad(format!("'{value}' is not an IPv4 address")),
            },
            _ => DnsValue::Cname(value),
        };
        let delay = std::time::Duration::try_from_secs_f64(change.delay.max(0.0)).unwrap_or_default();
        if let Err(e) = s.zones.add(&change.name, value, change.ttl, delay) {
            return bad(e);
        }
    } else if change.action != "clear" {
        return bad(format!("unknown action '{}' (use set, add or clear)", change.action));
    }
    axum::Json(s.zones.list()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobAction {
    /// `complete`, `approve` (an EMAIL job's approval mail answered), `fail` or `stall`.
    action: String,
    #[serde(default)]
    reason: Option<String>,
}

async fn job_control(AxState(s): AxState<Arc<Shared>>, Path(id): Path<i64>, bytes: Bytes) -> Response {
    let action: JobAction = match serde_json::from_slice(&bytes) {
        Ok(a) => a,
        Err(e) => return bad(format!("job action: {e}")),
    };
    let mut st = s.lock();
    if !st.job_exists(id) {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": format!("job {id} does not exist")})),
        )
            .into_response();
    }
    match action.action.as_str() {
        "complete" => st.complete_job(id, &s.ca, &s.durations),
        "fail" => st.finish_job(
            id,
            None,
            Some(action.reason.unwrap_or_else(|| "failed by the operator".into())),
        ),
        "stall" => {
            st.stall_job(id);
        }
        "approve" => {
            if !st.approve_job(id, &s.ca, &s.durations) {
                return bad(format!("job {id} waits for no approval"));
            }
        }
        other => {
            return bad(format!(
                "unknown action '{other}' (use complete, approve, fail or stall)"
            ));
        }
    }
    axum::Json(json!({"job": id, "action": action.action})).into_response()
}

async fn ca_pem(AxState(s): AxState<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        s.ca.root_pem().to_string(),
    )
        .into_response()
}
