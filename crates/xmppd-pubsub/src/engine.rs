//! XEP-0060 once, for both services: the requests on one owner's nodes (an account's, for
//! personal eventing, or the pubsub service's), their rules and errors. What a request
//! changes for others comes back as [`Event`]s; who receives them is the caller's choice
//! (XEP-0163 §4.3 for an account, the subscribers for the service).

use std::sync::Arc;

use jid::{BareJid, Jid};
use minidom::Element;
use xmpp_parsers::data_forms::DataForm;
use xmpp_parsers::ns;
use xmpp_parsers::pubsub::event::{self, Payload};
use xmpp_parsers::pubsub::owner::{self, Owner};
use xmpp_parsers::pubsub::pubsub::{self as ps, PubSub};
use xmpp_parsers::pubsub::{AffiliationAttribute, ItemId, NodeName, Subscription};
use xmppd_core::address::Bare;
use xmppd_core::module::{IqKind, IqRequest};
use xmppd_core::stanza::{Condition, StanzaError};
use xmppd_core::Context;

use crate::config::{AccessModel, Affiliation, Limits, NodeConfig};
use crate::errors::{forbidden, item_not_found, pubsub_error, storage};
use crate::payload::{
    wrap, wrap_owner, OwnerAffiliation, OwnerAffiliations, SubscriptionList, SubscriptionState,
    Unsubscribe,
};
use crate::store::{Created, NodeStore, Quota, StoredItem, StoredNode};

/// The XEP-0060 §11 features of what [`Engine`] does, for accounts and the service alike.
pub const FEATURES: &[&str] = &[
    "access-open",
    "access-presence",
    "access-roster",
    "access-whitelist",
    "auto-create",
    "config-node",
    "create-and-configure",
    "create-nodes",
    "delete-items",
    "delete-nodes",
    "item-ids",
    "manage-subscriptions",
    "member-affiliation",
    "modify-affiliations",
    "outcast-affiliation",
    "persistent-items",
    "publish",
    "publish-options",
    "publisher-affiliation",
    "purge-nodes",
    "retract-items",
    "retrieve-affiliations",
    "retrieve-default",
    "retrieve-items",
    "retrieve-subscriptions",
    "subscribe",
];

/// The disco features of a service with [`FEATURES`] and `more`.
pub fn features(more: &[&str]) -> Vec<String> {
    let all = FEATURES.iter().chain(more);
    let mut f: Vec<String> = all.map(|f| format!("{}#{f}", ns::PUBSUB)).collect();
    f.push(ns::PUBSUB.into());
    f
}

/// Whose nodes a request addresses, and what the requester may do there.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The owner key: the account's bare JID, or the service's domain.
    pub owner: String,
    /// Personal eventing (XEP-0163): the account is the owner of every node.
    pub pep: bool,
    /// Whether the requester may create nodes here.
    pub may_create: bool,
}

/// Something a request changed that others are told about.
#[derive(Debug, Clone)]
pub struct Event {
    pub node: StoredNode,
    pub payload: Payload,
    /// The node's explicit subscribers as the request found them (a deleted node has none
    /// left to read).
    pub subscribers: Vec<String>,
    /// The node's stored affiliations then: outcasts get nothing, members of a whitelist
    /// node do.
    pub affiliations: Vec<(String, Affiliation)>,
}

impl Event {
    /// The stored affiliation of the bare JID `jid`.
    pub fn affiliation(&self, jid: &str) -> Option<Affiliation> {
        (self.affiliations.iter())
            .find(|(j, _)| j == jid)
            .map(|(_, a)| *a)
    }
}

/// What a request gives: the IQ answer's payload, the events, and the `<event/>`s that go to
/// one entity only: the last item a new subscriber gets (XEP-0060 §6.1.7), the news of a
/// subscription an owner changed (§8.8.4).
#[derive(Debug, Default)]
pub struct Answer {
    pub reply: Option<Element>,
    pub events: Vec<Event>,
    pub direct: Vec<(Jid, Element)>,
    /// The node whose items or configuration the request changed, told or not (a node may
    /// keep quiet about retractions, purges, its deletion or its configuration).
    pub changed: Option<String>,
}

impl Answer {
    pub fn reply(reply: Element) -> Answer {
        Answer {
            reply: Some(reply),
            ..Answer::default()
        }
    }
}

/// The requests of XEP-0060 over a [`NodeStore`].
pub struct Engine {
    pub nodes: Arc<dyn NodeStore>,
    pub limits: Limits,
}

fn parse<T>(payload: Element) -> Result<T, StanzaError>
where
    T: TryFrom<Element, Error = xso::error::FromElementError>,
{
    T::try_from(payload).map_err(|e| {
        StanzaError::with_text(Condition::BadRequest, format!("Malformed request: {e}"))
    })
}

fn serialize(el: &Element) -> String {
    let mut xml = Vec::new();
    xmppd_stream::serialize(el, "", &mut xml);
    String::from_utf8_lossy(&xml).into_owned()
}

/// A stored payload, as an element again.
fn payload_of(item: &StoredItem) -> Option<Element> {
    match item.payload.parse::<Element>() {
        Ok(el) => Some(el),
        Err(e) => {
            tracing::warn!(error = %e, item = %item.id, "pubsub: a stored payload does not parse");
            None
        }
    }
}

/// An item as a notification carries it (XEP-0060 §7.1.2.1), with its payload or not.
pub fn event_item(item: &StoredItem, with_payload: bool) -> event::Item {
    event::Item {
        id: Some(ItemId(item.id.clone())),
        publisher: None,
        payload: with_payload.then(|| payload_of(item)).flatten(),
    }
}

/// The event that carries `item` of `node`.
pub fn items_event(node: &StoredNode, item: &StoredItem) -> Event {
    Event {
        node: node.clone(),
        payload: Payload::Items {
            node: NodeName(node.name.clone()),
            published: vec![event_item(item, node.config.deliver_payloads)],
            retracted: Vec::new(),
        },
        subscribers: Vec::new(),
        affiliations: Vec::new(),
    }
}

fn bare(jid: &Jid) -> BareJid {
    jid.bare()
}

impl Engine {
    /// Whether `who` created `node` (or, on an account, is the account): an owner no other
    /// owner can demote (§8.9.2.4: a node keeps an owner).
    fn is_creator(scope: &Scope, node: &StoredNode, who: &BareJid) -> bool {
        who.as_str() == node.creator || (scope.pep && who.as_str() == scope.owner)
    }

    /// The affiliation of `who` with `node` (§4.1): the creator's, or the stored one.
    pub async fn affiliation(
        &self,
        scope: &Scope,
        node: &StoredNode,
        who: &BareJid,
    ) -> Result<Option<Affiliation>, StanzaError> {
        if Self::is_creator(scope, node, who) {
            return Ok(Some(Affiliation::Owner));
        }
        let mine =
            (self.nodes.affiliations_of(&scope.owner, who.as_str()).await).map_err(storage)?;
        Ok(mine
            .into_iter()
            .find(|(n, _)| *n == node.name)
            .map(|(_, a)| a))
    }

    /// Refuses `who` unless an owner of `node`.
    async fn owner_only(
        &self,
        scope: &Scope,
        node: &StoredNode,
        who: &BareJid,
    ) -> Result<(), StanzaError> {
        match self.affiliation(scope, node, who).await? {
            Some(Affiliation::Owner) => Ok(()),
            _ => Err(forbidden()),
        }
    }

    /// XEP-0060 §4.5 and §6.1.3: whether `who` may subscribe to `node` and read its items.
    pub async fn may_access(
        &self,
        cx: &Context<'_>,
        scope: &Scope,
        node: &StoredNode,
        who: &BareJid,
    ) -> Result<(), StanzaError> {
        let affiliation = self.affiliation(scope, node, who).await?;
        Self::access_with(cx, node, who, affiliation).await
    }

    /// [`Engine::may_access`] once the affiliation of `who` is known.
    pub async fn access_with(
        cx: &Context<'_>,
        node: &StoredNode,
        who: &BareJid,
        affiliation: Option<Affiliation>,
    ) -> Result<(), StanzaError> {
        match affiliation {
            // §6.1.3.8: an outcast is blocked.
            Some(Affiliation::Outcast) => return Err(forbidden()),
            Some(_) => return Ok(()),
            None => {}
        }
        let Ok(owner) = BareJid::new(&node.creator) else {
            return Err(forbidden());
        };
        match node.config.access {
            AccessModel::Open => Ok(()),
            AccessModel::Presence => {
                if xmppd_im::shares_presence(cx, &owner, who).await {
                    Ok(())
                } else {
                    Err(pubsub_error(
                        Condition::NotAuthorized,
                        "presence-subscription-required",
                    ))
                }
            }
            AccessModel::Roster => {
                let roster = xmppd_im::effective_roster(cx, &owner).await;
                // §4.5: membership of an allowed group, whatever the subscription.
                let allowed = roster.iter().any(|i| {
                    i.jid == who.as_str()
                        && i.groups
                            .iter()
                            .any(|g| node.config.roster_groups.contains(g))
                });
                if allowed {
                    Ok(())
                } else {
                    Err(pubsub_error(
                        Condition::NotAuthorized,
                        "not-in-roster-group",
                    ))
                }
            }
            AccessModel::Whitelist => Err(pubsub_error(Condition::NotAllowed, "closed-node")),
        }
    }

    /// `payload` about `node`, with the node's subscribers now.
    async fn event(
        &self,
        scope: &Scope,
        node: StoredNode,
        payload: Payload,
    ) -> Result<Event, StanzaError> {
        let subscribers = (self.nodes)
            .subscribers(&scope.owner, &node.name)
            .await
            .map_err(storage)?;
        let affiliations = (self.nodes)
            .affiliations(&scope.owner, &node.name)
            .await
            .map_err(storage)?;
        Ok(Event {
            node,
            payload,
            subscribers,
            affiliations,
        })
    }

    async fn existing(&self, scope: &Scope, node: &str) -> Result<StoredNode, StanzaError> {
        (self.nodes.node(&scope.owner, node).await)
            .map_err(storage)?
            .ok_or_else(item_not_found)
    }

    /// Answers a request in the `pubsub` or `pubsub#owner` namespace.
    pub async fn handle(
        &self,
        cx: &Context<'_>,
        scope: &Scope,
        req: IqRequest,
    ) -> Result<Answer, StanzaError> {
        let who = bare(&req.from);
        if req.payload.ns() == ns::PUBSUB_OWNER {
            // Parsed here: xmpp-parsers does not give the fields of an owner's affiliation.
            if let Some(a) = req.payload.get_child("affiliations", ns::PUBSUB_OWNER) {
                let a: OwnerAffiliations = parse(a.clone())?;
                return self.owner_affiliations(scope, &who, req.kind, a).await;
            }
            let owner: Owner = parse(req.payload)?;
            return self
                .owner_request(scope, &who, req.kind, owner.payload)
                .await;
        }
        // Parsed here: xmpp-parsers reads `<unsubscribe/>` but does not give its fields.
        if let Some(u) = req.payload.get_child("unsubscribe", ns::PUBSUB) {
            let u: Unsubscribe = parse(u.clone())?;
            return self.unsubscribe(scope, &req.from, u).await;
        }
        let request: PubSub = parse(req.payload)?;
        match (req.kind, request) {
            (
                IqKind::Set,
                PubSub::Publish {
                    publish,
                    publish_options,
                },
            ) => {
                let form = publish_options.and_then(|o| o.form);
                self.publish(scope, &req.from, publish, form).await
            }
            (IqKind::Set, PubSub::Create { create, configure }) => {
                let form = configure.and_then(|c| c.form);
                self.create(scope, &who, create.node, form).await
            }
            (IqKind::Set, PubSub::Retract(r)) => self.retract(scope, &who, r).await,
            (IqKind::Get, PubSub::Items(items)) => self.items(cx, scope, &who, items).await,
            (
                IqKind::Set,
                PubSub::Subscribe {
                    subscribe: Some(s), ..
                },
            ) => self.subscribe(cx, scope, &req.from, s).await,
            (IqKind::Get, PubSub::Subscriptions(s)) => {
                self.subscriptions(scope, &req.from, s.node).await
            }
            (IqKind::Get, PubSub::Affiliations(a)) => self.affiliations(scope, &who, a.node).await,
            _ => Err(StanzaError::new(Condition::FeatureNotImplemented)),
        }
    }

    async fn publish(
        &self,
        scope: &Scope,
        from: &Jid,
        publish: ps::Publish,
        form: Option<DataForm>,
    ) -> Result<Answer, StanzaError> {
        let who = bare(from);
        let name = publish.node.0;
        if name.is_empty() {
            return Err(pubsub_error(Condition::BadRequest, "nodeid-required"));
        }
        let mut items = publish.items.into_iter();
        let (item, None) = (items.next(), items.next()) else {
            // §7.1.3.6: one item per request.
            return Err(pubsub_error(Condition::BadRequest, "invalid-payload"));
        };
        let Some(payload) = item.as_ref().and_then(|i| i.payload.as_ref()) else {
            return Err(pubsub_error(Condition::BadRequest, "item-required"));
        };
        let payload = serialize(payload);
        if payload.len() > self.limits.max_payload_bytes {
            return Err(pubsub_error(Condition::NotAcceptable, "payload-too-big"));
        }
        let node = match self
            .nodes
            .node(&scope.owner, &name)
            .await
            .map_err(storage)?
        {
            Some(node) => {
                let affiliation = self.affiliation(scope, &node, &who).await?;
                if !affiliation.is_some_and(Affiliation::publishes) {
                    return Err(forbidden());
                }
                if let Some(form) = &form {
                    node.config.check_preconditions(form, &self.limits)?;
                }
                node
            }
            // XEP-0163 §3 and XEP-0060 §7.1.4: a node is created on its first publish, with
            // the publish-options as its configuration (§7.1.5).
            None => {
                if !scope.may_create {
                    return Err(item_not_found());
                }
                self.create_node(scope, &who, name, form.as_ref(), true)
                    .await?
            }
        };
        let id = item
            .and_then(|i| i.id)
            .map(|i| i.0)
            .filter(|i| !i.is_empty())
            .unwrap_or_else(new_id);
        let stored = StoredItem {
            id: id.clone(),
            publisher: Some(who.to_string()),
            payload,
        };
        (self.nodes)
            .publish(
                &scope.owner,
                &node.name,
                stored.clone(),
                node.config.kept_items(),
            )
            .await
            .map_err(storage)?;
        let reply = wrap(ps::Publish {
            node: NodeName(node.name.clone()),
            items: vec![ps::Item {
                id: Some(ItemId(id)),
                publisher: None,
                payload: None,
            }],
        });
        let ev = items_event(&node, &stored);
        Ok(Answer {
            reply: Some(reply),
            changed: Some(node.name.clone()),
            events: vec![self.event(scope, ev.node, ev.payload).await?],
            direct: Vec::new(),
        })
    }

    /// Creates a node named `name` for `who`, configured by `form` (a publish's options when
    /// `from_publish`, whose errors are unmet preconditions).
    async fn create_node(
        &self,
        scope: &Scope,
        who: &BareJid,
        name: String,
        form: Option<&DataForm>,
        from_publish: bool,
    ) -> Result<StoredNode, StanzaError> {
        let mut config = if scope.pep {
            NodeConfig::pep_default()
        } else {
            NodeConfig::service_default()
        };
        if let Some(form) = form {
            config.apply(form, &self.limits).map_err(|text| {
                let mut e = if from_publish {
                    pubsub_error(Condition::Conflict, "precondition-not-met")
                } else {
                    StanzaError::new(Condition::NotAcceptable)
                };
                e.text = Some(text);
                e
            })?;
        }
        let creator = if scope.pep {
            scope.owner.clone()
        } else {
            who.to_string()
        };
        let node = StoredNode {
            name,
            creator,
            config,
        };
        let quota = Quota {
            per_owner: if scope.pep {
                self.limits.max_nodes
            } else {
                self.limits.max_service_nodes
            },
            per_creator: self.limits.max_nodes,
        };
        let created = (self.nodes)
            .create(&scope.owner, node.clone(), quota)
            .await
            .map_err(storage)?;
        // XEP-0060 names no error for a quota of nodes. The requester's own quota is told as
        // a node's full quota of items is (§13.11: `<not-allowed/>`, here with
        // `<max-nodes-exceeded/>` of the pubsub#errors schema); a full service lacks
        // resources, whoever asks.
        let full = |condition, text: &str| {
            let mut e = pubsub_error(condition, "max-nodes-exceeded");
            e.text = Some(text.into());
            e
        };
        match created {
            Created::Created => Ok(node),
            Created::Exists => Err(StanzaError::new(Condition::Conflict)),
            Created::OwnerFull if !scope.pep => Err(full(
                Condition::ResourceConstraint,
                "The service has too many nodes",
            )),
            Created::OwnerFull | Created::CreatorFull => Err(full(
                Condition::NotAllowed,
                "Too many nodes for this account",
            )),
        }
    }

    async fn create(
        &self,
        scope: &Scope,
        who: &BareJid,
        name: Option<NodeName>,
        form: Option<DataForm>,
    ) -> Result<Answer, StanzaError> {
        if !scope.may_create {
            return Err(forbidden());
        }
        let instant = name.is_none();
        let name = match name.map(|n| n.0) {
            Some(n) if !n.is_empty() => n,
            // XEP-0163 §4: no instant nodes on an account.
            _ if scope.pep => {
                return Err(pubsub_error(Condition::NotAcceptable, "nodeid-required"))
            }
            _ => new_id(),
        };
        let node = self
            .create_node(scope, who, name, form.as_ref(), false)
            .await?;
        // §8.1.2: the name of an instant node goes back to its creator.
        let reply = instant.then(|| {
            wrap(ps::Create {
                node: Some(NodeName(node.name)),
            })
        });
        Ok(Answer {
            reply,
            ..Answer::default()
        })
    }

    async fn retract(
        &self,
        scope: &Scope,
        who: &BareJid,
        r: ps::Retract,
    ) -> Result<Answer, StanzaError> {
        let node = self.existing(scope, &r.node.0).await?;
        let affiliation = self.affiliation(scope, &node, who).await?;
        if !affiliation.is_some_and(Affiliation::publishes) {
            return Err(forbidden());
        }
        let ids: Vec<String> = r
            .items
            .into_iter()
            .filter_map(|i| i.id.map(|i| i.0))
            .collect();
        if ids.is_empty() {
            return Err(pubsub_error(Condition::BadRequest, "item-required"));
        }
        let removed = (self.nodes)
            .retract(&scope.owner, &node.name, ids)
            .await
            .map_err(storage)?;
        if removed.is_empty() {
            return Err(item_not_found());
        }
        let changed = Some(node.name.clone());
        // §7.2.2.1: retractions are told when asked for or configured.
        let events = if r.notify || node.config.notify_retract {
            let payload = Payload::Items {
                node: NodeName(node.name.clone()),
                published: Vec::new(),
                retracted: removed.into_iter().map(ItemId).collect(),
            };
            vec![self.event(scope, node, payload).await?]
        } else {
            Vec::new()
        };
        Ok(Answer {
            events,
            changed,
            ..Answer::default()
        })
    }

    async fn items(
        &self,
        cx: &Context<'_>,
        scope: &Scope,
        who: &BareJid,
        q: ps::Items,
    ) -> Result<Answer, StanzaError> {
        let node = self.existing(scope, &q.node.0).await?;
        self.may_access(cx, scope, &node, who).await?;
        let ids: Vec<String> = q
            .items
            .iter()
            .filter_map(|i| i.id.clone().map(|i| i.0))
            .collect();
        let stored = if ids.is_empty() {
            (self.nodes)
                .items(&scope.owner, &node.name, q.max_items)
                .await
        } else {
            (self.nodes)
                .items_by_id(&scope.owner, &node.name, ids)
                .await
        }
        .map_err(storage)?;
        let items = stored
            .iter()
            .map(|i| ps::Item {
                id: Some(ItemId(i.id.clone())),
                publisher: None,
                payload: payload_of(i),
            })
            .collect();
        Ok(Answer::reply(
            PubSub::Items(ps::Items {
                max_items: None,
                node: q.node,
                subid: None,
                items,
            })
            .into(),
        ))
    }

    async fn subscribe(
        &self,
        cx: &Context<'_>,
        scope: &Scope,
        from: &Jid,
        s: ps::Subscribe,
    ) -> Result<Answer, StanzaError> {
        let Some(name) = s.node.map(|n| n.0) else {
            return Err(pubsub_error(Condition::NotAcceptable, "nodeid-required"));
        };
        // §6.1.3.1: only for oneself.
        if s.jid.bare() != from.bare() {
            return Err(pubsub_error(Condition::BadRequest, "invalid-jid"));
        }
        let node = self.existing(scope, &name).await?;
        self.may_access(cx, scope, &node, &from.bare()).await?;
        (self.nodes)
            .set_subscription(&scope.owner, &name, s.jid.as_str(), true)
            .await
            .map_err(storage)?;
        let reply = wrap(SubscriptionState {
            jid: s.jid.clone(),
            node: Some(NodeName(name.clone())),
            subscription: Subscription::Subscribed,
        });
        let direct = if node.config.send_last == crate::config::SendLast::Never {
            Vec::new()
        } else {
            let last = (self.nodes)
                .items(&scope.owner, &name, Some(1))
                .await
                .map_err(storage)?;
            let event = |i| event::Event {
                payload: items_event(&node, i).payload,
            };
            (last.first().map(|i| (s.jid, event(i).into())).into_iter()).collect()
        };
        Ok(Answer {
            reply: Some(reply),
            direct,
            ..Answer::default()
        })
    }

    async fn unsubscribe(
        &self,
        scope: &Scope,
        from: &Jid,
        u: Unsubscribe,
    ) -> Result<Answer, StanzaError> {
        let Some(name) = u.node.map(|n| n.0) else {
            return Err(pubsub_error(Condition::NotAcceptable, "nodeid-required"));
        };
        if u.jid.bare() != from.bare() {
            return Err(pubsub_error(Condition::BadRequest, "invalid-jid"));
        }
        self.existing(scope, &name).await?;
        let was = (self.nodes)
            .set_subscription(&scope.owner, &name, u.jid.as_str(), false)
            .await
            .map_err(storage)?;
        if !was {
            return Err(pubsub_error(Condition::UnexpectedRequest, "not-subscribed"));
        }
        Ok(Answer::default())
    }

    /// §5.6: the requester's subscriptions here (of the account, or of its full JID).
    async fn subscriptions(
        &self,
        scope: &Scope,
        from: &Jid,
        node: Option<NodeName>,
    ) -> Result<Answer, StanzaError> {
        let mut subscriptions = Vec::new();
        for jid in [Jid::from(from.bare()), from.clone()] {
            let nodes = (self.nodes)
                .subscriptions_of(&scope.owner, jid.as_str())
                .await
                .map_err(storage)?;
            for n in nodes {
                if node.as_ref().is_none_or(|want| want.0 == n) {
                    subscriptions.push(SubscriptionState {
                        jid: jid.clone(),
                        node: Some(NodeName(n)),
                        subscription: Subscription::Subscribed,
                    });
                }
            }
            if from.try_as_full().is_err() {
                break;
            }
        }
        Ok(Answer::reply(wrap(SubscriptionList {
            node,
            subscriptions,
        })))
    }

    /// §5.7: the requester's affiliations here: the nodes it created, and those it was
    /// given.
    async fn affiliations(
        &self,
        scope: &Scope,
        who: &BareJid,
        node: Option<NodeName>,
    ) -> Result<Answer, StanzaError> {
        let nodes = self.nodes.nodes(&scope.owner).await.map_err(storage)?;
        let created = (nodes.into_iter())
            .filter(|n| Self::is_creator(scope, n, who))
            .map(|n| (n.name, Affiliation::Owner));
        let given =
            (self.nodes.affiliations_of(&scope.owner, who.as_str()).await).map_err(storage)?;
        let mut all: Vec<(String, Affiliation)> = created.chain(given).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.dedup_by(|a, b| a.0 == b.0);
        let affiliations = (all.into_iter())
            .filter(|(n, _)| node.as_ref().is_none_or(|want| want.0 == *n))
            .map(|(n, a)| ps::Affiliation {
                node: NodeName(n),
                affiliation: attribute(a),
            })
            .collect();
        Ok(Answer::reply(
            PubSub::Affiliations(ps::Affiliations { node, affiliations }).into(),
        ))
    }

    /// The `pubsub#owner` requests (§8): configure, default, delete, purge, subscriptions.
    async fn owner_request(
        &self,
        scope: &Scope,
        who: &BareJid,
        kind: IqKind,
        payload: owner::Payload,
    ) -> Result<Answer, StanzaError> {
        use owner::Payload as P;
        if let (IqKind::Get, P::Default { .. }) = (kind, &payload) {
            let config = if scope.pep {
                NodeConfig::pep_default()
            } else {
                NodeConfig::service_default()
            };
            let form = Some(config.to_form(&self.limits));
            return Ok(Answer::reply(
                Owner {
                    payload: P::Default { form },
                }
                .into(),
            ));
        }
        let name = match &payload {
            P::Configure { node, .. } => node.as_ref().map(|n| n.0.clone()),
            P::Delete { node, .. } | P::Purge { node } | P::Subscriptions { node, .. } => {
                Some(node.0.clone())
            }
            _ => return Err(StanzaError::new(Condition::FeatureNotImplemented)),
        };
        let Some(name) = name else {
            return Err(pubsub_error(Condition::BadRequest, "nodeid-required"));
        };
        let node = self.existing(scope, &name).await?;
        self.owner_only(scope, &node, who).await?;
        let nodename = NodeName(name.clone());
        match (kind, payload) {
            (IqKind::Get, P::Configure { .. }) => {
                let form = Some(node.config.to_form(&self.limits));
                Ok(Answer::reply(
                    Owner {
                        payload: P::Configure {
                            node: Some(nodename),
                            form,
                        },
                    }
                    .into(),
                ))
            }
            (IqKind::Set, P::Configure { form, .. }) => {
                let Some(form) = form else {
                    return Err(StanzaError::new(Condition::BadRequest));
                };
                let mut config = node.config.clone();
                (config.apply(&form, &self.limits))
                    .map_err(|t| StanzaError::with_text(Condition::NotAcceptable, t))?;
                (self.nodes)
                    .configure(&scope.owner, &name, config.clone())
                    .await
                    .map_err(storage)?;
                let changed = Some(name.clone());
                if !config.notify_config {
                    return Ok(Answer {
                        changed,
                        ..Answer::default()
                    });
                }
                // §8.2.5.3: the new configuration, or only its news on a node without
                // payloads.
                let form = config.deliver_payloads.then(|| {
                    let mut form = config.to_form(&self.limits);
                    form.type_ = xmpp_parsers::data_forms::DataFormType::Result_;
                    form
                });
                let node = StoredNode { config, ..node };
                let payload = Payload::Configuration {
                    node: nodename,
                    form,
                };
                Ok(Answer {
                    events: vec![self.event(scope, node, payload).await?],
                    changed,
                    ..Answer::default()
                })
            }
            (IqKind::Set, P::Delete { redirect_uri, .. }) => {
                // §8.4.1: the redirect says where the subscribers find what replaces it.
                let payload = Payload::Delete {
                    node: nodename,
                    redirect: redirect_uri,
                };
                let notify = node.config.notify_delete;
                let event = self.event(scope, node, payload).await?;
                self.nodes
                    .delete(&scope.owner, &name)
                    .await
                    .map_err(storage)?;
                Ok(Answer {
                    events: (notify.then_some(event).into_iter()).collect(),
                    changed: Some(name),
                    ..Answer::default()
                })
            }
            (IqKind::Set, P::Purge { .. }) => {
                self.nodes
                    .purge(&scope.owner, &name)
                    .await
                    .map_err(storage)?;
                let changed = Some(name.clone());
                // §8.5.2: one notification, where retractions are told.
                if !node.config.notify_retract {
                    return Ok(Answer {
                        changed,
                        ..Answer::default()
                    });
                }
                let payload = Payload::Purge { node: nodename };
                Ok(Answer {
                    events: vec![self.event(scope, node, payload).await?],
                    changed,
                    ..Answer::default()
                })
            }
            (IqKind::Set, P::Subscriptions { subscriptions, .. }) => {
                self.modify_subscriptions(scope, &node, subscriptions).await
            }
            (IqKind::Get, P::Subscriptions { .. }) => {
                let subscribers = (self.nodes)
                    .subscribers(&scope.owner, &name)
                    .await
                    .map_err(storage)?;
                let subscriptions = subscribers
                    .into_iter()
                    .filter_map(|j| Jid::new(&j).ok())
                    .map(|jid| owner::SubscriptionElem {
                        jid,
                        subscription: Subscription::Subscribed,
                        subid: None,
                    })
                    .collect();
                Ok(Answer::reply(
                    Owner {
                        payload: P::Subscriptions {
                            node: nodename,
                            subscriptions,
                        },
                    }
                    .into(),
                ))
            }
            _ => Err(StanzaError::new(Condition::BadRequest)),
        }
    }
}

impl Engine {
    /// §8.9: an owner reads or changes the affiliations of a node.
    async fn owner_affiliations(
        &self,
        scope: &Scope,
        who: &BareJid,
        kind: IqKind,
        request: OwnerAffiliations,
    ) -> Result<Answer, StanzaError> {
        let node = self.existing(scope, &request.node.0).await?;
        self.owner_only(scope, &node, who).await?;
        if kind == IqKind::Get {
            let creator = if scope.pep {
                scope.owner.clone()
            } else {
                node.creator.clone()
            };
            let stored =
                (self.nodes.affiliations(&scope.owner, &node.name).await).map_err(storage)?;
            let affiliations = (std::iter::once((creator, Affiliation::Owner)).chain(stored))
                .filter_map(|(jid, a)| {
                    Some(OwnerAffiliation {
                        jid: Jid::new(&jid).ok()?,
                        affiliation: attribute(a),
                    })
                })
                .collect();
            return Ok(Answer::reply(wrap_owner(OwnerAffiliations {
                node: request.node,
                affiliations,
            })));
        }
        let mut seen = std::collections::HashSet::new();
        let mut changes = Vec::new();
        for entry in request.affiliations {
            // §4.1: affiliations are of bare JIDs.
            let jid = entry.jid.bare();
            // §8.9.2.4: one element per entity.
            if !seen.insert(jid.clone()) {
                return Err(StanzaError::with_text(
                    Condition::BadRequest,
                    format!("{jid} is named twice"),
                ));
            }
            let wanted = match entry.affiliation {
                AffiliationAttribute::None => None,
                AffiliationAttribute::Owner => Some(Affiliation::Owner),
                AffiliationAttribute::Publisher => Some(Affiliation::Publisher),
                AffiliationAttribute::Member => Some(Affiliation::Member),
                AffiliationAttribute::Outcast => Some(Affiliation::Outcast),
                // §8.9.2.3.2.
                AffiliationAttribute::PublishOnly => {
                    return Err(unsupported("publish-only-affiliation"))
                }
            };
            let refused = if Self::is_creator(scope, &node, &jid) {
                // §8.9.2.4: the node keeps its owner.
                wanted != Some(Affiliation::Owner)
            } else {
                // An account is the one owner of its nodes (XEP-0163 §4).
                scope.pep && wanted == Some(Affiliation::Owner)
            };
            if refused {
                return Err(StanzaError::with_text(
                    Condition::NotAcceptable,
                    format!("{jid} cannot have that affiliation"),
                ));
            }
            if !Self::is_creator(scope, &node, &jid) {
                changes.push((jid.to_string(), wanted));
            }
        }
        (self
            .nodes
            .set_affiliations(&scope.owner, &node.name, changes)
            .await)
            .map_err(storage)?;
        Ok(Answer::default())
    }

    /// §8.8.2: an owner subscribes or unsubscribes entities; each whose subscription changed
    /// is told (§8.8.4). Either every change is made, or none.
    async fn modify_subscriptions(
        &self,
        scope: &Scope,
        node: &StoredNode,
        subscriptions: Vec<owner::SubscriptionElem>,
    ) -> Result<Answer, StanzaError> {
        let affiliations =
            (self.nodes.affiliations(&scope.owner, &node.name).await).map_err(storage)?;
        let mut changes = Vec::new();
        for s in subscriptions {
            let subscribed = match s.subscription {
                Subscription::Subscribed => true,
                Subscription::None => false,
                // Neither is a state an owner sets here: no approval or options pending.
                _ => {
                    return Err(StanzaError::with_text(
                        Condition::NotAcceptable,
                        format!("{}: only subscribed or none", s.jid),
                    ))
                }
            };
            let bare = s.jid.bare();
            let outcast = (affiliations.iter())
                .any(|(j, a)| *j == bare.as_str() && *a == Affiliation::Outcast);
            if subscribed && outcast {
                return Err(StanzaError::with_text(
                    Condition::NotAcceptable,
                    format!("{bare} is an outcast"),
                ));
            }
            changes.push((s.jid, subscribed));
        }
        let mut direct = Vec::new();
        for (jid, subscribed) in changes {
            let changed = (self.nodes)
                .set_subscription(&scope.owner, &node.name, jid.as_str(), subscribed)
                .await
                .map_err(storage)?;
            if changed {
                let state = if subscribed {
                    Subscription::Subscribed
                } else {
                    Subscription::None
                };
                let payload = Payload::Subscription {
                    node: NodeName(node.name.clone()),
                    expiry: None,
                    jid: Some(jid.clone()),
                    subid: None,
                    subscription: Some(state),
                };
                let mut event = Element::from(event::Event { payload });
                // §8.8.4 says `none` too, which the typed element leaves out as the default.
                for child in event.children_mut() {
                    xmppd_core::stanza::set_attr(child, "subscription", state_name(subscribed));
                }
                direct.push((jid, event));
            }
        }
        Ok(Answer {
            direct,
            ..Answer::default()
        })
    }
}

fn state_name(subscribed: bool) -> &'static str {
    if subscribed {
        "subscribed"
    } else {
        "none"
    }
}

/// The attribute value of an affiliation.
fn attribute(a: Affiliation) -> AffiliationAttribute {
    match a {
        Affiliation::Owner => AffiliationAttribute::Owner,
        Affiliation::Publisher => AffiliationAttribute::Publisher,
        Affiliation::Member => AffiliationAttribute::Member,
        Affiliation::Outcast => AffiliationAttribute::Outcast,
    }
}

/// XEP-0060's answer to an optional `feature` the service lacks.
fn unsupported(feature: &str) -> StanzaError {
    StanzaError::new(Condition::FeatureNotImplemented).with_app(xmppd_core::stanza::elem(
        "unsupported",
        ns::PUBSUB_ERRORS,
        &[("feature", feature)],
    ))
}

/// A fresh item or node id (§7.1.3 "the service MUST generate an ItemID").
fn new_id() -> String {
    use rand::Rng;
    let n: u128 = rand::thread_rng().gen();
    format!("{n:032x}")
}

/// A notification of `payload` from `from` (§7.1.2.1: a headline message).
pub fn notification(from: &str, id: u64, payload: Payload) -> Element {
    notification_of(from, id, event::Event { payload }.into())
}

/// A notification carrying `event`, an `<event/>` element.
pub fn notification_of(from: &str, id: u64, event: Element) -> Element {
    let id = format!("pubsub-{id}");
    let attrs = [("from", from), ("type", "headline"), ("id", id.as_str())];
    let mut msg = xmppd_core::stanza::elem("message", xmppd_core::stanza::NS_CLIENT, &attrs);
    msg.append_child(event);
    msg
}
