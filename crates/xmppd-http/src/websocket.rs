//! XMPP over WebSocket (RFC 7395) on [`PATH`]: the opening handshake with the `xmpp`
//! subprotocol and the origin check, then one task per connection that carries the stream
//! between the WebSocket messages ([`crate::framing`]) and the c2s driver
//! ([`xmppd_c2s::StreamHost`]), which negotiates it like any client stream.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use xmppd_c2s::StreamHost;

use crate::framing::{self, Outgoing};
use crate::{full, text, Peer, RequestBody, ResponseBody, Service};

pub const PATH: &str = "/xmpp-websocket";
/// The subprotocol of RFC 7395 §3.1.
const SUBPROTOCOL: &str = "xmpp";
/// Bytes in flight between the WebSocket and the c2s driver, each way.
const PIPE_BYTES: usize = 64 * 1024;
/// What one read from the socket takes in. tungstenite reserves its read buffer up front and
/// keeps it for the connection's life: its default (128 KiB) made a WebSocket session cost
/// five times a direct TLS one. Stanzas are small; a large one is read in several steps.
const READ_BUFFER: usize = 4 * 1024;
/// What one read from the c2s driver takes in, for the messages it holds.
const OUT_CHUNK: usize = 4 * 1024;
/// After the server ended the stream, how long the client has to close the WebSocket.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The WebSocket endpoint.
pub struct WebSocket {
    pub host: StreamHost,
    /// Origins whose pages may connect (lowercase, no final `/`); `*` allows any. A page's own
    /// origin (same scheme and host as the endpoint) and clients that send no `Origin`
    /// (not browsers) are always allowed.
    pub origins: Vec<String>,
    /// The largest message accepted: the largest stanza c2s accepts, and a little for the
    /// namespace each message declares.
    pub max_message_bytes: usize,
}

fn has_token(req: &Request<RequestBody>, name: hyper::header::HeaderName, token: &str) -> bool {
    (req.headers().get_all(name).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[async_trait::async_trait]
impl Service for WebSocket {
    async fn call(&self, mut req: Request<RequestBody>, peer: &Peer) -> Response<ResponseBody> {
        let is_upgrade = req.method() == Method::GET
            && has_token(&req, CONNECTION, "upgrade")
            && has_token(&req, UPGRADE, "websocket");
        if !is_upgrade {
            let mut resp = text(StatusCode::UPGRADE_REQUIRED, "XMPP over WebSocket only");
            (resp.headers_mut()).insert(UPGRADE, HeaderValue::from_static("websocket"));
            return resp;
        }
        if req.headers().get(SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
            let mut resp = text(StatusCode::BAD_REQUEST, "WebSocket version 13 only");
            let headers = resp.headers_mut();
            headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            return resp;
        }
        let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY).cloned() else {
            return text(StatusCode::BAD_REQUEST, "No Sec-WebSocket-Key");
        };
        if !crate::origin_allowed(&req, peer, &self.origins) {
            tracing::info!("WebSocket from a page of an origin not allowed");
            return text(StatusCode::FORBIDDEN, "Origin not allowed");
        }
        // RFC 7395 §3.1: without the subprotocol this is not an XMPP stream.
        if !has_token(&req, SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL) {
            return text(StatusCode::BAD_REQUEST, "The xmpp subprotocol is required");
        }
        let upgrade = hyper::upgrade::on(&mut req);
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .max_message_size(Some(self.max_message_bytes))
            .max_frame_size(Some(self.max_message_bytes));
        let (host, addr) = (self.host.clone(), peer.addr);
        let secure = peer
            .secure
            .then(|| peer.bindings.clone().unwrap_or_default());
        let shutdown = peer.shutdown.clone();
        peer.tasks.spawn(async move {
            let upgraded = match upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => return tracing::debug!(error = %e, "WebSocket upgrade failed"),
            };
            let io = TokioIo::new(upgraded);
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
            carry(ws, host, addr, secure, shutdown).await;
        });
        let mut resp = Response::new(full(""));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = resp.headers_mut();
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        let accept = derive_accept_key(key.as_bytes());
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
        }
        headers.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
        resp
    }
}

/// Carries one stream between the WebSocket and the c2s driver until both sides are done.
async fn carry<S>(
    ws: WebSocketStream<S>,
    host: StreamHost,
    addr: std::net::SocketAddr,
    secure: Option<xmppd_c2s::ChannelBindings>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (driver_side, our_side) = tokio::io::duplex(PIPE_BYTES);
    let (mut from_driver, mut to_driver) = tokio::io::split(our_side);
    let (mut sink, mut messages) = ws.split();
    // Client messages to stream bytes. Binary messages have no place in RFC 7395 (§3.2).
    let inbound = async move {
        while let Some(Ok(message)) = messages.next().await {
            let bytes = match &message {
                Message::Text(t) => framing::incoming(t.as_str()),
                Message::Binary(_) | Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            if to_driver.write_all(&bytes).await.is_err() {
                break;
            }
        }
        // The driver sees the end of its input: the connection is gone.
        let _ = to_driver.shutdown().await;
    };
    // Stream bytes to messages; a WebSocket close once the driver closed its side. What one
    // read of the driver's output holds goes out in one write (one TLS record, one system
    // call), as the c2s driver writes a direct TLS stream, not one write per message.
    let outbound = async move {
        let mut out = Outgoing::default();
        let mut buf = vec![0; OUT_CHUNK];
        loop {
            let n = match from_driver.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let messages = match out.feed(&buf[..n]) {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::error!(error = e.0, "unframeable output on a WebSocket stream");
                    break;
                }
            };
            for message in messages {
                if sink.feed(Message::text(message)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    };
    let pump = async move {
        tokio::pin!(inbound, outbound);
        tokio::select! {
            () = &mut outbound => {
                let _ = tokio::time::timeout(CLOSE_WAIT, inbound).await;
            }
            () = &mut inbound => outbound.await,
        }
    };
    tokio::join!(
        host.serve(
            xmppd_c2s::Carrier::WebSocket,
            driver_side,
            addr,
            secure,
            shutdown
        ),
        pump
    );
}
