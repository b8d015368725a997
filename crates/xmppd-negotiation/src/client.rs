//! The client role: after authentication a client binds a resource (RFC 6120 §7) and may send
//! the legacy session request (RFC 3921 §3, optional since RFC 6121), then its stream carries
//! stanzas.

use std::collections::HashMap;
use std::sync::Arc;

use jid::{BareJid, FullJid};
use minidom::Element;
use xmppd_stream::NS_CLIENT;

use crate::role::{Role, RoleStep};
use crate::xml::{iq_error, iq_result, text_element};
use crate::{NS_BIND, NS_SESSION};

/// Resource binding for client streams (`jabber:client`).
#[derive(Debug)]
pub struct ClientRole {
    /// What the core adds to the post-authentication features (roster versioning, caps…),
    /// per served host: the server's capabilities differ between hosts.
    features: Arc<HostFeatures>,
    /// The bind request being answered.
    binding: Option<Element>,
}

/// The post-authentication features the core adds, per served host; `other` for a host
/// not listed.
#[derive(Debug, Default)]
pub struct HostFeatures {
    pub hosts: HashMap<String, Vec<Element>>,
    pub other: Vec<Element>,
}

impl HostFeatures {
    fn of(&self, host: &str) -> &[Element] {
        self.hosts.get(host).unwrap_or(&self.other)
    }
}

impl ClientRole {
    /// The same features for every host.
    pub fn new(features: Arc<[Element]>) -> Self {
        Self::per_host(Arc::new(HostFeatures {
            hosts: HashMap::new(),
            other: features.to_vec(),
        }))
    }

    pub fn per_host(features: Arc<HostFeatures>) -> Self {
        ClientRole {
            features,
            binding: None,
        }
    }
}

/// Bind a resource of `user`: the one the client asked for, or one the server picks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindRequest {
    pub user: BareJid,
    /// The requested resource, if the client named a non-empty one.
    pub resource: Option<String>,
}

/// Why a bind was refused (RFC 6120 §7.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindRefusal {
    /// Not a valid resourcepart: `<bad-request/>`.
    BadRequest,
    /// Too many resources for this account: `<resource-constraint/>`.
    ResourceConstraint,
    /// The account may not bind: `<not-allowed/>`.
    NotAllowed,
}

impl BindRefusal {
    fn error(self) -> (&'static str, &'static str) {
        match self {
            BindRefusal::BadRequest => ("modify", "bad-request"),
            BindRefusal::ResourceConstraint => ("wait", "resource-constraint"),
            BindRefusal::NotAllowed => ("cancel", "not-allowed"),
        }
    }
}

impl Role for ClientRole {
    type Request = BindRequest;
    type Reply = Result<FullJid, BindRefusal>;
    type Ready = FullJid;

    fn namespace(&self) -> &'static str {
        NS_CLIENT
    }

    fn features(&self, user: &BareJid) -> Vec<Element> {
        let mut session = Element::bare("session", NS_SESSION);
        session.append_child(Element::bare("optional", NS_SESSION));
        let mut features = vec![Element::bare("bind", NS_BIND), session];
        features.extend(self.features.of(user.domain().as_str()).iter().cloned());
        features
    }

    fn element(&mut self, user: &BareJid, el: &Element) -> RoleStep<Self> {
        if !(el.is("iq", NS_CLIENT) && el.attr("type") == Some("set")) {
            return RoleStep::Unexpected;
        }
        if let Some(bind) = el.get_child("bind", NS_BIND) {
            let resource = bind.get_child("resource", NS_BIND).map(|r| r.text());
            self.binding = Some(el.clone());
            return RoleStep::Ask(BindRequest {
                user: user.clone(),
                resource: resource.filter(|r| !r.is_empty()),
            });
        }
        if el.has_child("session", NS_SESSION) {
            return RoleStep::Reply(iq_result(el, None));
        }
        RoleStep::Unexpected
    }

    fn ready(&self, jid: FullJid) -> FullJid {
        jid
    }

    fn reply(&mut self, _user: &BareJid, reply: Self::Reply) -> RoleStep<Self> {
        let Some(iq) = self.binding.take() else {
            return RoleStep::Unexpected;
        };
        match reply {
            Ok(jid) => {
                let mut bind = Element::bare("bind", NS_BIND);
                bind.append_child(text_element("jid", NS_BIND, jid.as_str()));
                RoleStep::Ready(iq_result(&iq, Some(bind)), jid)
            }
            Err(refusal) => {
                let (kind, condition) = refusal.error();
                RoleStep::Reply(iq_error(&iq, kind, condition, None))
            }
        }
    }
}

/// The answer to a stanza of a bound client that concerns negotiation, which the core never
/// sees: the legacy session request succeeds, and a second bind is refused (one resource per
/// stream, RFC 6120 §7.7.2.2). `None` for every other stanza.
pub fn answer_bound(el: &Element) -> Option<Element> {
    if !(el.is("iq", NS_CLIENT) && el.attr("type") == Some("set")) {
        return None;
    }
    if el.has_child("session", NS_SESSION) {
        return Some(iq_result(el, None));
    }
    if el.has_child("bind", NS_BIND) {
        return Some(iq_error(el, "cancel", "not-allowed", None));
    }
    None
}
