//! Persistent chat rooms (XEP-0045) and their affiliations.
//!
//! Their tables are a schema of their own, [`ROOMS_SCHEMA`], applied through
//! [`SqliteStore::extend`] the first time the store serves rooms: a server without chat rooms
//! has none of them, and they migrate apart from the shared schema.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::SqliteStore;
use crate::extend::apply_schema;
use crate::{Queued, Result, RoomAffiliation, RoomStore, Schema, StoredRoom, UserRef};

/// The tables of the multi-user chat service (`muc` in `xmppd_schemas`). Until this schema
/// existed they were made by the shared migrations, so a database from then already has them
/// (and `user_version` 4): version 1 creates only what is missing, and there records them.
pub const ROOMS_SCHEMA: Schema = Schema {
    name: "muc",
    migrations: &[r"
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
"],
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
        let room = room.clone();
        let (ready, ready2) = (self.rooms_ready.clone(), self.rooms_ready.clone());
        let queued = self.queue(move |c| {
            ensure_rooms_schema(c, &ready)?;
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

    fn delete_room(&self, domain: &str, name: &str) -> Queued<()> {
        let (domain, name) = (domain.to_owned(), name.to_owned());
        let (ready, ready2) = (self.rooms_ready.clone(), self.rooms_ready.clone());
        let queued = self.queue(move |c| {
            ensure_rooms_schema(c, &ready)?;
            c.prepare_cached("DELETE FROM muc_affiliations WHERE domain = ?1 AND name = ?2")?
                .execute(params![domain, name])?;
            c.prepare_cached("DELETE FROM muc_rooms WHERE domain = ?1 AND name = ?2")?
                .execute(params![domain, name])?;
            Ok(())
        });
        noting_schema(queued, ready2)
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
