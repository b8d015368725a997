//! XMPP over WebSocket framing (RFC 7395 §3.3) to and from the byte stream c2s negotiates on.
//!
//! Each WebSocket message holds one complete element: `<open/>` and `<close/>` in the framing
//! namespace stand for the stream's header and its end, and every other element is a whole
//! XML document of its own, with its namespaces declared. The c2s driver reads and writes a
//! classic XML stream; these two translators sit between them, so the same negotiation, SASL,
//! limits and session loop serve both transports:
//! - [`incoming`]: a client message to stream bytes (`<open/>` becomes `<stream:stream>`,
//!   `<close/>` becomes `</stream:stream>`, other elements pass unchanged, the c2s framer
//!   applying its limits to them);
//! - [`Outgoing`]: the server's stream bytes, parsed again, to messages.

use minidom::Element;
use xmppd_stream::{Event, Framer, Limits, StreamHeader, NS_CLIENT, NS_STREAM};

/// The framing namespace of `<open/>` and `<close/>` (RFC 7395 §3.3.1).
pub const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

pub(crate) const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";

/// An `<open/>` or `<close/>` is a single empty element; anything longer is not one.
const MAX_FRAMING_BYTES: usize = 2048;

/// The stream bytes for one client message.
pub fn incoming(message: &str) -> Vec<u8> {
    let body = strip_declaration(message.trim_start());
    match framing_element(body) {
        Some(el) if el.name() == "open" => {
            let attrs = el.attrs().iter().filter_map(|((ns, name), value)| {
                let name = match name.as_str() {
                    "to" | "from" | "version" | "id" if ns.is_none() => name.as_str(),
                    "lang" if ns.as_str() == NS_XML => "xml:lang",
                    _ => return None,
                };
                Some((name, value.as_str()))
            });
            stream_open(attrs)
        }
        Some(_) => b"</stream:stream>".to_vec(),
        None => message.as_bytes().to_vec(),
    }
}

/// The client's stream header with these attributes, for the c2s driver.
pub fn stream_open<'a>(attrs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
    let mut header = String::with_capacity(256);
    header.push_str("<stream:stream xmlns='");
    header.push_str(NS_CLIENT);
    header.push_str("' xmlns:stream='");
    header.push_str(NS_STREAM);
    header.push('\'');
    for (name, value) in attrs {
        push_attr(&mut header, name, value);
    }
    header.push('>');
    header.into_bytes()
}

/// `<open/>` or `<close/>` in the framing namespace, if `body` is one of them.
fn framing_element(body: &str) -> Option<Element> {
    // A single empty element: one `<`, so parsing it cannot nest or grow.
    let candidate = (body.starts_with("<open") || body.starts_with("<close"))
        && body.len() <= MAX_FRAMING_BYTES
        && body.matches('<').count() == 1;
    if !candidate {
        return None;
    }
    let el: Element = body.trim_end().parse().ok()?;
    (el.ns() == NS_FRAMING && matches!(el.name(), "open" | "close")).then_some(el)
}

fn strip_declaration(s: &str) -> &str {
    match s
        .strip_prefix("<?xml")
        .and_then(|rest| rest.split_once("?>"))
    {
        Some((_, rest)) => rest.trim_start(),
        None => s,
    }
}

fn push_attr(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("='");
    out.push_str(&escape(value));
    out.push('\'');
}

pub(crate) use xmppd_stream::escape_xml as escape;

/// The server's output stream, cut into messages. A new stream header (after SASL) always
/// starts with the XML declaration, which no element we write contains (text escapes `<`): the
/// parser starts afresh there.
pub struct Outgoing {
    framer: Framer,
    /// Bytes held back because they may be the start of a declaration.
    held: Vec<u8>,
}

const DECLARATION: &[u8] = b"<?xml";

/// The server's own output: bounded by what it accepted from its senders, not by our input
/// limits (a roster or an archive page can exceed one client stanza).
const OUTPUT_LIMITS: Limits = Limits {
    max_stanza_bytes: usize::MAX,
    max_depth: usize::MAX,
    max_elements: usize::MAX,
    max_attributes: usize::MAX,
};

impl Default for Outgoing {
    fn default() -> Self {
        Outgoing {
            framer: Framer::new(OUTPUT_LIMITS),
            held: Vec::new(),
        }
    }
}

/// The server wrote something that is not an XML stream: a bug, the connection ends.
#[derive(Debug)]
pub struct BadOutput(pub String);

impl Outgoing {
    /// Takes bytes the server wrote; returns the messages now complete, in order.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<String>, BadOutput> {
        Ok(self.frames(data)?.iter().map(Frame::message).collect())
    }

    /// Takes bytes the server wrote; returns the pieces of the stream now complete, in order.
    pub fn frames(&mut self, data: &[u8]) -> Result<Vec<Frame>, BadOutput> {
        let mut frames = Vec::new();
        self.held.extend_from_slice(data);
        let mut pending = std::mem::take(&mut self.held);
        let mut start = 0;
        while let Some(at) = find(&pending[start..], DECLARATION) {
            let at = start + at;
            self.framer.feed(&pending[start..at]);
            self.drain(&mut frames)?;
            self.framer.reset();
            self.framer.feed(DECLARATION);
            start = at + DECLARATION.len();
        }
        // Keep back a tail that may be the start of the next declaration.
        let rest = &pending[start..];
        let keep = (1..DECLARATION.len())
            .rev()
            .find(|&k| rest.ends_with(&DECLARATION[..k]))
            .unwrap_or(0);
        self.framer.feed(&rest[..rest.len() - keep]);
        pending.drain(..pending.len() - keep);
        self.held = pending;
        self.drain(&mut frames)?;
        Ok(frames)
    }

    fn drain(&mut self, frames: &mut Vec<Frame>) -> Result<(), BadOutput> {
        loop {
            match self.framer.next_event() {
                Ok(Some(Event::Header(h))) => frames.push(Frame::Open(h)),
                Ok(Some(Event::Element(el))) => frames.push(Frame::Element(el)),
                Ok(Some(Event::Close)) => frames.push(Frame::Close),
                Ok(None) => return Ok(()),
                Err(e) => return Err(BadOutput(e.to_string())),
            }
        }
    }
}

/// One piece of the server's stream.
#[derive(Debug)]
pub enum Frame {
    /// A stream header (the first, or a new one after SASL).
    Open(StreamHeader),
    Element(Element),
    Close,
}

impl Frame {
    /// The RFC 7395 message for this piece.
    pub fn message(&self) -> String {
        match self {
            Frame::Open(h) => {
                let mut open = format!("<open xmlns='{NS_FRAMING}'");
                let attrs = [
                    ("from", &h.from),
                    ("to", &h.to),
                    ("id", &h.id),
                    ("version", &h.version),
                    ("xml:lang", &h.lang),
                ];
                for (name, value) in attrs {
                    if let Some(value) = value {
                        push_attr(&mut open, name, value);
                    }
                }
                open.push_str("/>");
                open
            }
            Frame::Element(el) => standalone(el),
            Frame::Close => format!("<close xmlns='{NS_FRAMING}'/>"),
        }
    }
}

/// `el` as a document of its own: its namespace declared, and the `stream:` prefix of stream
/// features and errors too (RFC 7395 §3.4, §3.6.1).
pub fn standalone(el: &Element) -> String {
    let mut out = Vec::with_capacity(256);
    xmppd_stream::serialize(el, "", &mut out);
    if el.ns() == NS_STREAM {
        let at = "<stream:".len() + el.name().len();
        let declaration = format!(" xmlns:stream='{NS_STREAM}'");
        out.splice(at..at, declaration.into_bytes());
    }
    String::from_utf8(out).unwrap_or_default()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_and_close_become_the_stream_header_and_end() {
        let open = incoming(
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.org' version='1.0' xml:lang='en'/>",
        );
        let header = String::from_utf8(open).unwrap();
        assert!(header.starts_with("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"), "{header}");
        assert!(header.contains(" to='example.org'") && header.contains(" version='1.0'"));
        assert!(header.contains(" xml:lang='en'"), "{header}");
        let mut framer = Framer::new(Limits::PRE_AUTH);
        framer.feed(header.as_bytes());
        assert!(
            matches!(framer.next_event(), Ok(Some(Event::Header(h))) if h.to.as_deref() == Some("example.org"))
        );
        assert_eq!(
            incoming(
                "<?xml version='1.0'?> <close xmlns=\"urn:ietf:params:xml:ns:xmpp-framing\"/>"
            ),
            b"</stream:stream>"
        );
        // Not in the framing namespace, or not alone: passed on to the framer unchanged.
        let other = "<open xmlns='jabber:client'><x/></open>";
        assert_eq!(incoming(other), other.as_bytes());
        let msg = "<message xmlns='jabber:client' to='a@b'><body>&lt;open/&gt;</body></message>";
        assert_eq!(incoming(msg), msg.as_bytes());
    }

    #[test]
    fn the_servers_stream_is_cut_into_documents_for_any_chunking() {
        let first = xmppd_stream::stream_header(NS_CLIENT, "example.org", None, "s1", "en");
        let second = xmppd_stream::stream_header(NS_CLIENT, "example.org", None, "s2", "en");
        let stream = format!(
            "{first}<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>\
             <success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>{second}<stream:features/>\
             <message to='a@example.org'><body>x &lt;?xml</body></message>\
             <stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>"
        );
        let expected = [
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='example.org' id='s1' version='1.0' xml:lang='en'/>",
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>",
            "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='example.org' id='s2' version='1.0' xml:lang='en'/>",
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'/>",
            "<message xmlns='jabber:client' to='a@example.org'><body>x &lt;?xml</body></message>",
            "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
            "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
        ];
        for chunk in [1, 2, 3, 5, 7, 64, stream.len()] {
            let mut out = Outgoing::default();
            let mut got = Vec::new();
            for piece in stream.as_bytes().chunks(chunk) {
                got.extend(out.feed(piece).unwrap());
            }
            assert_eq!(got, expected, "chunks of {chunk}");
        }
    }
}
