//! The [`Validator`]: turns the file as written ([`super::file`]) into the checked
//! [`super::Config`], applying the defaults and collecting every error with its line and field.
//! The sections are checked here; each `[[certificate]]`, with the defaults applied, in
//! [`super::certificate`].

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::defaults;
use super::file::{RawApi, RawDaemon, RawDns, RawOrder, RawStore};
use super::values::{check_api_url, parse_duration, parse_renew_before};
use super::{
    ApiConfig, ConfigError, DaemonConfig, DnsConfig, OrderConfig, PASSWORD_ENV, RenewBefore, Secret, StoreConfig,
    Warning, WarningKind,
};

/// Checks one file's sections, collecting every error instead of stopping at the first.
pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) file: PathBuf,
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<Warning>,
    /// Where bare program names of hooks are looked up (`PATH`).
    pub(super) search_path: String,
    /// Where each line of `text` ends, found at the first error or warning.
    pub(super) line_ends: std::cell::OnceCell<Vec<usize>>,
    /// What was found for each hook program and key owner or group: at 100,000 certificates
    /// taking them from `[defaults]`, each is looked up once, not once per certificate.
    pub(super) programs: std::collections::HashMap<String, Option<String>>,
    pub(super) ids: std::collections::HashMap<(bool, String), Result<u32, String>>,
    /// Each distinct hook command once, shared by the certificates that run it.
    pub(super) commands: std::collections::HashSet<std::sync::Arc<[String]>>,
    /// The settings of the last certificate, shared with the next when they are the same.
    pub(super) last_settings: Option<std::sync::Arc<super::CertSettings>>,
}

impl<'a> Validator<'a> {
    pub(super) fn new(text: &'a str, file: PathBuf, search_path: String) -> Self {
        Validator {
            text,
            file,
            errors: Vec::new(),
            warnings: Vec::new(),
            search_path,
            line_ends: std::cell::OnceCell::new(),
            programs: std::collections::HashMap::new(),
            ids: std::collections::HashMap::new(),
            commands: std::collections::HashSet::new(),
            last_settings: None,
        }
    }

    /// The line (from 1) of a position in `text`.
    pub(super) fn line(&self, at: usize) -> usize {
        let at = at.min(self.text.len());
        let ends = self
            .line_ends
            .get_or_init(|| self.text.match_indices('\n').map(|(i, _)| i).collect());
        ends.partition_point(|&e| e < at) + 1
    }

    pub(super) fn err(&mut self, span: Range<usize>, field: &str, message: &str) {
        let line = Some(self.line(span.start));
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            field: field.into(),
            message: message.into(),
        });
    }

    pub(super) fn warn(&mut self, span: Range<usize>, field: &str, kind: WarningKind, message: &str) {
        let line = Some(self.line(span.start));
        self.warnings.push(Warning {
            kind,
            error: ConfigError {
                file: self.file.clone(),
                line,
                field: field.into(),
                message: message.into(),
            },
        });
    }

    pub(super) fn duration(&mut self, v: &Option<Spanned<String>>, field: &str, default: Duration) -> Duration {
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

    pub(super) fn config_path(&mut self, p: &Spanned<PathBuf>, base: &Path) -> PathBuf {
        let p = p.get_ref();
        if p.is_absolute() { p.clone() } else { base.join(p) }
    }

    pub(super) fn api(&mut self, raw: RawApi, base: &Path, env: &dyn Fn(&str) -> Option<String>) -> Option<ApiConfig> {
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
                let path = self.config_path(pf, base);
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
                let path = self.config_path(f, base);
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
        let roots = match raw.roots.as_ref().map(|r| (r.span(), r.get_ref().as_str())) {
            None | Some((_, "built-in")) => super::Roots::BuiltIn,
            Some((_, "system")) => super::Roots::System,
            Some((span, other)) => {
                self.err(
                    span,
                    "api.roots",
                    &format!("must be \"built-in\" (Mozilla's roots, compiled in) or \"system\" (the system store), not {other:?}"),
                );
                super::Roots::BuiltIn
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
            password_file: raw.password_file.as_ref().map(|pf| self.config_path(pf, base)),
            roots,
            ca_pem,
            timeout,
            rate_limit,
        })
    }

    pub(super) fn store(&mut self, raw: Spanned<RawStore>, base: &Path) -> Option<StoreConfig> {
        let raw = raw.into_inner();
        let state_dir = self.config_path(&raw.state_dir, base);
        let live_dir = self.config_path(&raw.live_dir, base);
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

    pub(super) fn dns(&mut self, raw: RawDns) -> DnsConfig {
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

    pub(super) fn order(&mut self, raw: RawOrder) -> OrderConfig {
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

    pub(super) fn daemon(&mut self, raw: RawDaemon, base: &Path) -> DaemonConfig {
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
            Some(h) => self.command(h, "daemon.on_failure", base).to_vec(),
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

    /// Checks a hook command: a non-empty argv whose program is an absolute or config-relative path
    /// or a bare command name looked up in PATH.
    pub(super) fn command(&mut self, h: Spanned<Vec<String>>, field: &str, base: &Path) -> std::sync::Arc<[String]> {
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
        } else if let Some(program) = argv.first() {
            let problem = match self.programs.get(program) {
                Some(found) => found.clone(),
                None => {
                    let found = program_problem(program, &self.search_path);
                    self.programs.insert(program.clone(), found.clone());
                    found
                }
            };
            if let Some(problem) = problem {
                self.warn(h.span(), field, WarningKind::Program, &problem);
            }
        }
        match self.commands.get(argv.as_slice()) {
            Some(shared) => shared.clone(),
            None => {
                let shared: std::sync::Arc<[String]> = argv.into();
                self.commands.insert(shared.clone());
                shared
            }
        }
    }
}

/// Why `program` could not be run, if it could not: a path that is missing, not a file or not
/// executable, or a bare name found nowhere in `search_path`.
fn program_problem(program: &str, search_path: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| -> Result<(), String> {
        let meta = std::fs::metadata(p).map_err(|e| format!("{} cannot be run: {e}", p.display()))?;
        if !meta.is_file() {
            Err(format!("{} cannot be run: it is not a file", p.display()))
        } else if meta.permissions().mode() & 0o111 == 0 {
            Err(format!(
                "{} cannot be run: it is not executable (mode {:o}); run chmod +x on it",
                p.display(),
                meta.permissions().mode() & 0o7777
            ))
        } else {
            Ok(())
        }
    };
    if program.trim().is_empty() {
        return None;
    }
    if program.contains('/') {
        return runnable(Path::new(program)).err();
    }
    let found = search_path
        .split(':')
        .filter(|d| !d.is_empty())
        .any(|d| runnable(&Path::new(d).join(program)).is_ok());
    (!found).then(|| format!("{program} is not found in PATH ({search_path})"))
}

/// Reads the password file, refusing one that others can read.
pub(super) fn read_password_file(path: &Path) -> Result<String, String> {
    // A regular file, no link, owned by root or certkeeper's user, 0600: checked on the opened
    // descriptor, and a FIFO is refused instead of hanging `check`.
    let text = crate::host::read_secret(path).map_err(|e| e.to_string())?;
    let password = text.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(password)
}
