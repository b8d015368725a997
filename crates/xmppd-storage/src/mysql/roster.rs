//! Rosters (RFC 6121 §2), their versions, and pending subscription requests.

use async_trait::async_trait;
use mysql_async::prelude::Queryable;

use super::{exec_count, my_err, snapshot, write, MysqlStore};
use crate::remote::{corrupt, distinct_groups};
use crate::{Result, RosterItem, RosterStore, Subscription, UserRef};

async fn roster_version(q: &mut impl Queryable, user: &UserRef) -> Result<u64> {
    let v: Option<i64> = q
        .exec_first(
            "SELECT version FROM roster_version WHERE domain = ? AND username = ?",
            (&user.domain, &user.user),
        )
        .await
        .map_err(my_err)?;
    u64::try_from(v.unwrap_or(0)).map_err(|_| corrupt("roster version"))
}

/// Moves the roster of `user` to its next version; `added` is the change in its item count.
/// The upsert locks the counter's row to the end of the transaction, so the changes of one
/// roster are serialised across processes, and the version read back is this change's.
pub(super) async fn bump_roster_version(
    q: &mut impl Queryable,
    user: &UserRef,
    added: i64,
) -> Result<u64> {
    q.exec_drop(
        "INSERT INTO roster_version (domain, username, version, items) VALUES (?, ?, 1, ?)
         ON DUPLICATE KEY UPDATE version = version + 1, items = items + VALUES(items)",
        (&user.domain, &user.user, added),
    )
    .await
    .map_err(my_err)?;
    roster_version(q, user).await
}

/// Roster groups in one column: each group as its length in bytes, `:`, and the group, so any
/// text (empty, with separators or newlines) comes back as it was, in order.
pub(crate) fn encode_groups(groups: &[&String]) -> String {
    groups.iter().map(|g| format!("{}:{g}", g.len())).collect()
}

pub(crate) fn decode_groups(mut s: &str) -> Option<Vec<String>> {
    let mut groups = Vec::new();
    while !s.is_empty() {
        let (len, rest) = s.split_once(':')?;
        let len: usize = len.parse().ok()?;
        groups.push(rest.get(..len)?.to_owned());
        s = &rest[len..];
    }
    Some(groups)
}

type ItemRow = (String, Option<String>, String, bool, bool, String);

/// Reads the roster items of `user` (all, or only `contact`), sorted by contact.
pub(super) async fn load_roster(
    q: &mut impl Queryable,
    user: &UserRef,
    contact: Option<&str>,
) -> Result<Vec<RosterItem>> {
    let rows: Vec<ItemRow> = q
        .exec(
            "SELECT contact, name, subscription, ask, approved, groups_list FROM roster
             WHERE domain = ? AND username = ? AND (? IS NULL OR contact = ?)
             ORDER BY contact",
            (&user.domain, &user.user, contact, contact),
        )
        .await
        .map_err(my_err)?;
    rows.into_iter()
        .map(|(jid, name, sub, ask, approved, groups)| {
            Ok(RosterItem {
                jid,
                name,
                subscription: Subscription::parse(&sub).ok_or_else(|| corrupt("subscription"))?,
                ask,
                approved,
                groups: decode_groups(&groups).ok_or_else(|| corrupt("roster groups"))?,
            })
        })
        .collect()
}

#[async_trait]
impl RosterStore for MysqlStore {
    async fn roster(&self, user: &UserRef) -> Result<(u64, Vec<RosterItem>)> {
        let mut conn = self.conn().await?;
        let mut tx = snapshot(&mut conn).await?;
        let version = roster_version(&mut tx, user).await?;
        let items = load_roster(&mut tx, user, None).await?;
        tx.commit().await.map_err(my_err)?;
        Ok((version, items))
    }

    async fn roster_item(&self, user: &UserRef, contact: &str) -> Result<Option<RosterItem>> {
        Ok(load_roster(&mut self.conn().await?, user, Some(contact))
            .await?
            .pop())
    }

    async fn set_roster_item(&self, user: &UserRef, item: &RosterItem) -> Result<u64> {
        let groups = encode_groups(&distinct_groups(&item.groups));
        let mut conn = self.conn().await?;
        let mut tx = write(&mut conn).await?;
        // An upsert counts 1 for a row it inserted (2 for an update, 0 for no change): the item
        // count moves exactly once even when two processes add the same contact at once (the
        // second waits on the row lock and updates).
        let changed = exec_count(
            &mut tx,
            "INSERT INTO roster
                 (domain, username, contact, name, subscription, ask, approved, groups_list)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON DUPLICATE KEY UPDATE name = VALUES(name), subscription = VALUES(subscription),
                 ask = VALUES(ask), approved = VALUES(approved),
                 groups_list = VALUES(groups_list)",
            (
                &user.domain,
                &user.user,
                &item.jid,
                &item.name,
                item.subscription.as_str(),
                item.ask,
                item.approved,
                groups,
            ),
        )
        .await?;
        let version = bump_roster_version(&mut tx, user, i64::from(changed == 1)).await?;
        tx.commit().await.map_err(my_err)?;
        Ok(version)
    }

    async fn remove_roster_item(&self, user: &UserRef, contact: &str) -> Result<u64> {
        let mut conn = self.conn().await?;
        let mut tx = write(&mut conn).await?;
        let removed = exec_count(
            &mut tx,
            "DELETE FROM roster WHERE domain = ? AND username = ? AND contact = ?",
            (&user.domain, &user.user, contact),
        )
        .await?;
        let version = if removed > 0 {
            bump_roster_version(&mut tx, user, -1).await?
        } else {
            roster_version(&mut tx, user).await?
        };
        tx.commit().await.map_err(my_err)?;
        Ok(version)
    }

    async fn roster_len(&self, user: &UserRef) -> Result<usize> {
        let n: Option<i64> = self
            .conn()
            .await?
            .exec_first(
                "SELECT items FROM roster_version WHERE domain = ? AND username = ?",
                (&user.domain, &user.user),
            )
            .await
            .map_err(my_err)?;
        usize::try_from(n.unwrap_or(0)).map_err(|_| corrupt("roster item count"))
    }

    async fn bump_roster_version(&self, user: &UserRef) -> Result<u64> {
        let mut conn = self.conn().await?;
        let mut tx = write(&mut conn).await?;
        let version = bump_roster_version(&mut tx, user, 0).await?;
        tx.commit().await.map_err(my_err)?;
        Ok(version)
    }

    async fn add_pending_subscription(
        &self,
        user: &UserRef,
        contact: &str,
        stanza_xml: &str,
    ) -> Result<()> {
        self.conn()
            .await?
            .exec_drop(
                "INSERT INTO pending_subscriptions (domain, username, contact, xml)
                 VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE xml = VALUES(xml)",
                (&user.domain, &user.user, contact, stanza_xml),
            )
            .await
            .map_err(my_err)
    }

    async fn remove_pending_subscription(&self, user: &UserRef, contact: &str) -> Result<()> {
        self.conn()
            .await?
            .exec_drop(
                "DELETE FROM pending_subscriptions
                 WHERE domain = ? AND username = ? AND contact = ?",
                (&user.domain, &user.user, contact),
            )
            .await
            .map_err(my_err)
    }

    async fn pending_subscriptions(&self, user: &UserRef) -> Result<Vec<(String, String)>> {
        self.conn()
            .await?
            .exec(
                "SELECT contact, xml FROM pending_subscriptions
                 WHERE domain = ? AND username = ? ORDER BY contact",
                (&user.domain, &user.user),
            )
            .await
            .map_err(my_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_come_back_as_they_were() {
        let groups: Vec<String> = ["a:b", "", "2:x", "é\n", "10:"].map(String::from).to_vec();
        let encoded = encode_groups(&groups.iter().collect::<Vec<_>>());
        assert_eq!(decode_groups(&encoded).unwrap(), groups);
        assert_eq!(decode_groups("").unwrap(), Vec::<String>::new());
        for bad in ["3:ab", "x:a", "1", "1:é"] {
            assert_eq!(decode_groups(bad), None, "{bad}");
        }
    }
}
