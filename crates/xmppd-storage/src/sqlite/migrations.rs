//! The shared schema: its migrations and how a database is brought up to date.

use rusqlite::{Connection, TransactionBehavior};

use crate::{Result, StorageError};

/// Schema migrations, applied in order; `PRAGMA user_version` is the number already applied.
/// Never edit an entry once released: append a new one. (The second and third entries lost the
/// chat room tables and their index to the `muc` schema before any release.)
pub(super) const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE users (
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (domain, user)
) WITHOUT ROWID;
CREATE TABLE scram (
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    hash TEXT NOT NULL,
    salt BLOB NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    PRIMARY KEY (domain, user, hash),
    FOREIGN KEY (domain, user) REFERENCES users (domain, user) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE TABLE roster (
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    contact TEXT NOT NULL,
    name TEXT,
    subscription TEXT NOT NULL,
    ask INTEGER NOT NULL,
    approved INTEGER NOT NULL,
    PRIMARY KEY (domain, user, contact)
) WITHOUT ROWID;
CREATE TABLE roster_groups (
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    contact TEXT NOT NULL,
    pos INTEGER NOT NULL,
    grp TEXT NOT NULL,
    PRIMARY KEY (domain, user, contact, grp),
    FOREIGN KEY (domain, user, contact) REFERENCES roster (domain, user, contact)
        ON DELETE CASCADE
) WITHOUT ROWID;
CREATE TABLE roster_version (
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (domain, user)
) WITHOUT ROWID;
CREATE TABLE pending_subscriptions (
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    contact TEXT NOT NULL,
    xml TEXT NOT NULL,
    PRIMARY KEY (domain, user, contact)
) WITHOUT ROWID;
CREATE TABLE offline (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    stamp_ms INTEGER NOT NULL,
    xml TEXT NOT NULL
);
CREATE INDEX offline_by_user ON offline (domain, user, id);
CREATE TABLE user_data (
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (domain, user, key)
) WITHOUT ROWID;
CREATE TABLE sessions (
    jid TEXT NOT NULL PRIMARY KEY,
    peer TEXT NOT NULL,
    node TEXT NOT NULL,
    started_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_by_node ON sessions (node);
",
    // The chat room tables were created here; they are now the `muc` schema
    // (`rooms::ROOMS_SCHEMA`), which the databases that ran this entry already satisfy.
    "",
    r"
CREATE TABLE tombstones (
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    until_ms INTEGER NOT NULL,
    PRIMARY KEY (domain, user)
) WITHOUT ROWID;
CREATE INDEX roster_by_contact ON roster (contact);
CREATE INDEX pending_by_contact ON pending_subscriptions (contact);
",
    // The number of items kept next to the version, so that the roster limit is checked without
    // counting the roster.
    r"
ALTER TABLE roster_version ADD COLUMN items INTEGER NOT NULL DEFAULT 0;
UPDATE roster_version SET items = (
    SELECT COUNT(*) FROM roster r
    WHERE r.domain = roster_version.domain AND r.user = roster_version.user
);
",
    // The client's SASL2 user agent, shown by `xmppd sessions`.
    r"
ALTER TABLE sessions ADD COLUMN user_agent TEXT NOT NULL DEFAULT '';
",
];

/// Applies the missing migrations in one transaction; `IMMEDIATE` so two processes opening a new
/// file at once do not both run them.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len();
    let current = usize::try_from(current)
        .ok()
        .filter(|v| *v <= known)
        .ok_or_else(|| {
            StorageError::Backend(format!(
                "database schema version {current} is not supported by this xmppd (max {known})"
            ))
        })?;
    if current == known {
        return Ok(());
    }
    for sql in &MIGRATIONS[current..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", known as i64)?;
    tx.commit()?;
    tracing::info!(from = current, to = known, "storage schema migrated");
    Ok(())
}
