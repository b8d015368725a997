//! The byte stream under an XML stream: TCP until STARTTLS, TLS after, and the move from one
//! to the other with its channel-binding data; or the bytes of a stream carried by another
//! protocol (XMPP over WebSocket), translated by that protocol's crate.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use xmppd_sasl::ChannelBindings;

use crate::tls::Tls;

/// A byte stream handed over by another protocol's server (see [`crate::StreamHost`]).
pub trait CarriedIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> CarriedIo for T {}

pub(crate) enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// A stream carried by another protocol; when it counts as secure, the channel-binding
    /// data of the TLS below it (empty behind a TLS-terminating proxy) until negotiation
    /// takes it.
    Carried {
        io: Box<dyn CarriedIo>,
        secure: bool,
        bindings: Option<ChannelBindings>,
    },
    /// Only while the TCP stream is moved into the TLS handshake.
    Detached,
}

impl Transport {
    /// Whether the stream is secured below XMPP (for the session's record).
    pub(crate) fn is_secure(&self) -> bool {
        match self {
            Transport::Tls(_) => true,
            Transport::Carried { secure, .. } => *secure,
            Transport::Plain(_) | Transport::Detached => false,
        }
    }

    /// Whether bytes that writes accepted are still held above the socket: TLS records not yet
    /// taken by the kernel, which never reach the peer if the connection ends now. A carried
    /// stream's own buffers are not seen (it answers false).
    pub(crate) fn holds_unsent(&self) -> bool {
        match self {
            Transport::Tls(s) => s.get_ref().1.wants_write(),
            Transport::Plain(_) | Transport::Carried { .. } | Transport::Detached => false,
        }
    }

    /// Drops what [`Transport::holds_unsent`] reports: those bytes never reach the peer, and
    /// the stream must not be written to again (the peer would see a record cut short).
    pub(crate) fn discard_unsent(&mut self) {
        if let Transport::Tls(s) = self {
            let conn = s.get_mut().1;
            while conn.wants_write() {
                if conn.write_tls(&mut std::io::sink()).is_err() {
                    break;
                }
            }
        }
    }

    /// For a carried stream that is secure: its channel-binding data, once (the machine's
    /// TLS step is then already done below it).
    pub(crate) fn take_carried_tls(&mut self) -> Option<ChannelBindings> {
        match self {
            Transport::Carried { bindings, .. } => bindings.take(),
            _ => None,
        }
    }

    /// Moves the TCP stream under TLS, by `deadline`; returns the channel-binding data.
    /// `None`: the handshake failed or timed out, or TLS was already up; the transport is then
    /// unusable.
    pub(crate) async fn start_tls(
        &mut self,
        tls: &Tls,
        acceptor: tokio_rustls::TlsAcceptor,
        deadline: Instant,
    ) -> Option<ChannelBindings> {
        let Transport::Plain(tcp) = std::mem::replace(self, Transport::Detached) else {
            return None;
        };
        match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                let conn = stream.get_ref().1;
                if conn.alpn_protocol() == Some(crate::tls::ALPN_ACME_TLS) {
                    // RFC 8737 §3: a validation ends with its handshake.
                    tracing::debug!("ACME tls-alpn-01 validation answered");
                    return None;
                }
                let bindings = tls.channel_bindings(conn);
                tracing::debug!(
                    version = ?conn.protocol_version(),
                    sni = ?conn.server_name(),
                    alpn = ?conn.alpn_protocol().map(String::from_utf8_lossy),
                    "TLS established"
                );
                *self = Transport::Tls(Box::new(stream));
                Some(bindings)
            }
            Ok(Err(e)) => {
                tracing::info!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::info!("TLS handshake timed out");
                None
            }
        }
    }
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
            Transport::Carried { io, .. } => Pin::new(io.as_mut()).poll_read(cx, buf),
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
            Transport::Carried { io, .. } => Pin::new(io.as_mut()).poll_write(cx, buf),
            Transport::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Carried { io, .. } => Pin::new(io.as_mut()).poll_flush(cx),
            Transport::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Carried { io, .. } => Pin::new(io.as_mut()).poll_shutdown(cx),
            Transport::Detached => Poll::Ready(Err(detached())),
        }
    }
}
