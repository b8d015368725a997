//! Requests and answers that xmpp-parsers' pubsub types do not let a service read or build
//! (their fields are private there): the subscription states of XEP-0060 §6.1, §6.2 and
//! §5.6, and the owner's affiliation lists (§8.9), written with the same xso derives.

use jid::Jid;
use xmpp_parsers::ns;
use xmpp_parsers::pubsub::{AffiliationAttribute, NodeName, Subscription};
use xso::{AsXml, FromXml};

/// `<unsubscribe/>` (§6.2).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::PUBSUB, name = "unsubscribe")]
pub struct Unsubscribe {
    #[xml(attribute)]
    pub jid: Jid,
    #[xml(attribute(default))]
    pub node: Option<NodeName>,
}

/// `<subscription/>` (§6.1.2, §5.6): one entity's state on one node.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::PUBSUB, name = "subscription")]
pub struct SubscriptionState {
    #[xml(attribute)]
    pub jid: Jid,
    #[xml(attribute(default))]
    pub node: Option<NodeName>,
    #[xml(attribute)]
    pub subscription: Subscription,
}

/// `<subscriptions/>` (§5.6).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::PUBSUB, name = "subscriptions")]
pub struct SubscriptionList {
    #[xml(attribute(default))]
    pub node: Option<NodeName>,
    #[xml(child(n = ..))]
    pub subscriptions: Vec<SubscriptionState>,
}

/// `<affiliation/>` of an owner's list (§8.9): one entity's affiliation with the node.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::PUBSUB_OWNER, name = "affiliation")]
pub struct OwnerAffiliation {
    #[xml(attribute)]
    pub jid: Jid,
    #[xml(attribute)]
    pub affiliation: AffiliationAttribute,
}

/// `<affiliations/>` of the owner namespace (§8.9.1, §8.9.2): a node's list, or changes.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::PUBSUB_OWNER, name = "affiliations")]
pub struct OwnerAffiliations {
    #[xml(attribute)]
    pub node: NodeName,
    #[xml(child(n = ..))]
    pub affiliations: Vec<OwnerAffiliation>,
}

/// `<pubsub/>` around one of the above, for an answer.
pub fn wrap(child: impl Into<minidom::Element>) -> minidom::Element {
    minidom::Element::builder("pubsub", ns::PUBSUB)
        .append(child.into())
        .build()
}

/// `<pubsub xmlns='…#owner'/>` around an owner's answer.
pub fn wrap_owner(child: impl Into<minidom::Element>) -> minidom::Element {
    minidom::Element::builder("pubsub", ns::PUBSUB_OWNER)
        .append(child.into())
        .build()
}
