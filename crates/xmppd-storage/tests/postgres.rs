//! What only the PostgreSQL engine has to show: its connection to a server that goes away and
//! comes back, its schema versions, and that no password reaches an error. (What every engine
//! must do is in `conformance`.)

use xmppd_dbtest as support;

use support::pg::{self, Cluster, TestAuthority};
use xmppd_storage::{PgStore, Schema, StorageError};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_checks_the_server_certificate_against_the_given_authority() {
    let authority = TestAuthority::generate();
    let (ca_pem, cert_pem, key_pem) = (
        authority.ca_pem.clone(),
        authority.cert_pem.clone(),
        authority.key_pem.clone(),
    );
    let started = tokio::task::spawn_blocking(move || {
        Cluster::start_tls(&TestAuthority {
            ca_pem,
            cert_pem,
            key_pem,
        })
    });
    let Some(cluster) = started.await.unwrap() else {
        return;
    };
    let db = cluster.create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let right = dir.path().join("ca.pem");
    let wrong = dir.path().join("other-ca.pem");
    std::fs::write(&right, &authority.ca_pem).unwrap();
    std::fs::write(&wrong, TestAuthority::generate().ca_pem).unwrap();
    let with_query = |query: &str| {
        let mut settings = cluster.settings(&db);
        settings.url = format!("{}?{query}", settings.url);
        settings.connect_timeout = std::time::Duration::from_secs(5);
        settings
    };

    // The authority that signed the server's certificate: connected, inside TLS.
    let store = PgStore::connect(&with_query(&format!("ssl_ca={}", right.display())))
        .await
        .unwrap();
    let client = store.client().await.unwrap();
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "the connection is not encrypted");
    drop(client);

    // Another authority, or only the web roots: the certificate is refused, nothing sent.
    for query in [
        format!("ssl_ca={}", wrong.display()),
        "require_ssl=true".to_owned(),
    ] {
        match PgStore::connect(&with_query(&query)).await {
            Err(StorageError::Backend(msg)) => {
                assert!(msg.contains("TLS handshake"), "{query}: {msg}");
                assert!(!msg.contains(pg::PASSWORD), "{msg}");
            }
            Err(e) => panic!("{query}: {e}"),
            Ok(_) => panic!("{query}: connected with an untrusted certificate"),
        }
    }

    // Without TLS asked for, the same server is reached in plain TCP, as before.
    let plain = PgStore::connect(&cluster.settings(&db)).await.unwrap();
    let row = (plain.client().await.unwrap())
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0));

    // A missing authority file is a clear error at start-up.
    match PgStore::connect(&with_query("ssl_ca=/nonexistent/ca.pem")).await {
        Err(StorageError::Backend(msg)) => assert!(msg.contains("ssl_ca"), "{msg}"),
        other => panic!("{:?}", other.err()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_the_database_refuses_fails_alone_in_its_batch() {
    use xmppd_storage::UserRef;
    let Some(cluster) = tokio::task::spawn_blocking(pg::shared).await.unwrap() else {
        return;
    };
    let (_db, store) = cluster.fresh_store().await;
    // PostgreSQL's text refuses a NUL character: the batch holding that push fails, and the
    // pushes queued with it are written again one by one.
    let refused = (UserRef::new("alice", "example.org"), "<m>\0</m>".to_owned());
    let e = support::a_refused_push_fails_alone(std::sync::Arc::new(store), refused).await;
    assert!(matches!(e, StorageError::Backend(_)), "{e:?}");
}
