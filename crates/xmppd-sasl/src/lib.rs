//! Sans-IO SASL server mechanisms for xmppd.
//!
//! SCRAM-SHA-1, SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), each with its `-PLUS`
//! variant using `tls-exporter` (RFC 9266) or `tls-server-end-point` (RFC 5929) channel binding;
//! XEP-0474 downgrade protection; PLAIN (RFC 4616) parsing. Passwords never leave this crate
//! except as salted keys ([`ScramKeys`]); proofs and signatures are compared in constant time.
//!
//! Architecture invariant: no storage, no network, no clock. The caller looks up keys between
//! [`ScramServer::client_first`] and [`ScramServer::server_first`].

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
        todo!()
    }
    pub fn parse(s: &str) -> Option<Self> {
        let _ = s;
        todo!()
    }
    pub const ALL: [HashAlg; 3] = [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha512];
}

/// A SASL mechanism the server can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Scram { alg: HashAlg, plus: bool },
    Plain,
    External,
}

impl Mechanism {
    /// The IANA name, e.g. "SCRAM-SHA-256-PLUS".
    pub fn name(self) -> &'static str {
        todo!()
    }
    pub fn from_name(name: &str) -> Option<Self> {
        let _ = name;
        todo!()
    }
}

/// Channel-binding types (XEP-0440 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CbType {
    TlsExporter,
    TlsServerEndPoint,
}

impl CbType {
    /// "tls-exporter" / "tls-server-end-point".
    pub fn name(self) -> &'static str {
        todo!()
    }
}

/// The channel-binding data this connection can offer (empty without TLS).
#[derive(Debug, Clone, Default)]
pub struct ChannelBindings {
    pub tls_exporter: Option<Vec<u8>>,
    pub tls_server_end_point: Option<Vec<u8>>,
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
    pub fn derive(alg: HashAlg, password: &str, salt: &[u8], iterations: u32) -> Result<Self, SaslError> {
        let _ = (alg, password, salt, iterations);
        todo!()
    }
    /// Derives keys with a fresh random 16-byte salt.
    pub fn generate(alg: HashAlg, password: &str, iterations: u32) -> Result<Self, SaslError> {
        let _ = (alg, password, iterations);
        todo!()
    }
    /// Whether `password` matches these keys (for PLAIN against stored SCRAM keys), constant time.
    pub fn verify_password(&self, password: &str) -> bool {
        let _ = password;
        todo!()
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
}

impl SaslError {
    /// The `<failure/>` child name, e.g. "not-authorized".
    pub fn condition(&self) -> &'static str {
        todo!()
    }
}

/// What the client's first message said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    pub authcid: String,
    pub authzid: Option<String>,
}

/// Server side of one SCRAM exchange.
pub struct ScramServer {
    _private: (),
}

impl ScramServer {
    /// `offered` is the full mechanism list the server advertised and `cb_offered` the
    /// channel-binding types it advertised (both for XEP-0474 and for the `y` flag check).
    pub fn new(
        mech: Mechanism,
        bindings: ChannelBindings,
        offered: &[Mechanism],
        cb_offered: &[CbType],
    ) -> Self {
        let _ = (mech, bindings, offered, cb_offered);
        todo!()
    }
    /// Parses client-first-message (with GS2 header).
    pub fn client_first(&mut self, msg: &[u8]) -> Result<ClientFirst, SaslError> {
        let _ = msg;
        todo!()
    }
    /// server-first-message. `keys` is `None` for an unknown user: the exchange continues with
    /// deterministic fake keys and fails at the proof, so user existence does not leak.
    pub fn server_first(&mut self, keys: Option<&ScramKeys>) -> Vec<u8> {
        let _ = keys;
        todo!()
    }
    /// Verifies client-final-message; on success returns server-final-message (`v=...`).
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, SaslError> {
        let _ = msg;
        todo!()
    }
}

/// PLAIN message parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainCredentials {
    pub authzid: Option<String>,
    pub authcid: String,
    pub password: String,
}

/// Parses a PLAIN message `[authzid] NUL authcid NUL passwd` (RFC 4616).
pub fn parse_plain(msg: &[u8]) -> Result<PlainCredentials, SaslError> {
    let _ = msg;
    todo!()
}
