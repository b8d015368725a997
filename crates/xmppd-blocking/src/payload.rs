//! The blocking command's requests (XEP-0191) with their optional reports (XEP-0377), and the
//! elements the server sends. `xmpp_parsers::blocking` has the block list, the pushes and the
//! `<blocked/>` error condition; its `<block/>` keeps only each item's JID, so requests, whose
//! items may carry a `<report/>`, are read with the types here.

use jid::Jid;
use minidom::Element;
use xmpp_parsers::blocking::{Block, Blocked, BlocklistResult, Unblock};
use xmpp_parsers::ns;
use xmpp_parsers::stanza_id::StanzaId;
use xmppd_core::address::parse_jid;
use xmppd_core::stanza::{Condition, ErrorType, StanzaError};
use xso::{AsXml, FromXml};

pub use xmpp_parsers::ns::{BLOCKING as NS_BLOCKING, SPAM_REPORTING as NS_REPORTING};

/// The XEP-0377 reasons, as the `reason` attribute names them.
pub const REASON_SPAM: &str = "urn:xmpp:reporting:spam";
pub const REASON_ABUSE: &str = "urn:xmpp:reporting:abuse";

/// `<block/>` as a client sends it.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::BLOCKING, name = "block")]
pub struct BlockRequest {
    #[xml(child(n = ..))]
    pub items: Vec<Item>,
}

/// `<unblock/>` as a client sends it: no item means every item (XEP-0191 §3.5).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::BLOCKING, name = "unblock")]
pub struct UnblockRequest {
    #[xml(child(n = ..))]
    pub items: Vec<Item>,
}

/// One `<item/>`: its JID as written (checked and normalised by [`parse_items`], so that a
/// bad address gets `<jid-malformed/>` rather than `<bad-request/>`), and a report.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::BLOCKING, name = "item")]
pub struct Item {
    #[xml(attribute)]
    pub jid: String,
    #[xml(child(default))]
    pub report: Option<Report>,
}

/// XEP-0377's `<report/>`. The reason is optional here so that a missing one is told apart
/// from a malformed element; [`Report::reason`] checks it.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = ns::SPAM_REPORTING, name = "report")]
pub struct Report {
    #[xml(attribute(name = "reason", default))]
    pub reason: Option<String>,
    /// The offending messages, by the archive ids the reporter saw (XEP-0377 §4).
    #[xml(child(n = ..))]
    pub stanza_ids: Vec<StanzaId>,
    #[xml(extract(n = .., name = "text", fields(text(type_ = String))))]
    pub texts: Vec<String>,
}

/// A report as accepted: its reason is one XEP-0377 defines.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub jid: Jid,
    pub spam: bool,
    pub report: Report,
}

fn bad(text: &str) -> StanzaError {
    StanzaError::with_text(Condition::BadRequest, text)
}

/// The items' JIDs, normalised as the server writes addresses, with the reports among them.
pub fn parse_items(items: Vec<Item>) -> Result<(Vec<Jid>, Vec<Accepted>), StanzaError> {
    let mut jids = Vec::with_capacity(items.len());
    let mut reports = Vec::new();
    for item in items {
        let jid = parse_jid(&item.jid).map_err(|_| {
            StanzaError::with_text(Condition::JidMalformed, format!("bad JID {:?}", item.jid))
        })?;
        if let Some(report) = item.report {
            let spam = match report.reason.as_deref() {
                Some(REASON_SPAM) => true,
                Some(REASON_ABUSE) => false,
                Some(_) => return Err(bad("unknown report reason")),
                None => return Err(bad("a report needs a reason (XEP-0377 §4)")),
            };
            reports.push(Accepted {
                jid: jid.clone(),
                spam,
                report,
            });
        }
        jids.push(jid);
    }
    Ok((jids, reports))
}

/// A request the blocking namespace defines.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    List,
    Block(Vec<Item>),
    Unblock(Vec<Item>),
}

/// Reads `payload` as a request of `kind` (`true` for `set`).
pub fn parse_request(payload: &Element, set: bool) -> Result<Request, StanzaError> {
    let malformed = |e: xso::error::FromElementError| bad(&format!("malformed request: {e}"));
    match (payload.name(), set) {
        ("blocklist", false) => Ok(Request::List),
        ("block", true) => Ok(Request::Block(
            BlockRequest::try_from(payload.clone())
                .map_err(malformed)?
                .items,
        )),
        ("unblock", true) => Ok(Request::Unblock(
            UnblockRequest::try_from(payload.clone())
                .map_err(malformed)?
                .items,
        )),
        _ => Err(bad("not a blocking command")),
    }
}

pub fn blocklist(items: &[Jid]) -> Element {
    BlocklistResult {
        items: items.to_vec(),
    }
    .into()
}

/// The push of a change to the interested resources (XEP-0191 §3.3, §3.4, §3.5).
pub fn push_payload(block: bool, items: Vec<Jid>) -> Element {
    if block {
        Block { items }.into()
    } else {
        Unblock { items }.into()
    }
}

/// The error for a stanza the user sends to a JID they block (XEP-0191 §3.3, of type
/// `cancel` as its example has it: sending again will not help).
pub fn blocked_error() -> StanzaError {
    let mut err = StanzaError::new(Condition::NotAcceptable).with_app(Blocked.into());
    err.kind = ErrorType::Cancel;
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn block_items_with_and_without_reports() {
        let req = parse_request(
            &el("<block xmlns='urn:xmpp:blocking'>\
                   <item jid='Bob@Example.ORG'/>\
                   <item jid='spam@example.org'>\
                     <report xmlns='urn:xmpp:reporting:1' reason='urn:xmpp:reporting:spam'>\
                       <stanza-id xmlns='urn:xmpp:sid:0' by='me@example.org' id='s1'/>\
                       <text xml:lang='en'>buy now</text>\
                     </report>\
                   </item>\
                 </block>"),
            true,
        )
        .unwrap();
        let Request::Block(items) = req else { panic!() };
        let (jids, reports) = parse_items(items).unwrap();
        assert_eq!(
            jids.iter().map(|j| j.as_str()).collect::<Vec<_>>(),
            ["bob@example.org", "spam@example.org"]
        );
        assert_eq!(reports.len(), 1);
        assert!(reports[0].spam);
        assert_eq!(reports[0].report.texts, ["buy now"]);
        assert_eq!(reports[0].report.stanza_ids[0].id, "s1");
    }

    #[test]
    fn a_report_needs_a_known_reason() {
        for report in [
            "<report xmlns='urn:xmpp:reporting:1'/>",
            "<report xmlns='urn:xmpp:reporting:1' reason='urn:xmpp:reporting:other'/>",
        ] {
            let xml =
                format!("<block xmlns='urn:xmpp:blocking'><item jid='a@b'>{report}</item></block>");
            let Request::Block(items) = parse_request(&el(&xml), true).unwrap() else {
                panic!()
            };
            let err = parse_items(items).unwrap_err();
            assert_eq!(err.condition, Condition::BadRequest);
        }
    }

    #[test]
    fn a_bad_jid_is_jid_malformed_and_a_missing_one_bad_request() {
        let xml = "<unblock xmlns='urn:xmpp:blocking'><item jid='a@@b'/></unblock>";
        let Request::Unblock(items) = parse_request(&el(xml), true).unwrap() else {
            panic!()
        };
        assert_eq!(
            parse_items(items).unwrap_err().condition,
            Condition::JidMalformed
        );
        let xml = "<block xmlns='urn:xmpp:blocking'><item/></block>";
        assert_eq!(
            parse_request(&el(xml), true).unwrap_err().condition,
            Condition::BadRequest
        );
    }

    #[test]
    fn get_and_set_must_fit_the_element() {
        let list = el("<blocklist xmlns='urn:xmpp:blocking'/>");
        assert_eq!(parse_request(&list, false).unwrap(), Request::List);
        assert!(parse_request(&list, true).is_err());
        assert!(parse_request(&el("<block xmlns='urn:xmpp:blocking'/>"), false).is_err());
        assert_eq!(
            parse_request(&el("<unblock xmlns='urn:xmpp:blocking'/>"), true).unwrap(),
            Request::Unblock(Vec::new())
        );
    }

    #[test]
    fn the_blocked_error_carries_its_condition() {
        let e = blocked_error().to_element(None);
        assert!(e.has_child("not-acceptable", xmppd_core::stanza::NS_STANZAS));
        assert!(e.has_child("blocked", ns::BLOCKING_ERRORS));
        assert_eq!(e.attr("type"), Some("cancel"));
    }
}
