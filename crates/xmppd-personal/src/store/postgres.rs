//! [`PersonalStore`] on PostgreSQL: [`PgPersonal`], the tables of the SQLite schema under the
//! same names and columns (`user` quoted: PostgreSQL reserves the word), beside the core's
//! (schema `personal` of [`PgStore::extend`]). Each write is one statement, committed when it
//! returns; a trigger on `users` empties both tables of an account with its row.

use std::sync::Arc;

use async_trait::async_trait;
use xmppd_storage::{PgStore, Schema, StorageError, UserRef};

use super::PersonalStore;

/// The personal data tables on PostgreSQL: append, never edit. Keys compare and sort by bytes
/// (`COLLATE "C"`), as on SQLite.
pub const PG_SCHEMA: Schema = Schema {
    name: "personal",
    migrations: &[r#"
CREATE TABLE personal_private (
    domain TEXT COLLATE "C" NOT NULL,
    "user" TEXT COLLATE "C" NOT NULL,
    namespace TEXT COLLATE "C" NOT NULL,
    xml TEXT NOT NULL,
    PRIMARY KEY (domain, "user", namespace)
);
CREATE TABLE personal_vcards (
    domain TEXT COLLATE "C" NOT NULL,
    "user" TEXT COLLATE "C" NOT NULL,
    xml TEXT NOT NULL,
    PRIMARY KEY (domain, "user")
);
CREATE FUNCTION personal_account_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM personal_private WHERE domain = OLD.domain AND "user" = OLD.username;
    DELETE FROM personal_vcards WHERE domain = OLD.domain AND "user" = OLD.username;
    RETURN NULL;
END
$$;
CREATE TRIGGER personal_account_removed AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION personal_account_removed();
"#],
};

/// [`PersonalStore`] over a [`PgStore`].
pub struct PgPersonal {
    store: Arc<PgStore>,
}

impl PgPersonal {
    /// Creates or migrates the personal data tables in `store`'s database.
    pub async fn open(store: Arc<PgStore>) -> Result<PgPersonal, StorageError> {
        store.extend(PG_SCHEMA).await?;
        Ok(PgPersonal { store })
    }
}

#[async_trait]
impl PersonalStore for PgPersonal {
    async fn private(&self, user: &UserRef, ns: &str) -> Result<Option<String>, StorageError> {
        let rows = self
            .store
            .query(
                r#"SELECT xml FROM personal_private
                   WHERE domain = $1 AND "user" = $2 AND namespace = $3"#,
                &[&user.domain, &user.user, &ns],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    async fn set_private(&self, user: &UserRef, ns: &str, xml: &str) -> Result<(), StorageError> {
        self.store
            .execute(
                r#"INSERT INTO personal_private (domain, "user", namespace, xml)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (domain, "user", namespace) DO UPDATE SET xml = excluded.xml"#,
                &[&user.domain, &user.user, &ns, &xml],
            )
            .await
            .map(drop)
    }

    async fn all_private(&self, user: &UserRef) -> Result<Vec<(String, String)>, StorageError> {
        let rows = self
            .store
            .query(
                r#"SELECT namespace, xml FROM personal_private
                   WHERE domain = $1 AND "user" = $2 ORDER BY namespace"#,
                &[&user.domain, &user.user],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn vcard(&self, user: &UserRef) -> Result<Option<String>, StorageError> {
        let rows = self
            .store
            .query(
                r#"SELECT xml FROM personal_vcards WHERE domain = $1 AND "user" = $2"#,
                &[&user.domain, &user.user],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    async fn set_vcard(&self, user: &UserRef, xml: &str) -> Result<(), StorageError> {
        self.store
            .execute(
                r#"INSERT INTO personal_vcards (domain, "user", xml) VALUES ($1, $2, $3)
               ON CONFLICT (domain, "user") DO UPDATE SET xml = excluded.xml"#,
                &[&user.domain, &user.user, &xml],
            )
            .await
            .map(drop)
    }
}
