//! What only the PostgreSQL engine has to show: its connection to a server that goes away and
//! comes back, its schema versions, and that no password reaches an error. (What every engine
//! must do is in `conformance`.)

// Each test binary uses a part of the support.
#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use support::pg::{self, Cluster, PASSWORD};
use xmppd_storage::{CredentialStore, PgSettings, PgStore, Schema, StorageError, UserRef};

fn alice() -> UserRef {
    UserRef::new("alice", "example.org")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_when_the_database_comes_back() {
    // A cluster of its own: this test stops it.
    let Some(cluster) = tokio::task::spawn_blocking(Cluster::start).await.unwrap() else {
        return;
    };
    let db = cluster.create_database().await;
    let settings = PgSettings {
        connect_timeout: Duration::from_secs(2),
        wait_timeout: Duration::from_secs(2),
        ..cluster.settings(&db)
    };
    let store = PgStore::connect(&settings).await.unwrap();
    store.create_user(&alice(), &[]).await.unwrap();

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.pg_ctl_stop();
        cluster
    })
    .await
    .unwrap();
    // Down: calls fail (the core turns this into temporary-auth-failure and wait errors)
    // instead of hanging, and name the cause, never the password.
    for _ in 0..3 {
        match store.user_exists(&alice()).await {
            Err(StorageError::Backend(msg)) => {
                assert!(!msg.contains(PASSWORD), "{msg}");
            }
            other => panic!("expected a backend error, got {other:?}"),
        }
    }

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.pg_ctl_start().unwrap();
        cluster
    })
    .await
    .unwrap();
    // Up again: the same store serves without a restart.
    assert!(store.user_exists(&alice()).await.unwrap());
    store
        .create_user(&UserRef::new("bob", "example.org"), &[])
        .await
        .unwrap();
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_never_show_the_password() {
    let Some(cluster) = tokio::task::spawn_blocking(pg::shared).await.unwrap() else {
        return;
    };
    let db = cluster.create_database().await;
    // A wrong password in the URL.
    let wrong = PgSettings {
        url: format!(
            "postgres://xmppd:wrong-Secret-1@127.0.0.1:{}/{db}",
            cluster.port
        ),
        password: None,
        ..cluster.settings(&db)
    };
    let msg = match PgStore::connect(&wrong).await {
        Err(StorageError::Backend(msg)) => msg,
        other => panic!("{:?}", other.err()),
    };
    assert!(!msg.contains("wrong-Secret-1"), "{msg}");
    assert!(msg.contains("xmppd:***@127.0.0.1"), "{msg}");
    // A server that is not there, with the password apart.
    let nowhere = PgSettings {
        url: "postgres://xmppd@127.0.0.1:1/x".into(),
        password: Some("apart-Secret-2".into()),
        connect_timeout: Duration::from_secs(2),
        ..cluster.settings(&db)
    };
    let msg = match PgStore::connect(&nowhere).await {
        Err(StorageError::Backend(msg)) => msg,
        other => panic!("{:?}", other.err()),
    };
    assert!(!msg.contains("apart-Secret-2"), "{msg}");
    // A URL that does not parse, with the password in it.
    let garbled = PgSettings {
        url: "postgres://xmppd:garbled-Secret-3@127.0.0.1:notaport/x".into(),
        ..cluster.settings(&db)
    };
    let msg = match PgStore::connect(&garbled).await {
        Err(StorageError::Backend(msg)) => msg,
        other => panic!("{:?}", other.err()),
    };
    assert!(!msg.contains("garbled-Secret-3"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_schema_migrates_once_and_refuses_a_newer_database() {
    let Some(cluster) = tokio::task::spawn_blocking(pg::shared).await.unwrap() else {
        return;
    };
    let (db, store) = cluster.fresh_store().await;
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
    // Two stores extending at once: one applies, the other finds it done.
    let other = PgStore::connect(&cluster.settings(&db)).await.unwrap();
    let (a, b) = tokio::join!(store.extend(v1), other.extend(v1));
    let mut before = [a.unwrap(), b.unwrap()];
    before.sort();
    assert_eq!(before, [0, 1]);
    assert_eq!(store.extend(v2).await.unwrap(), 1);
    let err = other.extend(v1).await.unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
    // A failing migration applies nothing of itself.
    let broken = Schema {
        name: "broken",
        migrations: &["CREATE TABLE broken_a (x INT)", "THIS IS NOT SQL"],
    };
    assert!(store.extend(broken).await.is_err());
    let client = store.client().await.unwrap();
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE tablename = 'broken_a')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!exists);
}
