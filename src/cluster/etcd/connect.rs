//! A client per etcd endpoint (TLS, user, timeouts), and the renewal of its auth token.

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use super::REQUEST_TIMEOUT;
use crate::config::ClusterConfig;

/// Whether etcd refused a request for its auth token: a user's token ends after etcd's
/// `--auth-token-ttl` without use (5 minutes unless set) and when etcd restarts or its users
/// change. The client then logs in again and the request is repeated once.
pub(super) fn stale_token(error: &str) -> bool {
    error.contains("invalid auth token") || error.contains("revision of auth store is old")
}

/// Logs `client` in again (it has a user): bounded, best effort.
pub(super) async fn renew_token(client: &Client) {
    match tokio::time::timeout(REQUEST_TIMEOUT, client.refresh_token()).await {
        Ok(Ok(())) => tracing::debug!("logged in to etcd again"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot log in to etcd again"),
        Err(_) => tracing::warn!("etcd did not answer the login in time"),
    }
}

/// A client of `endpoint`; with `timed`, each request within [`REQUEST_TIMEOUT`].
pub(super) async fn connect_client(cfg: &ClusterConfig, endpoint: &str, timed: bool) -> Result<Client, String> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(5), REQUEST_TIMEOUT);
    if timed {
        options = options.with_timeout(REQUEST_TIMEOUT);
    }
    if let Some((user, password)) = &cfg.user {
        options = options.with_user(user.clone(), password.expose().to_string());
    }
    if cfg.ca_pem.is_some() || cfg.identity.is_some() {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &cfg.ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &cfg.identity {
            tls = tls.identity(Identity::from_pem(cert, key.expose()));
        }
        options = options.with_tls(tls);
    }
    // With a user, the client logs in at once; without, nothing is sent until the first request.
    Client::connect([endpoint], Some(options))
        .await
        .map_err(|e| format!("cannot reach etcd at {endpoint}: {e}"))
}
