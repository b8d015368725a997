//! [`Server`]: the hosts, the registry of modules and components, and the dispatcher.
//!
//! A stanza from a client enters through [`Server::handle_from_client`], which stamps `from`
//! and hands it to the sender-side hooks of the modules (presence, IQs, messages). Whatever a handler
//! wants sent goes into its [`Context`]'s outbox; [`Server::drain`] routes the outbox first in
//! first out, each stanza through one decision (`route_one`): a served host (accounts and the
//! server itself, whose IQs go to the module that claimed the payload namespace), a
//! component's subdomain, or a remote domain (the registered [`RemoteRouter`], else
//! `<remote-server-not-found/>`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmppd_storage::{SessionRecord, Store, UserRef};
use xmppd_stream::StreamErrorCondition;

use crate::address::Bare;
use crate::context::{Addressing, Context, Outbox, Outgoing};
use crate::module::{
    Component, HookAction, Hooks, IqKind, IqRequest, Module, Outlet, RemoteRouter,
};
use crate::queue::{QueueLimits, QueueReceiver, SessionQueue};
use crate::router::{LocalRouter, LocalSession, NodeId, Resource, Router, SendError, SessionId};
use crate::session::{class_for, ClientSession, Outbound, SessionInfo, SharedPresence};
use crate::stanza::{self, error_reply, iq_result, Condition, StanzaError};

/// Why a resource could not be bound (RFC 6120 §7.6.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// The requested resource is not a valid resourcepart: `<bad-request/>`.
    #[error("bad resource")]
    BadRequest,
    /// Too many resources for this account: `<resource-constraint/>`.
    #[error("too many resources")]
    ResourceConstraint,
    /// The account may not bind (disabled): `<not-allowed/>`.
    #[error("not allowed")]
    NotAllowed,
}

/// Settings of the core (the binary maps the config file onto this).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Virtual hosts served (domain names).
    pub hosts: Vec<String>,
    /// Name of this node (for session records; one per process).
    pub node_name: String,
    /// Offline messages kept per user (XEP-0160); further ones bounce with `<service-unavailable/>`.
    pub offline_max: usize,
    /// Other processes share the database: offline messages are claimed page by page
    /// (`OfflineStore::take_offline`, removed as they are read) so that each is delivered by
    /// one process only, instead of read and removed once written (one process: a message
    /// whose session closed before writing it comes again at the next login).
    pub offline_shared: bool,
    /// Reveal the operating system in XEP-0092 software version answers.
    pub show_os: bool,
    /// Resources one account may bind at once.
    pub max_resources_per_user: usize,
    /// Administrators named in the configuration (bare JIDs).
    pub admins: Vec<String>,
    /// Stored roster items one account may have.
    pub max_roster_items: usize,
    /// How long the name of a removed account may not be registered again; zero: no wait.
    pub tombstone: Duration,
    /// Largest presence a client may send: its presence is kept (for probes, for rooms) and
    /// sent to every contact and occupant.
    pub max_presence_bytes: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            hosts: vec!["localhost".into()],
            node_name: "xmppd".into(),
            offline_max: 1000,
            offline_shared: false,
            show_os: false,
            max_resources_per_user: 16,
            admins: Vec::new(),
            max_roster_items: 5000,
            tombstone: Duration::from_secs(30 * 24 * 3600),
            max_presence_bytes: 16 * 1024,
        }
    }
}

/// Assembles a [`Server`] from its config, store, modules and components.
pub struct ServerBuilder {
    config: CoreConfig,
    store: Arc<dyn Store>,
    router: Option<Arc<dyn Router>>,
    modules: Vec<Arc<dyn Module>>,
    components: HashMap<String, Arc<dyn Component>>,
    remote: Option<Arc<dyn RemoteRouter>>,
}

impl ServerBuilder {
    /// Adds a module; hooks run in the order modules are added.
    pub fn module(mut self, m: Arc<dyn Module>) -> Self {
        self.modules.push(m);
        self
    }

    /// Adds several modules, in order.
    pub fn modules(mut self, ms: impl IntoIterator<Item = Arc<dyn Module>>) -> Self {
        self.modules.extend(ms);
        self
    }

    /// Gives `domain` (e.g. `conference.example.org`) to a component.
    pub fn component(mut self, domain: &str, c: Arc<dyn Component>) -> Self {
        self.components.insert(domain.to_ascii_lowercase(), c);
        self
    }

    /// Hands stanzas for other servers' domains to `r` (server-to-server federation).
    pub fn remote(mut self, r: Arc<dyn RemoteRouter>) -> Self {
        self.remote = Some(r);
        self
    }

    /// Replaces the single-node session registry (e.g. with a clustered one).
    pub fn router(mut self, r: Arc<dyn Router>) -> Self {
        self.router = Some(r);
        self
    }

    pub fn build(self) -> Arc<Server> {
        let modules = self.modules;
        let mut server_iq = HashMap::new();
        let mut account_iq = HashMap::new();
        let mut nonzas = HashMap::new();
        let mut bind2 = HashMap::new();
        for m in &modules {
            for ns in m.bind2_namespaces() {
                bind2.entry(ns).or_insert_with(|| m.clone());
            }
            for ns in m.nonza_namespaces() {
                nonzas.entry(ns).or_insert_with(|| m.clone());
            }
            for ns in m.server_iq_namespaces() {
                server_iq.entry(ns).or_insert_with(|| m.clone());
            }
            for ns in m.account_iq_namespaces() {
                account_iq.entry(ns).or_insert_with(|| m.clone());
            }
        }
        let mut server_features: Vec<String> =
            modules.iter().flat_map(|m| m.server_features()).collect();
        server_features.sort();
        server_features.dedup();
        let mut account_features: Vec<String> =
            modules.iter().flat_map(|m| m.account_features()).collect();
        account_features.sort();
        account_features.dedup();
        let hosts = self
            .config
            .hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        let with = |f: fn(Hooks) -> bool| -> Vec<Arc<dyn Module>> {
            modules.iter().filter(|m| f(m.hooks())).cloned().collect()
        };
        let (message_out, message_in) = (with(|h| h.message_out), with(|h| h.message_in));
        let message_check = with(|h| h.message_check);
        let (undeliverable, roster_modules) = (with(|h| h.undeliverable), with(|h| h.roster));
        let (delivered, outbound) = (with(|h| h.delivered), with(|h| h.outbound));
        let (presence_in, iq_in) = (with(|h| h.presence_in), with(|h| h.iq_in));
        let (presence_out, iq_out) = (with(|h| h.presence_out), with(|h| h.iq_out));
        let presence_to_account = with(|h| h.presence_to_account);
        let server = Arc::new(Server {
            presence_out,
            iq_out,
            presence_to_account,
            message_out,
            message_in,
            message_check,
            undeliverable,
            roster_modules,
            delivered,
            outbound,
            presence_in,
            iq_in,
            hosts,
            config: self.config,
            store: self.store,
            router: self.router.unwrap_or_else(|| Arc::new(LocalRouter::new())),
            modules,
            server_iq,
            account_iq,
            nonzas,
            bind2,
            components: self.components,
            remote: self.remote,
            server_features,
            account_features,
            next_id: AtomicU64::new(1),
            node: NodeId::SINGLE,
            started: Instant::now(),
            dynamic_admins: RwLock::new(HashSet::new()),
            detached: Default::default(),
        });
        let mut outbox = Outbox::default();
        let cx = Context::new(&server, &mut outbox);
        for m in &server.modules {
            m.on_started(&cx);
        }
        server
    }
}

/// The core of one xmppd process.
pub struct Server {
    config: CoreConfig,
    hosts: Vec<String>,
    store: Arc<dyn Store>,
    router: Arc<dyn Router>,
    modules: Vec<Arc<dyn Module>>,
    /// The modules declaring each per-stanza hook, in registration order.
    message_out: Vec<Arc<dyn Module>>,
    message_in: Vec<Arc<dyn Module>>,
    message_check: Vec<Arc<dyn Module>>,
    undeliverable: Vec<Arc<dyn Module>>,
    roster_modules: Vec<Arc<dyn Module>>,
    delivered: Vec<Arc<dyn Module>>,
    outbound: Vec<Arc<dyn Module>>,
    presence_in: Vec<Arc<dyn Module>>,
    iq_in: Vec<Arc<dyn Module>>,
    presence_out: Vec<Arc<dyn Module>>,
    iq_out: Vec<Arc<dyn Module>>,
    presence_to_account: Vec<Arc<dyn Module>>,
    server_iq: HashMap<&'static str, Arc<dyn Module>>,
    account_iq: HashMap<&'static str, Arc<dyn Module>>,
    /// The module taking each namespace of nonzas ([`Module::nonza_namespaces`]).
    nonzas: HashMap<&'static str, Arc<dyn Module>>,
    /// The module taking each namespace of Bind2 inline requests ([`Module::bind2_namespaces`]).
    bind2: HashMap<&'static str, Arc<dyn Module>>,
    components: HashMap<String, Arc<dyn Component>>,
    /// Where stanzas for other servers go; none: they bounce.
    remote: Option<Arc<dyn RemoteRouter>>,
    server_features: Vec<String>,
    account_features: Vec<String>,
    next_id: AtomicU64,
    /// The node this server is in a cluster's session ids; the single node for now.
    node: NodeId,
    started: Instant,
    /// Administrators from a directory (e.g. an LDAP group), refreshed by their provider.
    dynamic_admins: RwLock<HashSet<BareJid>>,
    /// Sessions kept bound while no connection serves them.
    pub(crate) detached: crate::detached::Detached,
}

/// The user-data key marking an account as disabled (XEP-0133 disable-user).
pub const DISABLED_KEY: &str = "xmppd:disabled";

impl Server {
    pub fn builder(config: CoreConfig, store: Arc<dyn Store>) -> ServerBuilder {
        ServerBuilder {
            config,
            store,
            router: None,
            modules: Vec::new(),
            components: HashMap::new(),
            remote: None,
        }
    }

    /// The virtual hosts served, normalised.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    pub fn is_local_host(&self, domain: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(domain))
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn router(&self) -> &Arc<dyn Router> {
        &self.router
    }

    /// Whether `jid` administers this server: listed in the configuration, or in the directory
    /// set last given to [`Server::set_dynamic_admins`].
    pub fn is_admin(&self, jid: &BareJid) -> bool {
        self.config
            .admins
            .iter()
            .any(|a| a.eq_ignore_ascii_case(jid.as_str()))
            || self
                .dynamic_admins
                .read()
                .map(|s| s.contains(jid))
                .unwrap_or(false)
    }

    /// Replaces the administrators that come from a directory (the configured ones stay).
    pub fn set_dynamic_admins(&self, admins: HashSet<BareJid>) {
        if let Ok(mut s) = self.dynamic_admins.write() {
            *s = admins;
        }
    }

    /// Whether the account is disabled (it may not bind a session).
    pub async fn is_disabled(&self, user: &BareJid) -> bool {
        matches!(
            self.store.get_data(&user_ref(user), DISABLED_KEY).await,
            Ok(Some(_))
        )
    }

    /// Disables or re-enables an account; disabling also ends its sessions.
    pub async fn set_disabled(
        &self,
        user: &BareJid,
        disabled: bool,
    ) -> Result<(), xmppd_storage::StorageError> {
        let uref = user_ref(user);
        if disabled {
            self.store.set_data(&uref, DISABLED_KEY, "1").await?;
            self.end_sessions(
                user,
                StreamErrorCondition::NotAuthorized,
                Some("Account disabled"),
            );
        } else {
            self.store.remove_data(&uref, DISABLED_KEY).await?;
        }
        Ok(())
    }

    /// Ends every session of `user` with a stream error; returns how many were told to close
    /// (sessions already ending are not counted). A close never waits for queue space.
    pub fn end_sessions(
        &self,
        user: &BareJid,
        cond: StreamErrorCondition,
        text: Option<&str>,
    ) -> usize {
        (self.router.resources(user).iter())
            .filter(|r| self.router.close(r.session, cond, text))
            .count()
    }

    /// Full JIDs of every session bound on this server.
    pub fn online(&self) -> Vec<FullJid> {
        self.router.all()
    }

    /// Seconds since the server started.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// disco#info features of the served domains: every module's, sorted, without repeats.
    pub fn server_features(&self) -> &[String] {
        &self.server_features
    }

    /// disco#info features of an account's bare JID: every module's, sorted, without repeats.
    pub fn account_features(&self) -> &[String] {
        &self.account_features
    }

    /// The components and the subdomains they own.
    pub fn component_domains(&self) -> impl Iterator<Item = (&String, &Arc<dyn Component>)> {
        self.components.iter()
    }

    /// Every module, in registration order.
    pub fn modules(&self) -> &[Arc<dyn Module>] {
        &self.modules
    }

    /// The modules contributing roster items ([`Hooks::roster`]), in registration order.
    pub fn roster_modules(&self) -> &[Arc<dyn Module>] {
        &self.roster_modules
    }

    /// Stream features the modules add after authentication on a stream to `host`, besides
    /// `<bind/>` and `<session/>` that the driver writes (e.g. roster versioning `<ver/>`,
    /// caps `<c/>`).
    pub fn c2s_features(&self, host: &str) -> Vec<Element> {
        self.modules
            .iter()
            .flat_map(|m| m.stream_features(host))
            .collect()
    }

    /// A fresh id for server-generated stanzas and sessions.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Binds a resource for `user` (server-generated when `resource` is `None`). A session already
    /// holding that resource is replaced: it is closed with `<conflict/>`. Returns the session
    /// state and the receiving end of its outbound queue (bounded by `limits`).
    pub async fn bind(
        self: &Arc<Self>,
        user: BareJid,
        resource: Option<&str>,
        info: SessionInfo,
        limits: QueueLimits,
    ) -> Result<(ClientSession, QueueReceiver), BindError> {
        let jid = crate::address::bound_jid(&user, resource).ok_or(BindError::BadRequest)?;
        if self.is_disabled(&user).await {
            return Err(BindError::NotAllowed);
        }
        let mut existing = self.router.resources(&user);
        // A session kept for resumption makes room for a new one, the oldest first (XEP-0198
        // §5: the client that reconnects without resuming is not refused for its own ghost).
        while existing.len() >= self.config.max_resources_per_user
            && !existing.iter().any(|r| r.jid == jid)
            && self.end_oldest_detached(&user).await
        {
            existing = self.router.resources(&user);
        }
        let count = existing.len();
        let previous = existing.into_iter().find(|r| r.jid == jid);
        if previous.is_none() && count >= self.config.max_resources_per_user {
            return Err(BindError::ResourceConstraint);
        }
        // RFC 6120 §7.7.2.2: the newest session wins. The one it replaces has its presence
        // ended first, while the new one cannot send any yet.
        if let Some(old) = previous {
            if let Some(local) = self.router.local(old.session) {
                self.end_presence(&jid, old.session, &local.presence).await;
            }
        }
        let id = SessionId {
            node: self.node,
            seq: self.next_id(),
        };
        let (queue, rx) = SessionQueue::new(limits);
        let local = LocalSession::new(Arc::clone(&queue));
        let presence = Arc::clone(&local.presence);
        let replaced = self.router.insert(Resource::new(jid.clone(), id), local);
        // Checked again after inserting: binds racing each other past the first check cannot
        // together exceed the limit (the one that finds too many withdraws).
        if replaced.is_none()
            && self.router.resource_count(&user) > self.config.max_resources_per_user
        {
            self.router.remove(&jid, id);
            return Err(BindError::ResourceConstraint);
        }
        if let Some((old, Some(local))) = replaced {
            // Usually `previous`, already ended; a bind racing this one may have come between.
            self.end_presence(&jid, old.session, &local.presence).await;
            local.queue.close(
                StreamErrorCondition::Conflict,
                Some("Replaced by new connection".into()),
            );
        }
        let rec = SessionRecord {
            jid: jid.to_string(),
            peer: info.peer.clone(),
            node: self.config.node_name.clone(),
            started_ms: stanza::now_ms(),
            user_agent: info.user_agent.clone(),
        };
        if let Err(e) = self.store.session_opened(&rec).await {
            tracing::warn!(error = %e, "could not record session");
        }
        let mut outbox = Outbox::default();
        let cx = &mut Context::new(self, &mut outbox);
        for m in &self.modules {
            m.on_session_opened(cx, &jid).await;
        }
        self.drain(&mut outbox).await;
        tracing::debug!(jid = %jid, "session bound");
        Ok((ClientSession::new(jid, id, info, queue, presence), rx))
    }

    /// Processes one stanza (`message`, `presence`, `iq` in `jabber:client`) from an established
    /// session: stamps `from`, applies hooks and RFC 6121 rules, and dispatches what results.
    /// Never fails: errors go back to the sender as stanza errors.
    pub async fn handle_from_client(
        self: &Arc<Self>,
        session: &mut ClientSession,
        stanza: Element,
    ) {
        // What this produces for the sender itself answers its request (queue budgets).
        let jid = session.jid.clone();
        let mut outbox = Outbox::default();
        crate::session::handling(jid, async {
            self.from_client(&mut Context::new(self, &mut outbox), session, stanza)
                .await;
            self.drain(&mut outbox).await;
        })
        .await
    }

    /// Processes a top-level element other than a stanza from an established session (a
    /// nonza: client state indication): the module claiming its namespace handles it, and what
    /// that queues is routed before this returns. False if no module claims it.
    pub async fn handle_nonza(self: &Arc<Self>, session: &ClientSession, nonza: &Element) -> bool {
        let Some(module) = self.nonzas.get(nonza.ns().as_str()).cloned() else {
            return false;
        };
        let mut outbox = Outbox::default();
        crate::session::handling(session.jid.clone(), async {
            (module.on_nonza(&mut Context::new(self, &mut outbox), session, nonza)).await;
            self.drain(&mut outbox).await;
        })
        .await;
        true
    }

    /// The namespaces modules enable inline in a Bind2 `<bind/>` (XEP-0386 §2.2).
    pub fn bind2_namespaces(&self) -> Vec<&'static str> {
        let mut namespaces: Vec<_> = self.bind2.keys().copied().collect();
        namespaces.sort_unstable();
        namespaces
    }

    /// One request inside the Bind2 `<bind/>` of `session`: the module of its namespace
    /// enables the feature, and what it queued is routed. `None` if no module claims it.
    pub async fn handle_bind2(
        self: &Arc<Self>,
        session: &ClientSession,
        request: &Element,
    ) -> Option<Element> {
        let module = self.bind2.get(request.ns().as_str()).cloned()?;
        let mut outbox = Outbox::default();
        let answer = crate::session::handling(session.jid.clone(), async {
            let cx = &mut Context::new(self, &mut outbox);
            let answer = module.on_bind2(cx, session, request).await;
            self.drain(&mut outbox).await;
            answer
        })
        .await;
        answer
    }

    async fn from_client(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        session: &mut ClientSession,
        mut stanza: Element,
    ) {
        // RFC 6120 §8.1.2.1: the server stamps the full JID, whatever the client wrote.
        stanza::set_attr(&mut stanza, "from", session.jid.as_str());
        // Parsed once here; routing takes this parse along instead of parsing `to` again.
        let to = match stanza
            .attr("to")
            .map(|to| (crate::address::parse_jid(to), to))
        {
            None => None,
            Some((Ok(j), written)) => {
                if j.as_str() != written {
                    stanza::set_attr(&mut stanza, "to", j.as_str());
                }
                Some(j)
            }
            Some((Err(_), _)) => {
                reply_error(cx, session, &stanza, Condition::JidMalformed.into());
                return;
            }
        };
        match stanza.name() {
            "presence" => self.presence_from_client(cx, session, stanza).await,
            "iq" => self.iq_from_client(cx, session, stanza, to).await,
            "message" => self.message_from_client(cx, session, stanza, to).await,
            _ => {}
        }
    }

    /// Presence from a client, under its session's presence lock (see
    /// [`Module::on_presence_out`]): what it causes is routed before the lock is released, so a
    /// successor binding the same resource, which takes that lock to end this session's
    /// presence, never ends it before, or in the middle of, what the session sent.
    async fn presence_from_client(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        session: &ClientSession,
        mut pres: Element,
    ) {
        let shared = Arc::clone(&session.presence);
        let mut state = shared.lock().await;
        if state.ended {
            // Replaced: what its connection still sends must not follow the unavailable that
            // ended it, nor speak for the successor.
            tracing::debug!(jid = %session.jid, "presence from a replaced session dropped");
            return;
        }
        let mut taken = false;
        for m in &self.presence_out {
            if let HookAction::Stop(err) =
                m.on_presence_out(cx, session, &mut state, &mut pres).await
            {
                if let Some(err) = err {
                    reply_error(cx, session, &pres, err);
                }
                taken = true;
                break;
            }
        }
        if !taken && pres.attr("to").is_some() {
            cx.send(pres);
        }
        // Routed here rather than once the handler returned, for the lock to cover it: this
        // runs for a client's stanza, outside any dispatch, so nothing re-enters.
        self.drain(cx.outbox_mut()).await;
    }

    /// Ends, once, the presence that session `jid` (`id`) gave out: the modules'
    /// [`Module::on_presence_end`], under its presence lock, routed before the lock is
    /// released. Called when it unbinds, and by a successor binding the same resource before
    /// that successor can send anything: the old session's unavailable always comes before the
    /// new one's presence, and a room sees a leave before the new session joins (XEP-0045
    /// §7.2).
    async fn end_presence(self: &Arc<Self>, jid: &FullJid, id: SessionId, state: &SharedPresence) {
        let mut state = state.lock().await;
        if state.ended {
            return;
        }
        state.ended = true;
        let mut outbox = Outbox::default();
        let cx = &mut Context::new(self, &mut outbox);
        for m in &self.modules {
            m.on_presence_end(cx, jid, id, &mut state).await;
        }
        self.drain(&mut outbox).await;
    }

    /// The writer of `session` reached an [`Outbound::Written`]: everything queued before it
    /// is written. The modules' [`Module::on_written`] run (the next page of offline
    /// messages, if the session is taking them).
    pub async fn written(self: &Arc<Self>, session: &ClientSession) {
        let mut outbox = Outbox::default();
        let cx = &mut Context::new(self, &mut outbox);
        for m in &self.modules {
            m.on_written(cx, session).await;
        }
        self.drain(&mut outbox).await;
    }

    /// Ends a session: unavailable presence to subscribers and directed-presence targets,
    /// unregisters the resource, re-routes what was still queued for it.
    pub async fn unbind(self: &Arc<Self>, session: ClientSession) {
        let bare = session.jid.bare();
        let resources = self.router.resources(&bare);
        let priority = (resources.iter())
            .find(|r| r.session == session.id)
            .map_or(-1, |r| if r.available { r.priority } else { -1 });
        // A session replaced by a newer one for the same resource had its presence ended by its
        // successor, which speaks for that full JID now (presence, session record, modules'
        // view): an unavailable from here could arrive after the successor's presence.
        let replaced = (resources.iter()).any(|r| r.jid == session.jid && r.session != session.id);
        if replaced {
            crate::session::end_queue(self, &session, priority).await;
            tracing::info!(jid = %session.jid, "replaced session closed");
            return;
        }
        self.end_presence(&session.jid, session.id, &session.presence)
            .await;
        self.router.remove(&session.jid, session.id);
        crate::session::end_queue(self, &session, priority).await;
        if let Err(e) = self.store.session_closed(session.jid.as_str()).await {
            tracing::warn!(error = %e, "could not clear session record");
        }
        let mut outbox = Outbox::default();
        let cx = &mut Context::new(self, &mut outbox);
        for m in &self.modules {
            m.on_session_closed(cx, &session.jid).await;
        }
        self.drain(&mut outbox).await;
        tracing::info!(jid = %session.jid, "session closed");
    }

    /// A shared message straight into a local session's queue, when routing it would do no
    /// more than that: no module changes incoming messages, looks at delivered ones or
    /// filters what a session is sent, and the session is there. The modules that only check
    /// incoming messages ([`Module::check_message_in`]) check it here, on the shared element;
    /// one that stops it has it bounced (as a copy addressed to the recipient). False when
    /// it has to be routed as a copy instead.
    async fn deliver_shared(
        &self,
        cx: &mut Context<'_>,
        stanza: &Arc<Element>,
        to: &FullJid,
    ) -> bool {
        let hooked =
            !(self.message_in.is_empty() && self.delivered.is_empty() && self.outbound.is_empty());
        if stanza.name() != "message" || hooked || !self.is_local_host(to.domain().as_str()) {
            return false;
        }
        if !self.message_check.is_empty() {
            let from = stanza.attr("from").map(crate::address::parse_jid);
            let Some(Ok(from)) = from else {
                return false;
            };
            let addressing = Addressing {
                from,
                to: Jid::from(to.clone()),
            };
            for m in &self.message_check {
                if let HookAction::Stop(err) = m.check_message_in(cx, stanza, &addressing).await {
                    if let Some(err) = err {
                        let mut copy = (**stanza).clone();
                        stanza::set_attr(&mut copy, "to", to.as_str());
                        cx.bounce(&copy, err);
                    }
                    return true;
                }
            }
        }
        let out = Outbound::Addressed(Arc::clone(stanza), to.clone());
        self.router.send(to, out, class_for(to)).is_ok()
    }

    /// Queues `el` for one local session, unless a module's outbound filter takes it (which
    /// counts as delivered: the module answers for it now). Charged to the session's reply
    /// budget when it answers the session's own stanza being handled on this task.
    pub(crate) fn try_deliver(&self, jid: &FullJid, el: Arc<Element>) -> Result<(), SendError> {
        let outlet = Outlet::new(&*self.router, jid);
        if self
            .outbound
            .iter()
            .any(|m| m.filter_outbound(jid, &el, &outlet))
        {
            return Ok(());
        }
        self.router.send(jid, Outbound::Stanza(el), class_for(jid))
    }

    /// Routes a stanza whose `from` and `to` are set, and everything its handling produces,
    /// before returning. The entry point for drivers and for services' own tasks; handlers
    /// queue into their [`Context`] instead.
    pub async fn dispatch(self: &Arc<Self>, stanza: Element) {
        self.dispatch_all([stanza]).await
    }

    /// [`Server::dispatch`] of several stanzas, in order.
    pub async fn dispatch_all(self: &Arc<Self>, stanzas: impl IntoIterator<Item = Element>) {
        let mut outbox = Outbox::default();
        outbox
            .queue
            .extend(stanzas.into_iter().map(|s| Outgoing::Route(s, None, None)));
        self.drain(&mut outbox).await;
    }

    /// The dispatcher: routes the outbox's stanzas first in first out, each one's consequences
    /// queued behind it. Routing never recurses and holds no lock while a handler runs, so a
    /// stanza coming back to the handler that produced it waits in the queue instead of
    /// re-entering it; and one sender's stanzas to one recipient keep their order
    /// (RFC 6120 §10.1). Like [`Server::dispatch`], for drivers and services' own tasks,
    /// never from inside a handler.
    pub async fn drain(self: &Arc<Self>, outbox: &mut Outbox) {
        let mut routed = 0usize;
        while let Some(next) = outbox.queue.pop_front() {
            routed += 1;
            if routed > MAX_DISPATCH {
                tracing::warn!(
                    dropped = outbox.queue.len() + 1,
                    "one stanza caused more than {MAX_DISPATCH} others: dropping the rest"
                );
                outbox.queue.clear();
                return;
            }
            match next {
                Outgoing::Route(stanza, to, from) => {
                    self.route_one(&mut Context::new(self, outbox), stanza, to, from)
                        .await
                }
                Outgoing::RouteShared(stanza, to) => {
                    let mut cx = Context::new(self, outbox);
                    if !self.deliver_shared(&mut cx, &stanza, &to).await {
                        let mut copy = (*stanza).clone();
                        stanza::set_attr(&mut copy, "to", to.as_str());
                        self.route_one(&mut cx, copy, Some(Jid::from(to)), None)
                            .await
                    }
                }
                Outgoing::Deliver(jid, stanza) => {
                    let _ = self.try_deliver(&jid, stanza);
                }
                Outgoing::AfterReply(module, iq) => {
                    module
                        .after_reply(&mut Context::new(self, outbox), &iq)
                        .await
                }
            }
        }
    }

    /// The one routing decision: a served host (its accounts and itself), a component's
    /// subdomain, or a remote domain (the [`RemoteRouter`]; without one, or when it refuses,
    /// the stanza bounces).
    /// `parsed` is `to` as the sender parsed it, if it did; `from` the same for `from`.
    async fn route_one(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        stanza: Element,
        parsed: Option<Jid>,
        from: Option<Jid>,
    ) {
        let written = stanza.attr("to");
        let to = match parsed {
            // A hook may have readdressed the stanza since: the attribute decides.
            Some(to) if written == Some(to.as_str()) => to,
            _ => match written.map(crate::address::parse_jid) {
                Some(Ok(to)) => to,
                _ => {
                    tracing::debug!("dropping stanza without valid 'to'");
                    return;
                }
            },
        };
        let domain = to.domain().as_str();
        if self.is_local_host(domain) {
            match to.node() {
                None => self.to_server(cx, stanza, to).await,
                Some(_) => self.to_account(cx, stanza, to, from).await,
            }
        } else if let Some(c) = self.components.get(domain) {
            c.handle(cx, stanza).await;
        } else if let Some(remote) = &self.remote {
            if let Err(refused) = remote.route(stanza, &to) {
                let (stanza, err) = *refused;
                cx.bounce(&stanza, err);
            }
        } else {
            cx.bounce(&stanza, StanzaError::new(Condition::RemoteServerNotFound));
        }
    }

    async fn message_from_client(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        session: &ClientSession,
        mut msg: Element,
        mut to: Option<Jid>,
    ) {
        // The hooks read the addressing from the context, which gives it back for routing.
        if !self.message_out.is_empty() {
            if let Some(to) = to.take() {
                let from = Jid::from(session.jid.clone());
                cx.set_addressing(Some(Addressing { from, to }));
            }
        }
        for m in &self.message_out {
            if let HookAction::Stop(err) = m.on_message_out(cx, &mut msg).await {
                cx.set_addressing(None);
                if let Some(err) = err {
                    reply_error(cx, session, &msg, err);
                }
                return;
            }
        }
        let (from, to) = match cx.take_addressing() {
            Some(Addressing { from, to }) => (from, Some(to)),
            None => (Jid::from(session.jid.clone()), to),
        };
        // RFC 6120 §10.3: no 'to' means the sender's own bare JID.
        let to = to.unwrap_or_else(|| own_bare(&mut msg, session));
        cx.send_from_to(msg, from, to);
    }

    async fn iq_from_client(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        session: &mut ClientSession,
        iq: Element,
        to: Option<Jid>,
    ) {
        match iq.attr("type") {
            Some("get" | "set") => {}
            Some("result" | "error") => {
                if let Some(to) = to {
                    cx.send_to(iq, to);
                }
                return;
            }
            _ => {
                reply_error(cx, session, &iq, Condition::BadRequest.into());
                return;
            }
        }
        let mut children = iq.children();
        let (Some(_), None, Some(_)) = (children.next(), children.next(), iq.attr("id")) else {
            reply_error(cx, session, &iq, Condition::BadRequest.into());
            return;
        };
        let mut iq = iq;
        // RFC 6120 §10.3.3: no 'to' means the sender's own bare JID.
        let to = to.unwrap_or_else(|| own_bare(&mut iq, session));
        for m in &self.iq_out {
            if let HookAction::Stop(err) = m.on_iq_out(cx, session, &mut iq).await {
                if let Some(err) = err {
                    reply_error(cx, session, &iq, err);
                }
                return;
            }
        }
        cx.send_to(iq, to);
    }

    /// Stanzas to a served domain itself.
    async fn to_server(self: &Arc<Self>, cx: &mut Context<'_>, stanza: Element, to: Jid) {
        if stanza.name() == "iq" {
            self.local_iq(cx, stanza, to, true).await;
        }
        // Messages and presence to the server itself have no consumer yet: dropped silently
        // (RFC 6120 §10.3.1 leaves this to the server).
    }

    /// IQ get/set to a domain or a bare account JID: answered by the module owning the namespace.
    async fn local_iq(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        iq: Element,
        to: Jid,
        to_server: bool,
    ) {
        let kind = match iq.attr("type") {
            Some("get") => IqKind::Get,
            Some("set") => IqKind::Set,
            _ => return, // results and errors addressed to us end here
        };
        let Some(payload) = iq.children().next().cloned() else {
            cx.bounce(&iq, Condition::BadRequest.into());
            return;
        };
        let Some(from) = iq.attr("from").and_then(|f| Jid::new(f).ok()) else {
            return;
        };
        let ns = payload.ns();
        let table = if to_server {
            &self.server_iq
        } else {
            &self.account_iq
        };
        let Some(module) = table.get(ns.as_str()).cloned() else {
            cx.bounce(&iq, Condition::ServiceUnavailable.into());
            return;
        };
        let req = IqRequest {
            from,
            to,
            kind,
            payload,
        };
        match module.handle_iq(cx, req).await {
            Ok(payload) => {
                cx.send(iq_result(&iq, payload));
                // Behind the answer in the queue: it runs once the answer was routed.
                cx.outbox_mut()
                    .queue
                    .push_back(Outgoing::AfterReply(module, iq));
            }
            Err(e) => cx.bounce(&iq, e),
        }
    }

    /// Stanzas to an account (bare or full JID) on a served domain: RFC 6121 §8.5.
    /// `from` is the stanza's `from` as its sender parsed it, if it did.
    async fn to_account(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        stanza: Element,
        to: Jid,
        from: Option<Jid>,
    ) {
        match stanza.name() {
            "message" => self.message_to_account(cx, stanza, to, from).await,
            "presence" => {
                let mut pres = stanza;
                if self.intercepted(cx, &self.presence_in, &mut pres).await {
                    return;
                }
                for m in &self.presence_to_account {
                    if let HookAction::Stop(err) =
                        m.on_presence_to_account(cx, &mut pres, &to).await
                    {
                        if let Some(err) = err {
                            cx.bounce(&pres, err);
                        }
                        return;
                    }
                }
                if let Ok(full) = to.try_as_full() {
                    cx.deliver(full, pres);
                }
            }
            "iq" => {
                let mut iq = stanza;
                if self.intercepted(cx, &self.iq_in, &mut iq).await {
                    return;
                }
                self.iq_to_account(cx, iq, to).await
            }
            _ => {}
        }
    }

    /// Runs `hooks` (presence or IQ interception) on `stanza`; true if one stopped it (and
    /// its error, if any, was queued for the sender).
    async fn intercepted(
        &self,
        cx: &mut Context<'_>,
        hooks: &[Arc<dyn Module>],
        stanza: &mut Element,
    ) -> bool {
        for m in hooks {
            let action = if stanza.name() == "iq" {
                m.on_iq_in(cx, stanza).await
            } else {
                m.on_presence_in(cx, stanza).await
            };
            if let HookAction::Stop(err) = action {
                if let Some(err) = err {
                    cx.bounce(stanza, err);
                }
                return true;
            }
        }
        false
    }

    async fn iq_to_account(self: &Arc<Self>, cx: &mut Context<'_>, stanza: Element, to: Jid) {
        match to.try_as_full() {
            Ok(full) => {
                // Requests to a gone resource get an error; responses are never answered
                // (RFC 6120 §8.2.3), so a late result or error is dropped.
                let request = matches!(stanza.attr("type"), Some("get") | Some("set"));
                let stanza = Arc::new(stanza);
                if self.try_deliver(full, stanza.clone()).is_err() && request {
                    cx.bounce(&stanza, Condition::ServiceUnavailable.into());
                }
            }
            Err(_) => self.local_iq(cx, stanza, to, false).await,
        }
    }

    /// Every message hook, the delivered ones included, sees its addressing parsed once
    /// ([`Context::addressing`]); left set afterwards, it is harmless, as it is only used while
    /// the attributes read the same, and the context ends with this stanza's routing.
    async fn message_to_account(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        mut msg: Element,
        to: Jid,
        from: Option<Jid>,
    ) {
        // RFC 6121 §5.2.2: a type the server does not understand is treated as "normal".
        let kind = match msg.attr("type") {
            Some("chat") => "chat",
            Some("groupchat") => "groupchat",
            Some("headline") => "headline",
            Some("error") => "error",
            _ => "normal",
        };
        let hooked = !(self.message_in.is_empty()
            && self.message_check.is_empty()
            && self.delivered.is_empty());
        if hooked {
            // Stamped by the server (a session's full JID, a room occupant, a domain): in
            // canonical form, so the parse is one check; none when the sender parsed it.
            let from = match (from, msg.attr("from")) {
                (Some(from), Some(written)) if from.as_str() == written => Some(Ok(from)),
                (_, written) => written.map(crate::address::parse_jid),
            };
            if let Some(Ok(from)) = from {
                let to = to.clone();
                let addressing = Addressing { from, to };
                for m in &self.message_check {
                    if let HookAction::Stop(err) = m.check_message_in(cx, &msg, &addressing).await {
                        if let Some(err) = err {
                            cx.bounce(&msg, err);
                        }
                        return;
                    }
                }
                cx.set_addressing(Some(addressing));
            }
        }
        for m in &self.message_in {
            if let HookAction::Stop(err) = m.on_message_in(cx, &mut msg).await {
                if let Some(err) = err {
                    cx.bounce(&msg, err);
                }
                return;
            }
        }
        let msg = Arc::new(msg);
        if let Ok(full) = to.try_as_full() {
            if self.try_deliver(full, msg.clone()).is_ok() {
                self.delivered(cx, &msg, std::slice::from_ref(full)).await;
                return;
            }
            // RFC 6121 §8.5.3.2.1: the resource is gone. `chat` goes to the account as if sent
            // to the bare JID; so does `normal` (untyped messages are common and must not be
            // lost: they reach another resource or offline storage); `headline` and `error` are
            // dropped; `groupchat` bounces.
            match kind {
                "chat" | "normal" => {}
                "groupchat" => {
                    cx.bounce(&msg, Condition::ServiceUnavailable.into());
                    return;
                }
                _ => return,
            }
        }
        self.message_to_bare(cx, msg, &to.bare(), kind, true).await;
    }

    /// RFC 6121 §8.5.2: a message of type `kind` for the account `bare` goes to its resources
    /// that take that type; with none, to offline storage (or back as an error) unless not
    /// `offline` (the archive holds it for a client that fetches it from there).
    pub(crate) async fn message_to_bare(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        msg: Arc<Element>,
        bare: &BareJid,
        kind: &str,
        offline: bool,
    ) {
        let mut targets = Vec::new();
        (self.router).with_resources(bare, &mut |rs| {
            targets = crate::router::message_targets(rs, kind)
        });
        targets.retain(|t| self.try_deliver(t, msg.clone()).is_ok());
        if !targets.is_empty() {
            self.delivered(cx, &msg, &targets).await;
            return;
        }
        match kind {
            "groupchat" => cx.bounce(&msg, Condition::ServiceUnavailable.into()),
            "headline" | "error" => {}
            _ if !offline => tracing::debug!(to = %bare, "archived message not stored offline"),
            _ => self.undeliverable(cx, &msg, bare).await,
        }
    }

    async fn delivered(&self, cx: &mut Context<'_>, msg: &Element, targets: &[FullJid]) {
        for m in &self.delivered {
            m.on_message_delivered(cx, msg, targets).await;
        }
    }

    async fn undeliverable(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        msg: &Arc<Element>,
        bare: &BareJid,
    ) {
        let user = user_ref(bare);
        match self.store.user_exists(&user).await {
            Ok(true) => {}
            Ok(false) => {
                cx.bounce(msg, Condition::ServiceUnavailable.into());
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "storage error checking recipient");
                cx.bounce(msg, StanzaError::storage_failed());
                return;
            }
        }
        for m in &self.undeliverable {
            match m.on_undeliverable(cx, msg).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    cx.bounce(msg, e);
                    return;
                }
            }
        }
    }
}

/// How many stanzas one dispatch may route, its own included: a bound on stanzas that keep
/// causing others (a loop between services), far above any legitimate fan-out.
const MAX_DISPATCH: usize = 1_000_000;

/// Addresses `stanza` to the sender's own bare JID (RFC 6120 §10.3), for a client stanza
/// without `to`.
fn own_bare(stanza: &mut Element, session: &ClientSession) -> Jid {
    let bare = session.jid.bare();
    stanza::set_attr(stanza, "to", bare.as_str());
    Jid::from(bare)
}

/// Queues an error reply for `original` to its sender session.
pub(crate) fn reply_error(
    cx: &mut Context<'_>,
    session: &ClientSession,
    original: &Element,
    err: StanzaError,
) {
    if let Some(reply) = error_reply(original, &err) {
        cx.deliver(&session.jid, reply);
    }
}

/// The storage key of an account.
pub fn user_ref(bare: &BareJid) -> UserRef {
    UserRef::new(
        bare.node().map(|n| n.as_str()).unwrap_or(""),
        bare.domain().as_str(),
    )
}
