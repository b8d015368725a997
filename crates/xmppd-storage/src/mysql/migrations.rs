//! The core schema in MariaDB and how any schema is brought up to date.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::my_err;
use crate::{Result, Schema, StorageError};

/// The named lock every migration takes (`GET_LOCK` names are per server, not per database:
/// the database's name goes into it, so two databases on one server migrate independently).
const MIGRATION_LOCK: &str = "xmppd:migrations:";

/// How long a process waits for another one's migrations before it gives up.
const MIGRATION_WAIT_SECS: i64 = 300;

/// The core's tables: accounts, rosters, offline messages, user data, sessions and chat rooms.
/// Every text column is `utf8mb4` with the binary collation (exact matches, code-point order).
/// Key columns are bounded so that a key fits InnoDB's 3072 bytes (four bytes a character):
/// domains, user names, contacts and room names up to 255 characters, a session's full JID up
/// to 760. Never edit a released entry; append.
pub const CORE_SCHEMA: Schema = Schema {
    name: "core",
    migrations: &[
        r"
CREATE TABLE users (
    domain VARCHAR(255) NOT NULL,
    username VARCHAR(255) NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (domain, username)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE scram (
    domain VARCHAR(255) NOT NULL,
    username VARCHAR(255) NOT NULL,
    hash VARCHAR(16) NOT NULL,
    salt VARBINARY(1024) NOT NULL,
    iterations BIGINT NOT NULL,
    stored_key VARBINARY(1024) NOT NULL,
    server_key VARBINARY(1024) NOT NULL,
    PRIMARY KEY (domain, username, hash),
    FOREIGN KEY (domain, username) REFERENCES users (domain, username) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE tombstones (
    domain VARCHAR(255) NOT NULL,
    username VARCHAR(255) NOT NULL,
    until_ms BIGINT NOT NULL,
    PRIMARY KEY (domain, username)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE roster (
    domain VARCHAR(255) NOT NULL,
    username VARCHAR(255) NOT NULL,
    contact VARCHAR(255) NOT NULL,
    name TEXT,
    subscription VARCHAR(8) NOT NULL,
    ask BOOLEAN NOT NULL,
    approved BOOLEAN NOT NULL,
    groups_list MEDIUMTEXT NOT NULL,
    PRIMARY KEY (domain, username, contact),
    KEY roster_by_contact (contact)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE roster_version (
    domain VARCHAR(255) NOT NULL,
    username VARCHAR(255) NOT NULL,
    version BIGINT NOT NULL,
    items BIGINT NOT NULL,
    PRIMARY KEY (domain, username)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE pending_subscriptions (
    domain VARCHAR(255) NOT NULL,
    username VARCHAR(255) NOT NULL,
    contact VARCHAR(255) NOT NULL,
    xml MEDIUMTEXT NOT NULL,
    PRIMARY KEY (domain, username, contact),
    KEY pending_by_contact (contact)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE offline (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    domain VARCHAR(255) NOT NULL,
    username VARCHAR(255) NOT NULL,
    stamp_ms BIGINT NOT NULL,
    xml MEDIUMTEXT NOT NULL,
    KEY offline_by_user (domain, username, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE user_data (
    domain VARCHAR(255) NOT NULL,
    username VARCHAR(255) NOT NULL,
    data_key VARCHAR(255) NOT NULL,
    value MEDIUMTEXT NOT NULL,
    PRIMARY KEY (domain, username, data_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE sessions (
    jid VARCHAR(760) NOT NULL PRIMARY KEY,
    peer VARCHAR(255) NOT NULL,
    node VARCHAR(255) NOT NULL,
    started_ms BIGINT NOT NULL,
    user_agent TEXT NOT NULL,
    KEY sessions_by_node (node)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE muc_rooms (
    domain VARCHAR(255) NOT NULL,
    name VARCHAR(255) NOT NULL,
    config MEDIUMTEXT NOT NULL,
    subject MEDIUMTEXT NOT NULL,
    PRIMARY KEY (domain, name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE muc_affiliations (
    domain VARCHAR(255) NOT NULL,
    name VARCHAR(255) NOT NULL,
    jid VARCHAR(255) NOT NULL,
    affiliation VARCHAR(16) NOT NULL,
    nick TEXT,
    reason TEXT,
    PRIMARY KEY (domain, name, jid),
    KEY muc_affiliations_by_jid (jid),
    FOREIGN KEY (domain, name) REFERENCES muc_rooms (domain, name) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
",
        r"
CREATE TABLE muc_leases (
    domain VARCHAR(255) NOT NULL,
    name VARCHAR(255) NOT NULL,
    node VARCHAR(255) NOT NULL,
    epoch BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (domain, name),
    KEY muc_leases_by_node (node)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
",
    ],
};

/// Applies the missing migrations of `schema` on `conn` while it holds the migration lock: a
/// second process migrating at the same moment waits for the lock, then reads the new version
/// and applies nothing. Each migration is recorded as soon as it ran (DDL commits implicitly
/// in MariaDB, so a failed one leaves the earlier ones applied and recorded). Returns the
/// version before.
pub async fn apply_schema_locked(conn: &mut Conn, schema: Schema) -> Result<usize> {
    // A migration may change its session (`SET SESSION`) and holds a named lock: the
    // connection is reset when it goes back to the pool.
    conn.reset_connection(true);
    let lock: Option<i64> = conn
        .exec_first(
            "SELECT GET_LOCK(CONCAT(?, DATABASE()), ?)",
            (MIGRATION_LOCK, MIGRATION_WAIT_SECS),
        )
        .await
        .map_err(my_err)?
        .flatten();
    if lock != Some(1) {
        return Err(StorageError::Backend(format!(
            "another process held the migration lock for {MIGRATION_WAIT_SECS} s"
        )));
    }
    let applied = apply_schema(conn, schema).await;
    let released = conn
        .exec_drop(
            "SELECT RELEASE_LOCK(CONCAT(?, DATABASE()))",
            (MIGRATION_LOCK,),
        )
        .await
        .map_err(my_err);
    let from = applied?;
    released?;
    Ok(from)
}

async fn apply_schema(conn: &mut Conn, schema: Schema) -> Result<usize> {
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS xmppd_schemas (
             name VARCHAR(64) NOT NULL PRIMARY KEY,
             version BIGINT NOT NULL
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin",
    )
    .await
    .map_err(my_err)?;
    let current: i64 = conn
        .exec_first(
            "SELECT version FROM xmppd_schemas WHERE name = ?",
            (schema.name,),
        )
        .await
        .map_err(my_err)?
        .unwrap_or(0);
    let todo = crate::versions::pending(schema, current)?;
    let from = schema.migrations.len() - todo.len();
    for (version, sql) in &todo {
        conn.query_drop(*sql).await.map_err(|e| {
            StorageError::Backend(format!(
                "migrating schema {} to version {version}: {}",
                schema.name,
                my_err(e)
            ))
        })?;
        conn.exec_drop(
            "INSERT INTO xmppd_schemas (name, version) VALUES (?, ?)
             ON DUPLICATE KEY UPDATE version = VALUES(version)",
            (schema.name, *version as i64),
        )
        .await
        .map_err(my_err)?;
    }
    if !todo.is_empty() {
        crate::versions::migrated(schema, from);
    }
    Ok(from)
}
