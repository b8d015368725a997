//! Built-in modules: service discovery (XEP-0030) with entity capabilities (XEP-0115), ping
//! (XEP-0199), software version (XEP-0092), last activity (XEP-0012) and offline messages
//! (XEP-0160). They use the same [`Module`] seam as every external service.
//!
//! Payloads are typed: xmpp-parsers' disco, ping and version types, and for XEP-0012, which
//! xmpp-parsers lacks, [`LastQuery`] and [`LastResult`] written with its xso derives. A request
//! whose payload does not parse gets `<bad-request/>`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use base64::Engine as _;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use sha1::{Digest, Sha1};
use xmpp_parsers::data_forms::DataForm;
use xmpp_parsers::disco::{
    DiscoInfoQuery, DiscoInfoResult, DiscoItemsQuery, DiscoItemsResult, Identity, Item,
};
use xmpp_parsers::ping::Ping as PingQuery;
use xmpp_parsers::version::{VersionQuery, VersionResult};
use xmppd_core::address::Bare;
use xmppd_core::module::{Hooks, IqKind, IqRequest, IqResponse, Module};
use xmppd_core::router::{message_targets, SendError, SessionId};
use xmppd_core::stanza::{self, Condition, StanzaError, NS_CLIENT};
use xmppd_core::{user_ref, Class, ClientSession, Context, Outbound};
use xmppd_storage::{OfflineMessage, UserRef};
use xso::{AsXml, FromXml};

/// The caps node of xmppd.
pub const CAPS_NODE: &str = "https://xmppd.dev/caps";

const LAST_KEY: &str = "jabber:iq:last";

pub(crate) fn modules() -> Vec<Arc<dyn Module>> {
    vec![
        Arc::new(Disco::default()),
        Arc::new(Ping),
        Arc::new(Version),
        Arc::new(Last),
        Arc::new(Offline::default()),
    ]
}

/// XEP-0115 §5.1 verification string of the server's identity, features and extended
/// information forms (XEP-0128).
fn caps_ver(features: &[String], forms: &[DataForm]) -> String {
    caps_hash("server/im//xmppd<", features, forms)
}

/// XEP-0115 §5.1 from step 2 on: `identities` is already the string of steps 2 and 3.
fn caps_hash(identities: &str, features: &[String], forms: &[DataForm]) -> String {
    let mut s = String::from(identities);
    let mut features: Vec<&String> = features.iter().collect();
    features.sort();
    features.dedup();
    for f in features {
        s.push_str(f);
        s.push('<');
    }
    let mut forms: Vec<&DataForm> = forms.iter().collect();
    forms.sort_by_key(|f| f.form_type());
    for form in forms {
        s.push_str(form.form_type().unwrap_or_default());
        s.push('<');
        let mut fields: Vec<_> = (form.fields.iter())
            .filter(|f| f.var.as_deref() != Some("FORM_TYPE"))
            .collect();
        fields.sort_by(|a, b| a.var.cmp(&b.var));
        for field in fields {
            s.push_str(field.var.as_deref().unwrap_or_default());
            s.push('<');
            let mut values: Vec<&String> = field.values.iter().collect();
            values.sort();
            for v in values {
                s.push_str(v);
                s.push('<');
            }
        }
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

/// Whether `from` may see presence-like facts of the account `to` (self, subscribed, or a
/// shared group member).
async fn is_trusted(cx: &Context<'_>, from: &Jid, to: &Jid) -> bool {
    crate::im::shares_presence(cx, &to.bare(), &from.bare()).await
}

/// The typed form of a request's payload, or `<bad-request/>` (the core hands over only
/// payloads of the namespace claimed, so what fails here is malformed).
fn parse<T>(payload: Element) -> Result<T, StanzaError>
where
    T: TryFrom<Element, Error = xso::error::FromElementError>,
{
    T::try_from(payload).map_err(|e| {
        StanzaError::with_text(Condition::BadRequest, format!("Malformed request: {e}"))
    })
}

fn identity(category: &str, kind: &str, name: Option<&str>) -> Identity {
    Identity {
        category: category.into(),
        type_: kind.into(),
        lang: None,
        name: name.map(String::from),
    }
}

/// A disco#info result.
fn info_query(node: Option<String>, identities: Vec<Identity>, features: &[String]) -> Element {
    extended_info_query(node, identities, features, Vec::new())
}

/// A disco#info result with XEP-0128 extended information.
fn extended_info_query(
    node: Option<String>,
    identities: Vec<Identity>,
    features: &[String],
    extensions: Vec<DataForm>,
) -> Element {
    DiscoInfoResult {
        node,
        identities,
        features: features.iter().cloned().collect(),
        extensions,
    }
    .into()
}

/// A disco#items result.
fn items_query(node: Option<String>, items: Vec<Item>) -> Element {
    DiscoItemsResult {
        node,
        items,
        rsm: None,
    }
    .into()
}

/// XEP-0030: server features on the domain, account features on bare JIDs; and the
/// server's entity capabilities (XEP-0115), offered as a stream feature.
#[derive(Default)]
struct Disco {
    /// Per served host, its extended information forms (XEP-0128) and the verification
    /// string of its disco#info; known once the server is built.
    hosts: OnceLock<HashMap<String, HostInfo>>,
}

struct HostInfo {
    forms: Vec<DataForm>,
    caps_ver: String,
}

impl Disco {
    fn host(&self, host: &str) -> Option<&HostInfo> {
        self.hosts.get()?.get(host)
    }

    fn caps_ver(&self, host: &str) -> &str {
        self.host(host).map_or("", |h| h.caps_ver.as_str())
    }
}

/// The extended information forms the modules add to `host`'s disco#info; one that is not
/// a form with a `FORM_TYPE` is left out rather than sent.
fn module_forms(cx: &Context<'_>, host: &str) -> Vec<DataForm> {
    let elements = cx.modules().iter().flat_map(|m| m.server_info_forms(host));
    let forms = elements.filter_map(|el| match DataForm::try_from(el) {
        Ok(form) if form.form_type().is_some() => Some(form),
        Ok(_) => {
            tracing::warn!("disco: a module's extended information has no FORM_TYPE; left out");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "disco: a module's extended information is not a form");
            None
        }
    });
    forms.collect()
}

#[async_trait]
impl Module for Disco {
    fn name(&self) -> &'static str {
        "disco"
    }

    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }

    fn on_started(&self, cx: &Context<'_>) {
        let hosts = (cx.hosts().iter()).map(|host| {
            let forms = module_forms(cx, host);
            let caps_ver = caps_ver(cx.server_features(), &forms);
            (host.clone(), HostInfo { forms, caps_ver })
        });
        let _ = self.hosts.set(hosts.collect());
    }

    fn server_features(&self) -> Vec<String> {
        vec![stanza::NS_DISCO_INFO.into(), stanza::NS_DISCO_ITEMS.into()]
    }

    fn account_features(&self) -> Vec<String> {
        vec![stanza::NS_DISCO_INFO.into(), stanza::NS_DISCO_ITEMS.into()]
    }

    fn stream_features(&self, host: &str) -> Vec<Element> {
        let attrs = [
            ("hash", "sha-1"),
            ("node", CAPS_NODE),
            ("ver", self.caps_ver(host)),
        ];
        vec![stanza::elem("c", stanza::NS_CAPS, &attrs)]
    }

    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![stanza::NS_DISCO_INFO, stanza::NS_DISCO_ITEMS]
    }

    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![stanza::NS_DISCO_INFO, stanza::NS_DISCO_ITEMS]
    }

    async fn handle_iq(&self, cx: &mut Context<'_>, req: IqRequest) -> IqResponse {
        if req.kind != IqKind::Get {
            return Err(StanzaError::new(Condition::NotAllowed));
        }
        let info = req.payload.ns() == stanza::NS_DISCO_INFO;
        // XEP-0059 paging of items is not offered; a request for it is still read, so that
        // a malformed one is refused.
        let node = if info {
            parse::<DiscoInfoQuery>(req.payload)?.node
        } else {
            parse::<DiscoItemsQuery>(req.payload)?.node
        };
        if req.to.node().is_none() {
            if info {
                let host = req.to.domain().as_str();
                let caps_node = format!("{CAPS_NODE}#{}", self.caps_ver(host));
                match node.as_deref() {
                    None => {}
                    Some(n) if n == caps_node => {}
                    Some(n) => {
                        for m in cx.modules() {
                            if let Some(q) = m.disco_info(cx, &req.from, &req.to, n).await {
                                return Ok(Some(q));
                            }
                        }
                        return Err(StanzaError::new(Condition::ItemNotFound));
                    }
                }
                let id = identity("server", "im", Some("xmppd"));
                let forms = self.host(host).map(|h| h.forms.clone()).unwrap_or_default();
                let features = cx.server_features();
                return Ok(Some(extended_info_query(node, vec![id], features, forms)));
            }
            if let Some(n) = node {
                for m in cx.modules() {
                    if let Some(items) = m.disco_items(cx, &req.from, &req.to, Some(&n)).await {
                        return Ok(Some(items_query(Some(n), module_items(items).collect())));
                    }
                }
                return Err(StanzaError::new(Condition::ItemNotFound));
            }
            let mut items: Vec<Item> = cx
                .components()
                .into_iter()
                .filter_map(|(domain, name)| {
                    Some(Item {
                        jid: Jid::new(domain).ok()?,
                        node: None,
                        name: Some(name.into()),
                    })
                })
                .collect();
            for m in cx.modules() {
                let theirs = m.disco_items(cx, &req.from, &req.to, None).await;
                items.extend(module_items(theirs.unwrap_or_default()));
            }
            return Ok(Some(items_query(None, items)));
        }
        let user = user_ref(&req.to.bare());
        if !cx.store().user_exists(&user).await.unwrap_or(false) {
            return Err(StanzaError::new(Condition::ServiceUnavailable));
        }
        if node.is_some() {
            return Err(StanzaError::new(Condition::ItemNotFound));
        }
        if info {
            let mut ids = vec![identity("account", "registered", None)];
            for m in cx.modules() {
                let theirs = m.account_identities().into_iter();
                ids.extend(theirs.map(|(category, kind)| identity(category, kind, None)));
            }
            Ok(Some(info_query(None, ids, cx.account_features())))
        } else {
            Ok(Some(items_query(None, Vec::new())))
        }
    }
}

/// The items modules contribute (`Module::disco_items` hands elements over the seam); one
/// that is not a valid XEP-0030 item is left out rather than sent.
fn module_items(items: Vec<Element>) -> impl Iterator<Item = Item> {
    items.into_iter().filter_map(|el| match Item::try_from(el) {
        Ok(item) => Some(item),
        Err(e) => {
            tracing::warn!(error = %e, "disco: a module's item is not valid; left out");
            None
        }
    })
}

/// XEP-0199: the server answers pings to its domain, and to the sender's own account: an IQ
/// without `to` is addressed to the sender's bare JID (RFC 6120 §10.3.3), and clients that
/// keep their connection alive that way expect a result. A ping from anyone else to an
/// account's bare JID gets `<service-unavailable/>`, the answer for any namespace the server
/// does not handle for accounts, so it does not tell whether the account exists.
struct Ping;

#[async_trait]
impl Module for Ping {
    fn name(&self) -> &'static str {
        "ping"
    }

    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }

    fn server_features(&self) -> Vec<String> {
        vec![stanza::NS_PING.into()]
    }

    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![stanza::NS_PING]
    }

    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![stanza::NS_PING]
    }

    async fn handle_iq(&self, _cx: &mut Context<'_>, req: IqRequest) -> IqResponse {
        if req.to.node().is_some() && req.from.bare().as_str() != req.to.as_str() {
            return Err(StanzaError::new(Condition::ServiceUnavailable));
        }
        match req.kind {
            IqKind::Get => parse::<PingQuery>(req.payload).map(|_| None),
            IqKind::Set => Err(StanzaError::new(Condition::BadRequest)),
        }
    }
}

/// XEP-0092: name and version; the operating system only when the operator allows it.
struct Version;

#[async_trait]
impl Module for Version {
    fn name(&self) -> &'static str {
        "version"
    }

    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }

    fn server_features(&self) -> Vec<String> {
        vec![stanza::NS_VERSION.into()]
    }

    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![stanza::NS_VERSION]
    }

    async fn handle_iq(&self, cx: &mut Context<'_>, req: IqRequest) -> IqResponse {
        if req.kind != IqKind::Get {
            return Err(StanzaError::new(Condition::BadRequest));
        }
        parse::<VersionQuery>(req.payload)?;
        let result = VersionResult {
            name: "xmppd".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            os: cx.config().show_os.then(|| std::env::consts::OS.into()),
        };
        Ok(Some(result.into()))
    }
}

/// A XEP-0012 request (xmpp-parsers has no XEP-0012).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = stanza::NS_LAST, name = "query")]
pub struct LastQuery;

/// A XEP-0012 answer: seconds since the last activity (or since start, for a server), with the
/// status of the last unavailable presence as text (§3).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = stanza::NS_LAST, name = "query")]
pub struct LastResult {
    #[xml(attribute)]
    pub seconds: u64,

    #[xml(text)]
    pub status: String,
}

/// XEP-0012: server uptime on the domain; time since logout on an account, for those who may
/// see the account's presence.
struct Last;

#[async_trait]
impl Module for Last {
    fn name(&self) -> &'static str {
        "last"
    }

    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }

    fn server_features(&self) -> Vec<String> {
        vec![stanza::NS_LAST.into()]
    }

    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![stanza::NS_LAST]
    }

    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![stanza::NS_LAST]
    }

    /// Remembers when the last resource of the account went offline.
    async fn on_session_closed(&self, cx: &mut Context<'_>, jid: &FullJid) {
        let user = jid.bare();
        if cx.sessions().resource_count(&user) > 0 {
            return;
        }
        let value = format!("{}\n", stanza::now_ms());
        if let Err(e) = cx
            .store()
            .set_data(&user_ref(&user), LAST_KEY, &value)
            .await
        {
            tracing::warn!(error = %e, "could not record last activity");
        }
    }

    async fn handle_iq(&self, cx: &mut Context<'_>, req: IqRequest) -> IqResponse {
        if req.kind != IqKind::Get {
            return Err(StanzaError::new(Condition::BadRequest));
        }
        parse::<LastQuery>(req.payload.clone())?;
        let query = |seconds: u64, status: &str| {
            let status = status.into();
            Ok(Some(LastResult { seconds, status }.into()))
        };
        if req.to.node().is_none() {
            return query(cx.uptime_secs(), "");
        }
        if !is_trusted(cx, &req.from, &req.to).await {
            return Err(StanzaError::new(Condition::Forbidden));
        }
        let bare = req.to.bare();
        if cx.sessions().resources(&bare).iter().any(|r| r.available) {
            return query(0, "");
        }
        match cx.store().get_data(&user_ref(&bare), LAST_KEY).await {
            Ok(Some(v)) => {
                let (ms, status) = v.split_once('\n').unwrap_or((&v, ""));
                let ms: i64 = ms.parse().unwrap_or(0);
                let secs = ((stanza::now_ms() - ms).max(0) / 1000) as u64;
                query(secs, status)
            }
            Ok(None) => Err(StanzaError::new(Condition::ServiceUnavailable)),
            Err(e) => Err(crate::im::storage_failed(e)),
        }
    }
}

/// XEP-0160: messages for an account with no available session are stored durably (before the
/// sender's stanza is considered accepted) and delivered, with `<delay/>`, on the next available
/// presence of non-negative priority.
///
/// A backlog can be as large as the offline cap times the largest stanza, so it is never queued
/// at once: one session of the account takes it page by page from its own task (see
/// [`OfflineDrains`]), and a page is removed from storage only once the session's writer has
/// written it. A message stored just as its recipient comes online does not wait for the next
/// login: storing it asks an available session to take the backlog.
#[derive(Default)]
struct Offline {
    /// Which session is being handed each account's offline messages.
    drains: OfflineDrains,
}

impl Offline {
    fn worth_storing(msg: &Element) -> bool {
        if msg.has_child("no-store", stanza::NS_HINTS) {
            return false;
        }
        msg.has_child("body", NS_CLIENT) || msg.has_child("store", stanza::NS_HINTS)
    }
}

#[async_trait]
impl Module for Offline {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            undeliverable: true,
            ..Hooks::NONE
        }
    }

    fn server_features(&self) -> Vec<String> {
        vec![stanza::FEATURE_OFFLINE.into()]
    }

    async fn on_undeliverable(
        &self,
        cx: &mut Context<'_>,
        msg: &Element,
    ) -> Result<bool, StanzaError> {
        if !matches!(msg.attr("type").unwrap_or("normal"), "normal" | "chat")
            || !Self::worth_storing(msg)
        {
            return Ok(false);
        }
        let Some(to) = msg.attr("to").and_then(|t| Jid::new(t).ok()) else {
            return Ok(false);
        };
        let bare = to.bare();
        let now = stanza::now_ms();
        let mut stored = msg.clone();
        stored.append_child(stanza::elem(
            "delay",
            stanza::NS_DELAY,
            &[
                ("from", bare.domain().as_str()),
                ("stamp", &stanza::xep82_datetime(now)),
            ],
        ));
        let mut xml = Vec::new();
        xmppd_stream::serialize(&stored, "", &mut xml);
        let xml = String::from_utf8_lossy(&xml);
        match cx
            .store()
            .push_offline(&user_ref(&bare), now, &xml, cx.config().offline_max)
            .await
        {
            Ok(true) => {
                // The recipient may have come online while this was being stored.
                self.wanted(cx, &bare, None);
                Ok(true)
            }
            Ok(false) => Err(StanzaError::with_text(
                Condition::ServiceUnavailable,
                "offline storage full",
            )),
            // The sender may send it again once storage is back.
            Err(e) => Err(crate::im::storage_failed(e)),
        }
    }

    async fn on_available(&self, cx: &mut Context<'_>, jid: &FullJid) {
        self.wanted(cx, &jid.bare(), Some(jid));
    }

    async fn on_written(&self, cx: &mut Context<'_>, session: &ClientSession) {
        self.written(cx, session).await;
    }

    /// If `session` was taking its account's backlog, another available session takes over
    /// what it had not written yet.
    async fn on_queue_ended(&self, cx: &mut Context<'_>, session: &ClientSession) {
        let user = session.jid.bare();
        let was_taking = {
            let mut drains = self.drains.lock();
            match drains.get(&user) {
                Some(d) if d.session == session.id => drains.remove(&user).is_some(),
                _ => false,
            }
        };
        if was_taking {
            self.wanted(cx, &user, None);
        }
    }
}

/// Offline messages handed out in one page: few enough that a page costs little memory, many
/// enough that the removal after each page (one storage commit) stays cheap.
const PAGE_MESSAGES: usize = 100;
const PAGE_BYTES: usize = 256 * 1024;

/// Which session of each account is taking that account's offline messages, and how far it
/// got. One session at a time, so that no message is handed out twice.
#[derive(Default)]
struct OfflineDrains(std::sync::Mutex<HashMap<BareJid, Drain>>);

struct Drain {
    /// The session taking the messages.
    session: SessionId,
    /// The last id handed to it (0: none yet); removed from storage once written.
    after: i64,
    /// More was stored since the session last found the store empty.
    again: bool,
}

impl OfflineDrains {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BareJid, Drain>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Offline {
    /// Asks a session of `user` to take the stored backlog: `to` (just came online) or the first
    /// resource offline messages would go to now. A session already taking it takes the new
    /// messages too. The session is asked through its own queue ([`Outbound::Written`]), so the
    /// reading and removal happen on its task, paced by its writer.
    fn wanted(&self, cx: &Context<'_>, user: &BareJid, to: Option<&FullJid>) {
        let resources = cx.sessions().resources(user);
        let target = match to {
            Some(jid) => resources.iter().find(|r| &r.jid == jid),
            None => {
                let jid = message_targets(&resources, "chat").into_iter().next();
                jid.and_then(|j| resources.iter().find(|r| r.jid == j))
            }
        };
        let mut drains = self.drains.lock();
        if let Some(d) = drains.get_mut(user) {
            d.again = true;
            return;
        }
        let Some(target) = target else {
            return;
        };
        drains.insert(
            user.clone(),
            Drain {
                session: target.session,
                after: 0,
                again: false,
            },
        );
        drop(drains);
        if !cx.request_written(target.session) {
            self.release(user, target.session);
        }
    }

    fn release(&self, user: &BareJid, session: SessionId) {
        let mut drains = self.drains.lock();
        if drains.get(user).is_some_and(|d| d.session == session) {
            drains.remove(user);
        }
    }

    /// The session's writer wrote everything up to its last [`Outbound::Written`]: removes the
    /// page it had been handed and hands it the next one, followed by another `Written`.
    async fn written(&self, cx: &Context<'_>, session: &ClientSession) {
        let user = session.jid.bare();
        let after = match self.drains.lock().get(&user) {
            Some(d) if d.session == session.id => d.after,
            _ => return,
        };
        let uref = user_ref(&user);
        // Claimed pages are gone from storage already.
        if after > 0 && !cx.config().offline_shared {
            if let Err(e) = cx.store().remove_offline(&uref, after).await {
                // They stay stored and come again at the next login: better twice than never.
                tracing::error!(error = %e, "offline cleanup failed");
            }
        }
        loop {
            if !session.is_available() {
                self.release(&user, session.id);
                return;
            }
            let shared = cx.config().offline_shared;
            let page = match shared {
                // Claimed: removed as it is read, so no other process hands it out too.
                true => (cx.store()).take_offline(&uref, PAGE_MESSAGES, PAGE_BYTES),
                false => (cx.store()).offline_page(&uref, after, PAGE_MESSAGES, PAGE_BYTES),
            };
            let page = match page.await {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "offline read failed");
                    self.release(&user, session.id);
                    return;
                }
            };
            if page.is_empty() {
                let mut drains = self.drains.lock();
                match drains.get_mut(&user) {
                    Some(d) if d.session == session.id && d.again => {
                        d.again = false;
                        continue;
                    }
                    Some(d) if d.session == session.id => {
                        drains.remove(&user);
                    }
                    _ => {}
                }
                return;
            }
            let mut queued = after;
            for (i, m) in page.iter().enumerate() {
                match m.xml.parse::<Element>() {
                    Ok(el) => match session
                        .queue()
                        .push(Outbound::Stanza(Arc::new(el)), Class::Stored)
                    {
                        Ok(()) => {}
                        // No room left: the rest of the page comes next time.
                        Err(SendError::Overflow) if !shared => break,
                        // Closing: what was not written stays stored.
                        Err(SendError::NotFound) if !shared => return,
                        // Claimed but not queued: stored again (after what came meanwhile).
                        Err(e) => {
                            restore_offline(cx, &uref, &page[i..]).await;
                            if matches!(e, SendError::NotFound) {
                                return;
                            }
                            break;
                        }
                    },
                    Err(e) => {
                        tracing::warn!(id = m.id, error = %e, "unreadable offline message dropped")
                    }
                }
                queued = m.id;
            }
            if let Some(d) = self.drains.lock().get_mut(&user) {
                if d.session == session.id {
                    d.after = queued;
                }
            }
            let _ = session.queue().push(Outbound::Written, Class::Stored);
            return;
        }
    }
}

/// Stores again offline messages that were claimed but could not be handed to a session.
async fn restore_offline(cx: &Context<'_>, user: &UserRef, messages: &[OfflineMessage]) {
    for m in messages {
        // Over the cap if need be: they were accepted once already.
        if let Err(e) = (cx.store())
            .push_offline(user, m.stamp_ms, &m.xml, usize::MAX)
            .await
        {
            tracing::error!(error = %e, "an offline message claimed but not delivered is lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_ver_matches_xep0115_construction() {
        let f = vec![
            "http://jabber.org/protocol/disco#info".to_string(),
            "urn:xmpp:ping".to_string(),
        ];
        let s = "server/im//xmppd<http://jabber.org/protocol/disco#info<urn:xmpp:ping<";
        let expect = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()));
        assert_eq!(caps_ver(&f, &[]), expect);
        assert_ne!(caps_ver(&f[..1], &[]), expect);
    }

    /// XEP-0115 §5.3, the complex generation example: the extended information form counts.
    #[test]
    fn caps_hash_includes_forms_as_xep0115_example() {
        use xmpp_parsers::data_forms::{DataFormType, Field, FieldType};
        let field = |var: &str, values: &[&str]| Field {
            values: values.iter().map(|v| v.to_string()).collect(),
            ..Field::new(var, FieldType::TextSingle)
        };
        let form = DataForm::new(
            DataFormType::Result_,
            "urn:xmpp:dataforms:softwareinfo",
            vec![
                field("os", &["Mac"]),
                field("ip_version", &["ipv6", "ipv4"]),
                field("software_version", &["0.11"]),
                field("software", &["Psi"]),
                field("os_version", &["10.5.1"]),
            ],
        );
        let features: Vec<String> = [
            "http://jabber.org/protocol/muc",
            "http://jabber.org/protocol/caps",
            "http://jabber.org/protocol/disco#items",
            "http://jabber.org/protocol/disco#info",
        ]
        .map(String::from)
        .into();
        let ids = "client/pc/el/\u{3a8} 0.11<client/pc/en/Psi 0.11<";
        let ver = caps_hash(ids, &features, &[form]);
        assert_eq!(ver, "q07IKJEyjvHSyhy//CH0CxmKi8w=");
        assert_ne!(caps_hash(ids, &features, &[]), ver);
    }

    #[test]
    fn offline_storage_policy_follows_hints() {
        let mut m = Element::bare("message", NS_CLIENT);
        assert!(!Offline::worth_storing(&m));
        m.append_child(stanza::text_elem("body", NS_CLIENT, "hi"));
        assert!(Offline::worth_storing(&m));
        m.append_child(Element::bare("no-store", stanza::NS_HINTS));
        assert!(!Offline::worth_storing(&m));
    }
}
