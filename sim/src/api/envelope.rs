//! How the JSON API answers: the API's envelope, for successes and errors alike, or no answer
//! at all (a dropped connection).

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::shared::Shared;
use crate::state::{ApiError, Reply};
use crate::wire::{Envelope, ResponseStatus, StatusType};

/// A response carrying this extension is not sent: the connection is dropped instead.
#[derive(Clone, Copy, Debug)]
pub struct DropConnection;

/// A response that drops the connection instead of answering.
pub(super) fn drop_connection() -> Response {
    let mut r = Response::new(Body::empty());
    r.extensions_mut().insert(DropConnection);
    r
}

/// The envelope of a successful operation.
pub(super) fn success(s: &Shared, ctid: &Option<String>, reply: Reply) -> Response {
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

/// The envelope of an error, with its HTTP status and its Retry-After, if any.
pub(super) fn error(s: &Shared, ctid: &Option<String>, e: ApiError) -> Response {
    let env = Envelope {
        stid: s.lock().stid(),
        ctid: ctid.clone(),
        status: ResponseStatus {
            code: e.code,
            text: e.text,
            kind: StatusType::Error,
        },
        object: e.object.map(|o| *o),
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
