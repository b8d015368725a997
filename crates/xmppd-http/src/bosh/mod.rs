//! XMPP over BOSH (XEP-0124, XEP-0206) on [`PATH`]: each session is one XML stream that the
//! c2s driver negotiates like any client stream ([`xmppd_c2s::StreamHost`], as WebSocket
//! streams are), carried by HTTP requests.
//!
//! A session's stream is a [`Pipe`]: what the driver reads is the payload of the client's
//! requests, in `rid` order ([`rid`]), with a stream header written for the session's creation
//! and for each restart (XEP-0206 §5); what it writes is cut into elements
//! ([`crate::framing::Outgoing`]) and answers the oldest request held open (XEP-0124 §10). The
//! driver can only write while a request is held to take what it writes: in between, its
//! writes wait, so what others send the session stays in its queue, and when the session ends
//! (the client's terminate, inactivity, an error) what was not handed to a request is
//! re-routed or stored offline exactly as for a TCP client whose connection ends.

mod body;
pub mod rid;

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, CACHE_CONTROL, CONTENT_TYPE, ORIGIN, VARY,
};
use hyper::{Method, Request, Response, StatusCode};
use rand::RngCore;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;
use xmppd_c2s::{Carrier, ChannelBindings, StreamHost};

use crate::framing::{self, Frame, Outgoing};
use crate::{full, text, Peer, RequestBody, ResponseBody, Service};
pub use body::{NS_HTTPBIND, NS_XBOSH};
use rid::{Arrival, Rids};

pub const PATH: &str = "/http-bind";
/// The XEP-0124 version implemented.
const VERSION: &str = "1.11";
/// The `polling` advertised (XEP-0124 §7): how often a client holding no request may poll.
const POLLING_SECS: u64 = 2;
/// What a polling session (`hold` 0) may have waiting for its next request, at most: with
/// nothing held, the driver's writes wait beyond that.
const POLL_BUFFER_BYTES: usize = 256 * 1024;

/// Limits of the BOSH endpoint (`http.bosh_*`).
#[derive(Debug, Clone)]
pub struct BoshSettings {
    /// The longest a request is held waiting for something to answer (a client asking more
    /// gets this).
    pub max_wait: Duration,
    /// Requests held at once, at most (a client asking more gets this).
    pub max_hold: u64,
    /// A session with no request open for this long ends.
    pub inactivity: Duration,
    /// Origins whose pages may use the endpoint (CORS; lowercase, no final `/`; `*`: any).
    pub origins: Vec<String>,
}

type Sessions = Arc<Mutex<HashMap<String, Arc<Session>>>>;

/// The BOSH endpoint.
pub struct Bosh {
    host: StreamHost,
    settings: BoshSettings,
    sessions: Sessions,
}

impl Bosh {
    pub fn new(host: StreamHost, settings: BoshSettings) -> Bosh {
        Bosh {
            host,
            settings,
            sessions: Sessions::default(),
        }
    }

    async fn post(&self, req: Request<RequestBody>, peer: &Peer) -> Response<ResponseBody> {
        let bytes = match req.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"),
        };
        let body = match body::parse(&bytes) {
            Ok(body) => body,
            Err(why) => {
                tracing::debug!(why, "BOSH request that is not a <body/>");
                return xml(body::terminate(Some("bad-request"), &[]));
            }
        };
        let Some(sid) = body.attr("sid") else {
            return xml(self.create(&body, peer).await);
        };
        let session = lock(&self.sessions).get(sid).cloned();
        match session {
            Some(session) => xml(session.request(&body).await),
            None => xml(body::terminate(Some("item-not-found"), &[])),
        }
    }

    /// The session creation request (XEP-0124 §7, XEP-0206 §3).
    async fn create(&self, body: &body::Body<'_>, peer: &Peer) -> String {
        let bad = || body::terminate(Some("bad-request"), &[]);
        let (Ok(Some(rid)), Some(to), Ok(wait), Ok(hold)) = (
            body.number("rid"),
            body.attr("to").filter(|to| !to.is_empty()),
            body.number("wait"),
            body.number("hold"),
        ) else {
            return bad();
        };
        let settings = &self.settings;
        let wait = wait.map_or(settings.max_wait, Duration::from_secs);
        let hold = hold.unwrap_or(1).min(settings.max_hold) as usize;
        let mut sid = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut sid);
        let session = Arc::new(Session {
            sid: hex::encode(sid),
            host: to.to_owned(),
            lang: body.lang().unwrap_or("en").to_owned(),
            wait: wait.min(settings.max_wait),
            hold,
            inactivity: settings.inactivity,
            sessions: Arc::clone(&self.sessions),
            state: Mutex::new(State {
                rids: Rids::new(rid, hold + 1),
                ahead: BTreeMap::new(),
                held: BTreeMap::new(),
                input: Vec::new(),
                input_pos: 0,
                input_total: 0,
                input_eof: false,
                closing: false,
                consumed: 0,
                outgoing: Outgoing::default(),
                out: Vec::new(),
                out_bytes: 0,
                authid: None,
                stream_error: None,
                end: None,
                active: 0,
                idle_since: None,
                tokens: 0,
                reader: None,
                writer: None,
            }),
            changed: Notify::new(),
            consumed: watch::Sender::new(0),
        });
        let (tx, rx) = oneshot::channel();
        let active = Active::new(&session, rid);
        {
            let mut st = session.lock();
            let header = session.header(Some(to), body.lang());
            st.push_input(&header);
            st.held.insert(
                rid,
                Held {
                    reply: tx,
                    token: active.token,
                    creation: true,
                },
            );
        }
        lock(&self.sessions).insert(session.sid.clone(), Arc::clone(&session));
        tracing::debug!(sid = session.sid, "BOSH session created");
        // The TLS under each request may differ: no channel binding (as behind a proxy).
        let secure = peer.secure.then(ChannelBindings::default);
        let (host, addr, shutdown) = (self.host.clone(), peer.addr, peer.shutdown.clone());
        let task_session = Arc::clone(&session);
        peer.tasks.spawn(async move {
            let s = &task_session;
            let serve = async {
                host.serve(Carrier::Bosh, Pipe(Arc::clone(s)), addr, secure, shutdown)
                    .await;
                s.finished();
            };
            tokio::join!(serve, s.reaper());
        });
        let answer = session.await_answer(rid, rx).await;
        drop(active);
        answer
    }
}

#[async_trait::async_trait]
impl Service for Bosh {
    async fn call(&self, req: Request<RequestBody>, peer: &Peer) -> Response<ResponseBody> {
        if !crate::origin_allowed(&req, peer, &self.settings.origins) {
            tracing::info!("BOSH request from a page of an origin not allowed");
            return text(StatusCode::FORBIDDEN, "Origin not allowed");
        }
        let origin = req.headers().get(ORIGIN).cloned();
        let mut resp = match *req.method() {
            Method::POST => self.post(req, peer).await,
            // The CORS preflight of a page's POST with `Content-Type: text/xml`.
            Method::OPTIONS => {
                let mut resp = Response::new(full(""));
                *resp.status_mut() = StatusCode::NO_CONTENT;
                let headers = resp.headers_mut();
                let methods = HeaderValue::from_static("POST, OPTIONS");
                headers.insert(ACCESS_CONTROL_ALLOW_METHODS, methods);
                let allowed = HeaderValue::from_static("Content-Type");
                headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, allowed);
                headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
                resp
            }
            _ => {
                let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "XMPP over BOSH: POST");
                let allow = HeaderValue::from_static("POST, OPTIONS");
                resp.headers_mut().insert("allow", allow);
                resp
            }
        };
        if let Some(origin) = origin {
            let headers = resp.headers_mut();
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(VARY, HeaderValue::from_static("Origin"));
        }
        resp
    }
}

fn xml(body: String) -> Response<ResponseBody> {
    let mut resp = Response::new(full(body));
    let headers = resp.headers_mut();
    let content_type = HeaderValue::from_static("text/xml; charset=utf-8");
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One BOSH session.
struct Session {
    sid: String,
    /// The host the session was opened to, and its language: restarts default to them.
    host: String,
    lang: String,
    wait: Duration,
    hold: usize,
    inactivity: Duration,
    /// Where the session is found by its `sid`, until it ends.
    sessions: Sessions,
    state: Mutex<State>,
    /// The session became idle, or ended: for the inactivity check.
    changed: Notify,
    /// Input bytes the driver has read so far (`u64::MAX` once it is gone).
    consumed: watch::Sender<u64>,
}

struct State {
    rids: Rids,
    /// Requests that came ahead of a missing one.
    ahead: BTreeMap<u64, Waiting>,
    /// Requests handled and held open, by rid (the oldest answers first).
    held: BTreeMap<u64, Held>,
    /// The stream bytes for the driver: `input[input_pos..]` is still to be read.
    input: Vec<u8>,
    input_pos: usize,
    /// Bytes ever queued for the driver, and read by it.
    input_total: u64,
    consumed: u64,
    /// The driver's input ends: the connection is gone (inactivity, an error of ours).
    input_eof: bool,
    /// The client ended the stream: what the driver still writes goes in the terminate body.
    closing: bool,
    outgoing: Outgoing,
    /// Elements the driver wrote, for the next answer.
    out: Vec<String>,
    out_bytes: usize,
    /// The stream id (XEP-0206's `authid`).
    authid: Option<String>,
    /// The stream error the driver wrote, for the terminate body that follows.
    stream_error: Option<String>,
    /// The session ended with this body.
    end: Option<Arc<str>>,
    /// Requests being handled.
    active: usize,
    idle_since: Option<Instant>,
    /// Numbers the requests, so that one knows whether a held place is still its own.
    tokens: u64,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

/// A request that came ahead, waiting to be handled.
struct Waiting {
    payload: Vec<u8>,
    restart: Option<(Option<String>, Option<String>)>,
    ends: bool,
    reply: oneshot::Sender<Arc<str>>,
    token: u64,
}

/// A request held open for what the driver writes.
struct Held {
    reply: oneshot::Sender<Arc<str>>,
    /// The request waiting for the answer (a repetition takes the place of the first).
    token: u64,
    /// The session creation request, whose answer carries the session's attributes.
    creation: bool,
}

impl State {
    fn push_input(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.input.extend_from_slice(bytes);
        self.input_total += bytes.len() as u64;
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }
}

/// Counts a request being handled: while none is, the session is idle (XEP-0124 §7's
/// `inactivity`). A request given up on (the client went away, or the HTTP layer's deadline)
/// is answered empty: nothing was handed to it.
struct Active<'a> {
    session: &'a Session,
    rid: u64,
    token: u64,
}

impl<'a> Active<'a> {
    fn new(session: &'a Session, rid: u64) -> Active<'a> {
        let mut st = session.lock();
        st.active += 1;
        st.idle_since = None;
        st.tokens += 1;
        let token = st.tokens;
        Active {
            session,
            rid,
            token,
        }
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let mut st = self.session.lock();
        if st
            .held
            .get(&self.rid)
            .is_some_and(|h| h.token == self.token)
        {
            st.held.remove(&self.rid);
            st.rids
                .answered(self.rid, Arc::from(body::response([], &[])));
        }
        st.active -= 1;
        if st.active == 0 {
            st.idle_since = Some(Instant::now());
            drop(st);
            self.session.changed.notify_waiters();
        }
    }
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The stream header for the driver (XEP-0206 §3 at creation, §5 at a restart).
    fn header(&self, to: Option<&str>, lang: Option<&str>) -> Vec<u8> {
        framing::stream_open([
            ("to", to.unwrap_or(&self.host)),
            ("version", "1.0"),
            ("xml:lang", lang.unwrap_or(&self.lang)),
        ])
    }

    /// A request to this session.
    async fn request(&self, body: &body::Body<'_>) -> String {
        let Ok(Some(rid)) = body.number("rid") else {
            let mut st = self.lock();
            return self.end(&mut st, Some("bad-request")).to_string();
        };
        let ends = body.attr("type") == Some("terminate");
        let restart = (body.xbosh("restart") == Some("true")).then(|| {
            (
                body.attr("to").map(str::to_owned),
                body.lang().map(str::to_owned),
            )
        });
        let (tx, rx) = oneshot::channel();
        let active = Active::new(self, rid);
        {
            let mut st = self.lock();
            if let Some(end) = &st.end {
                return end.to_string();
            }
            let waiting = Waiting {
                payload: body.payload.to_vec(),
                restart,
                ends,
                reply: tx,
                token: active.token,
            };
            match st.rids.arrive(rid, ends) {
                Arrival::Repeat(answer) => return answer.to_string(),
                Arrival::NotFound => {
                    tracing::debug!(sid = self.sid, rid, "BOSH rid outside the window");
                    return self.end(&mut st, Some("item-not-found")).to_string();
                }
                Arrival::Overactive => {
                    tracing::info!(sid = self.sid, "BOSH client with too many requests open");
                    return self.end(&mut st, Some("policy-violation")).to_string();
                }
                Arrival::Pending => {
                    // The client repeats a request it got no answer to yet: the new one
                    // takes the answer.
                    if let Some(held) = st.held.get_mut(&rid) {
                        (held.reply, held.token) = (waiting.reply, waiting.token);
                    } else if let Some(ahead) = st.ahead.get_mut(&rid) {
                        (ahead.reply, ahead.token) = (waiting.reply, waiting.token);
                    }
                }
                Arrival::Ahead => {
                    st.ahead.insert(rid, waiting);
                }
                Arrival::Next => {
                    self.handle(&mut st, rid, waiting);
                    while let Some(next) = st.rids.take_ready() {
                        if let Some(waiting) = st.ahead.remove(&next) {
                            self.handle(&mut st, next, waiting);
                        }
                    }
                }
            }
        }
        let answer = self.await_answer(rid, rx).await;
        drop(active);
        answer
    }

    /// Hands a request's payload to the driver, in rid order, and holds the request open.
    fn handle(&self, st: &mut State, rid: u64, waiting: Waiting) {
        if let Some((to, lang)) = &waiting.restart {
            let header = self.header(to.as_deref(), lang.as_deref());
            st.push_input(&header);
        }
        st.push_input(&waiting.payload);
        if waiting.ends {
            // XEP-0124 §12: what the terminating request carries (an unavailable presence)
            // is handled, then the stream ends.
            st.push_input(b"</stream:stream>");
            st.closing = true;
        }
        if waiting.reply.is_closed() {
            // Its request was given up on while it waited for an earlier one.
            st.rids.answered(rid, Arc::from(body::response([], &[])));
            return;
        }
        st.held.insert(
            rid,
            Held {
                reply: waiting.reply,
                token: waiting.token,
                creation: false,
            },
        );
        // XEP-0124 §10: beyond `hold`, the oldest held request is answered.
        while st.held.len() > self.hold {
            let Some(&oldest) = st.held.keys().next() else {
                break;
            };
            self.answer(st, oldest);
        }
        st.wake_writer();
    }

    /// Answers a held request with what the driver wrote so far.
    fn answer(&self, st: &mut State, rid: u64) -> Arc<str> {
        let Some(held) = st.held.remove(&rid) else {
            return Arc::from(body::response([], &[]));
        };
        let payload = std::mem::take(&mut st.out);
        st.out_bytes = 0;
        let answer: Arc<str> = if held.creation {
            // XEP-0124 §7, XEP-0206 §3.
            let attrs = [
                ("sid", self.sid.clone()),
                ("wait", self.wait.as_secs().to_string()),
                ("hold", self.hold.to_string()),
                ("requests", (self.hold + 1).to_string()),
                ("inactivity", self.inactivity.as_secs().to_string()),
                ("polling", POLLING_SECS.to_string()),
                ("ver", VERSION.to_owned()),
                ("from", self.host.clone()),
                ("xmpp:version", "1.0".to_owned()),
                ("xmpp:restartlogic", "true".to_owned()),
            ];
            let authid = st.authid.clone().map(|id| ("authid", id));
            let attrs = attrs.iter().chain(authid.iter());
            body::response(attrs.map(|(k, v)| (*k, v.as_str())), &payload).into()
        } else {
            body::response([], &payload).into()
        };
        st.rids.answered(rid, Arc::clone(&answer));
        let _ = held.reply.send(Arc::clone(&answer));
        st.wake_writer();
        answer
    }

    /// What the driver wrote goes to the oldest held request still waiting.
    fn deliver(&self, st: &mut State) {
        if st.out.is_empty() || st.closing {
            return;
        }
        let live = (st.held.iter()).find(|(_, h)| !h.reply.is_closed());
        if let Some(rid) = live.or_else(|| st.held.iter().next()).map(|(rid, _)| *rid) {
            self.answer(st, rid);
        }
    }

    /// Ends the session with `condition` (`None`: a normal end), answering every open request
    /// with the terminate body; the driver's input ends, so the session is unbound like a
    /// closed connection.
    fn end(&self, st: &mut State, condition: Option<&str>) -> Arc<str> {
        if let Some(end) = &st.end {
            return Arc::clone(end);
        }
        let mut payload = std::mem::take(&mut st.out);
        payload.extend(st.stream_error.take());
        let end: Arc<str> = body::terminate(condition, &payload).into();
        st.end = Some(Arc::clone(&end));
        for (rid, held) in std::mem::take(&mut st.held) {
            st.rids.answered(rid, Arc::clone(&end));
            let _ = held.reply.send(Arc::clone(&end));
        }
        for (_, waiting) in std::mem::take(&mut st.ahead) {
            let _ = waiting.reply.send(Arc::clone(&end));
        }
        st.input_eof = true;
        // From now on its sid is unknown (item-not-found), whenever the driver is done.
        lock(&self.sessions).remove(&self.sid);
        if let Some(w) = st.reader.take() {
            w.wake();
        }
        st.wake_writer();
        self.changed.notify_waiters();
        end
    }

    /// Waits for the request's answer: what the driver writes, or an empty body once `wait`
    /// passed (XEP-0124 §10). It is returned once the driver has read what came before it, so
    /// a client cannot queue input faster than its stream is read.
    async fn await_answer(&self, rid: u64, mut rx: oneshot::Receiver<Arc<str>>) -> String {
        let mut deadline = Instant::now() + self.wait;
        let answer = loop {
            tokio::select! {
                answer = &mut rx => {
                    // Dropped: a repetition of this request took its place.
                    break answer.map_or_else(|_| body::response([], &[]), |a| a.to_string());
                }
                () = tokio::time::sleep_until(deadline) => {
                    let mut st = self.lock();
                    if st.held.contains_key(&rid) && !st.closing {
                        break self.answer(&mut st, rid).to_string();
                    }
                    // Still ahead of a missing request, or the stream is closing: it waits
                    // for them.
                    deadline = Instant::now() + self.wait;
                }
            }
        };
        let target = self.lock().input_total;
        let _ = self.consumed.subscribe().wait_for(|c| *c >= target).await;
        answer
    }

    /// Ends the session once no request was open for `inactivity` (XEP-0124 §7).
    async fn reaper(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let due = {
                let st = self.lock();
                if st.end.is_some() || st.input_eof {
                    return;
                }
                st.idle_since.map(|since| since + self.inactivity)
            };
            let Some(due) = due else {
                changed.await;
                continue;
            };
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(due) => {
                    let mut st = self.lock();
                    let idle = st.idle_since.is_some_and(|t| t + self.inactivity <= Instant::now());
                    if idle && st.active == 0 {
                        tracing::info!(sid = self.sid, "BOSH session inactive: ended");
                        self.end(&mut st, None);
                        return;
                    }
                }
            }
        }
    }

    /// The driver is done with the stream: the session is forgotten.
    fn finished(&self) {
        {
            let mut st = self.lock();
            // The driver ended without closing the stream (refused at once, or its input
            // ended).
            self.end(&mut st, Some("remote-connection-failed"));
        }
        self.consumed.send_replace(u64::MAX);
        lock(&self.sessions).remove(&self.sid);
        tracing::debug!(sid = self.sid, "BOSH session ended");
    }
}

/// The stream between a session and the c2s driver.
struct Pipe(Arc<Session>);

impl AsyncRead for Pipe {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let session = &self.0;
        let mut st = session.lock();
        let available = st.input.len() - st.input_pos;
        if available > 0 {
            let n = available.min(buf.remaining());
            let start = st.input_pos;
            buf.put_slice(&st.input[start..start + n]);
            st.input_pos += n;
            if st.input_pos == st.input.len() {
                st.input.clear();
                st.input_pos = 0;
            }
            st.consumed += n as u64;
            session.consumed.send_replace(st.consumed);
            return Poll::Ready(Ok(()));
        }
        if st.input_eof {
            return Poll::Ready(Ok(()));
        }
        st.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let session = &self.0;
        let mut st = session.lock();
        if st.end.is_some() {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        // Only a held request takes what the driver writes (a polling session buffers a
        // little): otherwise it stays in the session's queue, where the end of the session
        // finds it.
        let open = !st.held.is_empty() || (session.hold == 0 && st.out_bytes < POLL_BUFFER_BYTES);
        if !open {
            st.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let frames = match st.outgoing.frames(data) {
            Ok(frames) => frames,
            Err(e) => {
                tracing::error!(error = e.0, "unframeable output on a BOSH session");
                return Poll::Ready(Err(std::io::ErrorKind::InvalidData.into()));
            }
        };
        let mut closed = false;
        for frame in frames {
            match frame {
                Frame::Open(header) => {
                    if st.authid.is_none() {
                        st.authid = header.id;
                    }
                }
                Frame::Element(el)
                    if el.ns() == xmppd_stream::NS_STREAM && el.name() == "error" =>
                {
                    st.stream_error = Some(framing::standalone(&el));
                }
                Frame::Element(el) => {
                    let el = framing::standalone(&el);
                    st.out_bytes += el.len();
                    st.out.push(el);
                }
                Frame::Close => closed = true,
            }
        }
        if closed {
            // XEP-0206 §7.1: a stream error is carried in a terminate body.
            let condition = st.stream_error.is_some().then_some("remote-stream-error");
            session.end(&mut st, condition);
        } else {
            session.deliver(&mut st);
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
