//! Stream management (XEP-0198) on one client stream: the counters, what was sent and not yet
//! acknowledged, and the protocol's elements. No I/O: the session loop (`session.rs`) and the
//! negotiation driver (`negotiate.rs`, for `<resume/>`) feed it and write what it returns.

use std::collections::VecDeque;
use std::time::Duration;

use minidom::Element;
use xmpp_parsers::sm::{self, Nonza, StreamId};
use xmpp_parsers::stanza_error::DefinedCondition;
use xmpp_parsers::stream_error::StreamError;
use xmppd_core::detached::{ResumeId, Takeover};
use xmppd_core::{Class, Outbound};

/// The namespace of stream management, version 3 (XEP-0198 §3).
pub(crate) const NS_SM: &str = "urn:xmpp:sm:3";

/// What the operator allows.
#[derive(Debug, Clone, Copy)]
pub struct SmSettings {
    /// Offered after authentication.
    pub enabled: bool,
    /// How long a session whose connection broke is kept for resumption (XEP-0198 §5).
    pub resume_timeout: Duration,
    /// Stanzas written and not yet acknowledged, at most: beyond it the session writes
    /// nothing more until the client acknowledges (what others send meanwhile waits in the
    /// session's queue, within its bounds).
    pub max_unacked: usize,
    /// Their bytes (serialised size), the same way.
    pub max_unacked_bytes: usize,
}

impl Default for SmSettings {
    fn default() -> Self {
        SmSettings {
            enabled: true,
            resume_timeout: Duration::from_secs(300),
            max_unacked: 1024,
            max_unacked_bytes: 1 << 20,
        }
    }
}

/// A session the client may resume.
pub(crate) struct Resumable {
    pub id: ResumeId,
    /// Tells this connection that a new one resumes the session.
    pub takeover: Takeover,
    /// How long it is kept once the connection broke.
    pub keep: Duration,
}

/// What the core keeps with a parked session for its resumption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counters {
    /// How long the session is kept once its connection broke.
    pub keep: Duration,
    /// Stanzas received from the client and handled (the server's `h`).
    pub handled: u32,
    /// Stanzas sent that the client acknowledged.
    pub acked: u32,
    /// Stanzas sent and not acknowledged, given back in front of the parked session's queue.
    pub unacked: u32,
}

/// Stream management enabled on a stream.
pub(crate) struct Sm {
    /// `None` when the client did not ask for resumption.
    pub resume: Option<Resumable>,
    handled: u32,
    acked: u32,
    /// Written, not acknowledged, oldest first, with their serialised sizes.
    unacked: VecDeque<(Outbound, Class, usize)>,
    unacked_bytes: usize,
    /// An `<r/>` is out and its `<a/>` has not come.
    requested: bool,
}

/// The client acknowledged more than was sent (XEP-0198 §4).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooHigh {
    pub h: u32,
    pub sent: u32,
}

impl TooHigh {
    fn condition(&self) -> sm::HandledCountTooHigh {
        sm::HandledCountTooHigh {
            h: self.h,
            send_count: self.sent,
        }
    }

    /// The `<stream:error/>` that ends the stream: `<undefined-condition/>` with
    /// `<handled-count-too-high/>` beside it (XEP-0198 §4).
    pub fn stream_error(&self) -> Element {
        StreamError::from(self.condition()).into()
    }

    /// The `<failed/>` answering a `<resume/>` with such an `h` (XEP-0198 §5), with the
    /// server's own handled count.
    pub fn failed(&self, handled: u32) -> Element {
        let mut el = failed(DefinedCondition::UndefinedCondition, Some(handled));
        el.append_child(self.condition().into());
        el
    }
}

impl Sm {
    /// Enabled on a fresh session, or resumed with the counters it was parked with (the
    /// client having acknowledged `acked` stanzas by then).
    pub fn new(resume: Option<Resumable>, handled: u32, acked: u32) -> Sm {
        Sm {
            resume,
            handled,
            acked,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            requested: false,
        }
    }

    /// One stanza from the client was handled. Counts modulo 2^32 (XEP-0198 §4).
    pub fn handled_one(&mut self) {
        self.handled = self.handled.wrapping_add(1);
    }

    pub fn handled(&self) -> u32 {
        self.handled
    }

    /// A stanza was written to the client. An offline message is no longer in storage once
    /// written: if it is never acknowledged it is re-routed like any other stanza.
    pub fn sent(&mut self, out: Outbound, class: Class, size: usize) {
        let class = match class {
            Class::Stored => Class::Reply,
            class => class,
        };
        self.unacked_bytes += size;
        self.unacked.push_back((out, class, size));
    }

    /// Stanzas sent so far, modulo 2^32.
    pub fn sent_count(&self) -> u32 {
        self.acked.wrapping_add(self.unacked.len() as u32)
    }

    /// The client's `<a h='…'/>`: what it acknowledges is forgotten.
    pub fn ack(&mut self, h: u32) -> Result<(), TooHigh> {
        self.requested = false;
        let newly = h.wrapping_sub(self.acked) as usize;
        if newly > self.unacked.len() {
            return Err(TooHigh {
                h,
                sent: self.sent_count(),
            });
        }
        for (_, _, size) in self.unacked.drain(..newly) {
            self.unacked_bytes -= size;
        }
        self.acked = h;
        Ok(())
    }

    /// Whether the session must wait for acknowledgements before writing more.
    pub fn full(&self, settings: &SmSettings) -> bool {
        self.unacked.len() >= settings.max_unacked
            || self.unacked_bytes >= settings.max_unacked_bytes
    }

    /// Whether writing `more` stanzas of `more_bytes` on top of what is unacknowledged would
    /// fill what may be held.
    pub fn full_with(&self, settings: &SmSettings, more: usize, more_bytes: usize) -> bool {
        self.unacked.len() + more >= settings.max_unacked
            || self.unacked_bytes + more_bytes >= settings.max_unacked_bytes
    }

    /// Whether to ask for an acknowledgement now: something is unacknowledged (or `pending`
    /// about to be) and no request is out. Marks the request as out.
    pub fn should_request(&mut self, pending: bool) -> bool {
        if (self.unacked.is_empty() && !pending) || self.requested {
            return false;
        }
        self.requested = true;
        true
    }

    /// Marks a request as out whatever is unacknowledged (the liveness check).
    pub fn requested(&mut self) {
        self.requested = true;
    }

    /// What was written and not acknowledged, oldest first, and the counters to resume with.
    pub fn park(&mut self) -> (Vec<(Outbound, Class)>, Counters) {
        let counters = Counters {
            keep: self.resume.as_ref().map_or(Duration::ZERO, |r| r.keep),
            handled: self.handled,
            acked: self.acked,
            unacked: self.unacked.len() as u32,
        };
        self.unacked_bytes = 0;
        let unacked = self.unacked.drain(..).map(|(o, c, _)| (o, c)).collect();
        (unacked, counters)
    }
}

/// A stream management element from the client.
#[derive(Debug, PartialEq)]
pub(crate) enum Request {
    Enable {
        resume: bool,
        max: Option<u32>,
    },
    Resume {
        previd: String,
        h: u32,
    },
    Ack(u32),
    Req,
    /// Not one a client sends, or malformed.
    Bad,
}

/// Reads `el` (in [`NS_SM`]).
pub(crate) fn parse(el: Element) -> Request {
    match Nonza::try_from(el) {
        Ok(Nonza::Enable(e)) => Request::Enable {
            resume: e.resume,
            max: e.max,
        },
        Ok(Nonza::Resume(r)) => Request::Resume {
            previd: r.previd.0,
            h: r.h,
        },
        Ok(Nonza::Ack(a)) => Request::Ack(a.h),
        Ok(Nonza::Req(_)) => Request::Req,
        _ => Request::Bad,
    }
}

/// Stream management enabled on `session` at the client's request (XEP-0198 §3), from the
/// session loop or inline in Bind2 (XEP-0386 §2.3); with the `<enabled/>` to answer.
pub(crate) fn enable(
    server: &xmppd_core::Server,
    session: &xmppd_core::ClientSession,
    settings: &SmSettings,
    resume: bool,
    max: Option<u32>,
) -> (Sm, Element) {
    // The client's preferred time, if shorter than ours (XEP-0198 §5).
    let mut keep = settings.resume_timeout;
    if let Some(max) = max.filter(|m| *m > 0) {
        keep = keep.min(Duration::from_secs(max.into()));
    }
    let resume = resume.then(|| {
        let (id, takeover) = server.resumable(session);
        Resumable { id, takeover, keep }
    });
    let answer = enabled(resume.as_ref().map(|r| &r.id), keep);
    tracing::debug!(jid = %session.jid, resumable = resume.is_some(), "stream management enabled");
    (Sm::new(resume, 0, 0), answer)
}

/// `<enabled/>`: with the id and the time the session is kept when resumption was asked for.
pub(crate) fn enabled(id: Option<&ResumeId>, max: Duration) -> Element {
    sm::Enabled {
        id: id.map(|id| StreamId(id.as_str().to_owned())),
        location: None,
        max: id.map(|_| u32::try_from(max.as_secs()).unwrap_or(u32::MAX)),
        resume: id.is_some(),
    }
    .into()
}

/// `<failed/>` with `condition` and, when known, the server's handled count (XEP-0198 §5).
pub(crate) fn failed(condition: DefinedCondition, h: Option<u32>) -> Element {
    sm::Failed {
        h,
        error: Some(condition),
    }
    .into()
}

pub(crate) fn resumed(previd: &str, h: u32) -> Element {
    sm::Resumed {
        h,
        previd: StreamId(previd.to_owned()),
    }
    .into()
}

pub(crate) fn ack(h: u32) -> Element {
    sm::A::new(h).into()
}

pub(crate) fn request() -> Element {
    sm::R.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn stanza(n: usize) -> Outbound {
        let mut el = Element::bare("message", xmppd_stream::NS_CLIENT);
        xmppd_core::stanza::set_attr(&mut el, "id", n.to_string());
        Outbound::Stanza(Arc::new(el))
    }

    fn ids(v: &[(Outbound, Class)]) -> Vec<String> {
        let id = |o: &Outbound| o.to_element().unwrap().attr("id").unwrap().to_owned();
        v.iter().map(|(o, _)| id(o)).collect()
    }

    #[test]
    fn acknowledged_stanzas_are_forgotten_and_the_rest_kept_in_order() {
        let mut sm = Sm::new(None, 0, 0);
        for n in 0..5 {
            sm.sent(stanza(n), Class::Push, 10);
        }
        assert_eq!(sm.sent_count(), 5);
        sm.ack(2).unwrap();
        // An old or repeated acknowledgement acknowledges nothing more.
        sm.ack(2).unwrap();
        let (unacked, counters) = sm.park();
        assert_eq!(ids(&unacked), ["2", "3", "4"]);
        assert_eq!(
            counters,
            Counters {
                keep: Duration::ZERO,
                handled: 0,
                acked: 2,
                unacked: 3
            }
        );
    }

    #[test]
    fn an_acknowledgement_beyond_what_was_sent_is_refused() {
        let mut sm = Sm::new(None, 0, 0);
        sm.sent(stanza(0), Class::Push, 10);
        assert_eq!(sm.ack(2), Err(TooHigh { h: 2, sent: 1 }));
        // Nothing was forgotten.
        assert_eq!(sm.park().0.len(), 1);
    }

    #[test]
    fn a_handled_count_too_high_is_named_with_both_counts() {
        let text = |e: Element| {
            let mut out = Vec::new();
            xmppd_stream::serialize(&e, xmppd_stream::NS_CLIENT, &mut out);
            String::from_utf8(out).unwrap()
        };
        let too_high = TooHigh { h: 10, sent: 8 };
        let error = text(too_high.stream_error());
        assert!(error.starts_with("<stream:error>"), "{error}");
        for part in [
            "<undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>",
            "<handled-count-too-high xmlns='urn:xmpp:sm:3' h='10' send-count='8'/>",
        ] {
            assert!(error.contains(part), "{error}");
        }
        let failed = text(too_high.failed(3));
        for part in [
            "<failed xmlns='urn:xmpp:sm:3' h='3'>",
            "<undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>",
            "<handled-count-too-high h='10' send-count='8'/>",
        ] {
            assert!(failed.contains(part), "{failed}");
        }
    }

    #[test]
    fn counters_wrap_at_two_to_the_32() {
        let mut sm = Sm::new(None, u32::MAX, u32::MAX - 1);
        sm.handled_one();
        assert_eq!(sm.handled(), 0);
        for n in 0..3 {
            sm.sent(stanza(n), Class::Push, 1);
        }
        assert_eq!(sm.sent_count(), 1);
        sm.ack(0).unwrap();
        assert_eq!(ids(&sm.park().0), ["2"]);
        let mut sm = Sm::new(None, 0, u32::MAX);
        sm.sent(stanza(0), Class::Push, 1);
        assert_eq!(sm.ack(1), Err(TooHigh { h: 1, sent: 0 }));
    }

    #[test]
    fn written_offline_messages_are_re_routed_if_never_acknowledged() {
        let mut sm = Sm::new(None, 0, 0);
        sm.sent(stanza(0), Class::Stored, 1);
        assert_eq!(sm.park().0[0].1, Class::Reply);
    }

    #[test]
    fn one_request_at_a_time_and_a_bound_on_what_is_held() {
        let settings = SmSettings {
            max_unacked: 2,
            max_unacked_bytes: 100,
            ..SmSettings::default()
        };
        let mut sm = Sm::new(None, 0, 0);
        assert!(!sm.should_request(false), "nothing to acknowledge");
        sm.sent(stanza(0), Class::Push, 10);
        assert!(sm.should_request(false));
        assert!(!sm.should_request(true), "one is out");
        assert!(!sm.full(&settings));
        sm.sent(stanza(1), Class::Push, 10);
        assert!(sm.full(&settings));
        sm.ack(2).unwrap();
        assert!(!sm.full(&settings));
        sm.sent(stanza(2), Class::Push, 100);
        assert!(sm.full(&settings), "bytes count too");
        assert!(sm.full_with(&settings, 0, 0));
        assert!(sm.should_request(false), "the answer cleared the request");
        sm.ack(3).unwrap();
        assert!(!sm.full_with(&settings, 1, 99));
        assert!(sm.full_with(&settings, 2, 0));
    }

    #[test]
    fn elements_are_read_and_written() {
        let el = |s: &str| s.parse::<Element>().unwrap();
        assert_eq!(
            parse(el("<enable xmlns='urn:xmpp:sm:3' resume='true' max='60'/>")),
            Request::Enable {
                resume: true,
                max: Some(60)
            }
        );
        assert_eq!(
            parse(el(
                "<resume xmlns='urn:xmpp:sm:3' previd='x' h='4294967295'/>"
            )),
            Request::Resume {
                previd: "x".into(),
                h: u32::MAX
            }
        );
        assert_eq!(
            parse(el("<a xmlns='urn:xmpp:sm:3' h='7'/>")),
            Request::Ack(7)
        );
        assert_eq!(parse(el("<r xmlns='urn:xmpp:sm:3'/>")), Request::Req);
        assert_eq!(
            parse(el("<a xmlns='urn:xmpp:sm:3' h='4294967296'/>")),
            Request::Bad
        );
        assert_eq!(parse(el("<enabled xmlns='urn:xmpp:sm:3'/>")), Request::Bad);

        let text = |e: Element| {
            let mut out = Vec::new();
            xmppd_stream::serialize(&e, xmppd_stream::NS_CLIENT, &mut out);
            String::from_utf8(out).unwrap()
        };
        let id = ResumeId::from("abc");
        let on = text(enabled(Some(&id), Duration::from_secs(300)));
        for part in ["id='abc'", "resume='true'", "max='300'", "urn:xmpp:sm:3"] {
            assert!(on.contains(part), "{on}");
        }
        let off = text(enabled(None, Duration::from_secs(300)));
        assert!(
            !off.contains("resume='true'") && !off.contains("id="),
            "{off}"
        );
        let f = text(failed(DefinedCondition::ItemNotFound, Some(3)));
        assert!(f.contains("h='3'") && f.contains("<item-not-found"), "{f}");
        assert!(text(resumed("abc", 9)).contains("h='9'"));
    }
}
