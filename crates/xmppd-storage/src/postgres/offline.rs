//! Offline messages (XEP-0160).

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use std::collections::HashMap;

use deadpool_postgres::Pool;

use super::{corrupt, get, pg_err, PgStore};
use crate::remote::{accounts, fit_page, fitting, limit, Push};
use crate::{OfflineMessage, OfflineStore, Queued, Result, UserRef};

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

/// Writes `pushes` in one transaction (see [`crate::remote::PushQueue`]): a lock on each
/// account's offline store, taken in the order of the JIDs and held to the commit (another
/// process's push to the same account waits, so two cannot both take the last place), the
/// messages each account holds counted once, then the pushes that fit inserted in one
/// statement, in their order.
pub(super) fn write_pushes(pool: Pool, pushes: std::sync::Arc<[Push]>) -> Queued<Vec<bool>> {
    Box::pin(async move {
        let mut client = get(&pool).await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let users = accounts(&pushes);
        let jids: Vec<String> = users.iter().map(UserRef::jid).collect();
        let domains: Vec<&str> = users.iter().map(|u| u.domain.as_str()).collect();
        let names: Vec<&str> = users.iter().map(|u| u.user.as_str()).collect();
        let stmt = tx
            .prepare_cached(
                "SELECT pg_advisory_xact_lock(hashtextextended(j, 7)) FROM unnest($1::text[]) AS j",
            )
            .await
            .map_err(pg_err)?;
        tx.execute(&stmt, &[&jids]).await.map_err(pg_err)?;
        let stmt = tx
            .prepare_cached(
                "SELECT o.domain, o.username, COUNT(*) FROM offline o
                 JOIN unnest($1::text[], $2::text[]) AS u(d, n)
                   ON o.domain = u.d AND o.username = u.n
                 GROUP BY o.domain, o.username",
            )
            .await
            .map_err(pg_err)?;
        let rows = tx.query(&stmt, &[&domains, &names]).await.map_err(pg_err)?;
        let mut held = HashMap::with_capacity(rows.len());
        for r in &rows {
            let n: i64 = r.get(2);
            let n = usize::try_from(n).map_err(|_| corrupt("offline count"))?;
            held.insert(
                UserRef::new(r.get::<_, String>(1), r.get::<_, String>(0)),
                n,
            );
        }
        let fits = fitting(&pushes, held);
        let kept = || {
            pushes
                .iter()
                .zip(&fits)
                .filter(|(_, f)| **f)
                .map(|(p, _)| p)
        };
        let (d, n): (Vec<&str>, Vec<&str>) = kept()
            .map(|p| (p.user.domain.as_str(), p.user.user.as_str()))
            .unzip();
        let (stamps, xml): (Vec<i64>, Vec<&str>) =
            kept().map(|p| (p.stamp_ms, p.xml.as_str())).unzip();
        if !d.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO offline (domain, username, stamp_ms, xml)
                     SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[])",
                )
                .await
                .map_err(pg_err)?;
            tx.execute(&stmt, &[&d, &n, &stamps, &xml])
                .await
                .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(fits)
    })
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
        if max == 0 {
            return Ok(false);
        }
        self.pushes
            .push(Push {
                user: user.clone(),
                stamp_ms,
                xml: xml.to_owned(),
                max,
            })
            .await
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
