//! Per-user key/value data, and the records of the sessions connected to each node.

use async_trait::async_trait;

use super::{pg_err, PgStore};
use crate::{Result, SessionRecord, SessionStore, UserDataStore, UserRef};

#[async_trait]
impl UserDataStore for PgStore {
    async fn get_data(&self, user: &UserRef, key: &str) -> Result<Option<String>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT value FROM user_data WHERE domain = $1 AND username = $2 AND key = $3",
            )
            .await
            .map_err(pg_err)?;
        let row = client
            .query_opt(&stmt, &[&user.domain, &user.user, &key])
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn set_data(&self, user: &UserRef, key: &str, value: &str) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO user_data (domain, username, key, value) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (domain, username, key) DO UPDATE SET value = excluded.value",
            )
            .await
            .map_err(pg_err)?;
        client
            .execute(&stmt, &[&user.domain, &user.user, &key, &value])
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn remove_data(&self, user: &UserRef, key: &str) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "DELETE FROM user_data WHERE domain = $1 AND username = $2 AND key = $3",
            )
            .await
            .map_err(pg_err)?;
        client
            .execute(&stmt, &[&user.domain, &user.user, &key])
            .await
            .map_err(pg_err)?;
        Ok(())
    }
}

#[async_trait]
impl SessionStore for PgStore {
    async fn session_opened(&self, rec: &SessionRecord) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO sessions (jid, peer, node, started_ms, user_agent)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (jid) DO UPDATE SET peer = excluded.peer, node = excluded.node,
                     started_ms = excluded.started_ms, user_agent = excluded.user_agent",
            )
            .await
            .map_err(pg_err)?;
        client
            .execute(
                &stmt,
                &[
                    &rec.jid,
                    &rec.peer,
                    &rec.node,
                    &rec.started_ms,
                    &rec.user_agent,
                ],
            )
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn session_closed(&self, jid: &str) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("DELETE FROM sessions WHERE jid = $1")
            .await
            .map_err(pg_err)?;
        client.execute(&stmt, &[&jid]).await.map_err(pg_err)?;
        Ok(())
    }

    async fn clear_sessions(&self, node: &str) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("DELETE FROM sessions WHERE node = $1")
            .await
            .map_err(pg_err)?;
        client.execute(&stmt, &[&node]).await.map_err(pg_err)?;
        Ok(())
    }

    async fn sessions(&self) -> Result<Vec<SessionRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT jid, peer, node, started_ms, user_agent FROM sessions
                 ORDER BY jid COLLATE \"C\"",
            )
            .await
            .map_err(pg_err)?;
        let rows = client.query(&stmt, &[]).await.map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| SessionRecord {
                jid: r.get(0),
                peer: r.get(1),
                node: r.get(2),
                started_ms: r.get(3),
                user_agent: r.get(4),
            })
            .collect())
    }
}
