//! The seams services plug into, without editing the core.
//!
//! - A [`Module`] adds disco features, answers IQs by payload namespace (addressed to a served
//!   domain or to an account's bare JID), and hooks the message path and session lifecycle.
//!   Hooks run in registration order (e.g. blocking before archive before carbons).
//! - Neither routes inline: both are handed a [`Context`] whose outbox the dispatcher drains
//!   after they return (see `crate::context`).
//! - A [`Component`] owns a whole subdomain (`conference.example.org`): every stanza addressed
//!   to it goes to the component, the same contract an external XEP-0114 component would have.

use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmppd_storage::{AccountRemoval, RosterItem};

use crate::context::{Addressing, Context};
use crate::router::{Router, SessionId};
use crate::session::{ClientSession, Outbound, PresenceState};
use crate::stanza::{Condition, StanzaError};

/// `get` or `set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IqKind {
    Get,
    Set,
}

/// An IQ request addressed to a domain or an account and claimed by a module.
#[derive(Debug, Clone)]
pub struct IqRequest {
    /// The requester (full JID of a local session, or a remote entity).
    pub from: Jid,
    /// The addressee: a served domain or an account's bare JID (the sender's own when the
    /// request had no `to`).
    pub to: Jid,
    pub kind: IqKind,
    /// The single child of the IQ.
    pub payload: Element,
}

/// A module's answer: the result payload (or none), or a stanza error.
pub type IqResponse = Result<Option<Element>, StanzaError>;

/// What a hook decides about a stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookAction {
    /// Carry on.
    Continue,
    /// Stop processing; answer the sender with this error (or nothing).
    Stop(Option<StanzaError>),
}

/// The per-stanza hooks a module implements. The core calls a hook only on the modules that
/// declare it, so the message path costs nothing for modules that do not look at messages. The
/// default, [`Hooks::ALL`], is always correct; a module narrows it to what it overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hooks {
    /// [`Module::on_message_out`]
    pub message_out: bool,
    /// [`Module::on_message_in`]
    pub message_in: bool,
    /// [`Module::check_message_in`]
    pub message_check: bool,
    /// [`Module::on_undeliverable`]
    pub undeliverable: bool,
    /// [`Module::roster_items`], [`Module::has_roster_item`] and
    /// [`Module::roster_items_version`]
    pub roster: bool,
    /// [`Module::on_message_delivered`]
    pub delivered: bool,
    /// [`Module::on_presence_in`]
    pub presence_in: bool,
    /// [`Module::on_iq_in`]
    pub iq_in: bool,
    /// [`Module::filter_outbound`]
    pub outbound: bool,
    /// [`Module::on_presence_out`]
    pub presence_out: bool,
    /// [`Module::on_iq_out`]
    pub iq_out: bool,
    /// [`Module::on_presence_to_account`]
    pub presence_to_account: bool,
}

impl Hooks {
    pub const ALL: Hooks = Hooks {
        message_out: true,
        message_in: true,
        message_check: true,
        undeliverable: true,
        roster: true,
        delivered: true,
        presence_in: true,
        iq_in: true,
        outbound: true,
        presence_out: true,
        iq_out: true,
        presence_to_account: true,
    };
    pub const NONE: Hooks = Hooks {
        message_out: false,
        message_in: false,
        message_check: false,
        undeliverable: false,
        roster: false,
        delivered: false,
        presence_in: false,
        iq_in: false,
        outbound: false,
        presence_out: false,
        iq_out: false,
        presence_to_account: false,
    };
}

/// A feature module. Every method has a neutral default, so a module implements only its part.
#[async_trait]
pub trait Module: Send + Sync {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Which per-stanza hooks this module overrides (see [`Hooks`]).
    fn hooks(&self) -> Hooks {
        Hooks::ALL
    }

    /// The server was built with this module: `cx` reads every module's features, the hosts
    /// and the components (e.g. for the entity capabilities hash of the features, XEP-0115).
    /// Nothing can be sent yet: the context is read-only.
    fn on_started(&self, cx: &Context<'_>) {
        let _ = cx;
    }

    /// disco#info features of every served domain.
    fn server_features(&self) -> Vec<String> {
        Vec::new()
    }

    /// disco#info features of every account's bare JID.
    fn account_features(&self) -> Vec<String> {
        Vec::new()
    }

    /// disco#info identities (category, type) every account's bare JID shows besides
    /// `account/registered` (XEP-0163 §6: a PEP service shows `pubsub/pep`).
    fn account_identities(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }

    /// Stream features offered after authentication to clients of the served domain `host`
    /// (the server's entity capabilities, XEP-0115, differ between hosts whose disco#info
    /// differs).
    fn stream_features(&self, host: &str) -> Vec<Element> {
        let _ = host;
        Vec::new()
    }

    /// XEP-0128 extended information (XEP-0004 forms of type `result` with a `FORM_TYPE`)
    /// this module adds to the disco#info of the served domain `host`: the contact addresses
    /// of XEP-0157. Part of the server's entity capabilities (XEP-0115 §5.4).
    fn server_info_forms(&self, host: &str) -> Vec<Element> {
        let _ = host;
        Vec::new()
    }

    /// Payload namespaces of IQs to a served domain that [`Module::handle_iq`] answers.
    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Payload namespaces of IQs to an account's bare JID that [`Module::handle_iq`] answers.
    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Answers a claimed IQ.
    async fn handle_iq(&self, cx: &mut Context<'_>, req: IqRequest) -> IqResponse {
        let _ = (cx, req);
        Err(StanzaError::new(Condition::ServiceUnavailable))
    }

    /// Runs after the successful answer to an IQ this module handled has been routed, with the
    /// original request: for effects that must follow the answer on the wire (e.g. ending the
    /// sessions of an account that was just removed).
    async fn after_reply(&self, cx: &mut Context<'_>, iq: &Element) {
        let _ = (cx, iq);
    }

    /// A message from a local session, `from` already stamped, before it is routed.
    async fn on_message_out(&self, cx: &mut Context<'_>, msg: &mut Element) -> HookAction {
        let _ = (cx, msg);
        HookAction::Continue
    }

    /// A message about to be delivered to local account(s) of `to`, before the core chooses
    /// its sessions or offline storage takes it: what the hook changes in `msg` is what every
    /// session and the offline copy receive (the archive adds its XEP-0359 `<stanza-id/>`
    /// here, after committing the message).
    async fn on_message_in(&self, cx: &mut Context<'_>, msg: &mut Element) -> HookAction {
        let _ = (cx, msg);
        HookAction::Continue
    }

    /// A message about to be delivered to the local account or session `addressing.to`,
    /// from `addressing.from`, before [`Module::on_message_in`]: a hook that only decides
    /// whether the message may pass (blocking, XEP-0191) and changes nothing. It also runs
    /// for each recipient of a fan-out (a room's message) on the one element they all share,
    /// where `on_message_in` would need a copy per recipient; `msg`'s `to` is then not the
    /// recipient's, `addressing.to` is.
    async fn check_message_in(
        &self,
        cx: &mut Context<'_>,
        msg: &Element,
        addressing: &Addressing,
    ) -> HookAction {
        let _ = (cx, msg, addressing);
        HookAction::Continue
    }

    /// Presence sent by the local session `session` (`from` stamped, `to` normalised). It runs
    /// under the session's presence lock, and what it queues is routed before the lock is
    /// released: a successor binding the same resource waits for it, so the presence a session
    /// sent always goes out before its end ([`Module::on_presence_end`]). `state` is what the
    /// session has given out, kept for that end. A module returning `Stop` took the presence
    /// (RFC 6121 §4: broadcast, directed presence, subscriptions); if none does, presence with
    /// a `to` is routed as it is and presence without is dropped.
    async fn on_presence_out(
        &self,
        cx: &mut Context<'_>,
        session: &ClientSession,
        state: &mut PresenceState,
        pres: &mut Element,
    ) -> HookAction {
        let _ = (cx, session, state, pres);
        HookAction::Continue
    }

    /// An IQ request (`get` or `set`, with one payload and an id) from the local session
    /// `session`, before it is routed; `from` stamped, `to` set (the sender's bare JID when the
    /// client left it out). A module returning `Stop` answered it (the roster, RFC 6121 §2).
    async fn on_iq_out(
        &self,
        cx: &mut Context<'_>,
        session: &ClientSession,
        iq: &mut Element,
    ) -> HookAction {
        let _ = (cx, session, iq);
        HookAction::Continue
    }

    /// Presence addressed to the local account `to` (bare or full JID) that no
    /// [`Module::on_presence_in`] hook stopped. A module returning `Stop` took it (RFC 6121
    /// §4 and §3, inbound side); if none does, presence to a full JID is delivered to that
    /// session and presence to the bare JID is dropped.
    async fn on_presence_to_account(
        &self,
        cx: &mut Context<'_>,
        pres: &mut Element,
        to: &Jid,
    ) -> HookAction {
        let _ = (cx, pres, to);
        HookAction::Continue
    }

    /// The presence of session `jid` (`session_id`) ends, once: it unbinds, or a new session
    /// binds the same resource (RFC 6120 §7.7.2.2). Runs under the session's presence lock,
    /// before the successor can send anything, and what it queues is routed before the lock is
    /// released: the old session's unavailable (RFC 6121 §4.5.2) comes before anything the
    /// new one sends. From then on the session's presence reaches no module.
    async fn on_presence_end(
        &self,
        cx: &mut Context<'_>,
        jid: &FullJid,
        session_id: SessionId,
        state: &mut PresenceState,
    ) {
        let _ = (cx, jid, session_id, state);
    }

    /// The writer of `session` wrote everything queued before an
    /// [`crate::Outbound::Written`] marker ([`crate::Server::written`]): for work paced by
    /// what the session has really written (offline messages handed out page by page).
    async fn on_written(&self, cx: &mut Context<'_>, session: &ClientSession) {
        let _ = (cx, session);
    }

    /// The queue of `session` ended: it unbinds, or was replaced by a session for the same
    /// resource. Nothing more is written to it; what it still held is re-routed after this.
    async fn on_queue_ended(&self, cx: &mut Context<'_>, session: &ClientSession) {
        let _ = (cx, session);
    }

    /// A message to a local account after it was queued for `targets`, the sessions chosen for
    /// it (RFC 6121 §8.5): where archiving and carbon copies (XEP-0280) hook in. Not called
    /// for a message no session took (see [`Module::on_undeliverable`]).
    async fn on_message_delivered(&self, cx: &mut Context<'_>, msg: &Element, targets: &[FullJid]) {
        let _ = (cx, msg, targets);
    }

    /// Presence addressed to a local account (its bare or a full JID), before the RFC 6121
    /// rules act on it: blocking (XEP-0191) drops it here.
    async fn on_presence_in(&self, cx: &mut Context<'_>, pres: &mut Element) -> HookAction {
        let _ = (cx, pres);
        HookAction::Continue
    }

    /// An IQ addressed to a local account (its bare or a full JID), before it is delivered or
    /// handed to the module owning its namespace: blocking answers blocked senders here.
    async fn on_iq_in(&self, cx: &mut Context<'_>, iq: &mut Element) -> HookAction {
        let _ = (cx, iq);
        HookAction::Continue
    }

    /// Every stanza about to enter the queue of the local session `session`, whatever path
    /// it took: returns `true` if this module took it instead (client state indication holds
    /// back what an inactive client need not see at once, XEP-0352). What a module took it
    /// hands back through an [`Outlet`]: `outlet`, for letting held stanzas go before this
    /// one, or [`Context::outlet`] later. On the hot path: synchronous, and called only on
    /// modules declaring [`Hooks::outbound`].
    fn filter_outbound(
        &self,
        session: &FullJid,
        stanza: &Arc<Element>,
        outlet: &Outlet<'_>,
    ) -> bool {
        let _ = (session, stanza, outlet);
        false
    }

    /// Payload namespaces of the top-level elements other than stanzas (nonzas) that
    /// [`Module::on_nonza`] takes on an established client stream. A nonza no module claims
    /// ends the stream with `<unsupported-stanza-type/>`.
    fn nonza_namespaces(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// A nonza of a claimed namespace from the local session `session` (client state
    /// indication, XEP-0352). Handled before the session's next stanza is read, and what it
    /// queues is routed before that too (XEP-0352 §5.1: in order).
    async fn on_nonza(&self, cx: &mut Context<'_>, session: &ClientSession, nonza: &Element) {
        let _ = (cx, session, nonza);
    }

    /// Namespaces of the features [`Module::on_bind2`] enables inline when a client binds
    /// with Bind2 (XEP-0386 §2.2: the `<inline/>` features of `<bind/>`).
    fn bind2_namespaces(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// A request of a claimed namespace inside the Bind2 `<bind/>` of `session`, just bound
    /// and before it sent anything: the feature is enabled as by the client's own request
    /// (carbons' `<enable/>`, client state's `<inactive/>`). What it returns goes into
    /// `<bound/>`.
    async fn on_bind2(
        &self,
        cx: &mut Context<'_>,
        session: &ClientSession,
        request: &Element,
    ) -> Option<Element> {
        let _ = (cx, session, request);
        None
    }

    /// A message to a local account that no session could take. Returns true if it took it
    /// (stored it); the first module that does ends the chain.
    async fn on_undeliverable(
        &self,
        cx: &mut Context<'_>,
        msg: &Element,
    ) -> Result<bool, StanzaError> {
        let _ = (cx, msg);
        Ok(false)
    }

    /// disco#items of the served domain `to`: for `node == None` the items this module adds to the
    /// domain's list; for a node, `Some(items)` if this module owns the node (e.g. the ad-hoc
    /// command list), `None` otherwise.
    async fn disco_items(
        &self,
        cx: &Context<'_>,
        from: &Jid,
        to: &Jid,
        node: Option<&str>,
    ) -> Option<Vec<Element>> {
        let _ = (cx, from, to, node);
        None
    }

    /// disco#info of a node of a served domain: the whole `<query/>` if this module owns it.
    async fn disco_info(
        &self,
        cx: &Context<'_>,
        from: &Jid,
        to: &Jid,
        node: &str,
    ) -> Option<Element> {
        let _ = (cx, from, to, node);
        None
    }

    /// Roster items this module adds to `user`'s roster (shared roster groups): shown in roster
    /// results and treated as mutual subscriptions for presence, without being stored.
    async fn roster_items(&self, cx: &Context<'_>, user: &BareJid) -> Vec<RosterItem> {
        let _ = (cx, user);
        Vec::new()
    }

    /// Whether [`Module::roster_items`] of `user` include `contact`. Asked for every presence
    /// probe, so a module with large groups should answer without building the whole list.
    async fn has_roster_item(&self, cx: &Context<'_>, user: &BareJid, contact: &BareJid) -> bool {
        let items = self.roster_items(cx, user).await;
        items.iter().any(|i| i.jid == contact.as_str())
    }

    /// A value that changes whenever [`Module::roster_items`] of `user` change. It is part of
    /// the roster version (RFC 6121 §2.6), so a client's cached roster is not taken as current
    /// after contributed items changed, also when nobody was told (the user was offline, or
    /// the server down). Asked for every roster push, so a module with large groups should
    /// answer without building the list; the default hashes it.
    async fn roster_items_version(&self, cx: &Context<'_>, user: &BareJid) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for it in self.roster_items(cx, user).await {
            let fields = (it.jid, it.name, it.subscription.as_str(), it.ask, it.groups);
            fields.hash(&mut h);
        }
        h.finish()
    }

    /// A session became available (first available presence with non-negative priority).
    async fn on_available(&self, cx: &mut Context<'_>, jid: &FullJid) {
        let _ = (cx, jid);
    }

    /// A session was bound.
    async fn on_session_opened(&self, cx: &mut Context<'_>, jid: &FullJid) {
        let _ = (cx, jid);
    }

    /// A session parked without a connection was resumed on a new one (XEP-0198 §5): the
    /// same session, not a new one ([`Module::on_session_opened`] does not run), on a new
    /// stream, whose per-stream state starts over (XEP-0352 §4: a client is active at the
    /// start of a stream).
    async fn on_session_resumed(&self, cx: &mut Context<'_>, session: &ClientSession) {
        let _ = (cx, session);
    }

    /// A session ended.
    async fn on_session_closed(&self, cx: &mut Context<'_>, jid: &FullJid) {
        let _ = (cx, jid);
    }

    /// The account `user` was removed from storage, and with it its footprint in other
    /// accounts' data (`removal`); `online` are its resources that were available just before
    /// its sessions were ended. Runs before every [`Module::on_account_removed`]: for telling
    /// the contacts what changed in their rosters (RFC 6121 §3.2.2, §3.3.2).
    async fn on_account_removal(
        &self,
        cx: &mut Context<'_>,
        user: &BareJid,
        removal: &AccountRemoval,
        online: &[FullJid],
    ) {
        let _ = (cx, user, removal, online);
    }

    /// The account `user` was removed ([`crate::Server::remove_account`]): what the store held
    /// for it is gone; forget what this module keeps about it elsewhere.
    async fn on_account_removed(&self, cx: &mut Context<'_>, user: &BareJid) {
        let _ = (cx, user);
    }
}

/// One local session's queue as an outbound filter sees it ([`Module::filter_outbound`]):
/// what the filter held and lets go now goes in here at once, skipping the filters. A filter
/// pushes under its own lock, so what it releases keeps its order against stanzas that other
/// tasks are filtering for the same session meanwhile.
pub struct Outlet<'a> {
    router: &'a dyn Router,
    session: &'a FullJid,
}

impl<'a> Outlet<'a> {
    pub(crate) fn new(router: &'a dyn Router, session: &'a FullJid) -> Self {
        Outlet { router, session }
    }

    /// The session this outlet feeds.
    pub fn session(&self) -> &FullJid {
        self.session
    }

    /// Queues `stanza` for the session now, with no filter and no hook. False if the session
    /// is gone or its queue refused it (full: it is being closed).
    pub fn push(&self, stanza: Arc<Element>) -> bool {
        let class = crate::session::class_for(self.session);
        (self
            .router
            .send(self.session, Outbound::Stanza(stanza), class))
        .is_ok()
    }
}

/// The owner of a subdomain.
#[async_trait]
pub trait Component: Send + Sync {
    /// A name for disco#items and logs (e.g. "Chatrooms").
    fn name(&self) -> &str;
    /// Handles any stanza addressed to the component's domain or its entities. Replies and
    /// everything else it sends go into `cx`'s outbox, routed after it returns: a component
    /// never routes inline, so a stanza it produces that comes back to it cannot re-enter it.
    async fn handle(&self, cx: &mut Context<'_>, stanza: Element);

    /// The account `user` was removed ([`crate::Server::remove_account`]): forget it (e.g. its
    /// chat room affiliations).
    async fn on_account_removed(&self, cx: &mut Context<'_>, user: &BareJid) {
        let _ = (cx, user);
    }
}

/// Where stanzas go whose domain is neither served here nor a component's: the links to other
/// servers (RFC 6120 §13), which the binary registers with [`crate::ServerBuilder::remote`].
/// Without one, such stanzas bounce with `<remote-server-not-found/>`.
pub trait RemoteRouter: Send + Sync {
    /// Takes `stanza` (`from` and `to` set, `to` parsed as `to`) for delivery to the server of
    /// `to`'s domain. Called while routing: it only queues, never waits. A stanza it cannot
    /// take (federation off, a refused domain) comes back with the error to bounce it with.
    fn route(&self, stanza: Element, to: &Jid) -> Result<(), Refused>;
}

/// A stanza a [`RemoteRouter`] refused, with the error to bounce it with.
pub type Refused = Box<(Element, StanzaError)>;

/// Answers IQs on a client stream that has not authenticated yet (XEP-0077 registration
/// before login). The transport asks it and advertises its stream feature; the binary plugs
/// it in, so the transport depends on no feature service.
#[async_trait]
pub trait PreAuthService: Send + Sync {
    /// The payload namespace of the IQs it answers.
    fn namespace(&self) -> &'static str;

    /// The stream feature it offers on a TLS-protected stream for `host`, or `None` where it
    /// is not offered (then its IQs are refused with `<not-allowed/>`).
    fn feature(&self, host: &str) -> Option<Element>;

    /// Requests from one address per hour that may create something (see `answer`'s `admit`).
    fn quota_per_hour(&self) -> u32;

    /// The reply, without addresses, to `iq` on a stream for `host` that offers the feature.
    /// `admit` takes one unit of the peer address's quota and says whether one was left.
    async fn answer(
        &self,
        host: &str,
        iq: &Element,
        admit: &mut (dyn FnMut() -> bool + Send),
    ) -> Element;
}
