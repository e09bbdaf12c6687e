//! Sealing with the fleet key: what holds a private key (an issued generation, an order's
//! journal) is encrypted with AES-256-GCM before it goes to etcd, so that an etcd backup or a
//! reader of etcd without the fleet key never sees a key. The etcd key it is stored under is the
//! associated data: a sealed value moved to another key does not open.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;

/// What a sealed value starts with: the format, so that a later one can be told apart.
const MAGIC: &str = "ck-sealed-1:";

pub(crate) struct Seal {
    key: LessSafeKey,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seal(..)")
    }
}

impl Seal {
    /// From the fleet key, 64 hex digits (checked by the configuration).
    pub(crate) fn new(hex: &str) -> Result<Self, String> {
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("zz"), 16))
            .collect::<Result<_, _>>()
            .map_err(|_| "the fleet key is not hex".to_string())?;
        if bytes.len() != 32 {
            return Err("the fleet key must be 32 bytes".into());
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| "the fleet key is not usable".to_string())?;
        Ok(Self {
            key: LessSafeKey::new(key),
        })
    }

    /// `plain` sealed for the etcd key `at`: a random nonce, then the ciphertext and its tag,
    /// in base64 after [`MAGIC`].
    pub(crate) fn seal(&self, at: &str, plain: &[u8]) -> Vec<u8> {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut data = plain.to_vec();
        // Sealing in place with a fresh nonce cannot fail for inputs of this size.
        if self
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(at.as_bytes()),
                &mut data,
            )
            .is_err()
        {
            data.clear();
        }
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&data);
        let mut text = MAGIC.as_bytes().to_vec();
        text.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(out).as_bytes());
        text
    }

    /// Opens what [`Self::seal`] sealed for `at`; a wrong fleet key, a changed byte or a value
    /// moved from another key are refused.
    pub(crate) fn open(&self, at: &str, sealed: &[u8]) -> Result<Vec<u8>, String> {
        let body = sealed
            .strip_prefix(MAGIC.as_bytes())
            .ok_or_else(|| format!("{at} is not sealed by certkeeper"))?;
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| format!("{at} is not sealed by certkeeper"))?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(format!("{at} is too short to be sealed"));
        }
        let mut nonce = [0; NONCE_LEN];
        nonce.copy_from_slice(&raw[..NONCE_LEN]);
        let mut data = raw.split_off(NONCE_LEN);
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(at.as_bytes()), &mut data)
            .map_err(|_| {
                format!("{at} does not open with this member's fleet key: the fleet key differs from the leader's, or the value was changed")
            })?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const K2: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_at_its_place() {
        let s = Seal::new(K1).unwrap();
        let plain = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMG\n-----END PRIVATE KEY-----\n";
        let sealed = s.seal("/ck/material/a", plain);
        let text = String::from_utf8(sealed.clone()).unwrap();
        assert!(text.starts_with(MAGIC) && !text.contains("PRIVATE KEY") && !text.contains("MIGHAgEAMBMG"));
        assert_eq!(s.open("/ck/material/a", &sealed).unwrap(), plain);
        // Two seals of the same value differ (a fresh nonce each time).
        assert_ne!(s.seal("/ck/material/a", plain), sealed);
        let e = Seal::new(K2).unwrap().open("/ck/material/a", &sealed).unwrap_err();
        assert!(e.contains("fleet key"), "{e}");
        assert!(s.open("/ck/material/b", &sealed).is_err());
        let mut changed = sealed.clone();
        let last = changed.len() - 3;
        changed[last] = if changed[last] == b'A' { b'B' } else { b'A' };
        assert!(s.open("/ck/material/a", &changed).is_err());
        assert!(s.open("/ck/material/a", plain).is_err());
        assert!(Seal::new("00").is_err());
    }
}
