//! The incremental parser: bytes in, [`Event`]s out.
//!
//! Built on rxml's raw (prefix-level) push parser rather than its namespace-resolving one,
//! because the framer needs what the resolver hides: the namespace declarations of the stream
//! header (for [`StreamHeader::default_ns`]), the prefix of the root element (for
//! `bad-namespace-prefix`), and one event per attribute so that attribute limits bite while the
//! start tag is still arriving. Namespace resolution and its well-formedness checks (undeclared
//! prefixes, duplicate attributes) are therefore done here.
//!
//! Not done here: anything that needs to know what a stanza means.

use minidom::Element;
use rxml::error::EndOrError;
use rxml::parser::CommentMode;
use rxml::{
    AttrMap, Namespace, NcName, Options, Parse, RawEvent, RawParser, RawQName, WithOptions,
};

use crate::{Event, FramerError, Limits, StreamHeader, NS_STREAM};

/// Largest accepted `<?xml?>` declaration plus `<stream:stream ...>` start tag. Three maximal
/// JIDs fit; anything larger is an attack, not a header.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Largest single name or attribute value (text is split into pieces of at most this size).
/// rxml preallocates a scratch buffer of this size per parser, so it is a per-connection cost.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Where in the stream the framer is.
#[derive(Debug)]
enum Phase {
    /// Before the root start tag has been completed.
    Prolog,
    /// Inside `<stream:stream>`.
    Open,
    /// `</stream:stream>` was received; only trailing whitespace is acceptable.
    Closed,
    /// A fatal error occurred; it is repeated on every call.
    Failed(FramerError),
}

/// A start tag whose attributes are still arriving.
#[derive(Debug)]
struct PendingStart {
    name: RawQName,
    attributes: usize,
}

/// Incremental framer of one XML stream.
///
/// Memory held is bounded by the active [`Limits`] (plus [`MAX_HEADER_BYTES`] and
/// [`MAX_TOKEN_BYTES`]) and by whatever the caller fed but has not yet drained with
/// [`Framer::next_event`]: input is only handed to the XML parser in slices that cannot overrun
/// the remaining byte budget of the current top-level element.
pub struct Framer {
    parser: RawParser,
    /// Limits for the next top-level element.
    limits: Limits,
    /// Limits of the top-level element being parsed.
    active: Limits,
    phase: Phase,
    /// The first bytes of the stream, to tell `<?xml-foo?>` from a broken XML declaration.
    head: [u8; 6],
    /// Input fed but not yet handed to the parser is `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    /// Bytes fed since the last reset.
    fed: u64,
    /// Bytes handed to (and consumed by) the parser.
    consumed: u64,
    /// Bytes the parser has accounted to the raw events it emitted.
    attributed: u64,
    /// Bytes that ended up in a returned [`Event`] or were discarded (inter-stanza whitespace).
    done: u64,
    /// Raw-event bytes of the XML declaration and root start tag so far.
    header_bytes: usize,
    /// Raw-event bytes of the current top-level element so far (0 between elements).
    stanza_bytes: usize,
    in_stanza: bool,
    /// Elements opened in the current top-level element.
    elements: usize,
    /// Open elements, the stream root included.
    depth: usize,
    pending: Option<PendingStart>,
    /// Non-declaration attributes of the pending start tag (kept to reuse its allocation).
    pending_attrs: Vec<(RawQName, String)>,
    /// In-scope namespace declarations, innermost last; `None` is the default namespace.
    ns_decls: Vec<(Option<NcName>, Namespace<'static>)>,
    /// For each open element, where its declarations start in `ns_decls`.
    frames: Vec<usize>,
    /// Open elements of the current top-level element.
    stack: Vec<Element>,
}

impl Framer {
    /// A framer at the start of a stream, expecting an optional XML declaration and the header.
    pub fn new(limits: Limits) -> Self {
        Framer {
            parser: new_parser(),
            limits,
            active: limits,
            phase: Phase::Prolog,
            head: [0; 6],
            buf: Vec::new(),
            pos: 0,
            fed: 0,
            consumed: 0,
            attributed: 0,
            done: 0,
            header_bytes: 0,
            stanza_bytes: 0,
            in_stanza: false,
            elements: 0,
            depth: 0,
            pending: None,
            pending_attrs: Vec::new(),
            ns_decls: Vec::new(),
            frames: Vec::new(),
            stack: Vec::new(),
        }
    }

    /// Changes the limits (e.g. after authentication); applies from the next top-level element.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Starts a new stream (after STARTTLS or SASL success): forgets all parser state and buffered
    /// input.
    pub fn reset(&mut self) {
        *self = Framer::new(self.limits);
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        if matches!(self.phase, Phase::Failed(_)) || data.is_empty() {
            return;
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if let Some(free) = self
            .head
            .get_mut(usize::try_from(self.fed).unwrap_or(usize::MAX)..)
        {
            let n = free.len().min(data.len());
            free[..n].copy_from_slice(&data[..n]);
        }
        self.buf.extend_from_slice(data);
        self.fed += data.len() as u64;
    }

    /// Frees what the framer holds for input it has no more of: the spent input buffer and
    /// the XML parser's token scratch space (rxml reserves [`MAX_TOKEN_BYTES`] for it). Called
    /// when the connection has nothing more to read, or has read nothing for a while, so that
    /// an idle stream holds neither; both grow back with the next input (two allocations, so
    /// not after every read of a busy stream). What is fed but not parsed yet, and a partial
    /// token, are kept. The small vectors of the element being built keep their capacity.
    pub fn release_idle(&mut self) {
        if self.pos == self.buf.len() && self.buf.capacity() > 0 {
            self.buf = Vec::new();
            self.pos = 0;
        }
        self.parser.release_temporaries();
    }

    /// Bytes fed but not yet consumed into an event (STARTTLS requires 0 at `<proceed/>`).
    ///
    /// This includes bytes the XML parser has read but not turned into a complete event yet,
    /// such as the start of a stanza. Whitespace between stanzas counts as consumed once seen.
    pub fn buffered(&self) -> usize {
        usize::try_from(self.fed.saturating_sub(self.done)).unwrap_or(usize::MAX)
    }

    /// The next complete event, `Ok(None)` when more input is needed. After an `Err` the stream is
    /// dead.
    pub fn next_event(&mut self) -> Result<Option<Event>, FramerError> {
        if let Phase::Failed(e) = &self.phase {
            return Err(e.clone());
        }
        match self.pump() {
            Ok(ev) => Ok(ev),
            Err(mut e) => {
                // rxml takes `<?xml` as the start of the declaration and then trips over the
                // rest of a processing instruction like `<?xml-stylesheet`.
                let pi = self.head.starts_with(b"<?xml") && !self.head[5].is_ascii_whitespace();
                if matches!(self.phase, Phase::Prolog) && self.fed >= 6 && pi {
                    e = FramerError::RestrictedXml("processing instruction".into());
                }
                self.phase = Phase::Failed(e.clone());
                self.buf = Vec::new();
                self.pos = 0;
                self.stack = Vec::new();
                Err(e)
            }
        }
    }

    /// Drives the parser until it yields one [`Event`] or has consumed all input.
    fn pump(&mut self) -> Result<Option<Event>, FramerError> {
        loop {
            let avail = self.buf.len() - self.pos;
            // One byte over budget lets the parser prove the overrun without reading further.
            let take = avail.min(self.budget().saturating_add(1));
            let mut slice = &self.buf[self.pos..self.pos + take];
            let result = self.parser.parse(&mut slice, false);
            let used = take - slice.len();
            self.pos += used;
            self.consumed += used as u64;
            // Before the event moves bytes from `in_parser` to the element: checking after it
            // would let a complete but oversized element through.
            self.check_budget()?;
            let event = match result {
                Ok(Some(raw)) => {
                    self.attributed += raw.metrics().len() as u64;
                    self.handle(raw)?
                }
                // Only reported at end of input, which the framer never claims.
                Ok(None) => return Ok(None),
                Err(EndOrError::NeedMoreData) => {
                    if self.pos == self.buf.len() {
                        self.release_input();
                        return Ok(None);
                    }
                    continue;
                }
                Err(EndOrError::Error(e)) => return Err(map_rxml_error(e)),
            };
            if event.is_some() {
                return Ok(event);
            }
        }
    }

    /// Memory held for fed input, for tests of the memory bound.
    #[cfg(test)]
    pub(crate) fn input_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Bytes the parser has read but not yet accounted to an event.
    fn in_parser(&self) -> usize {
        usize::try_from(self.consumed.saturating_sub(self.attributed)).unwrap_or(usize::MAX)
    }

    /// The byte cap for what is currently being parsed, and how much of it is used.
    fn cap_and_used(&self) -> Option<(usize, usize, &'static str)> {
        match self.phase {
            Phase::Prolog => Some((
                MAX_HEADER_BYTES,
                self.header_bytes,
                "stream header too large",
            )),
            Phase::Open if self.in_stanza => Some((
                self.active.max_stanza_bytes,
                self.stanza_bytes,
                "stanza too large",
            )),
            Phase::Open => Some((self.limits.max_stanza_bytes, 0, "stanza too large")),
            Phase::Closed | Phase::Failed(_) => None,
        }
    }

    fn budget(&self) -> usize {
        match self.cap_and_used() {
            Some((cap, used, _)) => cap.saturating_sub(used.saturating_add(self.in_parser())),
            // After the close only whitespace is accepted, which the parser does not store.
            None => MAX_TOKEN_BYTES,
        }
    }

    fn check_budget(&self) -> Result<(), FramerError> {
        if let Some((cap, used, what)) = self.cap_and_used() {
            if used.saturating_add(self.in_parser()) > cap {
                return Err(FramerError::LimitExceeded(format!(
                    "{what} (limit {cap} bytes)"
                )));
            }
        }
        Ok(())
    }

    /// Drops the spent input buffer so one large read does not pin its memory.
    fn release_input(&mut self) {
        self.buf.clear();
        self.pos = 0;
        if self.buf.capacity() > 64 * 1024 {
            self.buf = Vec::new();
        }
    }

    fn account(&mut self, len: usize) {
        if matches!(self.phase, Phase::Prolog) {
            self.header_bytes += len;
        } else if self.in_stanza {
            self.stanza_bytes += len;
        } else {
            self.done += len as u64;
        }
    }

    fn handle(&mut self, raw: RawEvent) -> Result<Option<Event>, FramerError> {
        let len = raw.metrics().len();
        match raw {
            RawEvent::XmlDeclaration(..) => {
                self.account(len);
                Ok(None)
            }
            RawEvent::ElementHeadOpen(_, name) => {
                if self.depth == 1 {
                    self.active = self.limits;
                    self.in_stanza = true;
                    self.stanza_bytes = 0;
                    self.elements = 0;
                }
                self.account(len);
                if self.in_stanza {
                    self.elements += 1;
                    if self.elements > self.active.max_elements {
                        return Err(FramerError::LimitExceeded(format!(
                            "more than {} elements in one stanza",
                            self.active.max_elements
                        )));
                    }
                    // `depth` still counts the root but not this element: it is this element's
                    // depth within the stanza.
                    if self.depth > self.active.max_depth {
                        return Err(FramerError::LimitExceeded(format!(
                            "stanza nested deeper than {}",
                            self.active.max_depth
                        )));
                    }
                }
                self.frames.push(self.ns_decls.len());
                self.pending = Some(PendingStart {
                    name,
                    attributes: 0,
                });
                Ok(None)
            }
            RawEvent::Attribute(_, name, value) => {
                self.account(len);
                self.attribute(name, value)?;
                Ok(None)
            }
            RawEvent::ElementHeadClose(_) => {
                self.account(len);
                self.start_tag_done()
            }
            RawEvent::ElementFoot(_) => {
                self.account(len);
                self.end_tag()
            }
            RawEvent::Text(_, text) => {
                self.account(len);
                // Text outside stanzas (whitespace keepalives) carries nothing.
                if let Some(top) = self.stack.last_mut() {
                    top.append_text(text);
                }
                Ok(None)
            }
        }
    }

    fn attribute(&mut self, name: RawQName, value: String) -> Result<(), FramerError> {
        let max = if self.in_stanza {
            self.active.max_attributes
        } else {
            self.limits.max_attributes
        };
        let Some(pending) = self.pending.as_mut() else {
            return Err(FramerError::NotWellFormed(
                "attribute outside a start tag".into(),
            ));
        };
        pending.attributes += 1;
        if pending.attributes > max {
            return Err(FramerError::LimitExceeded(format!(
                "more than {max} attributes"
            )));
        }
        let declared = match (&name.0, &name.1) {
            (None, local) if local.as_str() == "xmlns" => Some(None),
            (Some(prefix), local) if prefix.as_str() == "xmlns" => Some(Some(local.clone())),
            _ => None,
        };
        let Some(prefix) = declared else {
            self.pending_attrs.push((name, value));
            return Ok(());
        };
        let frame = self.frames.last().copied().unwrap_or(0);
        if self.ns_decls[frame..].iter().any(|(p, _)| *p == prefix) {
            return Err(FramerError::NotWellFormed(
                "duplicate namespace declaration".into(),
            ));
        }
        let ns = Namespace::try_share_static(&value).unwrap_or_else(|| Namespace::from(value));
        self.ns_decls.push((prefix, ns));
        Ok(())
    }

    /// The namespace bound to `prefix` (`None`: the default namespace) at the current point.
    fn lookup(&self, prefix: Option<&NcName>) -> Option<Namespace<'static>> {
        if prefix.is_some_and(|p| p.as_str() == "xml") {
            return Some(Namespace::XML);
        }
        for (declared, ns) in self.ns_decls.iter().rev() {
            if declared.as_ref() == prefix {
                return Some(ns.clone());
            }
        }
        // No default namespace declaration in scope means "no namespace".
        prefix.is_none().then_some(Namespace::NONE)
    }

    fn start_tag_done(&mut self) -> Result<Option<Event>, FramerError> {
        let Some(PendingStart {
            name: (prefix, local),
            ..
        }) = self.pending.take()
        else {
            return Err(FramerError::NotWellFormed(
                "start tag end without a start".into(),
            ));
        };
        let ns = self.lookup(prefix.as_ref()).ok_or_else(|| {
            FramerError::BadNamespacePrefix(format!("undeclared prefix on <{local}>"))
        })?;
        let mut raw_attrs = std::mem::take(&mut self.pending_attrs);
        let mut attrs = AttrMap::new();
        for (name, value) in raw_attrs.drain(..) {
            let attr_ns = match &name.0 {
                None => Namespace::NONE,
                Some(p) => self.lookup(Some(p)).ok_or_else(|| {
                    FramerError::BadNamespacePrefix(format!("undeclared prefix on @{}", name.1))
                })?,
            };
            if attrs.insert(attr_ns, name.1, value).is_some() {
                return Err(FramerError::NotWellFormed(format!(
                    "duplicate attribute on <{local}>"
                )));
            }
        }
        self.pending_attrs = raw_attrs;
        self.depth += 1;
        if self.depth == 1 {
            return self.stream_opened(prefix, local, ns, attrs).map(Some);
        }
        let mut el = Element::bare(local.as_str(), ns.as_str());
        *el.attrs_mut() = attrs;
        self.stack.push(el);
        Ok(None)
    }

    fn stream_opened(
        &mut self,
        prefix: Option<NcName>,
        local: NcName,
        ns: Namespace<'static>,
        mut attrs: AttrMap,
    ) -> Result<Event, FramerError> {
        if ns != NS_STREAM {
            return Err(FramerError::InvalidNamespace(format!(
                "stream root in namespace '{}'",
                ns.as_str()
            )));
        }
        if local.as_str() != "stream" {
            return Err(FramerError::NotWellFormed(format!(
                "root element <{local}>"
            )));
        }
        if prefix.is_none() {
            return Err(FramerError::BadNamespacePrefix(
                "unprefixed stream root".into(),
            ));
        }
        let mut take = |ns: &Namespace<'static>, name: &str| attrs.remove(ns, name);
        let header = StreamHeader {
            to: take(&Namespace::NONE, "to"),
            from: take(&Namespace::NONE, "from"),
            id: take(&Namespace::NONE, "id"),
            version: take(&Namespace::NONE, "version"),
            lang: take(&Namespace::XML, "lang"),
            default_ns: self
                .lookup(None)
                .filter(|ns| !ns.is_empty())
                .map(|ns| ns.to_string()),
        };
        self.phase = Phase::Open;
        self.done += self.header_bytes as u64;
        self.header_bytes = 0;
        Ok(Event::Header(header))
    }

    fn end_tag(&mut self) -> Result<Option<Event>, FramerError> {
        if let Some(start) = self.frames.pop() {
            self.ns_decls.truncate(start);
        }
        self.depth = self.depth.saturating_sub(1);
        if self.depth == 0 {
            self.phase = Phase::Closed;
            return Ok(Some(Event::Close));
        }
        let Some(el) = self.stack.pop() else {
            return Err(FramerError::NotWellFormed("end tag without a start".into()));
        };
        match self.stack.last_mut() {
            Some(parent) => {
                parent.append_child(el);
                Ok(None)
            }
            None => {
                self.in_stanza = false;
                self.done += self.stanza_bytes as u64;
                self.stanza_bytes = 0;
                Ok(Some(Event::Element(el)))
            }
        }
    }
}

fn new_parser() -> RawParser {
    let opts = Options {
        max_token_length: MAX_TOKEN_BYTES,
        context: None,
        comments: CommentMode::Reject,
    };
    let mut parser = <RawParser as WithOptions>::with_options(opts);
    // Text is handed out as soon as it is read, so inter-stanza whitespace never lingers in the
    // parser (and in `buffered()`) waiting for the next `<`.
    parser.set_text_buffering(false);
    parser
}

/// Sorts rxml's errors into the RFC 6120 conditions.
fn map_rxml_error(e: rxml::Error) -> FramerError {
    use rxml::Error as E;
    match e {
        E::RestrictedXml("long name or reference") | E::RestrictedXml("event too long") => {
            FramerError::LimitExceeded(e.to_string())
        }
        E::RestrictedXml(_) => FramerError::RestrictedXml(e.to_string()),
        // `<!` followed by anything but a comment or CDATA start: DOCTYPE, ENTITY, ELEMENT...
        E::InvalidSyntax("malformed cdata or comment section start") => {
            FramerError::RestrictedXml("DTD or markup declaration".into())
        }
        // Only the five predefined entities exist; anything else would need a DTD.
        E::UndeclaredEntity => FramerError::RestrictedXml("undeclared entity reference".into()),
        E::UndeclaredNamespacePrefix(_) => FramerError::BadNamespacePrefix(e.to_string()),
        _ => FramerError::NotWellFormed(e.to_string()),
    }
}
