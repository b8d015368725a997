//! IQs to the room and its occupants: disco#info (XEP-0045 §6.4) and disco#items (§6.5) of the
//! room, self-ping (XEP-0410), requests forwarded between occupants and their answers, and the
//! dispatch of the admin, owner and registration queries to their modules.

use jid::FullJid;
use minidom::Element;
use xmppd_core::address::Bare;
use xmppd_core::stanza::{self, elem, iq_result, set_attr, Condition, StanzaError};

use super::{
    Outcome, Room, FEATURE_SELF_PING, NODE_ROOMUSER, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_MUC,
    NS_MUC_ADMIN, NS_MUC_OWNER, NS_REGISTER,
};
use crate::archive::NS_MODERATE;
use crate::form::{FormBuilder, Whois, FORM_ROOMINFO};
use crate::occupant_id::NS_OCCUPANT_ID;

/// IQ requests between occupants whose answer is still awaited, per room (the oldest are
/// forgotten first: their answers then go to the asker's oldest session).
const MAX_PENDING_IQS: usize = 256;

/// An IQ request forwarded from one occupant to another.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PendingIq {
    /// The nick that will answer.
    responder: String,
    /// The asking occupant's nick, and the session that asked.
    asker: String,
    session: FullJid,
    id: String,
}

impl Room {
    pub(super) fn on_iq(
        &mut self,
        from: &FullJid,
        nick: Option<String>,
        iq: &Element,
        o: &mut Outcome,
        now_ms: i64,
    ) -> Result<(), StanzaError> {
        let kind = iq.attr("type").unwrap_or("");
        if let Some(target) = nick {
            return self.iq_to_occupant(from, &target, iq, o);
        }
        if !matches!(kind, "get" | "set") {
            return Ok(());
        }
        let Some(payload) = iq.children().next() else {
            return Err(Condition::BadRequest.into());
        };
        let ns = payload.ns();
        let answer = match (ns.as_str(), kind) {
            (NS_DISCO_INFO, "get") => match payload.attr("node") {
                None => Some(self.disco_info()),
                Some(NODE_ROOMUSER) => Some(self.roomuser_item(&from.bare())),
                Some(_) => return Err(Condition::ItemNotFound.into()),
            },
            (NS_DISCO_ITEMS, "get") => Some(self.disco_items(from)),
            (stanza::NS_PING, "get") => None,
            (NS_MUC_ADMIN, "get") => Some(self.admin_get(from, payload)?),
            (NS_MUC_ADMIN, "set") => {
                self.admin_set(from, payload, o)?;
                None
            }
            (NS_REGISTER, "get") => Some(self.register_get(from)?),
            (NS_REGISTER, "set") => {
                self.register_set(from, payload, o)?;
                None
            }
            (NS_MUC_OWNER, "get") => Some(self.owner_get(from)?),
            (NS_MUC_OWNER, "set") => {
                self.owner_set(from, payload, o)?;
                None
            }
            // A room whose history is in memory moderates that (`crate::archive`).
            (NS_MODERATE, "set")
                if !self.config.archived || self.archive_features.contains(&NS_MODERATE) =>
            {
                self.moderate(from, payload, o, now_ms)?;
                None
            }
            _ => return Err(Condition::ServiceUnavailable.into()),
        };
        o.out.insert(0, iq_result(iq, answer));
        Ok(())
    }

    fn iq_to_occupant(
        &mut self,
        from: &FullJid,
        target: &str,
        iq: &Element,
        o: &mut Outcome,
    ) -> Result<(), StanzaError> {
        let kind = iq.attr("type").unwrap_or("");
        let sender = self.sessions.get(from).cloned();
        if matches!(kind, "result" | "error") {
            // An answer from an occupant to a request we forwarded on another occupant's behalf:
            // it goes to the session that asked, if it is still in the room.
            let sessions = self.occupants.get(target).map(|x| x.sessions.clone());
            if let (Some(sender), Some(sessions)) = (sender, sessions) {
                let id = iq.attr("id").unwrap_or("");
                let pending = self
                    .pending_iqs
                    .iter()
                    .position(|p| p.responder == sender && p.asker == target && p.id == id);
                let asked = pending
                    .and_then(|i| self.pending_iqs.remove(i))
                    .map(|p| p.session)
                    .filter(|s| sessions.contains(s));
                if let Some(s) = asked.as_ref().or(sessions.first()) {
                    let mut a = iq.clone();
                    set_attr(&mut a, "from", self.occupant_jid(&sender));
                    set_attr(&mut a, "to", s.to_string());
                    o.out.push(a);
                }
            }
            return Ok(());
        }
        let Some(sender) = sender else {
            return Err(StanzaError::with_text(
                Condition::NotAcceptable,
                "you are not in this room",
            ));
        };
        let is_ping = iq.get_child("ping", stanza::NS_PING).is_some();
        if is_ping && sender == target {
            // XEP-0410: the service answers a self-ping itself.
            o.out.push(iq_result(iq, None));
            return Ok(());
        }
        let Some(occ) = self.occupants.get(target) else {
            return Err(StanzaError::new(Condition::ItemNotFound));
        };
        // One request, one answer: the oldest session of the occupant gets it.
        if let Some(s) = occ.sessions.first() {
            let mut fwd = iq.clone();
            set_attr(&mut fwd, "from", self.occupant_jid(&sender));
            set_attr(&mut fwd, "to", s.to_string());
            o.out.push(fwd);
            if self.pending_iqs.len() >= MAX_PENDING_IQS {
                self.pending_iqs.pop_front();
            }
            self.pending_iqs.push_back(PendingIq {
                responder: target.to_owned(),
                asker: sender,
                session: from.clone(),
                id: iq.attr("id").unwrap_or("").to_owned(),
            });
        }
        Ok(())
    }

    /// The room's disco#info (XEP-0045 §6.4) with the `muc#roominfo` form.
    pub fn disco_info(&self) -> Element {
        let mut q = Element::bare("query", NS_DISCO_INFO);
        let name = if self.config.name.is_empty() {
            self.jid.node().map(|n| n.to_string()).unwrap_or_default()
        } else {
            self.config.name.clone()
        };
        q.append_child(elem(
            "identity",
            NS_DISCO_INFO,
            &[
                ("category", "conference"),
                ("type", "text"),
                ("name", &name),
            ],
        ));
        let c = &self.config;
        let pick = |b: bool, yes: &'static str, no: &'static str| if b { yes } else { no };
        let features = [
            NS_MUC,
            NS_DISCO_INFO,
            NS_DISCO_ITEMS,
            NS_REGISTER,
            stanza::NS_PING,
            FEATURE_SELF_PING,
            pick(c.persistent, "muc_persistent", "muc_temporary"),
            pick(c.public, "muc_public", "muc_hidden"),
            pick(c.members_only, "muc_membersonly", "muc_open"),
            pick(c.moderated, "muc_moderated", "muc_unmoderated"),
            pick(
                c.password.is_some(),
                "muc_passwordprotected",
                "muc_unsecured",
            ),
            pick(
                c.whois == Whois::Anyone,
                "muc_nonanonymous",
                "muc_semianonymous",
            ),
        ];
        let archive = if c.archived {
            self.archive_features
        } else {
            &[NS_MODERATE]
        };
        let ids = self.occupant_ids.as_ref().map(|_| NS_OCCUPANT_ID);
        for f in features.iter().chain(archive).chain(ids.iter()) {
            q.append_child(elem("feature", NS_DISCO_INFO, &[("var", f)]));
        }
        let count = self.occupants.len().to_string();
        q.append_child(
            FormBuilder::new("result", FORM_ROOMINFO)
                .field(
                    "muc#roominfo_description",
                    "",
                    "Description",
                    &[&c.description],
                )
                .field("muc#roominfo_subject", "", "Subject", &[&self.subject])
                .field("muc#roominfo_occupants", "", "Occupants", &[&count])
                .field("muc#roomconfig_roomname", "", "Name", &[&name])
                .build(),
        );
        q
    }

    /// Occupants, for occupants only (the list is not shown to outsiders).
    fn disco_items(&self, from: &FullJid) -> Element {
        let mut q = Element::bare("query", NS_DISCO_ITEMS);
        if self.sessions.contains_key(from) {
            for nick in self.occupants.keys() {
                q.append_child(elem(
                    "item",
                    NS_DISCO_ITEMS,
                    &[("jid", &self.occupant_jid(nick))],
                ));
            }
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use crate::room::fixtures::*;

    #[test]
    fn several_sessions_are_one_occupant_and_iq_answers_find_their_session() {
        let mut room = configured("", 0);
        join(&mut room, "bob@example.org/b", "bob");
        let o = join(&mut room, "bob@example.org/phone", "bob");
        // Alice sees bob (again) under one occupant JID, never a second occupant.
        let to_al = to_of(&o, "alice@example.org/a");
        assert!(to_al
            .iter()
            .all(|p| p.attr("from") == Some(&*format!("{ROOM}/bob"))));
        assert_eq!(room.occupant_count(), 2);
        // Bob's second session asks al; al's answer goes back to that session.
        let o = room.handle(
            &st(&format!(
                "<iq xmlns='jabber:client' type='get' id='v1' from='bob@example.org/phone' \
             to='{ROOM}/al'><query xmlns='jabber:iq:version'/></iq>"
            )),
            0,
        );
        assert_eq!(o.out[0].attr("to"), Some("alice@example.org/a"));
        assert_eq!(o.out[0].attr("from"), Some(&*format!("{ROOM}/bob")));
        let o = room.handle(
            &st(&format!(
                "<iq xmlns='jabber:client' type='result' id='v1' from='alice@example.org/a' \
             to='{ROOM}/bob'/>"
            )),
            0,
        );
        assert_eq!(o.out[0].attr("to"), Some("bob@example.org/phone"));
        // A request to bob goes to one session only: the oldest.
        let o = room.handle(
            &st(&format!(
                "<iq xmlns='jabber:client' type='get' id='p' from='alice@example.org/a' \
             to='{ROOM}/bob'><query xmlns='jabber:iq:version'/></iq>"
            )),
            0,
        );
        assert_eq!(o.out.len(), 1);
        assert_eq!(o.out[0].attr("to"), Some("bob@example.org/b"));
        // One session going away (e.g. its connection dropped) is invisible to the others; the
        // last one leaving is the occupant leaving.
        let gone = |res: &str| {
            st(&format!(
                "<presence xmlns='jabber:client' type='unavailable' from='bob@example.org/{res}' \
             to='{ROOM}/bob'/>"
            ))
        };
        let o = room.handle(&gone("b"), 0);
        assert!(to_of(&o, "alice@example.org/a").is_empty());
        assert_eq!(codes(&to_of(&o, "bob@example.org/b")[0]), ["110"]);
        let o = room.handle(&gone("phone"), 0);
        assert_eq!(
            to_of(&o, "alice@example.org/a")[0].attr("type"),
            Some("unavailable")
        );
        assert_eq!(room.occupant_count(), 1);
    }
}
