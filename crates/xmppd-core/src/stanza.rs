//! Stanza helpers: namespaces, attribute access, and RFC 6120 §8.3 stanza errors.

use minidom::Element;
use rxml::{Namespace, NcName};

pub const NS_CLIENT: &str = "jabber:client";
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const NS_ROSTER: &str = "jabber:iq:roster";
pub const NS_PING: &str = "urn:xmpp:ping";
pub const NS_VERSION: &str = "jabber:iq:version";
pub const NS_LAST: &str = "jabber:iq:last";
pub const NS_DELAY: &str = "urn:xmpp:delay";
/// XEP-0359 unique and stable stanza ids: an archive's `<stanza-id/>`.
pub const NS_SID: &str = "urn:xmpp:sid:0";
pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";
pub const NS_ROSTERVER: &str = "urn:xmpp:features:rosterver";
pub const NS_PREAPPROVAL: &str = "urn:xmpp:features:pre-approval";
pub const NS_HINTS: &str = "urn:xmpp:hints";
pub const FEATURE_OFFLINE: &str = "msgoffline";

/// Sets attribute `name` (no namespace) to `value`.
pub fn set_attr(el: &mut Element, name: &str, value: impl Into<String>) {
    if let Ok(n) = NcName::try_from(name) {
        let value = value.into();
        match el.attrs_mut().get_mut(Namespace::none(), name) {
            Some(v) => *v = value,
            None => {
                el.attrs_mut().insert(Namespace::NONE, n, value);
            }
        }
    }
}

/// Removes attribute `name` (no namespace) if present.
pub fn remove_attr(el: &mut Element, name: &str) {
    el.attrs_mut().remove(Namespace::none(), name);
}

/// Removes the child elements of `el` that `unwanted` picks, keeping every other node in
/// its place; returns whether any went. An element with none is not touched.
pub fn remove_children(el: &mut Element, unwanted: impl Fn(&Element) -> bool) -> bool {
    if !el.children().any(&unwanted) {
        return false;
    }
    for node in el.take_nodes() {
        if !matches!(&node, minidom::Node::Element(c) if unwanted(c)) {
            el.append_node(node);
        }
    }
    true
}

/// Builds `<name xmlns=ns attr=value…/>`.
pub fn elem(name: &str, ns: &str, attrs: &[(&str, &str)]) -> Element {
    let mut e = Element::bare(name, ns);
    for (k, v) in attrs {
        set_attr(&mut e, k, *v);
    }
    e
}

/// Builds `<name xmlns=ns>text</name>`.
pub fn text_elem(name: &str, ns: &str, text: &str) -> Element {
    let mut e = Element::bare(name, ns);
    e.append_text(text);
    e
}

/// The `type` attribute, or `default`.
pub fn stanza_type<'a>(el: &'a Element, default: &'a str) -> &'a str {
    el.attr("type").unwrap_or(default)
}

/// RFC 6120 §8.3.2 error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// RFC 6120 §8.3.3 defined conditions, each with its usual error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    BadRequest,
    Conflict,
    FeatureNotImplemented,
    Forbidden,
    Gone,
    InternalServerError,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    NotAuthorized,
    PolicyViolation,
    RecipientUnavailable,
    Redirect,
    RegistrationRequired,
    RemoteServerNotFound,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
    SubscriptionRequired,
    UndefinedCondition,
    UnexpectedRequest,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        use Condition::*;
        match self {
            BadRequest => "bad-request",
            Conflict => "conflict",
            FeatureNotImplemented => "feature-not-implemented",
            Forbidden => "forbidden",
            Gone => "gone",
            InternalServerError => "internal-server-error",
            ItemNotFound => "item-not-found",
            JidMalformed => "jid-malformed",
            NotAcceptable => "not-acceptable",
            NotAllowed => "not-allowed",
            NotAuthorized => "not-authorized",
            PolicyViolation => "policy-violation",
            RecipientUnavailable => "recipient-unavailable",
            Redirect => "redirect",
            RegistrationRequired => "registration-required",
            RemoteServerNotFound => "remote-server-not-found",
            RemoteServerTimeout => "remote-server-timeout",
            ResourceConstraint => "resource-constraint",
            ServiceUnavailable => "service-unavailable",
            SubscriptionRequired => "subscription-required",
            UndefinedCondition => "undefined-condition",
            UnexpectedRequest => "unexpected-request",
        }
    }

    /// The error type RFC 6120 §8.3.3 gives in its examples for this condition.
    pub fn default_type(self) -> ErrorType {
        use Condition::*;
        match self {
            BadRequest | JidMalformed | NotAcceptable | PolicyViolation | Redirect => {
                ErrorType::Modify
            }
            Forbidden | NotAuthorized | RegistrationRequired | SubscriptionRequired => {
                ErrorType::Auth
            }
            RecipientUnavailable | RemoteServerTimeout | ResourceConstraint | UnexpectedRequest => {
                ErrorType::Wait
            }
            _ => ErrorType::Cancel,
        }
    }
}

/// A stanza error to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    pub condition: Condition,
    pub kind: ErrorType,
    pub text: Option<String>,
    /// An application-specific condition element (RFC 6120 §8.3.4), e.g. XEP-0050's
    /// `<bad-sessionid/>`.
    pub app: Option<Box<Element>>,
}

impl StanzaError {
    pub fn new(condition: Condition) -> Self {
        StanzaError {
            condition,
            kind: condition.default_type(),
            text: None,
            app: None,
        }
    }

    pub fn with_text(condition: Condition, text: impl Into<String>) -> Self {
        StanzaError {
            condition,
            kind: condition.default_type(),
            text: Some(text.into()),
            app: None,
        }
    }

    /// Adds an application-specific condition element.
    /// Storage failed: `<internal-server-error/>` of type `wait`, since the same request may
    /// well succeed once storage is back (RFC 6120 §8.3.2). The cause is for the log only.
    pub fn storage_failed() -> Self {
        StanzaError {
            kind: ErrorType::Wait,
            ..StanzaError::with_text(Condition::InternalServerError, "storage failed")
        }
    }

    pub fn with_app(mut self, app: Element) -> Self {
        self.app = Some(Box::new(app));
        self
    }

    /// The `<error/>` element.
    pub fn to_element(&self, by: Option<&str>) -> Element {
        let mut e = elem("error", NS_CLIENT, &[("type", self.kind.as_str())]);
        if let Some(by) = by {
            set_attr(&mut e, "by", by);
        }
        e.append_child(Element::bare(self.condition.as_str(), NS_STANZAS));
        if let Some(t) = &self.text {
            e.append_child(text_elem("text", NS_STANZAS, t));
        }
        if let Some(app) = &self.app {
            e.append_child((**app).clone());
        }
        e
    }
}

impl From<Condition> for StanzaError {
    fn from(c: Condition) -> Self {
        StanzaError::new(c)
    }
}

/// The error reply to `original` (RFC 6120 §8.3.1): addresses swapped, `type='error'`, the
/// original's id kept; `None` when the original is itself an error (never answer an error).
/// The original payload is not echoed back, so an error is never larger than its cause.
pub fn error_reply(original: &Element, err: &StanzaError) -> Option<Element> {
    if original.attr("type") == Some("error") {
        return None;
    }
    let mut e = Element::bare(original.name(), NS_CLIENT);
    if let Some(id) = original.attr("id") {
        set_attr(&mut e, "id", id);
    }
    if let Some(from) = original.attr("from") {
        set_attr(&mut e, "to", from);
    }
    if let Some(to) = original.attr("to") {
        set_attr(&mut e, "from", to);
    }
    set_attr(&mut e, "type", "error");
    e.append_child(err.to_element(None));
    Some(e)
}

/// A server-generated `<iq type='set'/>` to the session `to` carrying `payload`: a push to
/// the resources that asked for a list (a roster, RFC 6121 §2.1.6; a block list, XEP-0191
/// §3.3). It has no `from`, which a client reads as its own account.
pub fn iq_push(to: &str, id: &str, payload: Element) -> Element {
    let mut iq = elem("iq", NS_CLIENT, &[("type", "set"), ("id", id), ("to", to)]);
    iq.append_child(payload);
    iq
}

/// `<iq type='result'/>` answering `iq`, with an optional payload.
pub fn iq_result(iq: &Element, payload: Option<Element>) -> Element {
    let mut e = Element::bare("iq", NS_CLIENT);
    set_attr(&mut e, "type", "result");
    if let Some(id) = iq.attr("id") {
        set_attr(&mut e, "id", id);
    }
    if let Some(from) = iq.attr("from") {
        set_attr(&mut e, "to", from);
    }
    if let Some(to) = iq.attr("to") {
        set_attr(&mut e, "from", to);
    }
    if let Some(p) = payload {
        e.append_child(p);
    }
    e
}

/// UTC time as XEP-0082 `CCYY-MM-DDThh:mm:ss.sssZ` from Unix milliseconds.
pub fn xep82_datetime(unix_ms: i64) -> String {
    let (y, m, d, hh, mm, ss) = utc_fields(unix_ms.div_euclid(1000));
    let ms = unix_ms.rem_euclid(1000);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{ms:03}Z")
}

/// (year, month, day, hour, minute, second) in UTC of a Unix time in seconds, in the proleptic
/// Gregorian calendar (civil-from-days over 400-year eras).
pub fn utc_fields(unix_secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = unix_secs.div_euclid(86_400);
    let sod = unix_secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, sod / 3600, (sod / 60) % 60, sod % 60)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_known_values() {
        assert_eq!(xep82_datetime(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(xep82_datetime(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            xep82_datetime(1_798_761_599_000),
            "2026-12-31T23:59:59.000Z"
        );
    }

    #[test]
    fn remove_children_keeps_the_rest_in_order() {
        let mut m: Element = "<message xmlns='jabber:client'>a<x xmlns='u'/>b<body>hi</body>\
                              <x xmlns='u'/></message>"
            .parse()
            .unwrap();
        assert!(!remove_children(&mut m, |c| c.name() == "y"));
        assert!(remove_children(&mut m, |c| c.is("x", "u")));
        let mut out = Vec::new();
        m.write_to(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<message xmlns='jabber:client'>ab<body>hi</body></message>"
        );
    }

    #[test]
    fn error_reply_swaps_addresses_and_never_answers_errors() {
        let mut m = elem(
            "message",
            NS_CLIENT,
            &[("from", "a@x/r"), ("to", "b@x"), ("id", "1")],
        );
        m.append_child(text_elem("body", NS_CLIENT, "hi"));
        let r = error_reply(&m, &Condition::ServiceUnavailable.into()).unwrap();
        assert_eq!(r.attr("to"), Some("a@x/r"));
        assert_eq!(r.attr("from"), Some("b@x"));
        assert_eq!(r.attr("type"), Some("error"));
        assert_eq!(r.attr("id"), Some("1"));
        let err = r.get_child("error", NS_CLIENT).unwrap();
        assert_eq!(err.attr("type"), Some("cancel"));
        assert!(err.has_child("service-unavailable", NS_STANZAS));
        assert!(r.get_child("body", NS_CLIENT).is_none());
        assert!(error_reply(&r, &Condition::BadRequest.into()).is_none());
    }

    #[test]
    fn set_attr_replaces() {
        let mut e = elem("iq", NS_CLIENT, &[("to", "a")]);
        set_attr(&mut e, "to", "b");
        assert_eq!(e.attr("to"), Some("b"));
        remove_attr(&mut e, "to");
        assert_eq!(e.attr("to"), None);
    }
}
