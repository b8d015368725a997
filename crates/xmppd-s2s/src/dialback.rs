//! Server dialback (XEP-0220) with keys as XEP-0185 recommends.

use hmac::{Hmac, Mac};
use minidom::Element;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use xmppd_core::stanza::{elem, Condition, StanzaError, NS_CLIENT, NS_STANZAS};

use crate::xml::renamespace;

/// The dialback namespace (`db:result`, `db:verify`).
pub const NS_DIALBACK: &str = "jabber:server:dialback";
/// The stream feature announcing dialback with error support (XEP-0220 §2.4.1).
pub const NS_DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";

/// What the authoritative server said of a key (XEP-0220 §2.1.2), or the dialback error
/// (§2.4) that kept it from saying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid,
    Error(Condition),
}

/// A dialback error (XEP-0220 §2.4): `<db:result/>` or `<db:verify/>` (`name`) of type
/// `error` answering a request from `to` to `from`, with the stanza error inside. Unlike a
/// stream error it leaves the stream and the domain pairs it carries alone.
pub fn error(name: &str, from: &str, to: &str, id: Option<&str>, err: &StanzaError) -> Element {
    let mut el = elem(
        name,
        NS_DIALBACK,
        &[("from", from), ("to", to), ("type", "error")],
    );
    if let Some(id) = id {
        xmppd_core::stanza::set_attr(&mut el, "id", id);
    }
    // The `<error/>` is `jabber:server` on the wire, as the stanza errors of the stream.
    el.append_child(renamespace(err.to_element(None), NS_CLIENT, NS_DIALBACK));
    el
}

/// The condition of a dialback error, for the log.
pub fn error_condition(el: &Element) -> String {
    (el.children())
        .filter(|c| c.name() == "error")
        .flat_map(|e| e.children())
        .find(|c| c.has_ns(NS_STANZAS))
        .map_or_else(|| "no condition".to_owned(), |c| c.name().to_owned())
}

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
    fn a_dialback_error_carries_a_stanza_error() {
        let err = StanzaError::new(Condition::ItemNotFound);
        let el = error("result", "b.example", "a.example", None, &err);
        assert_eq!(el.attr("type"), Some("error"));
        assert_eq!(
            (el.attr("from"), el.attr("to")),
            (Some("b.example"), Some("a.example"))
        );
        let inner = el.get_child("error", NS_DIALBACK).expect("error child");
        assert_eq!(inner.attr("type"), Some("cancel"));
        assert!(inner.get_child("item-not-found", NS_STANZAS).is_some());
        assert_eq!(error_condition(&el), "item-not-found");
        let verify = error("verify", "b.example", "a.example", Some("i1"), &err);
        assert_eq!(verify.attr("id"), Some("i1"));
    }

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
