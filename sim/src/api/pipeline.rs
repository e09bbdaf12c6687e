//! The request pipeline of the JSON API. Every request goes through the same steps: rate limit
//! (per client IP address, before anything else), route, User-Agent, authentication, fault
//! dice, body, operation; and every request is logged, its password redacted.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Bytes, to_bytes};
use axum::extract::{ConnectInfo, Request, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::envelope::{DropConnection, drop_connection, error, success};
use super::routes::{Route, route_of};
use crate::faults::{FaultKind, RateLimitAnswer};
use crate::shared::Shared;
use crate::state::{ApiError, Reply, RequestEntry};
use crate::wire::{BasicUser, Query, StatusType};

/// The largest request body accepted; larger ones get a 413 envelope.
pub const MAX_BODY: usize = 1 << 20;

/// Answers one JSON API request and adds it to the request log.
pub(super) async fn api(
    AxState(s): AxState<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let req = Incoming::read(req).await;
    let mut log = req.log_entry();
    let response = handle(&s, peer, req, &mut log).await;
    log.status = if response.extensions().get::<DropConnection>().is_some() {
        0
    } else {
        response.status().as_u16()
    };
    s.lock().requests.push(log);
    response
}

/// One JSON API request as the pipeline reads it.
struct Incoming {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    /// The client transaction id, from its header or the query.
    ctid: Option<String>,
    /// The body, or an error if it is larger than [`MAX_BODY`].
    body: Result<Bytes, axum::Error>,
}

impl Incoming {
    async fn read(req: Request) -> Self {
        let (parts, body) = req.into_parts();
        let query = parts.uri.query().map(str::to_owned);
        let ctid = parts
            .headers
            .get("x-domainrobot-ctid")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| query_param(query.as_deref(), "ctid"));
        // Read oversize bodies to the end (up to a hard cap) so that the client gets the 413
        // envelope instead of a broken pipe.
        let body = to_bytes(body, 64 * MAX_BODY).await.and_then(|b| {
            if b.len() > MAX_BODY {
                Err(axum::Error::new(std::io::Error::other("body too large")))
            } else {
                Ok(b)
            }
        });
        Self {
            method: parts.method,
            path: parts.uri.path().to_string(),
            query,
            headers: parts.headers,
            ctid,
            body,
        }
    }

    /// Its line in the request log, the password redacted; the steps fill in the rest.
    fn log_entry(&self) -> RequestEntry {
        let body = match &self.body {
            Ok(b) if b.is_empty() => None,
            Ok(b) => Some(
                serde_json::from_slice::<Value>(b)
                    .map(redact)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b[..b.len().min(2048)]).into_owned())),
            ),
            Err(_) => Some(Value::String("(body too large)".into())),
        };
        RequestEntry {
            method: self.method.to_string(),
            path: self.path.clone(),
            query: self.query.clone(),
            body,
            ctid: self.ctid.clone(),
            user: None,
            status: 0,
            fault: None,
            time: crate::time::format(crate::time::now()),
            logged: false,
        }
    }

    /// Whether the query asks AutoDNS to provision the DCV records (`...=dnsProvisioning`).
    fn provisioning(&self) -> bool {
        self.query
            .as_deref()
            .is_some_and(|q| q.split('&').any(|kv| kv.ends_with("=dnsProvisioning")))
    }
}

/// Takes a request through the pipeline's steps to its answer.
async fn handle(s: &Arc<Shared>, peer: SocketAddr, req: Incoming, log: &mut RequestEntry) -> Response {
    let ctid = &req.ctid;
    let faults = s.lock().faults.clone();
    if faults.rate_limit > 0.0 {
        if faults.rate_limit_answer == RateLimitAnswer::Delay {
            let wait = s.rate_limits.reserve(peer.ip(), faults.rate_limit);
            if !wait.is_zero() {
                s.lock().stats.rate_delayed += 1;
                tokio::time::sleep(wait).await;
            }
        } else if let Some(retry) = s.rate_limits.take(peer.ip(), faults.rate_limit) {
            s.lock().stats.rate_limited += 1;
            return error(s, ctid, too_many(faults.rate_limit, faults.rate_limit_answer, retry));
        }
    }
    let route = match route_of(&req.method, &req.path) {
        Ok(r) => r,
        Err(not_found) => return error(s, ctid, no_route(&req, not_found)),
    };
    if req.headers.get(header::USER_AGENT).is_none_or(|v| v.is_empty()) {
        return error(
            s,
            ctid,
            ApiError::refused("0000", "EF0003", "a User-Agent header is required"),
        );
    }
    let owner = match authenticate(s, &req.headers) {
        Ok(o) => o,
        Err(e) => return error(s, ctid, e),
    };
    log.user = Some(owner.user.clone());
    let fault = s.lock().dice.roll(&faults, route.key());
    log.fault = fault
        .and_then(|f| serde_json::to_value(f).ok())
        .and_then(|v| v.as_str().map(str::to_owned));
    if let Some(fault) = fault
        && let Some(answer) = fault_answer(s, fault, faults.rate_limit_answer, ctid, log).await
    {
        return answer;
    }
    let bytes = match &req.body {
        Ok(b) => b,
        Err(_) => {
            return error(
                s,
                ctid,
                ApiError::new(413, "E0413", format!("the request body exceeds {MAX_BODY} bytes")),
            );
        }
    };
    let result = dispatch(s, route, &owner, bytes, ctid.clone(), req.provisioning());
    if matches!(route, Route::Create | Route::Reissue(_) | Route::Renew(_)) && result.is_ok() {
        s.wake.notify_one();
    }
    if fault == Some(FaultKind::Ghost) {
        return drop_connection();
    }
    match result {
        Ok(reply) => success(s, ctid, reply),
        Err(e) => error(s, ctid, e),
    }
}

/// The error for a request [`route_of`] found no route for.
fn no_route(req: &Incoming, (known, bad_id): (bool, Option<String>)) -> ApiError {
    let (method, path) = (&req.method, &req.path);
    match (known, bad_id) {
        (true, _) => ApiError::new(405, "E0405", format!("{method} is not allowed on {path}")),
        (false, Some(bad)) => ApiError::field("0000", "id", format!("'{bad}' is not a numeric id")),
        (false, None) => ApiError::new(404, "E0404", format!("there is no route {method} {path}")),
    }
}

/// The 429 of the rate limit (and of the `status429` fault): the error envelope, with a
/// `Retry-After` only when `answer` is `429_retry_after` (the API documents none).
fn too_many(rate: f64, answer: RateLimitAnswer, retry: u64) -> ApiError {
    let rate = if rate > 0.0 { rate } else { 3.0 };
    let mut e = ApiError::new(
        429,
        "E0429",
        format!("Too many requests: the limit is {rate} requests per second per IP address."),
    );
    if answer == RateLimitAnswer::Status429RetryAfter {
        e.retry_after = Some(retry);
    }
    e
}

/// What a fault answers instead of the operation; `None` when the operation goes ahead (no
/// answer of its own, or a ghost, which loses the operation's answer afterwards).
async fn fault_answer(
    s: &Shared,
    fault: FaultKind,
    answer_429: RateLimitAnswer,
    ctid: &Option<String>,
    log: &mut RequestEntry,
) -> Option<Response> {
    let answer = match fault {
        FaultKind::Ghost => return None,
        FaultKind::Reset => drop_connection(),
        FaultKind::Hang => {
            // The client gives up first and this future is dropped, so log now.
            s.lock().requests.push(log.clone());
            log.logged = true;
            tokio::time::sleep(s.durations.hang).await;
            drop_connection()
        }
        FaultKind::Status500 => error(
            s,
            ctid,
            ApiError::new(500, "E0500", "Internal error, please try again later."),
        ),
        FaultKind::Status503 => error(
            s,
            ctid,
            ApiError::new(503, "E0503", "The service is temporarily unavailable."),
        ),
        FaultKind::Status429 => error(s, ctid, too_many(0.0, answer_429, 1)),
        FaultKind::Status502 => (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>",
        )
            .into_response(),
        FaultKind::Truncated => {
            let stid = s.lock().stid();
            let text = format!(r#"{{"stid":"{stid}","status":{{"code":"S0000","text":"The request was"#);
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], text).into_response()
        }
        FaultKind::Html => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<!DOCTYPE html><html><body><p>Maintenance in progress.</p></body></html>",
        )
            .into_response(),
        FaultKind::WrongShape => (
            StatusCode::OK,
            axum::Json(json!({"status": "ok", "data": {"id": "soon"}, "object": 42})),
        )
            .into_response(),
    };
    Some(answer)
}

fn dispatch(
    s: &Shared,
    route: Route,
    owner: &BasicUser,
    bytes: &[u8],
    ctid: Option<String>,
    prov: bool,
) -> Result<Reply, ApiError> {
    let env = s.env();
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
        Route::Prepare => s.lock().prepare_order(owner, body("400110", bytes, false)?, env),
        Route::Create => s.lock().create(owner, body("400101", bytes, false)?, ctid, prov, env),
        Route::Reissue(id) => s
            .lock()
            .reissue(owner, id, body("400102", bytes, false)?, ctid, prov, env),
        Route::Renew(id) => s.lock().renew(owner, id, body("400106", bytes, true)?, ctid, prov, env),
        Route::Info(id) => s.lock().info(owner, id),
        Route::Search => s.lock().search(owner, &body::<Query>("400105", bytes, true)?),
        Route::Revoke(id) => s.lock().revoke(owner, id, body("4001031", bytes, false)?, ctid, env),
        Route::Delete(id) => s.lock().delete(owner, id, ctid, env),
        Route::Poll => Ok(s.lock().poll(owner)),
        Route::PollConfirm(id) => s.lock().poll_confirm(owner, id),
        Route::JobInfo(id) => s.lock().job_info(owner, id, false),
        Route::JobSearch => s
            .lock()
            .job_search(owner, &body::<Query>("300115", bytes, true)?, false),
        Route::JobHistoryInfo(id) => s.lock().job_info(owner, id, true),
        Route::JobHistorySearch => s.lock().job_search(owner, &body::<Query>("300135", bytes, true)?, true),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_request_log() {
        let v = redact(json!({"name": "a", "password": "secret", "nested": [{"Password": "x"}]}));
        assert_eq!(
            v,
            json!({"name": "a", "password": "(redacted)", "nested": [{"Password": "(redacted)"}]})
        );
    }
}
