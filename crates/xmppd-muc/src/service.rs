//! [`MucService`]: the component that owns `conference.DOMAIN`, creates rooms on first join,
//! keeps each room behind its own lock, and routes what a room's state machine decides.
//!
//! Concurrency: the room registry is a sharded map of `Arc<Mutex<Room>>`; a stanza locks only
//! its room, for the time the room takes to handle it and to queue the resulting stanzas (so
//! every occupant sees one room's stanzas in the same order). Nothing global is held across
//! an await, so a flooded or slow room never delays another one.
//!
//! `max_rooms_per_user` counts the rooms a user owns: the stored persistent rooms (read at
//! load) and the rooms created since, kept current as owners change.
//!
//! Not done here: room name reservation without joining (XEP-0045 unique room names), s2s
//! occupants' special cases.

use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use tokio::sync::Mutex;
use xmppd_core::module::Component;
use xmppd_core::stanza::{
    self, elem, error_reply, iq_result, set_attr, Condition, StanzaError, NS_DISCO_INFO,
    NS_DISCO_ITEMS,
};
use xmppd_core::Server;
use xmppd_storage::{RoomStore, StorageError};

use crate::archive::RoomArchive;
use crate::room::{Room, RoomLimits, NS_MUC};

/// Who may create rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// Every user of a host this server serves.
    LocalUsers,
    /// Server administrators only.
    Admins,
}

/// Settings of one chat service.
#[derive(Debug, Clone)]
pub struct MucSettings {
    /// The service's domain (`conference.example.org`).
    pub domain: String,
    pub creation: Creation,
    /// Rooms one user may own (persistent ones included); 0: no limit.
    pub max_rooms_per_user: usize,
    pub limits: RoomLimits,
}

type RoomHandle = Arc<Mutex<Room>>;

/// A multi-user chat service (XEP-0045).
pub struct MucService {
    settings: MucSettings,
    rooms: DashMap<BareJid, RoomHandle>,
    /// The owners of each room in memory, for `max_rooms_per_user`.
    owners: DashMap<BareJid, Vec<BareJid>>,
    store: Arc<dyn RoomStore>,
    archive: Arc<dyn RoomArchive>,
}

impl MucService {
    /// The service with its persistent rooms loaded from `store`.
    pub async fn load(
        settings: MucSettings,
        store: Arc<dyn RoomStore>,
        archive: Arc<dyn RoomArchive>,
    ) -> Result<Arc<MucService>, StorageError> {
        let service = MucService {
            rooms: DashMap::new(),
            owners: DashMap::new(),
            store,
            archive,
            settings,
        };
        for stored in service.store.rooms(&service.settings.domain).await? {
            let jid = format!("{}@{}", stored.name, stored.domain);
            let restored = BareJid::new(&jid).ok().and_then(|j| {
                Room::restore(j.clone(), &stored, service.settings.limits).map(|r| (j, r))
            });
            match restored {
                Some((j, room)) => {
                    service.owners.insert(j.clone(), room.owners());
                    service.rooms.insert(j, Arc::new(Mutex::new(room)));
                }
                None => tracing::warn!(room = %jid, "skipping an unreadable stored room"),
            }
        }
        tracing::info!(
            domain = %service.settings.domain,
            rooms = service.rooms.len(),
            "chat service ready"
        );
        Ok(Arc::new(service))
    }

    /// How many rooms in memory (persistent or occupied) `user` owns.
    pub fn rooms_owned_by(&self, user: &BareJid) -> usize {
        self.owners
            .iter()
            .filter(|e| e.value().contains(user))
            .count()
    }

    pub fn domain(&self) -> &str {
        &self.settings.domain
    }

    /// Rooms in memory (persistent ones and those with occupants).
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    async fn handle_service(&self, server: &Arc<Server>, st: Element) {
        if st.name() != "iq" || !matches!(st.attr("type"), Some("get")) {
            if matches!(st.attr("type"), Some("set")) || st.name() == "message" {
                bounce(server, &st, Condition::ServiceUnavailable.into()).await;
            }
            return;
        }
        let payload = st.children().next().map(|p| (p.name().to_owned(), p.ns()));
        let answer = match payload.as_ref().map(|(n, ns)| (n.as_str(), ns.as_str())) {
            Some(("query", NS_DISCO_INFO)) => {
                let mut q = Element::bare("query", NS_DISCO_INFO);
                q.append_child(elem(
                    "identity",
                    NS_DISCO_INFO,
                    &[
                        ("category", "conference"),
                        ("type", "text"),
                        ("name", "Chatrooms"),
                    ],
                ));
                for f in [NS_MUC, NS_DISCO_INFO, NS_DISCO_ITEMS, stanza::NS_PING] {
                    q.append_child(elem("feature", NS_DISCO_INFO, &[("var", f)]));
                }
                Some(q)
            }
            Some(("query", NS_DISCO_ITEMS)) => Some(self.public_rooms().await),
            Some(("ping", stanza::NS_PING)) => None,
            _ => {
                bounce(server, &st, Condition::ServiceUnavailable.into()).await;
                return;
            }
        };
        server.route(iq_result(&st, answer)).await;
    }

    /// disco#items of the service: the public, configured rooms.
    async fn public_rooms(&self) -> Element {
        let handles: Vec<(BareJid, RoomHandle)> = self
            .rooms
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        let mut listed = Vec::new();
        for (jid, h) in handles {
            let room = h.lock().await;
            if room.gone || room.locked || !room.config.public {
                continue;
            }
            let name = if room.config.name.is_empty() {
                jid.node().map(|n| n.to_string()).unwrap_or_default()
            } else {
                room.config.name.clone()
            };
            listed.push((jid, name));
        }
        listed.sort();
        let mut q = Element::bare("query", NS_DISCO_ITEMS);
        for (jid, name) in listed {
            q.append_child(elem(
                "item",
                NS_DISCO_ITEMS,
                &[("jid", jid.as_str()), ("name", &name)],
            ));
        }
        q
    }

    /// The room for `jid`, created (locked, owned by the sender) when a join presence asks.
    async fn room_for(
        &self,
        server: &Arc<Server>,
        jid: &BareJid,
        st: &Element,
    ) -> Result<Option<RoomHandle>, StanzaError> {
        if let Some(h) = self.rooms.get(jid) {
            return Ok(Some(h.clone()));
        }
        let is_join = st.name() == "presence"
            && st.attr("type").is_none()
            && st
                .attr("to")
                .and_then(|t| Jid::new(t).ok())
                .is_some_and(|t| t.resource().is_some());
        if !is_join {
            return Ok(None);
        }
        let Some(from) = st.attr("from").and_then(|f| FullJid::new(f).ok()) else {
            return Ok(None);
        };
        let user = from.to_bare();
        let allowed = match self.settings.creation {
            Creation::LocalUsers => server.is_local_host(user.domain().as_str()),
            Creation::Admins => server.is_admin(&user),
        };
        if !allowed {
            return Err(StanzaError::with_text(
                Condition::NotAllowed,
                "you may not create rooms on this service",
            ));
        }
        let max = self.settings.max_rooms_per_user;
        if max > 0 && self.rooms_owned_by(&user) >= max {
            return Err(StanzaError::with_text(
                Condition::ResourceConstraint,
                "you own too many rooms",
            ));
        }
        let handle = self
            .rooms
            .entry(jid.clone())
            .or_insert_with(|| {
                self.owners.insert(jid.clone(), vec![user.clone()]);
                Arc::new(Mutex::new(Room::create(
                    jid.clone(),
                    user.clone(),
                    self.settings.limits,
                )))
            })
            .clone();
        Ok(Some(handle))
    }

    async fn handle_room(&self, server: &Arc<Server>, room_jid: BareJid, st: Element) {
        // A room may be removed between the lookup and the lock: look it up again then.
        for _ in 0..3 {
            let handle = match self.room_for(server, &room_jid, &st).await {
                Ok(Some(h)) => h,
                Ok(None) => {
                    if st.name() != "presence" {
                        bounce(server, &st, Condition::ItemNotFound.into()).await;
                    }
                    return;
                }
                Err(e) => {
                    bounce(server, &st, e).await;
                    return;
                }
            };
            let mut room = handle.lock().await;
            if room.gone {
                continue;
            }
            if let Some(answer) = self.archive_iq(&room, &st).await {
                server.route(answer).await;
                return;
            }
            let now = stanza::now_ms();
            let outcome = room.handle(&st, now);
            for el in outcome.out {
                server.route(el).await;
            }
            if let Some((to, query)) = outcome.history_for {
                let keep = room.config.history_length;
                for entry in self.archive.history(&room.jid, &query, keep, now).await {
                    let mut m = entry.message;
                    set_attr(&mut m, "to", to.to_string());
                    m.append_child(elem(
                        "delay",
                        stanza::NS_DELAY,
                        &[
                            ("from", room.jid.as_str()),
                            ("stamp", &stanza::xep82_datetime(entry.stamp_ms)),
                        ],
                    ));
                    server.route(m).await;
                }
            }
            for el in outcome.after {
                server.route(el).await;
            }
            if let Some(entry) = outcome.archive {
                let (keep, archived) = (room.config.history_length, room.config.archived);
                self.archive.store(&room.jid, entry, keep, archived).await;
            }
            if outcome.destroyed {
                self.rooms
                    .remove_if(&room_jid, |_, h| Arc::ptr_eq(h, &handle));
                self.owners.remove(&room_jid);
                self.archive.forget(&room_jid).await;
            }
            if outcome.changed && !outcome.destroyed {
                self.owners.insert(room_jid.clone(), room.owners());
            }
            if outcome.changed || outcome.destroyed {
                self.save(&room).await;
            }
            return;
        }
        bounce(server, &st, Condition::InternalServerError.into()).await;
    }

    /// IQs to the room in a namespace the archive answers (XEP-0313 queries).
    async fn archive_iq(&self, room: &Room, st: &Element) -> Option<Element> {
        if st.name() != "iq" || !matches!(st.attr("type"), Some("get" | "set")) {
            return None;
        }
        let ns = st.children().next()?.ns();
        if !self.archive.iq_namespaces().contains(&ns.as_str()) {
            return None;
        }
        let from = st.attr("from").and_then(|f| Jid::new(f).ok())?;
        let to_room = st
            .attr("to")
            .and_then(|t| Jid::new(t).ok())?
            .resource()
            .is_none();
        if !to_room {
            return None;
        }
        let allowed = !room.config.members_only
            || room.affiliation(&from.to_bare()) >= crate::room::Affiliation::Member;
        let result = if allowed {
            self.archive.handle_iq(&room.jid, &from, st).await
        } else {
            Err(StanzaError::new(Condition::Forbidden))
        };
        match result {
            Ok(payload) => Some(iq_result(st, payload)),
            Err(e) => error_reply(st, &e),
        }
    }

    /// Saves a persistent room, or deletes the record of one that is not (any more).
    async fn save(&self, room: &Room) {
        let snapshot = room.snapshot();
        let result = if room.config.persistent && !room.gone {
            self.store.save_room(&snapshot).await
        } else {
            self.store
                .delete_room(&snapshot.domain, &snapshot.name)
                .await
        };
        if let Err(e) = result {
            tracing::error!(room = %room.jid, error = %e, "saving the room failed");
        }
    }
}

async fn bounce(server: &Arc<Server>, st: &Element, err: StanzaError) {
    if let Some(reply) = error_reply(st, &err) {
        server.route(reply).await;
    }
}

#[async_trait]
impl Component for MucService {
    fn name(&self) -> &str {
        "Chatrooms"
    }

    async fn handle(&self, server: &Arc<Server>, stanza: Element) {
        let Some(to) = stanza.attr("to").and_then(|t| Jid::new(t).ok()) else {
            return;
        };
        if to.node().is_none() {
            self.handle_service(server, stanza).await;
        } else {
            self.handle_room(server, to.to_bare(), stanza).await;
        }
    }
}
