use rusqlite::OptionalExtension;

use super::*;

#[tokio::test]
async fn rooms_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let r = room("persist", &[("o@x", "owner")]);
    {
        let store = SqliteStore::open(&path).unwrap();
        store.save_room(&r).await.unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.rooms(&r.domain).await.unwrap(), vec![r]);
}

/// The room tables and their index as the shared migrations made them (entries 2 and 3) before
/// the rooms had a schema of their own.
const ROOM_TABLES_IN_THE_SHARED_SCHEMA: &str = r"
CREATE TABLE muc_rooms (
    domain TEXT NOT NULL,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    subject TEXT NOT NULL,
    PRIMARY KEY (domain, name)
) WITHOUT ROWID;
CREATE TABLE muc_affiliations (
    domain TEXT NOT NULL,
    name TEXT NOT NULL,
    jid TEXT NOT NULL,
    affiliation TEXT NOT NULL,
    nick TEXT,
    reason TEXT,
    PRIMARY KEY (domain, name, jid),
    FOREIGN KEY (domain, name) REFERENCES muc_rooms (domain, name) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX muc_affiliations_by_jid ON muc_affiliations (jid);
";

/// The version the `muc` schema reaches once applied (every migration of it).
fn latest_muc_version() -> i64 {
    ROOMS_SCHEMA.migrations.len() as i64
}

async fn muc_schema_version(store: &SqliteStore) -> Option<i64> {
    store
        .read(|c| {
            Ok(c.query_row(
                "SELECT version FROM xmppd_schemas WHERE name = 'muc'",
                [],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
        .unwrap()
}

async fn has_table(store: &SqliteStore, name: &'static str) -> bool {
    store
        .read(move |c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = ?1",
                [name],
                |r| r.get::<_, i64>(0),
            )? > 0)
        })
        .await
        .unwrap()
}

/// A database whose shared schema still held the room tables (at the current `user_version`,
/// no `xmppd_schemas`) opens with its rooms, affiliations and account removal intact.
#[tokio::test]
async fn a_database_with_rooms_in_the_shared_schema_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xmppd.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        let current = MIGRATIONS.concat();
        let version = MIGRATIONS.len();
        c.execute_batch(&format!(
            "{current}{ROOM_TABLES_IN_THE_SHARED_SCHEMA}
             PRAGMA user_version = {version};
             INSERT INTO users (domain, user, created_ms) VALUES ('example.org', 'alice', 0);
             INSERT INTO muc_rooms VALUES ('conference.example.org', 'tea', '<x/>', 'hi');
             INSERT INTO muc_affiliations VALUES
                 ('conference.example.org', 'tea', 'alice@example.org', 'owner', NULL, NULL),
                 ('conference.example.org', 'tea', 'bob@example.org', 'member', 'bob', NULL);"
        ))
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let rooms = store.rooms("conference.example.org").await.unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].subject, "hi");
    assert_eq!(rooms[0].affiliations.len(), 2);
    assert_eq!(muc_schema_version(&store).await, Some(latest_muc_version()));
    let removal = store.remove_account(&alice(), None).await.unwrap();
    assert_eq!(
        removal.rooms,
        [("conference.example.org".to_owned(), "tea".to_owned())]
    );
    drop(store);
    // Reopened: nothing left to migrate, the room is still there.
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.extend(ROOMS_SCHEMA).await.unwrap(),
        ROOMS_SCHEMA.migrations.len()
    );
    let rooms = store.rooms("conference.example.org").await.unwrap();
    assert_eq!(rooms[0].affiliations.len(), 1);
}

/// A new database has no room tables until rooms are used; removing an account does not need
/// them.
#[tokio::test]
async fn room_tables_come_with_the_first_room_query() {
    let store = SqliteStore::open_in_memory().unwrap();
    assert!(!has_table(&store, "muc_rooms").await);
    store.create_user(&alice(), &[]).await.unwrap();
    let removal = store.remove_account(&alice(), None).await.unwrap();
    assert!(removal.rooms.is_empty());
    assert!(!has_table(&store, "muc_affiliations").await);

    assert!(store
        .rooms("conference.example.org")
        .await
        .unwrap()
        .is_empty());
    assert!(has_table(&store, "muc_affiliations").await);
    assert!(has_table(&store, "muc_affiliations_by_jid").await);
    assert_eq!(muc_schema_version(&store).await, Some(latest_muc_version()));
}
