//! Tables of services built on the SQLite engine, without editing this crate.
//!
//! A service crate (the message archive, pubsub, …) declares its tables as a [`Schema`]: a
//! name of its own and its migrations, in order. [`SqliteStore::extend`] applies the missing
//! ones at start-up and records each schema's version in `xmppd_schemas`; the service then
//! reads and writes its tables through [`SqliteStore::read`] and [`SqliteStore::write`], and
//! so gets the same group commit and durability as the core's tables. The core's own schema
//! stays in `PRAGMA user_version`.

use rusqlite::{params, OptionalExtension};

use crate::{Result, Schema, SqliteStore};

impl SqliteStore {
    /// Brings `schema`'s tables up to date (in one transaction, so a failed migration leaves
    /// none of it applied); returns the version it was at before. A database whose version of
    /// the schema is newer than this build knows is an error, never a downgrade.
    pub async fn extend(&self, schema: Schema) -> Result<usize> {
        self.write(move |conn| apply_schema(conn, schema)).await
    }
}

/// [`SqliteStore::extend`]'s work, on the writer's connection inside a job: for a write that
/// must find its tables in place even when it is the first use of them.
pub(crate) fn apply_schema(conn: &rusqlite::Connection, schema: Schema) -> Result<usize> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS xmppd_schemas (
             name TEXT PRIMARY KEY,
             version INTEGER NOT NULL
         ) WITHOUT ROWID;",
    )?;
    let current: i64 = conn
        .query_row(
            "SELECT version FROM xmppd_schemas WHERE name = ?1",
            params![schema.name],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let todo = crate::versions::pending(schema, current)?;
    let from = schema.migrations.len() - todo.len();
    for (_, sql) in &todo {
        conn.execute_batch(sql)?;
    }
    if !todo.is_empty() {
        conn.execute(
            "INSERT INTO xmppd_schemas (name, version) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET version = excluded.version",
            params![schema.name, schema.migrations.len() as i64],
        )?;
        crate::versions::migrated(schema, from);
    }
    Ok(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "CREATE TABLE ext_notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);";
    const V2: &str = "ALTER TABLE ext_notes ADD COLUMN stamp INTEGER NOT NULL DEFAULT 0;";

    async fn count(store: &SqliteStore) -> i64 {
        store
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM ext_notes", [], |r| r.get(0))?))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_service_adds_its_tables_and_migrates_them_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            let first = Schema {
                name: "ext",
                migrations: &[V1],
            };
            assert_eq!(store.extend(first).await.unwrap(), 0);
            assert_eq!(store.extend(first).await.unwrap(), 1, "idempotent");
            store
                .write(|c| {
                    c.execute("INSERT INTO ext_notes (body) VALUES ('kept')", [])?;
                    Ok(())
                })
                .await
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let second = Schema {
            name: "ext",
            migrations: &[V1, V2],
        };
        assert_eq!(store.extend(second).await.unwrap(), 1, "only V2 is new");
        assert_eq!(count(&store).await, 1);
        let stamp: i64 = store
            .read(|c| Ok(c.query_row("SELECT stamp FROM ext_notes", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(stamp, 0);
        // An older build that knows only V1 refuses the newer database.
        let old = Schema {
            name: "ext",
            migrations: &[V1],
        };
        assert!(store.extend(old).await.is_err());
    }

    #[tokio::test]
    async fn a_failing_migration_applies_nothing() {
        let store = SqliteStore::open_in_memory().unwrap();
        let broken = Schema {
            name: "broken",
            migrations: &[V1, "THIS IS NOT SQL"],
        };
        assert!(store.extend(broken).await.is_err());
        let exists: i64 = store
            .read(|c| {
                Ok(c.query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE name = 'ext_notes'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(exists, 0);
    }
}
