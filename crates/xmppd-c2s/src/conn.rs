//! One client connection, from the first byte to the close: stream headers, STARTTLS, SASL,
//! resource binding (RFC 6120 §4–§7), then the established loop that feeds stanzas to the
//! core and writes what the core queues for the session.
//!
//! Each connection is one task owning its socket, framer and write buffer: no locks on the
//! stanza path. Errors from the peer end the stream with the matching stream error; they never
//! panic. Not here: what stanzas mean (the core), how SASL works (`xmppd-sasl`).

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use jid::BareJid;
use minidom::Element;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use xmppd_auth::{AuthBackend, AuthError};
use xmppd_core::address::{account_jid, parse_jid};
use xmppd_core::module::PreAuthService;
use xmppd_core::stanza::{error_reply, Condition, StanzaError};
use xmppd_core::{user_ref, Class, ClientSession, Outbound, QueueReceiver, Server, SessionInfo};
use xmppd_sasl::{Attempts, ChannelBindings, HashAlg, Mechanism, SaslError, ScramServer, Stage};
use xmppd_stream::{Event, Framer, StreamErrorCondition as Cond, StreamHeader, NS_CLIENT};

use crate::features::{self, escape_into, NS_BIND, NS_SASL, NS_SESSION, NS_STANZAS, NS_TLS};
use crate::shaper::Shaper;
use crate::{ListenerKind, Shared};

/// A peer that does not read what we write for this long is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Writing the final stream error and close_notify to a dying connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Once a session is told to close, how long what was queued before may take to be written;
/// what is not out by then is re-routed (a peer that does not read must not hold it).
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// After the close: how long, and how much, unread client input is drained.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;
const READ_BUFFER: usize = 4 * 1024;
/// Idle time before the first TCP keepalive probe, then the time between probes.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(120);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How much queued output is batched into one write.
const BATCH_BYTES: usize = 64 * 1024;
/// The write buffer is shrunk back after a large stanza so idle sessions stay small.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Serves one accepted connection to its end.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
    shutdown: watch::Receiver<bool>,
    pending: crate::throttle::PendingGuard,
) {
    // Stanzas are small and interactive: do not let Nagle hold them back.
    let _ = tcp.set_nodelay(true);
    // A peer that vanished without closing (a phone losing its network) is noticed by the
    // kernel's keepalive probes, so its session ends instead of lingering "online".
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
    tracing::info!(?kind, "connection opened");
    // One deadline from accept to bound session: TLS, SASL (throttle waits included) and
    // binding, so a client trickling bytes holds its slot no longer than configured.
    let deadline = Instant::now() + shared.settings.handshake_timeout;
    let max_auth_failures = shared.settings.max_auth_failures;
    let mut conn = Conn {
        framer: Framer::new(shared.settings.pre_auth_limits),
        shared,
        io: Transport::Plain(tcp),
        peer,
        kind,
        shutdown,
        rbuf: vec![0; READ_BUFFER].into_boxed_slice(),
        out: Vec::with_capacity(1024),
        header_sent: false,
        host: None,
        client_from: None,
        secure: false,
        bindings: ChannelBindings::default(),
        offered: Vec::new(),
        attempts: Attempts::new(max_auth_failures),
        deadline,
        negotiating: true,
    };
    let negotiated = conn.negotiate().await;
    conn.negotiating = false;
    // Logged in (or failing): no longer counts against its address's pending connections.
    drop(pending);
    let stop = match negotiated {
        Ok((session, rx)) => {
            let mut bound = Bound {
                server: Arc::clone(&conn.shared.server),
                session: Some(session),
            };
            let stop = conn.established(&mut bound, rx).await;
            // Unbind before the final write: a slow close must not leave a dead session
            // routable.
            bound.unbind().await;
            stop
        }
        Err(stop) => stop,
    };
    let reason = stop.describe();
    conn.finish(stop).await;
    tracing::info!(reason, "connection closed");
}

/// Resolves once `shutdown` is (or becomes) true; never if its sender is gone without that.
pub(crate) async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Why a stream ends.
#[derive(Debug)]
enum Stop {
    /// Send this stream error (after our header if not yet sent), then close.
    Error(Cond, Option<String>),
    /// The client sent `</stream:stream>`: answer in kind and close.
    PeerClosed,
    /// The transport is gone (EOF, reset, TLS failure, write timeout): nothing more to send.
    Gone,
}

impl Stop {
    fn err(cond: Cond) -> Stop {
        Stop::Error(cond, None)
    }

    fn describe(&self) -> &'static str {
        match self {
            Stop::Error(cond, _) => cond.as_str(),
            Stop::PeerClosed => "closed by client",
            Stop::Gone => "connection lost",
        }
    }
}

/// A bound session that is unbound however the connection ends, also when the task is
/// aborted or panics.
struct Bound {
    server: Arc<Server>,
    session: Option<ClientSession>,
}

impl Bound {
    async fn unbind(mut self) {
        if let Some(session) = self.session.take() {
            tracing::info!(jid = %session.jid, "session ended");
            self.server.unbind(session).await;
        }
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let server = Arc::clone(&self.server);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { server.unbind(session).await });
            }
        }
    }
}

/// The byte stream under the XML stream: TCP until STARTTLS, TLS after.
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while the TCP stream is moved into the TLS handshake.
    Detached,
}

fn detached() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "transport detached")
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Detached => Poll::Ready(Err(detached())),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Detached => Poll::Ready(Err(detached())),
        }
    }
}

/// The result of waiting for a SASL `<response/>`.
enum SaslReply {
    Data(Vec<u8>),
    Abort,
    BadEncoding,
}

impl SaslReply {
    /// The failure for a reply that carries no usable data.
    fn failure(self) -> Failure {
        match self {
            SaslReply::Abort => Failure::before_proof("aborted", "aborted by the client"),
            SaslReply::BadEncoding => Failure::before_proof("incorrect-encoding", "invalid base64"),
            SaslReply::Data(_) => Failure::before_proof("malformed-request", "unexpected data"),
        }
    }
}

/// One failed SASL attempt, as it is answered, logged and counted.
struct Failure {
    /// The RFC 6120 §6.5 condition.
    condition: &'static str,
    /// Why, for the log and (before any proof) the client.
    reason: Cow<'static, str>,
    stage: Stage,
    /// The SASL layer's error, when it gave one: it tells a refused binding type apart.
    error: Option<SaslError>,
}

impl Failure {
    fn before_proof(condition: &'static str, reason: impl Into<Cow<'static, str>>) -> Self {
        Failure {
            condition,
            reason: reason.into(),
            stage: Stage::BeforeProof,
            error: None,
        }
    }

    fn proof(condition: &'static str, reason: impl Into<Cow<'static, str>>) -> Self {
        Failure {
            stage: Stage::Proof,
            ..Failure::before_proof(condition, reason)
        }
    }

    /// A failure the SASL layer reported before any proof was checked.
    fn from_sasl(e: &SaslError) -> Self {
        Failure {
            error: Some(e.clone()),
            ..Failure::before_proof(e.condition(), e.to_string())
        }
    }
}

/// What the established loop woke up for.
enum Wake {
    Outbound((Outbound, Class)),
    Read(io::Result<usize>),
    /// The shaper lets the connection read again.
    Resume,
    Shutdown,
}

struct Conn {
    shared: Arc<Shared>,
    io: Transport,
    peer: SocketAddr,
    kind: ListenerKind,
    shutdown: watch::Receiver<bool>,
    framer: Framer,
    rbuf: Box<[u8]>,
    /// Pending output, written by [`Conn::flush`].
    out: Vec<u8>,
    /// Our header for the current stream is in `out` or already written.
    header_sent: bool,
    /// The served host this stream is for (normalised), once a header named it.
    host: Option<String>,
    /// The client's `from`, validated, echoed as `to` in our header.
    client_from: Option<String>,
    secure: bool,
    bindings: ChannelBindings,
    /// Mechanisms advertised on the current stream.
    offered: Vec<Mechanism>,
    /// SASL attempts on this connection: the failure limit and the `y` flag rule.
    attempts: Attempts,
    /// When the connection must have a bound session (`handshake_timeout`, from accept).
    deadline: Instant,
    /// Before the session is bound, every wait ends at `deadline`.
    negotiating: bool,
}

impl Conn {
    /// Runs the stream to a bound resource.
    async fn negotiate(&mut self) -> Result<(ClientSession, QueueReceiver), Stop> {
        if self.kind == ListenerKind::DirectTls {
            let acceptor = self.shared.tls.direct_acceptor();
            self.start_tls(acceptor).await?;
        }
        self.open_stream(None).await?;
        let mut user: Option<BareJid> = None;
        loop {
            let el = self.next_element().await?;
            match &user {
                None => {
                    if let Some(authenticated) = self.pre_auth_element(el).await? {
                        self.framer.reset();
                        self.framer.set_limits(self.shared.settings.limits);
                        self.header_sent = false;
                        self.open_stream(Some(&authenticated)).await?;
                        user = Some(authenticated);
                    }
                }
                Some(user) => {
                    if let Some(bound) = self.pre_bind_element(user, el).await? {
                        return Ok(bound);
                    }
                }
            }
        }
    }

    /// Reads the client's stream header, answers with ours and the features for this step.
    async fn open_stream(&mut self, user: Option<&BareJid>) -> Result<(), Stop> {
        let header = match self.next_event().await? {
            Event::Header(h) => h,
            Event::Close => return Err(Stop::PeerClosed),
            Event::Element(_) => return Err(Stop::err(Cond::NotWellFormed)),
        };
        let to = header.to.as_deref().and_then(|to| self.served_host(to));
        self.client_from = header
            .from
            .as_deref()
            .and_then(|f| parse_jid(f).ok())
            .map(|j| j.to_string());
        // Our header must name a host even when we are about to refuse the stream.
        let from = to
            .clone()
            .or_else(|| self.host.clone())
            .unwrap_or_else(|| self.default_host());
        self.write_header(&from);
        check_header(&header)?;
        match (to, &self.host) {
            (None, _) => return Err(Stop::err(Cond::HostUnknown)),
            // A restarted stream is for the host the first one named.
            (Some(to), Some(host)) if &to != host => return Err(Stop::err(Cond::HostUnknown)),
            (Some(to), _) => self.host = Some(to),
        }
        self.write_features(user.is_some())?;
        self.flush().await
    }

    fn write_features(&mut self, authenticated: bool) -> Result<(), Stop> {
        let settings = &self.shared.settings;
        if authenticated {
            let core = self.shared.server.c2s_features();
            features::post_auth(&mut self.out, &core, &settings.limits);
            return Ok(());
        }
        let backend = self.backend()?;
        self.offered =
            features::offered_mechanisms(self.secure, &self.bindings, backend.supports_scram());
        if self.secure {
            let cb = self.bindings.available();
            let extra: Vec<Element> = (self.shared.pre_auth.iter())
                .filter_map(|svc| self.pre_auth_service(svc.as_ref()))
                .collect();
            features::pre_auth(
                &mut self.out,
                &self.offered,
                &cb,
                &extra,
                &settings.pre_auth_limits,
            );
        } else {
            let required = settings.require_starttls;
            if required {
                self.offered.clear();
            }
            features::pre_tls(
                &mut self.out,
                required,
                &self.offered,
                &settings.pre_auth_limits,
            );
        }
        Ok(())
    }

    fn backend(&self) -> Result<Arc<dyn AuthBackend>, Stop> {
        let backend = self.host.as_ref().and_then(|h| self.shared.auth.get(h));
        match backend {
            Some(b) => Ok(Arc::clone(b)),
            None => {
                tracing::error!(host = ?self.host, "no authentication backend for host");
                Err(Stop::err(Cond::InternalServerError))
            }
        }
    }

    /// The served host `to` names, normalised, if we serve it.
    fn served_host(&self, to: &str) -> Option<String> {
        let name = to.strip_suffix('.').unwrap_or(to).to_ascii_lowercase();
        self.shared
            .server
            .hosts()
            .iter()
            .find(|h| **h == name)
            .cloned()
    }

    fn default_host(&self) -> String {
        self.shared
            .server
            .hosts()
            .first()
            .cloned()
            .unwrap_or_else(|| "localhost".to_owned())
    }

    fn write_header(&mut self, from: &str) {
        let id = format!("{:032x}", rand::random::<u128>());
        let header =
            xmppd_stream::stream_header(NS_CLIENT, from, self.client_from.as_deref(), &id, "en");
        self.out.extend_from_slice(header.as_bytes());
        self.header_sent = true;
    }

    /// Before authentication: STARTTLS and SASL only.
    async fn pre_auth_element(&mut self, el: Element) -> Result<Option<BareJid>, Stop> {
        if el.is("starttls", NS_TLS) && !self.secure && self.kind == ListenerKind::StartTls {
            self.out.extend_from_slice(b"<proceed xmlns='");
            self.out.extend_from_slice(NS_TLS.as_bytes());
            self.out.extend_from_slice(b"'/>");
            self.flush().await?;
            // Whatever the client pipelined after <starttls/> was sent in the clear and must
            // not be taken as part of the encrypted stream.
            self.framer.reset();
            let acceptor = self.shared.tls.starttls_acceptor();
            self.start_tls(acceptor).await?;
            self.header_sent = false;
            self.open_stream(None).await?;
            return Ok(None);
        }
        if el.is("auth", NS_SASL) {
            if !self.secure && self.shared.settings.require_starttls {
                let text = Some("STARTTLS is required before authentication".to_owned());
                return Err(Stop::Error(Cond::PolicyViolation, text));
            }
            return self.authenticate(&el).await;
        }
        let ns = el.children().next().map(|c| c.ns()).unwrap_or_default();
        let claimed = (self.shared.pre_auth.iter()).any(|svc| svc.namespace() == ns);
        if el.is("iq", NS_CLIENT) && claimed {
            self.pre_auth_iq(&el, &ns).await?;
            return Ok(None);
        }
        Err(unexpected(&el))
    }

    /// The stream feature of a pre-authentication service, if this stream offers it: under
    /// TLS, on a host the service serves.
    fn pre_auth_service(&self, svc: &dyn PreAuthService) -> Option<Element> {
        let host = self.host.as_deref().filter(|_| self.secure)?;
        svc.feature(host)
    }

    /// An IQ before authentication in the namespace of a pre-authentication service (in-band
    /// registration, XEP-0077 §3.1): answered by it where this stream offers it, refused
    /// otherwise; never fatal.
    async fn pre_auth_iq(&mut self, iq: &Element, ns: &str) -> Result<(), Stop> {
        let shared = Arc::clone(&self.shared);
        let service = (shared.pre_auth.iter())
            .find(|svc| svc.namespace() == ns && self.pre_auth_service(svc.as_ref()).is_some());
        let reply = match service {
            Some(svc) => {
                let host = self.host.clone().unwrap_or_default();
                let (ip, max) = (self.peer.ip(), svc.quota_per_hour());
                let mut admit = || {
                    shared
                        .registrations
                        .admit(ip, std::time::Instant::now(), max)
                };
                svc.answer(&host, iq, &mut admit).await
            }
            None => {
                let err = StanzaError::with_text(
                    Condition::NotAllowed,
                    "Not available on this stream before authentication",
                );
                match error_reply(iq, &err) {
                    Some(reply) => reply,
                    None => return Ok(()),
                }
            }
        };
        xmppd_stream::serialize(&reply, NS_CLIENT, &mut self.out);
        self.flush().await
    }

    /// Moves the TCP stream under TLS and records the channel-binding data.
    async fn start_tls(&mut self, acceptor: tokio_rustls::TlsAcceptor) -> Result<(), Stop> {
        let tcp = match std::mem::replace(&mut self.io, Transport::Detached) {
            Transport::Plain(tcp) => tcp,
            other => {
                self.io = other;
                return Err(Stop::err(Cond::PolicyViolation));
            }
        };
        match tokio::time::timeout_at(self.deadline, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                let conn = stream.get_ref().1;
                self.bindings = self.shared.tls.channel_bindings(conn);
                tracing::debug!(
                    version = ?conn.protocol_version(),
                    sni = ?conn.server_name(),
                    alpn = ?conn.alpn_protocol().map(String::from_utf8_lossy),
                    "TLS established"
                );
                self.io = Transport::Tls(Box::new(stream));
                self.secure = true;
                self.framer.reset();
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::info!(error = %e, "TLS handshake failed");
                Err(Stop::Gone)
            }
            Err(_) => {
                tracing::info!("TLS handshake timed out");
                Err(Stop::Gone)
            }
        }
    }

    /// One SASL exchange started by `<auth/>`. `Ok(None)`: it failed and the client may retry.
    async fn authenticate(&mut self, auth: &Element) -> Result<Option<BareJid>, Stop> {
        let Some(host) = self.host.clone() else {
            return Err(Stop::err(Cond::InternalServerError));
        };
        let name = auth.attr("mechanism").unwrap_or_default();
        let mech = match Mechanism::from_name(name) {
            Some(Mechanism::Plain) if !self.secure => {
                let failure = Failure::before_proof("encryption-required", "PLAIN needs TLS");
                return self.sasl_failure(Some(Mechanism::Plain), failure).await;
            }
            Some(m) if self.offered.contains(&m) => m,
            _ => {
                let reason = format!("mechanism {name:?} is not offered on this stream");
                let failure = Failure::before_proof("invalid-mechanism", reason);
                return self.sasl_failure(None, failure).await;
            }
        };
        let initial = match decode_sasl(&auth.text()) {
            Ok(Some(data)) => data,
            // No initial response: ask for it with an empty challenge.
            Ok(None) => {
                self.write_sasl("challenge", &[]);
                self.flush().await?;
                match self.sasl_response().await? {
                    SaslReply::Data(data) => data,
                    reply => return self.sasl_failure(Some(mech), reply.failure()).await,
                }
            }
            Err(()) => {
                return self
                    .sasl_failure(Some(mech), SaslReply::BadEncoding.failure())
                    .await
            }
        };
        let backend = self.backend()?;
        match mech {
            Mechanism::Plain => self.auth_plain(&host, backend.as_ref(), &initial).await,
            Mechanism::Scram { alg, .. } => {
                self.auth_scram(&host, backend.as_ref(), mech, alg, &initial)
                    .await
            }
            Mechanism::External => {
                let failure = Failure::before_proof("invalid-mechanism", "EXTERNAL is not offered");
                self.sasl_failure(Some(mech), failure).await
            }
        }
    }

    async fn auth_plain(
        &mut self,
        host: &str,
        backend: &dyn AuthBackend,
        msg: &[u8],
    ) -> Result<Option<BareJid>, Stop> {
        let mech = Some(Mechanism::Plain);
        let creds = match xmppd_sasl::parse_plain(msg) {
            Ok(c) => c,
            Err(e) => return self.sasl_failure(mech, Failure::from_sasl(&e)).await,
        };
        let account = throttle_account(&creds.authcid, host);
        self.throttle_wait(&account).await?;
        let Some(user) = account_jid(&creds.authcid, host) else {
            return self.wrong_credentials(Mechanism::Plain, &account).await;
        };
        if !authzid_matches(creds.authzid.as_deref(), Some(&user)) {
            let failure = Failure::before_proof("invalid-authzid", "authzid names another account");
            return self.sasl_failure(mech, failure).await;
        }
        match backend
            .check_password(&user_ref(&user), &creds.password)
            .await
        {
            Ok(true) => self.sasl_success(user, Mechanism::Plain, None).await,
            Ok(false) => self.wrong_credentials(Mechanism::Plain, &account).await,
            Err(e) => self.backend_failure(Mechanism::Plain, e).await,
        }
    }

    async fn auth_scram(
        &mut self,
        host: &str,
        backend: &dyn AuthBackend,
        mech: Mechanism,
        alg: HashAlg,
        msg: &[u8],
    ) -> Result<Option<BareJid>, Stop> {
        let cb_offered = self.bindings.available();
        let mut scram = ScramServer::new(mech, self.bindings.clone(), &self.offered, &cb_offered);
        if self.attempts.y_flag_explained() {
            scram = scram.accept_y_flag();
        }
        let first = match scram.client_first(msg) {
            Ok(first) => first,
            Err(e) => return self.sasl_failure(Some(mech), Failure::from_sasl(&e)).await,
        };
        let account = throttle_account(&first.authcid, host);
        self.throttle_wait(&account).await?;
        let user = account_jid(&first.authcid, host);
        if !authzid_matches(first.authzid.as_deref(), user.as_ref()) {
            let failure = Failure::before_proof("invalid-authzid", "authzid names another account");
            return self.sasl_failure(Some(mech), failure).await;
        }
        // An unknown or invalid user continues with fake keys and fails at the proof, so the
        // exchange does not reveal which accounts exist.
        let keys = match &user {
            Some(u) => match backend.scram_keys(&user_ref(u), alg).await {
                Ok(keys) => keys,
                Err(AuthError::NoSuchUser) => None,
                Err(e) => return self.backend_failure(mech, e).await,
            },
            None => None,
        };
        let server_first = scram.server_first(keys.as_ref());
        self.write_sasl("challenge", &server_first);
        self.flush().await?;
        let client_final = match self.sasl_response().await? {
            SaslReply::Data(data) => data,
            reply => return self.sasl_failure(Some(mech), reply.failure()).await,
        };
        match (scram.client_final(&client_final), user) {
            (Ok(server_final), Some(user)) if keys.is_some() => {
                self.sasl_success(user, mech, Some(&server_final)).await
            }
            (Ok(_), _) | (Err(SaslError::NotAuthorized), _) => {
                self.wrong_credentials(mech, &account).await
            }
            (Err(e), _) => {
                let failure = Failure {
                    stage: Stage::Proof,
                    ..Failure::from_sasl(&e)
                };
                self.sasl_failure(Some(mech), failure).await
            }
        }
    }

    /// After failures for this account from this address (or very many from the address),
    /// an attempt waits its turn before its credentials are checked. The wait ends early,
    /// with the stream, at the negotiation deadline or a shutdown.
    async fn throttle_wait(&mut self, account: &str) -> Result<(), Stop> {
        let now = std::time::Instant::now();
        let wait = self.shared.throttle.reserve(self.peer.ip(), account, now);
        self.pause(wait).await
    }

    /// Sleeps for `wait` unless the negotiation deadline or a shutdown comes first.
    async fn pause(&mut self, wait: Duration) -> Result<(), Stop> {
        if wait.is_zero() {
            return Ok(());
        }
        let Conn {
            shutdown, deadline, ..
        } = self;
        tokio::select! {
            _ = tokio::time::sleep(wait) => Ok(()),
            _ = tokio::time::sleep_until(*deadline) => Err(Stop::err(Cond::ConnectionTimeout)),
            _ = shutdown_requested(shutdown) => Err(Stop::err(Cond::SystemShutdown)),
        }
    }

    /// Waits for the client's `<response/>` (or `<abort/>`) inside an exchange.
    async fn sasl_response(&mut self) -> Result<SaslReply, Stop> {
        let el = self.next_element().await?;
        if el.is("response", NS_SASL) {
            return Ok(match decode_sasl(&el.text()) {
                Ok(data) => SaslReply::Data(data.unwrap_or_default()),
                Err(()) => SaslReply::BadEncoding,
            });
        }
        if el.is("abort", NS_SASL) {
            return Ok(SaslReply::Abort);
        }
        Err(unexpected(&el))
    }

    async fn sasl_success(
        &mut self,
        user: BareJid,
        mech: Mechanism,
        data: Option<&[u8]>,
    ) -> Result<Option<BareJid>, Stop> {
        if self.shared.server.is_disabled(&user).await {
            let failure = Failure::proof("account-disabled", "account disabled");
            return self.sasl_failure(Some(mech), failure).await;
        }
        self.shared
            .throttle
            .record_success(self.peer.ip(), user.as_str());
        self.write_sasl("success", data.unwrap_or_default());
        self.flush().await?;
        tracing::info!(jid = %user, mech = mech.name(), "authenticated");
        Ok(Some(user))
    }

    async fn wrong_credentials(
        &mut self,
        mech: Mechanism,
        account: &str,
    ) -> Result<Option<BareJid>, Stop> {
        let now = std::time::Instant::now();
        let delay = self
            .shared
            .throttle
            .record_failure(self.peer.ip(), account, now);
        self.pause(delay).await?;
        let failure = Failure::proof(
            "not-authorized",
            format!("wrong credentials for {account:?}"),
        );
        self.sasl_failure(Some(mech), failure).await
    }

    async fn backend_failure(
        &mut self,
        mech: Mechanism,
        e: AuthError,
    ) -> Result<Option<BareJid>, Stop> {
        tracing::warn!(error = %e, "authentication backend failed");
        let failure = Failure::proof("temporary-auth-failure", "authentication backend failed");
        self.sasl_failure(Some(mech), failure).await
    }

    /// Answers and logs one failed attempt (RFC 6120 §6.4.5); too many counted failures on
    /// one stream end it. A failure before any proof names its reason in `<text/>`, so that
    /// the client can choose differently; after a proof it says no more than the condition.
    async fn sasl_failure(
        &mut self,
        mech: Option<Mechanism>,
        failure: Failure,
    ) -> Result<Option<BareJid>, Stop> {
        let mech_name = mech.map_or("(none)", Mechanism::name);
        tracing::info!(
            mech = mech_name,
            reason = %failure.reason,
            condition = failure.condition,
            "authentication failed"
        );
        self.out.extend_from_slice(b"<failure xmlns='");
        self.out.extend_from_slice(NS_SASL.as_bytes());
        self.out.extend_from_slice(b"'><");
        self.out.extend_from_slice(failure.condition.as_bytes());
        self.out.extend_from_slice(b"/>");
        if failure.stage == Stage::BeforeProof {
            self.out.extend_from_slice(b"<text xml:lang='en'>");
            escape_into(&mut self.out, &failure.reason);
            self.out.extend_from_slice(b"</text>");
        }
        self.out.extend_from_slice(b"</failure>");
        self.flush().await?;
        if self
            .attempts
            .fail(mech, failure.stage, failure.error.as_ref())
        {
            let text = Some("too many authentication failures".to_owned());
            return Err(Stop::Error(Cond::PolicyViolation, text));
        }
        Ok(None)
    }

    /// `<name xmlns=sasl>base64</name>`, empty element for no data.
    fn write_sasl(&mut self, name: &str, data: &[u8]) {
        self.out.push(b'<');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b" xmlns='");
        self.out.extend_from_slice(NS_SASL.as_bytes());
        if data.is_empty() {
            self.out.extend_from_slice(b"'/>");
            return;
        }
        self.out.extend_from_slice(b"'>");
        let encoded = base64::engine::general_purpose::STANDARD.encode(data);
        self.out.extend_from_slice(encoded.as_bytes());
        self.out.extend_from_slice(b"</");
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'>');
    }

    /// Authenticated, not yet bound: resource binding and the legacy session request only.
    async fn pre_bind_element(
        &mut self,
        user: &BareJid,
        el: Element,
    ) -> Result<Option<(ClientSession, QueueReceiver)>, Stop> {
        if el.is("iq", NS_CLIENT) && el.attr("type") == Some("set") {
            let id = el.attr("id").unwrap_or_default();
            if let Some(bind) = el.get_child("bind", NS_BIND) {
                let resource = bind.get_child("resource", NS_BIND).map(|r| r.text());
                let resource = resource.as_deref().filter(|r| !r.is_empty());
                let info = SessionInfo {
                    peer: if self.shared.settings.hide_ip {
                        String::new()
                    } else {
                        self.peer.to_string()
                    },
                    secure: self.secure,
                };
                let limits = self.shared.settings.queue;
                let server = Arc::clone(&self.shared.server);
                match server.bind(user.clone(), resource, info, limits).await {
                    Ok((session, rx)) => {
                        tracing::info!(jid = %session.jid, "session bound");
                        write_bind_result(&mut self.out, id, &session.jid.to_string());
                        // Flushed by the established loop, which owns the unbind on failure.
                        return Ok(Some((session, rx)));
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "bind refused");
                        let (kind, cond) = match e {
                            xmppd_core::BindError::BadRequest => ("modify", "bad-request"),
                            xmppd_core::BindError::ResourceConstraint => {
                                ("wait", "resource-constraint")
                            }
                            xmppd_core::BindError::NotAllowed => ("cancel", "not-allowed"),
                        };
                        write_iq_error(&mut self.out, id, kind, cond);
                        self.flush().await?;
                        return Ok(None);
                    }
                }
            }
            if el.has_child("session", NS_SESSION) {
                write_iq_result(&mut self.out, id);
                self.flush().await?;
                return Ok(None);
            }
        }
        Err(unexpected(&el))
    }

    /// The bound session: socket to core, queue to socket, until one side ends it.
    async fn established(&mut self, bound: &mut Bound, rx: QueueReceiver) -> Stop {
        let Some(session) = bound.session.as_mut() else {
            return Stop::Gone;
        };
        if let Err(stop) = self.flush().await {
            return stop;
        }
        let server = Arc::clone(&self.shared.server);
        let mut shaper = Shaper::new(self.shared.settings.shaper, Instant::now());
        // Set while the shaper holds reading back.
        let mut read_at: Option<Instant> = None;
        loop {
            let wake = {
                let Conn {
                    io, rbuf, shutdown, ..
                } = self;
                let resume = read_at.unwrap_or_else(Instant::now);
                tokio::select! {
                    out = rx.recv() => Wake::Outbound(out),
                    read = io.read(rbuf), if read_at.is_none() => Wake::Read(read),
                    _ = tokio::time::sleep_until(resume), if read_at.is_some() => Wake::Resume,
                    _ = shutdown_requested(shutdown) => Wake::Shutdown,
                }
            };
            match wake {
                Wake::Outbound(out) => {
                    if let Err(stop) = self.deliver(out, &rx, &server, session).await {
                        return stop;
                    }
                }
                Wake::Read(Ok(0)) | Wake::Read(Err(_)) => return Stop::Gone,
                Wake::Read(Ok(n)) => {
                    read_at = shaper.take(n, Instant::now());
                    self.framer.feed(&self.rbuf[..n]);
                    loop {
                        match self.framer.next_event() {
                            Ok(Some(Event::Element(el))) => {
                                if let Err(stop) = self.handle_incoming(&server, session, el).await
                                {
                                    return stop;
                                }
                            }
                            Ok(Some(Event::Close)) => return Stop::PeerClosed,
                            Ok(Some(Event::Header(_))) => return Stop::err(Cond::NotWellFormed),
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(error = %e, "framing error");
                                return Stop::err(e.condition());
                            }
                        }
                    }
                }
                Wake::Resume => read_at = None,
                Wake::Shutdown => return Stop::err(Cond::SystemShutdown),
            }
        }
    }

    async fn handle_incoming(
        &mut self,
        server: &Arc<Server>,
        session: &mut ClientSession,
        el: Element,
    ) -> Result<(), Stop> {
        let is_stanza = el.has_ns(NS_CLIENT) && matches!(el.name(), "message" | "presence" | "iq");
        if !is_stanza {
            return Err(Stop::err(Cond::UnsupportedStanzaType));
        }
        if el.name() == "iq" && el.attr("type") == Some("set") {
            // Binding and the legacy session are this driver's business, not the core's.
            let id = el.attr("id").unwrap_or_default();
            if el.has_child("session", NS_SESSION) {
                write_iq_result(&mut self.out, id);
                return self.flush().await;
            }
            if el.has_child("bind", NS_BIND) {
                // One resource per stream (RFC 6120 §7.7.2.2).
                write_iq_error(&mut self.out, id, "cancel", "not-allowed");
                return self.flush().await;
            }
        }
        server.handle_from_client(session, el).await;
        Ok(())
    }

    /// Writes `first` and whatever else is queued right now in one write.
    async fn deliver(
        &mut self,
        first: (Outbound, Class),
        rx: &QueueReceiver,
        server: &Arc<Server>,
        session: &ClientSession,
    ) -> Result<(), Stop> {
        // The stanzas in `out`, each with the offset where it ends: what a failed write did
        // not get out goes back to the queue, to be re-routed when the session ends.
        let mut batch: Vec<(Outbound, Class, usize)> = Vec::new();
        let mut next = Some(first);
        while let Some((msg, class)) = next.take() {
            match &msg {
                Outbound::Stanza(el) => xmppd_stream::serialize(el, NS_CLIENT, &mut self.out),
                Outbound::Addressed(el, to) => {
                    xmppd_stream::serialize_addressed(el, NS_CLIENT, to.as_str(), &mut self.out)
                }
                Outbound::Written => {
                    self.write_out(rx, &mut batch).await?;
                    server.written(session).await;
                }
                Outbound::Close(cond, text) => {
                    self.write_out(rx, &mut batch).await?;
                    return Err(Stop::Error(*cond, text.clone()));
                }
            }
            if matches!(msg, Outbound::Stanza(_) | Outbound::Addressed(..)) {
                batch.push((msg, class, self.out.len()));
            }
            if self.out.len() < BATCH_BYTES {
                next = rx.try_recv();
            }
        }
        self.write_out(rx, &mut batch).await
    }

    /// Writes out everything pending, like [`Conn::flush`], but gives up when the server shuts
    /// down, or [`CLOSE_GRACE`] after the session was told to close: a peer that does not read
    /// must not delay a disable, kick or replacement. What a failed or abandoned write did not
    /// get out goes back to the queue.
    async fn write_out(
        &mut self,
        rx: &QueueReceiver,
        batch: &mut Vec<(Outbound, Class, usize)>,
    ) -> Result<(), Stop> {
        if self.out.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + WRITE_TIMEOUT;
        let mut written = 0;
        let result = loop {
            let Conn {
                io, out, shutdown, ..
            } = self;
            let done = written == out.len();
            // Writes, then flushes once all is written (TLS may still hold some back).
            let step = async {
                if done {
                    io.flush().await.map(|()| 0)
                } else {
                    io.write(&out[written..]).await
                }
            };
            tokio::select! {
                r = step => match r {
                    Ok(0) if done => break Ok(()),
                    Ok(n @ 1..) => written += n,
                    _ => break Err(Stop::Gone),
                },
                _ = async { tokio::time::sleep_until(rx.closing_since().await + CLOSE_GRACE).await } => {
                    break Err(match rx.take_close() {
                        Some(Outbound::Close(cond, text)) => Stop::Error(cond, text),
                        _ => Stop::Gone,
                    });
                }
                _ = shutdown_requested(shutdown) => break Err(Stop::err(Cond::SystemShutdown)),
                _ = tokio::time::sleep_until(deadline) => break Err(Stop::Gone),
            }
        };
        match result {
            Ok(()) => batch.clear(),
            Err(_) => give_back(rx, batch, written),
        }
        self.clear_out();
        result
    }

    /// The next top-level element during negotiation.
    async fn next_element(&mut self) -> Result<Element, Stop> {
        match self.next_event().await? {
            Event::Element(el) => Ok(el),
            Event::Close => Err(Stop::PeerClosed),
            Event::Header(_) => Err(Stop::err(Cond::NotWellFormed)),
        }
    }

    /// The next framer event during negotiation, reading as needed until the deadline.
    async fn next_event(&mut self) -> Result<Event, Stop> {
        loop {
            match self.framer.next_event() {
                Ok(Some(event)) => return Ok(event),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "framing error");
                    return Err(Stop::err(e.condition()));
                }
            }
            let Conn {
                io,
                rbuf,
                shutdown,
                deadline,
                ..
            } = self;
            let n = tokio::select! {
                read = io.read(rbuf) => match read {
                    Ok(0) | Err(_) => return Err(Stop::Gone),
                    Ok(n) => n,
                },
                _ = tokio::time::sleep_until(*deadline) => {
                    return Err(Stop::err(Cond::ConnectionTimeout));
                }
                _ = shutdown_requested(shutdown) => return Err(Stop::err(Cond::SystemShutdown)),
            };
            self.framer.feed(&self.rbuf[..n]);
        }
    }

    /// Writes out everything pending.
    async fn flush(&mut self) -> Result<(), Stop> {
        if self.out.is_empty() {
            return Ok(());
        }
        let mut until = Instant::now() + WRITE_TIMEOUT;
        if self.negotiating {
            until = until.min(self.deadline);
        }
        let (io, out) = (&mut self.io, &self.out);
        let written = tokio::time::timeout_at(until, async {
            io.write_all(out).await?;
            io.flush().await
        })
        .await;
        self.clear_out();
        match written {
            Ok(Ok(())) => Ok(()),
            _ => Err(Stop::Gone),
        }
    }

    fn clear_out(&mut self) {
        self.out.clear();
        if self.out.capacity() > KEEP_CAPACITY {
            self.out.shrink_to(KEEP_CAPACITY / 4);
        }
    }

    /// Ends the stream as `stop` says and closes the transport.
    async fn finish(&mut self, stop: Stop) {
        match stop {
            Stop::Error(cond, text) => {
                if !self.header_sent {
                    let from = self.host.clone().unwrap_or_else(|| self.default_host());
                    self.write_header(&from);
                }
                let error = xmppd_stream::stream_error(cond, text.as_deref());
                self.out.extend_from_slice(error.as_bytes());
                self.out.extend_from_slice(b"</stream:stream>");
            }
            Stop::PeerClosed => {
                if self.header_sent {
                    self.out.extend_from_slice(b"</stream:stream>");
                }
            }
            Stop::Gone => return,
        }
        let (io, out) = (&mut self.io, &self.out);
        let closed = tokio::time::timeout(CLOSE_TIMEOUT, async {
            io.write_all(out).await?;
            io.shutdown().await
        })
        .await;
        if matches!(closed, Ok(Ok(()))) {
            // Closing a socket with unread input makes the kernel send a reset, which can
            // destroy the stream error before the client reads it: drain a little first.
            let mut sink = [0u8; 1024];
            let mut budget = LINGER_BYTES;
            let _ = tokio::time::timeout(LINGER, async {
                while let Ok(n @ 1..) = io.read(&mut sink).await {
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

/// RFC 6120 §4.7–4.8 header checks, in the order the conditions are reported.
fn check_header(header: &StreamHeader) -> Result<(), Stop> {
    if header.default_ns.as_deref() != Some(NS_CLIENT) {
        return Err(Stop::err(Cond::InvalidNamespace));
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
        return Err(Stop::err(Cond::UnsupportedVersion));
    }
    Ok(())
}

/// The stream error for an element that has no place at this point of the negotiation.
fn unexpected(el: &Element) -> Stop {
    if el.has_ns(NS_CLIENT) && matches!(el.name(), "message" | "presence" | "iq") {
        Stop::err(Cond::NotAuthorized)
    } else if el.has_ns(NS_SASL) || el.has_ns(NS_TLS) {
        Stop::err(Cond::PolicyViolation)
    } else {
        Stop::err(Cond::UnsupportedStanzaType)
    }
}

/// SASL payload: `None` for no data, `Some(empty)` for `=`, else base64 (whitespace ignored).
fn decode_sasl(text: &str) -> Result<Option<Vec<u8>>, ()> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    match compact.as_str() {
        "" => Ok(None),
        "=" => Ok(Some(Vec::new())),
        b64 => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(Some)
            .map_err(|_| ()),
    }
}

/// The account an attempt is throttled under: the normalised JID when the authcid is a valid
/// localpart, else the authcid itself (so invalid names are throttled too).
fn throttle_account(authcid: &str, host: &str) -> String {
    account_jid(authcid, host).map_or_else(|| authcid.to_owned(), |jid| jid.to_string())
}

/// An authzid is accepted only when absent or naming the authenticated account itself.
fn authzid_matches(authzid: Option<&str>, user: Option<&BareJid>) -> bool {
    match authzid {
        None | Some("") => true,
        Some(z) => match (parse_jid(z), user) {
            (Ok(z), Some(user)) => z.as_str() == user.as_str(),
            _ => false,
        },
    }
}

fn write_bind_result(out: &mut Vec<u8>, id: &str, jid: &str) {
    out.extend_from_slice(b"<iq type='result' id='");
    escape_into(out, id);
    out.extend_from_slice(b"'><bind xmlns='");
    out.extend_from_slice(NS_BIND.as_bytes());
    out.extend_from_slice(b"'><jid>");
    escape_into(out, jid);
    out.extend_from_slice(b"</jid></bind></iq>");
}

/// Returns to the queue the stanzas of `batch` that were not wholly written once `written`
/// bytes of it were, in order: they are re-routed when the session ends. A stanza cut in the
/// middle goes back too: a peer that stopped reading may never take its end.
fn give_back(rx: &QueueReceiver, batch: &mut Vec<(Outbound, Class, usize)>, written: usize) {
    let done = batch.partition_point(|(_, _, end)| *end <= written);
    let unwritten = batch.split_off(done);
    batch.clear();
    let unwritten = unwritten.into_iter().map(|(o, c, _)| (o, c)).collect();
    rx.queue().give_back(unwritten);
}

fn write_iq_result(out: &mut Vec<u8>, id: &str) {
    out.extend_from_slice(b"<iq type='result' id='");
    escape_into(out, id);
    out.extend_from_slice(b"'/>");
}

fn write_iq_error(out: &mut Vec<u8>, id: &str, kind: &str, cond: &str) {
    out.extend_from_slice(b"<iq type='error' id='");
    escape_into(out, id);
    out.extend_from_slice(b"'><error type='");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"'><");
    out.extend_from_slice(cond.as_bytes());
    out.extend_from_slice(b" xmlns='");
    out.extend_from_slice(NS_STANZAS.as_bytes());
    out.extend_from_slice(b"'/></error></iq>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ns: Option<&str>, version: Option<&str>) -> StreamHeader {
        StreamHeader {
            to: Some("example.org".into()),
            default_ns: ns.map(str::to_owned),
            version: version.map(str::to_owned),
            ..Default::default()
        }
    }

    fn cond(r: Result<(), Stop>) -> Option<Cond> {
        match r {
            Ok(()) => None,
            Err(Stop::Error(c, _)) => Some(c),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn header_checks() {
        assert_eq!(
            cond(check_header(&header(Some(NS_CLIENT), Some("1.0")))),
            None
        );
        assert_eq!(
            cond(check_header(&header(Some(NS_CLIENT), Some("1.7")))),
            None
        );
        assert_eq!(
            cond(check_header(&header(Some("jabber:server"), Some("1.0")))),
            Some(Cond::InvalidNamespace)
        );
        assert_eq!(
            cond(check_header(&header(None, Some("1.0")))),
            Some(Cond::InvalidNamespace)
        );
        for bad in [
            None,
            Some("0.9"),
            Some("2.0"),
            Some("1"),
            Some("1."),
            Some("1.x"),
            Some(""),
        ] {
            assert_eq!(
                cond(check_header(&header(Some(NS_CLIENT), bad))),
                Some(Cond::UnsupportedVersion),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sasl_payload_decoding() {
        assert_eq!(decode_sasl(""), Ok(None));
        assert_eq!(decode_sasl("  \n"), Ok(None));
        assert_eq!(decode_sasl("="), Ok(Some(vec![])));
        assert_eq!(decode_sasl("aGk=\r\n"), Ok(Some(b"hi".to_vec())));
        assert_eq!(decode_sasl("not base64!"), Err(()));
    }

    #[test]
    fn authzid_must_name_the_same_account() {
        let user = BareJid::new("juliet@example.org").unwrap();
        assert!(authzid_matches(None, Some(&user)));
        assert!(authzid_matches(Some(""), Some(&user)));
        assert!(authzid_matches(Some("Juliet@Example.org"), Some(&user)));
        // RFC 7622 §3.2: the final dot of the domain does not make another address.
        assert!(authzid_matches(Some("juliet@example.org."), Some(&user)));
        assert!(!authzid_matches(Some("romeo@example.org"), Some(&user)));
        assert!(!authzid_matches(
            Some("juliet@example.org/balcony"),
            Some(&user)
        ));
        assert!(!authzid_matches(Some("juliet@example.org"), None));
    }

    #[test]
    fn unexpected_elements_map_to_stream_errors() {
        let cond_of = |el: Element| match unexpected(&el) {
            Stop::Error(c, _) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            cond_of(Element::bare("message", NS_CLIENT)),
            Cond::NotAuthorized
        );
        assert_eq!(cond_of(Element::bare("iq", NS_CLIENT)), Cond::NotAuthorized);
        assert_eq!(
            cond_of(Element::bare("response", NS_SASL)),
            Cond::PolicyViolation
        );
        assert_eq!(
            cond_of(Element::bare("starttls", NS_TLS)),
            Cond::PolicyViolation
        );
        assert_eq!(
            cond_of(Element::bare("foo", "urn:example")),
            Cond::UnsupportedStanzaType
        );
    }

    #[test]
    fn unwritten_stanzas_of_a_batch_go_back_to_the_queue() {
        use std::sync::Arc;
        let msg = |id: &str| {
            let mut el = Element::bare("message", NS_CLIENT);
            xmppd_core::stanza::set_attr(&mut el, "id", id);
            Outbound::Stanza(Arc::new(el))
        };
        let returned = |written| {
            let (queue, rx) = xmppd_core::SessionQueue::new(Default::default());
            let mut batch = vec![
                (msg("a"), Class::Push, 10),
                (msg("b"), Class::Stored, 20),
                (msg("c"), Class::Push, 30),
            ];
            give_back(&rx, &mut batch, written);
            assert!(batch.is_empty());
            let back = queue.end().into_iter();
            back.map(|(o, c)| (o.to_element().unwrap().attr("id").unwrap().to_owned(), c))
                .collect::<Vec<_>>()
        };
        let ids = |v: &[(&str, Class)]| -> Vec<(String, Class)> {
            v.iter().map(|(i, c)| (i.to_string(), *c)).collect()
        };
        // Cut inside "b": it goes back with "c", each with the budget it was queued under.
        assert_eq!(
            returned(15),
            ids(&[("b", Class::Stored), ("c", Class::Push)])
        );
        assert_eq!(returned(20), ids(&[("c", Class::Push)]));
        assert_eq!(returned(0).len(), 3);
        assert!(returned(30).is_empty());
    }

    #[test]
    fn iq_replies_escape_the_id() {
        let mut out = Vec::new();
        write_bind_result(&mut out, "a'<", "u@example.org/r&");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<iq type='result' id='a&apos;&lt;'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <jid>u@example.org/r&amp;</jid></bind></iq>"
        );
        let mut out = Vec::new();
        write_iq_error(&mut out, "x", "wait", "resource-constraint");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<iq type='error' id='x'><error type='wait'><resource-constraint \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        );
    }
}
