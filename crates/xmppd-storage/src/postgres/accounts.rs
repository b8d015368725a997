//! Accounts: users, SCRAM credentials, tombstones of removed names, and account removal.

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};

use super::rooms::drop_affiliations;
use super::roster::{bump_roster_version, load_roster};
use super::{corrupt, now_ms, pg_err, PgStore};
use crate::{
    AccountRemoval, CredentialStore, Result, RosterItem, StorageError, StoredScram, UserRef,
};

/// Locks the account's row for the rest of `tx`; whether it exists.
async fn lock_user(tx: &Transaction<'_>, user: &UserRef) -> Result<bool> {
    let stmt = tx
        .prepare_cached("SELECT 1 FROM users WHERE domain = $1 AND username = $2 FOR UPDATE")
        .await
        .map_err(pg_err)?;
    let row = tx
        .query_opt(&stmt, &[&user.domain, &user.user])
        .await
        .map_err(pg_err)?;
    Ok(row.is_some())
}

async fn insert_scram(tx: &Transaction<'_>, user: &UserRef, creds: &[StoredScram]) -> Result<()> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO scram
                 (domain, username, hash, salt, iterations, stored_key, server_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (domain, username, hash) DO UPDATE SET salt = excluded.salt,
                 iterations = excluded.iterations, stored_key = excluded.stored_key,
                 server_key = excluded.server_key",
        )
        .await
        .map_err(pg_err)?;
    for c in creds {
        tx.execute(
            &stmt,
            &[
                &user.domain,
                &user.user,
                &c.hash,
                &c.salt,
                &i64::from(c.iterations),
                &c.stored_key,
                &c.server_key,
            ],
        )
        .await
        .map_err(pg_err)?;
    }
    Ok(())
}

/// The end of the tombstone of `user`'s name, if it is still in force.
async fn active_tombstone(c: &impl GenericClient, user: &UserRef) -> Result<Option<i64>> {
    let stmt = c
        .prepare_cached("SELECT until_ms FROM tombstones WHERE domain = $1 AND username = $2")
        .await
        .map_err(pg_err)?;
    let until: Option<i64> = c
        .query_opt(&stmt, &[&user.domain, &user.user])
        .await
        .map_err(pg_err)?
        .map(|r| r.get(0));
    Ok(until.filter(|u| *u > now_ms()))
}

/// Deletes what is stored for `user` itself (not its roster version counter, nor its row in
/// `users`).
async fn delete_account_rows(tx: &Transaction<'_>, user: &UserRef) -> Result<()> {
    for sql in [
        "DELETE FROM roster WHERE domain = $1 AND username = $2",
        "DELETE FROM pending_subscriptions WHERE domain = $1 AND username = $2",
        "DELETE FROM offline WHERE domain = $1 AND username = $2",
        "DELETE FROM user_data WHERE domain = $1 AND username = $2",
        "DELETE FROM scram WHERE domain = $1 AND username = $2",
        // The counter stays; the roster it counts is gone.
        "UPDATE roster_version SET items = 0 WHERE domain = $1 AND username = $2",
    ] {
        let stmt = tx.prepare_cached(sql).await.map_err(pg_err)?;
        tx.execute(&stmt, &[&user.domain, &user.user])
            .await
            .map_err(pg_err)?;
    }
    Ok(())
}

/// Resets every other account's roster item for `user` to no subscription; returns the items
/// as they were.
async fn reset_contacts(
    tx: &Transaction<'_>,
    user: &UserRef,
) -> Result<Vec<(UserRef, RosterItem)>> {
    let jid = user.jid();
    let stmt = tx
        .prepare_cached(
            "SELECT domain, username FROM roster WHERE contact = $1
             AND NOT (domain = $2 AND username = $3) ORDER BY domain COLLATE \"C\", username COLLATE \"C\" FOR UPDATE",
        )
        .await
        .map_err(pg_err)?;
    let holders: Vec<UserRef> = tx
        .query(&stmt, &[&jid, &user.domain, &user.user])
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| UserRef::new(r.get::<_, String>(1), r.get::<_, String>(0)))
        .collect();
    let update = tx
        .prepare_cached(
            "UPDATE roster SET subscription = 'none', ask = FALSE, approved = FALSE
             WHERE domain = $1 AND username = $2 AND contact = $3",
        )
        .await
        .map_err(pg_err)?;
    let mut reset = Vec::with_capacity(holders.len());
    for holder in holders {
        let Some(before) = load_roster(tx, &holder, Some(&jid)).await?.pop() else {
            continue;
        };
        tx.execute(&update, &[&holder.domain, &holder.user, &jid])
            .await
            .map_err(pg_err)?;
        bump_roster_version(tx, &holder, 0).await?;
        reset.push((holder, before));
    }
    Ok(reset)
}

/// Drops the subscription requests `user` sent that still wait for an answer; returns whose.
async fn drop_requests_from(tx: &Transaction<'_>, user: &UserRef) -> Result<Vec<UserRef>> {
    let stmt = tx
        .prepare_cached(
            "DELETE FROM pending_subscriptions WHERE contact = $1
             AND NOT (domain = $2 AND username = $3) RETURNING domain, username",
        )
        .await
        .map_err(pg_err)?;
    let mut dropped: Vec<UserRef> = tx
        .query(&stmt, &[&user.jid(), &user.domain, &user.user])
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| UserRef::new(r.get::<_, String>(1), r.get::<_, String>(0)))
        .collect();
    dropped.sort_by(|a, b| (&a.domain, &a.user).cmp(&(&b.domain, &b.user)));
    Ok(dropped)
}

#[async_trait]
impl CredentialStore for PgStore {
    async fn create_user(&self, user: &UserRef, creds: &[StoredScram]) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // The insert decides between two processes creating the same name: the second waits
        // for the first's commit and then inserts nothing.
        let stmt = tx
            .prepare_cached(
                "INSERT INTO users (domain, username, created_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (domain, username) DO NOTHING",
            )
            .await
            .map_err(pg_err)?;
        let inserted = tx
            .execute(&stmt, &[&user.domain, &user.user, &now_ms()])
            .await
            .map_err(pg_err)?;
        if inserted == 0 {
            return Err(StorageError::AlreadyExists);
        }
        if let Some(until_ms) = active_tombstone(&tx, user).await? {
            return Err(StorageError::Tombstoned { until_ms });
        }
        let stmt = tx
            .prepare_cached("DELETE FROM tombstones WHERE domain = $1 AND username = $2")
            .await
            .map_err(pg_err)?;
        tx.execute(&stmt, &[&user.domain, &user.user])
            .await
            .map_err(pg_err)?;
        delete_account_rows(&tx, user).await?;
        insert_scram(&tx, user, creds).await?;
        tx.commit().await.map_err(pg_err)
    }

    async fn set_credentials(&self, user: &UserRef, creds: &[StoredScram]) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        if !lock_user(&tx, user).await? {
            return Err(StorageError::NoSuchUser);
        }
        let stmt = tx
            .prepare_cached("DELETE FROM scram WHERE domain = $1 AND username = $2")
            .await
            .map_err(pg_err)?;
        tx.execute(&stmt, &[&user.domain, &user.user])
            .await
            .map_err(pg_err)?;
        insert_scram(&tx, user, creds).await?;
        tx.commit().await.map_err(pg_err)
    }

    async fn remove_account(
        &self,
        user: &UserRef,
        tombstone_until_ms: Option<i64>,
    ) -> Result<AccountRemoval> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        if !lock_user(&tx, user).await? {
            return Err(StorageError::NoSuchUser);
        }
        let removed = AccountRemoval {
            roster: load_roster(&tx, user, None).await?,
            contacts: reset_contacts(&tx, user).await?,
            requests_dropped: drop_requests_from(&tx, user).await?,
            rooms: drop_affiliations(&tx, user).await?,
        };
        delete_account_rows(&tx, user).await?;
        let stmt = tx
            .prepare_cached("DELETE FROM users WHERE domain = $1 AND username = $2")
            .await
            .map_err(pg_err)?;
        tx.execute(&stmt, &[&user.domain, &user.user])
            .await
            .map_err(pg_err)?;
        bump_roster_version(&tx, user, 0).await?;
        if let Some(until) = tombstone_until_ms {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO tombstones (domain, username, until_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (domain, username) DO UPDATE SET until_ms = excluded.until_ms",
                )
                .await
                .map_err(pg_err)?;
            tx.execute(&stmt, &[&user.domain, &user.user, &until])
                .await
                .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(removed)
    }

    async fn tombstone(&self, user: &UserRef) -> Result<Option<i64>> {
        active_tombstone(&self.client().await?, user).await
    }

    async fn clear_tombstone(&self, user: &UserRef) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("DELETE FROM tombstones WHERE domain = $1 AND username = $2")
            .await
            .map_err(pg_err)?;
        client
            .execute(&stmt, &[&user.domain, &user.user])
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn user_exists(&self, user: &UserRef) -> Result<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT 1 FROM users WHERE domain = $1 AND username = $2")
            .await
            .map_err(pg_err)?;
        let row = client
            .query_opt(&stmt, &[&user.domain, &user.user])
            .await
            .map_err(pg_err)?;
        Ok(row.is_some())
    }

    async fn credentials(&self, user: &UserRef, hash: &str) -> Result<Option<StoredScram>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT hash, salt, iterations, stored_key, server_key FROM scram
                 WHERE domain = $1 AND username = $2 AND hash = $3",
            )
            .await
            .map_err(pg_err)?;
        let row = client
            .query_opt(&stmt, &[&user.domain, &user.user, &hash])
            .await
            .map_err(pg_err)?;
        row.map(|r| {
            Ok(StoredScram {
                hash: r.get(0),
                salt: r.get(1),
                iterations: u32::try_from(r.get::<_, i64>(2)).map_err(|_| corrupt("iterations"))?,
                stored_key: r.get(3),
                server_key: r.get(4),
            })
        })
        .transpose()
    }

    async fn list_users(&self, domain: &str) -> Result<Vec<String>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT username FROM users WHERE domain = $1 ORDER BY username COLLATE \"C\"",
            )
            .await
            .map_err(pg_err)?;
        let rows = client.query(&stmt, &[&domain]).await.map_err(pg_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
