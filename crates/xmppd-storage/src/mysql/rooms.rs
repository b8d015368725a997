//! Persistent chat rooms (XEP-0045) and their affiliations.

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Transaction};

use super::{my_err, snapshot, write, MysqlStore};
use crate::{Queued, Result, RoomAffiliation, RoomStore, StoredRoom, UserRef};

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

async fn save_room(mut conn: Conn, room: StoredRoom) -> Result<()> {
    let mut tx = write(&mut conn).await?;
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

async fn delete_room(mut conn: Conn, domain: String, name: String) -> Result<()> {
    // The affiliations go with the room (ON DELETE CASCADE).
    conn.exec_drop(
        "DELETE FROM muc_rooms WHERE domain = ? AND name = ?",
        (&domain, &name),
    )
    .await
    .map_err(my_err)
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
        self.queue(move |conn| Box::pin(save_room(conn, room)))
    }

    fn delete_room(&self, domain: &str, name: &str) -> Queued<()> {
        let (domain, name) = (domain.to_owned(), name.to_owned());
        self.queue(move |conn| Box::pin(delete_room(conn, domain, name)))
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
