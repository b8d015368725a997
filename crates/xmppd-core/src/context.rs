//! What a handler is given: read access to the server's shared state, and an outbox.
//!
//! Handlers (modules, components, the IM rules) never route inline. They push what they want
//! sent into the [`Context`]'s outbox; the dispatcher ([`crate::Server::dispatch`]) routes it
//! after the handler returned, in the order it was pushed. A handler therefore cannot re-enter
//! itself through routing, and nothing it holds (a room's state, a lock) is held while a stanza
//! it produced is being routed. Work that outlives one call (a room task, a refresh timer)
//! runs in a task started with [`Context::spawn`], which alone hands out a [`ServerHandle`] to
//! dispatch from, never while holding a lock.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmppd_storage::{StorageError, Store};
use xmppd_stream::StreamErrorCondition;

use crate::module::{Module, Outlet};
use crate::queue::Class;
use crate::router::{Resource, Router, SessionId};
use crate::server::{CoreConfig, Server};
use crate::session::Outbound;
use crate::stanza::{error_reply, Condition, StanzaError};

/// One queued output of a handler.
pub(crate) enum Outgoing {
    /// A stanza with `to` set, routed like any other; with that `to`, and its `from`, already
    /// parsed when the sender had them (each used only while its attribute still reads the
    /// same).
    Route(Element, Option<Jid>, Option<Jid>),
    /// One element of a fan-out, routed like any other to this recipient, which it is
    /// addressed to only as it is written (see [`Context::send_shared`]).
    RouteShared(Arc<Element>, FullJid),
    /// A stanza for exactly this local session's queue (a roster push, a reply to the session
    /// itself): no hooks, dropped if the session is gone.
    Deliver(FullJid, Arc<Element>),
    /// [`crate::module::Module::after_reply`] of the module that answered this IQ request,
    /// queued behind the answer so that it runs once the answer was routed.
    AfterReply(Arc<dyn Module>, Element),
}

/// The stanzas waiting to be routed, first in first out. A caller outside any handler that
/// needs a [`Context`] (a service's own task, a test) makes one with [`Context::new`] and
/// routes what it queued with [`Server::drain`].
#[derive(Default)]
pub struct Outbox {
    pub(crate) queue: VecDeque<Outgoing>,
}

/// The addresses of a stanza, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressing {
    pub from: Jid,
    pub to: Jid,
}

/// A handler's view of the server: configuration, storage, the session registry, and an
/// outbox for what it sends.
pub struct Context<'a> {
    server: &'a Arc<Server>,
    outbox: &'a mut Outbox,
    /// The addresses of the message whose hooks are running, as the core parsed them.
    addressing: Option<Addressing>,
}

impl<'a> Context<'a> {
    /// A context on `server` queueing into `outbox`, for code outside any handler: nothing is
    /// routed until [`Server::drain`] of that outbox.
    pub fn new(server: &'a Arc<Server>, outbox: &'a mut Outbox) -> Self {
        Context {
            server,
            outbox,
            addressing: None,
        }
    }

    pub(crate) fn server(&self) -> &Arc<Server> {
        self.server
    }

    pub(crate) fn outbox_mut(&mut self) -> &mut Outbox {
        self.outbox
    }

    /// `stanza`'s `from` and `to`, parsed: in a message hook, the core's own parse of the
    /// message, borrowed (no second parse, no copy) as long as its attributes still read the
    /// same; otherwise parsed here. None when either is missing or malformed.
    pub fn addressing(&self, stanza: &Element) -> Option<Cow<'_, Addressing>> {
        let (from, to) = (stanza.attr("from")?, stanza.attr("to")?);
        match &self.addressing {
            Some(a) if a.from.as_str() == from && a.to.as_str() == to => Some(Cow::Borrowed(a)),
            _ => Some(Cow::Owned(Addressing {
                from: crate::address::parse_jid(from).ok()?,
                to: crate::address::parse_jid(to).ok()?,
            })),
        }
    }

    /// Sets what [`Context::addressing`] answers from without parsing, while the hooks of one
    /// message run.
    pub(crate) fn set_addressing(&mut self, addressing: Option<Addressing>) {
        self.addressing = addressing;
    }

    /// Takes back what [`Context::set_addressing`] set, for routing the message on.
    pub(crate) fn take_addressing(&mut self) -> Option<Addressing> {
        self.addressing.take()
    }

    /// Queues `stanza` (with `to` set) for routing once the handler has returned.
    pub fn send(&mut self, stanza: Element) {
        self.outbox
            .queue
            .push_back(Outgoing::Route(stanza, None, None));
    }

    /// [`Context::send`] of a stanza whose `to` the caller has parsed into `to` already, so
    /// that routing does not parse it again.
    pub(crate) fn send_to(&mut self, stanza: Element, to: Jid) {
        (self.outbox.queue).push_back(Outgoing::Route(stanza, Some(to), None));
    }

    /// [`Context::send_to`] of a stanza whose `from` the caller has parsed too (a session's
    /// own JID), so that the recipient's hooks do not parse it again.
    pub(crate) fn send_from_to(&mut self, stanza: Element, from: Jid, to: Jid) {
        (self.outbox.queue).push_back(Outgoing::Route(stanza, Some(to), Some(from)));
    }

    /// Queues `stanza` for routing to `to`, sharing the element with the other recipients of
    /// a fan-out: a local session's queue holds the shared element and writes it addressed to
    /// that session, so sending a large stanza to many costs one copy. Routed as a copy with
    /// its own `to` wherever it cannot be shared (another domain, message hooks, a gone
    /// session's fallbacks).
    pub fn send_shared(&mut self, to: &FullJid, stanza: Arc<Element>) {
        (self.outbox.queue).push_back(Outgoing::RouteShared(stanza, to.clone()));
    }

    /// Queues every stanza of `stanzas`, in order.
    pub fn send_all(&mut self, stanzas: impl IntoIterator<Item = Element>) {
        for s in stanzas {
            self.send(s);
        }
    }

    /// Queues `stanza` for the local session `jid` only, in order with everything else this
    /// handler sends. Dropped if that session is gone by then.
    pub fn deliver(&mut self, jid: &FullJid, stanza: Element) {
        self.deliver_shared(jid, Arc::new(stanza));
    }

    /// [`Context::deliver`] of a stanza shared with other recipients (one copy for all).
    pub fn deliver_shared(&mut self, jid: &FullJid, stanza: Arc<Element>) {
        self.outbox
            .queue
            .push_back(Outgoing::Deliver(jid.clone(), stanza));
    }

    /// The queue of the local session `jid`, for an outbound filter letting go, at once and
    /// in order, what it held for it ([`crate::module::Module::filter_outbound`]): not routed,
    /// no hooks, not behind this handler's outbox.
    pub fn outlet<'b>(&'b self, jid: &'b FullJid) -> Outlet<'b> {
        Outlet::new(&**self.server.router(), jid)
    }

    /// Queues the error reply to `original` (none for an error or a result).
    pub fn bounce(&mut self, original: &Element, err: StanzaError) {
        if let Some(reply) = error_reply(original, &err) {
            self.send(reply);
        }
    }

    /// For a component that serves IQ requests to its `domain` alone (no entities below
    /// it): whether `stanza` is one. Anything else is dealt with here: a message is bounced
    /// with `<service-unavailable/>`, a request to another address of the domain with
    /// `<item-not-found/>`; results, errors and presence end here.
    pub fn domain_request(&mut self, stanza: &Element, domain: &str) -> bool {
        if stanza.name() != "iq" || !matches!(stanza.attr("type"), Some("get" | "set")) {
            if stanza.name() == "message" {
                self.bounce(stanza, StanzaError::new(Condition::ServiceUnavailable));
            }
            return false;
        }
        if stanza.attr("to") != Some(domain) {
            self.bounce(stanza, StanzaError::new(Condition::ItemNotFound));
            return false;
        }
        true
    }

    pub fn config(&self) -> &CoreConfig {
        self.server.config()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.server.store()
    }

    /// The session registry as a handler sees it: who is bound, available, with which
    /// priority, and closing a session. Queueing for a session goes through the outbox.
    pub fn sessions(&self) -> Sessions<'a> {
        let server: &'a Server = self.server;
        Sessions(server.router().as_ref())
    }

    /// Asks the local session `session` to report through [`Module::on_written`] once its
    /// writer has written everything queued for it before: the paced path for a backlog a
    /// module hands a session page by page, from its own `on_written` (stored messages, after
    /// a login). Charged to the session's stored budget. False if the session is gone or
    /// closing.
    pub fn request_written(&self, session: SessionId) -> bool {
        (self.server.router().local(session))
            .is_some_and(|l| l.queue.push(Outbound::Written, Class::Stored).is_ok())
    }

    /// Whether the local session `jid` is parked by stream management, its connection gone
    /// (`crate::detached`): what is queued for it waits for a resumption that may never come.
    pub fn is_detached(&self, jid: &FullJid) -> bool {
        self.server.is_detached(jid)
    }

    /// The resources of `user` bound now.
    pub fn resources(&self, user: &BareJid) -> Vec<Resource> {
        self.server.router().resources(user)
    }

    /// Full JIDs of every session bound on this server.
    pub fn online(&self) -> Vec<FullJid> {
        self.server.online()
    }

    /// The virtual hosts served, normalised.
    pub fn hosts(&self) -> &[String] {
        self.server.hosts()
    }

    pub fn is_local_host(&self, domain: &str) -> bool {
        self.server.is_local_host(domain)
    }

    pub fn is_admin(&self, jid: &BareJid) -> bool {
        self.server.is_admin(jid)
    }

    /// A fresh id for server-generated stanzas.
    pub fn next_id(&self) -> u64 {
        self.server.next_id()
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        crate::stanza::now_ms()
    }

    /// Seconds since the server started.
    pub fn uptime_secs(&self) -> u64 {
        self.server.uptime_secs()
    }

    /// Ends every session of `user` with a stream error; returns how many were told to close
    /// (see [`Server::end_sessions`]).
    pub fn end_sessions(
        &self,
        user: &BareJid,
        cond: StreamErrorCondition,
        text: Option<&str>,
    ) -> usize {
        self.server.end_sessions(user, cond, text)
    }

    /// Disables or re-enables an account; disabling also ends its sessions.
    pub async fn set_disabled(&self, user: &BareJid, disabled: bool) -> Result<(), StorageError> {
        self.server.set_disabled(user, disabled).await
    }

    /// Whether the account is disabled.
    pub async fn is_disabled(&self, user: &BareJid) -> bool {
        self.server.is_disabled(user).await
    }

    /// Every module, in registration order: what the IM rules consult for disco and run
    /// hooks of (e.g. [`Module::on_available`]) on the handler's own context.
    pub fn modules(&self) -> &'a [Arc<dyn Module>] {
        let server: &'a Server = self.server;
        server.modules()
    }

    /// The modules that contribute roster items ([`crate::Hooks::roster`]).
    pub fn roster_modules(&self) -> &'a [Arc<dyn Module>] {
        let server: &'a Server = self.server;
        server.roster_modules()
    }

    /// The features the server's disco#info lists, sorted.
    pub fn server_features(&self) -> &'a [String] {
        let server: &'a Server = self.server;
        server.server_features()
    }

    /// The features an account's disco#info lists, sorted.
    pub fn account_features(&self) -> &'a [String] {
        let server: &'a Server = self.server;
        server.account_features()
    }

    /// The domains of the components served here, with each one's name, sorted by domain.
    pub fn components(&self) -> Vec<(&'a str, &'a str)> {
        let server: &'a Server = self.server;
        let mut all: Vec<_> = server
            .component_domains()
            .map(|(d, c)| (d.as_str(), c.name()))
            .collect();
        all.sort_unstable();
        all
    }

    /// Spawns the task that `task` makes, for work that outlives this call (a room's task, a
    /// timer). The task gets a [`ServerHandle`] to dispatch from; the handler gets neither the
    /// handle nor the task's join handle, so it cannot route inline by waiting on either.
    pub fn spawn<F, Fut>(&self, task: F)
    where
        F: FnOnce(ServerHandle) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(task(ServerHandle(Arc::downgrade(self.server))));
    }
}

/// The session registry as a handler sees it ([`Context::sessions`]): reads, state updates
/// of a session's routing entry, and closing a session; no binding, and no queueing that
/// would skip the outbox and the outbound filters.
#[derive(Clone, Copy)]
pub struct Sessions<'a>(&'a dyn Router);

impl<'a> Sessions<'a> {
    /// All resources of an account (empty when none), copied.
    pub fn resources(&self, bare: &BareJid) -> Vec<Resource> {
        self.0.resources(bare)
    }

    /// Calls `f` with the resources of an account, without copying them. `f` runs under the
    /// table's lock: it must not use the registry.
    pub fn with_resources(&self, bare: &BareJid, f: &mut dyn FnMut(&[Resource])) {
        self.0.with_resources(bare, f)
    }

    /// Number of resources bound for an account.
    pub fn resource_count(&self, bare: &BareJid) -> usize {
        self.0.resource_count(bare)
    }

    /// Every bound full JID.
    pub fn all(&self) -> Vec<FullJid> {
        self.0.all()
    }

    /// Applies `f` to the routing entry of `jid` if it is still the session `session`
    /// (availability, priority, interest in roster pushes).
    pub fn update(&self, jid: &FullJid, session: SessionId, f: &mut dyn FnMut(&mut Resource)) {
        self.0.update(jid, session, f)
    }

    /// Closes the session `session` with a stream error; false if it is not bound here or
    /// already closing.
    pub fn close(
        &self,
        session: SessionId,
        cond: StreamErrorCondition,
        text: Option<&str>,
    ) -> bool {
        self.0.close(session, cond, text)
    }
}

/// An owned, weak handle on the server for tasks of a service: it dispatches stanzas from
/// outside any handler. It does not keep the server alive.
#[derive(Clone)]
pub struct ServerHandle(Weak<Server>);

impl ServerHandle {
    /// Routes `stanzas` in order, and everything they cause, before returning. Never call it
    /// while holding a lock that a handler may need.
    pub async fn dispatch_all(&self, stanzas: impl IntoIterator<Item = Element>) {
        if let Some(server) = self.0.upgrade() {
            server.dispatch_all(stanzas).await;
        }
    }

    /// Runs `f` with a context, then dispatches what it queued.
    pub async fn with_context<R>(&self, f: impl FnOnce(&mut Context<'_>) -> R) -> Option<R> {
        let server = self.0.upgrade()?;
        let mut outbox = Outbox::default();
        let r = f(&mut Context::new(&server, &mut outbox));
        server.drain(&mut outbox).await;
        Some(r)
    }
}
