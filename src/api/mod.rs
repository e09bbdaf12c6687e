//! The AutoDNS JSON API client (reqwest with rustls).
//!
//! Basic auth plus `X-Domainrobot-Context`, a User-Agent, a timeout on every request, one rate
//! limiter shared by all certificates, and retries with backoff only for requests that are safe
//! to repeat (reads, prepareOrder). Paid requests (create, reissue, renew) are sent once; an
//! answer that is lost comes back as an error whose `outcome_unknown()` is true, and the caller
//! reconciles. Responses become errors in exactly one function, [`Client::check`].

pub mod error;
mod limit;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use error::Error;
pub use limit::{RateLimiter, Turn};
use wire::*;

use crate::config::{ApiConfig, ContactDetails, Secret};
use crate::text::printable;

/// How safe requests are retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

pub use wire::Prepared;

/// What one `GET /poll` found.
#[derive(Clone, Debug)]
pub struct Polled {
    pub message: Option<PollMessage>,
    /// The messages queued, this one included, where the API says.
    pub queued: Option<i64>,
}

/// A connected API client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    user: String,
    password: Secret,
    context: i32,
    timeout: Duration,
    limiter: Arc<RateLimiter>,
    retry: RetryPolicy,
}

const USER_AGENT: &str = concat!("certkeeper/", env!("CARGO_PKG_VERSION"));

/// The largest answer read: the API's largest (a certificate with its chain) is a few KiB.
pub const MAX_BODY: usize = 4 << 20;
/// The longest `Retry-After` honoured; a larger one is read as this (a run must not sleep for
/// centuries holding the lock because a server said so).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// The longest a request waits inside a run for a `Retry-After`; a longer one ends the attempt,
/// and the schedule tries again after it.
pub const MAX_WAIT_IN_RUN: Duration = Duration::from_secs(60);

impl Client {
    pub fn new(cfg: &ApiConfig) -> Result<Self, Error> {
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            // A redirect would resend the credentials (and a paid body, on 307/308) to wherever
            // it points, https or not: the API is called at the configured URL or not at all.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout);
        // Only these roots: the compiled-in or the system store's (`api.roots`), and
        // `api.ca_file`. (reqwest's default, the platform verifier, would read and parse the
        // system store at every start.)
        let mut roots = Vec::new();
        for der in crate::trust::roots(cfg.roots) {
            match reqwest::Certificate::from_der(der) {
                Ok(c) => roots.push(c),
                Err(e) => tracing::debug!(error = %e, "a root certificate was skipped"),
            }
        }
        if let Some(pem) = &cfg.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| Error::Connect(format!("api.ca_file: {e}")))?;
            roots.extend(certs);
        }
        builder = builder.tls_certs_only(roots);
        let http = builder.build().map_err(|e| Error::Connect(e.to_string()))?;
        Ok(Self {
            http,
            base: cfg.url.trim_end_matches('/').to_string(),
            user: cfg.user.clone(),
            password: cfg.password.clone(),
            context: cfg.context,
            timeout: cfg.timeout,
            limiter: Arc::new(RateLimiter::new(cfg.rate_limit)),
            retry: RetryPolicy::default(),
        })
    }

    /// How many requests this client (and its clones) sent so far.
    pub fn requests(&self) -> u64 {
        self.limiter.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The most requests a second it sends.
    pub fn rate(&self) -> f64 {
        1.0 / self.limiter.interval.as_secs_f64()
    }

    /// Uses another retry policy (tests shorten it).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Waits for a slot of the rate limit and takes it, for a paid request about to be
    /// journaled: the request then leaves as soon as its journal is written, so a run killed
    /// while it waited for its slot has sent nothing, and its journal says so (no lost answer
    /// to look for).
    pub async fn turn(&self) -> Turn {
        self.limiter.acquire().await;
        Turn(())
    }

    /// Sends one request, once: in the slot `turn` took, else in the next free one.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        ctid: Option<&str>,
        turn: Option<Turn>,
    ) -> Result<Envelope, Error> {
        if turn.is_none() {
            self.limiter.acquire().await;
        }
        // One API worker per fleet: a member that does not lead sends nothing.
        if !crate::may_call_api() {
            return Err(Error::Connect(
                "this fleet member does not lead: nothing is sent to the API".into(),
            ));
        }
        let url = format!("{}{}", self.base, path);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .basic_auth(&self.user, Some(self.password.expose()))
            .header("X-Domainrobot-Context", self.context.to_string())
            .header("Accept", "application/json");
        if let Some(ctid) = ctid {
            req = req.header("X-Domainrobot-Ctid", ctid);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let started = std::time::Instant::now();
        let result = req.send().await;
        let response = match result {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Err(Error::Timeout(self.timeout)),
            Err(e) if e.is_connect() => return Err(Error::Connect(error_chain(&e))),
            Err(e) => return Err(Error::Transport(error_chain(&e))),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        let bytes = read_body(response, self.timeout).await?;
        tracing::debug!(%method, path, status = status.as_u16(), ms = started.elapsed().as_millis() as u64, "api request");
        let checked = Self::check(status, retry_after, &bytes);
        if let Err(Error::RateLimited { retry_after }) = &checked {
            self.limiter
                .pause(retry_after.unwrap_or(Duration::from_secs(1)).min(MAX_WAIT_IN_RUN))
                .await;
        }
        checked
    }

    /// The one place where an HTTP answer becomes a success or a typed error.
    pub fn check(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Result<Envelope, Error> {
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Error::RateLimited { retry_after });
        }
        let snippet = || printable(&String::from_utf8_lossy(&body[..body.len().min(120)]));
        let env: Envelope = match serde_json::from_slice(body) {
            Ok(e) => e,
            Err(e) => {
                return Err(Error::Garbled {
                    http: status.as_u16(),
                    detail: format!("{e}: {}", snippet()),
                });
            }
        };
        let messages: Vec<String> = env
            .messages
            .iter()
            .map(|m| {
                printable(
                    format!(
                        "{} {}",
                        m.code.as_deref().unwrap_or(""),
                        m.text.as_deref().unwrap_or("")
                    )
                    .trim(),
                )
            })
            .collect();
        let ok_type = matches!(env.status.kind.as_str(), "SUCCESS" | "NOTIFY");
        if status.is_success() && ok_type {
            return Ok(env);
        }
        // The API's words reach logs, the terminal and on_failure: escaped on the way in.
        let (code, text) = (printable(&env.status.code), printable(&env.status.text));
        if status.is_server_error() {
            return Err(Error::Server {
                http: status.as_u16(),
                code,
                text,
            });
        }
        if status.is_client_error() || env.status.kind == "ERROR" {
            return Err(Error::Refused {
                http: status.as_u16(),
                code,
                text,
                messages,
            });
        }
        Err(Error::Garbled {
            http: status.as_u16(),
            detail: format!("unexpected status type '{}'", env.status.kind),
        })
    }

    /// Sends a request that is safe to repeat, retrying transient failures with backoff.
    async fn safe(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Envelope, Error> {
        let mut delay = self.retry.first_delay;
        let mut attempt = 1;
        loop {
            match self.send(method.clone(), path, body, None, None).await {
                Ok(env) => return Ok(env),
                // A server that asks for a longer pause than a run may wait gets it from the
                // schedule instead (the failure records its Retry-After).
                Err(e)
                    if e.is_retryable()
                        && attempt < self.retry.attempts
                        && e.retry_after().is_none_or(|d| d <= MAX_WAIT_IN_RUN) =>
                {
                    let wait = e.retry_after().unwrap_or(delay);
                    tracing::debug!(path, attempt, error = %e, ?wait, "retrying");
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(self.retry.max_delay);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a paid request, first in the slot `turn` took. Only a rate-limit refusal (which
    /// proves nothing was done) and a refused connection are retried.
    async fn paid(&self, method: Method, path: &str, body: &Value, ctid: &str, turn: Turn) -> Result<Envelope, Error> {
        let mut attempt = 1;
        let mut turn = Some(turn);
        loop {
            match self
                .send(method.clone(), path, Some(body), Some(ctid), turn.take())
                .await
            {
                Err(Error::RateLimited { retry_after })
                    if attempt < self.retry.attempts && retry_after.is_none_or(|d| d <= MAX_WAIT_IN_RUN) =>
                {
                    tokio::time::sleep(retry_after.unwrap_or(Duration::from_secs(1))).await;
                    attempt += 1;
                }
                Err(Error::Connect(_)) if attempt < self.retry.attempts => {
                    tokio::time::sleep(self.retry.first_delay * attempt).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    pub fn first<T: DeserializeOwned>(env: &Envelope, what: &str) -> Result<T, Error> {
        let v = env
            .data
            .as_ref()
            .and_then(|d| d.first())
            .ok_or_else(|| Error::Garbled {
                http: 200,
                detail: format!("no {what} in data[]"),
            })?;
        serde_json::from_value(v.clone()).map_err(|e| Error::Garbled {
            http: 200,
            detail: format!("{what}: {e}"),
        })
    }

    pub fn all<T: DeserializeOwned>(env: &Envelope, what: &str) -> Result<Vec<T>, Error> {
        env.data
            .iter()
            .flatten()
            .map(|v| {
                serde_json::from_value(v.clone()).map_err(|e| Error::Garbled {
                    http: 200,
                    detail: format!("{what}: {e}"),
                })
            })
            .collect()
    }

    /// `GET /hello`: the API is reached at its URL (the spec: "only for testing the connection";
    /// whether it checks the credentials is not documented).
    pub async fn hello(&self) -> Result<(), Error> {
        self.safe(Method::GET, "/hello", None).await.map(|_| ())
    }

    /// `POST /sslcontact`. Not paid, but not idempotent either: sent once.
    pub async fn create_contact(&self, details: &ContactDetails) -> Result<i64, Error> {
        let mut body = serde_json::to_value(details).unwrap_or(Value::Null);
        if let Some(obj) = body.as_object_mut() {
            obj.retain(|_, v| !v.is_null());
        }
        let env = self.send(Method::POST, "/sslcontact", Some(&body), None, None).await?;
        let v: Value = Self::first(&env, "contact")?;
        v.get("id").and_then(Value::as_i64).ok_or_else(|| Error::Garbled {
            http: 200,
            detail: "the new contact has no id".into(),
        })
    }

    /// `POST /certificate/_prepareOrder`: checks the CSR and returns the DNS validation lines.
    pub async fn prepare_order(
        &self,
        csr: &str,
        product: &str,
        business_case: BusinessCase,
        certificate_id: Option<i64>,
    ) -> Result<Prepared, Error> {
        let mut body = json!({ "plain": csr, "product": product, "businessCase": business_case });
        if let Some(id) = certificate_id {
            body["certificate"] = json!({ "id": id });
        }
        let env = self
            .safe(Method::POST, "/certificate/_prepareOrder", Some(&body))
            .await?;
        let data: CertificateData = Self::first(&env, "CertificateData")?;
        Ok(data.prepared())
    }

    /// `POST /certificate`: orders (pays). Returns the job id.
    pub async fn create(&self, order: &OrderRequest, ctid: &str, turn: Turn) -> Result<i64, Error> {
        let body = serde_json::to_value(order).unwrap_or(Value::Null);
        let env = self.paid(Method::POST, "/certificate", &body, ctid, turn).await?;
        Self::job_id(&env)
    }

    /// `PUT /certificate/{id}`: reissues within the term (free). Returns the job id.
    pub async fn reissue(&self, id: i64, order: &OrderRequest, ctid: &str, turn: Turn) -> Result<i64, Error> {
        let body = serde_json::to_value(order).unwrap_or(Value::Null);
        let env = self
            .paid(Method::PUT, &format!("/certificate/{id}"), &body, ctid, turn)
            .await?;
        Self::job_id(&env)
    }

    /// `PUT /certificate/{id}/_renew`: buys the next term (pays). Returns the job id.
    pub async fn renew(&self, id: i64, order: &OrderRequest, ctid: &str, turn: Turn) -> Result<i64, Error> {
        let body = serde_json::to_value(order).unwrap_or(Value::Null);
        let env = self
            .paid(Method::PUT, &format!("/certificate/{id}/_renew"), &body, ctid, turn)
            .await?;
        Self::job_id(&env)
    }

    /// `POST /certificate/{id}/_revoke`: revokes the order's certificate with this serial
    /// (free, done at once). Sent once, as a paid request is: an answer that was lost is looked
    /// up in the certificate's `histories`, never resent blind.
    pub async fn revoke(&self, id: i64, serial: &str, ctid: &str) -> Result<(), Error> {
        let body = serde_json::json!({ "serialNumber": serial });
        let turn = self.turn().await;
        self.paid(Method::POST, &format!("/certificate/{id}/_revoke"), &body, ctid, turn)
            .await
            .map(drop)
    }

    fn job_id(env: &Envelope) -> Result<i64, Error> {
        let v: Value = Self::first(env, "job")?;
        v.get("id").and_then(Value::as_i64).ok_or_else(|| Error::Garbled {
            http: 200,
            detail: "the job has no id".into(),
        })
    }

    /// `GET /certificate/{id}`.
    pub async fn certificate(&self, id: i64) -> Result<Certificate, Error> {
        let env = self.safe(Method::GET, &format!("/certificate/{id}"), None).await?;
        Self::first(&env, "Certificate")
    }

    /// `GET /job/{id}`: a job still known there (the real API serves only running jobs there).
    pub async fn job(&self, id: i64) -> Result<ObjectJob, Error> {
        self.job_at(&format!("/job/{id}"), id).await
    }

    /// `GET /job/history/{id}`: a finished job, once `GET /job/{id}` no longer knows it.
    pub async fn job_history(&self, id: i64) -> Result<ObjectJob, Error> {
        self.job_at(&format!("/job/history/{id}"), id).await
    }

    async fn job_at(&self, path: &str, id: i64) -> Result<ObjectJob, Error> {
        let env = self.safe(Method::GET, path, None).await?;
        let job: ObjectJob = Self::first(&env, "ObjectJob")?;
        // An answer about another job must not be taken for this one's.
        if job.job.id != id {
            return Err(Error::Garbled {
                http: 200,
                detail: format!("asked for job {id}, the answer is about job {}", job.job.id),
            });
        }
        Ok(job)
    }

    /// `POST /job/_search` (`history`: `POST /job/history/_search`, where finished jobs go):
    /// jobs about the object `name` created since `since`. Only documented search keys are used
    /// (`object`, `created`; API_NOTES.md §2.3): the API refuses others with EF00022. The
    /// action is left to the caller: only `create` has been seen in real answers.
    pub async fn search_jobs(
        &self,
        name: &str,
        since: time::OffsetDateTime,
        history: bool,
    ) -> Result<Vec<ObjectJob>, Error> {
        let body = json!({ "filters": [
            { "key": "object", "value": name, "operator": "EQUAL" },
            { "key": "created", "value": format_time(since), "operator": "GREATER_EQUAL", "link": "AND" }
        ]});
        let path = if history {
            "/job/history/_search"
        } else {
            "/job/_search"
        };
        let env = self.safe(Method::POST, path, Some(&body)).await?;
        Self::all(&env, "ObjectJob")
    }

    /// `POST /certificate/_search` for at most one certificate: an authenticated call that reads
    /// and costs nothing, to learn whether user, password and context are taken.
    pub async fn probe_account(&self) -> Result<usize, Error> {
        let body = json!({ "view": { "limit": 1 } });
        let env = self.safe(Method::POST, "/certificate/_search", Some(&body)).await?;
        Ok(env.data.as_ref().map_or(0, Vec::len))
    }

    /// `GET /sslcontact/{id}`: whether the account has this contact.
    pub async fn contact(&self, id: i64) -> Result<(), Error> {
        self.safe(Method::GET, &format!("/sslcontact/{id}"), None)
            .await
            .map(|_| ())
    }

    /// `POST /certificate/_search`, one page of the account's certificates (ordered by id) from
    /// `offset` on, at most `limit`; with the total where the answer says it (`object.summary`).
    pub async fn list_certificates(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Certificate>, Option<i64>), Error> {
        let body = json!({
            "orders": [ { "key": "id", "type": "ASC" } ],
            "view": { "offset": offset, "limit": limit }
        });
        let env = self.safe(Method::POST, "/certificate/_search", Some(&body)).await?;
        let total = env.object.as_ref().and_then(|o| o.summary);
        Ok((Self::all(&env, "Certificate")?, total))
    }

    /// `POST /certificate/_search`: the certificates named `name`.
    pub async fn search_certificates(&self, name: &str) -> Result<Vec<Certificate>, Error> {
        let body = json!({ "filters": [ { "key": "name", "value": name, "operator": "EQUAL" } ] });
        let env = self.safe(Method::POST, "/certificate/_search", Some(&body)).await?;
        Self::all(&env, "Certificate")
    }

    /// `GET /poll`: the oldest unconfirmed message, if any.
    pub async fn poll(&self) -> Result<Option<PollMessage>, Error> {
        self.poll_queue().await.map(|p| p.message)
    }

    /// `GET /poll`: the oldest unconfirmed message, if any, and how many are queued with it
    /// (`object.summary`, where the API says).
    pub async fn poll_queue(&self) -> Result<Polled, Error> {
        let env = self.safe(Method::GET, "/poll", None).await?;
        let queued = env.object.as_ref().and_then(|o| o.summary);
        let message = match env.data.as_ref().and_then(|d| d.first()) {
            None => None,
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| Error::Garbled {
                http: 200,
                detail: format!("PollMessage: {e}"),
            })?),
        };
        Ok(Polled { message, queued })
    }

    /// `PUT /poll/{id}`: confirms a message. Confirming twice is harmless (a 404 is ignored).
    pub async fn confirm(&self, id: i64) -> Result<(), Error> {
        match self.safe(Method::PUT, &format!("/poll/{id}"), None).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Reads an answer's body, at most [`MAX_BODY`] bytes: a larger one is refused as it arrives,
/// before it fills the memory (as an answer that could not be read, whose outcome is unknown).
async fn read_body(mut response: reqwest::Response, timeout: Duration) -> Result<Vec<u8>, Error> {
    let status = response.status().as_u16();
    let too_large = || Error::Garbled {
        http: status,
        detail: format!("the answer is larger than {} MiB", MAX_BODY >> 20),
    };
    if response.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) if e.is_timeout() => return Err(Error::Timeout(timeout)),
            Err(e) => return Err(Error::Transport(error_chain(&e))),
        }
    }
}

#[cfg(test)]
mod tests;
