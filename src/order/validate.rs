//! Proving control of the names: the DNS hook publishes the validation records (`prepared`),
//! certkeeper waits until every authoritative nameserver serves them (`dns_published`), and the
//! hook removes them when the order ends. In `autodns` mode the API provisions them itself.
//! With `validation = "file"` the same steps place the validation files (under the web roots or
//! through the `file_hook`), fetch them over HTTP as the CA will, and remove them at the end;
//! with `validation = "email"` nothing is published: a person answers the approval mail.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};

use super::Agent;
use crate::config::{CertConfig, DnsMode, FileValidation, Validation};
use crate::dns::{self, DcvRecord};
use crate::hooks;
use crate::store::{CertState, Step};
use crate::webroot::{FileRecord, Served};

impl Agent {
    /// `prepared`: runs the DNS hook's `present` for each record (hook mode).
    pub(super) async fn publish(&self, cert: &CertConfig, st: &mut CertState) -> anyhow::Result<()> {
        if let Validation::File(fv) = &cert.validation {
            let mut files = Self::journal(st)?.files.clone();
            let names = cert.all_names();
            for rec in &files {
                rec.check(&names)
                    .map_err(|e| anyhow!("refused the journal's validation file for {}: {e}", cert.name))?;
            }
            // One file path serves one order at a time: two certificates sharing a web root
            // would replace each other's file while the CA looks.
            self.claim_files(cert, fv, &files)?;
            for rec in &mut files {
                match fv.webroot(&rec.name) {
                    Some(root) if fv.hook.is_empty() => {
                        crate::webroot::place(root, rec)
                            .map_err(|e| anyhow!("placing the validation file for {}: {e}", rec.name))?;
                        rec.root = Some(root.to_path_buf());
                    }
                    _ => hooks::run(&file_hook_argv(fv, "present"), &file_env(cert, rec), cert.hook_timeout)
                        .await
                        .with_context(|| {
                            format!("the file hook could not place the validation file for {}", rec.name)
                        })?,
                }
            }
            Self::journal(st)?.files = files;
            return self.advance(cert, st, Step::DnsPublished);
        }
        if cert.publish_mode() == DnsMode::Hook {
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
        if let Validation::File(fv) = &cert.validation {
            let files = Self::journal(st)?.files.clone();
            if let Err(e) = self.wait_until_fetched(fv, &files).await {
                // As for DNS records: back to `prepared` first, then the files are removed.
                self.advance(cert, st, Step::Prepared)?;
                self.clean_files(cert, &files).await;
                return Err(e);
            }
            return self.advance(cert, st, Step::DnsVerified);
        }
        if cert.publish_mode() == DnsMode::Hook {
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

impl Agent {
    /// Fetches every validation file over HTTP until each is served with its content, within
    /// `dns.propagation_timeout`, looking once a second.
    async fn wait_until_fetched(&self, fv: &FileValidation, files: &[FileRecord]) -> anyhow::Result<()> {
        let client = crate::webroot::client().context("setting up the HTTP client of the file check")?;
        let timeout = self.config.dns.propagation_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let address = fv.check_address.as_deref();
        let mut last = String::new();
        loop {
            let mut missing = None;
            for rec in files {
                if let Served::No(why) = crate::webroot::fetch(&client, rec, address).await {
                    missing = Some(why);
                    break;
                }
            }
            let Some(why) = missing else { return Ok(()) };
            if why != last {
                tracing::info!(file = %why, "waiting for the validation file to be served");
                last = why.clone();
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "the validation file is not served after {}: {why}",
                    crate::text::duration(timeout)
                );
            }
            tokio::time::sleep(Duration::from_secs(1).min(timeout)).await;
        }
    }

    /// Removes each validation file (from its web root if it still holds our content, or
    /// through the file hook's `cleanup`) that still passes its check. A failure is logged: the
    /// order's ending goes on.
    pub(super) async fn clean_files(&self, cert: &CertConfig, files: &[FileRecord]) {
        self.release_files(&cert.name);
        let names = cert.all_names();
        for rec in files {
            if let Err(e) = rec.check(&names) {
                tracing::warn!(cert = %cert.name, error = %e, "no cleanup for a validation file that fails its check");
                continue;
            }
            // From where it was placed, whatever the configuration says now.
            let done = match (&rec.root, &cert.validation) {
                (Some(root), _) => crate::webroot::remove(root, rec)
                    .map(|_| ())
                    .map_err(anyhow::Error::msg),
                (None, Validation::File(fv)) if !fv.hook.is_empty() => {
                    hooks::run(&file_hook_argv(fv, "cleanup"), &file_env(cert, rec), cert.hook_timeout)
                        .await
                        .map_err(anyhow::Error::from)
                }
                (None, _) => Err(anyhow!(
                    "it was placed by a file hook that is no longer configured: remove http://{}{} by hand",
                    rec.name,
                    rec.url_path()
                )),
            };
            if let Err(e) = done {
                tracing::warn!(cert = %cert.name, file = %rec.file_name(), error = %format!("{e:#}"), "removing the validation file failed");
            }
        }
    }

    /// Claims the web-root paths of `files` for `cert`'s order, or refuses (nothing written)
    /// when another certificate's order holds one: tried again after that order has ended.
    pub(super) fn claim_files(
        &self,
        cert: &CertConfig,
        fv: &FileValidation,
        files: &[FileRecord],
    ) -> anyhow::Result<()> {
        let paths: Vec<std::path::PathBuf> = files
            .iter()
            .filter_map(|r| {
                let root = fv.webroot(&r.name).filter(|_| fv.hook.is_empty())?;
                Some(
                    root.join(crate::webroot::DIR[0])
                        .join(crate::webroot::DIR[1])
                        .join(&r.file),
                )
            })
            .collect();
        let mut held = self.file_paths.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((path, other)) = paths
            .iter()
            .find_map(|p| held.get(p).filter(|o| **o != cert.name).map(|o| (p, o.clone())))
        {
            bail!(
                "the validation file {} is in use by the order of {other}; {} is validated after it",
                path.display(),
                cert.name
            );
        }
        for p in paths {
            held.insert(p, cert.name.clone());
        }
        Ok(())
    }

    /// Gives up the web-root paths `name`'s order held.
    fn release_files(&self, name: &str) {
        self.file_paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, holder| holder != name);
    }
}

fn file_hook_argv(fv: &FileValidation, action: &str) -> Vec<String> {
    let mut argv = fv.hook.to_vec();
    argv.push(action.to_string());
    argv
}

fn file_env(cert: &CertConfig, rec: &FileRecord) -> hooks::Env {
    hooks::FileEnv {
        name: &cert.name,
        file: rec,
    }
    .vars()
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
