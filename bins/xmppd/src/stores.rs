//! The stores a configuration names, opened the same way by the server and the command line.
//!
//! With `[storage] backend = "sqlite"` everything is in one SQLite file. With `"postgres"` or
//! `"mysql"` (MariaDB) the core's data (accounts and SCRAM keys, rosters, offline messages,
//! user data, session records, chat rooms) is on that database server, and so are the stores
//! of the services, each opened on [`Stores::engine`] by `service_stores`. The SQLite file of
//! `storage.sqlite_path` then holds nothing a service still needs; `xmppd migrate` copies an
//! SQLite server's tables to the database server. See `docs/STORAGE.md`.

use std::sync::Arc;

use xmppd_config::{StorageBackend, ValidatedConfig};
use xmppd_storage::{CredentialStore, RoomStore, SqliteStore, Store, UserDataStore};

use crate::Failure;

/// One engine's handle seen through each trait the binary hands out.
pub struct Stores {
    /// Everything the core needs.
    pub core: Arc<dyn Store>,
    pub credentials: Arc<dyn CredentialStore>,
    pub user_data: Arc<dyn UserDataStore>,
    pub rooms: Arc<dyn RoomStore>,
    /// The SQLite file of the services' own tables (the core's too, with the SQLite backend).
    pub services: Arc<SqliteStore>,
    /// The configured engine itself, for a service that has a store on each: it matches on
    /// this to open its own (its tables then live beside the core's; see `service_stores`).
    pub engine: Engine,
}

/// The engine of `[storage] backend`, as a service opens its store on it.
#[derive(Clone)]
pub enum Engine {
    Sqlite(Arc<SqliteStore>),
    #[cfg(feature = "postgres")]
    Postgres(Arc<xmppd_storage::PgStore>),
    #[cfg(feature = "mysql")]
    Mysql(Arc<xmppd_storage::MysqlStore>),
}

impl Stores {
    fn of<S: Store + RoomStore + 'static>(
        core: Arc<S>,
        services: Arc<SqliteStore>,
        engine: Engine,
    ) -> Stores {
        Stores {
            core: core.clone(),
            credentials: core.clone(),
            user_data: core.clone(),
            rooms: core,
            services,
            engine,
        }
    }
}

/// Opens the configured stores (the server does the same at start-up). With PostgreSQL this
/// connects and migrates its schema, so it fails when the database cannot be reached.
pub async fn open(config: &ValidatedConfig) -> Result<Stores, Failure> {
    let services = open_sqlite(config)?;
    match config.storage.backend {
        StorageBackend::Sqlite => Ok(Stores::of(
            services.clone(),
            services.clone(),
            Engine::Sqlite(services),
        )),
        StorageBackend::Postgres => postgres(config, services).await,
        StorageBackend::Mysql => mysql(config, services).await,
    }
}

/// Opens the store of every service once in the SQLite file and, with a database server, on
/// [`Stores::engine`] too (where `serve` opens them), so that each one's tables exist and are
/// migrated to this build's schema on both. `xmppd migrate` calls it before copying: the
/// SQLite file is its source, and the copy finds each table on the target by name.
pub async fn open_services(stores: &Stores) -> Result<(), Failure> {
    let file = Engine::Sqlite(stores.services.clone());
    crate::service_stores::open_all(&file).await?;
    if !matches!(stores.engine, Engine::Sqlite(_)) {
        crate::service_stores::open_all(&stores.engine).await?;
    }
    Ok(())
}

/// Only the SQLite file: for the commands that work on the services' tables alone.
pub fn open_sqlite(config: &ValidatedConfig) -> Result<Arc<SqliteStore>, Failure> {
    let path = &config.storage.sqlite_path;
    SqliteStore::open(path)
        .map(Arc::new)
        .map_err(|e| Failure(format!("opening database {}: {e}", path.display())))
}

#[cfg(feature = "postgres")]
async fn postgres(config: &ValidatedConfig, services: Arc<SqliteStore>) -> Result<Stores, Failure> {
    let settings = db_settings(config)?;
    let store = xmppd_storage::PgStore::connect(&settings)
        .await
        .map_err(|e| Failure(format!("opening the PostgreSQL database: {e}")))?;
    tracing::info!(url = %settings.redacted(), "storage: PostgreSQL");
    let store = Arc::new(store);
    Ok(Stores::of(store.clone(), services, Engine::Postgres(store)))
}

#[cfg(not(feature = "postgres"))]
async fn postgres(_: &ValidatedConfig, _: Arc<SqliteStore>) -> Result<Stores, Failure> {
    Err(without("postgres", "PostgreSQL"))
}

#[cfg(feature = "mysql")]
async fn mysql(config: &ValidatedConfig, services: Arc<SqliteStore>) -> Result<Stores, Failure> {
    let settings = db_settings(config)?;
    let store = xmppd_storage::MysqlStore::connect(&settings)
        .await
        .map_err(|e| Failure(format!("opening the MariaDB database: {e}")))?;
    tracing::info!(url = %settings.redacted(), "storage: MariaDB");
    let store = Arc::new(store);
    Ok(Stores::of(store.clone(), services, Engine::Mysql(store)))
}

#[cfg(not(feature = "mysql"))]
async fn mysql(_: &ValidatedConfig, _: Arc<SqliteStore>) -> Result<Stores, Failure> {
    Err(without("mysql", "MariaDB"))
}

#[cfg(not(all(feature = "postgres", feature = "mysql")))]
fn without(feature: &str, engine: &str) -> Failure {
    Failure(format!(
        "storage.backend = \"{feature}\": this xmppd was built without {engine} support \
         (cargo feature `{feature}`)"
    ))
}

/// The connection settings, with the URL and password read from their files or the
/// environment. What the files hold never appears in an error.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub fn db_settings(config: &ValidatedConfig) -> Result<xmppd_storage::DbSettings, Failure> {
    use xmppd_config::{DatabaseUrl, PASSWORD_ENV};
    let backend = config.storage.backend.as_str();
    let server = (config.storage.server.as_ref()).ok_or_else(|| {
        Failure(format!(
            "storage.backend = \"{backend}\" without its settings"
        ))
    })?;
    let read = |key: &str, path: &std::path::Path| -> Result<String, Failure> {
        std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| Failure(format!("{key} {}: {e}", path.display())))
    };
    let url = match &server.url {
        DatabaseUrl::Inline(url) => url.clone(),
        DatabaseUrl::File(path) => read("storage.url_file", path)?.trim().to_owned(),
    };
    let password = match &server.password_file {
        Some(path) => Some(read("storage.password_file", path)?),
        None => std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()),
    };
    Ok(xmppd_storage::DbSettings {
        url,
        password,
        pool_size: server.pool_size,
        connect_timeout: server.connect_timeout,
        wait_timeout: server.pool_wait,
    })
}
