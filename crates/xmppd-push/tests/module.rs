//! The push module on a server with in-memory sessions and the IM modules: who may enable,
//! notifications for offline and parked sessions, answers matched, account removal.

use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use xmppd_core::testing::TestClient;
use xmppd_core::{BareJid, CoreConfig, Server};
use xmppd_push::{Push, PushStore, Settings, SqlitePush};

const NS: &str = "xmlns='jabber:client'";
const APP: &str = "appserver@localhost/push";

async fn setup() -> (Arc<Server>, Arc<SqlitePush>) {
    let store = xmppd_core::testing::store_with_users(&["alice", "bob", "appserver"]).await;
    let push = Arc::new(SqlitePush::open(store.clone()).await.unwrap());
    let module = Push::new(push.clone(), Settings::default());
    let server = Server::builder(CoreConfig::default(), store)
        .module(Arc::new(module))
        .modules(xmppd_im::modules())
        .build();
    (server, push)
}

fn enable(id: &str, to: &str, node: &str) -> String {
    format!(
        "<iq {NS} type='set' id='{id}' to='{to}'>\
         <enable xmlns='urn:xmpp:push:0' jid='{APP}' node='{node}'/></iq>"
    )
}

fn chat(to: &str, body: &str) -> String {
    format!("<message {NS} type='chat' to='{to}'><body>{body}</body></message>")
}

fn reply<'a>(got: &'a [Element], id: &str) -> &'a Element {
    (got.iter().find(|e| e.attr("id") == Some(id)))
        .unwrap_or_else(|| panic!("no reply {id} in {got:?}"))
}

fn publishes(got: &[Element]) -> Vec<Element> {
    (got.iter())
        .filter(|e| e.name() == "iq" && e.attr("type") == Some("set"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn only_the_account_itself_enables_and_an_offline_message_notifies() {
    let (server, store) = setup().await;
    let mut apps = TestClient::login(&server, "appserver", "push").await;
    let mut alice = TestClient::login(&server, "alice", "a").await;
    alice.go_online(&server).await;
    alice
        .send(&server, &enable("e0", "bob@localhost", "n"))
        .await;
    let got = alice.drain();
    assert_eq!(reply(&got, "e0").attr("type"), Some("error"));
    assert!(store.all().await.unwrap().is_empty());

    let mut bob = TestClient::login(&server, "bob", "phone").await;
    bob.send(&server, &enable("e1", "bob@localhost", "n")).await;
    assert_eq!(reply(&bob.drain(), "e1").attr("type"), Some("result"));
    let stored = store.all().await.unwrap();
    assert_eq!((stored.len(), stored[0].resource.as_str()), (1, "phone"));
    bob.logout(&server).await;

    alice.send(&server, &chat("bob@localhost", "secret")).await;
    let sent = publishes(&apps.drain());
    assert_eq!(sent.len(), 1, "{sent:?}");
    let iq = &sent[0];
    assert_eq!(iq.attr("from"), Some("bob@localhost"));
    assert!(!String::from(iq).contains("secret"));

    // While it is unanswered, more messages are counted, not published.
    alice.send(&server, &chat("bob@localhost", "two")).await;
    alice.send(&server, &chat("bob@localhost", "three")).await;
    assert!(publishes(&apps.drain()).is_empty());
    // Answered by anyone else: not taken for the app server's answer.
    let id = iq.attr("id").unwrap();
    let forged = format!("<iq {NS} type='error' id='{id}' to='bob@localhost'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
    alice.send(&server, &forged).await;
    assert_eq!(store.all().await.unwrap().len(), 1);
    // The app server takes it: the two that came meanwhile go in one more.
    let result = format!("<iq {NS} type='result' id='{id}' to='bob@localhost'/>");
    apps.send(&server, &result).await;
    let sent = publishes(&apps.drain());
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        String::from(&sent[0]).contains("<value>2</value>"),
        "{:?}",
        sent[0]
    );
}

#[tokio::test]
async fn a_parked_session_notifies_its_own_registrations_only() {
    let (server, _) = setup().await;
    let mut apps = TestClient::login(&server, "appserver", "push").await;
    let mut alice = TestClient::login(&server, "alice", "a").await;
    alice.go_online(&server).await;
    let mut phone = TestClient::login(&server, "bob", "phone").await;
    phone.go_online(&server).await;
    let mut desk = TestClient::login(&server, "bob", "desk").await;
    desk.go_online(&server).await;
    phone
        .send(&server, &enable("e1", "bob@localhost", "phone-node"))
        .await;
    desk.send(&server, &enable("e2", "bob@localhost", "desk-node"))
        .await;
    phone.drain();
    desk.drain();

    // Both connected: nothing.
    alice.send(&server, &chat("bob@localhost", "hi")).await;
    assert!(publishes(&apps.drain()).is_empty());

    let TestClient { session, rx } = phone;
    let (id, _takeover) = server.resumable(&session);
    let keep = Duration::from_secs(3600);
    server.detach(session, rx, Vec::new(), keep, id, Arc::new(()));
    alice
        .send(&server, &chat("bob@localhost/phone", "wake up"))
        .await;
    let sent = publishes(&apps.drain());
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        String::from(&sent[0]).contains("node='phone-node'"),
        "{:?}",
        sent[0]
    );
    // A message the desk alone gets wakes nobody.
    alice
        .send(&server, &chat("bob@localhost/desk", "at the desk"))
        .await;
    assert!(publishes(&apps.drain()).is_empty());
}

#[tokio::test]
async fn registrations_go_with_the_account() {
    let (server, store) = setup().await;
    let mut bob = TestClient::login(&server, "bob", "phone").await;
    bob.send(&server, &enable("e1", "bob@localhost", "n")).await;
    bob.drain();
    assert_eq!(store.all().await.unwrap().len(), 1);
    let user = BareJid::new("bob@localhost").unwrap();
    server.remove_account(&user, None).await.unwrap();
    assert!(store.all().await.unwrap().is_empty());
}
