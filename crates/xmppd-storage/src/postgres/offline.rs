//! Offline messages (XEP-0160).

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::{corrupt, pg_err, PgStore};
use crate::remote::{fit_page, limit};
use crate::{OfflineMessage, OfflineStore, Result, UserRef};

async fn count_offline(c: &impl GenericClient, user: &UserRef) -> Result<usize> {
    let stmt = c
        .prepare_cached("SELECT COUNT(*) FROM offline WHERE domain = $1 AND username = $2")
        .await
        .map_err(pg_err)?;
    let n: i64 = c
        .query_one(&stmt, &[&user.domain, &user.user])
        .await
        .map_err(pg_err)?
        .get(0);
    usize::try_from(n).map_err(|_| corrupt("offline count"))
}

/// The rows of an offline query as (id, stamp, xml).
fn messages(rows: &[tokio_postgres::Row]) -> impl Iterator<Item = (i64, i64, String)> + '_ {
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2)))
}

#[async_trait]
impl OfflineStore for PgStore {
    async fn push_offline(
        &self,
        user: &UserRef,
        stamp_ms: i64,
        xml: &str,
        max: usize,
    ) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // The cap is checked and kept under a lock on the account's offline store, held to
        // the commit: two pushes (from two processes) cannot both take the last place.
        let stmt = tx
            .prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
            .await
            .map_err(pg_err)?;
        tx.execute(&stmt, &[&user.jid()]).await.map_err(pg_err)?;
        if count_offline(&tx, user).await? >= max {
            return Ok(false);
        }
        let stmt = tx
            .prepare_cached(
                "INSERT INTO offline (domain, username, stamp_ms, xml) VALUES ($1, $2, $3, $4)",
            )
            .await
            .map_err(pg_err)?;
        tx.execute(&stmt, &[&user.domain, &user.user, &stamp_ms, &xml])
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(true)
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
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, stamp_ms, xml FROM offline
                 WHERE domain = $1 AND username = $2 AND id > $3 ORDER BY id LIMIT $4",
            )
            .await
            .map_err(pg_err)?;
        let rows = client
            .query(
                &stmt,
                &[&user.domain, &user.user, &after_id, &limit(max_count)],
            )
            .await
            .map_err(pg_err)?;
        Ok(fit_page(messages(&rows), max_bytes))
    }

    async fn take_offline(
        &self,
        user: &UserRef,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<OfflineMessage>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // Rows another process is taking are skipped, not waited for: each row goes to one
        // taker, and neither blocks the other.
        let stmt = tx
            .prepare_cached(
                "SELECT id, stamp_ms, xml FROM offline
                 WHERE domain = $1 AND username = $2 ORDER BY id LIMIT $3
                 FOR UPDATE SKIP LOCKED",
            )
            .await
            .map_err(pg_err)?;
        let rows = tx
            .query(&stmt, &[&user.domain, &user.user, &limit(max_count)])
            .await
            .map_err(pg_err)?;
        let page = fit_page(messages(&rows), max_bytes);
        let ids: Vec<i64> = page.iter().map(|m| m.id).collect();
        let stmt = tx
            .prepare_cached("DELETE FROM offline WHERE id = ANY($1)")
            .await
            .map_err(pg_err)?;
        tx.execute(&stmt, &[&ids]).await.map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(page)
    }

    async fn remove_offline(&self, user: &UserRef, up_to_id: i64) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("DELETE FROM offline WHERE domain = $1 AND username = $2 AND id <= $3")
            .await
            .map_err(pg_err)?;
        client
            .execute(&stmt, &[&user.domain, &user.user, &up_to_id])
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn replace_offline(&self, user: &UserRef, id: i64, xml: &str) -> Result<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE offline SET xml = $4 WHERE domain = $1 AND username = $2 AND id = $3",
            )
            .await
            .map_err(pg_err)?;
        let n = client
            .execute(&stmt, &[&user.domain, &user.user, &id, &xml])
            .await
            .map_err(pg_err)?;
        Ok(n > 0)
    }

    async fn offline_count(&self, user: &UserRef) -> Result<usize> {
        count_offline(&self.client().await?, user).await
    }
}
