//! Signed upload URLs.
//!
//! A PUT URL names its slot and carries `expires` (Unix seconds) and `sig`, an HMAC-SHA256
//! under the service's secret of the slot id, size, content type and expiry. The slot itself
//! is stored too, and each PUT is checked against it; the signature keeps anyone who learns a
//! slot id (it is also in the GET URL) from uploading to it, and bounds the URL's life.
//!
//! [`external_token`] is the scheme external upload services verify (the `v2` token): an
//! HMAC-SHA256 under the shared secret of `ID/FILENAME`, a NUL, the size in decimal, a NUL
//! and the content type, in lowercase hex, as the `v2` query parameter of the PUT URL.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// What a signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed<'a> {
    pub id: &'a str,
    pub size: u64,
    pub content_type: Option<&'a str>,
    /// Unix seconds after which the URL is refused.
    pub expires: u64,
}

/// Why a PUT URL is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    BadSignature,
    Expired,
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        unreachable!("HMAC takes keys of any length");
    };
    for (i, part) in parts.iter().enumerate() {
        // Separators keep the fields apart: none of them holds a NUL.
        if i > 0 {
            mac.update(&[0]);
        }
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

impl Signed<'_> {
    fn digest(&self, key: &[u8]) -> Vec<u8> {
        let (size, expires) = (self.size.to_string(), self.expires.to_string());
        let content_type = self.content_type.unwrap_or("");
        mac(
            key,
            &[
                b"xmppd upload put",
                self.id.as_bytes(),
                size.as_bytes(),
                content_type.as_bytes(),
                expires.as_bytes(),
            ],
        )
    }

    /// The `sig` parameter, in lowercase hex.
    pub fn sign(&self, key: &[u8]) -> String {
        hex::encode(self.digest(key))
    }

    /// Checks `sig` (constant time) and then the expiry against `now` (Unix seconds).
    pub fn verify(&self, key: &[u8], sig: &str, now: u64) -> Result<(), Refused> {
        let given = hex::decode(sig).map_err(|_| Refused::BadSignature)?;
        if !bool::from(given.ct_eq(&self.digest(key))) {
            return Err(Refused::BadSignature);
        }
        if now > self.expires {
            return Err(Refused::Expired);
        }
        Ok(())
    }
}

/// The `v2` token of an external upload service for the file at `path` (`ID/FILENAME`, not
/// percent-encoded) of `size` bytes and `content_type`.
pub fn external_token(secret: &[u8], path: &str, size: u64, content_type: &str) -> String {
    let size = size.to_string();
    let parts: [&[u8]; 3] = [path.as_bytes(), size.as_bytes(), content_type.as_bytes()];
    hex::encode(mac(secret, &parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn slot() -> Signed<'static> {
        Signed {
            id: "00112233445566778899aabbccddeeff",
            size: 1000,
            content_type: Some("image/png"),
            expires: 2_000,
        }
    }

    #[test]
    fn a_signature_holds_until_it_expires() {
        let sig = slot().sign(KEY);
        assert_eq!(sig.len(), 64);
        assert_eq!(slot().verify(KEY, &sig, 1_000), Ok(()));
        assert_eq!(slot().verify(KEY, &sig, 2_000), Ok(()));
        assert_eq!(slot().verify(KEY, &sig, 2_001), Err(Refused::Expired));
    }

    #[test]
    fn every_signed_field_and_the_key_matter() {
        let sig = slot().sign(KEY);
        let changed = [
            Signed {
                id: "00112233445566778899aabbccddeefe",
                ..slot()
            },
            Signed {
                size: 1001,
                ..slot()
            },
            Signed {
                content_type: Some("text/html"),
                ..slot()
            },
            Signed {
                content_type: None,
                ..slot()
            },
            // A later expiry cannot be granted by editing the URL.
            Signed {
                expires: 9_999,
                ..slot()
            },
        ];
        for s in changed {
            assert_eq!(s.verify(KEY, &sig, 0), Err(Refused::BadSignature), "{s:?}");
        }
        assert_eq!(
            slot().verify(b"another key", &sig, 0),
            Err(Refused::BadSignature)
        );
        for bad in ["", "zz", &sig[..62], &sig.to_uppercase()[..10]] {
            assert_eq!(slot().verify(KEY, bad, 0), Err(Refused::BadSignature));
        }
        // Hex is case-insensitive: the same bytes.
        assert_eq!(slot().verify(KEY, &sig.to_uppercase(), 0), Ok(()));
    }

    #[test]
    fn external_tokens_follow_the_shared_scheme() {
        // HMAC-SHA256("secret", "abc/file.txt\0" "5\0" "text/plain"), computed independently
        // (Python: hmac.new(b"secret", b"abc/file.txt\x005\x00text/plain", "sha256")).
        assert_eq!(
            external_token(b"secret", "abc/file.txt", 5, "text/plain"),
            EXPECTED
        );
        assert_ne!(
            external_token(b"secret", "abc/file.txt", 6, "text/plain"),
            EXPECTED
        );
    }

    const EXPECTED: &str = "99573aaa3c89e2a2be492bca77d9a5088fe4e9a9f2b7b54d44154ea4a071bf2f";
}
