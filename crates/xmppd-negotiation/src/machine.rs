//! The negotiation state machine: stream headers, the TLS step, dispatch of elements to the
//! step they belong to, and the end of the stream. SASL is in `sasl.rs`, what follows it in
//! the [`Role`].

use std::sync::Arc;

use jid::BareJid;
use minidom::Element;
use xmppd_sasl::{Attempts, ChannelBindings, Mechanism};
use xmppd_stream::{StreamErrorCondition as Cond, StreamHeader, NS_CLIENT};

use crate::features;
use crate::role::{Role, RoleStep};
use crate::sasl::Exchange;
use crate::sasl2::Inline;
use crate::xml::iq_error;
use crate::{Action, Event, Request, Settings, StreamOpen, TlsStep, NS_SASL, NS_SASL2, NS_TLS};

/// Where the negotiation is; each state says what input it waits for.
#[derive(Debug)]
pub(crate) enum State {
    /// [`Event::TlsEstablished`] after [`Action::UpgradeTls`].
    Tls,
    /// The peer's stream header.
    Header,
    /// Before authentication: `<starttls/>`, `<auth/>`, or a pre-authentication IQ.
    PreAuth,
    /// One SASL exchange.
    Sasl(Exchange),
    /// [`Event::PreAuthReply`].
    PreAuthIq,
    /// [`Event::Inline`], then `<success/>` over SASL2 with this additional data.
    Inline { data: Vec<u8> },
    /// Authenticated, on the restarted stream: the role's elements.
    Authenticated,
    /// [`Event::Role`].
    Role,
    /// Ready or ended: nothing more happens.
    Done,
}

/// The negotiation of one stream; see the crate documentation.
#[derive(Debug)]
pub struct Negotiation<R: Role> {
    pub(crate) role: R,
    pub(crate) settings: Arc<Settings>,
    tls: TlsStep,
    pub(crate) state: State,
    pub(crate) secure: bool,
    pub(crate) bindings: ChannelBindings,
    /// The served host this stream is for (normalised), once a header named it.
    pub(crate) host: Option<String>,
    /// The peer's `from`, validated, echoed as `to` in our header.
    client_from: Option<String>,
    /// Our header for the current stream was emitted.
    header_sent: bool,
    /// Mechanisms advertised on the current stream.
    pub(crate) offered: Vec<Mechanism>,
    /// SASL attempts on this stream: the failure limit and the `y` flag rule.
    pub(crate) attempts: Attempts,
    /// The authenticated account.
    pub(crate) user: Option<BareJid>,
    /// While a SASL2 exchange runs: what the client asked for inline.
    pub(crate) sasl2: Option<Inline>,
}

impl<R: Role> Negotiation<R> {
    pub fn new(role: R, settings: Arc<Settings>, tls: TlsStep) -> Self {
        let attempts = Attempts::new(settings.max_auth_failures);
        Negotiation {
            role,
            settings,
            tls,
            state: match tls {
                TlsStep::Direct => State::Tls,
                TlsStep::StartTls | TlsStep::Below => State::Header,
            },
            secure: false,
            bindings: ChannelBindings::default(),
            host: None,
            client_from: None,
            header_sent: false,
            offered: Vec::new(),
            attempts,
            user: None,
            sasl2: None,
        }
    }

    /// The actions before any input: TLS first on a direct-TLS transport.
    pub fn start(&mut self) -> Vec<Action<R>> {
        match self.tls {
            TlsStep::Direct => vec![Action::UpgradeTls],
            TlsStep::StartTls | TlsStep::Below => Vec::new(),
        }
    }

    /// Whether TLS is up.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The authenticated account, once there is one.
    pub fn user(&self) -> Option<&BareJid> {
        self.user.as_ref()
    }

    /// Whether negotiation is over (ready or ended).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Takes one event; returns what to do, in order. After a final action
    /// ([`Action::is_final`]) every event is ignored.
    pub fn handle(&mut self, event: Event<R>) -> Vec<Action<R>> {
        let mut out = Vec::new();
        let state = std::mem::replace(&mut self.state, State::Done);
        if matches!(state, State::Done) {
            return out;
        }
        match (state, event) {
            (_, Event::DeadlinePassed) => self.end(Cond::ConnectionTimeout, None, &mut out),
            (_, Event::ShuttingDown) => self.end(Cond::SystemShutdown, None, &mut out),
            (_, Event::BadInput(cond)) => self.end(cond, None, &mut out),
            (_, Event::StreamClosed) => out.push(if self.header_sent {
                Action::EndStream
            } else {
                Action::Close
            }),
            (State::Tls, Event::TlsEstablished(bindings)) => {
                self.bindings = bindings;
                self.secure = true;
                self.state = State::Header;
            }
            (State::Header, Event::StreamOpened(header)) => self.open(header, &mut out),
            (State::Header, Event::Element(_)) => self.end(Cond::NotWellFormed, None, &mut out),
            (State::PreAuth | State::Authenticated, Event::StreamOpened(_)) => {
                self.end(Cond::NotWellFormed, None, &mut out)
            }
            (State::PreAuth, Event::Element(el)) => self.pre_auth_element(el, &mut out),
            (State::PreAuthIq, Event::PreAuthReply(reply)) => {
                out.push(Action::Send(reply));
                self.state = State::PreAuth;
            }
            (State::Sasl(exchange), event) => self.sasl(exchange, event, &mut out),
            (State::Inline { data }, Event::Inline(outcome)) => {
                self.inline_done(data, outcome, &mut out)
            }
            (State::Authenticated, Event::Element(el)) => {
                let step = match &self.user {
                    Some(user) => self.role.element(user, &el),
                    None => RoleStep::Unexpected,
                };
                self.role_step(step, Some(&el), &mut out);
            }
            (State::Role, Event::Role(reply)) => {
                let step = match &self.user {
                    Some(user) => self.role.reply(user, reply),
                    None => RoleStep::Unexpected,
                };
                self.role_step(step, None, &mut out);
            }
            (state, event) => {
                // The driver fed something this state does not wait for: a bug on our side,
                // not the peer's, so the peer is told no more than that.
                tracing::error!(?state, ?event, "negotiation event out of order");
                self.end(Cond::InternalServerError, None, &mut out);
            }
        }
        out
    }

    /// Ends the stream with `cond`, opening ours first if the peer has not seen it.
    pub(crate) fn end(&mut self, cond: Cond, text: Option<String>, out: &mut Vec<Action<R>>) {
        if !self.header_sent {
            let from = self.host.clone().unwrap_or_else(|| self.default_host());
            self.write_header(from, out);
        }
        out.push(Action::StreamError(cond, text));
        self.state = State::Done;
    }

    /// The peer's header (RFC 6120 §4.7): answer with ours and the features of this step.
    fn open(&mut self, header: StreamHeader, out: &mut Vec<Action<R>>) {
        let to = header.to.as_deref().and_then(|to| self.served_host(to));
        self.client_from = header
            .from
            .as_deref()
            .and_then(|f| xmppd_address::parse_jid(f).ok())
            .map(|j| j.to_string());
        // Our header must name a host even when we are about to refuse the stream.
        let from = to
            .clone()
            .or_else(|| self.host.clone())
            .unwrap_or_else(|| self.default_host());
        self.write_header(from, out);
        if let Err(cond) = check_header(&header, self.role.namespace()) {
            return self.end(cond, None, out);
        }
        match (to, &self.host) {
            (None, _) => return self.end(Cond::HostUnknown, None, out),
            // A restarted stream is for the host the first one named.
            (Some(to), Some(host)) if &to != host => return self.end(Cond::HostUnknown, None, out),
            (Some(to), _) => self.host = Some(to),
        }
        if let Some(user) = &self.user {
            let children = self.role.features(user);
            out.push(Action::Send(features::features(
                children,
                &self.settings.limits,
            )));
            self.state = State::Authenticated;
            return;
        }
        let settings = Arc::clone(&self.settings);
        let Some(policy) = self.host.as_deref().and_then(|h| settings.host(h)) else {
            tracing::error!(host = ?self.host, "no policy for a served host");
            return self.end(Cond::InternalServerError, None, out);
        };
        self.offered = features::offered_mechanisms(self.secure, &self.bindings, policy.scram);
        let children = if self.secure {
            let mut extra: Vec<Element> = policy.pre_auth.iter().map(|(_, f)| f.clone()).collect();
            // XEP-0388 §2.1: SASL2 next to SASL, with the same mechanisms, under TLS only.
            if let Some(sasl2) = &settings.sasl2 {
                let fast = self.fast_offered();
                extra.push(crate::sasl2::feature(&self.offered, &sasl2.inline, &fast));
            }
            features::pre_auth(&self.offered, &self.bindings.available(), &extra)
        } else {
            if settings.require_tls && self.tls == TlsStep::Below {
                // Nothing could be offered, and there is no STARTTLS to wait for: say why.
                let text = "Authentication needs a secure transport: connect with TLS".to_owned();
                return self.end(Cond::PolicyViolation, Some(text), out);
            }
            if settings.require_tls {
                self.offered.clear();
            }
            match self.tls {
                // Nothing to upgrade: the mechanisms allowed in the clear.
                TlsStep::Below => features::pre_auth(&self.offered, &[], &[]),
                _ => features::pre_tls(settings.require_tls, &self.offered),
            }
        };
        out.push(Action::Send(features::features(
            children,
            &settings.pre_auth_limits,
        )));
        self.state = State::PreAuth;
    }

    fn write_header(&mut self, from: String, out: &mut Vec<Action<R>>) {
        out.push(Action::OpenStream(StreamOpen {
            ns: self.role.namespace(),
            from,
            to: self.client_from.clone(),
            id: format!("{:032x}", rand::random::<u128>()),
            lang: "en",
        }));
        self.header_sent = true;
    }

    /// The served host `to` names, normalised, if we serve it.
    fn served_host(&self, to: &str) -> Option<String> {
        let name = to.strip_suffix('.').unwrap_or(to).to_ascii_lowercase();
        self.settings.host(&name).map(|h| h.name.clone())
    }

    fn default_host(&self) -> String {
        (self.settings.hosts.first()).map_or_else(|| "localhost".to_owned(), |h| h.name.clone())
    }

    /// Before authentication: STARTTLS, SASL, and the IQs of pre-authentication services.
    fn pre_auth_element(&mut self, el: Element, out: &mut Vec<Action<R>>) {
        if el.is("starttls", NS_TLS) && !self.secure && self.tls == TlsStep::StartTls {
            out.push(Action::Send(Element::bare("proceed", NS_TLS)));
            out.push(Action::UpgradeTls);
            self.header_sent = false;
            self.state = State::Tls;
            return;
        }
        if el.is("auth", NS_SASL) {
            if !self.secure && self.settings.require_tls {
                let text = "STARTTLS is required before authentication".to_owned();
                return self.end(Cond::PolicyViolation, Some(text), out);
            }
            return self.auth(&el, out);
        }
        if el.is("authenticate", NS_SASL2) {
            if !self.secure && self.settings.require_tls {
                let text = "STARTTLS is required before authentication".to_owned();
                return self.end(Cond::PolicyViolation, Some(text), out);
            }
            return self.authenticate(&el, out);
        }
        let ns = el.children().next().map(|c| c.ns()).unwrap_or_default();
        if el.is("iq", NS_CLIENT) && self.settings.pre_auth_namespaces.contains(&ns) {
            return self.pre_auth_iq(el, ns, out);
        }
        self.end(unexpected(&el), None, out)
    }

    /// An IQ in the namespace of a pre-authentication service (in-band registration, XEP-0077
    /// §3.1): answered by it where this stream offers it (under TLS, on a host that enables
    /// it), refused otherwise; never fatal.
    fn pre_auth_iq(&mut self, iq: Element, ns: String, out: &mut Vec<Action<R>>) {
        self.state = State::PreAuth;
        let offered = (self.host.as_deref())
            .filter(|_| self.secure)
            .and_then(|h| self.settings.host(h))
            .is_some_and(|p| p.pre_auth.iter().any(|(n, _)| *n == ns));
        match (&self.host, offered) {
            (Some(host), true) => {
                out.push(Action::Ask(Request::PreAuthIq {
                    host: host.clone(),
                    namespace: ns,
                    iq,
                }));
                self.state = State::PreAuthIq;
            }
            _ if iq.attr("type") == Some("error") => {}
            _ => {
                let text = "Not available on this stream before authentication";
                out.push(Action::Send(iq_error(
                    &iq,
                    "cancel",
                    "not-allowed",
                    Some(text),
                )));
            }
        }
    }

    /// SASL succeeded and the account may log in: the stream restarts (RFC 6120 §6.4.6).
    /// Over SASL2 the inline requests come first, and the stream goes on.
    pub(crate) fn authenticated(
        &mut self,
        user: BareJid,
        mechanism: Mechanism,
        data: Vec<u8>,
        out: &mut Vec<Action<R>>,
    ) {
        tracing::info!(jid = %user, mech = mechanism.name(), "authenticated");
        xmppd_metrics::auth(Some(mechanism.name()), true);
        out.push(Action::Authenticated {
            user: user.clone(),
            mechanism,
        });
        if let Some(inline) = self.sasl2.take() {
            return self.sasl2_authenticated(user, inline, data, out);
        }
        out.push(Action::Send(crate::sasl::success(&data)));
        out.push(Action::RestartStream {
            limits: self.settings.limits,
        });
        self.user = Some(user);
        self.header_sent = false;
        self.state = State::Header;
    }

    fn role_step(&mut self, step: RoleStep<R>, el: Option<&Element>, out: &mut Vec<Action<R>>) {
        match step {
            RoleStep::Reply(reply) => {
                out.push(Action::Send(reply));
                self.state = State::Authenticated;
            }
            RoleStep::Ask(request) => {
                out.push(Action::Ask(Request::Role(request)));
                self.state = State::Role;
            }
            RoleStep::Ready(reply, ready) => {
                out.push(Action::Send(reply));
                out.push(Action::Ready(ready));
                self.state = State::Done;
            }
            RoleStep::Unexpected => {
                let cond = el.map_or(Cond::InternalServerError, unexpected);
                self.end(cond, None, out);
            }
        }
    }
}

/// RFC 6120 §4.7–4.8 header checks, in the order the conditions are reported.
pub(crate) fn check_header(header: &StreamHeader, ns: &str) -> Result<(), Cond> {
    if header.default_ns.as_deref() != Some(ns) {
        return Err(Cond::InvalidNamespace);
    }
    let version_ok = header
        .version
        .as_deref()
        .and_then(|v| v.split_once('.'))
        .is_some_and(|(major, minor)| {
            major.parse::<u32>() == Ok(1)
                && !minor.is_empty()
                && minor.bytes().all(|b| b.is_ascii_digit())
        });
    if !version_ok {
        return Err(Cond::UnsupportedVersion);
    }
    Ok(())
}

/// The stream error for an element that has no place at this point of the negotiation.
pub(crate) fn unexpected(el: &Element) -> Cond {
    if el.has_ns(NS_CLIENT) && matches!(el.name(), "message" | "presence" | "iq") {
        Cond::NotAuthorized
    } else if el.has_ns(NS_SASL) || el.has_ns(NS_SASL2) || el.has_ns(NS_TLS) {
        Cond::PolicyViolation
    } else {
        Cond::UnsupportedStanzaType
    }
}
