//! Personal eventing on a server with in-memory sessions and the IM modules: entity
//! capabilities are verified before they are cached, and a service's creation policy.

use std::sync::Arc;

use base64::Engine as _;
use minidom::Element;
use xmpp_parsers::caps::{compute_disco, hash_caps};
use xmpp_parsers::disco::{DiscoInfoResult, Identity};
use xmpp_parsers::hashes::Algo;
use xmppd_core::address::Bare;
use xmppd_core::testing::{store_with_users, TestClient};
use xmppd_core::{CoreConfig, Server};
use xmppd_pubsub::{CreatePolicy, Engine, Limits, Pep, PubSubService, SqliteNodes};

const NS: &str = "xmlns='jabber:client'";
const TUNE: &str = "http://jabber.org/protocol/tune";

async fn setup(policy: CreatePolicy, admins: &[&str]) -> Arc<Server> {
    let store = store_with_users(&["alice", "bob", "carol"]).await;
    let nodes = SqliteNodes::open(store.clone()).await.unwrap();
    let engine = Arc::new(Engine {
        nodes: Arc::new(nodes),
        limits: Limits::default(),
    });
    let config = CoreConfig {
        admins: admins.iter().map(|a| a.parse().unwrap()).collect(),
        ..CoreConfig::default()
    };
    Server::builder(config, store)
        .module(Arc::new(Pep::new(engine.clone(), 16)))
        .modules(xmppd_im::modules())
        .component(
            "pubsub.localhost",
            Arc::new(PubSubService::new("pubsub.localhost", engine, policy)),
        )
        .build()
}

fn info(features: &[&str]) -> DiscoInfoResult {
    DiscoInfoResult {
        node: None,
        identities: vec![Identity {
            category: "client".into(),
            type_: "pc".into(),
            lang: None,
            name: None,
        }],
        features: features.iter().map(|f| f.to_string()).collect(),
        extensions: Vec::new(),
    }
}

fn ver_of(info: &DiscoInfoResult) -> String {
    let hash = hash_caps(&compute_disco(info), Algo::Sha_1).unwrap();
    base64::engine::general_purpose::STANDARD.encode(hash.hash)
}

/// Sends available presence with capabilities `ver`; returns the id of the server's disco
/// query, if it asked.
async fn present(server: &Arc<Server>, c: &mut TestClient, ver: &str) -> Option<String> {
    c.drain();
    let caps = format!(
        "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:test' ver='{ver}'/>"
    );
    c.send(server, &format!("<presence {NS}>{caps}</presence>"))
        .await;
    c.drain()
        .into_iter()
        .find(|e| e.name() == "iq" && e.attr("type") == Some("get"))
        .map(|iq| {
            let q = iq.get_child("query", "http://jabber.org/protocol/disco#info");
            assert_eq!(
                q.and_then(|q| q.attr("node")),
                Some(format!("urn:test#{ver}").as_str())
            );
            iq.attr("id").unwrap().to_owned()
        })
}

/// `c` answers the query `id` with `info`, to its own account.
async fn answer(server: &Arc<Server>, c: &mut TestClient, id: &str, info: &DiscoInfoResult) {
    let to = c.session.jid.bare().to_string();
    answer_to(server, c, &to, id, info).await;
}

async fn answer_to(
    server: &Arc<Server>,
    c: &mut TestClient,
    to: &str,
    id: &str,
    info: &DiscoInfoResult,
) {
    let mut iq: Element = format!("<iq {NS} type='result' id='{id}' to='{to}'/>")
        .parse()
        .unwrap();
    iq.append_child(info.clone().into());
    server.handle_from_client(&mut c.session, iq).await;
}

async fn publish_tune(server: &Arc<Server>, alice: &mut TestClient, title: &str) -> Vec<Element> {
    alice
        .send(
            server,
            &format!(
                "<iq {NS} type='set' id='p'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
                 <publish node='{TUNE}'><item><tune xmlns='{TUNE}'><title>{title}</title></tune>\
                 </item></publish></pubsub></iq>"
            ),
        )
        .await;
    alice.drain()
}

fn is_tune_event(e: &Element) -> bool {
    e.name() == "message"
        && e.get_child("event", "http://jabber.org/protocol/pubsub#event")
            .and_then(|ev| ev.get_child("items", "http://jabber.org/protocol/pubsub#event"))
            .is_some_and(|items| items.attr("node") == Some(TUNE))
}

#[tokio::test]
async fn a_verified_hash_is_cached_and_a_forged_one_is_not() {
    let server = setup(CreatePolicy::Local, &[]).await;
    let notify = format!("{TUNE}+notify");
    let good = info(&[&notify]);
    let good_ver = ver_of(&good);

    // The first client with a string is asked; its answer matches and is cached.
    let mut bob = TestClient::login(&server, "bob", "one").await;
    let id = present(&server, &mut bob, &good_ver).await.expect("asked");
    answer(&server, &mut bob, &id, &good).await;
    // The next one with the same string is not asked.
    let mut bob2 = TestClient::login(&server, "bob", "two").await;
    assert_eq!(present(&server, &mut bob2, &good_ver).await, None);

    // A string whose answer does not hash to it is not cached: the next client that shows it
    // is asked again, and gets what it answers itself.
    let forged = "AAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let mut carol = TestClient::login(&server, "carol", "one").await;
    let id = present(&server, &mut carol, forged).await.expect("asked");
    answer(&server, &mut carol, &id, &good).await;
    let mut carol2 = TestClient::login(&server, "carol", "two").await;
    let id = present(&server, &mut carol2, forged)
        .await
        .expect("asked again");
    answer(&server, &mut carol2, &id, &info(&[])).await;

    // Both of bob's resources get bob's own events; carol's first resource, which asked
    // for tunes, gets hers; her second did not ask.
    let events = publish_tune(&server, &mut bob, "x").await;
    assert!(events.iter().any(is_tune_event), "{events:?}");
    assert!(bob2.drain().iter().any(is_tune_event));
    let events = publish_tune(&server, &mut carol, "y").await;
    assert!(events.iter().any(is_tune_event), "{events:?}");
    assert!(!carol2.drain().iter().any(is_tune_event));
}

#[tokio::test]
async fn an_answer_from_another_entity_is_not_taken() {
    let server = setup(CreatePolicy::Local, &[]).await;
    let notify = format!("{TUNE}+notify");
    let good = info(&[&notify]);
    let good_ver = ver_of(&good);
    let mut bob = TestClient::login(&server, "bob", "one").await;
    let id = present(&server, &mut bob, &good_ver).await.expect("asked");
    // alice answers bob's query in his stead (to bob's bare JID).
    let mut alice = TestClient::login(&server, "alice", "one").await;
    answer_to(&server, &mut alice, "bob@localhost", &id, &good).await;
    let mut bob2 = TestClient::login(&server, "bob", "two").await;
    assert!(
        present(&server, &mut bob2, &good_ver).await.is_some(),
        "not cached from someone else's answer"
    );
}

#[tokio::test]
async fn the_service_creation_policy_admins() {
    let server = setup(CreatePolicy::Admins, &["alice@localhost"]).await;
    let create = |id: &str, node: &str| {
        format!(
            "<iq {NS} type='set' id='{id}' to='pubsub.localhost'>\
             <pubsub xmlns='http://jabber.org/protocol/pubsub'><create node='{node}'/></pubsub></iq>"
        )
    };
    let mut bob = TestClient::login(&server, "bob", "r").await;
    bob.send(&server, &create("c1", "news")).await;
    let reply = bob.drain().pop().unwrap();
    assert_eq!(reply.attr("type"), Some("error"));
    assert!(reply
        .get_child("error", "jabber:client")
        .unwrap()
        .has_child("forbidden", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    let mut alice = TestClient::login(&server, "alice", "r").await;
    alice.send(&server, &create("c2", "news")).await;
    assert_eq!(alice.drain().pop().unwrap().attr("type"), Some("result"));
}

#[tokio::test]
async fn an_accounts_nodes_and_subscriptions_go_with_it() {
    let store = store_with_users(&["alice", "bob"]).await;
    let nodes = SqliteNodes::open(store.clone()).await.unwrap();
    let engine = Arc::new(Engine {
        nodes: Arc::new(nodes),
        limits: Limits::default(),
    });
    let server = Server::builder(CoreConfig::default(), store)
        .module(Arc::new(Pep::new(engine.clone(), 16)))
        .modules(xmppd_im::modules())
        .build();
    let mut alice = TestClient::login(&server, "alice", "r").await;
    publish_tune(&server, &mut alice, "x").await;
    for jid in ["alice@localhost", "alice@localhost/r", "alice@localhost.x"] {
        engine
            .nodes
            .set_subscription("bob@localhost", "n", jid, true)
            .await
            .unwrap();
    }
    assert_eq!(
        engine.nodes.nodes("alice@localhost").await.unwrap().len(),
        1
    );
    server
        .remove_account(&"alice@localhost".parse().unwrap(), None)
        .await
        .unwrap();
    assert!(engine
        .nodes
        .nodes("alice@localhost")
        .await
        .unwrap()
        .is_empty());
    for jid in ["alice@localhost", "alice@localhost/r"] {
        assert!(engine
            .nodes
            .subscriptions_of("bob@localhost", jid)
            .await
            .unwrap()
            .is_empty());
    }
    // Another account whose JID only starts with the same characters keeps its own.
    assert_eq!(
        engine
            .nodes
            .subscribers("bob@localhost", "n")
            .await
            .unwrap(),
        ["alice@localhost.x"]
    );
}

/// Records the nodes it is told of.
/// A server with alice and PEP, and a recorder watching PEP.
async fn watched_alice() -> (Arc<Server>, Arc<Pep>, Arc<Recorder>) {
    let store = store_with_users(&["alice"]).await;
    let nodes = SqliteNodes::open(store.clone()).await.unwrap();
    let engine = Arc::new(Engine {
        nodes: Arc::new(nodes),
        limits: Limits::default(),
    });
    let pep = Arc::new(Pep::new(engine, 16));
    let recorder = Arc::new(Recorder::default());
    let weak: std::sync::Weak<dyn xmppd_pubsub::PepWatcher> =
        Arc::downgrade(&(recorder.clone() as Arc<dyn xmppd_pubsub::PepWatcher>));
    pep.watch(weak);
    let server = Server::builder(CoreConfig::default(), store)
        .module(pep.clone())
        .modules(xmppd_im::modules())
        .build();
    (server, pep, recorder)
}

#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

#[async_trait::async_trait]
impl xmppd_pubsub::PepWatcher for Recorder {
    async fn on_node_changed(
        &self,
        _cx: &mut xmppd_core::Context<'_>,
        owner: &jid::BareJid,
        node: &str,
    ) {
        self.0.lock().unwrap().push(format!("{owner} {node}"));
    }
}

#[tokio::test]
async fn watchers_hear_of_the_accounts_changes_and_not_of_their_own() {
    let (server, pep, recorder) = watched_alice().await;
    let mut alice = TestClient::login(&server, "alice", "r").await;
    publish_tune(&server, &mut alice, "x").await;
    // A retraction without notify="true" causes no event, yet changes the node; one that
    // fails changes nothing.
    for (id, kind) in [("t1", "publish"), ("t1", "retract"), ("nope", "retract")] {
        let item = if kind == "publish" {
            format!("<item id='{id}'><tune xmlns='{TUNE}'/></item>")
        } else {
            format!("<item id='{id}'/>")
        };
        alice
            .send(
                &server,
                &format!(
                    "<iq {NS} type='set' id='r'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
                     <{kind} node='{TUNE}'>{item}</{kind}></pubsub></iq>"
                ),
            )
            .await;
    }
    let mut scratch = xmppd_core::testing::Scratch::new();
    let owner: jid::BareJid = "alice@localhost".parse().unwrap();
    let publish: Element = format!(
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{TUNE}'>\
         <item id='s'><tune xmlns='{TUNE}'/></item></publish></pubsub>"
    )
    .parse()
    .unwrap();
    let reply = {
        let mut cx = scratch.context(&server);
        pep.request_as_owner(&mut cx, &owner, xmppd_core::module::IqKind::Set, publish)
            .await
    };
    assert!(reply.is_ok(), "{reply:?}");
    let items = {
        let mut cx = scratch.context(&server);
        let get: Element = format!(
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{TUNE}'/></pubsub>"
        )
        .parse()
        .unwrap();
        pep.request_as_owner(&mut cx, &owner, xmppd_core::module::IqKind::Get, get)
            .await
            .unwrap()
            .unwrap()
    };
    let item = items.get_child("items", "http://jabber.org/protocol/pubsub");
    let ids: Vec<_> = (item.unwrap().children().filter_map(|i| i.attr("id"))).collect();
    assert_eq!(ids, ["s"]);
    assert_eq!(
        *recorder.0.lock().unwrap(),
        vec![format!("alice@localhost {TUNE}"); 3]
    );
}

#[tokio::test]
async fn watchers_hear_of_purges_and_deletions_the_node_keeps_quiet_about() {
    let (server, _pep, recorder) = watched_alice().await;
    let mut alice = TestClient::login(&server, "alice", "r").await;
    let quiet = "urn:test:quiet";
    let requests = [
        format!(
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{quiet}'>\
             <item id='1'><x xmlns='urn:t'/></item></publish><publish-options>\
             <x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
             <value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             <field var='pubsub#notify_retract'><value>0</value></field>\
             <field var='pubsub#notify_delete'><value>0</value></field></x>\
             </publish-options></pubsub>"
        ),
        format!("<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><purge node='{quiet}'/></pubsub>"),
        format!("<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete node='{quiet}'/></pubsub>"),
    ];
    for request in &requests {
        alice
            .send(
                &server,
                &format!("<iq {NS} type='set' id='q'>{request}</iq>"),
            )
            .await;
        let reply = alice.drain().pop().unwrap();
        assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    }
    assert_eq!(
        *recorder.0.lock().unwrap(),
        vec![format!("alice@localhost {quiet}"); 3]
    );
}
