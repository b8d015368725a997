//! One XML stream over a byte stream: the framer (with the c2s limits) on the reading side,
//! the serialiser on the writing side, and the namespace mapping at the edge.

use minidom::{Element, Node};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use xmppd_stream::{escape_xml, Event, Framer, Limits, StreamErrorCondition, NS_SERVER};

use crate::dialback::NS_DIALBACK;

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamEnd {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the stream")]
    Closed,
    #[error("{0}")]
    Framing(#[from] xmppd_stream::FramerError),
    #[error("timed out")]
    Timeout,
    /// We end the stream with this error.
    #[error("{0:?}: {1}")]
    Error(StreamErrorCondition, String),
}

impl StreamEnd {
    pub fn error(cond: StreamErrorCondition, why: impl Into<String>) -> StreamEnd {
        StreamEnd::Error(cond, why.into())
    }
}

pub struct XmlConn<S> {
    io: S,
    framer: Framer,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> XmlConn<S> {
    pub fn new(io: S, limits: Limits) -> Self {
        XmlConn {
            io,
            framer: Framer::new(limits),
            buf: vec![0; 16 * 1024],
        }
    }

    /// The next event. Cancel-safe: bytes read are fed to the framer before any other await.
    pub async fn next(&mut self) -> Result<Event, StreamEnd> {
        loop {
            if let Some(event) = self.framer.next_event()? {
                return Ok(event);
            }
            let n = self.io.read(&mut self.buf).await?;
            if n == 0 {
                return Err(StreamEnd::Closed);
            }
            self.framer.feed(&self.buf[..n]);
        }
    }

    /// The next top-level element; a close or a header ends the stream.
    pub async fn element(&mut self) -> Result<Element, StreamEnd> {
        match self.next().await? {
            Event::Element(el) => Ok(el),
            Event::Close => Err(StreamEnd::Closed),
            Event::Header(_) => Err(StreamEnd::error(
                StreamErrorCondition::InvalidXml,
                "a second stream header",
            )),
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StreamEnd> {
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Writes `el` into the stream, whose content namespace is `jabber:server`.
    pub async fn send(&mut self, el: &Element) -> Result<(), StreamEnd> {
        self.write(&to_xml(el)).await
    }

    /// A new stream on the same transport (after SASL success): the parser starts over.
    pub fn restart(&mut self) {
        self.framer.reset();
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.framer.set_limits(limits);
    }

    /// The transport, for the TLS handshake: only at a point where the peer waits for it, so
    /// nothing may be buffered (RFC 6120 §5.4.3.3).
    pub fn into_io(self) -> Result<S, StreamEnd> {
        if self.framer.buffered() > 0 {
            return Err(StreamEnd::error(
                StreamErrorCondition::PolicyViolation,
                "data after <starttls/>",
            ));
        }
        Ok(self.io)
    }

    pub fn io(&self) -> &S {
        &self.io
    }

    /// Sends a stream error and closes the stream, best effort.
    pub async fn fail(&mut self, cond: StreamErrorCondition, text: Option<&str>) {
        let mut s = xmppd_stream::stream_error(cond, text);
        s.push_str("</stream:stream>");
        let _ = self.write(s.as_bytes()).await;
        let _ = self.io.shutdown().await;
    }

    /// Closes the stream, best effort.
    pub async fn close(&mut self) {
        let _ = self.write(b"</stream:stream>").await;
        let _ = self.io.shutdown().await;
    }
}

/// The opening of a server-to-server stream, with the dialback namespace declared.
pub fn header(from: &str, to: Option<&str>, id: Option<&str>) -> String {
    let mut s = format!(
        "<?xml version='1.0'?><stream:stream xmlns='{NS_SERVER}' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='{NS_DIALBACK}' \
         version='1.0' from='{}'",
        escape_xml(from)
    );
    if let Some(to) = to {
        s.push_str(&format!(" to='{}'", escape_xml(to)));
    }
    if let Some(id) = id {
        s.push_str(&format!(" id='{}'", escape_xml(id)));
    }
    s.push('>');
    s
}

/// `el` with every element in namespace `from` moved to `to`, from the top down to the first
/// element of another namespace (a payload, which keeps its own, and whatever it carries: a
/// forwarded `jabber:client` message stays one). RFC 6120 §4.8.3: stanzas are `jabber:server`
/// on a server-to-server stream and `jabber:client` inside xmppd.
pub fn renamespace(mut el: Element, from: &str, to: &str) -> Element {
    if !el.has_ns(from) {
        return el;
    }
    let nodes = el.take_nodes();
    let mut out = Element::bare(el.name(), to);
    *out.attrs_mut() = el.attrs().clone();
    for node in nodes {
        match node {
            Node::Element(child) => {
                out.append_child(renamespace(child, from, to));
            }
            Node::Text(text) => out.append_text_node(text),
        }
    }
    out
}

/// `el` as written into a server-to-server stream opened by [`header`]. A dialback element
/// (`jabber:server:dialback`) is written with the `db:` prefix that header declares, as in
/// every example of XEP-0220 (§2.1.1, §2.1.2, §2.4): servers in use recognise `db:result`
/// and `db:verify` by that qualified name and ignore the same element written with a
/// default namespace declaration, so dialback with them would never complete.
fn to_xml(el: &Element) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    if !el.has_ns(NS_DIALBACK) {
        xmppd_stream::serialize(el, NS_SERVER, &mut out);
        return out;
    }
    // Written as if in the stream's namespace, then the prefix goes onto its tags; children
    // (an error's, XEP-0220 §2.4) are `jabber:server` as in the XEP's examples.
    let plain = renamespace(el.clone(), NS_DIALBACK, NS_SERVER);
    let mut body = Vec::with_capacity(256);
    xmppd_stream::serialize(&plain, NS_SERVER, &mut body);
    out.extend_from_slice(b"<db:");
    out.extend_from_slice(&body[1..]);
    if !body.ends_with(b"/>") {
        // The end tag is `</NAME>`.
        out.truncate(out.len() - (el.name().len() + 3));
        out.extend_from_slice(b"</db:");
        out.extend_from_slice(el.name().as_bytes());
        out.push(b'>');
    }
    out
}

/// A random stream id (RFC 6120 §4.7.3: unique and unpredictable; dialback keys depend on it).
pub fn stream_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `XmlConn::send` writes for `xml`.
    async fn written(xml: &str) -> String {
        let el: Element = xml.parse().unwrap();
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let mut conn = XmlConn::new(ours, Limits::DEFAULT);
        conn.send(&el).await.unwrap();
        drop(conn);
        let mut bytes = String::new();
        theirs.read_to_string(&mut bytes).await.unwrap();
        bytes
    }

    #[tokio::test]
    async fn dialback_elements_carry_the_db_prefix() {
        assert_eq!(
            written(
                "<result xmlns='jabber:server:dialback' from='a.example' to='b.example'>k</result>"
            )
            .await,
            "<db:result from='a.example' to='b.example'>k</db:result>"
        );
        assert_eq!(
            written(
                "<verify xmlns='jabber:server:dialback' from='b.example' id='i' \
                 to='a.example' type='valid'/>"
            )
            .await,
            "<db:verify from='b.example' id='i' to='a.example' type='valid'/>"
        );
        assert_eq!(
            written(
                "<result xmlns='jabber:server:dialback' from='b.example' to='a.example' type='error'>\
                 <error xmlns='jabber:server:dialback' type='cancel'>\
                 <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></result>"
            )
            .await,
            "<db:result from='b.example' to='a.example' type='error'><error type='cancel'>\
             <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>"
        );
        // Everything else as before: the stream's namespace is not repeated.
        assert_eq!(
            written("<message xmlns='jabber:server' to='x@b.example'><body>hi</body></message>")
                .await,
            "<message to='x@b.example'><body>hi</body></message>"
        );
    }

    #[test]
    fn stanzas_change_namespace_down_to_their_payloads() {
        let el: Element = "<message xmlns='jabber:server' to='a@b'><body>hi</body>\
            <forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'><body>x</body>\
            </message></forwarded></message>"
            .parse()
            .unwrap();
        let mapped = renamespace(el, "jabber:server", "jabber:client");
        assert!(mapped.has_ns("jabber:client"));
        assert_eq!(mapped.attr("to"), Some("a@b"));
        assert_eq!(
            mapped.get_child("body", "jabber:client").unwrap().text(),
            "hi"
        );
        let fwd = mapped.get_child("forwarded", "urn:xmpp:forward:0").unwrap();
        assert!(fwd.get_child("message", "jabber:client").is_some());
        let back = renamespace(mapped, "jabber:client", "jabber:server");
        assert!(back.get_child("body", "jabber:server").is_some());
        let fwd = back.get_child("forwarded", "urn:xmpp:forward:0").unwrap();
        assert!(fwd.get_child("message", "jabber:client").is_some());
    }
}
