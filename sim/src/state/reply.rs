//! What every operation of the simulated service answers: a [`Reply`] on success, an
//! [`ApiError`] otherwise. The HTTP layer wraps both into the API's envelope.

use serde::Serialize;
use serde_json::Value;

use crate::wire::{GenericObject, Message, ResponseObject, StatusType};

/// A successful answer, before it is wrapped into the envelope.
#[derive(Debug)]
pub struct Reply {
    pub code: String,
    pub text: String,
    pub kind: StatusType,
    pub object: Option<ResponseObject>,
    pub data: Option<Vec<Value>>,
}

impl Reply {
    pub(super) fn success(code: &str, text: &str) -> Self {
        Self {
            code: code.into(),
            text: text.into(),
            kind: StatusType::Success,
            object: None,
            data: None,
        }
    }

    pub(super) fn notify(code: &str, text: &str) -> Self {
        Self {
            kind: StatusType::Notify,
            ..Self::success(code, text)
        }
    }

    pub(super) fn object(mut self, kind: &str, value: impl ToString) -> Self {
        self.object = Some(ResponseObject {
            kind: kind.into(),
            value: Some(value.to_string()),
            ..Default::default()
        });
        self
    }

    /// The envelope's `object` of a list: its type and the count before paging, no value.
    pub(super) fn summary(mut self, kind: &str, total: i64) -> Self {
        self.object = Some(ResponseObject {
            kind: kind.into(),
            value: None,
            summary: Some(total),
            data: None,
        });
        self
    }

    pub(super) fn data<T: Serialize>(mut self, items: impl IntoIterator<Item = T>) -> Self {
        self.data = Some(
            items
                .into_iter()
                .map(|i| serde_json::to_value(i).unwrap_or(Value::Null))
                .collect(),
        );
        self
    }
}

/// An error answer: HTTP status, `status {code, text}`, `messages[]` and the `object` it is
/// about, if any (an empty code or text is left out of `status`).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub http: u16,
    pub code: String,
    pub text: String,
    pub messages: Vec<Message>,
    pub object: Option<Box<ResponseObject>>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(http: u16, code: &str, text: impl Into<String>) -> Self {
        Self {
            http,
            code: code.into(),
            text: text.into(),
            messages: Vec::new(),
            object: None,
            retry_after: None,
        }
    }

    /// The error names the object it is about (`{type, value}`), unless it already does.
    pub fn about(mut self, kind: &str, value: impl ToString) -> Self {
        self.object.get_or_insert_with(|| {
            Box::new(ResponseObject {
                kind: kind.into(),
                value: Some(value.to_string()),
                ..Default::default()
            })
        });
        self
    }

    /// A 400 that names the offending field in `messages[].objects`.
    pub fn field(task: &str, field: &str, text: impl Into<String>) -> Self {
        let text = text.into();
        let mut e = Self::new(400, &format!("E{task}"), "The request is invalid.");
        e.messages.push(Message {
            code: format!("EF{task}"),
            text,
            status: StatusType::Error,
            objects: vec![GenericObject {
                kind: "field".into(),
                value: field.into(),
            }],
        });
        e
    }

    /// A 404 for an unknown id; `kind` is the object's type in `object` (`Certificate`, ...).
    pub fn not_found(task: &str, what: &str, kind: &str, id: impl ToString) -> Self {
        let id = id.to_string();
        let mut e = Self::new(404, &format!("E{task}"), format!("{what} {id} was not found."));
        e.messages.push(Message {
            code: format!("EF{task}404"),
            text: format!("{what} {id} does not exist or belongs to another account."),
            status: StatusType::Error,
            objects: vec![GenericObject {
                kind: what.into(),
                value: id.clone(),
            }],
        });
        e.about(kind, id)
    }

    /// A 404 for a job that is not (or no longer, or not yet) served where it was asked for:
    /// message code `EF300101`, as an SDK test expects of `GET /job/{id}` after the job ended.
    pub fn job_not_found(task: &str, id: i64) -> Self {
        let mut e = Self::new(404, &format!("E{task}"), format!("job {id} was not found."));
        e.messages.push(Message {
            code: "EF300101".into(),
            text: format!("job {id} does not exist."),
            status: StatusType::Error,
            objects: vec![GenericObject {
                kind: "job".into(),
                value: id.to_string(),
            }],
        });
        e.about("ObjectJob", id)
    }

    /// A 400 for a search key the route does not document, shaped as the real one: `status`
    /// holds only `type`, `messages[0]` is `EF00022` "Schluessel nicht erlaubt." naming the
    /// key's place (`filters[0]/key`) and the key.
    pub fn key_not_allowed(place: &str, key: &str) -> Self {
        let mut e = Self::new(400, "", "");
        e.messages.push(Message {
            code: "EF00022".into(),
            text: "Schluessel nicht erlaubt.".into(),
            status: StatusType::Error,
            objects: vec![GenericObject {
                kind: place.into(),
                value: key.into(),
            }],
        });
        e
    }

    /// A 400 about the state of an object rather than a field.
    pub fn refused(task: &str, code: &str, text: impl Into<String>) -> Self {
        let text = text.into();
        let mut e = Self::new(400, &format!("E{task}"), text.clone());
        e.messages.push(Message {
            code: code.into(),
            text,
            status: StatusType::Error,
            objects: vec![],
        });
        e
    }
}

pub(super) type Result<T> = std::result::Result<T, ApiError>;
