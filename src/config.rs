//! The configuration file: a strict TOML model (unknown keys are refused) turned into a
//! validated [`Config`]. Every error names the file, the line and the field.
//!
//! Reading (`read`) is separate from parsing (`parse`), so that tests and `check` can parse text.
//! The API password never comes from the file itself: it is read from `password_file` (refused
//! when group- or world-readable) or from `CERTKEEPER_API_PASSWORD`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use crate::schedule::RenewBefore;

mod defaults;

/// The environment variable that may hold the API password.
pub const PASSWORD_ENV: &str = "CERTKEEPER_API_PASSWORD";

/// One configuration error, located in its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The dotted field name, e.g. `certificate[2].key`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}: {}", self.file.display(), line, self.field, self.message),
            None => write!(f, "{}: {}: {}", self.file.display(), self.field, self.message),
        }
    }
}

/// All errors found in one configuration file.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub api: ApiConfig,
    pub store: StoreConfig,
    pub dns: DnsConfig,
    pub order: OrderConfig,
    pub daemon: DaemonConfig,
    pub certificates: Vec<CertConfig>,
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

#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub url: String,
    pub user: String,
    pub context: i32,
    pub password: Secret,
    /// Where the password was read from, if from a file (the daemon watches it).
    pub password_file: Option<PathBuf>,
    /// Extra trust roots (PEM), e.g. the simulator's.
    pub ca_pem: Option<String>,
    pub timeout: Duration,
    /// Requests per second at most, for all certificates together.
    pub rate_limit: f64,
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub state_dir: PathBuf,
    pub live_dir: PathBuf,
    /// How many generations to keep per certificate, the live one included.
    pub keep_generations: usize,
}

#[derive(Clone, Debug)]
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

#[derive(Clone, Debug)]
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

/// The private key type for new keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl KeyKind {
    const NAMES: &[(&str, KeyKind)] = &[
        ("ecdsa-p256", KeyKind::EcdsaP256),
        ("ecdsa-p384", KeyKind::EcdsaP384),
        ("rsa-2048", KeyKind::Rsa2048),
        ("rsa-3072", KeyKind::Rsa3072),
        ("rsa-4096", KeyKind::Rsa4096),
    ];

    fn parse(s: &str) -> Option<Self> {
        Self::NAMES.iter().find(|(n, _)| *n == s).map(|(_, k)| *k)
    }

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
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

/// One managed certificate, with every default applied.
#[derive(Clone, Debug)]
pub struct CertConfig {
    pub name: String,
    pub alt_names: Vec<String>,
    pub product: String,
    pub lifetime_months: u32,
    pub software: String,
    pub key: KeyKind,
    pub admin_contact: ContactSpec,
    pub technical_contact: ContactSpec,
    pub dns: DnsMode,
    pub dns_hook: Vec<String>,
    pub reload: Vec<String>,
    pub renew_before: RenewBefore,
    pub renew_term: bool,
    pub max_paid_orders: u32,
    pub hook_timeout: Duration,
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

// ----- the file model ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    api: Spanned<RawApi>,
    store: Spanned<RawStore>,
    #[serde(default)]
    dns: Option<Spanned<RawDns>>,
    #[serde(default)]
    order: Option<Spanned<RawOrder>>,
    #[serde(default)]
    daemon: Option<Spanned<RawDaemon>>,
    #[serde(default)]
    defaults: Option<Spanned<RawSettings>>,
    #[serde(default)]
    certificate: Vec<Spanned<RawSettings>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    url: Spanned<String>,
    user: Spanned<String>,
    context: Spanned<i64>,
    password_file: Option<Spanned<PathBuf>>,
    ca_file: Option<Spanned<PathBuf>>,
    timeout: Option<Spanned<String>>,
    rate_limit: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    state_dir: Spanned<PathBuf>,
    live_dir: Spanned<PathBuf>,
    keep_generations: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDns {
    resolvers: Option<Spanned<Vec<String>>>,
    nameservers: Option<Spanned<Vec<String>>>,
    nameserver_port: Option<Spanned<i64>>,
    propagation_timeout: Option<Spanned<String>>,
    check_interval: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOrder {
    job_timeout: Option<Spanned<String>>,
    poll_interval: Option<Spanned<String>>,
    poll_interval_max: Option<Spanned<String>>,
    reconcile_grace: Option<Spanned<String>>,
    concurrency: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    retry_backoff: Option<Spanned<Vec<String>>>,
    term_warning: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    metrics_listen: Option<Spanned<String>>,
    on_failure: Option<Spanned<Vec<String>>>,
}

/// `[defaults]` and each `[[certificate]]`: the same keys, `name` and `alt_names` only in the latter.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    name: Option<Spanned<String>>,
    alt_names: Option<Spanned<Vec<String>>>,
    product: Option<Spanned<String>>,
    lifetime_months: Option<Spanned<i64>>,
    software: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    admin_contact: Option<Spanned<ContactSpec>>,
    technical_contact: Option<Spanned<ContactSpec>>,
    dns: Option<Spanned<String>>,
    dns_hook: Option<Spanned<Vec<String>>>,
    reload: Option<Spanned<Vec<String>>>,
    renew_before: Option<Spanned<String>>,
    renew_term: Option<Spanned<bool>>,
    max_paid_orders: Option<Spanned<i64>>,
    hook_timeout: Option<Spanned<String>>,
}

const KNOWN_PRODUCTS: &[&str] = &[
    "QUICKSSLPREMIUM",
    "SSL123",
    "RAPID_SSL",
    "BASIC_SSL",
    "SSLWEB",
    "DEMOSSL",
];
const KNOWN_SOFTWARE: &[&str] = &["IIS4", "IIS5", "APACHE2", "APACHESSL", "PLESK", "TOMCAT", "NOT_SET"];

/// Reads and validates the file at `path`.
pub fn read(path: &Path) -> Result<Config, ConfigErrors> {
    // Its hooks run as root: a configuration another user can write is refused.
    let text = crate::host::read_settings(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            field: "(file)".into(),
            message: format!("cannot use the configuration: {e}"),
        }])
    })?;
    parse(&text, path, &|k| std::env::var(k).ok())
}

/// Parses and validates configuration text; `path` is used in messages and to resolve relative
/// paths, `env` to look up `CERTKEEPER_API_PASSWORD`.
pub fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let mut v = Validator {
        text,
        file: path.to_path_buf(),
        errors: Vec::new(),
    };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let line = e.span().map(|s| v.line(s.start));
            let message = e.message().trim().to_string();
            let field = field_from_toml_error(text, e.span()).unwrap_or_else(|| "(syntax)".into());
            return Err(ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line,
                field,
                message,
            }]));
        }
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let api = v.api(raw.api.into_inner(), &base, env);
    let store = v.store(raw.store, &base);
    let dns = v.dns(raw.dns.map(Spanned::into_inner).unwrap_or_default());
    let order = v.order(raw.order.map(Spanned::into_inner).unwrap_or_default());
    let daemon = v.daemon(raw.daemon.map(Spanned::into_inner).unwrap_or_default(), &base);
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
        d
    });
    let defaults = defaults.unwrap_or_default();
    let mut certificates = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, c) in raw.certificate.into_iter().enumerate() {
        let span = c.span();
        if let Some(cert) = v.certificate(i, span.clone(), c.into_inner(), &defaults, &base) {
            if !seen.insert(cert.name.clone()) {
                v.err(
                    span,
                    &format!("certificate[{i}].name"),
                    &format!("{} is configured twice", cert.name),
                );
            } else {
                certificates.push(cert);
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
            certificates,
        }),
        _ => Err(ConfigErrors(v.errors)),
    }
}

/// Finds the key an error from the TOML parser points at, for the `field` part of the message.
fn field_from_toml_error(text: &str, span: Option<Range<usize>>) -> Option<String> {
    let span = span?;
    let start = span.start.min(text.len());
    let snippet = text.get(start..span.end.min(text.len()))?.trim();
    let key: String = snippet
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    if !key.is_empty() {
        return Some(key);
    }
    let line_start = text[..start].rfind('\n').map(|p| p + 1).unwrap_or(0);
    let line = text[line_start..].lines().next()?;
    let key: String = line
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    (!key.is_empty()).then_some(key)
}

struct Validator<'a> {
    text: &'a str,
    file: PathBuf,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())].matches('\n').count() + 1
    }

    fn err(&mut self, span: Range<usize>, field: &str, message: &str) {
        let line = Some(self.line(span.start));
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            field: field.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, v: &Option<Spanned<String>>, field: &str, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => match parse_duration(s.get_ref()) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    self.err(s.span(), field, "must be longer than zero");
                    default
                }
                Err(e) => {
                    self.err(s.span(), field, &e);
                    default
                }
            },
        }
    }

    fn path(&mut self, p: &Spanned<PathBuf>, base: &Path) -> PathBuf {
        let p = p.get_ref();
        if p.is_absolute() { p.clone() } else { base.join(p) }
    }

    fn api(&mut self, raw: RawApi, base: &Path, env: &dyn Fn(&str) -> Option<String>) -> Option<ApiConfig> {
        let url = raw.url.get_ref().trim_end_matches('/').to_string();
        if let Err(e) = check_api_url(&url) {
            self.err(raw.url.span(), "api.url", &e);
        }
        if raw.user.get_ref().is_empty() {
            self.err(raw.user.span(), "api.user", "must not be empty");
        }
        let context = i32::try_from(*raw.context.get_ref()).unwrap_or(-1);
        if context < 1 {
            self.err(raw.context.span(), "api.context", "must be a positive number, e.g. 4");
        }
        let password = match (&raw.password_file, env(PASSWORD_ENV)) {
            (Some(pf), _) => {
                let path = self.path(pf, base);
                match read_password_file(&path) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        self.err(pf.span(), "api.password_file", &e);
                        None
                    }
                }
            }
            (None, Some(p)) if !p.is_empty() => Some(p),
            (None, _) => {
                self.err(
                    0..0,
                    "api.password_file",
                    &format!("no API password: set password_file or the environment variable {PASSWORD_ENV}"),
                );
                None
            }
        };
        let ca_pem = match &raw.ca_file {
            None => None,
            Some(f) => {
                let path = self.path(f, base);
                match crate::host::read_settings(&path) {
                    Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Some(pem),
                    Ok(_) => {
                        self.err(
                            f.span(),
                            "api.ca_file",
                            &format!("{} holds no PEM certificate", path.display()),
                        );
                        None
                    }
                    Err(e) => {
                        self.err(f.span(), "api.ca_file", &e.to_string());
                        None
                    }
                }
            }
        };
        let timeout = self.duration(&raw.timeout, "api.timeout", defaults::API_TIMEOUT);
        let rate_limit = match &raw.rate_limit {
            None => defaults::API_RATE_LIMIT,
            Some(r) if *r.get_ref() > 0.0 && r.get_ref().is_finite() => *r.get_ref(),
            Some(r) => {
                self.err(
                    r.span(),
                    "api.rate_limit",
                    "must be a number of requests per second above zero",
                );
                defaults::API_RATE_LIMIT
            }
        };
        Some(ApiConfig {
            url,
            user: raw.user.into_inner(),
            context,
            password: Secret(password?),
            password_file: raw.password_file.as_ref().map(|pf| self.path(pf, base)),
            ca_pem,
            timeout,
            rate_limit,
        })
    }

    fn store(&mut self, raw: Spanned<RawStore>, base: &Path) -> Option<StoreConfig> {
        let raw = raw.into_inner();
        let state_dir = self.path(&raw.state_dir, base);
        let live_dir = self.path(&raw.live_dir, base);
        if state_dir == live_dir {
            self.err(
                raw.live_dir.span(),
                "store.live_dir",
                "must differ from store.state_dir",
            );
        }
        let keep = match &raw.keep_generations {
            None => defaults::KEEP_GENERATIONS,
            Some(k) if (2..=100).contains(k.get_ref()) => *k.get_ref() as usize,
            Some(k) => {
                self.err(
                    k.span(),
                    "store.keep_generations",
                    "must be between 2 and 100 (the previous generation is kept for rollback)",
                );
                defaults::KEEP_GENERATIONS
            }
        };
        Some(StoreConfig {
            state_dir,
            live_dir,
            keep_generations: keep,
        })
    }

    fn addrs(&mut self, v: &Option<Spanned<Vec<String>>>, field: &str, default_port: u16) -> Vec<std::net::SocketAddr> {
        let Some(list) = v else { return Vec::new() };
        let mut out = Vec::new();
        for a in list.get_ref() {
            let parsed = a
                .parse::<std::net::SocketAddr>()
                .or_else(|_| a.parse::<std::net::IpAddr>().map(|ip| (ip, default_port).into()));
            match parsed {
                Ok(addr) => out.push(addr),
                Err(_) => self.err(
                    list.span(),
                    field,
                    &format!("'{a}' is not an address such as 192.0.2.53 or 127.0.0.1:5353"),
                ),
            }
        }
        out
    }

    fn dns(&mut self, raw: RawDns) -> DnsConfig {
        let port = match &raw.nameserver_port {
            None => defaults::DNS_PORT,
            Some(p) => match u16::try_from(*p.get_ref()) {
                Ok(p) if p > 0 => p,
                _ => {
                    self.err(p.span(), "dns.nameserver_port", "must be a port number from 1 to 65535");
                    defaults::DNS_PORT
                }
            },
        };
        DnsConfig {
            resolvers: self.addrs(&raw.resolvers, "dns.resolvers", defaults::DNS_PORT),
            nameservers: self.addrs(&raw.nameservers, "dns.nameservers", port),
            nameserver_port: port,
            propagation_timeout: self.duration(
                &raw.propagation_timeout,
                "dns.propagation_timeout",
                defaults::PROPAGATION_TIMEOUT,
            ),
            check_interval: self.duration(&raw.check_interval, "dns.check_interval", defaults::CHECK_INTERVAL),
        }
    }

    fn order(&mut self, raw: RawOrder) -> OrderConfig {
        let concurrency = match &raw.concurrency {
            None => defaults::CONCURRENCY,
            Some(c) if (1..=256).contains(c.get_ref()) => *c.get_ref() as usize,
            Some(c) => {
                self.err(c.span(), "order.concurrency", "must be between 1 and 256");
                defaults::CONCURRENCY
            }
        };
        OrderConfig {
            job_timeout: self.duration(&raw.job_timeout, "order.job_timeout", defaults::JOB_TIMEOUT),
            poll_interval: self.duration(&raw.poll_interval, "order.poll_interval", defaults::POLL_INTERVAL),
            poll_interval_max: self.duration(
                &raw.poll_interval_max,
                "order.poll_interval_max",
                defaults::POLL_INTERVAL_MAX,
            ),
            reconcile_grace: self.duration(&raw.reconcile_grace, "order.reconcile_grace", defaults::RECONCILE_GRACE),
            concurrency,
        }
    }

    fn daemon(&mut self, raw: RawDaemon, base: &Path) -> DaemonConfig {
        let retry_backoff = match &raw.retry_backoff {
            None => defaults::retry_backoff(),
            Some(list) => {
                let mut steps = Vec::new();
                for s in list.get_ref() {
                    match parse_duration(s) {
                        Ok(d) if !d.is_zero() => steps.push(d),
                        _ => self.err(
                            list.span(),
                            "daemon.retry_backoff",
                            &format!("'{s}' is not a duration above zero such as 1m"),
                        ),
                    }
                }
                if steps.is_empty() {
                    self.err(
                        list.span(),
                        "daemon.retry_backoff",
                        "needs at least one pause, e.g. [\"1m\", \"10m\", \"100m\", \"6h\"]",
                    );
                    steps = defaults::retry_backoff();
                }
                steps
            }
        };
        let jitter = match &raw.jitter {
            None => defaults::JITTER,
            Some(j) if j.get_ref().trim() == "0%" => 0.0,
            Some(j) => match parse_renew_before(j.get_ref()) {
                Ok(RenewBefore::Share(s)) if s <= 0.5 => s,
                _ => {
                    self.err(j.span(), "daemon.jitter", "must be a share from 0% to 50%, e.g. \"5%\"");
                    defaults::JITTER
                }
            },
        };
        let metrics_listen = raw.metrics_listen.as_ref().and_then(|m| match m.get_ref().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    m.span(),
                    "daemon.metrics_listen",
                    &format!("'{}' is not an address such as 127.0.0.1:9477", m.get_ref()),
                );
                None
            }
        });
        let on_failure = match raw.on_failure {
            Some(h) => self.command(h, "daemon.on_failure", base),
            None => Vec::new(),
        };
        DaemonConfig {
            retry_backoff,
            term_warning: self.duration(&raw.term_warning, "daemon.term_warning", defaults::TERM_WARNING),
            jitter,
            metrics_listen,
            on_failure,
        }
    }

    fn certificate(
        &mut self,
        i: usize,
        span: Range<usize>,
        c: RawSettings,
        d: &RawSettings,
        base: &Path,
    ) -> Option<CertConfig> {
        let f = |name: &str| format!("certificate[{i}].{name}");
        let before = self.errors.len();
        let Some(name) = c.name.clone() else {
            self.err(span, &f("name"), "every [[certificate]] needs a name");
            return None;
        };
        let name_span = name.span();
        let name = name.into_inner().to_ascii_lowercase();
        if !is_hostname(&name) {
            self.err(
                name_span.clone(),
                &f("name"),
                &format!("'{name}' is not a host name such as www.example.com"),
            );
        } else if name.len() > MAX_NAME {
            self.err(
                name_span.clone(),
                &f("name"),
                &format!(
                    "is {} bytes long; a certificate's name becomes a file name (NAME.json), so it may have at most {MAX_NAME} (list a longer name in alt_names)",
                    name.len()
                ),
            );
        }
        let mut alt_names = Vec::new();
        if let Some(alts) = &c.alt_names {
            let mut seen = std::collections::HashSet::new();
            for a in alts.get_ref() {
                let a = a.to_ascii_lowercase();
                if !is_hostname(&a) {
                    self.err(alts.span(), &f("alt_names"), &format!("'{a}' is not a host name"));
                } else if a != name && seen.insert(a.clone()) {
                    alt_names.push(a);
                }
            }
        }
        // Each setting: the certificate's own value, else the default.
        macro_rules! pick {
            ($field:ident) => {
                c.$field.clone().map(|v| (v, f(stringify!($field)))).or_else(|| {
                    d.$field
                        .clone()
                        .map(|v| (v, format!("defaults.{}", stringify!($field))))
                })
            };
        }
        let product = match pick!(product) {
            Some((p, field)) => {
                let v = p.get_ref().to_ascii_uppercase();
                if !KNOWN_PRODUCTS.contains(&v.as_str()) {
                    self.err(
                        p.span(),
                        &field,
                        &format!(
                            "unknown product '{}' (known: {})",
                            p.get_ref(),
                            KNOWN_PRODUCTS.join(", ")
                        ),
                    );
                }
                v
            }
            None => defaults::PRODUCT.into(),
        };
        let lifetime_months = match pick!(lifetime_months) {
            Some((m, field)) => match *m.get_ref() {
                12 | 24 => *m.get_ref() as u32,
                other => {
                    self.err(
                        m.span(),
                        &field,
                        &format!("{other} is not an order term; use 12 or 24 (months)"),
                    );
                    defaults::LIFETIME_MONTHS
                }
            },
            None => defaults::LIFETIME_MONTHS,
        };
        let software = match pick!(software) {
            Some((s, field)) => {
                if !KNOWN_SOFTWARE.contains(&s.get_ref().as_str()) {
                    self.err(
                        s.span(),
                        &field,
                        &format!(
                            "unknown software '{}' (use one of {})",
                            s.get_ref(),
                            KNOWN_SOFTWARE.join(", ")
                        ),
                    );
                }
                s.into_inner()
            }
            None => defaults::SOFTWARE.into(),
        };
        let key = match pick!(key) {
            Some((k, field)) => KeyKind::parse(k.get_ref()).unwrap_or_else(|| {
                let names: Vec<&str> = KeyKind::NAMES.iter().map(|(n, _)| *n).collect();
                self.err(
                    k.span(),
                    &field,
                    &format!("unknown key type '{}' (use one of {})", k.get_ref(), names.join(", ")),
                );
                defaults::KEY
            }),
            None => defaults::KEY,
        };
        let mut contact = |which: Option<(Spanned<ContactSpec>, String)>, what: &str| match which {
            Some((c, field)) => {
                if let ContactSpec::Id(id) = c.get_ref()
                    && *id <= 0
                {
                    self.err(c.span(), &field, "a contact id must be a positive number");
                }
                Some(c.into_inner())
            }
            None => {
                self.err(
                    span.clone(),
                    &f(what),
                    &format!("no {what}: set it in [defaults] or here (an id, or a table of contact details)"),
                );
                None
            }
        };
        let admin_contact = contact(pick!(admin_contact), "admin_contact");
        let technical_contact = contact(pick!(technical_contact), "technical_contact");
        let dns = match pick!(dns) {
            Some((m, field)) => match m.get_ref().as_str() {
                "autodns" => DnsMode::Autodns,
                "hook" => DnsMode::Hook,
                other => {
                    self.err(
                        m.span(),
                        &field,
                        &format!("'{other}' is not a DNS mode; use \"autodns\" or \"hook\""),
                    );
                    defaults::DNS_MODE
                }
            },
            None => defaults::DNS_MODE,
        };
        let dns_hook = match pick!(dns_hook) {
            Some((h, field)) => self.command(h, &field, base),
            None => Vec::new(),
        };
        if dns == DnsMode::Hook && dns_hook.is_empty() {
            self.err(span.clone(), &f("dns_hook"), "dns = \"hook\" needs a dns_hook command");
        }
        let reload = match pick!(reload) {
            Some((h, field)) => self.command(h, &field, base),
            None => Vec::new(),
        };
        let renew_before = match pick!(renew_before) {
            Some((r, field)) => match parse_renew_before(r.get_ref()) {
                Ok(v) => v,
                Err(e) => {
                    self.err(r.span(), &field, &e);
                    defaults::RENEW_BEFORE
                }
            },
            None => defaults::RENEW_BEFORE,
        };
        let renew_term = pick!(renew_term)
            .map(|(b, _)| *b.get_ref())
            .unwrap_or(defaults::RENEW_TERM);
        let max_paid_orders = match pick!(max_paid_orders) {
            Some((m, field)) => match u32::try_from(*m.get_ref()) {
                Ok(v) if (1..=10).contains(&v) => v,
                _ => {
                    self.err(m.span(), &field, "must be between 1 and 10");
                    defaults::MAX_PAID_ORDERS
                }
            },
            None => defaults::MAX_PAID_ORDERS,
        };
        let hook_timeout = match pick!(hook_timeout) {
            Some((t, field)) => self.duration(&Some(t), &field, defaults::HOOK_TIMEOUT),
            None => defaults::HOOK_TIMEOUT,
        };
        if self.errors.len() > before {
            return None;
        }
        Some(CertConfig {
            name,
            alt_names,
            product,
            lifetime_months,
            software,
            key,
            admin_contact: admin_contact?,
            technical_contact: technical_contact?,
            dns,
            dns_hook,
            reload,
            renew_before,
            renew_term,
            max_paid_orders,
            hook_timeout,
        })
    }

    /// Checks a hook command: a non-empty argv whose program is an absolute or config-relative path
    /// or a bare command name looked up in PATH.
    fn command(&mut self, h: Spanned<Vec<String>>, field: &str, base: &Path) -> Vec<String> {
        let mut argv = h.get_ref().clone();
        match argv.first() {
            None => {
                self.err(
                    h.span(),
                    field,
                    "must name a program, e.g. [\"systemctl\", \"reload\", \"nginx\"]",
                );
            }
            Some(p) if p.trim().is_empty() => self.err(h.span(), field, "the program name is empty"),
            Some(p) if p.contains('/') && !Path::new(p).is_absolute() => {
                argv[0] = base.join(p).to_string_lossy().into_owned();
            }
            Some(_) => {}
        }
        if argv.iter().any(|a| a.contains('\0')) {
            self.err(h.span(), field, "arguments must not contain NUL bytes");
        }
        argv
    }
}

/// Reads the password file, refusing one that others can read.
fn read_password_file(path: &Path) -> Result<String, String> {
    // A regular file, no link, owned by root or certkeeper's user, 0600: checked on the opened
    // descriptor, and a FIFO is refused instead of hanging `check`.
    let text = crate::host::read_secret(path).map_err(|e| e.to_string())?;
    let password = text.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(password)
}

/// The longest certificate name: it becomes the file name `NAME.json`, and a file name has at
/// most 255 bytes.
pub const MAX_NAME: usize = 250;

/// Whether `n` is a host name a public certificate can carry (no wildcard, no IP address).
pub fn is_hostname(n: &str) -> bool {
    let labels: Vec<&str> = n.split('.').collect();
    n.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        && !labels.last().is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
}

/// The API's URL: https, or plain http to a loopback address only. The host is the parsed URL's
/// host, not a prefix of the text (`http://127.0.0.1@api.example.com/` goes to api.example.com),
/// and no user name or password may ride in it (the password comes from a file).
pub fn check_api_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("'{text}' is not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password (use api.user and api.password_file)".into());
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err("must be an https:// URL (plain http is allowed only on loopback)".into()),
    }
}

/// The longest duration any setting takes: 400 days, longer than any certificate lives. A
/// larger value is a typo, and would overflow the clock arithmetic it feeds.
pub const MAX_DURATION: Duration = Duration::from_secs(400 * 86_400);

/// Parses `250ms`, `10s`, `5m`, `2h`, `30d` (or a bare number of seconds), at most 400 days.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration such as 30s, 10m or 2d"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        other => return Err(format!("unknown unit '{other}' in '{s}' (use ms, s, m, h or d)")),
    };
    let d = Duration::try_from_secs_f64(secs).map_err(|_| format!("'{s}' is not a duration"))?;
    if d > MAX_DURATION {
        return Err(format!("'{s}' is longer than the longest allowed, 400d"));
    }
    Ok(d)
}

/// Parses `renew_before`: a share such as `33%` or a duration such as `30d`.
pub fn parse_renew_before(s: &str) -> Result<RenewBefore, String> {
    if let Some(p) = s.trim().strip_suffix('%') {
        let v: f64 = p
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a share such as 33%"))?;
        if !(v > 0.0 && v < 100.0) {
            return Err(format!("'{s}': the share must lie between 0% and 100%"));
        }
        return Ok(RenewBefore::Share(v / 100.0));
    }
    parse_duration(s)
        .map(RenewBefore::Before)
        .map_err(|_| format!("'{s}' is neither a share such as 33% nor a duration such as 30d"))
}

#[cfg(test)]
mod tests;
