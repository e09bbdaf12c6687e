//! `[cluster]`: fleet mode. The members of a fleet share one etcd; one of them, the leader, talks
//! to the API for all, and every member installs what it ordered (see `crate::cluster`).

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::file::RawCluster;
use super::validate::{Validator, read_password_file};
use super::values::check_api_url;
use super::{ClusterConfig, Secret};

/// The leader's lease unless `lease_ttl` says otherwise: a leader that stopped answering (killed,
/// paused, cut off) is replaced after this long.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

impl Validator<'_> {
    pub(super) fn cluster(&mut self, raw: Spanned<RawCluster>, base: &Path) -> Option<ClusterConfig> {
        let span = raw.span();
        let raw = raw.into_inner();
        let mut ok = true;
        if raw.backend.get_ref() != "etcd" {
            self.err(
                raw.backend.span(),
                "cluster.backend",
                &format!(
                    "'{}' is not a backend certkeeper knows: \"etcd\"",
                    raw.backend.get_ref()
                ),
            );
            ok = false;
        }
        if !cfg!(feature = "cluster") {
            self.err(
                span.clone(),
                "cluster",
                "this certkeeper was built without fleet mode (the cargo feature \"cluster\")",
            );
            ok = false;
        }
        let endpoints = raw.endpoints.get_ref().clone();
        if endpoints.is_empty() {
            self.err(raw.endpoints.span(), "cluster.endpoints", "needs at least one etcd URL");
            ok = false;
        }
        for e in &endpoints {
            if let Err(m) = check_api_url(e) {
                self.err(raw.endpoints.span(), "cluster.endpoints", &format!("{e}: {m}"));
                ok = false;
            }
        }
        let ca_pem = match &raw.ca_file {
            Some(f) => self.pem_file(f, base, "cluster.ca_file", false),
            None => None,
        };
        let identity = match (&raw.cert_file, &raw.key_file) {
            (Some(c), Some(k)) => {
                let cert = self.pem_file(c, base, "cluster.cert_file", false);
                let key = self.pem_file(k, base, "cluster.key_file", true);
                cert.zip(key).map(|(c, k)| (c, Secret(k)))
            }
            (None, None) => None,
            (Some(s), None) | (None, Some(s)) => {
                self.err(s.span(), "cluster.cert_file", "cert_file and key_file go together");
                ok = false;
                None
            }
        };
        let user = match (&raw.user, &raw.password_file) {
            (Some(u), Some(pf)) => {
                let path = self.config_path(pf, base);
                match read_password_file(&path) {
                    Ok(p) => Some((u.get_ref().clone(), Secret(p))),
                    Err(e) => {
                        self.err(pf.span(), "cluster.password_file", &e);
                        ok = false;
                        None
                    }
                }
            }
            (None, None) => None,
            (Some(s), None) => {
                self.err(
                    s.span(),
                    "cluster.password_file",
                    "an etcd user needs its password_file",
                );
                ok = false;
                None
            }
            (None, Some(s)) => {
                self.err(
                    s.span(),
                    "cluster.user",
                    "password_file needs the etcd user it belongs to",
                );
                ok = false;
                None
            }
        };
        let prefix = match &raw.prefix {
            None => "/certkeeper/".to_string(),
            Some(p) => {
                let v = p.get_ref();
                if !(v.starts_with('/') && v.ends_with('/') && v.len() > 1 && v.chars().all(|c| c.is_ascii_graphic())) {
                    self.err(
                        p.span(),
                        "cluster.prefix",
                        "must start and end with / and hold no spaces, e.g. \"/certkeeper/\"",
                    );
                    ok = false;
                }
                v.clone()
            }
        };
        let member = match &raw.member {
            None => crate::order::host_name().to_string(),
            Some(m) => m.get_ref().clone(),
        };
        if !is_member_name(&member) {
            let (span, what) = match &raw.member {
                Some(m) => (m.span(), "must be"),
                None => (span.clone(), "is not set and the host name is not"),
            };
            self.err(
                span,
                "cluster.member",
                &format!("'{member}' {what} a name of letters, digits, '.', '-' and '_', at most 64"),
            );
            ok = false;
        }
        let key_path = self.config_path(&raw.fleet_key_file, base);
        let fleet_key = match crate::host::read_secret(&key_path)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                let t = t.trim();
                if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(t.to_ascii_lowercase())
                } else {
                    Err(format!(
                        "{} must hold 32 bytes as 64 hex digits (make one with: openssl rand -hex 32)",
                        key_path.display()
                    ))
                }
            }) {
            Ok(k) => Some(Secret(k)),
            Err(e) => {
                self.err(raw.fleet_key_file.span(), "cluster.fleet_key_file", &e);
                ok = false;
                None
            }
        };
        let lease_ttl = self.duration(&raw.lease_ttl, "cluster.lease_ttl", LEASE_TTL);
        if (!(Duration::from_secs(2)..=Duration::from_secs(300)).contains(&lease_ttl) || lease_ttl.subsec_nanos() != 0)
            && let Some(l) = &raw.lease_ttl
        {
            self.err(
                l.span(),
                "cluster.lease_ttl",
                "must be whole seconds from 2s to 5m (etcd's leases count seconds)",
            );
            ok = false;
        }
        ok.then_some(ClusterConfig {
            endpoints,
            ca_pem,
            identity,
            user,
            prefix,
            member,
            fleet_key: fleet_key?,
            lease_ttl,
        })
    }

    /// A PEM file's text; a key (`secret`) is read as a secret (0600, no link).
    fn pem_file(&mut self, f: &Spanned<std::path::PathBuf>, base: &Path, field: &str, secret: bool) -> Option<String> {
        let path = self.config_path(f, base);
        let read = if secret {
            crate::host::read_secret(&path)
        } else {
            crate::host::read_settings(&path)
        };
        match read {
            Ok(t) if t.contains("-----BEGIN ") => Some(t),
            Ok(_) => {
                self.err(f.span(), field, &format!("{} holds no PEM block", path.display()));
                None
            }
            Err(e) => {
                self.err(f.span(), field, &e.to_string());
                None
            }
        }
    }
}

/// A member's name: it becomes a key in etcd and a label in the metrics.
pub fn is_member_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}
