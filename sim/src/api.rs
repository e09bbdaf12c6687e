//! The HTTP face of the simulator: the JSON API under `/v1` and the management API under `/_sim`.
//!
//! Every API request goes through the same steps, in the real API's order: route, User-Agent,
//! authentication, rate limit, fault dice, body, operation. Every answer, error or not, is the
//! API's envelope; nothing answers a bare 500 or a plain-text error.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{ConnectInfo, Path, Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::dns::Value as DnsValue;
use crate::faults::{FaultKind, Faults};
use crate::shared::Shared;
use crate::state::{ApiError, Reply, RequestEntry};
use crate::wire::{BasicUser, Envelope, Query, ResponseStatus, StatusType};

/// The largest request body accepted; larger ones get a 413 envelope.
pub const MAX_BODY: usize = 1 << 20;

/// A response carrying this extension is not sent: the connection is dropped instead.
#[derive(Clone, Copy, Debug)]
pub struct DropConnection;

/// Builds the router for both APIs.
pub fn router(shared: Arc<Shared>) -> Router {
    let sim = Router::new()
        .route("/_sim/ledger", get(ledger))
        .route("/_sim/requests", get(requests))
        .route("/_sim/faults", get(get_faults).post(set_faults))
        .route("/_sim/reset", post(reset))
        .route("/_sim/dns", get(dns_list).post(dns_set))
        .route("/_sim/jobs/{id}", post(job_control))
        .route("/_sim/ca", get(ca_pem))
        .layer(middleware::from_fn(loopback_only));
    Router::new().merge(sim).fallback(api).with_state(shared)
}

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

// ----- the JSON API -----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Hello,
    ContactCreate,
    ContactInfo(i64),
    ContactSearch,
    Prepare,
    Create,
    Reissue(i64),
    Renew(i64),
    Info(i64),
    Search,
    Revoke(i64),
    Delete(i64),
    Poll,
    PollConfirm(i64),
    JobInfo(i64),
    JobSearch,
}

impl Route {
    /// The name faults are keyed by, e.g. `PUT /certificate/{id}`.
    fn key(self) -> &'static str {
        match self {
            Self::Hello => "GET /hello",
            Self::ContactCreate => "POST /sslcontact",
            Self::ContactInfo(_) => "GET /sslcontact/{id}",
            Self::ContactSearch => "POST /sslcontact/_search",
            Self::Prepare => "POST /certificate/_prepareOrder",
            Self::Create => "POST /certificate",
            Self::Reissue(_) => "PUT /certificate/{id}",
            Self::Renew(_) => "PUT /certificate/{id}/_renew",
            Self::Info(_) => "GET /certificate/{id}",
            Self::Search => "POST /certificate/_search",
            Self::Revoke(_) => "POST /certificate/{id}/_revoke",
            Self::Delete(_) => "DELETE /certificate/{id}",
            Self::Poll => "GET /poll",
            Self::PollConfirm(_) => "PUT /poll/{id}",
            Self::JobInfo(_) => "GET /job/{id}",
            Self::JobSearch => "POST /job/_search",
        }
    }
}

/// Every route key, for documentation and validation of fault settings.
pub const ROUTE_KEYS: &[&str] = &[
    "GET /hello",
    "POST /sslcontact",
    "GET /sslcontact/{id}",
    "POST /sslcontact/_search",
    "POST /certificate/_prepareOrder",
    "POST /certificate",
    "PUT /certificate/{id}",
    "PUT /certificate/{id}/_renew",
    "GET /certificate/{id}",
    "POST /certificate/_search",
    "POST /certificate/{id}/_revoke",
    "DELETE /certificate/{id}",
    "GET /poll",
    "PUT /poll/{id}",
    "GET /job/{id}",
    "POST /job/_search",
];

/// Finds the route; `Err((true, _))` means the path exists with another method, `Err((_, Some(id)))`
/// that an id in the path is not a number.
fn route_of(method: &Method, path: &str) -> Result<Route, (bool, Option<String>)> {
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Err((false, None));
    };
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match match_route(method.as_str(), &segs) {
        Some(found) => found.map_err(|bad| (false, Some(bad))),
        None => {
            let known = ["GET", "POST", "PUT", "DELETE"]
                .iter()
                .any(|m| *m != method.as_str() && match_route(m, &segs).is_some());
            Err((known, None))
        }
    }
}

fn match_route(m: &str, segs: &[&str]) -> Option<Result<Route, String>> {
    let id = |s: &str| s.parse::<i64>().map_err(|_| s.to_string());
    let found = match (m, segs) {
        ("GET", ["hello"]) => Ok(Route::Hello),
        ("POST", ["sslcontact"]) => Ok(Route::ContactCreate),
        ("POST", ["sslcontact", "_search"]) => Ok(Route::ContactSearch),
        ("GET", ["sslcontact", i]) => id(i).map(Route::ContactInfo),
        ("POST", ["certificate", "_prepareOrder" | "prepareOrder"]) => Ok(Route::Prepare),
        ("POST", ["certificate", "_search"]) => Ok(Route::Search),
        ("POST", ["certificate"]) => Ok(Route::Create),
        ("PUT", ["certificate", i]) => id(i).map(Route::Reissue),
        ("PUT", ["certificate", i, "_renew"]) => id(i).map(Route::Renew),
        ("GET", ["certificate", i]) => id(i).map(Route::Info),
        ("DELETE", ["certificate", i]) => id(i).map(Route::Delete),
        ("POST", ["certificate", i, "_revoke"]) => id(i).map(Route::Revoke),
        ("GET", ["poll"]) => Ok(Route::Poll),
        ("PUT", ["poll", i]) => id(i).map(Route::PollConfirm),
        ("POST", ["job", "_search"]) => Ok(Route::JobSearch),
        ("GET", ["job", i]) => id(i).map(Route::JobInfo),
        _ => return None,
    };
    Some(found)
}

async fn api(AxState(s): AxState<Arc<Shared>>, ConnectInfo(_peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_owned);
    let ctid = parts
        .headers
        .get("x-domainrobot-ctid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query_param(query.as_deref(), "ctid"));
    // Read oversize bodies to the end (up to a hard cap) so that the client gets the 413
    // envelope instead of a broken pipe.
    let bytes = to_bytes(body, 64 * MAX_BODY).await.and_then(|b| {
        if b.len() > MAX_BODY {
            Err(axum::Error::new(std::io::Error::other("body too large")))
        } else {
            Ok(b)
        }
    });
    let body_log = match &bytes {
        Ok(b) if b.is_empty() => None,
        Ok(b) => Some(
            serde_json::from_slice::<Value>(b)
                .map(redact)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b[..b.len().min(2048)]).into_owned())),
        ),
        Err(_) => Some(Value::String("(body too large)".into())),
    };
    let mut log = RequestEntry {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: body_log,
        ctid: ctid.clone(),
        user: None,
        status: 0,
        fault: None,
        time: crate::time::format(crate::time::now()),
        logged: false,
    };
    let response = handle(
        &s,
        &parts.headers,
        &method,
        &path,
        query.as_deref(),
        bytes,
        ctid,
        &mut log,
    )
    .await;
    log.status = if response.extensions().get::<DropConnection>().is_some() {
        0
    } else {
        response.status().as_u16()
    };
    s.lock().requests.push(log);
    response
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    s: &Arc<Shared>,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    query: Option<&str>,
    bytes: Result<Bytes, axum::Error>,
    ctid: Option<String>,
    log: &mut RequestEntry,
) -> Response {
    let route = match route_of(method, path) {
        Ok(r) => r,
        Err((true, _)) => {
            return error(
                s,
                &ctid,
                ApiError::new(405, "E0405", format!("{method} is not allowed on {path}")),
            );
        }
        Err((false, Some(bad))) => {
            return error(
                s,
                &ctid,
                ApiError::field("0000", "id", format!("'{bad}' is not a numeric id")),
            );
        }
        Err((false, None)) => {
            return error(
                s,
                &ctid,
                ApiError::new(404, "E0404", format!("there is no route {method} {path}")),
            );
        }
    };
    if headers.get(header::USER_AGENT).is_none_or(|v| v.is_empty()) {
        return error(
            s,
            &ctid,
            ApiError::refused("0000", "EF0003", "a User-Agent header is required"),
        );
    }
    let owner = match authenticate(s, headers) {
        Ok(o) => o,
        Err(e) => return error(s, &ctid, e),
    };
    log.user = Some(owner.user.clone());
    let faults = s.lock().faults.clone();
    if let Some(retry) = rate_limited(s, &owner, &faults) {
        let mut e = ApiError::new(429, "E0429", "Too many requests: the limit is 3 requests per second.");
        e.retry_after = Some(retry);
        return error(s, &ctid, e);
    }
    let fault = s.lock().dice.roll(&faults, route.key());
    log.fault = fault
        .and_then(|f| serde_json::to_value(f).ok())
        .and_then(|v| v.as_str().map(str::to_owned));
    match fault {
        None | Some(FaultKind::Ghost) => {}
        Some(FaultKind::Reset) => return drop_connection(),
        Some(FaultKind::Hang) => {
            // The client gives up first and this future is dropped, so log now.
            s.lock().requests.push(log.clone());
            log.logged = true;
            tokio::time::sleep(s.durations.hang).await;
            return drop_connection();
        }
        Some(FaultKind::Status500) => {
            return error(
                s,
                &ctid,
                ApiError::new(500, "E0500", "Internal error, please try again later."),
            );
        }
        Some(FaultKind::Status503) => {
            return error(
                s,
                &ctid,
                ApiError::new(503, "E0503", "The service is temporarily unavailable."),
            );
        }
        Some(FaultKind::Status429) => {
            let mut e = ApiError::new(429, "E0429", "Too many requests: the limit is 3 requests per second.");
            e.retry_after = Some(1);
            return error(s, &ctid, e);
        }
        Some(FaultKind::Status502) => {
            return (
                StatusCode::BAD_GATEWAY,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>",
            )
                .into_response();
        }
        Some(FaultKind::Truncated) => {
            let stid = s.lock().stid();
            let text = format!(r#"{{"stid":"{stid}","status":{{"code":"S0000","text":"The request was"#);
            return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], text).into_response();
        }
        Some(FaultKind::Html) => {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html")],
                "<!DOCTYPE html><html><body><p>Maintenance in progress.</p></body></html>",
            )
                .into_response();
        }
        Some(FaultKind::WrongShape) => {
            return (
                StatusCode::OK,
                axum::Json(json!({"status": "ok", "data": {"id": "soon"}, "object": 42})),
            )
                .into_response();
        }
    }
    let bytes = match bytes {
        Ok(b) => b,
        Err(_) => {
            return error(
                s,
                &ctid,
                ApiError::new(413, "E0413", format!("the request body exceeds {MAX_BODY} bytes")),
            );
        }
    };
    let provisioning = query.is_some_and(|q| q.split('&').any(|kv| kv.ends_with("=dnsProvisioning")));
    let result = dispatch(s, route, &owner, &bytes, ctid.clone(), provisioning);
    if matches!(route, Route::Create | Route::Reissue(_) | Route::Renew(_)) && result.is_ok() {
        s.wake.notify_one();
    }
    if fault == Some(FaultKind::Ghost) {
        return drop_connection();
    }
    match result {
        Ok(reply) => success(s, &ctid, reply),
        Err(e) => error(s, &ctid, e),
    }
}

fn dispatch(
    s: &Shared,
    route: Route,
    owner: &BasicUser,
    bytes: &[u8],
    ctid: Option<String>,
    prov: bool,
) -> Result<Reply, ApiError> {
    let d = &s.durations;
    let z = &s.zones;
    match route {
        Route::Hello => Ok(Reply {
            code: "S0000".into(),
            text: "Hello, this is the AutoDNS simulator.".into(),
            kind: StatusType::Success,
            object: None,
            data: None,
        }),
        Route::ContactCreate => s.lock().contact_create(owner, body("400201", bytes, false)?),
        Route::ContactInfo(id) => s.lock().contact_info(owner, id),
        Route::ContactSearch => s.lock().contact_search(owner, &body::<Query>("400205", bytes, true)?),
        Route::Prepare => s.lock().prepare_order(owner, body("400110", bytes, false)?),
        Route::Create => s.lock().create(owner, body("400101", bytes, false)?, ctid, prov, z, d),
        Route::Reissue(id) => s
            .lock()
            .reissue(owner, id, body("400102", bytes, false)?, ctid, prov, z, d),
        Route::Renew(id) => s
            .lock()
            .renew(owner, id, body("400106", bytes, true)?, ctid, prov, z, d),
        Route::Info(id) => s.lock().info(owner, id),
        Route::Search => s.lock().search(owner, &body::<Query>("400105", bytes, true)?),
        Route::Revoke(id) => s.lock().revoke(owner, id, body("4001031", bytes, false)?, ctid, z, d),
        Route::Delete(id) => s.lock().delete(owner, id, ctid, z, d),
        Route::Poll => Ok(s.lock().poll(owner)),
        Route::PollConfirm(id) => s.lock().poll_confirm(owner, id),
        Route::JobInfo(id) => s.lock().job_info(owner, id),
        Route::JobSearch => s.lock().job_search(owner, &body::<Query>("300115", bytes, true)?),
    }
}

/// Parses a JSON object body; an error names the field at fault.
fn body<T: DeserializeOwned + Default>(task: &str, bytes: &[u8], empty_ok: bool) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return if empty_ok {
            Ok(T::default())
        } else {
            Err(ApiError::field(task, "body", "a JSON object body is required"))
        };
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::field(task, "body", format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::field(task, "body", "the body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        ApiError::field(task, &field, format!("{field}: {}", e.inner()))
    })
}

fn authenticate(s: &Shared, headers: &HeaderMap) -> Result<BasicUser, ApiError> {
    let unauthorized = |why: &str| {
        let mut e = ApiError::new(401, "E0101", "Authentication error.");
        e.messages.push(crate::wire::Message {
            code: "EF0101".into(),
            text: why.into(),
            status: StatusType::Error,
            objects: vec![],
        });
        e
    };
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .ok_or_else(|| unauthorized("HTTP Basic authentication is required"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .map_err(|_| unauthorized("the Authorization header is not valid Basic authentication"))?;
    let decoded =
        String::from_utf8(decoded).map_err(|_| unauthorized("the Authorization header is not valid UTF-8"))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| unauthorized("the Authorization header holds no password"))?;
    let context = headers
        .get("x-domainrobot-context")
        .ok_or_else(|| unauthorized("the X-Domainrobot-Context header is required"))?
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
        .ok_or_else(|| unauthorized("X-Domainrobot-Context must be a number"))?;
    s.accounts
        .iter()
        .find(|a| a.user == user && a.password == password && a.context == context)
        .map(|a| BasicUser {
            user: a.user.clone(),
            context: a.context,
        })
        .ok_or_else(|| unauthorized("user, password or context is wrong"))
}

/// The rate limit: `rate_limit` requests a second per account, as many in a burst.
fn rate_limited(s: &Shared, owner: &BasicUser, faults: &Faults) -> Option<u64> {
    let rate = faults.rate_limit;
    if rate <= 0.0 {
        return None;
    }
    s.rate_limits.take(format!("{}:{}", owner.user, owner.context), rate)
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        kv.strip_prefix(name)
            .and_then(|v| v.strip_prefix('='))
            .map(str::to_owned)
    })
}

fn redact(mut v: Value) -> Value {
    match &mut v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if k.eq_ignore_ascii_case("password") {
                    *val = Value::String("(redacted)".into());
                } else {
                    *val = redact(val.take());
                }
            }
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                *item = redact(item.take());
            }
        }
        _ => {}
    }
    v
}

fn drop_connection() -> Response {
    let mut r = Response::new(Body::empty());
    r.extensions_mut().insert(DropConnection);
    r
}

fn success(s: &Shared, ctid: &Option<String>, reply: Reply) -> Response {
    let env = Envelope {
        stid: s.lock().stid(),
        ctid: ctid.clone(),
        status: ResponseStatus {
            code: reply.code,
            text: reply.text,
            kind: reply.kind,
        },
        object: reply.object,
        data: reply.data,
        messages: Vec::new(),
    };
    (StatusCode::OK, axum::Json(env)).into_response()
}

fn error(s: &Shared, ctid: &Option<String>, e: ApiError) -> Response {
    let env = Envelope {
        stid: s.lock().stid(),
        ctid: ctid.clone(),
        status: ResponseStatus {
            code: e.code,
            text: e.text,
            kind: StatusType::Error,
        },
        object: None,
        data: None,
        messages: e.messages,
    };
    let status = StatusCode::from_u16(e.http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, axum::Json(env)).into_response();
    if let Some(secs) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

// ----- the management API -----------------------------------------------------------------------

fn bad(text: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": text.into()}))).into_response()
}

async fn ledger(AxState(s): AxState<Arc<Shared>>) -> Response {
    axum::Json(s.lock().ledger.clone()).into_response()
}

async fn requests(AxState(s): AxState<Arc<Shared>>) -> Response {
    axum::Json(s.lock().requests.clone()).into_response()
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
        other => return bad(format!("type {other} is not supported (use TXT or CNAME)")),
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
        let value = if kind == hickory_proto::rr::RecordType::TXT {
            DnsValue::Txt(value)
        } else {
            DnsValue::Cname(value)
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
    /// `complete`, `fail` or `stall`.
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
        other => return bad(format!("unknown action '{other}' (use complete, fail or stall)")),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_found_by_method_and_path() {
        assert_eq!(
            route_of(&Method::POST, "/v1/certificate/_prepareOrder"),
            Ok(Route::Prepare)
        );
        assert_eq!(
            route_of(&Method::POST, "/v1/certificate/prepareOrder"),
            Ok(Route::Prepare)
        );
        assert_eq!(
            route_of(&Method::PUT, "/v1/certificate/42/_renew"),
            Ok(Route::Renew(42))
        );
        assert_eq!(
            route_of(&Method::PUT, "/v1/poll/4297000000"),
            Ok(Route::PollConfirm(4_297_000_000))
        );
        assert_eq!(route_of(&Method::PATCH, "/v1/certificate/42"), Err((true, None)));
        assert_eq!(route_of(&Method::GET, "/v1/nothing"), Err((false, None)));
        assert_eq!(
            route_of(&Method::GET, "/v1/certificate/abc"),
            Err((false, Some("abc".into())))
        );
    }

    #[test]
    fn passwords_never_reach_the_request_log() {
        let v = redact(json!({"name": "a", "password": "secret", "nested": [{"Password": "x"}]}));
        assert_eq!(
            v,
            json!({"name": "a", "password": "(redacted)", "nested": [{"Password": "(redacted)"}]})
        );
    }
}
