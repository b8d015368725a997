//! Requests and answers that xmpp-parsers' pubsub types do not let a service read or build
//! (their fields are private there): the subscription states of XEP-0060 §6.1, §6.2 and
//! §5.6, written with the same xso derives.

use jid::Jid;
use xmpp_parsers::ns;
use xmpp_parsers::pubsub::{NodeName, Subscription};
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

/// `<pubsub/>` around one of the above, for an answer.
pub fn wrap(child: impl Into<minidom::Element>) -> minidom::Element {
    minidom::Element::builder("pubsub", ns::PUBSUB)
        .append(child.into())
        .build()
}
