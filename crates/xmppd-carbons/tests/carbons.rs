//! Carbons on a server with in-memory sessions, the IM modules and the archive in the order
//! the binary gives them: who gets which copy, and that a received copy carries the
//! archive's `<stanza-id/>`.

use std::sync::Arc;

use minidom::Element;
use xmppd_carbons::CarbonsModule;
use xmppd_core::testing::TestClient;
use xmppd_core::{CoreConfig, Server};
use xmppd_mam::module::{MamModule, MamSettings};
use xmppd_mam::SqliteArchive;

const C: &str = "xmlns='jabber:client'";
const CARBONS: &str = "urn:xmpp:carbons:2";

async fn server() -> Arc<Server> {
    server_and_archive().await.0
}

/// As the binary composes them: the archive adds the sender's id for the sent copies.
async fn server_and_archive() -> (Arc<Server>, Arc<SqliteArchive>) {
    let store = xmppd_core::testing::store_with_users(&["alice", "bob"]).await;
    let archive = Arc::new(SqliteArchive::open(store.clone()).await.unwrap());
    let settings = MamSettings {
        sender_ids: true,
        ..MamSettings::default()
    };
    let server = Server::builder(CoreConfig::default(), store)
        .modules(xmppd_im::modules())
        .module(Arc::new(MamModule::new(archive.clone(), settings)))
        .module(Arc::new(CarbonsModule::new()))
        .build();
    (server, archive)
}

/// The archive ids of `owner`'s messages with `body`.
async fn archive_ids(archive: &SqliteArchive, owner: &str, body: &str) -> Vec<String> {
    use xmppd_mam::store::{Filter, PageRequest, Paging};
    use xmppd_mam::ArchiveStore;
    let req = PageRequest {
        filter: Filter::default(),
        paging: Paging::Forward { after: None },
        max: 100,
    };
    let page = archive.query(owner, req).await.unwrap();
    (page.items.into_iter())
        .filter(|i| i.stanza.contains(&format!("<body>{body}</body>")))
        .map(|i| xmppd_mam::store::encode_id(i.id))
        .collect()
}

fn stanza_ids(m: &Element) -> Vec<(String, String)> {
    (m.children())
        .filter(|c| c.is("stanza-id", "urn:xmpp:sid:0"))
        .map(|c| {
            (
                c.attr("by").unwrap().to_owned(),
                c.attr("id").unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_sent_copy_carries_the_senders_archive_id_and_the_message_does_not() {
    let (server, archive) = server_and_archive().await;
    let mut pc = online(&server, "alice", "pc", true).await;
    let mut phone = online(&server, "alice", "phone", true).await;
    let mut bob = online(&server, "bob", "x", false).await;
    // To a local account, whose archive writes both rows together; and to another server.
    for (to, body) in [
        ("bob@localhost/x", "local"),
        ("someone@elsewhere.example", "remote"),
    ] {
        let msg = format!("<message {C} type='chat' to='{to}'><body>{body}</body></message>");
        phone.send(&server, &msg).await;
        // (The error from the server that is not there comes as a received copy.)
        let got = messages(pc.drain());
        let sent: Vec<_> = got.iter().filter_map(|m| forwarded(m, "sent")).collect();
        assert_eq!(sent.len(), 1, "{body}");
        let inner = sent[0];
        let alices = archive_ids(&archive, "alice@localhost", body).await;
        assert_eq!(alices.len(), 1, "{body}");
        assert_eq!(
            stanza_ids(inner),
            [("alice@localhost".to_owned(), alices[0].clone())],
            "{body}: the sender's archive id, and no other"
        );
    }
    let got = messages(bob.drain());
    assert_eq!(got.len(), 1);
    let bobs = archive_ids(&archive, "bob@localhost", "local").await;
    assert_eq!(
        stanza_ids(&got[0]),
        [("bob@localhost".to_owned(), bobs[0].clone())],
        "the recipient sees its own archive's id only"
    );
    assert!(messages(phone.drain())
        .iter()
        .all(|m| m.attr("type") == Some("error")));
}

async fn online(server: &Arc<Server>, user: &str, resource: &str, carbons: bool) -> TestClient {
    let mut c = TestClient::login(server, user, resource).await;
    c.send(server, &format!("<presence {C}/>")).await;
    if carbons {
        c.send(
            server,
            &format!("<iq {C} type='set' id='c'><enable xmlns='{CARBONS}'/></iq>"),
        )
        .await;
    }
    c.drain();
    c
}

fn messages(got: Vec<Element>) -> Vec<Element> {
    got.into_iter().filter(|e| e.name() == "message").collect()
}

/// The forwarded message of a `<sent/>` or `<received/>` copy.
fn forwarded<'a>(copy: &'a Element, kind: &str) -> Option<&'a Element> {
    copy.get_child(kind, CARBONS)?
        .get_child("forwarded", "urn:xmpp:forward:0")?
        .get_child("message", "jabber:client")
}

fn body(m: &Element) -> String {
    m.get_child("body", "jabber:client")
        .map(Element::text)
        .unwrap_or_default()
}

#[tokio::test]
async fn received_and_sent_copies_reach_the_other_enabled_clients() {
    let server = server().await;
    let mut pc = online(&server, "alice", "pc", true).await;
    let mut phone = online(&server, "alice", "phone", true).await;
    let mut old = online(&server, "alice", "old", false).await;
    let mut bob = online(&server, "bob", "x", false).await;
    bob.send(
        &server,
        &format!("<message {C} type='chat' to='alice@localhost/pc'><body>hi</body></message>"),
    )
    .await;
    assert_eq!(
        messages(pc.drain()).iter().map(body).collect::<Vec<_>>(),
        ["hi"]
    );
    let got = messages(phone.drain());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attr("from"), Some("alice@localhost"));
    assert_eq!(got[0].attr("to"), Some("alice@localhost/phone"));
    let inner = forwarded(&got[0], "received").expect("a received copy");
    assert_eq!(body(inner), "hi");
    let sid = inner
        .get_child("stanza-id", "urn:xmpp:sid:0")
        .expect("the archive's id");
    assert_eq!(sid.attr("by"), Some("alice@localhost"));
    assert!(
        messages(old.drain()).is_empty(),
        "carbons not enabled there"
    );

    phone
        .send(
            &server,
            &format!("<message {C} type='chat' to='bob@localhost/x'><body>yo</body></message>"),
        )
        .await;
    assert_eq!(
        messages(bob.drain()).iter().map(body).collect::<Vec<_>>(),
        ["yo"]
    );
    let got = messages(pc.drain());
    assert_eq!(got.len(), 1);
    let inner = forwarded(&got[0], "sent").expect("a sent copy");
    assert_eq!(inner.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(body(inner), "yo");
    assert!(messages(phone.drain()).is_empty(), "not to the sender");
    assert!(messages(old.drain()).is_empty());
}

#[tokio::test]
async fn disabling_and_a_new_session_stop_the_copies() {
    let server = server().await;
    let mut pc = online(&server, "alice", "pc", true).await;
    let mut phone = online(&server, "alice", "phone", true).await;
    let mut bob = online(&server, "bob", "x", false).await;
    let to_pc =
        format!("<message {C} type='chat' to='alice@localhost/pc'><body>1</body></message>");
    phone
        .send(
            &server,
            &format!("<iq {C} type='set' id='d'><disable xmlns='{CARBONS}'/></iq>"),
        )
        .await;
    let answer = phone.drain();
    assert_eq!(answer[0].attr("type"), Some("result"));
    bob.send(&server, &to_pc).await;
    assert!(messages(phone.drain()).is_empty());
    pc.drain();

    // Enabled again, then the session ends: the next one for that resource starts without.
    phone
        .send(
            &server,
            &format!("<iq {C} type='set' id='e'><enable xmlns='{CARBONS}'/></iq>"),
        )
        .await;
    phone.logout(&server).await;
    let mut phone = online(&server, "alice", "phone", false).await;
    bob.send(&server, &to_pc).await;
    assert!(messages(phone.drain()).is_empty());
}

#[tokio::test]
async fn enabling_anothers_carbons_or_with_a_get_is_refused() {
    let server = server().await;
    let mut bob = online(&server, "bob", "x", false).await;
    bob.send(
        &server,
        &format!("<iq {C} type='set' id='1' to='alice@localhost'><enable xmlns='{CARBONS}'/></iq>"),
    )
    .await;
    bob.send(
        &server,
        &format!("<iq {C} type='get' id='2'><enable xmlns='{CARBONS}'/></iq>"),
    )
    .await;
    bob.send(
        &server,
        &format!("<iq {C} type='set' id='3' to='localhost'><enable xmlns='{CARBONS}'/></iq>"),
    )
    .await;
    let got = bob.drain();
    let kinds: Vec<_> = got.iter().map(|e| (e.attr("id"), e.attr("type"))).collect();
    assert_eq!(
        kinds,
        [
            (Some("1"), Some("error")),
            (Some("2"), Some("error")),
            (Some("3"), Some("result"))
        ]
    );
}

#[tokio::test]
async fn a_forged_copy_is_not_delivered_as_one() {
    let server = server().await;
    let mut pc = online(&server, "alice", "pc", true).await;
    let mut bob = online(&server, "bob", "x", false).await;
    bob.send(
        &server,
        &format!(
            "<message {C} type='chat' to='alice@localhost'><received xmlns='{CARBONS}'>\
             <forwarded xmlns='urn:xmpp:forward:0'><message {C} type='chat' \
             from='carol@localhost/x' to='alice@localhost/pc'><body>lie</body></message>\
             </forwarded></received></message>"
        ),
    )
    .await;
    let got = messages(pc.drain());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attr("from"), Some("bob@localhost/x"));
    assert!(got[0].get_child("received", CARBONS).is_none());
}

#[tokio::test]
async fn private_messages_are_not_copied() {
    let server = server().await;
    let mut pc = online(&server, "alice", "pc", true).await;
    let mut phone = online(&server, "alice", "phone", true).await;
    let mut bob = online(&server, "bob", "x", false).await;
    pc.send(
        &server,
        &format!(
            "<message {C} type='chat' to='bob@localhost/x'><body>p</body>\
             <private xmlns='{CARBONS}'/><no-copy xmlns='urn:xmpp:hints'/></message>"
        ),
    )
    .await;
    bob.send(
        &server,
        &format!(
            "<message {C} type='chat' to='alice@localhost/pc'><body>q</body>\
             <no-copy xmlns='urn:xmpp:hints'/></message>"
        ),
    )
    .await;
    assert_eq!(messages(bob.drain()).len(), 1);
    assert_eq!(messages(pc.drain()).len(), 1);
    assert!(messages(phone.drain()).is_empty());
}
