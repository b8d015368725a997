//! The framer's fuzzing oracle, shared by the cargo-fuzz target (`fuzz/`) and by a stable
//! test that replays the committed corpus (`fuzz/corpus/stream_framer/`) in CI.
//!
//! [`check`] takes arbitrary bytes: the first picks the chunk size (0 = everything at once), the
//! rest is the stream. It runs under the pre-authentication and the default limits and panics
//! unless:
//! - every error maps to a stream error condition;
//! - the chunked run yields the events of the one-shot run: exactly, when neither failed; else
//!   one list is a prefix of the other, because the parser may hold back the tail of its input
//!   (e.g. a final CR waiting for LF) and so detect an error only with more data;
//! - every element, serialized and parsed again inside a fresh stream, is equal to itself.

use minidom::Element;

use crate::{
    serialize, stream_error, stream_header, Event, Framer, FramerError, Limits,
    StreamErrorCondition, NS_CLIENT,
};

/// Runs the oracle on one input; panics on a violation.
pub fn check(data: &[u8]) {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let chunk = if first == 0 {
        usize::MAX
    } else {
        usize::from(first)
    };
    for limits in [Limits::PRE_AUTH, Limits::DEFAULT] {
        let whole = run(input, usize::MAX, limits);
        let chunked = run(input, chunk, limits);
        if whole.1.is_none() && chunked.1.is_none() {
            assert_eq!(whole.0, chunked.0, "chunk size {chunk} changed the events");
        } else {
            let n = whole.0.len().min(chunked.0.len());
            assert_eq!(
                whole.0[..n],
                chunked.0[..n],
                "chunk size {chunk} changed the events"
            );
            if let (Some(a), Some(b)) = (whole.1, chunked.1) {
                assert_eq!(a, b, "chunk size {chunk} changed the error");
            }
        }
    }
}

/// Events and the final error condition (if any) of feeding `input` in pieces of `chunk` bytes.
fn run(input: &[u8], chunk: usize, limits: Limits) -> (Vec<Event>, Option<StreamErrorCondition>) {
    let mut framer = Framer::new(limits);
    let mut events = Vec::new();
    let mut default_ns = NS_CLIENT.to_owned();
    for piece in input.chunks(chunk.min(input.len().max(1))) {
        framer.feed(piece);
        loop {
            match framer.next_event() {
                Ok(Some(ev)) => {
                    match &ev {
                        Event::Header(h) => default_ns = h.default_ns.clone().unwrap_or_default(),
                        Event::Element(el) => check_round_trip(el, &default_ns),
                        Event::Close => {}
                    }
                    events.push(ev);
                }
                Ok(None) => break,
                Err(e) => {
                    // The error report itself must be producible for any input.
                    let _ = stream_error(e.condition(), Some(&e.to_string()));
                    return (events, Some(e.condition()));
                }
            }
        }
    }
    (events, None)
}

fn check_round_trip(el: &Element, default_ns: &str) {
    let mut out = stream_header(default_ns, "example.com", None, "id", "en").into_bytes();
    let header_len = out.len();
    serialize(el, default_ns, &mut out);
    // Serializing may add namespace declarations and longer escapes, so the original limits do
    // not apply to the copy.
    let generous = Limits {
        max_stanza_bytes: out.len(),
        max_depth: usize::MAX,
        max_elements: usize::MAX,
        max_attributes: usize::MAX,
    };
    let mut framer = Framer::new(generous);
    framer.feed(&out);
    let text = String::from_utf8_lossy(&out[header_len..]).into_owned();
    match framer.next_event() {
        Ok(Some(Event::Header(_))) => {}
        other => panic!("own header did not parse: {other:?}"),
    }
    match framer.next_event() {
        Ok(Some(Event::Element(copy))) => assert_eq!(&copy, el, "round trip of {text}"),
        // A name or attribute value near the token cap can outgrow it through escaping.
        Err(FramerError::LimitExceeded(_)) => {}
        other => panic!("serialized element did not parse: {other:?} from {text}"),
    }
    assert_eq!(
        framer.buffered(),
        0,
        "serializer wrote more than one element: {text}"
    );
}
