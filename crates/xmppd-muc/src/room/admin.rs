//! Affiliations (XEP-0045 §9, §10.3–10.8): reading and changing the outcast (ban), member,
//! admin and owner lists, and what a change does to the user's occupant, present or not.

use jid::{BareJid, FullJid};
use minidom::Element;
use xmppd_core::address::{parse_jid, Bare};
use xmppd_core::stanza::{elem, set_attr, text_elem, Condition, StanzaError, NS_CLIENT};

use super::{status, AffItem, Affiliation, Extra, Outcome, Role, Room, NS_MUC_ADMIN, NS_MUC_USER};
use crate::form::Whois;

impl Room {
    pub(super) fn admin_get(&self, from: &FullJid, q: &Element) -> Result<Element, StanzaError> {
        let item = q
            .get_child("item", NS_MUC_ADMIN)
            .ok_or(Condition::BadRequest)?;
        let mut out = Element::bare("query", NS_MUC_ADMIN);
        let actor_aff = self.affiliation(&from.bare());
        if let Some(a) = item.attr("affiliation") {
            let wanted = Affiliation::parse(a).ok_or(Condition::BadRequest)?;
            if !self.may_list(actor_aff, wanted) {
                return Err(StanzaError::new(Condition::Forbidden));
            }
            let mut list: Vec<_> = self
                .affiliations
                .iter()
                .filter(|(_, i)| i.affiliation == wanted)
                .collect();
            list.sort_by(|a, b| a.0.cmp(b.0));
            for (jid, i) in list {
                let mut e = elem(
                    "item",
                    NS_MUC_ADMIN,
                    &[("affiliation", a), ("jid", jid.as_str())],
                );
                if let Some(n) = &i.nick {
                    set_attr(&mut e, "nick", n.as_str());
                }
                if let Some(r) = &i.reason {
                    e.append_child(text_elem("reason", NS_MUC_ADMIN, r));
                }
                out.append_child(e);
            }
        } else if let Some(r) = item.attr("role") {
            let wanted = Role::parse(r).ok_or(Condition::BadRequest)?;
            if self.role_of(from) != Role::Moderator {
                return Err(StanzaError::new(Condition::Forbidden));
            }
            for occ in self.occupants.values().filter(|x| x.role == wanted) {
                let mut e = elem(
                    "item",
                    NS_MUC_ADMIN,
                    &[
                        ("role", r),
                        ("nick", &occ.nick),
                        ("affiliation", self.affiliation(&occ.real).as_str()),
                    ],
                );
                if let Some(s) = occ.sessions.first() {
                    set_attr(&mut e, "jid", s.to_string());
                }
                out.append_child(e);
            }
        } else {
            return Err(Condition::BadRequest.into());
        }
        Ok(out)
    }

    /// Whether a user of affiliation `actor` may read the list of `wanted`. Admins and owners
    /// read every list. In a members-only room where everyone sees real JIDs, members read the
    /// member, admin and owner lists too: the room hides no JID from them, and clients that
    /// encrypt end-to-end (OMEMO) need every participant's JID, present or not. The outcast
    /// list stays with the admins.
    fn may_list(&self, actor: Affiliation, wanted: Affiliation) -> bool {
        actor >= Affiliation::Admin
            || (actor == Affiliation::Member
                && wanted >= Affiliation::Member
                && self.config.members_only
                && self.config.whois == Whois::Anyone)
    }

    pub(super) fn admin_set(
        &mut self,
        from: &FullJid,
        q: &Element,
        o: &mut Outcome,
    ) -> Result<(), StanzaError> {
        let items: Vec<&Element> = q
            .children()
            .filter(|c| c.is("item", NS_MUC_ADMIN))
            .collect();
        if items.is_empty() {
            return Err(Condition::BadRequest.into());
        }
        for item in items {
            let reason = item.get_child("reason", NS_MUC_ADMIN).map(|r| r.text());
            if let Some(a) = item.attr("affiliation") {
                let aff = Affiliation::parse(a).ok_or(Condition::BadRequest)?;
                let target = match (item.attr("jid"), item.attr("nick")) {
                    (Some(j), _) => parse_jid(j)
                        .map(|j| j.bare())
                        .map_err(|_| Condition::JidMalformed)?,
                    (None, Some(n)) => self
                        .occupants
                        .get(n)
                        .map(|x| x.real.clone())
                        .ok_or(Condition::ItemNotFound)?,
                    (None, None) => return Err(Condition::BadRequest.into()),
                };
                let nick = item.attr("jid").and(item.attr("nick"));
                self.set_affiliation(from, target, aff, nick, reason.as_deref(), o)?;
            } else if let Some(r) = item.attr("role") {
                let role = Role::parse(r).ok_or(Condition::BadRequest)?;
                let nick = item.attr("nick").ok_or(Condition::BadRequest)?;
                self.set_role(from, nick, role, reason.as_deref(), o)?;
            } else {
                return Err(Condition::BadRequest.into());
            }
        }
        Ok(())
    }

    fn set_affiliation(
        &mut self,
        actor: &FullJid,
        target: BareJid,
        aff: Affiliation,
        nick: Option<&str>,
        reason: Option<&str>,
        o: &mut Outcome,
    ) -> Result<(), StanzaError> {
        let actor_aff = self.affiliation(&actor.bare());
        let current = self.affiliation(&target);
        let needs_owner = aff >= Affiliation::Admin || current >= Affiliation::Admin;
        let needed = if needs_owner {
            Affiliation::Owner
        } else {
            Affiliation::Admin
        };
        if actor_aff < needed {
            return Err(StanzaError::new(if actor_aff >= Affiliation::Admin {
                Condition::NotAllowed
            } else {
                Condition::Forbidden
            }));
        }
        let owners = self
            .affiliations
            .values()
            .filter(|a| a.affiliation == Affiliation::Owner)
            .count();
        if current == Affiliation::Owner && aff != Affiliation::Owner && owners <= 1 {
            return Err(StanzaError::with_text(
                Condition::Conflict,
                "a room keeps at least one owner",
            ));
        }
        let nick = nick.map(|n| self.free_nick(n, &target)).transpose()?;
        let actor_nick = self.sessions.get(actor).cloned();
        let present = self.apply_affiliation(&target, aff, nick, reason, actor_nick.as_deref(), o);
        if !present && aff != current {
            // XEP-0045 §9: a user who is not in the room learns of the change by message (101).
            let mut msg = elem("message", NS_CLIENT, &[]);
            set_attr(&mut msg, "from", self.jid.to_string());
            set_attr(&mut msg, "to", target.to_string());
            let mut x = Element::bare("x", NS_MUC_USER);
            let mut item = elem(
                "item",
                NS_MUC_USER,
                &[("affiliation", aff.as_str()), ("jid", target.as_str())],
            );
            if let Some(r) = reason {
                item.append_child(text_elem("reason", NS_MUC_USER, r));
            }
            x.append_child(item);
            x.append_child(status(101));
            msg.append_child(x);
            o.out.push(msg);
        }
        Ok(())
    }

    /// `nick` normalised as an occupant JID's resource, if no other user holds or reserved it.
    pub(super) fn free_nick(&self, nick: &str, real: &BareJid) -> Result<String, StanzaError> {
        let nick = FullJid::new(&self.occupant_jid(nick))
            .map_err(|_| Condition::JidMalformed)?
            .resource()
            .to_string();
        let in_use = self.occupants.get(&nick).is_some_and(|x| &x.real != real);
        if in_use || self.reserved_by_other(&nick, real) {
            return Err(StanzaError::with_text(
                Condition::Conflict,
                "that nickname is reserved or in use",
            ));
        }
        Ok(nick)
    }

    /// Records `target`'s affiliation (a reserved nick stays unless `nick` replaces it; it
    /// goes with the membership) and applies it to the user's occupant in the room: new role,
    /// or removal (301 banned, 321 no longer a member of a members-only room). Returns whether
    /// the user was in the room.
    pub(super) fn apply_affiliation(
        &mut self,
        target: &BareJid,
        aff: Affiliation,
        nick: Option<String>,
        reason: Option<&str>,
        actor: Option<&str>,
        o: &mut Outcome,
    ) -> bool {
        let nick = nick.or_else(|| self.affiliations.get(target).and_then(|a| a.nick.clone()));
        if aff == Affiliation::None {
            self.affiliations.remove(target);
        } else {
            self.affiliations.insert(
                target.clone(),
                AffItem {
                    affiliation: aff,
                    nick: nick.filter(|_| aff >= Affiliation::Member),
                    reason: reason.map(str::to_owned),
                },
            );
        }
        o.changed = true;
        let present: Vec<String> = self
            .occupants
            .values()
            .filter(|x| &x.real == target)
            .map(|x| x.nick.clone())
            .collect();
        for n in &present {
            let extra = Extra {
                actor,
                reason,
                ..Extra::default()
            };
            if aff == Affiliation::Outcast {
                self.remove_occupant(n, &extra, &[301], o);
            } else if aff < Affiliation::Member && self.config.members_only {
                self.remove_occupant(n, &extra, &[321], o);
            } else {
                let role = self.default_role(aff);
                if let Some(occ) = self.occupants.get_mut(n) {
                    occ.role = role;
                    let occ = occ.clone();
                    self.broadcast(&occ, false, &extra, &[], &[], o);
                }
            }
        }
        !present.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::fixtures::*;
    use crate::room::NS_MUC_OWNER;

    #[test]
    fn affiliation_changes_reach_absent_users_and_remove_non_members() {
        let mut room = configured("", 0);
        // Dave is not in the room: he gets a message with 101.
        let o = room.handle(
            &admin_item(
                "alice@example.org/a",
                "<item affiliation='member' jid='dave@example.org'><reason>welcome</reason></item>",
            ),
            0,
        );
        let msg = to_of(&o, "dave@example.org");
        assert_eq!(msg.len(), 1, "{:?}", o.out);
        assert_eq!(msg[0].name(), "message");
        assert_eq!(codes(&msg[0]), ["101"]);
        let item = item_of(&msg[0]);
        assert_eq!(
            (item.attr("affiliation"), item.attr("jid")),
            (Some("member"), Some("dave@example.org"))
        );
        // Setting the same affiliation again tells nobody anything new.
        let o = room.handle(
            &admin_item(
                "alice@example.org/a",
                "<item affiliation='member' jid='dave@example.org'/>",
            ),
            0,
        );
        assert!(to_of(&o, "dave@example.org").is_empty());

        // Revoking membership in a members-only room removes the occupant with 321.
        let mut room = configured(&field("muc#roomconfig_membersonly", "1"), 0);
        room.handle(
            &admin_item(
                "alice@example.org/a",
                "<item affiliation='member' jid='bob@example.org'/>",
            ),
            0,
        );
        join(&mut room, "bob@example.org/b", "bob");
        let o = room.handle(
            &admin_item(
                "alice@example.org/a",
                "<item affiliation='none' jid='bob@example.org'/>",
            ),
            0,
        );
        assert_eq!(codes(&to_of(&o, "bob@example.org/b")[0]), ["321", "110"]);
        let seen = to_of(&o, "alice@example.org/a");
        let seen = seen.iter().find(|p| p.name() == "presence").unwrap();
        assert_eq!(codes(seen), ["321"]);
        assert!(
            to_of(&o, "bob@example.org").is_empty(),
            "no 101 to an occupant"
        );
        assert_eq!(room.occupant_count(), 1);

        // Turning a room members-only removes the non-members with 322.
        let mut room = configured("", 0);
        join(&mut room, "bob@example.org/b", "bob");
        let o = ask(
            &mut room,
            "alice@example.org/a",
            "set",
            &format!(
                "<query xmlns='{NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>{}</x>\
                 </query>",
                field("muc#roomconfig_membersonly", "1")
            ),
        );
        let to_bob = to_of(&o, "bob@example.org/b");
        let gone = to_bob.iter().find(|p| p.name() == "presence").unwrap();
        assert_eq!(gone.attr("type"), Some("unavailable"));
        assert_eq!(codes(gone), ["322", "110"]);
        assert_eq!(room.occupant_count(), 1);
    }

    /// The affiliations in a `muc#admin` list answer, or the error condition.
    fn list(room: &mut Room, from: &str, aff: &str) -> Result<Vec<String>, String> {
        let o = ask(
            room,
            from,
            "get",
            &format!("<query xmlns='{NS_MUC_ADMIN}'><item affiliation='{aff}'/></query>"),
        );
        if let Some(e) = error_of(&o) {
            return Err(e);
        }
        let q = o.out[0].get_child("query", NS_MUC_ADMIN).unwrap();
        Ok(q.children()
            .filter_map(|i| i.attr("jid").map(str::to_owned))
            .collect())
    }

    #[test]
    fn members_of_private_non_anonymous_rooms_read_the_affiliation_lists() {
        let private =
            field("muc#roomconfig_membersonly", "1") + &field("muc#roomconfig_whois", "anyone");
        for (fields, members_read) in [
            (private.as_str(), true),
            (&field("muc#roomconfig_membersonly", "1"), false),
            (&field("muc#roomconfig_whois", "anyone"), false),
        ] {
            let mut room = configured(fields, 0);
            for item in [
                "<item affiliation='member' jid='bob@example.org'/>",
                "<item affiliation='admin' jid='carol@example.org'/>",
                "<item affiliation='outcast' jid='eve@example.org'/>",
            ] {
                room.handle(&admin_item("alice@example.org/a", item), 0);
            }
            let bob = "bob@example.org/b";
            for aff in ["member", "admin", "owner"] {
                let got = list(&mut room, bob, aff);
                if members_read {
                    assert_eq!(got.map(|v| v.len()), Ok(1), "{fields} {aff}");
                } else {
                    assert_eq!(got, Err("forbidden".into()), "{fields} {aff}");
                }
            }
            assert_eq!(
                list(&mut room, bob, "member"),
                if members_read {
                    Ok(vec!["bob@example.org".into()])
                } else {
                    Err("forbidden".into())
                }
            );
            // The ban list stays with the admins; outsiders never read any list.
            assert_eq!(list(&mut room, bob, "outcast"), Err("forbidden".into()));
            assert_eq!(
                list(&mut room, "carol@example.org/c", "outcast"),
                Ok(vec!["eve@example.org".into()])
            );
            assert_eq!(
                list(&mut room, "dave@example.org/d", "member"),
                Err("forbidden".into())
            );
        }
    }

    #[test]
    fn a_removed_owner_is_forgotten_and_an_administrator_can_adopt_the_room() {
        let mut room = configured(&field("muc#roomconfig_persistentroom", "1"), 0);
        let alice = BareJid::new("alice@example.org").unwrap();
        let carol = BareJid::new("carol@example.org").unwrap();
        join(&mut room, "carol@example.org/c", "carol");
        assert!(room.forget_account(&alice));
        assert!(!room.forget_account(&alice));
        assert!(room.owners().is_empty());
        assert!(room.snapshot().affiliations.is_empty());
        let config = format!(
            "<iq xmlns='jabber:client' type='get' id='g' from='carol@example.org/c' to='{ROOM}'>\
         <query xmlns='{NS_MUC_OWNER}'/></iq>"
        );
        assert_eq!(
            error_of(&room.handle(&st(&config), 0)).as_deref(),
            Some("forbidden")
        );

        // carol is in the room: every occupant sees her new affiliation.
        let o = room.adopt(&carol);
        assert!(o.changed);
        let seen = to_of(&o, "carol@example.org/c");
        let item = seen[0]
            .get_child("x", NS_MUC_USER)
            .and_then(|x| x.get_child("item", NS_MUC_USER))
            .unwrap();
        assert_eq!(item.attr("affiliation"), Some("owner"));
        assert_eq!(room.owners(), [carol]);
        assert_eq!(
            room.handle(&st(&config), 0).out[0].attr("type"),
            Some("result")
        );
    }
}
