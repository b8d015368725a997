//! The server side of SCRAM (RFC 5802, RFC 7677) with channel binding and XEP-0474 downgrade
//! protection, as a three-call state machine: [`ScramServer::client_first`],
//! [`ScramServer::server_first`], [`ScramServer::client_final`].
//!
//! Not here: looking up keys, base64 of the XMPP layer, timing of failure replies. Unknown users
//! get deterministic fake keys so the exchange looks the same up to the final failure.
//!
//! XEP-0474 (version 0.5.0): the downgrade-protection hash travels in the `h` attribute of
//! server-first-message; its input is the sorted mechanism names joined by U+001E, then — only
//! if channel-binding types were advertised (XEP-0440) — U+001F and the sorted type names joined
//! by U+001E. Sorting is by bytes ("i;octet").

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use subtle::ConstantTimeEq;

use crate::{crypto, prepare_username, CbType, ChannelBindings, HashAlg, Mechanism, ScramKeys};
use crate::{SaslError, SaslError::MalformedRequest};

/// Longest SCRAM message accepted, in bytes; anything longer is malformed-request.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// The server-first-message attribute carrying the XEP-0474 hash.
pub const SSDP_ATTRIBUTE: char = 'h';

/// Iteration count announced for unknown users; mirrors the default for new accounts so fake
/// exchanges blend in with real ones.
pub const FAKE_ITERATIONS: u32 = 4096;

/// Random bytes in the server's part of the nonce.
const SERVER_NONCE_BYTES: usize = 24;

/// What the client's first message said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The username, `=2C`/`=3D` decoded and SASLprep'd.
    pub authcid: String,
    /// The authorization identity, decoded but not otherwise prepared.
    pub authzid: Option<String>,
}

/// The XEP-0474 downgrade-protection hash (base64) for the mechanisms and channel-binding types
/// a server advertised. An empty `cb_offered` means XEP-0440 was not used.
pub fn downgrade_protection_hash(
    alg: HashAlg,
    offered: &[Mechanism],
    cb_offered: &[CbType],
) -> String {
    let mut mechs: Vec<&str> = offered.iter().map(|m| m.name()).collect();
    mechs.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut input = mechs.join("\u{1e}");
    if !cb_offered.is_empty() {
        let mut cbs: Vec<&str> = cb_offered.iter().map(|c| c.name()).collect();
        cbs.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        input.push('\u{1f}');
        input.push_str(&cbs.join("\u{1e}"));
    }
    B64.encode(crypto::hash(alg, input.as_bytes()))
}

/// Server side of one SCRAM exchange.
pub struct ScramServer {
    mech: Mechanism,
    bindings: ChannelBindings,
    /// Whether any `-PLUS` mechanism was advertised: a `y` flag then signals a downgrade.
    plus_offered: bool,
    /// The client showed on this stream that it cannot bind with a type we offer, so its `y`
    /// flag is the truth rather than a sign of a stripped mechanism list.
    y_flag_explained: bool,
    /// `h=` value for server-first-message; `None` when nothing was advertised.
    ssdp: Option<String>,
    /// Test hook: a fixed server part of the nonce.
    fixed_server_nonce: Option<String>,
    state: State,
}

enum State {
    Start,
    GotClientFirst(Box<FirstData>),
    SentServerFirst(Box<FirstData>, Box<ServerFirstData>),
    Done,
    Failed,
}

struct FirstData {
    alg: HashAlg,
    /// The GS2 header exactly as sent, trailing comma included (the `c=` input).
    gs2_header: String,
    cb_data: Vec<u8>,
    bare: String,
    client_nonce: String,
    authcid: String,
    authzid: Option<String>,
}

struct ServerFirstData {
    message: String,
    nonce: String,
    keys: ScramKeys,
    /// Unknown user (or unusable keys): the exchange must fail at the proof.
    fake: bool,
}

impl std::fmt::Debug for ScramServer {
    // Keys and nonces stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Start => "start",
            State::GotClientFirst(_) => "got-client-first",
            State::SentServerFirst(..) => "sent-server-first",
            State::Done => "done",
            State::Failed => "failed",
        };
        f.debug_struct("ScramServer")
            .field("mech", &self.mech.name())
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// `offered` is the full mechanism list the server advertised and `cb_offered` the
    /// channel-binding types it advertised (both for XEP-0474 and for the `y` flag check).
    ///
    /// An empty `offered` omits the XEP-0474 attribute. A non-SCRAM `mech` yields a server
    /// whose every step fails with [`SaslError::InvalidMechanism`].
    pub fn new(
        mech: Mechanism,
        bindings: ChannelBindings,
        offered: &[Mechanism],
        cb_offered: &[CbType],
    ) -> Self {
        let ssdp = match mech {
            Mechanism::Scram { alg, .. } if !offered.is_empty() => {
                Some(downgrade_protection_hash(alg, offered, cb_offered))
            }
            _ => None,
        };
        ScramServer {
            mech,
            bindings,
            plus_offered: offered
                .iter()
                .any(|m| matches!(m, Mechanism::Scram { plus: true, .. })),
            y_flag_explained: false,
            ssdp,
            fixed_server_nonce: None,
            state: State::Start,
        }
    }

    /// Fixes the server's part of the nonce, for reproducing published test vectors. Never
    /// use outside tests: nonce reuse enables replay. Ignored unless printable ASCII without ','.
    #[doc(hidden)]
    pub fn with_nonce(mut self, server_nonce: &str) -> Self {
        if is_valid_nonce(server_nonce) {
            self.fixed_server_nonce = Some(server_nonce.to_owned());
        }
        self
    }

    /// Accepts a `y` GS2 flag although `-PLUS` mechanisms were offered: for a stream on which
    /// a `-PLUS` attempt was already refused for its channel-binding type
    /// ([`SaslError::UnsupportedChannelBinding`]). Such a client can bind, but not with a type
    /// this server has (`tls-unique` under TLS 1.3, RFC 9266 §3), so by RFC 5802 §6 it must
    /// say `y` on its next attempt. A stripped mechanism list alone never gets here: the `y`
    /// stays a downgrade unless the stream itself carried the refused attempt.
    pub fn accept_y_flag(mut self) -> Self {
        self.y_flag_explained = true;
        self
    }

    /// Parses client-first-message (with GS2 header).
    pub fn client_first(&mut self, msg: &[u8]) -> Result<ClientFirst, SaslError> {
        if !matches!(self.state, State::Start) {
            self.state = State::Failed;
            return Err(MalformedRequest("client-first-message out of order".into()));
        }
        match self.parse_client_first(msg) {
            Ok(first) => {
                let out = ClientFirst {
                    authcid: first.authcid.clone(),
                    authzid: first.authzid.clone(),
                };
                self.state = State::GotClientFirst(Box::new(first));
                Ok(out)
            }
            Err(e) => {
                self.state = State::Failed;
                Err(e)
            }
        }
    }

    /// server-first-message. `keys` is `None` for an unknown user: the exchange continues with
    /// deterministic fake keys and fails at the proof, so user existence does not leak.
    ///
    /// Keys for another hash, or unusable ones (empty salt, zero iterations, wrong sizes), are
    /// treated like an unknown user. Called out of order it returns an empty message and the
    /// exchange is failed.
    pub fn server_first(&mut self, keys: Option<&ScramKeys>) -> Vec<u8> {
        let first = match std::mem::replace(&mut self.state, State::Failed) {
            State::GotClientFirst(first) => first,
            _ => return Vec::new(),
        };
        let alg = first.alg;
        let (keys, fake) = match keys {
            Some(k) if k.is_usable(alg) => (k.clone(), false),
            _ => (fake_keys(alg, &first.authcid), true),
        };
        let server_part = match &self.fixed_server_nonce {
            Some(n) => n.clone(),
            None => B64.encode(crypto::random_bytes(SERVER_NONCE_BYTES)),
        };
        let nonce = format!("{}{}", first.client_nonce, server_part);
        let mut message = format!(
            "r={},s={},i={}",
            nonce,
            B64.encode(&keys.salt),
            keys.iterations
        );
        if let Some(h) = &self.ssdp {
            message.push_str(&format!(",{SSDP_ATTRIBUTE}={h}"));
        }
        let out = message.clone().into_bytes();
        self.state = State::SentServerFirst(
            first,
            Box::new(ServerFirstData {
                message,
                nonce,
                keys,
                fake,
            }),
        );
        out
    }

    /// Verifies client-final-message; on success returns server-final-message (`v=...`).
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, SaslError> {
        let (first, server) = match std::mem::replace(&mut self.state, State::Failed) {
            State::SentServerFirst(first, server) => (first, server),
            _ => return Err(MalformedRequest("client-final-message out of order".into())),
        };
        let reply = verify_client_final(&first, &server, msg)?;
        self.state = State::Done;
        Ok(reply)
    }

    fn parse_client_first(&self, msg: &[u8]) -> Result<FirstData, SaslError> {
        let Mechanism::Scram { alg, plus } = self.mech else {
            return Err(SaslError::InvalidMechanism);
        };
        let msg = as_message(msg)?;
        let header = parse_gs2_header(msg)?;
        let cb_data = match header.cb {
            Gs2Cb::Plus(name) => {
                if !plus {
                    return Err(SaslError::ChannelBinding(
                        "channel binding requested with a non-PLUS mechanism".into(),
                    ));
                }
                let data = CbType::from_name(name)
                    .and_then(|t| self.bindings.get(t))
                    .ok_or_else(|| SaslError::UnsupportedChannelBinding(name.to_owned()))?;
                data.to_vec()
            }
            Gs2Cb::No | Gs2Cb::Yes if plus => {
                return Err(SaslError::ChannelBinding(
                    "PLUS mechanism without binding".into(),
                ));
            }
            Gs2Cb::Yes if self.plus_offered && !self.y_flag_explained => {
                // RFC 5802 §6: the client can bind and so can we, yet it thinks we cannot.
                return Err(SaslError::ChannelBinding(
                    "downgrade detected ('y' flag)".into(),
                ));
            }
            Gs2Cb::No | Gs2Cb::Yes => Vec::new(),
        };
        let bare = &msg[header.len..];
        let mut attrs = bare.split(',');
        let first_attr = attrs.next().unwrap_or_default();
        if first_attr.starts_with("m=") {
            return Err(MalformedRequest("mandatory extension not supported".into()));
        }
        let username = first_attr
            .strip_prefix("n=")
            .ok_or_else(|| MalformedRequest("missing username".into()))?;
        let authcid = prepare_username(&decode_saslname(username)?)?;
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| MalformedRequest("missing nonce".into()))?;
        if !is_valid_nonce(client_nonce) {
            return Err(MalformedRequest("invalid nonce".into()));
        }
        check_extensions(attrs)?;
        Ok(FirstData {
            alg,
            gs2_header: msg[..header.len].to_owned(),
            cb_data,
            bare: bare.to_owned(),
            client_nonce: client_nonce.to_owned(),
            authcid,
            authzid: header.authzid,
        })
    }
}

fn verify_client_final(
    first: &FirstData,
    server: &ServerFirstData,
    msg: &[u8],
) -> Result<Vec<u8>, SaslError> {
    let alg = first.alg;
    let msg = as_message(msg)?;
    let (without_proof, proof_b64) = msg
        .rsplit_once(",p=")
        .ok_or_else(|| MalformedRequest("missing proof".into()))?;
    let mut attrs = without_proof.split(',');
    let cb_b64 = attrs
        .next()
        .and_then(|a| a.strip_prefix("c="))
        .ok_or_else(|| MalformedRequest("missing channel binding".into()))?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or_else(|| MalformedRequest("missing nonce".into()))?;
    check_extensions(attrs)?;
    let cb = B64
        .decode(cb_b64)
        .map_err(|_| MalformedRequest("bad base64 in c=".into()))?;
    let proof = B64
        .decode(proof_b64)
        .map_err(|_| MalformedRequest("bad base64 in p=".into()))?;

    let mut expected_cb = first.gs2_header.as_bytes().to_vec();
    expected_cb.extend_from_slice(&first.cb_data);
    if !bool::from(cb.ct_eq(&expected_cb)) {
        return Err(SaslError::ChannelBinding(
            "channel bindings don't match".into(),
        ));
    }
    if nonce != server.nonce {
        return Err(SaslError::NotAuthorized);
    }
    if proof.len() != alg.output_len() {
        return Err(SaslError::NotAuthorized);
    }

    let auth_message = [
        first.bare.as_bytes(),
        b",",
        server.message.as_bytes(),
        b",",
        without_proof.as_bytes(),
    ];
    let client_signature = crypto::hmac(alg, &server.keys.stored_key, &auth_message);
    let client_key = crypto::xor(&proof, &client_signature);
    let matches = crypto::hash(alg, &client_key).ct_eq(&server.keys.stored_key);
    // The fake check comes last so unknown users cost the same work as wrong passwords.
    if !bool::from(matches) || server.fake {
        return Err(SaslError::NotAuthorized);
    }
    let server_signature = crypto::hmac(alg, &server.keys.server_key, &auth_message);
    Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
}

/// Keys for an unknown user: stable per (username, hash) within this process, so repeated
/// probes see the same salt as they would for a real account, yet unlinkable across restarts.
fn fake_keys(alg: HashAlg, authcid: &str) -> ScramKeys {
    static SECRET: OnceLock<Vec<u8>> = OnceLock::new();
    let secret = SECRET.get_or_init(|| crypto::random_bytes(32));
    let derive = |label: &[u8], hash: HashAlg| {
        crypto::hmac(
            hash,
            secret,
            &[
                label,
                b"\0",
                alg.as_str().as_bytes(),
                b"\0",
                authcid.as_bytes(),
            ],
        )
    };
    let mut salt = derive(b"salt", HashAlg::Sha256);
    salt.truncate(16);
    ScramKeys {
        alg,
        salt,
        iterations: FAKE_ITERATIONS,
        stored_key: derive(b"stored-key", alg),
        server_key: derive(b"server-key", alg),
    }
}

/// Checks size and encoding shared by every SCRAM message.
pub(crate) fn as_message(msg: &[u8]) -> Result<&str, SaslError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(MalformedRequest("message too long".into()));
    }
    std::str::from_utf8(msg).map_err(|_| MalformedRequest("invalid UTF-8".into()))
}

enum Gs2Cb<'a> {
    No,
    Yes,
    Plus(&'a str),
}

struct Gs2Header<'a> {
    cb: Gs2Cb<'a>,
    authzid: Option<String>,
    /// Bytes of the header including its trailing comma.
    len: usize,
}

fn parse_gs2_header(msg: &str) -> Result<Gs2Header<'_>, SaslError> {
    let mut parts = msg.splitn(3, ',');
    let (Some(flag), Some(authzid_raw), Some(_)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(MalformedRequest("incomplete GS2 header".into()));
    };
    let cb = match flag {
        "n" => Gs2Cb::No,
        "y" => Gs2Cb::Yes,
        _ => match flag.strip_prefix("p=") {
            Some(name)
                if !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') =>
            {
                Gs2Cb::Plus(name)
            }
            _ => return Err(MalformedRequest("invalid GS2 channel-binding flag".into())),
        },
    };
    let authzid = match authzid_raw {
        "" => None,
        a => match a.strip_prefix("a=") {
            Some(name) => Some(decode_saslname(name)?),
            None => return Err(MalformedRequest("invalid GS2 authzid".into())),
        },
    };
    Ok(Gs2Header {
        cb,
        authzid,
        len: flag.len() + authzid_raw.len() + 2,
    })
}

/// Decodes an RFC 5802 `saslname`: `=2C` is ',', `=3D` is '=', any other '=' is an error.
pub(crate) fn decode_saslname(s: &str) -> Result<String, SaslError> {
    if s.is_empty() {
        return Err(MalformedRequest("empty name".into()));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(MalformedRequest("invalid escape in name".into())),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    if out.contains('\0') {
        return Err(MalformedRequest("NUL in name".into()));
    }
    Ok(out)
}

/// Encodes a `saslname` (the inverse of [`decode_saslname`]).
pub(crate) fn encode_saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

/// A nonce is printable ASCII except ','.
pub(crate) fn is_valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Optional attributes must still look like `x=value` with a single-letter name.
pub(crate) fn check_extensions<'a>(attrs: impl Iterator<Item = &'a str>) -> Result<(), SaslError> {
    for attr in attrs {
        let b = attr.as_bytes();
        if b.len() < 2 || !b[0].is_ascii_alphabetic() || b[1] != b'=' {
            return Err(MalformedRequest("invalid attribute".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saslname_escapes() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").as_deref(), Ok("a,b=c"));
        assert_eq!(decode_saslname("=3D=2C").as_deref(), Ok("=,"));
        for bad in [
            "", "a=", "a=2", "a=2c", "a=3d", "a=41", "==3D", "a\0b", "=2",
        ] {
            assert!(decode_saslname(bad).is_err(), "{bad:?}");
        }
        for s in ["a,b=c", "plain", "=,=,", "ü=2C"] {
            assert_eq!(decode_saslname(&encode_saslname(s)).as_deref(), Ok(s));
        }
    }

    #[test]
    fn nonce_charset() {
        assert!(is_valid_nonce("fyko+d2lbbFgONRv9qkxdawL"));
        assert!(is_valid_nonce("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"));
        assert!(!is_valid_nonce(""));
        assert!(!is_valid_nonce("a b"));
        assert!(!is_valid_nonce("a,b"));
        assert!(!is_valid_nonce("ü"));
        assert!(!is_valid_nonce("a\x7f"));
    }

    #[test]
    fn gs2_header_lengths_and_authzid() {
        let h = parse_gs2_header("n,,n=user,r=x").expect("valid");
        assert_eq!(h.len, 3);
        assert!(matches!(h.cb, Gs2Cb::No));
        let h = parse_gs2_header("p=tls-exporter,a=ro=3Dmeo,n=u,r=x").expect("valid");
        assert_eq!(h.len, "p=tls-exporter,a=ro=3Dmeo,".len());
        assert_eq!(h.authzid.as_deref(), Some("ro=meo"));
        assert!(matches!(h.cb, Gs2Cb::Plus("tls-exporter")));
        for bad in [
            "",
            "n",
            "n,",
            "x,,n=u",
            "p=,,n=u",
            "p=a b,,n=u",
            "n,b=x,n=u",
            "n,a=,n=u",
        ] {
            assert!(parse_gs2_header(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn extensions_shape() {
        assert!(check_extensions(["x=1", "y="].into_iter()).is_ok());
        for bad in ["", "x", "=1", "1=2", "xy=1"] {
            assert!(check_extensions([bad].into_iter()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fake_keys_are_stable_and_per_user() {
        let a = fake_keys(HashAlg::Sha256, "alice");
        assert_eq!(a, fake_keys(HashAlg::Sha256, "alice"));
        assert_ne!(a.salt, fake_keys(HashAlg::Sha256, "bob").salt);
        assert_ne!(a.salt, fake_keys(HashAlg::Sha1, "alice").salt);
        assert_eq!(a.salt.len(), 16);
        for alg in HashAlg::ALL {
            assert!(fake_keys(alg, "x").is_usable(alg));
        }
    }

    #[test]
    fn ssdp_hash_input_order_and_separators() {
        let sha1 = Mechanism::Scram {
            alg: HashAlg::Sha1,
            plus: false,
        };
        let sha1p = Mechanism::Scram {
            alg: HashAlg::Sha1,
            plus: true,
        };
        let expect = |input: &str| B64.encode(crypto::hash(HashAlg::Sha256, input.as_bytes()));
        assert_eq!(
            downgrade_protection_hash(HashAlg::Sha256, &[sha1p, Mechanism::Plain, sha1], &[]),
            expect("PLAIN\u{1e}SCRAM-SHA-1\u{1e}SCRAM-SHA-1-PLUS")
        );
        assert_eq!(
            downgrade_protection_hash(
                HashAlg::Sha256,
                &[sha1],
                &[CbType::TlsServerEndPoint, CbType::TlsExporter]
            ),
            expect("SCRAM-SHA-1\u{1f}tls-exporter\u{1e}tls-server-end-point")
        );
    }
}
