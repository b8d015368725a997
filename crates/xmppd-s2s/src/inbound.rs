//! Streams other servers open to this one: STARTTLS (or TLS at once, XEP-0368), then SASL
//! EXTERNAL (XEP-0178) or dialback (XEP-0220), then stanzas, each checked against what the
//! peer authenticated as (RFC 6120 §13.10: `from` in its domains, `to` in ours) before the
//! core routes it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use minidom::Element;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::timeout;
use xmppd_core::address::Bare;
use xmppd_core::pending::PendingGuard;
use xmppd_core::stanza::{elem, error_reply, Condition, StanzaError};
use xmppd_negotiation::{NS_SASL, NS_TLS};
use xmppd_stream::{Event, Limits, StreamErrorCondition as Sec, NS_CLIENT, NS_SERVER, NS_STREAM};

use crate::dialback::{self, Verdict, NS_DIALBACK, NS_DIALBACK_FEATURE};
use crate::link::{batch, unsent, Due, Liveness};
use crate::outbound::{verify, NS_BIDI, NS_BIDI_FEATURE};
use crate::xml::{header, renamespace, stream_id, StreamEnd, XmlConn};
use crate::Inner;

/// Binds every listener and spawns its accept loop.
pub(crate) async fn listen(s2s: &Arc<Inner>) -> std::io::Result<Vec<(bool, SocketAddr)>> {
    let mut bound = Vec::new();
    let all = (s2s.settings.listen.iter().map(|a| (false, *a)))
        .chain(s2s.settings.direct_tls_listen.iter().map(|a| (true, *a)));
    for (direct, addr) in all {
        let listener = TcpListener::bind(addr).await?;
        bound.push((direct, listener.local_addr()?));
        let s2s = Arc::clone(s2s);
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((tcp, peer)) => {
                        // Refused at once, before TLS costs anything, as on client listeners:
                        // the connection is closed unread.
                        let Ok(permit) = Arc::clone(&s2s.inbound).try_acquire_owned() else {
                            tracing::warn!(%peer, "s2s max_inbound reached: closing a new connection");
                            continue;
                        };
                        let Some(pending) = s2s.pending.try_acquire(peer.ip()) else {
                            tracing::warn!(%peer, "s2s max_pending_per_ip reached: closing a new connection");
                            continue;
                        };
                        let _ = tcp.set_nodelay(true);
                        let s2s = Arc::clone(&s2s);
                        tokio::spawn(serve(s2s, tcp, direct, peer, permit, pending));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "s2s accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    Ok(bound)
}

/// One inbound connection; `_permit` holds its place among `max_inbound`, `pending` among
/// the connections of its address not authenticated yet (given back once it is).
async fn serve(
    s2s: Arc<Inner>,
    tcp: TcpStream,
    direct: bool,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
    pending: PendingGuard,
) {
    let limit = s2s.settings.handshake_timeout;
    let tls = if direct {
        match timeout(limit, s2s.tls.acceptor(true).accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            _ => return,
        }
    } else {
        let mut conn = XmlConn::new(tcp, Limits::PRE_AUTH);
        match timeout(limit, starttls(&s2s, &mut conn)).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return,
            Ok(Err(e)) => return end(&mut conn, e).await,
            Err(_) => return end(&mut conn, StreamEnd::Timeout).await,
        }
        let Ok(tcp) = conn.into_io() else { return };
        match timeout(limit, s2s.tls.acceptor(false).accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            _ => return,
        }
    };
    let chain = tls.get_ref().1.peer_certificates().unwrap_or(&[]).to_vec();
    let mut conn = XmlConn::new(tls, Limits::PRE_AUTH);
    let mut stream = Stream {
        s2s: &s2s,
        chain,
        authenticated: HashSet::new(),
        sasl: None,
        authenticate_by: tokio::time::Instant::now() + s2s.settings.handshake_timeout,
        bidi: false,
        reverse: None,
        pairs: Vec::new(),
        pending: Some(pending),
    };
    if let Err(e) = stream.run(&mut conn).await {
        tracing::info!(%peer, error = %e, "s2s inbound stream ended");
        end(&mut conn, e).await;
    }
    if let Some(mut reverse) = stream.reverse.take() {
        let unsent = std::mem::take(&mut reverse.unsent);
        s2s.end_link(
            &reverse.pairs,
            reverse.id,
            &mut reverse.rx,
            None,
            unsent,
            None,
        )
        .await;
    }
}

pub(crate) async fn end<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut XmlConn<S>, e: StreamEnd) {
    match e {
        StreamEnd::Error(cond, why) => conn.fail(cond, Some(&why)).await,
        StreamEnd::Framing(f) => conn.fail(f.condition(), None).await,
        StreamEnd::Timeout => conn.fail(Sec::ConnectionTimeout, None).await,
        StreamEnd::Closed => conn.close().await,
        StreamEnd::Io(_) => {}
    }
}

/// The stream before TLS: only STARTTLS is offered (TLS is required, RFC 7590), and dialback
/// verifications are answered. True once `<proceed/>` was sent.
async fn starttls(s2s: &Inner, conn: &mut XmlConn<TcpStream>) -> Result<bool, StreamEnd> {
    open(s2s, conn).await?;
    let mut features = elem("features", NS_STREAM, &[]);
    let mut tls = elem("starttls", NS_TLS, &[]);
    tls.append_child(elem("required", NS_TLS, &[]));
    features.append_child(tls);
    conn.send(&features).await?;
    loop {
        let el = conn.element().await?;
        if el.is("starttls", NS_TLS) {
            conn.send(&elem("proceed", NS_TLS, &[])).await?;
            return Ok(true);
        }
        if el.is("verify", NS_DIALBACK) {
            conn.send(&answer_verify(s2s, &el)).await?;
            continue;
        }
        return Err(StreamEnd::error(Sec::PolicyViolation, "TLS is required"));
    }
}

/// Reads the peer's header and answers with ours: the stream's local domain (its `to`, one
/// served here) and the peer's claimed domain (its `from`, if given).
async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    s2s: &Inner,
    conn: &mut XmlConn<S>,
) -> Result<(String, Option<String>, String), StreamEnd> {
    let h = match conn.next().await? {
        Event::Header(h) => h,
        _ => return Err(StreamEnd::Closed),
    };
    let to = h.to.as_deref().unwrap_or("").to_ascii_lowercase();
    let from = h.from.as_deref().map(str::to_ascii_lowercase);
    let id = stream_id();
    // Our header first, so that the error below is read as part of a stream (RFC 6120 §4.9.1.1).
    let ours = to.as_str();
    conn.write(
        header(
            if ours.is_empty() { "invalid" } else { ours },
            from.as_deref(),
            Some(&id),
        )
        .as_bytes(),
    )
    .await?;
    if h.default_ns.as_deref() != Some(NS_SERVER) {
        return Err(StreamEnd::error(
            Sec::InvalidNamespace,
            "expected jabber:server",
        ));
    }
    if !s2s.serves(&to) {
        return Err(StreamEnd::error(
            Sec::HostUnknown,
            format!("{to} is not served here"),
        ));
    }
    if let Some(from) = &from {
        if !s2s.allowed(from) {
            return Err(StreamEnd::error(
                Sec::PolicyViolation,
                format!("{from} may not federate"),
            ));
        }
    }
    Ok((to, from, id))
}

/// One inbound TLS stream (and its restart after SASL).
struct Stream<'a> {
    s2s: &'a Arc<Inner>,
    chain: Vec<CertificateDer<'static>>,
    /// The remote domains this stream authenticated (several with dialback piggybacking).
    authenticated: HashSet<String>,
    /// The domain SASL EXTERNAL authenticated; the stream restarts once then.
    sasl: Option<String>,
    /// One deadline for the whole handshake, as on client streams: a peer that keeps sending
    /// (verify requests, failing authentications) without authenticating is still dropped.
    authenticate_by: tokio::time::Instant,
    /// The peer asked for a bidirectional stream (XEP-0288).
    bidi: bool,
    /// Once bidirectional and authenticated: this server's stanzas for the peer.
    reverse: Option<Reverse>,
    /// The (local, remote) domain pairs the peer authenticated.
    pairs: Vec<(String, String)>,
    /// Counted among its address's connections not authenticated yet, until it is.
    pending: Option<PendingGuard>,
}

/// An inbound stream's other direction (XEP-0288): the link this server's stanzas for the
/// peer's authenticated domain pairs go on.
struct Reverse {
    id: u64,
    tx: mpsc::Sender<Element>,
    rx: mpsc::Receiver<Element>,
    /// The pairs adopted: those no other link already served.
    pairs: Vec<(String, String)>,
    live: Liveness,
    /// A batch whose write failed, bounced when the stream ends.
    unsent: Vec<Element>,
}

impl Stream<'_> {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut XmlConn<S>,
    ) -> Result<(), StreamEnd> {
        let s2s = self.s2s;
        loop {
            let opened = match self.authenticated.is_empty() && self.sasl.is_none() {
                true => tokio::time::timeout_at(self.authenticate_by, open(s2s, conn)).await,
                false => timeout(s2s.settings.handshake_timeout, open(s2s, conn)).await,
            };
            let (local, from, id) = opened.map_err(|_| StreamEnd::Timeout)??;
            let mut features = elem("features", NS_STREAM, &[]);
            if self.sasl.is_none() {
                let valid = from
                    .as_deref()
                    .is_some_and(|d| s2s.tls.check(&self.chain, d).is_ok());
                if valid {
                    let mut mechanisms = elem("mechanisms", NS_SASL, &[]);
                    let mut m = elem("mechanism", NS_SASL, &[]);
                    m.append_text_node("EXTERNAL");
                    mechanisms.append_child(m);
                    features.append_child(mechanisms);
                }
                // Offered where it can succeed: allowed, or vouched for by the certificate.
                if s2s.dialback_allowed() || valid {
                    let mut dialback = elem("dialback", NS_DIALBACK_FEATURE, &[]);
                    dialback.append_child(elem("errors", NS_DIALBACK_FEATURE, &[]));
                    features.append_child(dialback);
                }
                // XEP-0288 §2.1: with authentication, so that the peer asks before it.
                if s2s.settings.bidi {
                    features.append_child(elem("bidi", NS_BIDI_FEATURE, &[]));
                }
            }
            conn.send(&features).await?;
            if !self.elements(conn, &local, from.as_deref(), &id).await? {
                return Ok(());
            }
        }
    }

    /// The elements of one stream; true when it restarts (after SASL success).
    async fn elements<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut XmlConn<S>,
        local: &str,
        from: Option<&str>,
        stream_id: &str,
    ) -> Result<bool, StreamEnd> {
        let s2s = self.s2s;
        let mut used = tokio::time::Instant::now();
        loop {
            let el = match self.next(conn, &mut used).await {
                Ok(Event::Element(el)) => el,
                Ok(Event::Close) | Err(StreamEnd::Closed) => {
                    conn.close().await;
                    return Ok(false);
                }
                Ok(Event::Header(_)) => {
                    return Err(StreamEnd::error(Sec::InvalidXml, "unexpected header"))
                }
                Err(e) => return Err(e),
            };
            if el.is("auth", NS_SASL) {
                if self.external(conn, &el, from).await? {
                    let domain = self.sasl.clone().unwrap_or_default();
                    self.authenticated_pair(local, &domain);
                    conn.restart();
                    // Authenticated: the stanza limits of an established stream, as dialback
                    // sets them.
                    conn.set_limits(s2s.settings.limits);
                    return Ok(true);
                }
            } else if el.is("result", NS_DIALBACK) {
                self.dialback(conn, &el, stream_id).await?;
            } else if el.is("verify", NS_DIALBACK) {
                conn.send(&answer_verify(s2s, &el)).await?;
            } else if el.is("bidi", NS_BIDI) && s2s.settings.bidi {
                // XEP-0288 §2.2: nothing is answered; what the peer authenticates from now
                // on (and before, if it asked late) may carry our stanzas back.
                self.bidi = true;
                for (local, remote) in self.pairs.clone() {
                    self.authenticated_pair(&local, &remote);
                }
            } else if is_stanza(&el) {
                if self.authenticated.is_empty() {
                    return Err(StreamEnd::error(Sec::NotAuthorized, "not authenticated"));
                }
                used = tokio::time::Instant::now();
                let authenticated = &self.authenticated;
                accept(s2s, el, |d| authenticated.contains(d)).await?;
            } else {
                return Err(StreamEnd::error(
                    Sec::UnsupportedStanzaType,
                    el.name().to_owned(),
                ));
            }
        }
    }

    /// XEP-0178: the peer's certificate names the domain it authenticates as.
    async fn external<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut XmlConn<S>,
        auth: &Element,
        from: Option<&str>,
    ) -> Result<bool, StreamEnd> {
        let failure = |cond: &str| {
            let mut f = elem("failure", NS_SASL, &[]);
            f.append_child(elem(cond, NS_SASL, &[]));
            f
        };
        if self.sasl.is_some() || auth.attr("mechanism") != Some("EXTERNAL") {
            conn.send(&failure("invalid-mechanism")).await?;
            return Ok(false);
        }
        let text = auth.text();
        let authzid = match text.trim() {
            "" | "=" => from.map(str::to_owned),
            b64 => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .map(|s| s.to_ascii_lowercase()),
        };
        let Some(domain) = authzid else {
            conn.send(&failure("invalid-authzid")).await?;
            return Ok(false);
        };
        if from.is_some_and(|f| f != domain) {
            conn.send(&failure("invalid-authzid")).await?;
            return Ok(false);
        }
        if !self.s2s.allowed(&domain) || self.s2s.tls.check(&self.chain, &domain).is_err() {
            conn.send(&failure("not-authorized")).await?;
            return Ok(false);
        }
        conn.send(&elem("success", NS_SASL, &[])).await?;
        tracing::info!(remote = %domain, method = "EXTERNAL", "s2s inbound stream authenticated");
        self.authenticated.insert(domain.clone());
        self.sasl = Some(domain);
        self.pending = None;
        Ok(true)
    }

    /// XEP-0220 §2.1-2.4: a `<db:result/>` asking to send as `from` to `to`. A key the
    /// authoritative server calls invalid ends the stream (§2.2.1: a spoofing attempt); a
    /// request that cannot be granted for another reason gets a dialback error (§2.4, as the
    /// `<errors/>` in our features promises), and the stream goes on with the domains it
    /// authenticated: `<item-not-found/>` for a `to` not served here, `<policy-violation/>`
    /// for a domain refused by `allow`/`deny`, `<resource-constraint/>` beyond
    /// `max_domains_per_stream`, `<not-authorized/>` for a certificate not valid where
    /// dialback is not allowed, and what kept the authoritative server from answering.
    async fn dialback<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut XmlConn<S>,
        el: &Element,
        stream_id: &str,
    ) -> Result<(), StreamEnd> {
        let s2s = self.s2s;
        let remote = el.attr("from").unwrap_or("").to_ascii_lowercase();
        let to = el.attr("to").unwrap_or("").to_ascii_lowercase();
        let answer = |kind: &str| {
            elem(
                "result",
                NS_DIALBACK,
                &[("from", &to), ("to", &remote), ("type", kind)],
            )
        };
        let max = s2s.settings.max_domains_per_stream;
        let refusal = if !s2s.serves(&to) {
            Some(StanzaError::with_text(
                Condition::ItemNotFound,
                format!("{to} is not served here"),
            ))
        } else if remote.is_empty() || !s2s.allowed(&remote) {
            Some(StanzaError::with_text(
                Condition::PolicyViolation,
                format!("{remote} may not federate"),
            ))
        } else if !self.authenticated.contains(&remote) && self.authenticated.len() >= max {
            Some(StanzaError::with_text(
                Condition::ResourceConstraint,
                format!("at most {max} domains on one stream"),
            ))
        } else {
            None
        };
        if let Some(err) = refusal {
            tracing::info!(%remote, %to, error = err.condition.as_str(), "dialback refused");
            conn.send(&dialback::error("result", &to, &remote, None, &err))
                .await?;
            return Ok(());
        }
        // A certificate valid for the domain proves it already (XEP-0344 §2.4).
        let verdict = if s2s.tls.check(&self.chain, &remote).is_ok() {
            Verdict::Valid
        } else if s2s.dialback_allowed() {
            verify(s2s, &to, &remote, stream_id, el.text().trim()).await
        } else {
            tracing::info!(%remote, "dialback refused: its certificate is not valid");
            Verdict::Error(Condition::NotAuthorized)
        };
        match verdict {
            Verdict::Valid => {}
            Verdict::Invalid => {
                tracing::info!(%remote, %to, "dialback key invalid");
                conn.send(&answer("invalid")).await?;
                return Err(StreamEnd::error(Sec::NotAuthorized, "dialback failed"));
            }
            Verdict::Error(cond) => {
                let err = StanzaError::new(cond);
                conn.send(&dialback::error("result", &to, &remote, None, &err))
                    .await?;
                return Ok(());
            }
        }
        conn.send(&answer("valid")).await?;
        tracing::info!(%remote, method = "dialback", "s2s inbound stream authenticated");
        self.authenticated_pair(&to, &remote);
        self.authenticated.insert(remote);
        self.pending = None;
        conn.set_limits(s2s.settings.limits);
        Ok(())
    }

    /// The peer authenticated as `remote` to `local`; on a bidirectional stream, the pair's
    /// stanzas from here go back over it (XEP-0288 §2.2: with SASL the stream's `to` and the
    /// authenticated domain, with dialback each pair that passed).
    fn authenticated_pair(&mut self, local: &str, remote: &str) {
        let pair = (local.to_owned(), remote.to_owned());
        if !self.pairs.contains(&pair) {
            self.pairs.push(pair.clone());
        }
        if !self.bidi {
            return;
        }
        let s2s = self.s2s;
        let reverse = self.reverse.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(s2s.settings.queue_max.max(1));
            Reverse {
                id: s2s.link_id(),
                tx,
                rx,
                pairs: Vec::new(),
                live: Liveness::new(s2s, local, remote),
                unsent: Vec::new(),
            }
        });
        if !reverse.pairs.contains(&pair) && s2s.adopt(&pair, reverse.id, &reverse.tx) {
            tracing::info!(%local, %remote, direction = "inbound", "s2s link bidirectional");
            reverse.pairs.push(pair);
        }
    }

    /// The next event of the stream: before authentication, by the handshake's deadline;
    /// after, within twice `idle_timeout` of `used`, the last stanza either way (the peer
    /// closes its idle link first). Meanwhile, on a bidirectional stream, what the core
    /// queued for the peer is written and the peer pinged when silent.
    async fn next<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut XmlConn<S>,
        used: &mut tokio::time::Instant,
    ) -> Result<Event, StreamEnd> {
        loop {
            let deadline = match self.authenticated.is_empty() {
                true => self.authenticate_by,
                false => *used + self.s2s.settings.idle_timeout * 2,
            };
            let Some(reverse) = self.reverse.as_mut() else {
                return match tokio::time::timeout_at(deadline, conn.next()).await {
                    Ok(event) => event,
                    Err(_) => Err(StreamEnd::Timeout),
                };
            };
            tokio::select! {
                event = conn.next() => {
                    reverse.live.heard();
                    return event;
                }
                Some(first) = reverse.rx.recv() => {
                    let (stanzas, bytes) = batch(first, &mut reverse.rx);
                    if let Err(e) = conn.write(&bytes).await {
                        reverse.unsent = unsent(stanzas);
                        return Err(e);
                    }
                    reverse.live.sent();
                    *used = tokio::time::Instant::now();
                }
                due = reverse.live.wait() => match due {
                    Due::Answered => {}
                    Due::Ping(ping) => conn.send(&ping).await?,
                    Due::Dead => {
                        return Err(StreamEnd::error(
                            Sec::ConnectionTimeout,
                            "no answer to a ping",
                        ))
                    }
                },
                _ = tokio::time::sleep_until(deadline) => return Err(StreamEnd::Timeout),
            }
        }
    }
}

/// A stanza of a server-to-server stream (RFC 6120 §4.8.3).
pub(crate) fn is_stanza(el: &Element) -> bool {
    matches!(el.name(), "message" | "presence" | "iq") && el.has_ns(NS_SERVER)
}

/// RFC 6120 §13.10 and §8.1.2.1: a stanza from one of the peer's `authenticated` domains
/// to one of ours, handed to the core as `jabber:client` (or, the answer to a ping of one of
/// our links, to that link).
pub(crate) async fn accept(
    s2s: &Arc<Inner>,
    el: Element,
    authenticated: impl Fn(&str) -> bool,
) -> Result<(), StreamEnd> {
    let (Some(from), Some(to)) = (el.attr("from"), el.attr("to")) else {
        return Err(StreamEnd::error(
            Sec::ImproperAddressing,
            "stanza without from or to",
        ));
    };
    let (Ok(from), Ok(to)) = (
        xmppd_core::address::parse_jid(from),
        xmppd_core::address::parse_jid(to),
    ) else {
        return Err(StreamEnd::error(
            Sec::ImproperAddressing,
            "malformed address",
        ));
    };
    if !authenticated(from.domain().as_str()) {
        return Err(StreamEnd::error(
            Sec::InvalidFrom,
            format!(
                "{} is not a domain this stream authenticated",
                from.domain()
            ),
        ));
    }
    if !s2s.serves(to.domain().as_str()) {
        return Err(StreamEnd::error(
            Sec::HostUnknown,
            format!("{} is not served here", to.domain()),
        ));
    }
    if s2s.pings.answered(from.domain().as_str(), &el) {
        return Ok(());
    }
    let delay = s2s.limiter.delay(from.domain().as_str(), Instant::now());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let Some(server) = s2s.server() else {
        return Ok(());
    };
    let mut el = renamespace(el, NS_SERVER, NS_CLIENT);
    xmppd_core::stanza::set_attr(&mut el, "from", from.as_str());
    xmppd_core::stanza::set_attr(&mut el, "to", to.as_str());
    if s2s.settings.refuse_strangers && from_stranger(&server, &el, &from, &to).await {
        let err = StanzaError::new(Condition::ServiceUnavailable);
        if let Some(reply) = error_reply(&el, &err) {
            server.dispatch(reply).await;
        }
        return Ok(());
    }
    server.dispatch(el).await;
    Ok(())
}

/// A message to a local account from someone its roster does not list.
async fn from_stranger(
    server: &Arc<xmppd_core::Server>,
    el: &Element,
    from: &jid::Jid,
    to: &jid::Jid,
) -> bool {
    if el.name() != "message"
        || matches!(el.attr("type"), Some("groupchat" | "error"))
        || to.node().is_none()
        || !server.is_local_host(to.domain().as_str())
    {
        return false;
    }
    let user = xmppd_core::user_ref(&to.bare());
    let contact = from.bare();
    !matches!(
        server.store().roster_item(&user, contact.as_str()).await,
        Ok(Some(_))
    )
}

/// The authoritative side of dialback (XEP-0220 §2.3): whether this server gave `key` for
/// the stream `id` it opened from `to` to `from`; a dialback error `<item-not-found/>` for a
/// `to` not served here (§2.2.2).
fn answer_verify(s2s: &Inner, el: &Element) -> Element {
    let (from, to, id) = (
        el.attr("from").unwrap_or(""),
        el.attr("to").unwrap_or(""),
        el.attr("id").unwrap_or(""),
    );
    if !s2s.serves(to) {
        let err = StanzaError::new(Condition::ItemNotFound);
        return dialback::error("verify", to, from, Some(id), &err);
    }
    let valid = s2s.secret.verify(from, to, id, el.text().trim());
    let kind = if valid { "valid" } else { "invalid" };
    elem(
        "verify",
        NS_DIALBACK,
        &[("from", to), ("to", from), ("id", id), ("type", kind)],
    )
}
