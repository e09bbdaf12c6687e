//! Domain-control records: parsing the zone-file line that prepareOrder returns (hickory's zone
//! parser, TXT or CNAME, tabs or spaces), and checking that every authoritative nameserver of the
//! zone serves it before anything is ordered. Nothing outside this module touches hickory.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::txt::Parser;
use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use tokio::time::Instant;

use crate::config::DnsConfig;

/// One record to publish.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DcvRecord {
    /// Fully qualified, with the trailing dot.
    pub name: String,
    /// `TXT` or `CNAME`.
    pub kind: String,
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
    #[error("{name} {kind} is not served by every authoritative nameserver after {waited:?}: {detail}")]
    NotPropagated {
        name: String,
        kind: String,
        waited: Duration,
        detail: String,
    },
}

/// Parses one zone-file line such as `example.com.<TAB>300<TAB>IN<TAB>TXT<TAB>"token"`.
pub fn parse_zone_line(line: &str) -> Result<DcvRecord, DnsError> {
    let text = format!("{}\n", line.trim());
    let (_, records) = Parser::new(text.as_str(), None, Some(Name::root()))
        .parse()
        .map_err(|e| DnsError::Parse(format!("{e} in '{}'", line.trim())))?;
    let mut found = Vec::new();
    for set in records.values() {
        for r in set.records_without_rrsigs() {
            found.push(r.clone());
        }
    }
    let [record] = found.as_slice() else {
        return Err(DnsError::Parse(format!(
            "expected one record, found {} in '{}'",
            found.len(),
            line.trim()
        )));
    };
    let (kind, value) = match record.data() {
        RData::TXT(t) => (
            "TXT",
            t.txt_data()
                .iter()
                .map(|b| String::from_utf8_lossy(b))
                .collect::<String>(),
        ),
        RData::CNAME(c) => ("CNAME", c.0.to_ascii()),
        other => {
            return Err(DnsError::Parse(format!(
                "type {} is not a validation record",
                other.record_type()
            )));
        }
    };
    let mut name = record.name().clone();
    name.set_fqdn(true);
    Ok(DcvRecord {
        name: name.to_ascii(),
        kind: kind.into(),
        value,
        ttl: record.ttl(),
        zone_line: line.to_string(),
    })
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

/// Asks one server for `record` directly.
pub async fn ask(server: SocketAddr, record: &DcvRecord) -> Answer {
    let r = resolver(&[server], false, Duration::from_secs(2));
    let kind = if record.kind == "CNAME" {
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
                tracing::debug!(record = %rec.name, %server, ?answer, "propagation check");
                if answer != Answer::Served {
                    missing.push(format!("{server} answers {answer:?} for {}", rec.name));
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
                kind: rec.kind.clone(),
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
}
