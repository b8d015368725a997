//! PostgreSQL implementation of every storage trait: [`PgStore`], for deployments that
//! outgrow one SQLite file or want their accounts in a database several processes share.
//!
//! Design: a pool of connections (deadpool) with a per-connection cache of prepared
//! statements. Every write runs in its own transaction and answers `Ok` only after `COMMIT`
//! returned, so the promise of the SQLite store holds (with PostgreSQL's default
//! `synchronous_commit = on` the commit is flushed to its WAL before it returns); PostgreSQL
//! groups concurrent commits into one flush itself. Nothing is cached in the process: two
//! processes on one database see each other's writes at once. Where SQLite relies on its one
//! writer to make a check-and-write atomic, this store takes a row lock (`FOR UPDATE`, an
//! upsert) or a transaction-scoped advisory lock on the account (the offline cap).
//!
//! The schema is versioned like SQLite's: `xmppd_schemas` holds the version of each named
//! schema (the core's is `core`), and the missing migrations are applied at start-up, in one
//! transaction under an advisory lock, so two processes starting together do not both run
//! them. A service crate adds tables of its own the same way with [`PgStore::extend`].
//!
//! When the database is unreachable every call fails with [`StorageError::Backend`] after the
//! pool's timeouts (logins then fail with `temporary-auth-failure`, writes with a `wait`
//! error); the pool opens new connections once the database is back, without a restart.
//!
//! TLS to the database is optional ([`PgSettings`], `tls`: rustls with ring). Not done here:
//! no retry of a transaction that failed on
//! a serialization conflict (none of the statements here needs `SERIALIZABLE`).
//!
//! Layout: this module connects and runs transactions; `migrations` is the schema; each
//! storage trait is implemented in the module of its tables (`accounts`, `roster`,
//! `offline`, `data`: user data and sessions, `rooms`). A service crate builds its own
//! tables on [`PgStore::client`], [`PgStore::extend`] and the helpers at the end of this
//! module ([`exec`], [`query`], [`query_opt`], [`pg_err`]), through the drivers re-exported
//! here, so that it needs no driver of its own.

mod accounts;
mod data;
mod migrations;
mod offline;
mod rooms;
mod roster;
mod tls;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// The drivers, for a service crate's own tables.
pub use {deadpool_postgres, tokio_postgres};

pub(crate) use crate::remote::{corrupt, now_ms};
pub use crate::remote::{redact_url, DbSettings};
use crate::remote::{take_query_param, unavailable, Ordered, PushQueue};
use crate::{Queued, Result, StorageError};
pub use migrations::{apply_schema_locked, CORE_SCHEMA};

/// How to reach PostgreSQL (a `postgres://` URL or a `key=value` connection string). TLS is
/// off unless asked for: `require_ssl=true` in the URL's query (or the driver's own
/// `sslmode=require`), or `ssl_ca=PATH` (a PEM file of an authority to trust besides the web
/// roots; implies TLS), as for MariaDB. With TLS the server's certificate and name are checked.
pub type PgSettings = DbSettings;

/// A PostgreSQL database shared by every process of a deployment; see the module docs.
pub struct PgStore {
    pool: Pool,
    /// The writes queued in order ([`PgStore::queue`]).
    ordered: Ordered<Pool>,
    /// Offline messages, group-committed.
    pushes: PushQueue,
}

impl PgStore {
    /// Connects, then brings the core schema up to date (under an advisory lock: another
    /// process starting at the same time waits and then finds nothing to do). Fails when the
    /// database cannot be reached within the settings' timeouts; the error names the URL
    /// without its password.
    pub async fn connect(settings: &PgSettings) -> Result<PgStore> {
        let (url, ssl_ca) = take_query_param(&settings.url, "ssl_ca");
        let (url, require_ssl) = take_query_param(&url, "require_ssl");
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            StorageError::Backend(format!(
                "database URL {}: {}",
                settings.redacted(),
                settings.scrub(e)
            ))
        })?;
        // Only when asked: the driver's default (`prefer`) would try TLS with any server that
        // offers it, and fail where its certificate is not one the web roots vouch for.
        let tls_asked = ssl_ca.is_some()
            || require_ssl.as_deref() == Some("true")
            || config.get_ssl_mode() == SslMode::Require;
        config.ssl_mode(if tls_asked {
            SslMode::Require
        } else {
            SslMode::Disable
        });
        let tls = tls::MakeRustls::new(ssl_ca.as_deref())?;
        if let Some(password) = &settings.password {
            config.password(password.as_bytes());
        }
        config.connect_timeout(settings.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("xmppd");
        }
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                // A connection whose server went away is closed and replaced; a query on
                // every checkout would cost a round trip per call.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.wait_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| StorageError::Backend(format!("database pool: {e}")))?;
        let ordered = Ordered::start(pool.clone());
        let pushes = PushQueue::start(pool.clone(), offline::write_pushes);
        let store = PgStore {
            pool,
            ordered,
            pushes,
        };
        (store.extend(CORE_SCHEMA).await).map_err(|e| settings.opening_failed(e))?;
        Ok(store)
    }

    /// A connection from the pool.
    pub async fn client(&self) -> Result<deadpool_postgres::Client> {
        get(&self.pool).await
    }

    /// Runs one statement on a pooled connection (prepared once per connection) and returns
    /// its rows: a read, or a write with `RETURNING`, committed when it returns.
    pub async fn query(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        query(&self.client().await?, sql, args).await
    }

    /// Runs one write statement on a pooled connection (prepared once per connection),
    /// committed when it returns; how many rows it changed.
    pub async fn execute(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        exec(&self.client().await?, sql, args).await
    }

    /// Queues a write behind every write queued before it (see [`crate::RoomStore::save_room`]):
    /// they run and commit in that order. Returns once queued; the future resolves at commit.
    pub fn queue<F>(&self, f: F) -> Queued<()>
    where
        F: FnOnce(Pool) -> Queued<()> + Send + 'static,
    {
        self.ordered.queue(f)
    }

    /// Brings `schema`'s tables up to date under the migration lock; returns the version it
    /// was at before. A newer version than this build knows is an error, never a downgrade.
    pub async fn extend(&self, schema: crate::Schema) -> Result<usize> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let before = apply_schema_locked(&tx, schema).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(before)
    }
}

/// A read-only transaction on one snapshot: what it reads belongs together (a roster and its
/// version, a room and its affiliations).
pub async fn snapshot(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg_err)
}

async fn get(pool: &Pool) -> Result<deadpool_postgres::Client> {
    pool.get()
        .await
        .map_err(|e| unavailable(pool_error_text(&e)))
}

/// What a pool error says, without anything that could carry the password (deadpool's
/// texts name the timeout or the connection error only).
fn pool_error_text(e: &deadpool_postgres::PoolError) -> String {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Timeout(kind) => format!("timed out ({kind:?})"),
        PoolError::Backend(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// A driver error as a [`StorageError`]: the server's message and SQLSTATE, never the URL.
pub fn pg_err(e: tokio_postgres::Error) -> StorageError {
    StorageError::Backend(match e.as_db_error() {
        Some(db) => format!("database: {} ({})", db.message(), db.code().code()),
        None => format!("database: {e}"),
    })
}

/// Starts a transaction for one write: its caller commits, and answers only after that.
pub async fn begin(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>> {
    client.transaction().await.map_err(pg_err)
}

/// Runs `sql` (prepared once per connection) with `params`; the rows it changed.
pub async fn exec(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_err)?;
    c.execute(&stmt, params).await.map_err(pg_err)
}

/// Runs the query `sql` (prepared once per connection) with `params`; its rows.
pub async fn query(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_err)?;
    c.query(&stmt, params).await.map_err(pg_err)
}

/// Runs the query `sql` (prepared once per connection) with `params`; its row, if any.
pub async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_err)?;
    c.query_opt(&stmt, params).await.map_err(pg_err)
}
