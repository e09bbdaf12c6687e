//! Reading and verifying delivered certificates (x509-parser). No parser type leaves this module.
//!
//! A delivery is accepted only when the leaf certifies our public key, covers every configured
//! name, is valid now, is no CA and is for TLS servers, and links leaf → intermediate(s) → a
//! root certkeeper trusts (the system store or `api.ca_file`), in the order the API lists them,
//! each signature checked and each issuer a CA allowed to sign that deep. What is installed is
//! re-encoded from the verified DER, nothing else.

use ::time::OffsetDateTime;
use x509_parser::prelude::*;

/// What certkeeper keeps of a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Upper-case hex, as the API writes it.
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// DNS names from the subjectAltName extension.
    pub names: Vec<String>,
}

/// Why a delivered certificate was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("the certificate cannot be read: {0}")]
    Unreadable(String),
    #[error("the certificate does not certify our key (it was issued for another public key)")]
    WrongKey,
    #[error("the certificate does not cover {0}")]
    MissingName(String),
    #[error("the certificate expired at {0}")]
    Expired(OffsetDateTime),
    #[error("the certificate is not valid before {0}")]
    NotYetValid(OffsetDateTime),
    #[error("the chain is broken: {0}")]
    Chain(String),
    #[error("a certificate is not fit for its use: {0}")]
    Usage(String),
}

/// Parses one PEM certificate.
pub fn info(pem_text: &str) -> Result<CertInfo, VerifyError> {
    let der = pem_der(pem_text)?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| VerifyError::Unreadable(e.to_string()))?;
    Ok(cert_info(&cert))
}

/// Parses one DER certificate (as a TLS server hands it out).
pub fn info_der(der: &[u8]) -> Result<CertInfo, VerifyError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| VerifyError::Unreadable(e.to_string()))?;
    Ok(cert_info(&cert))
}

/// Whether `pem_text` is one certificate for the public key whose SubjectPublicKeyInfo hashes
/// (SHA-256, hex) to `spki_sha256`: how an order recognises its own issue among a certificate's.
/// Nothing else is checked here; a delivery is verified in full by [`verify`].
pub fn certifies_key(pem_text: &str, spki_sha256: &str) -> bool {
    use sha2::{Digest, Sha256};
    let Ok(der) = pem_der(pem_text) else { return false };
    let Ok((_, cert)) = X509Certificate::from_der(&der) else {
        return false;
    };
    let digest = Sha256::digest(cert.public_key().raw);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex.eq_ignore_ascii_case(spki_sha256)
}

/// The subjectAltName entries `pick` takes (a DNS name, an rfc822Name), lower case.
fn san_names(cert: &X509Certificate<'_>, pick: impl Fn(&GeneralName<'_>) -> Option<String>) -> Vec<String> {
    cert.subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| san.value.general_names.iter().filter_map(&pick).collect())
        .unwrap_or_default()
}

/// The e-mail addresses (rfc822Name) of the subjectAltName extension: an S/MIME certificate's.
fn rfc822_names(cert: &X509Certificate<'_>) -> Vec<String> {
    san_names(cert, |g| match g {
        GeneralName::RFC822Name(n) => Some(n.to_ascii_lowercase()),
        _ => None,
    })
}

fn cert_info(cert: &X509Certificate<'_>) -> CertInfo {
    let names = san_names(cert, |g| match g {
        GeneralName::DNSName(n) => Some(n.to_ascii_lowercase()),
        _ => None,
    });
    CertInfo {
        serial: cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>()
            .trim_start_matches("00")
            .to_string(),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        names,
    }
}

/// Exactly one CERTIFICATE block, nothing else: text around it or a second block is refused,
/// since what is installed must be exactly what was verified.
fn pem_der(pem_text: &str) -> Result<Vec<u8>, VerifyError> {
    let blocks = ::pem::parse_many(pem_text.trim()).map_err(|e| VerifyError::Unreadable(e.to_string()))?;
    let [block] = blocks.as_slice() else {
        return Err(VerifyError::Unreadable(format!(
            "expected one PEM certificate, found {} blocks",
            blocks.len()
        )));
    };
    if block.tag() != "CERTIFICATE" {
        return Err(VerifyError::Unreadable(format!(
            "expected a CERTIFICATE, found {}",
            block.tag()
        )));
    }
    // With one block, beginning and end at the text's ends leave no room for text around it.
    if !pem_text.trim().starts_with("-----BEGIN CERTIFICATE-----")
        || !pem_text.trim().ends_with("-----END CERTIFICATE-----")
    {
        return Err(VerifyError::Unreadable(
            "there is text outside the PEM certificate".into(),
        ));
    }
    Ok(block.contents().to_vec())
}

/// A certificate as PEM, encoded by us from the verified DER.
fn to_pem(der: &[u8]) -> String {
    ::pem::encode_config(
        &::pem::Pem::new("CERTIFICATE", der.to_vec()),
        ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
    )
}

/// The roots a delivered chain may end at: the same trust the API connection has (`api.roots`
/// and `api.ca_file`).
pub struct TrustAnchors {
    /// (subject, SubjectPublicKeyInfo), DER.
    roots: Vec<(Vec<u8>, Vec<u8>)>,
}

impl TrustAnchors {
    /// The certificates of `ca_pem` (if any) and of `roots` (none: `ca_pem` only).
    pub fn load(ca_pem: Option<&str>, roots: Option<crate::config::Roots>) -> Self {
        let extra = ca_pem.map(crate::trust::pem_certificates).unwrap_or_default();
        let base = roots.map(crate::trust::roots).unwrap_or_default();
        let roots = extra
            .iter()
            .map(Vec::as_slice)
            .chain(base.iter().map(|d| d.as_ref()))
            .filter_map(|d| X509Certificate::from_der(d).ok())
            .map(|(_, c)| (c.subject().as_raw().to_vec(), c.public_key().raw.to_vec()))
            .collect();
        Self { roots }
    }

    fn trusts(&self, cert: &X509Certificate<'_>) -> bool {
        self.roots
            .iter()
            .any(|(subject, spki)| subject == cert.subject().as_raw() && spki == cert.public_key().raw)
    }

    /// Whether a trusted root issued `child` (its name and its signature).
    fn issuer_of(&self, child: &X509Certificate<'_>) -> bool {
        self.roots.iter().any(|(subject, spki)| {
            subject == child.issuer().as_raw()
                && SubjectPublicKeyInfo::from_der(spki).is_ok_and(|(_, key)| child.verify_signature(Some(&key)).is_ok())
        })
    }
}

/// A verified delivery, re-encoded from the DER that was checked: what gets installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub info: CertInfo,
    pub leaf_pem: String,
    /// The intermediates, leaf side first; the root is left out, as servers expect.
    pub intermediates_pem: Vec<String>,
}

/// Verifies a delivery: `leaf` and `chain` (as listed by the API, intermediates then root, the
/// root optional) against our public key (`spki_der`), the configured `names`, `now` and the
/// trusted roots. Every issuer must be a CA allowed to sign that deep (basicConstraints, path
/// length, keyCertSign); the leaf must be no CA and be for TLS servers (extendedKeyUsage).
pub fn verify(
    leaf: &str,
    chain: &[String],
    spki_der: &[u8],
    names: &[String],
    now: OffsetDateTime,
    anchors: &TrustAnchors,
) -> Result<Verified, VerifyError> {
    let leaf_der = pem_der(leaf)?;
    let (_, leaf_cert) = X509Certificate::from_der(&leaf_der).map_err(|e| VerifyError::Unreadable(e.to_string()))?;
    if leaf_cert.public_key().raw != spki_der {
        return Err(VerifyError::WrongKey);
    }
    let info = cert_info(&leaf_cert);
    let mailboxes = rfc822_names(&leaf_cert);
    for n in names {
        // A mailbox is matched only by an rfc822Name, a host name only by a DNS name.
        let among = if n.contains('@') { &mailboxes } else { &info.names };
        if !among.iter().any(|m| m.eq_ignore_ascii_case(n)) {
            return Err(VerifyError::MissingName(n.clone()));
        }
    }
    if now < info.not_before {
        return Err(VerifyError::NotYetValid(info.not_before));
    }
    if now >= info.not_after {
        return Err(VerifyError::Expired(info.not_after));
    }
    if is_ca(&leaf_cert) {
        return Err(VerifyError::Usage("the certificate is itself a CA".into()));
    }
    // A mailbox among the names makes it an S/MIME certificate: for e-mail, not TLS servers.
    let mail = names.iter().any(|n| n.contains('@'));
    match leaf_cert.extended_key_usage() {
        Ok(Some(eku))
            if eku.value.any
                || if mail {
                    eku.value.email_protection
                } else {
                    eku.value.server_auth
                } => {}
        Ok(_) if mail => {
            return Err(VerifyError::Usage(
                "the certificate is not for e-mail (no emailProtection in extendedKeyUsage)".into(),
            ));
        }
        Ok(_) => {
            return Err(VerifyError::Usage(
                "the certificate is not for TLS servers (no serverAuth in extendedKeyUsage)".into(),
            ));
        }
        Err(e) => return Err(VerifyError::Unreadable(e.to_string())),
    }
    if chain.is_empty() {
        return Err(VerifyError::Chain("the API returned no CA certificates".into()));
    }
    let ders = chain.iter().map(|p| pem_der(p)).collect::<Result<Vec<_>, _>>()?;
    let mut parsed = Vec::new();
    for d in &ders {
        let (_, c) = X509Certificate::from_der(d).map_err(|e| VerifyError::Unreadable(e.to_string()))?;
        parsed.push(c);
    }
    let mut child = &leaf_cert;
    let mut intermediates = Vec::new();
    for (i, parent) in parsed.iter().enumerate() {
        if child.issuer() != parent.subject() {
            return Err(VerifyError::Chain(format!(
                "certificate {} of the chain ({}) did not issue {} (issued by {})",
                i + 1,
                parent.subject(),
                child.subject(),
                child.issuer()
            )));
        }
        child.verify_signature(Some(parent.public_key())).map_err(|_| {
            VerifyError::Chain(format!(
                "the signature of {} does not verify with {}",
                child.subject(),
                parent.subject()
            ))
        })?;
        check_issuer(parent, i, mail)?;
        if parent.subject() != parent.issuer() {
            intermediates.push(to_pem(&ders[i]));
        }
        child = parent;
    }
    let self_signed = child.subject() == child.issuer() && child.verify_signature(None).is_ok();
    let trusted = if self_signed {
        anchors.trusts(child)
    } else {
        anchors.issuer_of(child)
    };
    if !trusted {
        return Err(VerifyError::Chain(format!(
            "the chain ends at {}, which is not a root certkeeper trusts (the system store or api.ca_file)",
            if self_signed { child.subject() } else { child.issuer() }
        )));
    }
    if intermediates.is_empty() {
        return Err(VerifyError::Chain(
            "no intermediate certificate between the leaf and the root".into(),
        ));
    }
    Ok(Verified {
        info,
        leaf_pem: to_pem(&leaf_der),
        intermediates_pem: intermediates,
    })
}

fn is_ca(cert: &X509Certificate<'_>) -> bool {
    cert.basic_constraints().ok().flatten().is_some_and(|b| b.value.ca)
}

/// The `depth`th issuer above the leaf (0: the leaf's own) must be a CA that may sign certificates
/// that deep below it, and, if it limits its extended key usage, for TLS servers (for e-mail
/// with `mail`).
fn check_issuer(ca: &X509Certificate<'_>, depth: usize, mail: bool) -> Result<(), VerifyError> {
    let refuse = |why: String| Err(VerifyError::Usage(format!("{}: {why}", ca.subject())));
    let Some(bc) = ca.basic_constraints().ok().flatten().filter(|b| b.value.ca) else {
        return refuse("it is not a CA (basicConstraints), yet it issued a certificate of the chain".into());
    };
    if let Some(limit) = bc.value.path_len_constraint
        && depth > limit as usize
    {
        return refuse(format!(
            "its path length allows {limit} CA(s) below it, the chain has {depth}"
        ));
    }
    if let Ok(Some(ku)) = ca.key_usage()
        && !ku.value.key_cert_sign()
    {
        return refuse("its key usage does not allow signing certificates".into());
    }
    if let Ok(Some(eku)) = ca.extended_key_usage()
        && !(eku.value.any
            || if mail {
                eku.value.email_protection
            } else {
                eku.value.server_auth
            })
    {
        return refuse(format!(
            "its extended key usage does not cover {}",
            if mail { "e-mail" } else { "TLS servers" }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
