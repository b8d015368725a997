//! Offline messages (XEP-0160).

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::{exec_count, my_err, named_lock, named_unlock, write, MysqlStore};
use crate::remote::{corrupt, fit_page, limit};
use crate::{OfflineMessage, OfflineStore, Result, UserRef};

async fn count_offline(q: &mut impl Queryable, user: &UserRef) -> Result<usize> {
    let n: Option<i64> = q
        .exec_first(
            "SELECT COUNT(*) FROM offline WHERE domain = ? AND username = ?",
            (&user.domain, &user.user),
        )
        .await
        .map_err(my_err)?;
    usize::try_from(n.unwrap_or(0)).map_err(|_| corrupt("offline count"))
}

/// Stores the message under the account's named lock (held to the commit and released after
/// it), so that two pushes, from two processes, cannot both take the last place.
async fn push_locked(
    conn: &mut Conn,
    user: &UserRef,
    stamp_ms: i64,
    xml: &str,
    max: usize,
) -> Result<bool> {
    let mut tx = write(conn).await?;
    if count_offline(&mut tx, user).await? >= max {
        return Ok(false);
    }
    tx.exec_drop(
        "INSERT INTO offline (domain, username, stamp_ms, xml) VALUES (?, ?, ?, ?)",
        (&user.domain, &user.user, stamp_ms, xml),
    )
    .await
    .map_err(my_err)?;
    tx.commit().await.map_err(my_err)?;
    Ok(true)
}

#[async_trait]
impl OfflineStore for MysqlStore {
    async fn push_offline(
        &self,
        user: &UserRef,
        stamp_ms: i64,
        xml: &str,
        max: usize,
    ) -> Result<bool> {
        let mut conn = self.conn().await?;
        let jid = user.jid();
        named_lock(&mut conn, "offline:", &jid).await?;
        let pushed = push_locked(&mut conn, user, stamp_ms, xml, max).await;
        let released = named_unlock(&mut conn, "offline:", &jid).await;
        let pushed = pushed?;
        released?;
        Ok(pushed)
    }

    async fn offline_messages(&self, user: &UserRef) -> Result<Vec<OfflineMessage>> {
        self.offline_page(user, i64::MIN, usize::MAX, usize::MAX)
            .await
    }

    async fn offline_page(
        &self,
        user: &UserRef,
        after_id: i64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<OfflineMessage>> {
        let rows: Vec<(i64, i64, String)> = self
            .conn()
            .await?
            .exec(
                "SELECT id, stamp_ms, xml FROM offline
                 WHERE domain = ? AND username = ? AND id > ? ORDER BY id LIMIT ?",
                (&user.domain, &user.user, after_id, limit(max_count)),
            )
            .await
            .map_err(my_err)?;
        Ok(fit_page(rows, max_bytes))
    }

    async fn take_offline(
        &self,
        user: &UserRef,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<OfflineMessage>> {
        let mut conn = self.conn().await?;
        let mut tx = write(&mut conn).await?;
        // Rows another process is taking are skipped, not waited for: each row goes to one
        // taker, and neither blocks the other.
        let rows: Vec<(i64, i64, String)> = tx
            .exec(
                "SELECT id, stamp_ms, xml FROM offline
                 WHERE domain = ? AND username = ? ORDER BY id LIMIT ?
                 FOR UPDATE SKIP LOCKED",
                (&user.domain, &user.user, limit(max_count)),
            )
            .await
            .map_err(my_err)?;
        let page = fit_page(rows, max_bytes);
        for m in &page {
            tx.exec_drop("DELETE FROM offline WHERE id = ?", (m.id,))
                .await
                .map_err(my_err)?;
        }
        tx.commit().await.map_err(my_err)?;
        Ok(page)
    }

    async fn remove_offline(&self, user: &UserRef, up_to_id: i64) -> Result<()> {
        self.conn()
            .await?
            .exec_drop(
                "DELETE FROM offline WHERE domain = ? AND username = ? AND id <= ?",
                (&user.domain, &user.user, up_to_id),
            )
            .await
            .map_err(my_err)
    }

    async fn replace_offline(&self, user: &UserRef, id: i64, xml: &str) -> Result<bool> {
        let mut conn = self.conn().await?;
        let changed = exec_count(
            &mut conn,
            "UPDATE offline SET xml = ? WHERE domain = ? AND username = ? AND id = ?",
            (xml, &user.domain, &user.user, id),
        )
        .await?;
        if changed > 0 {
            return Ok(true);
        }
        // Nothing changed: either no such message, or it already held this text.
        let found: Option<i64> = conn
            .exec_first(
                "SELECT 1 FROM offline WHERE domain = ? AND username = ? AND id = ?",
                (&user.domain, &user.user, id),
            )
            .await
            .map_err(my_err)?;
        Ok(found.is_some())
    }

    async fn offline_count(&self, user: &UserRef) -> Result<usize> {
        count_offline(&mut self.conn().await?, user).await
    }
}
