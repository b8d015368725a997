//! The `<body/>` wrapper of XEP-0124 §4: its attributes are read here, its payload is not. The
//! payload goes as it is to the c2s driver, whose framer applies the stream's limits (stanza
//! size, depth, element and attribute counts) and checks it is well-formed, exactly as it
//! would on a TCP stream; only the start tag is parsed, so a body's size costs no tree.

use minidom::Element;

use crate::framing::escape;

/// XEP-0124's namespace.
pub const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
/// XEP-0206's attributes (`xmpp:version`, `xmpp:restart`, `xmpp:restartlogic`).
pub const NS_XBOSH: &str = "urn:xmpp:xbosh";
const NS_STREAM: &str = xmppd_stream::NS_STREAM;

/// A body's start tag (with its namespace declarations, several attributes and a JID or two)
/// is small; a longer one is refused before it is parsed.
const MAX_START_TAG: usize = 8 * 1024;

/// A request's `<body/>`: the wrapper, parsed, and its payload, untouched.
#[derive(Debug)]
pub struct Body<'a> {
    pub wrapper: Element,
    pub payload: &'a [u8],
}

impl Body<'_> {
    pub fn attr<'s>(&'s self, name: &'s str) -> Option<&'s str> {
        self.wrapper.attr(name)
    }

    /// An attribute in XEP-0206's namespace (`xmpp:restart`…).
    pub fn xbosh(&self, name: &str) -> Option<&str> {
        self.wrapper.attr_ns(NS_XBOSH, name)
    }

    pub fn lang(&self) -> Option<&str> {
        self.wrapper.attr_ns(crate::framing::NS_XML, "lang")
    }

    /// A non-negative integer attribute; `Err` when present but not one.
    pub fn number(&self, name: &str) -> Result<Option<u64>, ()> {
        match self.attr(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| ()),
        }
    }
}

/// Splits a request into its wrapper and payload. `Err` (why) when it is not one `<body/>` of
/// XEP-0124's namespace.
pub fn parse(bytes: &[u8]) -> Result<Body<'_>, &'static str> {
    let mut rest = trim_start(bytes);
    if rest.starts_with(b"<?xml") {
        let end = find(rest, b"?>").ok_or("unterminated XML declaration")?;
        rest = trim_start(&rest[end + 2..]);
    }
    let tag_end = start_tag_end(rest).ok_or("no complete <body> start tag")?;
    let (tag, after) = rest.split_at(tag_end + 1);
    let tag = std::str::from_utf8(tag).map_err(|_| "the start tag is not UTF-8")?;
    let (wrapper, payload) = match tag.strip_suffix("/>") {
        Some(_) => {
            if !trim_start(after).is_empty() {
                return Err("content after the body");
            }
            (tag.to_owned(), &after[..0])
        }
        None => {
            let close = find_last(after, b"</").ok_or("no </body>")?;
            let end_tag = std::str::from_utf8(&after[close..]).map_err(|_| "no </body>")?;
            let name = (end_tag.trim_end().strip_prefix("</"))
                .and_then(|t| t.strip_suffix('>'))
                .map(str::trim_end)
                .ok_or("no </body>")?;
            if name.rsplit(':').next() != Some("body") {
                return Err("no </body>");
            }
            let open = tag.strip_suffix('>').unwrap_or(tag);
            (format!("{open}/>"), &after[..close])
        }
    };
    let wrapper: Element = wrapper.parse().map_err(|_| "malformed <body> start tag")?;
    if wrapper.name() != "body" || wrapper.ns() != NS_HTTPBIND {
        return Err("not a <body/> of http://jabber.org/protocol/httpbind");
    }
    Ok(Body { wrapper, payload })
}

/// Where the first start tag of `s` ends (its `>`), quotes respected; `None` when `s` does not
/// start with one within [`MAX_START_TAG`] bytes.
fn start_tag_end(s: &[u8]) -> Option<usize> {
    if !s.starts_with(b"<") || s.get(1).is_some_and(|b| b"/?!".contains(b)) {
        return None;
    }
    let mut quote = None;
    for (i, &b) in s.iter().enumerate().take(MAX_START_TAG) {
        match (quote, b) {
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), _) if q == b => quote = None,
            (None, b'>') => return Some(i),
            (None, b'<') if i > 0 => return None,
            _ => {}
        }
    }
    None
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &s[n..]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// A response's `<body>`: its attributes (escaped here) and the elements it carries, each a
/// document of its own with its namespaces declared (as RFC 7395 messages are).
pub fn response<'a>(
    attrs: impl IntoIterator<Item = (&'a str, &'a str)>,
    payload: &[String],
) -> String {
    let size = payload.iter().map(String::len).sum::<usize>() + 256;
    let mut out = String::with_capacity(size);
    out.push_str("<body xmlns='");
    out.push_str(NS_HTTPBIND);
    out.push_str("' xmlns:xmpp='");
    out.push_str(NS_XBOSH);
    out.push_str("' xmlns:stream='");
    out.push_str(NS_STREAM);
    out.push('\'');
    for (name, value) in attrs {
        out.push(' ');
        out.push_str(name);
        out.push_str("='");
        out.push_str(&escape(value));
        out.push('\'');
    }
    if payload.is_empty() {
        out.push_str("/>");
        return out;
    }
    out.push('>');
    payload.iter().for_each(|el| out.push_str(el));
    out.push_str("</body>");
    out
}

/// The end of a session (XEP-0124 §17.2): `condition` when it is an error.
pub fn terminate(condition: Option<&str>, payload: &[String]) -> String {
    let mut attrs = vec![("type", "terminate")];
    attrs.extend(condition.map(|c| ("condition", c)));
    response(attrs, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapper_is_parsed_and_the_payload_left_as_it_is() {
        let req = b"<?xml version='1.0'?>\n<body rid='42' sid='abc' xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh' xmpp:restart='true' xml:lang='en'><message xmlns='jabber:client' to='a@b'><body>x &gt; y</body></message></body>\r\n";
        let body = parse(req).unwrap();
        assert_eq!(body.number("rid"), Ok(Some(42)));
        assert_eq!(body.attr("sid"), Some("abc"));
        assert_eq!(body.xbosh("restart"), Some("true"));
        assert_eq!(body.lang(), Some("en"));
        assert_eq!(
            body.payload,
            b"<message xmlns='jabber:client' to='a@b'><body>x &gt; y</body></message>"
        );
        // `>` inside an attribute value does not end the tag.
        let quoted = parse(b"<body to='a>b' xmlns=\"http://jabber.org/protocol/httpbind\"/>");
        assert_eq!(quoted.unwrap().attr("to"), Some("a>b"));
        let empty = parse(b" <body xmlns='http://jabber.org/protocol/httpbind' rid='1'/> ");
        assert!(empty.unwrap().payload.is_empty());
        assert_eq!(
            parse(b"<body xmlns='http://jabber.org/protocol/httpbind' rid='x'/>")
                .unwrap()
                .number("rid"),
            Err(())
        );
    }

    #[test]
    fn what_is_not_one_body_is_refused() {
        for bad in [
            &b""[..],
            b"hello",
            b"<body xmlns='jabber:client'/>",
            b"<body xmlns='http://jabber.org/protocol/httpbind'>",
            b"<body xmlns='http://jabber.org/protocol/httpbind'><x/>",
            b"<body xmlns='http://jabber.org/protocol/httpbind'/><x/>",
            b"<body xmlns='http://jabber.org/protocol/httpbind'><x/></other>",
            b"<body xmlns='http://jabber.org/protocol/httpbind' a='<'/>",
            b"<!-- x --><body xmlns='http://jabber.org/protocol/httpbind'/>",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = format!(
            "<body xmlns='http://jabber.org/protocol/httpbind' a='{}'/>",
            "x".repeat(MAX_START_TAG)
        );
        assert!(parse(long.as_bytes()).is_err());
    }

    #[test]
    fn responses_declare_the_namespaces_their_elements_use() {
        let resp = response([("sid", "a'b")], &["<success xmlns='x'/>".to_owned()]);
        assert_eq!(
            resp,
            "<body xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh' \
             xmlns:stream='http://etherx.jabber.org/streams' sid='a&apos;b'><success xmlns='x'/></body>"
        );
        let end: Element = terminate(Some("item-not-found"), &[]).parse().unwrap();
        assert_eq!(end.attr("type"), Some("terminate"));
        assert_eq!(end.attr("condition"), Some("item-not-found"));
    }
}
