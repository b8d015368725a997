//! Offline messages (XEP-0160).

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::{corrupt, SqliteStore};
use crate::{OfflineMessage, OfflineStore, Result, UserRef};

fn count_offline(conn: &Connection, user: &UserRef) -> Result<usize> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM offline WHERE domain = ?1 AND user = ?2")?
        .query_row(params![user.domain, user.user], |r| r.get(0))?;
    usize::try_from(n).map_err(|_| corrupt("offline count"))
}

/// Stored messages of `user` with ids above `after_id`, oldest first: at most `max_count`, and
/// no more than `max_bytes` of XML unless the first alone is larger.
fn read_page(
    c: &Connection,
    user: &UserRef,
    after_id: i64,
    max_count: usize,
    max_bytes: usize,
) -> Result<Vec<OfflineMessage>> {
    let mut stmt = c.prepare_cached(
        "SELECT id, stamp_ms, xml FROM offline
         WHERE domain = ?1 AND user = ?2 AND id > ?3 ORDER BY id LIMIT ?4",
    )?;
    let limit = i64::try_from(max_count).unwrap_or(i64::MAX);
    let mut rows = stmt.query(params![user.domain, user.user, after_id, limit])?;
    let (mut page, mut bytes) = (Vec::new(), 0usize);
    while let Some(r) = rows.next()? {
        let xml: String = r.get(2)?;
        bytes += xml.len();
        if bytes > max_bytes && !page.is_empty() {
            break;
        }
        page.push(OfflineMessage {
            id: r.get(0)?,
            stamp_ms: r.get(1)?,
            xml,
        });
    }
    Ok(page)
}

#[async_trait]
impl OfflineStore for SqliteStore {
    async fn push_offline(
        &self,
        user: &UserRef,
        stamp_ms: i64,
        xml: &str,
        max: usize,
    ) -> Result<bool> {
        let (user, xml) = (user.clone(), xml.to_owned());
        self.write(move |c| {
            // Counting inside the writer makes check-and-insert atomic against other pushes.
            if count_offline(c, &user)? >= max {
                return Ok(false);
            }
            c.prepare_cached(
                "INSERT INTO offline (domain, user, stamp_ms, xml) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![user.domain, user.user, stamp_ms, xml])?;
            Ok(true)
        })
        .await
    }

    async fn offline_messages(&self, user: &UserRef) -> Result<Vec<OfflineMessage>> {
        let user = user.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, stamp_ms, xml FROM offline
                 WHERE domain = ?1 AND user = ?2 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![user.domain, user.user], |r| {
                Ok(OfflineMessage {
                    id: r.get(0)?,
                    stamp_ms: r.get(1)?,
                    xml: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn offline_page(
        &self,
        user: &UserRef,
        after_id: i64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<OfflineMessage>> {
        let user = user.clone();
        self.read(move |c| read_page(c, &user, after_id, max_count, max_bytes))
            .await
    }

    async fn take_offline(
        &self,
        user: &UserRef,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<OfflineMessage>> {
        let user = user.clone();
        // In the writer: no other write (of this process or, through the write lock, of
        // another) comes between the read and the delete.
        self.write(move |c| {
            let page = read_page(c, &user, i64::MIN, max_count, max_bytes)?;
            let mut delete = c.prepare_cached(
                "DELETE FROM offline WHERE domain = ?1 AND user = ?2 AND id = ?3",
            )?;
            for m in &page {
                delete.execute(params![user.domain, user.user, m.id])?;
            }
            Ok(page)
        })
        .await
    }

    async fn remove_offline(&self, user: &UserRef, up_to_id: i64) -> Result<()> {
        let user = user.clone();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM offline WHERE domain = ?1 AND user = ?2 AND id <= ?3")?
                .execute(params![user.domain, user.user, up_to_id])?;
            Ok(())
        })
        .await
    }

    async fn replace_offline(&self, user: &UserRef, id: i64, xml: &str) -> Result<bool> {
        let (user, xml) = (user.clone(), xml.to_owned());
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE offline SET xml = ?4 WHERE domain = ?1 AND user = ?2 AND id = ?3",
                )?
                .execute(params![user.domain, user.user, id, xml])?;
            Ok(n > 0)
        })
        .await
    }

    async fn offline_count(&self, user: &UserRef) -> Result<usize> {
        let user = user.clone();
        self.read(move |c| count_offline(c, &user)).await
    }
}
