//! The protocol side of a query: reading `<query xmlns='urn:xmpp:mam:2'/>` (XEP-0313 §4,
//! XEP-0059, XEP-0431) into a [`PageRequest`], and writing the result messages, the `<fin/>`,
//! the query form, the metadata and the preferences. Pure functions over elements, no I/O.

use std::str::FromStr;

use jid::Jid;
use minidom::Element;
use xmpp_parsers::data_forms::{DataForm, DataFormType, Field, FieldType};
use xmpp_parsers::date::DateTime;
use xmpp_parsers::mam::{End, Fin, MetadataResponse, Query, Start};
use xmpp_parsers::mam_prefs::{DefaultPrefs, Prefs as PrefsElement};
use xmpp_parsers::rsm::{First, SetQuery, SetResult};
use xmppd_core::address::Bare;
use xmppd_core::stanza::{self, Condition, StanzaError};

use crate::sqlite::MAX_IDS;
use crate::store::{
    decode_id, encode_id, Archived, DefaultPolicy, Filter, Page, PageRequest, Paging, Prefs, With,
};

pub const NS_MAM: &str = "urn:xmpp:mam:2";
pub const NS_MAM_EXTENDED: &str = "urn:xmpp:mam:2#extended";
pub const NS_FULLTEXT: &str = "urn:xmpp:fulltext:0";
pub const NS_FORWARD: &str = "urn:xmpp:forward:0";
pub const NS_SID: &str = "urn:xmpp:sid:0";
/// The full-text field (XEP-0431 §3), in Clark notation as XEP-0068 names namespaced fields.
pub const FIELD_FULLTEXT: &str = "{urn:xmpp:fulltext:0}fulltext";

/// Page size when the query names none, and the largest one served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    pub default_max: usize,
    pub max: usize,
}

impl Default for PageLimits {
    fn default() -> Self {
        PageLimits {
            default_max: 50,
            max: 250,
        }
    }
}

/// A query read from its element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MamQuery {
    /// Echoed in each `<result/>` (XEP-0313 §4.2).
    pub queryid: Option<String>,
    pub request: PageRequest,
    /// `<flip-page/>`: the page's items newest first (`#extended`).
    pub flip: bool,
}

fn bad(text: &str) -> StanzaError {
    StanzaError::with_text(Condition::BadRequest, text)
}

fn not_found() -> StanzaError {
    StanzaError::with_text(Condition::ItemNotFound, "No such archive id")
}

/// An id the client names; one we could never have given is unknown, as is one not in this
/// archive (checked by the store).
fn id_arg(s: &str) -> Result<i64, StanzaError> {
    decode_id(s.trim()).ok_or_else(not_found)
}

fn single<'a>(field: &'a Field, name: &str) -> Result<&'a str, StanzaError> {
    match field.values.as_slice() {
        [v] => Ok(v.trim()),
        _ => Err(bad(&format!("Field {name} takes one value"))),
    }
}

fn stamp(field: &Field, name: &str) -> Result<i64, StanzaError> {
    let v = single(field, name)?;
    DateTime::from_str(v)
        .map(|d| d.0.timestamp_millis())
        .map_err(|_| bad(&format!("Field {name} is not an XEP-0082 date and time")))
}

/// Reads a query; `<bad-request/>` for what cannot be a query, `<item-not-found/>` for an id
/// this archive cannot have given.
pub fn parse_query(el: &Element, limits: PageLimits) -> Result<MamQuery, StanzaError> {
    let q = Query::try_from(el.clone()).map_err(|e| bad(&format!("Malformed query: {e}")))?;
    if q.node.is_some() {
        return Err(StanzaError::with_text(
            Condition::FeatureNotImplemented,
            "No pubsub node archives here",
        ));
    }
    let mut filter = Filter::default();
    if let Some(form) = &q.form {
        if form.type_ != DataFormType::Submit {
            return Err(bad("The query form must be of type submit"));
        }
        if form.form_type().is_some_and(|t| t != NS_MAM) {
            return Err(bad("The query form must be of FORM_TYPE urn:xmpp:mam:2"));
        }
        for field in &form.fields {
            let Some(var) = field.var.as_deref() else {
                return Err(bad("A query field without a name"));
            };
            match var {
                "FORM_TYPE" => {}
                "with" => {
                    let jid = Jid::new(single(field, var)?)
                        .map_err(|_| bad("Field with is not a JID"))?;
                    filter.with = Some(With {
                        bare: jid.bare().to_string(),
                        resource: jid.resource().map(|r| r.as_str().to_owned()),
                    });
                }
                "start" => filter.start_ms = Some(stamp(field, var)?),
                "end" => filter.end_ms = Some(stamp(field, var)?),
                "after-id" => filter.after_id = Some(id_arg(single(field, var)?)?),
                "before-id" => filter.before_id = Some(id_arg(single(field, var)?)?),
                "ids" => {
                    if field.values.len() > MAX_IDS {
                        return Err(bad(&format!("At most {MAX_IDS} ids at once")));
                    }
                    let ids: Result<Vec<i64>, _> = field.values.iter().map(|v| id_arg(v)).collect();
                    filter.ids = Some(ids?);
                }
                FIELD_FULLTEXT => {
                    let text = field.values.join(" ");
                    filter.fulltext = (!text.trim().is_empty()).then_some(text);
                }
                other => return Err(bad(&format!("Unsupported query field {other}"))),
            }
        }
    }
    let set = q.set.unwrap_or(SetQuery {
        max: None,
        after: None,
        before: None,
        index: None,
    });
    if set.index.is_some() {
        return Err(StanzaError::with_text(
            Condition::FeatureNotImplemented,
            "Paging by index is not supported",
        ));
    }
    let paging = match (set.after.as_deref(), set.before.as_deref()) {
        (Some(_), Some(_)) => return Err(bad("RSM after and before at once")),
        (Some(a), None) => Paging::Forward {
            after: Some(id_arg(a)?),
        },
        // XEP-0059 §2.5: an empty <before/> asks for the last page.
        (None, Some(b)) if b.trim().is_empty() => Paging::Backward { before: None },
        (None, Some(b)) => Paging::Backward {
            before: Some(id_arg(b)?),
        },
        (None, None) => Paging::Forward { after: None },
    };
    let max = set.max.unwrap_or(limits.default_max).min(limits.max);
    Ok(MamQuery {
        queryid: q.queryid.map(|id| id.0),
        request: PageRequest {
            filter,
            paging,
            max,
        },
        flip: q.flip_page,
    })
}

/// The `<message><result><forwarded/></result></message>` carrying one archived message to
/// `to` (XEP-0313 §4.2), `from` the archive. The stored stanza is forwarded as stored: it is
/// not parsed into a typed message, which would refuse some that the router accepted.
pub fn result_message(
    archive: &str,
    to: &str,
    queryid: Option<&str>,
    item: &Archived,
) -> Option<Element> {
    let stored: Element = item.stanza.parse().ok()?;
    Some(forwarded_result(archive, to, queryid, item, stored))
}

/// [`result_message`] of `stored`, the message of `item` as the asker is to see it.
pub fn forwarded_result(
    archive: &str,
    to: &str,
    queryid: Option<&str>,
    item: &Archived,
    stored: Element,
) -> Element {
    let delay = stanza::elem(
        "delay",
        stanza::NS_DELAY,
        &[("stamp", &stanza::xep82_datetime(item.stamp_ms))],
    );
    let mut forwarded = Element::bare("forwarded", NS_FORWARD);
    forwarded.append_child(delay);
    forwarded.append_child(stored);
    let id = encode_id(item.id);
    let mut result = stanza::elem("result", NS_MAM, &[("id", &id)]);
    if let Some(q) = queryid {
        stanza::set_attr(&mut result, "queryid", q);
    }
    result.append_child(forwarded);
    let id = format!("mam-{}", item.id);
    let mut message = stanza::elem(
        "message",
        stanza::NS_CLIENT,
        &[("from", archive), ("to", to), ("id", &id)],
    );
    message.append_child(result);
    message
}

/// The `<fin/>` ending a query (XEP-0313 §4.3): the page's first and last ids, oldest to
/// newest whatever `flip` did to the order of the results.
pub fn fin(page: &Page) -> Element {
    let set = SetResult {
        first: page.items.first().map(|i| First {
            index: None,
            item: encode_id(i.id),
        }),
        last: page.items.last().map(|i| encode_id(i.id)),
        count: None,
    };
    Fin {
        complete: page.complete,
        set,
    }
    .into()
}

/// The answer to an IQ get of `<query/>`: the fields this archive understands (XEP-0313 §4.1.5).
pub fn query_form() -> Element {
    let field = |var: &str, ty: FieldType| Field::new(var, ty);
    let form = DataForm::new(
        DataFormType::Form,
        NS_MAM,
        vec![
            field("with", FieldType::JidSingle),
            field("start", FieldType::TextSingle),
            field("end", FieldType::TextSingle),
            field("before-id", FieldType::TextSingle),
            field("after-id", FieldType::TextSingle),
            field("ids", FieldType::TextMulti),
            field(FIELD_FULLTEXT, FieldType::TextSingle),
        ],
    );
    let mut query = Element::bare("query", NS_MAM);
    query.append_child(form.into());
    query
}

fn datetime(ms: i64) -> DateTime {
    // Our own XEP-0082 text of a Unix time always parses.
    DateTime::from_str(&stanza::xep82_datetime(ms))
        .unwrap_or_else(|_| DateTime::from_str("1970-01-01T00:00:00Z").expect("a constant date"))
}

/// The metadata answer (XEP-0313 §6): the first and last message, none for an empty archive.
pub fn metadata(bounds: Option<((i64, i64), (i64, i64))>) -> Element {
    let (start, end) = match bounds {
        Some(((fid, fstamp), (lid, lstamp))) => (
            Some(Start {
                id: encode_id(fid),
                timestamp: datetime(fstamp),
            }),
            Some(End {
                id: encode_id(lid),
                timestamp: datetime(lstamp),
            }),
        ),
        None => (None, None),
    };
    MetadataResponse { start, end }.into()
}

/// Reads a `<prefs/>` set (XEP-0441 §4); JIDs are kept bare, as the archive matches them.
pub fn parse_prefs(el: &Element) -> Result<Prefs, StanzaError> {
    let p = PrefsElement::try_from(el.clone()).map_err(|e| bad(&format!("Bad prefs: {e}")))?;
    let bare = |v: Vec<Jid>| {
        let mut v: Vec<String> = v.into_iter().map(|j| j.bare().to_string()).collect();
        v.sort();
        v.dedup();
        v
    };
    Ok(Prefs {
        default: match p.default_ {
            DefaultPrefs::Always => DefaultPolicy::Always,
            DefaultPrefs::Roster => DefaultPolicy::Roster,
            DefaultPrefs::Never => DefaultPolicy::Never,
        },
        always: bare(p.always),
        never: bare(p.never),
    })
}

/// The `<prefs/>` element of `prefs`.
pub fn prefs_element(prefs: &Prefs) -> Element {
    let jids = |v: &[String]| v.iter().filter_map(|j| Jid::new(j).ok()).collect();
    PrefsElement {
        default_: match prefs.default {
            DefaultPolicy::Always => DefaultPrefs::Always,
            DefaultPolicy::Roster => DefaultPrefs::Roster,
            DefaultPolicy::Never => DefaultPrefs::Never,
        },
        always: jids(&prefs.always),
        never: jids(&prefs.never),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(xml: &str) -> Result<MamQuery, StanzaError> {
        parse_query(&xml.parse().unwrap(), PageLimits::default())
    }

    fn form(fields: &str) -> String {
        format!(
            "<query xmlns='urn:xmpp:mam:2' queryid='q1'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
             {fields}</x></query>"
        )
    }

    #[test]
    fn a_bare_query_pages_forward_from_the_start() {
        let m = q("<query xmlns='urn:xmpp:mam:2'/>").unwrap();
        assert_eq!(m.request.paging, Paging::Forward { after: None });
        assert_eq!(m.request.max, 50);
        assert_eq!(m.request.filter, Filter::default());
        assert!(!m.flip);
    }

    #[test]
    fn every_field_is_read() {
        let m = q(&form(
            "<field var='with'><value>Juliet@Capulet.lit/Balcony</value></field>\
             <field var='start'><value>2010-06-07T00:00:00Z</value></field>\
             <field var='end'><value>2010-07-07T13:23:54.5+02:00</value></field>\
             <field var='after-id'><value>7</value></field>\
             <field var='before-id'><value>9</value></field>\
             <field var='ids'><value>7</value><value>8</value></field>\
             <field var='{urn:xmpp:fulltext:0}fulltext'><value>hello world</value></field>",
        ))
        .unwrap();
        let f = m.request.filter;
        assert_eq!(m.queryid.as_deref(), Some("q1"));
        assert_eq!(
            f.with,
            Some(With {
                bare: "juliet@capulet.lit".into(),
                resource: Some("Balcony".into())
            })
        );
        assert_eq!(f.start_ms, Some(1_275_868_800_000));
        assert_eq!(f.end_ms, Some(1_278_501_834_500));
        assert_eq!((f.after_id, f.before_id), (Some(7), Some(9)));
        assert_eq!(f.ids, Some(vec![7, 8]));
        assert_eq!(f.fulltext.as_deref(), Some("hello world"));
    }

    #[test]
    fn rsm_and_flip_page() {
        let m = q(
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
                   <max>10</max><before/></set><flip-page/></query>",
        )
        .unwrap();
        assert_eq!(m.request.paging, Paging::Backward { before: None });
        assert_eq!(m.request.max, 10);
        assert!(m.flip);
        let m = q(
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
                   <max>100000</max><after>12</after></set></query>",
        )
        .unwrap();
        assert_eq!(m.request.paging, Paging::Forward { after: Some(12) });
        assert_eq!(m.request.max, 250, "capped");
        let m = q(
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
                   <before>12</before></set></query>",
        )
        .unwrap();
        assert_eq!(m.request.paging, Paging::Backward { before: Some(12) });
    }

    #[test]
    fn bad_forms_are_bad_requests_and_foreign_ids_unknown() {
        let cond = |r: Result<MamQuery, StanzaError>| r.unwrap_err().condition;
        assert_eq!(
            cond(q(&form("<field var='with'><value>a@@b</value></field>"))),
            Condition::BadRequest
        );
        assert_eq!(
            cond(q(&form(
                "<field var='start'><value>yesterday</value></field>"
            ))),
            Condition::BadRequest
        );
        assert_eq!(
            cond(q(&form("<field var='colour'><value>red</value></field>"))),
            Condition::BadRequest
        );
        assert_eq!(
            cond(q(
                "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>\
                    <field var='FORM_TYPE' type='hidden'><value>urn:other</value></field>\
                    </x></query>"
            )),
            Condition::BadRequest
        );
        assert_eq!(
            cond(q(
                "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
                    <max>many</max></set></query>"
            )),
            Condition::BadRequest
        );
        assert_eq!(
            cond(q(&form(
                "<field var='after-id'><value>not-ours</value></field>"
            ))),
            Condition::ItemNotFound
        );
        assert_eq!(
            cond(q(
                "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
                    <after>x1</after></set></query>"
            )),
            Condition::ItemNotFound
        );
    }

    #[test]
    fn results_fin_and_metadata_are_well_formed() {
        let item = Archived {
            id: 42,
            stamp_ms: 1_000,
            direction: crate::store::Direction::Incoming,
            stanza: "<message xmlns='jabber:client' from='a@x/r' to='b@x' type='chat'>\
                     <body>hi</body></message>"
                .into(),
        };
        let m = result_message("b@x", "b@x/phone", Some("q1"), &item).unwrap();
        let r = m.get_child("result", NS_MAM).unwrap();
        assert_eq!((r.attr("id"), r.attr("queryid")), (Some("42"), Some("q1")));
        let fwd = r.get_child("forwarded", NS_FORWARD).unwrap();
        let delay = fwd.get_child("delay", stanza::NS_DELAY).unwrap();
        assert_eq!(delay.attr("stamp"), Some("1970-01-01T00:00:01.000Z"));
        let inner = fwd.get_child("message", stanza::NS_CLIENT).unwrap();
        assert_eq!(inner.attr("from"), Some("a@x/r"));

        let page = Page {
            items: vec![item.clone(), Archived { id: 43, ..item }],
            complete: true,
        };
        let fin = fin(&page);
        assert_eq!(fin.attr("complete"), Some("true"));
        let set = fin
            .get_child("set", "http://jabber.org/protocol/rsm")
            .unwrap();
        assert_eq!(
            set.get_child("first", "http://jabber.org/protocol/rsm")
                .unwrap()
                .text(),
            "42"
        );
        assert_eq!(
            set.get_child("last", "http://jabber.org/protocol/rsm")
                .unwrap()
                .text(),
            "43"
        );

        let md = metadata(Some(((1, 0), (2, 1_500))));
        let start = md.get_child("start", NS_MAM).unwrap();
        assert_eq!(start.attr("id"), Some("1"));
        let end = md.get_child("end", NS_MAM).unwrap();
        assert_eq!(end.attr("id"), Some("2"));
        assert!(metadata(None).children().next().is_none());
    }

    #[test]
    fn prefs_round_trip_with_bare_jids() {
        let el: Element = "<prefs xmlns='urn:xmpp:mam:2' default='roster'>\
                           <always><jid>romeo@montague.lit/pda</jid></always>\
                           <never><jid>montague@montague.lit</jid></never></prefs>"
            .parse()
            .unwrap();
        let p = parse_prefs(&el).unwrap();
        assert_eq!(p.default, DefaultPolicy::Roster);
        assert_eq!(p.always, ["romeo@montague.lit"]);
        assert_eq!(p.never, ["montague@montague.lit"]);
        assert_eq!(parse_prefs(&prefs_element(&p)).unwrap(), p);
        let bad: Element = "<prefs xmlns='urn:xmpp:mam:2' default='sometimes'/>"
            .parse()
            .unwrap();
        assert_eq!(
            parse_prefs(&bad).unwrap_err().condition,
            Condition::BadRequest
        );
    }
}
