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
        // The same roots the API connection trusts: the system store and ca_file.
        let anchors = x509::TrustAnchors::load(self.config.api.ca_pem.as_deref(), true);
        let verified = x509::verify(
            &leaf,
            &j.chain,
            &spki,
            &cert.all_names(),
            OffsetDateTime::now_utc(),
            &anchors,
        );
        match verified {
            Ok(x509::Verified {
                info,
                leaf_pem,
                intermediates_pem,
            }) => {
                // Exactly what was verified, re-encoded: chain.pem holds the intermediates; the
                // root is left out, as servers expect.
                let generation = self
                    .store
                    .write_generation(name, key.pem(), &leaf_pem, &intermediates_pem)
                    .context("writing the new generation")?;
                tracing::info!(cert = %name, serial = %info.serial, not_after = %info.not_after, generation = generation.number, "certificate verified and written");
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
    pub(super) async fn deploy(
        &self,
        cert: &CertConfig,
        st: &mut CertState,
        generation: u32,
    ) -> anyhow::Result<Outcome> {
        let name = &cert.name;
        let previous = self.store.live_generation(name).filter(|g| *g != generation);
        self.store
            .switch(name, generation)
            .context("switching the live symlink")?;
        let serial = st.serial.clone().unwrap_or_default();
        let result = if cert.reload.is_empty() {
            Ok(())
        } else {
            hooks::run(&cert.reload, &self.reload_env(cert, st), cert.hook_timeout).await
        };
        match result {
            Ok(()) => {
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
            Err(e) => {
                let error = format!("the reload hook failed: {e}");
                tracing::error!(cert = %name, %error, ?previous, "rolling back to the previous certificate");
                if let Some(p) = previous {
                    self.store.switch(name, p).context("switching the live symlink back")?;
                    if let Err(e2) = hooks::run(&cert.reload, &self.reload_env(cert, st), cert.hook_timeout).await {
                        tracing::error!(cert = %name, error = %e2, "the reload hook failed again after the rollback");
                    }
                }
                st.generation = previous;
                st.deployed = false;
                st.pending_deploy = Some(generation);
                st.last_error = Some(error.clone());
                // A failed deploy is a failure like any other: counted, so that the schedule
                // backs off (1 m, 10 m, ...) instead of retrying the hook at once, for ever.
                st.failures += 1;
                st.last_failure = Some(OffsetDateTime::now_utc().unix_timestamp());
                self.store.save(st)?;
                Ok(Outcome::NotDeployed { serial, error })
            }
        }
    }

    fn reload_env(&self, cert: &CertConfig, st: &CertState) -> hooks::Env {
        hooks::ReloadEnv {
            name: &cert.name,
            live: &self.store.live_dir.join(&cert.name),
            serial: st.serial.as_deref(),
            not_after: st.not_after,
        }
        .vars()
    }
}
