//! prepareOrder: judging a CSR for a product and answering how each name proves domain control,
//! including the DNS line (one zone-file line) that a later order hands back.

use super::names::check_names;
use super::{ApiError, Env, Prepared, Reply, Result, State};
use crate::config::product;
use crate::csr::{self, CsrInfo};
use crate::faults::DcvForm;
use crate::wire::{BasicUser, CertAuthenticationOut, CertificateDataIn, CertificateDataOut, SubjectAlternativeName};

impl State {
    /// `POST /certificate/_prepareOrder`: the CSR judged for the product, and one
    /// authentication entry per method (per name for DNS), written as `dcv_form` says. A DNS
    /// entry's record sits at the product's prefix plus the name (`_dnsauth.NAME.` for
    /// BASIC_SSL); its `provisioning` tells whether AutoDNS could publish it (a zone it serves).
    pub fn prepare_order(&mut self, _owner: &BasicUser, body: CertificateDataIn, env: Env<'_>) -> Result<Reply> {
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
                    return Err(ApiError::not_found(T, "certificate", "Certificate", id));
                }
            }
        }
        let info = csr::parse(plain).map_err(|e| ApiError::field(T, "plain", e.to_string()))?;
        let names = check_names(T, product, &info.names())?;
        let token = self.token();
        self.prepared.insert(token.clone(), Prepared { names: names.clone() });
        let form = self.faults.dcv_form;
        let named = |n: &String| form.named().then(|| n.clone());
        let mut authentication = Vec::new();
        for method in product.methods {
            match *method {
                "DNS" => {
                    for n in &names {
                        let record = format!("{}{n}", product.dcv_prefix);
                        let hosted = env.zones.hosts(&record);
                        authentication.push(CertAuthenticationOut {
                            name: named(n),
                            method: "DNS".into(),
                            dns: Some(match &self.faults.dcv_line {
                                Some(t) => t.replace("{name}", n).replace("{token}", &token),
                                None => dns_line(&record, &token, form),
                            }),
                            provisioning: form.named().then_some(hosted),
                            ..Default::default()
                        });
                    }
                }
                // The 2020 JS SDK mock: one entry per name, with the file's name (the name, then
                // its path, no scheme) and content. The 2018 help page: `{"method": "FILE"}`
                // and nothing else, so a client cannot tell what to serve.
                "FILE" if form.named() => {
                    for n in &names {
                        authentication.push(CertAuthenticationOut {
                            name: Some(n.clone()),
                            method: "FILE".into(),
                            file_name: Some(match &self.faults.file_name {
                                Some(t) => t.replace("{name}", n),
                                None => format!("{n}/{FILE_PATH}"),
                            }),
                            file_content: Some(token.clone()),
                            ..Default::default()
                        });
                    }
                }
                "FILE" => authentication.push(CertAuthenticationOut {
                    method: "FILE".into(),
                    ..Default::default()
                }),
                _ => authentication.push(CertAuthenticationOut {
                    name: named(&names[0]),
                    method: "EMAIL".into(),
                    approver_emails: approvers(product, &names[0]),
                    ..Default::default()
                }),
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
            algorithm: info.algorithm.into(),
            ec_curve: curve(&info),
            signature_hash_algorithm: "SHA256".into(),
            valid_signature: true,
        };
        Ok(Reply::success("S400110", "CSR key was checked successfully.").data([out]))
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

/// The DCV record as prepareOrder writes it: one zone-file line for the record `name`,
/// tab-separated (with a double tab after the name in the 2018 form).
pub(super) fn dns_line(name: &str, token: &str, form: DcvForm) -> String {
    let sep = if form.double_tab() { "\t\t" } else { "\t" };
    format!("{name}.{sep}300\tIN\tTXT\t\"{token}\"")
}

/// The token inside a zone-file line (`name. 300 IN TXT "token"`).
pub(super) fn token_of(line: &str) -> Option<String> {
    let start = line.find('"')?;
    let end = line.rfind('"')?;
    (end > start + 1).then(|| line[start + 1..end].to_string())
}

/// Where a FILE validation's file is fetched, after `http://NAME/`.
pub(crate) const FILE_PATH: &str = ".well-known/pki-validation/fileauth.txt";

/// The addresses an approval mail may go to: the mailbox itself for S/MIME, else the five
/// administrative mailboxes of the name's domain (the 2018 help page's list).
pub(super) fn approvers(product: &crate::config::Product, name: &str) -> Vec<String> {
    if product.certificate_type == "MAIL" {
        return vec![name.to_string()];
    }
    let domain = base_domain(name.trim_start_matches("*."));
    ["admin", "administrator", "hostmaster", "webmaster", "postmaster"]
        .iter()
        .map(|l| format!("{l}@{domain}"))
        .collect()
}

fn base_domain(name: &str) -> String {
    let labels: Vec<&str> = name.split('.').collect();
    labels[labels.len().saturating_sub(2)..].join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_back_from_a_zone_line() {
        let line = dns_line("example.com", "20261123abc", DcvForm::Spec);
        assert_eq!(line, "example.com.\t300\tIN\tTXT\t\"20261123abc\"");
        assert_eq!(token_of(&line).as_deref(), Some("20261123abc"));
        let line = dns_line("_dnsauth.example.com", "t", DcvForm::DoubleTabNoName);
        assert_eq!(line, "_dnsauth.example.com.\t\t300\tIN\tTXT\t\"t\"");
        assert_eq!(token_of("example.com. 300 IN TXT \"x y\"").as_deref(), Some("x y"));
        assert_eq!(token_of("no quotes"), None);
    }
}
