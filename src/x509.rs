//! Reading and verifying delivered certificates (x509-parser). No parser type leaves this module.
//!
//! A delivery is accepted only when the leaf certifies our public key, covers every configured
//! name, is valid now, and links leaf → intermediate(s) → the returned root, each signature
//! checked, in the order the API lists them.

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
}

/// Parses one PEM certificate.
pub fn info(pem_text: &str) -> Result<CertInfo, VerifyError> {
    let der = pem_der(pem_text)?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| VerifyError::Unreadable(e.to_string()))?;
    Ok(cert_info(&cert))
}

fn cert_info(cert: &X509Certificate<'_>) -> CertInfo {
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    GeneralName::DNSName(n) => Some(n.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
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

fn pem_der(pem_text: &str) -> Result<Vec<u8>, VerifyError> {
    let p = ::pem::parse(pem_text.trim()).map_err(|e| VerifyError::Unreadable(e.to_string()))?;
    if p.tag() != "CERTIFICATE" {
        return Err(VerifyError::Unreadable(format!(
            "expected a CERTIFICATE, found {}",
            p.tag()
        )));
    }
    Ok(p.into_contents())
}

/// Verifies a delivery: `leaf` and `chain` (as listed by the API, intermediates then root)
/// against our public key (`spki_der`), the configured `names` and `now`.
pub fn verify(
    leaf: &str,
    chain: &[String],
    spki_der: &[u8],
    names: &[String],
    now: OffsetDateTime,
) -> Result<CertInfo, VerifyError> {
    let leaf_der = pem_der(leaf)?;
    let (_, leaf_cert) = X509Certificate::from_der(&leaf_der).map_err(|e| VerifyError::Unreadable(e.to_string()))?;
    if leaf_cert.public_key().raw != spki_der {
        return Err(VerifyError::WrongKey);
    }
    let info = cert_info(&leaf_cert);
    for n in names {
        if !info.names.iter().any(|m| m.eq_ignore_ascii_case(n)) {
            return Err(VerifyError::MissingName(n.clone()));
        }
    }
    if now < info.not_before {
        return Err(VerifyError::NotYetValid(info.not_before));
    }
    if now >= info.not_after {
        return Err(VerifyError::Expired(info.not_after));
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
        child = parent;
    }
    if child.subject() != child.issuer() || child.verify_signature(None).is_err() {
        return Err(VerifyError::Chain(format!(
            "the chain ends at {}, which is not a self-signed root",
            child.subject()
        )));
    }
    if parsed.len() < 2 {
        return Err(VerifyError::Chain(
            "no intermediate certificate between the leaf and the root".into(),
        ));
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodns_sim::Mutation;
    use autodns_sim::ca::TestCa;

    struct Fixture {
        ca: TestCa,
        key: crate::keys::PrivateKey,
        names: Vec<String>,
    }

    fn fixture() -> Fixture {
        Fixture {
            ca: TestCa::new().unwrap(),
            key: crate::keys::PrivateKey::generate(crate::config::KeyKind::EcdsaP256).unwrap(),
            names: vec!["www.example.com".into(), "example.com".into()],
        }
    }

    fn check(f: &Fixture, mutation: Option<Mutation>) -> Result<CertInfo, VerifyError> {
        let spki = f.key.public_key_der();
        let not_after = OffsetDateTime::now_utc() + ::time::Duration::days(30);
        let issued = f.ca.issue(&spki, &f.names, false, not_after, mutation).unwrap();
        let chain: Vec<String> = issued.chain.iter().map(|(_, p)| p.clone()).collect();
        verify(&issued.leaf_pem, &chain, &spki, &f.names, OffsetDateTime::now_utc())
    }

    #[test]
    fn a_good_delivery_is_accepted() {
        let f = fixture();
        let info = check(&f, None).unwrap();
        assert_eq!(info.names, f.names);
        assert_eq!(info.serial.len() % 2, 0);
    }

    #[test]
    fn every_spoiled_delivery_is_refused() {
        let f = fixture();
        assert_eq!(check(&f, Some(Mutation::WrongKey)), Err(VerifyError::WrongKey));
        assert_eq!(
            check(&f, Some(Mutation::MissingSan)),
            Err(VerifyError::MissingName("example.com".into()))
        );
        assert!(matches!(
            check(&f, Some(Mutation::Expired)),
            Err(VerifyError::Expired(_))
        ));
        assert!(matches!(
            check(&f, Some(Mutation::NotYetValid)),
            Err(VerifyError::NotYetValid(_))
        ));
        assert!(matches!(
            check(&f, Some(Mutation::ChainOutOfOrder)),
            Err(VerifyError::Chain(_))
        ));
        assert!(matches!(
            check(&f, Some(Mutation::MissingIntermediate)),
            Err(VerifyError::Chain(_))
        ));
    }

    #[test]
    fn garbage_is_unreadable() {
        assert!(matches!(info("not a certificate"), Err(VerifyError::Unreadable(_))));
    }
}
