//! The load client: XMPP login over direct TLS (XEP-0368) or WebSocket (RFC 7395), the message
//! exchange of one connection, and what it makes of the stanzas it receives.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use minidom::Element;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use xmppd_http::framing::{self, NS_FRAMING};
use xmppd_sasl::client::ScramClient;
use xmppd_sasl::HashAlg;
use xmppd_stream::{Event, Framer, Limits};

use super::{Sasl, DOMAIN, LOGIN_CONCURRENCY, LOGIN_TIMEOUT, PASSWORD, USER_PREFIX};

const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

/// How a client's stream reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    /// Direct TLS on the c2s listener (XEP-0368).
    Tcp,
    /// XMPP over WebSocket (RFC 7395) on the HTTPS listener's `/xmpp-websocket`.
    WebSocket,
    /// Plain HTTP/1.1 requests on the HTTPS listener (file upload), no XMPP stream.
    Http,
}

/// Where a client logs in: the server's listener for the transport, the domain its users
/// live on (each server of a federation has its own), and the accounts: user `i` is
/// `{prefix}{i}`, all with one password (`bench0`, `bench1`, … and [`PASSWORD`] unless the
/// server is one the bench did not start).
#[derive(Clone)]
pub(super) struct Target {
    pub(super) addr: SocketAddr,
    pub(super) domain: Arc<str>,
    pub(super) transport: Transport,
    pub(super) prefix: Arc<str>,
    pub(super) password: Arc<str>,
    /// Every connection makes a full TLS handshake: the configuration keeps no sessions.
    connector: TlsConnector,
    /// With [`Target::resuming`]: a connector per account, each with a session cache of its
    /// own, so that an account's next connection resumes its last TLS session as a client
    /// that reconnects does (a shared cache would hand one client's tickets to another).
    per_account: Option<Arc<std::sync::Mutex<std::collections::HashMap<String, TlsConnector>>>>,
    /// With [`Target::spread_over_sources`]: connections taken so far, each from the next of
    /// [`SPREAD_SOURCES`] loopback addresses.
    sources: Option<Arc<std::sync::atomic::AtomicU32>>,
}

/// Loopback addresses [`Target::spread_over_sources`] spreads connections over, from
/// 127.1.0.0 on.
pub(super) const SPREAD_SOURCES: u32 = 4096;

impl Target {
    pub(super) fn new(addr: SocketAddr, domain: &str, transport: Transport) -> Result<Self> {
        // ALPN names what runs inside TLS: XMPP itself (XEP-0368), or HTTP carrying the
        // WebSocket upgrade.
        let alpn: &[u8] = match transport {
            Transport::Tcp => b"xmpp-client",
            Transport::WebSocket | Transport::Http => b"http/1.1",
        };
        Ok(Target {
            addr,
            domain: domain.into(),
            transport,
            prefix: USER_PREFIX.into(),
            password: PASSWORD.into(),
            connector: TlsConnector::from(Arc::new(tls_client_config(alpn)?)),
            per_account: None,
            sources: None,
        })
    }

    /// The same clients, their sessions and addresses, to a server now at `addr`.
    pub(super) fn at(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// The same server, each connection from the next of [`SPREAD_SOURCES`] addresses of
    /// 127.0.0.0/8, so that the server's limits per address apply as to clients on a network
    /// rather than being lifted for one address.
    pub(super) fn spread_over_sources(mut self) -> Self {
        self.sources = Some(Arc::default());
        self
    }

    async fn tcp_connect(&self) -> Result<TcpStream> {
        let Some(counter) = &self.sources else {
            return TcpStream::connect(self.addr).await.context("connecting");
        };
        let n = counter.fetch_add(1, Ordering::Relaxed) % SPREAD_SOURCES;
        let source = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(127, 1, 0, 0)) + n);
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket
            .bind(SocketAddr::from((source, 0)))
            // Not the address itself: errors of the storm are counted by their text.
            .context("binding to a loopback source address")?;
        socket.connect(self.addr).await.context("connecting")
    }

    /// The same server, each account resuming its own last TLS session when it connects
    /// again (after its first connection through this target, or a clone of it).
    pub(super) fn resuming(mut self) -> Self {
        self.per_account = Some(Arc::default());
        self
    }

    fn connector_of(&self, user: Option<&str>) -> TlsConnector {
        let (Some(user), Some(table)) = (user, &self.per_account) else {
            return self.connector.clone();
        };
        let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
        table
            .entry(user.to_owned())
            .or_insert_with(|| {
                let mut config = rustls::ClientConfig::clone(self.connector.config());
                config.resumption = rustls::client::Resumption::in_memory_sessions(1);
                TlsConnector::from(Arc::new(config))
            })
            .clone()
    }

    /// The same server with other accounts: `{prefix}{i}` with `password`.
    pub(super) fn with_accounts(mut self, prefix: &str, password: &str) -> Self {
        self.prefix = prefix.into();
        self.password = password.into();
        self
    }

    /// The local part of user `index`.
    pub(super) fn user(&self, index: usize) -> String {
        format!("{}{index}", self.prefix)
    }

    /// Direct TLS to the bench's one server and domain.
    pub(super) fn tcp(addr: SocketAddr) -> Result<Self> {
        Target::new(addr, DOMAIN, Transport::Tcp)
    }
}

/// Phases of the message exchange, broadcast to every connection task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Send and receive.
    Run,
    /// Stop sending; keep receiving what is still in flight.
    Drain,
    /// Close the stream.
    Finish,
}

/// Counters every connection task adds to.
pub(super) struct Shared {
    pub(super) epoch: Instant,
    pub(super) sent: AtomicU64,
    pub(super) received: AtomicU64,
    /// Connections that have seen the end of [`Phase::Run`] and send no more: until all
    /// have, `sent` may still grow, and comparing it with `received` proves nothing.
    pub(super) stopped: AtomicU64,
}

impl Shared {
    pub(super) fn new() -> Self {
        Shared {
            epoch: Instant::now(),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            stopped: AtomicU64::new(0),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// What one connection task saw.
#[derive(Debug, Default)]
pub(super) struct ConnStats {
    pub(super) latencies: Vec<u64>,
    pub(super) reordered: u64,
    pub(super) error_stanzas: u64,
    /// Open loop: messages sent more than 2 ms after they were due, the generator being busy.
    pub(super) late_sends: u64,
}

/// The connection under a stream; both boxed, each is over a kilobyte of TLS state.
enum Link {
    Tcp(Box<TlsStream<TcpStream>>),
    WebSocket(Box<WebSocketStream<TlsStream<TcpStream>>>),
}

/// A client stream: its connection, the parser of what the server sends, and once bound, the
/// session's JID. Over WebSocket the server's messages are turned back into a classic stream
/// (`<open/>` into a stream header, `<close/>` into its end), so the same framer reads both.
pub(super) struct Session {
    link: Link,
    pub(super) framer: Framer,
    pub(super) jid: String,
    domain: Arc<str>,
    buf: Vec<u8>,
    /// The TLS handshake resumed an earlier session.
    pub(super) resumed: bool,
}

/// Stanzas queued for one write, each element's end marked: over WebSocket each element is a
/// message of its own (RFC 7395 §3.3.3), over TCP they go out in one write.
#[derive(Default)]
pub(super) struct Outbox {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Outbox {
    /// Appends one element.
    pub(super) fn push(&mut self, element: &str) {
        self.buf.extend_from_slice(element.as_bytes());
        self.ends.push(self.buf.len());
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }
}

impl Target {
    /// A TCP connection to the target's address with TLS naming its domain, a full handshake.
    pub(super) async fn connect_tls(&self) -> Result<TlsStream<TcpStream>> {
        self.connect_tls_as(None).await
    }

    /// The same for `user`'s connection: with [`Target::resuming`], resuming its last session.
    async fn connect_tls_as(&self, user: Option<&str>) -> Result<TlsStream<TcpStream>> {
        let tcp = self.tcp_connect().await?;
        // Small stanzas each matter for latency; batching is done by the client itself.
        tcp.set_nodelay(true)?;
        let name = rustls_pki_types::ServerName::try_from(self.domain.as_ref())?.to_owned();
        self.connector_of(user)
            .connect(name, tcp)
            .await
            .context("TLS handshake")
    }
}

impl Session {
    /// `user`'s connection to the target (TLS, and the WebSocket upgrade), no stream yet.
    pub(super) async fn connect(target: &Target, user: &str) -> Result<Session> {
        let tls = target.connect_tls_as(Some(user)).await?;
        let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let link = match target.transport {
            Transport::Http => bail!("an XMPP stream needs direct TLS or WebSocket"),
            Transport::Tcp => Link::Tcp(Box::new(tls)),
            Transport::WebSocket => {
                let url = format!("wss://{}/xmpp-websocket", target.domain);
                let mut request = url.into_client_request()?;
                // RFC 7395 §3.1: the `xmpp` subprotocol, or the server refuses the upgrade.
                request
                    .headers_mut()
                    .insert("Sec-WebSocket-Protocol", "xmpp".parse()?);
                let (ws, _) = tokio_tungstenite::client_async(request, tls)
                    .await
                    .context("WebSocket handshake")?;
                Link::WebSocket(Box::new(ws))
            }
        };
        Ok(Session {
            link,
            framer: Framer::new(Limits::DEFAULT),
            jid: String::new(),
            domain: target.domain.clone(),
            buf: vec![0u8; 16 * 1024],
            resumed,
        })
    }

    /// Writes `data` and flushes: over TCP any bytes, over WebSocket exactly one element.
    pub(super) async fn send(&mut self, data: &str) -> Result<()> {
        match &mut self.link {
            Link::Tcp(tls) => {
                tls.write_all(data.as_bytes()).await?;
                tls.flush().await?;
            }
            Link::WebSocket(ws) => ws.send(ws_message(data.as_bytes())?).await?,
        }
        Ok(())
    }

    /// Writes everything queued, in one write over TCP, then flushes.
    pub(super) async fn send_all(&mut self, out: &Outbox) -> Result<()> {
        match &mut self.link {
            Link::Tcp(tls) => {
                tls.write_all(&out.buf).await?;
                tls.flush().await?;
            }
            Link::WebSocket(ws) => {
                let mut start = 0;
                for &end in &out.ends {
                    ws.feed(ws_message(&out.buf[start..end])?).await?;
                    start = end;
                }
                ws.flush().await?;
            }
        }
        Ok(())
    }

    /// The client's stream header (RFC 6120 §4.7), or `<open/>` (RFC 7395 §3.4).
    pub(super) async fn open_stream(&mut self) -> Result<()> {
        let domain = self.domain.clone();
        let open = match self.link {
            Link::Tcp(_) => format!(
                "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
                 xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
            ),
            Link::WebSocket(_) => {
                format!("<open xmlns='{NS_FRAMING}' to='{domain}' version='1.0'/>")
            }
        };
        self.send(&open).await
    }

    /// `</stream:stream>` (RFC 6120 §4.4), or `<close/>` (RFC 7395 §3.6).
    pub(super) async fn close_stream(&mut self) -> Result<()> {
        match self.link {
            Link::Tcp(_) => self.send("</stream:stream>").await,
            Link::WebSocket(_) => self.send(&format!("<close xmlns='{NS_FRAMING}'/>")).await,
        }
    }

    /// Reads what the server sent next into the framer; an end of the connection is an error.
    /// Cancel-safe: nothing read is lost when the future is dropped.
    pub(super) async fn read_more(&mut self) -> Result<()> {
        match &mut self.link {
            Link::Tcp(tls) => {
                let n = tls
                    .read(&mut self.buf)
                    .await
                    .context("reading from the server")?;
                if n == 0 {
                    bail!("server closed the connection");
                }
                self.framer.feed(&self.buf[..n]);
            }
            Link::WebSocket(ws) => loop {
                match ws.next().await {
                    Some(Ok(WsMessage::Text(text))) => {
                        self.framer.feed(&framing::incoming(text.as_str()));
                        break;
                    }
                    Some(Ok(WsMessage::Close(_))) | None => bail!("server closed the connection"),
                    // Pings are answered by the WebSocket layer itself.
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e).context("reading from the server"),
                }
            },
        }
        Ok(())
    }

    pub(super) async fn next_event(&mut self) -> Result<Event> {
        loop {
            if let Some(event) = self
                .framer
                .next_event()
                .context("parsing the server's stream")?
            {
                return Ok(event);
            }
            self.read_more().await?;
        }
    }

    /// The next top-level element; a stream close or stream error is an error.
    pub(super) async fn next_element(&mut self) -> Result<Element> {
        match self.next_event().await? {
            Event::Element(el) if el.name() == "error" && el.ns() == xmppd_stream::NS_STREAM => {
                bail!("stream error <{}>", first_child_name(&el).unwrap_or("?"))
            }
            Event::Element(el) => Ok(el),
            other => bail!("expected an element, got {}", describe(&other)),
        }
    }

    pub(super) async fn expect_header(&mut self) -> Result<()> {
        match self.next_event().await? {
            Event::Header(_) => Ok(()),
            other => bail!("expected a stream header, got {}", describe(&other)),
        }
    }

    /// Waits up to `grace` for the server to end the connection: courtesy, not correctness.
    async fn linger(&mut self, grace: Duration) {
        let _ =
            tokio::time::timeout(grace, async { while self.read_more().await.is_ok() {} }).await;
    }

    /// Ends the TLS session (or the WebSocket) without waiting for anything.
    async fn shutdown(&mut self) {
        match &mut self.link {
            Link::Tcp(tls) => {
                let _ = tls.shutdown().await;
            }
            Link::WebSocket(ws) => {
                let _ = ws.send(WsMessage::Close(None)).await;
            }
        }
    }
}

/// One element as a WebSocket message. RFC 7395 §3.3.3: each stanza is namespace-qualified on
/// its own, there being no stream element to inherit `jabber:client` from.
fn ws_message(element: &[u8]) -> Result<WsMessage> {
    let text = std::str::from_utf8(element).context("a stanza that is not UTF-8")?;
    let tag_end = text.find('>').unwrap_or(text.len());
    let name_end = text[1..]
        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .map_or(text.len(), |i| i + 1);
    if text.starts_with('<') && !text[..tag_end].contains("xmlns=") && name_end <= tag_end {
        let mut qualified = String::with_capacity(text.len() + 24);
        qualified.push_str(&text[..name_end]);
        qualified.push_str(" xmlns='jabber:client'");
        qualified.push_str(&text[name_end..]);
        return Ok(WsMessage::text(qualified));
    }
    Ok(WsMessage::text(text))
}

/// Logs in each `(target, user index)` concurrently, at most [`LOGIN_CONCURRENCY`] at once.
pub(super) async fn login_all(
    logins: impl IntoIterator<Item = (Target, usize)>,
    sasl: Sasl,
) -> Result<Vec<Session>> {
    let gate = Arc::new(Semaphore::new(LOGIN_CONCURRENCY));
    let mut tasks = Vec::new();
    for (target, i) in logins {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let user = target.user(i);
            tokio::time::timeout(LOGIN_TIMEOUT, login(&target, &user, sasl))
                .await
                .map_err(|_| anyhow!("login timed out after {LOGIN_TIMEOUT:?}"))?
                .with_context(|| format!("login of {user}@{}", target.domain))
        }));
    }
    let mut sessions = Vec::with_capacity(tasks.len());
    for task in tasks {
        sessions.push(task.await.context("login task died")??);
    }
    Ok(sessions)
}

/// Reads until an element matching `want` arrives (others are dropped); errors end the wait.
pub(super) async fn wait_for(s: &mut Session, want: impl Fn(&Element) -> bool) -> Result<Element> {
    loop {
        let el = s.next_element().await?;
        if el.attr("type") == Some("error") && el.name() != "message" {
            bail!("<{}/> error from {:?}", el.name(), el.attr("from"));
        }
        if want(&el) {
            return Ok(el);
        }
    }
}

/// A login as a client does it, then the roster (RFC 6121 §2.1.3), what a client asks next.
/// Its answer also shows that the presence sent before it was handled: a session handles its
/// stanzas in order.
pub(super) async fn login_with_roster(target: &Target, user: &str, sasl: Sasl) -> Result<Session> {
    let mut s = login(target, user, sasl).await?;
    s.send("<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>")
        .await?;
    wait_for(&mut s, |el| {
        el.name() == "iq" && el.attr("id") == Some("roster1")
    })
    .await?;
    Ok(s)
}

/// RFC 6120 §4.4: closes the stream and waits for the server's close.
pub(super) async fn close(mut s: Session) -> Result<()> {
    s.close_stream().await?;
    while !matches!(s.next_event().await?, Event::Close) {}
    // The server may already have closed the connection; nothing is left to learn then.
    s.shutdown().await;
    Ok(())
}

/// TLS (and the WebSocket upgrade), SASL, stream restart, resource binding, initial presence.
pub(super) async fn login(target: &Target, user: &str, sasl: Sasl) -> Result<Session> {
    let mut s = authenticate(target, user, sasl).await?;
    s.send(
        "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
          <resource>bench</resource></bind></iq>",
    )
    .await?;
    s.jid = loop {
        let el = s.next_element().await?;
        if el.name() == "iq" && el.attr("id") == Some("bind1") {
            break bound_jid(&el)?;
        }
    };
    s.send("<presence/>").await?;
    Ok(s)
}

/// TLS (and the WebSocket upgrade), SASL, stream restart, up to the features that offer
/// binding: a stream on which the client binds a resource or resumes a session (XEP-0198 §5).
/// Its `jid` is empty.
pub(super) async fn authenticate(target: &Target, user: &str, sasl: Sasl) -> Result<Session> {
    let password: &str = &target.password;
    let mut s = Session::connect(target, user).await?;
    s.open_stream().await?;
    s.expect_header().await?;
    let features = s.next_element().await?;
    if !offers_mechanism(&features, sasl.name()) {
        bail!("server does not offer SASL {} over TLS", sasl.name());
    }
    let mut scram = match sasl {
        Sasl::Plain => None,
        Sasl::ScramSha1 => Some(ScramClient::new(HashAlg::Sha1, user, password, None)),
        Sasl::ScramSha256 => Some(ScramClient::new(HashAlg::Sha256, user, password, None)),
    };
    let initial = match &mut scram {
        Some(client) => B64.encode(client.client_first()),
        None => plain_initial_response(user, password),
    };
    let auth = format!(
        "<auth xmlns='{NS_SASL}' mechanism='{}'>{initial}</auth>",
        sasl.name()
    );
    s.send(&auth).await?;
    let mut outcome = s.next_element().await?;
    if let (Some(client), "challenge") = (&mut scram, outcome.name()) {
        let server_first = sasl_payload(&outcome)?;
        let response = client
            .client_final(&server_first)
            .context("SCRAM server-first")?;
        let response = format!(
            "<response xmlns='{NS_SASL}'>{}</response>",
            B64.encode(response)
        );
        s.send(&response).await?;
        outcome = s.next_element().await?;
    }
    if outcome.name() != "success" {
        bail!(
            "authentication failed: <{}>",
            first_child_name(&outcome).unwrap_or("?")
        );
    }
    if let Some(client) = &scram {
        // The server proves it knew the password too (RFC 5802 §3, server-final in success).
        client
            .verify_server_final(&sasl_payload(&outcome)?)
            .context("SCRAM server-final")?;
    }

    // RFC 6120 §6.4.6: after success both sides start a fresh stream.
    s.framer.reset();
    s.open_stream().await?;
    s.expect_header().await?;
    let features = s.next_element().await?;
    if !features.children().any(|c| c.name() == "bind") {
        bail!("server offers no resource binding after authentication");
    }
    Ok(s)
}

fn describe(event: &Event) -> String {
    match event {
        Event::Header(_) => "a stream header".into(),
        Event::Element(el) => format!("<{}>", el.name()),
        Event::Close => "the stream close".into(),
    }
}

fn first_child_name(el: &Element) -> Option<&str> {
    el.children().next().map(|c| c.name())
}

fn offers_mechanism(features: &Element, mechanism: &str) -> bool {
    features
        .children()
        .filter(|c| c.name() == "mechanisms")
        .flat_map(|m| m.children())
        .any(|m| m.name() == "mechanism" && m.text().trim() == mechanism)
}

fn bound_jid(iq: &Element) -> Result<String> {
    if iq.attr("type") != Some("result") {
        bail!(
            "resource binding failed: <{}>",
            first_child_name(iq).unwrap_or("?")
        );
    }
    let jid = iq
        .children()
        .filter(|c| c.name() == "bind")
        .flat_map(|b| b.children())
        .find(|c| c.name() == "jid")
        .map(|j| j.text().trim().to_string())
        .ok_or_else(|| anyhow!("bind result carries no <jid/>"))?;
    if jid.is_empty() {
        bail!("bind result carries an empty <jid/>");
    }
    Ok(jid)
}

/// Decoded base64 content of `<challenge/>` or `<success/>` (`=` is the empty payload).
fn sasl_payload(el: &Element) -> Result<Vec<u8>> {
    let text = el.text();
    let text = text.trim();
    if text == "=" {
        return Ok(Vec::new());
    }
    B64.decode(text)
        .map_err(|_| anyhow!("<{}> carries invalid base64", el.name()))
}

/// RFC 4616 message: empty authzid, authcid, password, base64 for the `<auth/>` element.
fn plain_initial_response(user: &str, password: &str) -> String {
    let raw = format!("\0{user}\0{password}");
    B64.encode(raw.as_bytes())
}

/// Everything a connection task needs besides its session.
pub(super) struct ConnCtx {
    pub(super) shared: Arc<Shared>,
    pub(super) phase: watch::Receiver<Phase>,
    /// A peer's JID, or the room's in MUC mode.
    pub(super) peer: String,
    /// Deliveries one sent message makes: 1, or every occupant of the room.
    pub(super) fan_out: u64,
    pub(super) rate: Option<f64>,
    pub(super) in_flight: usize,
    pub(super) padding: String,
    /// Open loop: where in the send period this client's sends fall, as a fraction of it in
    /// `[0, 1)`. Client `i` of `n` gets `i / n`, so that the clients' sends are spread evenly
    /// in time instead of all firing at once.
    pub(super) offset: f64,
    /// Messages sent before this time (ns since [`Shared::epoch`]) are the warm-up: they are
    /// delivered and counted, but their latency is not a sample.
    pub(super) measure_from_ns: u64,
}

impl ConnCtx {
    /// The context of client `index` of `count`, sending to `peer`, as `opts` say.
    pub(super) fn new(
        shared: Arc<Shared>,
        phase: watch::Receiver<Phase>,
        peer: String,
        (index, count): (usize, usize),
        load: &Load,
    ) -> Self {
        ConnCtx {
            shared,
            phase,
            peer,
            fan_out: load.fan_out,
            rate: load.rate,
            in_flight: load.in_flight,
            padding: "x".repeat(load.payload),
            offset: index as f64 / count.max(1) as f64,
            measure_from_ns: load.measure_from_ns,
        }
    }
}

/// What every connection of a message phase does alike.
pub(super) struct Load {
    pub(super) fan_out: u64,
    /// Messages per second per client (open loop), or `None` (closed loop).
    pub(super) rate: Option<f64>,
    pub(super) in_flight: usize,
    pub(super) payload: usize,
    pub(super) measure_from_ns: u64,
}

/// Sends to and receives from the peer until told to finish, then closes the stream.
pub(super) async fn exchange(mut session: Session, mut ctx: ConnCtx) -> Result<ConnStats> {
    let stats = converse(&mut session, &mut ctx).await?;
    if session.close_stream().await.is_ok() {
        // The server answers with its own close; waiting for it is courtesy, not correctness.
        session.linger(Duration::from_millis(500)).await;
    }
    session.shutdown().await;
    Ok(stats)
}

/// Sends to and receives from the peer until told to finish; the stream stays open.
///
/// Open loop (`ctx.rate`): message `k` is due at `start + (k + offset) / rate`, each written
/// on its own (one message per TLS record, as a client typing sends them), whatever happened
/// to earlier ones. A send that could not be made on time (the generator was busy) is made
/// at once and counted in [`ConnStats::late_sends`]; it carries its actual send time.
/// Closed loop: `ctx.in_flight` messages at first, then one for each one received, written
/// in one batch per read.
pub(super) async fn converse(session: &mut Session, ctx: &mut ConnCtx) -> Result<ConnStats> {
    let mut stats = ConnStats::default();
    let mut out = Outbox::default();
    let mut next_seq = 0u64;
    let mut last_seen: Option<u64> = None;
    let to = xml_escape(&ctx.peer);
    let start = tokio::time::Instant::now();
    let due = |seq: u64, rate: f64| {
        start + Duration::from_secs_f64(((seq as f64 + ctx.offset) / rate).min(1e9))
    };
    let far = start + Duration::from_secs(86_400);
    let mut next_due = ctx.rate.map_or(far, |rate| due(0, rate));

    if ctx.rate.is_none() {
        for _ in 0..ctx.in_flight {
            push_message(&mut out, &to, &mut next_seq, ctx);
        }
    }
    let mut phase = *ctx.phase.borrow();
    loop {
        if !out.is_empty() {
            session
                .send_all(&out)
                .await
                .context("writing to the server")?;
            out.clear();
        }
        if phase == Phase::Finish {
            break;
        }
        tokio::select! {
            read = session.read_more() => {
                read?;
                // Every event already buffered is handled before writing once: batching.
                while let Some(event) =
                    session.framer.next_event().context("parsing the server's stream")?
                {
                    let el = match event {
                        Event::Element(el) => el,
                        Event::Close => bail!("server closed the stream"),
                        Event::Header(_) => bail!("unexpected stream header"),
                    };
                    match incoming(&el, &ctx.shared, ctx.measure_from_ns, &mut stats, &mut last_seen)? {
                        Incoming::Message if phase == Phase::Run && ctx.rate.is_none() => {
                            push_message(&mut out, &to, &mut next_seq, ctx);
                        }
                        Incoming::Reply(reply) => out.push(&reply),
                        Incoming::Message | Incoming::Ignored => {}
                    }
                }
            }
            _ = tokio::time::sleep_until(next_due), if phase == Phase::Run && ctx.rate.is_some() => {
                let rate = ctx.rate.unwrap_or(1.0);
                // Timer granularity is a millisecond: more than that behind is the generator's
                // own delay.
                if tokio::time::Instant::now() > next_due + Duration::from_millis(2) {
                    stats.late_sends += 1;
                }
                push_message(&mut out, &to, &mut next_seq, ctx);
                next_due = due(next_seq, rate);
            }
            changed = ctx.phase.changed() => {
                let was = phase;
                phase = match changed {
                    Ok(()) => *ctx.phase.borrow_and_update(),
                    // The driver is gone: nothing more will be measured.
                    Err(_) => Phase::Finish,
                };
                if was == Phase::Run && phase != Phase::Run {
                    ctx.shared.stopped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    Ok(stats)
}

fn push_message(out: &mut Outbox, to: &str, seq: &mut u64, ctx: &ConnCtx) {
    let body = encode_body(*seq, ctx.shared.now_ns(), &ctx.padding);
    *seq += 1;
    ctx.shared.sent.fetch_add(ctx.fan_out, Ordering::Relaxed);
    let kind = if ctx.fan_out > 1 { "groupchat" } else { "chat" };
    let _ = write!(
        VecWriter(&mut out.buf),
        "<message to='{to}' type='{kind}'><body>{body}</body></message>"
    );
    out.ends.push(out.buf.len());
}

/// `fmt::Write` into a byte buffer, so messages are formatted without a temporary String.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// How one received stanza is handled.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    /// A benchmark message from the peer, recorded.
    Message,
    /// An answer the server is owed (e.g. to a ping).
    Reply(String),
    /// Presence and anything else.
    Ignored,
}

/// `measure_from_ns`: messages sent before it are the warm-up, counted but not sampled.
fn incoming(
    el: &Element,
    shared: &Shared,
    measure_from_ns: u64,
    stats: &mut ConnStats,
    last_seen: &mut Option<u64>,
) -> Result<Incoming> {
    match el.name() {
        "message" => {
            if el.attr("type") == Some("error") {
                stats.error_stanzas += 1;
                return Ok(Incoming::Ignored);
            }
            let Some(body) = el.children().find(|c| c.name() == "body") else {
                return Ok(Incoming::Ignored);
            };
            let Some((seq, sent_ns)) = decode_body(&body.text()) else {
                return Ok(Incoming::Ignored);
            };
            if sent_ns >= measure_from_ns {
                stats
                    .latencies
                    .push(shared.now_ns().saturating_sub(sent_ns));
            }
            if last_seen.is_some_and(|last| seq <= last) {
                stats.reordered += 1;
            }
            *last_seen = Some(seq);
            shared.received.fetch_add(1, Ordering::Relaxed);
            Ok(Incoming::Message)
        }
        "iq" => Ok(iq_reply(el).map_or(Incoming::Ignored, Incoming::Reply)),
        "error" if el.ns() == xmppd_stream::NS_STREAM => {
            bail!("stream error <{}>", first_child_name(el).unwrap_or("?"))
        }
        _ => Ok(Incoming::Ignored),
    }
}

/// RFC 6120 §8.2.3: every get/set gets an answer; a ping a result, anything else an error.
pub(super) fn iq_reply(iq: &Element) -> Option<String> {
    let kind = iq.attr("type")?;
    if kind != "get" && kind != "set" {
        return None;
    }
    let id = xml_escape(iq.attr("id").unwrap_or(""));
    let to = iq
        .attr("from")
        .map(|f| format!(" to='{}'", xml_escape(f)))
        .unwrap_or_default();
    let is_ping = kind == "get" && iq.children().any(|c| c.is("ping", "urn:xmpp:ping"));
    Some(if is_ping {
        format!("<iq type='result' id='{id}'{to}/>")
    } else {
        format!(
            "<iq type='error' id='{id}'{to}><error type='cancel'><service-unavailable \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        )
    })
}

/// Body text: sequence number, send time in ns since the bench epoch, optional filler.
pub(super) fn encode_body(seq: u64, sent_ns: u64, padding: &str) -> String {
    if padding.is_empty() {
        format!("{seq} {sent_ns}")
    } else {
        format!("{seq} {sent_ns} {padding}")
    }
}

pub(super) fn decode_body(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.split_ascii_whitespace();
    let seq = parts.next()?.parse().ok()?;
    let sent_ns = parts.next()?.parse().ok()?;
    Some((seq, sent_ns))
}

pub(super) use xmppd_stream::escape_xml as xml_escape;

fn tls_client_config(alpn: &[u8]) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(danger::AcceptAnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    // Logins are measured as full handshakes unless asked otherwise (`Target::resuming`).
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

mod danger {
    //! A certificate verifier that accepts any server certificate. The benchmark server uses a
    //! self-signed certificate and is reached only over 127.0.0.1; nothing else may use this.

    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    #[derive(Debug)]
    pub(super) struct AcceptAnyCert(pub(super) Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyCert {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        // The handshake signature is still checked: only the certificate's identity is not.
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trips() {
        for (seq, ts, pad) in [
            (0, 0, ""),
            (7, 123_456_789, "xxxx"),
            (u64::MAX, u64::MAX, ""),
        ] {
            assert_eq!(decode_body(&encode_body(seq, ts, pad)), Some((seq, ts)));
        }
    }

    #[test]
    fn body_garbage_is_not_a_sample() {
        for bad in [
            "",
            "12",
            "a 1",
            "1 b",
            "-1 5",
            "18446744073709551616 1",
            "hello there",
        ] {
            assert_eq!(decode_body(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn plain_response_is_rfc4616() {
        let encoded = plain_initial_response("bench3", "pw");
        let raw = B64.decode(encoded).unwrap();
        assert_eq!(raw, b"\0bench3\0pw");
    }

    #[test]
    fn sasl_payloads() {
        let el = |text: &str| Element::builder("success", NS_SASL).append(text).build();
        assert_eq!(sasl_payload(&el("=")).unwrap(), b"");
        assert_eq!(sasl_payload(&el(&B64.encode("v=abc"))).unwrap(), b"v=abc");
        assert!(sasl_payload(&el("not base64!")).is_err());
    }

    #[test]
    fn websocket_messages_are_namespace_qualified() {
        let text = |m: WsMessage| m.into_text().unwrap().as_str().to_owned();
        assert_eq!(
            text(ws_message(b"<presence/>").unwrap()),
            "<presence xmlns='jabber:client'/>"
        );
        assert_eq!(
            text(ws_message(b"<message to='a@b/c' type='chat'><body>1</body></message>").unwrap()),
            "<message xmlns='jabber:client' to='a@b/c' type='chat'><body>1</body></message>"
        );
        let own = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>x</auth>";
        assert_eq!(text(ws_message(own.as_bytes()).unwrap()), own);
        let framing = "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";
        assert_eq!(text(ws_message(framing.as_bytes()).unwrap()), framing);
    }

    #[test]
    fn escaping() {
        assert_eq!(xml_escape("a&b<c>'\"d"), "a&amp;b&lt;c&gt;&apos;&quot;d");
    }

    #[test]
    fn message_is_addressed_and_timestamped() {
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            stopped: AtomicU64::new(0),
        });
        let (_tx, rx) = watch::channel(Phase::Run);
        let ctx = ConnCtx {
            shared: shared.clone(),
            phase: rx,
            peer: "bench1@localhost/bench".into(),
            fan_out: 1,
            rate: None,
            in_flight: 1,
            padding: String::new(),
            offset: 0.0,
            measure_from_ns: 0,
        };
        let mut out = Outbox::default();
        let mut seq = 5;
        push_message(&mut out, &ctx.peer, &mut seq, &ctx);
        push_message(&mut out, &ctx.peer, &mut seq, &ctx);
        assert_eq!(seq, 7);
        assert_eq!(shared.sent.load(Ordering::Relaxed), 2);
        // Each element's end is marked, for one WebSocket message each.
        assert_eq!(out.ends.len(), 2);
        assert_eq!(out.buf[out.ends[0]..].first(), Some(&b'<'));
        let text = String::from_utf8(out.buf).unwrap();
        assert_eq!(
            text.matches("<message to='bench1@localhost/bench' type='chat'>")
                .count(),
            2
        );
        assert!(text.contains("<body>5 ") && text.contains("<body>6 "));
    }

    fn message(body: &str, kind: Option<&str>) -> Element {
        let mut b = Element::builder("message", "jabber:client");
        if let Some(kind) = kind {
            b = b.attr("type".try_into().unwrap(), kind);
        }
        b.append(
            Element::builder("body", "jabber:client")
                .append(body)
                .build(),
        )
        .build()
    }

    #[test]
    fn incoming_messages_recorded() {
        let shared = Shared {
            epoch: Instant::now() - Duration::from_secs(1),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            stopped: AtomicU64::new(0),
        };
        let mut stats = ConnStats::default();
        let mut last = None;
        let sent_ns = 500_000_000;
        for seq in [0, 1, 1] {
            let el = message(&encode_body(seq, sent_ns, ""), Some("chat"));
            assert_eq!(
                incoming(&el, &shared, 0, &mut stats, &mut last).unwrap(),
                Incoming::Message
            );
        }
        assert_eq!(shared.received.load(Ordering::Relaxed), 3);
        assert_eq!(stats.reordered, 1);
        assert_eq!(stats.latencies.len(), 3);
        // Sent half a second after the epoch, received at least a second after it.
        assert!(stats.latencies.iter().all(|&l| l >= 500_000_000));

        let err = message(&encode_body(2, 0, ""), Some("error"));
        assert_eq!(
            incoming(&err, &shared, 0, &mut stats, &mut last).unwrap(),
            Incoming::Ignored
        );
        assert_eq!(stats.error_stanzas, 1);
        let junk = message("not a bench body", None);
        assert_eq!(
            incoming(&junk, &shared, 0, &mut stats, &mut last).unwrap(),
            Incoming::Ignored
        );
        let presence = Element::builder("presence", "jabber:client").build();
        assert_eq!(
            incoming(&presence, &shared, 0, &mut stats, &mut last).unwrap(),
            Incoming::Ignored
        );
        assert_eq!(shared.received.load(Ordering::Relaxed), 3);

        let stream_err = Element::builder("error", xmppd_stream::NS_STREAM)
            .append(Element::builder("conflict", xmppd_stream::NS_STREAM_ERRORS).build())
            .build();
        assert!(incoming(&stream_err, &shared, 0, &mut stats, &mut last).is_err());

        // A message sent during the warm-up is counted as delivered but is no sample.
        let mut stats = ConnStats::default();
        let warm = message(&encode_body(9, sent_ns, ""), Some("chat"));
        assert_eq!(
            incoming(&warm, &shared, sent_ns + 1, &mut stats, &mut None).unwrap(),
            Incoming::Message
        );
        assert_eq!(shared.received.load(Ordering::Relaxed), 4);
        assert!(stats.latencies.is_empty());
    }

    #[test]
    fn iq_get_and_set_are_answered() {
        let ping = Element::builder("iq", "jabber:client")
            .attr("type".try_into().unwrap(), "get")
            .attr("id".try_into().unwrap(), "p<1")
            .attr("from".try_into().unwrap(), "localhost")
            .append(Element::builder("ping", "urn:xmpp:ping").build())
            .build();
        assert_eq!(
            iq_reply(&ping).as_deref(),
            Some("<iq type='result' id='p&lt;1' to='localhost'/>")
        );
        let other = Element::builder("iq", "jabber:client")
            .attr("type".try_into().unwrap(), "set")
            .attr("id".try_into().unwrap(), "x")
            .append(Element::builder("query", "jabber:iq:roster").build())
            .build();
        assert!(iq_reply(&other).unwrap().contains("service-unavailable"));
        let result = Element::builder("iq", "jabber:client")
            .attr("type".try_into().unwrap(), "result")
            .build();
        assert_eq!(iq_reply(&result), None);
    }

    #[test]
    fn features_and_bind_result() {
        let features = Element::builder("features", xmppd_stream::NS_STREAM)
            .append(
                Element::builder("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl")
                    .append(
                        Element::builder("mechanism", "urn:ietf:params:xml:ns:xmpp-sasl")
                            .append("SCRAM-SHA-256")
                            .build(),
                    )
                    .append(
                        Element::builder("mechanism", "urn:ietf:params:xml:ns:xmpp-sasl")
                            .append("PLAIN")
                            .build(),
                    )
                    .build(),
            )
            .build();
        assert!(offers_mechanism(&features, "PLAIN"));
        assert!(!offers_mechanism(&features, "EXTERNAL"));

        let bind_ns = "urn:ietf:params:xml:ns:xmpp-bind";
        let ok = Element::builder("iq", "jabber:client")
            .attr("type".try_into().unwrap(), "result")
            .append(
                Element::builder("bind", bind_ns)
                    .append(
                        Element::builder("jid", bind_ns)
                            .append("bench0@localhost/b")
                            .build(),
                    )
                    .build(),
            )
            .build();
        assert_eq!(bound_jid(&ok).unwrap(), "bench0@localhost/b");
        let failed = Element::builder("iq", "jabber:client")
            .attr("type".try_into().unwrap(), "error")
            .build();
        assert!(bound_jid(&failed).is_err());
        let empty = Element::builder("iq", "jabber:client")
            .attr("type".try_into().unwrap(), "result")
            .append(Element::builder("bind", bind_ns).build())
            .build();
        assert!(bound_jid(&empty).is_err());
    }
}
