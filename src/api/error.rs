//! `api::Error`: every way a request can fail, classified by what it means for a paid request.

use std::time::Duration;

/// An API failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request never left: the connection could not be made.
    #[error("cannot connect to the API: {0}")]
    Connect(String),
    /// The connection broke after the request may have been sent.
    #[error("the connection to the API broke: {0}")]
    Transport(String),
    /// No answer within the timeout.
    #[error("the API did not answer within {}", crate::text::duration(*.0))]
    Timeout(Duration),
    /// The API refused the request with its error envelope (HTTP 4xx): nothing was done.
    #[error("the API refused the request: {code} {text}{}", messages_suffix(.messages))]
    Refused {
        http: u16,
        code: String,
        text: String,
        messages: Vec<String>,
    },
    /// The API failed with its error envelope (HTTP 5xx): the request may or may not have taken effect.
    #[error("the API failed (HTTP {http}): {code} {text}")]
    Server { http: u16, code: String, text: String },
    /// Too many requests: nothing was done; try again after `retry_after`.
    #[error("the API asks to slow down (HTTP 429)")]
    RateLimited { retry_after: Option<Duration> },
    /// The answer was not the API's JSON envelope.
    #[error("the API's answer could not be read (HTTP {http}): {detail}")]
    Garbled { http: u16, detail: String },
}

fn messages_suffix(messages: &[String]) -> String {
    if messages.is_empty() {
        String::new()
    } else {
        format!(" ({})", messages.join("; "))
    }
}

impl Error {
    /// Whether trying again may help.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Refused { .. })
    }

    /// Whether a request that got this error may have taken effect anyway. For a paid request
    /// this means: reconcile before anything else.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            Self::Transport(_) | Self::Timeout(_) | Self::Server { .. } | Self::Garbled { .. }
        )
    }

    /// The server's hint for when to try again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// Whether this is a 404 for an unknown id.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Refused { http: 404, .. })
    }

    /// Whether the API refused with `code`, as its status code or one of its messages' codes.
    pub fn has_code(&self, code: &str) -> bool {
        match self {
            Self::Refused { code: c, messages, .. } => {
                c == code || messages.iter().any(|m| m.split(' ').next() == Some(code))
            }
            _ => false,
        }
    }

    /// Whether a job asked for is not known at that route: a 404, or `EF300101` (how the API
    /// answers `GET /job/{id}` for a job that has ended).
    pub fn is_job_unknown(&self) -> bool {
        self.is_not_found() || self.has_code("EF300101")
    }
}
