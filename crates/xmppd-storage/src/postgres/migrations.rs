//! The core schema in PostgreSQL and how any schema is brought up to date.

use deadpool_postgres::Transaction;

use super::pg_err;
use crate::{Result, Schema, StorageError};

/// The key of the advisory lock every migration takes (any constant unlikely to be used by
/// another application sharing the database: "xmppd" in ASCII).
const MIGRATION_LOCK: i64 = 0x0078_6d70_7064;

/// The core's tables: accounts, rosters, offline messages, user data, sessions and chat
/// rooms (version 2: the rooms' leases) (one schema here: unlike a SQLite file, a PostgreSQL database is set up for the
/// whole deployment at once). Never edit a released entry; append.
pub const CORE_SCHEMA: Schema = Schema {
    name: "core",
    migrations: &[
        r"
CREATE TABLE users (
    domain TEXT NOT NULL,
    username TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (domain, username)
);
CREATE TABLE scram (
    domain TEXT NOT NULL,
    username TEXT NOT NULL,
    hash TEXT NOT NULL,
    salt BYTEA NOT NULL,
    iterations BIGINT NOT NULL,
    stored_key BYTEA NOT NULL,
    server_key BYTEA NOT NULL,
    PRIMARY KEY (domain, username, hash),
    FOREIGN KEY (domain, username) REFERENCES users (domain, username) ON DELETE CASCADE
);
CREATE TABLE tombstones (
    domain TEXT NOT NULL,
    username TEXT NOT NULL,
    until_ms BIGINT NOT NULL,
    PRIMARY KEY (domain, username)
);
CREATE TABLE roster (
    domain TEXT NOT NULL,
    username TEXT NOT NULL,
    contact TEXT NOT NULL,
    name TEXT,
    subscription TEXT NOT NULL,
    ask BOOLEAN NOT NULL,
    approved BOOLEAN NOT NULL,
    groups TEXT[] NOT NULL,
    PRIMARY KEY (domain, username, contact)
);
CREATE INDEX roster_by_contact ON roster (contact);
CREATE TABLE roster_version (
    domain TEXT NOT NULL,
    username TEXT NOT NULL,
    version BIGINT NOT NULL,
    items BIGINT NOT NULL,
    PRIMARY KEY (domain, username)
);
CREATE TABLE pending_subscriptions (
    domain TEXT NOT NULL,
    username TEXT NOT NULL,
    contact TEXT NOT NULL,
    xml TEXT NOT NULL,
    PRIMARY KEY (domain, username, contact)
);
CREATE INDEX pending_by_contact ON pending_subscriptions (contact);
CREATE TABLE offline (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    domain TEXT NOT NULL,
    username TEXT NOT NULL,
    stamp_ms BIGINT NOT NULL,
    xml TEXT NOT NULL
);
CREATE INDEX offline_by_user ON offline (domain, username, id);
CREATE TABLE user_data (
    domain TEXT NOT NULL,
    username TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (domain, username, key)
);
CREATE TABLE sessions (
    jid TEXT NOT NULL PRIMARY KEY,
    peer TEXT NOT NULL,
    node TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    user_agent TEXT NOT NULL
);
CREATE INDEX sessions_by_node ON sessions (node);
CREATE TABLE muc_rooms (
    domain TEXT NOT NULL,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    subject TEXT NOT NULL,
    PRIMARY KEY (domain, name)
);
CREATE TABLE muc_affiliations (
    domain TEXT NOT NULL,
    name TEXT NOT NULL,
    jid TEXT NOT NULL,
    affiliation TEXT NOT NULL,
    nick TEXT,
    reason TEXT,
    PRIMARY KEY (domain, name, jid),
    FOREIGN KEY (domain, name) REFERENCES muc_rooms (domain, name) ON DELETE CASCADE
);
CREATE INDEX muc_affiliations_by_jid ON muc_affiliations (jid);
",
        r"
CREATE TABLE muc_leases (
    domain TEXT NOT NULL,
    name TEXT NOT NULL,
    node TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (domain, name)
);
CREATE INDEX muc_leases_by_node ON muc_leases (node);
",
    ],
};

/// Applies the missing migrations of `schema` inside `tx` (its caller commits), after taking
/// the transaction-scoped migration lock: a second process migrating at the same moment waits
/// for the first to commit, then reads the new version and applies nothing. Returns the
/// version before.
pub async fn apply_schema_locked(tx: &Transaction<'_>, schema: Schema) -> Result<usize> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS xmppd_schemas (
             name TEXT PRIMARY KEY,
             version BIGINT NOT NULL
         )",
    )
    .await
    .map_err(pg_err)?;
    let current: i64 = tx
        .query_opt(
            "SELECT version FROM xmppd_schemas WHERE name = $1",
            &[&schema.name],
        )
        .await
        .map_err(pg_err)?
        .map_or(0, |r| r.get(0));
    let todo = crate::versions::pending(schema, current)?;
    let from = schema.migrations.len() - todo.len();
    for (version, sql) in &todo {
        tx.batch_execute(sql).await.map_err(|e| {
            StorageError::Backend(format!(
                "migrating schema {} to version {version}: {}",
                schema.name,
                pg_err(e)
            ))
        })?;
    }
    if !todo.is_empty() {
        tx.execute(
            "INSERT INTO xmppd_schemas (name, version) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET version = excluded.version",
            &[&schema.name, &(schema.migrations.len() as i64)],
        )
        .await
        .map_err(pg_err)?;
        crate::versions::migrated(schema, from);
    }
    Ok(from)
}
