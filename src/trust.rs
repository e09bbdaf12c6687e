//! The roots certkeeper trusts, for the API's TLS and for the root a delivered chain ends at:
//! Mozilla's, compiled in (`api.roots = "built-in"`, the default), or the system store
//! (`"system"`), and `api.ca_file` always, on top. The system store is read at most once per
//! process, and only when asked for: reading and parsing every file under `/etc/ssl/certs`
//! cost a one-shot run more CPU than everything else it did.

use std::sync::OnceLock;

use rustls_pki_types::CertificateDer;

use crate::config::Roots;

/// The roots of `roots` (without `api.ca_file`), DER.
pub fn roots(roots: Roots) -> &'static [CertificateDer<'static>] {
    match roots {
        Roots::BuiltIn => webpki_root_certs::TLS_SERVER_ROOT_CERTS,
        Roots::System => system(),
    }
}

/// The system store, read once.
fn system() -> &'static [CertificateDer<'static>] {
    static SYSTEM: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    SYSTEM.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "a certificate of the system store could not be loaded");
        }
        if found.certs.is_empty() {
            tracing::warn!(
                "api.roots = \"system\", but the system store holds no certificate: only api.ca_file is trusted"
            );
        }
        found.certs
    })
}

/// The certificates of a PEM bundle (`api.ca_file`), DER; what is not a certificate is skipped.
pub fn pem_certificates(pem: &str) -> Vec<Vec<u8>> {
    ::pem::parse_many(pem)
        .unwrap_or_default()
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compiled-in roots are Mozilla's: well over a hundred, the ones the API's and the
    /// CAs' certificates chain to among them.
    #[test]
    fn the_built_in_roots_are_mozillas() {
        let built_in = roots(Roots::BuiltIn);
        assert!(built_in.len() > 100, "{}", built_in.len());
        let subjects: Vec<String> = built_in
            .iter()
            .filter_map(|d| x509_parser::parse_x509_certificate(d).ok())
            .map(|(_, c)| c.subject().to_string())
            .collect();
        for ca in [
            "USERTrust RSA Certification Authority",
            "DigiCert Global Root G2",
            "ISRG Root X1",
        ] {
            assert!(subjects.iter().any(|s| s.contains(ca)), "{ca} is missing");
        }
    }
}
