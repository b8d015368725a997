//! Sessions that outlive their connection (the seam stream management resumption uses): a
//! parked session stays bound and keeps receiving; resumed, it writes what was not
//! acknowledged and then what came meanwhile, in order; not resumed, it ends like any session,
//! its messages going to offline storage.

use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use xmppd_core::detached::{NotResumed, ResumeId};
use xmppd_core::testing::TestClient;
use xmppd_core::{BareJid, Class, CoreConfig, FullJid, Outbound, Server};
use xmppd_storage::{CredentialStore, OfflineStore, SqliteStore, UserRef};

const WAIT: Duration = Duration::from_secs(10);

/// Parks the session of `c` as its connection broke, `unacked` going back in front.
fn park(
    server: &Arc<Server>,
    c: TestClient,
    unacked: Vec<(Outbound, Class)>,
    keep: Duration,
) -> ResumeId {
    let TestClient { session, rx } = c;
    let (id, _takeover) = server.resumable(&session);
    server.detach(session, rx, unacked, keep, id.clone(), Arc::new(7u32));
    id
}

async fn server() -> (Arc<Server>, Arc<SqliteStore>) {
    let store = xmppd_core::testing::store_with_users(&["alice", "bob"]).await;
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
    let id = park(
        &server,
        bob_c,
        vec![(sent, class)],
        Duration::from_secs(3600),
    );
    assert_eq!(server.detached_count(), 1);
    let b = FullJid::new("bob@localhost/b").unwrap();
    assert!(server.is_detached(&b));
    assert!(!server.is_detached(&FullJid::new("alice@localhost/a").unwrap()));

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
    assert!(server.resume(&id, &alice_bare, WAIT).await.is_err());
    assert!(server
        .resume(&ResumeId::from("0"), &bob(), WAIT)
        .await
        .is_err());

    let Ok(resumed) = server.resume(&id, &bob(), WAIT).await else {
        panic!("resumable")
    };
    assert_eq!(resumed.state.downcast_ref::<u32>(), Some(&7));
    let (session, rx) = (resumed.session, resumed.rx);
    assert_eq!(server.detached_count(), 0);
    assert!(!server.is_detached(&b));
    assert_eq!(session.jid.as_str(), "bob@localhost/b");
    let mut bob_c = TestClient { session, rx };
    assert_eq!(bodies(&bob_c.drain()), ["one", "two", "three"]);
    // Resumed, it is connected again under the same id: another resume would take it over
    // from its connection, which is not parking it here.
    let short = Duration::from_millis(50);
    assert!(server.resume(&id, &bob(), short).await.is_err());

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

    let id = park(&server, bob_c, vec![taken], Duration::from_millis(200));
    alice
        .send(&server, &chat("bob@localhost", "meanwhile"))
        .await;

    let user = UserRef::new("bob", "localhost");
    until(async || server.detached_count() == 0).await;
    until(async || server.router().resources(&bob()).is_empty()).await;
    // An ended session cannot resume; its driver's state is still known for a while.
    match server.resume(&id, &bob(), WAIT).await {
        Err(NotResumed::Ended(state)) => assert_eq!(state.downcast_ref::<u32>(), Some(&7)),
        _ => panic!("ended sessions cannot resume"),
    }
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
    let id = park(&server, bob_c, Vec::new(), Duration::from_secs(3600));

    // The client reconnected without resuming and bound the same resource.
    let mut fresh = TestClient::login(&server, "bob", "b").await;
    until(async || server.detached_count() == 0).await;
    assert!(server.resume(&id, &bob(), WAIT).await.is_err());
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
    park(&server, bob_c, Vec::new(), Duration::from_secs(3600));
    alice.send(&server, &chat("bob@localhost/b", "late")).await;

    server.end_detached().await;
    assert_eq!(server.detached_count(), 0);
    assert!(server.router().resources(&bob()).is_empty());
    let user = UserRef::new("bob", "localhost");
    assert_eq!(store.offline_count(&user).await.unwrap(), 1);
}

#[tokio::test]
async fn resuming_a_connected_session_takes_it_over() {
    let (server, _store) = server().await;
    let bob_c = TestClient::login(&server, "bob", "b").await;
    let (id, takeover) = server.resumable(&bob_c.session);
    // Another account cannot even ask for it.
    let alice_bare = BareJid::new("alice@localhost").unwrap();
    let short = Duration::from_millis(50);
    assert!(server.resume(&id, &alice_bare, short).await.is_err());

    // The old connection parks the session when asked to.
    let requested = takeover.requested();
    let server2 = Arc::clone(&server);
    let id2 = id.clone();
    let old = tokio::spawn(async move {
        requested.await;
        let TestClient { session, rx } = bob_c;
        let keep = Duration::from_secs(3600);
        server2.detach(session, rx, Vec::new(), keep, id2, Arc::new(1u32));
    });
    let Ok(resumed) = server.resume(&id, &bob(), WAIT).await else {
        panic!("taken over")
    };
    old.await.unwrap();
    assert_eq!(resumed.session.jid.as_str(), "bob@localhost/b");
    assert_eq!(server.detached_count(), 0);
    TestClient {
        session: resumed.session,
        rx: resumed.rx,
    }
    .logout(&server)
    .await;
}

#[tokio::test]
async fn a_forgotten_session_is_not_waited_for() {
    let (server, _store) = server().await;
    let bob_c = TestClient::login(&server, "bob", "b").await;
    let (id, _takeover) = server.resumable(&bob_c.session);
    server.forget_resumable(&id);
    // Answered at once, not after the wait.
    let user = bob();
    let r = tokio::time::timeout(WAIT, server.resume(&id, &user, Duration::from_secs(3600)));
    assert!(matches!(r.await, Ok(Err(NotResumed::Unknown))));
    bob_c.logout(&server).await;
}

#[tokio::test]
async fn parked_sessions_make_room_for_new_binds_oldest_first() {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    store
        .create_user(&UserRef::new("bob", "localhost"), &[])
        .await
        .unwrap();
    let config = CoreConfig {
        max_resources_per_user: 2,
        ..CoreConfig::default()
    };
    let server = Server::builder(config, store.clone())
        .modules(xmppd_im::modules())
        .build();
    let first = TestClient::login(&server, "bob", "one").await;
    let second = TestClient::login(&server, "bob", "two").await;
    let keep = Duration::from_secs(3600);
    let id_one = park(&server, first, Vec::new(), keep);
    let id_two = park(&server, second, Vec::new(), keep);
    let third = TestClient::login(&server, "bob", "three").await;
    assert_eq!(server.detached_count(), 1);
    assert!(
        server.resume(&id_one, &bob(), WAIT).await.is_err(),
        "oldest ended"
    );
    let Ok(r) = server.resume(&id_two, &bob(), WAIT).await else {
        panic!("the newer one is kept")
    };
    let mut names: Vec<String> = (server.router().resources(&bob()).iter())
        .map(|r| r.jid.to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["bob@localhost/three", "bob@localhost/two"]);
    TestClient {
        session: r.session,
        rx: r.rx,
    }
    .logout(&server)
    .await;
    third.logout(&server).await;
}
