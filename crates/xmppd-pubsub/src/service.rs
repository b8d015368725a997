//! The pubsub service (XEP-0060) on `pubsub.HOST`, as a core component: nodes owned by the
//! users that created them, within the creation policy; notifications to the subscribers.

use std::sync::Arc;

use async_trait::async_trait;
use jid::Jid;
use minidom::Element;
use xmpp_parsers::disco::{DiscoInfoQuery, DiscoInfoResult, DiscoItemsQuery, DiscoItemsResult};
use xmpp_parsers::disco::{Identity, Item};
use xmpp_parsers::ns;
use xmppd_core::address::Bare;
use xmppd_core::module::{Component, IqKind, IqRequest};
use xmppd_core::stanza::{iq_result, Condition, StanzaError};
use xmppd_core::Context;

use crate::engine::{notification, notification_of, Answer, Engine, Event, Scope};
use crate::errors::{item_not_found, storage};

/// Who may create nodes on the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreatePolicy {
    /// Every account of the served hosts.
    Local,
    /// The server's administrators.
    Admins,
}

/// The features only the service has (XEP-0060 §11), besides [`crate::engine::FEATURES`].
const SERVICE_FEATURES: &[&str] = &["instant-nodes"];

/// The service on one domain.
pub struct PubSubService {
    domain: String,
    engine: Arc<Engine>,
    policy: CreatePolicy,
}

impl PubSubService {
    pub fn new(domain: &str, engine: Arc<Engine>, policy: CreatePolicy) -> PubSubService {
        PubSubService {
            domain: domain.to_owned(),
            engine,
            policy,
        }
    }

    fn may_create(&self, cx: &Context<'_>, from: &Jid) -> bool {
        let bare = from.bare();
        match self.policy {
            CreatePolicy::Local => {
                cx.is_local_host(bare.domain().as_str()) && bare.node().is_some()
            }
            CreatePolicy::Admins => cx.is_admin(&bare),
        }
    }

    async fn disco(&self, kind: IqKind, payload: Element) -> Result<Option<Element>, StanzaError> {
        if kind != IqKind::Get {
            return Err(StanzaError::new(Condition::NotAllowed));
        }
        let bad = |e: xso::error::FromElementError| {
            StanzaError::with_text(Condition::BadRequest, format!("Malformed request: {e}"))
        };
        let identity = |t: &str| Identity {
            category: "pubsub".into(),
            type_: t.into(),
            lang: None,
            name: None,
        };
        if payload.is("query", ns::DISCO_INFO) {
            let q = DiscoInfoQuery::try_from(payload).map_err(bad)?;
            let (identities, features) = match &q.node {
                None => {
                    let mut f = crate::engine::features(SERVICE_FEATURES);
                    f.extend([ns::DISCO_INFO.into(), ns::DISCO_ITEMS.into()]);
                    (vec![identity("service")], f)
                }
                Some(n) => {
                    let node = self.engine.nodes.node(&self.domain, n).await;
                    node.map_err(storage)?.ok_or_else(item_not_found)?;
                    (vec![identity("leaf")], vec![ns::DISCO_INFO.into()])
                }
            };
            let result = DiscoInfoResult {
                node: q.node,
                identities,
                features: features.into_iter().collect(),
                extensions: Vec::new(),
            };
            return Ok(Some(result.into()));
        }
        let q = DiscoItemsQuery::try_from(payload).map_err(bad)?;
        let items = match &q.node {
            None => {
                let nodes = self.engine.nodes.nodes(&self.domain).await;
                let domain = Jid::new(&self.domain).map_err(|_| item_not_found())?;
                (nodes.map_err(storage)?.into_iter())
                    .map(|n| Item {
                        jid: domain.clone(),
                        node: Some(n.name),
                        name: None,
                    })
                    .collect()
            }
            Some(n) => {
                let node = self.engine.nodes.node(&self.domain, n).await;
                node.map_err(storage)?.ok_or_else(item_not_found)?;
                Vec::new()
            }
        };
        Ok(Some(
            DiscoItemsResult {
                node: q.node,
                items,
                rsm: None,
            }
            .into(),
        ))
    }

    /// Sends `ev` to the node's subscribers (XEP-0060 §7.1.2), each a copy with its address.
    async fn notify(&self, cx: &mut Context<'_>, ev: Event) {
        if ev.subscribers.is_empty() {
            return;
        }
        let msg = notification(&self.domain, cx.next_id(), ev.payload);
        for s in ev.subscribers {
            let mut m = msg.clone();
            xmppd_core::stanza::set_attr(&mut m, "to", s);
            cx.send(m);
        }
    }

    async fn request(&self, cx: &Context<'_>, iq: &Element) -> Result<Answer, StanzaError> {
        let kind = match iq.attr("type") {
            Some("get") => IqKind::Get,
            _ => IqKind::Set,
        };
        let from = iq
            .attr("from")
            .and_then(|f| Jid::new(f).ok())
            .ok_or_else(|| StanzaError::new(Condition::BadRequest))?;
        let mut children = iq.children();
        let (Some(payload), None) = (children.next(), children.next()) else {
            return Err(StanzaError::new(Condition::BadRequest));
        };
        let payload = payload.clone();
        if payload.is("query", ns::DISCO_INFO) || payload.is("query", ns::DISCO_ITEMS) {
            return Ok(Answer {
                reply: self.disco(kind, payload).await?,
                ..Answer::default()
            });
        }
        if payload.ns() != ns::PUBSUB && payload.ns() != ns::PUBSUB_OWNER {
            return Err(StanzaError::new(Condition::ServiceUnavailable));
        }
        let scope = Scope {
            owner: self.domain.clone(),
            pep: false,
            may_create: self.may_create(cx, &from),
        };
        let to = Jid::new(&self.domain).map_err(|_| item_not_found())?;
        let req = IqRequest {
            from,
            to,
            kind,
            payload,
        };
        self.engine.handle(cx, &scope, req).await
    }
}

#[async_trait]
impl Component for PubSubService {
    fn name(&self) -> &str {
        "Publish-Subscribe"
    }

    async fn handle(&self, cx: &mut Context<'_>, stanza: Element) {
        // Messages and presence have no use on the service, nor addresses below it.
        if !cx.domain_request(&stanza, &self.domain) {
            return;
        }
        let answer = match self.request(cx, &stanza).await {
            Ok(answer) => answer,
            Err(e) => return cx.bounce(&stanza, e),
        };
        // The answer before the notifications it causes: queued first, routed first.
        cx.send(iq_result(&stanza, answer.reply));
        for ev in answer.events {
            self.notify(cx, ev).await;
        }
        for (to, event) in answer.direct {
            let mut msg = notification_of(&self.domain, cx.next_id(), event);
            xmppd_core::stanza::set_attr(&mut msg, "to", to.as_str());
            cx.send(msg);
        }
    }
}
