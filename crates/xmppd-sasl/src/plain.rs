//! SASL PLAIN message parsing (RFC 4616).
//!
//! Only parsing and normalisation: checking the password is the authentication backend's job
//! (usually [`crate::ScramKeys::verify_password`]). Whether PLAIN may be offered at all (TLS
//! required) is the caller's decision.

use crate::{prepare_password, prepare_username, SaslError};

/// Longest authzid, authcid or password accepted, in bytes (RFC 4616 §2 bounds each at 255).
pub const MAX_PLAIN_FIELD_LEN: usize = 255;

/// PLAIN message parts.
///
/// `authcid` and `password` are SASLprep'd (RFC 4013), the same preparation SCRAM applies, so a
/// password accepted over SCRAM is accepted over PLAIN and vice versa; preparing again (as
/// [`crate::ScramKeys::verify_password`] does) is harmless because SASLprep is idempotent.
/// `authzid` is returned as sent: it is a JID for the caller to validate.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainCredentials {
    pub authzid: Option<String>,
    pub authcid: String,
    pub password: String,
}

impl std::fmt::Debug for PlainCredentials {
    // Keeps passwords out of logs that format credentials with `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainCredentials")
            .field("authzid", &self.authzid)
            .field("authcid", &self.authcid)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Parses a PLAIN message `[authzid] NUL authcid NUL passwd` (RFC 4616).
pub fn parse_plain(msg: &[u8]) -> Result<PlainCredentials, SaslError> {
    let malformed = |why: &str| SaslError::MalformedRequest(format!("PLAIN: {why}"));
    if msg.len() > 3 * MAX_PLAIN_FIELD_LEN + 2 {
        return Err(malformed("message too long"));
    }
    // Exactly two separators: a third NUL would be a NUL inside a field, which RFC 4616 forbids.
    let fields: Vec<&[u8]> = msg.split(|b| *b == 0).collect();
    let [authzid, authcid, password] = fields[..] else {
        return Err(malformed("expected exactly two NUL separators"));
    };
    for field in [authzid, authcid, password] {
        if field.len() > MAX_PLAIN_FIELD_LEN {
            return Err(malformed("field longer than 255 bytes"));
        }
    }
    let (Ok(authzid), Ok(authcid), Ok(password)) = (
        std::str::from_utf8(authzid),
        std::str::from_utf8(authcid),
        std::str::from_utf8(password),
    ) else {
        return Err(malformed("invalid UTF-8"));
    };
    if authcid.is_empty() {
        return Err(malformed("empty authcid"));
    }
    if password.is_empty() {
        return Err(malformed("empty password"));
    }
    Ok(PlainCredentials {
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        authcid: prepare_username(authcid)?,
        password: prepare_password(password)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(msg: &[u8]) -> PlainCredentials {
        parse_plain(msg).expect("valid PLAIN message")
    }

    fn malformed(msg: &[u8]) {
        match parse_plain(msg) {
            Err(SaslError::MalformedRequest(_)) => {}
            other => panic!("{msg:?} gave {other:?}"),
        }
    }

    #[test]
    fn parses_without_authzid() {
        let c = ok(b"\0juliet\0r0m30myr0m30");
        assert_eq!(c.authzid, None);
        assert_eq!(c.authcid, "juliet");
        assert_eq!(c.password, "r0m30myr0m30");
    }

    #[test]
    fn parses_with_authzid() {
        let c = ok(b"juliet@example.com\0juliet\0pw");
        assert_eq!(c.authzid.as_deref(), Some("juliet@example.com"));
        assert_eq!(c.authcid, "juliet");
    }

    #[test]
    fn applies_saslprep() {
        let c = ok("\0I\u{ad}X\0a\u{a0}b".as_bytes());
        assert_eq!(c.authcid, "IX");
        assert_eq!(c.password, "a b");
        // A password that only SASLprep's mapping empties is as good as empty.
        malformed("\0user\0\u{ad}".as_bytes());
        malformed("\0\u{ad}\0pw".as_bytes());
        // Prohibited characters.
        malformed("\0us\u{7}er\0pw".as_bytes());
        malformed("\0user\0p\u{e000}w".as_bytes());
    }

    #[test]
    fn rejects_wrong_structure() {
        malformed(b"");
        malformed(b"\0");
        malformed(b"userpw");
        malformed(b"user\0pw");
        malformed(b"\0\0pw");
        malformed(b"\0user\0");
        malformed(b"\0user\0pw\0");
        malformed(b"\0us\0er\0pw");
        malformed(b"a\0b\0c\0d");
    }

    #[test]
    fn rejects_invalid_utf8() {
        malformed(b"\0user\0p\xffw");
        malformed(b"\0\xc3\0pw");
        malformed(b"\xed\xa0\x80\0user\0pw");
    }

    #[test]
    fn enforces_field_lengths() {
        let max = "a".repeat(MAX_PLAIN_FIELD_LEN);
        let c = ok(format!("{max}\0{max}\0{max}").as_bytes());
        assert_eq!(c.authcid.len(), MAX_PLAIN_FIELD_LEN);
        let long = "a".repeat(MAX_PLAIN_FIELD_LEN + 1);
        malformed(format!("\0{long}\0pw").as_bytes());
        malformed(format!("\0user\0{long}").as_bytes());
        malformed(format!("{long}\0user\0pw").as_bytes());
        malformed(&vec![b'a'; 100_000]);
    }

    #[test]
    fn debug_hides_password() {
        let c = ok(b"\0user\0sekrit");
        assert!(!format!("{c:?}").contains("sekrit"));
    }
}
