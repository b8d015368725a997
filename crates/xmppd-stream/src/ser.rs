//! The output direction: elements, the stream header and stream errors as XML text.
//!
//! Output is meant to be written into a stream opened by [`stream_header`]: the default namespace
//! of the stream is never repeated, and elements in the stream namespace use the `stream:` prefix
//! that header declares. Nothing here validates names: elements come from the framer or from
//! xmppd's own code, both of which only produce valid XML names.

use minidom::{Element, Node};
use rxml::Namespace;

use crate::{StreamErrorCondition, NS_STREAM, NS_STREAM_ERRORS};

/// Appends `el` as XML to `out`. Elements in `default_ns` are written without repeating it.
///
/// Children inherit their parent's namespace and only carry `xmlns` where it changes. Elements
/// in the stream namespace are written as `stream:name`. Namespaced attributes other than
/// `xml:*` get a prefix declared on the same element. Apart from growing `out`, the only
/// allocation is one copy of each namespace that has to be declared.
pub fn serialize(el: &Element, default_ns: &str, out: &mut Vec<u8>) {
    write_element(el, default_ns, None, out);
}

/// Like [`serialize`], with the `to` attribute of `el` itself written as `to` (added if `el`
/// has none). One element fanned out to many recipients is stored once and addressed to each
/// only here, as it is written.
pub fn serialize_addressed(el: &Element, default_ns: &str, to: &str, out: &mut Vec<u8>) {
    write_element(el, default_ns, Some(to), out);
}

/// `<?xml version='1.0'?><stream:stream ...>` for the responding side.
pub fn stream_header(
    default_ns: &str,
    from: &str,
    to: Option<&str>,
    id: &str,
    lang: &str,
) -> String {
    let mut s = String::with_capacity(192 + from.len() + to.map_or(0, str::len) + id.len());
    s.push_str("<?xml version='1.0'?><stream:stream xmlns='");
    escape(default_ns, true, |chunk| s.push_str(chunk));
    s.push_str("' xmlns:stream='");
    s.push_str(NS_STREAM);
    s.push_str("' from='");
    escape(from, true, |chunk| s.push_str(chunk));
    if let Some(to) = to {
        s.push_str("' to='");
        escape(to, true, |chunk| s.push_str(chunk));
    }
    s.push_str("' id='");
    escape(id, true, |chunk| s.push_str(chunk));
    s.push_str("' version='1.0' xml:lang='");
    escape(lang, true, |chunk| s.push_str(chunk));
    s.push_str("'>");
    s
}

/// `<stream:error><COND xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>[<text/>]</stream:error>`.
pub fn stream_error(cond: StreamErrorCondition, text: Option<&str>) -> String {
    let mut s = String::with_capacity(160 + text.map_or(0, str::len));
    s.push_str("<stream:error><");
    s.push_str(cond.as_str());
    s.push_str(" xmlns='");
    s.push_str(NS_STREAM_ERRORS);
    s.push_str("'/>");
    if let Some(text) = text {
        s.push_str("<text xmlns='");
        s.push_str(NS_STREAM_ERRORS);
        s.push_str("'>");
        escape(text, false, |chunk| s.push_str(chunk));
        s.push_str("</text>");
    }
    s.push_str("</stream:error>");
    s
}

/// Writes `el`; `scope_ns` is the default namespace in effect where it is written; `to`
/// replaces its `to` attribute.
fn write_element(el: &Element, scope_ns: &str, to: Option<&str>, out: &mut Vec<u8>) {
    let name = el.name().as_bytes();
    let stream_prefixed = el.has_ns(NS_STREAM);
    // Only filled when the element changes the default namespace.
    let declared: Option<String> = (!stream_prefixed && !el.has_ns(scope_ns)).then(|| el.ns());
    let inner_ns = declared.as_deref().unwrap_or(scope_ns);

    out.push(b'<');
    if stream_prefixed {
        out.extend_from_slice(b"stream:");
    }
    out.extend_from_slice(name);
    if let Some(ns) = &declared {
        out.extend_from_slice(b" xmlns='");
        escape_into(ns, true, out);
        out.push(b'\'');
    }
    write_attributes(el, to, out);

    let mut nodes = el.nodes().peekable();
    if nodes.peek().is_none() {
        out.extend_from_slice(b"/>");
        return;
    }
    out.push(b'>');
    for node in nodes {
        match node {
            Node::Element(child) => write_element(child, inner_ns, None, out),
            Node::Text(text) => escape_into(text, false, out),
        }
    }
    out.extend_from_slice(b"</");
    if stream_prefixed {
        out.extend_from_slice(b"stream:");
    }
    out.extend_from_slice(name);
    out.push(b'>');
}

fn write_attributes(el: &Element, mut to: Option<&str>, out: &mut Vec<u8>) {
    if let (Some(value), None) = (to, el.attr("to")) {
        out.extend_from_slice(b" to='");
        escape_into(value, true, out);
        out.push(b'\'');
        to = None;
    }
    // The map iterates grouped by namespace, so one prefix per group suffices.
    let mut current: Option<&Namespace<'static>> = None;
    let mut prefixes = 0u32;
    for ((ns, name), value) in el.attrs().iter() {
        let value = match to {
            Some(to) if ns.is_none() && name.as_str() == "to" => to,
            _ => value.as_str(),
        };
        out.push(b' ');
        if ns.is_none() {
            // Namespace declarations are derived from element namespaces, never copied.
            if name.as_str() == "xmlns" {
                out.pop();
                continue;
            }
        } else if *ns == Namespace::XML {
            out.extend_from_slice(b"xml:");
        } else if *ns == Namespace::XMLNS {
            out.pop();
            continue;
        } else {
            if current != Some(ns) {
                current = Some(ns);
                prefixes += 1;
                out.extend_from_slice(b"xmlns:ns");
                push_decimal(prefixes, out);
                out.extend_from_slice(b"='");
                escape_into(ns, true, out);
                out.extend_from_slice(b"' ");
            }
            out.extend_from_slice(b"ns");
            push_decimal(prefixes, out);
            out.push(b':');
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"='");
        escape_into(value, true, out);
        out.push(b'\'');
    }
}

fn push_decimal(mut n: u32, out: &mut Vec<u8>) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `s` escaped as the serializer escapes attribute values, which is right for text and for
/// single- or double-quoted attribute values alike: for code that writes XML as text.
pub fn escape_xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape(s, true, |chunk| out.push_str(chunk));
    out
}

fn escape_into(s: &str, attribute: bool, out: &mut Vec<u8>) {
    escape(s, attribute, |chunk| {
        out.extend_from_slice(chunk.as_bytes())
    });
}

/// Hands `s` to `push` in pieces, with markup characters replaced by references.
///
/// CR (and, in attribute values, TAB and LF) are written as character references because a
/// parser normalises the literal characters away; this keeps parse → serialize → parse exact.
/// Control characters that XML 1.0 forbids outright (text that never went through the parser,
/// e.g. an operator's announcement) become U+FFFD, so the output is always well-formed.
#[inline]
fn escape(s: &str, attribute: bool, mut push: impl FnMut(&str)) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let replacement = match b {
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'&' => "&amp;",
            b'\r' => "&#xD;",
            b'\'' if attribute => "&apos;",
            b'"' if attribute => "&quot;",
            b'\n' if attribute => "&#xA;",
            b'\t' if attribute => "&#x9;",
            0..=0x08 | 0x0b | 0x0c | 0x0e..=0x1f => "\u{FFFD}",
            _ => continue,
        };
        // `i` is at an ASCII byte, hence on a char boundary.
        push(&s[start..i]);
        push(replacement);
        start = i + 1;
    }
    push(&s[start..]);
}
