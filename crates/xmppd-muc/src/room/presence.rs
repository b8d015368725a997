//! Entering a room (XEP-0045 §7.2), changing nick (§7.6) and presence (§7.7), exiting, and
//! the occupants whose errors show they are gone (§18.1); and how one occupant's presence reads
//! to another (the `<item/>` with role, affiliation and, if the room shows it, the real JID).

use jid::FullJid;
use minidom::Element;
use xmppd_core::address::Bare;
use xmppd_core::stanza::{
    self, elem, set_attr, text_elem, Condition, ErrorType, StanzaError, NS_CLIENT,
};

use super::{
    add_status, status, Affiliation, Extra, Occupant, Outcome, Role, Room, NS_MUC, NS_MUC_USER,
};
use crate::archive::HistoryQuery;
use crate::form::Whois;
use crate::occupant_id::NS_OCCUPANT_ID;

impl Room {
    pub(super) fn on_presence(
        &mut self,
        from: &FullJid,
        nick: Option<String>,
        p: &Element,
        o: &mut Outcome,
        now_ms: i64,
    ) -> Result<(), StanzaError> {
        let current = self.sessions.get(from).cloned();
        match p.attr("type") {
            None => {}
            Some("unavailable") => {
                if current.is_some() {
                    self.leave(from, p, &[], o);
                }
                return Ok(());
            }
            Some("error") => {
                self.on_error(from, p, o);
                return Ok(());
            }
            Some(_) => return Ok(()),
        }
        let Some(nick) = nick else {
            return Err(StanzaError::with_text(
                Condition::JidMalformed,
                "a nickname is required",
            ));
        };
        match current {
            Some(cur) if cur == nick => {
                self.update_presence(&cur, p, o);
                Ok(())
            }
            Some(cur) => self.change_nick(from, &cur, &nick, p, o),
            None => self.join(from, &nick, p, o, now_ms),
        }
    }

    fn join(
        &mut self,
        from: &FullJid,
        nick: &str,
        p: &Element,
        o: &mut Outcome,
        now_ms: i64,
    ) -> Result<(), StanzaError> {
        let real = from.bare();
        let aff = self.affiliation(&real);
        let creating = self.locked && self.occupants.is_empty() && aff == Affiliation::Owner;
        if aff == Affiliation::Outcast {
            return Err(StanzaError::with_text(
                Condition::Forbidden,
                "you are banned from this room",
            ));
        }
        if self.locked && aff != Affiliation::Owner {
            return Err(StanzaError::with_text(
                Condition::ItemNotFound,
                "this room is not configured yet",
            ));
        }
        if self.config.members_only && aff < Affiliation::Member {
            return Err(StanzaError::with_text(
                Condition::RegistrationRequired,
                "this room is members-only",
            ));
        }
        let same_user = match self.occupants.get(nick) {
            Some(occ) if occ.real != real => {
                return Err(StanzaError::with_text(
                    Condition::Conflict,
                    "that nickname is in use",
                ))
            }
            Some(_) => true,
            None => false,
        };
        if self.reserved_by_other(nick, &real) {
            return Err(StanzaError::with_text(
                Condition::Conflict,
                "that nickname is reserved",
            ));
        }
        if !same_user
            && self.occupants.len() >= self.config.max_occupants
            && aff < Affiliation::Admin
        {
            // XEP-0045 §7.2.10: a full room is a temporary refusal; trying later may work.
            let mut full =
                StanzaError::with_text(Condition::ServiceUnavailable, "the room is full");
            full.kind = ErrorType::Wait;
            return Err(full);
        }
        let muc = p.get_child("x", NS_MUC);
        if let Some(secret) = &self.config.password {
            let given = muc.and_then(|x| x.get_child("password", NS_MUC).map(|e| e.text()));
            if !creating && given.as_deref() != Some(secret.as_str()) {
                return Err(StanzaError::with_text(
                    Condition::NotAuthorized,
                    "a password is required",
                ));
            }
        }
        let presence = presence_payload(p);
        let history = HistoryQuery::parse(muc.and_then(|x| x.get_child("history", NS_MUC)));
        if let Some(occ) = self.occupants.get_mut(nick).filter(|_| same_user) {
            // Another session of an occupant joins under its nick: it sees the room as it is.
            occ.sessions.push(from.clone());
            occ.presence = presence;
            self.sessions.insert(from.clone(), nick.to_owned());
        } else {
            let occ = Occupant {
                nick: nick.to_owned(),
                real: real.clone(),
                sessions: vec![from.clone()],
                role: self.default_role(aff),
                presence,
                tokens: self.burst(),
                last_ms: now_ms,
                occupant_id: (self.occupant_ids.as_ref()).map(|ids| ids.id(&self.jid, &real)),
            };
            self.occupants.insert(nick.to_owned(), occ);
            self.sessions.insert(from.clone(), nick.to_owned());
        }
        self.invitations_answered(&real);
        for other in self.occupants.values().filter(|x| x.nick != nick) {
            o.out
                .push(self.presence_for(other, from, false, &Extra::default(), &[]));
        }
        let mut codes = Vec::new();
        if self.config.whois == Whois::Anyone {
            codes.push(100);
        }
        if self.config.archived {
            codes.push(170);
        }
        if creating {
            codes.push(201);
        }
        let Some(occ) = self.occupants.get(nick).cloned() else {
            return Ok(());
        };
        self.broadcast(&occ, false, &Extra::default(), &[], &codes, o);
        o.history_for = Some((from.clone(), history));
        let mut subject = elem("message", NS_CLIENT, &[("type", "groupchat")]);
        let subject_from = match &self.subject_from {
            Some(n) => self.occupant_jid(n),
            None => self.jid.to_string(),
        };
        set_attr(&mut subject, "from", subject_from);
        set_attr(&mut subject, "to", from.to_string());
        subject.append_child(text_elem("subject", NS_CLIENT, &self.subject));
        o.after.push(subject);
        Ok(())
    }

    fn update_presence(&mut self, nick: &str, p: &Element, o: &mut Outcome) {
        let Some(occ) = self.occupants.get_mut(nick) else {
            return;
        };
        occ.presence = presence_payload(p);
        let occ = occ.clone();
        self.broadcast(&occ, false, &Extra::default(), &[], &[], o);
    }

    fn change_nick(
        &mut self,
        from: &FullJid,
        old: &str,
        new: &str,
        p: &Element,
        o: &mut Outcome,
    ) -> Result<(), StanzaError> {
        let real = from.bare();
        if self.occupants.contains_key(new) || self.reserved_by_other(new, &real) {
            return Err(StanzaError::with_text(
                Condition::Conflict,
                "that nickname is in use",
            ));
        }
        let Some(mut occ) = self.occupants.remove(old) else {
            return Ok(());
        };
        let extra = Extra {
            new_nick: Some(new),
            ..Extra::default()
        };
        // The old nick leaves with 303 (the new nick in the item), then the new one arrives.
        self.broadcast(&occ, true, &extra, &[303], &[], o);
        occ.nick = new.to_owned();
        occ.presence = presence_payload(p);
        for s in &occ.sessions {
            self.sessions.insert(s.clone(), new.to_owned());
        }
        self.occupants.insert(new.to_owned(), occ.clone());
        self.broadcast(&occ, false, &Extra::default(), &[], &[], o);
        Ok(())
    }

    /// One session leaves; the occupant leaves with its last session.
    fn leave(&mut self, from: &FullJid, p: &Element, codes: &[u16], o: &mut Outcome) {
        let Some(nick) = self.sessions.remove(from) else {
            return;
        };
        let Some(occ) = self.occupants.get_mut(&nick) else {
            return;
        };
        occ.sessions.retain(|s| s != from);
        let mut leaving = occ.clone();
        leaving.presence = presence_payload(p);
        if occ.sessions.is_empty() {
            self.occupants.remove(&nick);
            leaving.sessions = vec![from.clone()];
            self.broadcast(&leaving, true, &Extra::default(), codes, &[], o);
        } else {
            // The others sessions stay: only the leaving one learns it is out.
            let mut el = self.presence_for(&leaving, from, true, &Extra::default(), codes);
            add_status(&mut el, 110);
            o.out.push(el);
        }
    }

    /// An error stanza (message or presence) from an occupant's session. XEP-0045 §18.1 removes
    /// the session with 333 when the error shows it can no longer be reached. Any other error
    /// (a client refusing one message: blocking, an unsupported payload) is dropped, and the
    /// session stays: the room cannot tell whether it answers a groupchat message or a private
    /// one, so relaying it to "the sender" could reach the wrong occupant.
    pub(super) fn on_error(&mut self, from: &FullJid, st: &Element, o: &mut Outcome) {
        if self.sessions.contains_key(from) && is_unreachable(st) {
            self.leave(from, &Element::bare("presence", NS_CLIENT), &[333], o);
        }
    }

    /// Removes an occupant (every session) with the given codes: kick, ban, membership loss.
    pub(super) fn remove_occupant(
        &mut self,
        nick: &str,
        extra: &Extra,
        codes: &[u16],
        o: &mut Outcome,
    ) {
        let Some(mut occ) = self.occupants.remove(nick) else {
            return;
        };
        for s in &occ.sessions {
            self.sessions.remove(s);
        }
        occ.role = Role::None;
        occ.presence = Element::bare("presence", NS_CLIENT);
        self.broadcast(&occ, true, extra, codes, &[], o);
    }

    /// `occ`'s presence to every occupant session and to `occ`'s own sessions (with 110 and
    /// `self_codes`).
    pub(super) fn broadcast(
        &self,
        occ: &Occupant,
        unavailable: bool,
        extra: &Extra,
        codes: &[u16],
        self_codes: &[u16],
        o: &mut Outcome,
    ) {
        for other in self.occupants.values().filter(|x| x.nick != occ.nick) {
            for s in &other.sessions {
                o.out
                    .push(self.presence_for(occ, s, unavailable, extra, codes));
            }
        }
        for s in &occ.sessions {
            let mut el = self.presence_for(occ, s, unavailable, extra, codes);
            add_status(&mut el, 110);
            for c in self_codes {
                add_status(&mut el, *c);
            }
            o.out.push(el);
        }
    }

    /// `occ`'s presence as `to` sees it.
    pub(super) fn presence_for(
        &self,
        occ: &Occupant,
        to: &FullJid,
        unavailable: bool,
        extra: &Extra,
        codes: &[u16],
    ) -> Element {
        let mut p = occ.presence.clone();
        set_attr(&mut p, "from", self.occupant_jid(&occ.nick));
        set_attr(&mut p, "to", to.to_string());
        if unavailable {
            set_attr(&mut p, "type", "unavailable");
        }
        let show_jid = self.config.whois == Whois::Anyone
            || self.role_of(to) == Role::Moderator
            || occ.sessions.contains(to);
        let aff = extra
            .affiliation
            .unwrap_or_else(|| self.affiliation(&occ.real));
        let role = if unavailable { Role::None } else { occ.role };
        let mut item = elem(
            "item",
            NS_MUC_USER,
            &[("affiliation", aff.as_str()), ("role", role.as_str())],
        );
        if show_jid {
            if let Some(s) = occ.sessions.first() {
                set_attr(&mut item, "jid", s.to_string());
            }
        }
        if let Some(n) = extra.new_nick {
            set_attr(&mut item, "nick", n);
        }
        if let Some(a) = extra.actor {
            item.append_child(elem("actor", NS_MUC_USER, &[("nick", a)]));
        }
        if let Some(r) = extra.reason {
            item.append_child(text_elem("reason", NS_MUC_USER, r));
        }
        let mut x = Element::bare("x", NS_MUC_USER);
        x.append_child(item);
        if let Some(d) = &extra.destroy {
            x.append_child(d.clone());
        }
        for c in codes {
            x.append_child(status(*c));
        }
        p.append_child(x);
        if let Some(id) = &occ.occupant_id {
            p.append_child(elem("occupant-id", NS_OCCUPANT_ID, &[("id", id)]));
        }
        p
    }
}

/// Whether an error stanza's condition shows its sender's session is gone or unreachable (the
/// conditions XEP-0045 §18.1 lists as reasons to remove an occupant).
pub(super) fn is_unreachable(st: &Element) -> bool {
    const GONE: [Condition; 9] = [
        Condition::Gone,
        Condition::ItemNotFound,
        Condition::RecipientUnavailable,
        Condition::Redirect,
        Condition::RemoteServerNotFound,
        Condition::RemoteServerTimeout,
        Condition::ServiceUnavailable,
        Condition::JidMalformed,
        Condition::InternalServerError,
    ];
    st.get_child("error", NS_CLIENT)
        .into_iter()
        .flat_map(|e| e.children())
        .any(|c| c.ns() == stanza::NS_STANZAS && GONE.iter().any(|g| c.name() == g.as_str()))
}

/// The parts of an occupant's presence that are broadcast: everything but MUC payloads and
/// occupant ids, which only the room gives (XEP-0421 §4).
pub(super) fn presence_payload(p: &Element) -> Element {
    let mut out = Element::bare("presence", NS_CLIENT);
    for c in p.children() {
        if !(c.is("x", NS_MUC) || c.is("x", NS_MUC_USER) || c.is("occupant-id", NS_OCCUPANT_ID)) {
            out.append_child(c.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::fixtures::*;
    use crate::room::NS_MUC_ADMIN;

    #[test]
    fn administrators_see_occupants_with_real_addresses_and_every_session() {
        let mut room = configured("", 0);
        join(&mut room, "bob@example.org/b", "bob");
        join(&mut room, "bob@example.org/phone", "bob");
        let list: Vec<_> = (room.occupants().into_iter())
            .map(|o| {
                let sessions: Vec<String> = o.sessions.iter().map(|s| s.to_string()).collect();
                (o.nick, o.real.to_string(), sessions, o.role, o.affiliation)
            })
            .collect();
        assert_eq!(
            list,
            [
                (
                    "al".to_owned(),
                    "alice@example.org".to_owned(),
                    vec!["alice@example.org/a".to_owned()],
                    Role::Moderator,
                    Affiliation::Owner
                ),
                (
                    "bob".to_owned(),
                    "bob@example.org".to_owned(),
                    vec![
                        "bob@example.org/b".to_owned(),
                        "bob@example.org/phone".to_owned()
                    ],
                    Role::Participant,
                    Affiliation::None
                ),
            ]
        );
    }

    #[test]
    fn nick_conflicts_reserved_nicks_and_nick_changes() {
        let mut room = configured("", 0);
        join(&mut room, "bob@example.org/b", "bob");
        let o = join(&mut room, "carol@example.org/c", "bob");
        assert_eq!(error_of(&o).as_deref(), Some("conflict"));
        let o = join(&mut room, "bob@example.org/b", "robert");
        let to_al = to_of(&o, "alice@example.org/a");
        assert_eq!(to_al[0].attr("type"), Some("unavailable"));
        assert_eq!(codes(&to_al[0]), ["303"]);
        let item = to_al[0]
            .get_child("x", NS_MUC_USER)
            .and_then(|x| x.get_child("item", NS_MUC_USER))
            .unwrap();
        assert_eq!(item.attr("nick"), Some("robert"));
        assert_eq!(to_al[1].attr("from"), Some(&*format!("{ROOM}/robert")));
        // A member's reserved nick is refused to others.
        let o = room.handle(
            &st(&format!(
            "<iq xmlns='jabber:client' type='set' id='m' from='alice@example.org/a' to='{ROOM}'>\
             <query xmlns='{NS_MUC_ADMIN}'>\
             <item affiliation='member' jid='dave@example.org' nick='dave'/></query></iq>"
        )),
            0,
        );
        assert_eq!(o.out[0].attr("type"), Some("result"));
        let o = join(&mut room, "carol@example.org/c", "dave");
        assert_eq!(error_of(&o).as_deref(), Some("conflict"));
    }

    #[test]
    fn history_requests_are_read_from_the_join() {
        let mut room = configured("", 0);
        let since = xmppd_core::stanza::xep82_datetime(1_700_000_000_000);
        let o = room.handle(
            &st(&format!(
                "<presence xmlns='jabber:client' from='bob@example.org/b' to='{ROOM}/bob'>\
             <x xmlns='{NS_MUC}'><history maxchars='300' seconds='60' since='{since}'/></x>\
             </presence>"
            )),
            0,
        );
        let (to, q) = o.history_for.unwrap();
        assert_eq!(to.to_string(), "bob@example.org/b");
        assert_eq!(
            q,
            HistoryQuery {
                max_chars: Some(300),
                max_stanzas: None,
                seconds: Some(60),
                since_ms: Some(1_700_000_000_000),
            }
        );
    }

    #[test]
    fn only_errors_showing_an_unreachable_client_remove_the_occupant() {
        let mut room = configured("", 0);
        join(&mut room, "bob@example.org/b", "bob");
        let error = |kind: &str, condition: &str| {
            st(&format!(
                "<{kind} xmlns='jabber:client' type='error' from='bob@example.org/b' \
             to='{ROOM}/al'><error type='cancel'>\
             <{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></{kind}>"
            ))
        };
        // A client refusing one stanza (blocking, unsupported payload) stays; nothing is sent.
        for kind in ["message", "presence"] {
            for condition in ["feature-not-implemented", "forbidden", "not-acceptable"] {
                let o = room.handle(&error(kind, condition), 0);
                assert!(o.out.is_empty(), "{kind} {condition}: {:?}", o.out);
                assert_eq!(room.occupant_count(), 2, "{kind} {condition}");
            }
        }
        // An error without a condition says nothing about reachability either.
        let bare = st(&format!(
            "<message xmlns='jabber:client' type='error' from='bob@example.org/b' to='{ROOM}'/>"
        ));
        room.handle(&bare, 0);
        assert_eq!(room.occupant_count(), 2);
        for (kind, condition) in [
            ("message", "recipient-unavailable"),
            ("presence", "remote-server-not-found"),
            ("message", "gone"),
        ] {
            let o = room.handle(&error(kind, condition), 0);
            let gone = &to_of(&o, "alice@example.org/a")[0];
            assert_eq!(gone.attr("type"), Some("unavailable"));
            assert_eq!(codes(gone), ["333"], "{kind} {condition}");
            assert!(gone.get_child("error", NS_CLIENT).is_none(), "not echoed");
            assert_eq!(room.occupant_count(), 1);
            join(&mut room, "bob@example.org/b", "bob");
        }
    }

    #[test]
    fn a_full_room_says_wait() {
        let mut room = configured(&field("muc#roomconfig_maxusers", "1"), 0);
        let o = join(&mut room, "bob@example.org/b", "bob");
        let err = o.out[0].get_child("error", NS_CLIENT).unwrap();
        assert!(err.has_child("service-unavailable", xmppd_core::stanza::NS_STANZAS));
        assert_eq!(err.attr("type"), Some("wait"));
    }
}
