//! [`PrivateStorage`]: private XML storage (XEP-0049) and bookmarks kept in step in their
//! three places (XEP-0402 §5.3 and XEP-0048):
//!
//! - the `urn:xmpp:bookmarks:1` node, one item per room (XEP-0402);
//! - `<storage xmlns='storage:bookmarks'/>` in private XML storage (XEP-0048 1.0);
//! - the `storage:bookmarks` node, one item `current` (XEP-0048 1.1 §3.2, by XEP-0223).
//!
//! A write to any of them is converted into the others once it is stored: a legacy storage
//! replaces the set of XEP-0402 items (new and changed rooms published, gone ones retracted
//! with notifications); a change of the XEP-0402 node rewrites the legacy storage from its
//! items (keeping the legacy URLs). The legacy node is written only when it exists: only old
//! clients create it. The account's disco#info says so (`urn:xmpp:bookmarks:1#compat`,
//! `#compat-pep`).

use std::sync::Arc;

use async_trait::async_trait;
use jid::BareJid;
use minidom::Element;
use xmpp_parsers::bookmarks::Storage;
use xmpp_parsers::ns;
use xmppd_core::address::Bare;
use xmppd_core::module::{IqKind, IqRequest, IqResponse, Module};
use xmppd_core::stanza::{Condition, StanzaError};
use xmppd_core::{user_ref, Context};
use xmppd_pubsub::{Pep, PepWatcher};

use crate::bookmarks::{self, Bookmark};
use crate::nodes;
use crate::store::PersonalStore;
use crate::{serialize, storage_error};

/// The item id of the legacy node (XEP-0048 §3.2, XEP-0223 §3).
const CURRENT: &str = "current";

/// XEP-0049's `<query/>`: any one element, in the namespace it is stored under.
#[derive(xso::FromXml, xso::AsXml, Debug, Clone)]
#[xml(namespace = ns::PRIVATE, name = "query")]
pub struct Query {
    #[xml(element(n = ..))]
    pub payloads: Vec<Element>,
}

/// Where a legacy storage was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Legacy {
    Private,
    Node,
}

/// Private XML storage and bookmark conversion.
pub struct PrivateStorage {
    store: Arc<dyn PersonalStore>,
    pep: Arc<Pep>,
    max_bytes: usize,
    /// Conversions one at a time: each reads one form and rewrites the others.
    conversions: tokio::sync::Mutex<()>,
}

impl PrivateStorage {
    /// `max_bytes` bounds one stored element, serialised.
    pub fn new(store: Arc<dyn PersonalStore>, pep: Arc<Pep>, max_bytes: usize) -> PrivateStorage {
        PrivateStorage {
            store,
            pep,
            max_bytes,
            conversions: tokio::sync::Mutex::new(()),
        }
    }

    /// The element stored for `ns`, if any.
    async fn stored(&self, owner: &BareJid, ns: &str) -> Result<Option<Element>, StanzaError> {
        let xml = (self.store.private(&user_ref(owner), ns).await).map_err(storage_error)?;
        Ok(xml.and_then(|x| match x.parse::<Element>() {
            Ok(el) => Some(el),
            Err(e) => {
                tracing::warn!(error = %e, %owner, ns, "a stored private element does not parse");
                None
            }
        }))
    }

    async fn set(&self, owner: &BareJid, el: &Element) -> Result<(), StanzaError> {
        let xml = serialize(el);
        if xml.len() > self.max_bytes {
            return Err(StanzaError::with_text(
                Condition::NotAcceptable,
                format!("The element is larger than {} bytes", self.max_bytes),
            ));
        }
        (self
            .store
            .set_private(&user_ref(owner), el.ns().as_str(), &xml)
            .await)
            .map_err(storage_error)
    }

    /// The legacy storage written through `from` is converted into the other places.
    async fn legacy_written(
        &self,
        cx: &mut Context<'_>,
        owner: &BareJid,
        storage: &Storage,
        from: Legacy,
    ) {
        let el = Element::from(storage.clone());
        if from == Legacy::Node {
            if let Err(e) = self.set(owner, &el).await {
                tracing::warn!(%owner, error = ?e, "bookmarks: the legacy node's storage was not kept");
            }
        } else {
            self.write_legacy_node(cx, owner, el).await;
        }
        let wanted = bookmarks::from_legacy(storage);
        let items = match nodes::items(&self.pep, cx, owner, bookmarks::NODE, None).await {
            Ok(items) => items.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(%owner, error = ?e, "bookmarks: reading the bookmarks node failed");
                return;
            }
        };
        let (publish, retract) = bookmarks::changes(&items, &wanted);
        for Bookmark { room, conference } in publish {
            let payload = Element::from(conference);
            let id = Some(room.as_str());
            let published = nodes::publish(
                &self.pep,
                cx,
                owner,
                bookmarks::NODE,
                id,
                payload,
                bookmarks::NODE_OPTIONS,
            );
            if let Err(e) = published.await {
                tracing::warn!(%owner, %room, error = ?e, "bookmarks: publishing a converted bookmark failed");
            }
        }
        let retracted = nodes::retract(&self.pep, cx, owner, bookmarks::NODE, retract);
        if let Err(e) = retracted.await {
            tracing::warn!(%owner, error = ?e, "bookmarks: retracting converted bookmarks failed");
        }
    }

    /// Writes `storage` as the legacy node's item, if an old client made that node.
    async fn write_legacy_node(&self, cx: &mut Context<'_>, owner: &BareJid, storage: Element) {
        match nodes::items(&self.pep, cx, owner, bookmarks::LEGACY, Some(1)).await {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(%owner, error = ?e, "bookmarks: reading the legacy node failed");
                return;
            }
        }
        let id = Some(CURRENT);
        let published = nodes::publish(
            &self.pep,
            cx,
            owner,
            bookmarks::LEGACY,
            id,
            storage,
            nodes::PRIVATE_NODE,
        );
        if let Err(e) = published.await {
            tracing::warn!(%owner, error = ?e, "bookmarks: writing the legacy node failed");
        }
    }

    /// The XEP-0402 node changed: the legacy storage is rewritten from its items.
    async fn bookmarks2_changed(&self, cx: &mut Context<'_>, owner: &BareJid) {
        let items = match nodes::items(&self.pep, cx, owner, bookmarks::NODE, None).await {
            Ok(items) => items.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(%owner, error = ?e, "bookmarks: reading the bookmarks node failed");
                return;
            }
        };
        // Newest first from the node; the legacy list keeps the order they were added in.
        let mut marks = bookmarks::from_items(&items);
        marks.reverse();
        let old = match self.stored(owner, bookmarks::LEGACY).await {
            Ok(old) => old.and_then(|el| Storage::try_from(el).ok()),
            Err(_) => return,
        };
        let urls = old.map(|s| s.urls).unwrap_or_default();
        let el = Element::from(bookmarks::to_legacy(&marks, urls));
        if let Err(e) = self.set(owner, &el).await {
            tracing::warn!(%owner, error = ?e, "bookmarks: the converted legacy storage was not kept");
            return;
        }
        self.write_legacy_node(cx, owner, el).await;
    }
}

#[async_trait]
impl Module for PrivateStorage {
    fn name(&self) -> &'static str {
        "private"
    }

    fn account_features(&self) -> Vec<String> {
        vec![
            ns::PRIVATE.to_owned(),
            ns::BOOKMARKS2_COMPAT.to_owned(),
            ns::BOOKMARKS2_COMPAT_PEP.to_owned(),
        ]
    }

    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![ns::PRIVATE]
    }

    async fn handle_iq(&self, cx: &mut Context<'_>, req: IqRequest) -> IqResponse {
        let owner = req.to.bare();
        // XEP-0049 §3: an account's own storage only.
        if req.from.bare() != owner {
            return Err(StanzaError::new(Condition::Forbidden));
        }
        let query = Query::try_from(req.payload).map_err(|e| {
            StanzaError::with_text(Condition::BadRequest, format!("Malformed query: {e}"))
        })?;
        let mut payloads = query.payloads.into_iter();
        let (Some(el), None) = (payloads.next(), payloads.next()) else {
            return Err(StanzaError::with_text(
                Condition::NotAcceptable,
                "Exactly one child element is stored or asked for",
            ));
        };
        let space = el.ns();
        // XEP-0049 §3: the jabber:* namespaces are the protocol's own.
        if space.is_empty() || space.starts_with("jabber:") {
            return Err(StanzaError::with_text(
                Condition::NotAcceptable,
                "Elements in jabber:* namespaces are not stored",
            ));
        }
        match req.kind {
            IqKind::Get => {
                // Nothing stored: the empty element asked for (§3.2).
                let stored = self.stored(&owner, &space).await?.unwrap_or(el);
                Ok(Some(
                    Query {
                        payloads: vec![stored],
                    }
                    .into(),
                ))
            }
            IqKind::Set => {
                let legacy = (space == bookmarks::LEGACY)
                    .then(|| Storage::try_from(el.clone()))
                    .transpose()
                    .map_err(|e| {
                        StanzaError::with_text(Condition::BadRequest, format!("Bad bookmarks: {e}"))
                    })?;
                let _conversion = self.conversions.lock().await;
                self.set(&owner, &el).await?;
                if let Some(storage) = legacy {
                    self.legacy_written(cx, &owner, &storage, Legacy::Private)
                        .await;
                }
                Ok(None)
            }
        }
    }
}

#[async_trait]
impl PepWatcher for PrivateStorage {
    async fn on_node_changed(&self, cx: &mut Context<'_>, owner: &BareJid, node: &str) {
        match node {
            bookmarks::NODE => {
                let _conversion = self.conversions.lock().await;
                self.bookmarks2_changed(cx, owner).await;
            }
            bookmarks::LEGACY => {
                let _conversion = self.conversions.lock().await;
                let last = nodes::items(&self.pep, cx, owner, bookmarks::LEGACY, Some(1)).await;
                let storage = match last {
                    Ok(Some(items)) => items.into_iter().next().map(|(_, el)| el),
                    // Deleted: the old client's place is gone, not the bookmarks.
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(%owner, error = ?e, "bookmarks: reading the legacy node failed");
                        return;
                    }
                };
                let storage = match storage.map(Storage::try_from) {
                    // Retracted or purged: no bookmarks.
                    None => Storage::new(),
                    Some(Ok(s)) => s,
                    Some(Err(e)) => {
                        tracing::info!(%owner, error = %e, "bookmarks: the legacy node holds no bookmarks");
                        return;
                    }
                };
                self.legacy_written(cx, owner, &storage, Legacy::Node).await;
            }
            _ => {}
        }
    }
}
