//! The simulator's test CA: a root and an intermediate made at start, which sign leaves for the
//! public key of the CSR and the names of the order.

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::faults::Mutation;

/// A leaf as the API delivers it.
#[derive(Clone, Debug)]
pub struct Issued {
    pub leaf_pem: String,
    /// Hex serial number, upper case, as the API writes it.
    pub serial: String,
    pub not_after: OffsetDateTime,
    /// `(caType, PEM)` in the order `certificationAuthority` lists them.
    pub chain: Vec<(String, String)>,
}

/// A root and an intermediate CA.
pub struct TestCa {
    root_pem: String,
    intermediate_pem: String,
    intermediate: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// Makes a fresh root and intermediate, valid for ten years.
    pub fn new() -> Result<Self, rcgen::Error> {
        let now = OffsetDateTime::now_utc();
        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut root = ca_params("autodns-sim Test Root CA", now);
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root_cert = root.self_signed(&root_key)?;
        let root_issuer = Issuer::new(root, root_key);

        let int_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut int = ca_params("autodns-sim Test Intermediate CA", now);
        int.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        int.use_authority_key_identifier_extension = true;
        let int_cert = int.signed_by(&int_key, &root_issuer)?;
        Ok(Self {
            root_pem: root_cert.pem(),
            intermediate_pem: int_cert.pem(),
            intermediate: Issuer::new(int, int_key),
        })
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// A TLS server certificate for the API on loopback: `(chain DER, PKCS#8 key DER)`; for
    /// `wrong_host` alone instead, when given.
    pub fn server_identity(&self, wrong_host: Option<&str>) -> Result<(Vec<Vec<u8>>, Vec<u8>), rcgen::Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec![wrong_host.unwrap_or("localhost").to_string()])?;
        if wrong_host.is_none() {
            params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
            params
                .subject_alt_names
                .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        }
        params.distinguished_name.push(DnType::CommonName, "autodns-sim");
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.intermediate)?;
        let int = pem::parse(&self.intermediate_pem).map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        Ok((vec![cert.der().to_vec(), int.into_contents()], key.serialize_der()))
    }

    /// Issues a leaf for `spki_der` covering `names` (DNS names, or an e-mail address for MAIL).
    pub fn issue(
        &self,
        spki_der: &[u8],
        names: &[String],
        mail: bool,
        not_after: OffsetDateTime,
        mutation: Option<Mutation>,
    ) -> Result<Issued, rcgen::Error> {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(first) = names.first() {
            dn.push(DnType::CommonName, first.as_str());
        }
        params.distinguished_name = dn;
        let mut sans: Vec<&String> = names.iter().collect();
        if mutation == Some(Mutation::MissingSan) {
            if sans.len() > 1 {
                sans.pop();
            } else {
                sans.clear();
            }
        }
        params.subject_alt_names = sans
            .into_iter()
            .map(|n| {
                let ia5 = n.as_str().try_into()?;
                Ok(if mail {
                    SanType::Rfc822Name(ia5)
                } else {
                    SanType::DnsName(ia5)
                })
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = not_after;
        match mutation {
            Some(Mutation::Expired) => {
                params.not_before = now - time::Duration::days(30);
                params.not_after = now - time::Duration::days(1);
            }
            Some(Mutation::NotYetValid) => params.not_before = now + time::Duration::days(1),
            _ => {}
        }
        let mut serial = [0u8; 16];
        rand::rng().fill_bytes(&mut serial);
        serial[0] &= 0x7f;
        serial[0] |= 0x01;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![if mail {
            ExtendedKeyUsagePurpose::EmailProtection
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        params.use_authority_key_identifier_extension = true;

        let cert = if mutation == Some(Mutation::WrongKey) {
            let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            params.signed_by(&other, &self.intermediate)?
        } else {
            let spki = rcgen::SubjectPublicKeyInfo::from_der(spki_der)?;
            params.signed_by(&spki, &self.intermediate)?
        };
        let intermediate = ("INTERMEDIATE".to_string(), self.intermediate_pem.clone());
        let root = ("ROOT".to_string(), self.root_pem.clone());
        let chain = match mutation {
            Some(Mutation::ChainOutOfOrder) => vec![root, intermediate],
            Some(Mutation::MissingIntermediate) => vec![root],
            _ => vec![intermediate, root],
        };
        Ok(Issued {
            leaf_pem: cert.pem(),
            serial: serial.iter().map(|b| format!("{b:02X}")).collect(),
            not_after: params.not_after,
            chain,
        })
    }
}

fn ca_params(cn: &str, now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "autodns-sim");
    params.distinguished_name = dn;
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    #[test]
    fn a_leaf_certifies_the_csr_key_for_the_order_names_and_chains_to_the_root() {
        let ca = TestCa::new().unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let names = vec!["www.example.com".to_string(), "example.com".to_string()];
        let not_after = OffsetDateTime::now_utc() + ::time::Duration::days(10);
        let issued = ca
            .issue(
                &rcgen::PublicKeyData::subject_public_key_info(&key),
                &names,
                false,
                not_after,
                None,
            )
            .unwrap();
        let leaf_der = ::pem::parse(&issued.leaf_pem).unwrap();
        let (_, leaf) = X509Certificate::from_der(leaf_der.contents()).unwrap();
        assert_eq!(
            leaf.public_key().raw,
            rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
        );
        let san = leaf.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(san.general_names.len(), 2);
        let int_der = ::pem::parse(&issued.chain[0].1).unwrap();
        let (_, int) = X509Certificate::from_der(int_der.contents()).unwrap();
        leaf.verify_signature(Some(int.public_key())).unwrap();
        assert_eq!(issued.chain[1].1, ca.root_pem());
    }

    #[test]
    fn a_wrong_key_mutation_certifies_another_key() {
        let ca = TestCa::new().unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let names = vec!["www.example.com".to_string()];
        let t = OffsetDateTime::now_utc() + ::time::Duration::days(10);
        let issued = ca
            .issue(
                &rcgen::PublicKeyData::subject_public_key_info(&key),
                &names,
                false,
                t,
                Some(Mutation::WrongKey),
            )
            .unwrap();
        let der = ::pem::parse(&issued.leaf_pem).unwrap();
        let (_, leaf) = X509Certificate::from_der(der.contents()).unwrap();
        assert_ne!(
            leaf.public_key().raw,
            rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
        );
    }
}
