//! The first steps of an order, free to redo: a new key and its CSR (`planned`), prepareOrder and
//! the validation records it names, read and checked before any hook sees them (`keyed`).

use crate::api;
use crate::api::wire::BusinessCase;
use anyhow::{Context as _, anyhow, bail};
use sha2::{Digest, Sha256};

use super::{Agent, hex};
use crate::config::{CertConfig, Validation};
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

    /// `keyed`: asks prepareOrder for the validation records and reads them. A CSR refused on
    /// one line is tried once more in the SDKs' form (prepareOrder is free), and the form that
    /// worked is kept for the order and the certificate's later orders.
    pub(super) async fn prepare(&self, cert: &CertConfig, st: &mut CertState) -> anyhow::Result<()> {
        let j = Self::journal(st)?.clone();
        let mut csr = j.csr.clone().ok_or_else(|| anyhow!("the journal lost the CSR"))?;
        if st.csr_crlf {
            csr = sdk_form(&csr).unwrap_or(csr);
        }
        let id = st.certificate_id.filter(|_| j.kind != OrderKind::Create);
        let prepared = match self.client.prepare_order(&csr, cert.product, case(j.kind), id).await {
            Err(e @ api::Error::Refused { .. }) if !st.csr_crlf && sdk_form(&csr).is_some() => {
                let other = sdk_form(&csr).unwrap_or_default();
                tracing::warn!(cert = %cert.name, error = %e, "prepareOrder refused the CSR on one line; trying the form InterNetX's SDKs send");
                match self.client.prepare_order(&other, cert.product, case(j.kind), id).await {
                    Ok(p) => {
                        tracing::info!(cert = %cert.name, "prepareOrder took the CSR in the SDKs' form; this certificate's orders use it from now on");
                        st.csr_crlf = true;
                        csr = other;
                        p
                    }
                    Err(again) => {
                        return Err(anyhow!(e).context(format!("prepareOrder (in the SDKs' CSR form too: {again})")));
                    }
                }
            }
            r => r.context("prepareOrder")?,
        };
        Self::journal(st)?.csr = Some(csr);
        let names = cert.all_names();
        match &cert.validation {
            Validation::Dns => {}
            // Checked before anything is written or paid: the file's name becomes a path.
            Validation::File(_) => {
                let files = crate::webroot::read_entries(&prepared.files, &names)
                    .map_err(|e| anyhow!("FILE validation of {}: {e}", cert.name))?;
                Self::journal(st)?.files = files;
                return self.advance(cert, st, Step::Prepared);
            }
            // The approver must be one the CA offers, or nothing is ordered.
            Validation::Email { approver } => {
                if !prepared.approvers.iter().any(|a| a.eq_ignore_ascii_case(approver)) {
                    let offered: Vec<String> = prepared.approvers.iter().map(|a| crate::text::printable(a)).collect();
                    bail!(
                        "approver_email {approver} is not offered for {} {} (prepareOrder offers: {}); nothing was ordered",
                        cert.product,
                        cert.name,
                        if offered.is_empty() {
                            "none".to_string()
                        } else {
                            offered.join(", ")
                        }
                    );
                }
                Self::journal(st)?.approver = Some(approver.clone());
                return self.advance(cert, st, Step::Prepared);
            }
        }
        // Checked before any hook runs or anything is paid: the line comes from the network and
        // its parts reach the DNS hook.
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

/// The CSR as InterNetX's PHP and JS SDKs send it: the BEGIN line, the base64 body unwrapped,
/// the END line, joined with CRLF; from certkeeper's one-line form.
fn sdk_form(one_line: &str) -> Option<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE REQUEST-----";
    const END: &str = "-----END CERTIFICATE REQUEST-----";
    let body = one_line.strip_prefix(BEGIN)?.strip_suffix(END)?;
    (!body.is_empty() && !body.contains(['\r', '\n'])).then(|| format!("{BEGIN}\r\n{body}\r\n{END}"))
}

/// prepareOrder's name for what an order does.
fn case(kind: OrderKind) -> BusinessCase {
    match kind {
        OrderKind::Create => BusinessCase::Create,
        OrderKind::Reissue => BusinessCase::Reissue,
        OrderKind::Renew => BusinessCase::Renew,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_form_of_a_csr_is_begin_body_end_joined_with_crlf() {
        let one = "-----BEGIN CERTIFICATE REQUEST-----MIIBAAAA-----END CERTIFICATE REQUEST-----";
        assert_eq!(
            sdk_form(one).unwrap(),
            "-----BEGIN CERTIFICATE REQUEST-----\r\nMIIBAAAA\r\n-----END CERTIFICATE REQUEST-----"
        );
        assert_eq!(sdk_form(&sdk_form(one).unwrap()), None, "not applied twice");
        assert_eq!(sdk_form("MIIBAAAA"), None);
    }
}
