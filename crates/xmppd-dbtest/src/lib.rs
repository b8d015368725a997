//! What the tests of xmppd's storage engines share: a private PostgreSQL cluster and MariaDB
//! server per test binary (started from Debian's packages, installed when missing), a
//! database of its own per test on each engine, and the checks every database server engine
//! must pass. Used by `xmppd-storage`'s conformance suite and by each service crate that
//! implements its store on PostgreSQL and MariaDB.

pub mod mariadb;
pub mod pg;
pub mod system;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use xmppd_storage::{
    DbSettings, MysqlStore, PgStore, RoomStore, SqliteStore, StorageError, Store, UserRef,
};

/// Every storage trait in one handle, as the server uses a store.
pub trait FullStore: Store + RoomStore {}
impl<T: Store + RoomStore> FullStore for T {}

/// One test's database on one engine.
#[async_trait]
pub trait Db: Send + Sync {
    /// A store on this database. Each call opens another one, as another process sharing the
    /// database would (the first one also creates the schema).
    async fn open(&self) -> Arc<dyn FullStore>;

    /// The same, as the engine itself: what a service crate opens its own store on.
    async fn engine(&self) -> Engine;
}

/// One engine's store, for a service crate's tests to open their own store on (as the server
/// does on the configured engine).
#[derive(Clone)]
pub enum Engine {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PgStore>),
    Mysql(Arc<MysqlStore>),
}

impl Engine {
    /// The core's view of the same store (to create accounts, change passwords …).
    pub fn core(&self) -> Arc<dyn FullStore> {
        match self {
            Engine::Sqlite(s) => s.clone(),
            Engine::Postgres(s) => s.clone(),
            Engine::Mysql(s) => s.clone(),
        }
    }
}

/// One test per case and engine, for a service crate's conformance suite: each
/// `module::case` (an `async fn(&dyn Db)` of the test crate) runs on SQLite
/// (`on_sqlite::case`), PostgreSQL (`on_postgres::`) and MariaDB (`on_mariadb::`); the last
/// two are skipped with a message where the server cannot be had, a failure under CI.
#[macro_export]
macro_rules! on_every_engine {
    ($($module:ident :: $case:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = $crate::SqliteDb::new();
                    super::$module::$case(&db).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = $crate::PgDb::new().await else { return };
                    super::$module::$case(&db).await;
                }
            )*
        }
        mod on_mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = $crate::MariaDb::new().await else { return };
                    super::$module::$case(&db).await;
                }
            )*
        }
    };
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

impl Default for SqliteDb {
    fn default() -> Self {
        SqliteDb::new()
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

    async fn engine(&self) -> Engine {
        let path = self.path.clone();
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
            .await
            .unwrap()
            .unwrap();
        Engine::Sqlite(Arc::new(store))
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

    async fn engine(&self) -> Engine {
        let settings = self.cluster.settings(&self.name);
        Engine::Postgres(Arc::new(PgStore::connect(&settings).await.unwrap()))
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

    async fn engine(&self) -> Engine {
        let settings = self.server.settings(&self.name);
        Engine::Mysql(Arc::new(MysqlStore::connect(&settings).await.unwrap()))
    }
}

/// A database server of the tests (PostgreSQL, MariaDB), for what every engine on a server
/// shows beyond the conformance suite: its pool surviving the server's restart, and no
/// password in its errors.
#[async_trait]
pub trait ServerEngine: Sized + Send + Sync + 'static {
    /// The scheme of its URLs (`postgres`, `mysql`) and the test user's password.
    const SCHEME: &'static str;
    const PASSWORD: &'static str;
    /// A server of its own, for a test that stops it.
    fn start_own() -> Option<Self>;
    /// The server shared by a test binary.
    fn shared() -> Option<&'static Self>;
    fn port(&self) -> u16;
    fn settings(&self, db: &str) -> DbSettings;
    async fn create_database(&self) -> String;
    /// Stops the server, waiting until it is down, and starts it again on its port.
    fn stop(&self);
    fn restart(&self);
    async fn connect(settings: &DbSettings) -> xmppd_storage::Result<Arc<dyn FullStore>>;
}

/// Forty pushes to alice's offline store at once, the twenty-first of which the database
/// refuses (`refused`: its account and stanza): that one fails, the other 39 are stored,
/// whether the engine writes pushes queued together in one batch (then written again one by
/// one) or each on its own. Returns the refused push's error for the engine's own checks.
pub async fn a_refused_push_fails_alone(
    store: Arc<dyn FullStore>,
    refused: (UserRef, String),
) -> StorageError {
    let alice = UserRef::new("alice", "example.org");
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            let (user, xml) = match i {
                20 => refused.clone(),
                _ => (alice.clone(), format!("<m i='{i:02}'/>")),
            };
            tokio::spawn(async move { (i, store.push_offline(&user, i, &xml, 100).await) })
        })
        .collect();
    let mut refusal = None;
    for t in tasks {
        match t.await.unwrap() {
            (20, Err(e)) => refusal = Some(e),
            (20, Ok(stored)) => panic!("the refused push was answered {stored}"),
            (i, outcome) => assert!(outcome.unwrap(), "push {i}"),
        }
    }
    assert_eq!(store.offline_count(&alice).await.unwrap(), 39);
    refusal.expect("the refused push's outcome")
}

pub async fn the_pool_recovers_when_the_database_comes_back<S: ServerEngine>() {
    let alice = UserRef::new("alice", "example.org");
    let Some(server) = tokio::task::spawn_blocking(S::start_own).await.unwrap() else {
        return;
    };
    let db = server.create_database().await;
    let settings = DbSettings {
        connect_timeout: Duration::from_secs(2),
        wait_timeout: Duration::from_secs(2),
        ..server.settings(&db)
    };
    let store = S::connect(&settings).await.unwrap();
    store.create_user(&alice, &[]).await.unwrap();

    let server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    // Down: calls fail (the core turns this into temporary-auth-failure and wait errors)
    // instead of hanging, and name the cause, never the password.
    for _ in 0..3 {
        match store.user_exists(&alice).await {
            Err(StorageError::Backend(msg)) => assert!(!msg.contains(S::PASSWORD), "{msg}"),
            other => panic!("expected a backend error, got {other:?}"),
        }
    }

    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    // Up again: the same store serves without a restart.
    assert!(store.user_exists(&alice).await.unwrap());
    store
        .create_user(&UserRef::new("bob", "example.org"), &[])
        .await
        .unwrap();
    drop(server);
}

/// The message of a failed connection attempt.
async fn refused<S: ServerEngine>(settings: &DbSettings) -> String {
    match S::connect(settings).await {
        Err(StorageError::Backend(msg)) => msg,
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("connected with {settings:?}"),
    }
}

/// Connection errors never show the password; returns the message for a wrong password in
/// the URL, which each engine words its own way.
pub async fn connection_errors_never_show_the_password<S: ServerEngine>() -> Option<String> {
    let server = tokio::task::spawn_blocking(S::shared).await.unwrap()?;
    let db = server.create_database().await;
    let scheme = S::SCHEME;
    // A wrong password in the URL.
    let wrong = DbSettings {
        url: format!(
            "{scheme}://xmppd:wrong-Secret-1@127.0.0.1:{}/{db}",
            server.port()
        ),
        password: None,
        ..server.settings(&db)
    };
    let msg = refused::<S>(&wrong).await;
    assert!(!msg.contains("wrong-Secret-1"), "{msg}");
    assert!(msg.contains("xmppd:***@127.0.0.1"), "{msg}");
    // A server that is not there, with the password apart.
    let nowhere = DbSettings {
        url: format!("{scheme}://xmppd@127.0.0.1:1/x"),
        password: Some("apart-Secret-2".into()),
        connect_timeout: Duration::from_secs(2),
        ..server.settings(&db)
    };
    let gone = refused::<S>(&nowhere).await;
    assert!(!gone.contains("apart-Secret-2"), "{gone}");
    // A URL that does not parse, with the password in it.
    let garbled = DbSettings {
        url: format!("{scheme}://xmppd:garbled-Secret-3@127.0.0.1:notaport/x"),
        ..server.settings(&db)
    };
    let garbled = refused::<S>(&garbled).await;
    assert!(!garbled.contains("garbled-Secret-3"), "{garbled}");
    Some(msg)
}

#[async_trait]
impl ServerEngine for pg::Cluster {
    const SCHEME: &'static str = "postgres";
    const PASSWORD: &'static str = pg::PASSWORD;
    fn start_own() -> Option<Self> {
        pg::Cluster::start()
    }
    fn shared() -> Option<&'static Self> {
        pg::shared()
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn settings(&self, db: &str) -> DbSettings {
        pg::Cluster::settings(self, db)
    }
    async fn create_database(&self) -> String {
        pg::Cluster::create_database(self).await
    }
    fn stop(&self) {
        self.pg_ctl_stop();
    }
    fn restart(&self) {
        self.pg_ctl_start().unwrap();
    }
    async fn connect(settings: &DbSettings) -> xmppd_storage::Result<Arc<dyn FullStore>> {
        Ok(Arc::new(PgStore::connect(settings).await?))
    }
}

#[async_trait]
impl ServerEngine for mariadb::Server {
    const SCHEME: &'static str = "mysql";
    const PASSWORD: &'static str = mariadb::PASSWORD;
    fn start_own() -> Option<Self> {
        mariadb::Server::start()
    }
    fn shared() -> Option<&'static Self> {
        mariadb::shared()
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn settings(&self, db: &str) -> DbSettings {
        mariadb::Server::settings(self, db)
    }
    async fn create_database(&self) -> String {
        mariadb::Server::create_database(self).await
    }
    fn stop(&self) {
        mariadb::Server::stop(self);
    }
    fn restart(&self) {
        self.run().unwrap();
    }
    async fn connect(settings: &DbSettings) -> xmppd_storage::Result<Arc<dyn FullStore>> {
        Ok(Arc::new(MysqlStore::connect(settings).await?))
    }
}
