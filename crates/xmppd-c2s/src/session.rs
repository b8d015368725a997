//! A bound client session: stanzas read from the socket go to the core, through the shaper;
//! what the core queues for the session is written in batches; a session told to close gets
//! what was queued before, then its stream error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use minidom::Element;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use xmppd_core::{Class, ClientSession, Outbound, QueueReceiver, Server};
use xmppd_stream::{Event, StreamErrorCondition as Cond, NS_CLIENT};

use crate::conn::{shutdown_requested, Conn, Stop, WRITE_TIMEOUT};
use crate::shaper::Shaper;
use crate::Shared;

/// Once a session is told to close, how long what was queued before may take to be written;
/// what is not out by then is re-routed (a peer that does not read must not hold it).
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How much queued output is batched into one write.
const BATCH_BYTES: usize = 64 * 1024;

/// A bound session that is unbound however the connection ends, also when the task is
/// aborted or panics.
pub(crate) struct Bound {
    server: Arc<Server>,
    session: Option<ClientSession>,
}

impl Bound {
    pub(crate) fn new(server: Arc<Server>, session: ClientSession) -> Self {
        Bound {
            server,
            session: Some(session),
        }
    }

    pub(crate) async fn unbind(mut self) {
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

/// What the established loop woke up for.
enum Wake {
    Outbound((Outbound, Class)),
    Read(std::io::Result<usize>),
    /// The shaper lets the connection read again.
    Resume,
    Shutdown,
}

/// The bound session: socket to core, queue to socket, until one side ends it. The bind
/// result is still in `conn.out`.
pub(crate) async fn run(
    conn: &mut Conn,
    shared: &Shared,
    bound: &mut Bound,
    rx: QueueReceiver,
) -> Stop {
    conn.established(shared, bound, rx).await
}

impl Conn {
    async fn established(&mut self, shared: &Shared, bound: &mut Bound, rx: QueueReceiver) -> Stop {
        let Some(session) = bound.session.as_mut() else {
            return Stop::Gone;
        };
        if let Err(stop) = self.flush(None).await {
            return stop;
        }
        let server = Arc::clone(&shared.server);
        let mut shaper = Shaper::new(shared.settings.shaper, Instant::now());
        // The waits that outlive one pass of the loop are set up once: set up anew on each
        // pass, each registers and deregisters its waiter for every stanza.
        let mut shutdown_rx = self.shutdown.clone();
        let shutdown = shutdown_requested(&mut shutdown_rx);
        tokio::pin!(shutdown);
        let recv = rx.recv();
        tokio::pin!(recv);
        // When the shaper lets the connection read again, while it holds reading back. The
        // timer is made the first time it does (most sessions never get there) and then reset.
        let mut read_at: Option<Instant> = None;
        let mut resume: Option<Pin<Box<Sleep>>> = None;
        loop {
            let wake = {
                let Conn { io, rbuf, .. } = self;
                let resumed = std::future::poll_fn(|cx| match resume.as_mut() {
                    Some(sleep) => sleep.as_mut().poll(cx),
                    None => Poll::Pending,
                });
                tokio::select! {
                    out = &mut recv => Wake::Outbound(out),
                    read = io.read(rbuf), if read_at.is_none() => Wake::Read(read),
                    () = resumed, if read_at.is_some() => Wake::Resume,
                    () = &mut shutdown => Wake::Shutdown,
                }
            };
            match wake {
                Wake::Outbound(out) => {
                    recv.set(rx.recv());
                    if let Err(stop) = self.deliver(out, &rx, &server, session).await {
                        return stop;
                    }
                }
                Wake::Read(Ok(0)) | Wake::Read(Err(_)) => return Stop::Gone,
                Wake::Read(Ok(n)) => {
                    read_at = shaper.take(n, Instant::now());
                    if let Some(at) = read_at {
                        match resume.as_mut() {
                            Some(sleep) if sleep.deadline() == at => {}
                            Some(sleep) => sleep.as_mut().reset(at),
                            None => resume = Some(Box::pin(tokio::time::sleep_until(at))),
                        }
                    }
                    self.framer.feed(&self.rbuf[..n]);
                    loop {
                        match self.framer.next_event() {
                            Ok(Some(Event::Element(el))) => {
                                if let Err(stop) = self.handle_incoming(&server, session, el).await
                                {
                                    return stop;
                                }
                            }
                            Ok(Some(Event::Close)) => return Stop::End,
                            Ok(Some(Event::Header(_))) => return Stop::err(Cond::NotWellFormed),
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(jid = %session.jid, error = %e, "framing error");
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
        // Binding and the legacy session are negotiation's business, not the core's.
        if let Some(answer) = xmppd_negotiation::answer_bound(&el) {
            xmppd_stream::serialize(&answer, NS_CLIENT, &mut self.out);
            return self.flush(None).await;
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
        let Conn {
            io, out, shutdown, ..
        } = self;
        // Writes, then flushes once all is written (TLS may still hold some back).
        let write = async {
            while written < out.len() {
                match io.write(&out[written..]).await {
                    Ok(n @ 1..) => written += n,
                    _ => return Err(Stop::Gone),
                }
            }
            io.flush().await.map_err(|_| Stop::Gone)
        };
        // What ends a write that does not finish. Polled only once the write waits, so a
        // write that goes out at once sets up no timer and no waiter.
        let give_up = async {
            tokio::select! {
                _ = async { tokio::time::sleep_until(rx.closing_since().await + CLOSE_GRACE).await } => {
                    match rx.take_close() {
                        Some(Outbound::Close(cond, text)) => Stop::Error(cond, text),
                        _ => Stop::Gone,
                    }
                }
                _ = shutdown_requested(shutdown) => Stop::err(Cond::SystemShutdown),
                _ = tokio::time::sleep_until(deadline) => Stop::Gone,
            }
        };
        let result = tokio::select! {
            biased;
            r = write => r,
            stop = give_up => Err(stop),
        };
        match result {
            Ok(()) => batch.clear(),
            Err(_) => give_back(rx, batch, written),
        }
        self.clear_out();
        result
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
