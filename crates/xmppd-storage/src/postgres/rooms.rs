//! Persistent chat rooms (XEP-0045) and their affiliations.

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool, Transaction};

use super::{get, pg_err, snapshot, PgStore};
use crate::{Queued, Result, RoomAffiliation, RoomStore, StoredRoom, UserRef};

/// Removes `user`'s chat room affiliations; returns the rooms (service domain, name), sorted.
pub(super) async fn drop_affiliations(
    tx: &Transaction<'_>,
    user: &UserRef,
) -> Result<Vec<(String, String)>> {
    let stmt = tx
        .prepare_cached("DELETE FROM muc_affiliations WHERE jid = $1 RETURNING domain, name")
        .await
        .map_err(pg_err)?;
    let mut rooms: Vec<(String, String)> = tx
        .query(&stmt, &[&user.jid()])
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    rooms.sort();
    Ok(rooms)
}

async fn save_room(pool: Pool, room: StoredRoom) -> Result<()> {
    let mut client = get(&pool).await?;
    let tx = client.transaction().await.map_err(pg_err)?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO muc_rooms (domain, name, config, subject) VALUES ($1, $2, $3, $4)
             ON CONFLICT (domain, name) DO UPDATE SET config = $3, subject = $4",
        )
        .await
        .map_err(pg_err)?;
    tx.execute(
        &stmt,
        &[&room.domain, &room.name, &room.config, &room.subject],
    )
    .await
    .map_err(pg_err)?;
    let stmt = tx
        .prepare_cached("DELETE FROM muc_affiliations WHERE domain = $1 AND name = $2")
        .await
        .map_err(pg_err)?;
    tx.execute(&stmt, &[&room.domain, &room.name])
        .await
        .map_err(pg_err)?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO muc_affiliations (domain, name, jid, affiliation, nick, reason)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (domain, name, jid) DO UPDATE SET affiliation = excluded.affiliation,
                 nick = excluded.nick, reason = excluded.reason",
        )
        .await
        .map_err(pg_err)?;
    for a in &room.affiliations {
        tx.execute(
            &insert,
            &[
                &room.domain,
                &room.name,
                &a.jid,
                &a.affiliation,
                &a.nick,
                &a.reason,
            ],
        )
        .await
        .map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)
}

async fn delete_room(pool: Pool, domain: String, name: String) -> Result<()> {
    let client = get(&pool).await?;
    // The affiliations go with the room (ON DELETE CASCADE).
    let stmt = client
        .prepare_cached("DELETE FROM muc_rooms WHERE domain = $1 AND name = $2")
        .await
        .map_err(pg_err)?;
    client
        .execute(&stmt, &[&domain, &name])
        .await
        .map_err(pg_err)?;
    Ok(())
}

/// The rooms of `domain` (only `name` when given), sorted by name, with their affiliations.
async fn load_rooms(
    c: &impl GenericClient,
    domain: &str,
    name: Option<&str>,
) -> Result<Vec<StoredRoom>> {
    let stmt = c
        .prepare_cached(
            "SELECT name, config, subject FROM muc_rooms
             WHERE domain = $1 AND ($2::TEXT IS NULL OR name = $2) ORDER BY name COLLATE \"C\"",
        )
        .await
        .map_err(pg_err)?;
    let mut rooms: Vec<StoredRoom> = c
        .query(&stmt, &[&domain, &name])
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| StoredRoom {
            domain: domain.to_owned(),
            name: r.get(0),
            config: r.get(1),
            subject: r.get(2),
            affiliations: Vec::new(),
        })
        .collect();
    let affs = c
        .prepare_cached(
            "SELECT jid, affiliation, nick, reason FROM muc_affiliations
             WHERE domain = $1 AND name = $2 ORDER BY jid COLLATE \"C\"",
        )
        .await
        .map_err(pg_err)?;
    for room in &mut rooms {
        room.affiliations = c
            .query(&affs, &[&domain, &room.name])
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| RoomAffiliation {
                jid: r.get(0),
                affiliation: r.get(1),
                nick: r.get(2),
                reason: r.get(3),
            })
            .collect();
    }
    Ok(rooms)
}

#[async_trait]
impl RoomStore for PgStore {
    fn save_room(&self, room: &StoredRoom) -> Queued<()> {
        let room = room.clone();
        self.queue(move |pool| Box::pin(save_room(pool, room)))
    }

    fn delete_room(&self, domain: &str, name: &str) -> Queued<()> {
        let (domain, name) = (domain.to_owned(), name.to_owned());
        self.queue(move |pool| Box::pin(delete_room(pool, domain, name)))
    }

    async fn room(&self, domain: &str, name: &str) -> Result<Option<StoredRoom>> {
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let room = load_rooms(&tx, domain, Some(name)).await?.pop();
        tx.commit().await.map_err(pg_err)?;
        Ok(room)
    }

    async fn rooms(&self, domain: &str) -> Result<Vec<StoredRoom>> {
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let rooms = load_rooms(&tx, domain, None).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(rooms)
    }
}
