//! An S/MIME certificate as one PKCS#12 file (`bundle.p12`) for mail clients: the private key,
//! the certificate and its chain, encrypted with PBES2 (PBKDF2-HMAC-SHA-256, AES-256-CBC) and
//! integrity-protected with an HMAC-SHA-256 MAC, the profile OpenSSL 3 writes by default and
//! current mail clients read (never the legacy RC2 or 3DES).

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey, PrivateKeyChain,
};
use sha2::{Digest, Sha256};

/// PBKDF2 rounds for the key's encryption and for the MAC.
const ITERATIONS: u32 = 100_000;

/// The bundle for `key_pem` (PKCS#8), `leaf_pem` and the intermediates, under `alias` (the
/// mailbox), encrypted with `password`.
pub(crate) fn bundle(
    key_pem: &str,
    leaf_pem: &str,
    chain_pem: &[String],
    alias: &str,
    password: &str,
) -> anyhow::Result<Vec<u8>> {
    let der = |text: &str| -> anyhow::Result<Vec<u8>> { Ok(pem::parse(text)?.into_contents()) };
    let key =
        PrivateKey::from_der(&der(key_pem)?).map_err(|e| anyhow::anyhow!("the key for the PKCS#12 bundle: {e}"))?;
    let leaf = der(leaf_pem)?;
    let mut certs = vec![Certificate::from_der(&leaf).map_err(|e| anyhow::anyhow!("the certificate: {e}"))?];
    for c in chain_pem {
        certs.push(Certificate::from_der(&der(c)?).map_err(|e| anyhow::anyhow!("the chain: {e}"))?);
    }
    // The local key id ties the key to its certificate: the certificate's digest, as OpenSSL's
    // is for the same file written twice.
    let id = Sha256::digest(&leaf).to_vec();
    let mut store = KeyStore::new();
    store.add_entry(
        alias,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(id, key, certs)),
    );
    store
        .writer(password)
        .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .encryption_iterations(ITERATIONS)
        .mac_algorithm(MacAlgorithm::HmacSha256)
        .mac_iterations(ITERATIONS)
        .write()
        .map_err(|e| anyhow::anyhow!("writing the PKCS#12 bundle: {e}"))
}
