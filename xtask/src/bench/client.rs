//! The load client: XMPP login over direct TLS, the message exchange of one connection, and
//! what it makes of the stanzas it receives.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use minidom::Element;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use xmppd_sasl::client::ScramClient;
use xmppd_sasl::HashAlg;
use xmppd_stream::{Event, Framer, Limits};

use super::{user_name, Sasl, DOMAIN, LOGIN_CONCURRENCY, LOGIN_TIMEOUT, PASSWORD};

const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

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
}

impl Shared {
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
}

/// A logged-in, bound, available session.
pub(super) struct Session {
    pub(super) tls: TlsStream<TcpStream>,
    pub(super) framer: Framer,
    pub(super) jid: String,
}

pub(super) async fn login_all(addr: SocketAddr, count: usize, sasl: Sasl) -> Result<Vec<Session>> {
    let connector = TlsConnector::from(Arc::new(tls_client_config()?));
    let gate = Arc::new(Semaphore::new(LOGIN_CONCURRENCY));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let connector = connector.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            tokio::time::timeout(LOGIN_TIMEOUT, login(addr, &connector, &user_name(i), sasl))
                .await
                .map_err(|_| anyhow!("login timed out after {LOGIN_TIMEOUT:?}"))?
                .with_context(|| format!("login of {}", user_name(i)))
        }));
    }
    let mut sessions = Vec::with_capacity(count);
    for task in tasks {
        sessions.push(task.await.context("login task died")??);
    }
    Ok(sessions)
}

/// Reads until an element matching `want` arrives (others are dropped); errors end the wait.
pub(super) async fn wait_for(s: &mut Session, want: impl Fn(&Element) -> bool) -> Result<Element> {
    loop {
        let el = next_element(&mut s.tls, &mut s.framer, &mut vec![0u8; 16 * 1024]).await?;
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
pub(super) async fn login_with_roster(
    addr: SocketAddr,
    connector: &TlsConnector,
    user: &str,
    sasl: Sasl,
) -> Result<Session> {
    let mut s = login(addr, connector, user, sasl).await?;
    s.tls
        .write_all(b"<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>")
        .await?;
    s.tls.flush().await?;
    wait_for(&mut s, |el| {
        el.name() == "iq" && el.attr("id") == Some("roster1")
    })
    .await?;
    Ok(s)
}

/// RFC 6120 §4.4: closes the stream and waits for the server's close.
pub(super) async fn close(mut s: Session) -> Result<()> {
    s.tls.write_all(b"</stream:stream>").await?;
    s.tls.flush().await?;
    let mut buf = vec![0u8; 4096];
    while !matches!(
        next_event(&mut s.tls, &mut s.framer, &mut buf).await?,
        Event::Close
    ) {}
    // The server may already have closed the connection; nothing is left to learn then.
    let _ = s.tls.shutdown().await;
    Ok(())
}

/// Direct TLS, SASL PLAIN, stream restart, resource binding, initial presence.
pub(super) async fn login(
    addr: SocketAddr,
    connector: &TlsConnector,
    user: &str,
    sasl: Sasl,
) -> Result<Session> {
    let Session {
        mut tls,
        mut framer,
        ..
    } = authenticate(addr, connector, user, sasl).await?;
    let mut buf = vec![0u8; 16 * 1024];
    tls.write_all(
        b"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
          <resource>bench</resource></bind></iq>",
    )
    .await?;
    tls.flush().await?;
    let jid = loop {
        let el = next_element(&mut tls, &mut framer, &mut buf).await?;
        if el.name() == "iq" && el.attr("id") == Some("bind1") {
            break bound_jid(&el)?;
        }
    };
    tls.write_all(b"<presence/>").await?;
    tls.flush().await?;
    Ok(Session { tls, framer, jid })
}

/// Direct TLS, SASL, stream restart, up to the features that offer binding: a stream on
/// which the client binds a resource or resumes a session (XEP-0198 §5). Its `jid` is empty.
pub(super) async fn authenticate(
    addr: SocketAddr,
    connector: &TlsConnector,
    user: &str,
    sasl: Sasl,
) -> Result<Session> {
    let tcp = TcpStream::connect(addr).await.context("connecting")?;
    // Small stanzas each matter for latency; batching is done by the client itself.
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from(DOMAIN)?.to_owned();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    let mut framer = Framer::new(Limits::DEFAULT);
    let mut buf = vec![0u8; 16 * 1024];

    tls.write_all(client_stream_header().as_bytes()).await?;
    tls.flush().await?;
    expect_header(&mut tls, &mut framer, &mut buf).await?;
    let features = next_element(&mut tls, &mut framer, &mut buf).await?;
    if !offers_mechanism(&features, sasl.name()) {
        bail!("server does not offer SASL {} over TLS", sasl.name());
    }
    let mut scram = match sasl {
        Sasl::Plain => None,
        Sasl::ScramSha256 => Some(ScramClient::new(HashAlg::Sha256, user, PASSWORD, None)),
    };
    let initial = match &mut scram {
        Some(client) => B64.encode(client.client_first()),
        None => plain_initial_response(user, PASSWORD),
    };
    let auth = format!(
        "<auth xmlns='{NS_SASL}' mechanism='{}'>{initial}</auth>",
        sasl.name()
    );
    tls.write_all(auth.as_bytes()).await?;
    tls.flush().await?;
    let mut outcome = next_element(&mut tls, &mut framer, &mut buf).await?;
    if let (Some(client), "challenge") = (&mut scram, outcome.name()) {
        let server_first = sasl_payload(&outcome)?;
        let response = client
            .client_final(&server_first)
            .context("SCRAM server-first")?;
        let response = format!(
            "<response xmlns='{NS_SASL}'>{}</response>",
            B64.encode(response)
        );
        tls.write_all(response.as_bytes()).await?;
        tls.flush().await?;
        outcome = next_element(&mut tls, &mut framer, &mut buf).await?;
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
    framer.reset();
    tls.write_all(client_stream_header().as_bytes()).await?;
    tls.flush().await?;
    expect_header(&mut tls, &mut framer, &mut buf).await?;
    let features = next_element(&mut tls, &mut framer, &mut buf).await?;
    if !features.children().any(|c| c.name() == "bind") {
        bail!("server offers no resource binding after authentication");
    }
    Ok(Session {
        tls,
        framer,
        jid: String::new(),
    })
}

fn client_stream_header() -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}' version='1.0'>"
    )
}

async fn expect_header<S: AsyncRead + Unpin>(
    io: &mut S,
    framer: &mut Framer,
    buf: &mut [u8],
) -> Result<()> {
    match next_event(io, framer, buf).await? {
        Event::Header(_) => Ok(()),
        other => bail!("expected a stream header, got {}", describe(&other)),
    }
}

/// The next top-level element; a stream close or stream error is an error.
pub(super) async fn next_element<S: AsyncRead + Unpin>(
    io: &mut S,
    framer: &mut Framer,
    buf: &mut [u8],
) -> Result<Element> {
    match next_event(io, framer, buf).await? {
        Event::Element(el) if el.name() == "error" && el.ns() == xmppd_stream::NS_STREAM => {
            bail!("stream error <{}>", first_child_name(&el).unwrap_or("?"))
        }
        Event::Element(el) => Ok(el),
        other => bail!("expected an element, got {}", describe(&other)),
    }
}

pub(super) async fn next_event<S: AsyncRead + Unpin>(
    io: &mut S,
    framer: &mut Framer,
    buf: &mut [u8],
) -> Result<Event> {
    loop {
        if let Some(event) = framer.next_event().context("parsing the server's stream")? {
            return Ok(event);
        }
        let n = io.read(buf).await.context("reading from the server")?;
        if n == 0 {
            bail!("server closed the connection");
        }
        framer.feed(&buf[..n]);
    }
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
}

/// Sends to and receives from the peer until told to finish, then closes the stream.
pub(super) async fn exchange(session: Session, mut ctx: ConnCtx) -> Result<ConnStats> {
    let Session {
        mut tls,
        mut framer,
        ..
    } = session;
    let mut stats = ConnStats::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::with_capacity(4096);
    let mut next_seq = 0u64;
    let mut last_seen: Option<u64> = None;
    let to = xml_escape(&ctx.peer);
    let started = Instant::now();
    // Open loop ticks at most every millisecond and sends what is due: the timer's resolution
    // caps how often, not how many.
    let period = match ctx.rate {
        Some(rate) => Duration::from_secs_f64((1.0 / rate).clamp(0.001, 0.1)),
        None => Duration::from_secs(3600),
    };
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    if ctx.rate.is_none() {
        for _ in 0..ctx.in_flight {
            push_message(&mut out, &to, &mut next_seq, &ctx);
        }
    }
    let mut phase = *ctx.phase.borrow();
    loop {
        if !out.is_empty() {
            tls.write_all(&out).await.context("writing to the server")?;
            tls.flush().await.context("writing to the server")?;
            out.clear();
        }
        if phase == Phase::Finish {
            break;
        }
        tokio::select! {
            read = tls.read(&mut buf) => {
                let n = read.context("reading from the server")?;
                if n == 0 {
                    bail!("server closed the connection");
                }
                framer.feed(&buf[..n]);
                // Every event already buffered is handled before writing once: batching.
                while let Some(event) =
                    framer.next_event().context("parsing the server's stream")?
                {
                    let el = match event {
                        Event::Element(el) => el,
                        Event::Close => bail!("server closed the stream"),
                        Event::Header(_) => bail!("unexpected stream header"),
                    };
                    match incoming(&el, &ctx.shared, &mut stats, &mut last_seen)? {
                        Incoming::Message if phase == Phase::Run && ctx.rate.is_none() => {
                            push_message(&mut out, &to, &mut next_seq, &ctx);
                        }
                        Incoming::Reply(reply) => out.extend_from_slice(reply.as_bytes()),
                        Incoming::Message | Incoming::Ignored => {}
                    }
                }
            }
            _ = ticker.tick(), if phase == Phase::Run && ctx.rate.is_some() => {
                let rate = ctx.rate.unwrap_or(0.0);
                let due = (started.elapsed().as_secs_f64() * rate) as u64;
                // Bounded catch-up after a stall keeps one write from growing without limit.
                let owed = due.saturating_sub(next_seq).min(1000);
                for _ in 0..owed {
                    push_message(&mut out, &to, &mut next_seq, &ctx);
                }
            }
            changed = ctx.phase.changed() => {
                phase = match changed {
                    Ok(()) => *ctx.phase.borrow_and_update(),
                    // The driver is gone: nothing more will be measured.
                    Err(_) => Phase::Finish,
                };
            }
        }
    }
    tls.write_all(b"</stream:stream>").await.ok();
    tls.flush().await.ok();
    // The server answers with its own close; waiting for it is courtesy, not correctness.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(n) = tls.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    let _ = tls.shutdown().await;
    Ok(stats)
}

fn push_message(out: &mut Vec<u8>, to: &str, seq: &mut u64, ctx: &ConnCtx) {
    let body = encode_body(*seq, ctx.shared.now_ns(), &ctx.padding);
    *seq += 1;
    ctx.shared.sent.fetch_add(ctx.fan_out, Ordering::Relaxed);
    let kind = if ctx.fan_out > 1 { "groupchat" } else { "chat" };
    let _ = write!(
        VecWriter(out),
        "<message to='{to}' type='{kind}'><body>{body}</body></message>"
    );
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

fn incoming(
    el: &Element,
    shared: &Shared,
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
            stats
                .latencies
                .push(shared.now_ns().saturating_sub(sent_ns));
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

pub(super) fn tls_client_config() -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(danger::AcceptAnyCert(provider)))
        .with_no_client_auth();
    // XEP-0368: direct TLS names the protocol with ALPN.
    config.alpn_protocols = vec![b"xmpp-client".to_vec()];
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
    fn escaping() {
        assert_eq!(xml_escape("a&b<c>'\"d"), "a&amp;b&lt;c&gt;&apos;&quot;d");
    }

    #[test]
    fn message_is_addressed_and_timestamped() {
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
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
        };
        let mut out = Vec::new();
        let mut seq = 5;
        push_message(&mut out, &ctx.peer, &mut seq, &ctx);
        push_message(&mut out, &ctx.peer, &mut seq, &ctx);
        assert_eq!(seq, 7);
        assert_eq!(shared.sent.load(Ordering::Relaxed), 2);
        let text = String::from_utf8(out).unwrap();
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
        };
        let mut stats = ConnStats::default();
        let mut last = None;
        let sent_ns = 500_000_000;
        for seq in [0, 1, 1] {
            let el = message(&encode_body(seq, sent_ns, ""), Some("chat"));
            assert_eq!(
                incoming(&el, &shared, &mut stats, &mut last).unwrap(),
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
            incoming(&err, &shared, &mut stats, &mut last).unwrap(),
            Incoming::Ignored
        );
        assert_eq!(stats.error_stanzas, 1);
        let junk = message("not a bench body", None);
        assert_eq!(
            incoming(&junk, &shared, &mut stats, &mut last).unwrap(),
            Incoming::Ignored
        );
        let presence = Element::builder("presence", "jabber:client").build();
        assert_eq!(
            incoming(&presence, &shared, &mut stats, &mut last).unwrap(),
            Incoming::Ignored
        );
        assert_eq!(shared.received.load(Ordering::Relaxed), 3);

        let stream_err = Element::builder("error", xmppd_stream::NS_STREAM)
            .append(Element::builder("conflict", xmppd_stream::NS_STREAM_ERRORS).build())
            .build();
        assert!(incoming(&stream_err, &shared, &mut stats, &mut last).is_err());
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
