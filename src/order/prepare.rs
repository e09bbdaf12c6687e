//! The first steps of an order, free to redo: a new key and its CSR (`planned`), prepareOrder and
//! the validation records it names, read and checked before any hook sees them (`keyed`).

use crate::api::wire::BusinessCase;
use anyhow::{Context as _, anyhow, bail};
use sha2::{Digest, Sha256};

use super::{Agent, hex};
use crate::config::CertConfig;
use crate::dns;
use crate::keys::PrivateKey;
use crate::store::{CertState, KeyPem, OrderKind, Step};

impl Agent {
    /// `planned`: makes the order's key and CSR, in memory.
    pub(super) fn make_key(&self, cert: &CertConfig, st: &mut CertState) -> anyhow::Result<()> {
        let key = PrivateKey::generate(cert.key).context("generating a key")?;
        let csr = key.csr(&cert.all_names()).context("building the CSR")?;
        let jm = Self::journal(st)?;
        jm.spki_sha256 = Some(hex(&Sha256::digest(key.public_key_der())));
        jm.key = Some(KeyPem(key.pem().to_string()));
        jm.csr = Some(csr.single_line());
        self.advance(cert, st, Step::Keyed)
    }

    /// `keyed`: asks prepareOrder for the validation records and reads them.
    pub(super) async fn prepare(&self, cert: &CertConfig, st: &mut CertState) -> anyhow::Result<()> {
        let j = Self::journal(st)?.clone();
        let csr = j.csr.clone().ok_or_else(|| anyhow!("the journal lost the CSR"))?;
        let prepared = self
            .client
            .prepare_order(
                &csr,
                &cert.product,
                case(j.kind),
                st.certificate_id.filter(|_| j.kind != OrderKind::Create),
            )
            .await
            .context("prepareOrder")?;
        // Checked before any hook runs or anything is paid: the line comes from the network and
        // its parts reach the DNS hook.
        let names = cert.all_names();
        let records = prepared
            .dns_lines
            .iter()
            .map(|(_, line)| dns::read_dcv_line(line, &names))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("refused prepareOrder's authentication.dns for {}", cert.name))?;
        if records.is_empty() {
            bail!(
                "prepareOrder offered no DNS validation for {} {}",
                cert.product,
                cert.name
            );
        }
        Self::journal(st)?.records = records;
        self.advance(cert, st, Step::Prepared)
    }
}

/// prepareOrder's name for what an order does.
fn case(kind: OrderKind) -> BusinessCase {
    match kind {
        OrderKind::Create => BusinessCase::Create,
        OrderKind::Reissue => BusinessCase::Reissue,
        OrderKind::Renew => BusinessCase::Renew,
    }
}
