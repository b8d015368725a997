//! What only the MariaDB/MySQL engine has to show: its connection to a server that goes away
//! and comes back, its schema versions under the named lock, TLS to the server, and that no
//! password reaches an error. (What every engine must do is in `conformance`.)

use xmppd_dbtest as support;

use mysql_async::prelude::Queryable;
use support::mariadb::{self, Server, PASSWORD};
use xmppd_storage::{CredentialStore, MysqlSettings, MysqlStore, Schema, UserRef};

fn alice() -> UserRef {
    UserRef::new("alice", "example.org")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_when_the_database_comes_back() {
    support::the_pool_recovers_when_the_database_comes_back::<Server>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_never_show_the_password() {
    let Some(wrong) = support::connection_errors_never_show_the_password::<Server>().await else {
        return;
    };
    assert!(wrong.contains("Access denied"), "{wrong}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_schema_migrates_once_and_refuses_a_newer_database() {
    let Some(server) = tokio::task::spawn_blocking(mariadb::shared).await.unwrap() else {
        return;
    };
    let (db, store) = server.fresh_store().await;
    const V1: &str = "CREATE TABLE ext_notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)";
    const V2: &str = "ALTER TABLE ext_notes ADD COLUMN stamp BIGINT NOT NULL DEFAULT 0";
    let v1 = Schema {
        name: "ext",
        migrations: &[V1],
    };
    let v2 = Schema {
        name: "ext",
        migrations: &[V1, V2],
    };
    // Two stores extending at once: one applies, the other waits for the lock and finds it
    // done.
    let other = MysqlStore::connect(&server.settings(&db)).await.unwrap();
    let (a, b) = tokio::join!(store.extend(v1), other.extend(v1));
    let mut before = [a.unwrap(), b.unwrap()];
    before.sort();
    assert_eq!(before, [0, 1]);
    assert_eq!(store.extend(v2).await.unwrap(), 1);
    let err = other.extend(v1).await.unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
    // DDL commits at once in MariaDB: a failing migration leaves the ones before it applied
    // and recorded, and the next start goes on from there.
    let broken = Schema {
        name: "broken",
        migrations: &["CREATE TABLE broken_a (x INT)", "THIS IS NOT SQL"],
    };
    let err = store.extend(broken).await.unwrap_err().to_string();
    assert!(err.contains("to version 2"), "{err}");
    let fixed = Schema {
        name: "broken",
        migrations: &[
            "CREATE TABLE broken_a (x INT)",
            "CREATE TABLE broken_b (x INT)",
        ],
    };
    assert_eq!(store.extend(fixed).await.unwrap(), 1);
    // The lock was given back each time: a third extension does not wait.
    let mut conn = store.conn().await.unwrap();
    let free: Option<i64> = conn
        .query_first("SELECT IS_FREE_LOCK(CONCAT('xmppd:migrations:', DATABASE()))")
        .await
        .unwrap();
    assert_eq!(free, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_are_utf8mb4_with_the_binary_no_pad_collation() {
    let Some(server) = tokio::task::spawn_blocking(mariadb::shared).await.unwrap() else {
        return;
    };
    let (db, store) = server.fresh_store().await;
    let mut conn = store.conn().await.unwrap();
    let columns: Vec<(String, String, String)> = conn
        .exec(
            "SELECT table_name, column_name, collation_name FROM information_schema.columns
             WHERE table_schema = ? AND collation_name IS NOT NULL",
            (&db,),
        )
        .await
        .unwrap();
    assert!(columns.len() > 20, "{columns:?}");
    for (table, column, collation) in columns {
        assert_eq!(collation, "utf8mb4_nopad_bin", "{table}.{column}");
    }
    // Text outside the Basic Multilingual Plane is kept (utf8mb4, not MariaDB's 3-byte utf8).
    store
        .create_user(&UserRef::new("🦀", "example.org"), &[])
        .await
        .unwrap();
    assert_eq!(store.list_users("example.org").await.unwrap(), ["🦀"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_is_taken_when_the_url_asks_for_it() {
    let Some(server) = tokio::task::spawn_blocking(Server::start_with_tls)
        .await
        .unwrap()
    else {
        return;
    };
    let db = server.create_database().await;
    let ca = server.ca.clone().unwrap();
    // A user the server lets in over TLS only.
    server
        .admin_sql(&format!(
            "CREATE USER 'tls'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}' REQUIRE SSL;
             GRANT ALL PRIVILEGES ON {db}.* TO 'tls'@'127.0.0.1';"
        ))
        .unwrap();
    let with = |query: &str| MysqlSettings {
        url: format!("mysql://tls@127.0.0.1:{}/{db}{query}", server.port),
        ..server.settings(&db)
    };
    let plain = MysqlStore::connect(&with("")).await.err().expect("refused");
    assert!(plain.to_string().contains("Access denied"), "{plain}");
    // The server's certificate is checked: without its authority, no connection.
    let unknown = (MysqlStore::connect(&with("?require_ssl=true")).await)
        .err()
        .expect("an unknown authority");
    assert!(!unknown.to_string().contains(PASSWORD), "{unknown}");
    let store = MysqlStore::connect(&with(&format!("?require_ssl=true&ssl_ca={}", ca.display())))
        .await
        .unwrap();
    store.create_user(&alice(), &[]).await.unwrap();
    let mut conn = store.conn().await.unwrap();
    let cipher: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_version'")
        .await
        .unwrap();
    let version = cipher.map(|(_, v)| v).unwrap_or_default();
    assert!(version.starts_with("TLS"), "{version:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_lock_never_outlives_its_holder_and_sessions_are_kept() {
    use xmppd_storage::mysql::{named_lock, named_unlock};
    let Some(server) = tokio::task::spawn_blocking(mariadb::shared).await.unwrap() else {
        return;
    };
    let (_db, store) = server.fresh_store().await;
    // Released by its holder: the connection goes back to the pool with its session, so a
    // user variable set on it is still there for the next checkout.
    let mut conn = store.conn().await.unwrap();
    let id: Option<u64> = conn.query_first("SELECT CONNECTION_ID()").await.unwrap();
    conn.query_drop("SET @kept = 7").await.unwrap();
    named_lock(&mut conn, "test:", "k").await.unwrap();
    named_unlock(&mut conn, "test:", "k").await.unwrap();
    drop(conn);
    assert!(lock_is_free(&store).await);
    let kept = async {
        loop {
            let mut conn = store.conn().await.unwrap();
            let (again, kept): (Option<u64>, Option<i64>) = conn
                .query_first("SELECT CONNECTION_ID(), @kept")
                .await
                .unwrap()
                .unwrap();
            if again == id {
                return kept;
            }
        }
    };
    let kept = tokio::time::timeout(std::time::Duration::from_secs(10), kept)
        .await
        .expect("the pool gives the connection back");
    assert_eq!(kept, Some(7), "the session was kept");

    // A holder dropped before it released (a cancelled caller): the connection is reset on
    // its way back to the pool, and the lock with it.
    let mut conn = store.conn().await.unwrap();
    named_lock(&mut conn, "test:", "k").await.unwrap();
    assert!(!lock_is_free(&store).await);
    drop(conn);
    let released = async {
        while !lock_is_free(&store).await {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), released)
        .await
        .expect("the lock of a dropped holder is released");
}

/// Whether the named lock `test:k` of the store's database is free.
async fn lock_is_free(store: &MysqlStore) -> bool {
    let mut conn = store.conn().await.unwrap();
    let free: Option<i64> = conn
        .query_first(
            "SELECT IS_FREE_LOCK(CONCAT('xmppd:', 'test:', SHA1(CONCAT(DATABASE(), '/k'))))",
        )
        .await
        .unwrap();
    free == Some(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_the_database_refuses_fails_alone_in_its_batch() {
    let Some(server) = tokio::task::spawn_blocking(mariadb::shared).await.unwrap() else {
        return;
    };
    let (_db, store) = server.fresh_store().await;
    // A user name longer than the column: strict mode refuses the row; the pushes made at the
    // same time are stored.
    let long = UserRef::new("x".repeat(300), "example.org");
    let refused = (long, "<m i='20'/>".to_owned());
    let e = support::a_refused_push_fails_alone(std::sync::Arc::new(store), refused).await;
    assert!(e.to_string().contains("too long"), "{e}");
}
