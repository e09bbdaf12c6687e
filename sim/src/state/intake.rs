//! Reading an order body (create, reissue, renew): the CSR, names, lifetime, authentication,
//! contacts and software it must hold, and what the order will issue.

use super::names::check_names;
use super::prepare::{FILE_PATH, approvers, token_of};
use super::{ApiError, Auth, Pending, Result, State};
use crate::config::Product;
use crate::csr::{self, CsrInfo};
use crate::wire::{BasicUser, CertificateIn, TimePeriod};

/// The `software` values an order may name.
const SOFTWARE: &[&str] = &["IIS4", "IIS5", "APACHE2", "APACHESSL", "PLESK", "TOMCAT", "NOT_SET"];

impl State {
    /// Checks an order body and works out what it will issue.
    pub(super) fn intake(
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
                    approvers: approvers(product, &names[0]),
                    provisioning: false,
                    prefix: "",
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
                // A FILE order names the content prepareOrder gave, or the service makes a new
                // one (which nobody has put on a web server yet).
                _ if method == "FILE" => {
                    if let Some(file) = auth_in.file_name.as_deref()
                        && !names.iter().any(|n| {
                            let bare = format!("{n}/{FILE_PATH}");
                            file == bare || file == format!("http://{bare}")
                        })
                    {
                        return Err(ApiError::field(
                            task,
                            "authentication.fileName",
                            format!("'{file}' is not the validation file of {}", names.join(", ")),
                        ));
                    }
                    match auth_in.file_content.as_deref() {
                        Some(content) => match self.prepared.get(content) {
                            Some(p) if names.iter().all(|n| p.names.contains(n)) => content.to_string(),
                            Some(_) => {
                                return Err(ApiError::field(
                                    task,
                                    "authentication.fileContent",
                                    "the file content was prepared for other names",
                                ));
                            }
                            None => {
                                return Err(ApiError::field(
                                    task,
                                    "authentication.fileContent",
                                    "the file content was not issued by prepareOrder",
                                ));
                            }
                        },
                        None => self.token(),
                    }
                }
                _ => self.token(),
            };
            let offered = approvers(product, &names[0]);
            let approvers = auth_in.approver_emails.clone().unwrap_or_default();
            if method == "EMAIL" {
                if approvers.is_empty() {
                    return Err(ApiError::field(
                        task,
                        "authentication.approverEmails",
                        "approverEmails is required for EMAIL validation",
                    ));
                }
                if let Some(bad) = approvers.iter().find(|a| !offered.contains(&a.to_ascii_lowercase())) {
                    return Err(ApiError::field(
                        task,
                        "authentication.approverEmails",
                        format!(
                            "'{bad}' is not an approver address for {} (use one of {})",
                            names[0],
                            offered.join(", ")
                        ),
                    ));
                }
            }
            let provisioning = auth_in.provisioning.unwrap_or(false) || provisioning_key;
            (
                info.map(|i| i.pem).unwrap_or_default(),
                Auth {
                    method,
                    token,
                    approvers,
                    provisioning,
                    prefix: product.dcv_prefix,
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

    /// The lifetime an order asks for, in months, if the product is sold for it.
    pub(super) fn months(task: &str, product: &Product, lifetime: &Option<TimePeriod>) -> Result<i64> {
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
}
