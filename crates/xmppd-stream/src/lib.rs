//! Sans-IO XMPP stream framing for xmppd (RFC 6120 §4, §11).
//!
//! Bytes go in with [`Framer::feed`]; [`Framer::next_event`] hands out the stream header, each
//! top-level element (a stanza or nonza) as a `minidom::Element`, and the stream close. The
//! result is identical for any chunking of the input. Restricted XML is enforced (no DOCTYPE,
//! entity declarations, comments or processing instructions), and so are [`Limits`]: size of one
//! top-level element, nesting depth, element count and attribute count, tight before
//! authentication and looser after it.
//!
//! The other direction: [`serialize`] writes an element, [`stream_header`] opens a stream and
//! [`stream_error`] builds `<stream:error/>`.
//!
//! Architecture invariant: no I/O, no tokio, no clock. This is the fuzzing surface.

/// RFC 6120 stream namespace.
pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
pub const NS_CLIENT: &str = "jabber:client";
pub const NS_SERVER: &str = "jabber:server";
pub const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";

/// Caps on what one peer may make the framer hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one top-level element, from its `<` to its end.
    pub max_stanza_bytes: usize,
    /// Nesting depth inside a top-level element (the element itself is depth 1).
    pub max_depth: usize,
    /// Elements inside one top-level element (itself included).
    pub max_elements: usize,
    /// Attributes on one element.
    pub max_attributes: usize,
}

impl Limits {
    /// Before authentication: a few KiB is all SASL and STARTTLS need.
    pub const PRE_AUTH: Limits =
        Limits { max_stanza_bytes: 8 * 1024, max_depth: 8, max_elements: 64, max_attributes: 16 };
    /// After authentication, the default (256 KiB stanzas).
    pub const DEFAULT: Limits = Limits {
        max_stanza_bytes: 256 * 1024,
        max_depth: 32,
        max_elements: 8192,
        max_attributes: 64,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// The opening `<stream:stream>` as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamHeader {
    pub to: Option<String>,
    pub from: Option<String>,
    pub id: Option<String>,
    pub version: Option<String>,
    pub lang: Option<String>,
    /// The default namespace declared on the header (`jabber:client` for c2s).
    pub default_ns: Option<String>,
}

/// What the framer produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Header(StreamHeader),
    Element(minidom::Element),
    /// `</stream:stream>` was received.
    Close,
}

/// RFC 6120 §4.9.3 stream error conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamErrorCondition {
    BadFormat,
    BadNamespacePrefix,
    Conflict,
    ConnectionTimeout,
    HostGone,
    HostUnknown,
    ImproperAddressing,
    InternalServerError,
    InvalidFrom,
    InvalidNamespace,
    InvalidXml,
    NotAuthorized,
    NotWellFormed,
    PolicyViolation,
    RemoteConnectionFailed,
    Reset,
    ResourceConstraint,
    RestrictedXml,
    SeeOtherHost,
    SystemShutdown,
    UndefinedCondition,
    UnsupportedEncoding,
    UnsupportedFeature,
    UnsupportedStanzaType,
    UnsupportedVersion,
}

impl StreamErrorCondition {
    /// The element name, e.g. `"not-well-formed"`.
    pub fn as_str(self) -> &'static str {
        todo!()
    }
}

/// Why the framer stopped. Every variant maps to the stream error to send before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramerError {
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
    #[error("restricted XML: {0}")]
    RestrictedXml(String),
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("invalid namespace: {0}")]
    InvalidNamespace(String),
    #[error("bad namespace prefix: {0}")]
    BadNamespacePrefix(String),
}

impl FramerError {
    pub fn condition(&self) -> StreamErrorCondition {
        todo!()
    }
}

/// Incremental framer of one XML stream.
pub struct Framer {
    _private: (),
}

impl Framer {
    pub fn new(limits: Limits) -> Self {
        let _ = limits;
        todo!()
    }
    /// Changes the limits (e.g. after authentication); applies from the next top-level element.
    pub fn set_limits(&mut self, limits: Limits) {
        let _ = limits;
        todo!()
    }
    /// Starts a new stream (after STARTTLS or SASL success): forgets all parser state and buffered input.
    pub fn reset(&mut self) {
        todo!()
    }
    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        let _ = data;
        todo!()
    }
    /// Bytes fed but not yet consumed into an event (STARTTLS requires 0 at `<proceed/>`).
    pub fn buffered(&self) -> usize {
        todo!()
    }
    /// The next complete event, `Ok(None)` when more input is needed. After an `Err` the stream is dead.
    pub fn next_event(&mut self) -> Result<Option<Event>, FramerError> {
        todo!()
    }
}

/// Appends `el` as XML to `out`. Elements in `default_ns` are written without repeating it.
pub fn serialize(el: &minidom::Element, default_ns: &str, out: &mut Vec<u8>) {
    let _ = (el, default_ns, out);
    todo!()
}

/// `<?xml version='1.0'?><stream:stream ...>` for the responding side.
pub fn stream_header(default_ns: &str, from: &str, to: Option<&str>, id: &str, lang: &str) -> String {
    let _ = (default_ns, from, to, id, lang);
    todo!()
}

/// `<stream:error><condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>[<text/>]</stream:error>`.
pub fn stream_error(cond: StreamErrorCondition, text: Option<&str>) -> String {
    let _ = (cond, text);
    todo!()
}
