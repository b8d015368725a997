//! Links to other servers: resolving, connecting, TLS, authenticating (RFC 6120 §13.8), then
//! writing what the core queued; and the connections that verify a peer's dialback key with
//! its authoritative server (XEP-0220 §2.2).

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use minidom::Element;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use xmppd_core::stanza::{elem, Condition};
use xmppd_negotiation::{NS_SASL, NS_TLS};
use xmppd_stream::{Event, Limits, StreamHeader, NS_SERVER, NS_STREAM};

use crate::dialback::{Verdict, NS_DIALBACK, NS_DIALBACK_FEATURE};
use crate::dns::{self, Target};
use crate::inbound;
use crate::link::{batch, Due, Liveness};
use crate::xml::{header, StreamEnd, XmlConn};
use crate::Inner;

/// XEP-0288: the stream feature, and the request that makes a stream bidirectional.
pub const NS_BIDI_FEATURE: &str = "urn:xmpp:features:bidi";
pub const NS_BIDI: &str = "urn:xmpp:bidi";

type Conn = XmlConn<TlsStream<TcpStream>>;

/// Why a link could not be opened: what its stanzas bounce with (RFC 6120 §8.3.3.16-17).
#[derive(Debug)]
enum DialError {
    NotFound(String),
    Timeout(String),
}

impl DialError {
    fn condition(&self) -> Condition {
        match self {
            DialError::NotFound(_) => Condition::RemoteServerNotFound,
            DialError::Timeout(_) => Condition::RemoteServerTimeout,
        }
    }
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DialError::NotFound(why) | DialError::Timeout(why) => f.write_str(why),
        }
    }
}

/// A stream up to the peer's features after TLS, not authenticated yet.
struct Negotiated {
    conn: Conn,
    features: Element,
    /// The id the peer gave the stream: the dialback key depends on it.
    id: String,
}

/// The task of the link `key` (local domain, remote domain): connects, then writes what
/// comes through `rx` until the link is idle or broken. `permit`: its place among the
/// `max_outbound` connections, handed on to the link that takes over its queue.
pub(crate) async fn run(
    s2s: Arc<Inner>,
    key: (String, String),
    id: u64,
    mut rx: mpsc::Receiver<Element>,
    permit: OwnedSemaphorePermit,
) {
    let permit = Some(permit);
    let (local, remote) = (&key.0, &key.1);
    let keys = std::slice::from_ref(&key);
    let (mut conn, bidi) = match establish(&s2s, local, remote).await {
        Ok(established) => established,
        Err(e) => {
            tracing::warn!(%local, %remote, error = %e, "s2s link failed");
            s2s.failed(&key, e.condition());
            let failure = Some(e.condition());
            s2s.end_link(keys, id, &mut rx, failure, Vec::new(), permit)
                .await;
            return;
        }
    };
    let idle = s2s.settings.idle_timeout;
    let mut used = tokio::time::Instant::now();
    let mut live = Liveness::new(&s2s, local, remote);
    let mut unsent = Vec::new();
    loop {
        tokio::select! {
            next = rx.recv() => {
                let Some(first) = next else { break };
                let (stanzas, bytes) = batch(first, &mut rx);
                if let Err(e) = conn.write(&bytes).await {
                    tracing::info!(%local, %remote, error = %e, "s2s link broken");
                    unsent = crate::link::unsent(stanzas);
                    break;
                }
                live.sent();
                used = tokio::time::Instant::now();
            }
            event = conn.next() => match event {
                Ok(Event::Element(el)) => {
                    live.heard();
                    if !(bidi && inbound::is_stanza(&el)) {
                        tracing::debug!(%local, %remote, name = el.name(), "ignored on an outbound link");
                        continue;
                    }
                    // XEP-0288 §2: the peer sends as the domain this link authenticated it
                    // as (the stream's `to`, or the reverse of the dialback pair).
                    used = tokio::time::Instant::now();
                    if let Err(e) = inbound::accept(&s2s, el, |d| d == remote.as_str()).await {
                        tracing::info!(%local, %remote, error = %e, "s2s link ended");
                        inbound::end(&mut conn, e).await;
                        s2s.end_link(keys, id, &mut rx, None, Vec::new(), permit).await;
                        return;
                    }
                }
                Ok(_) | Err(_) => {
                    tracing::info!(%local, %remote, "s2s link closed by the peer");
                    break;
                }
            },
            due = live.wait() => match due {
                Due::Answered => {}
                Due::Ping(ping) => {
                    if let Err(e) = conn.send(&ping).await {
                        tracing::info!(%local, %remote, error = %e, "s2s link broken");
                        break;
                    }
                }
                Due::Dead => {
                    tracing::info!(%local, %remote, "s2s link did not answer a ping, closing");
                    break;
                }
            },
            _ = tokio::time::sleep_until(used + idle) => {
                tracing::info!(%local, %remote, "s2s link idle, closing");
                break;
            }
        }
    }
    conn.close().await;
    s2s.end_link(keys, id, &mut rx, None, unsent, permit).await;
}

/// Connects and authenticates as `local` to `remote`; true if the link is bidirectional.
async fn establish(s2s: &Arc<Inner>, local: &str, remote: &str) -> Result<(Conn, bool), DialError> {
    let limit = s2s.settings.handshake_timeout;
    let n = connect(s2s, local, remote).await?;
    let authenticated = timeout(limit, authenticate(s2s, local, remote, n)).await;
    let (conn, method, bidi) = match authenticated {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(DialError::Timeout("authentication timed out".into())),
    };
    tracing::info!(%local, %remote, method, bidi, "s2s outbound link authenticated");
    Ok((conn, bidi))
}

/// Every target of `remote` in turn (a configured route, else DNS), every address of each,
/// until one gives a TLS stream. Addresses DNS gives must be public unless
/// `allow_private_addresses` ([`dns::is_public`]); a configured route may name any.
async fn connect(s2s: &Arc<Inner>, local: &str, remote: &str) -> Result<Negotiated, DialError> {
    let routed = s2s.settings.routes.contains_key(remote);
    let private_allowed = routed || s2s.settings.allow_private_addresses;
    let targets = match s2s.settings.routes.get(remote) {
        Some((host, port)) => vec![Target {
            host: host.clone(),
            port: *port,
            direct_tls: false,
        }],
        None => {
            let mut rng = |n: u32| rand::random::<u32>() % (n + 1);
            dns::targets(&*s2s.resolver, remote, &mut rng).await
        }
    };
    let mut last = DialError::NotFound(format!("{remote} offers no server-to-server service"));
    for target in targets {
        let ips = match s2s.resolver.ips(&target.host).await {
            Ok(ips) if !ips.is_empty() => ips,
            Ok(_) | Err(_) => {
                last = DialError::NotFound(format!("{} has no address", target.host));
                continue;
            }
        };
        for ip in ips {
            let addr = SocketAddr::new(ip, target.port);
            if !(private_allowed || dns::is_public(ip)) {
                last = DialError::NotFound(format!(
                    "{}: {addr} is not a public address (allow_private_addresses)",
                    target.host
                ));
                continue;
            }
            let tcp = match timeout(s2s.settings.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => {
                    last = DialError::NotFound(format!("{addr}: {e}"));
                    continue;
                }
                Err(_) => {
                    last = DialError::Timeout(format!("{addr}: connection timed out"));
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let limit = s2s.settings.handshake_timeout;
            match timeout(limit, open(s2s, local, remote, tcp, target.direct_tls)).await {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) => last = DialError::NotFound(format!("{addr}: {e}")),
                Err(_) => last = DialError::Timeout(format!("{addr}: no TLS stream in time")),
            }
        }
    }
    Err(last)
}

/// Opens the stream on `tcp` up to the features after TLS (STARTTLS, or TLS at once).
async fn open(
    s2s: &Inner,
    local: &str,
    remote: &str,
    tcp: TcpStream,
    direct: bool,
) -> Result<Negotiated, StreamEnd> {
    let name = ServerName::try_from(remote.to_owned())
        .map_err(|e| StreamEnd::Io(std::io::Error::other(e)))?;
    let connector =
        (s2s.tls.connector(local, direct)).map_err(|e| StreamEnd::Io(std::io::Error::other(e)))?;
    let tcp = if direct {
        tcp
    } else {
        let mut conn = XmlConn::new(tcp, Limits::PRE_AUTH);
        conn.write(header(local, Some(remote), None).as_bytes())
            .await?;
        read_header(&mut conn).await?;
        let features = conn.element().await?;
        if features.get_child("starttls", NS_TLS).is_none() {
            return Err(refused("the peer offers no STARTTLS"));
        }
        conn.send(&elem("starttls", NS_TLS, &[])).await?;
        let answer = conn.element().await?;
        if !answer.is("proceed", NS_TLS) {
            return Err(refused("STARTTLS refused"));
        }
        conn.into_io()?
    };
    let tls = connector.connect(name, tcp).await?;
    let mut conn = XmlConn::new(tls, Limits::PRE_AUTH);
    conn.write(header(local, Some(remote), None).as_bytes())
        .await?;
    let h = read_header(&mut conn).await?;
    let features = conn.element().await?;
    if !features.is("features", NS_STREAM) {
        return Err(refused("no stream features"));
    }
    let id = h.id.unwrap_or_default();
    Ok(Negotiated { conn, features, id })
}

fn refused(why: &str) -> StreamEnd {
    StreamEnd::error(xmppd_stream::StreamErrorCondition::UndefinedCondition, why)
}

/// The peer's stream header, which must be a server-to-server one.
pub(crate) async fn read_header<S>(conn: &mut XmlConn<S>) -> Result<StreamHeader, StreamEnd>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match conn.next().await? {
        Event::Header(h) if h.default_ns.as_deref() == Some(NS_SERVER) => Ok(h),
        Event::Header(_) => Err(StreamEnd::error(
            xmppd_stream::StreamErrorCondition::InvalidNamespace,
            "not a server-to-server stream",
        )),
        _ => Err(StreamEnd::Closed),
    }
}

/// SASL EXTERNAL when the peer offers it (it found our certificate valid), else dialback;
/// a peer whose own certificate is not valid only where dialback is allowed. Before either,
/// the stream is made bidirectional if both sides support it (XEP-0288 §2).
async fn authenticate(
    s2s: &Inner,
    local: &str,
    remote: &str,
    n: Negotiated,
) -> Result<(Conn, &'static str, bool), DialError> {
    let Negotiated {
        mut conn,
        features,
        id,
    } = n;
    let chain = conn
        .io()
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or(&[])
        .to_vec();
    if let Err(why) = s2s.tls.check(&chain, remote) {
        if !s2s.dialback_allowed() {
            let why = format!("the certificate of {remote} is not valid: {why}");
            return Err(DialError::NotFound(why));
        }
        tracing::info!(%local, %remote, why, "peer certificate not valid; dialback allowed");
    }
    let external = features.get_child("mechanisms", NS_SASL).is_some_and(|m| {
        m.children()
            .any(|c| c.name() == "mechanism" && c.text() == "EXTERNAL")
    });
    let io = |e: StreamEnd| DialError::NotFound(e.to_string());
    let bidi = s2s.settings.bidi && features.get_child("bidi", NS_BIDI_FEATURE).is_some();
    if bidi {
        conn.send(&elem("bidi", NS_BIDI, &[])).await.map_err(io)?;
    }
    if external {
        let authzid = base64::engine::general_purpose::STANDARD.encode(local);
        let mut auth = elem("auth", NS_SASL, &[("mechanism", "EXTERNAL")]);
        auth.append_text_node(authzid);
        conn.send(&auth).await.map_err(io)?;
        let answer = conn.element().await.map_err(io)?;
        if answer.is("success", NS_SASL) {
            conn.restart();
            conn.write(header(local, Some(remote), None).as_bytes())
                .await
                .map_err(io)?;
            read_header(&mut conn).await.map_err(io)?;
            conn.element().await.map_err(io)?;
            conn.set_limits(s2s.settings.limits);
            return Ok((conn, "EXTERNAL", bidi));
        }
        tracing::info!(%local, %remote, "SASL EXTERNAL failed");
    }
    let dialback = features
        .get_child("dialback", NS_DIALBACK_FEATURE)
        .is_some();
    if !(dialback && s2s.settings.dialback) {
        return Err(DialError::NotFound(format!(
            "{remote} accepts neither our certificate nor, here, dialback"
        )));
    }
    let key = s2s.secret.key(remote, local, &id);
    let mut result = elem("result", NS_DIALBACK, &[("from", local), ("to", remote)]);
    result.append_text_node(key);
    conn.send(&result).await.map_err(io)?;
    loop {
        let answer = conn.element().await.map_err(io)?;
        if !answer.is("result", NS_DIALBACK) {
            continue;
        }
        return match answer.attr("type") {
            Some("valid") => {
                conn.set_limits(s2s.settings.limits);
                Ok((conn, "dialback", bidi))
            }
            // XEP-0220 §2.4: not about our key; queued stanzas bounce as timed out.
            Some("error") => Err(DialError::Timeout(format!(
                "{remote} could not check our dialback: {}",
                crate::dialback::error_condition(&answer)
            ))),
            other => Err(DialError::NotFound(format!(
                "{remote} refused our dialback ({other:?})"
            ))),
        };
    }
}

/// XEP-0220 §2.2: asks the authoritative server of `remote` whether `key` is the one it gave
/// for the stream `id` it opened to `local`. A separate connection, closed afterwards, counted
/// among the `max_outbound` connections (a peer decides which domains are asked). What goes
/// wrong on the way is a dialback error (§2.4): `<remote-server-not-found/>` when the server
/// cannot be reached or answers with an error, `<remote-server-timeout/>` when the connection
/// times out or breaks, `<resource-constraint/>` when too many connections are open.
pub(crate) async fn verify(
    s2s: &Arc<Inner>,
    local: &str,
    remote: &str,
    id: &str,
    key: &str,
) -> Verdict {
    let Ok(_permit) = Arc::clone(&s2s.outbound).try_acquire_owned() else {
        tracing::warn!(%local, %remote, "s2s max_outbound reached: dialback not verified");
        return Verdict::Error(Condition::ResourceConstraint);
    };
    let broken = |e: StreamEnd| (Condition::RemoteServerTimeout, e.to_string());
    let ask = async {
        let Negotiated { mut conn, .. } = connect(s2s, local, remote)
            .await
            .map_err(|e| (e.condition(), e.to_string()))?;
        let mut verify = elem(
            "verify",
            NS_DIALBACK,
            &[("from", local), ("to", remote), ("id", id)],
        );
        verify.append_text_node(key);
        conn.send(&verify).await.map_err(broken)?;
        loop {
            let answer = conn.element().await.map_err(broken)?;
            if answer.is("verify", NS_DIALBACK) && answer.attr("id") == Some(id) {
                conn.close().await;
                return Ok(match answer.attr("type") {
                    Some("valid") => Verdict::Valid,
                    Some("error") => Verdict::Error(Condition::RemoteServerNotFound),
                    _ => Verdict::Invalid,
                });
            }
        }
    };
    match timeout(s2s.settings.handshake_timeout * 2, ask).await {
        Ok(Ok(verdict)) => verdict,
        Ok(Err((cond, why))) => {
            tracing::info!(%local, %remote, why, "dialback verification failed");
            Verdict::Error(cond)
        }
        Err(_) => {
            tracing::info!(%local, %remote, "dialback verification timed out");
            Verdict::Error(Condition::RemoteServerTimeout)
        }
    }
}
