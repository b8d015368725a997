//! Records of the sessions connected to each node (`xmppd sessions`).

use async_trait::async_trait;
use rusqlite::params;

use super::SqliteStore;
use crate::{Result, SessionRecord, SessionStore};

#[async_trait]
impl SessionStore for SqliteStore {
    async fn session_opened(&self, rec: &SessionRecord) -> Result<()> {
        let rec = rec.clone();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO sessions (jid, peer, node, started_ms, user_agent)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                rec.jid,
                rec.peer,
                rec.node,
                rec.started_ms,
                rec.user_agent
            ])?;
            Ok(())
        })
        .await
    }

    async fn session_closed(&self, jid: &str) -> Result<()> {
        let jid = jid.to_owned();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM sessions WHERE jid = ?1")?
                .execute([jid])?;
            Ok(())
        })
        .await
    }

    async fn clear_sessions(&self, node: &str) -> Result<()> {
        let node = node.to_owned();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM sessions WHERE node = ?1")?
                .execute([node])?;
            Ok(())
        })
        .await
    }

    async fn sessions(&self) -> Result<Vec<SessionRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT jid, peer, node, started_ms, user_agent FROM sessions ORDER BY jid",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(SessionRecord {
                    jid: r.get(0)?,
                    peer: r.get(1)?,
                    node: r.get(2)?,
                    started_ms: r.get(3)?,
                    user_agent: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}
