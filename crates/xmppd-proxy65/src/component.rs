//! The proxy's component on `proxy.HOST` (XEP-0065 §4, §6.3): who may use it, its disco#info,
//! its address, and activation.

use std::sync::Arc;

use async_trait::async_trait;
use jid::{FullJid, Jid};
use minidom::Element;
use xmpp_parsers::disco::{
    DiscoInfoQuery, DiscoInfoResult, DiscoItemsQuery, DiscoItemsResult, Identity,
};
use xmppd_core::module::Component;
use xmppd_core::stanza::{iq_result, Condition, StanzaError, NS_DISCO_INFO, NS_DISCO_ITEMS};
use xmppd_core::Context;

use crate::payload::{Query, StreamHost, NS_BYTESTREAMS};
use crate::relay::{ActivateError, Relay};
use crate::socks5::dst_addr;

/// Who may use the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    /// The users of the served hosts.
    Local,
    /// These domains (all their users) and bare JIDs.
    Listed(Vec<String>),
}

/// One host's proxy: its domain, the address it gives out, and the relay behind it.
pub struct Proxy65 {
    domain: String,
    host: String,
    port: u16,
    allow: Allow,
    relay: Arc<Relay>,
}

impl Proxy65 {
    /// The proxy `domain`, reached at `host`:`port` (the public address, which may differ
    /// from the one the listener is bound to, behind NAT).
    pub fn new(domain: &str, host: &str, port: u16, allow: Allow, relay: Arc<Relay>) -> Self {
        Proxy65 {
            domain: domain.to_owned(),
            host: host.to_owned(),
            port,
            allow,
            relay,
        }
    }

    fn allowed(&self, cx: &Context<'_>, from: &Jid) -> bool {
        // A server or component has no use for a relay; only users transfer files.
        let Some(node) = from.node() else {
            return false;
        };
        let domain = from.domain().as_str();
        match &self.allow {
            Allow::Local => cx.is_local_host(domain),
            Allow::Listed(list) => {
                let bare = format!("{node}@{domain}");
                list.iter().any(|e| *e == domain || *e == bare)
            }
        }
    }

    async fn request(
        &self,
        cx: &Context<'_>,
        iq: &Element,
    ) -> Result<Option<Element>, StanzaError> {
        let payload = iq
            .children()
            .next()
            .ok_or_else(|| bad("An empty request"))?;
        let kind = iq.attr("type");
        let malformed = |e: xso::error::FromElementError| bad(&format!("Malformed request: {e}"));
        match (kind, payload.ns().as_str()) {
            (Some("get"), NS_DISCO_INFO) => {
                let q = DiscoInfoQuery::try_from(payload.clone()).map_err(malformed)?;
                if q.node.is_some() {
                    return Err(StanzaError::new(Condition::ItemNotFound));
                }
                let identity = Identity {
                    category: "proxy".into(),
                    type_: "bytestreams".into(),
                    lang: None,
                    name: Some("SOCKS5 Bytestreams".into()),
                };
                let features = [NS_DISCO_INFO, NS_DISCO_ITEMS, NS_BYTESTREAMS];
                let result = DiscoInfoResult {
                    node: None,
                    identities: vec![identity],
                    features: features.into_iter().map(String::from).collect(),
                    extensions: Vec::new(),
                };
                Ok(Some(result.into()))
            }
            (Some("get"), NS_DISCO_ITEMS) => {
                let q = DiscoItemsQuery::try_from(payload.clone()).map_err(malformed)?;
                if q.node.is_some() {
                    return Err(StanzaError::new(Condition::ItemNotFound));
                }
                let items = DiscoItemsResult {
                    node: None,
                    items: Vec::new(),
                    rsm: None,
                };
                Ok(Some(items.into()))
            }
            (Some(kind), NS_BYTESTREAMS) => {
                let q = Query::try_from(payload.clone()).map_err(malformed)?;
                let from = iq.attr("from").and_then(|f| Jid::new(f).ok());
                let from = from.ok_or_else(|| bad("No sender"))?;
                // §6.3.1: a requester that may not use the proxy learns nothing of it.
                if !self.allowed(cx, &from) {
                    return Err(StanzaError::new(Condition::Forbidden));
                }
                if kind == "get" {
                    return Ok(Some(self.streamhost()));
                }
                self.activate(&from, q).map(|()| None)
            }
            _ => Err(StanzaError::new(Condition::ServiceUnavailable)),
        }
    }

    /// §6.3.1: the proxy's network address.
    fn streamhost(&self) -> Element {
        Query {
            streamhosts: vec![StreamHost {
                jid: self.domain.clone(),
                host: self.host.clone(),
                port: Some(self.port),
            }],
            ..Query::default()
        }
        .into()
    }

    /// §6.3.4: the requester activates the bytestream it opened with `target`. The address
    /// is computed with the requester's own full JID, so only the initiator can name a pair
    /// it connected: anyone else's activation finds nothing.
    fn activate(&self, from: &Jid, q: Query) -> Result<(), StanzaError> {
        let sid = q
            .sid
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("No sid"))?;
        let target = q.activate.ok_or_else(|| bad("Nothing to activate"))?;
        let target =
            FullJid::new(target.jid.trim()).map_err(|_| bad("The target is not a full JID"))?;
        let initiator = (from.try_as_full()).map_err(|_| bad("The initiator is not a full JID"))?;
        let addr = dst_addr(&sid, initiator.as_str(), target.as_str());
        match self.relay.activate(&addr) {
            Ok(()) => Ok(()),
            Err(ActivateError::Unknown) => Err(StanzaError::new(Condition::ItemNotFound)),
            Err(ActivateError::Unpaired) => Err(StanzaError::with_text(
                Condition::NotAllowed,
                "The target has not connected",
            )),
        }
    }
}

fn bad(text: &str) -> StanzaError {
    StanzaError::with_text(Condition::BadRequest, text)
}

#[async_trait]
impl Component for Proxy65 {
    fn name(&self) -> &str {
        "SOCKS5 Bytestreams"
    }

    async fn handle(&self, cx: &mut Context<'_>, stanza: Element) {
        // Messages and presence have no use on the proxy, nor addresses below it.
        if !cx.domain_request(&stanza, &self.domain) {
            return;
        }
        match self.request(cx, &stanza).await {
            Ok(answer) => cx.send(iq_result(&stanza, answer)),
            Err(e) => cx.bounce(&stanza, e),
        }
    }
}
