//! Persistent chat rooms (XEP-0045) and their affiliations.

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool, Transaction};

use super::{get, pg_err, snapshot, PgStore};
use crate::{
    next_lease, LeaseToken, Queued, Result, RoomAffiliation, RoomLease, RoomStore, StorageError,
    StoredRoom, UserRef,
};

/// The database's clock in Unix milliseconds (every process compares leases on it).
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT";

/// Fails with [`StorageError::LeaseLost`] unless `lease` is the room's lease; holds a share
/// lock on it until `tx` ends, so the room cannot change hands before the write commits.
async fn check_lease(
    tx: &Transaction<'_>,
    domain: &str,
    name: &str,
    lease: &LeaseToken,
) -> Result<()> {
    let stmt = tx
        .prepare_cached(
            "SELECT 1 FROM muc_leases
             WHERE domain = $1 AND name = $2 AND node = $3 AND epoch = $4 FOR SHARE",
        )
        .await
        .map_err(pg_err)?;
    match tx
        .query_opt(&stmt, &[&domain, &name, &lease.node, &lease.epoch])
        .await
        .map_err(pg_err)?
    {
        Some(_) => Ok(()),
        None => Err(StorageError::LeaseLost),
    }
}

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

async fn save_room(pool: Pool, room: StoredRoom, lease: Option<LeaseToken>) -> Result<()> {
    let mut client = get(&pool).await?;
    let tx = client.transaction().await.map_err(pg_err)?;
    if let Some(lease) = &lease {
        check_lease(&tx, &room.domain, &room.name, lease).await?;
    }
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

async fn delete_room(
    pool: Pool,
    domain: String,
    name: String,
    lease: Option<LeaseToken>,
) -> Result<()> {
    let mut client = get(&pool).await?;
    let tx = client.transaction().await.map_err(pg_err)?;
    if let Some(lease) = &lease {
        check_lease(&tx, &domain, &name, lease).await?;
    }
    // The affiliations go with the room (ON DELETE CASCADE).
    let stmt = tx
        .prepare_cached("DELETE FROM muc_rooms WHERE domain = $1 AND name = $2")
        .await
        .map_err(pg_err)?;
    tx.execute(&stmt, &[&domain, &name]).await.map_err(pg_err)?;
    tx.commit().await.map_err(pg_err)
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
        self.queue(move |pool| Box::pin(save_room(pool, room, None)))
    }

    fn delete_room(&self, domain: &str, name: &str) -> Queued<()> {
        let (domain, name) = (domain.to_owned(), name.to_owned());
        self.queue(move |pool| Box::pin(delete_room(pool, domain, name, None)))
    }

    fn save_leased_room(&self, room: &StoredRoom, lease: &LeaseToken) -> Queued<()> {
        let (room, lease) = (room.clone(), lease.clone());
        self.queue(move |pool| Box::pin(save_room(pool, room, Some(lease))))
    }

    fn delete_leased_room(&self, domain: &str, name: &str, lease: &LeaseToken) -> Queued<()> {
        let (domain, name, lease) = (domain.to_owned(), name.to_owned(), lease.clone());
        self.queue(move |pool| Box::pin(delete_room(pool, domain, name, Some(lease))))
    }

    async fn lease_room(
        &self,
        domain: &str,
        name: &str,
        node: &str,
        ttl_ms: i64,
    ) -> Result<RoomLease> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // A row to lock, free (epoch 0, expired) when the room never had a lease.
        let stmt = tx
            .prepare_cached(
                "INSERT INTO muc_leases (domain, name, node, epoch, expires_ms)
                 VALUES ($1, $2, '', 0, 0) ON CONFLICT (domain, name) DO NOTHING",
            )
            .await
            .map_err(pg_err)?;
        tx.execute(&stmt, &[&domain, &name]).await.map_err(pg_err)?;
        let stmt = tx
            .prepare_cached(
                "SELECT node, epoch, expires_ms FROM muc_leases
                 WHERE domain = $1 AND name = $2 FOR UPDATE",
            )
            .await
            .map_err(pg_err)?;
        let row = tx
            .query_one(&stmt, &[&domain, &name])
            .await
            .map_err(pg_err)?;
        let (holder, epoch, until): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
        // Read once the row is locked: the clock of the decision.
        let now: i64 = (tx.query_one(&format!("SELECT {NOW_MS}"), &[]).await)
            .map_err(pg_err)?
            .get(0);
        let (epoch, expires) = match next_lease(Some((&holder, epoch, until)), node, now, ttl_ms) {
            Ok(next) => next,
            Err(held) => return Ok(held),
        };
        let stmt = tx
            .prepare_cached(
                "UPDATE muc_leases SET node = $3, epoch = $4, expires_ms = $5
                 WHERE domain = $1 AND name = $2",
            )
            .await
            .map_err(pg_err)?;
        tx.execute(&stmt, &[&domain, &name, &node, &epoch, &expires])
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(RoomLease::Granted { epoch })
    }

    async fn renew_room_leases(&self, node: &str, ttl_ms: i64) -> Result<Vec<(String, String)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "UPDATE muc_leases SET expires_ms = {NOW_MS} + $2
                 WHERE node = $1 AND expires_ms > {NOW_MS} RETURNING domain, name"
            ))
            .await
            .map_err(pg_err)?;
        let mut rooms: Vec<(String, String)> = (client.query(&stmt, &[&node, &ttl_ms]).await)
            .map_err(pg_err)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        rooms.sort();
        Ok(rooms)
    }

    async fn release_room(&self, domain: &str, name: &str, node: &str) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // A stored room keeps its row, so that its epoch keeps growing across holders.
        for sql in [
            "DELETE FROM muc_leases l WHERE domain = $1 AND name = $2 AND node = $3
             AND NOT EXISTS (SELECT 1 FROM muc_rooms r WHERE r.domain = l.domain AND r.name = l.name)",
            "UPDATE muc_leases SET expires_ms = 0 WHERE domain = $1 AND name = $2 AND node = $3",
        ] {
            let stmt = tx.prepare_cached(sql).await.map_err(pg_err)?;
            tx.execute(&stmt, &[&domain, &name, &node])
                .await
                .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)
    }

    async fn release_room_leases(&self, node: &str) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("UPDATE muc_leases SET expires_ms = 0 WHERE node = $1")
            .await
            .map_err(pg_err)?;
        client.execute(&stmt, &[&node]).await.map_err(pg_err)?;
        Ok(())
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
