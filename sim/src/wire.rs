//! The simulator's own JSON wire types, written from InterNetX's OpenAPI spec
//! (`domainrobot.json`, definitions `JsonResponseData*`, `Certificate`, `CertificateData`,
//! `CertAuthentication`, `SslContact`, `Job`, `ObjectJob`, `PollMessage`, `Query`).
//!
//! They are deliberately independent of the agent's types: a shared mistake would be invisible.
//! Request types are lenient (every field optional, unknown fields ignored, as the real API is);
//! response types skip absent fields, as the real API does.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The response envelope, `JsonResponseData*` in the spec.
#[derive(Debug, Serialize)]
pub struct Envelope {
    pub stid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctid: Option<String>,
    pub status: ResponseStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ResponseObject>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
}

/// `ResponseStatus`: `{code, text, type}`. Some real errors carry only `type`: an empty code
/// or text is left out.
#[derive(Clone, Debug, Serialize)]
pub struct ResponseStatus {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub code: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub text: String,
    #[serde(rename = "type")]
    pub kind: StatusType,
}

/// `StatusType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StatusType {
    Success,
    Error,
    Notify,
}

/// `ResponseObject`: `{type, value, summary, data}`. Search answers carry no `value`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ResponseObject {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// `Message`: one entry of `messages[]`.
#[derive(Clone, Debug, Serialize)]
pub struct Message {
    pub code: String,
    pub text: String,
    pub status: StatusType,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<GenericObject>,
}

/// `GenericObject`: `{type, value}`.
#[derive(Clone, Debug, Serialize)]
pub struct GenericObject {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

/// `BasicUser`: `{user, context}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BasicUser {
    pub user: String,
    pub context: i32,
}

/// `TimePeriod`: `{unit, period}`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct TimePeriod {
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub period: Option<i64>,
}

/// A contact reference or full contact as sent in a request (`SslContact`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SslContactIn {
    pub id: Option<i64>,
    pub fname: Option<String>,
    pub lname: Option<String>,
    pub title: Option<String>,
    pub organization: Option<String>,
    /// The spec says `string[]`; the help pages send a plain string. Both are accepted.
    pub address: Option<StringOrList>,
    pub pcode: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub country: Option<String>,
    pub phone: Option<String>,
    pub fax: Option<String>,
    pub email: Option<String>,
}

/// A field the spec types as `string[]` that the help pages show as a string.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// `SslContact` as answered.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SslContactOut {
    pub id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub address: Vec<String>,
    /// The address was sent as one string: the create answer echoes it so (as the help page
    /// shows); every other answer lists it.
    #[serde(skip)]
    pub address_was_string: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fax: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub owner: BasicUser,
    pub created: String,
    pub updated: String,
}

/// `CertificateData`: the body of `_prepareOrder`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateDataIn {
    pub plain: Option<String>,
    pub product: Option<String>,
    pub business_case: Option<String>,
    pub certificate: Option<CertificateRef>,
}

/// `{ "id": N }` inside a `CertificateData` request.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CertificateRef {
    pub id: Option<i64>,
}

/// `CertificateData` as answered by `_prepareOrder`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateDataOut {
    pub plain: String,
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alternative_names: Vec<SubjectAlternativeName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_size: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_unit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub product: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business_case: Option<String>,
    pub authentication: Vec<CertAuthenticationOut>,
    /// The key type, `RSA` or `ECC`, as the real answers write it (the spec's
    /// `CsrHashAlgorithmConstants` lists only curves).
    pub algorithm: String,
    /// The curve of an EC key: `PRIME_256_V1` or `SECP_384_R1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ec_curve: Option<String>,
    pub signature_hash_algorithm: String,
    pub valid_signature: bool,
}

/// `SubjectAlternativeName`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectAlternativeName {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// `CertAuthentication` as answered.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertAuthenticationOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approver_emails: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<bool>,
}

/// `CertAuthentication` as sent in a create, reissue or renew body.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertAuthenticationIn {
    pub method: Option<String>,
    pub dns: Option<String>,
    pub file_name: Option<String>,
    pub file_content: Option<String>,
    pub provisioning: Option<bool>,
    pub approver_emails: Option<Vec<String>>,
}

/// `Certificate` as sent in create, reissue, renew and revoke bodies.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateIn {
    pub id: Option<i64>,
    pub name: Option<String>,
    pub product: Option<String>,
    pub lifetime: Option<TimePeriod>,
    pub software: Option<String>,
    pub csr: Option<String>,
    pub admin_contact: Option<SslContactIn>,
    pub technical_contact: Option<SslContactIn>,
    pub authentication: Option<CertAuthenticationIn>,
    pub certificate_type: Option<String>,
    pub subject_alternative_names: Option<Vec<SubjectAlternativeName>>,
    pub serial_number: Option<String>,
    pub password: Option<String>,
    pub firstname: Option<String>,
    pub lastname: Option<String>,
    pub organization_unit_name: Option<String>,
    pub has_csr: Option<bool>,
    pub comment: Option<String>,
}

/// `CaCertificate`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaCertificate {
    pub ca_type: String,
    pub ca_certificate: String,
    pub created: String,
    pub updated: String,
}

/// `CertificateHistory`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateHistory {
    pub serial_number: String,
    pub order_id: String,
    /// When this serial was revoked, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

/// `Certificate` as answered by info and search.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateOut {
    pub id: i64,
    pub order_id: String,
    pub partner_order_id: String,
    pub name: String,
    pub product: String,
    pub certificate_type: String,
    pub lifetime: TimePeriod,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software: Option<String>,
    pub csr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    pub serial_number: String,
    pub signature_hash_algorithm: String,
    pub certification_authority: Vec<CaCertificate>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alternative_names: Vec<SubjectAlternativeName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire: Option<String>,
    /// The end of the order term; only with the `payable` knob (the 2022 form).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payable: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiyear: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reissue_required: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reissue_status: Option<String>,
    /// The contact as the account keeps it (`SslContact` without owner and times).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_contact: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub technical_contact: Option<Value>,
    pub authentication: CertAuthenticationOut,
    pub histories: Vec<CertificateHistory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firstname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lastname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_unit_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub certificate_transparency_privacy: String,
    pub domain: String,
    pub has_csr: bool,
    pub owner: BasicUser,
    pub updater: BasicUser,
    pub created: String,
    pub updated: String,
}

/// `Job`. Poll messages add `type` (`"ssl"`), which the spec lacks and the samples show.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: i64,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_status: Option<String>,
    pub sub_type: String,
    pub action: String,
    pub execution: String,
    pub created: String,
    pub updated: String,
    pub owner: BasicUser,
    pub updater: BasicUser,
    /// Only with the `job_event_ctid` knob: no real sample has them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<WorkflowEvent>,
}

/// `WorkflowEvent`: here, the request that started the job, with its ctid.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowEvent {
    pub job_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctid: Option<String>,
    pub object: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub subtype: String,
}

/// `ObjectJob`: a job with the object it works on.
#[derive(Clone, Debug, Serialize)]
pub struct ObjectJob {
    pub job: Job,
    pub object: ResponseObject,
}

/// `PollMessage`: about a job (`job`, `object`, and `ctid` of the request that started it) or
/// a notice without a job (`notify`, `notice`).
#[derive(Clone, Debug, Serialize)]
pub struct PollMessage {
    pub id: i64,
    pub owner: BasicUser,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifyMessage>,
    pub stid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctid: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
    pub created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ResponseObject>,
}

/// `NotifyMessage`: `{type, object}`.
#[derive(Clone, Debug, Serialize)]
pub struct NotifyMessage {
    #[serde(rename = "type")]
    pub kind: String,
    pub object: ResponseObject,
}

/// `Query`: the body of every `_search` route.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Query {
    #[serde(default)]
    pub filters: Vec<QueryFilter>,
    #[serde(default)]
    pub view: Option<QueryView>,
    #[serde(default)]
    pub orders: Vec<QueryOrder>,
}

/// `QueryOrder`: `{key, type}` with type `ASC` or `DESC`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct QueryOrder {
    pub key: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// `QueryFilter`: `{key, value, values, operator, link, filters}`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct QueryFilter {
    pub key: Option<String>,
    pub value: Option<String>,
    pub values: Option<Vec<String>>,
    pub operator: Option<String>,
    pub link: Option<String>,
    #[serde(default)]
    pub filters: Vec<QueryFilter>,
}

/// `QueryView`: `{limit, offset}`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct QueryView {
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}
