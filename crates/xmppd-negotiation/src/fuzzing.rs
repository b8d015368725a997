//! The negotiation machine's fuzzing oracle, shared by the cargo-fuzz target
//! (`fuzz/fuzz_targets/negotiation.rs`) and by a stable test that replays the committed corpus
//! (`fuzz/corpus/negotiation/`).
//!
//! [`check`] reads its input as a script. The first byte picks the transport and settings
//! (bit 0: direct TLS, bit 1: the backend has SCRAM keys, bit 2: TLS required), the second the
//! failure limit. Then each byte is one step: with bit 7 set while the machine waits for an
//! answer, it answers that request (the low bits pick the verdict); otherwise its low four bits
//! pick an event, and the next byte or bytes its content (see [`event`]). The machine runs the
//! client role. It panics unless:
//! - no session is bound without a successful authentication: `Authenticated` comes only in
//!   answer to an account check that said "enabled" after a credential check, and `Ready`
//!   and the bind request only after it;
//! - PLAIN is never offered nor accepted before TLS is up, and TLS is up only after the
//!   machine asked for it and the driver said it was done;
//! - a stream error is always written inside a stream we opened;
//! - at most one request is outstanding, it is the last action of its step, and nothing follows
//!   a final action.

use std::sync::{Arc, OnceLock};

use jid::FullJid;
use minidom::Element;
use xmppd_sasl::{ChannelBindings, HashAlg, Mechanism, ScramKeys};
use xmppd_stream::{Limits, StreamErrorCondition as Cond, StreamHeader, NS_CLIENT, NS_STREAM};

use crate::xml::element;
use crate::{
    Action, BackendFailure, BindRefusal, ClientRole, Event, HostPolicy, Negotiation, Request,
    Settings, TlsStep, NS_BIND, NS_SASL, NS_SESSION, NS_TLS,
};

const HOST: &str = "example.org";
const NS_REGISTER: &str = "jabber:iq:register";

type Machine = Negotiation<ClientRole>;

/// How far a script got, so that a replayed corpus can show it still reaches its goal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reached {
    pub tls: bool,
    pub authenticated: bool,
    pub bound: bool,
}

/// Runs the oracle on one input; panics on a violation.
pub fn check(data: &[u8]) -> Reached {
    let mut input = Input(data);
    let (Some(flags), Some(max_failures)) = (input.byte(), input.byte()) else {
        return Reached::default();
    };
    let tls = if flags & 1 != 0 {
        TlsStep::Direct
    } else {
        TlsStep::StartTls
    };
    let settings = Arc::new(Settings {
        hosts: vec![HostPolicy {
            name: HOST.into(),
            scram: flags & 2 != 0,
            login_suffixes: Vec::new(),
            pre_auth: vec![(
                NS_REGISTER.into(),
                Element::bare("register", "http://jabber.org/features/iq-register"),
            )],
        }],
        require_tls: flags & 4 != 0,
        pre_auth_limits: Limits::PRE_AUTH,
        limits: Limits::DEFAULT,
        max_auth_failures: u32::from(max_failures % 5),
        pre_auth_namespaces: vec![NS_REGISTER.into()],
        sasl2: None,
    });
    let features: Arc<[Element]> = vec![Element::bare("ver", "urn:xmpp:features:rosterver")].into();
    let mut machine = Machine::new(ClientRole::new(features), settings, tls);
    let mut oracle = Oracle::default();
    let actions = machine.start();
    oracle.observe(&machine, actions);
    while let Some(op) = input.byte() {
        let event = match oracle.pending.take() {
            Some(request) if op & 0x80 != 0 => answer(&request, op & 0x7f),
            pending => {
                oracle.pending = pending;
                match event(op, &mut input) {
                    Some(event) => event,
                    None => continue,
                }
            }
        };
        oracle.feed(&event);
        let actions = machine.handle(event);
        oracle.observe(&machine, actions);
    }
    Reached {
        tls: oracle.tls_up,
        authenticated: oracle.authenticated,
        bound: oracle.bound,
    }
}

/// What the oracle knows from outside the machine.
#[derive(Default)]
struct Oracle {
    /// The request the machine waits on.
    pending: Option<Request<ClientRole>>,
    /// The machine asked for TLS and was not told it is up yet.
    upgrade_asked: bool,
    /// TLS was reported up after the machine asked for it.
    tls_up: bool,
    /// The last event was an account check saying "enabled" for a credential the machine had
    /// asked about.
    enabled_now: bool,
    /// A credential check or SCRAM exchange reached the account check.
    account_asked: bool,
    authenticated: bool,
    bound: bool,
    /// Our header for the current stream is out.
    header_out: bool,
    ended: bool,
}

impl Oracle {
    fn feed(&mut self, event: &Event<ClientRole>) {
        // Whatever comes now either answers the request (a scripted event may be the right
        // answer too) or ends the stream.
        self.pending = None;
        self.enabled_now = matches!(event, Event::AccountChecked { enabled: true })
            && std::mem::take(&mut self.account_asked);
        if matches!(event, Event::TlsEstablished(_)) && std::mem::take(&mut self.upgrade_asked) {
            self.tls_up = true;
        }
    }

    fn observe(&mut self, machine: &Machine, actions: Vec<Action<ClientRole>>) {
        if self.ended {
            assert!(actions.is_empty(), "actions after the end: {actions:?}");
            return;
        }
        let count = actions.len();
        for (i, action) in actions.into_iter().enumerate() {
            assert!(!self.ended, "an action after a final one");
            let last = i + 1 == count;
            match action {
                Action::OpenStream(open) => {
                    assert!(!self.header_out, "two headers for one stream");
                    assert_eq!(open.ns, NS_CLIENT);
                    self.header_out = true;
                }
                Action::Send(el) => {
                    assert!(self.header_out, "an element outside a stream: {el:?}");
                    if el.is("features", NS_STREAM) && offers_plain(&el) {
                        assert!(self.tls_up, "PLAIN offered without TLS");
                    }
                }
                Action::UpgradeTls => {
                    assert!(!self.tls_up, "TLS twice");
                    self.upgrade_asked = true;
                    self.header_out = false;
                }
                Action::SetLimits(_) => {
                    assert!(
                        self.authenticated,
                        "post-login limits without authentication"
                    );
                }
                Action::RestartStream { .. } => {
                    assert!(self.authenticated, "a restart without authentication");
                    self.header_out = false;
                }
                Action::Ask(request) => {
                    assert!(last, "a request that is not the last action");
                    assert!(self.pending.is_none());
                    match &request {
                        Request::CheckAccount { .. } => self.account_asked = true,
                        Request::Role(_) => {
                            assert!(self.authenticated, "bind before authentication")
                        }
                        Request::CheckPassword { .. } => {
                            assert!(self.tls_up, "a PLAIN password taken without TLS")
                        }
                        _ => {}
                    }
                    self.pending = Some(request);
                }
                Action::Authenticated { mechanism, .. } => {
                    assert!(
                        std::mem::take(&mut self.enabled_now),
                        "authenticated without an enabled account's proof"
                    );
                    assert!(!self.authenticated, "authenticated twice");
                    if mechanism == Mechanism::Plain {
                        assert!(self.tls_up, "PLAIN accepted without TLS");
                    }
                    self.authenticated = true;
                }
                Action::Ready(_) => {
                    assert!(self.authenticated, "a session without authentication");
                    self.bound = true;
                    self.ended = true;
                }
                Action::StreamError(..) => {
                    assert!(self.header_out, "a stream error outside a stream");
                    self.ended = true;
                }
                Action::EndStream => {
                    assert!(self.header_out);
                    self.ended = true;
                }
                Action::Close => self.ended = true,
            }
        }
        assert!(!machine.is_secure() || self.tls_up, "secure without TLS");
        assert_eq!(machine.is_done(), self.ended);
        if self.ended {
            self.pending = None;
        }
    }
}

fn offers_plain(features: &Element) -> bool {
    (features.get_child("mechanisms", NS_SASL).into_iter())
        .flat_map(|m| m.children())
        .any(|m| m.text() == "PLAIN")
}

/// The answer to `request`, its verdict picked by `choice`.
fn answer(request: &Request<ClientRole>, choice: u8) -> Event<ClientRole> {
    let failure = || BackendFailure("fuzzed outage".into());
    match request {
        Request::Turn { .. } | Request::Backoff { .. } => match choice % 8 {
            7 => Event::DeadlinePassed,
            _ => Event::Waited,
        },
        Request::CheckPassword { .. } => Event::PasswordChecked(match choice % 3 {
            0 => Ok(true),
            1 => Ok(false),
            _ => Err(failure()),
        }),
        Request::ScramKeys { alg, .. } => Event::ScramKeys(match choice % 3 {
            0 => Ok(Some(keys(*alg).clone())),
            1 => Ok(None),
            _ => Err(failure()),
        }),
        Request::CheckAccount { .. } => Event::AccountChecked {
            enabled: choice % 4 != 3,
        },
        Request::PreAuthIq { iq, .. } => {
            let id = iq.attr("id").unwrap_or_default();
            Event::PreAuthReply(element("iq", NS_CLIENT, &[("type", "result"), ("id", id)]))
        }
        Request::FastTokens { .. } => Event::FastTokens(Ok(Vec::new())),
        Request::Inline { .. } => Event::Inline(crate::InlineOutcome::Unbound {
            payloads: Vec::new(),
        }),
        Request::Role(bind) => Event::Role(match choice % 4 {
            0 => {
                let resource = bind.resource.as_deref().unwrap_or("fuzz");
                let jid = format!("{}/{resource}", bind.user);
                FullJid::new(&jid).map_err(|_| BindRefusal::BadRequest)
            }
            1 => Err(BindRefusal::BadRequest),
            2 => Err(BindRefusal::ResourceConstraint),
            _ => Err(BindRefusal::NotAllowed),
        }),
    }
}

/// Juliet's keys for `alg`, password "pw", derived once.
fn keys(alg: HashAlg) -> &'static ScramKeys {
    static KEYS: [OnceLock<ScramKeys>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let i = HashAlg::ALL.iter().position(|a| *a == alg).unwrap_or(0);
    KEYS[i].get_or_init(|| ScramKeys::generate(alg, "pw", 4096).expect("valid parameters"))
}

/// One event from `op` and the bytes after it.
fn event(op: u8, input: &mut Input) -> Option<Event<ClientRole>> {
    Some(match op % 16 {
        0 => {
            let b = input.byte()?;
            Event::StreamOpened(StreamHeader {
                to: [
                    Some(HOST),
                    Some("EXAMPLE.org."),
                    Some("other.example"),
                    None,
                ][usize::from(b % 4)]
                .map(str::to_owned),
                default_ns: [Some(NS_CLIENT), Some("jabber:server"), None][usize::from(b / 4 % 3)]
                    .map(str::to_owned),
                version: [Some("1.0"), Some("2.0"), None][usize::from(b / 16 % 3)]
                    .map(str::to_owned),
                from: (b & 0x80 != 0).then(|| "juliet@example.org".to_owned()),
                ..Default::default()
            })
        }
        1 => Event::Element(Element::bare("starttls", NS_TLS)),
        2 => {
            let mechs = [
                "PLAIN",
                "SCRAM-SHA-1",
                "SCRAM-SHA-256",
                "SCRAM-SHA-512",
                "SCRAM-SHA-256-PLUS",
                "SCRAM-SHA-1-PLUS",
                "EXTERNAL",
                "X-UNKNOWN",
            ];
            let mech = mechs[usize::from(input.byte()? % 8)];
            let auth = element("auth", NS_SASL, &[("mechanism", mech)]);
            Event::Element(with_payload(auth, payload(input)?))
        }
        3 => {
            let response = Element::bare("response", NS_SASL);
            Event::Element(with_payload(response, payload(input)?))
        }
        4 => Event::Element(Element::bare("abort", NS_SASL)),
        5 => Event::Element(iq(input.byte()?)),
        6 => {
            let len = usize::from(input.byte()?);
            let text = String::from_utf8_lossy(input.take(len)).into_owned();
            Event::Element(text.parse().ok()?)
        }
        7 => Event::StreamClosed,
        8 => {
            let conds = [
                Cond::NotWellFormed,
                Cond::PolicyViolation,
                Cond::RestrictedXml,
                Cond::InvalidXml,
            ];
            Event::BadInput(conds[usize::from(input.byte()? % 4)])
        }
        9 => {
            let b = input.byte()?;
            Event::TlsEstablished(ChannelBindings {
                tls_exporter: (b & 1 != 0).then(|| vec![b; 32]),
                tls_server_end_point: (b & 2 != 0).then(|| vec![b; 48]),
            })
        }
        10 => Event::Waited,
        11 => Event::PasswordChecked(Ok(input.byte()? & 1 != 0)),
        12 => Event::ScramKeys(Ok(None)),
        13 => Event::AccountChecked {
            enabled: input.byte()? & 1 != 0,
        },
        14 => Event::Role(Err(BindRefusal::NotAllowed)),
        _ => match input.byte()? % 3 {
            0 => Event::DeadlinePassed,
            1 => Event::ShuttingDown,
            _ => Event::PreAuthReply(Element::bare("iq", NS_CLIENT)),
        },
    })
}

/// A SASL element carrying `data` (`None`: no data; text is sent as is).
fn with_payload(mut el: Element, data: Option<String>) -> Element {
    if let Some(data) = data {
        el.append_text(data);
    }
    el
}

/// The text of a SASL element: a few meaningful messages, or bytes from the input.
fn payload(input: &mut Input) -> Option<Option<String>> {
    use base64::Engine;
    let b64 = |data: &[u8]| base64::engine::general_purpose::STANDARD.encode(data);
    let b = input.byte()?;
    let message: &[u8] = match b % 12 {
        0 => b"\0juliet\0pw",
        1 => b"\0a@b\0pw",
        2 => b"romeo@example.org\0juliet\0pw",
        3 => b"n,,n=juliet,r=abc",
        4 => b"y,,n=juliet,r=abc",
        5 => b"p=tls-exporter,,n=juliet,r=abc",
        6 => b"p=tls-unique,,n=juliet,r=abc",
        7 => return Some(None),
        8 => return Some(Some("=".into())),
        9 => return Some(Some("!!not base64".into())),
        _ => {
            let len = usize::from(input.byte()?);
            return Some(Some(b64(input.take(len))));
        }
    };
    Some(Some(b64(message)))
}

/// An IQ of a kind picked by `b`.
fn iq(b: u8) -> Element {
    let (kind, child) = match b % 8 {
        0 => ("get", Element::bare("query", NS_REGISTER)),
        1 => ("set", Element::bare("query", NS_REGISTER)),
        2 => {
            let mut bind = Element::bare("bind", NS_BIND);
            let mut resource = Element::bare("resource", NS_BIND);
            resource.append_text("balcony");
            bind.append_child(resource);
            ("set", bind)
        }
        3 => ("set", Element::bare("bind", NS_BIND)),
        4 => ("set", Element::bare("session", NS_SESSION)),
        5 => ("get", Element::bare("bind", NS_BIND)),
        6 => ("error", Element::bare("query", NS_REGISTER)),
        _ => ("get", Element::bare("ping", "urn:xmpp:ping")),
    };
    let mut iq = element("iq", NS_CLIENT, &[("type", kind), ("id", &format!("i{b}"))]);
    iq.append_child(child);
    iq
}

/// The script being read.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn take(&mut self, len: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        taken
    }
}
