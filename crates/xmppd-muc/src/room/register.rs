//! Registering with a room (XEP-0045 §7.10) and discovering one's reserved nick (§7.12).

use jid::{BareJid, FullJid};
use minidom::Element;
use xmppd_core::address::Bare;
use xmppd_core::stanza::{elem, text_elem, Condition, StanzaError};

use super::{data_form, Affiliation, Outcome, Room, NODE_ROOMUSER, NS_DISCO_INFO, NS_REGISTER};
use crate::form::{FormBuilder, FORM_REGISTER};

impl Room {
    /// Whether `real` may register; its current affiliation if so.
    fn may_register(&self, real: &BareJid) -> Result<Affiliation, StanzaError> {
        let aff = self.affiliation(real);
        if aff == Affiliation::Outcast {
            return Err(StanzaError::with_text(
                Condition::Forbidden,
                "you are banned from this room",
            ));
        }
        if self.locked {
            return Err(StanzaError::with_text(
                Condition::ItemNotFound,
                "this room is not configured yet",
            ));
        }
        if aff < Affiliation::Member && self.config.members_only && !self.config.open_registration {
            return Err(StanzaError::with_text(
                Condition::NotAllowed,
                "only members may register with this room",
            ));
        }
        Ok(aff)
    }

    /// The registration form, or the user's registration (`<registered/>` and the nick).
    pub(super) fn register_get(&self, from: &FullJid) -> Result<Element, StanzaError> {
        let real = from.bare();
        self.may_register(&real)?;
        let mut q = Element::bare("query", NS_REGISTER);
        if let Some(n) = self.reserved_nick(&real) {
            q.append_child(Element::bare("registered", NS_REGISTER));
            q.append_child(text_elem("username", NS_REGISTER, n));
            return Ok(q);
        }
        q.append_child(text_elem(
            "instructions",
            NS_REGISTER,
            "Choose the nickname to reserve in this room.",
        ));
        let mut form = FormBuilder::new("form", FORM_REGISTER)
            .title("Register with the room")
            .field("muc#register_roomnick", "text-single", "Nickname", &[])
            .build();
        if let Some(f) = form
            .children_mut()
            .find(|f| f.attr("var") == Some("muc#register_roomnick"))
        {
            f.append_child(Element::bare("required", crate::form::NS_DATA));
        }
        q.append_child(form);
        Ok(q)
    }

    /// A submitted registration makes the user a member (higher affiliations stay) with the
    /// nick reserved; `<remove/>` cancels it (a member is no longer one).
    pub(super) fn register_set(
        &mut self,
        from: &FullJid,
        q: &Element,
        o: &mut Outcome,
    ) -> Result<(), StanzaError> {
        let real = from.bare();
        let aff = self.may_register(&real)?;
        if q.get_child("remove", NS_REGISTER).is_some() {
            if aff == Affiliation::Member {
                self.apply_affiliation(&real, Affiliation::None, None, None, None, o);
            } else if let Some(a) = self.affiliations.get_mut(&real) {
                a.nick = None;
                o.changed = true;
            }
            return Ok(());
        }
        let form = data_form(q)?;
        match form.kind.as_str() {
            "cancel" => return Ok(()),
            "submit" => {}
            _ => return Err(Condition::BadRequest.into()),
        }
        if form.form_type().is_some_and(|t| t != FORM_REGISTER) {
            return Err(Condition::BadRequest.into());
        }
        let nick = form
            .value("muc#register_roomnick")
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                StanzaError::with_text(
                    Condition::NotAcceptable,
                    "muc#register_roomnick is required",
                )
            })?;
        let nick = self.free_nick(nick, &real)?;
        let aff = aff.max(Affiliation::Member);
        self.apply_affiliation(&real, aff, Some(nick), None, None, o);
        Ok(())
    }

    /// XEP-0045 §7.12: the nick the asker reserved, as an identity (none: no identity).
    pub(super) fn roomuser_item(&self, real: &BareJid) -> Element {
        let mut q = elem("query", NS_DISCO_INFO, &[("node", NODE_ROOMUSER)]);
        if let Some(n) = self.reserved_nick(real) {
            q.append_child(elem(
                "identity",
                NS_DISCO_INFO,
                &[("category", "conference"), ("name", n), ("type", "text")],
            ));
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::fixtures::*;
    use crate::room::NS_MUC_ADMIN;

    fn register(room: &mut Room, from: &str, nick: &str) -> Outcome {
        ask(
            room,
            from,
            "set",
            &format!(
                "<query xmlns='{NS_REGISTER}'><x xmlns='jabber:x:data' type='submit'>\
                 {}{}</x></query>",
                field("FORM_TYPE", crate::form::FORM_REGISTER),
                field("muc#register_roomnick", nick)
            ),
        )
    }

    #[test]
    fn registration_reserves_a_nick_and_makes_a_member() {
        let mut room = configured(&field("muc#roomconfig_persistentroom", "1"), 0);
        let bob = BareJid::new("bob@example.org").unwrap();
        // The form first, with the nick field required.
        let o = ask(
            &mut room,
            "bob@example.org/b",
            "get",
            &format!("<query xmlns='{NS_REGISTER}'/>"),
        );
        let form = o.out[0]
            .get_child("query", NS_REGISTER)
            .and_then(|q| q.get_child("x", crate::form::NS_DATA))
            .unwrap();
        assert!(form
            .children()
            .any(|f| f.attr("var") == Some("muc#register_roomnick")
                && f.get_child("required", crate::form::NS_DATA).is_some()));
        let o = register(&mut room, "bob@example.org/b", "Bobby");
        assert_eq!(o.out[0].attr("type"), Some("result"));
        assert!(o.changed);
        // Registering tells nobody else (bob is not in the room): no 101 for one's own act.
        assert_eq!(o.out.len(), 1);
        assert_eq!(room.affiliation(&bob), Affiliation::Member);
        assert_eq!(room.reserved_nick(&bob), Some("Bobby"));
        // Asking again shows the registration.
        let o = ask(
            &mut room,
            "bob@example.org/b",
            "get",
            &format!("<query xmlns='{NS_REGISTER}'/>"),
        );
        let q = o.out[0].get_child("query", NS_REGISTER).unwrap();
        assert!(q.get_child("registered", NS_REGISTER).is_some());
        assert_eq!(
            q.get_child("username", NS_REGISTER).map(|u| u.text()),
            Some("Bobby".into())
        );
        // §7.12: bob discovers his nick; carol has none.
        let mine = |room: &mut Room, from: &str| {
            ask(
                room,
                from,
                "get",
                &format!("<query xmlns='{NS_DISCO_INFO}' node='{NODE_ROOMUSER}'/>"),
            )
        };
        let o = mine(&mut room, "bob@example.org/b");
        let q = o.out[0].get_child("query", NS_DISCO_INFO).unwrap();
        assert_eq!(q.attr("node"), Some(NODE_ROOMUSER));
        let id = q.get_child("identity", NS_DISCO_INFO).unwrap();
        assert_eq!(
            (id.attr("category"), id.attr("name")),
            (Some("conference"), Some("Bobby"))
        );
        let o = mine(&mut room, "carol@example.org/c");
        assert_eq!(
            o.out[0]
                .get_child("query", NS_DISCO_INFO)
                .unwrap()
                .children()
                .count(),
            0
        );
        // Carol may neither take nor register it; bob joins with it.
        let o = join(&mut room, "carol@example.org/c", "Bobby");
        assert_eq!(error_of(&o).as_deref(), Some("conflict"));
        let o = register(&mut room, "carol@example.org/c", "Bobby");
        assert_eq!(error_of(&o).as_deref(), Some("conflict"));
        let o = join(&mut room, "bob@example.org/b", "Bobby");
        assert_eq!(error_of(&o), None);
        // The member list shows the nick, which survives a promotion and a restart.
        room.handle(
            &admin_item(
                "alice@example.org/a",
                "<item affiliation='admin' jid='bob@example.org'/>",
            ),
            0,
        );
        let o = ask(
            &mut room,
            "alice@example.org/a",
            "get",
            &format!("<query xmlns='{NS_MUC_ADMIN}'><item affiliation='admin'/></query>"),
        );
        let item = o.out[0]
            .get_child("query", NS_MUC_ADMIN)
            .and_then(|q| q.get_child("item", NS_MUC_ADMIN))
            .unwrap();
        assert_eq!(item.attr("nick"), Some("Bobby"));
        let back = Room::restore(room.jid.clone(), &room.snapshot(), limits(0)).unwrap();
        assert_eq!(back.reserved_nick(&bob), Some("Bobby"));
        // Cancelling the registration frees the nick; an admin stays an admin.
        let o = ask(
            &mut room,
            "bob@example.org/b",
            "set",
            &format!("<query xmlns='{NS_REGISTER}'><remove/></query>"),
        );
        assert_eq!(o.out[0].attr("type"), Some("result"));
        assert_eq!(room.reserved_nick(&bob), None);
        assert_eq!(room.affiliation(&bob), Affiliation::Admin);
        // No nick, a bad nick, a foreign form: errors.
        for bad in ["", "  "] {
            let o = register(&mut room, "carol@example.org/c", bad);
            assert_eq!(error_of(&o).as_deref(), Some("not-acceptable"));
        }
        let o = ask(
            &mut room,
            "carol@example.org/c",
            "set",
            &format!("<query xmlns='{NS_REGISTER}'/>"),
        );
        assert_eq!(error_of(&o).as_deref(), Some("bad-request"));
    }

    #[test]
    fn members_only_rooms_register_members_only_when_configured() {
        let mut room = configured(&field("muc#roomconfig_membersonly", "1"), 0);
        let o = register(&mut room, "carol@example.org/c", "carol");
        assert_eq!(error_of(&o).as_deref(), Some("not-allowed"));
        // A member may reserve a nick.
        room.handle(
            &admin_item(
                "alice@example.org/a",
                "<item affiliation='member' jid='bob@example.org'/>",
            ),
            0,
        );
        assert_eq!(
            error_of(&register(&mut room, "bob@example.org/b", "bob")),
            None
        );
        // Open registration lets anyone not banned become a member.
        let mut room = configured(
            &(field("muc#roomconfig_membersonly", "1")
                + &field(crate::form::FIELD_OPEN_REGISTRATION, "1")),
            0,
        );
        assert_eq!(
            error_of(&register(&mut room, "carol@example.org/c", "cc")),
            None
        );
        assert_eq!(
            error_of(&join(&mut room, "carol@example.org/c", "cc")),
            None
        );
        room.handle(
            &admin_item(
                "alice@example.org/a",
                "<item affiliation='outcast' jid='eve@example.org'/>",
            ),
            0,
        );
        let o = register(&mut room, "eve@example.org/e", "eve");
        assert_eq!(error_of(&o).as_deref(), Some("forbidden"));
    }
}
