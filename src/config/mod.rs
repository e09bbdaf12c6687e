//! The configuration file: a strict TOML model (unknown keys are refused) turned into a
//! validated [`Config`]. Every error names the file, the line and the field.
//!
//! Reading (`read`) is separate from parsing (`parse`), so that tests and `check` can parse text.
//! The API password never comes from the file itself: it is read from `password_file` (refused
//! when group- or world-readable) or from `CERTKEEPER_API_PASSWORD`.
//!
//! The parts: `file` is the TOML format as written, `validate` checks it into the types below,
//! `defaults` holds every default, `values` the value parsers and checks, and `error` the
//! located errors.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// A `[[certificate]]` setting: the table's own value with its field name, else the default
/// with `defaults.FIELD`.
macro_rules! pick_setting {
    ($c:expr, $d:expr, $f:expr, $field:ident) => {
        $c.$field.clone().map(|v| (v, $f(stringify!($field)))).or_else(|| {
            $d.$field
                .clone()
                .map(|v| (v, format!("defaults.{}", stringify!($field))))
        })
    };
}

mod certificate;
pub mod cluster;
mod defaults;
mod error;
mod file;
mod parts;
mod validate;
mod validation;
mod values;

pub use crate::schedule::RenewBefore;
pub use error::{ConfigError, ConfigErrors};
pub use values::{
    KeyKind, MAX_DURATION, MAX_NAME, check_api_url, is_hostname, is_mailbox, parse_duration, parse_renew_before,
};

use file::{RawConfig, read_whole};
pub use parts::Threads;
use parts::in_parts;
pub(crate) use parts::part_size;
use validate::Validator;

/// The environment variable that may hold the API password.
pub const PASSWORD_ENV: &str = "CERTKEEPER_API_PASSWORD";

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub api: ApiConfig,
    pub store: StoreConfig,
    pub dns: DnsConfig,
    pub order: OrderConfig,
    pub daemon: DaemonConfig,
    /// `[cluster]`: fleet mode on etcd; `None` for a single host.
    pub cluster: Option<ClusterConfig>,
    pub certificates: Vec<CertConfig>,
    /// What is valid but will not work as written: `check` shows these, `run` logs them.
    pub warnings: Vec<Warning>,
}

/// A setting that is valid but will not work as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub kind: WarningKind,
    pub error: ConfigError,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WarningKind {
    /// A hook's program is missing or not executable: an error for `check`, which runs where
    /// the hooks will; a warning when loading, since a hook may be installed later.
    Program,
    /// A setting that has no effect.
    NoEffect,
}

/// How the daemon schedules, retries and reports.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Pauses after the 1st, 2nd, ... failure of a certificate; the last repeats.
    pub retry_backoff: Vec<Duration>,
    /// Warn this long before an order term ends when `renew_term` is off.
    pub term_warning: Duration,
    /// The largest share of a certificate's validity by which its reissue is moved earlier, per
    /// host and name, to spread a fleet's requests.
    pub jitter: f64,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Run when a certificate fails or gets close to expiry.
    pub on_failure: Vec<String>,
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Self(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `api.roots`: the roots the API's TLS certificate and a delivered chain may end at (besides
/// `api.ca_file`, always trusted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Roots {
    /// Mozilla's roots, compiled in (`"built-in"`, the default): nothing is read from disk.
    #[default]
    BuiltIn,
    /// The system store (`"system"`: `/etc/ssl/certs` and the like, as OpenSSL finds it), read
    /// once per process: for a host whose operator adds or removes roots there.
    System,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ApiConfig {
    pub url: String,
    pub user: String,
    pub context: i32,
    pub password: Secret,
    /// Where the password was read from, if from a file (the daemon watches it).
    pub password_file: Option<PathBuf>,
    /// Which roots to trust besides `ca_pem`: the compiled-in ones or the system store's.
    pub roots: Roots,
    /// Extra trust roots (PEM), e.g. the simulator's.
    pub ca_pem: Option<String>,
    pub timeout: Duration,
    /// Requests per second at most, for all certificates together.
    pub rate_limit: f64,
}

/// `[cluster]`: the members of a fleet share one order per certificate through etcd.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// The etcd members' client URLs.
    pub endpoints: Vec<String>,
    /// The etcd CA (PEM), and this member's client certificate and key (PEM).
    pub ca_pem: Option<String>,
    pub identity: Option<(String, Secret)>,
    /// An etcd user and its password.
    pub user: Option<(String, Secret)>,
    /// Where certkeeper's keys live, ending in `/`.
    pub prefix: String,
    /// This member's name.
    pub member: String,
    /// The fleet key: seals private keys and journals before they go to etcd.
    pub fleet_key: Secret,
    /// The leader's lease: how long a leader that stopped answering stays leader.
    pub lease_ttl: Duration,
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub state_dir: PathBuf,
    pub live_dir: PathBuf,
    /// How many generations to keep per certificate, the live one included.
    pub keep_generations: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DnsConfig {
    /// Resolvers used to find a zone's authoritative servers; empty: the system's.
    pub resolvers: Vec<std::net::SocketAddr>,
    /// Query these instead of the discovered authoritative servers.
    pub nameservers: Vec<std::net::SocketAddr>,
    /// The port authoritative servers are queried on.
    pub nameserver_port: u16,
    pub propagation_timeout: Duration,
    pub check_interval: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OrderConfig {
    /// How long to wait for a job before giving up for this run.
    pub job_timeout: Duration,
    /// First and longest pause between two looks at a running job.
    pub poll_interval: Duration,
    pub poll_interval_max: Duration,
    /// How long a paid request with a lost answer is searched for before it counts as not made.
    pub reconcile_grace: Duration,
    /// How many certificates are worked on at once.
    pub concurrency: usize,
}

/// How the DCV record gets published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsMode {
    /// AutoDNS provisions it (`provisioning: true`).
    Autodns,
    /// The `dns_hook` command does.
    Hook,
}

/// How control of a certificate's names is proven (`validation`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Validation {
    /// A DNS record; `dns` says who publishes it.
    Dns,
    /// A file served over HTTP at `http://NAME/.well-known/pki-validation/FILE`.
    File(FileValidation),
    /// An approval mail to this address, answered by a person.
    Email { approver: String },
}

/// `validation = "file"`: where the file goes and where it is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileValidation {
    /// Each name's web root (`webroot`); empty when a `file_hook` places the files.
    pub webroots: Vec<(String, PathBuf)>,
    /// The command that places (`present`) and removes (`cleanup`) the file.
    pub hook: std::sync::Arc<[String]>,
    /// Where the check's HTTP GET goes (`host:port`, the name as Host); `None`: to the name.
    pub check_address: Option<String>,
}

impl FileValidation {
    /// The web root of `name`.
    pub fn webroot(&self, name: &str) -> Option<&std::path::Path> {
        self.webroots.iter().find(|(n, _)| n == name).map(|(_, p)| p.as_path())
    }
}

/// An S/MIME certificate's person and passwords (`smime = { ... }`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Smime {
    pub first_name: String,
    pub last_name: String,
    pub organization_unit: Option<String>,
    /// The CA's download password, sent with the order.
    pub password: Secret,
    /// What `bundle.p12` is encrypted with.
    pub p12_password: Secret,
}

/// A contact: an existing id, or details to create it once.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ContactSpec {
    Id(i64),
    Details(Box<ContactDetails>),
}

/// Contact details, as `POST /sslcontact` takes them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize, Hash)]
#[serde(deny_unknown_fields)]
pub struct ContactDetails {
    pub fname: String,
    pub lname: String,
    pub email: String,
    pub phone: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub organization: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub pcode: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
}

impl ContactDetails {
    /// What identifies the contact, independent of how the configuration or the API spell the
    /// fields: every detail, in a fixed order. Two contacts with the same identity are one.
    pub fn identity(&self) -> String {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let parts = [
            self.fname.clone(),
            self.lname.clone(),
            self.email.to_ascii_lowercase(),
            self.phone.clone(),
            opt(&self.title),
            opt(&self.organization),
            opt(&self.address),
            opt(&self.pcode),
            opt(&self.city),
            opt(&self.state),
            opt(&self.country),
        ];
        format!("contact-v2\u{1f}{}", parts.join("\u{1f}"))
    }
}

/// One managed certificate, with every default applied.
///
/// Its settings besides its names are shared with the certificates whose settings are the
/// same, as they are where they come from `[defaults]`: 72 bytes per certificate instead of
/// 240, so that a daemon re-reading the configuration of 100,000 certificates holds two of them
/// in less room than one took. The settings' fields read through the certificate
/// (`cert.product`).
#[derive(Clone, Debug, PartialEq)]
pub struct CertConfig {
    pub name: String,
    pub alt_names: Vec<String>,
    /// The account's order to reissue, when the operator names it.
    pub certificate_id: Option<i64>,
    pub settings: std::sync::Arc<CertSettings>,
}

impl std::ops::Deref for CertConfig {
    type Target = CertSettings;

    fn deref(&self) -> &CertSettings {
        &self.settings
    }
}

/// What a certificate is ordered, validated, installed and renewed with.
#[derive(Clone, Debug, PartialEq)]
pub struct CertSettings {
    /// One of the known products.
    pub product: &'static str,
    pub lifetime_months: u32,
    /// One of the known server software names.
    pub software: &'static str,
    pub key: KeyKind,
    pub admin_contact: ContactSpec,
    pub technical_contact: ContactSpec,
    pub dns: DnsMode,
    pub dns_hook: std::sync::Arc<[String]>,
    pub validation: Validation,
    /// An S/MIME certificate (the name is a mailbox): its person and passwords.
    pub smime: Option<std::sync::Arc<Smime>>,
    pub reload: std::sync::Arc<[String]>,
    pub renew_before: RenewBefore,
    pub renew_term: bool,
    pub max_paid_orders: u32,
    pub hook_timeout: Duration,
    /// Who may read the installed private key.
    pub key_access: crate::store::KeyAccess,
    /// Whether a new (paid) order may be bought when the account holds none for the names.
    pub new_orders: bool,
    /// The TLS servers (`host:port`) that must hand out each new certificate after the reload,
    /// for every name; empty: no check.
    pub serve_check: std::sync::Arc<[String]>,
    pub serve_check_timeout: Duration,
    pub serve_check_interval: Duration,
}

impl CertSettings {
    /// Who publishes what proves control, as the order's journal sees it: `Hook` when
    /// certkeeper does (a DNS hook, a validation file: journaled before and removed after),
    /// `Autodns` when nothing of ours is published (AutoDNS's record, an approval mail).
    pub fn publish_mode(&self) -> DnsMode {
        match self.validation {
            Validation::Dns => self.dns,
            Validation::File(_) => DnsMode::Hook,
            Validation::Email { .. } => DnsMode::Autodns,
        }
    }
}

impl CertConfig {
    /// The common name first, then every other name, without duplicates.
    pub fn all_names(&self) -> Vec<String> {
        let mut names = vec![self.name.clone()];
        for n in &self.alt_names {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names
    }
}

impl Config {
    /// Logs the warnings of a configuration being put in force.
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!(
                file = %w.error.file.display(),
                line = w.error.line,
                field = %w.error.field,
                "{}",
                w.error.message
            );
        }
    }
}

/// Reads and validates the file at `path`, a large one on every CPU.
pub fn read(path: &Path) -> Result<Config, ConfigErrors> {
    read_on(path, Threads::Every)
}

/// [`read`] on the threads given.
pub fn read_on(path: &Path, threads: Threads) -> Result<Config, ConfigErrors> {
    // Its hooks run as root: a configuration another user can write is refused.
    let text = crate::host::read_settings(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            field: "(file)".into(),
            message: format!("cannot use the configuration: {e}"),
        }])
    })?;
    parse_as(&text, path, &|k| std::env::var(k).ok(), Reading::InPieces, threads)
}

/// Parses and validates configuration text; `path` is used in messages and to resolve relative
/// paths, `env` to look up `CERTKEEPER_API_PASSWORD`.
pub fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    parse_as(text, path, env, Reading::InPieces, Threads::Every)
}

/// How the text is read: in pieces where its layout allows ([`file::read_in_pieces`]), or as a
/// whole (the tests compare the two).
#[derive(Clone, Copy, PartialEq)]
enum Reading {
    InPieces,
    #[cfg_attr(not(test), allow(dead_code))]
    Whole,
}

fn parse_as(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    reading: Reading,
    threads: Threads,
) -> Result<Config, ConfigErrors> {
    let search_path =
        env("PATH").unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let v = Validator::new(text, path.to_path_buf(), search_path);
    let pieces = match reading {
        Reading::InPieces => file::read_in_pieces(text, threads),
        Reading::Whole => None,
    };
    let raw = match pieces {
        Some(raw) => raw,
        None => read_whole(text, path)?,
    };
    check(v, raw, path, env, threads)
}

/// Checks what was read, section by section and certificate by certificate.
fn check(
    mut v: Validator,
    raw: RawConfig,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    threads: Threads,
) -> Result<Config, ConfigErrors> {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let api = v.api(raw.api.into_inner(), &base, env);
    let store = v.store(raw.store, &base);
    let dns = v.dns(raw.dns.map(Spanned::into_inner).unwrap_or_default());
    let order = v.order(raw.order.map(Spanned::into_inner).unwrap_or_default());
    let daemon = v.daemon(raw.daemon.map(Spanned::into_inner).unwrap_or_default(), &base);
    let cluster = raw.cluster.and_then(|c| v.cluster(c, &base));
    let defaults = raw.defaults.map(|d| {
        let d = d.into_inner();
        if let Some(n) = &d.name {
            v.err(
                n.span(),
                "defaults.name",
                "name belongs in a [[certificate]] table, not in [defaults]",
            );
        }
        if let Some(n) = &d.alt_names {
            v.err(
                n.span(),
                "defaults.alt_names",
                "alt_names belongs in a [[certificate]] table, not in [defaults]",
            );
        }
        if let Some(n) = &d.certificate_id {
            v.err(
                n.span(),
                "defaults.certificate_id",
                "certificate_id names one order: it belongs in a [[certificate]] table, not in [defaults]",
            );
        }
        d
    });
    let defaults = defaults.unwrap_or_default();
    let count = raw.certificate.len();
    let mut certificates = Vec::with_capacity(count);
    let mut seen = std::collections::HashSet::with_capacity(count);
    let mut keep = |v: &mut Validator, i: usize, span: std::ops::Range<usize>, cert: Option<CertConfig>| {
        let Some(cert) = cert else { return };
        if !seen.insert(cert.name.clone()) {
            v.err(
                span,
                &format!("certificate[{i}].name"),
                &format!("{} is configured twice", cert.name),
            );
        } else {
            certificates.push(cert);
        }
    };
    if threads == Threads::One {
        // One certificate after another, no list of them in between: the daemon's way.
        for (i, c) in raw.certificate.into_iter().enumerate() {
            let span = c.span.clone();
            let cert = v.certificate(i, span.clone(), c.into_settings(), &defaults, &base);
            keep(&mut v, i, span, cert);
        }
    } else {
        // Each part of the certificates is checked by a validator of its own, which finds the
        // same errors and warnings as one would; they are put together in the order of the file.
        let (text, file, search_path) = (v.text, v.file.clone(), v.search_path.clone());
        let parts = in_parts(threads, raw.certificate, |first, tables| {
            let mut part = Validator::new(text, file.clone(), search_path.clone());
            let checked: Vec<_> = tables
                .into_iter()
                .enumerate()
                .map(|(k, c)| {
                    let span = c.span.clone();
                    let cert = part.certificate(first + k, span.clone(), c.into_settings(), &defaults, &base);
                    (span, cert)
                })
                .collect();
            (part.errors, part.warnings, checked)
        });
        let mut i = 0;
        for (errors, warnings, checked) in parts {
            v.errors.extend(errors);
            v.warnings.extend(warnings);
            for (span, cert) in checked {
                keep(&mut v, i, span, cert);
                i += 1;
            }
        }
    }
    match (api, store, v.errors.is_empty()) {
        (Some(api), Some(store), true) => Ok(Config {
            path: path.to_path_buf(),
            api,
            store,
            dns,
            order,
            daemon,
            cluster,
            certificates,
            warnings: {
                let mut w = v.warnings;
                w.sort_by(|a, b| (a.error.line, &a.error.field).cmp(&(b.error.line, &b.error.field)));
                w.dedup();
                w
            },
        }),
        _ => Err(ConfigErrors(sorted(v.errors))),
    }
}

/// Errors in the order of the file, each once: a mistake in `[defaults]` is found once per
/// certificate that uses it, but reported once.
fn sorted(mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    errors.sort_by(|a, b| (a.line.unwrap_or(0), &a.field).cmp(&(b.line.unwrap_or(0), &b.field)));
    errors.dedup();
    errors
}

#[cfg(test)]
mod tests;
