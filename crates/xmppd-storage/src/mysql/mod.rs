//! MariaDB implementation of every storage trait: [`MysqlStore`], for sites that run MariaDB
//! rather than PostgreSQL. Its structure is PgStore's, table for table.
//!
//! Design: `mysql_async`'s pool (bounded by `pool_size`; a caller that gets no connection within
//! the settings' timeouts fails) with a per-connection cache of prepared statements: every
//! query goes through the binary protocol with its parameters bound, never spliced into SQL.
//! Every write runs in its own InnoDB transaction and answers `Ok` only after `COMMIT`
//! returned (durable with InnoDB's default `innodb_flush_log_at_trx_commit = 1`). Sessions
//! run at `READ COMMITTED`, as PostgreSQL's default, so the locking below means the same on
//! both engines; reads that belong together (a roster and its version, a room and its
//! affiliations) take one consistent snapshot. Where SQLite relies on its one writer to make a
//! check-and-write atomic, this store takes a row lock (`FOR UPDATE`, an upsert) or a named
//! lock on the account (`GET_LOCK`, the offline cap); `take_offline` skips the rows another
//! process is taking (`FOR UPDATE SKIP LOCKED`).
//!
//! Text is `utf8mb4` with the binary no-pad collation `utf8mb4_nopad_bin` throughout: JIDs, keys
//! and names match exactly (byte for byte, as the caller normalised them, trailing spaces
//! included: a resource may end with one) and sort by code point, as on the other engines;
//! MariaDB's default collations fold case and accents, and `utf8mb4_bin` ignores trailing
//! spaces. That collation and `SKIP LOCKED` need MariaDB 10.6 or later; MySQL names its
//! binary no-pad collation differently (`utf8mb4_0900_bin`), so it is not supported as is.
//!
//! The schema is versioned as on the other engines (`xmppd_schemas`). MariaDB commits DDL
//! implicitly, so a migration cannot be one transaction: they are applied one by one under a
//! named lock (`GET_LOCK`) held by the migrating connection, each recorded as soon as it
//! succeeded; two processes starting together do not both migrate, the second waits and finds
//! nothing to do.
//!
//! Layout: this module connects; `migrations` is the schema; each storage trait is implemented
//! in the module of its tables (`accounts`, `roster`, `offline`, `data`, `rooms`). A service
//! crate builds its own tables on [`MysqlStore::conn`], [`MysqlStore::extend`], [`write`],
//! [`exec_count`] and [`my_err`], through the driver re-exported here.

mod accounts;
mod data;
mod migrations;
mod offline;
mod rooms;
pub(crate) mod roster;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{
    Conn, IsolationLevel, Opts, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts, Transaction,
    TxOpts,
};

/// The driver, for a service crate's own tables.
pub use mysql_async;

use crate::remote::{take_query_param, unavailable, DbSettings, Ordered};
use crate::{Queued, Result, StorageError};
pub use migrations::CORE_SCHEMA;

/// How to reach MariaDB: a `mysql://` (or `mariadb://`) URL. Its query may hold the driver's
/// options (`require_ssl=true`, `verify_ca`, `verify_identity`, `built_in_roots`) and
/// `ssl_ca=PATH`, a PEM file of the certificate authority to trust for the database's TLS.
pub type MysqlSettings = DbSettings;

/// A MariaDB/MySQL database shared by every process of a deployment; see the module docs.
pub struct MysqlStore {
    pool: Pool,
    timeout: Duration,
    /// The writes queued in order ([`MysqlStore::queue`]).
    ordered: Ordered<(Pool, Duration)>,
}

/// The SQL every new connection runs first: the character set and collation of what it sends,
/// the strict mode that refuses a value too long for its column instead of cutting it, and
/// the isolation of its transactions.
const SESSION_SETUP: [&str; 3] = [
    "SET NAMES utf8mb4 COLLATE utf8mb4_nopad_bin",
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ENGINE_SUBSTITUTION'",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
];

/// How long a pooled connection may stay idle before it is closed.
const IDLE_CONNECTION_TTL: Duration = Duration::from_secs(60);

/// The driver's options for `settings`: its URL (with `mariadb://` read as `mysql://` and our
/// `ssl_ca` taken out), the password apart, the pool's bounds.
fn options(settings: &MysqlSettings) -> Result<Opts> {
    let bad = |e: &dyn std::fmt::Display| {
        StorageError::Backend(format!(
            "database URL {}: {}",
            settings.redacted(),
            settings.scrub(e)
        ))
    };
    let url = match settings.url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => settings.url.clone(),
    };
    let (url, ssl_ca) = take_query_param(&url, "ssl_ca");
    let opts = Opts::from_url(&url).map_err(|e| bad(&e))?;
    let ssl = opts.ssl_opts().cloned().unwrap_or_default();
    let mut builder = OptsBuilder::from_opts(opts)
        // Connections stay in the pool up to its size, and one idle for IDLE_CONNECTION_TTL
        // is closed (with no idle time, the driver closes every connection given back beyond
        // the lower bound, here 0: each use would open a connection). A connection keeps its
        // session (and its prepared statements) when it goes back: the session is only what
        // `SESSION_SETUP` made it, transactions left open are rolled back by the driver, and a
        // connection holding a named lock is reset (see `named_lock`). Resetting every time
        // cost four round trips and a statement re-prepared at each use.
        .pool_opts(
            PoolOpts::default()
                .with_constraints(
                    PoolConstraints::new(0, settings.pool_size.max(1))
                        .ok_or_else(|| bad(&"pool size"))?,
                )
                .with_inactive_connection_ttl(IDLE_CONNECTION_TTL)
                .with_reset_connection(false),
        )
        .stmt_cache_size(128)
        .setup(SESSION_SETUP.to_vec());
    if let Some(password) = &settings.password {
        builder = builder.pass(Some(password.clone()));
    }
    if let Some(ca) = ssl_ca {
        builder = builder.ssl_opts(ssl.with_root_certs(vec![std::path::PathBuf::from(ca).into()]));
    }
    Ok(builder.into())
}

impl MysqlStore {
    /// Connects, then brings the core schema up to date (under the migration lock: another
    /// process starting at the same time waits and then finds nothing to do). Fails when the
    /// database cannot be reached within the settings' timeouts; the error names the URL
    /// without its password.
    pub async fn connect(settings: &MysqlSettings) -> Result<MysqlStore> {
        let pool = Pool::new(options(settings)?);
        // Opening a connection and waiting for a free one, as one bound: the driver's pool
        // has no timeouts of its own.
        let timeout = settings.connect_timeout + settings.wait_timeout;
        let ordered = Ordered::start((pool.clone(), timeout));
        let store = MysqlStore {
            pool,
            timeout,
            ordered,
        };
        (store.extend(CORE_SCHEMA).await).map_err(|e| settings.opening_failed(e))?;
        Ok(store)
    }

    /// A connection from the pool.
    pub async fn conn(&self) -> Result<Conn> {
        get(&self.pool, self.timeout).await
    }

    /// Queues a write behind every write queued before it (see [`crate::RoomStore::save_room`]):
    /// they run and commit in that order. Returns once queued; the future resolves at commit.
    pub fn queue<F>(&self, f: F) -> Queued<()>
    where
        F: FnOnce(Conn) -> Queued<()> + Send + 'static,
    {
        self.ordered.queue(move |(pool, timeout)| {
            Box::pin(async move { f(get(&pool, timeout).await?).await })
        })
    }

    /// Brings `schema`'s tables up to date under the migration lock; returns the version it
    /// was at before. A newer version than this build knows is an error, never a downgrade.
    pub async fn extend(&self, schema: crate::Schema) -> Result<usize> {
        migrations::apply_schema_locked(&mut self.conn().await?, schema).await
    }
}

async fn get(pool: &Pool, timeout: Duration) -> Result<Conn> {
    match tokio::time::timeout(timeout, pool.get_conn()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(unavailable(error_text(&e))),
        Err(_) => Err(unavailable(format!("timed out after {timeout:?}"))),
    }
}

/// A transaction for one write: its caller commits, and answers only after that.
pub async fn write(conn: &mut Conn) -> Result<Transaction<'_>> {
    conn.start_transaction(TxOpts::default())
        .await
        .map_err(my_err)
}

/// A read-only transaction on one snapshot: what it reads belongs together (a roster and its
/// version, a room and its affiliations).
pub async fn snapshot(conn: &mut Conn) -> Result<Transaction<'_>> {
    let mut opts = TxOpts::default();
    opts.with_isolation_level(IsolationLevel::RepeatableRead)
        .with_consistent_snapshot(true)
        .with_readonly(true);
    conn.start_transaction(opts).await.map_err(my_err)
}

/// Runs a write statement; how many rows it changed (an upsert counts an insert as 1, an
/// update as 2 and leaving a row as it was as 0).
pub async fn exec_count(
    q: &mut impl Queryable,
    sql: &str,
    params: impl Into<Params> + Send,
) -> Result<u64> {
    let result = q.exec_iter(sql, params).await.map_err(my_err)?;
    let n = result.affected_rows();
    result.drop_result().await.map_err(my_err)?;
    Ok(n)
}

/// How long a named lock ([`named_lock`]) is waited for before the call fails.
const NAMED_LOCK_WAIT_SECS: i64 = 30;

/// Takes the named lock `kind:key` of this database on `conn` (`GET_LOCK`: names are per
/// server and at most 64 characters, so the database's name and the key go into it as a
/// digest), waiting for another connection holding it. For a check-and-write that a row lock
/// cannot cover (a bound over rows that may not exist yet); the caller releases it with
/// [`named_unlock`] after its commit. Until then the connection is reset when it goes back to
/// the pool (which releases the lock): a caller dropped half-way leaves no lock behind.
pub async fn named_lock(conn: &mut Conn, kind: &str, key: &str) -> Result<()> {
    conn.reset_connection(true);
    let sql = "SELECT GET_LOCK(CONCAT('xmppd:', ?, SHA1(CONCAT(DATABASE(), '/', ?))), ?)";
    let locked: Option<Option<i64>> = conn
        .exec_first(sql, (kind, key, NAMED_LOCK_WAIT_SECS))
        .await
        .map_err(my_err)?;
    if locked.flatten() != Some(1) {
        return Err(StorageError::Backend(format!(
            "the lock {kind} stayed taken for {NAMED_LOCK_WAIT_SECS} s"
        )));
    }
    Ok(())
}

/// Releases what [`named_lock`] took; the connection then goes back to the pool as it is.
pub async fn named_unlock(conn: &mut Conn, kind: &str, key: &str) -> Result<()> {
    let sql = "DO RELEASE_LOCK(CONCAT('xmppd:', ?, SHA1(CONCAT(DATABASE(), '/', ?))))";
    conn.exec_drop(sql, (kind, key)).await.map_err(my_err)?;
    conn.reset_connection(false);
    Ok(())
}

/// What a driver error says: a server error with its code, anything else as the driver
/// words it (neither carries the password).
fn error_text(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

/// A driver error as a [`StorageError`]: the server's message and code, never the URL.
pub fn my_err(e: mysql_async::Error) -> StorageError {
    StorageError::Backend(format!("database: {}", error_text(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ssl_ca_parameter_is_ours_and_the_rest_goes_to_the_driver() {
        assert_eq!(
            take_query_param(
                "mysql://u@h/db?require_ssl=true&ssl_ca=%2Fetc%2Fca.pem",
                "ssl_ca"
            ),
            (
                "mysql://u@h/db?require_ssl=true".into(),
                Some("/etc/ca.pem".into())
            )
        );
        assert_eq!(
            take_query_param("mysql://u@h/db?ssl_ca=/ca.pem", "ssl_ca"),
            ("mysql://u@h/db".into(), Some("/ca.pem".into()))
        );
        assert_eq!(
            take_query_param("mysql://u@h/db", "ssl_ca"),
            ("mysql://u@h/db".into(), None)
        );
        let settings = MysqlSettings {
            url: "mariadb://xmppd@db:3306/xmppd?require_ssl=true&ssl_ca=/etc/ca.pem".into(),
            password: Some("s3cret".into()),
            pool_size: 3,
            connect_timeout: Duration::from_secs(1),
            wait_timeout: Duration::from_secs(1),
        };
        let opts = options(&settings).unwrap();
        assert_eq!(opts.pass(), Some("s3cret"));
        assert_eq!(opts.pool_opts().constraints().max(), 3);
        let ssl = opts.ssl_opts().expect("TLS required");
        assert_eq!(ssl.root_certs().len(), 1);
        let bad = MysqlSettings {
            url: "mysql://xmppd:s3cret@db/x?nonsense=1".into(),
            ..settings
        };
        let err = options(&bad).unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
