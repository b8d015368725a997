//! What only the PostgreSQL engine has to show: its connection to a server that goes away and
//! comes back, its schema versions, and that no password reaches an error. (What every engine
//! must do is in `conformance`.)

use xmppd_dbtest as support;

use support::pg::{self, Cluster};
use xmppd_storage::{PgStore, Schema};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_when_the_database_comes_back() {
    support::the_pool_recovers_when_the_database_comes_back::<Cluster>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_never_show_the_password() {
    support::connection_errors_never_show_the_password::<Cluster>().await;
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
