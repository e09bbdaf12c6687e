//! certkeeper's own serde types for the AutoDNS JSON API, written from `domainrobot.json`.
//! They are lenient: every field is optional, unknown fields and enum values are tolerated, ids
//! are 64-bit, and dates are parsed from the API's own format.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

/// The envelope of every answer.
#[derive(Clone, Debug, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub stid: Option<String>,
    #[serde(default)]
    pub ctid: Option<String>,
    pub status: Status,
    #[serde(default)]
    pub object: Option<ResponseObject>,
    #[serde(default)]
    pub data: Option<Vec<Value>>,
    #[serde(default)]
    pub messages: Vec<Message>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub text: String,
    #[serde(rename = "type", default)]
    pub kind: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ResponseObject {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub summary: Option<i64>,
    #[serde(default)]
    pub data: Option<Value>,
}

/// One entry of `messages[]`; nested messages are kept as raw JSON (sources disagree on them).
#[derive(Clone, Debug, Deserialize)]
pub struct Message {
    #[serde(default, alias = "messageCode", alias = "resultCode")]
    pub code: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
}

/// `CertAuthentication` as prepareOrder answers it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertAuthentication {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub dns: Option<String>,
    /// FILE: `NAME/.well-known/pki-validation/FILE` (no scheme, as the 2020 SDK mock shows).
    #[serde(default)]
    pub file_name: Option<String>,
    #[serde(default)]
    pub file_content: Option<String>,
    /// EMAIL: the addresses an approval mail may go to.
    #[serde(default)]
    pub approver_emails: Vec<String>,
}

/// `CertificateData`: prepareOrder's answer.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateData {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub authentication: Vec<CertAuthentication>,
}

/// What prepareOrder found: for DNS validation one zone-file line per name, for FILE the
/// entries as given (read strictly later, `webroot`), for EMAIL the approver addresses.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub dns_lines: Vec<(String, String)>,
    /// `(entry name, fileName, fileContent)` of each FILE entry.
    pub files: Vec<(Option<String>, Option<String>, Option<String>)>,
    pub approvers: Vec<String>,
}

impl CertificateData {
    /// What prepareOrder's answer offers, for each validation method.
    pub fn prepared(&self) -> Prepared {
        let dns_lines = self
            .authentication
            .iter()
            .filter(|a| a.method.as_deref() == Some("DNS"))
            // Real answers may leave the entry's `name` out; the line names its record itself.
            .filter_map(|a| {
                let name = a.name.clone().or_else(|| self.name.clone()).unwrap_or_default();
                Some((name, a.dns.clone()?))
            })
            .collect();
        let method = |m: &'static str| {
            self.authentication
                .iter()
                .filter(move |a| a.method.as_deref() == Some(m))
        };
        let files = method("FILE")
            .map(|a| (a.name.clone(), a.file_name.clone(), a.file_content.clone()))
            .collect();
        let approvers = method("EMAIL")
            .flat_map(|a| a.approver_emails.iter().cloned())
            .collect();
        Prepared {
            dns_lines,
            files,
            approvers,
        }
    }
}

/// `CaCertificate`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaCertificate {
    #[serde(default)]
    pub ca_type: Option<String>,
    #[serde(default)]
    pub ca_certificate: Option<String>,
}

/// `Certificate` as info and search answer it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    pub id: i64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub certification_authority: Vec<CaCertificate>,
    #[serde(default)]
    pub serial_number: Option<String>,
    #[serde(default)]
    pub expire: Option<String>,
    #[serde(default)]
    pub payable: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub reissue_required: Option<bool>,
    /// The CSR of the latest order or reissue.
    #[serde(default)]
    pub csr: Option<String>,
    #[serde(default)]
    pub product: Option<String>,
    /// The order term, e.g. `{unit: MONTH, period: 12}`.
    #[serde(default)]
    pub lifetime: Option<Lifetime>,
    #[serde(default)]
    pub subject_alternative_names: Vec<SubjectAlternativeName>,
    /// The order's earlier certificates (and revoked ones): `{serialNumber, orderId, revoked}`.
    #[serde(default)]
    pub histories: Vec<CertificateHistory>,
}

/// One entry of `histories`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateHistory {
    #[serde(default)]
    pub serial_number: Option<String>,
    /// When the serial was revoked, if it was.
    #[serde(default)]
    pub revoked: Option<String>,
}

/// `TimePeriod` as answers carry it.
#[derive(Clone, Debug, Deserialize)]
pub struct Lifetime {
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub period: Option<i64>,
}

/// One entry of `subjectAlternativeNames`.
#[derive(Clone, Debug, Deserialize)]
pub struct SubjectAlternativeName {
    #[serde(default)]
    pub name: Option<String>,
}

/// `WorkflowEvent`, which carries the ctid of the request that started a job.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowEvent {
    #[serde(default)]
    pub ctid: Option<String>,
}

/// `JobStatusConstants`: the spec's values, and whatever else the API may send, kept as sent.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum JobStatus {
    Running,
    Success,
    Failed,
    Canceled,
    Support,
    Deferred,
    NotSet,
    Wait,
    /// A value the spec does not list.
    Unknown(String),
}

impl From<String> for JobStatus {
    fn from(s: String) -> Self {
        match s.as_str() {
            "RUNNING" => Self::Running,
            "SUCCESS" => Self::Success,
            "FAILED" => Self::Failed,
            "CANCELED" => Self::Canceled,
            "SUPPORT" => Self::Support,
            // A help page spells it so ("DEFFERED"); it is the same waiting state.
            "DEFERRED" | "DEFFERED" => Self::Deferred,
            "NOT_SET" => Self::NotSet,
            "WAIT" => Self::Wait,
            _ => Self::Unknown(s),
        }
    }
}

impl JobStatus {
    /// As the API writes it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Running => "RUNNING",
            Self::Success => "SUCCESS",
            Self::Failed => "FAILED",
            Self::Canceled => "CANCELED",
            Self::Support => "SUPPORT",
            Self::Deferred => "DEFERRED",
            Self::NotSet => "NOT_SET",
            Self::Wait => "WAIT",
            Self::Unknown(s) => s,
        }
    }

    /// The job ended without a certificate.
    pub fn failed(&self) -> bool {
        matches!(self, Self::Failed | Self::Canceled)
    }

    /// The job ended, one way or the other. Everything else (RUNNING, DEFERRED while the CA
    /// waits for domain control, WAIT, SUPPORT, NOT_SET, a value the spec does not list) is a
    /// job still under way.
    pub fn is_final(&self) -> bool {
        *self == Self::Success || self.failed()
    }
}

/// `BusinessCase` of prepareOrder: what the CSR is checked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum BusinessCase {
    Create,
    Reissue,
    Renew,
}

/// `Job`. Real answers carry `type` (`ssl`) though the spec has it only in XML, `subStatus` while
/// a job waits (`WF_DNS_AUTH`), and no `events`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: i64,
    #[serde(default)]
    pub status: Option<JobStatus>,
    #[serde(default)]
    pub sub_status: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub sub_type: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub events: Vec<WorkflowEvent>,
}

/// `ObjectJob`: a job and the object it works on.
#[derive(Clone, Debug, Deserialize)]
pub struct ObjectJob {
    pub job: Job,
    #[serde(default)]
    pub object: Option<ResponseObject>,
}

/// `PollMessage`.
#[derive(Clone, Debug, Deserialize)]
pub struct PollMessage {
    pub id: i64,
    #[serde(default)]
    pub job: Option<Job>,
    #[serde(default)]
    pub ctid: Option<String>,
    #[serde(default)]
    pub object: Option<ResponseObject>,
    #[serde(default)]
    pub messages: Vec<Message>,
}

impl PollMessage {
    /// The ctid of the request that started the message's job: the message's own (where the
    /// help pages and real answers put it), else one of its job's events (where the spec puts it).
    pub fn ctid(&self) -> Option<&str> {
        fn given(c: &Option<String>) -> Option<&str> {
            c.as_deref().filter(|c| !c.is_empty())
        }
        given(&self.ctid).or_else(|| self.job.as_ref()?.events.iter().find_map(|e| given(&e.ctid)))
    }
}

/// The certificate id inside a job's or poll message's `object.data`.
pub fn object_certificate_id(object: &Option<ResponseObject>) -> Option<i64> {
    object.as_ref()?.data.as_ref()?.get("id")?.as_i64()
}

/// A contact reference: `{ "id": N }`.
#[derive(Clone, Debug, Serialize)]
pub struct ContactRef {
    pub id: i64,
}

/// `TimePeriod`.
#[derive(Clone, Debug, Serialize)]
pub struct TimePeriod {
    pub unit: &'static str,
    pub period: u32,
}

/// The `authentication` of an order.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderAuthentication {
    pub method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approver_emails: Vec<String>,
}

impl OrderAuthentication {
    /// DNS validation with prepareOrder's line, provisioned by AutoDNS or not (the help page's
    /// create request).
    pub fn dns(dns: Option<String>, provisioning: bool) -> Self {
        Self {
            method: "DNS",
            dns,
            provisioning: Some(provisioning),
            ..Self::default()
        }
    }

    /// FILE validation with prepareOrder's file name and content, sent back as a DNS line is.
    pub fn file(file_name: String, file_content: String) -> Self {
        Self {
            method: "FILE",
            file_name: Some(file_name),
            file_content: Some(file_content),
            ..Self::default()
        }
    }

    /// EMAIL validation by `approver` (the 2019 reissue help page's form).
    pub fn email(approver: String) -> Self {
        Self {
            method: "EMAIL",
            approver_emails: vec![approver],
            ..Self::default()
        }
    }
}

/// The body of create, reissue and renew.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub name: String,
    pub product: String,
    pub lifetime: TimePeriod,
    pub software: String,
    pub csr: String,
    pub admin_contact: ContactRef,
    pub technical_contact: ContactRef,
    pub authentication: OrderAuthentication,
    /// S/MIME: `MAIL`, with the person, the CA's download password, and `hasCsr` (our own key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_csr: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firstname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lastname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_unit_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for OrderRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The CA's download password never shows.
        f.debug_struct("OrderRequest")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("product", &self.product)
            .field("certificate_type", &self.certificate_type)
            .finish_non_exhaustive()
    }
}

impl OrderRequest {
    /// A create (no `id`), reissue or renew (`id`: the order) for a term of `months`, validated
    /// as `authentication` says.
    pub fn new(id: Option<i64>, what: OrderFor, authentication: OrderAuthentication) -> Self {
        Self {
            id,
            name: what.name,
            product: what.product,
            lifetime: TimePeriod {
                unit: "MONTH",
                period: what.months,
            },
            software: what.software,
            csr: what.csr,
            admin_contact: ContactRef { id: what.admin_contact },
            technical_contact: ContactRef {
                id: what.technical_contact,
            },
            authentication,
            certificate_type: None,
            has_csr: None,
            firstname: None,
            lastname: None,
            organization_unit_name: None,
            password: None,
        }
    }
}

/// What an order is for: the certificate's name, product, term, software, CSR and contacts.
pub struct OrderFor {
    pub name: String,
    pub product: String,
    pub months: u32,
    pub software: String,
    pub csr: String,
    pub admin_contact: i64,
    pub technical_contact: i64,
}

const API_FORMAT: &[FormatItem<'static>] = format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3][offset_hour sign:mandatory][offset_minute]"
);

/// Parses the API's timestamps (`2018-12-12T11:05:25.000+0100`), falling back to RFC 3339.
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, API_FORMAT)
        .ok()
        .or_else(|| OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
}

/// Formats a time in the API's format, for search filters.
pub fn format_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC).format(API_FORMAT).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_dates_parse_with_their_colonless_offset() {
        let t = parse_time("2018-12-12T11:05:25.000+0100").unwrap();
        assert_eq!(t, time::macros::datetime!(2018-12-12 10:05:25 UTC));
        assert_eq!(parse_time(&format_time(t)), Some(t));
        assert!(parse_time("12/12/2018").is_none());
    }

    #[test]
    fn the_documented_info_reply_parses_and_ids_beyond_i32_fit() {
        let body = r#"{"stid":"x","status":{"code":"S400104","text":"ok","type":"SUCCESS"},
            "data":[{"id":4297939738,"name":"example.com","serialNumber":"750C","expire":"2019-09-26T12:00:00.000+0200",
            "certificationAuthority":[{"caType":"ICA1","caCertificate":"PEM"}],"software":"NEW_ENUM_VALUE"}]}"#;
        let env: Envelope = serde_json::from_str(body).unwrap();
        let cert: Certificate = serde_json::from_value(env.data.unwrap()[0].clone()).unwrap();
        assert_eq!(cert.id, 4_297_939_738);
        assert_eq!(cert.certification_authority.len(), 1);
    }

    /// The shapes of the real poll and job answers (shared/autodns/real/, SOURCES.md): the
    /// ctid at the message's top level, `job.type`, DEFERRED and its misspelling, no `events`.
    #[test]
    fn real_poll_and_job_shapes_parse_with_their_waiting_states() {
        let poll = r#"{"id":1405448,"ctid":"certkeeper-0a1b","job":{"created":"2018-12-11T15:10:43.000+0100",
            "status":"SUCCESS","id":9218718,"type":"ssl","subType":"QUICKSSLPREMIUM","action":"create"},
            "stid":"20180926-stid","object":{"type":"Certificate","value":"example.com",
            "data":{"created":"2018-12-11T00:00:00.000+0100","id":570,"orderId":"2742528"}}}"#;
        let m: PollMessage = serde_json::from_str(poll).unwrap();
        let job = m.job.as_ref().unwrap();
        assert_eq!(
            (job.id, job.kind.as_deref(), job.status.clone()),
            (9_218_718, Some("ssl"), Some(JobStatus::Success))
        );
        assert!(job.events.is_empty());
        assert_eq!(m.ctid(), Some("certkeeper-0a1b"));
        assert_eq!(object_certificate_id(&m.object), Some(570));

        // GET /job while the CA waits for the DNS record, and a job search's misspelling.
        let job = r#"{"job":{"status":"DEFERRED","subStatus":"WF_DNS_AUTH","subType":"BASIC_SSL","action":"create",
            "id":4299710353},"object":{"type":"Certificate","value":"example.xn--p1ai","data":{"id":1658050}}}"#;
        let oj: ObjectJob = serde_json::from_str(job).unwrap();
        assert_eq!(oj.job.status, Some(JobStatus::Deferred));
        assert_eq!(oj.job.sub_status.as_deref(), Some("WF_DNS_AUTH"));
        let misspelt: Job =
            serde_json::from_str(r#"{"id":12345,"status":"DEFFERED","subStatus":"WF_EMAIL_AUTH"}"#).unwrap();
        assert_eq!(misspelt.status, Some(JobStatus::Deferred));
        for waiting in [
            "RUNNING",
            "DEFERRED",
            "DEFFERED",
            "WAIT",
            "SUPPORT",
            "NOT_SET",
            "SOMETHING_NEW",
        ] {
            assert!(!JobStatus::from(waiting.to_string()).is_final(), "{waiting}");
        }
        for done in ["SUCCESS", "FAILED", "CANCELED"] {
            assert!(JobStatus::from(done.to_string()).is_final(), "{done}");
        }

        // The spec's place for the ctid, where the message has none of its own.
        let m: PollMessage =
            serde_json::from_str(r#"{"id":2,"job":{"id":3,"events":[{"ctid":""},{"ctid":"c-1"}]}}"#).unwrap();
        assert_eq!(m.ctid(), Some("c-1"));
    }
}
