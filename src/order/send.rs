//! The request that may cost money, sent once: the spend guard, a fresh ctid journaled with the
//! request before it leaves (`dns_verified` → `sending`), the answer (`accepted`); an answer
//! that was lost goes to `reconcile`. Also the body of the request and the contacts it names.

use std::collections::BTreeMap;

use anyhow::{Context as _, anyhow};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{ANSWERED, Agent, Ending, Outcome, hex, pause_for_tests, plan, random_hex};
use crate::api;
use crate::api::wire::{OrderAuthentication, OrderFor, OrderRequest};
use crate::config::{CertConfig, ContactSpec, DnsMode, Validation};
use crate::store::{BootTime, CertState, OrderKind, PaidRequest, PaidStatus, Step};

impl Agent {
    /// `dns_verified`: sends the create, reissue or renew request once, journaled first.
    /// `Ok(Some(outcome))` when the answer was lost and could not be settled in this run.
    pub(super) async fn send(&self, cert: &CertConfig, st: &mut CertState) -> anyhow::Result<Option<Outcome>> {
        let j = Self::journal(st)?.clone();
        if let Some(spent) = plan::spend_guard(st, j.kind, cert.max_paid_orders) {
            self.end(cert, st, Ending::SpendGuard).await?;
            return Err(super::NeedsConsent::spend_guard(cert, j.kind, spent).into());
        }
        // The body (which may create a contact, and fail) and the rate limit's slot come
        // before anything of the request is recorded, so that the request leaves as soon as
        // `sending` is on disk: a run killed while it waited has sent nothing, and resumes with
        // nothing to look for; a body that fails leaves no paid request on record.
        let body = self.order_body(cert, st).await?;
        let turn = self.client.turn().await;
        let ctid = format!("certkeeper-{}", random_hex(12));
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if j.kind.is_paid() {
            st.paid.push(PaidRequest {
                kind: j.kind,
                ctid: ctid.clone(),
                sent_at: now,
                term: plan::term_of(j.kind, st),
                status: PaidStatus::Sent,
                job_id: None,
            });
        }
        let known = st.certificate_id;
        let jm = Self::journal(st)?;
        jm.ctid = Some(ctid.clone());
        jm.sent_at = Some(now);
        jm.sent_boot = BootTime::now();
        jm.known_certificates = known.into_iter().collect();
        jm.clean_searches = 0;
        jm.answer_unreadable = false;
        self.advance(cert, st, Step::Sending)?;
        // In a fleet, the paid request leaves only while this member still leads; if not, the
        // journal says `sending`, and the next leader settles it as a request that may have left.
        #[cfg(feature = "cluster")]
        if self.store.shared {
            crate::cluster::leading().map_err(|e| anyhow::anyhow!("{}: {e}", cert.name))?;
        }

        let id = st.certificate_id;
        let result = match (j.kind, id) {
            (OrderKind::Create, _) => self.client.create(&body, &ctid, turn).await,
            (OrderKind::Reissue, Some(id)) => self.client.reissue(id, &body, &ctid, turn).await,
            (OrderKind::Renew, Some(id)) => self.client.renew(id, &body, &ctid, turn).await,
            (_, None) => Err(api::Error::Refused {
                http: 0,
                code: "local".into(),
                text: "no certificate id to reissue or renew".into(),
                messages: vec![],
            }),
        };
        pause_for_tests(ANSWERED, &cert.name);
        match result {
            Ok(job_id) => self.accept(cert, st, job_id).map(|()| None),
            Err(e) if e.outcome_unknown() => {
                tracing::warn!(cert = %cert.name, %ctid, error = %e, "the answer to the order was lost; reconciling before anything else");
                // An answer came, but nothing in it can be read: the request arrived.
                if matches!(e, api::Error::Garbled { http: 200..=299, .. }) {
                    Self::journal(st)?.answer_unreadable = true;
                }
                self.reconcile(cert, st).await
            }
            Err(e) => {
                if let Some(p) = st.paid.iter_mut().find(|p| p.ctid == ctid) {
                    p.status = PaidStatus::NotMade;
                }
                self.end(cert, st, Ending::RequestRefused).await?;
                Err(anyhow!(e).context(format!("ordering {}", cert.name)))
            }
        }
    }

    /// `sending` → `accepted`: the API holds a job of ours.
    fn accept(&self, cert: &CertConfig, st: &mut CertState, job_id: i64) -> anyhow::Result<()> {
        let ctid = Self::journal(st)?.ctid.clone();
        if let Some(p) = st.paid.iter_mut().find(|p| Some(&p.ctid) == ctid.as_ref()) {
            p.status = PaidStatus::Accepted;
            p.job_id = Some(job_id);
        }
        Self::journal(st)?.job_id = Some(job_id);
        st.remember_job(job_id);
        tracing::info!(cert = %st.name, job_id, "order accepted");
        self.advance(cert, st, Step::Accepted)
    }

    async fn order_body(&self, cert: &CertConfig, st: &CertState) -> anyhow::Result<OrderRequest> {
        let j = st.order.as_ref().ok_or_else(|| anyhow!("no order in flight"))?;
        let dns_line = j
            .records
            .iter()
            .find(|r| r.name.trim_end_matches('.') == cert.name)
            .or(j.records.first())
            .map(|r| r.zone_line.clone());
        let id = if j.kind == OrderKind::Create {
            None
        } else {
            st.certificate_id
        };
        let what = OrderFor {
            name: cert.name.clone(),
            product: cert.product.to_string(),
            months: cert.lifetime_months,
            software: cert.software.to_string(),
            csr: j.csr.clone().unwrap_or_default(),
            admin_contact: self.contact_id(&cert.admin_contact).await?,
            technical_contact: self.contact_id(&cert.technical_contact).await?,
        };
        let authentication = match &cert.validation {
            Validation::Dns => OrderAuthentication::dns(dns_line, cert.dns == DnsMode::Autodns),
            Validation::File(_) => {
                let f = j
                    .files
                    .iter()
                    .find(|f| f.name == cert.name)
                    .or(j.files.first())
                    .ok_or_else(|| anyhow!("the journal lost the validation file"))?;
                OrderAuthentication::file(f.file_name(), f.content.clone())
            }
            Validation::Email { approver } => OrderAuthentication::email(approver.clone()),
        };
        let mut body = OrderRequest::new(id, what, authentication);
        // S/MIME, as the help page's order: MAIL, our own CSR, the person, the download password.
        if let Some(smime) = &cert.smime {
            body.certificate_type = Some("MAIL");
            body.has_csr = Some(true);
            body.firstname = Some(smime.first_name.clone());
            body.lastname = Some(smime.last_name.clone());
            body.organization_unit_name = smime.organization_unit.clone();
            body.password = Some(smime.password.expose().to_string());
        }
        Ok(body)
    }

    /// A contact's id: given, or created once from details and remembered in the state directory.
    async fn contact_id(&self, spec: &ContactSpec) -> anyhow::Result<i64> {
        let details = match spec {
            ContactSpec::Id(id) => return Ok(*id),
            ContactSpec::Details(d) => d,
        };
        let _guard = self.contacts.lock().await;
        let path = self.store.contacts_path();
        let mut known: BTreeMap<String, i64> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let (key, old_key) = contact_keys(details)?;
        if let Some(id) = known.get(&key) {
            return Ok(*id);
        }
        // A contact remembered under the old key (a hash of the configuration's own spelling of
        // the details) is found again, and remembered under its identity from now on.
        if let Some(id) = known.get(&old_key).copied() {
            known.insert(key, id);
            self.store.write_contacts(&serde_json::to_vec_pretty(&known)?)?;
            return Ok(id);
        }
        let id = self
            .client
            .create_contact(details)
            .await
            .context("creating an SSL contact")?;
        known.insert(key, id);
        self.store.write_contacts(&serde_json::to_vec_pretty(&known)?)?;
        tracing::info!(contact = id, "created an SSL contact from the configured details");
        Ok(id)
    }
}

/// The contact's key in contacts.json (a hash of its identity), and the key older versions used
/// (a hash of the details as serialized, which changed with any renamed field).
fn contact_keys(details: &crate::config::ContactDetails) -> anyhow::Result<(String, String)> {
    Ok((
        hex(&Sha256::digest(details.identity().as_bytes())),
        hex(&Sha256::digest(serde_json::to_vec(details)?)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jo() -> crate::config::ContactDetails {
        serde_json::from_str(r#"{"fname":"Jo","lname":"Doe","email":"Jo@Example.com","phone":"+49-941-1"}"#).unwrap()
    }

    /// contacts.json was keyed by a hash of the configuration struct as serialized, so renaming
    /// a field made certkeeper create a second contact. The key is now the contact's identity;
    /// the old key is still read.
    #[test]
    fn a_contact_is_keyed_by_what_identifies_it_and_old_keys_are_still_found() {
        let (key, old) = contact_keys(&jo()).unwrap();
        assert_ne!(key, old);
        assert_eq!(key, hex(&Sha256::digest(jo().identity().as_bytes())));
        // The old key is what certkeeper wrote before: the serialized details' hash.
        assert_eq!(old, hex(&Sha256::digest(serde_json::to_vec(&jo()).unwrap())));
        let mut other = jo();
        other.email = "jo@example.COM".into();
        assert_eq!(
            contact_keys(&other).unwrap().0,
            key,
            "e-mail addresses compare without case"
        );
        other.organization = Some("Example GmbH".into());
        assert_ne!(
            contact_keys(&other).unwrap().0,
            key,
            "another organization is another contact"
        );
        assert!(
            !jo().identity().contains("fname"),
            "the identity does not depend on field names"
        );
    }
}
