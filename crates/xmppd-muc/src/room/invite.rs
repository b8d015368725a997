//! Mediated invitations and declines (XEP-0045 §7.8.2), and the invitations a decline may
//! still answer.

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmppd_core::address::{parse_jid, Bare};
use xmppd_core::stanza::{elem, set_attr, text_elem, Condition, StanzaError, NS_CLIENT};

use super::{AffItem, Affiliation, Outcome, Role, Room, NS_MUC_USER};

/// Mediated invitations that a decline may still answer, per room (the oldest are forgotten
/// first), and for how long: an invitation may wait in offline storage for days.
const MAX_PENDING_INVITES: usize = 256;
const INVITE_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

/// A mediated invitation not answered yet (XEP-0045 §7.8.2).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PendingInvite {
    invitee: BareJid,
    inviter: BareJid,
    at_ms: i64,
}

impl Room {
    /// A mediated invitation (XEP-0045 §7.8.2) from an occupant. In a members-only room it
    /// adds the invitee to the member list, so there it takes an admin, or a member when the
    /// room allows members to invite (`muc#roomconfig_allowinvites`); the XEP asks for
    /// `<forbidden/>` otherwise. Elsewhere moderators invite, and everyone with that option.
    pub(super) fn invite(
        &mut self,
        from: &FullJid,
        x: &Element,
        o: &mut Outcome,
        now_ms: i64,
    ) -> Result<(), StanzaError> {
        let nick = self.occupant_nick(from)?.to_owned();
        let inviter = from.bare();
        let inviter_aff = self.affiliation(&inviter);
        let may_invite = if self.config.members_only {
            inviter_aff >= Affiliation::Admin
                || (inviter_aff >= Affiliation::Member && self.config.allow_invites)
        } else {
            self.config.allow_invites || self.role_of(from) == Role::Moderator
        };
        if !may_invite {
            return Err(StanzaError::with_text(
                Condition::Forbidden,
                "you may not invite to this room",
            ));
        }
        let mut invitees = Vec::new();
        for inv in x.children().filter(|c| c.is("invite", NS_MUC_USER)) {
            let to = inv
                .attr("to")
                .and_then(|t| parse_jid(t).ok())
                .ok_or(Condition::JidMalformed)?;
            self.user_outside_service(&to)?;
            if self.affiliation(&to.bare()) == Affiliation::Outcast {
                // Only the admins lift a ban, through the outcast list.
                return Err(StanzaError::with_text(
                    Condition::Forbidden,
                    "that user is banned from this room",
                ));
            }
            invitees.push((to, inv.get_child("reason", NS_MUC_USER).map(|r| r.text())));
        }
        for (to, reason) in invitees {
            let bare = to.bare();
            if self.config.members_only && self.affiliation(&bare) < Affiliation::Member {
                self.affiliations.insert(
                    bare.clone(),
                    AffItem {
                        affiliation: Affiliation::Member,
                        nick: None,
                        reason: None,
                    },
                );
                o.changed = true;
            }
            self.remember_invite(bare, inviter.clone(), now_ms);
            let mut msg = elem("message", NS_CLIENT, &[]);
            set_attr(&mut msg, "from", self.jid.to_string());
            set_attr(&mut msg, "to", to.to_string());
            let mut ux = Element::bare("x", NS_MUC_USER);
            let mut i = elem("invite", NS_MUC_USER, &[("from", inviter.as_str())]);
            if let Some(r) = &reason {
                i.append_child(text_elem("reason", NS_MUC_USER, r));
            }
            ux.append_child(i);
            if let Some(p) = &self.config.password {
                ux.append_child(text_elem("password", NS_MUC_USER, p));
            }
            msg.append_child(ux);
            msg.append_child(text_elem(
                "body",
                NS_CLIENT,
                &format!("{nick} invites you to the room {}", self.jid),
            ));
            o.out.push(msg);
        }
        Ok(())
    }

    /// Invitations and declines go to users. On this service's domain they would make the room
    /// message itself, another room or an occupant JID in a user's name.
    fn user_outside_service(&self, to: &Jid) -> Result<(), StanzaError> {
        if to.domain() == self.jid.domain() {
            return Err(StanzaError::with_text(
                Condition::BadRequest,
                "invitations and declines go to users, not to this chat service",
            ));
        }
        Ok(())
    }

    fn remember_invite(&mut self, invitee: BareJid, inviter: BareJid, now_ms: i64) {
        self.expire_invites(now_ms);
        self.pending_invites
            .retain(|p| !(p.invitee == invitee && p.inviter == inviter));
        if self.pending_invites.len() >= MAX_PENDING_INVITES {
            self.pending_invites.pop_front();
        }
        self.pending_invites.push_back(PendingInvite {
            invitee,
            inviter,
            at_ms: now_ms,
        });
    }

    fn expire_invites(&mut self, now_ms: i64) {
        self.pending_invites
            .retain(|p| now_ms.saturating_sub(p.at_ms) <= INVITE_TTL_MS);
    }

    /// Entering answers the user's invitations: no decline may follow.
    pub(super) fn invitations_answered(&mut self, invitee: &BareJid) {
        self.pending_invites.retain(|p| &p.invitee != invitee);
    }

    /// XEP-0045 §7.8.2: the invitee declines through the room, which tells the inviter. The
    /// invitee is not an occupant, so only an invitation the room sent lets a decline through,
    /// and it goes to whoever sent that invitation: the one the decline names if that user
    /// invited the decliner, else the latest inviter. One invitation, one decline.
    pub(super) fn decline(
        &mut self,
        from: &FullJid,
        d: &Element,
        o: &mut Outcome,
        now_ms: i64,
    ) -> Result<(), StanzaError> {
        let named = match d.attr("to") {
            Some(t) => Some(parse_jid(t).map_err(|_| Condition::JidMalformed)?),
            None => None,
        };
        if let Some(to) = &named {
            self.user_outside_service(to)?;
        }
        self.expire_invites(now_ms);
        let invitee = from.bare();
        let named = named.map(|j| j.bare());
        let mine = |p: &PendingInvite| p.invitee == invitee;
        let pending = self
            .pending_invites
            .iter()
            .rposition(|p| mine(p) && Some(&p.inviter) == named.as_ref())
            .or_else(|| self.pending_invites.iter().rposition(mine));
        let Some(inviter) = pending
            .and_then(|i| self.pending_invites.remove(i))
            .map(|p| p.inviter)
        else {
            return Err(StanzaError::with_text(
                Condition::NotAcceptable,
                "no invitation of yours to this room is pending",
            ));
        };
        let mut msg = elem("message", NS_CLIENT, &[]);
        set_attr(&mut msg, "from", self.jid.to_string());
        set_attr(&mut msg, "to", inviter.to_string());
        let mut ux = Element::bare("x", NS_MUC_USER);
        let mut dl = elem("decline", NS_MUC_USER, &[("from", invitee.as_str())]);
        if let Some(r) = d.get_child("reason", NS_MUC_USER) {
            dl.append_child(text_elem("reason", NS_MUC_USER, &r.text()));
        }
        ux.append_child(dl);
        msg.append_child(ux);
        o.out.push(msg);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::fixtures::*;

    fn invite(room: &mut Room, from: &str, to: &str, now_ms: i64) -> Outcome {
        room.handle(
            &st(&format!(
                "<message xmlns='jabber:client' from='{from}' to='{ROOM}'>\
             <x xmlns='{NS_MUC_USER}'><invite to='{to}'><reason>join us</reason></invite></x>\
             </message>"
            )),
            now_ms,
        )
    }

    fn decline(room: &mut Room, from: &str, to: &str, now_ms: i64) -> Outcome {
        room.handle(
            &st(&format!(
                "<message xmlns='jabber:client' from='{from}' to='{ROOM}'>\
             <x xmlns='{NS_MUC_USER}'><decline to='{to}'><reason>busy</reason></decline></x>\
             </message>"
            )),
            now_ms,
        )
    }

    fn invitation_to(o: &Outcome, to: &str) -> Option<Element> {
        to_of(o, to).into_iter().find(|m| {
            m.get_child("x", NS_MUC_USER)
                .and_then(|x| x.get_child("invite", NS_MUC_USER))
                .is_some()
        })
    }

    #[test]
    fn declines_go_to_the_inviter_of_a_pending_invitation_only() {
        let mut room = configured("", 0);
        join(&mut room, "bob@example.org/b", "bob");
        // A decline from someone never invited goes nowhere: the room has no inviter to tell.
        let o = decline(&mut room, "carol@example.org/c", "alice@example.org", 0);
        assert_eq!(error_of(&o).as_deref(), Some("not-acceptable"));
        assert_eq!(o.out.len(), 1, "only the error, to carol: {:?}", o.out);

        let o = invite(&mut room, "alice@example.org/a", "carol@example.org", 0);
        let inv = invitation_to(&o, "carol@example.org").unwrap();
        assert_eq!(inv.attr("from"), Some(ROOM));
        // Carol declines naming bob: the decline still goes to alice, who invited her, and to
        // nobody else.
        let o = decline(&mut room, "carol@example.org/c", "bob@example.org", 5);
        assert_eq!(o.out.len(), 1, "{:?}", o.out);
        let m = &to_of(&o, "alice@example.org")[0];
        assert_eq!(m.attr("from"), Some(ROOM));
        let d = m
            .get_child("x", NS_MUC_USER)
            .and_then(|x| x.get_child("decline", NS_MUC_USER))
            .unwrap();
        assert_eq!(d.attr("from"), Some("carol@example.org"));
        assert_eq!(
            d.get_child("reason", NS_MUC_USER).map(|r| r.text()),
            Some("busy".into())
        );
        // One invitation, one decline.
        let o = decline(&mut room, "carol@example.org/c", "alice@example.org", 6);
        assert_eq!(error_of(&o).as_deref(), Some("not-acceptable"));

        // Two inviters: the decline goes to the one it names.
        room.config.allow_invites = true;
        invite(&mut room, "alice@example.org/a", "dave@example.org", 10);
        invite(&mut room, "bob@example.org/b", "dave@example.org", 11);
        let o = decline(&mut room, "dave@example.org/d", "alice@example.org", 12);
        assert_eq!(to_of(&o, "alice@example.org").len(), 1);
        let o = decline(&mut room, "dave@example.org/d", "alice@example.org", 13);
        assert_eq!(
            to_of(&o, "bob@example.org").len(),
            1,
            "the one left: {:?}",
            o.out
        );
    }

    #[test]
    fn pending_invitations_expire_are_bounded_and_end_on_entering() {
        let mut room = configured("", 0);
        invite(&mut room, "alice@example.org/a", "carol@example.org", 0);
        let o = decline(
            &mut room,
            "carol@example.org/c",
            "alice@example.org",
            INVITE_TTL_MS + 1,
        );
        assert_eq!(error_of(&o).as_deref(), Some("not-acceptable"), "expired");

        for i in 0..=MAX_PENDING_INVITES {
            invite(
                &mut room,
                "alice@example.org/a",
                &format!("u{i}@example.org"),
                0,
            );
        }
        let o = decline(&mut room, "u0@example.org/x", "alice@example.org", 1);
        assert_eq!(
            error_of(&o).as_deref(),
            Some("not-acceptable"),
            "the oldest was forgotten"
        );
        let o = decline(&mut room, "u1@example.org/x", "alice@example.org", 1);
        assert_eq!(to_of(&o, "alice@example.org").len(), 1);

        // Entering the room answers the invitation: no decline may follow.
        join(&mut room, "u2@example.org/x", "u2");
        let o = decline(&mut room, "u2@example.org/x", "alice@example.org", 1);
        assert_eq!(error_of(&o).as_deref(), Some("not-acceptable"));
    }

    #[test]
    fn only_occupants_invite_and_never_to_this_service() {
        let mut room = configured("", 0);
        // Not in the room: refused, nothing sent to the invitee.
        let o = invite(&mut room, "carol@example.org/c", "dave@example.org", 0);
        assert_eq!(error_of(&o).as_deref(), Some("not-acceptable"));
        assert_eq!(o.out.len(), 1);
        // An occupant who is not a moderator, while the room does not allow invitations.
        join(&mut room, "bob@example.org/b", "bob");
        let o = invite(&mut room, "bob@example.org/b", "dave@example.org", 0);
        assert_eq!(error_of(&o).as_deref(), Some("forbidden"));
        // The room itself, another room, an occupant JID or the service: never.
        for to in [
            ROOM.to_owned(),
            "other@conference.example.org".to_owned(),
            format!("{ROOM}/bob"),
            "conference.example.org".to_owned(),
        ] {
            let o = invite(&mut room, "alice@example.org/a", &to, 0);
            assert_eq!(error_of(&o).as_deref(), Some("bad-request"), "{to}");
            assert_eq!(o.out.len(), 1, "{to}");
        }
        invite(&mut room, "alice@example.org/a", "carol@example.org", 0);
        for to in [ROOM, "conference.example.org"] {
            let o = decline(&mut room, "carol@example.org/c", to, 0);
            assert_eq!(error_of(&o).as_deref(), Some("bad-request"), "{to}");
            assert_eq!(o.out.len(), 1, "{to}");
        }
        // A banned user is not invited (and so not made a member).
        admin_set(
            &mut room,
            "<item jid='eve@example.org' affiliation='outcast'/>",
        );
        let o = invite(&mut room, "alice@example.org/a", "eve@example.org", 0);
        assert_eq!(error_of(&o).as_deref(), Some("forbidden"));
        assert_eq!(
            room.affiliation(&BareJid::new("eve@example.org").unwrap()),
            Affiliation::Outcast
        );
    }

    #[test]
    fn members_only_invitations_add_members_when_the_inviter_may_edit_the_list() {
        let mut room = configured(&field("muc#roomconfig_membersonly", "1"), 0);
        for who in ["bob", "carol"] {
            admin_set(
                &mut room,
                &format!("<item jid='{who}@example.org' affiliation='member'/>"),
            );
        }
        admin_set(
            &mut room,
            "<item jid='ann@example.org' affiliation='admin'/>",
        );
        join(&mut room, "bob@example.org/b", "bob");
        join(&mut room, "ann@example.org/a", "ann");
        // A moderator who is only a member does not edit the member list.
        admin_set(&mut room, "<item nick='bob' role='moderator'/>");
        let dave = BareJid::new("dave@example.org").unwrap();
        let o = invite(&mut room, "bob@example.org/b", "dave@example.org", 0);
        assert_eq!(error_of(&o).as_deref(), Some("forbidden"));
        assert_eq!(room.affiliation(&dave), Affiliation::None);
        // An admin's invitation makes the invitee a member (§7.8.2).
        let o = invite(&mut room, "ann@example.org/a", "dave@example.org", 0);
        assert!(invitation_to(&o, "dave@example.org").is_some());
        assert!(o.changed);
        assert_eq!(room.affiliation(&dave), Affiliation::Member);
        // With muc#roomconfig_allowinvites, members invite too, and add members.
        room.config.allow_invites = true;
        let erin = BareJid::new("erin@example.org").unwrap();
        let o = invite(&mut room, "bob@example.org/b", "erin@example.org", 0);
        assert!(invitation_to(&o, "erin@example.org").is_some());
        assert_eq!(room.affiliation(&erin), Affiliation::Member);
        // Nor does it lift a ban: only the outcast list does.
        admin_set(
            &mut room,
            "<item jid='eve@example.org' affiliation='outcast'/>",
        );
        let o = invite(&mut room, "ann@example.org/a", "eve@example.org", 0);
        assert_eq!(error_of(&o).as_deref(), Some("forbidden"));
        let eve = BareJid::new("eve@example.org").unwrap();
        assert_eq!(room.affiliation(&eve), Affiliation::Outcast);
        // An invitation never lowers an affiliation.
        invite(&mut room, "bob@example.org/b", "ann@example.org", 0);
        assert_eq!(
            room.affiliation(&BareJid::new("ann@example.org").unwrap()),
            Affiliation::Admin
        );
    }

    /// RFC 7622 §3.2: a JID written with a final dot on its domain names the same entity, in an
    /// affiliation change, an invitation and a decline alike.
    #[test]
    fn jids_in_payloads_lose_the_final_dot() {
        let mut room = configured("", 0);
        let o = room.handle(
            &admin_item(
                "alice@example.org/a",
                "<item affiliation='member' jid='dave@example.org.'/>",
            ),
            0,
        );
        assert_eq!(to_of(&o, "dave@example.org").len(), 1, "{:?}", o.out);
        let dave = BareJid::new("dave@example.org").unwrap();
        assert_eq!(room.affiliation(&dave), Affiliation::Member);

        let o = invite(&mut room, "alice@example.org/a", "carol@example.org.", 0);
        assert!(
            invitation_to(&o, "carol@example.org").is_some(),
            "{:?}",
            o.out
        );

        // Two inviters: the decline goes to the one it names, final dot or not.
        join(&mut room, "bob@example.org/b", "bob");
        room.config.allow_invites = true;
        invite(&mut room, "alice@example.org/a", "erin@example.org", 1);
        invite(&mut room, "bob@example.org/b", "erin@example.org", 2);
        let o = decline(&mut room, "erin@example.org/e", "alice@example.org.", 3);
        assert_eq!(to_of(&o, "alice@example.org").len(), 1, "{:?}", o.out);
    }
}
