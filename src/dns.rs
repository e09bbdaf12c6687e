//! Domain-control records: reading the zone-file line that prepareOrder returns (a strict reader
//! of our own: one TXT or CNAME record, nothing else), holding it against the certificate's
//! names, and checking that every authoritative nameserver of the zone serves it before anything
//! is ordered. Nothing outside this module touches hickory.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::rr::{Name, RData, RecordType};
use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use tokio::time::Instant;

use crate::config::DnsConfig;

/// The types of record domain control is proven with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RecordKind {
    #[serde(rename = "TXT")]
    Txt,
    #[serde(rename = "CNAME")]
    Cname,
}

impl RecordKind {
    /// As zone files and hooks write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Txt => "TXT",
            Self::Cname => "CNAME",
        }
    }
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record to publish.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DcvRecord {
    /// Fully qualified, with the trailing dot.
    pub name: String,
    pub kind: RecordKind,
    pub value: String,
    pub ttl: u32,
    /// The line as the API wrote it.
    pub zone_line: String,
}

/// Why a record could not be parsed or confirmed.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("the DNS line from prepareOrder cannot be parsed: {0}")]
    Parse(String),
    #[error("cannot find the authoritative nameservers of {name}: {detail}")]
    Discovery { name: String, detail: String },
    #[error("{name} {kind} is not served by every authoritative nameserver after {}: {detail}", crate::text::duration(*.waited))]
    NotPropagated {
        name: String,
        kind: String,
        waited: Duration,
        detail: String,
    },
}

/// The longest DCV line read; real ones are about 120 bytes.
pub const MAX_LINE: usize = 1024;
/// The longest record value: one TXT character-string.
pub const MAX_VALUE: usize = 255;

/// Reads one DCV line such as `example.com.<TAB>300<TAB>IN<TAB>TXT<TAB>"token"` with certkeeper's
/// own strict reader: one line of `OWNER [TTL] [IN] TYPE VALUE`, tabs or spaces between. No
/// zone-file directive (`$INCLUDE`, `$ORIGIN`, ...), no parentheses, comments, escapes or
/// quotes inside the value, no control or non-ASCII character: the line comes from the network
/// and reaches DNS hooks, so nothing in it may open a file or smuggle a second record. Only the
/// syntax is checked here; [`check_owner`] holds the record against the certificate's names.
pub fn parse_zone_line(line: &str) -> Result<DcvRecord, DnsError> {
    let shown = shown(line);
    let refuse = |why: &str| DnsError::Parse(format!("{why} in '{shown}'"));
    if line.len() > MAX_LINE {
        return Err(refuse(&format!("the line is longer than {MAX_LINE} bytes")));
    }
    if let Some(c) = line.chars().find(|c| !(*c == '\t' || (' '..='~').contains(c))) {
        return Err(refuse(&format!(
            "the character {:?} is not allowed (only printable ASCII, tabs and spaces)",
            c
        )));
    }
    let text = line.trim_matches([' ', '\t']);
    if text.starts_with('$') {
        return Err(refuse("a zone-file directive is not a validation record"));
    }
    if let Some(c) = text.chars().find(|c| matches!(c, '(' | ')' | ';' | '\\')) {
        return Err(refuse(&format!("'{c}' is not allowed in a validation record")));
    }
    let tokens: Vec<&str> = text.split([' ', '\t']).filter(|t| !t.is_empty()).collect();
    if tokens.len() < 3 || tokens.len() > 5 {
        return Err(refuse("expected OWNER [TTL] [IN] TYPE VALUE"));
    }
    let owner = host_name(tokens[0]).map_err(|e| refuse(&format!("the owner name {e}")))?;
    let value_token = tokens[tokens.len() - 1];
    let kind_token = tokens[tokens.len() - 2];
    let mut ttl = None;
    let mut class = None;
    for t in &tokens[1..tokens.len() - 2] {
        if t.bytes().all(|b| b.is_ascii_digit()) && ttl.is_none() {
            let v: u32 = t
                .parse()
                .ok()
                .filter(|v| *v <= i32::MAX as u32)
                .ok_or_else(|| refuse("the TTL is out of range"))?;
            ttl = Some(v);
        } else if t.eq_ignore_ascii_case("IN") && class.is_none() {
            class = Some(());
        } else {
            return Err(refuse(&format!("'{t}' is neither a TTL nor the class IN")));
        }
    }
    let (kind, value) = if kind_token.eq_ignore_ascii_case("TXT") {
        let inner = match (value_token.strip_prefix('"'), value_token.ends_with('"')) {
            (Some(rest), true) if !rest.is_empty() => &rest[..rest.len() - 1],
            (None, false) => value_token,
            _ => return Err(refuse("the TXT value is not one quoted string")),
        };
        (
            RecordKind::Txt,
            txt_value(inner).map_err(|e| refuse(&format!("the TXT value {e}")))?,
        )
    } else if kind_token.eq_ignore_ascii_case("CNAME") {
        let target = host_name(value_token).map_err(|e| refuse(&format!("the CNAME target {e}")))?;
        (RecordKind::Cname, target)
    } else {
        return Err(refuse(&format!(
            "type '{kind_token}' is not a validation record (TXT or CNAME)"
        )));
    };
    Ok(DcvRecord {
        name: owner,
        kind,
        value,
        ttl: ttl.unwrap_or(300),
        zone_line: line.to_string(),
    })
}

/// Holds a record against the certificate's names: its owner must be one of them (a wildcard's
/// base name for `*.`) or one `_label` directly under one, and a CNAME only at such a `_label`,
/// never at a name a web server answers for.
pub fn check_owner(record: &DcvRecord, names: &[String]) -> Result<(), DnsError> {
    let owner = record.name.trim_end_matches('.').to_ascii_lowercase();
    let bases: Vec<String> = names
        .iter()
        .map(|n| n.trim_start_matches("*.").trim_end_matches('.').to_ascii_lowercase())
        .collect();
    let at_name = bases.contains(&owner);
    let under_name = owner
        .split_once('.')
        .is_some_and(|(label, rest)| label.len() > 1 && label.starts_with('_') && bases.iter().any(|b| b == rest));
    let refuse = |why: String| DnsError::Parse(format!("{why} in '{}'", shown(&record.zone_line)));
    match (record.kind, at_name, under_name) {
        (RecordKind::Txt, true, _) | (_, _, true) => Ok(()),
        (RecordKind::Cname, true, _) => Err(refuse(format!(
            "a CNAME at {owner} would take the name away from its web server; only a _label under a certificate name may be one"
        ))),
        (_, false, false) => Err(refuse(format!(
            "the owner {owner} is neither one of the certificate's names ({}) nor a _label directly under one",
            bases.join(", ")
        ))),
    }
}

/// Reads and checks one DCV line from prepareOrder for a certificate with `names`.
pub fn read_dcv_line(line: &str, names: &[String]) -> Result<DcvRecord, DnsError> {
    let record = parse_zone_line(line)?;
    check_owner(&record, names)?;
    Ok(record)
}

impl DcvRecord {
    /// Checks a record again (a journal is read back from disk before its hook runs).
    pub fn check(&self, names: &[String]) -> Result<(), DnsError> {
        let again = parse_zone_line(&self.zone_line)?;
        if (again.name.as_str(), again.kind, again.value.as_str(), again.ttl)
            != (self.name.as_str(), self.kind, self.value.as_str(), self.ttl)
        {
            return Err(DnsError::Parse(format!(
                "the journal's record {} {} does not match its line '{}'",
                shown(&self.name),
                self.kind,
                shown(&self.zone_line)
            )));
        }
        check_owner(self, names)
    }

    /// The record as one canonical zone-file line, built from the checked parts (what hooks get).
    pub fn canonical_line(&self) -> String {
        let rdata = if self.kind == RecordKind::Txt {
            format!("\"{}\"", self.value)
        } else {
            self.value.clone()
        };
        format!("{} {} IN {} {}", self.name, self.ttl, self.kind, rdata)
    }
}

/// A name as text that cannot forge a log line or reach a terminal as a control sequence.
fn shown(s: &str) -> String {
    let cut: String = s.chars().take(200).collect();
    let mut out = cut.escape_debug().to_string();
    if s.chars().count() > 200 {
        out.push_str("...");
    }
    out
}

/// A fully qualified host name: labels of letters, digits, `-` and `_`, at most 63 bytes each and
/// 253 in all; no wildcard, no root alone. Returned lower-case with the trailing dot.
fn host_name(token: &str) -> Result<String, String> {
    let bare = token.strip_suffix('.').unwrap_or(token);
    if bare.is_empty() {
        return Err("is empty or the root".into());
    }
    if bare.len() > 253 {
        return Err("is longer than 253 bytes".into());
    }
    for label in bare.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("has a label of {} bytes", label.len()));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("holds '{c}', which a host name may not"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("has the label '{label}' that starts or ends with '-'"));
        }
    }
    Ok(format!("{}.", bare.to_ascii_lowercase()))
}

/// A TXT value: 1 to 255 bytes of letters, digits and `-._~+/=:@%,`, the characters of the
/// tokens CAs hand out (base64 and `key=value` included), and nothing a shell or a zone file
/// gives a meaning to.
fn txt_value(v: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > MAX_VALUE {
        return Err(format!("has {} bytes (1 to {MAX_VALUE})", v.len()));
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~+/=:@%,".contains(*c)))
    {
        return Err(format!("holds {c:?}, which a validation token never does"));
    }
    Ok(v.to_string())
}

fn resolver(servers: &[SocketAddr], recursion: bool, timeout: Duration) -> Resolver<TokioConnectionProvider> {
    let mut config = ResolverConfig::new();
    for s in servers {
        config.add_name_server(NameServerConfig::new(*s, Protocol::Udp));
        config.add_name_server(NameServerConfig::new(*s, Protocol::Tcp));
    }
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.recursion_desired = recursion;
    opts.edns0 = true;
    opts.timeout = timeout;
    opts.attempts = 1;
    Resolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(opts)
        .build()
}

fn discovery_resolver(cfg: &DnsConfig) -> Result<Resolver<TokioConnectionProvider>, DnsError> {
    if cfg.resolvers.is_empty() {
        Resolver::builder_tokio()
            .map(|b| b.build())
            .map_err(|e| DnsError::Discovery {
                name: String::new(),
                detail: format!("no system resolver: {e}"),
            })
    } else {
        Ok(resolver(&cfg.resolvers, true, Duration::from_secs(2)))
    }
}

/// The authoritative nameservers of the zone that holds `name`: the configured override, or those
/// found through NS records (walking up from `name`) and their addresses.
pub async fn authoritative_servers(name: &str, cfg: &DnsConfig) -> Result<Vec<SocketAddr>, DnsError> {
    if !cfg.nameservers.is_empty() {
        return Ok(cfg.nameservers.clone());
    }
    let fail = |detail: String| DnsError::Discovery {
        name: name.to_string(),
        detail,
    };
    let r = discovery_resolver(cfg)?;
    let mut candidate = Name::from_ascii(name).map_err(|e| fail(e.to_string()))?;
    candidate.set_fqdn(true);
    for _ in 0..16 {
        if candidate.is_root() {
            break;
        }
        if let Ok(ns) = r.lookup(candidate.clone(), RecordType::NS).await {
            let hosts: Vec<Name> = ns
                .iter()
                .filter_map(|d| if let RData::NS(n) = d { Some(n.0.clone()) } else { None })
                .collect();
            if !hosts.is_empty() {
                let mut addrs = Vec::new();
                for host in hosts {
                    match r.lookup_ip(host.clone()).await {
                        Ok(ips) => addrs.extend(ips.iter().map(|ip| SocketAddr::new(ip, cfg.nameserver_port))),
                        Err(e) => tracing::warn!(nameserver = %host, error = %e, "cannot resolve a nameserver"),
                    }
                }
                addrs.sort();
                addrs.dedup();
                if addrs.is_empty() {
                    return Err(fail(format!(
                        "none of the nameservers of {candidate} resolves to an address"
                    )));
                }
                return Ok(addrs);
            }
        }
        candidate = candidate.base_name();
    }
    Err(fail("no NS records found up to the root".into()))
}

/// What one server answered for a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Served,
    Other(Vec<String>),
    Nothing,
    Error(String),
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Served => f.write_str("the record"),
            Self::Other(values) => write!(f, "other values ({})", values.join(", ")),
            Self::Nothing => f.write_str("nothing"),
            Self::Error(e) => write!(f, "an error ({e})"),
        }
    }
}

/// Asks one server for `record` directly.
pub async fn ask(server: SocketAddr, record: &DcvRecord) -> Answer {
    let r = resolver(&[server], false, Duration::from_secs(2));
    let kind = if record.kind == RecordKind::Cname {
        RecordType::CNAME
    } else {
        RecordType::TXT
    };
    match r.lookup(record.name.as_str(), kind).await {
        Ok(lookup) => {
            let values: Vec<String> = lookup
                .iter()
                .filter_map(|d| match d {
                    RData::TXT(t) if kind == RecordType::TXT => {
                        Some(t.txt_data().iter().map(|b| String::from_utf8_lossy(b)).collect())
                    }
                    RData::CNAME(c) if kind == RecordType::CNAME => Some(c.0.to_ascii()),
                    _ => None,
                })
                .collect();
            let want = record.value.trim_end_matches('.');
            if values
                .iter()
                .any(|v| v.trim_end_matches('.').eq_ignore_ascii_case(want))
            {
                Answer::Served
            } else if values.is_empty() {
                Answer::Nothing
            } else {
                Answer::Other(values)
            }
        }
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Answer::Nothing,
        Err(e) => Answer::Error(e.to_string()),
    }
}

/// Waits until every authoritative server of each record's zone serves it, or `timeout` passes.
/// Each round's answers are logged per server.
pub async fn wait_until_served(records: &[DcvRecord], cfg: &DnsConfig, timeout: Duration) -> Result<(), DnsError> {
    let start = Instant::now();
    let mut targets = Vec::new();
    for rec in records {
        let servers = authoritative_servers(&rec.name, cfg).await?;
        targets.push((rec, servers));
    }
    let mut last = String::new();
    loop {
        let mut missing = Vec::new();
        for (rec, servers) in &targets {
            for server in servers {
                let answer = ask(*server, rec).await;
                tracing::debug!(record = %rec.name, %server, %answer, "propagation check");
                if answer != Answer::Served {
                    missing.push(format!("{server} answers {answer} for {}", rec.name));
                }
            }
        }
        if missing.is_empty() {
            tracing::info!(
                records = records.len(),
                waited_ms = start.elapsed().as_millis() as u64,
                "every authoritative nameserver serves the validation records"
            );
            return Ok(());
        }
        let summary = missing.join("; ");
        if summary != last {
            tracing::info!(waiting_for = %summary, "validation records not yet served everywhere");
            last = summary.clone();
        }
        if start.elapsed() + cfg.check_interval > timeout {
            let rec = &targets[0].0;
            return Err(DnsError::NotPropagated {
                name: rec.name.clone(),
                kind: rec.kind.to_string(),
                waited: start.elapsed(),
                detail: summary,
            });
        }
        tokio::time::sleep(cfg.check_interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_lines_parse_with_tabs_or_spaces() {
        let r = parse_zone_line("example.com.\t\t300\tIN\tTXT\t\"201704071405295z34is5g\"").unwrap();
        assert_eq!(
            (r.name.as_str(), r.kind.as_str(), r.value.as_str(), r.ttl),
            ("example.com.", "TXT", "201704071405295z34is5g", 300)
        );
        let r = parse_zone_line("_dnsauth.www.example.com. 300 IN TXT \"abc\"").unwrap();
        assert_eq!(r.name, "_dnsauth.www.example.com.");
        let r = parse_zone_line("_abc.example.com. 3600 IN CNAME dcv.example-ca.com.").unwrap();
        assert_eq!((r.kind.as_str(), r.value.as_str()), ("CNAME", "dcv.example-ca.com."));
    }

    #[test]
    fn garbage_and_other_types_are_refused() {
        assert!(parse_zone_line("hello world").is_err());
        assert!(parse_zone_line("example.com. 300 IN A 192.0.2.1").is_err());
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_real_form_of_the_line_is_read() {
        let www = names(&["www.example.com", "example.com"]);
        for line in [
            "example.com.\t\t300\tIN\tTXT\t\"201704071405295z34is5g0jjairsdu0v5opdw8512td8kixzvtaacu4ebrkry5q\"",
            "example.com.\t300\tIN\tTXT\t\"201812120900493xe6hfcrtaclrn0poyu106wc2qbw095ifgujkadu4dzbltao8d\"",
            "_dnsauth.www.example.com.\t300\tIN\tTXT\t\"202003111007103gz85txmpl9x77x0ndm055v1w8lcmretx8wgshot6369xxu3lg\"",
            "www.example.com 300 TXT abc",
            "www.example.com. IN 300 TXT \"k=v+/base64==\"",
            "_0f1e2d.www.example.com. 3600 IN CNAME dcv.example-ca.com.",
        ] {
            let r = read_dcv_line(line, &www).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(r.name.ends_with("example.com."), "{r:?}");
        }
        let r = read_dcv_line("WWW.Example.COM. 300 in txt \"abc\"", &www).unwrap();
        assert_eq!(
            (r.name.as_str(), r.kind.as_str(), r.value.as_str()),
            ("www.example.com.", "TXT", "abc")
        );
        assert_eq!(r.canonical_line(), "www.example.com. 300 IN TXT \"abc\"");
        let wild = names(&["*.example.org"]);
        assert!(read_dcv_line("example.org. 300 IN TXT \"abc\"", &wild).is_ok());
        assert!(read_dcv_line("_dnsauth.example.org. 300 IN TXT \"abc\"", &wild).is_ok());
    }

    /// What a hostile API put in the line, and what got through before this reader: a file read
    /// through `$INCLUDE`, memory exhausted by `/dev/zero`, a FIFO that hung the run, and
    /// records injected into the zone through the DNS hook.
    #[test]
    fn a_hostile_line_is_refused_before_anything_reads_a_file_or_runs_a_hook() {
        let n = names(&["www.example.com"]);
        let hostile = [
            "$INCLUDE /etc/shadow",
            "$INCLUDE /dev/zero",
            "$INCLUDE /tmp/fifo www.example.com.",
            " $ORIGIN evil.example.net.",
            "$TTL 300",
            "www.example.com. 300 IN TXT \"abc\"\n$INCLUDE /etc/shadow",
            "www.example.com. 300 IN TXT \"abc\"\nevil.example.com. 300 IN A 192.0.2.1",
            "www.example.com. 300 IN TXT \"abc\"\rupdate add evil 300 A 192.0.2.1",
            "www.example.com. 300 IN TXT \"abc\\\"\nupdate add x\"",
            "www.example.com. 300 IN TXT ( \"abc\" )",
            "www.example.com. 300 IN TXT \"abc\" ; comment",
            "www.example.com. 300 IN TXT \"abc\" \"def\"",
            "www.example.com. 300 IN TXT \"a b\"",
            "www.example.com. 300 IN TXT \"$(touch /tmp/pwned)\"",
            "www.example.com. 300 IN TXT \"`id`\"",
            "www.example.com. 300 IN TXT \"\u{1b}[2Jabc\"",
            "www.example.com. 300 IN TXT \"abc\u{0}\"",
            "www.example.com. 300 IN TXT \"\"",
            "www.example.com. 300 IN TXT \"abc",
            "www.example.com. 300 IN TXT 'abc'",
            "www.example.com. 300 IN TXT \"ab\"c\"",
            "www.example.com. 300 IN TXT \"äbc\"",
            "www.example.com. 300 CH TXT \"abc\"",
            "www.example.com. 99999999999 IN TXT \"abc\"",
            "www.example.com. 300 IN NS ns.evil.example.net.",
            "www.example.com. 300 IN A 192.0.2.1",
            "www.example.com. 300 IN CNAME evil.example.net.",
            "example.com. 300 IN CNAME evil.example.net.",
            "example.com. 300 IN TXT \"abc\"",
            "evil.example.net. 300 IN TXT \"abc\"",
            "_x.evil.example.net. 300 IN TXT \"abc\"",
            "_a._b.www.example.com. 300 IN TXT \"abc\"",
            "x.www.example.com. 300 IN TXT \"abc\"",
            "_.www.example.com. 300 IN TXT \"abc\"",
            ". 300 IN TXT \"abc\"",
            "@ 300 IN TXT \"abc\"",
            "*.www.example.com. 300 IN TXT \"abc\"",
            "_x.www.example.com. 300 IN CNAME *.evil.example.net.",
            "_x.www.example.com. 300 IN CNAME \"evil\".",
            "www..example.com. 300 IN TXT \"abc\"",
        ];
        for line in hostile {
            assert!(read_dcv_line(line, &n).is_err(), "accepted: {line:?}");
        }
        let long = format!("www.example.com. 300 IN TXT \"{}\"", "a".repeat(256));
        assert!(read_dcv_line(&long, &n).is_err());
        assert!(read_dcv_line(&"x".repeat(MAX_LINE + 1), &n).is_err());
        // The error names the field's trouble without passing control characters on.
        let e = read_dcv_line("www.example.com. 300 IN TXT \"\u{1b}[2J\"", &n)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\\u{1b}") && !e.contains('\u{1b}'), "{e}");
        let e = read_dcv_line("$INCLUDE /etc/shadow", &n).unwrap_err().to_string();
        assert!(e.contains("directive"), "{e}");
    }

    #[test]
    fn a_journal_record_that_was_tampered_with_fails_its_check() {
        let n = names(&["www.example.com"]);
        let mut r = read_dcv_line("www.example.com. 300 IN TXT \"abc\"", &n).unwrap();
        assert!(r.check(&n).is_ok());
        r.value = "abc\nupdate add evil. 300 IN A 192.0.2.1".into();
        assert!(r.check(&n).is_err());
        let mut r = read_dcv_line("www.example.com. 300 IN TXT \"abc\"", &n).unwrap();
        r.zone_line = "$INCLUDE /etc/shadow".into();
        assert!(r.check(&n).is_err());
    }
}
