//! The few elements negotiation answers with, built as elements so that each framing writes
//! them its own way.

use minidom::Element;
use rxml::{Namespace, NcName};
use xmppd_stream::NS_CLIENT;

use crate::NS_STANZAS;

/// `<name xmlns=ns attr=value…/>`. Names are this crate's constants, always valid.
pub(crate) fn element(name: &str, ns: &str, attrs: &[(&'static str, &str)]) -> Element {
    let mut el = Element::bare(name, ns);
    for (key, value) in attrs {
        if let Ok(key) = NcName::try_from(*key) {
            el.attrs_mut()
                .insert(Namespace::NONE, key, (*value).to_owned());
        }
    }
    el
}

/// `<name xmlns=ns>text</name>`.
pub(crate) fn text_element(name: &str, ns: &str, text: &str) -> Element {
    let mut el = Element::bare(name, ns);
    el.append_text(text);
    el
}

/// `<iq type='result' id=…/>` answering `iq`, addressed as the request was (RFC 6120 §8.2.3).
pub(crate) fn iq_result(iq: &Element, payload: Option<Element>) -> Element {
    let mut reply = addressed_reply(iq, "result");
    if let Some(payload) = payload {
        reply.append_child(payload);
    }
    reply
}

/// The error reply to `iq` (RFC 6120 §8.3). Never answer an error: callers check that `iq`
/// is a request.
pub(crate) fn iq_error(
    iq: &Element,
    kind: &'static str,
    condition: &str,
    text: Option<&str>,
) -> Element {
    let mut error = element("error", NS_CLIENT, &[("type", kind)]);
    error.append_child(Element::bare(condition, NS_STANZAS));
    if let Some(text) = text {
        error.append_child(text_element("text", NS_STANZAS, text));
    }
    let mut reply = addressed_reply(iq, "error");
    reply.append_child(error);
    reply
}

/// An `<iq/>` of `kind` with the request's id, its addresses swapped.
fn addressed_reply(iq: &Element, kind: &'static str) -> Element {
    let mut attrs = vec![("type", kind)];
    for (name, from) in [("id", "id"), ("to", "from"), ("from", "to")] {
        if let Some(value) = iq.attr(from) {
            attrs.push((name, value));
        }
    }
    element("iq", NS_CLIENT, &attrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml(el: &Element) -> String {
        let mut out = Vec::new();
        xmppd_stream::serialize(el, NS_CLIENT, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn iq_replies_keep_the_id_and_swap_addresses() {
        let iq = element(
            "iq",
            NS_CLIENT,
            &[("type", "set"), ("id", "a'<"), ("from", "x@y/z")],
        );
        let ok = xml(&iq_result(&iq, None));
        assert!(
            ok.contains("type='result'") || ok.contains("type=\"result\""),
            "{ok}"
        );
        assert!(ok.contains("a&apos;&lt;") || ok.contains("a'&lt;"), "{ok}");
        assert!(
            ok.contains("to='x@y/z'") || ok.contains("to=\"x@y/z\""),
            "{ok}"
        );
        let err = xml(&iq_error(&iq, "wait", "resource-constraint", None));
        assert!(
            err.contains("<resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"),
            "{err}"
        );
    }
}
