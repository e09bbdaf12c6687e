//! What a simulator instance is: its accounts, zones, durations, products and faults.
//!
//! Every duration is configurable so that a test can live through a multi-year order in seconds
//! (`month = 10s`, `cert_validity = 30s`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One API account: HTTP Basic user and password plus the `X-Domainrobot-Context` it lives in.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub password: String,
    pub context: i32,
}

impl Account {
    /// The account served when none is configured: `demo` / `demo-password`, context 4.
    pub fn demo() -> Self {
        Self {
            user: "demo".into(),
            password: "demo-password".into(),
            context: 4,
        }
    }
}

/// How a simulated order unfolds in time.
#[derive(Clone, Debug)]
pub struct Durations {
    /// The length of one month of order term (default 30 days).
    pub month: Duration,
    /// The longest validity of one issued certificate (default 199 days); never past the term.
    pub cert_validity: Duration,
    /// How long a provisioned DNS record takes to become visible (default 0).
    pub propagation_delay: Duration,
    /// The least time a job stays RUNNING (default 0).
    pub job_delay: Duration,
    /// How long a job waits for its DNS record, its file or its approval before it fails
    /// (default 10 min).
    pub dcv_timeout: Duration,
    /// After how long an EMAIL job (an approver's mail, an S/MIME order) counts as approved;
    /// `None` (the default): only when approved through `POST /_sim/jobs/{id}`.
    pub approval_delay: Option<Duration>,
    /// How often a waiting job queries DNS (default 200 ms).
    pub dcv_interval: Duration,
    /// How long a "hang" fault holds a request before dropping it (default 60 s).
    pub hang: Duration,
}

impl Default for Durations {
    fn default() -> Self {
        Self {
            month: Duration::from_secs(30 * 86_400),
            cert_validity: Duration::from_secs(199 * 86_400),
            propagation_delay: Duration::ZERO,
            job_delay: Duration::ZERO,
            dcv_timeout: Duration::from_secs(600),
            approval_delay: None,
            dcv_interval: Duration::from_millis(200),
            hang: Duration::from_secs(60),
        }
    }
}

/// Everything `Sim::start` needs.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Where the JSON API listens (port 0 picks a free port).
    pub api_listen: SocketAddr,
    /// Where the DNS server listens, UDP and TCP (port 0 picks a free port).
    pub dns_listen: SocketAddr,
    /// Serve the API over TLS with a certificate from the simulator's own CA (default true).
    pub tls: bool,
    /// The one name in the API's TLS certificate instead of localhost and the loopback
    /// addresses: a server that answers for another host, which a client must refuse.
    pub tls_wrong_host: Option<String>,
    pub accounts: Vec<Account>,
    /// Zones the DNS server is authoritative for.
    pub zones: Vec<String>,
    /// The nameserver domain control is checked against; `None` means the simulator's own.
    pub dcv_nameserver: Option<SocketAddr>,
    /// Where a FILE validation's HTTP GET goes (with the name in the Host header); `None`: to
    /// port 80 of the name's address in the simulator's DNS, as a CA would.
    pub file_check_address: Option<SocketAddr>,
    pub durations: Durations,
    pub faults: crate::faults::Faults,
    /// Seed for every random choice (tokens, serials, faults), so that a run can be repeated.
    pub seed: u64,
    /// Where the root CA certificate is written; `None` writes it into a temporary file.
    pub ca_file: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            api_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            dns_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: true,
            tls_wrong_host: None,
            accounts: vec![Account::demo()],
            zones: vec!["example.com".into(), "example.net".into(), "example.org".into()],
            dcv_nameserver: None,
            file_check_address: None,
            durations: Durations::default(),
            faults: crate::faults::Faults::default(),
            seed: 1,
            ca_file: None,
        }
    }
}

/// What a product allows.
#[derive(Clone, Debug)]
pub struct Product {
    pub name: &'static str,
    /// `FQDN` (server certificates) or `MAIL` (S/MIME).
    pub certificate_type: &'static str,
    /// Authentication methods, in the order prepareOrder lists them.
    pub methods: &'static [&'static str],
    /// Allowed order terms in months.
    pub lifetimes: &'static [i64],
    /// How many names (common name included) one certificate may carry.
    pub max_names: usize,
    pub wildcard: bool,
    /// What goes before a name to make its DNS validation record's name: `""` (the record sits
    /// at the name itself) or `"_dnsauth."`.
    pub dcv_prefix: &'static str,
}

/// The products the simulator sells.
pub const PRODUCTS: &[Product] = &[
    Product {
        name: "QUICKSSLPREMIUM",
        certificate_type: "FQDN",
        methods: &["EMAIL", "DNS", "FILE"],
        lifetimes: &[12, 24],
        max_names: 5,
        wildcard: false,
        dcv_prefix: "",
    },
    Product {
        name: "SSL123",
        certificate_type: "FQDN",
        methods: &["EMAIL", "DNS", "FILE"],
        lifetimes: &[12, 24],
        max_names: 25,
        wildcard: false,
        dcv_prefix: "",
    },
    // The 2020 JS SDK mock: DNS and FILE only, the record at `_dnsauth.NAME.`.
    Product {
        name: "BASIC_SSL",
        certificate_type: "FQDN",
        methods: &["DNS", "FILE"],
        lifetimes: &[12, 24],
        max_names: 2,
        wildcard: false,
        dcv_prefix: "_dnsauth.",
    },
    // No sample shows its DNS record; it sits at the name, as for its sibling QuickSSL Premium.
    Product {
        name: "RAPID_SSL",
        certificate_type: "FQDN",
        methods: &["EMAIL", "DNS", "FILE"],
        lifetimes: &[12, 24],
        max_names: 2,
        wildcard: false,
        dcv_prefix: "",
    },
    Product {
        name: "GLOBALSIGN_PERSONALSIGN_1",
        certificate_type: "MAIL",
        methods: &["EMAIL"],
        // The S/MIME help page orders 36 months.
        lifetimes: &[12, 24, 36],
        max_names: 1,
        wildcard: false,
        dcv_prefix: "",
    },
];

/// Looks a product up by its API name.
pub fn product(name: &str) -> Option<&'static Product> {
    PRODUCTS.iter().find(|p| p.name == name)
}

/// Parses a duration such as `250ms`, `10s`, `5m`, `2h`, `30d` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration such as 10s or 30d"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        other => return Err(format!("unknown unit '{other}' in '{s}' (use ms, s, m, h or d)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("'{s}' is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_units_an_operator_would_write() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("10 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn every_product_is_found_by_name_and_unknown_ones_are_not() {
        for p in PRODUCTS {
            assert_eq!(product(p.name).unwrap().name, p.name);
        }
        assert!(product("FREESSL").is_none());
    }
}
