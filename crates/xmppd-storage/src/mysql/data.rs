//! Per-user key/value data, and the records of the sessions connected to each node.

use async_trait::async_trait;
use mysql_async::prelude::Queryable;

use super::{my_err, MysqlStore};
use crate::{Result, SessionRecord, SessionStore, UserDataStore, UserRef};

#[async_trait]
impl UserDataStore for MysqlStore {
    async fn get_data(&self, user: &UserRef, key: &str) -> Result<Option<String>> {
        self.conn()
            .await?
            .exec_first(
                "SELECT value FROM user_data WHERE domain = ? AND username = ? AND data_key = ?",
                (&user.domain, &user.user, key),
            )
            .await
            .map_err(my_err)
    }

    async fn set_data(&self, user: &UserRef, key: &str, value: &str) -> Result<()> {
        self.conn()
            .await?
            .exec_drop(
                "INSERT INTO user_data (domain, username, data_key, value) VALUES (?, ?, ?, ?)
                 ON DUPLICATE KEY UPDATE value = VALUES(value)",
                (&user.domain, &user.user, key, value),
            )
            .await
            .map_err(my_err)
    }

    async fn remove_data(&self, user: &UserRef, key: &str) -> Result<()> {
        self.conn()
            .await?
            .exec_drop(
                "DELETE FROM user_data WHERE domain = ? AND username = ? AND data_key = ?",
                (&user.domain, &user.user, key),
            )
            .await
            .map_err(my_err)
    }
}

#[async_trait]
impl SessionStore for MysqlStore {
    async fn session_opened(&self, rec: &SessionRecord) -> Result<()> {
        self.conn()
            .await?
            .exec_drop(
                "INSERT INTO sessions (jid, peer, node, started_ms, user_agent)
                 VALUES (?, ?, ?, ?, ?)
                 ON DUPLICATE KEY UPDATE peer = VALUES(peer), node = VALUES(node),
                     started_ms = VALUES(started_ms), user_agent = VALUES(user_agent)",
                (
                    &rec.jid,
                    &rec.peer,
                    &rec.node,
                    rec.started_ms,
                    &rec.user_agent,
                ),
            )
            .await
            .map_err(my_err)
    }

    async fn session_closed(&self, jid: &str) -> Result<()> {
        self.conn()
            .await?
            .exec_drop("DELETE FROM sessions WHERE jid = ?", (jid,))
            .await
            .map_err(my_err)
    }

    async fn clear_sessions(&self, node: &str) -> Result<()> {
        self.conn()
            .await?
            .exec_drop("DELETE FROM sessions WHERE node = ?", (node,))
            .await
            .map_err(my_err)
    }

    async fn sessions(&self) -> Result<Vec<SessionRecord>> {
        let rows: Vec<(String, String, String, i64, String)> = self
            .conn()
            .await?
            .exec(
                "SELECT jid, peer, node, started_ms, user_agent FROM sessions ORDER BY jid",
                (),
            )
            .await
            .map_err(my_err)?;
        Ok(rows
            .into_iter()
            .map(|(jid, peer, node, started_ms, user_agent)| SessionRecord {
                jid,
                peer,
                node,
                started_ms,
                user_agent,
            })
            .collect())
    }
}
