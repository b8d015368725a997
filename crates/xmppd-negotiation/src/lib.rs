//! Sans-IO negotiation of one XMPP stream (RFC 6120 §4–§7): the stream headers, the TLS step
//! (STARTTLS or TLS from the first byte), SASL, IQs answered before authentication (in-band
//! registration), and what the [`Role`] does after authentication (a client binds a resource).
//!
//! [`Negotiation`] is a state machine. Its driver feeds it [`Event`]s: the peer's stream
//! header, top-level elements and close as the driver's framing produced them, "TLS is up"
//! with the channel-binding data, the answers to the work the machine asked for, a passed
//! deadline. It answers with [`Action`]s: open our stream, send this element, upgrade to TLS,
//! look up these credentials, wait for the throttle, end the stream. It owns no socket, task
//! or clock, and knows no framing beyond "a stream opens, carries elements, closes", so the
//! same machine serves TCP (`xmppd-c2s`), RFC 7395 WebSocket `<open/>` framing and BOSH.
//!
//! Not here: parsing bytes (`xmppd-stream`), the SASL mechanisms themselves (`xmppd-sasl`),
//! where accounts live, the throttle's tables and sleeping (the driver, given
//! [`Request::Turn`] and [`Request::Backoff`]), and what happens to a stanza once the stream
//! is negotiated.

mod client;
mod features;
pub mod fuzzing;
mod machine;
mod role;
mod sasl;
mod sasl2;
mod xml;

pub use client::{answer_bound, BindRefusal, BindRequest, ClientRole, HostFeatures};
pub use features::offered_mechanisms;
pub use machine::Negotiation;
pub use role::{Role, RoleStep};
pub use sasl2::{Inline, InlineOutcome, StoredToken, UsedToken, UserAgent};
pub use xmppd_sasl::ht::HtMechanism;

use jid::BareJid;
use minidom::Element;
use xmppd_sasl::{ChannelBindings, HashAlg, Mechanism, ScramKeys};
use xmppd_stream::{Limits, StreamErrorCondition, StreamHeader};

pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const NS_SASL2: &str = "urn:xmpp:sasl:2";
pub const NS_BIND2: &str = "urn:xmpp:bind:0";
pub const NS_FAST: &str = "urn:xmpp:fast:0";

/// What SASL2 (XEP-0388) offers on a TLS stream besides the SASL mechanisms.
#[derive(Debug, Clone, Default)]
pub struct Sasl2Settings {
    /// The inline features the driver serves (XEP-0388 §2.1): Bind2's `<bind/>`, stream
    /// management's `<sm/>`.
    pub inline: Vec<Element>,
    /// FAST tokens (XEP-0484) are issued and accepted.
    pub fast: bool,
}

/// How the transport gets TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsStep {
    /// In the clear first; the peer may ask with `<starttls/>` (RFC 6120 §5).
    StartTls,
    /// TLS from the first byte (XEP-0368): the machine asks for it before anything else.
    Direct,
    /// No TLS step in the XMPP stream: it is carried by another protocol that is secured
    /// below it or not at all (RFC 7395 §3.1: WebSocket has no STARTTLS). Nothing is offered
    /// to upgrade; such a stream counts as insecure (a secured one is driven as `Direct`),
    /// and with `require_tls` it ends with `<policy-violation/>` after the header.
    Below,
}

/// One served host, as negotiation sees it.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// The domain, lowercase, without a final dot.
    pub name: String,
    /// The host's account backend keeps SCRAM keys (else only PLAIN can be offered).
    pub scram: bool,
    /// The stream features of the pre-authentication services this host offers on a TLS
    /// stream, each with the IQ payload namespace it answers (XEP-0077 registration).
    pub pre_auth: Vec<(String, Element)>,
    /// `@suffix`es a PLAIN user name may carry (a directory's userPrincipalName), lowercase:
    /// `dave.smith@corp.example` then names the account `dave.smith`.
    pub login_suffixes: Vec<String>,
}

/// What negotiation needs to know about the server; shared by all its connections.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The served hosts; the first one names our stream when the peer named none we serve.
    pub hosts: Vec<HostPolicy>,
    /// Refuse authentication on a [`TlsStep::StartTls`] transport until TLS is up, and streams
    /// on a [`TlsStep::Below`] one that is not secure.
    pub require_tls: bool,
    /// Framing limits until authentication succeeds.
    pub pre_auth_limits: Limits,
    /// Framing limits after authentication.
    pub limits: Limits,
    /// Counted SASL failures one stream may have (see [`xmppd_sasl::Attempts`]).
    pub max_auth_failures: u32,
    /// Every namespace a pre-authentication service claims on some host: an IQ in one of
    /// these is answered (or refused with `<not-allowed/>`) rather than ending the stream.
    pub pre_auth_namespaces: Vec<String>,
    /// SASL2 is offered (with these inline features) on TLS streams.
    pub sasl2: Option<Sasl2Settings>,
}

impl Settings {
    pub(crate) fn host(&self, name: &str) -> Option<&HostPolicy> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

/// Our stream header, to be written by the driver in its framing (`<stream:stream>` on TCP,
/// `<open/>` on WebSocket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOpen {
    /// The stream's default namespace (`jabber:client`).
    pub ns: &'static str,
    pub from: String,
    /// The peer's validated `from`, echoed (RFC 6120 §4.7.2).
    pub to: Option<String>,
    pub id: String,
    pub lang: &'static str,
}

/// Why a backend could not answer (a storage or directory outage): the attempt fails with
/// `<temporary-auth-failure/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendFailure(pub String);

/// What happens to the machine; see [`Negotiation::handle`].
#[derive(Debug)]
pub enum Event<R: Role> {
    /// The peer opened a stream (or restarted it) with this header.
    StreamOpened(StreamHeader),
    /// One complete top-level element.
    Element(Element),
    /// The peer closed its stream.
    StreamClosed,
    /// The peer's input broke the framing or its limits: end with this condition.
    BadInput(StreamErrorCondition),
    /// The TLS handshake asked for with [`Action::UpgradeTls`] completed.
    TlsEstablished(ChannelBindings),
    /// The wait asked for with [`Request::Turn`] or [`Request::Backoff`] is over.
    Waited,
    /// Answer to [`Request::CheckPassword`].
    PasswordChecked(Result<bool, BackendFailure>),
    /// Answer to [`Request::ScramKeys`]: `Ok(None)` for an unknown account.
    ScramKeys(Result<Option<ScramKeys>, BackendFailure>),
    /// Answer to [`Request::CheckAccount`].
    AccountChecked { enabled: bool },
    /// Answer to [`Request::PreAuthIq`]: the reply to send.
    PreAuthReply(Element),
    /// Answer to [`Request::Role`].
    Role(R::Reply),
    /// Answer to [`Request::FastTokens`].
    FastTokens(Result<Vec<StoredToken>, BackendFailure>),
    /// Answer to [`Request::Inline`].
    Inline(InlineOutcome),
    /// The negotiation deadline passed: end with `<connection-timeout/>`.
    DeadlinePassed,
    /// The server shuts down: end with `<system-shutdown/>`.
    ShuttingDown,
}

/// Work the machine needs done outside it. Each one is answered by exactly one event (see
/// each variant); until then the machine takes no input from the peer.
pub enum Request<R: Role> {
    /// Throttling (RFC 6120 §13.9.4 guessing): wait until an attempt for `account` may be
    /// checked. `account` is the normalised JID, or the raw authcid when it is not a valid
    /// localpart. Answer: [`Event::Waited`].
    Turn { account: String },
    /// Count a failed attempt for `account` and wait before it is answered. Answer:
    /// [`Event::Waited`].
    Backoff { account: String },
    /// Answer: [`Event::PasswordChecked`].
    CheckPassword { user: BareJid, password: String },
    /// Answer: [`Event::ScramKeys`].
    ScramKeys { user: BareJid, alg: HashAlg },
    /// Whether the account may log in (not disabled). Answer: [`Event::AccountChecked`].
    CheckAccount { user: BareJid },
    /// Ask the pre-authentication service of `namespace` to answer `iq` for `host`. Answer:
    /// [`Event::PreAuthReply`].
    PreAuthIq {
        host: String,
        namespace: String,
        iq: Element,
    },
    /// Role-specific work (a client's resource binding). Answer: [`Event::Role`].
    Role(R::Request),
    /// The unexpired FAST tokens of `user` issued to the user agent `client` for `mechanism`
    /// (XEP-0484 §4). Answer: [`Event::FastTokens`].
    FastTokens {
        user: BareJid,
        client: String,
        mechanism: HtMechanism,
    },
    /// `user` authenticated over SASL2: do what `inline` asks (XEP-0388 §2.6.1, XEP-0386,
    /// XEP-0198, XEP-0484). Answer: [`Event::Inline`].
    Inline { user: BareJid, inline: Box<Inline> },
}

impl<R: Role> std::fmt::Debug for Request<R> {
    // Passwords stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Turn { account } => f.debug_struct("Turn").field("account", account).finish(),
            Request::Backoff { account } => {
                f.debug_struct("Backoff").field("account", account).finish()
            }
            Request::CheckPassword { user, .. } => f
                .debug_struct("CheckPassword")
                .field("user", user)
                .finish_non_exhaustive(),
            Request::ScramKeys { user, alg } => f
                .debug_struct("ScramKeys")
                .field("user", user)
                .field("alg", alg)
                .finish(),
            Request::CheckAccount { user } => {
                f.debug_struct("CheckAccount").field("user", user).finish()
            }
            Request::PreAuthIq {
                host, namespace, ..
            } => f
                .debug_struct("PreAuthIq")
                .field("host", host)
                .field("namespace", namespace)
                .finish_non_exhaustive(),
            Request::Role(r) => f.debug_tuple("Role").field(r).finish(),
            Request::FastTokens {
                user, mechanism, ..
            } => f
                .debug_struct("FastTokens")
                .field("user", user)
                .field("mechanism", mechanism)
                .finish_non_exhaustive(),
            Request::Inline { user, .. } => f
                .debug_struct("Inline")
                .field("user", user)
                .finish_non_exhaustive(),
        }
    }
}

/// What the driver does, in order.
#[derive(Debug)]
pub enum Action<R: Role> {
    /// Write our stream header.
    OpenStream(StreamOpen),
    /// Write this element (a child of the stream, in its default namespace unless it says
    /// otherwise; `stream:features` is in the stream namespace).
    Send(Element),
    /// Write what is pending, discard whatever input is buffered (it came in the clear), run
    /// the TLS handshake, then feed [`Event::TlsEstablished`]. The peer then opens a new
    /// stream. If the handshake fails, the transport is gone: just close it.
    UpgradeTls,
    /// The peer opens a new stream next (after SASL success, RFC 6120 §6.4.6): discard the
    /// parser state and apply these limits.
    RestartStream { limits: Limits },
    /// Authenticated over SASL2, where the stream goes on (XEP-0388 §2.6.1): apply these
    /// limits from the next element on, keeping the parser's state.
    SetLimits(Limits),
    /// Do this and feed the answer back.
    Ask(Request<R>),
    /// The peer proved to be `user` (what a successful attempt clears in the throttle).
    Authenticated { user: BareJid, mechanism: Mechanism },
    /// Negotiation is complete: the role's result. No more events are expected.
    Ready(R::Ready),
    /// Write this stream error, end the stream and close the transport. Our header for the
    /// current stream was always sent before.
    StreamError(StreamErrorCondition, Option<String>),
    /// End our stream (`</stream:stream>`) and close the transport.
    EndStream,
    /// Close the transport without writing (the peer closed before we opened a stream).
    Close,
}

impl<R: Role> Action<R> {
    /// Whether this action ends the negotiation (no more events are expected after it).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Action::Ready(_) | Action::StreamError(..) | Action::EndStream | Action::Close
        )
    }
}
