//! What the storage tests share: a database per test on each engine.

pub mod mariadb;
pub mod pg;
pub mod system;

use std::sync::Arc;

use async_trait::async_trait;
use xmppd_storage::{MysqlStore, PgStore, RoomStore, SqliteStore, Store};

/// Every storage trait in one handle, as the server uses a store.
pub trait FullStore: Store + RoomStore {}
impl<T: Store + RoomStore> FullStore for T {}

/// One test's database on one engine.
#[async_trait]
pub trait Db: Send + Sync {
    /// A store on this database. Each call opens another one, as another process sharing the
    /// database would (the first one also creates the schema).
    async fn open(&self) -> Arc<dyn FullStore>;
}

/// A SQLite file in a temporary directory.
pub struct SqliteDb {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl SqliteDb {
    pub fn new() -> SqliteDb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xmppd.db");
        SqliteDb { _dir: dir, path }
    }
}

#[async_trait]
impl Db for SqliteDb {
    async fn open(&self) -> Arc<dyn FullStore> {
        let path = self.path.clone();
        // Opening blocks (migrations, the write lock): off the runtime's threads.
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
            .await
            .unwrap()
            .unwrap();
        Arc::new(store)
    }
}

/// A database of its own in the shared PostgreSQL cluster.
pub struct PgDb {
    cluster: &'static pg::Cluster,
    name: String,
}

impl PgDb {
    /// `None` (the test is skipped, with a message) where PostgreSQL cannot be had.
    pub async fn new() -> Option<PgDb> {
        let cluster = tokio::task::spawn_blocking(pg::shared).await.unwrap()?;
        let name = cluster.create_database().await;
        Some(PgDb { cluster, name })
    }
}

#[async_trait]
impl Db for PgDb {
    async fn open(&self) -> Arc<dyn FullStore> {
        Arc::new(
            PgStore::connect(&self.cluster.settings(&self.name))
                .await
                .unwrap(),
        )
    }
}

/// A database of its own on the shared MariaDB server.
pub struct MariaDb {
    server: &'static mariadb::Server,
    name: String,
}

impl MariaDb {
    /// `None` (the test is skipped, with a message) where MariaDB cannot be had.
    pub async fn new() -> Option<MariaDb> {
        let server = tokio::task::spawn_blocking(mariadb::shared)
            .await
            .unwrap()?;
        let name = server.create_database().await;
        Some(MariaDb { server, name })
    }
}

#[async_trait]
impl Db for MariaDb {
    async fn open(&self) -> Arc<dyn FullStore> {
        Arc::new(
            MysqlStore::connect(&self.server.settings(&self.name))
                .await
                .unwrap(),
        )
    }
}
