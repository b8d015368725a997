//! The owner's use cases: the initial configuration of a locked room (XEP-0045 §10.1), later
//! configuration changes (§10.2) and destroying the room (§10.9).

use jid::FullJid;
use minidom::Element;
use xmppd_core::address::Bare;
use xmppd_core::stanza::{elem, set_attr, text_elem, Condition, StanzaError, NS_CLIENT};

use super::{
    add_status, data_form, status, Affiliation, Extra, Outcome, Role, Room, NS_MUC_OWNER,
    NS_MUC_USER,
};
use crate::form::{RoomConfig, Whois};

impl Room {
    pub(super) fn owner_get(&self, from: &FullJid) -> Result<Element, StanzaError> {
        if self.affiliation(&from.bare()) != Affiliation::Owner {
            return Err(StanzaError::new(Condition::Forbidden));
        }
        let mut q = Element::bare("query", NS_MUC_OWNER);
        q.append_child(self.config.to_form("form", self.limits.max_occupants));
        Ok(q)
    }

    pub(super) fn owner_set(
        &mut self,
        from: &FullJid,
        q: &Element,
        o: &mut Outcome,
    ) -> Result<(), StanzaError> {
        if self.affiliation(&from.bare()) != Affiliation::Owner {
            return Err(StanzaError::new(Condition::Forbidden));
        }
        if let Some(d) = q.get_child("destroy", NS_MUC_OWNER) {
            self.destroy(d, o);
            return Ok(());
        }
        let form = data_form(q)?;
        match form.kind.as_str() {
            "cancel" => {
                if self.locked {
                    // XEP-0045 §10.1.3: cancelling the initial configuration destroys the room.
                    self.destroy(&Element::bare("destroy", NS_MUC_OWNER), o);
                }
                Ok(())
            }
            "submit" => {
                let new =
                    self.config
                        .apply(&form, self.limits.max_occupants, self.limits.max_history)?;
                self.reconfigure(new, o);
                Ok(())
            }
            _ => Err(Condition::BadRequest.into()),
        }
    }

    fn reconfigure(&mut self, new: RoomConfig, o: &mut Outcome) {
        let old = std::mem::replace(&mut self.config, new);
        let was_locked = std::mem::replace(&mut self.locked, false);
        o.changed = true;
        if was_locked {
            return;
        }
        let mut codes = vec![104];
        if old.whois != self.config.whois {
            codes.push(if self.config.whois == Whois::Anyone {
                172
            } else {
                173
            });
        }
        if old.archived != self.config.archived {
            codes.push(if self.config.archived { 170 } else { 171 });
        }
        let mut msg = elem("message", NS_CLIENT, &[("type", "groupchat")]);
        set_attr(&mut msg, "from", self.jid.to_string());
        let mut x = Element::bare("x", NS_MUC_USER);
        for c in codes {
            x.append_child(status(c));
        }
        msg.append_child(x);
        self.to_all(msg, o);
        if self.config.members_only && !old.members_only {
            let outsiders: Vec<String> = self
                .occupants
                .values()
                .filter(|x| self.affiliation(&x.real) < Affiliation::Member)
                .map(|x| x.nick.clone())
                .collect();
            for n in outsiders {
                self.remove_occupant(&n, &Extra::default(), &[322], o);
            }
        }
    }

    /// Every occupant leaves, told that the service shut the room down for them (status
    /// 332, XEP-0045 §15.6.2): this process no longer hosts it (its lease went to another
    /// process of the service). Its state is not changed: the next host reads it back.
    pub fn shut_down(&mut self) -> Outcome {
        let mut o = Outcome::default();
        let nicks: Vec<String> = self.occupants.keys().cloned().collect();
        for n in nicks {
            self.remove_occupant(&n, &Extra::default(), &[332], &mut o);
        }
        o
    }

    /// Destroys the room on the service's own authority (a server administrator through
    /// the administration API), as an owner's §10.9 request with `reason` would.
    pub fn destroy_by_service(&mut self, reason: Option<&str>) -> Outcome {
        let mut d = Element::bare("destroy", NS_MUC_OWNER);
        if let Some(r) = reason.filter(|r| !r.is_empty()) {
            d.append_child(text_elem("reason", NS_MUC_OWNER, r));
        }
        let mut o = Outcome::default();
        self.destroy(&d, &mut o);
        o
    }

    fn destroy(&mut self, d: &Element, o: &mut Outcome) {
        let mut notice = Element::bare("destroy", NS_MUC_USER);
        if let Some(alt) = d.attr("jid") {
            set_attr(&mut notice, "jid", alt);
        }
        if let Some(r) = d.get_child("reason", NS_MUC_OWNER) {
            notice.append_child(text_elem("reason", NS_MUC_USER, &r.text()));
        }
        let nicks: Vec<String> = self.occupants.keys().cloned().collect();
        for n in nicks {
            let extra = Extra {
                destroy: Some(notice.clone()),
                affiliation: Some(Affiliation::None),
                ..Extra::default()
            };
            if let Some(mut occ) = self.occupants.remove(&n) {
                occ.role = Role::None;
                occ.presence = Element::bare("presence", NS_CLIENT);
                for s in &occ.sessions {
                    self.sessions.remove(s);
                    let mut el = self.presence_for(&occ, s, true, &extra, &[]);
                    add_status(&mut el, 110);
                    o.out.push(el);
                }
                // The others hear it too, while they are still listed.
                for other in self.occupants.values() {
                    for s in &other.sessions {
                        o.out.push(self.presence_for(&occ, s, true, &extra, &[]));
                    }
                }
            }
        }
        self.config.persistent = false;
        o.changed = true;
        o.destroyed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::fixtures::*;
    use jid::BareJid;

    #[test]
    fn a_locked_room_admits_only_its_owner_until_configured() {
        let owner = BareJid::new("alice@example.org").unwrap();
        let mut room = Room::create(BareJid::new(ROOM).unwrap(), owner, limits(0));
        join(&mut room, "alice@example.org/a", "al");
        let o = join(&mut room, "bob@example.org/b", "bob");
        assert_eq!(error_of(&o).as_deref(), Some("item-not-found"));
        // The owner accepts the default (instant room): now anyone may enter.
        let mut room = configured("", 0);
        let o = join(&mut room, "bob@example.org/b", "bob");
        let to_bob = to_of(&o, "bob@example.org/b");
        // Bob sees al, then himself with 110; al sees bob; then the subject follows.
        assert_eq!(to_bob[0].attr("from"), Some(&*format!("{ROOM}/al")));
        assert_eq!(codes(&to_bob[1]), ["110"]);
        assert_eq!(to_of(&o, "alice@example.org/a").len(), 1);
        assert!(o.after[0].get_child("subject", NS_CLIENT).is_some());
        assert!(o.history_for.is_some());
    }

    #[test]
    fn destroy_tells_everyone_the_alternate_venue() {
        let mut room = configured("", 0);
        join(&mut room, "bob@example.org/b", "bob");
        let o = room.handle(
            &st(&format!(
            "<iq xmlns='jabber:client' type='set' id='d' from='alice@example.org/a' to='{ROOM}'>\
             <query xmlns='{NS_MUC_OWNER}'><destroy jid='new@conference.example.org'>\
             <reason>moved</reason></destroy></query></iq>"
        )),
            0,
        );
        assert!(o.destroyed && room.gone);
        let to_bob = to_of(&o, "bob@example.org/b");
        let d = to_bob
            .iter()
            .find_map(|p| {
                p.get_child("x", NS_MUC_USER)?
                    .get_child("destroy", NS_MUC_USER)
            })
            .unwrap();
        assert_eq!(d.attr("jid"), Some("new@conference.example.org"));
    }
}
