//! What an inactive session's stanzas wait in: one sequence in arrival order, where a sender's
//! newer availability replaces its older one, bounded in stanzas and bytes.

use std::collections::HashMap;
use std::sync::Arc;

use minidom::Element;
use xmppd_core::queue::element_size;
use xmppd_core::QueueLimits;

/// How much one inactive session may hold back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLimits {
    /// Stanzas held at once.
    pub stanzas: usize,
    /// Their estimated serialised size.
    pub bytes: usize,
}

impl HeldLimits {
    /// The limits for sessions whose queue `queue` bounds: what is let go at once, after what
    /// the queue holds already, must not fill it (a full queue closes the session): half its
    /// stanzas, a quarter of its bytes.
    pub fn for_queue(queue: &QueueLimits) -> Self {
        HeldLimits {
            stanzas: queue.stanzas / 2,
            bytes: queue.bytes / 4,
        }
    }
}

impl Default for HeldLimits {
    fn default() -> Self {
        Self::for_queue(&QueueLimits::default())
    }
}

/// The stanzas held for one session.
#[derive(Default)]
pub struct Held {
    /// In arrival order; a replaced presence leaves a gap.
    slots: Vec<Option<(Arc<Element>, usize)>>,
    /// Where each sender's latest availability is in `slots`.
    presence: HashMap<String, usize>,
    live: usize,
    bytes: usize,
}

impl Held {
    /// Holds `stanza`, replacing what `latest_of` held before if given. False, holding nothing,
    /// if that would go past `limits`: then the caller lets everything go.
    pub fn hold(
        &mut self,
        stanza: &Arc<Element>,
        latest_of: Option<String>,
        limits: HeldLimits,
    ) -> bool {
        let size = element_size(stanza);
        let replaced = latest_of
            .as_ref()
            .and_then(|k| self.presence.get(k))
            .and_then(|&i| self.slots[i].as_ref().map(|(_, s)| (i, *s)));
        let (live, bytes) = match replaced {
            Some((_, old)) => (self.live, self.bytes - old + size),
            None => (self.live + 1, self.bytes + size),
        };
        if live > limits.stanzas || bytes > limits.bytes {
            return false;
        }
        if let Some((i, _)) = replaced {
            self.slots[i] = None;
        }
        if let Some(k) = latest_of {
            self.presence.insert(k, self.slots.len());
        }
        self.slots.push(Some((Arc::clone(stanza), size)));
        (self.live, self.bytes) = (live, bytes);
        // Gaps never outnumber what is held, so the sequence stays bounded too.
        if self.slots.len() > 2 * self.live + 16 {
            self.compact();
        }
        true
    }

    fn compact(&mut self) {
        let slots = std::mem::take(&mut self.slots);
        self.slots = slots.into_iter().filter(Option::is_some).collect();
        self.presence.clear();
        for (i, (s, _)) in self.slots.iter().flatten().enumerate() {
            if s.name() == "presence" {
                if let Some(from) = s.attr("from") {
                    self.presence.insert(from.to_owned(), i);
                }
            }
        }
    }

    /// Everything held, in order, leaving this empty.
    pub fn take(&mut self) -> impl Iterator<Item = Arc<Element>> {
        self.presence.clear();
        (self.live, self.bytes) = (0, 0);
        std::mem::take(&mut self.slots)
            .into_iter()
            .flatten()
            .map(|(s, _)| s)
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn len(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pres(from: &str, show: &str) -> Arc<Element> {
        Arc::new(
            format!("<presence xmlns='jabber:client' from='{from}'><show>{show}</show></presence>")
                .parse()
                .unwrap(),
        )
    }

    fn shows(h: &mut Held) -> Vec<String> {
        h.take()
            .map(|s| {
                format!(
                    "{}:{}",
                    s.attr("from").unwrap_or(""),
                    s.get_child("show", "jabber:client")
                        .map(|e| e.text())
                        .unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn the_latest_presence_per_sender_is_kept_in_order() {
        let mut h = Held::default();
        let l = HeldLimits::default();
        for i in 0..50 {
            for who in ["a", "b"] {
                let show = if i % 2 == 0 { "away" } else { "chat" };
                assert!(h.hold(&pres(who, show), Some(who.into()), l));
            }
        }
        assert_eq!(h.len(), 2);
        assert!(h.slots.len() <= 2 * 2 + 16 + 1, "gaps are compacted");
        let chatter: Arc<Element> =
            Arc::new("<message xmlns='jabber:client' from='c'/>".parse().unwrap());
        assert!(h.hold(&chatter, None, l));
        assert!(h.hold(&pres("a", "xa"), Some("a".into()), l));
        assert_eq!(shows(&mut h), ["b:chat", "c:", "a:xa"]);
        assert!(h.is_empty());
    }

    #[test]
    fn holding_stops_at_the_limits() {
        let mut h = Held::default();
        let l = HeldLimits {
            stanzas: 3,
            bytes: 1 << 20,
        };
        for who in ["a", "b", "c"] {
            assert!(h.hold(&pres(who, "away"), Some(who.into()), l));
        }
        assert!(!h.hold(&pres("d", "away"), Some("d".into()), l));
        assert!(
            h.hold(&pres("a", "chat"), Some("a".into()), l),
            "a replacement takes no room"
        );
        assert_eq!(h.len(), 3);
        let small = HeldLimits {
            stanzas: 100,
            bytes: element_size(&pres("a", "away")),
        };
        let mut h = Held::default();
        assert!(h.hold(&pres("a", "away"), Some("a".into()), small));
        assert!(!h.hold(&pres("b", "away"), Some("b".into()), small));
    }
}
