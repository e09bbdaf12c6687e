//! The TOML format of the configuration file, as it is written: strict (an unknown key is an
//! error) and with every value's place in the text kept, so that errors can name its line.
//! [`super::validate`] turns it into the checked [`super::Config`]; `examples/certkeeper.toml`
//! shows every key with its default.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::error::{self, field_from_toml_error};
use super::{ConfigError, ConfigErrors, ContactSpec, sorted};

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    /// `[api]`: how to reach the AutoDNS JSON API.
    pub(super) api: Spanned<RawApi>,
    /// `[store]`: where state and installed certificates live.
    pub(super) store: Spanned<RawStore>,
    /// `[dns]`: how the validation record is checked before the CA is asked to look.
    #[serde(default)]
    pub(super) dns: Option<Spanned<RawDns>>,
    /// `[order]`: how orders are waited for and how many run at once.
    #[serde(default)]
    pub(super) order: Option<Spanned<RawOrder>>,
    /// `[daemon]`: retries, warnings, jitter, metrics and the failure hook.
    #[serde(default)]
    pub(super) daemon: Option<Spanned<RawDaemon>>,
    /// `[cluster]`: fleet mode, one order for many web servers through etcd.
    #[serde(default)]
    pub(super) cluster: Option<Spanned<RawCluster>>,
    /// `[defaults]`: settings every certificate takes unless it sets its own.
    #[serde(default)]
    pub(super) defaults: Option<Spanned<RawSettings>>,
    /// Each `[[certificate]]`: one managed certificate, kept compact as it is read (see
    /// [`CertTable`]).
    #[serde(default, deserialize_with = "certificate_tables")]
    pub(super) certificate: Vec<CertTable>,
}

/// One `[[certificate]]` table as read, in a tenth of the room of a [`RawSettings`]: at 100,000
/// certificates the full form held 100 MB at once, most of it empty fields. A table that sets
/// nothing but its names (the usual one, the rest coming from `[defaults]`) keeps only those;
/// any other key keeps the whole table, boxed.
pub(super) struct CertTable {
    /// Where the table is in the text.
    pub(super) span: std::ops::Range<usize>,
    name: Option<Spanned<String>>,
    alt_names: Option<Spanned<Vec<String>>>,
    rest: Option<Box<RawSettings>>,
}

impl CertTable {
    fn new(table: Spanned<RawSettings>) -> Self {
        let span = table.span();
        let mut rest = table.into_inner();
        let name = rest.name.take();
        let alt_names = rest.alt_names.take();
        let rest = rest.sets_anything().then(|| Box::new(rest));
        CertTable {
            span,
            name,
            alt_names,
            rest,
        }
    }

    /// Moves every span by `by`: a table read by itself has spans from its own start.
    fn shift(&mut self, by: usize) {
        self.span = self.span.start + by..self.span.end + by;
        shift(&mut self.name, by);
        shift(&mut self.alt_names, by);
        if let Some(rest) = &mut self.rest {
            rest.shift(by);
        }
    }

    /// The table's settings, as written.
    pub(super) fn into_settings(self) -> RawSettings {
        let mut s = self.rest.map(|b| *b).unwrap_or_default();
        s.name = self.name;
        s.alt_names = self.alt_names;
        s
    }
}

/// Reads the `[[certificate]]` array one table at a time into [`CertTable`]s, so that the full
/// form of only one table exists at once.
fn certificate_tables<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<CertTable>, D::Error> {
    struct Tables;
    impl<'de> serde::de::Visitor<'de> for Tables {
        type Value = Vec<CertTable>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of [[certificate]] tables")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(t) = seq.next_element::<Spanned<RawSettings>>()? {
                out.push(CertTable::new(t));
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Tables)
}

/// `[api]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    /// The API's base URL: https, or plain http to a loopback address only.
    pub(super) url: Spanned<String>,
    /// The AutoDNS user.
    pub(super) user: Spanned<String>,
    /// The AutoDNS context of that user (4 for most accounts).
    pub(super) context: Spanned<i64>,
    /// The file holding the API password (mode 0600); without it, `CERTKEEPER_API_PASSWORD`.
    pub(super) password_file: Option<Spanned<PathBuf>>,
    /// A PEM file with extra trust roots for the API's TLS certificate.
    pub(super) ca_file: Option<Spanned<PathBuf>>,
    /// `"built-in"` (Mozilla's roots, compiled in) or `"system"` (the system store).
    pub(super) roots: Option<Spanned<String>>,
    /// How long one API request may take, a duration such as `30s`.
    pub(super) timeout: Option<Spanned<String>>,
    /// Requests per second at most, for all certificates together.
    pub(super) rate_limit: Option<Spanned<f64>>,
}

/// `[store]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    /// Where the journal and state of every certificate are kept.
    pub(super) state_dir: Spanned<PathBuf>,
    /// Where installed certificates are: `live_dir/NAME` links to the current generation.
    pub(super) live_dir: Spanned<PathBuf>,
    /// How many generations to keep per certificate, the live one included (2 to 100).
    pub(super) keep_generations: Option<Spanned<i64>>,
}

/// `[dns]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    /// Resolvers used to find a zone's authoritative servers (addresses, the port optional).
    pub(super) resolvers: Option<Spanned<Vec<String>>>,
    /// Servers queried instead of the discovered authoritative ones.
    pub(super) nameservers: Option<Spanned<Vec<String>>>,
    /// The port authoritative servers are queried on.
    pub(super) nameserver_port: Option<Spanned<i64>>,
    /// How long to wait for every authoritative server to serve the record.
    pub(super) propagation_timeout: Option<Spanned<String>>,
    /// The pause between two rounds of queries.
    pub(super) check_interval: Option<Spanned<String>>,
}

/// `[order]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOrder {
    /// How long one run waits for the CA's job before leaving it to the next run.
    pub(super) job_timeout: Option<Spanned<String>>,
    /// The first pause between two looks at a running job.
    pub(super) poll_interval: Option<Spanned<String>>,
    /// The longest pause between two looks at a running job.
    pub(super) poll_interval_max: Option<Spanned<String>>,
    /// How long a paid request with a lost answer is searched for before it counts as not made.
    pub(super) reconcile_grace: Option<Spanned<String>>,
    /// How many certificates are worked on at once (1 to 256).
    pub(super) concurrency: Option<Spanned<i64>>,
}

/// `[daemon]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    /// Pauses after the 1st, 2nd, ... failure of a certificate; the last one repeats.
    pub(super) retry_backoff: Option<Spanned<Vec<String>>>,
    /// Warn this long before an order term ends when `renew_term` is off.
    pub(super) term_warning: Option<Spanned<String>>,
    /// The largest share of the validity by which a reissue is moved earlier, e.g. `5%`.
    pub(super) jitter: Option<Spanned<String>>,
    /// Where to serve Prometheus metrics, an address such as `127.0.0.1:9477`.
    pub(super) metrics_listen: Option<Spanned<String>>,
    /// The command (argv, no shell) run when a certificate fails or gets close to expiry.
    pub(super) on_failure: Option<Spanned<Vec<String>>>,
}

/// `[cluster]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    /// The store the members share: `"etcd"`.
    pub(super) backend: Spanned<String>,
    /// The etcd members' client URLs, e.g. `["https://10.0.0.1:2379"]`.
    pub(super) endpoints: Spanned<Vec<String>>,
    /// The CA that signed the etcd members' certificates (PEM).
    pub(super) ca_file: Option<Spanned<PathBuf>>,
    /// This member's client certificate and key (PEM), for etcd's client authentication.
    pub(super) cert_file: Option<Spanned<PathBuf>>,
    pub(super) key_file: Option<Spanned<PathBuf>>,
    /// An etcd user, with its password in `password_file` (0600).
    pub(super) user: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<PathBuf>>,
    /// Where certkeeper's keys live in etcd (default `/certkeeper/`).
    pub(super) prefix: Option<Spanned<String>>,
    /// This member's name (default: the host name).
    pub(super) member: Option<Spanned<String>>,
    /// The file (0600) with the fleet key that seals the private keys and journals in etcd.
    pub(super) fleet_key_file: Spanned<PathBuf>,
    /// How long the leader's lease lasts without a keep-alive (default `10s`).
    pub(super) lease_ttl: Option<Spanned<String>>,
}

/// `[defaults]` and each `[[certificate]]`: the same keys, `name` and `alt_names` only in the latter.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSettings {
    /// The certificate's common name, which also names its files.
    pub(super) name: Option<Spanned<String>>,
    /// The other host names the certificate carries.
    pub(super) alt_names: Option<Spanned<Vec<String>>>,
    /// The SSL Manager product, e.g. `QUICKSSLPREMIUM`.
    pub(super) product: Option<Spanned<String>>,
    /// The order term in months: 12 or 24.
    pub(super) lifetime_months: Option<Spanned<i64>>,
    /// The server software declared to the CA, e.g. `APACHESSL`.
    pub(super) software: Option<Spanned<String>>,
    /// The type of every new private key, e.g. `ecdsa-p256`.
    pub(super) key: Option<Spanned<String>>,
    /// The admin contact: an existing contact id, or a table of details to create it once.
    pub(super) admin_contact: Option<Spanned<ContactSpec>>,
    /// The technical contact, in the same form as `admin_contact`.
    pub(super) technical_contact: Option<Spanned<ContactSpec>>,
    /// Who publishes the validation record: `autodns` or `hook`.
    pub(super) dns: Option<Spanned<String>>,
    /// The command (argv, no shell) that publishes and removes the record when `dns = "hook"`.
    pub(super) dns_hook: Option<Spanned<Vec<String>>>,
    /// How control of the names is proven: `dns` (default), `file` or `email`.
    pub(super) validation: Option<Spanned<String>>,
    /// `validation = "file"`: the web root the file goes under, or a table of one per name.
    pub(super) webroot: Option<Spanned<Webroot>>,
    /// `validation = "file"`: the command (argv, no shell) that places and removes the file
    /// (instead of a web root).
    pub(super) file_hook: Option<Spanned<Vec<String>>>,
    /// `validation = "file"`: where the file is fetched to check it (`host:port`, with the
    /// name as Host), instead of the name itself.
    pub(super) file_check_address: Option<Spanned<String>>,
    /// `validation = "email"`: who approves the order, one of prepareOrder's addresses.
    pub(super) approver_email: Option<Spanned<String>>,
    /// An S/MIME certificate's person and passwords.
    pub(super) smime: Option<Spanned<RawSmime>>,
    /// The command (argv, no shell) run after a new certificate is in place.
    pub(super) reload: Option<Spanned<Vec<String>>>,
    /// When to reissue: a share of the validity left (`33%`) or a duration before expiry (`30d`).
    pub(super) renew_before: Option<Spanned<String>>,
    /// Whether to buy the next order term when this one ends.
    pub(super) renew_term: Option<Spanned<bool>>,
    /// Paid orders (create, renew) allowed per certificate and term, 1 to 10.
    pub(super) max_paid_orders: Option<Spanned<i64>>,
    /// How long a hook may run before it is stopped.
    pub(super) hook_timeout: Option<Spanned<String>>,
    /// The order of the account this certificate reissues (only in a [[certificate]] table).
    pub(super) certificate_id: Option<Spanned<i64>>,
    /// Whether a new (paid) order may be bought when the account has none: `allow` or `deny`.
    pub(super) new_orders: Option<Spanned<String>>,
    /// The installed private key's owner: a user name or uid (default: certkeeper's user).
    pub(super) key_owner: Option<Spanned<String>>,
    /// The installed private key's group: a group name or gid (default: certkeeper's group).
    pub(super) key_group: Option<Spanned<String>>,
    /// The installed private key's mode: 0600 (default), 0640, 0400 or 0440.
    pub(super) key_mode: Option<Spanned<String>>,
    /// The TLS servers (`host:port`) that must hand out the new certificate after the reload.
    pub(super) serve_check: Option<Spanned<Vec<String>>>,
    /// How long the served check waits for every address to hand out the new certificate.
    pub(super) serve_check_timeout: Option<Spanned<String>>,
    /// How often the daemon checks again what the servers hand out.
    pub(super) serve_check_interval: Option<Spanned<String>>,
}

/// `smime = { ... }`: the person an S/MIME certificate is for, and its two passwords' files.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmime {
    pub(super) first_name: String,
    pub(super) last_name: String,
    #[serde(default)]
    pub(super) organization_unit: Option<String>,
    /// The CA's download password (the order's `password`), 0600.
    pub(super) password_file: PathBuf,
    /// The password `bundle.p12` is encrypted with, 0600.
    pub(super) p12_password_file: PathBuf,
}

/// `webroot`: one directory for every name, or a table of one per name.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub(super) enum Webroot {
    One(PathBuf),
    PerName(std::collections::BTreeMap<String, PathBuf>),
}

/// Moves a value's span by `by`.
fn shift<T>(field: &mut Option<Spanned<T>>, by: usize) {
    if let Some(v) = field.take() {
        let at = v.span();
        *field = Some(Spanned::new(at.start + by..at.end + by, v.into_inner()));
    }
}

/// Names each key of [`RawSettings`] for `$apply`, so that a new key cannot be forgotten: the
/// destructuring stops compiling.
macro_rules! each_setting {
    ($settings:expr, |$field:ident| $apply:expr) => {{
        let RawSettings {
            name,
            alt_names,
            product,
            lifetime_months,
            software,
            key,
            admin_contact,
            technical_contact,
            dns,
            dns_hook,
            validation,
            webroot,
            file_hook,
            file_check_address,
            approver_email,
            smime,
            reload,
            renew_before,
            renew_term,
            max_paid_orders,
            hook_timeout,
            certificate_id,
            new_orders,
            key_owner,
            key_group,
            key_mode,
            serve_check,
            serve_check_timeout,
            serve_check_interval,
        } = $settings;
        [
            {
                let $field = name;
                $apply
            },
            {
                let $field = alt_names;
                $apply
            },
            {
                let $field = product;
                $apply
            },
            {
                let $field = lifetime_months;
                $apply
            },
            {
                let $field = software;
                $apply
            },
            {
                let $field = key;
                $apply
            },
            {
                let $field = admin_contact;
                $apply
            },
            {
                let $field = technical_contact;
                $apply
            },
            {
                let $field = dns;
                $apply
            },
            {
                let $field = dns_hook;
                $apply
            },
            {
                let $field = validation;
                $apply
            },
            {
                let $field = webroot;
                $apply
            },
            {
                let $field = file_hook;
                $apply
            },
            {
                let $field = file_check_address;
                $apply
            },
            {
                let $field = approver_email;
                $apply
            },
            {
                let $field = smime;
                $apply
            },
            {
                let $field = reload;
                $apply
            },
            {
                let $field = renew_before;
                $apply
            },
            {
                let $field = renew_term;
                $apply
            },
            {
                let $field = max_paid_orders;
                $apply
            },
            {
                let $field = hook_timeout;
                $apply
            },
            {
                let $field = certificate_id;
                $apply
            },
            {
                let $field = new_orders;
                $apply
            },
            {
                let $field = key_owner;
                $apply
            },
            {
                let $field = key_group;
                $apply
            },
            {
                let $field = key_mode;
                $apply
            },
            {
                let $field = serve_check;
                $apply
            },
            {
                let $field = serve_check_timeout;
                $apply
            },
            {
                let $field = serve_check_interval;
                $apply
            },
        ]
    }};
}

impl RawSettings {
    /// Moves every value's span by `by`.
    fn shift(&mut self, by: usize) {
        each_setting!(self, |f| shift(f, by));
    }

    /// Whether any key besides `name` and `alt_names` is set.
    fn sets_anything(&self) -> bool {
        let set = each_setting!(self, |f| f.is_some());
        // After name and alt_names, the first two.
        set[2..].iter().any(|s| *s)
    }
}

/// The sections a file read in pieces may have before its first `[[certificate]]`.
const SECTIONS: [&str; 7] = [
    "[api]",
    "[store]",
    "[dns]",
    "[order]",
    "[daemon]",
    "[cluster]",
    "[defaults]",
];

/// One `[[certificate]]` table read by itself.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OneTable {
    #[serde(deserialize_with = "certificate_tables")]
    certificate: Vec<CertTable>,
}

/// Reads a file of the usual layout (the sections, then only `[[certificate]]` tables, each
/// line that opens a table exactly one of those headers) one table at a time, so that the TOML
/// reader's working form of only one table exists at once: read as a whole, 100,000
/// certificates took 170 MB for a 4 MB file. `None` when the layout is another one or any piece
/// does not read; the caller then reads the file as a whole, which gives the same result or
/// the errors with their lines.
///
/// Cutting at a line that opens a table is safe: the only other lines that can start with `[`
/// are inside a multi-line array or string, and a cut there leaves the piece before it with an
/// array or string that is never closed, which does not read.
pub(super) fn read_in_pieces(text: &str, threads: super::Threads) -> Option<RawConfig> {
    let mut starts = Vec::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with('[') {
            let header = t.split('#').next().unwrap_or_default().trim_end();
            if header == "[[certificate]]" {
                starts.push(at);
            } else if !(starts.is_empty() && SECTIONS.contains(&header)) {
                return None;
            }
        }
        at += line.len();
    }
    let first = *starts.first()?;
    let mut raw: RawConfig = toml::from_str(&text[..first]).ok()?;
    if !raw.certificate.is_empty() {
        return None;
    }
    let read = |start: usize, end: usize| -> Option<CertTable> {
        let one: OneTable = toml::from_str(&text[start..end]).ok()?;
        let [mut table] = <[CertTable; 1]>::try_from(one.certificate).ok()?;
        table.shift(start);
        Some(table)
    };
    let ends = starts.iter().skip(1).copied().chain([text.len()]);
    if threads == super::Threads::One {
        raw.certificate.reserve_exact(starts.len());
        for (start, end) in starts.iter().copied().zip(ends) {
            raw.certificate.push(read(start, end)?);
        }
        return Some(raw);
    }
    // The tables are independent: many are read on every CPU and put together in order.
    let pieces: Vec<(usize, usize)> = starts.iter().copied().zip(ends).collect();
    let parts = super::in_parts(threads, pieces, |_, pieces| {
        pieces
            .into_iter()
            .map(|(start, end)| read(start, end))
            .collect::<Option<Vec<_>>>()
    });
    raw.certificate.reserve_exact(starts.len());
    for tables in parts {
        raw.certificate.extend(tables?);
    }
    Some(raw)
}

/// Reads the whole text as TOML, reporting every wrong key and type at once.
///
/// The TOML reader stops at its first error. To report every wrong key and type at once,
/// the offending value is set aside (a wrong type replaced by a placeholder of the expected
/// one, an unknown key's line blanked, lines kept) and the text read again, at most once per
/// line. An error that cannot be set aside (a missing key, a broken table) ends the search:
/// what would follow from it is unsure. Nothing is checked further when any was found.
pub(super) fn read_whole(text: &str, path: &Path) -> Result<RawConfig, ConfigErrors> {
    let mut blanked: Option<String> = None;
    let mut format_errors = Vec::new();
    Ok(loop {
        let current = blanked.as_deref().unwrap_or(text);
        let e = match toml::from_str(current) {
            Ok(r) if format_errors.is_empty() => break r,
            Ok(_) => return Err(ConfigErrors(sorted(format_errors))),
            Err(e) => e,
        };
        let message = e.message().trim().to_string();
        // A required key whose line was blanked is now missing: that is the same mistake.
        let echo = |f: &ConfigError| message.contains(&format!("missing field `{}`", f.field));
        if format_errors.iter().any(echo) {
            return Err(ConfigErrors(sorted(format_errors)));
        }
        let line = e
            .span()
            .map(|s| current[..s.start.min(current.len())].matches('\n').count() + 1);
        format_errors.push(ConfigError {
            file: path.to_path_buf(),
            line,
            field: field_from_toml_error(current, e.span()).unwrap_or_else(|| "(syntax)".into()),
            message,
        });
        let message = &format_errors[format_errors.len() - 1].message;
        match e.span().and_then(|s| error::set_aside(current, s, message)) {
            Some(next) if format_errors.len() <= text.lines().count() => blanked = Some(next),
            _ => return Err(ConfigErrors(sorted(format_errors))),
        }
    })
}
