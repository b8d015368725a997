//! `xmppd migrate`'s copy (`xmppd_storage::migrate`) from a SQLite file to a real PostgreSQL
//! and a real MariaDB: everything the core stores comes back through the storage traits on the
//! target, a service's tables are copied by name with their values converted, ids continue
//! past the copied ones, an interrupted copy resumes to the same result, and a database that
//! holds accounts is refused unless forced.

use std::path::Path;
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use xmppd_dbtest as support;
use xmppd_storage::migrate::{Options, Outcome, Report};
use xmppd_storage::{
    CredentialStore, MysqlStore, OfflineStore, PgStore, RoomAffiliation, RoomStore, RosterItem,
    RosterStore, Schema, SessionRecord, SessionStore, SqliteStore, StoredRoom, StoredScram,
    Subscription, UserDataStore, UserRef,
};

/// A service's table on each engine, with the same name and columns (`user` as the servers
/// name it), so the copy finds it without being told.
const NOTES_SQLITE: Schema = Schema {
    name: "notes",
    migrations: &[r"
CREATE TABLE notes_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    flag INTEGER NOT NULL,
    data BLOB NOT NULL,
    comment TEXT
);
CREATE VIRTUAL TABLE notes_text USING fts5 (body, content = '');
"],
};
const NOTES_PG: Schema = Schema {
    name: "notes",
    migrations: &[r"
CREATE TABLE notes_items (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username TEXT NOT NULL,
    flag BOOLEAN NOT NULL,
    data BYTEA NOT NULL,
    comment TEXT
);
"],
};
const NOTES_MARIADB: Schema = Schema {
    name: "notes",
    migrations: &[r"
CREATE TABLE notes_items (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username VARCHAR(255) NOT NULL,
    flag BOOLEAN NOT NULL,
    data LONGBLOB NOT NULL,
    comment TEXT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
"],
};
/// A service that keeps its store in SQLite with a database server: its table stays there.
const KEPT_SQLITE: Schema = Schema {
    name: "kept",
    migrations: &["CREATE TABLE kept_rows (k TEXT PRIMARY KEY, v TEXT NOT NULL);"],
};

fn alice() -> UserRef {
    UserRef::new("alice", "example.org")
}

fn scram(hash: &str, seed: u8) -> StoredScram {
    StoredScram {
        hash: hash.into(),
        salt: vec![seed, 0, 255, seed],
        iterations: 4096,
        stored_key: vec![seed; 32],
        server_key: vec![seed.wrapping_add(1); 32],
    }
}

fn item(jid: &str, groups: &[&str]) -> RosterItem {
    RosterItem {
        jid: jid.into(),
        name: Some(format!("{jid} by name")),
        subscription: Subscription::Both,
        ask: true,
        approved: false,
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn room() -> StoredRoom {
    StoredRoom {
        domain: "conference.example.org".into(),
        name: "lobby".into(),
        config: "<x>persistent</x>".into(),
        subject: "hello".into(),
        affiliations: vec![
            RoomAffiliation {
                jid: "alice@example.org".into(),
                affiliation: "owner".into(),
                nick: Some("al".into()),
                reason: None,
            },
            RoomAffiliation {
                jid: "bob@example.org".into(),
                affiliation: "member".into(),
                nick: None,
                reason: Some("friend".into()),
            },
        ],
    }
}

/// A SQLite file with something in every core table, a service's table and a table that stays.
/// Users `u0`..`u{extra}` make more rows than one batch.
async fn source(dir: &Path, extra: usize) -> std::path::PathBuf {
    let path = dir.join("xmppd.db");
    let store = SqliteStore::open(&path).unwrap();
    let a = alice();
    store
        .create_user(&a, &[scram("SHA-1", 1), scram("SHA-256", 2)])
        .await
        .unwrap();
    for i in 0..extra {
        let u = UserRef::new(format!("u{i}"), "example.org");
        store.create_user(&u, &[scram("SHA-256", 3)]).await.unwrap();
    }
    store
        .set_roster_item(&a, &item("bob@example.org", &["Friends", "Work", ""]))
        .await
        .unwrap();
    store
        .set_roster_item(&a, &item("carol@example.org", &[]))
        .await
        .unwrap();
    store
        .add_pending_subscription(&a, "dave@example.org", "<presence type='subscribe'/>")
        .await
        .unwrap();
    for i in 0..4 {
        let xml = format!("<message><body>m{i}</body></message>");
        assert!(store.push_offline(&a, 1000 + i, &xml, 100).await.unwrap());
    }
    // The last id is gone: a new message on the target must not take it again.
    let ids: Vec<i64> = (store.offline_messages(&a).await.unwrap().iter())
        .map(|m| m.id)
        .collect();
    store.remove_offline(&a, ids[0]).await.unwrap();
    store
        .write(|c| {
            c.execute(
                "DELETE FROM offline WHERE id = (SELECT MAX(id) FROM offline)",
                [],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    store.set_data(&a, "last", "1234 away").await.unwrap();
    store
        .session_opened(&SessionRecord {
            jid: "alice@example.org/phone".into(),
            peer: "192.0.2.1".into(),
            node: "n1".into(),
            started_ms: 5,
            user_agent: "x y z".into(),
        })
        .await
        .unwrap();
    store.save_room(&room()).await.unwrap();
    store
        .remove_account(&UserRef::new("gone", "example.org"), None)
        .await
        .ok();
    store.extend(NOTES_SQLITE).await.unwrap();
    store.extend(KEPT_SQLITE).await.unwrap();
    store
        .write(|c| {
            for i in 0..5 {
                c.execute(
                    "INSERT INTO notes_items (user, flag, data, comment) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![
                        format!("u{i}"),
                        i % 2,
                        vec![i as u8, 0, 0xff],
                        (i == 3).then_some("three")
                    ],
                )?;
            }
            c.execute("DELETE FROM notes_items WHERE id = 5", [])?;
            c.execute("INSERT INTO notes_text (rowid, body) VALUES (1, 'hay')", [])?;
            c.execute("INSERT INTO kept_rows (k, v) VALUES ('a', 'b')", [])?;
            Ok(())
        })
        .await
        .unwrap();
    path
}

enum Target {
    Pg(Arc<PgStore>),
    My(Arc<MysqlStore>),
}

impl Target {
    async fn pg() -> Option<Target> {
        let cluster = tokio::task::spawn_blocking(support::pg::shared)
            .await
            .unwrap()?;
        let (_, store) = cluster.fresh_store().await;
        store.extend(NOTES_PG).await.unwrap();
        Some(Target::Pg(Arc::new(store)))
    }

    async fn mariadb() -> Option<Target> {
        let server = tokio::task::spawn_blocking(support::mariadb::shared)
            .await
            .unwrap()?;
        let (_, store) = server.fresh_store().await;
        store.extend(NOTES_MARIADB).await.unwrap();
        Some(Target::My(Arc::new(store)))
    }

    async fn migrate(&self, path: &Path, options: &Options) -> xmppd_storage::Result<Report> {
        let mut lines = Vec::new();
        let mut progress = |l: &str| lines.push(l.to_owned());
        match self {
            Target::Pg(s) => {
                xmppd_storage::migrate::to_postgres(path, s, options, &mut progress).await
            }
            Target::My(s) => {
                xmppd_storage::migrate::to_mysql(path, s, options, &mut progress).await
            }
        }
    }

    fn store(&self) -> Arc<dyn support::FullStore> {
        match self {
            Target::Pg(s) => s.clone(),
            Target::My(s) => s.clone(),
        }
    }

    /// `notes_items` as `(id, user, flag, data, comment)`, by id.
    async fn notes(&self) -> Vec<(i64, String, bool, Vec<u8>, Option<String>)> {
        match self {
            Target::Pg(s) => {
                let c = s.client().await.unwrap();
                let rows = c
                    .query(
                        "SELECT id, username, flag, data, comment FROM notes_items ORDER BY id",
                        &[],
                    )
                    .await
                    .unwrap();
                rows.iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                    .collect()
            }
            Target::My(s) => {
                let mut c = s.conn().await.unwrap();
                c.query("SELECT id, username, flag, data, comment FROM notes_items ORDER BY id")
                    .await
                    .unwrap()
            }
        }
    }

    /// Adds a note without an id: the one the target's sequence gives.
    async fn new_note_id(&self) -> i64 {
        match self {
            Target::Pg(s) => {
                let c = s.client().await.unwrap();
                c.query_one(
                    "INSERT INTO notes_items (username, flag, data) VALUES ('n', true, '')
                     RETURNING id",
                    &[],
                )
                .await
                .unwrap()
                .get(0)
            }
            Target::My(s) => {
                let mut c = s.conn().await.unwrap();
                c.query_drop("INSERT INTO notes_items (username, flag, data) VALUES ('n', 1, '')")
                    .await
                    .unwrap();
                c.last_insert_id().unwrap() as i64
            }
        }
    }
}

async fn check_everything_arrives(target: Option<Target>) {
    let Some(target) = target else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = source(dir.path(), 0).await;
    let report = target.migrate(&path, &Options::default()).await.unwrap();
    assert!(report.mismatches().is_empty(), "{report:?}");
    let by_name = |n: &str| report.tables.iter().find(|t| t.table == n).unwrap().clone();
    assert_eq!(by_name("kept_rows").outcome, Outcome::KeptInSqlite);
    assert_eq!(by_name("notes_items").outcome, Outcome::Copied);
    assert_eq!(
        (
            by_name("notes_items").source_rows,
            by_name("notes_items").target_rows
        ),
        (4, 4)
    );
    let groups = by_name("roster_groups");
    assert_eq!(
        groups.outcome,
        Outcome::Folded {
            into: "roster".into()
        }
    );
    assert_eq!((groups.source_rows, groups.target_rows), (3, 3));
    assert!(!report
        .tables
        .iter()
        .any(|t| t.table.starts_with("notes_text")
            || t.table == "xmppd_schemas"
            || t.table.starts_with("sqlite_")));

    let store = target.store();
    let a = alice();
    assert_eq!(
        store.credentials(&a, "SHA-256").await.unwrap(),
        Some(scram("SHA-256", 2))
    );
    assert_eq!(
        store.credentials(&a, "SHA-1").await.unwrap(),
        Some(scram("SHA-1", 1))
    );
    let (version, items) = store.roster(&a).await.unwrap();
    assert!(version >= 2, "{version}");
    assert_eq!(
        items,
        vec![
            item("bob@example.org", &["Friends", "Work", ""]),
            item("carol@example.org", &[])
        ]
    );
    assert_eq!(store.roster_len(&a).await.unwrap(), 2);
    assert_eq!(
        store.pending_subscriptions(&a).await.unwrap(),
        vec![(
            "dave@example.org".into(),
            "<presence type='subscribe'/>".into()
        )]
    );
    let offline = store.offline_messages(&a).await.unwrap();
    let bodies: Vec<&str> = offline.iter().map(|m| m.xml.as_str()).collect();
    assert_eq!(
        bodies,
        [
            "<message><body>m1</body></message>",
            "<message><body>m2</body></message>"
        ]
    );
    assert_eq!(offline[0].stamp_ms, 1001);
    // The highest id SQLite gave (4, since removed) is not handed out again.
    assert!(store.push_offline(&a, 1, "<message/>", 100).await.unwrap());
    let newest = store.offline_messages(&a).await.unwrap().last().unwrap().id;
    assert!(newest > 4, "{newest}");
    assert_eq!(
        store.get_data(&a, "last").await.unwrap().as_deref(),
        Some("1234 away")
    );
    assert_eq!(store.sessions().await.unwrap().len(), 1);
    assert_eq!(
        store.room("conference.example.org", "lobby").await.unwrap(),
        Some(room())
    );
    let notes = target.notes().await;
    assert_eq!(notes.len(), 4);
    assert_eq!(notes[0], (1, "u0".into(), false, vec![0, 0, 0xff], None));
    assert_eq!(
        notes[3],
        (4, "u3".into(), true, vec![3, 0, 0xff], Some("three".into()))
    );
    // SQLite's AUTOINCREMENT gave 5 to a row since removed: the target goes on after it.
    assert!(target.new_note_id().await > 5);
}

async fn check_an_interrupted_copy_resumes(target: Option<Target>) {
    let Some(target) = target else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = source(dir.path(), 30).await;
    let interrupted = Options {
        batch_rows: 7,
        stop_after_batches: Some(3),
        ..Options::default()
    };
    let err = target.migrate(&path, &interrupted).await.unwrap_err();
    assert!(err.to_string().contains("stopped after 3 batches"), "{err}");
    // Some users are there, not all.
    let listed = target
        .store()
        .list_users("example.org")
        .await
        .unwrap()
        .len();
    assert!(listed > 0 && listed < 31, "{listed}");
    // Without --resume the half-done target is refused.
    let again = target
        .migrate(&path, &Options::default())
        .await
        .unwrap_err();
    assert!(again.to_string().contains("--resume"), "{again}");
    // Interrupted once more in the middle of a table, then to the end.
    let resume = Options {
        resume: true,
        batch_rows: 7,
        ..Options::default()
    };
    let err = (target.migrate(
        &path,
        &Options {
            stop_after_batches: Some(2),
            ..resume.clone()
        },
    ))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("stopped"), "{err}");
    let report = target.migrate(&path, &resume).await.unwrap();
    assert!(report.mismatches().is_empty(), "{report:?}");
    let users = report.tables.iter().find(|t| t.table == "users").unwrap();
    assert_eq!((users.source_rows, users.target_rows), (31, 31));
    assert_eq!(
        target
            .store()
            .list_users("example.org")
            .await
            .unwrap()
            .len(),
        31
    );
    assert_eq!(target.notes().await.len(), 4);
    // A finished migration run again with --resume only counts.
    let report = target.migrate(&path, &resume).await.unwrap();
    assert!(report.mismatches().is_empty(), "{report:?}");
}

async fn check_a_database_with_accounts_is_refused(target: Option<Target>) {
    let Some(target) = target else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = source(dir.path(), 0).await;
    let store = target.store();
    let other = UserRef::new("zed", "example.org");
    store
        .create_user(&other, &[scram("SHA-256", 9)])
        .await
        .unwrap();
    let err = target
        .migrate(&path, &Options::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("already holds 1 accounts"),
        "{err}"
    );
    assert!(
        !store.user_exists(&alice()).await.unwrap(),
        "nothing copied"
    );
    let forced = Options {
        force: true,
        ..Options::default()
    };
    let report = target.migrate(&path, &forced).await.unwrap();
    assert!(report.mismatches().is_empty(), "{report:?}");
    let users = report.tables.iter().find(|t| t.table == "users").unwrap();
    assert_eq!((users.source_rows, users.target_rows), (1, 2));
    assert!(store.user_exists(&alice()).await.unwrap());
    assert!(store.user_exists(&other).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_arrives_on_postgres() {
    check_everything_arrives(Target::pg().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_arrives_on_mariadb() {
    check_everything_arrives(Target::mariadb().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_copy_resumes_on_postgres() {
    check_an_interrupted_copy_resumes(Target::pg().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_copy_resumes_on_mariadb() {
    check_an_interrupted_copy_resumes(Target::mariadb().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_accounts_is_refused_unless_forced_on_postgres() {
    check_a_database_with_accounts_is_refused(Target::pg().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_accounts_is_refused_unless_forced_on_mariadb() {
    check_a_database_with_accounts_is_refused(Target::mariadb().await).await;
}
