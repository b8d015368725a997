//! The protocol's elements: the `<enable/>` and `<disable/>` requests (XEP-0357 §5, §6), the
//! notification published to an app server (§7), which messages are worth one, and what an
//! app server's error means for its registration. Pure functions over elements.

use jid::Jid;
use minidom::Element;
use xmpp_parsers::data_forms::{DataForm, DataFormType, Field};
use xmpp_parsers::pubsub::pubsub::{Item, Publish, PublishOptions};
use xmpp_parsers::pubsub::{NodeName, PubSub};
use xmpp_parsers::push::Notification;
use xmppd_core::stanza::{self, NS_CLIENT, NS_STANZAS};
use xso::{AsXml, FromXml};

pub const NS_PUSH: &str = "urn:xmpp:push:0";
/// The FORM_TYPE of the notification's summary (XEP-0357 §7).
pub const FORM_SUMMARY: &str = "urn:xmpp:push:summary";
/// The FORM_TYPE a publish-options form carries (XEP-0060 §7.1.5).
pub const FORM_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// `<enable/>` (XEP-0357 §5). The push service's address is any JID: xmpp-parsers' own type
/// takes only bare JIDs, which rules out an app server that is a client of this server.
#[derive(Debug, Clone, FromXml, AsXml)]
#[xml(namespace = NS_PUSH, name = "enable")]
pub struct Enable {
    #[xml(attribute)]
    pub jid: Jid,
    #[xml(attribute(default))]
    pub node: Option<String>,
    /// Publish options the app server wants with every notification (credentials).
    #[xml(child(default))]
    pub form: Option<DataForm>,
}

/// `<disable/>` (XEP-0357 §6): without a node, every node of that service.
#[derive(Debug, Clone, FromXml, AsXml)]
#[xml(namespace = NS_PUSH, name = "disable")]
pub struct Disable {
    #[xml(attribute)]
    pub jid: Jid,
    #[xml(attribute(default))]
    pub node: Option<String>,
}

/// A request of the account's own client.
#[derive(Debug, Clone)]
pub enum Request {
    Enable {
        jid: Jid,
        node: String,
        form: Option<DataForm>,
    },
    Disable {
        jid: Jid,
        node: Option<String>,
    },
}

/// Reads a request; the error says what is wrong with it.
pub fn parse_request(payload: &Element) -> Result<Request, &'static str> {
    match payload.name() {
        "enable" => {
            let e = Enable::try_from(payload.clone()).map_err(|_| "malformed <enable/>")?;
            // §5: the node is what the app server provisioned for this device; a publish
            // needs one (XEP-0060 §7.1.1).
            let node = e
                .node
                .filter(|n| !n.is_empty())
                .ok_or("a node is required")?;
            if let Some(form) = &e.form {
                if form.form_type() != Some(FORM_PUBLISH_OPTIONS) {
                    return Err("the form's FORM_TYPE must be publish-options");
                }
            }
            Ok(Request::Enable {
                jid: e.jid,
                node,
                form: e.form,
            })
        }
        "disable" => {
            let d = Disable::try_from(payload.clone()).map_err(|_| "malformed <disable/>")?;
            Ok(Request::Disable {
                jid: d.jid,
                node: d.node.filter(|n| !n.is_empty()),
            })
        }
        _ => Err("expected <enable/> or <disable/>"),
    }
}

/// Whether a message is worth waking a phone for: a body, an encrypted payload (OMEMO, whose
/// version 2 often has no body; OpenPGP for XMPP), or a call invitation (XEP-0353). Chat
/// states, receipts and markers are not; neither is a room's talk (groupchat).
pub fn notifies(msg: &Element) -> bool {
    if matches!(
        stanza::stanza_type(msg, "normal"),
        "groupchat" | "error" | "headline"
    ) {
        return false;
    }
    msg.children().any(|c| {
        let ns = c.ns();
        c.is("body", NS_CLIENT)
            || (c.name() == "encrypted"
                && (ns == "eu.siacs.conversations.axolotl" || ns == "urn:xmpp:omemo:2"))
            || c.is("openpgp", "urn:xmpp:openpgp:0")
            || c.is("propose", "urn:xmpp:jingle-message:0")
    })
}

/// What the notification tells beyond the count (the operator's choice; off by default: the
/// app server, usually run by a third party, learns neither who writes nor what).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Disclose {
    pub sender: bool,
    pub body: bool,
}

/// The summary of what the notification is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages this notification covers: one, or those that came while an earlier
    /// notification was unanswered.
    pub messages: u32,
    pub last_sender: Option<String>,
    pub last_body: Option<String>,
}

impl Summary {
    /// The summary of `msg`, counting `messages`, with what `disclose` allows.
    pub fn of(msg: &Element, messages: u32, disclose: Disclose) -> Summary {
        Summary {
            messages,
            last_sender: (disclose.sender)
                .then(|| msg.attr("from").map(str::to_owned))
                .flatten(),
            last_body: (disclose.body)
                .then(|| msg.get_child("body", NS_CLIENT).map(Element::text))
                .flatten(),
        }
    }
}

/// The publish to `node` of the app server `to` (XEP-0357 §7), from the account `from`, with
/// the registration's publish options.
pub fn publish(
    id: &str,
    from: &str,
    to: &str,
    node: &str,
    summary: &Summary,
    options: Option<DataForm>,
) -> Element {
    let mut fields = vec![Field::text_single(
        "message-count",
        &summary.messages.to_string(),
    )];
    if let Some(sender) = &summary.last_sender {
        fields.push(Field::text_single("last-message-sender", sender));
    }
    if let Some(body) = &summary.last_body {
        fields.push(Field::text_single("last-message-body", body));
    }
    let notification = Notification {
        form: Some(DataForm::new(DataFormType::Submit, FORM_SUMMARY, fields)),
        payloads: Vec::new(),
    };
    let pubsub = PubSub::Publish {
        publish: Publish {
            node: NodeName(node.to_owned()),
            items: vec![Item::new(None, None, Some(notification))],
        },
        publish_options: options.map(|form| PublishOptions { form: Some(form) }),
    };
    let mut iq = stanza::iq_push(to, id, pubsub.into());
    stanza::set_attr(&mut iq, "from", from);
    iq
}

/// What an app server's answer to a notification means for its registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Taken: the registration works.
    Taken,
    /// The node or the registration is gone for good, or we may not publish there: the
    /// registration is removed at once.
    Gone,
    /// Perhaps passing (the service is down, unreachable, overloaded): counted, and the
    /// registration is removed after too many in a row.
    Failed,
}

/// Reads an answer (`<iq type='result'/>` or `'error'`) to a notification. The conditions
/// that say the node will never take a publish again are final: `item-not-found` (the node
/// was deleted: the app was removed), `not-authorized`, `forbidden`, `registration-required`
/// and `gone`; so is any error of type `auth`. Everything else (`service-unavailable`,
/// `remote-server-not-found`, `internal-server-error`, a malformed error) may pass.
pub fn answer(iq: &Element) -> Answer {
    if iq.attr("type") != Some("error") {
        return Answer::Taken;
    }
    let Some(error) = iq.get_child("error", NS_CLIENT) else {
        return Answer::Failed;
    };
    let condition = error.children().find(|c| c.ns() == NS_STANZAS);
    let gone = matches!(
        condition.map(Element::name),
        Some("item-not-found" | "not-authorized" | "forbidden" | "registration-required" | "gone")
    );
    if gone || error.attr("type") == Some("auth") {
        Answer::Gone
    } else {
        Answer::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn enable_needs_a_node_and_a_publish_options_form() {
        let ok = el("<enable xmlns='urn:xmpp:push:0' jid='appserver@localhost/push' node='n1'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             <field var='secret'><value>s3</value></field></x></enable>");
        let Ok(Request::Enable { jid, node, form }) = parse_request(&ok) else {
            panic!("parsed")
        };
        assert_eq!(
            (jid.as_str(), node.as_str()),
            ("appserver@localhost/push", "n1")
        );
        assert_eq!(form.unwrap().fields.len(), 2, "FORM_TYPE and secret");
        for bad in [
            "<enable xmlns='urn:xmpp:push:0' jid='push.example'/>",
            "<enable xmlns='urn:xmpp:push:0' jid='push.example' node=''/>",
            "<enable xmlns='urn:xmpp:push:0' node='n'/>",
            "<enable xmlns='urn:xmpp:push:0' jid='@@' node='n'/>",
            "<enable xmlns='urn:xmpp:push:0' jid='push.example' node='n'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>urn:other</value></field></x></enable>",
            "<status xmlns='urn:xmpp:push:0'/>",
        ] {
            assert!(parse_request(&el(bad)).is_err(), "{bad}");
        }
        let Ok(Request::Disable { node, .. }) =
            parse_request(&el("<disable xmlns='urn:xmpp:push:0' jid='push.example'/>"))
        else {
            panic!("parsed")
        };
        assert_eq!(node, None);
    }

    #[test]
    fn what_is_worth_a_notification() {
        let c = "xmlns='jabber:client' from='a@x/r'";
        for yes in [
            format!("<message {c} type='chat'><body>hi</body></message>"),
            format!("<message {c}><body>hi</body></message>"),
            format!("<message {c} type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>"),
            format!("<message {c} type='chat'><encrypted xmlns='urn:xmpp:omemo:2'/></message>"),
            format!("<message {c}><propose xmlns='urn:xmpp:jingle-message:0' id='c'/></message>"),
        ] {
            assert!(notifies(&el(&yes)), "{yes}");
        }
        for no in [
            format!("<message {c} type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>"),
            format!("<message {c}><received xmlns='urn:xmpp:receipts' id='1'/></message>"),
            format!("<message {c} type='groupchat'><body>room talk</body></message>"),
            format!("<message {c} type='headline'><body>news</body></message>"),
            format!("<message {c} type='error'><body>hi</body></message>"),
        ] {
            assert!(!notifies(&el(&no)), "{no}");
        }
    }

    #[test]
    fn the_summary_tells_neither_sender_nor_body_unless_allowed() {
        let msg = el("<message xmlns='jabber:client' from='juliet@x/balcony'><body>Wherefore</body></message>");
        let quiet = Summary::of(&msg, 1, Disclose::default());
        assert_eq!((&quiet.last_sender, &quiet.last_body), (&None, &None));
        let all = Summary::of(
            &msg,
            2,
            Disclose {
                sender: true,
                body: true,
            },
        );
        assert_eq!(all.last_sender.as_deref(), Some("juliet@x/balcony"));
        assert_eq!(all.last_body.as_deref(), Some("Wherefore"));

        let iq = publish("p1", "romeo@x", "push.example", "n1", &quiet, None);
        let xml = String::from(&iq);
        assert!(xml.contains("message-count"), "{xml}");
        assert!(
            !xml.contains("juliet") && !xml.contains("Wherefore"),
            "{xml}"
        );
        assert!(!xml.contains("publish-options"), "{xml}");
        let options = DataForm::new(
            DataFormType::Submit,
            FORM_PUBLISH_OPTIONS,
            vec![Field::text_single("secret", "s3")],
        );
        let iq = publish("p2", "romeo@x", "push.example", "n1", &all, Some(options));
        assert_eq!(
            (iq.attr("from"), iq.attr("to")),
            (Some("romeo@x"), Some("push.example"))
        );
        let pubsub = PubSub::try_from(iq.children().next().unwrap().clone()).unwrap();
        let PubSub::Publish {
            publish,
            publish_options,
        } = pubsub
        else {
            panic!("a publish")
        };
        assert_eq!(publish.node.0, "n1");
        let item = publish.items[0].payload.clone().unwrap();
        let form = Notification::try_from(item).unwrap().form.unwrap();
        assert_eq!(form.form_type(), Some(FORM_SUMMARY));
        let vars: Vec<_> = form
            .fields
            .iter()
            .filter(|f| f.var.as_deref() != Some("FORM_TYPE"))
            .map(|f| (f.var.clone().unwrap(), f.values.clone()))
            .collect();
        assert_eq!(
            vars,
            [
                ("message-count".to_owned(), vec!["2".to_owned()]),
                (
                    "last-message-sender".to_owned(),
                    vec!["juliet@x/balcony".to_owned()]
                ),
                ("last-message-body".to_owned(), vec!["Wherefore".to_owned()]),
            ]
        );
        let options = publish_options.unwrap().form.unwrap();
        assert_eq!(options.form_type(), Some(FORM_PUBLISH_OPTIONS));
        let secret = options
            .fields
            .iter()
            .find(|f| f.var.as_deref() == Some("secret"));
        assert_eq!(secret.unwrap().values, ["s3"]);
    }

    #[test]
    fn final_errors_remove_the_registration_at_once() {
        let err = |t: &str, cond: &str| {
            el(&format!(
                "<iq xmlns='jabber:client' type='error' id='1'><error type='{t}'>\
                 <{cond} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            ))
        };
        assert_eq!(
            answer(&el("<iq xmlns='jabber:client' type='result' id='1'/>")),
            Answer::Taken
        );
        for gone in [
            "item-not-found",
            "forbidden",
            "registration-required",
            "gone",
        ] {
            assert_eq!(answer(&err("cancel", gone)), Answer::Gone, "{gone}");
        }
        assert_eq!(answer(&err("auth", "not-authorized")), Answer::Gone);
        assert_eq!(answer(&err("auth", "policy-violation")), Answer::Gone);
        for passing in [
            "service-unavailable",
            "remote-server-not-found",
            "internal-server-error",
        ] {
            assert_eq!(answer(&err("cancel", passing)), Answer::Failed, "{passing}");
        }
        assert_eq!(
            answer(&el("<iq xmlns='jabber:client' type='error' id='1'/>")),
            Answer::Failed
        );
    }
}
