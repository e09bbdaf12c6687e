//! Proving control of the names: the DNS hook publishes the validation records (`prepared`),
//! certkeeper waits until every authoritative nameserver serves them (`dns_published`), and the
//! hook removes them when the order ends. In `autodns` mode the API provisions them itself.

use anyhow::Context as _;

use super::Agent;
use crate::config::{CertConfig, DnsMode};
use crate::dns::{self, DcvRecord};
use crate::hooks;
use crate::store::{CertState, Step};

impl Agent {
    /// `prepared`: runs the DNS hook's `present` for each record (hook mode).
    pub(super) async fn publish(&self, cert: &CertConfig, st: &mut CertState) -> anyhow::Result<()> {
        if cert.dns == DnsMode::Hook {
            let records = Self::journal(st)?.records.clone();
            let names = cert.all_names();
            for rec in &records {
                rec.check(&names)
                    .with_context(|| format!("refused the journal's validation record for {}", cert.name))?;
                hooks::run(
                    &dns_hook_argv(cert, "present"),
                    &record_env(cert, rec),
                    cert.hook_timeout,
                )
                .await
                .with_context(|| format!("the DNS hook could not publish {} {}", rec.name, rec.kind))?;
            }
        }
        self.advance(cert, st, Step::DnsPublished)
    }

    /// `dns_published`: waits until every authoritative nameserver serves the records (hook mode).
    pub(super) async fn wait_for_dns(&self, cert: &CertConfig, st: &mut CertState) -> anyhow::Result<()> {
        if cert.dns == DnsMode::Hook {
            let records = Self::journal(st)?.records.clone();
            if let Err(e) =
                dns::wait_until_served(&records, &self.config.dns, self.config.dns.propagation_timeout).await
            {
                // No record is left published while the order waits for its retry: the journal
                // steps back to `prepared` first (so that a crash in between republishes rather
                // than waits for a removed record), then the hook removes them; the next
                // attempt publishes them again.
                self.advance(cert, st, Step::Prepared)?;
                self.clean_dns(cert, &records).await;
                return Err(e.into());
            }
        }
        self.advance(cert, st, Step::DnsVerified)
    }

    /// Runs the DNS hook's `cleanup` for each record that still passes its check. A failure is
    /// logged: the order's ending goes on.
    pub(super) async fn clean_dns(&self, cert: &CertConfig, records: &[DcvRecord]) {
        let names = cert.all_names();
        for rec in records {
            if let Err(e) = rec.check(&names) {
                tracing::warn!(cert = %cert.name, error = %e, "no DNS cleanup for a record that fails its check");
                continue;
            }
            if let Err(e) = hooks::run(
                &dns_hook_argv(cert, "cleanup"),
                &record_env(cert, rec),
                cert.hook_timeout,
            )
            .await
            {
                tracing::warn!(cert = %cert.name, record = %rec.name, error = %e, "DNS cleanup failed");
            }
        }
    }
}

fn dns_hook_argv(cert: &CertConfig, action: &str) -> Vec<String> {
    let mut argv = cert.dns_hook.to_vec();
    argv.push(action.to_string());
    argv
}

fn record_env(cert: &CertConfig, rec: &DcvRecord) -> hooks::Env {
    hooks::DnsRecordEnv {
        name: &cert.name,
        record: rec,
    }
    .vars()
}
