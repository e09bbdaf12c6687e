//! The simulated SSL Manager's memory: contacts, certificates (orders), jobs, the poll queue,
//! the ledger of paid requests and the request log, with the rules the API enforces.
//!
//! Every operation takes the caller's account and returns a [`Reply`] or an [`ApiError`]; the
//! HTTP layer (`api`) turns both into the envelope. Nothing here does I/O except through the
//! DNS zone store (provisioning) and the CA (issuing), both in memory.

use std::collections::BTreeMap;
use std::time::Instant;

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::ca::{Issued, TestCa};
use crate::config::{Durations, Product, product};
use crate::csr::{self, CsrInfo};
use crate::dns::{Value as DnsValue, ZoneStore};
use crate::faults::{FaultDice, Faults, JobOutcome};
use crate::time::{format as ts, now};
use crate::wire::*;

/// A successful answer, before it is wrapped into the envelope.
#[derive(Debug)]
pub struct Reply {
    pub code: String,
    pub text: String,
    pub kind: StatusType,
    pub object: Option<ResponseObject>,
    pub data: Option<Vec<Value>>,
}

impl Reply {
    fn success(code: &str, text: &str) -> Self {
        Self {
            code: code.into(),
            text: text.into(),
            kind: StatusType::Success,
            object: None,
            data: None,
        }
    }

    fn notify(code: &str, text: &str) -> Self {
        Self {
            kind: StatusType::Notify,
            ..Self::success(code, text)
        }
    }

    fn object(mut self, kind: &str, value: impl ToString) -> Self {
        self.object = Some(ResponseObject {
            kind: kind.into(),
            value: value.to_string(),
            ..Default::default()
        });
        self
    }

    fn data<T: Serialize>(mut self, items: impl IntoIterator<Item = T>) -> Self {
        self.data = Some(
            items
                .into_iter()
                .map(|i| serde_json::to_value(i).unwrap_or(Value::Null))
                .collect(),
        );
        self
    }
}

/// An error answer: HTTP status, `status {code, text}` and `messages[]`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub http: u16,
    pub code: String,
    pub text: String,
    pub messages: Vec<Message>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(http: u16, code: &str, text: impl Into<String>) -> Self {
        Self {
            http,
            code: code.into(),
            text: text.into(),
            messages: Vec::new(),
            retry_after: None,
        }
    }

    /// A 400 that names the offending field in `messages[].objects`.
    pub fn field(task: &str, field: &str, text: impl Into<String>) -> Self {
        let text = text.into();
        let mut e = Self::new(400, &format!("E{task}"), "The request is invalid.");
        e.messages.push(Message {
            code: format!("EF{task}"),
            text,
            status: StatusType::Error,
            objects: vec![GenericObject {
                kind: "field".into(),
                value: field.into(),
            }],
        });
        e
    }

    /// A 404 for an unknown id.
    pub fn not_found(task: &str, what: &str, id: impl ToString) -> Self {
        let id = id.to_string();
        let mut e = Self::new(404, &format!("E{task}"), format!("{what} {id} was not found."));
        e.messages.push(Message {
            code: format!("EF{task}404"),
            text: format!("{what} {id} does not exist or belongs to another account."),
            status: StatusType::Error,
            objects: vec![GenericObject {
                kind: what.into(),
                value: id,
            }],
        });
        e
    }

    /// A 400 about the state of an object rather than a field.
    pub fn refused(task: &str, code: &str, text: impl Into<String>) -> Self {
        let text = text.into();
        let mut e = Self::new(400, &format!("E{task}"), text.clone());
        e.messages.push(Message {
            code: code.into(),
            text,
            status: StatusType::Error,
            objects: vec![],
        });
        e
    }
}

type Result<T> = std::result::Result<T, ApiError>;

/// One line of the ledger: what would have been charged (create, renew) or done for free (reissue).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub kind: String,
    pub charged: bool,
    pub certificate_id: i64,
    pub job_id: i64,
    pub name: String,
    pub product: String,
    pub ctid: Option<String>,
    pub user: String,
    pub time: String,
}

/// One line of the request log. It never holds a password.
#[derive(Clone, Debug, Serialize)]
pub struct RequestEntry {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub body: Option<Value>,
    pub ctid: Option<String>,
    pub user: Option<String>,
    pub status: u16,
    /// The fault injected into this request, if any.
    pub fault: Option<String>,
    pub time: String,
    /// Already in the log (a hanging request logs itself before it hangs).
    #[serde(skip)]
    pub logged: bool,
}

#[derive(Clone, Debug)]
struct Auth {
    method: String,
    token: String,
    provisioning: bool,
}

#[derive(Clone, Debug)]
struct Cert {
    id: i64,
    owner: BasicUser,
    name: String,
    names: Vec<String>,
    product: &'static Product,
    months: i64,
    software: Option<String>,
    csr: String,
    admin: Option<i64>,
    tech: Option<i64>,
    auth: Auth,
    issued: Option<Issued>,
    term_end: OffsetDateTime,
    histories: Vec<CertificateHistory>,
    order_id: String,
    firstname: Option<String>,
    lastname: Option<String>,
    comment: Option<String>,
    created: OffsetDateTime,
    updated: OffsetDateTime,
    busy_job: Option<i64>,
}

/// What a job will issue when it completes.
#[derive(Clone, Debug)]
struct Pending {
    names: Vec<String>,
    spki: Vec<u8>,
    csr: String,
    mail: bool,
    auth: Auth,
    months: i64,
}

#[derive(Clone, Debug)]
struct JobRec {
    id: i64,
    owner: BasicUser,
    cert_id: i64,
    action: &'static str,
    status: &'static str,
    sub_status: Option<&'static str>,
    product: String,
    name: String,
    ctid: Option<String>,
    created: OffsetDateTime,
    updated: OffsetDateTime,
    started: Instant,
    pending: Option<Pending>,
    outcome: JobOutcome,
    messages: Vec<Message>,
}

#[derive(Clone, Debug)]
struct PollRec {
    id: i64,
    owner: BasicUser,
    message: PollMessage,
}

#[derive(Debug)]
struct Prepared {
    names: Vec<String>,
}

/// What a job waiting for domain control needs checked.
#[derive(Clone, Debug)]
pub struct DcvCheck {
    pub job_id: i64,
    /// `(record name, expected TXT value)` pairs; all must be served.
    pub records: Vec<(String, String)>,
    pub timed_out: bool,
}

/// The whole simulated service.
#[derive(Debug)]
pub struct State {
    pub faults: Faults,
    pub dice: FaultDice,
    contacts: BTreeMap<i64, SslContactOut>,
    certs: BTreeMap<i64, Cert>,
    jobs: BTreeMap<i64, JobRec>,
    poll: Vec<PollRec>,
    pub ledger: Vec<LedgerEntry>,
    pub requests: Vec<RequestEntry>,
    /// Records provisioned for jobs that have ended, to be removed from the zones.
    pub stale_records: Vec<(String, String)>,
    prepared: BTreeMap<String, Prepared>,
    next_contact: i64,
    next_cert: i64,
    next_job: i64,
    next_poll: i64,
    next_stid: u64,
}

const SOFTWARE: &[&str] = &["IIS4", "IIS5", "APACHE2", "APACHESSL", "PLESK", "TOMCAT", "NOT_SET"];

impl State {
    pub fn new(faults: Faults, seed: u64) -> Self {
        Self {
            faults,
            dice: FaultDice::new(seed),
            contacts: BTreeMap::new(),
            certs: BTreeMap::new(),
            jobs: BTreeMap::new(),
            poll: Vec::new(),
            ledger: Vec::new(),
            requests: Vec::new(),
            stale_records: Vec::new(),
            prepared: BTreeMap::new(),
            next_contact: 100,
            next_cert: 1_000_000,
            // Job ids exceed i32, as the real ones do.
            next_job: 4_297_000_000,
            next_poll: 1_400_000,
            next_stid: 1,
        }
    }

    /// Forgets every object, ledger line and logged request; faults stay as they are.
    pub fn reset(&mut self) {
        let faults = std::mem::take(&mut self.faults);
        let seed_dice = std::mem::replace(&mut self.dice, FaultDice::new(0));
        *self = Self::new(faults, 0);
        self.dice = seed_dice;
    }

    /// A fresh server transaction id.
    pub fn stid(&mut self) -> String {
        self.next_stid += 1;
        format!("{}-sim-{}", now().date().to_string().replace('-', ""), self.next_stid)
    }

    fn token(&mut self) -> String {
        let stamp = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            now().year(),
            u8::from(now().month()),
            now().day(),
            now().hour(),
            now().minute(),
            now().second()
        );
        let tail: String = (0..50).map(|_| self.dice.rng().sample(Alphanumeric) as char).collect();
        format!("{stamp}{}", tail.to_ascii_lowercase())
    }

    // ----- contacts -------------------------------------------------------------------------

    pub fn contact_create(&mut self, owner: &BasicUser, c: SslContactIn) -> Result<Reply> {
        let required = [
            ("fname", &c.fname),
            ("lname", &c.lname),
            ("email", &c.email),
            ("phone", &c.phone),
        ];
        for (field, value) in required {
            if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                return Err(ApiError::field("400201", field, format!("{field} is required")));
            }
        }
        if let Some(country) = &c.country
            && (country.len() != 2 || !country.chars().all(|ch| ch.is_ascii_alphabetic()))
        {
            return Err(ApiError::field(
                "400201",
                "country",
                "country must be an ISO 3166 two-letter code",
            ));
        }
        let id = self.next_contact;
        self.next_contact += 1;
        let t = ts(now());
        let out = SslContactOut {
            id,
            fname: c.fname,
            lname: c.lname,
            title: c.title,
            organization: c.organization,
            address: c.address.map(StringOrList::into_vec).unwrap_or_default(),
            pcode: c.pcode,
            city: c.city,
            state: c.state,
            country: c.country,
            phone: c.phone,
            fax: c.fax,
            email: c.email,
            owner: owner.clone(),
            created: t.clone(),
            updated: t,
        };
        self.contacts.insert(id, out.clone());
        Ok(Reply::success("S400201", "Contact was created successfully.")
            .object("contact", id)
            .data([out]))
    }

    pub fn contact_info(&self, owner: &BasicUser, id: i64) -> Result<Reply> {
        let c = self
            .contacts
            .get(&id)
            .filter(|c| &c.owner == owner)
            .ok_or_else(|| ApiError::not_found("400204", "contact", id))?;
        Ok(Reply::success("S400204", "Contact data were inquired successfully.")
            .object("contact", id)
            .data([c]))
    }

    pub fn contact_search(&self, owner: &BasicUser, q: &Query) -> Result<Reply> {
        let all: Vec<&SslContactOut> = self.contacts.values().filter(|c| &c.owner == owner).collect();
        let found = filter_page(all, q, |c, key| match key {
            "id" => Some(c.id.to_string()),
            "fname" => c.fname.clone(),
            "lname" => c.lname.clone(),
            "email" => c.email.clone(),
            "organization" => c.organization.clone(),
            "city" => c.city.clone(),
            "country" => c.country.clone(),
            "created" => Some(c.created.clone()),
            _ => None,
        })?;
        let mut r = Reply::success("S400205", "Contact list was inquired successfully.").data(found.1);
        r.object = Some(ResponseObject {
            kind: "contact".into(),
            value: String::new(),
            summary: Some(found.0),
            data: None,
        });
        Ok(r)
    }

    fn contact_ok(&self, owner: &BasicUser, c: &Option<SslContactIn>) -> Option<i64> {
        let id = c.as_ref()?.id?;
        self.contacts.get(&id).filter(|c| &c.owner == owner).map(|c| c.id)
    }

    // ----- prepareOrder ---------------------------------------------------------------------

    pub fn prepare_order(&mut self, _owner: &BasicUser, body: CertificateDataIn) -> Result<Reply> {
        const T: &str = "400110";
        let product_name = body
            .product
            .as_deref()
            .ok_or_else(|| ApiError::field(T, "product", "product is required"))?;
        let product = product(product_name)
            .ok_or_else(|| ApiError::field(T, "product", format!("unknown product '{product_name}'")))?;
        let plain = body
            .plain
            .as_deref()
            .ok_or_else(|| ApiError::field(T, "plain", "plain (the CSR) is required"))?;
        if let Some(bc) = body.business_case.as_deref() {
            if !["CREATE", "RENEW", "REISSUE", "DELETE"].contains(&bc) {
                return Err(ApiError::field(
                    T,
                    "businessCase",
                    format!("unknown businessCase '{bc}'"),
                ));
            }
            if bc != "CREATE" {
                let id = body.certificate.as_ref().and_then(|c| c.id);
                if let Some(id) = id
                    && !self.certs.contains_key(&id)
                {
                    return Err(ApiError::not_found(T, "certificate", id));
                }
            }
        }
        let info = csr::parse(plain).map_err(|e| ApiError::field(T, "plain", e.to_string()))?;
        let names = check_names(T, product, &info.names())?;
        let token = self.token();
        self.prepared.insert(token.clone(), Prepared { names: names.clone() });
        let mut authentication = Vec::new();
        for method in product.methods {
            match *method {
                "DNS" => {
                    for n in &names {
                        authentication.push(CertAuthenticationOut {
                            name: Some(n.clone()),
                            method: "DNS".into(),
                            dns: Some(match &self.faults.dcv_line {
                                Some(t) => t.replace("{name}", n).replace("{token}", &token),
                                None => dns_line(n, &token),
                            }),
                            ..Default::default()
                        });
                    }
                }
                "FILE" => authentication.push(CertAuthenticationOut {
                    name: Some(names[0].clone()),
                    method: "FILE".into(),
                    file_name: Some(format!("http://{}/.well-known/pki-validation/fileauth.txt", names[0])),
                    file_content: Some(token.clone()),
                    ..Default::default()
                }),
                _ => {
                    let base = if product.certificate_type == "MAIL" {
                        vec![names[0].clone()]
                    } else {
                        let domain = base_domain(&names[0]);
                        ["admin", "administrator", "hostmaster", "webmaster", "postmaster"]
                            .iter()
                            .map(|l| format!("{l}@{domain}"))
                            .collect()
                    };
                    authentication.push(CertAuthenticationOut {
                        name: Some(names[0].clone()),
                        method: "EMAIL".into(),
                        approver_emails: base,
                        ..Default::default()
                    })
                }
            }
        }
        let out = CertificateDataOut {
            plain: info.pem.clone(),
            name: names[0].clone(),
            subject_alternative_names: names
                .iter()
                .skip(1)
                .map(|n| SubjectAlternativeName {
                    name: Some(n.clone()),
                    kind: Some("FQDN".into()),
                })
                .collect(),
            key_size: i32::try_from(info.key_size).ok(),
            country_code: info.country.clone(),
            state: info.state.clone(),
            city: info.city.clone(),
            organization: info.organization.clone(),
            organization_unit: info.organization_unit.clone(),
            email: info.email.clone(),
            product: product.name.into(),
            business_case: body.business_case.clone(),
            authentication,
            algorithm: curve(&info),
            ec_curve: curve(&info),
            signature_hash_algorithm: "SHA256".into(),
            valid_signature: true,
        };
        Ok(Reply::success("S400110", "CSR key was checked successfully.").data([out]))
    }

    // ----- create, reissue, renew -----------------------------------------------------------

    /// Checks an order body and works out what it will issue.
    fn intake(
        &mut self,
        task: &str,
        owner: &BasicUser,
        body: &CertificateIn,
        product: &'static Product,
        months: i64,
        provisioning_key: bool,
    ) -> Result<Pending> {
        let mail = product.certificate_type == "MAIL";
        let name = body.name.as_deref().map(str::to_ascii_lowercase);
        let (info, spki): (Option<CsrInfo>, Vec<u8>) = match body.csr.as_deref() {
            Some(text) => {
                let info = csr::parse(text).map_err(|e| ApiError::field(task, "csr", e.to_string()))?;
                let spki = info.spki_der.clone();
                (Some(info), spki)
            }
            None if mail && body.has_csr != Some(true) => {
                // PersonalSign without a CSR: the CA makes the key; the user collects it with the password.
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| ApiError::new(500, &format!("E{task}"), e.to_string()))?;
                (None, rcgen::PublicKeyData::subject_public_key_info(&key))
            }
            None => return Err(ApiError::field(task, "csr", "csr is required")),
        };
        let names = match (&info, &name) {
            (Some(info), Some(name)) => {
                let csr_names = info.names();
                if !csr_names.iter().any(|n| n == name) && !mail {
                    return Err(ApiError::field(
                        task,
                        "name",
                        format!("name '{name}' is not in the CSR (it names {})", csr_names.join(", ")),
                    ));
                }
                let mut names = vec![name.clone()];
                names.extend(csr_names.into_iter().filter(|n| n != name));
                if mail { vec![name.clone()] } else { names }
            }
            (None, Some(name)) => vec![name.clone()],
            (_, None) => return Err(ApiError::field(task, "name", "name is required")),
        };
        let names = check_names(task, product, &names)?;
        let (csr_pem, auth) = if mail {
            for (field, v) in [
                ("password", &body.password),
                ("firstname", &body.firstname),
                ("lastname", &body.lastname),
            ] {
                if v.as_deref().is_none_or(|v| v.is_empty()) {
                    return Err(ApiError::field(
                        task,
                        field,
                        format!("{field} is required for S/MIME certificates"),
                    ));
                }
            }
            let token = self.token();
            (
                info.map(|i| i.pem).unwrap_or_default(),
                Auth {
                    method: "EMAIL".into(),
                    token,
                    provisioning: false,
                },
            )
        } else {
            let auth_in = body
                .authentication
                .clone()
                .ok_or_else(|| ApiError::field(task, "authentication", "authentication is required"))?;
            let method = auth_in.method.clone().unwrap_or_default();
            if !product.methods.contains(&method.as_str()) {
                return Err(ApiError::field(
                    task,
                    "authentication.method",
                    format!(
                        "method '{method}' is not offered for {} (use one of {})",
                        product.name,
                        product.methods.join(", ")
                    ),
                ));
            }
            let token = match auth_in.dns.as_deref() {
                Some(line) if method == "DNS" => {
                    let token = token_of(line).ok_or_else(|| {
                        ApiError::field(
                            task,
                            "authentication.dns",
                            "the dns value is not a zone-file line from prepareOrder",
                        )
                    })?;
                    let prepared = self.prepared.get(&token).ok_or_else(|| {
                        ApiError::field(
                            task,
                            "authentication.dns",
                            "the dns value was not issued by prepareOrder",
                        )
                    })?;
                    if !names.iter().all(|n| prepared.names.contains(n)) {
                        return Err(ApiError::field(
                            task,
                            "authentication.dns",
                            "the dns value was prepared for other names",
                        ));
                    }
                    token
                }
                _ => self.token(),
            };
            let provisioning = auth_in.provisioning.unwrap_or(false) || provisioning_key;
            (
                info.map(|i| i.pem).unwrap_or_default(),
                Auth {
                    method,
                    token,
                    provisioning,
                },
            )
        };
        if !mail && self.contact_ok(owner, &body.technical_contact).is_none() {
            return Err(ApiError::refused(
                task,
                "EF4001010",
                "technicalContact is missing or not a contact of this account",
            ));
        }
        if self.contact_ok(owner, &body.admin_contact).is_none() {
            return Err(ApiError::refused(
                task,
                "EF4001006",
                "adminContact is missing or not a contact of this account",
            ));
        }
        if let Some(sw) = body.software.as_deref()
            && !SOFTWARE.contains(&sw)
        {
            return Err(ApiError::field(
                task,
                "software",
                format!("unknown software '{sw}' (use one of {})", SOFTWARE.join(", ")),
            ));
        }
        Ok(Pending {
            names,
            spki,
            csr: csr_pem,
            mail,
            auth,
            months,
        })
    }

    fn months(task: &str, product: &Product, lifetime: &Option<TimePeriod>) -> Result<i64> {
        let lt = lifetime
            .as_ref()
            .ok_or_else(|| ApiError::field(task, "lifetime", "lifetime is required"))?;
        if lt.unit.as_deref().unwrap_or("MONTH") != "MONTH" {
            return Err(ApiError::field(task, "lifetime.unit", "lifetime.unit must be MONTH"));
        }
        let months = lt
            .period
            .ok_or_else(|| ApiError::field(task, "lifetime.period", "lifetime.period is required"))?;
        if !product.lifetimes.contains(&months) {
            let allowed: Vec<String> = product.lifetimes.iter().map(|m| m.to_string()).collect();
            return Err(ApiError::field(
                task,
                "lifetime.period",
                format!(
                    "{} is sold for {} months, not {months}",
                    product.name,
                    allowed.join(" or ")
                ),
            ));
        }
        Ok(months)
    }

    #[allow(clippy::too_many_arguments)]
    fn start_job(
        &mut self,
        owner: &BasicUser,
        cert_id: i64,
        action: &'static str,
        pending: Option<Pending>,
        ctid: Option<String>,
        zones: &ZoneStore,
        durations: &Durations,
    ) -> i64 {
        let id = self.next_job;
        self.next_job += 1;
        let cert = self
            .certs
            .get_mut(&cert_id)
            .expect("start_job is called with a known certificate");
        cert.busy_job = Some(id);
        let sub_status = match pending.as_ref().map(|p| p.auth.method.as_str()) {
            Some("DNS") => Some("WF_DNS_AUTH"),
            Some("EMAIL") => Some("WF_EMAIL_AUTH"),
            Some(_) => Some("WF_FILE_AUTH"),
            None => None,
        };
        if let Some(p) = &pending
            && p.auth.method == "DNS"
            && p.auth.provisioning
        {
            for n in &p.names {
                let _ = zones.add(n, DnsValue::Txt(p.auth.token.clone()), 300, durations.propagation_delay);
            }
        }
        let t = now();
        let job = JobRec {
            id,
            owner: owner.clone(),
            cert_id,
            action,
            status: "RUNNING",
            sub_status,
            product: cert.product.name.into(),
            name: cert.name.clone(),
            ctid,
            created: t,
            updated: t,
            started: Instant::now(),
            pending,
            outcome: self.faults.job_outcome,
            messages: Vec::new(),
        };
        self.jobs.insert(id, job);
        id
    }

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
        });
    }

    pub fn create(
        &mut self,
        owner: &BasicUser,
        body: CertificateIn,
        ctid: Option<String>,
        provisioning_key: bool,
        zones: &ZoneStore,
        d: &Durations,
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
            term_end: t + scale(d.month, months),
            histories: Vec::new(),
            order_id: format!("{}", 2_700_000 + id),
            firstname: body.firstname.clone(),
            lastname: body.lastname.clone(),
            comment: body.comment.clone(),
            created: t,
            updated: t,
            busy_job: None,
        };
        let name = cert.name.clone();
        self.certs.insert(id, cert);
        let job = self.start_job(owner, id, "create", Some(pending), ctid.clone(), zones, d);
        self.ledger("create", true, id, job, &ctid);
        Ok(Reply::notify("N400101", "Certificate order was started successfully.")
            .object("Certificate", name)
            .data([json!({"id": job})]))
    }

    fn owned_cert(&self, task: &str, owner: &BasicUser, id: i64) -> Result<&Cert> {
        self.certs
            .get(&id)
            .filter(|c| &c.owner == owner)
            .ok_or_else(|| ApiError::not_found(task, "certificate", id))
    }

    fn not_busy(&self, task: &str, cert: &Cert) -> Result<()> {
        if let Some(job) = cert.busy_job
            && self.jobs.get(&job).is_some_and(|j| j.status == "RUNNING")
        {
            return Err(ApiError::refused(
                task,
                "EF4001020",
                format!("job {job} is still running for certificate {}", cert.id),
            ));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn reissue(
        &mut self,
        owner: &BasicUser,
        id: i64,
        body: CertificateIn,
        ctid: Option<String>,
        provisioning_key: bool,
        zones: &ZoneStore,
        d: &Durations,
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
        let job = self.start_job(owner, id, "reissue", Some(pending), ctid.clone(), zones, d);
        self.ledger("reissue", false, id, job, &ctid);
        Ok(
            Reply::notify("N400102", "Certificate reissue was started successfully.")
                .object("Certificate", cert.name)
                .data([json!({"id": job})]),
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn renew(
        &mut self,
        owner: &BasicUser,
        id: i64,
        body: CertificateIn,
        ctid: Option<String>,
        provisioning_key: bool,
        zones: &ZoneStore,
        d: &Durations,
    ) -> Result<Reply> {
        const T: &str = "400106";
        let cert = self.owned_cert(T, owner, id)?.clone();
        self.not_busy(T, &cert)?;
        let window = scale(d.month, 3);
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
        let job = self.start_job(owner, id, "renew", Some(pending), ctid.clone(), zones, d);
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
        zones: &ZoneStore,
        d: &Durations,
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
        let job = self.start_job(owner, id, "revoke", None, ctid, zones, d);
        self.finish_job(job, None, None);
        Ok(
            Reply::notify("N4001031", "Certificate revocation was started successfully.")
                .object("Certificate", cert.name)
                .data([json!({"id": job})]),
        )
    }

    pub fn delete(
        &mut self,
        owner: &BasicUser,
        id: i64,
        ctid: Option<String>,
        zones: &ZoneStore,
        d: &Durations,
    ) -> Result<Reply> {
        const T: &str = "400103";
        let cert = self.owned_cert(T, owner, id)?.clone();
        self.not_busy(T, &cert)?;
        let job = self.start_job(owner, id, "delete", None, ctid, zones, d);
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
        Ok(
            Reply::success("S400104", "Certificate data were inquired successfully.")
                .object("Certificate", &c.name)
                .data([cert_view(c)]),
        )
    }

    pub fn search(&self, owner: &BasicUser, q: &Query) -> Result<Reply> {
        let all: Vec<&Cert> = self.certs.values().filter(|c| &c.owner == owner).collect();
        let (total, found) = filter_page(all, q, |c, key| match key {
            "id" => Some(c.id.to_string()),
            "name" | "domain" => Some(c.name.clone()),
            "product" => Some(c.product.name.into()),
            "orderId" => Some(c.order_id.clone()),
            "created" => Some(ts(c.created)),
            "updated" => Some(ts(c.updated)),
            "expire" => c.issued.as_ref().map(|i| ts(i.not_after)),
            "comment" => c.comment.clone(),
            "type" | "certificate_type" => Some(c.product.certificate_type.into()),
            _ => None,
        })?;
        let mut r = Reply::success("S400105", "Certificate list was inquired successfully.")
            .data(found.into_iter().map(cert_view));
        r.object = Some(ResponseObject {
            kind: "Certificate".into(),
            value: String::new(),
            summary: Some(total),
            data: None,
        });
        Ok(r)
    }

    // ----- jobs and poll --------------------------------------------------------------------

    pub fn job_info(&self, owner: &BasicUser, id: i64) -> Result<Reply> {
        let j = self
            .jobs
            .get(&id)
            .filter(|j| &j.owner == owner)
            .ok_or_else(|| ApiError::not_found("300114", "job", id))?;
        Ok(Reply::success("S300114", "Job data were inquired successfully.")
            .object("Job", id)
            .data([self.object_job(j)]))
    }

    pub fn job_search(&self, owner: &BasicUser, q: &Query) -> Result<Reply> {
        let all: Vec<&JobRec> = self.jobs.values().filter(|j| &j.owner == owner).collect();
        let (total, found) = filter_page(all, q, |j, key| match key {
            "id" => Some(j.id.to_string()),
            "status" => Some(j.status.into()),
            "subStatus" => j.sub_status.map(Into::into),
            "action" => Some(j.action.into()),
            "object" => Some(j.name.clone()),
            "type" => Some("Certificate".into()),
            "created" => Some(ts(j.created)),
            "updated" => Some(ts(j.updated)),
            "execution" => Some(ts(j.created)),
            "ctid" => j.ctid.clone(),
            _ => None,
        })?;
        let mut r = Reply::success("S300115", "Job list was inquired successfully.")
            .data(found.into_iter().map(|j| self.object_job(j)));
        r.object = Some(ResponseObject {
            kind: "Job".into(),
            value: String::new(),
            summary: Some(total),
            data: None,
        });
        Ok(r)
    }

    fn job_view(j: &JobRec) -> Job {
        Job {
            id: j.id,
            status: j.status.into(),
            sub_status: if j.status == "RUNNING" {
                j.sub_status.map(Into::into)
            } else {
                None
            },
            sub_type: j.product.clone(),
            action: j.action.into(),
            execution: ts(j.created),
            created: ts(j.created),
            updated: ts(j.updated),
            owner: j.owner.clone(),
            events: vec![WorkflowEvent {
                job_id: j.id,
                ctid: j.ctid.clone(),
                object: j.name.clone(),
                kind: "Certificate".into(),
                subtype: j.action.into(),
            }],
        }
    }

    fn object_job(&self, j: &JobRec) -> ObjectJob {
        ObjectJob {
            job: Self::job_view(j),
            object: ResponseObject {
                kind: "Certificate".into(),
                value: j.name.clone(),
                summary: None,
                data: Some(self.cert_summary(j.cert_id)),
            },
        }
    }

    fn cert_summary(&self, cert_id: i64) -> Value {
        match self.certs.get(&cert_id) {
            Some(c) => json!({
                "id": c.id,
                "orderId": c.order_id,
                "partnerOrderId": format!("IX-CC-{}", c.id),
                "name": c.name,
                "product": c.product.name,
                "serialNumber": c.issued.as_ref().map(|i| i.serial.clone()).unwrap_or_else(|| "NOT_SET".into()),
            }),
            None => json!({ "id": cert_id }),
        }
    }

    pub fn poll(&self, owner: &BasicUser) -> Reply {
        let mine: Vec<&PollRec> = self.poll.iter().filter(|p| &p.owner == owner).collect();
        let mut r = Reply::success("S0905", "The notification was polled successfully.");
        match mine.first() {
            Some(p) => {
                r.object = Some(ResponseObject {
                    kind: "message".into(),
                    value: p.id.to_string(),
                    summary: Some(mine.len() as i64),
                    data: None,
                });
                r.data([&p.message])
            }
            None => {
                r.object = Some(ResponseObject {
                    kind: "message".into(),
                    value: String::new(),
                    summary: Some(0),
                    data: None,
                });
                r
            }
        }
    }

    pub fn poll_confirm(&mut self, owner: &BasicUser, id: i64) -> Result<Reply> {
        let pos = self
            .poll
            .iter()
            .position(|p| p.id == id && &p.owner == owner)
            .ok_or_else(|| ApiError::not_found("0906", "message", id))?;
        self.poll.remove(pos);
        Ok(Reply::success("S0906", "The notification was confirmed successfully.").object("message", id))
    }

    fn enqueue(&mut self, message: PollMessage, owner: BasicUser) {
        self.poll.push(PollRec {
            id: message.id,
            owner,
            message,
        });
    }

    fn poll_message(&mut self, j: &JobRec) -> PollMessage {
        let id = self.next_poll;
        self.next_poll += 1;
        let stid = self.stid();
        PollMessage {
            id,
            owner: j.owner.clone(),
            job: Self::job_view(j),
            stid,
            ctid: j.ctid.clone(),
            messages: j.messages.clone(),
            created: ts(now()),
            object: ResponseObject {
                kind: "Certificate".into(),
                value: j.name.clone(),
                summary: None,
                data: Some(self.cert_summary(j.cert_id)),
            },
        }
    }

    /// Ends a job: issues on success (`issued` given or `None` for jobs that issue nothing) or
    /// records `failure`, and queues its poll message(s).
    pub fn finish_job(&mut self, job_id: i64, issued: Option<Issued>, failure: Option<String>) {
        let Some(mut j) = self.jobs.get(&job_id).cloned() else {
            return;
        };
        if j.status != "RUNNING" {
            return;
        }
        let t = now();
        j.updated = t;
        if let Some(p) = j
            .pending
            .as_ref()
            .filter(|p| p.auth.method == "DNS" && p.auth.provisioning)
        {
            self.stale_records
                .extend(p.names.iter().map(|n| (n.clone(), p.auth.token.clone())));
        }
        if let Some(reason) = failure {
            j.status = "FAILED";
            j.messages.push(Message {
                code: "EF400101".into(),
                text: reason,
                status: StatusType::Error,
                objects: vec![],
            });
        } else {
            j.status = "SUCCESS";
            if let (Some(issued), Some(p), Some(c)) = (issued, j.pending.as_ref(), self.certs.get_mut(&j.cert_id)) {
                if let Some(old) = c.issued.take() {
                    c.histories.push(CertificateHistory {
                        serial_number: old.serial,
                        order_id: c.order_id.clone(),
                        revoked: None,
                    });
                }
                c.issued = Some(issued);
                c.names = p.names.clone();
                c.csr = p.csr.clone();
                c.auth = p.auth.clone();
                c.updated = t;
                if j.action == "renew" {
                    c.months = p.months;
                }
            }
        }
        if let Some(c) = self.certs.get_mut(&j.cert_id)
            && c.busy_job == Some(job_id)
        {
            c.busy_job = None;
        }
        self.jobs.insert(job_id, j.clone());
        if self.faults.foreign_poll {
            let mut foreign = j.clone();
            foreign.id = j.id + 900_000_000;
            foreign.name = format!("foreign-{}.example.org", j.id);
            foreign.ctid = Some(format!("foreign-{}", j.id));
            foreign.cert_id = -1;
            let m = self.poll_message(&foreign);
            self.enqueue(m, j.owner.clone());
        }
        let m = self.poll_message(&j);
        self.enqueue(m.clone(), j.owner.clone());
        if self.faults.duplicate_poll {
            let mut dup = m;
            dup.id = self.next_poll;
            self.next_poll += 1;
            self.enqueue(dup, j.owner.clone());
        }
    }

    /// Marks a job stuck (it stays RUNNING until completed or failed by hand).
    pub fn stall_job(&mut self, job_id: i64) -> bool {
        match self.jobs.get_mut(&job_id) {
            Some(j) if j.status == "RUNNING" => {
                j.outcome = JobOutcome::Stuck;
                true
            }
            _ => false,
        }
    }

    pub fn job_exists(&self, job_id: i64) -> bool {
        self.jobs.contains_key(&job_id)
    }

    /// Jobs that are due a decision now: `(job, Some(check))` for DNS jobs still waiting,
    /// `(job, None)` for jobs ready to complete without a DNS check; failures are applied here.
    pub fn due_jobs(&mut self, d: &Durations) -> (Vec<DcvCheck>, Vec<i64>) {
        let mut checks = Vec::new();
        let mut ready = Vec::new();
        let mut fail = Vec::new();
        for j in self.jobs.values().filter(|j| j.status == "RUNNING") {
            let elapsed = j.started.elapsed();
            if elapsed < d.job_delay {
                continue;
            }
            match j.outcome {
                JobOutcome::Stuck => continue,
                JobOutcome::Fail => {
                    fail.push((j.id, "the certificate authority rejected the order".to_string()));
                    continue;
                }
                JobOutcome::Normal => {}
            }
            match &j.pending {
                Some(p) if p.auth.method == "DNS" => checks.push(DcvCheck {
                    job_id: j.id,
                    records: p
                        .names
                        .iter()
                        .map(|n| (format!("{n}."), p.auth.token.clone()))
                        .collect(),
                    timed_out: elapsed >= d.dcv_timeout,
                }),
                _ => ready.push(j.id),
            }
        }
        for (id, reason) in fail {
            self.finish_job(id, None, Some(reason));
        }
        (checks, ready)
    }

    /// Issues the certificate a job ordered and finishes the job.
    pub fn complete_job(&mut self, job_id: i64, ca: &TestCa, d: &Durations) {
        let Some(j) = self.jobs.get(&job_id).cloned() else {
            return;
        };
        if j.status != "RUNNING" {
            return;
        }
        let Some(p) = j.pending.clone() else {
            self.finish_job(job_id, None, None);
            return;
        };
        let Some(cert) = self.certs.get_mut(&j.cert_id) else {
            self.finish_job(job_id, None, Some("the certificate was deleted".into()));
            return;
        };
        let t = now();
        if j.action == "renew" {
            let base = if cert.term_end > t { cert.term_end } else { t };
            cert.term_end = base + scale(d.month, p.months);
        }
        let not_after = (t + time_dur(d.cert_validity)).min(cert.term_end);
        let mutation = self.faults.mutation;
        match ca.issue(&p.spki, &p.names, p.mail, not_after, mutation) {
            Ok(issued) => self.finish_job(job_id, Some(issued), None),
            Err(e) => self.finish_job(job_id, None, Some(format!("issuing failed: {e}"))),
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

fn cert_view(c: &Cert) -> CertificateOut {
    let expire = c.issued.as_ref().map(|i| i.not_after);
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
        software: c.software.clone(),
        csr: c.csr.clone(),
        server: c.issued.as_ref().map(|i| i.leaf_pem.clone()),
        serial_number: c
            .issued
            .as_ref()
            .map(|i| i.serial.clone())
            .unwrap_or_else(|| "NOT_SET".into()),
        certification_authority: c
            .issued
            .as_ref()
            .map(|i| {
                i.chain
                    .iter()
                    .map(|(kind, pem)| CaCertificate {
                        ca_type: kind.clone(),
                        ca_certificate: pem.clone(),
                        created: ts(c.updated),
                        updated: ts(c.updated),
                    })
                    .collect()
            })
            .unwrap_or_default(),
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
        payable: ts(c.term_end),
        multiyear: c.months > 12,
        reissue_required: expire.is_some_and(|e| e + time::Duration::seconds(1) < c.term_end),
        reissue_status: None,
        admin_contact: c.admin.map(|id| ContactRef { id }),
        technical_contact: c.tech.map(|id| ContactRef { id }),
        authentication: CertAuthenticationOut {
            name: Some(c.name.clone()),
            method: c.auth.method.clone(),
            dns: (c.auth.method == "DNS").then(|| dns_line(&c.name, &c.auth.token)),
            provisioning: Some(c.auth.provisioning),
            ..Default::default()
        },
        histories: c.histories.clone(),
        firstname: c.firstname.clone(),
        lastname: c.lastname.clone(),
        comment: c.comment.clone(),
        certificate_transparency_privacy: "PUBLIC".into(),
        domain: c.name.clone(),
        owner: c.owner.clone(),
        created: ts(c.created),
        updated: ts(c.updated),
    }
}

/// The spec's `CsrHashAlgorithmConstants` value for an EC key.
fn curve(info: &CsrInfo) -> Option<String> {
    match (info.algorithm, info.key_size) {
        ("ECC", 256) => Some("PRIME_256_V1".into()),
        ("ECC", 384) => Some("SECP_384_R1".into()),
        _ => None,
    }
}

/// The DCV record as prepareOrder writes it: one zone-file line, tab-separated.
pub fn dns_line(name: &str, token: &str) -> String {
    format!("{name}.\t300\tIN\tTXT\t\"{token}\"")
}

/// The token inside a zone-file line (`name. 300 IN TXT "token"`).
fn token_of(line: &str) -> Option<String> {
    let start = line.find('"')?;
    let end = line.rfind('"')?;
    (end > start + 1).then(|| line[start + 1..end].to_string())
}

fn base_domain(name: &str) -> String {
    let labels: Vec<&str> = name.split('.').collect();
    labels[labels.len().saturating_sub(2)..].join(".")
}

/// Checks names against what a product allows; returns them lower-cased and deduplicated.
fn check_names(task: &str, product: &Product, names: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let n = n.to_ascii_lowercase();
        if !out.contains(&n) {
            out.push(n);
        }
    }
    if out.is_empty() {
        return Err(ApiError::field(task, "name", "no name given"));
    }
    if out.len() > product.max_names {
        return Err(ApiError::field(
            task,
            "subjectAlternativeNames",
            format!(
                "{} allows at most {} names, the request has {}",
                product.name,
                product.max_names,
                out.len()
            ),
        ));
    }
    for n in &out {
        let ok = if product.certificate_type == "MAIL" {
            is_mailbox(n)
        } else {
            is_hostname(n, product.wildcard)
        };
        if !ok {
            let what = if product.certificate_type == "MAIL" {
                "an e-mail address"
            } else {
                "a host name this product can certify"
            };
            return Err(ApiError::field(task, "name", format!("'{n}' is not {what}")));
        }
    }
    Ok(out)
}

fn is_hostname(n: &str, wildcard: bool) -> bool {
    let n = n.strip_prefix("*.").filter(|_| wildcard).unwrap_or(n);
    let labels: Vec<&str> = n.split('.').collect();
    n.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && !labels.last().is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
}

fn is_mailbox(n: &str) -> bool {
    match n.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !local.contains(char::is_whitespace) && is_hostname(domain, false)
        }
        None => false,
    }
}

fn scale(unit: std::time::Duration, n: i64) -> time::Duration {
    time_dur(unit.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX)))
}

fn time_dur(d: std::time::Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

/// Applies a `Query`'s filters, then its view (offset, limit). Returns the total before paging.
fn filter_page<'a, T>(
    items: Vec<&'a T>,
    q: &Query,
    field: impl Fn(&T, &str) -> Option<String>,
) -> Result<(i64, Vec<&'a T>)> {
    for f in &q.filters {
        check_filter(f)?;
    }
    let matched: Vec<&T> = items
        .into_iter()
        .filter(|i| matches_all(&q.filters, &|k| field(i, k)))
        .collect();
    let total = matched.len() as i64;
    let view = q.view.clone().unwrap_or_default();
    let offset = view.offset.unwrap_or(0).max(0) as usize;
    let limit = view.limit.filter(|l| *l > 0).map(|l| l as usize).unwrap_or(usize::MAX);
    Ok((total, matched.into_iter().skip(offset).take(limit).collect()))
}

fn check_filter(f: &QueryFilter) -> Result<()> {
    if let Some(op) = &f.operator {
        const OPS: &[&str] = &[
            "EQUAL",
            "NOT_EQUAL",
            "LIKE",
            "NOT_LIKE",
            "GREATER",
            "LESS",
            "GREATER_EQUAL",
            "LESS_EQUAL",
            "IN",
            "NOT_IN",
        ];
        if !OPS.contains(&op.as_str()) {
            return Err(ApiError::field(
                "0000",
                "filters.operator",
                format!("unknown operator '{op}'"),
            ));
        }
    }
    if f.key.is_none() && f.filters.is_empty() {
        return Err(ApiError::field(
            "0000",
            "filters.key",
            "a filter needs a key or nested filters",
        ));
    }
    f.filters.iter().try_for_each(check_filter)
}

fn matches_all(filters: &[QueryFilter], field: &dyn Fn(&str) -> Option<String>) -> bool {
    let mut result: Option<bool> = None;
    for f in filters {
        let m = matches_one(f, field);
        result = Some(match (result, f.link.as_deref()) {
            (None, _) => m,
            (Some(acc), Some("OR")) => acc || m,
            (Some(acc), _) => acc && m,
        });
    }
    result.unwrap_or(true)
}

fn matches_one(f: &QueryFilter, field: &dyn Fn(&str) -> Option<String>) -> bool {
    if f.key.is_none() {
        return matches_all(&f.filters, field);
    }
    let key = f.key.as_deref().unwrap_or_default();
    let Some(actual) = field(key) else { return false };
    let op = f.operator.as_deref().unwrap_or("EQUAL");
    let values: Vec<String> = f
        .values
        .clone()
        .unwrap_or_default()
        .into_iter()
        .chain(f.value.clone())
        .collect();
    let cmp = |v: &String| -> std::cmp::Ordering {
        match (crate::time::parse(&actual), crate::time::parse(v)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => match (actual.parse::<i64>(), v.parse::<i64>()) {
                (Ok(a), Ok(b)) => a.cmp(&b),
                _ => actual.to_ascii_lowercase().cmp(&v.to_ascii_lowercase()),
            },
        }
    };
    let like = |v: &String| wildcard_match(&v.to_ascii_lowercase(), &actual.to_ascii_lowercase());
    let own = match op {
        "EQUAL" | "IN" => values.iter().any(|v| cmp(v).is_eq()),
        "NOT_EQUAL" | "NOT_IN" => values.iter().all(|v| !cmp(v).is_eq()),
        "LIKE" => values.iter().any(like),
        "NOT_LIKE" => !values.iter().any(like),
        "GREATER" => values.iter().any(|v| cmp(v).is_gt()),
        "LESS" => values.iter().any(|v| cmp(v).is_lt()),
        "GREATER_EQUAL" => values.iter().any(|v| cmp(v).is_ge()),
        "LESS_EQUAL" => values.iter().any(|v| cmp(v).is_le()),
        _ => false,
    };
    if f.filters.is_empty() {
        own
    } else {
        own && matches_all(&f.filters, field)
    }
}

/// `*` matches any run of characters (the API's LIKE syntax).
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_mailboxes_and_wildcards_are_judged_per_product() {
        assert!(is_hostname("www.example.com", false));
        assert!(!is_hostname("*.example.com", false));
        assert!(is_hostname("*.example.com", true));
        assert!(!is_hostname("localhost", false));
        assert!(!is_hostname("10.0.0.1", false));
        assert!(!is_hostname("-a.example.com", false));
        assert!(is_mailbox("joe.sample@example.com"));
        assert!(!is_mailbox("example.com"));
    }

    #[test]
    fn like_filters_use_star_wildcards() {
        assert!(wildcard_match("*.example.com", "www.example.com"));
        assert!(wildcard_match("www*", "www.example.com"));
        assert!(wildcard_match("w*example*", "www.example.com"));
        assert!(!wildcard_match("*.example.org", "www.example.com"));
        assert!(wildcard_match("exact", "exact"));
    }

    #[test]
    fn the_token_is_read_back_from_a_zone_line() {
        let line = dns_line("example.com", "20261123abc");
        assert_eq!(token_of(&line).as_deref(), Some("20261123abc"));
        assert_eq!(token_of("example.com. 300 IN TXT \"x y\"").as_deref(), Some("x y"));
        assert_eq!(token_of("no quotes"), None);
    }
}
