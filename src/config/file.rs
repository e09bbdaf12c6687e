//! The TOML format of the configuration file, as it is written: strict (an unknown key is an
//! error) and with every value's place in the text kept, so that errors can name its line.
//! [`super::validate`] turns it into the checked [`super::Config`]; `examples/certkeeper.toml`
//! shows every key with its default.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::ContactSpec;

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
    /// `[defaults]`: settings every certificate takes unless it sets its own.
    #[serde(default)]
    pub(super) defaults: Option<Spanned<RawSettings>>,
    /// Each `[[certificate]]`: one managed certificate.
    #[serde(default)]
    pub(super) certificate: Vec<Spanned<RawSettings>>,
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
}
