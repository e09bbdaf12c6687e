//! The served check: what the web servers hand out, compared with what certkeeper installed.
//!
//! A reload hook that exits 0 proves little: another vhost may point elsewhere, a second server
//! may have been missed, a config may name a copy instead of `live/NAME`. After the reload, each
//! address of `serve_check` is asked over TLS, with SNI set to each of the certificate's names,
//! for the certificate it hands out, until every one hands out the new serial twice in a row
//! (an old nginx worker may take a connection while the new ones start) or
//! `serve_check_timeout` has passed, every 200 ms (nginx takes about 0.2 s to switch).
//!
//! No trust decision is made here (the installed certificate was verified before it was
//! installed): the check compares serials. The handshake's signature is checked against the
//! certificate handed out, so a server that hands out a certificate proves it holds its key.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::time::Instant;

use crate::store::Served;

/// The pause between two looks at an address that does not hand out the new certificate yet.
pub(crate) const RETRY: Duration = Duration::from_millis(200);

/// How many looks in a row must find the new certificate: nginx's old workers may still take a
/// connection or two while the new ones start, so one look that finds it proves less.
const IN_A_ROW: u32 = 2;

/// The longest one look (connection and handshake) may take.
const LOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// The label put in front of a wildcard name's domain to ask for it by SNI (`*.example.com` is
/// asked for as `certkeeper-check.example.com`).
const WILDCARD_LABEL: &str = "certkeeper-check";

/// Asks every address, for every name, which certificate it hands out, until each hands out
/// `expected` twice in a row or `timeout` has passed. One result per address: where a name was not served
/// `expected`, the first such name and what it got.
pub(crate) async fn check(addresses: &[String], names: &[String], expected: &str, timeout: Duration) -> Vec<Served> {
    let deadline = Instant::now() + timeout;
    let pairs: Vec<(usize, String)> = (0..addresses.len())
        .flat_map(|a| names.iter().map(move |n| (a, sni_of(n))))
        .collect();
    let mut last: Vec<Option<Look>> = vec![None; pairs.len()];
    let mut pending: Vec<usize> = (0..pairs.len()).collect();
    let mut seen_in_a_row: Vec<u32> = vec![0; pairs.len()];
    loop {
        let mut looks = tokio::task::JoinSet::new();
        for &i in &pending {
            let address = addresses[pairs[i].0].clone();
            let sni = pairs[i].1.clone();
            let within = deadline
                .saturating_duration_since(Instant::now())
                .clamp(RETRY, LOOK_TIMEOUT);
            looks.spawn(async move { (i, look(&address, &sni, within).await) });
        }
        while let Some(joined) = looks.join_next().await {
            if let Ok((i, seen)) = joined {
                last[i] = Some(seen);
            }
        }
        for &i in &pending {
            let hit = last[i].as_ref().is_some_and(|l| l.serial.as_deref() == Some(expected));
            seen_in_a_row[i] = if hit { seen_in_a_row[i] + 1 } else { 0 };
        }
        pending.retain(|&i| seen_in_a_row[i] < IN_A_ROW);
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(RETRY.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
    let at = time::OffsetDateTime::now_utc().unix_timestamp();
    addresses
        .iter()
        .enumerate()
        .map(|(a, address)| {
            let mine: Vec<usize> = (0..pairs.len()).filter(|&i| pairs[i].0 == a).collect();
            // The first name that went wrong speaks for the address; else any name.
            let i = mine
                .iter()
                .copied()
                .find(|i| pending.contains(i))
                .or_else(|| mine.first().copied())
                .unwrap_or(0);
            let seen = last
                .get(i)
                .cloned()
                .flatten()
                .unwrap_or_else(|| Look::failed("not looked at"));
            Served {
                address: address.clone(),
                name: pairs.get(i).map(|p| p.1.clone()).unwrap_or_default(),
                expected: expected.to_string(),
                serial: seen.serial,
                not_after: seen.not_after,
                error: seen.error,
                at,
            }
        })
        .collect()
}

/// The name to ask for by SNI.
fn sni_of(name: &str) -> String {
    match name.strip_prefix("*.") {
        Some(domain) => format!("{WILDCARD_LABEL}.{domain}"),
        None => name.to_string(),
    }
}

/// What one look found.
#[derive(Clone, Debug)]
struct Look {
    serial: Option<String>,
    not_after: Option<i64>,
    error: Option<String>,
}

impl Look {
    fn failed(why: impl Into<String>) -> Self {
        Self {
            serial: None,
            not_after: None,
            error: Some(why.into()),
        }
    }
}

/// Connects to `address`, asks for `sni`, and reads the certificate handed out.
async fn look(address: &str, sni: &str, within: Duration) -> Look {
    match tokio::time::timeout(within, handed_out(address, sni)).await {
        Ok(Ok(der)) => match crate::x509::info_der(&der) {
            Ok(info) => Look {
                serial: Some(info.serial),
                not_after: Some(info.not_after.unix_timestamp()),
                error: None,
            },
            Err(e) => Look::failed(format!("hands out a certificate that cannot be read: {e}")),
        },
        Ok(Err(e)) => Look::failed(e),
        Err(_) => Look::failed(format!("no TLS handshake within {} ms", within.as_millis())),
    }
}

/// The leaf certificate (DER) `address` hands out for `sni`.
async fn handed_out(address: &str, sni: &str) -> Result<Vec<u8>, String> {
    let server_name = ServerName::try_from(sni.to_string()).map_err(|e| format!("'{sni}' cannot be asked for: {e}"))?;
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(client_config().clone());
    let tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let (_, conn) = tls.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| "handed out no certificate".to_string())
}

fn client_config() -> &'static Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(Arc::new(Compare(provider)))
                    .with_no_client_auth()
            })
            // The provider's defaults are always a valid choice.
            .unwrap_or_else(|e| panic!("the TLS client for the served check: {e}"));
        let mut config = config;
        // Every look a full handshake: a resumed session reports the certificate of the
        // session it resumes (kept by name, not by address, and maybe another server's behind
        // shared ticket keys) and signs nothing.
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    })
}

/// Accepts any certificate (the check compares, it does not trust), but checks that the server
/// signed the handshake with the key of the certificate it handed out.
#[derive(Debug)]
struct Compare(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Compare {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TLS server on loopback handing out a fresh self-signed certificate for `names`;
    /// returns its address and the certificate's serial.
    async fn server(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names).unwrap().self_signed(&key).unwrap();
        let serial = crate::x509::info(&cert.pem()).unwrap().serial;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        });
        (address, serial)
    }

    #[tokio::test]
    async fn a_server_handing_out_the_expected_certificate_passes_at_once() {
        let (address, serial) = server(&["www.example.com", "*.example.com"]).await;
        let started = std::time::Instant::now();
        let names = ["www.example.com".to_string(), "*.example.com".to_string()];
        let seen = check(std::slice::from_ref(&address), &names, &serial, Duration::from_secs(10)).await;
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        assert_eq!(seen.len(), 1);
        assert!(seen[0].ok(), "{seen:?}");
        assert_eq!(seen[0].serial.as_deref(), Some(serial.as_str()));
        assert!(seen[0].not_after.is_some());
    }

    /// Another certificate, or nothing at all, is waited for until the timeout, then reported
    /// with what the address handed out instead, per address.
    #[tokio::test]
    async fn another_certificate_or_no_server_is_reported_after_the_timeout() {
        let (address, other) = server(&["www.example.com"]).await;
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let started = std::time::Instant::now();
        let seen = check(
            &[address.clone(), closed.clone()],
            &["www.example.com".to_string()],
            "0A1B",
            Duration::from_millis(800),
        )
        .await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(3),
            "{took:?}"
        );
        assert!(!seen[0].ok() && !seen[1].ok(), "{seen:?}");
        assert_eq!(
            seen[0].mismatch(),
            format!("{address} serves {other} for www.example.com")
        );
        assert!(
            seen[1]
                .mismatch()
                .starts_with(&format!("{closed} serves nothing for www.example.com: cannot connect")),
            "{}",
            seen[1].mismatch()
        );
    }

    #[test]
    fn a_wildcard_is_asked_for_under_its_domain() {
        assert_eq!(sni_of("*.example.com"), "certkeeper-check.example.com");
        assert_eq!(sni_of("www.example.com"), "www.example.com");
    }
}
