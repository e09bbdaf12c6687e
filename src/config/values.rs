//! The values settings take, and the checks on them: durations, shares, host names, the API
//! URL, key types, products and server software. Each check returns the message a user reads.

use std::time::Duration;

use crate::schedule::RenewBefore;

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
    pub(super) const NAMES: &[(&str, KeyKind)] = &[
        ("ecdsa-p256", KeyKind::EcdsaP256),
        ("ecdsa-p384", KeyKind::EcdsaP384),
        ("rsa-2048", KeyKind::Rsa2048),
        ("rsa-3072", KeyKind::Rsa3072),
        ("rsa-4096", KeyKind::Rsa4096),
    ];

    pub(super) fn parse(s: &str) -> Option<Self> {
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

/// The AutoDNS products `product` may name.
pub(super) const KNOWN_PRODUCTS: &[&str] = &[
    "QUICKSSLPREMIUM",
    "SSL123",
    "RAPID_SSL",
    "BASIC_SSL",
    "SSLWEB",
    "DEMOSSL",
    "GLOBALSIGN_PERSONALSIGN_1",
];

/// The S/MIME products: the name is a mailbox, ordered as `certificateType: MAIL`.
pub(super) const SMIME_PRODUCTS: &[&str] = &["GLOBALSIGN_PERSONALSIGN_1"];

/// Whether `n` is a mailbox an S/MIME certificate can be for, and safe as a file name: a local
/// part of letters, digits and `._+-` (not starting or ending with `.`), `@`, a host name.
pub fn is_mailbox(n: &str) -> bool {
    let Some((local, domain)) = n.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && local.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && is_hostname(domain)
}
/// How many names (the common name included) a product takes, where that is known: QuickSSL
/// Premium covers at most 5. For the others the CA's prepareOrder is the judge.
pub(super) fn max_names(product: &str) -> Option<usize> {
    match product {
        "QUICKSSLPREMIUM" => Some(5),
        _ => None,
    }
}
/// The server software `software` may name.
pub(super) const KNOWN_SOFTWARE: &[&str] = &["IIS4", "IIS5", "APACHE2", "APACHESSL", "PLESK", "TOMCAT", "NOT_SET"];

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
