//! Roles (XEP-0045 §8): kicking (§8.2), granting and revoking voice (§8.3–8.5), requesting
//! and approving voice (§7.13, §8.6), and moderator status, which only admins and owners change
//! (§9.6–9.7).

use jid::FullJid;
use minidom::Element;
use xmppd_core::address::Bare;
use xmppd_core::stanza::{elem, set_attr, Condition, StanzaError, NS_CLIENT};

use super::{Affiliation, Extra, Outcome, Role, Room};
use crate::archive::{Moderation, RetractRequest, NS_MODERATE, NS_RETRACT};
use crate::form::{Form, FormBuilder, FORM_REQUEST};
use crate::occupant_id::NS_OCCUPANT_ID;

/// XEP-0428 fallback indication.
const NS_FALLBACK: &str = "urn:xmpp:fallback:0";
/// The body of a moderation announcement, for clients without XEP-0424 and XEP-0425.
const MODERATED_TEXT: &str = "This message has been moderated";

impl Room {
    /// XEP-0425: a moderator retracts any message of the archive, `<moderate id=ARCHIVE-ID>
    /// <retract/><reason/></moderate>`. The room broadcasts (and archives) the retraction in
    /// its own name, `<retract id=…><moderated by=MODERATOR/><reason/></retract>`, once the
    /// archive has made the message a tombstone; the archive refuses an id it does not hold.
    pub(super) fn moderate(
        &mut self,
        from: &FullJid,
        m: &Element,
        o: &mut Outcome,
        now_ms: i64,
    ) -> Result<(), StanzaError> {
        let nick = self.occupant_nick(from)?.to_owned();
        if self.role_of(from) != Role::Moderator {
            return Err(StanzaError::with_text(
                Condition::Forbidden,
                "only moderators moderate messages",
            ));
        }
        let target = (m.attr("id").filter(|id| !id.is_empty()))
            .ok_or_else(|| StanzaError::with_text(Condition::BadRequest, "which message?"))?;
        if !m.has_child("retract", NS_RETRACT) {
            // Retraction is the only moderation action defined (XEP-0425 §1).
            return Err(StanzaError::new(Condition::FeatureNotImplemented));
        }
        let reason =
            (m.get_child("reason", NS_MODERATE).map(Element::text)).filter(|r| !r.is_empty());
        let by = self.occupant_jid(&nick);
        let mut retract = elem("retract", NS_RETRACT, &[("id", target)]);
        let mut moderated = elem("moderated", NS_MODERATE, &[("by", &by)]);
        if let Some(id) = (self.occupants.get(&nick)).and_then(|x| x.occupant_id.as_deref()) {
            // XEP-0425 §4: who moderated, by an id that outlives the nick.
            moderated.append_child(elem("occupant-id", NS_OCCUPANT_ID, &[("id", id)]));
        }
        retract.append_child(moderated);
        if let Some(r) = &reason {
            let mut el = Element::bare("reason", NS_RETRACT);
            el.append_text(r.as_str());
            retract.append_child(el);
        }
        let mut msg = elem(
            "message",
            NS_CLIENT,
            &[("type", "groupchat"), ("from", self.jid.as_str())],
        );
        msg.append_child(retract);
        // XEP-0424 §5 and XEP-0428: clients that know neither retraction nor moderation show
        // the body, which the others skip as a fallback for what they do understand.
        let mut body = Element::bare("body", NS_CLIENT);
        body.append_text(match &reason {
            Some(r) => format!("{MODERATED_TEXT}: {r}"),
            None => MODERATED_TEXT.to_owned(),
        });
        msg.append_child(body);
        for ns in [NS_RETRACT, NS_MODERATE] {
            msg.append_child(elem("fallback", NS_FALLBACK, &[("for", ns)]));
        }
        let sender = from.bare();
        o.retract = Some(RetractRequest {
            target: target.to_owned(),
            sender: sender.clone(),
            id: None,
            moderation: Some(Moderation { by, reason }),
        });
        self.archive_and_broadcast(msg, sender, o, now_ms);
        Ok(())
    }

    /// A visitor's voice request goes to the moderators; a moderator's approval grants voice.
    pub(super) fn voice_request(
        &mut self,
        from: &FullJid,
        form: &Form,
        o: &mut Outcome,
    ) -> Result<(), StanzaError> {
        let Some(nick) = self.sessions.get(from).cloned() else {
            return Err(StanzaError::new(Condition::NotAcceptable));
        };
        if form.kind == "submit" && form.value("muc#request_allow").is_some() {
            if self.role_of(from) != Role::Moderator {
                return Err(StanzaError::new(Condition::Forbidden));
            }
            if form.bool("muc#request_allow")? == Some(true) {
                let target = form
                    .value("muc#roomnick")
                    .ok_or(Condition::BadRequest)?
                    .to_owned();
                return self.set_role(from, &target, Role::Participant, None, o);
            }
            return Ok(());
        }
        let Some(occ) = self.occupants.get(&nick) else {
            return Ok(());
        };
        let real = occ
            .sessions
            .first()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let approval = FormBuilder::new("form", FORM_REQUEST)
            .title("Voice request")
            .field(
                "muc#role",
                "list-single",
                "Requested role",
                &["participant"],
            )
            .field("muc#jid", "jid-single", "User ID", &[&real])
            .field("muc#roomnick", "text-single", "Room Nickname", &[&nick])
            .field(
                "muc#request_allow",
                "boolean",
                "Grant voice to this person?",
                &["false"],
            )
            .build();
        let mods: Vec<&FullJid> = self
            .occupants
            .values()
            .filter(|x| x.role == Role::Moderator)
            .flat_map(|x| &x.sessions)
            .collect();
        for s in mods {
            let mut msg = elem("message", NS_CLIENT, &[]);
            set_attr(&mut msg, "from", self.jid.to_string());
            set_attr(&mut msg, "to", s.to_string());
            msg.append_child(approval.clone());
            o.out.push(msg);
        }
        Ok(())
    }

    pub(super) fn set_role(
        &mut self,
        actor: &FullJid,
        nick: &str,
        role: Role,
        reason: Option<&str>,
        o: &mut Outcome,
    ) -> Result<(), StanzaError> {
        let actor_aff = self.affiliation(&actor.bare());
        if self.role_of(actor) != Role::Moderator {
            return Err(StanzaError::new(Condition::Forbidden));
        }
        let Some(target) = self.occupants.get(nick) else {
            return Err(StanzaError::new(Condition::ItemNotFound));
        };
        let target_aff = self.affiliation(&target.real);
        // XEP-0045 §8.4, §9.7: nobody changes the role of an admin or owner, and only admins
        // and owners grant or revoke moderation.
        if target_aff >= Affiliation::Admin && target_aff >= actor_aff {
            return Err(StanzaError::new(Condition::NotAllowed));
        }
        // §8.2: nobody kicks an occupant of higher affiliation than their own. §8.5: nobody
        // revokes the voice of an admin or owner, nor of a member or above whose affiliation is
        // at or above their own (a member who moderates cannot silence another member).
        let protected = match role {
            Role::None => target_aff > actor_aff,
            Role::Visitor => {
                target_aff >= Affiliation::Admin
                    || (target_aff >= Affiliation::Member && target_aff >= actor_aff)
            }
            Role::Participant | Role::Moderator => false,
        };
        if protected {
            return Err(StanzaError::new(Condition::NotAllowed));
        }
        if (role == Role::Moderator || target.role == Role::Moderator)
            && actor_aff < Affiliation::Admin
        {
            return Err(StanzaError::new(Condition::NotAllowed));
        }
        let actor_nick = self.sessions.get(actor).cloned();
        let extra = Extra {
            actor: actor_nick.as_deref(),
            reason,
            ..Extra::default()
        };
        if role == Role::None {
            self.remove_occupant(nick, &extra, &[307], o);
            return Ok(());
        }
        let Some(t) = self.occupants.get_mut(nick) else {
            return Ok(());
        };
        t.role = role;
        let t = t.clone();
        self.broadcast(&t, false, &extra, &[], &[], o);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::fixtures::*;
    use crate::room::{Send, NS_MUC_ADMIN};

    #[test]
    fn only_moderators_moderate_and_the_room_announces_it() {
        let moderate = |from: &str| {
            st(&format!(
                "<iq xmlns='jabber:client' type='set' id='m1' from='{from}' to='{ROOM}'>\
                 <moderate xmlns='{NS_MODERATE}' id='7'><retract xmlns='{NS_RETRACT}'/>\
                 <reason>spam</reason></moderate></iq>"
            ))
        };
        let archived = field("muc#roomconfig_enablearchiving", "1");
        let mut room = configured(&archived, 0);
        room.archive_features = &[NS_MODERATE];
        join(&mut room, "bob@example.org/b", "bob");
        let o = room.handle(&moderate("bob@example.org/b"), 0);
        assert_eq!(error_of(&o).as_deref(), Some("forbidden"));
        assert!(o.retract.is_none() && o.broadcasts.is_empty());

        let mut o = room.handle(&moderate("alice@example.org/a"), 0);
        let r = o.retract.clone().unwrap();
        assert_eq!(r.target, "7");
        let by = format!("{ROOM}/al");
        assert_eq!(
            r.moderation,
            Some(Moderation {
                by: by.clone(),
                reason: Some("spam".into())
            })
        );
        assert!(o.archive.is_some(), "the announcement is archived");
        let sends = o.take_sends();
        let [Send::Shared(msg, to), Send::One(result)] = &sends[..] else {
            panic!("{sends:?}")
        };
        assert_eq!(to.len(), 2);
        assert_eq!(result.attr("type"), Some("result"));
        assert_eq!(msg.attr("from"), Some(ROOM));
        let retract = msg.get_child("retract", NS_RETRACT).unwrap();
        assert_eq!(retract.attr("id"), Some("7"));
        let moderated = retract.get_child("moderated", NS_MODERATE).unwrap();
        assert_eq!(moderated.attr("by"), Some(&*by));
        assert_eq!(
            retract.get_child("reason", NS_RETRACT).unwrap().text(),
            "spam"
        );
        // A fallback for clients without retraction (XEP-0428: the whole body).
        assert_eq!(
            msg.get_child("body", NS_CLIENT).unwrap().text(),
            "This message has been moderated: spam"
        );
        let fallbacks: Vec<_> = (msg.children())
            .filter(|c| c.is("fallback", NS_FALLBACK))
            .map(|c| (c.attr("for"), c.children().count()))
            .collect();
        assert_eq!(fallbacks, [(Some(NS_RETRACT), 0), (Some(NS_MODERATE), 0)]);

        // An archived room whose archive cannot moderate does not claim the namespace; a room
        // whose history is in memory moderates that.
        let mut room = configured(&archived, 0);
        room.archive_features = &[];
        let o = room.handle(&moderate("alice@example.org/a"), 0);
        assert_eq!(error_of(&o).as_deref(), Some("service-unavailable"));
        let mut room = configured("", 0);
        let o = room.handle(&moderate("alice@example.org/a"), 0);
        assert_eq!(error_of(&o), None);
        assert!(o.retract.is_some_and(|r| r.moderation.is_some()));
    }

    #[test]
    fn kick_ban_and_members_only() {
        let mut room = configured("", 0);
        join(&mut room, "bob@example.org/b", "bob");
        join(&mut room, "carol@example.org/c", "carol");
        let admin = |room: &mut Room, from: &str, item: &str| {
            room.handle(
                &st(&format!(
                    "<iq xmlns='jabber:client' type='set' id='k' from='{from}' to='{ROOM}'>\
                 <query xmlns='{NS_MUC_ADMIN}'>{item}</query></iq>"
                )),
                0,
            )
        };
        // A participant may not kick.
        let o = admin(
            &mut room,
            "bob@example.org/b",
            "<item nick='carol' role='none'/>",
        );
        assert_eq!(error_of(&o).as_deref(), Some("forbidden"));
        let o = admin(
            &mut room,
            "alice@example.org/a",
            "<item nick='carol' role='none'><reason>spam</reason></item>",
        );
        let to_carol = to_of(&o, "carol@example.org/c");
        assert_eq!(codes(&to_carol[0]), ["307", "110"]);
        assert_eq!(room.occupant_count(), 2);
        // The owner cannot be kicked by anyone.
        let o = admin(
            &mut room,
            "alice@example.org/a",
            "<item nick='al' role='none'/>",
        );
        assert_eq!(error_of(&o).as_deref(), Some("not-allowed"));
        let o = admin(
            &mut room,
            "alice@example.org/a",
            "<item jid='bob@example.org' affiliation='outcast'/>",
        );
        assert_eq!(codes(&to_of(&o, "bob@example.org/b")[0]), ["301", "110"]);
        assert!(o.changed);
        let o = join(&mut room, "bob@example.org/b", "bob");
        assert_eq!(error_of(&o).as_deref(), Some("forbidden"));
        // The last owner cannot step down.
        let o = admin(
            &mut room,
            "alice@example.org/a",
            "<item jid='alice@example.org' affiliation='member'/>",
        );
        assert_eq!(error_of(&o).as_deref(), Some("conflict"));

        let mut room = configured(&field("muc#roomconfig_membersonly", "1"), 0);
        let o = join(&mut room, "carol@example.org/c", "carol");
        assert_eq!(error_of(&o).as_deref(), Some("registration-required"));
    }

    #[test]
    fn moderated_rooms_silence_visitors_until_voice() {
        let mut room = configured(&field("muc#roomconfig_moderatedroom", "1"), 0);
        join(&mut room, "bob@example.org/b", "bob");
        let say = st(&format!(
            "<message xmlns='jabber:client' type='groupchat' from='bob@example.org/b' to='{ROOM}'>\
         <body>hi</body></message>"
        ));
        assert_eq!(
            error_of(&room.handle(&say, 0)).as_deref(),
            Some("forbidden")
        );
        let o = room.handle(
            &st(&format!(
            "<iq xmlns='jabber:client' type='set' id='v' from='alice@example.org/a' to='{ROOM}'>\
             <query xmlns='{NS_MUC_ADMIN}'><item nick='bob' role='participant'/></query></iq>"
        )),
            0,
        );
        assert_eq!(o.out[0].attr("type"), Some("result"));
        assert_eq!(error_of(&room.handle(&say, 0)), None);
    }

    #[test]
    fn voice_requests_reach_moderators_and_approval_grants_voice() {
        let mut room = configured(&field("muc#roomconfig_moderatedroom", "1"), 0);
        join(&mut room, "bob@example.org/b", "bob");
        let o = room.handle(
            &st(&format!(
                "<message xmlns='jabber:client' from='bob@example.org/b' to='{ROOM}'>\
             <x xmlns='jabber:x:data' type='submit'>{}{}</x></message>",
                field("FORM_TYPE", crate::form::FORM_REQUEST),
                field("muc#role", "participant")
            )),
            0,
        );
        assert_eq!(o.out.len(), 1, "only the moderator hears it");
        let req = &to_of(&o, "alice@example.org/a")[0];
        let form = Form::parse(req.get_child("x", crate::form::NS_DATA).unwrap()).unwrap();
        assert_eq!(form.value("muc#roomnick"), Some("bob"));
        // Bob cannot approve himself.
        let approve = |from: &str| {
            st(&format!(
                "<message xmlns='jabber:client' from='{from}' to='{ROOM}'>\
             <x xmlns='jabber:x:data' type='submit'>{}{}{}</x></message>",
                field("FORM_TYPE", crate::form::FORM_REQUEST),
                field("muc#roomnick", "bob"),
                field("muc#request_allow", "true")
            ))
        };
        let o = room.handle(&approve("bob@example.org/b"), 0);
        assert_eq!(error_of(&o).as_deref(), Some("forbidden"));
        let o = room.handle(&approve("alice@example.org/a"), 0);
        let p = &to_of(&o, "bob@example.org/b")[0];
        assert_eq!(item_of(p).attr("role"), Some("participant"));
    }

    #[test]
    fn voice_and_kicks_respect_affiliation_rank() {
        let mut room = configured("", 0);
        let alice = "alice@example.org/a";
        for (jid, aff) in [("bob", "member"), ("carol", "member"), ("erin", "admin")] {
            room.handle(
                &admin_item(
                    alice,
                    &format!("<item affiliation='{aff}' jid='{jid}@example.org'/>"),
                ),
                0,
            );
            join(&mut room, &format!("{jid}@example.org/r"), jid);
        }
        join(&mut room, "dave@example.org/r", "dave");
        join(&mut room, "eve@example.org/r", "eve");
        // A member and an unaffiliated user made moderators by the owner.
        for nick in ["bob", "dave"] {
            let o = room.handle(
                &admin_item(alice, &format!("<item nick='{nick}' role='moderator'/>")),
                0,
            );
            assert_eq!(error_of(&o), None);
        }
        let set = |room: &mut Room, from: &str, nick: &str, role: &str| {
            let item = format!("<item nick='{nick}' role='{role}'/>");
            let resource = if from == "alice" { "a" } else { "r" };
            let from = format!("{from}@example.org/{resource}");
            error_of(&room.handle(&admin_item(&from, &item), 0))
        };
        let refused = Some("not-allowed".to_owned());
        // §8.5: a member who moderates cannot silence another member; nobody silences an admin.
        assert_eq!(set(&mut room, "bob", "carol", "visitor"), refused);
        assert_eq!(set(&mut room, "dave", "carol", "visitor"), refused);
        assert_eq!(set(&mut room, "alice", "erin", "visitor"), refused);
        // §8.2: nobody kicks an occupant of higher affiliation.
        assert_eq!(set(&mut room, "dave", "carol", "none"), refused);
        assert_eq!(set(&mut room, "bob", "erin", "none"), refused);
        assert_eq!(room.occupant_count(), 6);
        // Lower affiliations are fair game; an owner silences a member.
        assert_eq!(set(&mut room, "bob", "eve", "visitor"), None);
        assert_eq!(set(&mut room, "dave", "eve", "none"), None);
        assert_eq!(set(&mut room, "alice", "carol", "visitor"), None);
        assert_eq!(set(&mut room, "bob", "carol", "none"), None);
        assert_eq!(room.occupant_count(), 4);
    }
}
