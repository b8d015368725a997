//! [`MucService`]: the component that owns `conference.DOMAIN`, creates rooms on first join,
//! runs each room as a task of its own, and routes what a room's state machine decides.
//!
//! Concurrency: the room registry is a sharded map from a room's address to its inbox. The
//! component only pushes a stanza into the room's inbox and returns; the room's task takes
//! stanzas one at a time, computes the outcome (`Room::handle`), queues what must be durable
//! (its state, an archived message) for storage, hands the outcome to the room's courier and
//! takes the next stanza. The courier sends each outcome once its writes are committed, in
//! order. The room is never locked, never waits on routing and does not wait for the commits
//! of its messages and state (a retraction and forgetting an archive are awaited), so a stanza it sends that comes back to it (a bounce, a decline addressed to the
//! room) simply waits in its inbox; and every occupant sees one room's stanzas in the order the
//! room produced them. A room's task ends when the room is gone; stanzas still
//! in its inbox are handed back to the service (a join creates the room anew). disco#items reads
//! a summary each room keeps current, so listing rooms never waits on a busy room.
//!
//! `max_rooms_per_user` counts the rooms a user owns: the stored persistent rooms (read at
//! load) and the rooms created since, kept current as owners change.
//!
//! Not done here: room name reservation without joining (XEP-0045 unique room names), s2s
//! occupants' special cases.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use jid::{BareJid, FullJid};
use minidom::Element;
use tokio::sync::{mpsc, oneshot};
use xmppd_core::address::Bare;
use xmppd_core::module::Component;
use xmppd_core::stanza::{
    self, elem, error_reply, iq_result, set_attr, Condition, StanzaError, NS_DISCO_INFO,
    NS_DISCO_ITEMS,
};
use xmppd_core::{Context, ServerHandle};
use xmppd_storage::{LeaseToken, Queued, RoomLease, RoomStore, StorageError};

use crate::archive::{RoomArchive, NS_SID};
use crate::room::{OccupantInfo, Room, RoomLimits, Send, NS_MUC};

/// Stanzas one room may have waiting; past this, senders are told to wait (a room flooded
/// faster than it can fan out must not grow the server's memory).
const MAX_INBOX: usize = 4096;

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
    /// XEP-0421 occupant ids its rooms give ([`crate::OccupantIds::load`]); none: no ids.
    pub occupant_ids: Option<crate::OccupantIds>,
    /// Several processes serve this service on one database: each hosts the rooms whose
    /// lease it holds. None: this process hosts every room (one process per database).
    pub lease: Option<LeaseSettings>,
}

/// How the processes that share a database share the rooms of a chat service: a room is
/// hosted by the holder of its lease (`xmppd_storage::RoomStore::lease_room`), taken when a
/// stanza reaches it and renewed every third of `ttl`. The others refuse its stanzas with
/// `<service-unavailable/>` of type `wait` until the lease is free (released when the room
/// ends or its host stops, or expired `ttl` after a crashed host's last renewal); the one
/// that takes it then reads the room back from the database.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// This process's name among those sharing the database (unique to it).
    pub node: String,
    /// How long a lease lasts without renewal.
    pub ttl: Duration,
}

impl LeaseSettings {
    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// How long this process may host a room from when it asked for (or renewed) its lease:
    /// less than the lease itself, which the database counts from a later moment, with a
    /// tenth to spare for clocks that run at slightly different rates.
    fn hosting_time(&self) -> Duration {
        self.ttl - self.ttl / 10
    }
}

/// Whether this process hosts a room, as it last learnt from the room's lease.
#[derive(Debug, Default)]
enum Hosting {
    #[default]
    Unknown,
    /// Held here under `epoch`, until `until` unless renewed.
    Here { epoch: i64, until: Instant },
    /// Another process held it when last asked; asked again after `until`.
    Elsewhere { until: Instant },
}

impl Hosting {
    fn epoch(&self) -> i64 {
        match self {
            Hosting::Here { epoch, .. } => *epoch,
            _ => 0,
        }
    }
}

/// How long a process that found a room hosted elsewhere answers so without asking again: a
/// room released by its host is taken over within this time.
const ELSEWHERE_RECHECK: Duration = Duration::from_secs(1);

/// The answer to a stanza for a room that another process of the service hosts.
fn hosted_elsewhere() -> StanzaError {
    StanzaError {
        kind: stanza::ErrorType::Wait,
        ..StanzaError::with_text(
            Condition::ServiceUnavailable,
            "this room is hosted by another server process of this service; retry later",
        )
    }
}

/// What a room's task takes from its inbox.
enum Input {
    /// A stanza addressed to the room or one of its occupants.
    Stanza(Element),
    /// An account was removed: forget its affiliation.
    Forget(BareJid),
    /// A server administrator addressed the room while it had no owner: make them its owner
    /// (if it still has none), before their stanza is handled.
    Adopt(BareJid),
    /// An administrator destroys the room (the administration API); told once it is gone.
    Destroy(Option<String>, oneshot::Sender<()>),
    /// An administrator asks who is in the room: answered between two stanzas, so the list
    /// is one the room's occupants saw.
    Occupants(oneshot::Sender<Vec<OccupantInfo>>),
    /// Another process hosts the room now (this one lost its lease): occupants leave.
    Shutdown,
}

/// A room as the administration API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    pub jid: BareJid,
    /// Its configured name, else its localpart.
    pub name: String,
    /// Shown in disco#items: public, configured and not gone.
    pub listed: bool,
}

/// Why [`MucService::create_room`] refused.
#[derive(Debug, thiserror::Error)]
pub enum CreateRoomError {
    #[error("the room exists")]
    Exists,
    #[error("the room is hosted by another server process")]
    HostedElsewhere,
    #[error("saving the room: {0}")]
    Storage(#[from] StorageError),
}

/// What [`MucService::create_room`] makes.
#[derive(Debug, Clone)]
pub struct NewRoom {
    pub jid: BareJid,
    pub owner: BareJid,
    pub name: String,
    pub public: bool,
    pub persistent: bool,
}

/// What the service keeps of a room: its inbox, and what disco#items shows of it.
struct RoomEntry {
    inbox: mpsc::UnboundedSender<Input>,
    /// Stanzas in the inbox (bounded by [`MAX_INBOX`]).
    queued: Arc<AtomicUsize>,
    /// The room and its inbox's receiving end until its task starts (at the first stanza,
    /// when a handle on the server is at hand).
    parked: Mutex<Option<(Room, mpsc::UnboundedReceiver<Input>)>>,
    started: AtomicBool,
    /// Created here rather than restored: whatever an archive kept under its name belongs to
    /// a room of the same name that is gone, and goes before this one's first stanza.
    fresh: bool,
    /// The epoch of the lease its writes are made under (0: no leases).
    epoch: AtomicI64,
    summary: Arc<Mutex<Summary>>,
}

/// A room as disco#items lists it.
#[derive(Debug, Clone, Default)]
struct Summary {
    /// Public, unlocked and not gone.
    listed: bool,
    name: String,
}

impl Summary {
    fn of(room: &Room) -> Summary {
        let name = if room.config.name.is_empty() {
            room.jid.node().map(|n| n.to_string()).unwrap_or_default()
        } else {
            room.config.name.clone()
        };
        Summary {
            listed: !room.gone && !room.locked && room.config.public,
            name,
        }
    }
}

impl RoomEntry {
    fn new(room: Room, fresh: bool, epoch: i64) -> Arc<RoomEntry> {
        let (inbox, rx) = mpsc::unbounded_channel();
        Arc::new(RoomEntry {
            inbox,
            queued: Arc::new(AtomicUsize::new(0)),
            summary: Arc::new(Mutex::new(Summary::of(&room))),
            parked: Mutex::new(Some((room, rx))),
            started: AtomicBool::new(false),
            fresh,
            epoch: AtomicI64::new(epoch),
        })
    }

    /// Queues `input` for the room's task; gives it back if the room is gone.
    fn push(&self, input: Input) -> Result<(), Input> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.inbox
            .send(input)
            .map_err(|mpsc::error::SendError(back)| {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                back
            })
    }
}

/// A multi-user chat service (XEP-0045).
pub struct MucService {
    settings: MucSettings,
    rooms: DashMap<BareJid, Arc<RoomEntry>>,
    /// The owners of each room in memory, for `max_rooms_per_user`.
    owners: DashMap<BareJid, Vec<BareJid>>,
    store: Arc<dyn RoomStore>,
    archive: Arc<dyn RoomArchive>,
    /// With leases ([`MucSettings::lease`]): whether each room addressed lately is hosted
    /// here. A room's stanzas are handed to it under its lock, so that taking, using and
    /// giving up a room's lease happen one at a time.
    leases: DashMap<BareJid, Arc<tokio::sync::Mutex<Hosting>>>,
    /// Itself, for the room tasks it starts.
    me: Weak<MucService>,
}

impl MucService {
    /// The service with its persistent rooms loaded from `store`.
    pub async fn load(
        settings: MucSettings,
        store: Arc<dyn RoomStore>,
        archive: Arc<dyn RoomArchive>,
    ) -> Result<Arc<MucService>, StorageError> {
        let stored_rooms = store.rooms(&settings.domain).await?;
        let service = Arc::new_cyclic(|me| MucService {
            rooms: DashMap::new(),
            owners: DashMap::new(),
            store,
            archive,
            settings,
            leases: DashMap::new(),
            me: me.clone(),
        });
        for stored in stored_rooms {
            let jid = format!("{}@{}", stored.name, stored.domain);
            let restored = BareJid::new(&jid).ok().and_then(|j| {
                Room::restore(j.clone(), &stored, service.settings.limits).map(|r| (j, r))
            });
            match restored {
                Some((j, mut room)) => {
                    room.archive_features = service.archive.features();
                    room.occupant_ids = service.settings.occupant_ids.clone();
                    service.owners.insert(j.clone(), room.owners());
                    service.rooms.insert(j, RoomEntry::new(room, false, 0));
                }
                None => tracing::warn!(room = %jid, "skipping an unreadable stored room"),
            }
        }
        if let Some(lease) = service.settings.lease.clone() {
            tokio::spawn(keep_leases(Arc::downgrade(&service), lease));
        }
        tracing::info!(
            domain = %service.settings.domain,
            rooms = service.rooms.len(),
            "chat service ready"
        );
        Ok(service)
    }

    /// The room's hosting state, locked; `None` without leases.
    async fn hosting(&self, jid: &BareJid) -> Option<tokio::sync::OwnedMutexGuard<Hosting>> {
        self.settings.lease.as_ref()?;
        let cell = self.leases.entry(jid.clone()).or_default().clone();
        Some(cell.lock_owned().await)
    }

    /// Drops the hosting state of a room nobody is using and that is not hosted here.
    fn forget_hosting(&self, jid: &BareJid) {
        self.leases.remove_if(jid, |_, cell| {
            Arc::strong_count(cell) == 1
                && cell
                    .try_lock()
                    .is_ok_and(|h| matches!(*h, Hosting::Unknown))
        });
    }

    /// Makes sure this process hosts `jid`: from what it knows while the lease runs, else by
    /// taking or renewing the lease (one round trip). A room taken over from another process
    /// (or from before a lapse) is read back from the database first.
    async fn host(&self, jid: &BareJid, hosting: &mut Hosting) -> Result<(), StanzaError> {
        let Some(lease) = &self.settings.lease else {
            return Ok(());
        };
        let now = Instant::now();
        match hosting {
            Hosting::Here { until, .. } if *until > now => return Ok(()),
            Hosting::Elsewhere { until } if *until > now => return Err(hosted_elsewhere()),
            _ => {}
        }
        let before = matches!(hosting, Hosting::Here { .. }).then(|| hosting.epoch());
        let name = jid.node().map(|n| n.as_str()).unwrap_or_default();
        let asked = Instant::now();
        let answer = (self.store)
            .lease_room(&self.settings.domain, name, &lease.node, lease.ttl_ms())
            .await;
        match answer {
            Ok(RoomLease::Granted { epoch }) => {
                if before != Some(epoch) {
                    if let Err(e) = self.take_over(jid, epoch).await {
                        tracing::warn!(room = %jid, error = %e, "reading a room taken over");
                        return Err(StanzaError::storage_failed());
                    }
                    tracing::debug!(room = %jid, epoch, "hosting the room");
                }
                let until = asked + lease.hosting_time();
                *hosting = Hosting::Here { epoch, until };
                Ok(())
            }
            Ok(RoomLease::Held { node, remaining_ms }) => {
                tracing::debug!(room = %jid, %node, remaining_ms, "room hosted elsewhere");
                if before.is_some() {
                    self.stop_room(jid);
                }
                *hosting = Hosting::Elsewhere {
                    until: now + ELSEWHERE_RECHECK,
                };
                Err(hosted_elsewhere())
            }
            Err(e) => {
                tracing::warn!(room = %jid, error = %e, "taking the lease of a room");
                Err(StanzaError::storage_failed())
            }
        }
    }

    /// The room as stored, now that this process hosts it under `epoch`: a room loaded at
    /// start-up (and perhaps changed since by another process) is read again; one no longer
    /// stored is gone (a join creates it anew). A room running here keeps running.
    async fn take_over(&self, jid: &BareJid, epoch: i64) -> Result<(), StorageError> {
        if let Some(entry) = self.rooms.get(jid) {
            if entry.started.load(Ordering::Acquire) {
                entry.epoch.store(epoch, Ordering::Release);
                return Ok(());
            }
        }
        let name = jid.node().map(|n| n.as_str()).unwrap_or_default();
        let stored = self.store.room(&self.settings.domain, name).await?;
        let restored = stored.and_then(|s| Room::restore(jid.clone(), &s, self.settings.limits));
        match restored {
            Some(mut room) => {
                room.archive_features = self.archive.features();
                room.occupant_ids = self.settings.occupant_ids.clone();
                self.owners.insert(jid.clone(), room.owners());
                match self.rooms.entry(jid.clone()) {
                    dashmap::Entry::Occupied(e) if e.get().started.load(Ordering::Acquire) => {
                        e.get().epoch.store(epoch, Ordering::Release);
                    }
                    dashmap::Entry::Occupied(mut e) => {
                        e.insert(RoomEntry::new(room, false, epoch));
                    }
                    dashmap::Entry::Vacant(v) => {
                        v.insert(RoomEntry::new(room, false, epoch));
                    }
                }
            }
            None => {
                let parked = self
                    .rooms
                    .remove_if(jid, |_, e| !e.started.load(Ordering::Acquire));
                if parked.is_some() {
                    self.owners.remove(jid);
                }
            }
        }
        Ok(())
    }

    /// This process no longer hosts `jid`: its occupants leave (a room not started yet just
    /// leaves the registry; the next host reads it from the database).
    fn stop_room(&self, jid: &BareJid) {
        tracing::info!(room = %jid, "the room's lease went to another process");
        if (self.rooms)
            .remove_if(jid, |_, e| !e.started.load(Ordering::Acquire))
            .is_some()
        {
            return;
        }
        if let Some(entry) = self.rooms.get(jid).map(|e| e.clone()) {
            let _ = entry.push(Input::Shutdown);
        }
    }

    /// Gives up the lease of a room this process no longer has in its registry.
    async fn unhost(&self, jid: &BareJid, hosting: &mut Hosting) {
        let (Some(lease), Hosting::Here { .. }) = (&self.settings.lease, &*hosting) else {
            return;
        };
        if self.rooms.contains_key(jid) {
            return;
        }
        let name = jid.node().map(|n| n.as_str()).unwrap_or_default();
        if let Err(e) = (self.store)
            .release_room(&self.settings.domain, name, &lease.node)
            .await
        {
            tracing::warn!(room = %jid, error = %e, "releasing the lease of a room");
        }
        *hosting = Hosting::Unknown;
    }

    /// A room's task ended: its lease goes, unless a new room of that name is here already.
    async fn room_ended(&self, jid: &BareJid) {
        if let Some(mut hosting) = self.hosting(jid).await {
            self.unhost(jid, &mut hosting).await;
            drop(hosting);
            self.forget_hosting(jid);
        }
    }

    /// Renews the leases of the rooms hosted here; stops hosting those that went to another
    /// process, and those whose lease ran out while the database could not be reached.
    async fn renew_leases(&self, lease: &LeaseSettings) {
        let asked = Instant::now();
        let held: Option<HashSet<String>> = match self
            .store
            .renew_room_leases(&lease.node, lease.ttl_ms())
            .await
        {
            Ok(rooms) => Some(
                (rooms.into_iter())
                    .filter(|(domain, _)| *domain == self.settings.domain)
                    .map(|(_, name)| name)
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "renewing the leases of the rooms");
                None
            }
        };
        let cells: Vec<(BareJid, Arc<tokio::sync::Mutex<Hosting>>)> = (self.leases.iter())
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        for (jid, cell) in cells {
            let mut hosting = cell.lock().await;
            let Hosting::Here { epoch, until } = *hosting else {
                continue;
            };
            let name = jid.node().map(|n| n.to_string()).unwrap_or_default();
            match &held {
                Some(held) if held.contains(&name) => {
                    *hosting = Hosting::Here {
                        epoch,
                        until: asked + lease.hosting_time(),
                    };
                }
                Some(_) => {
                    self.stop_room(&jid);
                    *hosting = Hosting::Unknown;
                }
                None if until <= Instant::now() => {
                    self.stop_room(&jid);
                    *hosting = Hosting::Unknown;
                }
                None => {}
            }
        }
    }

    /// Gives up every room lease of this process (at shutdown), so that the other processes
    /// take its rooms at once rather than after the leases expire.
    pub async fn release_leases(&self) {
        if let Some(lease) = &self.settings.lease {
            if let Err(e) = self.store.release_room_leases(&lease.node).await {
                tracing::warn!(error = %e, "releasing the leases of the rooms");
            }
        }
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

    /// Every room in memory (persistent ones and those with occupants), sorted.
    pub fn rooms(&self) -> Vec<RoomInfo> {
        let mut rooms: Vec<RoomInfo> = (self.rooms.iter())
            .filter_map(|e| {
                let summary = e.value().summary.lock().ok()?.clone();
                Some(RoomInfo {
                    jid: e.key().clone(),
                    name: summary.name,
                    listed: summary.listed,
                })
            })
            .collect();
        rooms.sort_by(|a, b| a.jid.cmp(&b.jid));
        rooms
    }

    /// Creates a configured (unlocked) room owned by `new.owner` without anyone joining it,
    /// saved before this returns when persistent. The room's task starts with its first
    /// stanza.
    pub async fn create_room(&self, new: NewRoom) -> Result<(), CreateRoomError> {
        let mut hosting = self.hosting(&new.jid).await;
        if let Some(h) = hosting.as_deref_mut() {
            if let Err(e) = self.host(&new.jid, h).await {
                return Err(match e.condition {
                    Condition::ServiceUnavailable => CreateRoomError::HostedElsewhere,
                    _ => CreateRoomError::Storage(StorageError::Backend(
                        "taking the room's lease".into(),
                    )),
                });
            }
        }
        let epoch = hosting.as_deref().map_or(0, Hosting::epoch);
        let created = self.create_hosted_room(new.clone(), epoch).await;
        if let Some(mut h) = hosting {
            self.unhost(&new.jid, &mut h).await;
            drop(h);
            self.forget_hosting(&new.jid);
        }
        created
    }

    async fn create_hosted_room(&self, new: NewRoom, epoch: i64) -> Result<(), CreateRoomError> {
        let mut room = Room::create(new.jid.clone(), new.owner.clone(), self.settings.limits);
        room.locked = false;
        room.config.name = new.name;
        room.config.public = new.public;
        room.config.persistent = new.persistent;
        room.archive_features = self.archive.features();
        room.occupant_ids = self.settings.occupant_ids.clone();
        let saved = match self.rooms.entry(new.jid.clone()) {
            dashmap::Entry::Occupied(_) => return Err(CreateRoomError::Exists),
            dashmap::Entry::Vacant(v) => {
                let saved = new.persistent.then(|| self.save(&room, epoch));
                self.owners.insert(new.jid.clone(), vec![new.owner]);
                v.insert(RoomEntry::new(room, true, epoch));
                saved
            }
        };
        if let Some(saved) = saved {
            if let Err(e) = saved.await {
                self.rooms.remove(&new.jid);
                self.owners.remove(&new.jid);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Destroys `room` as its owner would (XEP-0045 §10.9): its occupants are told, with
    /// `reason`. Resolves once the room is gone; `false` when there was no such room.
    pub async fn destroy_room(
        &self,
        cx: &Context<'_>,
        room: &BareJid,
        reason: Option<String>,
    ) -> bool {
        if let Some(mut hosting) = self.hosting(room).await {
            let hosted = self.host(room, &mut hosting).await.is_ok();
            if !hosted {
                return false;
            }
        }
        let Some(entry) = self.rooms.get(room).map(|e| e.clone()) else {
            return false;
        };
        let (done, gone) = oneshot::channel();
        if entry.push(Input::Destroy(reason, done)).is_err() {
            return false;
        }
        self.start(cx, room, &entry);
        gone.await.is_ok()
    }

    /// Who is in `room` (real JIDs included: for administrators); `None` when there is no such
    /// room. A room whose task has not started yet is read where it waits; otherwise its task
    /// answers in turn, without the caller holding anything the room needs.
    pub async fn occupants(&self, room: &BareJid) -> Option<Vec<OccupantInfo>> {
        let entry = self.rooms.get(room).map(|e| e.clone())?;
        let (tell, told) = oneshot::channel();
        {
            let parked = entry.parked.lock().ok()?;
            if let Some((room, _)) = parked.as_ref() {
                return Some(room.occupants());
            }
            // Taken: the task runs (or ran) and reads its inbox.
            entry.push(Input::Occupants(tell)).ok()?;
        }
        told.await.ok()
    }

    fn handle_service(&self, cx: &mut Context<'_>, st: Element) {
        if st.name() != "iq" || !matches!(st.attr("type"), Some("get")) {
            if matches!(st.attr("type"), Some("set")) || st.name() == "message" {
                cx.bounce(&st, Condition::ServiceUnavailable.into());
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
            Some(("query", NS_DISCO_ITEMS)) => Some(self.public_rooms()),
            Some(("ping", stanza::NS_PING)) => None,
            _ => {
                cx.bounce(&st, Condition::ServiceUnavailable.into());
                return;
            }
        };
        cx.send(iq_result(&st, answer));
    }

    /// disco#items of the service: the public, configured rooms, from their summaries (a busy
    /// room is not waited for).
    fn public_rooms(&self) -> Element {
        let mut listed: Vec<(BareJid, String)> = self
            .rooms
            .iter()
            .filter_map(|e| {
                let summary = e.value().summary.lock().ok()?.clone();
                summary.listed.then(|| (e.key().clone(), summary.name))
            })
            .collect();
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
    fn room_for(
        &self,
        cx: &Context<'_>,
        jid: &BareJid,
        st: &Element,
        epoch: i64,
    ) -> Result<Option<Arc<RoomEntry>>, StanzaError> {
        if let Some(h) = self.rooms.get(jid) {
            return Ok(Some(h.clone()));
        }
        let is_join = st.name() == "presence"
            && st.attr("type").is_none()
            && st
                .attr("to")
                .and_then(crate::address)
                .is_some_and(|t| t.resource().is_some());
        if !is_join {
            return Ok(None);
        }
        let Some(from) = st.attr("from").and_then(crate::full_address) else {
            return Ok(None);
        };
        let user = from.bare();
        let allowed = match self.settings.creation {
            Creation::LocalUsers => cx.is_local_host(user.domain().as_str()),
            Creation::Admins => cx.is_admin(&user),
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
        let entry = self
            .rooms
            .entry(jid.clone())
            .or_insert_with(|| {
                self.owners.insert(jid.clone(), vec![user.clone()]);
                let mut room = Room::create(jid.clone(), user.clone(), self.settings.limits);
                room.archive_features = self.archive.features();
                room.occupant_ids = self.settings.occupant_ids.clone();
                RoomEntry::new(room, true, epoch)
            })
            .clone();
        Ok(Some(entry))
    }

    /// Hands `st` to its room, once this process hosts it (with leases): a stanza for a room
    /// hosted by another process is refused.
    async fn to_leased_room(&self, cx: &mut Context<'_>, room_jid: BareJid, st: Element) {
        let Some(mut hosting) = self.hosting(&room_jid).await else {
            self.to_room(cx, room_jid, st, 0);
            return;
        };
        match self.host(&room_jid, &mut hosting).await {
            Ok(()) => {
                self.to_room(cx, room_jid.clone(), st, hosting.epoch());
                // No room came of it (a stanza to no room): nothing to host.
                self.unhost(&room_jid, &mut hosting).await;
            }
            Err(e) => cx.bounce(&st, e),
        }
        drop(hosting);
        self.forget_hosting(&room_jid);
    }

    /// Hands `st` to its room's inbox (starting the room's task if needed); a room it creates
    /// writes under the lease `epoch`.
    fn to_room(&self, cx: &mut Context<'_>, room_jid: BareJid, mut st: Element, epoch: i64) {
        // A room may end between the lookup and the push (its inbox closes): look it up again.
        for _ in 0..3 {
            let entry = match self.room_for(cx, &room_jid, &st, epoch) {
                Ok(Some(e)) => e,
                Ok(None) => {
                    if st.name() != "presence" {
                        cx.bounce(&st, Condition::ItemNotFound.into());
                    }
                    return;
                }
                Err(e) => {
                    cx.bounce(&st, e);
                    return;
                }
            };
            if entry.queued.load(Ordering::Relaxed) >= MAX_INBOX {
                cx.bounce(
                    &st,
                    StanzaError::with_text(Condition::ResourceConstraint, "room busy, retry later"),
                );
                return;
            }
            if let Some(admin) = self.adopter(cx, &room_jid, &st) {
                let _ = entry.push(Input::Adopt(admin));
            }
            match entry.push(Input::Stanza(st)) {
                Ok(()) => {
                    self.start(cx, &room_jid, &entry);
                    return;
                }
                Err(Input::Stanza(back)) => st = back,
                Err(_) => return,
            }
        }
        cx.bounce(&st, Condition::InternalServerError.into());
    }

    /// A server administrator addressing a room left without owner (its last owner's account
    /// was removed) is to become its owner, so that the room can be managed again.
    fn adopter(&self, cx: &Context<'_>, room: &BareJid, st: &Element) -> Option<BareJid> {
        if !self.owners.get(room).is_some_and(|o| o.is_empty()) {
            return None;
        }
        let from = st.attr("from").and_then(crate::address)?.bare();
        cx.is_admin(&from).then_some(from)
    }

    /// Starts the task of a room that has none yet.
    fn start(&self, cx: &Context<'_>, jid: &BareJid, entry: &Arc<RoomEntry>) {
        if entry.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let parked = entry.parked.lock().ok().and_then(|mut p| p.take());
        let (Some((room, rx)), Some(service)) = (parked, self.me.upgrade()) else {
            return;
        };
        let (entry, jid) = (entry.clone(), jid.clone());
        cx.spawn(move |server| {
            let task = RoomTask {
                service,
                entry,
                server,
            };
            task.run(jid, room, rx)
        });
    }

    /// Whether `st` is an IQ to archived `room` in a namespace the archive answers (XEP-0313
    /// queries), for [`MucService::archive_iq`]. A room whose archiving is off answers them
    /// itself (`<service-unavailable/>`, as it advertises no archive).
    fn archive_claims(&self, room: &Room, st: &Element) -> bool {
        let to_room =
            || (st.attr("to").and_then(crate::address)).is_some_and(|t| t.resource().is_none());
        room.config.archived
            && st.name() == "iq"
            && matches!(st.attr("type"), Some("get" | "set"))
            && (st.children().next())
                .is_some_and(|q| self.archive.iq_namespaces().contains(&q.ns().as_str()))
            && to_room()
    }

    /// The answer to an IQ [`MucService::archive_claims`]: the result messages, then the
    /// answer. Those the room does not let read its archive get `<forbidden/>` (XEP-0313
    /// §5.2).
    async fn archive_iq(&self, room: &Room, st: &Element) -> Option<Vec<Send>> {
        let from = st.attr("from").and_then(crate::full_address)?;
        let answer = match room.archive_reader(&from) {
            Ok(real_jids) => {
                (self.archive)
                    .handle_iq(&room.jid, &from, st, real_jids)
                    .await
            }
            Err(e) => Err(e),
        };
        Some(match answer {
            Ok(a) => {
                let mut out: Vec<Send> = a.results.into_iter().map(Send::One).collect();
                out.push(Send::One(iq_result(st, a.payload)));
                out
            }
            Err(e) => error_reply(st, &e).map(Send::One).into_iter().collect(),
        })
    }

    /// Saves a persistent room, or deletes the record of one that is not (any more): queued
    /// now, in order with the room's other writes; resolves once committed. With leases, only
    /// while the room's lease is still `epoch` here.
    fn save(&self, room: &Room, epoch: i64) -> Queued<()> {
        let snapshot = room.snapshot();
        let keep = room.config.persistent && !room.gone;
        let lease = (self.settings.lease.as_ref()).map(|l| LeaseToken {
            node: l.node.clone(),
            epoch,
        });
        match (keep, lease) {
            (true, None) => self.store.save_room(&snapshot),
            (true, Some(lease)) => self.store.save_leased_room(&snapshot, &lease),
            (false, None) => self.store.delete_room(&snapshot.domain, &snapshot.name),
            (false, Some(lease)) => {
                (self.store).delete_leased_room(&snapshot.domain, &snapshot.name, &lease)
            }
        }
    }
}

/// Renews the leases of a service's rooms every third of their time, while it exists.
async fn keep_leases(service: Weak<MucService>, lease: LeaseSettings) {
    let mut tick = tokio::time::interval(lease.ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(service) = service.upgrade() else {
            return;
        };
        service.renew_leases(&lease).await;
    }
}

/// What one input leaves to send, once the writes it queued are committed.
type Pending = Pin<Box<dyn Future<Output = Vec<Send>> + std::marker::Send>>;

/// `out`, to send as it is (nothing to wait for).
fn now(out: Vec<Send>) -> Pending {
    Box::pin(std::future::ready(out))
}

/// `out`, to send once `saved` (the room's state) is committed.
fn once_saved(saved: Queued<()>, room: BareJid, out: Vec<Send>) -> Pending {
    Box::pin(async move {
        if let Err(e) = saved.await {
            tracing::error!(room = %room, error = %e, "saving the room failed");
        }
        out
    })
}

/// What a room's task hands its courier, in order.
enum Courier {
    /// Send what this resolves to, as answering `sender`'s stanza when there is one.
    Send(Pending, Option<FullJid>),
    /// Answer once everything handed over before was sent.
    Settle(oneshot::Sender<()>),
}

/// Outcomes a room may have waiting on commits; past this its task waits for the disk.
const COURIER_DEPTH: usize = 256;

/// One room's task: the only owner of its [`Room`].
struct RoomTask {
    service: Arc<MucService>,
    entry: Arc<RoomEntry>,
    server: ServerHandle,
}

impl RoomTask {
    /// [`MucService::save`] under the room's lease.
    fn save(&self, room: &Room) -> Queued<()> {
        (self.service).save(room, self.entry.epoch.load(Ordering::Acquire))
    }

    /// Takes the room's inputs one at a time. What an input must make durable (the room's
    /// state, an archived message) is queued for storage and its outcome handed to the room's
    /// courier, which sends each outcome once its writes committed, in order: the room goes on
    /// with its next stanza while the disk syncs (the storage engine commits everything queued
    /// meanwhile together), and does not wait for the fsync.
    async fn run(self, jid: BareJid, mut room: Room, mut rx: mpsc::UnboundedReceiver<Input>) {
        if self.entry.fresh {
            self.service.archive.forget(&jid).await;
        }
        let (courier, to_send) = mpsc::channel(COURIER_DEPTH);
        let sending = tokio::spawn(deliver(self.server.clone(), to_send));
        let mut destroyed = None;
        while let Some(input) = rx.recv().await {
            self.entry.queued.fetch_sub(1, Ordering::Relaxed);
            let mut sender = None;
            let (pending, gone) = match input {
                Input::Stanza(st) => {
                    sender = st.attr("from").and_then(crate::full_address);
                    self.step(&mut room, st, &courier).await
                }
                Input::Forget(user) => {
                    let forgotten = room.forget_account(&user);
                    let pending = match forgotten {
                        true => self.changed(&room, Vec::new()),
                        false => now(Vec::new()),
                    };
                    (pending, false)
                }
                Input::Adopt(admin) if room.owners().is_empty() => {
                    tracing::info!(room = %jid, owner = %admin, "administrator takes over a room without owner");
                    let mut outcome = room.adopt(&admin);
                    (self.changed(&room, outcome.take_sends()), false)
                }
                Input::Adopt(_) => (now(Vec::new()), false),
                Input::Occupants(tell) => {
                    let _ = tell.send(room.occupants());
                    continue;
                }
                Input::Shutdown => {
                    let mut outcome = room.shut_down();
                    (now(outcome.take_sends()), true)
                }
                Input::Destroy(reason, done) => {
                    tracing::info!(room = %jid, "room destroyed by an administrator");
                    let mut outcome = room.destroy_by_service(reason.as_deref());
                    self.service.owners.remove(&jid);
                    self.service.archive.forget(&jid).await;
                    let saved = self.save(&room);
                    destroyed = Some(done);
                    (once_saved(saved, jid.clone(), outcome.take_sends()), true)
                }
            };
            if let Ok(mut s) = self.entry.summary.lock() {
                *s = Summary::of(&room);
            }
            if courier.send(Courier::Send(pending, sender)).await.is_err() || gone {
                break;
            }
        }
        // Everything the room decided goes out before it leaves the registry.
        drop(courier);
        let _ = sending.await;
        // Gone: leave the registry first, so that what is still queued (a join racing the
        // last leave) reaches the service anew instead of this inbox.
        let svc = &self.service;
        svc.rooms
            .remove_if(&jid, |_, e| Arc::ptr_eq(e, &self.entry));
        rx.close();
        if let Some(done) = destroyed {
            let _ = done.send(());
        }
        svc.room_ended(&jid).await;
        let mut left = Vec::new();
        while let Ok(input) = rx.try_recv() {
            match input {
                Input::Stanza(st) => left.push(st),
                // Gone already: whoever asked is told so.
                Input::Destroy(_, done) => {
                    let _ = done.send(());
                }
                // Dropped: the asker reads the room as gone.
                _ => {}
            }
        }
        self.server.dispatch_all(left).await;
    }

    /// Keeps the owners count and the stored room in step with an affiliation change; `out`
    /// is sent once the room is saved.
    fn changed(&self, room: &Room, out: Vec<Send>) -> Pending {
        self.service.owners.insert(room.jid.clone(), room.owners());
        once_saved(self.save(room), room.jid.clone(), out)
    }

    /// Handles one stanza; returns what to send, in order, once what it queued is durable,
    /// and whether the room is gone. Reading the archive (history, queries, a retraction's
    /// target) first waits until the courier sent everything before: what was sent is then
    /// stored, and nothing is read that a later commit could still contradict.
    async fn step(
        &self,
        room: &mut Room,
        st: Element,
        courier: &mpsc::Sender<Courier>,
    ) -> (Pending, bool) {
        let svc = &self.service;
        if svc.archive_claims(room, &st) {
            settle(courier).await;
            if let Some(answer) = svc.archive_iq(room, &st).await {
                return (now(answer), false);
            }
        }
        let now_ms = stanza::now_ms();
        let mut outcome = room.handle(&st, now_ms);
        let (keep, archived) = (room.config.history_length, room.config.archived);
        if let Some(r) = outcome.retract.take() {
            // The tombstone first: the retraction, archived next, must not be what it names.
            settle(courier).await;
            if let Err(e) = svc.archive.retract(&room.jid, &r, archived).await {
                let refused = error_reply(&st, &e).map(Send::One).into_iter().collect();
                return (now(refused), false);
            }
        }
        // Queued now; its id is stamped on the broadcast once it is durable (XEP-0359 §3), so
        // that a client may query from it at once.
        let stored = (outcome.archive.take())
            .map(|entry| svc.archive.store(&room.jid, entry, keep, archived));
        let mut history = Vec::new();
        if let Some((to, query)) = outcome.history_for.take() {
            settle(courier).await;
            let entries = (svc.archive)
                .history(&room.jid, &query, keep, archived, now_ms)
                .await;
            for entry in entries {
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
                history.push(Send::One(m));
            }
        }
        if outcome.destroyed {
            svc.owners.remove(&room.jid);
            svc.archive.forget(&room.jid).await;
        } else if outcome.changed {
            svc.owners.insert(room.jid.clone(), room.owners());
        }
        let saved = (outcome.changed || outcome.destroyed).then(|| self.save(room));
        let gone = outcome.destroyed || room.gone;
        let jid = room.jid.clone();
        let pending = Box::pin(async move {
            if let Some(id) = match stored {
                Some(stored) => stored.await,
                None => None,
            } {
                let sid = [("by", jid.as_str()), ("id", id.as_str())];
                outcome.add_to_archived(elem("stanza-id", NS_SID, &sid));
            }
            let mut out = outcome.take_sends();
            out.extend(history);
            out.extend(outcome.after.drain(..).map(Send::One));
            if let Some(saved) = saved {
                if let Err(e) = saved.await {
                    tracing::error!(room = %jid, error = %e, "saving the room failed");
                }
            }
            out
        });
        (pending, gone)
    }
}

/// Waits until the courier sent everything handed to it before.
async fn settle(courier: &mpsc::Sender<Courier>) {
    let (done, settled) = oneshot::channel();
    if courier.send(Courier::Settle(done)).await.is_ok() {
        let _ = settled.await;
    }
}

/// A room's courier: sends each outcome once its writes are durable, in the order the room
/// decided them, outside any lock: what the room sends may come back to it, and then waits in
/// its inbox. What goes back to the sender (the occupant list on a join) answers its own
/// request: the sender's reply budget.
async fn deliver(server: ServerHandle, mut inbox: mpsc::Receiver<Courier>) {
    while let Some(next) = inbox.recv().await {
        let (pending, sender) = match next {
            Courier::Send(pending, sender) => (pending, sender),
            Courier::Settle(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let out = pending.await;
        if out.is_empty() {
            continue;
        }
        let dispatch = server.with_context(|cx| {
            for send in out {
                match send {
                    Send::One(el) => cx.send(el),
                    Send::Shared(el, to) => to.iter().for_each(|t| cx.send_shared(t, el.clone())),
                }
            }
        });
        match sender {
            Some(jid) => xmppd_core::handling(jid, dispatch).await,
            None => dispatch.await,
        };
    }
}

#[async_trait]
impl Component for MucService {
    fn name(&self) -> &str {
        "Chatrooms"
    }

    async fn handle(&self, cx: &mut Context<'_>, stanza: Element) {
        let Some(to) = stanza.attr("to").and_then(crate::address) else {
            return;
        };
        if to.node().is_none() {
            self.handle_service(cx, stanza);
        } else {
            self.to_leased_room(cx, to.bare(), stanza).await;
        }
    }

    async fn on_account_removed(&self, _cx: &mut Context<'_>, user: &BareJid) {
        let entries: Vec<Arc<RoomEntry>> = self.rooms.iter().map(|e| e.value().clone()).collect();
        for entry in entries {
            // A room whose task has not started yet is changed in place: its stored record,
            // if persistent, has lost the affiliation already, with the account. A running
            // room is told through its inbox, in order with the stanzas it handles.
            let parked = entry.parked.lock().ok().and_then(|mut p| {
                let (room, _) = p.as_mut()?;
                Some(
                    room.forget_account(user)
                        .then(|| (room.jid.clone(), room.owners())),
                )
            });
            match parked {
                Some(Some((jid, owners))) => {
                    self.owners.insert(jid, owners);
                }
                Some(None) => {}
                None => {
                    let _ = entry.push(Input::Forget(user.clone()));
                }
            }
        }
    }
}
