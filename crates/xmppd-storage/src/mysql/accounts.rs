//! Accounts: users, SCRAM credentials, tombstones of removed names, and account removal.

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::Transaction;

use super::rooms::drop_affiliations;
use super::roster::{bump_roster_version, load_roster};
use super::{exec_count, my_err, write, MysqlStore};
use crate::remote::{corrupt, now_ms};
use crate::{
    AccountRemoval, CredentialStore, Result, RosterItem, StorageError, StoredScram, UserRef,
};

/// Locks the account's row for the rest of `tx`; whether it exists.
async fn lock_user(tx: &mut Transaction<'_>, user: &UserRef) -> Result<bool> {
    let row: Option<i64> = tx
        .exec_first(
            "SELECT 1 FROM users WHERE domain = ? AND username = ? FOR UPDATE",
            (&user.domain, &user.user),
        )
        .await
        .map_err(my_err)?;
    Ok(row.is_some())
}

async fn insert_scram(
    tx: &mut Transaction<'_>,
    user: &UserRef,
    creds: &[StoredScram],
) -> Result<()> {
    for c in creds {
        tx.exec_drop(
            "INSERT INTO scram (domain, username, hash, salt, iterations, stored_key, server_key)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON DUPLICATE KEY UPDATE salt = VALUES(salt), iterations = VALUES(iterations),
                 stored_key = VALUES(stored_key), server_key = VALUES(server_key)",
            (
                &user.domain,
                &user.user,
                &c.hash,
                &c.salt,
                i64::from(c.iterations),
                &c.stored_key,
                &c.server_key,
            ),
        )
        .await
        .map_err(my_err)?;
    }
    Ok(())
}

/// The end of the tombstone of `user`'s name, if it is still in force.
async fn active_tombstone(q: &mut impl Queryable, user: &UserRef) -> Result<Option<i64>> {
    let until: Option<i64> = q
        .exec_first(
            "SELECT until_ms FROM tombstones WHERE domain = ? AND username = ?",
            (&user.domain, &user.user),
        )
        .await
        .map_err(my_err)?;
    Ok(until.filter(|u| *u > now_ms()))
}

/// Deletes what is stored for `user` itself (not its roster version counter, nor its row in
/// `users`).
async fn delete_account_rows(tx: &mut Transaction<'_>, user: &UserRef) -> Result<()> {
    for sql in [
        "DELETE FROM roster WHERE domain = ? AND username = ?",
        "DELETE FROM pending_subscriptions WHERE domain = ? AND username = ?",
        "DELETE FROM offline WHERE domain = ? AND username = ?",
        "DELETE FROM user_data WHERE domain = ? AND username = ?",
        "DELETE FROM scram WHERE domain = ? AND username = ?",
        // The counter stays; the roster it counts is gone.
        "UPDATE roster_version SET items = 0 WHERE domain = ? AND username = ?",
    ] {
        tx.exec_drop(sql, (&user.domain, &user.user))
            .await
            .map_err(my_err)?;
    }
    Ok(())
}

/// Resets every other account's roster item for `user` to no subscription; returns the items
/// as they were.
async fn reset_contacts(
    tx: &mut Transaction<'_>,
    user: &UserRef,
) -> Result<Vec<(UserRef, RosterItem)>> {
    let jid = user.jid();
    let holders: Vec<(String, String)> = tx
        .exec(
            "SELECT domain, username FROM roster WHERE contact = ?
             AND NOT (domain = ? AND username = ?) ORDER BY domain, username FOR UPDATE",
            (&jid, &user.domain, &user.user),
        )
        .await
        .map_err(my_err)?;
    let mut reset = Vec::with_capacity(holders.len());
    for (domain, username) in holders {
        let holder = UserRef::new(username, domain);
        let Some(before) = load_roster(tx, &holder, Some(&jid)).await?.pop() else {
            continue;
        };
        tx.exec_drop(
            "UPDATE roster SET subscription = 'none', ask = FALSE, approved = FALSE
             WHERE domain = ? AND username = ? AND contact = ?",
            (&holder.domain, &holder.user, &jid),
        )
        .await
        .map_err(my_err)?;
        bump_roster_version(tx, &holder, 0).await?;
        reset.push((holder, before));
    }
    Ok(reset)
}

/// Drops the subscription requests `user` sent that still wait for an answer; returns whose.
async fn drop_requests_from(tx: &mut Transaction<'_>, user: &UserRef) -> Result<Vec<UserRef>> {
    let jid = user.jid();
    let holders: Vec<(String, String)> = tx
        .exec(
            "SELECT domain, username FROM pending_subscriptions WHERE contact = ?
             AND NOT (domain = ? AND username = ?) ORDER BY domain, username FOR UPDATE",
            (&jid, &user.domain, &user.user),
        )
        .await
        .map_err(my_err)?;
    tx.exec_drop(
        "DELETE FROM pending_subscriptions WHERE contact = ? AND NOT (domain = ? AND username = ?)",
        (&jid, &user.domain, &user.user),
    )
    .await
    .map_err(my_err)?;
    Ok(holders
        .into_iter()
        .map(|(domain, username)| UserRef::new(username, domain))
        .collect())
}

#[async_trait]
impl CredentialStore for MysqlStore {
    async fn create_user(&self, user: &UserRef, creds: &[StoredScram]) -> Result<()> {
        let mut conn = self.conn().await?;
        let mut tx = write(&mut conn).await?;
        // The insert decides between two processes creating the same name: the second waits
        // for the first's commit and then changes nothing (0 rows; an insert is 1).
        let inserted = exec_count(
            &mut tx,
            "INSERT INTO users (domain, username, created_ms) VALUES (?, ?, ?)
             ON DUPLICATE KEY UPDATE created_ms = created_ms",
            (&user.domain, &user.user, now_ms()),
        )
        .await?;
        if inserted != 1 {
            return Err(StorageError::AlreadyExists);
        }
        if let Some(until_ms) = active_tombstone(&mut tx, user).await? {
            return Err(StorageError::Tombstoned { until_ms });
        }
        tx.exec_drop(
            "DELETE FROM tombstones WHERE domain = ? AND username = ?",
            (&user.domain, &user.user),
        )
        .await
        .map_err(my_err)?;
        delete_account_rows(&mut tx, user).await?;
        insert_scram(&mut tx, user, creds).await?;
        tx.commit().await.map_err(my_err)
    }

    async fn set_credentials(&self, user: &UserRef, creds: &[StoredScram]) -> Result<()> {
        let mut conn = self.conn().await?;
        let mut tx = write(&mut conn).await?;
        if !lock_user(&mut tx, user).await? {
            return Err(StorageError::NoSuchUser);
        }
        tx.exec_drop(
            "DELETE FROM scram WHERE domain = ? AND username = ?",
            (&user.domain, &user.user),
        )
        .await
        .map_err(my_err)?;
        insert_scram(&mut tx, user, creds).await?;
        tx.commit().await.map_err(my_err)
    }

    async fn remove_account(
        &self,
        user: &UserRef,
        tombstone_until_ms: Option<i64>,
    ) -> Result<AccountRemoval> {
        let mut conn = self.conn().await?;
        let mut tx = write(&mut conn).await?;
        if !lock_user(&mut tx, user).await? {
            return Err(StorageError::NoSuchUser);
        }
        let removed = AccountRemoval {
            roster: load_roster(&mut tx, user, None).await?,
            contacts: reset_contacts(&mut tx, user).await?,
            requests_dropped: drop_requests_from(&mut tx, user).await?,
            rooms: drop_affiliations(&mut tx, user).await?,
        };
        delete_account_rows(&mut tx, user).await?;
        tx.exec_drop(
            "DELETE FROM users WHERE domain = ? AND username = ?",
            (&user.domain, &user.user),
        )
        .await
        .map_err(my_err)?;
        bump_roster_version(&mut tx, user, 0).await?;
        if let Some(until) = tombstone_until_ms {
            tx.exec_drop(
                "INSERT INTO tombstones (domain, username, until_ms) VALUES (?, ?, ?)
                 ON DUPLICATE KEY UPDATE until_ms = VALUES(until_ms)",
                (&user.domain, &user.user, until),
            )
            .await
            .map_err(my_err)?;
        }
        tx.commit().await.map_err(my_err)?;
        Ok(removed)
    }

    async fn tombstone(&self, user: &UserRef) -> Result<Option<i64>> {
        active_tombstone(&mut self.conn().await?, user).await
    }

    async fn clear_tombstone(&self, user: &UserRef) -> Result<()> {
        self.conn()
            .await?
            .exec_drop(
                "DELETE FROM tombstones WHERE domain = ? AND username = ?",
                (&user.domain, &user.user),
            )
            .await
            .map_err(my_err)
    }

    async fn user_exists(&self, user: &UserRef) -> Result<bool> {
        let row: Option<i64> = self
            .conn()
            .await?
            .exec_first(
                "SELECT 1 FROM users WHERE domain = ? AND username = ?",
                (&user.domain, &user.user),
            )
            .await
            .map_err(my_err)?;
        Ok(row.is_some())
    }

    async fn credentials(&self, user: &UserRef, hash: &str) -> Result<Option<StoredScram>> {
        type Row = (String, Vec<u8>, i64, Vec<u8>, Vec<u8>);
        let row: Option<Row> = self
            .conn()
            .await?
            .exec_first(
                "SELECT hash, salt, iterations, stored_key, server_key FROM scram
                 WHERE domain = ? AND username = ? AND hash = ?",
                (&user.domain, &user.user, hash),
            )
            .await
            .map_err(my_err)?;
        row.map(|(hash, salt, iterations, stored_key, server_key)| {
            Ok(StoredScram {
                hash,
                salt,
                iterations: u32::try_from(iterations).map_err(|_| corrupt("iterations"))?,
                stored_key,
                server_key,
            })
        })
        .transpose()
    }

    async fn list_users(&self, domain: &str) -> Result<Vec<String>> {
        self.conn()
            .await?
            .exec(
                "SELECT username FROM users WHERE domain = ? ORDER BY username",
                (domain,),
            )
            .await
            .map_err(my_err)
    }
}
