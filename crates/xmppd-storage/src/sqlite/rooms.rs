//! Persistent chat rooms (XEP-0045) and their affiliations.
//!
//! Their tables are a schema of their own, [`ROOMS_SCHEMA`], applied through
//! [`SqliteStore::extend`] the first time the store serves rooms: a server without chat rooms
//! has none of them, and they migrate apart from the shared schema.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::{now_ms, SqliteStore};
use crate::extend::apply_schema;
use crate::{
    next_lease, LeaseToken, Queued, Result, RoomAffiliation, RoomLease, RoomStore, Schema,
    StorageError, StoredRoom, UserRef,
};

/// Fails with [`StorageError::LeaseLost`] unless `lease` is the room's lease (in the writer's
/// job: nothing changes it before the write commits).
fn check_lease(c: &Connection, domain: &str, name: &str, lease: Option<&LeaseToken>) -> Result<()> {
    let Some(lease) = lease else { return Ok(()) };
    c.prepare_cached(
        "SELECT 1 FROM muc_leases WHERE domain = ?1 AND name = ?2 AND node = ?3 AND epoch = ?4",
    )?
    .query_row(params![domain, name, lease.node, lease.epoch], |_| Ok(()))
    .optional()?
    .ok_or(StorageError::LeaseLost)
}

/// The tables of the multi-user chat service (`muc` in `xmppd_schemas`). Until this schema
/// existed they were made by the shared migrations, so a database from then already has them
/// (and `user_version` 4): version 1 creates only what is missing, and there records them.
/// Version 2 adds the rooms' leases (one process per SQLite file hosts every room, but the
/// contract of [`RoomStore`] is the same on every engine).
pub const ROOMS_SCHEMA: Schema = Schema {
    name: "muc",
    migrations: &[
        r"
CREATE TABLE IF NOT EXISTS muc_rooms (
    domain TEXT NOT NULL,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    subject TEXT NOT NULL,
    PRIMARY KEY (domain, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS muc_affiliations (
    domain TEXT NOT NULL,
    name TEXT NOT NULL,
    jid TEXT NOT NULL,
    affiliation TEXT NOT NULL,
    nick TEXT,
    reason TEXT,
    PRIMARY KEY (domain, name, jid),
    FOREIGN KEY (domain, name) REFERENCES muc_rooms (domain, name) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS muc_affiliations_by_jid ON muc_affiliations (jid);
",
        r"
CREATE TABLE muc_leases (
    domain TEXT NOT NULL,
    name TEXT NOT NULL,
    node TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (domain, name)
) WITHOUT ROWID;
CREATE INDEX muc_leases_by_node ON muc_leases (node);
",
    ],
};

/// Applies [`ROOMS_SCHEMA`] inside a write job, unless the store knows it is in place: the
/// first write of rooms may come before any room query. (Idempotent: two first writes may
/// both apply it.)
fn ensure_rooms_schema(c: &Connection, ready: &AtomicBool) -> Result<()> {
    if !ready.load(Ordering::Acquire) {
        apply_schema(c, ROOMS_SCHEMA)?;
    }
    Ok(())
}

/// `queued`, remembering once it committed that the room tables exist.
fn noting_schema(queued: Queued<()>, ready: Arc<AtomicBool>) -> Queued<()> {
    Box::pin(async move {
        queued.await?;
        ready.store(true, Ordering::Release);
        Ok(())
    })
}

impl SqliteStore {
    /// Applies [`ROOMS_SCHEMA`] once per store, before its first room query.
    async fn rooms_schema(&self) -> Result<()> {
        if !self.rooms_ready.load(Ordering::Acquire) {
            // Idempotent, so two first queries at once may both run it.
            self.extend(ROOMS_SCHEMA).await?;
            self.rooms_ready.store(true, Ordering::Release);
        }
        Ok(())
    }
    /// [`RoomStore::save_room`], fenced by `lease` when given.
    fn save_room_as(&self, room: &StoredRoom, lease: Option<LeaseToken>) -> Queued<()> {
        let room = room.clone();
        let (ready, ready2) = (self.rooms_ready.clone(), self.rooms_ready.clone());
        let queued = self.queue(move |c| {
            ensure_rooms_schema(c, &ready)?;
            check_lease(c, &room.domain, &room.name, lease.as_ref())?;
            // A plain REPLACE would delete the row first and cascade to the affiliations; they
            // are rewritten below anyway, but an upsert keeps the intent obvious.
            c.prepare_cached(
                "INSERT INTO muc_rooms (domain, name, config, subject) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (domain, name) DO UPDATE SET config = ?3, subject = ?4",
            )?
            .execute(params![room.domain, room.name, room.config, room.subject])?;
            c.prepare_cached("DELETE FROM muc_affiliations WHERE domain = ?1 AND name = ?2")?
                .execute(params![room.domain, room.name])?;
            let mut insert = c.prepare_cached(
                "INSERT OR REPLACE INTO muc_affiliations
                 (domain, name, jid, affiliation, nick, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for a in &room.affiliations {
                insert.execute(params![
                    room.domain,
                    room.name,
                    a.jid,
                    a.affiliation,
                    a.nick,
                    a.reason
                ])?;
            }
            Ok(())
        });
        noting_schema(queued, ready2)
    }

    /// [`RoomStore::delete_room`], fenced by `lease` when given.
    fn delete_room_as(&self, domain: &str, name: &str, lease: Option<LeaseToken>) -> Queued<()> {
        let (domain, name) = (domain.to_owned(), name.to_owned());
        let (ready, ready2) = (self.rooms_ready.clone(), self.rooms_ready.clone());
        let queued = self.queue(move |c| {
            ensure_rooms_schema(c, &ready)?;
            check_lease(c, &domain, &name, lease.as_ref())?;
            c.prepare_cached("DELETE FROM muc_affiliations WHERE domain = ?1 AND name = ?2")?
                .execute(params![domain, name])?;
            c.prepare_cached("DELETE FROM muc_rooms WHERE domain = ?1 AND name = ?2")?
                .execute(params![domain, name])?;
            Ok(())
        });
        noting_schema(queued, ready2)
    }
}

/// Removes `user`'s chat room affiliations; returns the rooms (service domain, name).
pub(super) fn drop_affiliations(
    conn: &Connection,
    user: &UserRef,
) -> Result<Vec<(String, String)>> {
    // A database whose server never served rooms has no room tables, hence no affiliations.
    let has_rooms = conn
        .prepare_cached(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'muc_affiliations'",
        )?
        .query_row([], |_| Ok(()))
        .optional()?
        .is_some();
    if !has_rooms {
        return Ok(Vec::new());
    }
    let mut rooms = conn
        .prepare_cached("DELETE FROM muc_affiliations WHERE jid = ?1 RETURNING domain, name")?
        .query_map(params![user.jid()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rooms.sort();
    Ok(rooms)
}

#[async_trait]
impl RoomStore for SqliteStore {
    fn save_room(&self, room: &StoredRoom) -> Queued<()> {
        self.save_room_as(room, None)
    }

    fn delete_room(&self, domain: &str, name: &str) -> Queued<()> {
        self.delete_room_as(domain, name, None)
    }

    fn save_leased_room(&self, room: &StoredRoom, lease: &LeaseToken) -> Queued<()> {
        self.save_room_as(room, Some(lease.clone()))
    }

    fn delete_leased_room(&self, domain: &str, name: &str, lease: &LeaseToken) -> Queued<()> {
        self.delete_room_as(domain, name, Some(lease.clone()))
    }

    async fn lease_room(
        &self,
        domain: &str,
        name: &str,
        node: &str,
        ttl_ms: i64,
    ) -> Result<RoomLease> {
        self.rooms_schema().await?;
        let (domain, name, node) = (domain.to_owned(), name.to_owned(), node.to_owned());
        self.write(move |c| {
            let current: Option<(String, i64, i64)> = c
                .prepare_cached(
                    "SELECT node, epoch, expires_ms FROM muc_leases WHERE domain = ?1 AND name = ?2",
                )?
                .query_row(params![domain, name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let current = current.as_ref().map(|(n, e, u)| (n.as_str(), *e, *u));
            let (epoch, expires) = match next_lease(current, &node, now_ms(), ttl_ms) {
                Ok(next) => next,
                Err(held) => return Ok(held),
            };
            c.prepare_cached(
                "INSERT INTO muc_leases (domain, name, node, epoch, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (domain, name) DO UPDATE
                 SET node = ?3, epoch = ?4, expires_ms = ?5",
            )?
            .execute(params![domain, name, node, epoch, expires])?;
            Ok(RoomLease::Granted { epoch })
        })
        .await
    }

    async fn renew_room_leases(&self, node: &str, ttl_ms: i64) -> Result<Vec<(String, String)>> {
        self.rooms_schema().await?;
        let node = node.to_owned();
        self.write(move |c| {
            let now = now_ms();
            let mut rooms = c
                .prepare_cached(
                    "UPDATE muc_leases SET expires_ms = ?3 WHERE node = ?1 AND expires_ms > ?2
                     RETURNING domain, name",
                )?
                .query_map(params![node, now, now.saturating_add(ttl_ms.max(1))], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<rusqlite::Result<Vec<(String, String)>>>()?;
            rooms.sort();
            Ok(rooms)
        })
        .await
    }

    async fn release_room(&self, domain: &str, name: &str, node: &str) -> Result<()> {
        self.rooms_schema().await?;
        let (domain, name, node) = (domain.to_owned(), name.to_owned(), node.to_owned());
        self.write(move |c| {
            // A stored room keeps its row, so that its epoch keeps growing across holders.
            c.prepare_cached(
                "DELETE FROM muc_leases WHERE domain = ?1 AND name = ?2 AND node = ?3
                 AND NOT EXISTS (SELECT 1 FROM muc_rooms r
                                 WHERE r.domain = muc_leases.domain AND r.name = muc_leases.name)",
            )?
            .execute(params![domain, name, node])?;
            c.prepare_cached(
                "UPDATE muc_leases SET expires_ms = 0 WHERE domain = ?1 AND name = ?2 AND node = ?3",
            )?
            .execute(params![domain, name, node])?;
            Ok(())
        })
        .await
    }

    async fn release_room_leases(&self, node: &str) -> Result<()> {
        self.rooms_schema().await?;
        let node = node.to_owned();
        self.write(move |c| {
            c.prepare_cached("UPDATE muc_leases SET expires_ms = 0 WHERE node = ?1")?
                .execute(params![node])?;
            Ok(())
        })
        .await
    }

    async fn room(&self, domain: &str, name: &str) -> Result<Option<StoredRoom>> {
        self.rooms_schema().await?;
        let (domain, name) = (domain.to_owned(), name.to_owned());
        self.read(move |c| Ok(load_rooms(c, &domain, Some(&name))?.pop()))
            .await
    }

    async fn rooms(&self, domain: &str) -> Result<Vec<StoredRoom>> {
        self.rooms_schema().await?;
        let domain = domain.to_owned();
        self.read(move |c| load_rooms(c, &domain, None)).await
    }
}

/// The rooms of `domain` (only `name` when given), sorted by name, with their affiliations.
fn load_rooms(c: &Connection, domain: &str, name: Option<&str>) -> Result<Vec<StoredRoom>> {
    let mut stmt = c.prepare_cached(
        "SELECT name, config, subject FROM muc_rooms
         WHERE domain = ?1 AND (?2 IS NULL OR name = ?2) ORDER BY name",
    )?;
    let mut rooms = stmt
        .query_map(params![domain, name], |r| {
            Ok(StoredRoom {
                domain: domain.to_owned(),
                name: r.get(0)?,
                config: r.get(1)?,
                subject: r.get(2)?,
                affiliations: Vec::new(),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut affs = c.prepare_cached(
        "SELECT jid, affiliation, nick, reason FROM muc_affiliations
         WHERE domain = ?1 AND name = ?2 ORDER BY jid",
    )?;
    for room in &mut rooms {
        room.affiliations = affs
            .query_map(params![domain, room.name], |r| {
                Ok(RoomAffiliation {
                    jid: r.get(0)?,
                    affiliation: r.get(1)?,
                    nick: r.get(2)?,
                    reason: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
    }
    Ok(rooms)
}
