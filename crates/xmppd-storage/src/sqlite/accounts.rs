//! Accounts: users, SCRAM credentials, tombstones of removed names, and account removal.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::rooms::drop_affiliations;
use super::roster::{bump_roster_version, load_roster};
use super::{corrupt, now_ms, SqliteStore};
use crate::{
    AccountRemoval, CredentialStore, Result, RosterItem, StorageError, StoredScram, UserRef,
};

fn user_exists(conn: &Connection, user: &UserRef) -> Result<bool> {
    let found = conn
        .prepare_cached("SELECT 1 FROM users WHERE domain = ?1 AND user = ?2")?
        .query_row(params![user.domain, user.user], |_| Ok(()))
        .optional()?;
    Ok(found.is_some())
}

fn insert_scram(conn: &Connection, user: &UserRef, creds: &[StoredScram]) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO scram
             (domain, user, hash, salt, iterations, stored_key, server_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for c in creds {
        stmt.execute(params![
            user.domain,
            user.user,
            c.hash,
            c.salt,
            i64::from(c.iterations),
            c.stored_key,
            c.server_key
        ])?;
    }
    Ok(())
}

/// The end of the tombstone of `user`'s name, if it is still in force.
fn active_tombstone(conn: &Connection, user: &UserRef) -> Result<Option<i64>> {
    let until: Option<i64> = conn
        .prepare_cached("SELECT until_ms FROM tombstones WHERE domain = ?1 AND user = ?2")?
        .query_row(params![user.domain, user.user], |r| r.get(0))
        .optional()?;
    Ok(until.filter(|u| *u > now_ms()))
}

/// Deletes what is stored for `user` itself (not its roster version counter).
fn delete_account_rows(conn: &Connection, user: &UserRef) -> Result<()> {
    for table in [
        "roster_groups",
        "roster",
        "pending_subscriptions",
        "offline",
        "user_data",
        "scram",
        "users",
    ] {
        conn.prepare_cached(&format!(
            "DELETE FROM {table} WHERE domain = ?1 AND user = ?2"
        ))?
        .execute(params![user.domain, user.user])?;
    }
    // The counter stays; the roster it counts is gone.
    conn.prepare_cached("UPDATE roster_version SET items = 0 WHERE domain = ?1 AND user = ?2")?
        .execute(params![user.domain, user.user])?;
    Ok(())
}

/// Resets every other account's roster item for `user` to no subscription; returns the items
/// as they were.
fn reset_contacts(conn: &Connection, user: &UserRef) -> Result<Vec<(UserRef, RosterItem)>> {
    let jid = user.jid();
    let holders = conn
        .prepare_cached(
            "SELECT domain, user FROM roster WHERE contact = ?1
             AND NOT (domain = ?2 AND user = ?3) ORDER BY domain, user",
        )?
        .query_map(params![jid, user.domain, user.user], |r| {
            Ok(UserRef::new(r.get::<_, String>(1)?, r.get::<_, String>(0)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut reset = Vec::with_capacity(holders.len());
    for holder in holders {
        let Some(before) = load_roster(conn, &holder, Some(&jid))?.pop() else {
            continue;
        };
        conn.prepare_cached(
            "UPDATE roster SET subscription = 'none', ask = 0, approved = 0
             WHERE domain = ?1 AND user = ?2 AND contact = ?3",
        )?
        .execute(params![holder.domain, holder.user, jid])?;
        bump_roster_version(conn, &holder, 0)?;
        reset.push((holder, before));
    }
    Ok(reset)
}

/// Drops the subscription requests `user` sent that still wait for an answer; returns whose.
fn drop_requests_from(conn: &Connection, user: &UserRef) -> Result<Vec<UserRef>> {
    let mut dropped = conn
        .prepare_cached(
            "DELETE FROM pending_subscriptions WHERE contact = ?1
             AND NOT (domain = ?2 AND user = ?3) RETURNING domain, user",
        )?
        .query_map(params![user.jid(), user.domain, user.user], |r| {
            Ok(UserRef::new(r.get::<_, String>(1)?, r.get::<_, String>(0)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    dropped.sort_by(|a, b| (&a.domain, &a.user).cmp(&(&b.domain, &b.user)));
    Ok(dropped)
}

#[async_trait]
impl CredentialStore for SqliteStore {
    async fn create_user(&self, user: &UserRef, creds: &[StoredScram]) -> Result<()> {
        let (user, creds) = (user.clone(), creds.to_vec());
        self.write(move |c| {
            if user_exists(c, &user)? {
                return Err(StorageError::AlreadyExists);
            }
            if let Some(until_ms) = active_tombstone(c, &user)? {
                return Err(StorageError::Tombstoned { until_ms });
            }
            c.prepare_cached("DELETE FROM tombstones WHERE domain = ?1 AND user = ?2")?
                .execute(params![user.domain, user.user])?;
            delete_account_rows(c, &user)?;
            c.prepare_cached("INSERT INTO users (domain, user, created_ms) VALUES (?1, ?2, ?3)")?
                .execute(params![user.domain, user.user, now_ms()])?;
            insert_scram(c, &user, &creds)
        })
        .await
    }

    async fn set_credentials(&self, user: &UserRef, creds: &[StoredScram]) -> Result<()> {
        let (user, creds) = (user.clone(), creds.to_vec());
        self.write(move |c| {
            if !user_exists(c, &user)? {
                return Err(StorageError::NoSuchUser);
            }
            c.prepare_cached("DELETE FROM scram WHERE domain = ?1 AND user = ?2")?
                .execute(params![user.domain, user.user])?;
            insert_scram(c, &user, &creds)
        })
        .await
    }

    async fn remove_account(
        &self,
        user: &UserRef,
        tombstone_until_ms: Option<i64>,
    ) -> Result<AccountRemoval> {
        let user = user.clone();
        self.write(move |c| {
            if !user_exists(c, &user)? {
                return Err(StorageError::NoSuchUser);
            }
            let removed = AccountRemoval {
                roster: load_roster(c, &user, None)?,
                contacts: reset_contacts(c, &user)?,
                requests_dropped: drop_requests_from(c, &user)?,
                rooms: drop_affiliations(c, &user)?,
            };
            delete_account_rows(c, &user)?;
            bump_roster_version(c, &user, 0)?;
            if let Some(until) = tombstone_until_ms {
                c.prepare_cached(
                    "INSERT INTO tombstones (domain, user, until_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (domain, user) DO UPDATE SET until_ms = excluded.until_ms",
                )?
                .execute(params![user.domain, user.user, until])?;
            }
            Ok(removed)
        })
        .await
    }

    async fn tombstone(&self, user: &UserRef) -> Result<Option<i64>> {
        let user = user.clone();
        self.read(move |c| active_tombstone(c, &user)).await
    }

    async fn clear_tombstone(&self, user: &UserRef) -> Result<()> {
        let user = user.clone();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM tombstones WHERE domain = ?1 AND user = ?2")?
                .execute(params![user.domain, user.user])?;
            Ok(())
        })
        .await
    }

    async fn user_exists(&self, user: &UserRef) -> Result<bool> {
        let user = user.clone();
        self.read(move |c| user_exists(c, &user)).await
    }

    async fn credentials(&self, user: &UserRef, hash: &str) -> Result<Option<StoredScram>> {
        let (user, hash) = (user.clone(), hash.to_owned());
        self.read(move |c| {
            let row = c
                .prepare_cached(
                    "SELECT hash, salt, iterations, stored_key, server_key FROM scram
                     WHERE domain = ?1 AND user = ?2 AND hash = ?3",
                )?
                .query_row(params![user.domain, user.user, hash], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get::<_, i64>(2)?,
                        r.get(3)?,
                        r.get(4)?,
                    ))
                })
                .optional()?;
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
        })
        .await
    }

    async fn list_users(&self, domain: &str) -> Result<Vec<String>> {
        let domain = domain.to_owned();
        self.read(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT user FROM users WHERE domain = ?1 ORDER BY user")?;
            let users = stmt.query_map([domain], |r| r.get(0))?;
            Ok(users.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }
}
