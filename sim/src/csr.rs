//! Reading a certificate signing request the way the CA's prepareOrder does: on one line or on
//! several, with its signature checked and its key judged.

use base64::Engine;
use x509_parser::prelude::*;
use x509_parser::public_key::PublicKey;

/// What prepareOrder learns from a CSR.
#[derive(Clone, Debug)]
pub struct CsrInfo {
    /// The CSR as PEM with `\n` line breaks, as the API answers it.
    pub pem: String,
    /// The subject's common name.
    pub common_name: Option<String>,
    /// DNS names and e-mail addresses from the subjectAltName extension, in order.
    pub alt_names: Vec<String>,
    pub country: Option<String>,
    pub state: Option<String>,
    pub city: Option<String>,
    pub organization: Option<String>,
    pub organization_unit: Option<String>,
    pub email: Option<String>,
    /// `RSA` or `ECC`.
    pub algorithm: &'static str,
    pub key_size: usize,
    /// The DER SubjectPublicKeyInfo, which the issued leaf certifies.
    pub spki_der: Vec<u8>,
}

impl CsrInfo {
    /// Every name the certificate is for: the common name first, then the other SANs.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.common_name.iter().cloned().collect();
        for n in &self.alt_names {
            if !names.iter().any(|m| m.eq_ignore_ascii_case(n)) {
                names.push(n.clone());
            }
        }
        names
    }
}

/// Why a CSR was refused, worded for the API's error message.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("the CSR could not be parsed: {0}")]
    Unparseable(String),
    #[error("the CSR signature is not valid")]
    BadSignature,
    #[error("RSA keys must have at least 2048 bits, this one has {0}")]
    WeakRsa(usize),
    #[error("unsupported key type {0} (use RSA of 2048 bits or more, or ECDSA P-256 or P-384)")]
    UnsupportedKey(String),
    #[error("the CSR names no common name and no subjectAltName")]
    NoNames,
}

/// Parses and checks a CSR given as PEM, on one line or several.
pub fn parse(text: &str) -> Result<CsrInfo, CsrError> {
    let der = decode_pem_loosely(text)?;
    let (rest, csr) = X509CertificationRequest::from_der(&der).map_err(|e| CsrError::Unparseable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Unparseable("trailing bytes after the request".into()));
    }
    let info = &csr.certification_request_info;
    let subject = &info.subject;
    let first = |it: &mut dyn Iterator<Item = &AttributeTypeAndValue>| {
        it.next().and_then(|a| a.as_str().ok()).map(str::to_owned)
    };
    let spki = &info.subject_pki;
    let (algorithm, key_size) = match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            if bits < 2048 {
                return Err(CsrError::WeakRsa(bits));
            }
            ("RSA", bits)
        }
        Ok(PublicKey::EC(ec)) => match ec.key_size() {
            256 | 384 => ("ECC", ec.key_size()),
            n => return Err(CsrError::UnsupportedKey(format!("EC with {n} bits"))),
        },
        Ok(other) => {
            return Err(CsrError::UnsupportedKey(
                format!("{other:?}").chars().take(40).collect(),
            ));
        }
        Err(e) => return Err(CsrError::UnsupportedKey(e.to_string())),
    };
    // The key is judged first: a short RSA key deserves that answer, not "bad signature".
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    let mut alt_names = Vec::new();
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for gn in &san.general_names {
                    match gn {
                        GeneralName::DNSName(n) | GeneralName::RFC822Name(n) => alt_names.push(n.to_ascii_lowercase()),
                        other => alt_names.push(other.to_string()),
                    }
                }
            }
        }
    }
    let parsed = CsrInfo {
        pem: ::pem::encode(&::pem::Pem::new("CERTIFICATE REQUEST", der.clone())).replace("\r\n", "\n"),
        common_name: first(&mut subject.iter_common_name()).map(|s| s.to_ascii_lowercase()),
        alt_names,
        country: first(&mut subject.iter_country()),
        state: first(&mut subject.iter_state_or_province()),
        city: first(&mut subject.iter_locality()),
        organization: first(&mut subject.iter_organization()),
        organization_unit: first(&mut subject.iter_organizational_unit()),
        email: first(&mut subject.iter_email()),
        algorithm,
        key_size,
        spki_der: spki.raw.to_vec(),
    };
    if parsed.names().is_empty() {
        return Err(CsrError::NoNames);
    }
    Ok(parsed)
}

/// Decodes PEM whether its body is wrapped, on one line with the markers, or uses `\r\n`.
fn decode_pem_loosely(text: &str) -> Result<Vec<u8>, CsrError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE REQUEST-----";
    const END: &str = "-----END CERTIFICATE REQUEST-----";
    let text = text.replace("\\n", "\n");
    let start = text
        .find(BEGIN)
        .ok_or_else(|| CsrError::Unparseable(format!("no '{BEGIN}' line")))?;
    let body = &text[start + BEGIN.len()..];
    let end = body
        .find(END)
        .ok_or_else(|| CsrError::Unparseable(format!("no '{END}' line")))?;
    let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| CsrError::Unparseable(format!("bad base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(names: &[&str], key: &rcgen::KeyPair) -> String {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn reads_names_and_key_from_a_csr_on_one_line_or_several() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = csr(&["www.example.com", "example.com"], &key);
        let one_line = pem.lines().collect::<Vec<_>>().join("");
        for text in [pem.as_str(), one_line.as_str(), &pem.replace('\n', "\r\n")] {
            let info = parse(text).unwrap();
            assert_eq!(info.names(), ["www.example.com", "example.com"]);
            assert_eq!((info.algorithm, info.key_size), ("ECC", 256));
        }
    }

    #[test]
    fn refuses_garbage_a_broken_signature_and_short_rsa_keys() {
        assert!(matches!(parse("hello"), Err(CsrError::Unparseable(_))));
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = csr(&["www.example.com"], &key);
        let der = decode_pem_loosely(&pem).unwrap();
        let mut broken = der.clone();
        let n = broken.len();
        broken[n - 5] ^= 0x55;
        let broken_pem = ::pem::encode(&::pem::Pem::new("CERTIFICATE REQUEST", broken));
        assert!(matches!(
            parse(&broken_pem),
            Err(CsrError::BadSignature | CsrError::Unparseable(_))
        ));
    }
}
