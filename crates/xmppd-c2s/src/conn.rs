//! One client connection, from the first byte to the close: the socket's options, the
//! negotiation (`negotiate.rs`), the bound session (`session.rs`), and how the stream ends.
//!
//! Each connection is one task owning its socket, framer and write buffer: no locks on the
//! stanza path. Errors from the peer end the stream with the matching stream error; they never
//! panic.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::Instrument;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use xmppd_stream::{Framer, StreamErrorCondition as Cond};

use crate::session::Bound;
use crate::transport::Transport;
use crate::{ListenerKind, Shared};

/// A peer that does not read what we write for this long is gone.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Writing the final stream error and close_notify to a dying connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// After the close: how long, and how much, unread client input is drained.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;
/// The most one read takes from the transport.
const READ_BUFFER: usize = 4 * 1024;
/// Idle time before the first TCP keepalive probe, then the time between probes.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(120);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// The write buffer is shrunk back after a large stanza so idle sessions stay small.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Serves one accepted connection to its end. What it logs before the session is bound and
/// once it ended is in `span` (the connection's number and, unless hidden, its address). The
/// established session's loop runs outside it: a span is entered and left on every poll, which
/// on the message path cost about a tenth of a message's instructions; what the session logs
/// names its JID instead.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    io: Transport,
    peer: SocketAddr,
    kind: ListenerKind,
    shutdown: watch::Receiver<bool>,
    pending: xmppd_core::pending::PendingGuard,
    span: tracing::Span,
) {
    span.in_scope(|| tracing::debug!(?kind, "connection opened"));
    // One deadline from accept to bound session: TLS, SASL (throttle waits included) and
    // binding, so a client trickling bytes holds its slot no longer than configured.
    let deadline = Instant::now() + shared.settings.handshake_timeout;
    let mut conn = Conn {
        framer: Framer::new(shared.settings.pre_auth_limits),
        io,
        shutdown,
        out: Vec::with_capacity(1024),
    };
    // On the heap, and gone once the session is bound: an idle session keeps only what the
    // established loop needs, not the state of the handshake, SASL and binding.
    let negotiated = Box::pin(
        crate::negotiate::run(&mut conn, &shared, peer, kind, deadline).instrument(span.clone()),
    )
    .await;
    // Logged in (or failing): no longer counts against its address's pending connections.
    drop(pending);
    let stop = match negotiated {
        Ok(n) => {
            let _counted = xmppd_metrics::session_opened(match kind {
                ListenerKind::StartTls => xmppd_metrics::Transport::Tcp,
                ListenerKind::DirectTls => xmppd_metrics::Transport::Tls,
                ListenerKind::Carried(crate::Carrier::WebSocket) => {
                    xmppd_metrics::Transport::WebSocket
                }
                ListenerKind::Carried(crate::Carrier::Bosh) => xmppd_metrics::Transport::Bosh,
            });
            let mut bound = Bound::new(Arc::clone(&shared.server), n.session, n.rx, n.sm);
            let ending = crate::session::run(&mut conn, &shared, &mut bound).await;
            // Unbind (or park) before the final write: a slow close must not leave a dead
            // session routable, nor keep a resuming client waiting.
            Box::pin(bound.end(ending.lost).instrument(span.clone())).await;
            ending.stop
        }
        Err(stop) => stop,
    };
    let reason = stop.describe();
    conn.finish(stop).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(reason, "connection closed"));
}

/// Socket options of an accepted client connection.
pub(crate) fn tune(tcp: &TcpStream) {
    // Stanzas are small and interactive: do not let Nagle hold them back.
    let _ = tcp.set_nodelay(true);
    // A peer that vanished without closing (a phone losing its network) is noticed by the
    // kernel's keepalive probes, so its session ends instead of lingering "online".
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive);
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

thread_local! {
    /// The buffer reads land in before the framer copies them: one per runtime thread rather
    /// than one per connection, since a read only borrows it while it is polled.
    static READ_SCRATCH: RefCell<Box<[u8]>> =
        RefCell::new(vec![0; READ_BUFFER].into_boxed_slice());
}

/// Reads what the transport has into `framer`: the number of bytes, 0 at the end of the
/// stream. With `release`, while the transport has nothing to read the framer releases its
/// buffers ([`Framer::release_idle`]): a connection waiting in negotiation keeps no input
/// buffer of its own. A bound session, which reads often, releases them once it has been
/// quiet a while instead (`session::IDLE_RELEASE`): released at every pause, they were
/// allocated again for every message.
pub(crate) async fn read_into(
    io: &mut Transport,
    framer: &mut Framer,
    release: bool,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| poll_read_into(io, framer, release, cx)).await
}

fn poll_read_into(
    io: &mut Transport,
    framer: &mut Framer,
    release: bool,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    let mut read = |scratch: &mut [u8]| {
        let mut buf = ReadBuf::new(scratch);
        match Pin::new(&mut *io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                framer.feed(buf.filled());
                Poll::Ready(Ok(buf.filled().len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if release {
                    framer.release_idle();
                }
                Poll::Pending
            }
        }
    };
    READ_SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => read(&mut scratch),
        // Not reached (a transport's read does not read another connection), but a nested
        // read would get a buffer of its own rather than a panic.
        Err(_) => read(&mut vec![0; READ_BUFFER]),
    })
}

/// Why a stream ends.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Send this stream error (our header is out), end the stream and close.
    Error(Cond, Option<String>),
    /// The same with the whole `<stream:error/>` given, for an application-specific
    /// condition beside the defined one `Cond` (RFC 6120 §4.9.4).
    Detailed(Cond, Box<minidom::Element>),
    /// End our stream (`</stream:stream>`) and close: the client ended its own.
    End,
    /// Close without writing: the client closed before we opened a stream.
    Close,
    /// The transport is gone (EOF, reset, TLS failure, write timeout): nothing more to send.
    Gone,
}

impl Stop {
    pub(crate) fn err(cond: Cond) -> Stop {
        Stop::Error(cond, None)
    }

    fn describe(&self) -> &'static str {
        match self {
            Stop::Error(cond, _) | Stop::Detailed(cond, _) => cond.as_str(),
            Stop::End | Stop::Close => "closed by client",
            Stop::Gone => "connection lost",
        }
    }
}

/// The byte side of a connection, shared by negotiation and the bound session.
pub(crate) struct Conn {
    pub(crate) io: Transport,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) framer: Framer,
    /// Pending output, written by [`Conn::flush`].
    pub(crate) out: Vec<u8>,
}

impl Conn {
    /// Writes out everything pending, giving up at `until` (or [`WRITE_TIMEOUT`] from now,
    /// whichever comes first).
    pub(crate) async fn flush(&mut self, until: Option<Instant>) -> Result<(), Stop> {
        if self.out.is_empty() {
            return Ok(());
        }
        let mut limit = Instant::now() + WRITE_TIMEOUT;
        if let Some(until) = until {
            limit = limit.min(until);
        }
        let (io, out) = (&mut self.io, &self.out);
        let written = tokio::time::timeout_at(limit, async {
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

    pub(crate) fn clear_out(&mut self) {
        self.out.clear();
        if self.out.capacity() > KEEP_CAPACITY {
            self.out.shrink_to(KEEP_CAPACITY / 4);
        }
    }

    /// Ends the stream as `stop` says and closes the transport.
    async fn finish(&mut self, stop: Stop) {
        match stop {
            Stop::Error(cond, text) => {
                let error = xmppd_stream::stream_error(cond, text.as_deref());
                self.out.extend_from_slice(error.as_bytes());
                self.out.extend_from_slice(b"</stream:stream>");
            }
            Stop::Detailed(_, error) => {
                xmppd_stream::serialize(&error, xmppd_stream::NS_CLIENT, &mut self.out);
                self.out.extend_from_slice(b"</stream:stream>");
            }
            Stop::End => self.out.extend_from_slice(b"</stream:stream>"),
            Stop::Close => {}
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
            let (mut sink, mut budget) = (vec![0; READ_BUFFER], LINGER_BYTES);
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
