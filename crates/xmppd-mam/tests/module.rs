//! The archive module on a server with in-memory sessions: what is archived where, the stanza
//! id on delivered and offline copies, results before the `<fin/>`, account removal.

use std::sync::Arc;

use async_trait::async_trait;
use minidom::Element;
use xmppd_core::testing::TestClient;
use xmppd_core::{BareJid, CoreConfig, Server};
use xmppd_mam::module::{MamModule, MamSettings};
use xmppd_mam::store::{Direction, Filter, Matcher, NewMessage, Page, PageRequest, Paging};
use xmppd_mam::{ArchiveError, ArchiveStore, DefaultPolicy, Prefs, SqliteArchive};
use xmppd_shared_roster::{SharedRoster, StaticGroup};
use xmppd_storage::{Queued, SqliteStore, StorageError};

const SID: &str = "urn:xmpp:sid:0";
const MAM: &str = "urn:xmpp:mam:2";

async fn setup() -> (Arc<Server>, Arc<SqliteArchive>) {
    let (server, _, archive) = setup_with(|a| a).await;
    (server, archive)
}

/// A server whose archive module uses `wrap` of the SQLite archive; also the store, for its
/// commit count.
async fn setup_with(
    wrap: impl FnOnce(Arc<SqliteArchive>) -> Arc<dyn ArchiveStore>,
) -> (Arc<Server>, Arc<SqliteStore>, Arc<SqliteArchive>) {
    let (store, archive) = accounts().await;
    let module = MamModule::new(wrap(archive.clone()), MamSettings::default());
    let server = Server::builder(CoreConfig::default(), store.clone())
        .modules(xmppd_im::modules())
        .module(Arc::new(module))
        .build();
    (server, store, archive)
}

/// A store with alice, bob and carol on localhost, and its archive.
async fn accounts() -> (Arc<SqliteStore>, Arc<SqliteArchive>) {
    let store = xmppd_core::testing::store_with_users(&["alice", "bob", "carol"]).await;
    let archive = Arc::new(SqliteArchive::open(store.clone()).await.unwrap());
    (store, archive)
}

async fn online(server: &Arc<Server>, user: &str) -> TestClient {
    let mut c = TestClient::login(server, user, "r").await;
    c.send(server, "<presence xmlns='jabber:client'/>").await;
    c.drain();
    c
}

async fn all(archive: &SqliteArchive, owner: &str) -> Vec<(i64, String)> {
    let req = PageRequest {
        filter: Filter::default(),
        paging: Paging::Forward { after: None },
        max: 100,
    };
    let page = archive.query(owner, req).await.unwrap();
    page.items
        .into_iter()
        .map(|i| {
            let el: Element = i.stanza.parse().unwrap();
            (
                i.id,
                el.get_child("body", "jabber:client")
                    .map(Element::text)
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn message(got: &[Element], body: &str) -> Element {
    got.iter()
        .find(|e| {
            e.name() == "message"
                && e.get_child("body", "jabber:client")
                    .map(Element::text)
                    .as_deref()
                    == Some(body)
        })
        .unwrap_or_else(|| panic!("no message {body:?} in {got:?}"))
        .clone()
}

#[tokio::test]
async fn both_sides_are_archived_and_the_delivered_copy_carries_the_recipients_id() {
    let (server, archive) = setup().await;
    let mut alice = online(&server, "alice").await;
    let mut bob = online(&server, "bob").await;
    alice
        .send(
            &server,
            "<message xmlns='jabber:client' to='bob@localhost' type='chat'><body>hi</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='forged'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='other.example' id='theirs'/>\
             <origin-id xmlns='urn:xmpp:sid:0' id='o1'/></message>",
        )
        .await;
    let got = message(&bob.drain(), "hi");
    let ids: Vec<_> = got.children().filter(|c| c.is("stanza-id", SID)).collect();
    assert_eq!(ids.len(), 2, "{got:?}");
    assert_eq!(
        ids[0].attr("by"),
        Some("other.example"),
        "a foreign archive's id stays"
    );
    assert_eq!(ids[1].attr("by"), Some("bob@localhost"));
    assert!(got.get_child("origin-id", SID).is_some());
    let bobs = all(&archive, "bob@localhost").await;
    assert_eq!(bobs.len(), 1);
    assert_eq!(ids[1].attr("id"), Some(bobs[0].0.to_string().as_str()));
    assert_eq!(all(&archive, "alice@localhost").await[0].1, "hi");
    assert!(alice.drain().iter().all(|e| e.name() != "message"));
}

#[tokio::test]
async fn the_roster_default_counts_shared_roster_groups() {
    let (store, archive) = accounts().await;
    let settings = MamSettings {
        default_policy: DefaultPolicy::Roster,
        ..MamSettings::default()
    };
    let jid = |s: &str| BareJid::new(s).unwrap();
    let staff = StaticGroup::new("Staff", vec![jid("alice@localhost"), jid("bob@localhost")]);
    let shared = Arc::new(SharedRoster::new(vec![Arc::new(staff)]));
    shared.refresh().await;
    let server = Server::builder(CoreConfig::default(), store.clone())
        .modules(xmppd_im::modules())
        .module(shared)
        .module(Arc::new(MamModule::new(archive.clone(), settings)))
        .build();
    let mut alice = online(&server, "alice").await;
    let mut carol = online(&server, "carol").await;
    let _bob = online(&server, "bob").await;
    for (who, c) in [("alice", &mut alice), ("carol", &mut carol)] {
        let xml = format!(
            "<message xmlns='jabber:client' to='bob@localhost' type='chat'>\
             <body>from {who}</body></message>"
        );
        c.send(&server, &xml).await;
    }
    // Alice is in Bob's roster through the shared group only; Carol is in no roster of his.
    let bodies: Vec<_> = all(&archive, "bob@localhost").await;
    let bodies: Vec<_> = bodies.into_iter().map(|(_, b)| b).collect();
    assert_eq!(bodies, ["from alice"]);
    assert_eq!(all(&archive, "alice@localhost").await.len(), 1);
    assert!(all(&archive, "carol@localhost").await.is_empty());
}

#[tokio::test]
async fn a_message_to_an_offline_user_is_archived_once_and_stored_with_its_id() {
    let (server, archive) = setup().await;
    let mut alice = online(&server, "alice").await;
    alice
        .send(
            &server,
            "<message xmlns='jabber:client' to='carol@localhost' type='chat'>\
             <body>later</body></message>",
        )
        .await;
    let carols = all(&archive, "carol@localhost").await;
    assert_eq!(carols.len(), 1);
    let mut carol = TestClient::login(&server, "carol", "r").await;
    carol
        .send(&server, "<presence xmlns='jabber:client'/>")
        .await;
    let got = message(&carol.pump(&server).await, "later");
    let sid = got
        .get_child("stanza-id", SID)
        .expect("offline copy has the id");
    assert_eq!(sid.attr("id"), Some(carols[0].0.to_string().as_str()));
    assert_eq!(all(&archive, "carol@localhost").await.len(), 1);
}

#[tokio::test]
async fn nobody_archives_for_an_unknown_account_and_self_messages_once() {
    let (server, archive) = setup().await;
    let mut alice = online(&server, "alice").await;
    alice
        .send(
            &server,
            "<message xmlns='jabber:client' to='nobody@localhost' type='chat'>\
             <body>hello?</body></message>",
        )
        .await;
    assert!(all(&archive, "nobody@localhost").await.is_empty());
    assert_eq!(
        all(&archive, "alice@localhost").await[0].1,
        "hello?",
        "the sender's copy"
    );
    alice
        .send(
            &server,
            "<message xmlns='jabber:client' to='someone@far.example' type='chat'>\
             <body>far away</body></message>",
        )
        .await;
    assert_eq!(all(&archive, "alice@localhost").await[1].1, "far away");
    alice
        .send(
            &server,
            "<message xmlns='jabber:client' to='alice@localhost' type='chat'>\
             <body>note to self</body></message>",
        )
        .await;
    let mine = all(&archive, "alice@localhost").await;
    let notes = mine.iter().filter(|(_, b)| b == "note to self").count();
    assert_eq!(notes, 1, "{mine:?}");
}

#[tokio::test]
async fn results_come_before_the_fin_and_only_the_owner_may_ask() {
    let (server, _archive) = setup().await;
    let mut alice = online(&server, "alice").await;
    let mut bob = online(&server, "bob").await;
    for i in 0..3 {
        alice
            .send(
                &server,
                &format!(
                    "<message xmlns='jabber:client' to='bob@localhost' type='chat'>\
                     <body>n{i}</body></message>"
                ),
            )
            .await;
    }
    bob.drain();
    bob.send(
        &server,
        "<iq xmlns='jabber:client' type='set' id='q'><query xmlns='urn:xmpp:mam:2' queryid='x'>\
         <set xmlns='http://jabber.org/protocol/rsm'><max>2</max></set></query></iq>",
    )
    .await;
    let got = bob.drain();
    let names: Vec<&str> = got.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["message", "message", "iq"]);
    let fin = got[2].get_child("fin", MAM).unwrap();
    assert_ne!(fin.attr("complete"), Some("true"), "more follows");
    for m in &got[..2] {
        let r = m.get_child("result", MAM).unwrap();
        assert_eq!(r.attr("queryid"), Some("x"));
    }
    alice
        .send(
            &server,
            "<iq xmlns='jabber:client' type='set' id='q2' to='bob@localhost'>\
             <query xmlns='urn:xmpp:mam:2'/></iq>",
        )
        .await;
    let got = alice.drain();
    let err = got.iter().find(|e| e.name() == "iq").unwrap();
    assert_eq!(err.attr("type"), Some("error"));
    assert!(err
        .get_child("error", "jabber:client")
        .unwrap()
        .get_child("forbidden", "urn:ietf:params:xml:ns:xmpp-stanzas")
        .is_some());
}

#[tokio::test]
async fn removing_the_account_deletes_its_archive() {
    let (server, archive) = setup().await;
    let mut alice = online(&server, "alice").await;
    alice
        .send(
            &server,
            "<message xmlns='jabber:client' to='bob@localhost' type='chat'><body>x</body></message>",
        )
        .await;
    assert_eq!(all(&archive, "bob@localhost").await.len(), 1);
    let bob = BareJid::new("bob@localhost").unwrap();
    server.remove_account(&bob, None).await.unwrap();
    assert!(all(&archive, "bob@localhost").await.is_empty());
    assert_eq!(
        all(&archive, "alice@localhost").await.len(),
        1,
        "the other side keeps its own"
    );
}

const RETRACT: &str = "urn:xmpp:message-retract:1";

/// `owner`'s archived stanzas, oldest first, with their ids.
async fn stanzas(
    archive: &SqliteArchive,
    owner: &str,
    fulltext: Option<&str>,
) -> Vec<(i64, Element)> {
    let req = PageRequest {
        filter: Filter {
            fulltext: fulltext.map(str::to_owned),
            ..Filter::default()
        },
        paging: Paging::Forward { after: None },
        max: 100,
    };
    let page = archive.query(owner, req).await.unwrap();
    page.items
        .into_iter()
        .map(|i| (i.id, i.stanza.parse().unwrap()))
        .collect()
}

fn retraction(to: &str, id: &str, target: &str) -> String {
    format!(
        "<message xmlns='jabber:client' to='{to}' type='chat' id='{id}'>\
         <retract xmlns='{RETRACT}' id='{target}'/>\
         <fallback xmlns='urn:xmpp:fallback:0' for='{RETRACT}'/>\
         <body>/me retracted a previous message</body><store xmlns='urn:xmpp:hints'/></message>"
    )
}

#[tokio::test]
async fn a_retraction_leaves_tombstones_in_both_archives_only_for_its_sender() {
    let (server, archive) = setup().await;
    let mut alice = online(&server, "alice").await;
    let mut bob = online(&server, "bob").await;
    let mut carol = online(&server, "carol").await;
    for (n, text) in [(1, "secret plans"), (2, "keep this")] {
        let xml = format!(
            "<message xmlns='jabber:client' to='bob@localhost' type='chat' id='m{n}'>\
             <body>{text}</body><origin-id xmlns='urn:xmpp:sid:0' id='o{n}'/></message>"
        );
        alice.send(&server, &xml).await;
    }
    let before_alice = stanzas(&archive, "alice@localhost", None).await;
    let before_bob = stanzas(&archive, "bob@localhost", None).await;

    // Retractions of a message their senders did not send change nothing.
    carol
        .send(&server, &retraction("bob@localhost", "c1", "m1"))
        .await;
    bob.send(&server, &retraction("alice@localhost", "b1", "m1"))
        .await;
    bob.send(&server, &retraction("alice@localhost", "b2", "o1"))
        .await;
    let unchanged = |now: &[(i64, Element)], before: &[(i64, Element)]| {
        assert_eq!(now[..before.len()], *before);
    };
    unchanged(
        &stanzas(&archive, "alice@localhost", None).await,
        &before_alice,
    );
    unchanged(&stanzas(&archive, "bob@localhost", None).await, &before_bob);

    alice
        .send(&server, &retraction("bob@localhost", "r1", "m1"))
        .await;
    let delivered = bob.drain();
    assert!(
        delivered.iter().any(|m| m.has_child("retract", RETRACT)),
        "the retraction is delivered as usual: {delivered:?}"
    );
    for owner in ["alice@localhost", "bob@localhost"] {
        let now = stanzas(&archive, owner, None).await;
        let before = if owner == "bob@localhost" {
            &before_bob
        } else {
            &before_alice
        };
        assert_eq!(now[0].0, before[0].0, "the row and its id stay");
        let t = &now[0].1;
        assert_eq!(t.attr("id"), Some("m1"));
        assert!(t.get_child("body", "jabber:client").is_none(), "{t:?}");
        let gone = t.get_child("retracted", RETRACT).expect("a tombstone");
        assert_eq!(gone.attr("id"), Some("r1"));
        assert_eq!(gone.attr("by"), Some("alice@localhost"));
        assert!(gone.attr("stamp").is_some());
        assert_eq!(now[1], before[1], "the other message stays");
        let last = &now.last().unwrap().1;
        assert!(
            last.has_child("retract", RETRACT),
            "the retraction is archived"
        );
        assert!(stanzas(&archive, owner, Some("secret")).await.is_empty());
        assert_eq!(stanzas(&archive, owner, Some("keep")).await.len(), 1);
    }

    // The first revision's form, by origin id.
    alice
        .send(
            &server,
            "<message xmlns='jabber:client' to='bob@localhost' type='chat' id='r2'>\
             <apply-to xmlns='urn:xmpp:fasten:0' id='o2'>\
             <retract xmlns='urn:xmpp:message-retract:0'/></apply-to></message>",
        )
        .await;
    let now = stanzas(&archive, "bob@localhost", None).await;
    let t = &now[1].1;
    assert!(t.get_child("body", "jabber:client").is_none(), "{t:?}");
    assert!(t
        .get_child("retracted", "urn:xmpp:message-retract:0")
        .is_some_and(|r| r.has_child("origin-id", SID)));
    assert!(stanzas(&archive, "bob@localhost", Some("keep"))
        .await
        .is_empty());
}

#[tokio::test]
async fn a_retraction_turns_the_offline_copy_into_its_tombstone() {
    let (server, archive) = setup().await;
    let mut alice = online(&server, "alice").await;
    let mut bob = online(&server, "bob").await;
    for (n, text) in [(1, "secret plans"), (2, "keep this")] {
        let xml = format!(
            "<message xmlns='jabber:client' to='carol@localhost' type='chat' id='m{n}'>\
             <body>{text}</body><origin-id xmlns='urn:xmpp:sid:0' id='o{n}'/></message>"
        );
        alice.send(&server, &xml).await;
    }
    // Only its sender's retraction reaches a stored copy.
    bob.send(&server, &retraction("carol@localhost", "b1", "m1"))
        .await;
    alice
        .send(&server, &retraction("carol@localhost", "r1", "o1"))
        .await;
    let archived = stanzas(&archive, "carol@localhost", None).await;
    let mut carol = TestClient::login(&server, "carol", "r").await;
    carol
        .send(&server, "<presence xmlns='jabber:client'/>")
        .await;
    let got: Vec<Element> = (carol.pump(&server).await.into_iter())
        .filter(|e| e.name() == "message")
        .collect();
    let ids: Vec<_> = got.iter().map(|m| m.attr("id").unwrap_or("")).collect();
    assert_eq!(ids, ["m1", "m2", "b1", "r1"], "{got:?}");
    let tomb = &got[0];
    assert!(
        tomb.get_child("body", "jabber:client").is_none(),
        "{tomb:?}"
    );
    let gone = tomb.get_child("retracted", RETRACT).expect("a tombstone");
    assert_eq!(
        (gone.attr("id"), gone.attr("by")),
        (Some("r1"), Some("alice@localhost"))
    );
    assert!(tomb.get_child("origin-id", SID).is_some());
    assert!(tomb.get_child("delay", "urn:xmpp:delay").is_some());
    // The stored copy agrees with the archive: same archive id, same tombstone.
    let sid = tomb
        .get_child("stanza-id", SID)
        .expect("the archive id stays");
    assert_eq!(sid.attr("id"), Some(archived[0].0.to_string().as_str()));
    let in_archive = archived[0].1.get_child("retracted", RETRACT).unwrap();
    assert_eq!(in_archive.attr("id"), Some("r1"));
    assert_eq!(
        got[1].get_child("body", "jabber:client").map(Element::text),
        Some("keep this".into())
    );
}

#[tokio::test]
async fn a_local_message_waits_for_one_commit_holding_both_sides() {
    let (server, store, archive) = setup_with(|a| a).await;
    let mut alice = online(&server, "alice").await;
    let mut bob = online(&server, "bob").await;
    let commits = store.commit_count();
    alice
        .send(
            &server,
            "<message xmlns='jabber:client' to='bob@localhost/r' type='chat'><body>once</body></message>",
        )
        .await;
    assert_eq!(
        store.commit_count() - commits,
        1,
        "both rows in one transaction"
    );
    let got = message(&bob.drain(), "once");
    let (alices, bobs) = (
        all(&archive, "alice@localhost").await,
        all(&archive, "bob@localhost").await,
    );
    assert_eq!((alices.len(), bobs.len()), (1, 1));
    assert!(alices[0].0 < bobs[0].0, "the sender's row first");
    let sid = got.get_child("stanza-id", SID).unwrap();
    assert_eq!(sid.attr("id"), Some(bobs[0].0.to_string().as_str()));
    // The next message of the pair is archived the same way, nothing left over from this one.
    alice
        .send(
            &server,
            "<message xmlns='jabber:client' to='bob@localhost/r' type='chat'><body>twice</body></message>",
        )
        .await;
    assert_eq!(store.commit_count() - commits, 2);
    assert_eq!(all(&archive, "alice@localhost").await.len(), 2);
}

/// The SQLite archive, except that every append fails (a full disk).
struct FailingAppends(Arc<SqliteArchive>);

#[async_trait]
impl ArchiveStore for FailingAppends {
    fn append_all(&self, _: Vec<NewMessage>) -> Queued<Vec<(i64, i64)>> {
        let full = StorageError::Backend("database or disk is full".into());
        Box::pin(std::future::ready(Err(full)))
    }
    async fn query(&self, owner: &str, req: PageRequest) -> Result<Page, ArchiveError> {
        self.0.query(owner, req).await
    }
    async fn bounds(&self, owner: &str) -> Result<Option<((i64, i64), (i64, i64))>, StorageError> {
        self.0.bounds(owner).await
    }
    async fn prefs(&self, owner: &str) -> Result<Option<Prefs>, StorageError> {
        self.0.prefs(owner).await
    }
    async fn set_prefs(&self, owner: &str, prefs: &Prefs) -> Result<(), StorageError> {
        self.0.set_prefs(owner, prefs).await
    }
    async fn remove_owner(&self, owner: &str) -> Result<u64, StorageError> {
        self.0.remove_owner(owner).await
    }
    async fn purge_older(&self, before_ms: i64, limit: usize) -> Result<usize, StorageError> {
        self.0.purge_older(before_ms, limit).await
    }
    async fn purge_owner(
        &self,
        owner: &str,
        before_ms: i64,
        limit: usize,
    ) -> Result<usize, StorageError> {
        self.0.purge_owner(owner, before_ms, limit).await
    }
    async fn find_latest(
        &self,
        owner: &str,
        with_bare: &str,
        direction: Direction,
        needle: &str,
        names: Matcher,
    ) -> Result<Option<(i64, String)>, StorageError> {
        self.0
            .find_latest(owner, with_bare, direction, needle, names)
            .await
    }
    async fn replace_stanza(
        &self,
        owner: &str,
        id: i64,
        stanza: String,
    ) -> Result<bool, StorageError> {
        self.0.replace_stanza(owner, id, stanza).await
    }
    async fn trim_to_bytes(&self, max_bytes: u64, limit: usize) -> Result<usize, StorageError> {
        self.0.trim_to_bytes(max_bytes, limit).await
    }
    async fn total_bytes(&self) -> Result<u64, StorageError> {
        self.0.total_bytes().await
    }
}

#[tokio::test]
async fn a_failing_archive_bounces_nothing_and_delivers_everything() {
    let (server, _, archive) = setup_with(|a| Arc::new(FailingAppends(a))).await;
    let mut alice = online(&server, "alice").await;
    let mut bob = online(&server, "bob").await;
    for body in ["one", "two"] {
        alice
            .send(
                &server,
                &format!(
                    "<message xmlns='jabber:client' to='bob@localhost' type='chat'>\
                     <body>{body}</body></message>"
                ),
            )
            .await;
    }
    let got = bob.drain();
    for body in ["one", "two"] {
        let m = message(&got, body);
        assert!(
            m.get_child("stanza-id", SID).is_none(),
            "no id of a row not stored"
        );
    }
    // To an account with no session: offline storage still takes it.
    alice
        .send(
            &server,
            "<message xmlns='jabber:client' to='carol@localhost' type='chat'><body>three</body></message>",
        )
        .await;
    assert!(alice.drain().is_empty(), "no error for the sender");
    assert!(all(&archive, "alice@localhost").await.is_empty());
    let mut carol = TestClient::login(&server, "carol", "r").await;
    carol
        .send(&server, "<presence xmlns='jabber:client'/>")
        .await;
    message(&carol.pump(&server).await, "three");
}

/// What offline storage holds for `user`: the bodies, in order.
async fn offline_bodies(store: &SqliteStore, user: &str) -> Vec<String> {
    use xmppd_storage::{OfflineStore, UserRef};
    let stored = (store
        .offline_messages(&UserRef::new(user, "localhost"))
        .await)
        .unwrap();
    (stored.iter())
        .map(|m| {
            let el: Element = m.xml.parse().unwrap();
            el.get_child("body", "jabber:client").unwrap().text()
        })
        .collect()
}

#[tokio::test]
async fn what_the_archive_holds_is_not_stored_offline_too_for_a_client_syncing_through_it() {
    let (server, store, _) = setup_with(|a| a).await;
    let mut alice = online(&server, "alice").await;
    // Bob's client queries the archive; carol's does not. Neither reads what comes next,
    // which is still queued when their sessions end (a resumption that timed out).
    let mut bob = online(&server, "bob").await;
    let query = format!("<iq xmlns='jabber:client' type='set' id='q'><query xmlns='{MAM}'/></iq>");
    bob.send(&server, &query).await;
    bob.drain();
    let carol = online(&server, "carol").await;
    let chat = |to: &str, body: &str| {
        format!("<message xmlns='jabber:client' to='{to}@localhost/r' type='chat'><body>{body}</body></message>")
    };
    for to in ["bob", "carol"] {
        alice.send(&server, &chat(to, "archived")).await;
    }
    // Bob stops archiving: what comes next is in no archive of his.
    let never = format!(
        "<iq xmlns='jabber:client' type='set' id='p'><prefs xmlns='{MAM}' default='never'/></iq>"
    );
    bob.send(&server, &never).await;
    alice.send(&server, &chat("bob", "not archived")).await;
    server.unbind(bob.session).await;
    server.unbind(carol.session).await;
    assert_eq!(offline_bodies(&store, "bob").await, ["not archived"]);
    assert_eq!(offline_bodies(&store, "carol").await, ["archived"]);
}
