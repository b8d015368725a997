//! The contract of [`ArchiveStore`], written once and run against every engine: each case
//! below runs on SQLite (`on_sqlite::`), on a real PostgreSQL (`on_postgres::`) and on a real
//! MariaDB (`on_mariadb::`), the servers of `xmppd-dbtest`; the last two are skipped with a
//! message where the server cannot be installed, a failure under CI. What full-text search
//! promises on every engine (docs/STORAGE.md) is checked in `fulltext`.

use xmppd_dbtest as support;

mod archive;
mod fulltext;

use std::sync::Arc;

use async_trait::async_trait;
use xmppd_mam::store::{Direction, Filter, NewMessage, Page, PageRequest, Paging};
use xmppd_mam::{ArchiveStore, MysqlArchive, PgArchive, SqliteArchive};
use xmppd_storage::{MysqlStore, PgStore, SqliteStore};

/// One test's database on one engine, with the archive's tables.
#[async_trait]
pub trait Engine: Send + Sync {
    /// The archive on this database. Each call opens it again, as the server does when it
    /// restarts (the first one also creates the tables).
    async fn open(&self) -> Arc<dyn ArchiveStore>;
    /// Sets the stamp of message `id` (the time filters and retention need stamps apart).
    async fn restamp(&self, id: i64, stamp_ms: i64);
    /// Inserts a message as a copy from another engine would (`xmppd migrate`): the columns
    /// of the SQLite table only, none of this engine's full-text index. `None` on SQLite,
    /// whose index is not copied from anywhere.
    async fn copy_in(&self, id: i64, owner: &str, stanza: &str) -> Option<()>;
    /// A message this engine's database refuses, if there is one.
    fn refused(&self) -> Option<NewMessage>;
}

pub struct Sqlite {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    last: std::sync::Mutex<Option<Arc<SqliteStore>>>,
}

impl Sqlite {
    fn new() -> Sqlite {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xmppd.db");
        Sqlite {
            _dir: dir,
            path,
            last: Default::default(),
        }
    }
}

#[async_trait]
impl Engine for Sqlite {
    async fn open(&self) -> Arc<dyn ArchiveStore> {
        let path = self.path.clone();
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
            .await
            .unwrap()
            .unwrap();
        let store = Arc::new(store);
        *self.last.lock().unwrap() = Some(store.clone());
        Arc::new(SqliteArchive::open(store).await.unwrap())
    }

    async fn restamp(&self, id: i64, stamp_ms: i64) {
        let store = self.last.lock().unwrap().clone().unwrap();
        store
            .write(move |c| {
                c.execute(
                    "UPDATE mam_messages SET stamp_ms = ?1 WHERE id = ?2",
                    rusqlite::params![stamp_ms, id],
                )?;
                Ok(())
            })
            .await
            .unwrap();
    }

    async fn copy_in(&self, _: i64, _: &str, _: &str) -> Option<()> {
        None
    }

    fn refused(&self) -> Option<NewMessage> {
        None
    }
}

pub struct Postgres {
    cluster: &'static support::pg::Cluster,
    name: String,
}

impl Postgres {
    async fn new() -> Option<Postgres> {
        let cluster = tokio::task::spawn_blocking(support::pg::shared)
            .await
            .unwrap()?;
        let name = cluster.create_database().await;
        Some(Postgres { cluster, name })
    }

    async fn store(&self) -> PgStore {
        PgStore::connect(&self.cluster.settings(&self.name))
            .await
            .unwrap()
    }
}

#[async_trait]
impl Engine for Postgres {
    async fn open(&self) -> Arc<dyn ArchiveStore> {
        Arc::new(PgArchive::open(Arc::new(self.store().await)).await.unwrap())
    }

    async fn restamp(&self, id: i64, stamp_ms: i64) {
        let store = self.store().await;
        let client = store.client().await.unwrap();
        client
            .execute(
                "UPDATE mam_messages SET stamp_ms = $1 WHERE id = $2",
                &[&stamp_ms, &id],
            )
            .await
            .unwrap();
    }

    async fn copy_in(&self, id: i64, owner: &str, stanza: &str) -> Option<()> {
        let store = self.store().await;
        // The archive's tables exist once it was opened.
        self.open().await;
        let client = store.client().await.unwrap();
        client
            .execute(
                "INSERT INTO mam_messages
                     (id, owner, stamp_ms, with_bare, with_resource, direction, stanza)
                 VALUES ($1, $2, 1, 'peer@x', '', 0, $3)",
                &[&id, &owner, &stanza],
            )
            .await
            .unwrap();
        Some(())
    }

    fn refused(&self) -> Option<NewMessage> {
        // PostgreSQL's text holds no NUL character.
        let mut m = msg("b@x", "a@x", "bad");
        m.stanza = m.stanza.replace("bad", "b\0d");
        Some(m)
    }
}

pub struct Mariadb {
    server: &'static support::mariadb::Server,
    name: String,
}

impl Mariadb {
    async fn new() -> Option<Mariadb> {
        let server = tokio::task::spawn_blocking(support::mariadb::shared)
            .await
            .unwrap()?;
        let name = server.create_database().await;
        Some(Mariadb { server, name })
    }

    async fn store(&self) -> MysqlStore {
        MysqlStore::connect(&self.server.settings(&self.name))
            .await
            .unwrap()
    }
}

#[async_trait]
impl Engine for Mariadb {
    async fn open(&self) -> Arc<dyn ArchiveStore> {
        Arc::new(
            MysqlArchive::open(Arc::new(self.store().await))
                .await
                .unwrap(),
        )
    }

    async fn restamp(&self, id: i64, stamp_ms: i64) {
        use mysql_async::prelude::Queryable;
        let store = self.store().await;
        let mut conn = store.conn().await.unwrap();
        conn.exec_drop(
            "UPDATE mam_messages SET stamp_ms = ? WHERE id = ?",
            (stamp_ms, id),
        )
        .await
        .unwrap();
    }

    async fn copy_in(&self, id: i64, owner: &str, stanza: &str) -> Option<()> {
        use mysql_async::prelude::Queryable;
        self.open().await;
        let store = self.store().await;
        let mut conn = store.conn().await.unwrap();
        conn.exec_drop(
            "INSERT INTO mam_messages
                 (id, owner, stamp_ms, with_bare, with_resource, direction, stanza)
             VALUES (?, ?, 1, 'peer@x', '', 0, ?)",
            (id, owner, stanza),
        )
        .await
        .unwrap();
        Some(())
    }

    fn refused(&self) -> Option<NewMessage> {
        // Longer than the column of the other party's JID (strict mode refuses it).
        Some(msg("b@x", &format!("{}@x", "a".repeat(1100)), "bad"))
    }
}

/// A message from `with` (a bare or full JID) to `owner`, its body `body`.
pub fn msg(owner: &str, with: &str, body: &str) -> NewMessage {
    let (bare, res) = with.split_once('/').unwrap_or((with, ""));
    NewMessage {
        owner: owner.into(),
        with_bare: bare.into(),
        with_resource: res.into(),
        direction: Direction::Incoming,
        stanza: format!(
            "<message xmlns='jabber:client' from='{with}' to='{owner}' type='chat'>\
             <body>{body}</body></message>"
        ),
        text: Some(body.into()),
    }
}

pub fn page(paging: Paging, max: usize) -> PageRequest {
    PageRequest {
        filter: Filter::default(),
        paging,
        max,
    }
}

pub fn filtered(filter: Filter) -> PageRequest {
    PageRequest {
        filter,
        paging: Paging::Forward { after: None },
        max: 100,
    }
}

pub fn ids(p: &Page) -> Vec<i64> {
    p.items.iter().map(|i| i.id).collect()
}

/// Ten messages to b@x from a@x/r, bodies m0..m9; their ids.
pub async fn ten(a: &dyn ArchiveStore) -> Vec<i64> {
    let mut v = Vec::new();
    for i in 0..10 {
        let (id, _) = a
            .append(msg("b@x", "a@x/r", &format!("m{i}")))
            .await
            .unwrap();
        v.push(id);
    }
    v
}

/// The ids of `owner`'s messages whose bodies hold `text` (the `fulltext` field).
pub async fn search(a: &dyn ArchiveStore, owner: &str, text: &str) -> Vec<i64> {
    let f = Filter {
        fulltext: Some(text.into()),
        ..Default::default()
    };
    ids(&a.query(owner, filtered(f)).await.unwrap())
}

/// One test per case and engine.
macro_rules! conformance {
    ($($module:ident :: $case:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = crate::Sqlite::new();
                    crate::$module::$case(&db).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = crate::Postgres::new().await else { return };
                    crate::$module::$case(&db).await;
                }
            )*
        }
        mod on_mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = crate::Mariadb::new().await else { return };
                    crate::$module::$case(&db).await;
                }
            )*
        }
    };
}

conformance!(
    archive::ids_grow_and_stamps_never_go_back,
    archive::messages_queued_together_share_a_stamp_and_keep_their_order,
    archive::a_message_the_database_refuses_fails_alone,
    archive::pages_forward_and_backward_to_the_end,
    archive::filters_combine,
    archive::unknown_ids_are_refused,
    archive::bounds_prefs_and_removal,
    archive::retention_purges_by_age_and_size_in_batches,
    archive::purge_of_one_owner_keeps_the_others_and_the_prefs,
    archive::a_tombstone_replaces_the_stanza_and_is_found_no_more,
    archive::find_latest_looks_back_past_what_does_not_match,
    archive::the_archive_survives_a_restart_and_ids_are_never_reused,
    fulltext::words_match_whatever_their_case_and_order,
    fulltext::short_words_and_common_words_are_found,
    fulltext::query_syntax_is_taken_as_text,
    fulltext::search_is_scoped_to_the_owner_and_the_other_filters,
    fulltext::rows_copied_without_their_index_are_found,
);
