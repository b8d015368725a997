//! Per-user key/value data.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::SqliteStore;
use crate::{Result, UserDataStore, UserRef};

#[async_trait]
impl UserDataStore for SqliteStore {
    async fn get_data(&self, user: &UserRef, key: &str) -> Result<Option<String>> {
        let (user, key) = (user.clone(), key.to_owned());
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT value FROM user_data WHERE domain = ?1 AND user = ?2 AND key = ?3",
            )?
            .query_row(params![user.domain, user.user, key], |r| r.get(0))
            .optional()?)
        })
        .await
    }

    async fn set_data(&self, user: &UserRef, key: &str, value: &str) -> Result<()> {
        let (user, key, value) = (user.clone(), key.to_owned(), value.to_owned());
        self.write(move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO user_data (domain, user, key, value)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![user.domain, user.user, key, value])?;
            Ok(())
        })
        .await
    }

    async fn remove_data(&self, user: &UserRef, key: &str) -> Result<()> {
        let (user, key) = (user.clone(), key.to_owned());
        self.write(move |c| {
            c.prepare_cached("DELETE FROM user_data WHERE domain = ?1 AND user = ?2 AND key = ?3")?
                .execute(params![user.domain, user.user, key])?;
            Ok(())
        })
        .await
    }
}
