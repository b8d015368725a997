//! A bound client session: stanzas read from the socket go to the core, through the shaper;
//! what the core queues for the session is written in batches; a session told to close gets
//! what was queued before, then its stream error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use jid::Jid;
use minidom::Element;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, Sleep};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::ping::Ping;
use xmpp_parsers::stanza_error::DefinedCondition;
use xmppd_core::{Class, ClientSession, Outbound, QueueReceiver, Server};
use xmppd_stream::{Event, StreamErrorCondition as Cond, NS_CLIENT};

use crate::conn::{read_into, shutdown_requested, Conn, Stop, WRITE_TIMEOUT};
use crate::shaper::Shaper;
use crate::sm::{self, Request, Sm, SmSettings, NS_SM};
use crate::Shared;

/// Once a session is told to close, how long what was queued before may take to be written;
/// what is not out by then is re-routed (a peer that does not read must not hold it).
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How much queued output is batched into one write.
const BATCH_BYTES: usize = 64 * 1024;

/// A bound session that is unbound however the connection ends, also when the task is
/// aborted or panics; or parked for resumption when the connection was lost.
pub(crate) struct Bound {
    server: Arc<Server>,
    session: Option<ClientSession>,
    /// Taken when the session is parked.
    rx: Option<QueueReceiver>,
    /// Stream management, once enabled (or resumed).
    sm: Option<Sm>,
}

impl Bound {
    pub(crate) fn new(
        server: Arc<Server>,
        session: ClientSession,
        rx: QueueReceiver,
        sm: Option<Sm>,
    ) -> Self {
        Bound {
            server,
            session: Some(session),
            rx: Some(rx),
            sm,
        }
    }

    /// Ends the session, or parks it if its connection was `lost` and the client may resume
    /// it. What was written and not acknowledged goes back to the queue either way: re-routed
    /// when the session ends (XEP-0198 §5), written again when it is resumed.
    pub(crate) async fn end(mut self, lost: bool) {
        let (Some(session), Some(rx)) = (self.session.take(), self.rx.take()) else {
            return;
        };
        if let Some(mut sm) = self.sm.take() {
            let (unacked, counters) = sm.park();
            match sm.resume {
                Some(r) if lost => {
                    let state = Arc::new(counters);
                    (self.server).detach(session, rx, unacked, r.keep, r.id, state);
                    return;
                }
                Some(r) => self.server.forget_resumable(&r.id),
                None => {}
            }
            rx.queue().give_back(unacked);
        }
        tracing::debug!(jid = %session.jid, "session ended");
        self.server.unbind(session).await;
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(mut sm) = self.sm.take() {
            if let Some(r) = &sm.resume {
                self.server.forget_resumable(&r.id);
            }
            if let Some(rx) = &self.rx {
                rx.queue().give_back(sm.park().0);
            }
        }
        if let Some(session) = self.session.take() {
            let server = Arc::clone(&self.server);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { server.unbind(session).await });
            }
        }
    }
}

/// The liveness check (XEP-0199 §4.3, or an `<r/>` under stream management, XEP-0198 §4): a
/// client quiet for `every` is asked to answer, and one that sends nothing within `timeout`
/// is gone. The timer is moved lazily: a read only notes its time (in [`Quiet`], which both
/// timers go by).
struct Probe {
    every: Duration,
    timeout: Duration,
    /// When the question went out, while it waits for an answer.
    asked: Option<Instant>,
    /// The id of the ping IQ out, whose answer the connection takes.
    ping_id: Option<String>,
    timer: Pin<Box<Sleep>>,
}

impl Probe {
    fn new(every: Duration, timeout: Duration, now: Instant) -> Probe {
        Probe {
            every,
            timeout,
            asked: None,
            ping_id: None,
            timer: Box::pin(tokio::time::sleep_until(now + every)),
        }
    }

    /// The timer went off: whether the client, which last sent something at `last_read`, is
    /// gone, else whether to ask it now.
    fn due(&mut self, now: Instant, last_read: Instant) -> Due {
        if let Some(asked) = self.asked.take() {
            if last_read <= asked {
                return Due::Gone;
            }
        }
        let next = last_read + self.every;
        if next > now {
            self.timer.as_mut().reset(next);
            return Due::Quiet;
        }
        self.asked = Some(now);
        self.timer.as_mut().reset(now + self.timeout);
        Due::Ask
    }

    /// Whether `el` answers the ping out; then it is the connection's, not the core's.
    fn answers(&mut self, el: &Element) -> bool {
        let answer = el.name() == "iq"
            && matches!(el.attr("type"), Some("result" | "error"))
            && el.attr("id").is_some()
            && el.attr("id") == self.ping_id.as_deref();
        if answer {
            self.ping_id = None;
        }
        answer
    }
}

enum Due {
    Quiet,
    Ask,
    Gone,
}

/// How long a bound session reads nothing before its framer's buffers (rxml's 8 KiB token
/// space, the spent input) and its empty write buffer are freed: long enough that a session
/// in a conversation keeps them from message to message, short enough that an idle one
/// costs no more than its state.
pub(crate) const IDLE_RELEASE: Duration = Duration::from_secs(2);

/// When the session last read, and the timer of [`IDLE_RELEASE`], moved lazily like
/// [`Probe`]'s: a read notes its time; the timer exists only while the session has read since
/// it last released, so an idle session holds none.
struct Quiet {
    last_read: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Quiet {
    fn new(now: Instant) -> Quiet {
        Quiet {
            last_read: now,
            timer: Some(Box::pin(tokio::time::sleep_until(now + IDLE_RELEASE))),
        }
    }

    fn read(&mut self, now: Instant) {
        self.last_read = now;
        if self.timer.is_none() {
            self.timer = Some(Box::pin(tokio::time::sleep_until(now + IDLE_RELEASE)));
        }
    }

    /// The timer went off: whether the session has been quiet long enough (then the timer
    /// is gone until the next read), else the timer is moved to when it will have been.
    fn due(&mut self, now: Instant) -> bool {
        let at = self.last_read + IDLE_RELEASE;
        match self.timer.as_mut() {
            Some(timer) if at > now => {
                timer.as_mut().reset(at);
                false
            }
            _ => {
                self.timer = None;
                true
            }
        }
    }
}

/// What the established loop woke up for.
enum Wake {
    Outbound((Outbound, Class)),
    Read(std::io::Result<usize>),
    /// What the framer already holds.
    Framed,
    /// The shaper lets the connection read again.
    Resume,
    /// Time to check that the client is there, or to give up on it.
    Probe,
    /// A new connection resumes the session.
    Takeover,
    /// The session may have read nothing for [`IDLE_RELEASE`].
    Quiet,
    Shutdown,
}

/// How the established loop ended.
pub(crate) struct Ending {
    pub(crate) stop: Stop,
    /// The connection was lost, not ended: a session the client may resume is parked.
    pub(crate) lost: bool,
}

impl Ending {
    fn ended(stop: Stop) -> Ending {
        let lost = matches!(stop, Stop::Gone);
        Ending { stop, lost }
    }
}

/// The bound session: socket to core, queue to socket, until one side ends it. The bind
/// result (or `<resumed/>`) is still in `conn.out`.
pub(crate) async fn run(conn: &mut Conn, shared: &Shared, bound: &mut Bound) -> Ending {
    conn.established(shared, bound).await
}

/// What the loop's handlers need besides the connection.
struct Ctx<'a> {
    server: &'a Arc<Server>,
    settings: &'a SmSettings,
    session: &'a mut ClientSession,
    sm: &'a mut Option<Sm>,
    probe: Option<&'a mut Probe>,
}

impl Conn {
    async fn established(&mut self, shared: &Shared, bound: &mut Bound) -> Ending {
        let Bound {
            session: Some(session),
            rx: Some(rx),
            sm,
            ..
        } = bound
        else {
            return Ending::ended(Stop::Gone);
        };
        let rx = &*rx;
        if let Err(stop) = self.flush(None).await {
            return Ending::ended(stop);
        }
        let server = Arc::clone(&shared.server);
        let settings = &shared.settings;
        let mut shaper = Shaper::new(settings.shaper, Instant::now());
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
        let mut probe = (settings.ping_interval)
            .map(|every| Probe::new(every, settings.ping_timeout, Instant::now()));
        let mut takeover: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = None;
        let mut quiet = Quiet::new(Instant::now());
        // What the client sent behind its login in the same write (a SASL2 login carries the
        // session's first stanzas, XEP-0388 §2.6.1) is already framed: handled first.
        let mut first = Some(Wake::Framed);
        loop {
            if takeover.is_none() {
                if let Some(r) = sm.as_ref().and_then(|sm| sm.resume.as_ref()) {
                    takeover = Some(Box::pin(r.takeover.requested()));
                }
            }
            // Under stream management, nothing more is written while the client owes too many
            // acknowledgements; what others send waits in the queue, within its bounds.
            let writable = !sm.as_ref().is_some_and(|sm| sm.full(&settings.sm));
            let wake = if let Some(wake) = first.take() {
                wake
            } else {
                let Conn { io, framer, .. } = self;
                let resumed = std::future::poll_fn(|cx| match resume.as_mut() {
                    Some(sleep) => sleep.as_mut().poll(cx),
                    None => Poll::Pending,
                });
                let probe_due = std::future::poll_fn(|cx| match probe.as_mut() {
                    Some(p) => p.timer.as_mut().poll(cx),
                    None => Poll::Pending,
                });
                let taken = std::future::poll_fn(|cx| match takeover.as_mut() {
                    Some(t) => t.as_mut().poll(cx),
                    None => Poll::Pending,
                });
                let quiet_due = std::future::poll_fn(|cx| match quiet.timer.as_mut() {
                    Some(t) => t.as_mut().poll(cx),
                    None => Poll::Pending,
                });
                tokio::select! {
                    out = &mut recv, if writable => Wake::Outbound(out),
                    read = read_into(io, framer, false), if read_at.is_none() => Wake::Read(read),
                    () = resumed, if read_at.is_some() => Wake::Resume,
                    () = probe_due => Wake::Probe,
                    () = taken => Wake::Takeover,
                    () = quiet_due => Wake::Quiet,
                    () = &mut shutdown => Wake::Shutdown,
                }
            };
            let mut cx = Ctx {
                server: &server,
                settings: &settings.sm,
                session: &mut *session,
                sm: &mut *sm,
                probe: probe.as_mut(),
            };
            match wake {
                Wake::Outbound(out) => {
                    recv.set(rx.recv());
                    if let Err(stop) = self.deliver(out, rx, &mut cx).await {
                        return Ending::ended(stop);
                    }
                }
                Wake::Read(Ok(0)) | Wake::Read(Err(_)) => return Ending::ended(Stop::Gone),
                Wake::Read(Ok(n)) => {
                    let now = Instant::now();
                    quiet.read(now);
                    read_at = shaper.take(n, now);
                    if let Some(at) = read_at {
                        match resume.as_mut() {
                            Some(sleep) if sleep.deadline() == at => {}
                            Some(sleep) => sleep.as_mut().reset(at),
                            None => resume = Some(Box::pin(tokio::time::sleep_until(at))),
                        }
                    }
                    if let Err(stop) = self.framed(&mut cx).await {
                        return Ending::ended(stop);
                    }
                }
                Wake::Framed => {
                    if let Err(stop) = self.framed(&mut cx).await {
                        return Ending::ended(stop);
                    }
                }
                Wake::Resume => read_at = None,
                Wake::Quiet => {
                    if quiet.due(Instant::now()) {
                        self.framer.release_idle();
                        if self.out.is_empty() {
                            self.out = Vec::new();
                        }
                    }
                }
                Wake::Probe => {
                    if let Err(stop) = self.probe(&mut cx, quiet.last_read).await {
                        return Ending::ended(stop);
                    }
                }
                Wake::Takeover => {
                    tracing::info!(jid = %cx.session.jid, "session taken over by a resumption");
                    let text = Some("Resumed by a new connection".to_owned());
                    return Ending {
                        stop: Stop::Error(Cond::Conflict, text),
                        lost: true,
                    };
                }
                Wake::Shutdown => return Ending::ended(Stop::err(Cond::SystemShutdown)),
            }
        }
    }

    /// Handles the elements framed so far, in order.
    async fn framed(&mut self, cx: &mut Ctx<'_>) -> Result<(), Stop> {
        loop {
            match self.framer.next_event() {
                Ok(Some(Event::Element(el))) => self.handle_incoming(cx, el).await?,
                Ok(Some(Event::Close)) => return Err(Stop::End),
                Ok(Some(Event::Header(_))) => return Err(Stop::err(Cond::NotWellFormed)),
                Ok(None) => return Ok(()),
                Err(e) => {
                    tracing::debug!(jid = %cx.session.jid, error = %e, "framing error");
                    return Err(Stop::err(e.condition()));
                }
            }
        }
    }

    /// The liveness timer went off: asks the client to answer (an `<r/>` under stream
    /// management, else an XEP-0199 ping), or gives up on a client that did not.
    async fn probe(&mut self, cx: &mut Ctx<'_>, last_read: Instant) -> Result<(), Stop> {
        let Some(probe) = cx.probe.as_deref_mut() else {
            return Ok(());
        };
        match probe.due(Instant::now(), last_read) {
            Due::Quiet => Ok(()),
            Due::Gone => {
                tracing::info!(jid = %cx.session.jid, "no answer to the liveness check");
                Err(Stop::Gone)
            }
            Due::Ask => {
                if let Some(sm) = cx.sm.as_mut() {
                    sm.requested();
                    xmppd_stream::serialize(&sm::request(), NS_CLIENT, &mut self.out);
                } else {
                    let id = format!("ping-{}", cx.server.next_id());
                    let domain = cx.session.jid.domain().to_owned();
                    let ping = Iq::from_get(id.clone(), Ping)
                        .with_from(Jid::from(domain))
                        .with_to(Jid::from(cx.session.jid.clone()));
                    xmppd_stream::serialize(&Element::from(ping), NS_CLIENT, &mut self.out);
                    probe.ping_id = Some(id);
                }
                self.flush(None).await
            }
        }
    }

    async fn handle_incoming(&mut self, cx: &mut Ctx<'_>, el: Element) -> Result<(), Stop> {
        if el.has_ns(NS_SM) {
            return self.sm_element(cx, el).await;
        }
        let is_stanza = el.has_ns(NS_CLIENT) && matches!(el.name(), "message" | "presence" | "iq");
        if !is_stanza {
            // A nonza a module takes (client state indication), handled before the next read.
            // Boxed, as the rare paths below: inline, their state would be part of every
            // connection's task for its whole life.
            if Box::pin(cx.server.handle_nonza(cx.session, &el)).await {
                return Ok(());
            }
            return Err(Stop::err(Cond::UnsupportedStanzaType));
        }
        xmppd_metrics::stanza_in(el.name());
        // Every stanza counts, also those the connection answers itself (XEP-0198 §4).
        if let Some(sm) = cx.sm.as_mut() {
            sm.handled_one();
        }
        if cx.probe.as_deref_mut().is_some_and(|p| p.answers(&el)) {
            return Ok(());
        }
        // Binding and the legacy session are negotiation's business, not the core's.
        if let Some(answer) = xmppd_negotiation::answer_bound(&el) {
            xmppd_stream::serialize(&answer, NS_CLIENT, &mut self.out);
            if let Some(sm) = cx.sm.as_mut() {
                let size = self.out.len();
                sm.sent(Outbound::Stanza(Arc::new(answer)), Class::Reply, size);
            }
            return self.flush(None).await;
        }
        // On the heap for the time it runs (one allocation per stanza): inline, the routing's
        // state (3.4 KiB) would stay in every connection's task while it waits for input.
        Box::pin(cx.server.handle_from_client(cx.session, el)).await;
        Ok(())
    }

    /// A stream management element from the bound client (XEP-0198 §3, §4).
    async fn sm_element(&mut self, cx: &mut Ctx<'_>, el: Element) -> Result<(), Stop> {
        let answer = match (sm::parse(el), cx.sm.as_mut()) {
            (Request::Enable { resume, max }, None) if cx.settings.enabled => {
                let (enabled, answer) = sm::enable(cx.server, cx.session, cx.settings, resume, max);
                *cx.sm = Some(enabled);
                answer
            }
            (Request::Enable { .. }, None) => {
                sm::failed(DefinedCondition::FeatureNotImplemented, None)
            }
            (Request::Req, Some(sm)) => sm::ack(sm.handled()),
            (Request::Ack(h), Some(sm)) => {
                return sm.ack(h).map_err(|too_high| {
                    Stop::Detailed(Cond::UndefinedCondition, Box::new(too_high.stream_error()))
                });
            }
            (Request::Bad, _) => sm::failed(DefinedCondition::BadRequest, None),
            // Enabled twice, a resume on a bound stream, acknowledgements before enabling.
            (_, sm) => sm::failed(
                DefinedCondition::UnexpectedRequest,
                sm.map(|sm| sm.handled()),
            ),
        };
        xmppd_stream::serialize(&answer, NS_CLIENT, &mut self.out);
        self.flush(None).await
    }

    /// Writes `first` and whatever else is queued right now in one write; under stream
    /// management, asks for an acknowledgement behind it unless one is already asked for.
    async fn deliver(
        &mut self,
        first: (Outbound, Class),
        rx: &QueueReceiver,
        cx: &mut Ctx<'_>,
    ) -> Result<(), Stop> {
        // The stanzas in `out`, each with the offset where it ends: what a failed write did
        // not get out goes back to the queue, to be re-routed when the session ends.
        let mut batch: Vec<(Outbound, Class, usize)> = Vec::new();
        let mut next = Some(first);
        while let Some((msg, class)) = next.take() {
            match &msg {
                Outbound::Stanza(el) => {
                    xmppd_metrics::stanza_out(el.name());
                    xmppd_stream::serialize(el, NS_CLIENT, &mut self.out)
                }
                Outbound::Addressed(el, to) => {
                    xmppd_metrics::stanza_out(el.name());
                    xmppd_stream::serialize_addressed(el, NS_CLIENT, to.as_str(), &mut self.out)
                }
                Outbound::Written => {
                    self.write_out(rx, &mut batch, cx.sm).await?;
                    Box::pin(cx.server.written(cx.session)).await;
                }
                Outbound::Close(cond, text) => {
                    self.write_out(rx, &mut batch, cx.sm).await?;
                    return Err(Stop::Error(*cond, text.clone()));
                }
            }
            if matches!(msg, Outbound::Stanza(_) | Outbound::Addressed(..)) {
                batch.push((msg, class, self.out.len()));
            }
            let room = match cx.sm.as_ref() {
                Some(sm) => !sm.full_with(cx.settings, batch.len(), self.out.len()),
                None => true,
            };
            if self.out.len() < BATCH_BYTES && room {
                next = rx.try_recv();
            }
        }
        if let Some(sm) = cx.sm.as_mut() {
            if sm.should_request(!batch.is_empty()) {
                xmppd_stream::serialize(&sm::request(), NS_CLIENT, &mut self.out);
            }
        }
        self.write_out(rx, &mut batch, cx.sm).await
    }

    /// Writes out everything pending, like [`Conn::flush`], but gives up when the server shuts
    /// down, or [`CLOSE_GRACE`] after the session was told to close: a peer that does not read
    /// must not delay a disable, kick or replacement. What a failed or abandoned write did not
    /// get out goes back to the queue; under stream management, what it did get out waits for
    /// the client's acknowledgement.
    async fn write_out(
        &mut self,
        rx: &QueueReceiver,
        batch: &mut Vec<(Outbound, Class, usize)>,
        sm: &mut Option<Sm>,
    ) -> Result<(), Stop> {
        if self.out.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + WRITE_TIMEOUT;
        // How much is surely out: taken by the kernel, which delivers it even if we stop now.
        // What TLS accepted but still holds is not (a stanza cut off there goes back).
        let mut delivered = 0;
        let Conn {
            io, out, shutdown, ..
        } = self;
        // Writes, then flushes once all is written (TLS may still hold some back).
        let write = async {
            let mut written = 0;
            while written < out.len() {
                match io.write(&out[written..]).await {
                    Ok(n @ 1..) => written += n,
                    _ => return Err(Stop::Gone),
                }
                if !io.holds_unsent() {
                    delivered = written;
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
        let mut result = tokio::select! {
            biased;
            r = write => r,
            stop = give_up => Err(stop),
        };
        let done = match result {
            Ok(()) => usize::MAX,
            Err(_) => delivered,
        };
        if result.is_err() && io.holds_unsent() {
            // The connection is given up on with stanzas inside TLS: they go back whole (to
            // be re-routed, or replayed on resumption) and are dropped here, so that no later
            // write, such as the closing stream error, completes them for the peer as well.
            io.discard_unsent();
            result = Err(Stop::Gone);
        }
        let (sent, unwritten) = split_written(batch, done);
        match sm {
            Some(sm) => {
                let mut start = 0;
                for (out, class, end) in sent {
                    sm.sent(out, class, end - start);
                    start = end;
                }
            }
            None => drop(sent),
        }
        rx.queue().give_back(unwritten);
        self.clear_out();
        result
    }
}

/// Splits `batch` once `written` bytes of it were written: the stanzas wholly written (with
/// where each ends), and those that were not, in order, to go back to the queue (re-routed
/// when the session ends). A stanza cut in the middle goes back too: a peer that stopped
/// reading may never take its end.
#[allow(clippy::type_complexity)]
fn split_written(
    batch: &mut Vec<(Outbound, Class, usize)>,
    written: usize,
) -> (Vec<(Outbound, Class, usize)>, Vec<(Outbound, Class)>) {
    let done = batch.partition_point(|(_, _, end)| *end <= written);
    let unwritten = batch.split_off(done);
    let sent = std::mem::take(batch);
    let unwritten = unwritten.into_iter().map(|(o, c, _)| (o, c)).collect();
    (sent, unwritten)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_session_releases_its_buffers_only_once_quiet_for_the_whole_period() {
        let start = Instant::now();
        let mut quiet = Quiet::new(start);
        let step = IDLE_RELEASE / 4;
        // Reads keep coming: each time the timer goes off it moves to the last read's period.
        quiet.read(start + step);
        assert!(!quiet.due(start + IDLE_RELEASE));
        let moved = quiet.timer.as_ref().map(|t| t.deadline());
        assert_eq!(moved, Some(start + step + IDLE_RELEASE));
        // Quiet since: released, and no timer is kept until the next read.
        assert!(quiet.due(start + step + IDLE_RELEASE));
        assert!(quiet.timer.is_none());
        let later = start + 10 * IDLE_RELEASE;
        quiet.read(later);
        let armed = quiet.timer.as_ref().map(|t| t.deadline());
        assert_eq!(armed, Some(later + IDLE_RELEASE));
        assert!(!quiet.due(later + step));
        assert!(quiet.due(later + IDLE_RELEASE));
    }

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
            let (_, unwritten) = split_written(&mut batch, written);
            assert!(batch.is_empty());
            rx.queue().give_back(unwritten);
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
