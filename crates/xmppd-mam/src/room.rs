//! [`RoomArchives`]: the archives of chat rooms (XEP-0313 §5.2 on XEP-0045 rooms), the
//! durable [`RoomArchive`] the chat service is given when the message archive is on.
//!
//! A room whose archiving is on (`muc#roomconfig_enablearchiving`) keeps its groupchat
//! messages worth keeping ([`policy::worth_keeping`]) in the accounts' archive tables, under
//! the room's bare JID as owner. Each is stored as the room broadcasts it, `from` the occupant
//! JID, and the occupant JID is its `with`, so a `with` filter picks a nick, never a real JID.
//! The sender's real JID is stored inside it as `<x xmlns='…muc#user'><item jid=…/></x>`, after
//! whatever such element the sender wrote is removed, so the one there is the room's; it is
//! shown only to those the room lets see real JIDs (XEP-0045 §7.2.3, §7.2.4). The history a
//! new occupant gets comes from the archive, so it survives a restart; rooms without archiving
//! keep the in-memory history ([`MemoryArchive`]). Queries are answered by the code that
//! answers accounts' ([`crate::answer`]); retention covers room archives like the others.

use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmppd_core::module::IqKind;
use xmppd_core::stanza::{self, elem, Condition, StanzaError};
use xmppd_muc::archive::NS_MODERATE;
use xmppd_muc::room::NS_MUC_USER;
use xmppd_muc::{
    HistoryEntry, HistoryQuery, IqAnswer, MemoryArchive, RetractRequest, RoomArchive, Stored,
};

use crate::answer;
use crate::module::serialize;
use crate::policy;
use crate::query::{PageLimits, NS_FULLTEXT, NS_MAM, NS_MAM_EXTENDED, NS_SID};
use crate::retract::{self, Retraction, NS_RETRACT, NS_RETRACT_TOMBSTONE};
use crate::store::{
    decode_id, encode_id, ArchiveError, ArchiveStore, Direction, Filter, NewMessage, PageRequest,
    Paging,
};

/// The rooms' archives over an [`ArchiveStore`], and the in-memory history of the rooms that
/// do not archive.
pub struct RoomArchives {
    store: Arc<dyn ArchiveStore>,
    memory: MemoryArchive,
    limits: PageLimits,
}

impl RoomArchives {
    pub fn new(store: Arc<dyn ArchiveStore>, memory: MemoryArchive, limits: PageLimits) -> Self {
        RoomArchives {
            store,
            memory,
            limits,
        }
    }
}

/// Removes the `<x xmlns='…muc#user'/>` elements of a room message: a sender's own, before
/// storing, or the room's real-JID one, before showing it to those who may not see it.
fn remove_user_x(msg: &mut Element) -> bool {
    stanza::remove_children(msg, |c| c.is("x", NS_MUC_USER))
}

/// The real JID the room stored in `msg` (see the module's documentation).
fn real_jid(msg: &Element) -> Option<BareJid> {
    let item = msg
        .get_child("x", NS_MUC_USER)?
        .get_child("item", NS_MUC_USER)?;
    BareJid::new(item.attr("jid")?).ok()
}

#[async_trait]
impl RoomArchive for RoomArchives {
    fn store(&self, room: &BareJid, entry: HistoryEntry, keep: usize, archived: bool) -> Stored {
        if !archived {
            return self.memory.store(room, entry, keep, archived);
        }
        let HistoryEntry {
            sender,
            mut message,
            ..
        } = entry;
        if !policy::worth_keeping(&message, false) {
            return Box::pin(std::future::ready(None));
        }
        let nick = (message.attr("from").and_then(|f| Jid::new(f).ok()))
            .and_then(|j| j.resource().map(|r| r.to_string()))
            .unwrap_or_default();
        remove_user_x(&mut message);
        let mut x = Element::bare("x", NS_MUC_USER);
        x.append_child(elem("item", NS_MUC_USER, &[("jid", sender.as_str())]));
        message.append_child(x);
        let new = NewMessage {
            owner: room.to_string(),
            with_bare: room.to_string(),
            with_resource: nick,
            direction: Direction::Incoming,
            stanza: serialize(&message),
            text: policy::body(&message),
        };
        let queued = self.store.append_all(vec![new]);
        let room = room.clone();
        Box::pin(async move {
            match queued.await {
                Ok(ids) => ids.first().map(|(id, _)| encode_id(*id)),
                Err(e) => {
                    // The message is still broadcast (without an id): losing it would be worse.
                    tracing::error!(error = %e, room = %room, "could not archive a room message");
                    None
                }
            }
        })
    }

    async fn history(
        &self,
        room: &BareJid,
        query: &HistoryQuery,
        keep: usize,
        archived: bool,
        now_ms: i64,
    ) -> Vec<HistoryEntry> {
        if !archived {
            return self
                .memory
                .history(room, query, keep, archived, now_ms)
                .await;
        }
        let max = query.max_stanzas.map_or(keep, |m| m.min(keep));
        if max == 0 {
            return Vec::new();
        }
        // The archive stamps a message with the millisecond it was written in, after the room
        // accepted it; the history stamps the end of that millisecond, which is after every
        // instant before the message, as `HistoryQuery::since_ms` expects. Hence the one
        // millisecond between the two.
        let filter = Filter {
            start_ms: query.earliest_ms(now_ms).map(|t| t.saturating_sub(1)),
            ..Filter::default()
        };
        let request = PageRequest {
            filter,
            paging: Paging::Backward { before: None },
            max,
        };
        let page = match self.store.query(room.as_str(), request).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, room = %room, "could not read a room's history");
                return Vec::new();
            }
        };
        let entries: Vec<HistoryEntry> = (page.items.into_iter())
            .filter_map(|item| {
                let mut message: Element = item.stanza.parse().ok()?;
                let sender = real_jid(&message).unwrap_or_else(|| room.clone());
                remove_user_x(&mut message);
                let id = encode_id(item.id);
                message.append_child(elem(
                    "stanza-id",
                    NS_SID,
                    &[("by", room.as_str()), ("id", &id)],
                ));
                Some(HistoryEntry {
                    stamp_ms: item.stamp_ms.saturating_add(1),
                    sender,
                    message,
                })
            })
            .collect();
        query.select(&entries, now_ms)
    }

    async fn retract(
        &self,
        room: &BareJid,
        request: &RetractRequest,
        archived: bool,
    ) -> Result<(), StanzaError> {
        if !archived {
            return self.memory.retract(room, request, archived).await;
        }
        // An id this archive cannot hold: nothing to retract. A moderator asked for that
        // message and learns it is not there (XEP-0425); an author's retraction goes out.
        let unknown = || match request.moderation {
            Some(_) => Err(StanzaError::new(Condition::ItemNotFound)),
            None => Ok(()),
        };
        let Some(id) = decode_id(&request.target) else {
            return unknown();
        };
        let request_page = PageRequest {
            filter: Filter {
                ids: Some(vec![id]),
                ..Filter::default()
            },
            paging: Paging::Forward { after: None },
            max: 1,
        };
        let stored = match self.store.query(room.as_str(), request_page).await {
            Ok(page) => page.items.into_iter().next().map(|item| item.stanza),
            Err(ArchiveError::UnknownId) => None,
            Err(e) => {
                tracing::error!(error = %e, room = %room, "could not read a retracted message");
                None
            }
        };
        let Some(stored) = stored else {
            return unknown();
        };
        let Ok(msg) = stored.parse::<Element>() else {
            return Ok(());
        };
        if request.moderation.is_none() && real_jid(&msg).as_ref() != Some(&request.sender) {
            // XEP-0424 §6: only the author retracts (moderators moderate, XEP-0425).
            return Err(StanzaError::with_text(
                Condition::Forbidden,
                "only its sender may retract a message",
            ));
        }
        if retract::is_tombstone(&msg) {
            return Ok(());
        }
        let r = Retraction {
            target: request.target.clone(),
            ns: NS_RETRACT,
            id: request.id.clone(),
        };
        // `by` is an occupant JID, as the message showed it: a real JID is not for everyone.
        let by = match &request.moderation {
            Some(m) => m.by.as_str(),
            None => msg.attr("from").unwrap_or(room.as_str()),
        };
        let Some(mut tomb) = retract::tombstone(&stored, &r, by, stanza::now_ms()) else {
            return Ok(());
        };
        if let (Some(m), Some(gone)) = (
            &request.moderation,
            tomb.get_child_mut("retracted", NS_RETRACT),
        ) {
            // XEP-0425 §4: the tombstone says who moderated it and why.
            gone.append_child(elem("moderated", NS_MODERATE, &[("by", &m.by)]));
            if let Some(reason) = &m.reason {
                let mut el = Element::bare("reason", NS_RETRACT);
                el.append_text(reason.as_str());
                gone.append_child(el);
            }
        }
        // The sender's real JID stays, so its tombstone is still known to be its own.
        if let Some(x) = msg.get_child("x", NS_MUC_USER) {
            tomb.append_child(x.clone());
        }
        let replaced = self
            .store
            .replace_stanza(room.as_str(), id, serialize(&tomb))
            .await;
        if let Err(e) = replaced {
            // The retraction still goes out, as any message does when archiving fails.
            tracing::error!(error = %e, room = %room, "could not apply a retraction to a room's archive");
        }
        Ok(())
    }

    async fn forget(&self, room: &BareJid) {
        self.memory.forget(room).await;
        if let Err(e) = self.store.remove_owner(room.as_str()).await {
            tracing::error!(error = %e, room = %room, "could not delete a room's archive");
        }
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[NS_MAM]
    }

    fn features(&self) -> &'static [&'static str] {
        &[
            NS_MAM,
            NS_MAM_EXTENDED,
            NS_FULLTEXT,
            NS_SID,
            NS_RETRACT,
            NS_RETRACT_TOMBSTONE,
            NS_MODERATE,
        ]
    }

    async fn handle_iq(
        &self,
        room: &BareJid,
        from: &FullJid,
        iq: &Element,
        real_jids: bool,
    ) -> Result<IqAnswer, StanzaError> {
        let payload = iq.children().next().ok_or(Condition::BadRequest)?;
        let kind = match iq.attr("type") {
            Some("get") => IqKind::Get,
            Some("set") => IqKind::Set,
            _ => return Err(Condition::BadRequest.into()),
        };
        let show = |mut m: Element| {
            if !real_jids {
                remove_user_x(&mut m);
            }
            m
        };
        let asker = from.to_string();
        let a = answer::answer(
            &*self.store,
            self.limits,
            room.as_str(),
            &asker,
            payload,
            kind,
            show,
        )
        .await?;
        Ok(IqAnswer {
            results: a.results,
            payload: a.payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use xmppd_storage::SqliteStore;

    use super::*;
    use crate::retention::{purge_once, Retention};

    const ROOM: &str = "lounge@conference.localhost";

    async fn rooms() -> RoomArchives {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let archive = Arc::new(crate::SqliteArchive::open(store).await.unwrap());
        RoomArchives::new(archive, MemoryArchive::default(), PageLimits::default())
    }

    fn entry(body: &str) -> HistoryEntry {
        let message = format!(
            "<message xmlns='jabber:client' type='groupchat' from='{ROOM}/al'><body>{body}</body>\
             </message>"
        );
        HistoryEntry {
            stamp_ms: 0,
            sender: BareJid::new("alice@localhost").unwrap(),
            message: message.parse().unwrap(),
        }
    }

    fn bodies(h: &[HistoryEntry]) -> Vec<String> {
        h.iter()
            .map(|e| policy::body(&e.message).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn history_comes_from_the_archive_with_ids_and_without_real_jids() {
        let a = rooms().await;
        let room = BareJid::new(ROOM).unwrap();
        let mut ids = Vec::new();
        for i in 0..4 {
            ids.push(
                a.store(&room, entry(&format!("m{i}")), 20, true)
                    .await
                    .unwrap(),
            );
        }
        // Chat states alone are not kept.
        let mut typing = entry("");
        typing.message = format!(
            "<message xmlns='jabber:client' type='groupchat' from='{ROOM}/al'>\
             <composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )
        .parse()
        .unwrap();
        assert_eq!(a.store(&room, typing, 20, true).await, None);

        let now = stanza::now_ms();
        let all = HistoryQuery::default();
        let h = a.history(&room, &all, 3, true, now).await;
        assert_eq!(bodies(&h), ["m1", "m2", "m3"], "the room's history length");
        for (e, id) in h.iter().zip(&ids[1..]) {
            let sid = e.message.get_child("stanza-id", NS_SID).unwrap();
            assert_eq!((sid.attr("by"), sid.attr("id")), (Some(ROOM), Some(&**id)));
            assert_eq!(real_jid(&e.message), None);
            assert_eq!(e.sender.as_str(), "alice@localhost");
        }
        // A `since` copied from a history message's delay stamp leaves that message out.
        let since = HistoryQuery {
            since_ms: Some(h[2].stamp_ms),
            ..HistoryQuery::default()
        };
        assert!(a.history(&room, &since, 3, true, now).await.is_empty());
        let since = HistoryQuery {
            since_ms: Some(h[2].stamp_ms - 1),
            ..HistoryQuery::default()
        };
        let kept = bodies(&a.history(&room, &since, 3, true, now).await);
        assert_eq!(kept.last().map(String::as_str), Some("m3"), "{kept:?}");
        // A room that does not archive keeps its history in memory only.
        let other = BareJid::new("other@conference.localhost").unwrap();
        assert_eq!(a.store(&other, entry("mem"), 20, false).await, None);
        assert_eq!(
            bodies(&a.history(&other, &all, 20, false, now).await),
            ["mem"]
        );
        assert!(a.history(&other, &all, 20, true, now).await.is_empty());
    }

    #[tokio::test]
    async fn only_the_author_retracts_and_leaves_a_tombstone() {
        let a = rooms().await;
        let room = BareJid::new(ROOM).unwrap();
        let id = a.store(&room, entry("secret"), 20, true).await.unwrap();
        let stored = |a: &RoomArchives| {
            let store = a.store.clone();
            async move {
                let page = store
                    .query(
                        ROOM,
                        PageRequest {
                            filter: Filter::default(),
                            paging: Paging::Forward { after: None },
                            max: 10,
                        },
                    )
                    .await
                    .unwrap();
                page.items[0].stanza.parse::<Element>().unwrap()
            }
        };
        let req = |sender: &str, target: &str| RetractRequest {
            target: target.into(),
            sender: BareJid::new(sender).unwrap(),
            id: Some("r1".into()),
            moderation: None,
        };
        let e = a
            .retract(&room, &req("bob@localhost", &id), true)
            .await
            .unwrap_err();
        assert_eq!(e.condition, Condition::Forbidden);
        assert_eq!(policy::body(&stored(&a).await).as_deref(), Some("secret"));
        // Unknown ids change nothing and refuse nothing.
        for unknown in ["999", "x", ""] {
            a.retract(&room, &req("alice@localhost", unknown), true)
                .await
                .unwrap();
        }
        a.retract(&room, &req("alice@localhost", &id), true)
            .await
            .unwrap();
        let t = stored(&a).await;
        assert_eq!(policy::body(&t), None);
        let gone = t.get_child("retracted", NS_RETRACT).unwrap();
        assert_eq!(gone.attr("id"), Some("r1"));
        assert_eq!(gone.attr("by"), Some(&*format!("{ROOM}/al")));
        assert_eq!(real_jid(&t).unwrap().as_str(), "alice@localhost");
        // Still the author's: another's retraction of the tombstone is refused too.
        let e = a
            .retract(&room, &req("bob@localhost", &id), true)
            .await
            .unwrap_err();
        assert_eq!(e.condition, Condition::Forbidden);
        a.retract(&room, &req("alice@localhost", &id), true)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_moderator_retracts_any_message_and_says_so_in_the_tombstone() {
        let a = rooms().await;
        let room = BareJid::new(ROOM).unwrap();
        let id = a.store(&room, entry("spam"), 20, true).await.unwrap();
        let req = |target: &str| RetractRequest {
            target: target.into(),
            sender: BareJid::new("mod@localhost").unwrap(),
            id: None,
            moderation: Some(xmppd_muc::Moderation {
                by: format!("{ROOM}/mod"),
                reason: Some("spam".into()),
            }),
        };
        for unknown in ["999", "x"] {
            let e = a.retract(&room, &req(unknown), true).await.unwrap_err();
            assert_eq!(e.condition, Condition::ItemNotFound, "{unknown}");
        }
        a.retract(&room, &req(&id), true).await.unwrap();
        let h = a
            .history(&room, &HistoryQuery::default(), 20, true, stanza::now_ms())
            .await;
        let t = &h[0].message;
        assert_eq!(policy::body(t), None);
        let gone = t.get_child("retracted", NS_RETRACT).unwrap();
        let by = format!("{ROOM}/mod");
        assert_eq!(gone.attr("by"), Some(&*by));
        let moderated = gone.get_child("moderated", NS_MODERATE).unwrap();
        assert_eq!(moderated.attr("by"), Some(&*by));
        assert_eq!(gone.get_child("reason", NS_RETRACT).unwrap().text(), "spam");
        // Already a tombstone: left as it is.
        a.retract(&room, &req(&id), true).await.unwrap();
    }

    #[tokio::test]
    async fn retention_and_forget_reach_room_archives() {
        let a = rooms().await;
        let room = BareJid::new(ROOM).unwrap();
        a.store(&room, entry("old"), 20, true).await.unwrap();
        let now = stanza::now_ms();
        let r = Retention {
            max_age: Some(Duration::from_millis(1)),
            max_bytes: None,
            interval: Duration::from_secs(1),
            batch: 10,
        };
        assert_eq!(purge_once(&*a.store, &r, now + 1_000).await.unwrap(), 1);
        let all = HistoryQuery::default();
        assert!(a.history(&room, &all, 20, true, now).await.is_empty());
        a.store(&room, entry("new"), 20, true).await.unwrap();
        a.forget(&room).await;
        assert!(a.history(&room, &all, 20, true, now + 1).await.is_empty());
    }
}
