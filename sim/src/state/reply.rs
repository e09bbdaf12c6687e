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
            value: value.to_string(),
            ..Default::default()
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

/// An error answer: HTTP status, `status {code, text}` and `messages[]`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub http: u16,
    pub code: String,
    pub text: String,
    pub messages: Vec<Message>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(http: u16, code: &str, text: impl Into<String>) -> Self {
        Self {
            http,
            code: code.into(),
            text: text.into(),
            messages: Vec::new(),
            retry_after: None,
        }
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

    /// A 404 for an unknown id.
    pub fn not_found(task: &str, what: &str, id: impl ToString) -> Self {
        let id = id.to_string();
        let mut e = Self::new(404, &format!("E{task}"), format!("{what} {id} was not found."));
        e.messages.push(Message {
            code: format!("EF{task}404"),
            text: format!("{what} {id} does not exist or belongs to another account."),
            status: StatusType::Error,
            objects: vec![GenericObject {
                kind: what.into(),
                value: id,
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
