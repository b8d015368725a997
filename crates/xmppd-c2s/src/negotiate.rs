//! The TCP driver of `xmppd_negotiation::Negotiation` for client streams: it turns framer
//! events into the machine's events, and does what the machine asks (write, TLS, the account
//! backend, the throttle, pre-authentication services, resource binding) until a session is
//! bound or the stream ends. The protocol decisions are the machine's.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant;
use xmppd_auth::AuthError;
use xmppd_core::{user_ref, ClientSession, QueueReceiver, SessionInfo};
use xmppd_negotiation::{
    Action, BackendFailure, BindRefusal, BindRequest, ClientRole, Event, HtMechanism, Inline,
    InlineOutcome, Negotiation, Request, StoredToken, TlsStep, UserAgent,
};
use xmppd_stream::{Event as Framed, StreamErrorCondition as Cond, NS_CLIENT};

use xmpp_parsers::stanza_error::DefinedCondition;
use xmppd_core::detached::{NotResumed, ResumeId};

use crate::conn::{read_into, shutdown_requested, Conn, Stop};
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
    /// The client's SASL2 user agent, as recorded with its session.
    user_agent: String,
    /// The FAST tokens a token login was checked against.
    fast_rows: Vec<xmppd_fast::TokenRow>,
    /// A session resumed inline in SASL2, ready for the session loop.
    resumed: Option<Negotiated>,
    /// Stream management enabled inline in Bind2.
    sm: Option<Sm>,
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
        ListenerKind::Carried(_) if conn.io.is_secure() => TlsStep::Direct,
        ListenerKind::Carried(_) => TlsStep::Below,
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
        user_agent: String::new(),
        fast_rows: Vec::new(),
        resumed: None,
        sm: None,
    };
    let mut actions: VecDeque<_> = machine.start().into();
    loop {
        let event = match actions.pop_front() {
            Some(action) => match driver.act(action).await? {
                Step::Next => continue,
                Step::Answer(event) => event,
                // The bind result is the last thing the machine sent.
                Step::Ready => {
                    if let Some(resumed) = driver.resumed.take() {
                        return Ok(resumed);
                    }
                    let (session, rx) =
                        (driver.bound.take()).ok_or(Stop::err(Cond::InternalServerError))?;
                    return Ok(Negotiated {
                        session,
                        rx,
                        sm: driver.sm.take(),
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
            Action::SetLimits(limits) => self.conn.framer.set_limits(limits),
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
            ListenerKind::Carried(_) => {
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
                io,
                framer,
                shutdown,
                ..
            } = &mut *self.conn;
            tokio::select! {
                read = read_into(io, framer, true) => match read {
                    Ok(0) | Err(_) => return Err(Stop::Gone),
                    Ok(_) => {}
                },
                _ = tokio::time::sleep_until(self.deadline) => return Ok(Event::DeadlinePassed),
                _ = shutdown_requested(shutdown) => return Ok(Event::ShuttingDown),
            };
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
            Request::FastTokens {
                user,
                client,
                mechanism,
            } => Event::FastTokens(self.fast_tokens(&user, &client, mechanism).await),
            Request::Inline { user, inline } => Event::Inline(self.inline(user, *inline).await),
        })
    }

    /// The live FAST tokens of `user`'s client `client` for `mechanism`.
    async fn fast_tokens(
        &mut self,
        user: &jid::BareJid,
        client: &str,
        mechanism: HtMechanism,
    ) -> Result<Vec<StoredToken>, BackendFailure> {
        let Some(store) = &self.shared.fast else {
            return Ok(Vec::new());
        };
        let now = xmppd_core::stanza::now_ms();
        let rows = (store.live(user, client, mechanism.name(), now).await)
            .map_err(|e| BackendFailure(e.to_string()))?;
        let tokens = rows.iter().map(|r| StoredToken {
            hash: r.hash,
            count: r.count,
        });
        let tokens = tokens.collect();
        self.fast_rows = rows;
        Ok(tokens)
    }

    /// What the client asked for inline in its SASL2 `<authenticate/>`, once authenticated:
    /// FAST token bookkeeping, then resumption (XEP-0198 §5 inline) or a Bind2 bind with the
    /// features it enables (XEP-0386 §2.3). Everything is answered inside `<success/>`.
    async fn inline(&mut self, user: jid::BareJid, inline: Inline) -> InlineOutcome {
        self.user_agent = describe(&inline.user_agent);
        let mut payloads = Vec::new();
        payloads.extend(self.fast_after_login(&user, &inline).await);
        if let Some(resume) = inline.resume.filter(|_| self.shared.settings.sm.enabled) {
            let answer = match sm::parse(resume) {
                sm::Request::Resume { previd, h } => match self.resume(&user, &previd, h).await {
                    Ok((resumed, answer)) => {
                        let jid = resumed.session.jid.clone();
                        payloads.push(answer);
                        self.resumed = Some(resumed);
                        return InlineOutcome::Bound { jid, payloads };
                    }
                    Err(failed) => failed,
                },
                _ => sm::failed(DefinedCondition::BadRequest, None),
            };
            payloads.push(answer);
        }
        let Some(bind) = inline.bind else {
            return InlineOutcome::Unbound { payloads };
        };
        let query = xmpp_parsers::bind2::BindQuery::try_from(bind).ok();
        let tag = query.as_ref().and_then(|q| q.tag.as_deref());
        let request = BindRequest {
            user,
            resource: Some(bind2_resource(tag)),
        };
        let Ok(jid) = self.bind(request).await else {
            // The client binds with the usual features, which say why.
            return InlineOutcome::Unbound { payloads };
        };
        let mut bound = Vec::new();
        if let (Some(query), Some((session, _))) = (query, &self.bound) {
            for request in &query.payloads {
                if request.has_ns(NS_SM) {
                    let settings = &self.shared.settings.sm;
                    let answer = match sm::parse(request.clone()) {
                        sm::Request::Enable { resume, max } if settings.enabled => {
                            let server = &self.shared.server;
                            let (enabled, answer) =
                                sm::enable(server, session, settings, resume, max);
                            self.sm = Some(enabled);
                            answer
                        }
                        _ => sm::failed(DefinedCondition::FeatureNotImplemented, None),
                    };
                    bound.push(answer);
                } else if let Some(answer) = self.shared.server.handle_bind2(session, request).await
                {
                    bound.push(answer);
                }
            }
        }
        let bound = xmpp_parsers::bind2::Bound {
            mam_metadata: None,
            payloads: bound,
        };
        payloads.push(bound.into());
        InlineOutcome::Bound { jid, payloads }
    }

    /// After a SASL2 login: the FAST token used is marked (or invalidated), and a token is
    /// issued when the client asked for one or the one it used is due for rotation
    /// (XEP-0484 §3.2, §3.4). Tokens are bound to the client's user-agent id.
    async fn fast_after_login(
        &mut self,
        user: &jid::BareJid,
        inline: &Inline,
    ) -> Option<minidom::Element> {
        let store = self.shared.fast.clone()?;
        let client = inline.user_agent.id.as_deref()?;
        let now = xmppd_core::stanza::now_ms();
        let policy = xmppd_fast::Policy {
            lifetime: self.shared.settings.fast_token_lifetime,
        };
        let mut issue = inline.request_token;
        if let Some(used) = &inline.token {
            let row = self.fast_rows.iter().find(|r| r.hash == used.hash);
            let done = if used.invalidate {
                store.invalidate(used.hash).await
            } else {
                if let Some(row) = row.filter(|r| policy.rotate(r, now)) {
                    issue = issue.or(HtMechanism::from_name(&row.mechanism));
                }
                store.used(used.hash, used.count).await
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "could not update a FAST token");
            }
        }
        let mechanism = issue?;
        let token = xmppd_sasl::ht::new_token();
        let expires_ms = policy.expiry(now);
        let row = xmppd_fast::TokenRow {
            hash: token.hash,
            user: user.to_string(),
            client: client.to_owned(),
            mechanism: mechanism.name().to_owned(),
            issued_ms: now,
            expires_ms,
            count: None,
        };
        if let Err(e) = store.issue(row).await {
            tracing::warn!(error = %e, "could not store a FAST token");
            return None;
        }
        let expiry = xmppd_core::stanza::xep82_datetime(expires_ms);
        let expiry = expiry.parse().ok()?;
        let answer = xmpp_parsers::fast::Token {
            token: token.token,
            expiry,
        };
        Some(answer.into())
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
                Ok((resumed, answer)) => {
                    xmppd_stream::serialize(&answer, NS_CLIENT, &mut self.conn.out);
                    return Some(resumed);
                }
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
    /// no longer than the negotiation may take. With the session comes the `<resumed/>` to
    /// send; the error is the `<failed/>` to send.
    async fn resume(
        &mut self,
        user: &jid::BareJid,
        previd: &str,
        h: u32,
    ) -> Result<(Negotiated, minidom::Element), minidom::Element> {
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
        tracing::info!(jid = %resumed.session.jid, "session resumed");
        let resumable = sm::Resumable {
            id,
            takeover: resumed.takeover,
            keep: counters.keep,
        };
        let negotiated = Negotiated {
            session: resumed.session,
            rx: resumed.rx,
            sm: Some(Sm::new(Some(resumable), counters.handled, h)),
        };
        Ok((negotiated, answer))
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
            user_agent: self.user_agent.clone(),
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

/// The resource of a Bind2 bind: the client's tag, then a random part, so that the same client
/// reconnecting gets a fresh resource and its tag still shows what it is (XEP-0386 §2.3).
fn bind2_resource(tag: Option<&str>) -> String {
    let random = format!("{:016x}", rand::random::<u64>());
    match tag.map(str::trim).filter(|t| !t.is_empty()) {
        // A resourcepart is at most 1023 bytes (RFC 7622 §3.4); the tag gives way.
        Some(tag) => {
            let end = (0..=tag.len().min(512))
                .rev()
                .find(|i| tag.is_char_boundary(*i))
                .unwrap_or(0);
            format!("{}/{random}", &tag[..end])
        }
        None => random,
    }
}

/// A user agent as `xmppd sessions` shows it: "software, device (id)", each part if given,
/// on one line.
fn describe(agent: &UserAgent) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .trim()
            .to_owned()
    };
    let named: Vec<String> = [&agent.software, &agent.device]
        .into_iter()
        .flatten()
        .map(|s| clean(s))
        .filter(|s| !s.is_empty())
        .collect();
    let mut text = named.join(", ");
    if let Some(id) = agent.id.as_deref().map(clean).filter(|s| !s.is_empty()) {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&format!("({id})"));
    }
    text.chars().take(256).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind2_resources_start_with_the_tag() {
        let r = bind2_resource(Some("Conversations.abcd"));
        let (tag, random) = r.split_once('/').unwrap();
        assert_eq!(tag, "Conversations.abcd");
        assert_eq!(random.len(), 16);
        assert_ne!(r, bind2_resource(Some("Conversations.abcd")));
        assert!(!bind2_resource(None).contains('/'));
        assert!(!bind2_resource(Some("  ")).contains('/'));
        assert!(bind2_resource(Some(&"é".repeat(600))).len() < 1023);
    }

    #[test]
    fn user_agents_are_shown_on_one_line() {
        let agent = UserAgent {
            id: Some("d4565fa7".into()),
            software: Some("Monal\tIM".into()),
            device: Some("Juliet's phone".into()),
        };
        assert_eq!(describe(&agent), "Monal IM, Juliet's phone (d4565fa7)");
        assert_eq!(describe(&UserAgent::default()), "");
    }
}
