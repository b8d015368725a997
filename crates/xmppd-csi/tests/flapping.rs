//! Client state indication on a server with in-memory sessions and the IM modules: what an
//! inactive client is sent while its contacts' presence flaps, against an active one; what
//! passes at once; the order once it is active again. The byte counts are what the session's
//! writer would put on the wire (`docs/BENCHMARKS.md` records them).

use std::sync::Arc;

use minidom::Element;
use xmppd_core::testing::TestClient;
use xmppd_core::{CoreConfig, QueueLimits, Server};
use xmppd_csi::CsiModule;
use xmppd_storage::{CredentialStore, RosterItem, RosterStore, SqliteStore, Subscription, UserRef};

const C: &str = "xmlns='jabber:client'";
const CONTACTS: usize = 200;
const FLAPS: usize = 10;

fn item(jid: &str) -> RosterItem {
    RosterItem {
        jid: jid.into(),
        name: None,
        subscription: Subscription::Both,
        ask: false,
        approved: false,
        groups: Vec::new(),
    }
}

/// Alice and `contacts` contacts, each subscribed both ways with her.
async fn server(contacts: usize) -> Arc<Server> {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let alice = UserRef::new("alice", "localhost");
    store.create_user(&alice, &[]).await.unwrap();
    for i in 0..contacts {
        let c = UserRef::new(format!("c{i}"), "localhost");
        store.create_user(&c, &[]).await.unwrap();
        store
            .set_roster_item(&c, &item("alice@localhost"))
            .await
            .unwrap();
        store
            .set_roster_item(&alice, &item(&format!("c{i}@localhost")))
            .await
            .unwrap();
    }
    let config = CoreConfig {
        max_roster_items: 10_000,
        ..CoreConfig::default()
    };
    Server::builder(config, store)
        .modules(xmppd_im::modules())
        .module(Arc::new(CsiModule::default()))
        .build()
}

/// Serialised as the session's writer does.
fn bytes(got: &[Element]) -> usize {
    let mut out = Vec::new();
    for el in got {
        xmppd_stream::serialize(el, "jabber:client", &mut out);
    }
    out.len()
}

async fn nonza(server: &Arc<Server>, c: &TestClient, name: &str) {
    let el: Element = format!("<{name} xmlns='urn:xmpp:csi:0'/>").parse().unwrap();
    assert!(server.handle_nonza(&c.session, &el).await);
}

/// Alice online with a large queue, her contacts online; returns what alice saw of the flaps,
/// in bytes, and the last show of each contact she saw, with `inactive` alice sending
/// `<inactive/>` before and `<active/>` after.
async fn flapping(inactive: bool) -> (usize, usize, Vec<Element>) {
    let server = server(CONTACTS).await;
    let limits = QueueLimits {
        stanzas: 1 << 20,
        bytes: 1 << 30,
        reply_bytes: 1 << 30,
    };
    let alice_jid = jid::BareJid::new("alice@localhost").unwrap();
    let mut alice = TestClient::login_with(&server, alice_jid, "phone", limits).await;
    alice.go_online(&server).await;
    let mut contacts = Vec::new();
    for i in 0..CONTACTS {
        let mut c = TestClient::login(&server, &format!("c{i}"), "pc").await;
        c.go_online(&server).await;
        contacts.push(c);
    }
    alice.drain();
    if inactive {
        nonza(&server, &alice, "inactive").await;
    }
    for round in 0..FLAPS {
        let show = if round % 2 == 0 { "away" } else { "chat" };
        for c in &mut contacts {
            c.send(
                &server,
                &format!("<presence {C}><show>{show}</show></presence>"),
            )
            .await;
        }
    }
    let during = alice.drain();
    if inactive {
        nonza(&server, &alice, "active").await;
    }
    let after = alice.drain();
    let mut all = during.clone();
    all.extend(after);
    (bytes(&during), bytes(&all), all)
}

fn last_shows(got: &[Element]) -> std::collections::BTreeMap<String, String> {
    got.iter()
        .filter(|e| e.name() == "presence")
        .map(|e| {
            let show = e.get_child("show", "jabber:client").map(Element::text);
            (
                e.attr("from").unwrap_or("").to_owned(),
                show.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_client_gets_the_latest_presence_only_and_only_once_active() {
    let (active_bytes, _, active_all) = flapping(false).await;
    let (while_inactive, inactive_total, inactive_all) = flapping(true).await;
    println!(
        "{CONTACTS} contacts, {FLAPS} changes each: active client {active_bytes} bytes, \
         inactive client {while_inactive} bytes while inactive, {inactive_total} bytes in all"
    );
    assert_eq!(active_all.len(), CONTACTS * FLAPS);
    assert_eq!(while_inactive, 0, "nothing while inactive");
    assert_eq!(inactive_all.len(), CONTACTS, "one presence per contact");
    assert!(
        inactive_total * (FLAPS / 2) < active_bytes,
        "{inactive_total} vs {active_bytes}"
    );
    // The client's view once active is the same as the active client's.
    assert_eq!(last_shows(&inactive_all), last_shows(&active_all));
}

#[tokio::test]
async fn urgent_stanzas_pass_at_once_after_what_was_held() {
    let server = server(2).await;
    let mut alice = TestClient::login(&server, "alice", "phone").await;
    alice.go_online(&server).await;
    let mut c0 = TestClient::login(&server, "c0", "pc").await;
    c0.go_online(&server).await;
    let mut c1 = TestClient::login(&server, "c1", "pc").await;
    c1.go_online(&server).await;
    alice.drain();
    nonza(&server, &alice, "inactive").await;
    c0.send(
        &server,
        &format!("<presence {C}><show>away</show></presence>"),
    )
    .await;
    c1.send(
        &server,
        &format!("<message {C} type='chat' to='alice@localhost/phone'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"),
    )
    .await;
    c0.send(
        &server,
        &format!("<presence {C}><show>dnd</show></presence>"),
    )
    .await;
    assert!(alice.drain().is_empty(), "presence and a chat state wait");
    c1.send(
        &server,
        &format!("<message {C} type='chat' to='alice@localhost/phone'><body>hi</body></message>"),
    )
    .await;
    let got = alice.drain();
    let names: Vec<String> = got
        .iter()
        .map(|e| match e.get_child("show", "jabber:client") {
            Some(s) => format!("presence:{}", s.text()),
            None if e.get_child("body", "jabber:client").is_some() => "body".into(),
            None => "chatstate".into(),
        })
        .collect();
    assert_eq!(names, ["chatstate", "presence:dnd", "body"]);
    // An IQ passes at once too; active again, nothing is held back.
    c0.send(
        &server,
        &format!("<presence {C}><show>xa</show></presence>"),
    )
    .await;
    c1.send(
        &server,
        &format!("<iq {C} type='get' id='v' to='alice@localhost/phone'><query xmlns='jabber:iq:version'/></iq>"),
    )
    .await;
    let got = alice.drain();
    assert_eq!(
        got.iter().map(|e| e.name()).collect::<Vec<_>>(),
        ["presence", "iq"]
    );
    nonza(&server, &alice, "active").await;
    c0.send(
        &server,
        &format!("<presence {C}><show>chat</show></presence>"),
    )
    .await;
    assert_eq!(alice.drain().len(), 1);
}
