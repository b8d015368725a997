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
//!
//! Deliberately not here: stanza semantics (addressing, types, routing), stream features and
//! negotiation, and validation of the stream's content namespace: the header's default namespace
//! is reported in [`StreamHeader::default_ns`] and the caller decides whether it accepts it.

mod framer;
#[doc(hidden)]
pub mod fuzzing;
mod ser;

pub use framer::{Framer, MAX_HEADER_BYTES, MAX_TOKEN_BYTES};
pub use ser::{escape_xml, serialize, serialize_addressed, stream_error, stream_header};

/// RFC 6120 stream namespace.
pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
/// Content namespace of client-to-server streams.
pub const NS_CLIENT: &str = "jabber:client";
/// Content namespace of server-to-server streams.
pub const NS_SERVER: &str = "jabber:server";
/// Namespace of the defined conditions inside `<stream:error/>`.
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
    pub const PRE_AUTH: Limits = Limits {
        max_stanza_bytes: 8 * 1024,
        max_depth: 8,
        max_elements: 64,
        max_attributes: 16,
    };
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
        use StreamErrorCondition::*;
        match self {
            BadFormat => "bad-format",
            BadNamespacePrefix => "bad-namespace-prefix",
            Conflict => "conflict",
            ConnectionTimeout => "connection-timeout",
            HostGone => "host-gone",
            HostUnknown => "host-unknown",
            ImproperAddressing => "improper-addressing",
            InternalServerError => "internal-server-error",
            InvalidFrom => "invalid-from",
            InvalidNamespace => "invalid-namespace",
            InvalidXml => "invalid-xml",
            NotAuthorized => "not-authorized",
            NotWellFormed => "not-well-formed",
            PolicyViolation => "policy-violation",
            RemoteConnectionFailed => "remote-connection-failed",
            Reset => "reset",
            ResourceConstraint => "resource-constraint",
            RestrictedXml => "restricted-xml",
            SeeOtherHost => "see-other-host",
            SystemShutdown => "system-shutdown",
            UndefinedCondition => "undefined-condition",
            UnsupportedEncoding => "unsupported-encoding",
            UnsupportedFeature => "unsupported-feature",
            UnsupportedStanzaType => "unsupported-stanza-type",
            UnsupportedVersion => "unsupported-version",
        }
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
    /// The stream error to send to the peer for this failure.
    pub fn condition(&self) -> StreamErrorCondition {
        match self {
            FramerError::NotWellFormed(_) => StreamErrorCondition::NotWellFormed,
            FramerError::RestrictedXml(_) => StreamErrorCondition::RestrictedXml,
            FramerError::LimitExceeded(_) => StreamErrorCondition::PolicyViolation,
            FramerError::InvalidNamespace(_) => StreamErrorCondition::InvalidNamespace,
            FramerError::BadNamespacePrefix(_) => StreamErrorCondition::BadNamespacePrefix,
        }
    }
}

#[cfg(test)]
mod tests;
