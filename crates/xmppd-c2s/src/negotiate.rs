//! The TCP driver of `xmppd_negotiation::Negotiation` for client streams: it turns framer
//! events into the machine's events, and does what the machine asks (write, TLS, the account
//! backend, the throttle, pre-authentication services, resource binding) until a session is
//! bound or the stream ends. The protocol decisions are the machine's.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use xmppd_auth::AuthError;
use xmppd_core::{user_ref, ClientSession, QueueReceiver, SessionInfo};
use xmppd_negotiation::{
    Action, BackendFailure, BindRefusal, BindRequest, ClientRole, Event, Negotiation, Request,
    TlsStep,
};
use xmppd_stream::{Event as Framed, StreamErrorCondition as Cond, NS_CLIENT};

use xmpp_parsers::stanza_error::DefinedCondition;
use xmppd_core::detached::{NotResumed, ResumeId};

use crate::conn::{shutdown_requested, Conn, Stop};
use crate::sm::{self, Counters, Sm, NS_SM};
use crate::{ListenerKind, Shared};

type Machine = Negotiation<ClientRole>;

/// A session ready for the session loop: bound, or resumed (XEP-0198 §5).
pub(crate) struct Negotiated {
    pub(crate) session: ClientSession,
    pub(crate) rx: QueueReceiver,
    /// Stream management, when the session was resumed.
    pub(crate) sm: Option<Sm>,
}

/// One connection's negotiation.
struct Driver<'a> {
    conn: &'a mut Conn,
    shared: &'a Arc<Shared>,
    peer: SocketAddr,
    kind: ListenerKind,
    /// When the connection must have a bound session (`handshake_timeout`, from accept).
    deadline: Instant,
    /// The session bound for the machine's bind request, until the machine is ready.
    bound: Option<(ClientSession, QueueReceiver)>,
    /// An account whose backend checked the password and said it is disabled; the account
    /// check that follows answers for it.
    disabled_by_backend: Option<jid::BareJid>,
}

/// Runs the stream to a bound resource, or a resumed session. The bind result (or
/// `<resumed/>`) is left in `conn.out`, to be written by the session loop, which owns the
/// unbind if that fails.
pub(crate) async fn run(
    conn: &mut Conn,
    shared: &Arc<Shared>,
    peer: SocketAddr,
    kind: ListenerKind,
    deadline: Instant,
) -> Result<Negotiated, Stop> {
    let tls = match kind {
        ListenerKind::StartTls => TlsStep::StartTls,
        ListenerKind::DirectTls => TlsStep::Direct,
        // Secured below: the TLS step is answered at once with the data of the TLS below.
        ListenerKind::Carried if conn.io.is_secure() => TlsStep::Direct,
        ListenerKind::Carried => TlsStep::Below,
    };
    let role = ClientRole::per_host(Arc::clone(&shared.client_features));
    let mut machine = Machine::new(role, Arc::clone(&shared.negotiation), tls);
    let mut driver = Driver {
        conn,
        shared,
        peer,
        kind,
        deadline,
        bound: None,
        disabled_by_backend: None,
    };
    let mut actions: VecDeque<_> = machine.start().into();
    loop {
        let event = match actions.pop_front() {
            Some(action) => match driver.act(action).await? {
                Step::Next => continue,
                Step::Answer(event) => event,
                // The bind result is the last thing the machine sent.
                Step::Ready => {
                    let (session, rx) =
                        (driver.bound.take()).ok_or(Stop::err(Cond::InternalServerError))?;
                    return Ok(Negotiated {
                        session,
                        rx,
                        sm: None,
                    });
                }
            },
            None => match driver.next_event().await? {
                // Stream management on the authenticated stream, before a resource is bound:
                // the resumption of a session instead of binding one (XEP-0198 §5).
                Event::Element(el) if el.has_ns(NS_SM) && shared.settings.sm.enabled => {
                    let Some(user) = machine.user().cloned() else {
                        actions.extend(machine.handle(Event::Element(el)));
                        continue;
                    };
                    match driver.sm_before_bind(&user, el).await {
                        Some(resumed) => return Ok(resumed),
                        None => continue,
                    }
                }
                event => event,
            },
        };
        actions.extend(machine.handle(event));
    }
}

/// What the driver does after an action.
enum Step {
    Next,
    /// Feed this to the machine.
    Answer(Event<ClientRole>),
    /// The session is bound.
    Ready,
}

impl Driver<'_> {
    /// Does one action; returns the event that answers it, if any.
    async fn act(&mut self, action: Action<ClientRole>) -> Result<Step, Stop> {
        match action {
            Action::OpenStream(open) => {
                let header = xmppd_stream::stream_header(
                    open.ns,
                    &open.from,
                    open.to.as_deref(),
                    &open.id,
                    open.lang,
                );
                self.conn.out.extend_from_slice(header.as_bytes());
            }
            Action::Send(el) => xmppd_stream::serialize(&el, NS_CLIENT, &mut self.conn.out),
            Action::UpgradeTls => return self.upgrade_tls().await.map(Step::Answer),
            Action::RestartStream { limits } => {
                self.conn.framer.reset();
                self.conn.framer.set_limits(limits);
            }
            Action::Ask(request) => {
                self.conn.flush(Some(self.deadline)).await?;
                return self.perform(request).await.map(Step::Answer);
            }
            Action::Authenticated { user, .. } => {
                (self.shared.throttle).record_success(self.peer.ip(), user.as_str())
            }
            Action::Ready(_) => return Ok(Step::Ready),
            Action::StreamError(cond, text) => return Err(Stop::Error(cond, text)),
            Action::EndStream => return Err(Stop::End),
            Action::Close => return Err(Stop::Close),
        }
        Ok(Step::Next)
    }

    /// STARTTLS or direct TLS: whatever the client pipelined before the handshake was sent in
    /// the clear and must not be taken as part of the encrypted stream.
    async fn upgrade_tls(&mut self) -> Result<Event<ClientRole>, Stop> {
        self.conn.flush(Some(self.deadline)).await?;
        self.conn.framer.reset();
        let tls = &self.shared.tls;
        let acceptor = match self.kind {
            ListenerKind::StartTls => tls.starttls_acceptor(),
            ListenerKind::DirectTls => tls.direct_acceptor(),
            ListenerKind::Carried => {
                let bindings = self.conn.io.take_carried_tls();
                return bindings.map(Event::TlsEstablished).ok_or(Stop::Gone);
            }
        };
        let io = &mut self.conn.io;
        let bindings = io.start_tls(tls, acceptor, self.deadline).await;
        self.conn.framer.reset();
        bindings.map(Event::TlsEstablished).ok_or(Stop::Gone)
    }

    /// The next framer event as the machine's event, reading as needed.
    async fn next_event(&mut self) -> Result<Event<ClientRole>, Stop> {
        self.conn.flush(Some(self.deadline)).await?;
        loop {
            match self.conn.framer.next_event() {
                Ok(Some(Framed::Header(header))) => return Ok(Event::StreamOpened(header)),
                Ok(Some(Framed::Element(el))) => return Ok(Event::Element(el)),
                Ok(Some(Framed::Close)) => return Ok(Event::StreamClosed),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "framing error");
                    return Ok(Event::BadInput(e.condition()));
                }
            }
            let Conn {
                io, rbuf, shutdown, ..
            } = &mut *self.conn;
            let n = tokio::select! {
                read = io.read(rbuf) => match read {
                    Ok(0) | Err(_) => return Err(Stop::Gone),
                    Ok(n) => n,
                },
                _ = tokio::time::sleep_until(self.deadline) => return Ok(Event::DeadlinePassed),
                _ = shutdown_requested(shutdown) => return Ok(Event::ShuttingDown),
            };
            self.conn.framer.feed(&self.conn.rbuf[..n]);
        }
    }

    async fn perform(&mut self, request: Request<ClientRole>) -> Result<Event<ClientRole>, Stop> {
        let shared = self.shared;
        let backend = |user: &jid::BareJid| {
            let backend = shared.auth.get(user.domain().as_str()).cloned();
            backend.ok_or(Stop::err(Cond::InternalServerError))
        };
        Ok(match request {
            Request::Turn { account } => {
                let now = std::time::Instant::now();
                let wait = shared.throttle.reserve(self.peer.ip(), &account, now);
                self.pause(wait).await
            }
            Request::Backoff { account } => {
                let now = std::time::Instant::now();
                let delay = (shared.throttle).record_failure(self.peer.ip(), &account, now);
                self.pause(delay).await
            }
            Request::CheckPassword { user, password } => {
                let checked = backend(&user)?
                    .check_password(&user_ref(&user), &password)
                    .await;
                if let Err(AuthError::AccountDisabled) = checked {
                    // The password is right: the answer is that of an account disabled here.
                    self.disabled_by_backend = Some(user);
                    return Ok(Event::PasswordChecked(Ok(true)));
                }
                Event::PasswordChecked(checked.map_err(|e| BackendFailure(e.to_string())))
            }
            Request::ScramKeys { user, alg } => {
                let keys = match backend(&user)?.scram_keys(&user_ref(&user), alg).await {
                    Ok(keys) => Ok(keys),
                    Err(AuthError::NoSuchUser) => Ok(None),
                    Err(e) => Err(BackendFailure(e.to_string())),
                };
                Event::ScramKeys(keys)
            }
            Request::CheckAccount { user } => Event::AccountChecked {
                enabled: self.disabled_by_backend.as_ref() != Some(&user)
                    && !shared.server.is_disabled(&user).await,
            },
            Request::PreAuthIq {
                host,
                namespace,
                iq,
            } => {
                let service = (shared.pre_auth.iter()).find(|svc| svc.namespace() == namespace);
                let Some(svc) = service else {
                    return Err(Stop::err(Cond::InternalServerError));
                };
                let (ip, max) = (self.peer.ip(), svc.quota_per_hour());
                let mut admit = || (shared.registrations).admit(ip, std::time::Instant::now(), max);
                Event::PreAuthReply(svc.answer(&host, &iq, &mut admit).await)
            }
            Request::Role(bind) => Event::Role(self.bind(bind).await),
        })
    }

    /// A stream management element before binding: a `<resume/>` is answered with the
    /// resumed session or `<failed/>`; anything else with `<failed/>` (XEP-0198 §3: enabling
    /// needs a bound resource).
    async fn sm_before_bind(
        &mut self,
        user: &jid::BareJid,
        el: minidom::Element,
    ) -> Option<Negotiated> {
        let answer = match sm::parse(el) {
            sm::Request::Resume { previd, h } => match self.resume(user, &previd, h).await {
                Ok(resumed) => return Some(resumed),
                Err(failed) => failed,
            },
            sm::Request::Bad => sm::failed(DefinedCondition::BadRequest, None),
            _ => sm::failed(DefinedCondition::UnexpectedRequest, None),
        };
        xmppd_stream::serialize(&answer, NS_CLIENT, &mut self.conn.out);
        None
    }

    /// Takes back the parked session `previd` of `user`, the client having handled `h` of the
    /// stanzas sent to it: those are dropped, the others are written first by the session
    /// loop. A session still connected is taken over from its connection, waiting for that
    /// no longer than the negotiation may take. The error is the `<failed/>` to send.
    async fn resume(
        &mut self,
        user: &jid::BareJid,
        previd: &str,
        h: u32,
    ) -> Result<Negotiated, minidom::Element> {
        let server = &self.shared.server;
        let id = ResumeId::from(previd);
        let wait = self.deadline.saturating_duration_since(Instant::now());
        let resumed = match server.resume(&id, user, wait).await {
            Ok(resumed) => resumed,
            Err(NotResumed::Unknown) => {
                tracing::info!(jid = %user, "resumption of an unknown session");
                return Err(sm::failed(DefinedCondition::ItemNotFound, None));
            }
            Err(NotResumed::Ended(state)) => {
                let handled = state.downcast_ref::<Counters>().map(|c| c.handled);
                tracing::info!(jid = %user, "resumption of an expired session");
                return Err(sm::failed(DefinedCondition::ItemNotFound, handled));
            }
        };
        let Some(counters) = resumed.state.downcast_ref::<Counters>().copied() else {
            server.forget_resumable(&id);
            server.unbind(resumed.session).await;
            return Err(sm::failed(DefinedCondition::InternalServerError, None));
        };
        // What the client handled of what it was sent: at most everything unacknowledged.
        let handled = h.wrapping_sub(counters.acked);
        if handled > counters.unacked {
            tracing::info!(jid = %user, h, "resumption acknowledging more than was sent");
            server.forget_resumable(&id);
            server.unbind(resumed.session).await;
            let too_high = sm::TooHigh {
                h,
                sent: counters.acked.wrapping_add(counters.unacked),
            };
            return Err(too_high.failed(counters.handled));
        }
        // Those are at the front of the queue, given back in order when the session was parked.
        for _ in 0..handled {
            resumed.rx.try_recv();
        }
        let answer = sm::resumed(previd, counters.handled);
        xmppd_stream::serialize(&answer, NS_CLIENT, &mut self.conn.out);
        tracing::info!(jid = %resumed.session.jid, "session resumed");
        let resumable = sm::Resumable {
            id,
            takeover: resumed.takeover,
            keep: counters.keep,
        };
        Ok(Negotiated {
            session: resumed.session,
            rx: resumed.rx,
            sm: Some(Sm::new(Some(resumable), counters.handled, h)),
        })
    }

    /// Sleeps for `wait` unless the negotiation deadline or a shutdown comes first; the
    /// machine is told which.
    async fn pause(&mut self, wait: std::time::Duration) -> Event<ClientRole> {
        if wait.is_zero() {
            return Event::Waited;
        }
        let shutdown = &mut self.conn.shutdown;
        tokio::select! {
            _ = tokio::time::sleep(wait) => Event::Waited,
            _ = tokio::time::sleep_until(self.deadline) => Event::DeadlinePassed,
            _ = shutdown_requested(shutdown) => Event::ShuttingDown,
        }
    }

    async fn bind(&mut self, request: BindRequest) -> Result<jid::FullJid, BindRefusal> {
        let info = SessionInfo {
            peer: if self.shared.settings.hide_ip {
                String::new()
            } else {
                self.peer.to_string()
            },
            secure: self.conn.io.is_secure(),
        };
        let server = Arc::clone(&self.shared.server);
        let limits = self.shared.settings.queue;
        let resource = request.resource.as_deref();
        match server.bind(request.user, resource, info, limits).await {
            Ok((session, rx)) => {
                tracing::info!(jid = %session.jid, "session bound");
                let jid = session.jid.clone();
                self.bound = Some((session, rx));
                Ok(jid)
            }
            Err(e) => {
                tracing::info!(error = %e, "bind refused");
                Err(match e {
                    xmppd_core::BindError::BadRequest => BindRefusal::BadRequest,
                    xmppd_core::BindError::ResourceConstraint => BindRefusal::ResourceConstraint,
                    xmppd_core::BindError::NotAllowed => BindRefusal::NotAllowed,
                })
            }
        }
    }
}
