//! Messages to the room: groupchat to all occupants (XEP-0045 §7.4) with the per-occupant rate
//! limit, the subject (§8.1), and private messages between occupants (§7.5). Invitations,
//! declines and voice requests also arrive as messages and are passed on from here.

use std::sync::Arc;

use jid::{BareJid, FullJid};
use minidom::Element;
use xmppd_core::stanza::{self, set_attr, Condition, StanzaError, NS_CLIENT};

use super::{Broadcast, Outcome, Role, Room, NS_MUC_USER};
use crate::archive::{HistoryEntry, RetractRequest, NS_RETRACT, NS_SID};
use crate::form::{Form, FORM_REQUEST};
use crate::occupant_id::NS_OCCUPANT_ID;

impl Room {
    pub(super) fn on_message(
        &mut self,
        from: &FullJid,
        nick: Option<String>,
        m: &Element,
        o: &mut Outcome,
        now_ms: i64,
    ) -> Result<(), StanzaError> {
        let kind = m.attr("type").unwrap_or("normal");
        if kind == "error" {
            self.on_error(from, m, o);
            return Ok(());
        }
        if let Some(target) = nick {
            return self.private_message(from, &target, m, o);
        }
        if let Some(x) = m.get_child("x", NS_MUC_USER) {
            if x.get_child("invite", NS_MUC_USER).is_some() {
                return self.invite(from, x, o, now_ms);
            }
            if let Some(d) = x.get_child("decline", NS_MUC_USER) {
                return self.decline(from, d, o, now_ms);
            }
        }
        if let Some(form) = m
            .get_child("x", crate::form::NS_DATA)
            .and_then(Form::parse)
            .filter(|f| f.form_type() == Some(FORM_REQUEST))
        {
            return self.voice_request(from, &form, o);
        }
        if kind != "groupchat" {
            return Err(StanzaError::with_text(
                Condition::BadRequest,
                "only groupchat messages, invitations and requests go to the room",
            ));
        }
        self.groupchat(from, m, o, now_ms)
    }

    pub(super) fn burst(&self) -> f64 {
        f64::from(self.limits.messages_per_second) * 2.0
    }

    fn groupchat(
        &mut self,
        from: &FullJid,
        m: &Element,
        o: &mut Outcome,
        now_ms: i64,
    ) -> Result<(), StanzaError> {
        let nick = self.occupant_nick(from)?.to_owned();
        let rate = f64::from(self.limits.messages_per_second);
        let burst = self.burst();
        let occ = self
            .occupants
            .get_mut(&nick)
            .ok_or(Condition::NotAcceptable)?;
        if rate > 0.0 {
            let elapsed = (now_ms - occ.last_ms).max(0) as f64 / 1000.0;
            occ.tokens = (occ.tokens + elapsed * rate).min(burst);
            occ.last_ms = now_ms;
            if occ.tokens < 1.0 {
                return Err(StanzaError::with_text(
                    Condition::ResourceConstraint,
                    "too many messages; slow down",
                ));
            }
            occ.tokens -= 1.0;
        }
        let role = occ.role;
        let real = occ.real.clone();
        let occupant_id = occ.occupant_id.clone();
        let subject = m.get_child("subject", NS_CLIENT);
        let has_body = m.get_child("body", NS_CLIENT).is_some();
        if let (Some(subject), false) = (subject, has_body) {
            if !(role == Role::Moderator
                || (self.config.change_subject && role >= Role::Participant))
            {
                return Err(StanzaError::with_text(
                    Condition::Forbidden,
                    "you may not change the subject",
                ));
            }
            self.subject = subject.text();
            self.subject_from = Some(nick.clone());
            o.changed = true;
        } else if role < Role::Participant {
            return Err(StanzaError::with_text(
                Condition::Forbidden,
                "visitors may not speak in a moderated room",
            ));
        }
        let mut msg = m.clone();
        stanza::remove_attr(&mut msg, "to");
        set_attr(&mut msg, "from", self.occupant_jid(&nick));
        with_occupant_id(&mut msg, occupant_id.as_deref());
        if self.config.archived {
            // XEP-0359 §3: only the room names its own archive ids. A room that does not
            // archive announces no ids, so clients trust none in its name (§4): nothing to do.
            stanza::remove_children(&mut msg, |c| {
                c.is("stanza-id", NS_SID)
                    && c.attr("by")
                        .and_then(|b| BareJid::new(b).ok())
                        .is_some_and(|by| by == self.jid)
            });
        }
        let to_archive = subject.is_none() || has_body;
        o.retract = (msg.get_child("retract", NS_RETRACT))
            .and_then(|r| r.attr("id"))
            .filter(|id| !id.is_empty())
            .map(|target| RetractRequest {
                target: target.to_owned(),
                sender: real.clone(),
                id: msg.attr("id").map(str::to_owned),
                moderation: None,
            });
        if to_archive {
            self.archive_and_broadcast(msg, real, o, now_ms);
        } else {
            self.to_all(msg, o);
        }
        Ok(())
    }

    /// `msg` to every occupant, handed to the archive first (the room's task stamps the
    /// broadcast with its archive id).
    pub(super) fn archive_and_broadcast(
        &self,
        msg: Element,
        sender: BareJid,
        o: &mut Outcome,
        now_ms: i64,
    ) {
        o.archive = Some(HistoryEntry {
            // The clock reads whole milliseconds, rounded down, while a `since` (XEP-0045
            // §7.2.13) may name any instant: a message accepted at 5.0007 s stamped 5.000
            // would fall before a `since` of 5.0004 s its sender read before sending it.
            // The end of the millisecond is after every instant that preceded the message,
            // and a `since` copied from its delay stamp still leaves it out.
            stamp_ms: now_ms.saturating_add(1),
            sender,
            message: msg.clone(),
        });
        self.to_all(msg, o);
        o.archived_broadcast = o.broadcasts.len().checked_sub(1);
    }

    /// `msg` to every occupant session, as one shared element.
    pub(super) fn to_all(&self, msg: Element, o: &mut Outcome) {
        let to: Vec<FullJid> = self
            .occupants
            .values()
            .flat_map(|x| x.sessions.iter().cloned())
            .collect();
        if !to.is_empty() {
            o.broadcasts.push(Broadcast {
                at: o.out.len(),
                stanza: Arc::new(msg),
                to,
            });
        }
    }

    fn private_message(
        &mut self,
        from: &FullJid,
        target: &str,
        m: &Element,
        o: &mut Outcome,
    ) -> Result<(), StanzaError> {
        let nick = self.occupant_nick(from)?;
        if m.attr("type") == Some("groupchat") {
            return Err(StanzaError::with_text(
                Condition::BadRequest,
                "a groupchat message goes to the room",
            ));
        }
        let Some(occ) = self.occupants.get(target) else {
            return Err(StanzaError::new(Condition::ItemNotFound));
        };
        let mut msg = m.clone();
        set_attr(&mut msg, "from", self.occupant_jid(nick));
        let id = (self.occupants.get(nick)).and_then(|x| x.occupant_id.as_deref());
        with_occupant_id(&mut msg, id);
        if msg.get_child("x", NS_MUC_USER).is_none() {
            msg.append_child(Element::bare("x", NS_MUC_USER));
        }
        for s in &occ.sessions {
            let mut copy = msg.clone();
            set_attr(&mut copy, "to", s.to_string());
            o.out.push(copy);
        }
        Ok(())
    }
}

/// XEP-0421 §4: the occupant ids a sender wrote go (only the room gives them), the room's goes
/// in when it gives one.
pub(super) fn with_occupant_id(msg: &mut Element, id: Option<&str>) {
    stanza::remove_children(msg, |c| c.is("occupant-id", NS_OCCUPANT_ID));
    if let Some(id) = id {
        msg.append_child(stanza::elem("occupant-id", NS_OCCUPANT_ID, &[("id", id)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::HistoryQuery;
    use crate::room::fixtures::*;
    use crate::room::Send;
    use crate::room::NS_MUC;
    use xmppd_core::stanza::elem;

    #[test]
    fn groupchat_reaches_every_session_and_outsiders_are_refused() {
        let mut room = configured("", 0);
        join(&mut room, "bob@example.org/b", "bob");
        join(&mut room, "bob@example.org/phone", "bob");
        let msg = |from: &str| {
            st(&format!(
                "<message xmlns='jabber:client' type='groupchat' from='{from}' to='{ROOM}'>\
             <body>hi</body></message>"
            ))
        };
        let o = room.handle(&msg("alice@example.org/a"), 5);
        assert!(o.out.is_empty(), "no copy per recipient");
        let [b] = &o.broadcasts[..] else {
            panic!("one broadcast: {:?}", o.broadcasts)
        };
        let mut to: Vec<_> = b.to.iter().map(|j| j.to_string()).collect();
        to.sort();
        assert_eq!(
            to,
            [
                "alice@example.org/a",
                "bob@example.org/b",
                "bob@example.org/phone"
            ],
            "al and both of bob's sessions"
        );
        assert_eq!(b.stanza.attr("from"), Some(&*format!("{ROOM}/al")));
        // Stamped with the end of the millisecond the room accepted it in.
        assert_eq!(o.archive.unwrap().stamp_ms, 6);
        let o = room.handle(&msg("carol@example.org/c"), 5);
        assert_eq!(error_of(&o).as_deref(), Some("not-acceptable"));
        assert_eq!(o.out.len(), 1);
    }

    #[test]
    fn message_rate_is_limited_per_occupant() {
        let mut room = configured("", 2);
        join(&mut room, "bob@example.org/b", "bob");
        let say = |from: &str| {
            st(&format!(
                "<message xmlns='jabber:client' type='groupchat' from='{from}' to='{ROOM}'>\
             <body>x</body></message>"
            ))
        };
        // A burst of 4 (twice the rate), then refused, until time passes.
        for _ in 0..4 {
            assert_eq!(error_of(&room.handle(&say("bob@example.org/b"), 0)), None);
        }
        let o = room.handle(&say("bob@example.org/b"), 0);
        assert_eq!(error_of(&o).as_deref(), Some("resource-constraint"));
        assert_eq!(o.out.len(), 1, "nobody else hears a refused message");
        assert_eq!(error_of(&room.handle(&say("alice@example.org/a"), 0)), None);
        assert_eq!(
            error_of(&room.handle(&say("bob@example.org/b"), 1000)),
            None
        );
    }

    #[test]
    fn history_since_keeps_a_message_accepted_later_in_the_same_millisecond() {
        let mut room = configured("", 0);
        let o = room.handle(
            &st(&format!(
                "<message xmlns='jabber:client' type='groupchat' from='alice@example.org/a' \
             to='{ROOM}'><body>hi</body></message>"
            )),
            // The clock reads whole milliseconds: this is some instant in [5.000 s, 5.001 s).
            5_000,
        );
        let entries = [o.archive.unwrap()];
        let since = |s: &str| {
            let h = st(&format!("<history xmlns='{NS_MUC}' since='{s}'/>"));
            HistoryQuery::parse(Some(&h)).select(&entries, 6_000).len()
        };
        // A client read its clock at 5.0004 s, then sent the message: the message is after that
        // instant, whichever part of the millisecond the room accepted it in.
        assert_eq!(since("1970-01-01T00:00:05.0004Z"), 1);
        assert_eq!(since("1970-01-01T00:00:04.999Z"), 1);
        // A `since` copied from the message's own delay stamp leaves it out.
        let stamp = xmppd_core::stanza::xep82_datetime(entries[0].stamp_ms);
        assert_eq!(since(&stamp), 0);
        assert_eq!(since("1970-01-01T00:00:05.002Z"), 0);
    }

    fn forged(body: &str) -> Element {
        st(&format!(
            "<message xmlns='jabber:client' type='groupchat' from='alice@example.org/a' \
             to='{ROOM}'><body>{body}</body>\
             <stanza-id xmlns='{NS_SID}' by='{ROOM}' id='forged'/>\
             <stanza-id xmlns='{NS_SID}' by='alice@example.org' id='hers'/></message>"
        ))
    }

    fn stanza_ids(m: &Element) -> Vec<(String, String)> {
        m.children()
            .filter(|c| c.is("stanza-id", NS_SID))
            .map(|c| (c.attr("by").unwrap().into(), c.attr("id").unwrap().into()))
            .collect()
    }

    #[test]
    fn an_archived_room_removes_ids_in_its_name_and_stamps_its_own_in_place() {
        let mut room = configured(&field("muc#roomconfig_enablearchiving", "1"), 0);
        join(&mut room, "bob@example.org/b", "bob");
        let mut o = room.handle(&forged("hi"), 0);
        let kept = vec![("alice@example.org".to_owned(), "hers".to_owned())];
        assert_eq!(stanza_ids(&o.archive.as_ref().unwrap().message), kept);
        let before = Arc::as_ptr(&o.broadcasts[0].stanza);
        o.add_to_archived(elem("stanza-id", NS_SID, &[("by", ROOM), ("id", "7")]));
        let [Send::Shared(sent, to)] = &o.take_sends()[..] else {
            panic!("one broadcast")
        };
        assert_eq!(Arc::as_ptr(sent), before, "stamped in place, not copied");
        assert_eq!(to.len(), 2);
        let mut want = kept.clone();
        want.push((ROOM.to_owned(), "7".to_owned()));
        assert_eq!(stanza_ids(sent), want);

        // A room that does not archive leaves the message as it is (no per-message work).
        let mut room = configured("", 0);
        let o = room.handle(&forged("hi"), 0);
        assert_eq!(stanza_ids(&o.broadcasts[0].stanza).len(), 2);
        // A subject change is not archived, so nothing is stamped.
        let mut o = room.handle(
            &st(&format!(
                "<message xmlns='jabber:client' type='groupchat' from='alice@example.org/a' \
                 to='{ROOM}'><subject>s</subject></message>"
            )),
            0,
        );
        assert!(o.archive.is_none());
        o.add_to_archived(elem("stanza-id", NS_SID, &[("by", ROOM), ("id", "8")]));
        assert!(stanza_ids(&o.broadcasts[0].stanza).is_empty());
    }

    #[test]
    fn occupants_carry_the_rooms_occupant_id_and_never_their_own() {
        let ids = crate::OccupantIds::new(b"secret");
        let mut room = configured("", 0);
        room.occupant_ids = Some(ids.clone());
        let bob = ids.id(&room.jid, &BareJid::new("bob@example.org").unwrap());
        let of = |e: &Element| -> Vec<String> {
            (e.children())
                .filter(|c| c.is("occupant-id", NS_OCCUPANT_ID))
                .filter_map(|c| c.attr("id").map(str::to_owned))
                .collect()
        };
        let o = join(&mut room, "bob@example.org/b", "bob");
        assert_eq!(of(&to_of(&o, "alice@example.org/a")[0]), [bob.as_str()]);
        let mut o = room.handle(
            &st(&format!(
                "<message xmlns='jabber:client' type='groupchat' from='bob@example.org/b' \
                 to='{ROOM}'><body>hi</body><occupant-id xmlns='{NS_OCCUPANT_ID}' id='forged'/>\
                 </message>"
            )),
            0,
        );
        assert_eq!(of(&o.archive.take().unwrap().message), [bob.as_str()]);
        let sends = o.take_sends();
        let [Send::Shared(msg, _)] = &sends[..] else {
            panic!("{sends:?}")
        };
        assert_eq!(of(msg), [bob.as_str()]);
        // Across a nick change, whatever the client claims.
        let o = room.handle(
            &st(&format!(
                "<presence xmlns='jabber:client' from='bob@example.org/b' to='{ROOM}/robert'>\
                 <occupant-id xmlns='{NS_OCCUPANT_ID}' id='forged'/></presence>"
            )),
            0,
        );
        let seen = to_of(&o, "alice@example.org/a");
        assert_eq!(seen.len(), 2);
        for p in &seen {
            assert_eq!(of(p), [bob.as_str()], "{p:?}");
        }
        let features: Vec<_> = (room.disco_info().children())
            .filter_map(|f| f.attr("var").map(str::to_owned))
            .collect();
        assert!(features.iter().any(|f| f == NS_OCCUPANT_ID), "{features:?}");
    }

    #[test]
    fn a_room_hands_retractions_to_its_archive_or_history() {
        let retraction = st(&format!(
            "<message xmlns='jabber:client' type='groupchat' from='alice@example.org/a' \
             to='{ROOM}' id='r1'><retract xmlns='{NS_RETRACT}' id='7'/></message>"
        ));
        let mut room = configured(&field("muc#roomconfig_enablearchiving", "1"), 0);
        let o = room.handle(&retraction, 0);
        assert_eq!(
            o.retract,
            Some(RetractRequest {
                target: "7".into(),
                sender: BareJid::new("alice@example.org").unwrap(),
                id: Some("r1".into()),
                moderation: None,
            })
        );
        assert!(o.archive.is_some(), "the retraction itself is archived");
        // Without an archive, the history in memory applies it too.
        let mut room = configured("", 0);
        let o = room.handle(&retraction, 0);
        assert_eq!(o.retract.map(|r| r.target).as_deref(), Some("7"));
    }

    #[test]
    fn a_large_groupchat_to_many_occupants_is_one_element() {
        let mut room = configured("", 0);
        for i in 0..49 {
            join(
                &mut room,
                &format!("user{i}@example.org/r"),
                &format!("n{i}"),
            );
        }
        let body = "z".repeat(256 * 1024);
        let mut o = room.handle(
            &st(&format!(
                "<message xmlns='jabber:client' type='groupchat' from='alice@example.org/a' \
             to='{ROOM}'><body>{body}</body></message>"
            )),
            0,
        );
        let sends = o.take_sends();
        let [Send::Shared(stanza, to)] = &sends[..] else {
            panic!("one shared send, got {}", sends.len())
        };
        assert_eq!(to.len(), 50);
        assert_eq!(
            Arc::strong_count(stanza),
            1,
            "held once, for every recipient"
        );
    }
}
