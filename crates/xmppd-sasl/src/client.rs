//! A minimal SCRAM client, for xmppd's tests and benchmark client.
//!
//! It speaks exactly what [`crate::ScramServer`] expects and checks what a careful client
//! should: nonce prefix, sane iteration count, XEP-0474 hash (when asked to), and the server
//! signature. It does not choose mechanisms or channel-binding types, and it is not meant as a
//! general-purpose client library.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use subtle::ConstantTimeEq;

use crate::scram::{as_message, check_extensions, encode_saslname, is_valid_nonce};
use crate::{crypto, downgrade_protection_hash, prepare_password, prepare_username};
use crate::{CbType, HashAlg, Mechanism, SaslError, SSDP_ATTRIBUTE};

/// Highest iteration count the client will compute, so a hostile server cannot make it spin.
pub const MAX_CLIENT_ITERATIONS: u32 = 1_000_000;

fn protocol(why: &str) -> SaslError {
    SaslError::MalformedRequest(format!("server: {why}"))
}

/// Client side of one SCRAM exchange.
pub struct ScramClient {
    alg: HashAlg,
    username: String,
    password: String,
    cb: Option<(CbType, Vec<u8>)>,
    claim_cb_support: bool,
    authzid: Option<String>,
    expected_ssdp: Option<String>,
    client_nonce: String,
    gs2_header: String,
    client_first_bare: String,
    server_signature: Option<Vec<u8>>,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.mechanism().name())
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// `cb` selects the `-PLUS` variant with that binding type and data. The username is
    /// SASLprep'd when possible (an unpreparable one is sent as is, for the server to reject);
    /// the password is prepared in [`ScramClient::client_final`].
    pub fn new(alg: HashAlg, user: &str, password: &str, cb: Option<(CbType, Vec<u8>)>) -> Self {
        let username = prepare_username(user).unwrap_or_else(|_| user.to_owned());
        ScramClient {
            alg,
            username,
            password: password.to_owned(),
            cb,
            claim_cb_support: false,
            authzid: None,
            expected_ssdp: None,
            client_nonce: B64.encode(crypto::random_bytes(18)),
            gs2_header: String::new(),
            client_first_bare: String::new(),
            server_signature: None,
        }
    }

    /// Sends `y` instead of `n` when not binding: "I could bind, but you did not offer it".
    pub fn claim_cb_support(mut self) -> Self {
        self.claim_cb_support = true;
        self
    }

    /// Requests authorization as `authzid`.
    pub fn with_authzid(mut self, authzid: &str) -> Self {
        self.authzid = Some(authzid.to_owned());
        self
    }

    /// Requires a matching XEP-0474 hash in server-first-message for what the server advertised.
    pub fn expect_downgrade_protection(mut self, offered: &[Mechanism], cb: &[CbType]) -> Self {
        self.expected_ssdp = Some(downgrade_protection_hash(self.alg, offered, cb));
        self
    }

    /// Fixes the client nonce, for reproducing published test vectors.
    #[doc(hidden)]
    pub fn with_nonce(mut self, nonce: &str) -> Self {
        self.client_nonce = nonce.to_owned();
        self
    }

    /// The mechanism this client runs.
    pub fn mechanism(&self) -> Mechanism {
        Mechanism::Scram {
            alg: self.alg,
            plus: self.cb.is_some(),
        }
    }

    /// client-first-message, GS2 header included.
    pub fn client_first(&mut self) -> Vec<u8> {
        let flag = match (&self.cb, self.claim_cb_support) {
            (Some((t, _)), _) => format!("p={}", t.name()),
            (None, true) => "y".to_owned(),
            (None, false) => "n".to_owned(),
        };
        let authzid = match &self.authzid {
            Some(a) => format!("a={}", encode_saslname(a)),
            None => String::new(),
        };
        self.gs2_header = format!("{flag},{authzid},");
        self.client_first_bare = format!(
            "n={},r={}",
            encode_saslname(&self.username),
            self.client_nonce
        );
        format!("{}{}", self.gs2_header, self.client_first_bare).into_bytes()
    }

    /// Answers server-first-message with client-final-message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, SaslError> {
        if self.client_first_bare.is_empty() {
            return Err(SaslError::MalformedRequest(
                "client_final before client_first".into(),
            ));
        }
        let message = as_message(server_first)?;
        let mut attrs = message.split(',');
        let attr = |a: Option<&str>, p: &str| a.and_then(|a| a.strip_prefix(p).map(str::to_owned));
        let nonce = attr(attrs.next(), "r=").ok_or_else(|| protocol("missing nonce"))?;
        let salt = attr(attrs.next(), "s=").ok_or_else(|| protocol("missing salt"))?;
        let iterations = attr(attrs.next(), "i=").ok_or_else(|| protocol("missing count"))?;
        let extensions: Vec<&str> = attrs.collect();
        check_extensions(extensions.iter().copied())?;
        if nonce.len() <= self.client_nonce.len()
            || !nonce.starts_with(&self.client_nonce)
            || !is_valid_nonce(&nonce)
        {
            return Err(protocol("nonce does not extend ours"));
        }
        let salt = B64.decode(salt).map_err(|_| protocol("bad salt"))?;
        let iterations: u32 = iterations.parse().map_err(|_| protocol("bad count"))?;
        if salt.is_empty() || iterations == 0 || iterations > MAX_CLIENT_ITERATIONS {
            return Err(protocol("unacceptable salt or count"));
        }
        if let Some(expected) = &self.expected_ssdp {
            let prefix = format!("{SSDP_ATTRIBUTE}=");
            let got = extensions
                .iter()
                .find_map(|e| e.strip_prefix(prefix.as_str()));
            if got != Some(expected.as_str()) {
                return Err(SaslError::NotAuthorized);
            }
        }

        let password = prepare_password(&self.password)?;
        let alg = self.alg;
        let salted = crypto::hi(alg, password.as_bytes(), &salt, iterations);
        let client_key = crypto::hmac(alg, &salted, &[b"Client Key"]);
        let stored_key = crypto::hash(alg, &client_key);
        let server_key = crypto::hmac(alg, &salted, &[b"Server Key"]);

        let mut cb_input = self.gs2_header.as_bytes().to_vec();
        if let Some((_, data)) = &self.cb {
            cb_input.extend_from_slice(data);
        }
        let without_proof = format!("c={},r={}", B64.encode(cb_input), nonce);
        let auth_message = [
            self.client_first_bare.as_bytes(),
            b",",
            message.as_bytes(),
            b",",
            without_proof.as_bytes(),
        ];
        let signature = crypto::hmac(alg, &stored_key, &auth_message);
        let proof = crypto::xor(&client_key, &signature);
        self.server_signature = Some(crypto::hmac(alg, &server_key, &auth_message));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks server-final-message (`v=...`); an `e=...` reply is [`SaslError::NotAuthorized`].
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), SaslError> {
        let message = as_message(server_final)?;
        let expected = self.server_signature.as_ref().ok_or_else(|| {
            SaslError::MalformedRequest("server-final before client-final".into())
        })?;
        let first = message.split(',').next().unwrap_or_default();
        let Some(v) = first.strip_prefix("v=") else {
            return Err(SaslError::NotAuthorized);
        };
        let got = B64
            .decode(v)
            .map_err(|_| protocol("bad signature encoding"))?;
        if bool::from(got.ct_eq(expected)) {
            Ok(())
        } else {
            Err(SaslError::NotAuthorized)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_first_shapes() {
        let mut c = ScramClient::new(HashAlg::Sha1, "us,er=", "pw", None).with_nonce("abc");
        assert_eq!(c.client_first(), b"n,,n=us=2Cer=3D,r=abc");
        let mut c = ScramClient::new(HashAlg::Sha1, "u", "pw", None)
            .claim_cb_support()
            .with_authzid("a,b")
            .with_nonce("abc");
        assert_eq!(c.client_first(), b"y,a=a=2Cb,n=u,r=abc");
        let mut c = ScramClient::new(
            HashAlg::Sha256,
            "u",
            "pw",
            Some((CbType::TlsExporter, vec![1])),
        )
        .with_nonce("abc");
        assert_eq!(c.client_first(), b"p=tls-exporter,,n=u,r=abc");
        assert_eq!(
            c.mechanism(),
            Mechanism::Scram {
                alg: HashAlg::Sha256,
                plus: true
            }
        );
    }

    #[test]
    fn random_nonces_are_valid_and_fresh() {
        let a = ScramClient::new(HashAlg::Sha1, "u", "p", None);
        let b = ScramClient::new(HashAlg::Sha1, "u", "p", None);
        assert!(is_valid_nonce(&a.client_nonce));
        assert_ne!(a.client_nonce, b.client_nonce);
    }

    #[test]
    fn rejects_bad_server_first() {
        let bad: &[&[u8]] = &[
            b"",
            b"r=abc",
            b"r=abcdef,s=QSXCR+Q6sek8bf92",
            b"r=abcdef,s=QSXCR+Q6sek8bf92,i=0",
            b"r=abcdef,s=QSXCR+Q6sek8bf92,i=-1",
            b"r=abcdef,s=QSXCR+Q6sek8bf92,i=999999999",
            b"r=abcdef,s=,i=4096",
            b"r=abcdef,s=***,i=4096",
            b"r=abc,s=QSXCR+Q6sek8bf92,i=4096",
            b"r=xyzdef,s=QSXCR+Q6sek8bf92,i=4096",
            b"m=x,r=abcdef,s=QSXCR+Q6sek8bf92,i=4096",
            b"r=abcdef,s=QSXCR+Q6sek8bf92,i=4096,bogus",
            b"r=abc\xff,s=QSXCR+Q6sek8bf92,i=4096",
        ];
        for msg in bad {
            let mut c = ScramClient::new(HashAlg::Sha1, "u", "p", None).with_nonce("abc");
            c.client_first();
            assert!(
                c.client_final(msg).is_err(),
                "{:?}",
                String::from_utf8_lossy(msg)
            );
        }
    }

    #[test]
    fn calls_out_of_order_fail() {
        let mut c = ScramClient::new(HashAlg::Sha1, "u", "p", None).with_nonce("abc");
        assert!(c.verify_server_final(b"v=AAAA").is_err());
        assert!(c
            .client_final(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=4096")
            .is_err());
    }
}
