//! Server dialback (XEP-0220) with keys as XEP-0185 recommends.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The dialback namespace (`db:result`, `db:verify`).
pub const NS_DIALBACK: &str = "jabber:server:dialback";
/// The stream feature announcing dialback with error support (XEP-0220 §2.4.1).
pub const NS_DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";

/// The secret dialback keys are derived from; one per process (XEP-0185 §3: it only has to
/// outlive the verifications of the streams this process opened).
pub struct DialbackSecret(String);

impl DialbackSecret {
    pub fn random() -> Self {
        let bytes: [u8; 32] = rand::random();
        DialbackSecret(hex::encode(bytes))
    }

    #[cfg(test)]
    fn from(secret: &str) -> Self {
        DialbackSecret(secret.to_owned())
    }

    /// XEP-0185 §2: HMAC-SHA256 keyed with the hex SHA-256 of the secret, over
    /// "receiving originating stream-id", in lower-case hex.
    pub fn key(&self, receiving: &str, originating: &str, stream_id: &str) -> String {
        let hashed = hex::encode(Sha256::digest(self.0.as_bytes()));
        let mut mac =
            Hmac::<Sha256>::new_from_slice(hashed.as_bytes()).expect("HMAC takes any key length");
        mac.update(receiving.as_bytes());
        mac.update(b" ");
        mac.update(originating.as_bytes());
        mac.update(b" ");
        mac.update(stream_id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `key` is the one this server gave for the stream `stream_id` it opened as
    /// `originating` to `receiving`; compared in constant time.
    pub fn verify(&self, receiving: &str, originating: &str, stream_id: &str, key: &str) -> bool {
        let expected = self.key(receiving, originating, stream_id);
        expected.as_bytes().ct_eq(key.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_xep_0185_example() {
        let secret = DialbackSecret::from("s3cr3tf0rd14lb4ck");
        let key = secret.key("xmpp.example.com", "example.org", "D60000229F");
        assert_eq!(
            key,
            "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643"
        );
    }

    #[test]
    fn keys_match_the_xep_0220_example() {
        let secret = DialbackSecret::from("s3cr3tf0rd14lb4ck");
        let key = secret.key("montague.example", "capulet.example", "D60000229F");
        assert_eq!(
            key,
            "b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3"
        );
    }

    #[test]
    fn a_key_is_bound_to_every_input() {
        let secret = DialbackSecret::from("s3cr3tf0rd14lb4ck");
        let key = secret.key("a.example", "b.example", "id1");
        assert!(secret.verify("a.example", "b.example", "id1", &key));
        assert!(!secret.verify("b.example", "a.example", "id1", &key));
        assert!(!secret.verify("a.example", "b.example", "id2", &key));
        assert!(!DialbackSecret::from("other").verify("a.example", "b.example", "id1", &key));
        assert!(!secret.verify("a.example", "b.example", "id1", &key[1..]));
    }
}
