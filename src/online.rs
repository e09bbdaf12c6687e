//! `certkeeper check --online`: what the configuration cannot show by itself, asked of the API
//! with calls that read and cost nothing: the URL and TLS (`GET /hello`), the user, password and
//! context (a certificate search for at most one), and every contact id the certificates name.
//! Nothing is created, ordered or confirmed.

use crate::api::Client;
use crate::config::{Config, ContactSpec};

/// One thing checked: what, and whether it holds (with the API's words when it does not).
pub(crate) struct Finding {
    pub what: String,
    pub result: Result<String, String>,
}

/// Asks the API. Stops after the first failure that makes the rest meaningless (the API
/// unreachable, the credentials refused).
pub(crate) async fn check(config: &Config) -> Vec<Finding> {
    let mut found = Vec::new();
    let api = &config.api;
    // One retry at most: an operator is waiting, and an unreachable API says so in seconds.
    let retry = crate::api::RetryPolicy {
        attempts: 2,
        ..crate::api::RetryPolicy::default()
    };
    let client = match Client::new(api) {
        Ok(c) => c.with_retry(retry),
        Err(e) => {
            found.push(Finding {
                what: format!("api.url {}", api.url),
                result: Err(e.to_string()),
            });
            return found;
        }
    };
    let hello = client.hello().await;
    // Refused for its credentials, /hello was reached: the account check below names it.
    let refused_credentials = matches!(&hello, Err(crate::api::Error::Refused { http: 401 | 403, .. }));
    let reached = hello.is_ok() || refused_credentials;
    found.push(Finding {
        what: format!("api.url {}", api.url),
        result: match hello {
            Ok(()) => Ok("reached (GET /hello)".into()),
            Err(_) if refused_credentials => Ok("reached (GET /hello, which refused the credentials)".into()),
            Err(e) => Err(e.to_string()),
        },
    });
    if !reached {
        return found;
    }
    let account = client.probe_account().await;
    let accepted = account.is_ok();
    found.push(Finding {
        what: format!("api.user {} in context {}", api.user, api.context),
        result: account
            .map(|_| "accepted (POST /certificate/_search)".into())
            .map_err(|e| format!("{e}; check api.user, api.context and the password")),
    });
    if !accepted {
        return found;
    }
    // Each contact id once, named by the first field that uses it.
    let mut ids: Vec<(i64, String)> = Vec::new();
    for (i, c) in config.certificates.iter().enumerate() {
        for (field, spec) in [
            ("admin_contact", &c.admin_contact),
            ("technical_contact", &c.technical_contact),
        ] {
            if let ContactSpec::Id(id) = spec
                && !ids.iter().any(|(seen, _)| seen == id)
            {
                ids.push((*id, format!("certificate[{i}].{field} ({})", c.name)));
            }
        }
    }
    for (id, field) in ids {
        let result = client.contact(id).await;
        found.push(Finding {
            what: format!("{field}: contact {id}"),
            result: result
                .map(|()| "exists (GET /sslcontact)".into())
                .map_err(|e| e.to_string()),
        });
    }
    found
}
