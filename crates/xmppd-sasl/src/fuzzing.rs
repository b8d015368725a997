//! The SASL fuzzing oracle, shared by the cargo-fuzz target `sasl` (`fuzz/`) and by a stable
//! test that replays the committed corpus (`fuzz/corpus/sasl/`) in CI.
//!
//! [`check`] reads its input as `FLAGS STREAM MESSAGE [LF FINAL]`. The FLAGS byte sets the
//! scene:
//! - bits 0–1: SCRAM-SHA-1, SCRAM-SHA-256, SCRAM-SHA-512, or (3) PLAIN;
//! - bit 2: the `-PLUS` variant;
//! - bits 3–4: what the server advertised: nothing, SCRAM without `-PLUS` and PLAIN, every
//!   mechanism, or every mechanism and its channel-binding types (XEP-0440);
//! - bits 5, 6: the connection has `tls-exporter`, `tls-server-end-point` data;
//! - bit 7: the account exists (its password is `pencil`).
//!
//! The STREAM byte says what happened earlier on the stream: bit 0, the client asked for a
//! channel-binding type the server lacks, which explains a `y` flag (`accept_y_flag`); the
//! other bits are ignored.
//!
//! For PLAIN the rest of the input is the message. For SCRAM, MESSAGE is client-first-message
//! and FINAL a template of client-final-message: `{c}` and `{r}` stand for the right channel
//! binding and nonce, and `{p}` after the last `,p=` for the right proof of what precedes it,
//! so that the fuzzer reaches the success path and can damage it one piece at a time.
//!
//! The oracle holds a model of the grammar (RFC 5802 §7, RFC 4616 §2) written apart from the
//! parser, and panics unless:
//! - client-first-message is accepted exactly when the model accepts it, with the same authcid
//!   and authzid; a malformed GS2 header or message is malformed-request; a channel-binding flag
//!   that does not fit the mechanism (`p=` without `-PLUS`, `n` or `y` with it) or a `y` while
//!   `-PLUS` was advertised (RFC 5802 §6, a downgrade) unless the stream explained it, is a
//!   channel-binding failure; a `p=` type without data is an unsupported binding type;
//! - server-first-message extends the client's nonce, carries the account's salt and count
//!   (the fake ones for an unknown account), and the XEP-0474 hash exactly when something was
//!   advertised;
//! - client-final-message succeeds exactly when its channel binding, nonce and proof are right
//!   and the account exists, and then the server signature is right: a wrong proof never
//!   succeeds, and neither does the right password for an account that does not exist;
//! - nothing is accepted out of order: a second client-first, a client-final before
//!   server-first or after the end;
//! - PLAIN is parsed exactly as the model parses it, and names are SASLprep'd idempotently.

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::{
    crypto, downgrade_protection_hash, parse_plain, CbType, ChannelBindings, HashAlg, Mechanism,
    PlainCredentials, SaslError, ScramKeys, ScramServer, FAKE_ITERATIONS, MAX_MESSAGE_LEN,
    MAX_PLAIN_FIELD_LEN,
};

/// The server's part of every nonce, so that a run is reproducible.
const SERVER_NONCE: &str = "xmppd-fuzzing-server-nonce";
const PASSWORD: &str = "pencil";
const SALT: &[u8] = b"xmppd fuzzing salt";
/// Low, so that the fuzzer spends its time in the parser rather than in PBKDF2.
const ITERATIONS: u32 = 2;

/// How far an input got, so that tests can tell that the corpus reaches every end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Empty,
    PlainAccepted,
    PlainRefused,
    FirstRefused,
    /// client-first accepted, no client-final given.
    NoFinal,
    FinalRefused,
    Authenticated,
}

/// Runs the oracle on one input; panics on a violation.
pub fn check(data: &[u8]) -> Outcome {
    let [flags, stream, rest @ ..] = data else {
        return Outcome::Empty;
    };
    let scene = Scene::new(*flags, *stream);
    match scene.mech {
        Mechanism::Scram { alg, plus } => check_scram(&scene, alg, plus, rest),
        _ => check_plain(&scene, rest),
    }
}

struct Scene {
    mech: Mechanism,
    offered: Vec<Mechanism>,
    cb_offered: Vec<CbType>,
    bindings: ChannelBindings,
    account: bool,
    y_flag_explained: bool,
}

impl Scene {
    fn new(flags: u8, stream: u8) -> Self {
        let plus = flags & 0b100 != 0;
        let mech = match flags & 0b11 {
            0 => Mechanism::Scram {
                alg: HashAlg::Sha1,
                plus,
            },
            1 => Mechanism::Scram {
                alg: HashAlg::Sha256,
                plus,
            },
            2 => Mechanism::Scram {
                alg: HashAlg::Sha512,
                plus,
            },
            _ => Mechanism::Plain,
        };
        let bindings = ChannelBindings {
            tls_exporter: (flags & 0b10_0000 != 0).then(|| b"exporter-data".to_vec()),
            tls_server_end_point: (flags & 0b100_0000 != 0).then(|| b"end-point-data".to_vec()),
        };
        let without_plus = Mechanism::ALL
            .into_iter()
            .filter(|m| matches!(m, Mechanism::Plain | Mechanism::Scram { plus: false, .. }));
        let (offered, cb_offered) = match (flags >> 3) & 0b11 {
            0 => (Vec::new(), Vec::new()),
            1 => (without_plus.collect(), Vec::new()),
            2 => (Mechanism::ALL.to_vec(), Vec::new()),
            _ => (Mechanism::ALL.to_vec(), bindings.available()),
        };
        Scene {
            mech,
            offered,
            cb_offered,
            bindings,
            account: flags & 0b1000_0000 != 0,
            y_flag_explained: stream & 1 != 0,
        }
    }

    fn plus_offered(&self) -> bool {
        (self.offered.iter()).any(|m| matches!(m, Mechanism::Scram { plus: true, .. }))
    }

    fn server(&self) -> ScramServer {
        let server = ScramServer::new(
            self.mech,
            self.bindings.clone(),
            &self.offered,
            &self.cb_offered,
        )
        .with_nonce(SERVER_NONCE);
        match self.y_flag_explained {
            true => server.accept_y_flag(),
            false => server,
        }
    }
}

/// The account's stored keys and its ClientKey (what only a client knowing the password has).
struct Account {
    keys: ScramKeys,
    client_key: Vec<u8>,
}

fn account(alg: HashAlg) -> &'static Account {
    static ACCOUNTS: OnceLock<Vec<Account>> = OnceLock::new();
    let accounts = ACCOUNTS.get_or_init(|| {
        HashAlg::ALL
            .into_iter()
            .map(|alg| {
                let keys = ScramKeys::derive(alg, PASSWORD, SALT, ITERATIONS).expect("keys");
                let salted = crypto::hi(alg, PASSWORD.as_bytes(), SALT, ITERATIONS);
                let client_key = crypto::hmac(alg, &salted, &[b"Client Key"]);
                Account { keys, client_key }
            })
            .collect()
    });
    let i = HashAlg::ALL.iter().position(|a| *a == alg).expect("known");
    &accounts[i]
}

/// What client-first-message means, according to the model.
#[derive(Debug)]
struct First {
    /// The GS2 header, trailing comma included.
    gs2_header: String,
    bare: String,
    cb_data: Vec<u8>,
    authcid: String,
    authzid: Option<String>,
    nonce: String,
}

#[derive(Debug)]
enum Refusal {
    Malformed,
    ChannelBinding,
    /// `p=` names a type this connection has no data for: the client may retry with `y`.
    UnsupportedType,
}

fn check_scram(scene: &Scene, alg: HashAlg, plus: bool, rest: &[u8]) -> Outcome {
    let (first_msg, template) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let mut server = scene.server();
    let got = server.client_first(first_msg);
    let shown = String::from_utf8_lossy(first_msg);
    let first = match (model_first(first_msg, scene, plus), got) {
        (Ok(model), Ok(got)) => {
            assert_eq!(got.authcid, model.authcid, "authcid of {shown:?}");
            assert_eq!(got.authzid, model.authzid, "authzid of {shown:?}");
            assert_saslprep_stable(&got.authcid);
            model
        }
        (Err(Refusal::Malformed), Err(SaslError::MalformedRequest(_)))
        | (Err(Refusal::ChannelBinding), Err(SaslError::ChannelBinding(_)))
        | (Err(Refusal::UnsupportedType), Err(SaslError::UnsupportedChannelBinding(_))) => {
            // A refused exchange stays refused.
            assert!(server.server_first(None).is_empty());
            assert!(server.client_final(b"c=biws,r=x,p=eA==").is_err());
            return Outcome::FirstRefused;
        }
        (model, got) => panic!("client-first {shown:?}: model says {model:?}, server {got:?}"),
    };

    let account = scene.account.then(|| account(alg));
    let server_first = server.server_first(account.map(|a| &a.keys));
    let server_first = String::from_utf8(server_first).expect("server-first is UTF-8");
    check_server_first(scene, alg, &first, account, &server_first);

    let Some(template) = template else {
        assert!(
            server.client_first(first_msg).is_err(),
            "second client-first"
        );
        assert!(
            server.client_final(b"c=biws,r=x,p=eA==").is_err(),
            "client-final after a refused step"
        );
        return Outcome::NoFinal;
    };
    let proof = |without_proof: &[u8]| {
        let auth = auth_message(&first, &server_first, without_proof);
        let account = self::account(alg);
        let signature = crypto::hmac(alg, &account.keys.stored_key, &[&auth]);
        B64.encode(crypto::xor(&account.client_key, &signature))
    };
    let msg = expand(template, &first, &proof);
    let expected = model_final(&msg, alg, &first, &server_first, account);
    let outcome = match (server.client_final(&msg), expected) {
        (Ok(got), Some(expected)) => {
            assert_eq!(got, expected, "server signature");
            Outcome::Authenticated
        }
        (Err(_), None) => Outcome::FinalRefused,
        (got, expected) => panic!(
            "client-final {:?}: expected {}, server says {got:?}",
            String::from_utf8_lossy(&msg),
            if expected.is_some() {
                "success"
            } else {
                "failure"
            },
        ),
    };
    assert!(server.client_final(&msg).is_err(), "client-final replayed");
    outcome
}

fn check_server_first(
    scene: &Scene,
    alg: HashAlg,
    first: &First,
    account: Option<&Account>,
    server_first: &str,
) {
    let mut attrs = server_first.split(',');
    let nonce = format!("r={}{SERVER_NONCE}", first.nonce);
    assert_eq!(attrs.next(), Some(nonce.as_str()), "{server_first:?}");
    let salt = (attrs.next().and_then(|s| s.strip_prefix("s=")))
        .and_then(|s| B64.decode(s).ok())
        .unwrap_or_else(|| panic!("salt of {server_first:?}"));
    let count = attrs.next().and_then(|i| i.strip_prefix("i="));
    match account {
        Some(a) => {
            assert_eq!(salt, a.keys.salt, "{server_first:?}");
            assert_eq!(count, Some(ITERATIONS.to_string().as_str()));
        }
        None => {
            assert!(!salt.is_empty(), "{server_first:?}");
            assert_eq!(count, Some(FAKE_ITERATIONS.to_string().as_str()));
        }
    }
    let ssdp = (!scene.offered.is_empty())
        .then(|| downgrade_protection_hash(alg, &scene.offered, &scene.cb_offered));
    assert_eq!(
        attrs.next().map(str::to_owned),
        ssdp.map(|h| format!("h={h}")),
        "XEP-0474 attribute in {server_first:?}"
    );
    assert_eq!(attrs.next(), None, "{server_first:?}");
}

/// RFC 5802 §7 `client-first-message`, with the server's channel-binding rules (§6).
fn model_first(msg: &[u8], scene: &Scene, plus: bool) -> Result<First, Refusal> {
    use Refusal::{ChannelBinding, Malformed, UnsupportedType};
    let text = std::str::from_utf8(msg).map_err(|_| Malformed)?;
    if text.len() > MAX_MESSAGE_LEN {
        return Err(Malformed);
    }
    // gs2-header = gs2-cbind-flag "," [ authzid ] ","
    let (flag, rest) = text.split_once(',').ok_or(Malformed)?;
    let (authzid, bare) = rest.split_once(',').ok_or(Malformed)?;
    let cb_name = match flag {
        "n" | "y" => None,
        _ => {
            let name = flag.strip_prefix("p=").ok_or(Malformed)?;
            let cb_name_char = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
            if name.is_empty() || !name.chars().all(cb_name_char) {
                return Err(Malformed);
            }
            Some(name)
        }
    };
    let authzid = match authzid {
        "" => None,
        a => Some(saslname(a.strip_prefix("a=").ok_or(Malformed)?).ok_or(Malformed)?),
    };
    let cb_data = match cb_name {
        Some(_) if !plus => return Err(ChannelBinding),
        Some(name) => {
            let data = CbType::ALL
                .into_iter()
                .find(|t| t.name() == name)
                .and_then(|t| scene.bindings.get(t));
            data.ok_or(UnsupportedType)?.to_vec()
        }
        None if plus => return Err(ChannelBinding),
        None if flag == "y" && scene.plus_offered() && !scene.y_flag_explained => {
            return Err(ChannelBinding)
        }
        None => Vec::new(),
    };
    // client-first-message-bare = username "," nonce ["," extensions]; a reserved `m=` in
    // front of the username is a mandatory extension this server does not know.
    let mut attrs = bare.split(',');
    let username = (attrs.next().and_then(|a| a.strip_prefix("n=")))
        .and_then(saslname)
        .ok_or(Malformed)?;
    let authcid = match stringprep::saslprep(&username) {
        Ok(p) if !p.is_empty() => p.into_owned(),
        _ => return Err(Malformed),
    };
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(Malformed)?;
    if !is_printable(nonce) || !attrs.all(is_extension) {
        return Err(Malformed);
    }
    Ok(First {
        gs2_header: text[..text.len() - bare.len()].to_owned(),
        bare: bare.to_owned(),
        cb_data,
        authcid,
        authzid,
        nonce: nonce.to_owned(),
    })
}

/// `saslname = 1*(value-safe-char / "=2C" / "=3D")`, decoded; NUL is not a value-safe-char.
fn saslname(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\0' | ',' => return None,
            '=' => match (chars.next(), chars.next()) {
                (Some('2'), Some('C')) => out.push(','),
                (Some('3'), Some('D')) => out.push('='),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    (!out.is_empty()).then_some(out)
}

/// `printable = %x21-2B / %x2D-7E`, at least one.
fn is_printable(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| matches!(b, 0x21..=0x2b | 0x2d..=0x7e))
}

/// `attr-val = ALPHA "=" value`; the server lets an empty value pass, as unknown optional
/// attributes are ignored anyway (RFC 5802 §5.1).
fn is_extension(attr: &str) -> bool {
    let b = attr.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b'='
}

/// `AuthMessage = client-first-message-bare "," server-first-message "," client-final-without-proof`
fn auth_message(first: &First, server_first: &str, without_proof: &[u8]) -> Vec<u8> {
    [
        first.bare.as_bytes(),
        b",",
        server_first.as_bytes(),
        b",",
        without_proof,
    ]
    .concat()
}

/// The FINAL template with `{c}`, `{r}` and `{p}` filled in.
fn expand(template: &[u8], first: &First, proof: &dyn Fn(&[u8]) -> String) -> Vec<u8> {
    let cb = B64.encode([first.gs2_header.as_bytes(), &first.cb_data].concat());
    let nonce = format!("{}{SERVER_NONCE}", first.nonce);
    let fill = |s: &[u8]| replace(&replace(s, b"{c}", cb.as_bytes()), b"{r}", nonce.as_bytes());
    let Some(at) = rfind(template, b",p=") else {
        return fill(template);
    };
    let mut msg = fill(&template[..at]);
    let proof = proof(&msg);
    msg.extend_from_slice(&replace(&template[at..], b"{p}", proof.as_bytes()));
    msg
}

/// RFC 5802 §7 `client-final-message`, checked against the exchange so far: the server
/// signature if the server must accept it.
fn model_final(
    msg: &[u8],
    alg: HashAlg,
    first: &First,
    server_first: &str,
    account: Option<&Account>,
) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(msg).ok()?;
    if text.len() > MAX_MESSAGE_LEN {
        return None;
    }
    let at = text.rfind(",p=")?;
    let (without_proof, proof) = (&text[..at], &text[at + 3..]);
    let mut attrs = without_proof.split(',');
    let cb = B64.decode(attrs.next()?.strip_prefix("c=")?).ok()?;
    let nonce = attrs.next()?.strip_prefix("r=")?;
    if !attrs.all(is_extension)
        || cb != [first.gs2_header.as_bytes(), &first.cb_data].concat()
        || nonce != format!("{}{SERVER_NONCE}", first.nonce)
    {
        return None;
    }
    let account = account?;
    let auth = auth_message(first, server_first, without_proof.as_bytes());
    let signature = crypto::hmac(alg, &account.keys.stored_key, &[&auth]);
    let right = crypto::xor(&account.client_key, &signature);
    if B64.decode(proof).ok()? != right {
        return None;
    }
    let server_signature = crypto::hmac(alg, &account.keys.server_key, &[&auth]);
    Some(format!("v={}", B64.encode(server_signature)).into_bytes())
}

fn check_plain(scene: &Scene, msg: &[u8]) -> Outcome {
    let shown = String::from_utf8_lossy(msg);
    let outcome = match (parse_plain(msg), model_plain(msg)) {
        (Ok(got), Some(model)) => {
            assert!(got == model, "PLAIN {shown:?}: {got:?}, model {model:?}");
            assert_saslprep_stable(&got.authcid);
            assert_saslprep_stable(&got.password);
            Outcome::PlainAccepted
        }
        (Err(SaslError::MalformedRequest(_)), None) => Outcome::PlainRefused,
        (got, model) => panic!("PLAIN {shown:?}: server {got:?}, model {model:?}"),
    };
    // A SCRAM server asked to run PLAIN refuses every step.
    let mut server = scene.server();
    assert_eq!(server.client_first(msg), Err(SaslError::InvalidMechanism));
    assert!(server.server_first(None).is_empty());
    assert!(server.client_final(msg).is_err());
    outcome
}

/// RFC 4616 §2: `[authzid] UTF8NUL authcid UTF8NUL passwd`, each at most 255 bytes, the
/// authcid and password SASLprep'd and not empty.
fn model_plain(msg: &[u8]) -> Option<PlainCredentials> {
    let text = std::str::from_utf8(msg).ok()?;
    let mut fields = text.split('\0');
    let (authzid, authcid, password) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() {
        return None;
    }
    if [authzid, authcid, password]
        .iter()
        .any(|f| f.len() > MAX_PLAIN_FIELD_LEN)
    {
        return None;
    }
    let prepared = |s: &str| match stringprep::saslprep(s) {
        Ok(p) if !p.is_empty() => Some(p.into_owned()),
        _ => None,
    };
    Some(PlainCredentials {
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        authcid: prepared(authcid)?,
        password: prepared(password)?,
    })
}

/// What the server returns as prepared must not change when prepared again, or a name stored
/// after one login would not match the next.
fn assert_saslprep_stable(prepared: &str) {
    let again = stringprep::saslprep(prepared)
        .unwrap_or_else(|e| panic!("prepared {prepared:?} refused when prepared again: {e}"));
    assert_eq!(
        again, prepared,
        "SASLprep is not idempotent on {prepared:?}"
    );
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    (haystack.windows(needle.len())).rposition(|w| w == needle)
}

fn replace(s: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to);
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}
