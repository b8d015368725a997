//! The queues of the links, by domain pair: where a stanza for another server waits until its
//! link's task writes it. A link's task owns the receiving end; the map holds the sending end
//! while the link lives, under each pair it carries (an outbound link one, an inbound stream
//! the peer made bidirectional, XEP-0288, each pair it authenticated).

use std::collections::HashMap;

use minidom::Element;
use tokio::sync::mpsc;
use xmppd_core::stanza::Condition;

/// A domain pair: (local domain, remote domain).
pub(crate) type Key = (String, String);

/// Starts the task of a new link `id` taking from the receiver; an error refuses the link
/// (and the stanza that would have opened it).
pub(crate) type Open<'a> = dyn FnMut(u64, mpsc::Receiver<Element>) -> Result<(), Condition> + 'a;

/// The sending end of one link's queue.
struct Link {
    id: u64,
    tx: mpsc::Sender<Element>,
}

#[derive(Default)]
pub(crate) struct Links {
    map: HashMap<Key, Link>,
    next_id: u64,
}

impl Links {
    /// A new link id.
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The link `id` (an inbound stream's) carries `key` too, unless a live link does already;
    /// true if it does.
    pub(crate) fn adopt(&mut self, key: &Key, id: u64, tx: &mpsc::Sender<Element>) -> bool {
        if self.map.get(key).is_some_and(|l| !l.tx.is_closed()) {
            return false;
        }
        let tx = tx.clone();
        self.map.insert(key.clone(), Link { id, tx });
        true
    }

    /// Queues `el` on the link of `key`, opening one (a queue of `capacity`) through `open`
    /// if there is none. A full queue refuses it with `<resource-constraint/>`.
    pub(crate) fn push(
        &mut self,
        key: &Key,
        el: Element,
        capacity: usize,
        open: &mut Open<'_>,
    ) -> Result<(), (Element, Condition)> {
        let mut el = el;
        for _ in 0..2 {
            if !self.map.contains_key(key) {
                let id = self.next_id();
                let (tx, rx) = mpsc::channel(capacity.max(1));
                if let Err(cond) = open(id, rx) {
                    return Err((el, cond));
                }
                self.map.insert(key.clone(), Link { id, tx });
            }
            let Some(link) = self.map.get(key) else {
                break;
            };
            match link.tx.try_send(el) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(back)) => {
                    return Err((back, Condition::ResourceConstraint))
                }
                // Its task ended without taking it out of the map (it panicked): a new one.
                Err(mpsc::error::TrySendError::Closed(back)) => {
                    self.map.remove(key);
                    el = back;
                }
            }
        }
        Err((el, Condition::InternalServerError))
    }

    /// The link `id` of `keys` ends: out of the map (where no newer link took its place), its
    /// queue closed; returns what it still held, in order.
    pub(crate) fn end(
        &mut self,
        keys: &[Key],
        id: u64,
        rx: &mut mpsc::Receiver<Element>,
    ) -> Vec<Element> {
        for key in keys {
            if self.map.get(key).is_some_and(|l| l.id == id) {
                self.map.remove(key);
            }
        }
        rx.close();
        let mut rest = Vec::new();
        while let Ok(el) = rx.try_recv() {
            rest.push(el);
        }
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u32) -> Element {
        xmppd_core::stanza::elem("message", "jabber:client", &[("id", &n.to_string())])
    }

    fn ids(rx: &mut mpsc::Receiver<Element>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(el) = rx.try_recv() {
            out.push(el.attr("id").unwrap().to_owned());
        }
        out
    }

    #[test]
    fn a_replaced_link_hands_on_its_queue_in_order_before_later_stanzas() {
        let key: Key = ("a.example".into(), "b.example".into());
        let mut links = Links::default();
        let opened = std::cell::RefCell::new(Vec::new());
        let mut open = |id, rx| {
            opened.borrow_mut().push((id, rx));
            Ok(())
        };
        for n in 1..=3 {
            links.push(&key, msg(n), 10, &mut open).unwrap();
        }
        let (id1, mut rx1) = opened.borrow_mut().remove(0);
        // The link's task wrote 1, then closed (idle or broken): 2 and 3 go to the next link
        // first, then what is routed afterwards.
        assert_eq!(rx1.try_recv().unwrap().attr("id"), Some("1"));
        let rest = links.end(std::slice::from_ref(&key), id1, &mut rx1);
        for el in rest {
            links.push(&key, el, 10, &mut open).unwrap();
        }
        links.push(&key, msg(4), 10, &mut open).unwrap();
        let (id2, mut rx2) = opened.borrow_mut().remove(0);
        assert_ne!(id1, id2);
        assert_eq!(ids(&mut rx2), ["2", "3", "4"]);
        // A late end of the old link leaves the new one in place.
        assert!(links
            .end(std::slice::from_ref(&key), id1, &mut rx1)
            .is_empty());
        links.push(&key, msg(5), 10, &mut open).unwrap();
        assert_eq!(ids(&mut rx2), ["5"]);
        assert!(opened.borrow().is_empty());
    }

    #[test]
    fn refusals_give_the_stanza_back_with_their_condition() {
        let key: Key = ("a.example".into(), "b.example".into());
        let mut links = Links::default();
        let mut refuse = |_, _| Err(Condition::RemoteServerNotFound);
        let (el, cond) = links.push(&key, msg(1), 10, &mut refuse).unwrap_err();
        assert_eq!(
            (el.attr("id"), cond),
            (Some("1"), Condition::RemoteServerNotFound)
        );
        let kept = std::cell::RefCell::new(Vec::new());
        let mut open = |_, rx| {
            kept.borrow_mut().push(rx);
            Ok(())
        };
        links.push(&key, msg(1), 1, &mut open).unwrap();
        let (el, cond) = links.push(&key, msg(2), 1, &mut open).unwrap_err();
        assert_eq!(
            (el.attr("id"), cond),
            (Some("2"), Condition::ResourceConstraint)
        );
        // A link whose task is gone is replaced.
        kept.borrow_mut().clear();
        links.push(&key, msg(3), 1, &mut open).unwrap();
        assert_eq!(kept.borrow().len(), 1);
    }
}
