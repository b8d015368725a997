//! The Hashed Token mechanisms (draft-schmaus-kitten-sasl-ht) that XEP-0484 (FAST) uses to log
//! in with a token the server issued: `HT-SHA-256-NONE`, and its channel-bound variants
//! `HT-SHA-256-ENDP` (tls-server-end-point) and `HT-SHA-256-EXPR` (tls-exporter).
//!
//! The server keeps only SHA-256 of each token. Tokens are longer than SHA-256's block (64
//! bytes), and HMAC first hashes such a key (RFC 2104 §2), so HMAC(token, m) equals
//! HMAC(SHA-256(token), m): the stored hash verifies the client's proof and computes our answer
//! without the token ever being stored.

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{CbType, ChannelBindings};

/// Random bytes in a token: base64url gives 96 characters, more than SHA-256's 64-byte block.
const TOKEN_BYTES: usize = 72;

/// One `HT-SHA-256-*` mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HtMechanism {
    /// No channel binding.
    None,
    /// tls-server-end-point.
    Endp,
    /// tls-exporter.
    Expr,
}

impl HtMechanism {
    pub const ALL: [HtMechanism; 3] = [HtMechanism::Expr, HtMechanism::Endp, HtMechanism::None];

    pub fn name(self) -> &'static str {
        match self {
            HtMechanism::None => "HT-SHA-256-NONE",
            HtMechanism::Endp => "HT-SHA-256-ENDP",
            HtMechanism::Expr => "HT-SHA-256-EXPR",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        HtMechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    fn binding(self) -> Option<CbType> {
        match self {
            HtMechanism::None => None,
            HtMechanism::Endp => Some(CbType::TlsServerEndPoint),
            HtMechanism::Expr => Some(CbType::TlsExporter),
        }
    }

    /// The mechanisms a connection with `bindings` can use, strongest first.
    pub fn offered(bindings: &ChannelBindings) -> Vec<HtMechanism> {
        HtMechanism::ALL
            .into_iter()
            .filter(|m| m.binding().is_none_or(|cb| bindings.get(cb).is_some()))
            .collect()
    }

    /// The channel-binding data this mechanism mixes in: empty for `-NONE`, `None` when the
    /// connection lacks it.
    pub fn cb_data(self, bindings: &ChannelBindings) -> Option<Vec<u8>> {
        match self.binding() {
            None => Some(Vec::new()),
            Some(cb) => bindings.get(cb).map(<[u8]>::to_vec),
        }
    }
}

/// A new token and what is stored of it.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Given to the client once, never stored.
    pub token: String,
    pub hash: [u8; 32],
}

/// A fresh random token.
pub fn new_token() -> NewToken {
    let mut raw = [0u8; TOKEN_BYTES];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = token_hash(token.as_bytes());
    NewToken { token, hash }
}

/// What is stored of `token`.
pub fn token_hash(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The client's initial response: `authcid NUL initiator-hashed-token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtResponse {
    pub authcid: String,
    pub proof: Vec<u8>,
}

/// Parses the initial response; `None` when it is malformed.
pub fn parse_initial(data: &[u8]) -> Option<HtResponse> {
    let nul = data.iter().position(|b| *b == 0)?;
    let authcid = std::str::from_utf8(&data[..nul]).ok()?;
    let proof = &data[nul + 1..];
    if authcid.is_empty() || proof.len() != 32 {
        return None;
    }
    Some(HtResponse {
        authcid: authcid.to_owned(),
        proof: proof.to_vec(),
    })
}

fn mac(key_hash: &[u8; 32], label: &[u8], cb: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key_hash).expect("HMAC accepts keys of any length");
    mac.update(label);
    mac.update(cb);
    mac.finalize().into_bytes().into()
}

/// Whether `proof` is HMAC(token, "Initiator" || cb) for the token whose hash is `key_hash`.
/// Constant time.
pub fn verify(key_hash: &[u8; 32], cb: &[u8], proof: &[u8]) -> bool {
    mac(key_hash, b"Initiator", cb).ct_eq(proof).into()
}

/// Our answer, proving we hold the token too: HMAC(token, "Responder" || cb).
pub fn responder(key_hash: &[u8; 32], cb: &[u8]) -> Vec<u8> {
    mac(key_hash, b"Responder", cb).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a client computes, keyed with the token itself.
    fn client_proof(token: &str, label: &[u8], cb: &[u8]) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes()).unwrap();
        mac.update(label);
        mac.update(cb);
        mac.finalize().into_bytes().to_vec()
    }

    #[test]
    fn the_stored_hash_verifies_what_the_token_computes() {
        let t = new_token();
        assert!(t.token.len() > 64, "longer than the HMAC block");
        assert_eq!(t.hash, token_hash(t.token.as_bytes()));
        assert!(!t.token.as_bytes().windows(32).any(|w| w == t.hash));
        let proof = client_proof(&t.token, b"Initiator", b"");
        assert!(verify(&t.hash, b"", &proof));
        assert_eq!(
            responder(&t.hash, b""),
            client_proof(&t.token, b"Responder", b"")
        );
        // Another token, or other channel-binding data, does not verify.
        assert!(!verify(&new_token().hash, b"", &proof));
        assert!(!verify(&t.hash, b"cb", &proof));
        let bound = client_proof(&t.token, b"Initiator", b"cb");
        assert!(verify(&t.hash, b"cb", &bound));
    }

    #[test]
    fn initial_responses() {
        let mut data = b"juliet\0".to_vec();
        data.extend([7u8; 32]);
        assert_eq!(
            parse_initial(&data),
            Some(HtResponse {
                authcid: "juliet".into(),
                proof: vec![7; 32]
            })
        );
        assert_eq!(parse_initial(b"juliet"), None);
        assert_eq!(parse_initial(b"\0aaaa"), None);
        assert_eq!(parse_initial(b"juliet\0short"), None);
    }

    #[test]
    fn mechanisms_follow_the_bindings() {
        let none = ChannelBindings::default();
        assert_eq!(HtMechanism::offered(&none), [HtMechanism::None]);
        let both = ChannelBindings {
            tls_exporter: Some(vec![1]),
            tls_server_end_point: Some(vec![2]),
        };
        assert_eq!(HtMechanism::offered(&both).len(), 3);
        assert_eq!(HtMechanism::Expr.cb_data(&both), Some(vec![1]));
        assert_eq!(HtMechanism::Endp.cb_data(&none), None);
        assert_eq!(
            HtMechanism::from_name("HT-SHA-256-NONE"),
            Some(HtMechanism::None)
        );
    }
}
