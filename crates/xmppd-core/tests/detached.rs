//! Sessions that outlive their connection (the seam stream management resumption uses): a
//! parked session stays bound and keeps receiving; resumed, it writes what was not
//! acknowledged and then what came meanwhile, in order; not resumed, it ends like any session,
//! its messages going to offline storage.

use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use xmppd_core::detached::ResumeId;
use xmppd_core::testing::TestClient;
use xmppd_core::{BareJid, Class, CoreConfig, Outbound, Server};
use xmppd_storage::{CredentialStore, OfflineStore, SqliteStore, UserRef};

async fn server() -> (Arc<Server>, Arc<SqliteStore>) {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    for u in ["alice", "bob"] {
        store
            .create_user(&UserRef::new(u, "localhost"), &[])
            .await
            .unwrap();
    }
    let server = Server::builder(CoreConfig::default(), store.clone())
        .modules(xmppd_im::modules())
        .build();
    (server, store)
}

fn chat(to: &str, body: &str) -> String {
    format!("<message xmlns='jabber:client' type='chat' to='{to}'><body>{body}</body></message>")
}

fn bodies(els: &[Element]) -> Vec<String> {
    els.iter()
        .filter_map(|e| e.get_child("body", "jabber:client").map(|b| b.text()))
        .collect()
}

fn bob() -> BareJid {
    BareJid::new("bob@localhost").unwrap()
}

/// Waits (bounded) until `done` holds; the parked session ends on a task of its own.
async fn until(mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..1000 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 10 s");
}

#[tokio::test]
async fn resumed_session_gets_the_unacknowledged_then_what_came_meanwhile() {
    let (server, store) = server().await;
    let mut alice = TestClient::login(&server, "alice", "a").await;
    let mut bob_c = TestClient::login(&server, "bob", "b").await;
    alice.go_online(&server).await;
    bob_c.go_online(&server).await;

    alice.send(&server, &chat("bob@localhost/b", "one")).await;
    // The writer took "one" and sent it, but the peer never acknowledged it.
    let (sent, class) = bob_c.rx.try_recv().expect("queued");
    assert!(matches!(sent, Outbound::Stanza(_)));
    let TestClient { session, rx } = bob_c;
    let id = server.detach(session, rx, vec![(sent, class)], Duration::from_secs(3600));
    assert_eq!(server.detached_count(), 1);

    // Still bound and available: messages to the bare JID and the full JID queue for it.
    alice.send(&server, &chat("bob@localhost/b", "two")).await;
    alice.send(&server, &chat("bob@localhost", "three")).await;
    assert!(alice.drain().is_empty(), "nothing bounced while parked");
    assert_eq!(
        store
            .offline_count(&UserRef::new("bob", "localhost"))
            .await
            .unwrap(),
        0
    );

    // Another account cannot take it, nor can an unknown id.
    let alice_bare = BareJid::new("alice@localhost").unwrap();
    assert!(server.resume(&id, &alice_bare).is_none());
    assert!(server.resume(&ResumeId::from("0"), &bob()).is_none());

    let (session, rx) = server.resume(&id, &bob()).expect("resumable");
    assert_eq!(server.detached_count(), 0);
    assert_eq!(session.jid.as_str(), "bob@localhost/b");
    let mut bob_c = TestClient { session, rx };
    assert_eq!(bodies(&bob_c.drain()), ["one", "two", "three"]);
    // Resumed once only.
    assert!(server.resume(&id, &bob()).is_none());

    // The resumed session is the same one: it goes on receiving and ends normally.
    alice.send(&server, &chat("bob@localhost/b", "four")).await;
    assert_eq!(bodies(&bob_c.drain()), ["four"]);
    bob_c.logout(&server).await;
}

#[tokio::test]
async fn unresumed_session_ends_and_its_messages_go_offline() {
    let (server, store) = server().await;
    let mut alice = TestClient::login(&server, "alice", "a").await;
    let mut bob_c = TestClient::login(&server, "bob", "b").await;
    alice.go_online(&server).await;
    bob_c.go_online(&server).await;
    alice
        .send(&server, &chat("bob@localhost/b", "unacked"))
        .await;
    let taken = bob_c.rx.try_recv().expect("queued");

    let TestClient { session, rx } = bob_c;
    let keep = Duration::from_millis(200);
    let id = server.detach(session, rx, vec![taken], keep);
    alice
        .send(&server, &chat("bob@localhost", "meanwhile"))
        .await;

    let user = UserRef::new("bob", "localhost");
    until(async || server.detached_count() == 0).await;
    until(async || server.router().resources(&bob()).is_empty()).await;
    assert!(
        server.resume(&id, &bob()).is_none(),
        "ended sessions cannot resume"
    );
    until(async || store.offline_count(&user).await.unwrap() == 2).await;
    let stored = store.offline_messages(&user).await.unwrap();
    let texts: Vec<String> = (stored.iter()).map(|m| m.xml.clone()).collect();
    assert!(
        texts[0].contains("unacked") && texts[1].contains("meanwhile"),
        "{texts:?}"
    );
}

#[tokio::test]
async fn a_new_bind_of_the_resource_ends_the_parked_session_at_once() {
    let (server, _store) = server().await;
    let mut bob_c = TestClient::login(&server, "bob", "b").await;
    bob_c.go_online(&server).await;
    let TestClient { session, rx } = bob_c;
    let id = server.detach(session, rx, Vec::new(), Duration::from_secs(3600));

    // The client reconnected without resuming and bound the same resource.
    let mut fresh = TestClient::login(&server, "bob", "b").await;
    until(async || server.detached_count() == 0).await;
    assert!(server.resume(&id, &bob()).is_none());
    // The new session is untouched by the old one's end.
    let resources = server.router().resources(&bob());
    assert_eq!(resources.len(), 1);
    assert_eq!(resources[0].session, fresh.session.id);
    assert!(fresh.drain().iter().all(|e| e.name() != "conflict"));
}

#[tokio::test]
async fn shutdown_ends_parked_sessions() {
    let (server, store) = server().await;
    let mut alice = TestClient::login(&server, "alice", "a").await;
    let mut bob_c = TestClient::login(&server, "bob", "b").await;
    alice.go_online(&server).await;
    bob_c.go_online(&server).await;
    let TestClient { session, rx } = bob_c;
    server.detach(
        session,
        rx,
        Vec::<(Outbound, Class)>::new(),
        Duration::from_secs(3600),
    );
    alice.send(&server, &chat("bob@localhost/b", "late")).await;

    server.end_detached().await;
    assert_eq!(server.detached_count(), 0);
    assert!(server.router().resources(&bob()).is_empty());
    let user = UserRef::new("bob", "localhost");
    assert_eq!(store.offline_count(&user).await.unwrap(), 1);
}
