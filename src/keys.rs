//! New private keys and their CSRs (rcgen). rcgen's types stay inside this module.
//!
//! The CSR carries the certificate's name as CN and every name as a SAN; the API wants it on a
//! single line, which [`Csr::single_line`] gives.

use crate::config::KeyKind;

/// A private key: its PKCS#8 PEM and the parsed key. Its `Debug` never shows the key.
pub struct PrivateKey {
    pem: String,
    pair: rcgen::KeyPair,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

impl PrivateKey {
    /// Makes a new key of the given kind.
    pub fn generate(kind: KeyKind) -> Result<Self, rcgen::Error> {
        let pair = match kind {
            KeyKind::EcdsaP256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
            KeyKind::EcdsaP384 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?,
            KeyKind::Rsa2048 => rsa(rcgen::RsaKeySize::_2048)?,
            KeyKind::Rsa3072 => rsa(rcgen::RsaKeySize::_3072)?,
            KeyKind::Rsa4096 => rsa(rcgen::RsaKeySize::_4096)?,
        };
        Ok(Self {
            pem: pair.serialize_pem(),
            pair,
        })
    }

    /// Loads a key written earlier.
    pub fn from_pem(pem: &str) -> Result<Self, rcgen::Error> {
        Ok(Self {
            pair: rcgen::KeyPair::from_pem(pem)?,
            pem: pem.to_string(),
        })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The DER SubjectPublicKeyInfo, which an issued certificate must carry.
    pub fn public_key_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(&self.pair)
    }

    /// Builds a CSR with `names[0]` as CN and every name as a SAN.
    /// A CSR for `names` (DNS names; for an S/MIME certificate, the one mailbox, as an
    /// rfc822Name), the first as the common name.
    pub fn csr(&self, names: &[String]) -> Result<Csr, rcgen::Error> {
        let mut params = if names.first().is_some_and(|n| n.contains('@')) {
            let mut p = rcgen::CertificateParams::default();
            p.subject_alt_names = names
                .iter()
                .map(|n| Ok(rcgen::SanType::Rfc822Name(n.as_str().try_into()?)))
                .collect::<Result<_, rcgen::Error>>()?;
            p
        } else {
            rcgen::CertificateParams::new(names.to_vec())?
        };
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = names.first() {
            params.distinguished_name.push(rcgen::DnType::CommonName, cn.as_str());
        }
        let csr = params.serialize_request(&self.pair)?;
        Ok(Csr { pem: csr.pem()? })
    }
}

fn rsa(size: rcgen::RsaKeySize) -> Result<rcgen::KeyPair, rcgen::Error> {
    rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size)
}

/// A certificate signing request.
#[derive(Clone, Debug)]
pub struct Csr {
    pem: String,
}

impl Csr {
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The PEM with its line breaks removed, as the API's documentation asks.
    pub fn single_line(&self) -> String {
        self.pem.lines().map(str::trim).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csr_names_every_host_and_fits_on_one_line() {
        let key = PrivateKey::generate(KeyKind::EcdsaP256).unwrap();
        let csr = key.csr(&["www.example.com".into(), "example.com".into()]).unwrap();
        let line = csr.single_line();
        assert!(!line.contains('\n'));
        assert!(line.starts_with("-----BEGIN CERTIFICATE REQUEST-----MII"));
        // Read it back with x509-parser, which we did not write.
        let der = pem::parse(csr.pem()).unwrap();
        use x509_parser::prelude::FromDer;
        let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(der.contents()).unwrap();
        req.verify_signature().unwrap();
        let cn = req
            .certification_request_info
            .subject
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(cn, "www.example.com");
        assert_eq!(
            req.certification_request_info.subject_pki.raw,
            key.public_key_der().as_slice()
        );
    }

    #[test]
    fn keys_of_every_kind_are_made_and_never_shown_in_debug_output() {
        for kind in [KeyKind::EcdsaP256, KeyKind::EcdsaP384, KeyKind::Rsa2048] {
            let key = PrivateKey::generate(kind).unwrap();
            assert!(key.pem().contains("PRIVATE KEY"));
            assert_eq!(format!("{key:?}"), "PrivateKey(..)");
            assert_eq!(
                PrivateKey::from_pem(key.pem()).unwrap().public_key_der(),
                key.public_key_der()
            );
        }
    }
}
