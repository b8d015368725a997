//! Rosters (RFC 6121 §2), their versions, and pending subscription requests.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::{corrupt, SqliteStore};
use crate::{Result, RosterItem, RosterStore, Subscription, UserRef};

pub(super) fn roster_version(conn: &Connection, user: &UserRef) -> Result<u64> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT version FROM roster_version WHERE domain = ?1 AND user = ?2")?
        .query_row(params![user.domain, user.user], |r| r.get(0))
        .optional()?;
    u64::try_from(v.unwrap_or(0)).map_err(|_| corrupt("roster version"))
}

/// Moves the roster of `user` to its next version; `added` is the change in its item count.
pub(super) fn bump_roster_version(conn: &Connection, user: &UserRef, added: i64) -> Result<u64> {
    let v: i64 = conn
        .prepare_cached(
            "INSERT INTO roster_version (domain, user, version, items) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT (domain, user) DO UPDATE
                 SET version = version + 1, items = items + excluded.items
             RETURNING version",
        )?
        .query_row(params![user.domain, user.user, added], |r| r.get(0))?;
    u64::try_from(v).map_err(|_| corrupt("roster version"))
}

/// Reads the roster items of `user` (all, or only `contact`), sorted by contact.
pub(super) fn load_roster(
    conn: &Connection,
    user: &UserRef,
    contact: Option<&str>,
) -> Result<Vec<RosterItem>> {
    let mut items = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT contact, name, subscription, ask, approved FROM roster
         WHERE domain = ?1 AND user = ?2 AND (?3 IS NULL OR contact = ?3)
         ORDER BY contact",
    )?;
    let mut rows = stmt.query(params![user.domain, user.user, contact])?;
    while let Some(row) = rows.next()? {
        let sub: String = row.get(2)?;
        items.push(RosterItem {
            jid: row.get(0)?,
            name: row.get(1)?,
            subscription: Subscription::parse(&sub).ok_or_else(|| corrupt("subscription"))?,
            ask: row.get(3)?,
            approved: row.get(4)?,
            groups: Vec::new(),
        });
    }
    let mut stmt = conn.prepare_cached(
        "SELECT contact, grp FROM roster_groups
         WHERE domain = ?1 AND user = ?2 AND (?3 IS NULL OR contact = ?3)
         ORDER BY contact, pos",
    )?;
    let mut rows = stmt.query(params![user.domain, user.user, contact])?;
    // Both queries are ordered by contact, so one forward walk attaches every group.
    let mut i = 0;
    while let Some(row) = rows.next()? {
        let owner: String = row.get(0)?;
        while i < items.len() && items[i].jid < owner {
            i += 1;
        }
        match items.get_mut(i) {
            Some(item) if item.jid == owner => item.groups.push(row.get(1)?),
            _ => return Err(corrupt("roster group without item")),
        }
    }
    Ok(items)
}

#[async_trait]
impl RosterStore for SqliteStore {
    async fn roster(&self, user: &UserRef) -> Result<(u64, Vec<RosterItem>)> {
        let user = user.clone();
        self.read(move |c| {
            // One read transaction so the version matches the items.
            let tx = c.transaction()?;
            let version = roster_version(&tx, &user)?;
            let items = load_roster(&tx, &user, None)?;
            tx.finish()?;
            Ok((version, items))
        })
        .await
    }

    async fn roster_item(&self, user: &UserRef, contact: &str) -> Result<Option<RosterItem>> {
        let (user, contact) = (user.clone(), contact.to_owned());
        self.read(move |c| {
            let tx = c.transaction()?;
            let item = load_roster(&tx, &user, Some(&contact))?.into_iter().next();
            tx.finish()?;
            Ok(item)
        })
        .await
    }

    async fn set_roster_item(&self, user: &UserRef, item: &RosterItem) -> Result<u64> {
        let (user, item) = (user.clone(), item.clone());
        self.write(move |c| {
            let known = c
                .prepare_cached(
                    "SELECT 1 FROM roster WHERE domain = ?1 AND user = ?2 AND contact = ?3",
                )?
                .query_row(params![user.domain, user.user, item.jid], |_| Ok(()))
                .optional()?
                .is_some();
            c.prepare_cached(
                "INSERT INTO roster (domain, user, contact, name, subscription, ask, approved)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (domain, user, contact) DO UPDATE SET
                     name = excluded.name, subscription = excluded.subscription,
                     ask = excluded.ask, approved = excluded.approved",
            )?
            .execute(params![
                user.domain,
                user.user,
                item.jid,
                item.name,
                item.subscription.as_str(),
                item.ask,
                item.approved
            ])?;
            c.prepare_cached(
                "DELETE FROM roster_groups WHERE domain = ?1 AND user = ?2 AND contact = ?3",
            )?
            .execute(params![user.domain, user.user, item.jid])?;
            let mut stmt = c.prepare_cached(
                "INSERT OR IGNORE INTO roster_groups (domain, user, contact, pos, grp)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (pos, group) in item.groups.iter().enumerate() {
                stmt.execute(params![user.domain, user.user, item.jid, pos as i64, group])?;
            }
            bump_roster_version(c, &user, if known { 0 } else { 1 })
        })
        .await
    }

    async fn remove_roster_item(&self, user: &UserRef, contact: &str) -> Result<u64> {
        let (user, contact) = (user.clone(), contact.to_owned());
        self.write(move |c| {
            c.prepare_cached(
                "DELETE FROM roster_groups WHERE domain = ?1 AND user = ?2 AND contact = ?3",
            )?
            .execute(params![user.domain, user.user, contact])?;
            let removed = c
                .prepare_cached(
                    "DELETE FROM roster WHERE domain = ?1 AND user = ?2 AND contact = ?3",
                )?
                .execute(params![user.domain, user.user, contact])?;
            if removed > 0 {
                bump_roster_version(c, &user, -1)
            } else {
                roster_version(c, &user)
            }
        })
        .await
    }

    async fn roster_len(&self, user: &UserRef) -> Result<usize> {
        let user = user.clone();
        self.read(move |c| {
            let n: Option<i64> = c
                .prepare_cached("SELECT items FROM roster_version WHERE domain = ?1 AND user = ?2")?
                .query_row(params![user.domain, user.user], |r| r.get(0))
                .optional()?;
            usize::try_from(n.unwrap_or(0)).map_err(|_| corrupt("roster item count"))
        })
        .await
    }

    async fn bump_roster_version(&self, user: &UserRef) -> Result<u64> {
        let user = user.clone();
        self.write(move |c| bump_roster_version(c, &user, 0)).await
    }

    async fn add_pending_subscription(
        &self,
        user: &UserRef,
        contact: &str,
        stanza_xml: &str,
    ) -> Result<()> {
        let (user, contact, xml) = (user.clone(), contact.to_owned(), stanza_xml.to_owned());
        self.write(move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO pending_subscriptions (domain, user, contact, xml)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![user.domain, user.user, contact, xml])?;
            Ok(())
        })
        .await
    }

    async fn remove_pending_subscription(&self, user: &UserRef, contact: &str) -> Result<()> {
        let (user, contact) = (user.clone(), contact.to_owned());
        self.write(move |c| {
            c.prepare_cached(
                "DELETE FROM pending_subscriptions
                 WHERE domain = ?1 AND user = ?2 AND contact = ?3",
            )?
            .execute(params![user.domain, user.user, contact])?;
            Ok(())
        })
        .await
    }

    async fn pending_subscriptions(&self, user: &UserRef) -> Result<Vec<(String, String)>> {
        let user = user.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT contact, xml FROM pending_subscriptions
                 WHERE domain = ?1 AND user = ?2 ORDER BY contact",
            )?;
            let rows = stmt.query_map(params![user.domain, user.user], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}
