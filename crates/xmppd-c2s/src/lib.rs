//! Client-to-server connections for xmppd: listeners, TLS, and the per-connection driver.
//!
//! [`C2s`] listens on STARTTLS ports (RFC 6120, usually 5222) and direct-TLS ports (XEP-0368,
//! usually 5223). Each accepted connection is one tokio task that negotiates the stream —
//! STARTTLS, in-band registration where a host allows it, SASL (SCRAM with channel binding,
//! PLAIN under TLS), refusing disabled accounts, resource binding — and then
//! shuttles stanzas between the socket and the core: incoming ones to
//! [`xmppd_core::Server::handle_from_client`], outgoing ones from the session's queue.
//! [`Tls`] holds the certificates (per host by SNI, a stored self-signed fallback, hot reload).
//!
//! Not here: XML parsing (`xmppd-stream`), the negotiation's protocol decisions
//! (`xmppd-negotiation`, which this crate drives over TCP), SASL mechanics (`xmppd-sasl`), account lookup
//! (`xmppd-auth`), and anything that happens to a stanza after it was read (`xmppd-core`).
//! Stream management (XEP-0198, `sm.rs`): acknowledgements both ways, and sessions parked
//! when their connection is lost, resumed by a new one. Dead connections are found by a
//! liveness check (XEP-0199 ping, or an `<r/>`). Streams carried by another protocol (XMPP over
//! WebSocket, translated to bytes by `xmppd-http`) are handed in through [`StreamHost`] and
//! go through the same negotiation, limits and session loop. Connections from the load
//! balancers in `proxy_protocol_from` start with a PROXY protocol header (`xmppd-realip`)
//! naming the client, whose address then stands for the connection's. No compression.

mod conn;
mod negotiate;
mod session;
mod shaper;
mod sm;
mod throttle;
mod tls;
mod transport;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How many connections the kernel may hold for a listener before they are accepted (the
/// kernel caps it at `net.core.somaxconn`, 4096 on current Linux). When every client of a
/// restarted server reconnects at once, those beyond it wait for a SYN retransmission, a
/// second or more; tokio's `TcpListener::bind` (mio) uses 128, as the standard library does.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` with [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (so a restart does not
/// wait for the last run's connections in TIME_WAIT); the error names the address.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let bound = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    bound().map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

pub use shaper::ShaperSettings;
pub use sm::SmSettings;
pub use throttle::AuthThrottle;
pub use tls::{CertificateSpec, Tls, TlsError, TlsSettings, ALPN_ACME_TLS, ALPN_XMPP_CLIENT};
pub use transport::CarriedIo;
pub use xmppd_sasl::ChannelBindings;

/// How long [`C2s::run`] waits, after telling open streams about the shutdown, for their
/// tasks to finish writing and unbinding.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What a listening socket expects first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// Plain XMPP, upgraded with `<starttls/>`.
    StartTls,
    /// TLS from the first byte (XEP-0368).
    DirectTls,
    /// A stream carried by another protocol, handed in through [`StreamHost::serve`].
    Carried(Carrier),
}

/// The protocol carrying a stream handed in through [`StreamHost::serve`]: the session is
/// counted under it (`xmppd_sessions{transport}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Carrier {
    /// XMPP over WebSocket (RFC 7395).
    WebSocket,
    /// XMPP over BOSH (XEP-0124, XEP-0206).
    Bosh,
}

/// Settings of the c2s listeners.
#[derive(Debug, Clone)]
pub struct C2sSettings {
    pub starttls_listen: Vec<SocketAddr>,
    pub direct_tls_listen: Vec<SocketAddr>,
    /// Refuse authentication on STARTTLS ports until TLS is up.
    pub require_starttls: bool,
    /// Framer limits until SASL success.
    pub pre_auth_limits: xmppd_stream::Limits,
    /// Framer limits once authenticated.
    pub limits: xmppd_stream::Limits,
    /// Bounds of each bound session's outbound queue.
    pub queue: xmppd_core::QueueLimits,
    /// How fast a logged-in client may send.
    pub shaper: ShaperSettings,
    /// Keep client IP addresses out of logs and session records.
    pub hide_ip: bool,
    /// Time from accept to a bound session: TLS, SASL (throttling waits included) and
    /// resource binding must all be done by then, or the stream ends with
    /// `<connection-timeout/>`.
    pub handshake_timeout: Duration,
    /// Counted SASL failures tolerated in one stream before it is closed. Failures before any
    /// proof (an unsupported channel-binding type, a malformed first message) do not count,
    /// up to [`xmppd_sasl::UNCOUNTED_BEFORE_PROOF`] of them.
    pub max_auth_failures: u32,
    /// Connections open at once; further ones are closed on accept.
    pub max_connections: usize,
    /// Connections one address (IPv4, IPv6 /64) may have open before login.
    pub max_pending_per_ip: usize,
    /// Stream management (XEP-0198).
    pub sm: SmSettings,
    /// A bound client quiet this long is asked to answer (XEP-0199 ping, or an `<r/>` under
    /// stream management); `None`: never.
    pub ping_interval: Option<Duration>,
    /// A client that then sends nothing for this long is gone: its session ends, or is
    /// parked for resumption.
    pub ping_timeout: Duration,
    /// SASL2 (XEP-0388) with Bind2 (XEP-0386) and inline resumption offered on TLS streams;
    /// FAST (XEP-0484) too once [`C2s::with_fast_tokens`] gave a token store.
    pub sasl2: bool,
    /// How long a FAST token is valid.
    pub fast_token_lifetime: Duration,
    /// Proxies whose connections start with a PROXY protocol header naming the client, whose
    /// address then stands for the connection's everywhere (caps, throttling, logs, session
    /// records). Connections from elsewhere are read as they come.
    pub proxy_protocol_from: Vec<xmppd_realip::Network>,
}

/// State every connection task reads.
pub(crate) struct Shared {
    settings: C2sSettings,
    tls: Arc<Tls>,
    server: Arc<xmppd_core::Server>,
    auth: HashMap<String, Arc<dyn xmppd_auth::AuthBackend>>,
    throttle: Arc<throttle::AuthThrottle>,
    registrations: throttle::RegistrationLimit,
    /// Services answering IQs before authentication (in-band registration).
    pre_auth: Vec<Arc<dyn xmppd_core::module::PreAuthService>>,
    pending: Arc<xmppd_core::pending::PendingLimit>,
    connections: Arc<tokio::sync::Semaphore>,
    /// What negotiation knows of the hosts, their backends and pre-authentication services.
    negotiation: Arc<xmppd_negotiation::Settings>,
    /// The core's stream features after authentication, per host.
    client_features: Arc<xmppd_negotiation::HostFeatures>,
    /// Where FAST tokens are kept, when offered.
    fast: Option<Arc<dyn xmppd_fast::TokenStore>>,
}

/// The bound c2s listeners, ready to [`C2s::run`].
pub struct C2s {
    listeners: Vec<(ListenerKind, TcpListener)>,
    shared: Arc<Shared>,
}

impl C2s {
    /// Binds every configured address. `auth` maps each virtual host to its backend; a served
    /// host without one is a configuration error.
    pub async fn bind(
        settings: C2sSettings,
        tls: Arc<Tls>,
        server: Arc<xmppd_core::Server>,
        auth: HashMap<String, Arc<dyn xmppd_auth::AuthBackend>>,
        pre_auth: Vec<Arc<dyn xmppd_core::module::PreAuthService>>,
    ) -> std::io::Result<C2s> {
        let auth: HashMap<String, Arc<dyn xmppd_auth::AuthBackend>> = auth
            .into_iter()
            .map(|(host, backend)| (host.to_ascii_lowercase(), backend))
            .collect();
        if let Some(missing) = server.hosts().iter().find(|h| !auth.contains_key(*h)) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("no authentication backend for host {missing}"),
            ));
        }
        let mut listeners = Vec::new();
        let addrs = settings
            .starttls_listen
            .iter()
            .map(|a| (ListenerKind::StartTls, *a))
            .chain(
                settings
                    .direct_tls_listen
                    .iter()
                    .map(|a| (ListenerKind::DirectTls, *a)),
            );
        for (kind, addr) in addrs {
            listeners.push((kind, listen(addr)?));
        }
        let negotiation = Arc::new(negotiation_settings(&settings, &server, &auth, &pre_auth));
        let features_of = |host: &str| {
            let mut features = server.c2s_features(host);
            if settings.sm.enabled {
                // Offered on the authenticated stream (XEP-0198 §2); enabled after binding.
                features.push(xmpp_parsers::sm::StreamManagement { optional: false }.into());
            }
            features
        };
        let client_features = xmppd_negotiation::HostFeatures {
            hosts: (server.hosts().iter())
                .map(|h| (h.clone(), features_of(h)))
                .collect(),
            other: Vec::new(),
        };
        let shared = Shared {
            client_features: client_features.into(),
            negotiation,
            pending: xmppd_core::pending::PendingLimit::new(settings.max_pending_per_ip),
            connections: Arc::new(tokio::sync::Semaphore::new(settings.max_connections)),
            settings,
            tls,
            server,
            auth,
            throttle: Default::default(),
            registrations: Default::default(),
            pre_auth,
            fast: None,
        };
        Ok(C2s {
            listeners,
            shared: Arc::new(shared),
        })
    }

    /// The login throttle of these listeners, for other places that check passwords (the web
    /// admin's login), so that guesses there and here count together.
    pub fn auth_throttle(&self) -> Arc<AuthThrottle> {
        Arc::clone(&self.shared.throttle)
    }

    /// Offers FAST (XEP-0484) with SASL2, its tokens kept in `store`.
    pub fn with_fast_tokens(mut self, store: Arc<dyn xmppd_fast::TokenStore>) -> C2s {
        let Some(shared) = Arc::get_mut(&mut self.shared) else {
            return self;
        };
        let mut negotiation = (*shared.negotiation).clone();
        if let Some(sasl2) = negotiation.sasl2.as_mut() {
            sasl2.fast = true;
            shared.fast = Some(store);
        }
        shared.negotiation = Arc::new(negotiation);
        self
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<(ListenerKind, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(kind, l)| l.local_addr().ok().map(|a| (*kind, a)))
            .collect()
    }

    /// The door for streams carried by another protocol (XMPP over WebSocket) into the same
    /// negotiation, limits, connection caps and sessions as these listeners.
    pub fn stream_host(&self) -> StreamHost {
        StreamHost {
            shared: Arc::clone(&self.shared),
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Accepts until `shutdown` turns true; then sends `<system-shutdown/>` to open streams and
    /// waits (a bounded time) for their tasks to finish.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let next_id = Arc::new(AtomicU64::new(1));
        let mut loops = JoinSet::new();
        for (kind, listener) in self.listeners {
            let shared = Arc::clone(&self.shared);
            let (shutdown, next_id) = (shutdown.clone(), Arc::clone(&next_id));
            loops.spawn(accept_loop(kind, listener, shared, shutdown, next_id));
        }
        while loops.join_next().await.is_some() {}
    }
}

/// Serves XMPP streams whose bytes another protocol's server carries (RFC 7395: the
/// `xmppd-http` WebSocket service translates its messages to and from a byte stream).
#[derive(Clone)]
pub struct StreamHost {
    shared: Arc<Shared>,
    next_id: Arc<AtomicU64>,
}

impl StreamHost {
    /// Serves one carried stream to its end, like a connection accepted on a c2s listener:
    /// the same caps (refused at once when they are reached), handshake deadline, throttle,
    /// negotiation and session loop. `secure`: the channel-binding data of the TLS below the
    /// carrying protocol when the stream counts as secure (empty when TLS ends at a proxy,
    /// so no `-PLUS` mechanism is offered); `None`: insecure, authentication then follows
    /// `c2s.require_starttls` and PLAIN is never offered. Ends the stream with
    /// `<system-shutdown/>` when `shutdown` turns true. `carrier` names the protocol the
    /// session is counted under.
    pub async fn serve(
        &self,
        carrier: Carrier,
        io: impl CarriedIo + 'static,
        peer: SocketAddr,
        secure: Option<ChannelBindings>,
        shutdown: watch::Receiver<bool>,
    ) {
        let shared = &self.shared;
        let Ok(_permit) = Arc::clone(&shared.connections).try_acquire_owned() else {
            tracing::warn!("connection limit reached: closing a carried stream");
            return;
        };
        let Some(pending) = shared.pending.try_acquire(peer.ip()) else {
            tracing::warn!("too many connections before login from one address");
            return;
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let span = if shared.settings.hide_ip {
            tracing::info_span!("carried", conn = id)
        } else {
            tracing::info_span!("carried", conn = id, %peer)
        };
        let io = transport::Transport::Carried {
            io: Box::new(io),
            secure: secure.is_some(),
            bindings: secure,
        };
        let kind = ListenerKind::Carried(carrier);
        conn::serve(Arc::clone(shared), io, peer, kind, shutdown, pending, span).await;
    }
}

/// The served hosts as negotiation sees them: the first host names streams that name none.
fn negotiation_settings(
    settings: &C2sSettings,
    server: &xmppd_core::Server,
    auth: &HashMap<String, Arc<dyn xmppd_auth::AuthBackend>>,
    pre_auth: &[Arc<dyn xmppd_core::module::PreAuthService>],
) -> xmppd_negotiation::Settings {
    let hosts = (server.hosts().iter())
        .map(|host| xmppd_negotiation::HostPolicy {
            name: host.clone(),
            scram: auth.get(host).is_some_and(|b| b.supports_scram()),
            login_suffixes: auth
                .get(host)
                .map(|b| b.login_suffixes())
                .unwrap_or_default(),
            pre_auth: (pre_auth.iter())
                .filter_map(|svc| Some((svc.namespace().to_owned(), svc.feature(host)?)))
                .collect(),
        })
        .collect();
    xmppd_negotiation::Settings {
        hosts,
        require_tls: settings.require_starttls,
        pre_auth_limits: settings.pre_auth_limits,
        limits: settings.limits,
        max_auth_failures: settings.max_auth_failures,
        pre_auth_namespaces: pre_auth.iter().map(|s| s.namespace().to_owned()).collect(),
        sasl2: settings.sasl2.then(|| sasl2_settings(settings, server)),
    }
}

/// SASL2's inline features: Bind2 with what the modules (carbons, client state) and stream
/// management enable inline (XEP-0386 §2.2), and resumption (XEP-0198 §5 inline, XEP-0388).
fn sasl2_settings(
    settings: &C2sSettings,
    server: &xmppd_core::Server,
) -> xmppd_negotiation::Sasl2Settings {
    let mut features: Vec<String> = (server.bind2_namespaces().into_iter())
        .map(str::to_owned)
        .collect();
    let mut inline = Vec::new();
    if settings.sm.enabled {
        features.push(sm::NS_SM.to_owned());
        inline.push(xmpp_parsers::sm::StreamManagement { optional: false }.into());
    }
    features.sort();
    let bind = xmpp_parsers::bind2::BindFeature {
        inline_features: features,
    };
    inline.insert(0, bind.into());
    xmppd_negotiation::Sasl2Settings {
        inline,
        fast: false,
    }
}

/// A connection from a configured proxy: its PROXY header, read by the handshake deadline,
/// names the client, which then counts against the pending cap of its own address. Without a
/// valid header the connection is closed: a proxy that was configured to send one and does
/// not is misconfigured, and what it relays must not pass as coming from the proxy itself.
async fn proxied_client(
    shared: &Shared,
    mut tcp: tokio::net::TcpStream,
    proxy: SocketAddr,
    id: u64,
) -> Option<(
    tokio::net::TcpStream,
    SocketAddr,
    xmppd_core::pending::PendingGuard,
)> {
    let deadline = tokio::time::Instant::now() + shared.settings.handshake_timeout;
    let header = match xmppd_realip::read_proxy_header(&mut tcp, deadline).await {
        Ok(header) => header,
        // A health check that connects and closes.
        Err(xmppd_realip::HeaderError::Closed) => return None,
        Err(e) if shared.settings.hide_ip => {
            tracing::warn!(conn = id, error = %e, "closing a connection from a proxy");
            return None;
        }
        Err(e) => {
            tracing::warn!(conn = id, %proxy, error = %e, "closing a connection from a proxy");
            return None;
        }
    };
    // LOCAL (the proxy's health check) and unknown sources name no client: the proxy stands.
    let client = header.source.unwrap_or(proxy);
    let Some(pending) = shared.pending.try_acquire(client.ip()) else {
        tracing::warn!("too many connections before login from one address");
        return None;
    };
    Some((tcp, client, pending))
}

async fn accept_loop(
    kind: ListenerKind,
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    next_id: Arc<AtomicU64>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let Ok(permit) = Arc::clone(&shared.connections).try_acquire_owned() else {
                        tracing::warn!("connection limit reached: closing a new connection");
                        continue;
                    };
                    let proxies = &shared.settings.proxy_protocol_from;
                    // A proxy's own connections are not the client's: the pending cap applies
                    // once its header named the client.
                    let pending = match xmppd_realip::listed(proxies, peer.ip()) {
                        true => None,
                        false => match shared.pending.try_acquire(peer.ip()) {
                            Some(pending) => Some(pending),
                            None => {
                                tracing::warn!(
                                    "too many connections before login from one address"
                                );
                                continue;
                            }
                        },
                    };
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let (shared, shutdown) = (Arc::clone(&shared), shutdown.clone());
                    conn::tune(&tcp);
                    // The connection's future is made inside the task's: one made outside and
                    // awaited inside would be held twice for the life of the connection.
                    let task = async move {
                        let _permit = permit;
                        let (tcp, peer, pending) = match pending {
                            Some(pending) => (tcp, peer, pending),
                            None => match proxied_client(&shared, tcp, peer, id).await {
                                Some(accepted) => accepted,
                                None => return,
                            },
                        };
                        // With hide_ip the address is left out of the span, so of every line.
                        let span = if shared.settings.hide_ip {
                            tracing::info_span!("c2s", conn = id)
                        } else {
                            tracing::info_span!("c2s", conn = id, %peer)
                        };
                        let io = transport::Transport::Plain(tcp);
                        conn::serve(shared, io, peer, kind, shutdown, pending, span).await;
                    };
                    conns.spawn(task);
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = conn::shutdown_requested(&mut shutdown) => break,
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!(
            left = conns.len(),
            "c2s connections still open after the grace period"
        );
        conns.abort_all();
    }
}
