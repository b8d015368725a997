//! Persistent chat rooms (XEP-0045) and their affiliations.

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Transaction};

use super::{my_err, snapshot, write, MysqlStore};
use crate::{
    next_lease, LeaseToken, Queued, Result, RoomAffiliation, RoomLease, RoomStore, StorageError,
    StoredRoom, UserRef,
};

/// The database's clock in Unix milliseconds (every process compares leases on it).
async fn now_ms(q: &mut impl Queryable) -> Result<i64> {
    let now: Option<i64> = q
        .query_first("SELECT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)")
        .await
        .map_err(my_err)?;
    now.ok_or_else(|| StorageError::Backend("the database has no clock".into()))
}

/// Fails with [`StorageError::LeaseLost`] unless `lease` is the room's lease; holds a share
/// lock on it until `tx` ends, so the room cannot change hands before the write commits.
async fn check_lease(
    tx: &mut Transaction<'_>,
    domain: &str,
    name: &str,
    lease: &LeaseToken,
) -> Result<()> {
    let held: Option<i64> = tx
        .exec_first(
            "SELECT 1 FROM muc_leases
             WHERE domain = ? AND name = ? AND node = ? AND epoch = ? LOCK IN SHARE MODE",
            (domain, name, &lease.node, lease.epoch),
        )
        .await
        .map_err(my_err)?;
    held.map(|_| ()).ok_or(StorageError::LeaseLost)
}

/// Removes `user`'s chat room affiliations; returns the rooms (service domain, name), sorted.
pub(super) async fn drop_affiliations(
    tx: &mut Transaction<'_>,
    user: &UserRef,
) -> Result<Vec<(String, String)>> {
    let jid = user.jid();
    let rooms: Vec<(String, String)> = tx
        .exec(
            "SELECT domain, name FROM muc_affiliations WHERE jid = ?
             ORDER BY domain, name FOR UPDATE",
            (&jid,),
        )
        .await
        .map_err(my_err)?;
    tx.exec_drop("DELETE FROM muc_affiliations WHERE jid = ?", (&jid,))
        .await
        .map_err(my_err)?;
    Ok(rooms)
}

async fn save_room(mut conn: Conn, room: StoredRoom, lease: Option<LeaseToken>) -> Result<()> {
    let mut tx = write(&mut conn).await?;
    if let Some(lease) = &lease {
        check_lease(&mut tx, &room.domain, &room.name, lease).await?;
    }
    tx.exec_drop(
        "INSERT INTO muc_rooms (domain, name, config, subject) VALUES (?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE config = VALUES(config), subject = VALUES(subject)",
        (&room.domain, &room.name, &room.config, &room.subject),
    )
    .await
    .map_err(my_err)?;
    tx.exec_drop(
        "DELETE FROM muc_affiliations WHERE domain = ? AND name = ?",
        (&room.domain, &room.name),
    )
    .await
    .map_err(my_err)?;
    for a in &room.affiliations {
        tx.exec_drop(
            "INSERT INTO muc_affiliations (domain, name, jid, affiliation, nick, reason)
             VALUES (?, ?, ?, ?, ?, ?)
             ON DUPLICATE KEY UPDATE affiliation = VALUES(affiliation), nick = VALUES(nick),
                 reason = VALUES(reason)",
            (
                &room.domain,
                &room.name,
                &a.jid,
                &a.affiliation,
                &a.nick,
                &a.reason,
            ),
        )
        .await
        .map_err(my_err)?;
    }
    tx.commit().await.map_err(my_err)
}

async fn delete_room(
    mut conn: Conn,
    domain: String,
    name: String,
    lease: Option<LeaseToken>,
) -> Result<()> {
    let mut tx = write(&mut conn).await?;
    if let Some(lease) = &lease {
        check_lease(&mut tx, &domain, &name, lease).await?;
    }
    // The affiliations go with the room (ON DELETE CASCADE).
    tx.exec_drop(
        "DELETE FROM muc_rooms WHERE domain = ? AND name = ?",
        (&domain, &name),
    )
    .await
    .map_err(my_err)?;
    tx.commit().await.map_err(my_err)
}

/// The rooms of `domain` (only `name` when given), sorted by name, with their affiliations.
async fn load_rooms(
    q: &mut impl Queryable,
    domain: &str,
    name: Option<&str>,
) -> Result<Vec<StoredRoom>> {
    let rows: Vec<(String, String, String)> = q
        .exec(
            "SELECT name, config, subject FROM muc_rooms
             WHERE domain = ? AND (? IS NULL OR name = ?) ORDER BY name",
            (domain, name, name),
        )
        .await
        .map_err(my_err)?;
    let mut rooms = Vec::with_capacity(rows.len());
    for (name, config, subject) in rows {
        type AffRow = (String, String, Option<String>, Option<String>);
        let affiliations: Vec<AffRow> = q
            .exec(
                "SELECT jid, affiliation, nick, reason FROM muc_affiliations
                 WHERE domain = ? AND name = ? ORDER BY jid",
                (domain, &name),
            )
            .await
            .map_err(my_err)?;
        rooms.push(StoredRoom {
            domain: domain.to_owned(),
            name,
            config,
            subject,
            affiliations: affiliations
                .into_iter()
                .map(|(jid, affiliation, nick, reason)| RoomAffiliation {
                    jid,
                    affiliation,
                    nick,
                    reason,
                })
                .collect(),
        });
    }
    Ok(rooms)
}

#[async_trait]
impl RoomStore for MysqlStore {
    fn save_room(&self, room: &StoredRoom) -> Queued<()> {
        let room = room.clone();
        self.queue(move |conn| Box::pin(save_room(conn, room, None)))
    }

    fn delete_room(&self, domain: &str, name: &str) -> Queued<()> {
        let (domain, name) = (domain.to_owned(), name.to_owned());
        self.queue(move |conn| Box::pin(delete_room(conn, domain, name, None)))
    }

    fn save_leased_room(&self, room: &StoredRoom, lease: &LeaseToken) -> Queued<()> {
        let (room, lease) = (room.clone(), lease.clone());
        self.queue(move |conn| Box::pin(save_room(conn, room, Some(lease))))
    }

    fn delete_leased_room(&self, domain: &str, name: &str, lease: &LeaseToken) -> Queued<()> {
        let (domain, name, lease) = (domain.to_owned(), name.to_owned(), lease.clone());
        self.queue(move |conn| Box::pin(delete_room(conn, domain, name, Some(lease))))
    }

    async fn lease_room(
        &self,
        domain: &str,
        name: &str,
        node: &str,
        ttl_ms: i64,
    ) -> Result<RoomLease> {
        let mut conn = self.conn().await?;
        let mut tx = write(&mut conn).await?;
        // A row to lock, free (epoch 0, expired) when the room never had a lease.
        tx.exec_drop(
            "INSERT INTO muc_leases (domain, name, node, epoch, expires_ms)
             VALUES (?, ?, '', 0, 0) ON DUPLICATE KEY UPDATE domain = domain",
            (domain, name),
        )
        .await
        .map_err(my_err)?;
        let current: Option<(String, i64, i64)> = tx
            .exec_first(
                "SELECT node, epoch, expires_ms FROM muc_leases
                 WHERE domain = ? AND name = ? FOR UPDATE",
                (domain, name),
            )
            .await
            .map_err(my_err)?;
        // Read once the row is locked: the clock of the decision.
        let now = now_ms(&mut tx).await?;
        let current = current.as_ref().map(|(n, e, u)| (n.as_str(), *e, *u));
        let (epoch, expires) = match next_lease(current, node, now, ttl_ms) {
            Ok(next) => next,
            Err(held) => return Ok(held),
        };
        tx.exec_drop(
            "UPDATE muc_leases SET node = ?, epoch = ?, expires_ms = ? WHERE domain = ? AND name = ?",
            (node, epoch, expires, domain, name),
        )
        .await
        .map_err(my_err)?;
        tx.commit().await.map_err(my_err)?;
        Ok(RoomLease::Granted { epoch })
    }

    async fn renew_room_leases(&self, node: &str, ttl_ms: i64) -> Result<Vec<(String, String)>> {
        let mut conn = self.conn().await?;
        let mut tx = write(&mut conn).await?;
        let now = now_ms(&mut tx).await?;
        let rooms: Vec<(String, String)> = tx
            .exec(
                "SELECT domain, name FROM muc_leases WHERE node = ? AND expires_ms > ?
                 ORDER BY domain, name FOR UPDATE",
                (node, now),
            )
            .await
            .map_err(my_err)?;
        tx.exec_drop(
            "UPDATE muc_leases SET expires_ms = ? WHERE node = ? AND expires_ms > ?",
            (now.saturating_add(ttl_ms.max(1)), node, now),
        )
        .await
        .map_err(my_err)?;
        tx.commit().await.map_err(my_err)?;
        Ok(rooms)
    }

    async fn release_room(&self, domain: &str, name: &str, node: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        let mut tx = write(&mut conn).await?;
        // A stored room keeps its row, so that its epoch keeps growing across holders.
        for sql in [
            "DELETE FROM muc_leases WHERE domain = ? AND name = ? AND node = ?
             AND NOT EXISTS (SELECT 1 FROM muc_rooms r
                             WHERE r.domain = muc_leases.domain AND r.name = muc_leases.name)",
            "UPDATE muc_leases SET expires_ms = 0 WHERE domain = ? AND name = ? AND node = ?",
        ] {
            tx.exec_drop(sql, (domain, name, node))
                .await
                .map_err(my_err)?;
        }
        tx.commit().await.map_err(my_err)
    }

    async fn release_room_leases(&self, node: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        conn.exec_drop(
            "UPDATE muc_leases SET expires_ms = 0 WHERE node = ?",
            (node,),
        )
        .await
        .map_err(my_err)
    }

    async fn room(&self, domain: &str, name: &str) -> Result<Option<StoredRoom>> {
        let mut conn = self.conn().await?;
        let mut tx = snapshot(&mut conn).await?;
        let room = load_rooms(&mut tx, domain, Some(name)).await?.pop();
        tx.commit().await.map_err(my_err)?;
        Ok(room)
    }

    async fn rooms(&self, domain: &str) -> Result<Vec<StoredRoom>> {
        let mut conn = self.conn().await?;
        let mut tx = snapshot(&mut conn).await?;
        let rooms = load_rooms(&mut tx, domain, None).await?;
        tx.commit().await.map_err(my_err)?;
        Ok(rooms)
    }
}
