//! The order's last steps: the download (`job_done`), the verification and the new generation
//! (`downloaded`), the end of the order and the deploy (`installed`): the live symlink switched,
//! the reload hook run, and on its failure the symlink switched back.

use anyhow::{Context as _, anyhow, bail};
use time::OffsetDateTime;

use super::{Agent, Ending, Outcome};
use crate::api::wire::parse_time;
use crate::config::CertConfig;
use crate::hooks;
use crate::keys::PrivateKey;
use crate::store::{CertState, Step};
use crate::x509;

impl Agent {
    /// `job_done`: fetches the certificate, its chain and the term's end.
    pub(super) async fn download(&self, cert: &CertConfig, st: &mut CertState) -> anyhow::Result<()> {
        let j = Self::journal(st)?.clone();
        let id = j
            .certificate_id
            .or(st.certificate_id)
            .ok_or_else(|| anyhow!("the job named no certificate id"))?;
        let c = self
            .client
            .certificate(id)
            .await
            .with_context(|| format!("fetching certificate {id}"))?;
        let leaf = c
            .server
            .clone()
            .filter(|s| s.contains("BEGIN CERTIFICATE"))
            .ok_or_else(|| anyhow!("certificate {id} holds no issued certificate yet"))?;
        let chain: Vec<String> = c
            .certification_authority
            .iter()
            .filter_map(|ca| ca.ca_certificate.clone())
            .collect();
        let jm = Self::journal(st)?;
        jm.leaf = Some(leaf);
        jm.chain = chain;
        jm.term_end = c.payable.as_deref().and_then(parse_time).map(|t| t.unix_timestamp());
        st.certificate_id = Some(id);
        if let Some(t) = st.order.as_ref().and_then(|j| j.term_end) {
            st.term_end = Some(t);
        }
        self.advance(cert, st, Step::Downloaded)
    }

    /// `downloaded`: verifies the delivery against the order's key and names and writes it as a
    /// new generation; a delivery that fails is refused and ends the order.
    pub(super) async fn verify_and_write(&self, cert: &CertConfig, st: &mut CertState) -> anyhow::Result<()> {
        let name = &cert.name;
        let j = Self::journal(st)?.clone();
        let pem = j
            .key
            .as_ref()
            .ok_or_else(|| anyhow!("the journal lost the order's key"))?;
        let key = PrivateKey::from_pem(&pem.0).context("reading the order's key")?;
        let spki = key.public_key_der();
        let leaf = j.leaf.clone().unwrap_or_default();
        let verified = x509::verify(
            &leaf,
            &j.chain,
            &spki,
            &cert.all_names(),
            OffsetDateTime::now_utc(),
            self.anchors(),
        );
        match verified {
            Ok(x509::Verified {
                info,
                leaf_pem,
                intermediates_pem,
            }) => {
                // Exactly what was verified, re-encoded: chain.pem holds the intermediates; the
                // root is left out, as servers expect.
                let p12 = match &cert.smime {
                    Some(smime) => Some(crate::p12::bundle(
                        key.pem(),
                        &leaf_pem,
                        &intermediates_pem,
                        name,
                        smime.p12_password.expose(),
                    )?),
                    None => None,
                };
                let generation = self
                    .store
                    .write_generation_with(
                        name,
                        key.pem(),
                        &leaf_pem,
                        &intermediates_pem,
                        cert.key_access,
                        p12.as_deref(),
                    )
                    .context("writing the new generation")?;
                tracing::info!(cert = %name, serial = %info.serial, not_after = %crate::text::time(info.not_after.unix_timestamp()), generation = generation.number, "certificate verified and written");
                st.serial = Some(info.serial);
                st.not_before = Some(info.not_before.unix_timestamp());
                st.not_after = Some(info.not_after.unix_timestamp());
                st.issued_for = Some(super::plan::issued_for(cert));
                Self::journal(st)?.generation = Some(generation.number);
                self.advance(cert, st, Step::Installed)
            }
            Err(e) => {
                self.end(cert, st, Ending::DeliveryRefused).await?;
                bail!("refused the delivered certificate for {name}: {e}; the installed files were left as they were");
            }
        }
    }

    /// `installed`: ends the order and deploys the new generation.
    pub(super) async fn install(&self, cert: &CertConfig, st: &mut CertState) -> anyhow::Result<Outcome> {
        let generation = Self::journal(st)?
            .generation
            .ok_or_else(|| anyhow!("the journal lost the generation"))?;
        self.end(cert, st, Ending::Installed).await?;
        st.pending_deploy = Some(generation);
        self.deploy(cert, st, generation).await
    }

    /// Switches the live symlink to `generation` and runs the reload hook; on failure switches
    /// back and runs the hook again, so the server keeps a working pair.
    pub(crate) async fn deploy(
        &self,
        cert: &CertConfig,
        st: &mut CertState,
        generation: u32,
    ) -> anyhow::Result<Outcome> {
        let name = &cert.name;
        let previous = self.store.live_generation(name).filter(|g| *g != generation);
        // What each generation holds comes from its own certificate, so that the state and the
        // hooks always speak of the certificate that is live.
        let new = self.generation_facts(name, generation).unwrap_or_else(|| Live::of(st));
        self.store
            .switch(name, generation)
            .context("switching the live symlink")?;
        let serial = new.serial.clone().unwrap_or_default();
        st.not_served = None;
        let result = if cert.reload.is_empty() {
            Ok(())
        } else {
            hooks::run(&cert.reload, &self.reload_env(cert, &new), cert.hook_timeout)
                .await
                .map_err(|e| format!("the reload hook failed: {e}"))
        };
        // The hook said yes; the servers must hand the new certificate out, too.
        let result = match result {
            Ok(()) if !cert.serve_check.is_empty() => self.check_served(cert, st, &serial).await,
            other => other,
        };
        match result {
            Ok(()) => {
                new.apply(st);
                st.generation = Some(generation);
                st.deployed = true;
                st.pending_deploy = None;
                st.last_error = None;
                st.failures = 0;
                st.last_success = Some(OffsetDateTime::now_utc().unix_timestamp());
                self.store.save(st)?;
                let protect: Vec<u32> = [Some(generation), previous].into_iter().flatten().collect();
                if let Err(e) = self.store.prune(name, &protect) {
                    tracing::warn!(cert = %name, error = %e, "cannot remove old generations");
                }
                tracing::info!(cert = %name, %serial, generation, "certificate deployed");
                Ok(Outcome::Deployed { serial, generation })
            }
            Err(error) => {
                tracing::error!(cert = %name, %error, previous = previous.map_or_else(|| "none".to_string(), |p| p.to_string()), "rolling back to the previous certificate");
                if let Some(p) = previous {
                    self.store.switch(name, p).context("switching the live symlink back")?;
                    // The state and the hook now speak of the certificate that is live again.
                    if let Some(old) = self.generation_facts(name, p) {
                        old.apply(st);
                    }
                    if let Err(e2) =
                        hooks::run(&cert.reload, &self.reload_env(cert, &Live::of(st)), cert.hook_timeout).await
                    {
                        tracing::error!(cert = %name, error = %e2, "the reload hook failed again after the rollback");
                    }
                }
                // Without a previous generation the new one stays live (there is nothing to go
                // back to), and the state says so.
                st.generation = previous.or(Some(generation));
                st.deployed = false;
                st.pending_deploy = Some(generation);
                st.last_error = Some(error.clone());
                // A failed deploy is a failure like any other: counted, so that the schedule
                // backs off (1 m, 10 m, ...) instead of retrying the hook at once, for ever.
                st.failures += 1;
                st.last_failure = Some(OffsetDateTime::now_utc().unix_timestamp());
                self.store.save(st)?;
                let not_served = st.not_served.is_some();
                Ok(Outcome::NotDeployed {
                    serial,
                    error,
                    not_served,
                })
            }
        }
    }

    /// The daemon's periodic served check: whether every `serve_check` address still hands out
    /// the live certificate. A server that does not (it reverted, or was never reloaded) is
    /// reported as `NotDeployed { not_served: true }` with the live serial; nothing is switched
    /// (what is installed is right) and no failure is counted against the schedule.
    pub async fn recheck_served(&self, cert: &CertConfig) -> anyhow::Result<Outcome> {
        let mut st = self
            .store
            .load(&cert.name)
            .with_context(|| format!("reading the state of {}", cert.name))?;
        let live = st
            .serial
            .clone()
            .filter(|_| st.deployed && st.order.is_none() && st.pending_deploy.is_none());
        let Some(serial) = live.filter(|_| !cert.serve_check.is_empty()) else {
            return Ok(Outcome::NothingDue);
        };
        let was = st.not_served.take();
        let result = self.check_served(cert, &mut st, &serial).await;
        match &result {
            Ok(()) if was.is_some() => {
                tracing::info!(cert = %cert.name, %serial, "every served check address hands out the installed certificate again");
                st.last_error = None;
            }
            Ok(()) => {}
            Err(error) => st.last_error = Some(error.replacen("issued, not served", "deployed, not served", 1)),
        }
        self.store.save(&st)?;
        Ok(match result {
            Ok(()) => Outcome::NothingDue,
            Err(_) => Outcome::NotDeployed {
                serial,
                error: st.last_error.clone().unwrap_or_default(),
                not_served: true,
            },
        })
    }

    /// Asks every `serve_check` address which certificate it hands out, until each hands out
    /// `expected` (or `serve_check_timeout` has passed), and keeps what they did in the state;
    /// `Err` says which address hands out what instead.
    pub(super) async fn check_served(
        &self,
        cert: &CertConfig,
        st: &mut CertState,
        expected: &str,
    ) -> Result<(), String> {
        let seen = crate::served::check(&cert.serve_check, &cert.all_names(), expected, cert.serve_check_timeout).await;
        let wrong = seen.iter().find(|s| !s.ok()).map(crate::store::Served::mismatch);
        for s in &seen {
            if s.ok() {
                tracing::info!(cert = %cert.name, address = %s.address, serial = %expected, "served");
            } else {
                tracing::error!(cert = %cert.name, address = %s.address, expected = %expected, found = %s.mismatch(), "not served");
            }
        }
        st.served = seen;
        st.not_served = wrong.clone();
        match wrong {
            None => Ok(()),
            Some(w) => Err(format!("issued, not served ({w})")),
        }
    }

    fn reload_env(&self, cert: &CertConfig, live: &Live) -> hooks::Env {
        hooks::ReloadEnv {
            name: &cert.name,
            live: &self.store.live_dir.join(&cert.name),
            serial: live.serial.as_deref(),
            not_after: live.not_after,
            serve_check: &cert.serve_check,
            p12: cert.smime.is_some(),
        }
        .vars()
    }

    /// What a generation's certificate says of itself, if it can be read.
    fn generation_facts(&self, name: &str, generation: u32) -> Option<Live> {
        let pem = self.store.generation_cert(name, generation).ok()?;
        let info = x509::info(&pem).ok()?;
        Some(Live {
            serial: Some(info.serial),
            not_before: Some(info.not_before.unix_timestamp()),
            not_after: Some(info.not_after.unix_timestamp()),
        })
    }
}

/// The facts of a certificate the state keeps for the live one.
struct Live {
    serial: Option<String>,
    not_before: Option<i64>,
    not_after: Option<i64>,
}

impl Live {
    fn of(st: &CertState) -> Self {
        Self {
            serial: st.serial.clone(),
            not_before: st.not_before,
            not_after: st.not_after,
        }
    }

    fn apply(self, st: &mut CertState) {
        st.serial = self.serial;
        st.not_before = self.not_before;
        st.not_after = self.not_after;
    }
}
