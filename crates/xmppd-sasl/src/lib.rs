//! Sans-IO SASL server mechanisms for xmppd.
//!
//! SCRAM-SHA-1, SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), each with its `-PLUS`
//! variant using `tls-exporter` (RFC 9266) or `tls-server-end-point` (RFC 5929) channel binding;
//! XEP-0474 downgrade protection; PLAIN (RFC 4616) parsing. Passwords never leave this crate
//! except as salted keys ([`ScramKeys`]); proofs and signatures are compared in constant time.
//! A minimal SCRAM *client* lives in [`client`] for tests and the benchmark client.
//!
//! Architecture invariant: no storage, no network, no clock. The caller looks up keys between
//! [`ScramServer::client_first`] and [`ScramServer::server_first`]. This crate does not decide
//! who may authorize as whom (authzid policy), nor which mechanisms to offer: the caller does.
//!
//! Normalisation: usernames (SCRAM `n=`, PLAIN authcid) and passwords are SASLprep'd (RFC 4013)
//! here, so that PLAIN against stored SCRAM keys and SCRAM itself accept exactly the same
//! password strings. Authzids are returned undecorated for the caller's JID validation.

mod attempts;
pub mod client;
mod crypto;
pub mod fuzzing;
pub mod ht;
mod plain;
mod scram;

pub use attempts::{Attempts, Stage, UNCOUNTED_BEFORE_PROOF};
pub use plain::{parse_plain, PlainCredentials, MAX_PLAIN_FIELD_LEN};
pub use scram::{
    downgrade_protection_hash, ClientFirst, ScramServer, FAKE_ITERATIONS, MAX_MESSAGE_LEN,
    SSDP_ATTRIBUTE,
};

use subtle::ConstantTimeEq;

/// The hash function of a SCRAM family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlg {
    /// "SHA-1", "SHA-256", "SHA-512" (the storage key).
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "SHA-1",
            HashAlg::Sha256 => "SHA-256",
            HashAlg::Sha512 => "SHA-512",
        }
    }

    /// Inverse of [`HashAlg::as_str`]; exact match only, since it is a storage key.
    pub fn parse(s: &str) -> Option<Self> {
        HashAlg::ALL.into_iter().find(|alg| alg.as_str() == s)
    }

    pub const ALL: [HashAlg; 3] = [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha512];

    /// Digest size in bytes, which is also the size of every SCRAM key and proof.
    pub fn output_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha512 => 64,
        }
    }
}

/// A SASL mechanism the server can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Scram {
        alg: HashAlg,
        plus: bool,
    },
    Plain,
    External,
    /// A FAST token (XEP-0484), offered through SASL2 only; not in [`Mechanism::ALL`].
    Token(ht::HtMechanism),
}

impl Mechanism {
    /// Every mechanism this crate knows, strongest SCRAM first.
    pub const ALL: [Mechanism; 8] = [
        Mechanism::Scram {
            alg: HashAlg::Sha512,
            plus: true,
        },
        Mechanism::Scram {
            alg: HashAlg::Sha256,
            plus: true,
        },
        Mechanism::Scram {
            alg: HashAlg::Sha1,
            plus: true,
        },
        Mechanism::Scram {
            alg: HashAlg::Sha512,
            plus: false,
        },
        Mechanism::Scram {
            alg: HashAlg::Sha256,
            plus: false,
        },
        Mechanism::Scram {
            alg: HashAlg::Sha1,
            plus: false,
        },
        Mechanism::Plain,
        Mechanism::External,
    ];

    /// The IANA name, e.g. "SCRAM-SHA-256-PLUS".
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Scram {
                alg: HashAlg::Sha1,
                plus: false,
            } => "SCRAM-SHA-1",
            Mechanism::Scram {
                alg: HashAlg::Sha1,
                plus: true,
            } => "SCRAM-SHA-1-PLUS",
            Mechanism::Scram {
                alg: HashAlg::Sha256,
                plus: false,
            } => "SCRAM-SHA-256",
            Mechanism::Scram {
                alg: HashAlg::Sha256,
                plus: true,
            } => "SCRAM-SHA-256-PLUS",
            Mechanism::Scram {
                alg: HashAlg::Sha512,
                plus: false,
            } => "SCRAM-SHA-512",
            Mechanism::Scram {
                alg: HashAlg::Sha512,
                plus: true,
            } => "SCRAM-SHA-512-PLUS",
            Mechanism::Plain => "PLAIN",
            Mechanism::External => "EXTERNAL",
            Mechanism::Token(ht) => ht.name(),
        }
    }

    /// Inverse of [`Mechanism::name`]. Case-sensitive: registered SASL names are upper case
    /// and a client sending anything else is not asking for one of ours.
    pub fn from_name(name: &str) -> Option<Self> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Channel-binding types (XEP-0440 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CbType {
    TlsExporter,
    TlsServerEndPoint,
}

impl CbType {
    pub const ALL: [CbType; 2] = [CbType::TlsExporter, CbType::TlsServerEndPoint];

    /// "tls-exporter" / "tls-server-end-point".
    pub fn name(self) -> &'static str {
        match self {
            CbType::TlsExporter => "tls-exporter",
            CbType::TlsServerEndPoint => "tls-server-end-point",
        }
    }

    /// Inverse of [`CbType::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        CbType::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// The channel-binding data this connection can offer (empty without TLS).
#[derive(Debug, Clone, Default)]
pub struct ChannelBindings {
    pub tls_exporter: Option<Vec<u8>>,
    pub tls_server_end_point: Option<Vec<u8>>,
}

impl ChannelBindings {
    /// The data for `cb`, if this connection has it.
    pub fn get(&self, cb: CbType) -> Option<&[u8]> {
        match cb {
            CbType::TlsExporter => self.tls_exporter.as_deref(),
            CbType::TlsServerEndPoint => self.tls_server_end_point.as_deref(),
        }
    }

    /// The types with data, in [`CbType::ALL`] order (what to advertise with XEP-0440).
    pub fn available(&self) -> Vec<CbType> {
        CbType::ALL
            .into_iter()
            .filter(|t| self.get(*t).is_some())
            .collect()
    }
}

/// Salted SCRAM keys for one hash function: what is stored instead of a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub alg: HashAlg,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ScramKeys {
    /// Derives keys from a password (SASLprep applied) with a given salt.
    ///
    /// Any iteration count >= 1 is accepted so that imported credentials keep working; new
    /// credentials should use 4096 or more (RFC 7677 §4).
    pub fn derive(
        alg: HashAlg,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self, SaslError> {
        if iterations == 0 {
            return Err(SaslError::MalformedRequest(
                "iteration count must be positive".into(),
            ));
        }
        let prepared = prepare_password(password)?;
        let salted = crypto::hi(alg, prepared.as_bytes(), salt, iterations);
        let client_key = crypto::hmac(alg, &salted, &[b"Client Key"]);
        Ok(ScramKeys {
            alg,
            salt: salt.to_vec(),
            iterations,
            stored_key: crypto::hash(alg, &client_key),
            server_key: crypto::hmac(alg, &salted, &[b"Server Key"]),
        })
    }

    /// Derives keys with a fresh random 16-byte salt.
    pub fn generate(alg: HashAlg, password: &str, iterations: u32) -> Result<Self, SaslError> {
        ScramKeys::derive(alg, password, &crypto::random_bytes(16), iterations)
    }

    /// Whether `password` matches these keys (for PLAIN against stored SCRAM keys), constant time.
    pub fn verify_password(&self, password: &str) -> bool {
        match ScramKeys::derive(self.alg, password, &self.salt, self.iterations) {
            Ok(candidate) => bool::from(candidate.stored_key.ct_eq(&self.stored_key)),
            Err(_) => false,
        }
    }

    /// Whether these keys can drive an exchange (right key sizes, usable salt and count).
    pub(crate) fn is_usable(&self, alg: HashAlg) -> bool {
        self.alg == alg
            && self.iterations > 0
            && !self.salt.is_empty()
            && self.stored_key.len() == alg.output_len()
            && self.server_key.len() == alg.output_len()
    }
}

/// SASLprep for passwords: a password that cannot be prepared or prepares to nothing could never
/// have been set, so it is refused rather than compared.
pub(crate) fn prepare_password(password: &str) -> Result<String, SaslError> {
    match stringprep::saslprep(password) {
        Ok(p) if !p.is_empty() => Ok(p.into_owned()),
        Ok(_) => Err(SaslError::MalformedRequest("empty password".into())),
        Err(e) => Err(SaslError::MalformedRequest(format!("password: {e}"))),
    }
}

/// SASLprep for usernames (RFC 5802 §5.1 and RFC 4616 §2 both ask for it).
pub(crate) fn prepare_username(username: &str) -> Result<String, SaslError> {
    match stringprep::saslprep(username) {
        Ok(p) if !p.is_empty() => Ok(p.into_owned()),
        Ok(_) => Err(SaslError::MalformedRequest("empty username".into())),
        Err(e) => Err(SaslError::MalformedRequest(format!("username: {e}"))),
    }
}

/// Failures, each with its RFC 6120 §6.5 SASL condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("malformed request: {0}")]
    MalformedRequest(String),
    #[error("not authorized")]
    NotAuthorized,
    #[error("invalid mechanism")]
    InvalidMechanism,
    #[error("invalid authzid")]
    InvalidAuthzid,
    #[error("encryption required")]
    EncryptionRequired,
    #[error("channel binding: {0}")]
    ChannelBinding(String),
    /// A `-PLUS` attempt asked for a channel-binding type this connection does not have, such
    /// as `tls-unique`, which TLS 1.3 does not define (RFC 9266 §3).
    #[error("unsupported channel-binding type {0}")]
    UnsupportedChannelBinding(String),
}

impl SaslError {
    /// The `<failure/>` child name, e.g. "not-authorized".
    ///
    /// Channel-binding failures (wrong type, missing data, `c=` mismatch, `y` downgrade) map to
    /// "not-authorized": RFC 6120 has no dedicated condition, and RFC 5802 treats them as the
    /// authentication failing (its `e=channel-bindings-dont-match` and friends), which is what
    /// not-authorized means. An unsupported type is refused before any proof, and the caller
    /// names it in the failure's text so that the client can pick another mechanism.
    pub fn condition(&self) -> &'static str {
        match self {
            SaslError::MalformedRequest(_) => "malformed-request",
            SaslError::NotAuthorized
            | SaslError::ChannelBinding(_)
            | SaslError::UnsupportedChannelBinding(_) => "not-authorized",
            SaslError::InvalidMechanism => "invalid-mechanism",
            SaslError::InvalidAuthzid => "invalid-authzid",
            SaslError::EncryptionRequired => "encryption-required",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_alg_round_trips() {
        for alg in HashAlg::ALL {
            assert_eq!(HashAlg::parse(alg.as_str()), Some(alg));
        }
        assert_eq!(HashAlg::parse("sha-256"), None);
        assert_eq!(HashAlg::parse("SHA-384"), None);
    }

    #[test]
    fn mechanism_names_round_trip_and_are_distinct() {
        let names: std::collections::HashSet<_> = Mechanism::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names.len(), Mechanism::ALL.len());
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
        }
        assert_eq!(
            Mechanism::from_name("SCRAM-SHA-256-PLUS"),
            Some(Mechanism::Scram {
                alg: HashAlg::Sha256,
                plus: true
            })
        );
        assert_eq!(Mechanism::from_name("scram-sha-1"), None);
        assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
        assert_eq!(Mechanism::from_name(""), None);
    }

    #[test]
    fn cb_names() {
        assert_eq!(CbType::TlsExporter.name(), "tls-exporter");
        assert_eq!(CbType::TlsServerEndPoint.name(), "tls-server-end-point");
        assert_eq!(CbType::from_name("tls-unique"), None);
        let cb = ChannelBindings {
            tls_exporter: None,
            tls_server_end_point: Some(vec![1]),
        };
        assert_eq!(cb.available(), vec![CbType::TlsServerEndPoint]);
        assert_eq!(cb.get(CbType::TlsExporter), None);
    }

    #[test]
    fn conditions() {
        assert_eq!(
            SaslError::MalformedRequest("x".into()).condition(),
            "malformed-request"
        );
        assert_eq!(SaslError::NotAuthorized.condition(), "not-authorized");
        assert_eq!(
            SaslError::ChannelBinding("x".into()).condition(),
            "not-authorized"
        );
        assert_eq!(SaslError::InvalidMechanism.condition(), "invalid-mechanism");
        assert_eq!(SaslError::InvalidAuthzid.condition(), "invalid-authzid");
        assert_eq!(
            SaslError::EncryptionRequired.condition(),
            "encryption-required"
        );
    }

    #[test]
    fn derive_is_deterministic_and_parameter_sensitive() {
        // Agreement with RFC 5802 / RFC 7677 is checked through their proofs in tests/scram.rs.
        let salt = [1u8, 2, 3, 4];
        for alg in HashAlg::ALL {
            let a = ScramKeys::derive(alg, "pencil", &salt, 4096).expect("derive");
            let b = ScramKeys::derive(alg, "pencil", &salt, 4096).expect("derive");
            assert_eq!(a, b);
            assert_eq!(a.stored_key.len(), alg.output_len());
            assert_eq!(a.server_key.len(), alg.output_len());
            assert_ne!(a.stored_key, a.server_key);
            let c = ScramKeys::derive(alg, "pencil", &salt, 4097).expect("derive");
            assert_ne!(a.stored_key, c.stored_key);
        }
    }

    #[test]
    fn derive_rejects_bad_input() {
        assert!(ScramKeys::derive(HashAlg::Sha256, "pencil", b"s", 0).is_err());
        assert!(ScramKeys::derive(HashAlg::Sha256, "", b"s", 1).is_err());
        // U+0007 BELL is prohibited by SASLprep.
        assert!(ScramKeys::derive(HashAlg::Sha256, "pen\u{7}cil", b"s", 1).is_err());
        // Soft hyphen maps to nothing, so the result is empty.
        assert!(ScramKeys::derive(HashAlg::Sha256, "\u{ad}", b"s", 1).is_err());
        assert!(ScramKeys::derive(HashAlg::Sha256, "pencil", b"s", 1).is_ok());
    }

    #[test]
    fn generate_uses_fresh_salt_and_verifies() {
        for alg in HashAlg::ALL {
            let a = ScramKeys::generate(alg, "pencil", 4096).expect("generate");
            let b = ScramKeys::generate(alg, "pencil", 4096).expect("generate");
            assert_eq!(a.salt.len(), 16);
            assert_ne!(a.salt, b.salt);
            assert_ne!(a.stored_key, b.stored_key);
            assert!(a.verify_password("pencil"));
            assert!(!a.verify_password("pencil "));
            assert!(!a.verify_password("Pencil"));
            assert!(!a.verify_password(""));
        }
    }

    #[test]
    fn verify_password_applies_saslprep() {
        // U+00A0 NO-BREAK SPACE maps to U+0020 and U+00AD SOFT HYPHEN to nothing (RFC 4013).
        let keys = ScramKeys::generate(HashAlg::Sha256, "a b", 1).expect("generate");
        assert!(keys.verify_password("a\u{a0}b"));
        assert!(keys.verify_password("a \u{ad}b"));
        assert!(!keys.verify_password("ab"));
        // NFKC: U+2168 ROMAN NUMERAL NINE becomes "IX".
        let keys = ScramKeys::generate(HashAlg::Sha1, "IX", 1).expect("generate");
        assert!(keys.verify_password("\u{2168}"));
    }

    #[test]
    fn usable_keys() {
        let keys = ScramKeys::generate(HashAlg::Sha256, "pencil", 1).expect("generate");
        assert!(keys.is_usable(HashAlg::Sha256));
        assert!(!keys.is_usable(HashAlg::Sha1));
        let mut broken = keys.clone();
        broken.stored_key.pop();
        assert!(!broken.is_usable(HashAlg::Sha256));
        let mut broken = keys;
        broken.iterations = 0;
        assert!(!broken.is_usable(HashAlg::Sha256));
    }
}
