//! An account's personal eventing nodes as this crate uses them: requests made on the
//! account's behalf through [`Pep::request_as_owner`], with the same rules and notifications
//! as the account's own, built from xmpp-parsers' pubsub types.

use jid::BareJid;
use minidom::Element;
use xmpp_parsers::data_forms::{DataForm, DataFormType, Field};
use xmpp_parsers::pubsub::pubsub::{self as ps, PubSub, PublishOptions};
use xmpp_parsers::pubsub::{ItemId, NodeName};
use xmppd_core::module::IqKind;
use xmppd_core::stanza::{Condition, StanzaError};
use xmppd_core::Context;
use xmppd_pubsub::Pep;

const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// XEP-0223 §4: what a node of private data must be: kept, and read by the owner alone.
pub const PRIVATE_NODE: &[(&str, &str)] = &[
    ("pubsub#persist_items", "true"),
    ("pubsub#access_model", "whitelist"),
];

/// An item as read: its id and payload.
pub type Item = (String, Element);

/// The items of `owner`'s `node`, newest first, at most `max`; `None` when there is no such
/// node.
pub async fn items(
    pep: &Pep,
    cx: &mut Context<'_>,
    owner: &BareJid,
    node: &str,
    max: Option<u32>,
) -> Result<Option<Vec<Item>>, StanzaError> {
    let request = PubSub::Items(ps::Items {
        max_items: max,
        node: NodeName(node.to_owned()),
        subid: None,
        items: Vec::new(),
    });
    let reply = pep
        .request_as_owner(cx, owner, IqKind::Get, request.into())
        .await;
    let reply = match reply {
        Err(e) if e.condition == Condition::ItemNotFound => return Ok(None),
        other => other?,
    };
    let Some(Ok(PubSub::Items(items))) = reply.map(PubSub::try_from) else {
        return Err(StanzaError::new(Condition::InternalServerError));
    };
    Ok(Some(
        (items.items.into_iter())
            .filter_map(|i| Some((i.id?.0, i.payload?)))
            .collect(),
    ))
}

/// Publishes `payload` as item `id` of `owner`'s `node`, created with `options` if it does
/// not exist. A node that exists with another configuration still takes the item: it is the
/// account's data, and the account chose that configuration.
pub async fn publish(
    pep: &Pep,
    cx: &mut Context<'_>,
    owner: &BareJid,
    node: &str,
    id: Option<&str>,
    payload: Element,
    options: &[(&str, &str)],
) -> Result<(), StanzaError> {
    let request = |with_options: bool| {
        let form = DataForm::new(
            DataFormType::Submit,
            PUBLISH_OPTIONS,
            (options.iter())
                .map(|(var, value)| Field::text_single(var, value))
                .collect(),
        );
        Element::from(PubSub::Publish {
            publish: ps::Publish {
                node: NodeName(node.to_owned()),
                items: vec![ps::Item {
                    id: id.map(|i| ItemId(i.to_owned())),
                    publisher: None,
                    payload: Some(payload.clone()),
                }],
            },
            publish_options: (with_options && !options.is_empty())
                .then_some(PublishOptions { form: Some(form) }),
        })
    };
    match pep
        .request_as_owner(cx, owner, IqKind::Set, request(true))
        .await
    {
        // XEP-0060 §7.1.5: the existing node's configuration differs from the options.
        Err(e) if e.condition == Condition::Conflict => pep
            .request_as_owner(cx, owner, IqKind::Set, request(false))
            .await
            .map(drop),
        other => other.map(drop),
    }
}

/// Retracts the items `ids` of `owner`'s `node`, telling the subscribers (XEP-0060 §7.2.2.1).
pub async fn retract(
    pep: &Pep,
    cx: &mut Context<'_>,
    owner: &BareJid,
    node: &str,
    ids: Vec<String>,
) -> Result<(), StanzaError> {
    if ids.is_empty() {
        return Ok(());
    }
    let request = PubSub::Retract(ps::Retract {
        node: NodeName(node.to_owned()),
        notify: true,
        items: (ids.into_iter())
            .map(|id| ps::Item {
                id: Some(ItemId(id)),
                publisher: None,
                payload: None,
            })
            .collect(),
    });
    (pep.request_as_owner(cx, owner, IqKind::Set, request.into())
        .await)
        .map(drop)
}
