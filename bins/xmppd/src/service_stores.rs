//! The stores of the services that exist on every engine (push registrations, FAST tokens,
//! block lists, upload slots, REST API tokens), opened on the configured one: with
//! `[storage] backend = "postgres"` or `"mysql"` their tables live beside the core's on that
//! server, with `"sqlite"` in the SQLite file. The server and the command line open them here
//! alike, so both work on the same tables.

use std::sync::Arc;

use crate::stores::Engine;
use crate::Failure;

/// Opens a service's store on `engine` with the constructor of each engine, as the trait
/// object the service takes; an error names `what`.
macro_rules! open_on {
    ($engine:expr, $what:literal, $sqlite:path, $pg:path, $my:path) => {{
        let opened = match $engine {
            Engine::Sqlite(s) => $sqlite(s.clone()).await.map(|s| Arc::new(s) as _),
            #[cfg(feature = "postgres")]
            Engine::Postgres(s) => $pg(s.clone()).await.map(|s| Arc::new(s) as _),
            #[cfg(feature = "mysql")]
            Engine::Mysql(s) => $my(s.clone()).await.map(|s| Arc::new(s) as _),
        };
        opened.map_err(|e| Failure(format!("opening the {}: {e}", $what)))
    }};
}

pub async fn push(engine: &Engine) -> Result<Arc<dyn xmppd_push::PushStore>, Failure> {
    use xmppd_push::store as s;
    open_on!(
        engine,
        "push registrations",
        s::SqlitePush::open,
        s::PgPush::open,
        s::MysqlPush::open
    )
}

pub async fn blocks(engine: &Engine) -> Result<Arc<dyn xmppd_blocking::BlockStore>, Failure> {
    use xmppd_blocking::store as s;
    open_on!(
        engine,
        "block lists",
        s::SqliteBlocks::open,
        s::PgBlocks::open,
        s::MysqlBlocks::open
    )
}

pub async fn fast_tokens(engine: &Engine) -> Result<Arc<dyn xmppd_fast::TokenStore>, Failure> {
    use xmppd_fast as s;
    open_on!(
        engine,
        "FAST token table",
        s::SqliteTokens::open,
        s::PgTokens::open,
        s::MysqlTokens::open
    )
}

pub async fn api_tokens(engine: &Engine) -> Result<xmppd_api::token::ApiTokens, Failure> {
    use xmppd_api::token as s;
    let store = open_on!(
        engine,
        "API token table",
        s::SqliteApiTokens::open,
        s::PgApiTokens::open,
        s::MysqlApiTokens::open
    )?;
    Ok(s::ApiTokens::new(store))
}

pub async fn uploads(
    engine: &Engine,
) -> Result<Arc<dyn xmppd_upload::store::UploadStore>, Failure> {
    use xmppd_upload::store as s;
    open_on!(
        engine,
        "upload slots",
        s::SqliteUploads::open,
        s::PgUploads::open,
        s::MysqlUploads::open
    )
}
