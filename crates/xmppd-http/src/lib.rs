//! xmppd's HTTP layer: plain and TLS listeners on hyper (HTTP/1.1), and the services that
//! plug into it by path.
//!
//! [`Http::bind`] opens the listeners; [`Http::run`] serves them until shutdown. Every
//! connection gets the same limits: a cap on open connections, a deadline for the TLS handshake
//! and for each request's head (also while a kept-alive connection idles, so a client trickling
//! bytes cannot hold a connection: slowloris), a cap on the head's size, a cap on the body's
//! size (refused with 413 before reading when `Content-Length` says so, cut off while reading
//! otherwise), and a deadline for the whole answer. Each request is logged on one line (the
//! `xmppd_http::access` target) without its query string, which may carry secrets, without
//! the rest of the path under a route whose paths are secrets ([`Router::redact_in_log`]:
//! download links), and without the peer's address when `server.hide_ip_in_logs` is on.
//!
//! A [`Service`] answers the requests under the paths it was [`Router::route`]d to: host-meta
//! (XEP-0156, [`hostmeta`]) and XMPP over WebSocket (RFC 7395, [`websocket`]) today. Work a
//! service starts that outlives its answer (a WebSocket connection) runs in the layer's
//! [`Tasks`], which shutdown waits for.
//!
//! Why hyper and not a framework: the layer needs a few exact routes, per-connection limits
//! and the upgraded connection; hyper gives those directly (docs/HTTP.md).

pub mod bosh;
pub mod framing;
pub mod hostmeta;
pub mod websocket;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use xmppd_c2s::{ChannelBindings, Tls, ALPN_ACME_TLS};
use xmppd_realip::forwarded::ForwardedHeader;
use xmppd_realip::Network;

/// How long open connections and the services' tasks get to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The body a service receives: the request's, cut off at `max_body_bytes`.
pub type RequestBody = Limited<Incoming>;
/// The body a service answers with.
pub type ResponseBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Settings of the HTTP layer (`[http]`).
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub listen: Vec<SocketAddr>,
    pub tls_listen: Vec<SocketAddr>,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    /// For the TLS handshake, and for each request's head from the moment the connection
    /// waits for it.
    pub header_timeout: Duration,
    /// From a request's head to its answer, the body included.
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub access_log: bool,
    pub hide_ip: bool,
    /// Plain connections count as secure (TLS ends at a proxy in front of them).
    pub behind_tls_proxy: bool,
    /// Proxies whose connections start with a PROXY protocol header naming the client.
    pub proxy_protocol_from: Vec<Network>,
    /// Proxies whose `forwarded_header` names the client of each request.
    pub trusted_proxies: Vec<Network>,
    pub forwarded_header: ForwardedHeader,
}

/// Who is asking, as a service sees it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address: the connection's, or the one a trusted proxy gave (its PROXY
    /// header, or for each request its forwarding header).
    pub addr: SocketAddr,
    /// The request came over one of our TLS listeners.
    pub tls: bool,
    /// Channel-binding data of that TLS connection.
    pub bindings: Option<ChannelBindings>,
    /// TLS protects the request up to the client: ours, or a proxy's (`behind_tls_proxy`).
    pub secure: bool,
    /// Turns true when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Where a service runs what outlives its answer.
    pub tasks: Tasks,
}

impl Peer {
    /// The scheme the client used, as far as we know (`https` behind a TLS proxy).
    pub fn scheme(&self) -> &'static str {
        if self.secure {
            "https"
        } else {
            "http"
        }
    }
}

/// Tasks started by services (upgraded connections); shutdown waits for them, a bounded time.
#[derive(Debug, Clone, Default)]
pub struct Tasks(Arc<Mutex<JoinSet<()>>>);

impl Tasks {
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Reap what finished, so a long-running server does not keep their results.
        while set.try_join_next().is_some() {}
        set.spawn(task);
    }

    async fn drain(&self, until: Instant) {
        let mut set = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        let all = async { while set.join_next().await.is_some() {} };
        if tokio::time::timeout_at(until, all).await.is_err() {
            tracing::warn!(
                left = set.len(),
                "HTTP tasks still running after the grace period"
            );
            set.abort_all();
        }
    }
}

/// A service plugged into the layer under one or more paths.
#[async_trait::async_trait]
pub trait Service: Send + Sync + 'static {
    async fn call(&self, req: Request<RequestBody>, peer: &Peer) -> Response<ResponseBody>;
}

/// Which service answers which path: exact paths, or prefixes ending in `/`.
#[derive(Default, Clone)]
pub struct Router {
    routes: Vec<Route>,
}

#[derive(Clone)]
struct Route {
    path: String,
    service: Arc<dyn Service>,
    /// The service reads the body as a stream and bounds it itself.
    streaming: bool,
    /// The access log shows the route's own path, not the request's (which is a secret).
    redacted: bool,
}

impl Router {
    /// Routes `path` (exact) or, when it ends in `/`, everything under it, to `service`. The
    /// first matching route wins.
    pub fn route(&mut self, path: &str, service: Arc<dyn Service>) -> &mut Self {
        self.add(path, service, false)
    }

    /// Like [`Router::route`], for a service whose bodies may be far larger than
    /// `max_body_bytes` (file uploads): neither the body limit nor the answer deadline
    /// applies, so the service must bound what it reads and how long it waits for each part
    /// itself. The head's limits still apply.
    pub fn route_streaming(&mut self, path: &str, service: Arc<dyn Service>) -> &mut Self {
        self.add(path, service, true)
    }

    fn add(&mut self, path: &str, service: Arc<dyn Service>, streaming: bool) -> &mut Self {
        self.routes.push(Route {
            path: path.to_owned(),
            service,
            streaming,
            redacted: false,
        });
        self
    }

    /// Logs the requests of the route of `path` under that path alone (`/upload/…`): what
    /// follows it is a capability (a download link), which the access log must not hand to
    /// whoever reads the log.
    pub fn redact_in_log(&mut self, path: &str) -> &mut Self {
        for route in self.routes.iter_mut().filter(|r| r.path == path) {
            route.redacted = true;
        }
        self
    }

    /// What the access log shows of a request for `path`.
    fn logged_path(&self, path: &str) -> String {
        match self.find(path) {
            Some(r) if r.redacted => format!("{}…", r.path),
            _ => path.to_owned(),
        }
    }

    fn find(&self, path: &str) -> Option<&Route> {
        let matches =
            |route: &str| route == path || (route.ends_with('/') && path.starts_with(route));
        self.routes.iter().find(|r| matches(&r.path))
    }
}

/// A plain answer with a text body.
pub fn text(status: StatusCode, body: &str) -> Response<ResponseBody> {
    let mut resp = Response::new(full(format!("{body}\n")));
    *resp.status_mut() = status;
    let plain = HeaderValue::from_static("text/plain; charset=utf-8");
    resp.headers_mut().insert(CONTENT_TYPE, plain);
    resp
}

/// Cross-site request forgery and WebSocket hijacking: a page elsewhere must not use the
/// visitor's browser (its cookies, client certificates, network position) on our endpoints.
/// Browsers always send `Origin`; one that is neither the endpoint's own (same scheme and
/// `Host`) nor in `allowed` (lowercase, no final `/`; `*` allows any) is refused. Clients that
/// are not browsers send none and are allowed: they could claim any origin anyway.
pub fn origin_allowed<B>(req: &Request<B>, peer: &Peer, allowed: &[String]) -> bool {
    let Some(origin) = req.headers().get(ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    let own = (req.headers().get(HOST).and_then(|h| h.to_str().ok()))
        .map(|host| format!("{}://{}", peer.scheme(), host.to_ascii_lowercase()));
    own.as_deref() == Some(origin.as_str()) || allowed.iter().any(|o| o == "*" || *o == origin)
}

/// A whole body in memory.
pub fn full(body: impl Into<Bytes>) -> ResponseBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

struct Shared {
    settings: HttpSettings,
    tls: Arc<Tls>,
    router: Router,
    connections: Arc<tokio::sync::Semaphore>,
    tasks: Tasks,
}

/// The bound HTTP listeners, ready to [`Http::run`].
pub struct Http {
    listeners: Vec<(bool, TcpListener)>,
    shared: Arc<Shared>,
}

impl Http {
    /// Binds every configured address (`true`: a TLS listener).
    pub async fn bind(
        settings: HttpSettings,
        tls: Arc<Tls>,
        router: Router,
    ) -> std::io::Result<Http> {
        let mut listeners = Vec::new();
        let addrs = (settings.listen.iter().map(|a| (false, *a)))
            .chain(settings.tls_listen.iter().map(|a| (true, *a)));
        for (secure, addr) in addrs {
            listeners.push((secure, xmppd_c2s::listen(addr)?));
        }
        let shared = Shared {
            connections: Arc::new(tokio::sync::Semaphore::new(settings.max_connections)),
            settings,
            tls,
            router,
            tasks: Tasks::default(),
        };
        Ok(Http {
            listeners,
            shared: Arc::new(shared),
        })
    }

    /// The addresses actually bound (`true`: TLS), useful with port 0.
    pub fn local_addrs(&self) -> Vec<(bool, SocketAddr)> {
        (self.listeners.iter())
            .filter_map(|(tls, l)| l.local_addr().ok().map(|a| (*tls, a)))
            .collect()
    }

    /// Serves until `shutdown` turns true; then lets each connection finish the request it is
    /// answering (none starts), and waits a bounded time for them and the services' tasks.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let mut loops = JoinSet::new();
        for (tls, listener) in self.listeners {
            let shared = Arc::clone(&self.shared);
            loops.spawn(accept_loop(tls, listener, shared, shutdown.clone()));
        }
        while loops.join_next().await.is_some() {}
        self.shared
            .tasks
            .drain(Instant::now() + SHUTDOWN_GRACE)
            .await;
    }
}

/// Resolves once `shutdown` is (or becomes) true; never if its sender is gone without that.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn accept_loop(
    tls: bool,
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, addr)) => {
                    let Ok(permit) = Arc::clone(&shared.connections).try_acquire_owned() else {
                        tracing::warn!("HTTP connection limit reached: closing a new connection");
                        continue;
                    };
                    let (shared, shutdown) = (Arc::clone(&shared), shutdown.clone());
                    conns.spawn(async move {
                        let _permit = permit;
                        serve_connection(shared, tcp, addr, tls, shutdown).await;
                    });
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = shutdown_requested(&mut shutdown) => break,
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        conns.abort_all();
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    mut tcp: TcpStream,
    mut addr: SocketAddr,
    tls: bool,
    shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let settings = &shared.settings;
    if xmppd_realip::listed(&settings.proxy_protocol_from, addr.ip()) {
        // A configured proxy names the client first; without a valid header the connection
        // is closed, not taken as the proxy's own (its clients would share one address).
        let deadline = Instant::now() + settings.header_timeout;
        match xmppd_realip::read_proxy_header(&mut tcp, deadline).await {
            Ok(header) => addr = header.source.unwrap_or(addr),
            Err(xmppd_realip::HeaderError::Closed) => return,
            Err(e) if settings.hide_ip => {
                return tracing::warn!(error = %e, "closing an HTTP connection from a proxy");
            }
            Err(e) => {
                let proxy = addr;
                return tracing::warn!(
                    %proxy,
                    error = %e,
                    "closing an HTTP connection from a proxy"
                );
            }
        }
    }
    let mut peer = Peer {
        addr,
        tls,
        bindings: None,
        secure: tls || settings.behind_tls_proxy,
        shutdown: shutdown.clone(),
        tasks: shared.tasks.clone(),
    };
    if tls {
        let handshake = shared.tls.http_acceptor().accept(tcp);
        match tokio::time::timeout(settings.header_timeout, handshake).await {
            Ok(Ok(stream)) if stream.get_ref().1.alpn_protocol() == Some(ALPN_ACME_TLS) => {
                // RFC 8737 §3: a tls-alpn-01 validation ends with its handshake.
                tracing::debug!("ACME tls-alpn-01 validation answered");
            }
            Ok(Ok(stream)) => {
                peer.bindings = Some(shared.tls.channel_bindings(stream.get_ref().1));
                serve_http(&shared, TokioIo::new(stream), peer, shutdown).await
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "HTTPS handshake failed"),
            Err(_) => tracing::debug!("HTTPS handshake timed out"),
        }
    } else {
        serve_http(&shared, TokioIo::new(tcp), peer, shutdown).await
    }
}

async fn serve_http<I>(
    shared: &Arc<Shared>,
    io: TokioIo<I>,
    peer: Peer,
    mut shutdown: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let settings = &shared.settings;
    let peer = Arc::new(peer);
    let service = {
        let (shared, peer) = (Arc::clone(shared), Arc::clone(&peer));
        hyper::service::service_fn(move |req| {
            let (shared, peer) = (Arc::clone(&shared), Arc::clone(&peer));
            async move { Ok::<_, Infallible>(answer(&shared, req, &peer).await) }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(settings.max_header_bytes)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => {
            if let Err(e) = done {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        }
        _ = shutdown_requested(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

/// The request's client: from a trusted proxy, the one its forwarding header names.
fn forwarded_peer(settings: &HttpSettings, req: &Request<Incoming>, peer: &Peer) -> Option<Peer> {
    if !xmppd_realip::listed(&settings.trusted_proxies, peer.addr.ip()) {
        return None;
    }
    let header = settings.forwarded_header;
    let values = req
        .headers()
        .get_all(header.name())
        .iter()
        .map(|v| v.as_bytes());
    let client =
        xmppd_realip::forwarded::client_addr(peer.addr, &settings.trusted_proxies, header, values);
    (client != peer.addr).then(|| Peer {
        addr: client,
        ..peer.clone()
    })
}

/// Routes one request, within the body and time limits, and logs it.
async fn answer(shared: &Shared, req: Request<Incoming>, peer: &Peer) -> Response<ResponseBody> {
    let settings = &shared.settings;
    let started = Instant::now();
    let forwarded = forwarded_peer(settings, &req, peer);
    let peer = forwarded.as_ref().unwrap_or(peer);
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let declared =
        (req.headers().get(CONTENT_LENGTH)).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let resp = match shared.router.find(&path) {
        None => text(StatusCode::NOT_FOUND, "Not found"),
        Some(route) if route.streaming => {
            let req = req.map(|body| Limited::new(body, usize::MAX));
            route.service.call(req, peer).await
        }
        Some(_) if declared.is_some_and(|n| n > settings.max_body_bytes as u64) => {
            text(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
        }
        Some(route) => {
            let req = req.map(|body| Limited::new(body, settings.max_body_bytes));
            let call = route.service.call(req, peer);
            match tokio::time::timeout(settings.request_timeout, call).await {
                Ok(resp) => resp,
                Err(_) => text(StatusCode::REQUEST_TIMEOUT, "Request timed out"),
            }
        }
    };
    if settings.access_log {
        let path = shared.router.logged_path(&path);
        let (status, ms) = (resp.status().as_u16(), started.elapsed().as_millis() as u64);
        if settings.hide_ip {
            tracing::info!(target: "xmppd_http::access", %method, path, status, ms, "http");
        } else {
            let peer = peer.addr;
            tracing::info!(target: "xmppd_http::access", %peer, %method, path, status, ms, "http");
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(&'static str);

    #[async_trait::async_trait]
    impl Service for Named {
        async fn call(&self, _: Request<RequestBody>, _: &Peer) -> Response<ResponseBody> {
            text(StatusCode::OK, self.0)
        }
    }

    #[test]
    fn routes_match_exact_paths_and_prefixes() {
        let mut router = Router::default();
        router
            .route("/.well-known/host-meta", Arc::new(Named("xrd")))
            .route_streaming("/upload/", Arc::new(Named("upload")));
        let found = |path| router.find(path).is_some();
        assert!(router.find("/upload/a/b").is_some_and(|r| r.streaming));
        assert!(!router.find("/.well-known/host-meta").unwrap().streaming);
        assert!(found("/.well-known/host-meta"));
        assert!(!found("/.well-known/host-meta/x"));
        assert!(!found("/.well-known/host-meta.jsonx"));
        assert!(found("/upload/abc/file.png"));
        assert!(!found("/upload"));
        assert!(!found("/"));
        router.redact_in_log("/upload/");
        assert_eq!(router.logged_path("/upload/3f2a/a.png"), "/upload/…");
        assert_eq!(
            router.logged_path("/.well-known/host-meta"),
            "/.well-known/host-meta"
        );
        assert_eq!(router.logged_path("/elsewhere/x"), "/elsewhere/x");
    }
}
