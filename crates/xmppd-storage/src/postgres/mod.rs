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

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;

use crate::{Queued, Result, StorageError};
pub use migrations::{apply_schema_locked, CORE_SCHEMA};

/// How to reach the database. The password is kept apart from the URL so that the URL can be
/// logged; [`PgSettings::redacted`] is the only form of either that reaches a log or an error.
#[derive(Clone)]
pub struct PgSettings {
    /// A `postgres://` URL or a `key=value` connection string, with or without a password.
    pub url: String,
    /// The password, when it does not come in the URL (from a file or the environment).
    pub password: Option<String>,
    /// Connections kept at most.
    pub pool_size: usize,
    /// How long opening one connection may take.
    pub connect_timeout: Duration,
    /// How long a caller waits for a free connection before its call fails.
    pub wait_timeout: Duration,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("wait_timeout", &self.wait_timeout)
            .finish()
    }
}

impl PgSettings {
    /// The URL with any password replaced by `***`, for logs and errors.
    pub fn redacted(&self) -> String {
        redact_url(&self.url)
    }
}

/// `url` with the password of a `postgres://user:password@host` URL, or of a `password=`
/// pair in a `key=value` string or a query, replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@').map(|i| rest + i) {
            if let Some(colon) = out[rest..at].find(':').map(|i| rest + i) {
                out.replace_range(colon + 1..at, "***");
            }
        }
    }
    // `password=...` in a query string (`&` ends it) or a key=value string (a space does).
    let mut from = 0;
    while let Some(i) = out[from..].find("password=").map(|i| from + i) {
        let start = i + "password=".len();
        let end = out[start..]
            .find(['&', ' '])
            .map_or(out.len(), |j| start + j);
        out.replace_range(start..end, "***");
        from = start + 3;
    }
    out
}

/// A PostgreSQL database shared by every process of a deployment; see the module docs.
pub struct PgStore {
    pool: Pool,
    /// The writes queued in order ([`PgStore::queue`]): one task runs them one after the other.
    ordered: mpsc::UnboundedSender<OrderedJob>,
}

type OrderedJob = Box<dyn FnOnce(Pool) -> Queued<()> + Send>;

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
                scrub(e, settings)
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
        let (ordered, jobs) = mpsc::unbounded_channel();
        tokio::spawn(run_ordered(pool.clone(), jobs));
        let store = PgStore { pool, ordered };
        store.extend(CORE_SCHEMA).await.map_err(|e| match e {
            StorageError::Backend(m) => {
                StorageError::Backend(format!("database {}: {}", settings.redacted(), m))
            }
            other => other,
        })?;
        Ok(store)
    }

    /// A connection from the pool.
    pub async fn client(&self) -> Result<deadpool_postgres::Client> {
        get(&self.pool).await
    }

    /// Queues a write behind every write queued before it (see [`crate::RoomStore::save_room`]):
    /// they run and commit in that order. Returns once queued; the future resolves at commit.
    pub fn queue<F>(&self, f: F) -> Queued<()>
    where
        F: FnOnce(Pool) -> Queued<()> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: OrderedJob = Box::new(move |pool| {
            let run = f(pool);
            Box::pin(async move {
                let _ = tx.send(run.await);
                Ok(())
            })
        });
        if self.ordered.send(job).is_err() {
            return Box::pin(std::future::ready(Err(stopped())));
        }
        Box::pin(async move { rx.await.map_err(|_| stopped())? })
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
pub(super) async fn snapshot(
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

async fn run_ordered(pool: Pool, mut jobs: mpsc::UnboundedReceiver<OrderedJob>) {
    while let Some(job) = jobs.recv().await {
        let _ = job(pool.clone()).await;
    }
}

async fn get(pool: &Pool) -> Result<deadpool_postgres::Client> {
    pool.get().await.map_err(|e| {
        StorageError::Backend(format!("database unavailable: {}", pool_error_text(&e)))
    })
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

pub(crate) fn pg_err(e: tokio_postgres::Error) -> StorageError {
    StorageError::Backend(match e.as_db_error() {
        Some(db) => format!("database: {} ({})", db.message(), db.code().code()),
        None => format!("database: {e}"),
    })
}

/// `e` as text with the settings' password, should a parser echo it, replaced.
fn scrub(e: impl std::fmt::Display, settings: &PgSettings) -> String {
    let mut text = e.to_string();
    if let Some(p) = settings.password.as_deref().filter(|p| !p.is_empty()) {
        text = text.replace(p, "***");
    }
    redact_url(&text)
}

fn stopped() -> StorageError {
    StorageError::Backend("storage task stopped".into())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn corrupt(what: &str) -> StorageError {
    StorageError::Backend(format!("corrupt value in database: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_appear_in_the_redacted_url() {
        for (url, want) in [
            (
                "postgres://xmppd:s3cret@db.example:5432/xmppd",
                "postgres://xmppd:***@db.example:5432/xmppd",
            ),
            (
                "postgresql://xmppd@db/xmppd?password=s3cret&sslmode=disable",
                "postgresql://xmppd@db/xmppd?password=***&sslmode=disable",
            ),
            (
                "host=/run/pg user=xmppd password=s3cret dbname=x",
                "host=/run/pg user=xmppd password=*** dbname=x",
            ),
            ("postgres://xmppd@db/xmppd", "postgres://xmppd@db/xmppd"),
            ("postgres://a:p@ss@host/db", "postgres://a:***@host/db"),
        ] {
            assert_eq!(redact_url(url), want);
            assert!(!redact_url(url).contains("s3cret"));
        }
        let settings = PgSettings {
            url: "postgres://xmppd:s3cret@db/x".into(),
            password: Some("other".into()),
            pool_size: 1,
            connect_timeout: Duration::from_secs(1),
            wait_timeout: Duration::from_secs(1),
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("other"),
            "{shown}"
        );
    }
}
