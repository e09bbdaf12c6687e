//! Certificate orders: create, reissue, renew, revoke and delete, the ledger of what each cost,
//! and the inquiries (info, search) with the certificate as the API shows it.

use serde_json::json;

use serde_json::Value;

use super::prepare::dns_line;
use super::query::{CERTIFICATE_KEYS, filter_page};
use super::{ApiError, Cert, Env, JobRec, LedgerEntry, Reply, Result, State, scale};
use crate::config::product;
use crate::faults::CaList;
use crate::time::{format as ts, now};
use crate::wire::{
    BasicUser, CaCertificate, CertAuthenticationIn, CertAuthenticationOut, CertificateHistory, CertificateIn,
    CertificateOut, Query, SslContactIn, SubjectAlternativeName, TimePeriod,
};

impl State {
    fn ledger(&mut self, kind: &str, charged: bool, cert_id: i64, job_id: i64, ctid: &Option<String>) {
        let c = &self.certs[&cert_id];
        self.ledger.push(LedgerEntry {
            kind: kind.into(),
            charged,
            certificate_id: cert_id,
            job_id,
            name: c.name.clone(),
            product: c.product.name.into(),
            ctid: ctid.clone(),
            user: c.owner.user.clone(),
            time: ts(now()),
            serial: None,
        });
    }

    /// `POST /certificate`. An error names the certificate (by its name) in `object`.
    pub fn create(
        &mut self,
        owner: &BasicUser,
        body: CertificateIn,
        ctid: Option<String>,
        provisioning_key: bool,
        env: Env<'_>,
    ) -> Result<Reply> {
        let name = body.name.clone().unwrap_or_default();
        self.create_order(owner, body, ctid, provisioning_key, env)
            .map_err(|e| e.about("Certificate", name))
    }

    fn create_order(
        &mut self,
        owner: &BasicUser,
        body: CertificateIn,
        ctid: Option<String>,
        provisioning_key: bool,
        env: Env<'_>,
    ) -> Result<Reply> {
        const T: &str = "400101";
        let product_name = body
            .product
            .as_deref()
            .ok_or_else(|| ApiError::field(T, "product", "product is required"))?;
        let product = product(product_name)
            .ok_or_else(|| ApiError::field(T, "product", format!("unknown product '{product_name}'")))?;
        if let Some(ct) = body.certificate_type.as_deref() {
            if ct != product.certificate_type {
                return Err(ApiError::field(
                    T,
                    "certificateType",
                    format!(
                        "{} needs certificateType {}, not {ct}",
                        product.name, product.certificate_type
                    ),
                ));
            }
        } else if product.certificate_type == "MAIL" {
            return Err(ApiError::field(
                T,
                "certificateType",
                "certificateType MAIL is required for S/MIME products",
            ));
        }
        let months = Self::months(T, product, &body.lifetime)?;
        let pending = self.intake(T, owner, &body, product, months, provisioning_key)?;
        let id = self.next_cert;
        self.next_cert += 1;
        let t = now();
        let cert = Cert {
            id,
            owner: owner.clone(),
            name: pending.names[0].clone(),
            names: pending.names.clone(),
            product,
            months,
            software: body.software.clone(),
            csr: pending.csr.clone(),
            admin: self.contact_ok(owner, &body.admin_contact),
            tech: self.contact_ok(owner, &body.technical_contact),
            auth: pending.auth.clone(),
            issued: None,
            term_end: t + scale(env.durations.month, months),
            histories: Vec::new(),
            order_id: format!("{}", 2_700_000 + id),
            firstname: body.firstname.clone(),
            lastname: body.lastname.clone(),
            organization_unit_name: body.organization_unit_name.clone().filter(|_| pending.mail),
            password: body.password.clone().filter(|_| pending.mail),
            comment: body.comment.clone(),
            created: t,
            updated: t,
            busy_job: None,
        };
        let name = cert.name.clone();
        self.certs.insert(id, cert);
        let job = self.start_job(owner, id, "create", Some(pending), ctid.clone(), env);
        self.ledger("create", true, id, job, &ctid);
        Ok(Reply::notify("N400101", "Certificate order was started successfully.")
            .object("Certificate", name)
            .data([json!({"id": job})]))
    }

    fn owned_cert(&self, task: &str, owner: &BasicUser, id: i64) -> Result<&Cert> {
        self.certs
            .get(&id)
            .filter(|c| &c.owner == owner)
            .ok_or_else(|| ApiError::not_found(task, "certificate", "Certificate", id))
    }

    fn not_busy(&self, task: &str, cert: &Cert) -> Result<()> {
        if let Some(job) = cert.busy_job
            && self.jobs.get(&job).is_some_and(JobRec::active)
        {
            return Err(ApiError::refused(
                task,
                "EF4001020",
                format!("job {job} is still running for certificate {}", cert.id),
            ));
        }
        Ok(())
    }

    pub fn reissue(
        &mut self,
        owner: &BasicUser,
        id: i64,
        body: CertificateIn,
        ctid: Option<String>,
        provisioning_key: bool,
        env: Env<'_>,
    ) -> Result<Reply> {
        const T: &str = "400102";
        let cert = self.owned_cert(T, owner, id)?.clone();
        self.not_busy(T, &cert)?;
        if now() >= cert.term_end {
            return Err(ApiError::refused(
                T,
                "EF4001022",
                format!(
                    "the order term of certificate {id} ended on {}; renew it first",
                    ts(cert.term_end)
                ),
            ));
        }
        if let Some(p) = body.product.as_deref()
            && p != cert.product.name
        {
            return Err(ApiError::field(
                T,
                "product",
                "the product cannot be changed by a reissue",
            ));
        }
        let mut body = body;
        body.name.get_or_insert_with(|| cert.name.clone());
        if body.name.as_deref().map(str::to_ascii_lowercase).as_deref() != Some(cert.name.as_str()) {
            return Err(ApiError::field(
                T,
                "name",
                format!(
                    "the name of certificate {id} is {}; a reissue cannot change it",
                    cert.name
                ),
            ));
        }
        cert.fill_contacts(&mut body);
        if let Some(m) = body.authentication.as_ref().and_then(|a| a.method.as_deref())
            && m != cert.auth.method
        {
            return Err(ApiError::field(
                T,
                "authentication.method",
                format!(
                    "the authentication method cannot be changed by a reissue (it is {})",
                    cert.auth.method
                ),
            ));
        }
        cert.fill_mail_fields(&mut body);
        let pending = self.intake(T, owner, &body, cert.product, cert.months, provisioning_key)?;
        let c = self.certs.get_mut(&id).expect("checked above");
        c.reissue_status_touch();
        let job = self.start_job(owner, id, "reissue", Some(pending), ctid.clone(), env);
        self.ledger("reissue", false, id, job, &ctid);
        Ok(
            Reply::notify("N400102", "Certificate reissue was started successfully.")
                .object("Certificate", cert.name)
                .data([json!({"id": job})]),
        )
    }

    pub fn renew(
        &mut self,
        owner: &BasicUser,
        id: i64,
        body: CertificateIn,
        ctid: Option<String>,
        provisioning_key: bool,
        env: Env<'_>,
    ) -> Result<Reply> {
        const T: &str = "400106";
        let cert = self.owned_cert(T, owner, id)?.clone();
        self.not_busy(T, &cert)?;
        let window = scale(env.durations.month, 3);
        if now() + window < cert.term_end {
            return Err(ApiError::refused(
                T,
                "EF4001012",
                format!(
                    "certificate {id} can be renewed only within 3 months of its term end {}",
                    ts(cert.term_end)
                ),
            ));
        }
        let months = match body.lifetime {
            Some(_) => Self::months(T, cert.product, &body.lifetime)?,
            None => cert.months,
        };
        let mut body = body;
        body.name.get_or_insert_with(|| cert.name.clone());
        body.csr.get_or_insert_with(|| cert.csr.clone());
        if body.csr.as_deref() == Some("") {
            body.csr = None;
        }
        cert.fill_contacts(&mut body);
        if body.authentication.is_none() {
            body.authentication = Some(CertAuthenticationIn {
                method: Some(cert.auth.method.clone()),
                provisioning: Some(cert.auth.provisioning),
                ..Default::default()
            });
        }
        cert.fill_mail_fields(&mut body);
        let pending = self.intake(T, owner, &body, cert.product, months, provisioning_key)?;
        let job = self.start_job(owner, id, "renew", Some(pending), ctid.clone(), env);
        self.ledger("renew", true, id, job, &ctid);
        Ok(
            Reply::notify("N400106", "Certificate renewal was started successfully.")
                .object("Certificate", cert.name)
                .data([json!({"id": job})]),
        )
    }

    pub fn revoke(
        &mut self,
        owner: &BasicUser,
        id: i64,
        body: CertificateIn,
        ctid: Option<String>,
        env: Env<'_>,
    ) -> Result<Reply> {
        const T: &str = "4001031";
        let cert = self.owned_cert(T, owner, id)?.clone();
        let serial = body
            .serial_number
            .clone()
            .ok_or_else(|| ApiError::field(T, "serialNumber", "serialNumber is required"))?;
        let current = cert.issued.as_ref().map(|i| i.serial.clone());
        let c = self.certs.get_mut(&id).expect("checked above");
        let t = ts(now());
        if let Some(h) = c
            .histories
            .iter_mut()
            .find(|h| h.serial_number.eq_ignore_ascii_case(&serial))
        {
            h.revoked = Some(t);
        } else if current.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(&serial)) {
            c.histories.push(CertificateHistory {
                serial_number: serial.clone(),
                order_id: c.order_id.clone(),
                revoked: Some(t),
            });
        } else {
            return Err(ApiError::field(
                T,
                "serialNumber",
                format!("certificate {id} has no serial {serial}"),
            ));
        }
        let job = self.start_job(owner, id, "revoke", None, ctid.clone(), env);
        self.finish_job(job, None, None);
        self.ledger("revoke", false, id, job, &ctid);
        if let Some(entry) = self.ledger.last_mut() {
            entry.serial = Some(serial.clone());
        }
        Ok(
            Reply::notify("N4001031", "Certificate revocation was started successfully.")
                .object("Certificate", cert.name)
                .data([json!({"id": job})]),
        )
    }

    pub fn delete(&mut self, owner: &BasicUser, id: i64, ctid: Option<String>, env: Env<'_>) -> Result<Reply> {
        const T: &str = "400103";
        let cert = self.owned_cert(T, owner, id)?.clone();
        self.not_busy(T, &cert)?;
        let job = self.start_job(owner, id, "delete", None, ctid, env);
        self.finish_job(job, None, None);
        self.certs.remove(&id);
        Ok(
            Reply::notify("N400103", "Certificate deletion was started successfully.")
                .object("Certificate", cert.name)
                .data([json!({"id": job})]),
        )
    }

    pub fn info(&self, owner: &BasicUser, id: i64) -> Result<Reply> {
        let c = self.owned_cert("400104", owner, id)?;
        let mut r = Reply::success("S400104", "Certificate data were inquired successfully.")
            .object("Certificate", &c.name)
            .data([self.cert_view(c)]);
        if let Some(o) = r.object.as_mut() {
            let software = c.software.as_deref().unwrap_or("NOT_SET");
            o.data = Some(serde_json::json!({"id": c.id, "name": c.name, "software": software}));
        }
        Ok(r)
    }

    pub fn search(&self, owner: &BasicUser, q: &Query) -> Result<Reply> {
        let all: Vec<&Cert> = self.certs.values().filter(|c| &c.owner == owner).collect();
        let (total, found) = filter_page(all, q, CERTIFICATE_KEYS, |c, key| match key {
            "id" => Some(c.id.to_string()),
            "name" | "domain" => Some(c.name.clone()),
            "product" => Some(c.product.name.into()),
            "orderId" => Some(c.order_id.clone()),
            "created" => Some(ts(self.created(c.created))),
            "updated" => Some(ts(c.updated)),
            "expire" => c.issued.as_ref().map(|i| ts(i.not_after)),
            "comment" => c.comment.clone(),
            "type" => Some(c.product.certificate_type.into()),
            "admin" => c.admin.map(|id| id.to_string()),
            "technical" => c.tech.map(|id| id.to_string()),
            "authentication" => Some(c.auth.method.clone()),
            _ => None,
        })?;
        let brief = self.faults.search_brief;
        Ok(Reply::success("S400105", "Certificate list was inquired successfully.")
            .data(found.into_iter().map(|c| {
                if brief {
                    serde_json::json!({ "id": c.id, "name": c.name })
                } else {
                    serde_json::to_value(self.cert_view(c)).unwrap_or_default()
                }
            }))
            .summary("Certificate", total))
    }

    /// A contact as a certificate shows it: the `SslContact` without owner and times.
    fn contact_embedded(&self, id: i64) -> Value {
        match self.contacts.get(&id).map(serde_json::to_value) {
            Some(Ok(Value::Object(mut m))) => {
                for k in ["owner", "created", "updated"] {
                    m.remove(k);
                }
                Value::Object(m)
            }
            _ => serde_json::json!({ "id": id }),
        }
    }

    /// The certificate as info, search and poll messages answer it, shaped by the knobs
    /// `ca_list`, `payable`, `dcv_form` and `created_precision`.
    pub(super) fn cert_view(&self, c: &Cert) -> CertificateOut {
        let expire = c.issued.as_ref().map(|i| i.not_after);
        let f = &self.faults;
        let chain = c
            .issued
            .as_ref()
            .map(|i| {
                i.chain
                    .iter()
                    .filter(|(kind, _)| match f.ca_list {
                        CaList::Both => true,
                        CaList::One => kind == "INTERMEDIATE",
                        CaList::Empty => false,
                    })
                    .map(|(kind, pem)| CaCertificate {
                        ca_type: kind.clone(),
                        ca_certificate: pem.clone(),
                        created: ts(c.updated),
                        updated: ts(c.updated),
                    })
                    .collect()
            })
            .unwrap_or_default();
        CertificateOut {
            id: c.id,
            order_id: c.order_id.clone(),
            partner_order_id: format!("IX-CC-{}", c.id),
            name: c.name.clone(),
            product: c.product.name.into(),
            certificate_type: c.product.certificate_type.into(),
            lifetime: TimePeriod {
                unit: Some("MONTH".into()),
                period: Some(c.months),
            },
            // An order that named none shows NOT_SET (the S/MIME help page's info answer).
            software: Some(c.software.clone().unwrap_or_else(|| "NOT_SET".into())),
            csr: c.csr.clone(),
            server: c.issued.as_ref().map(|i| i.leaf_pem.clone()),
            serial_number: c
                .issued
                .as_ref()
                .map(|i| i.serial.clone())
                .unwrap_or_else(|| "NOT_SET".into()),
            signature_hash_algorithm: "SHA2".into(),
            certification_authority: chain,
            subject_alternative_names: c
                .names
                .iter()
                .skip(1)
                .map(|n| SubjectAlternativeName {
                    name: Some(n.clone()),
                    kind: Some("FQDN".into()),
                })
                .collect(),
            expire: expire.map(ts),
            payable: f.payable.then(|| ts(c.term_end)),
            multiyear: f.payable.then_some(c.months > 12),
            reissue_required: f
                .payable
                .then_some(expire.is_some_and(|e| e + time::Duration::seconds(1) < c.term_end)),
            reissue_status: None,
            admin_contact: c.admin.map(|id| self.contact_embedded(id)),
            technical_contact: c.tech.map(|id| self.contact_embedded(id)),
            authentication: CertAuthenticationOut {
                name: f.dcv_form.named().then(|| c.name.clone()),
                method: c.auth.method.clone(),
                dns: (c.auth.method == "DNS").then(|| dns_line(&c.auth.record(&c.name), &c.auth.token, f.dcv_form)),
                provisioning: Some(c.auth.provisioning),
                ..Default::default()
            },
            histories: c.histories.clone(),
            firstname: c.firstname.clone(),
            lastname: c.lastname.clone(),
            // The S/MIME help page's info answer shows these (the download password too).
            organization_unit_name: c.organization_unit_name.clone(),
            password: c.password.clone(),
            comment: c.comment.clone(),
            certificate_transparency_privacy: "PUBLIC".into(),
            domain: c.name.clone(),
            has_csr: !c.csr.is_empty(),
            owner: c.owner.clone(),
            updater: c.owner.clone(),
            created: ts(self.created(c.created)),
            updated: ts(c.updated),
        }
    }
}

impl Cert {
    fn reissue_status_touch(&mut self) {
        self.updated = now();
    }

    /// A reissue or renew body may leave out the contacts: the order's stay.
    fn fill_contacts(&self, body: &mut CertificateIn) {
        let contact = |id: i64| SslContactIn {
            id: Some(id),
            ..Default::default()
        };
        if body.admin_contact.is_none() {
            body.admin_contact = self.admin.map(contact);
        }
        if body.technical_contact.is_none() {
            body.technical_contact = self.tech.map(contact);
        }
    }

    /// A reissue or renew of an S/MIME order keeps its personal fields.
    fn fill_mail_fields(&self, body: &mut CertificateIn) {
        if self.product.certificate_type == "MAIL" {
            body.password.get_or_insert_with(|| "unchanged".into());
            body.firstname = body.firstname.take().or(self.firstname.clone());
            body.lastname = body.lastname.take().or(self.lastname.clone());
        }
    }
}
