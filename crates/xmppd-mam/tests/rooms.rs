//! Room archives on a server with in-memory sessions and the real chat service: the archive id
//! every copy of a room message carries, history from the archive after a restart, queries
//! answered by the room with real JIDs for moderators only, and the archive gone with the room.

use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use xmppd_core::testing::TestClient;
use xmppd_core::{CoreConfig, Server};
use xmppd_mam::query::PageLimits;
use xmppd_mam::store::{Filter, PageRequest, Paging};
use xmppd_mam::{ArchiveStore, RoomArchives, SqliteArchive};
use xmppd_muc::{Creation, MemoryArchive, MucService, MucSettings, RoomLimits};
use xmppd_storage::{CredentialStore, SqliteStore, UserRef};

const ROOM: &str = "lounge@conference.localhost";
const SID: &str = "urn:xmpp:sid:0";
const MAM: &str = "urn:xmpp:mam:2";
const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const FORWARD: &str = "urn:xmpp:forward:0";

async fn server(path: &std::path::Path) -> (Arc<Server>, Arc<SqliteArchive>, Arc<SqliteStore>) {
    let store = Arc::new(SqliteStore::open(path).unwrap());
    for u in ["alice", "bob", "carol"] {
        let _ = store.create_user(&UserRef::new(u, "localhost"), &[]).await;
    }
    let archive = Arc::new(SqliteArchive::open(store.clone()).await.unwrap());
    let rooms = RoomArchives::new(
        archive.clone(),
        MemoryArchive::default(),
        PageLimits::default(),
    );
    let settings = MucSettings {
        domain: "conference.localhost".into(),
        creation: Creation::LocalUsers,
        max_rooms_per_user: 0,
        limits: RoomLimits {
            max_occupants: 50,
            max_history: 20,
            messages_per_second: 0,
        },
        occupant_ids: Some(xmppd_muc::OccupantIds::new(b"test secret")),
        lease: None,
    };
    let muc = MucService::load(settings, store.clone(), Arc::new(rooms))
        .await
        .unwrap();
    let server = Server::builder(CoreConfig::default(), store.clone())
        .component("conference.localhost", muc)
        .build();
    (server, archive, store)
}

/// The next stanza queued for `c` that `pred` accepts (a room answers from its own task).
async fn expect(c: &mut TestClient, what: &str, pred: impl Fn(&Element) -> bool) -> Element {
    let wait = async {
        loop {
            let (o, _) = c.rx.recv().await;
            if let Some(el) = o.to_element() {
                if pred(&el) {
                    return el;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("no {what}"))
}

async fn join(server: &Arc<Server>, c: &mut TestClient, nick: &str, history: &str) {
    c.send(
        server,
        &format!(
            "<presence xmlns='jabber:client' to='{ROOM}/{nick}'><x xmlns='{MUC}'>{history}</x>\
             </presence>"
        ),
    )
    .await;
    expect(c, "self-presence", |e| {
        e.name() == "presence" && e.attr("from") == Some(&*format!("{ROOM}/{nick}"))
    })
    .await;
}

async fn iq(server: &Arc<Server>, c: &mut TestClient, id: &str, payload: &str) -> Element {
    c.send(
        server,
        &format!("<iq xmlns='jabber:client' type='set' id='{id}' to='{ROOM}'>{payload}</iq>"),
    )
    .await;
    expect(c, id, |e| e.name() == "iq" && e.attr("id") == Some(id)).await
}

fn body(m: &Element) -> String {
    m.get_child("body", "jabber:client")
        .map(Element::text)
        .unwrap_or_default()
}

fn room_ids(m: &Element) -> Vec<String> {
    (m.children().filter(|c| c.is("stanza-id", SID)))
        .filter(|c| c.attr("by") == Some(ROOM))
        .map(|c| c.attr("id").unwrap().to_owned())
        .collect()
}

async fn archived(archive: &SqliteArchive) -> Vec<String> {
    let req = PageRequest {
        filter: Filter::default(),
        paging: Paging::Forward { after: None },
        max: 100,
    };
    let page = archive.query(ROOM, req).await.unwrap();
    page.items.iter().map(|i| i.id.to_string()).collect()
}

/// A MAM query to the room: (the result messages' forwarded messages with their ids, the IQ).
async fn query(
    server: &Arc<Server>,
    c: &mut TestClient,
    id: &str,
) -> (Vec<(String, Element)>, Element) {
    c.send(
        server,
        &format!(
            "<iq xmlns='jabber:client' type='set' id='{id}' to='{ROOM}'>\
             <query xmlns='{MAM}' queryid='{id}'/></iq>"
        ),
    )
    .await;
    let mut results = Vec::new();
    loop {
        let e = expect(c, id, |e| {
            e.attr("id") == Some(id)
                || e.get_child("result", MAM)
                    .is_some_and(|r| r.attr("queryid") == Some(id))
        })
        .await;
        if e.name() == "iq" {
            return (results, e);
        }
        assert_eq!(e.attr("from"), Some(ROOM), "results come from the room");
        let r = e.get_child("result", MAM).unwrap();
        let fwd = r.get_child("forwarded", FORWARD).unwrap();
        let m = fwd.get_child("message", "jabber:client").unwrap().clone();
        results.push((r.attr("id").unwrap().to_owned(), m));
    }
}

/// Alice (nick `al`) makes the room archived (and `persistent` or not); bob (nick `bob`)
/// joins it.
async fn archived_room(srv: &Arc<Server>, persistent: bool) -> (TestClient, TestClient) {
    let mut alice = TestClient::login(srv, "alice", "a").await;
    let mut bob = TestClient::login(srv, "bob", "b").await;
    join(srv, &mut alice, "al", "").await;
    let persistent = u8::from(persistent);
    let form = format!(
        "<x xmlns='jabber:x:data' type='submit'>\
         <field var='muc#roomconfig_persistentroom'><value>{persistent}</value></field>\
         <field var='muc#roomconfig_enablearchiving'><value>1</value></field></x>"
    );
    let query = format!("<query xmlns='{MUC_OWNER}'>{form}</query>");
    let r = iq(srv, &mut alice, "cfg", &query).await;
    assert_eq!(r.attr("type"), Some("result"));
    join(srv, &mut bob, "bob", "").await;
    (alice, bob)
}

fn real_jid(m: &Element) -> Option<String> {
    let item = m.get_child("x", MUC_USER)?.get_child("item", MUC_USER)?;
    item.attr("jid").map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_room_ids_serves_history_after_a_restart_and_forgets_when_destroyed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let (srv, archive, _) = server(&path).await;
    let (mut alice, mut bob) = archived_room(&srv, true).await;

    // A stanza-id in the room's name from a sender is replaced by the room's own, which is
    // the archive's id, already stored when the copy arrives.
    let mut live = Vec::new();
    for i in 0..3 {
        bob.send(
            &srv,
            &format!(
                "<message xmlns='jabber:client' type='groupchat' to='{ROOM}'><body>m{i}</body>\
                 <stanza-id xmlns='{SID}' by='{ROOM}' id='forged'/>\
                 <x xmlns='{MUC_USER}'><item jid='ceo@localhost'/></x></message>"
            ),
        )
        .await;
        let m = expect(&mut alice, "message", |e| body(e) == format!("m{i}")).await;
        let [id] = &room_ids(&m)[..] else {
            panic!("one id: {m:?}")
        };
        assert_ne!(id, "forged");
        assert!(
            archived(&archive).await.contains(id),
            "committed before sent"
        );
        live.push(id.clone());
    }
    assert_eq!(archived(&archive).await, live);

    // Semi-anonymous: the participant sees occupant JIDs only, the owner the real JID (the
    // room's, never what the sender wrote).
    let (results, fin) = query(&srv, &mut bob, "q1").await;
    assert_eq!(fin.attr("type"), Some("result"), "{fin:?}");
    let ids: Vec<_> = results.iter().map(|(i, _)| i.clone()).collect();
    assert_eq!(ids, live);
    for (_, m) in &results {
        assert_eq!(m.attr("from"), Some(&*format!("{ROOM}/bob")));
        assert_eq!(real_jid(m), None, "{m:?}");
    }
    let (results, _) = query(&srv, &mut alice, "q2").await;
    for (_, m) in &results {
        assert_eq!(real_jid(m).as_deref(), Some("bob@localhost"), "{m:?}");
    }
    drop((alice, bob, srv, archive));

    // Another server on the same file: the newcomer's history comes from the archive.
    let (srv, archive, _) = server(&path).await;
    let mut carol = TestClient::login(&srv, "carol", "c").await;
    carol
        .send(
            &srv,
            &format!(
                "<presence xmlns='jabber:client' to='{ROOM}/carol'><x xmlns='{MUC}'>\
                 <history maxstanzas='2'/></x></presence>"
            ),
        )
        .await;
    let mut history = Vec::new();
    for i in 1..3 {
        let m = expect(&mut carol, "history", |e| body(e) == format!("m{i}")).await;
        assert!(m.get_child("delay", "urn:xmpp:delay").is_some());
        assert_eq!(real_jid(&m), None, "history shows no real JIDs");
        history.extend(room_ids(&m));
    }
    assert_eq!(history, live[1..]);
    expect(&mut carol, "subject", |e| {
        e.get_child("subject", "jabber:client").is_some()
    })
    .await;

    // Destroyed: the archive goes with the room.
    let mut alice = TestClient::login(&srv, "alice", "a").await;
    let r = iq(
        &srv,
        &mut alice,
        "d",
        &format!("<query xmlns='{MUC_OWNER}'><destroy/></query>"),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"));
    assert!(archived(&archive).await.is_empty());
}

/// RFC 6120 §10.1 through a room task and group commit: one occupant's messages and presence
/// changes reach another in the order sent, each message with an id that is durable when it
/// arrives. And the room does not hold its stanzas across the disk's sync: while the storage
/// writer cannot commit, the room still takes every message and queues its write; nothing it
/// decided is sent before those writes commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_keeps_order_through_group_commit_and_does_not_wait_for_each_commit() {
    const N: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let (srv, archive, store) = server(&dir.path().join("x.db")).await;
    let (mut alice, mut bob) = archived_room(&srv, false).await;
    expect(&mut alice, "bob's join", |e| {
        e.name() == "presence" && e.attr("from") == Some(&*format!("{ROOM}/bob"))
    })
    .await;

    // The writer is held: nothing commits until `open`.
    let (open, gate) = std::sync::mpsc::channel::<()>();
    let held = store.queue(move |_| {
        let _ = gate.recv();
        Ok(())
    });
    let base = archive.appended_count();
    let mut sent = Vec::new();
    for i in 0..N {
        bob.send(
            &srv,
            &format!(
                "<message xmlns='jabber:client' type='groupchat' to='{ROOM}'><body>m{i}</body>\
                 </message>"
            ),
        )
        .await;
        sent.push(format!("m{i}"));
        if i % 10 == 9 {
            bob.send(
                &srv,
                &format!(
                    "<presence xmlns='jabber:client' to='{ROOM}/bob'><status>s{i}</status>\
                     </presence>"
                ),
            )
            .await;
            sent.push(format!("s{i}"));
        }
    }
    let queued = async {
        while archive.appended_count() < base + N as u64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), queued)
        .await
        .expect("the room queued every message's write while none could commit");
    let early = alice.drain();
    assert!(
        early
            .iter()
            .all(|e| e.attr("from") != Some(&*format!("{ROOM}/bob"))),
        "nothing bob sent went out before its write committed: {early:?}"
    );
    let commits = store.commit_count();
    open.send(()).unwrap();
    held.await.unwrap();

    let mut got = Vec::new();
    let mut ids = Vec::new();
    while got.len() < sent.len() {
        let e = expect(&mut alice, "bob's stanzas", |e| {
            e.attr("from") == Some(&*format!("{ROOM}/bob"))
                && (e.name() == "message" || e.get_child("status", "jabber:client").is_some())
        })
        .await;
        if e.name() == "message" {
            got.push(body(&e));
            ids.extend(room_ids(&e));
        } else {
            got.push(e.get_child("status", "jabber:client").unwrap().text());
        }
    }
    assert_eq!(got, sent, "in the order sent");
    assert_eq!(ids.len(), N, "every message carries its archive id");
    assert!(
        store.commit_count() - commits <= 3,
        "{} commits for {N} messages queued together",
        store.commit_count() - commits
    );
    assert_eq!(
        archived(&archive).await,
        ids,
        "ids in archive order, all durable"
    );
}
