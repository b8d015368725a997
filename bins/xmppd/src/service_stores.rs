//! The stores of the services, each opened on the configured engine: the message archive,
//! pubsub and personal eventing nodes, private XML and vCards, push registrations, FAST
//! tokens, block lists, upload slots, REST API tokens. With `[storage] backend = "postgres"`
//! or `"mysql"` their tables live beside the core's on that server, with `"sqlite"` in the
//! SQLite file. The server and the command line open them here alike, so both work on the
//! same tables; [`open_all`] opens every one (what `xmppd migrate` needs before a copy).

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

pub async fn archive(engine: &Engine) -> Result<Arc<dyn xmppd_mam::ArchiveStore>, Failure> {
    use xmppd_mam as s;
    open_on!(
        engine,
        "message archive",
        s::SqliteArchive::open,
        s::PgArchive::open,
        s::MysqlArchive::open
    )
}

pub async fn nodes(engine: &Engine) -> Result<Arc<dyn xmppd_pubsub::NodeStore>, Failure> {
    use xmppd_pubsub as s;
    open_on!(
        engine,
        "pubsub nodes",
        s::SqliteNodes::open,
        s::PgNodes::open,
        s::MysqlNodes::open
    )
}

pub async fn personal(engine: &Engine) -> Result<Arc<dyn xmppd_personal::PersonalStore>, Failure> {
    use xmppd_personal as s;
    open_on!(
        engine,
        "personal data tables",
        s::SqlitePersonal::open,
        s::PgPersonal::open,
        s::MysqlPersonal::open
    )
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

/// Opens the store of every service once on `engine`, so that each one's tables exist and are
/// migrated as at the server's start-up.
pub async fn open_all(engine: &Engine) -> Result<(), Failure> {
    archive(engine).await?;
    nodes(engine).await?;
    personal(engine).await?;
    push(engine).await?;
    blocks(engine).await?;
    fast_tokens(engine).await?;
    api_tokens(engine).await?;
    uploads(engine).await?;
    Ok(())
}
