//! Rosters (RFC 6121 §2), their versions, and pending subscription requests.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::{corrupt, pg_err, snapshot, PgStore};
use crate::{Result, RosterItem, RosterStore, Subscription, UserRef};

async fn roster_version(c: &impl GenericClient, user: &UserRef) -> Result<u64> {
    let stmt = c
        .prepare_cached("SELECT version FROM roster_version WHERE domain = $1 AND username = $2")
        .await
        .map_err(pg_err)?;
    let v: Option<i64> = c
        .query_opt(&stmt, &[&user.domain, &user.user])
        .await
        .map_err(pg_err)?
        .map(|r| r.get(0));
    u64::try_from(v.unwrap_or(0)).map_err(|_| corrupt("roster version"))
}

/// Moves the roster of `user` to its next version; `added` is the change in its item count.
/// The upsert locks the counter's row, so the changes of one roster are serialised across
/// processes.
pub(super) async fn bump_roster_version(
    c: &impl GenericClient,
    user: &UserRef,
    added: i64,
) -> Result<u64> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO roster_version (domain, username, version, items) VALUES ($1, $2, 1, $3)
             ON CONFLICT (domain, username) DO UPDATE
                 SET version = roster_version.version + 1,
                     items = roster_version.items + excluded.items
             RETURNING version",
        )
        .await
        .map_err(pg_err)?;
    let v: i64 = c
        .query_one(&stmt, &[&user.domain, &user.user, &added])
        .await
        .map_err(pg_err)?
        .get(0);
    u64::try_from(v).map_err(|_| corrupt("roster version"))
}

/// Reads the roster items of `user` (all, or only `contact`), sorted by contact.
pub(super) async fn load_roster(
    c: &impl GenericClient,
    user: &UserRef,
    contact: Option<&str>,
) -> Result<Vec<RosterItem>> {
    let stmt = c
        .prepare_cached(
            "SELECT contact, name, subscription, ask, approved, groups FROM roster
             WHERE domain = $1 AND username = $2 AND ($3::TEXT IS NULL OR contact = $3)
             ORDER BY contact COLLATE \"C\"",
        )
        .await
        .map_err(pg_err)?;
    let rows = c
        .query(&stmt, &[&user.domain, &user.user, &contact])
        .await
        .map_err(pg_err)?;
    rows.iter()
        .map(|row| {
            let sub: String = row.get(2);
            Ok(RosterItem {
                jid: row.get(0),
                name: row.get(1),
                subscription: Subscription::parse(&sub).ok_or_else(|| corrupt("subscription"))?,
                ask: row.get(3),
                approved: row.get(4),
                groups: row.get(5),
            })
        })
        .collect()
}

#[async_trait]
impl RosterStore for PgStore {
    async fn roster(&self, user: &UserRef) -> Result<(u64, Vec<RosterItem>)> {
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let version = roster_version(&tx, user).await?;
        let items = load_roster(&tx, user, None).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok((version, items))
    }

    async fn roster_item(&self, user: &UserRef, contact: &str) -> Result<Option<RosterItem>> {
        let client = self.client().await?;
        Ok(load_roster(&client, user, Some(contact)).await?.pop())
    }

    async fn set_roster_item(&self, user: &UserRef, item: &RosterItem) -> Result<u64> {
        let groups = crate::remote::distinct_groups(&item.groups);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // `xmax = 0` only on a row this statement inserted: the item count moves exactly
        // once even when two processes add the same contact at once (the second waits on
        // the row lock and updates).
        let stmt = tx
            .prepare_cached(
                "INSERT INTO roster
                     (domain, username, contact, name, subscription, ask, approved, groups)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (domain, username, contact) DO UPDATE SET
                     name = excluded.name, subscription = excluded.subscription,
                     ask = excluded.ask, approved = excluded.approved, groups = excluded.groups
                 RETURNING (xmax = 0)",
            )
            .await
            .map_err(pg_err)?;
        let inserted: bool = tx
            .query_one(
                &stmt,
                &[
                    &user.domain,
                    &user.user,
                    &item.jid,
                    &item.name,
                    &item.subscription.as_str(),
                    &item.ask,
                    &item.approved,
                    &groups,
                ],
            )
            .await
            .map_err(pg_err)?
            .get(0);
        let version = bump_roster_version(&tx, user, i64::from(inserted)).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(version)
    }

    async fn remove_roster_item(&self, user: &UserRef, contact: &str) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let stmt = tx
            .prepare_cached(
                "DELETE FROM roster WHERE domain = $1 AND username = $2 AND contact = $3",
            )
            .await
            .map_err(pg_err)?;
        let removed = tx
            .execute(&stmt, &[&user.domain, &user.user, &contact])
            .await
            .map_err(pg_err)?;
        let version = if removed > 0 {
            bump_roster_version(&tx, user, -1).await?
        } else {
            roster_version(&tx, user).await?
        };
        tx.commit().await.map_err(pg_err)?;
        Ok(version)
    }

    async fn roster_len(&self, user: &UserRef) -> Result<usize> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT items FROM roster_version WHERE domain = $1 AND username = $2")
            .await
            .map_err(pg_err)?;
        let n: Option<i64> = client
            .query_opt(&stmt, &[&user.domain, &user.user])
            .await
            .map_err(pg_err)?
            .map(|r| r.get(0));
        usize::try_from(n.unwrap_or(0)).map_err(|_| corrupt("roster item count"))
    }

    async fn bump_roster_version(&self, user: &UserRef) -> Result<u64> {
        let client = self.client().await?;
        bump_roster_version(&client, user, 0).await
    }

    async fn add_pending_subscription(
        &self,
        user: &UserRef,
        contact: &str,
        stanza_xml: &str,
    ) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO pending_subscriptions (domain, username, contact, xml)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (domain, username, contact) DO UPDATE SET xml = excluded.xml",
            )
            .await
            .map_err(pg_err)?;
        client
            .execute(&stmt, &[&user.domain, &user.user, &contact, &stanza_xml])
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn remove_pending_subscription(&self, user: &UserRef, contact: &str) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "DELETE FROM pending_subscriptions
                 WHERE domain = $1 AND username = $2 AND contact = $3",
            )
            .await
            .map_err(pg_err)?;
        client
            .execute(&stmt, &[&user.domain, &user.user, &contact])
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn pending_subscriptions(&self, user: &UserRef) -> Result<Vec<(String, String)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT contact, xml FROM pending_subscriptions
                 WHERE domain = $1 AND username = $2 ORDER BY contact COLLATE \"C\"",
            )
            .await
            .map_err(pg_err)?;
        let rows = client
            .query(&stmt, &[&user.domain, &user.user])
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
