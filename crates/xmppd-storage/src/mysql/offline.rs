//! Offline messages (XEP-0160).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Params, Pool, Value};

use super::{exec_count, get, my_err, named_locks, named_unlock_all, write, MysqlStore};
use crate::remote::{accounts, corrupt, fit_page, fitting, limit, Push};
use crate::{OfflineMessage, OfflineStore, Queued, Result, UserRef};

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

/// Writes `pushes` in one transaction (see [`crate::remote::PushQueue`]): a named lock on
/// each account's offline store, taken in the order of the JIDs in one statement and held to
/// the commit (another process's push to the same account waits, so two cannot both take the
/// last place), the messages each account holds counted once, then the pushes that fit
/// inserted in one statement, in their order.
pub(super) fn write_pushes(
    (pool, timeout): (Pool, Duration),
    pushes: Vec<Push>,
) -> Queued<Vec<bool>> {
    Box::pin(async move {
        let mut conn = get(&pool, timeout).await?;
        let users = accounts(&pushes);
        let jids: Vec<String> = users.iter().map(UserRef::jid).collect();
        named_locks(&mut conn, "offline:", &jids).await?;
        let mut tx = write(&mut conn).await?;
        let which = vec!["(domain = ? AND username = ?)"; users.len()].join(" OR ");
        let sql = format!(
            "SELECT domain, username, COUNT(*) FROM offline WHERE {which} \
             GROUP BY domain, username"
        );
        let params: Vec<Value> = (users.iter())
            .flat_map(|u| [Value::from(&u.domain), Value::from(&u.user)])
            .collect();
        let rows: Vec<(String, String, i64)> = tx
            .exec(sql, Params::Positional(params))
            .await
            .map_err(my_err)?;
        let mut held = HashMap::with_capacity(rows.len());
        for (domain, user, n) in rows {
            let n = usize::try_from(n).map_err(|_| corrupt("offline count"))?;
            held.insert(UserRef::new(user, domain), n);
        }
        let fits = fitting(&pushes, held);
        let kept: Vec<&Push> = (pushes.iter().zip(&fits))
            .filter(|(_, f)| **f)
            .map(|(p, _)| p)
            .collect();
        if !kept.is_empty() {
            let rows = vec!["(?, ?, ?, ?)"; kept.len()].join(", ");
            let sql =
                format!("INSERT INTO offline (domain, username, stamp_ms, xml) VALUES {rows}");
            let params: Vec<Value> = (kept.iter())
                .flat_map(|p| {
                    [
                        Value::from(&p.user.domain),
                        Value::from(&p.user.user),
                        Value::from(p.stamp_ms),
                        Value::from(&p.xml),
                    ]
                })
                .collect();
            tx.exec_drop(sql, Params::Positional(params))
                .await
                .map_err(my_err)?;
        }
        tx.commit().await.map_err(my_err)?;
        named_unlock_all(&mut conn).await?;
        Ok(fits)
    })
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
