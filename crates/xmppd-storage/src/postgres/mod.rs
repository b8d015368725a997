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
//! Not done here: TLS to the database (connections are plain TCP or a Unix socket; keep the
//! database on the same host or a private network); no retry of a transaction that failed on
//! a serialization conflict (none of the statements here needs `SERIALIZABLE`).
//!
//! Layout: this module connects and runs transactions; `migrations` is the schema; each
//! storage trait is implemented in the module of its tables (`accounts`, `roster`,
//! `offline`, `data`: user data and sessions, `rooms`).

mod accounts;
mod data;
mod migrations;
mod offline;
mod rooms;
mod roster;

/// The drivers, for a service crate's tables on this engine (one version in the workspace).
pub use {deadpool_postgres, tokio_postgres};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

pub(crate) use crate::remote::{corrupt, now_ms};
pub use crate::remote::{redact_url, DbSettings};
use crate::remote::{unavailable, Ordered};
use crate::{Queued, Result, StorageError};
pub use migrations::{apply_schema_locked, CORE_SCHEMA};

/// How to reach PostgreSQL (a `postgres://` URL or a `key=value` connection string).
pub type PgSettings = DbSettings;

/// A PostgreSQL database shared by every process of a deployment; see the module docs.
pub struct PgStore {
    pool: Pool,
    /// The writes queued in order ([`PgStore::queue`]).
    ordered: Ordered<Pool>,
}

impl PgStore {
    /// Connects, then brings the core schema up to date (under an advisory lock: another
    /// process starting at the same time waits and then finds nothing to do). Fails when the
    /// database cannot be reached within the settings' timeouts; the error names the URL
    /// without its password.
    pub async fn connect(settings: &PgSettings) -> Result<PgStore> {
        let mut config: tokio_postgres::Config = settings.url.parse().map_err(|e| {
            StorageError::Backend(format!(
                "database URL {}: {}",
                settings.redacted(),
                settings.scrub(e)
            ))
        })?;
        if let Some(password) = &settings.password {
            config.password(password.as_bytes());
        }
        config.connect_timeout(settings.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("xmppd");
        }
        let manager = Manager::from_config(
            config,
            NoTls,
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
        let store = PgStore { pool, ordered };
        (store.extend(CORE_SCHEMA).await).map_err(|e| settings.opening_failed(e))?;
        Ok(store)
    }

    /// A connection from the pool.
    pub async fn client(&self) -> Result<deadpool_postgres::Client> {
        get(&self.pool).await
    }

    /// Runs one statement on a pooled connection (prepared once per connection) and returns
    /// its rows: a read, or a write with `RETURNING`, committed when it returns.
    pub async fn query(
        &self,
        sql: &str,
        args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(pg_err)?;
        client.query(&stmt, args).await.map_err(pg_err)
    }

    /// Runs one write statement on a pooled connection (prepared once per connection),
    /// committed when it returns; how many rows it changed.
    pub async fn execute(
        &self,
        sql: &str,
        args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(pg_err)?;
        client.execute(&stmt, args).await.map_err(pg_err)
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

/// A driver error as a [`StorageError::Backend`]: the server's message and SQLSTATE code.
pub fn pg_err(e: tokio_postgres::Error) -> StorageError {
    StorageError::Backend(match e.as_db_error() {
        Some(db) => format!("database: {} ({})", db.message(), db.code().code()),
        None => format!("database: {e}"),
    })
}
