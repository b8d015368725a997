//! RFC 6121 flows through the core alone: sessions bound in memory, stanzas in through
//! `handle_from_client`, stanzas out of each session's queue. A real SQLite store underneath.

use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use xmppd_core::stanza::NS_CLIENT;
use xmppd_core::testing::{TestClient as Client, CLOSE_NS};
use xmppd_core::{BareJid, CoreConfig, QueueLimits, Server, SessionInfo};
use xmppd_storage::{CredentialStore, SqliteStore, UserRef};

async fn setup(users: &[&str], cfg: CoreConfig) -> Arc<Server> {
    setup_with(users, cfg, Vec::new()).await
}

/// A server on an in-memory store with `users` on localhost and extra `modules`.
async fn setup_with(
    users: &[&str],
    cfg: CoreConfig,
    modules: Vec<Arc<dyn xmppd_core::module::Module>>,
) -> Arc<Server> {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    for u in users {
        store
            .create_user(&UserRef::new(*u, "localhost"), &[])
            .await
            .unwrap();
    }
    modules
        .into_iter()
        .fold(
            Server::builder(cfg, store).modules(xmppd_im::modules()),
            |b, m| b.module(m),
        )
        .build()
}

async fn go_online(server: &Arc<Server>, c: &mut Client) {
    c.go_online(server).await;
}

async fn login(server: &Arc<Server>, user: &str, res: &str) -> Client {
    Client::login(server, user, res).await
}

/// A roster set (RFC 6121 §2.3) of one item.
async fn set_roster_item(server: &Arc<Server>, c: &mut Client, id: &str, jid: &str, name: &str) {
    c.send(
        server,
        &format!(
            "<iq {} type='set' id='{id}'><query xmlns='jabber:iq:roster'>\
             <item jid='{jid}' name='{name}'/></query></iq>",
            ns()
        ),
    )
    .await;
}

fn ns() -> &'static str {
    "xmlns='jabber:client'"
}

fn find<'a>(v: &'a [Element], name: &str, ty: Option<&str>) -> Option<&'a Element> {
    v.iter().find(|e| e.name() == name && e.attr("type") == ty)
}

#[tokio::test]
async fn subscription_handshake_then_presence_and_chat() {
    let server = setup(&["alice", "bob"], CoreConfig::default()).await;
    let mut a = login(&server, "alice", "pc").await;
    let mut b = login(&server, "bob", "phone").await;
    go_online(&server, &mut a).await;
    go_online(&server, &mut b).await;
    a.send(
        &server,
        &format!("<presence {} to='bob@localhost' type='subscribe'/>", ns()),
    )
    .await;
    let got_a = a.drain();
    let push = find(&got_a, "iq", Some("set")).expect("roster push to alice");
    let item = push.children().next().unwrap().children().next().unwrap();
    assert_eq!(item.attr("ask"), Some("subscribe"));
    let got_b = b.drain();
    let sub = find(&got_b, "presence", Some("subscribe")).expect("bob sees the request");
    assert_eq!(
        sub.attr("from"),
        Some("alice@localhost"),
        "outbound subscription uses bare JID"
    );

    b.send(
        &server,
        &format!(
            "<presence {} to='alice@localhost' type='subscribed'/>",
            ns()
        ),
    )
    .await;
    let got_a = a.drain();
    assert!(find(&got_a, "presence", Some("subscribed")).is_some());
    let avail = find(&got_a, "presence", None).expect("alice receives bob's presence");
    assert_eq!(avail.attr("from"), Some("bob@localhost/phone"));
    let push = find(&got_a, "iq", Some("set")).expect("roster push: subscription to");
    let item = push.children().next().unwrap().children().next().unwrap();
    assert_eq!(item.attr("subscription"), Some("to"));
    assert_eq!(item.attr("ask"), None);

    a.send(
        &server,
        &format!(
            "<message {} to='bob@localhost' type='chat' id='m1'><body>hi</body></message>",
            ns()
        ),
    )
    .await;
    let got_b = b.drain();
    let m = find(&got_b, "message", Some("chat")).expect("bob gets the chat");
    assert_eq!(m.attr("from"), Some("alice@localhost/pc"));

    // Bob goes offline: alice (subscribed to bob) sees unavailable.
    b.logout(&server).await;
    let got_a = a.drain();
    let un = find(&got_a, "presence", Some("unavailable")).expect("unavailable on disconnect");
    assert_eq!(un.attr("from"), Some("bob@localhost/phone"));
}

#[tokio::test]
async fn offline_messages_are_kept_capped_and_delivered_with_delay() {
    let cfg = CoreConfig {
        offline_max: 2,
        ..CoreConfig::default()
    };
    let server = setup(&["alice", "bob"], cfg).await;
    let mut a = login(&server, "alice", "pc").await;
    for i in 0..3 {
        a.send(
            &server,
            &format!(
                "<message {} to='bob@localhost' id='o{i}'><body>m{i}</body></message>",
                ns()
            ),
        )
        .await;
    }
    let got_a = a.drain();
    let errs: Vec<_> = got_a
        .iter()
        .filter(|e| e.attr("type") == Some("error"))
        .collect();
    assert_eq!(errs.len(), 1, "third message bounces: {got_a:?}");
    assert_eq!(errs[0].attr("id"), Some("o2"));
    assert!(errs[0]
        .get_child("error", "jabber:client")
        .unwrap()
        .has_child("service-unavailable", "urn:ietf:params:xml:ns:xmpp-stanzas"));

    let mut b = login(&server, "bob", "phone").await;
    b.send(&server, &format!("<presence {}/>", ns())).await;
    let got_b = b.pump(&server).await;
    let msgs: Vec<_> = got_b.iter().filter(|e| e.name() == "message").collect();
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        msgs[0].get_child("body", "jabber:client").unwrap().text(),
        "m0"
    );
    assert!(msgs[0].has_child("delay", "urn:xmpp:delay"));
    // Delivered once only.
    let mut b2 = login(&server, "bob", "tablet").await;
    b2.send(&server, &format!("<presence {}/>", ns())).await;
    assert!(b2.pump(&server).await.iter().all(|e| e.name() != "message"));
}

#[tokio::test]
async fn an_offline_backlog_larger_than_the_queue_arrives_whole_and_in_order() {
    let server = setup(&["alice", "bob"], CoreConfig::default()).await;
    let mut a = login(&server, "alice", "pc").await;
    const N: usize = 300;
    for i in 0..N {
        let body = format!("m{i:03} {}", "z".repeat(200));
        let xml = format!(
            "<message {} to='bob@localhost'><body>{body}</body></message>",
            ns()
        );
        a.send(&server, &xml).await;
    }
    assert!(a.drain().is_empty(), "all stored");
    // Far less room than the backlog needs, for others' stanzas and for replies alike.
    let limits = QueueLimits {
        stanzas: 8,
        bytes: 4096,
        reply_bytes: 16 * 1024,
    };
    let bob = BareJid::new("bob@localhost").unwrap();
    let mut b = Client::login_with(&server, bob.clone(), "phone", limits).await;
    b.send(&server, &format!("<presence {}/>", ns())).await;
    let bodies = |got: &[Element]| -> Vec<String> {
        got.iter()
            .filter_map(|e| e.get_child("body", "jabber:client"))
            .map(|b| b.text()[..4].to_owned())
            .collect()
    };
    // Coming online queues only a request to report back once written; the writer's report
    // brings the first page. Nothing leaves storage before the writer reports that written.
    assert!(bodies(&b.drain()).is_empty());
    server.written(&b.session).await;
    let first = bodies(&b.drain());
    assert!(!first.is_empty() && first.len() < N, "{}", first.len());
    let uref = UserRef::new("bob", "localhost");
    assert_eq!(server.store().offline_count(&uref).await.unwrap(), N);
    server.written(&b.session).await;
    assert_eq!(
        server.store().offline_count(&uref).await.unwrap(),
        N - first.len(),
        "a written page is removed"
    );
    let mut all = first;
    all.extend(bodies(&b.pump(&server).await));
    let want: Vec<String> = (0..N).map(|i| format!("m{i:03}")).collect();
    assert_eq!(all, want);
    assert_eq!(server.store().offline_count(&uref).await.unwrap(), 0);
    b.logout(&server).await;
}

#[tokio::test]
async fn unknown_recipient_gets_service_unavailable() {
    let server = setup(&["alice"], CoreConfig::default()).await;
    let mut a = login(&server, "alice", "pc").await;
    a.send(
        &server,
        &format!(
            "<message {} to='nobody@localhost'><body>x</body></message>",
            ns()
        ),
    )
    .await;
    a.send(
        &server,
        &format!(
            "<message {} to='x@remote.example'><body>x</body></message>",
            ns()
        ),
    )
    .await;
    let got = a.drain();
    assert_eq!(got.len(), 2);
    assert!(got[0]
        .get_child("error", "jabber:client")
        .unwrap()
        .has_child("service-unavailable", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    assert!(got[1]
        .get_child("error", "jabber:client")
        .unwrap()
        .has_child(
            "remote-server-not-found",
            "urn:ietf:params:xml:ns:xmpp-stanzas"
        ));
}

/// RFC 7622 §3.2: a final dot on the domain is stripped before routing, so the address names
/// the same resource as without it.
#[tokio::test]
async fn a_final_dot_on_the_domain_reaches_the_same_resource() {
    let server = setup(&["alice", "bob"], CoreConfig::default()).await;
    let mut a = login(&server, "alice", "pc").await;
    let mut phone = login(&server, "bob", "phone").await;
    let mut pc = login(&server, "bob", "pc").await;
    go_online(&server, &mut phone).await;
    go_online(&server, &mut pc).await;
    phone.drain();
    a.send(
        &server,
        &format!(
            "<message {} to='bob@localhost./phone' type='chat'><body>x</body></message>",
            ns()
        ),
    )
    .await;
    let got = phone.drain();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].attr("to"), Some("bob@localhost/phone"));
    assert!(pc.drain().is_empty(), "another resource got it");
    assert!(a.drain().is_empty(), "the sender got an error");
}

/// A roster item written with a final dot on the contact's domain is the same contact.
#[tokio::test]
async fn roster_items_take_the_canonical_jid() {
    let server = setup(&["alice", "bob"], CoreConfig::default()).await;
    let mut a = login(&server, "alice", "pc").await;
    go_online(&server, &mut a).await;
    for (id, jid) in [("s1", "bob@localhost"), ("s2", "bob@localhost.")] {
        set_roster_item(&server, &mut a, id, jid, "Bob").await;
    }
    a.send(
        &server,
        &format!(
            "<iq {} type='get' id='g'><query xmlns='jabber:iq:roster'/></iq>",
            ns()
        ),
    )
    .await;
    let got = a.drain();
    let roster = got
        .iter()
        .find(|e| e.attr("id") == Some("g"))
        .expect("roster result");
    let jids: Vec<_> = roster
        .children()
        .flat_map(|q| q.children())
        .filter_map(|item| item.attr("jid"))
        .collect();
    assert_eq!(jids, ["bob@localhost"]);
}

#[tokio::test]
async fn priorities_choose_resources() {
    let server = setup(&["alice", "bob"], CoreConfig::default()).await;
    let mut a = login(&server, "alice", "pc").await;
    let mut b1 = login(&server, "bob", "one").await;
    let mut b2 = login(&server, "bob", "two").await;
    let mut b3 = login(&server, "bob", "neg").await;
    b1.send(
        &server,
        &format!("<presence {}><priority>5</priority></presence>", ns()),
    )
    .await;
    b2.send(
        &server,
        &format!("<presence {}><priority>1</priority></presence>", ns()),
    )
    .await;
    b3.send(
        &server,
        &format!("<presence {}><priority>-1</priority></presence>", ns()),
    )
    .await;
    for c in [&mut b1, &mut b2, &mut b3] {
        c.drain();
    }
    a.send(
        &server,
        &format!(
            "<message {} to='bob@localhost' type='chat'><body>x</body></message>",
            ns()
        ),
    )
    .await;
    assert_eq!(b1.drain().len(), 1);
    assert!(b2.drain().is_empty());
    assert!(b3.drain().is_empty());
    b2.send(
        &server,
        &format!("<presence {}><priority>5</priority></presence>", ns()),
    )
    .await;
    b1.drain();
    b2.drain();
    b3.drain();
    a.send(
        &server,
        &format!(
            "<message {} to='bob@localhost' type='chat'><body>y</body></message>",
            ns()
        ),
    )
    .await;
    assert_eq!(b1.drain().len(), 1, "tie: both get it");
    assert_eq!(b2.drain().len(), 1, "tie: both get it");
    assert!(
        b3.drain().is_empty(),
        "negative priority never gets bare-JID messages"
    );
    // A full JID reaches even the negative-priority resource.
    a.send(
        &server,
        &format!(
            "<message {} to='bob@localhost/neg' type='chat'><body>z</body></message>",
            ns()
        ),
    )
    .await;
    assert_eq!(b3.drain().len(), 1);
}

/// Elements of `got` that are presence of `ty` from `from`.
fn presence_from<'a>(got: &'a [Element], from: &str, ty: Option<&str>) -> Vec<&'a Element> {
    got.iter()
        .filter(|e| e.name() == "presence" && e.attr("type") == ty && e.attr("from") == Some(from))
        .collect()
}

#[tokio::test]
async fn a_replaced_session_ends_its_presence_before_its_successor_speaks() {
    let server = setup(&["alice", "bob", "carol"], CoreConfig::default()).await;
    let store = server.store();
    let item = |jid: &str, subscription| xmppd_storage::RosterItem {
        jid: jid.into(),
        subscription,
        ..Default::default()
    };
    let (alice_ref, bob_ref) = (
        UserRef::new("alice", "localhost"),
        UserRef::new("bob", "localhost"),
    );
    use xmppd_storage::Subscription;
    store
        .set_roster_item(&alice_ref, &item("bob@localhost", Subscription::From))
        .await
        .unwrap();
    store
        .set_roster_item(&bob_ref, &item("alice@localhost", Subscription::To))
        .await
        .unwrap();
    let mut bob = login(&server, "bob", "phone").await;
    let mut carol = login(&server, "carol", "desk").await;
    go_online(&server, &mut bob).await;
    go_online(&server, &mut carol).await;
    let mut old = login(&server, "alice", "pc").await;
    let mut other = login(&server, "alice", "phone").await;
    go_online(&server, &mut old).await;
    go_online(&server, &mut other).await;
    // Directed presence, as a chat room join is.
    old.send(
        &server,
        &format!("<presence {} to='carol@localhost/desk'/>", ns()),
    )
    .await;
    for c in [&mut bob, &mut carol, &mut old, &mut other] {
        c.drain();
    }

    let mut new = login(&server, "alice", "pc").await;
    let got = old.drain();
    assert_eq!(got.len(), 1);
    assert!(got[0].is("conflict", CLOSE_NS), "{got:?}");
    // Before the new session has said anything, everyone who had the old one's presence was
    // told it ended: the subscriber, the directed-presence target, the account's other
    // resource.
    for (who, c) in [
        ("bob", &mut bob),
        ("carol", &mut carol),
        ("phone", &mut other),
    ] {
        let seen = c.drain();
        assert_eq!(
            presence_from(&seen, "alice@localhost/pc", Some("unavailable")).len(),
            1,
            "{who}: {seen:?}"
        );
    }

    // What the old connection still sends (read before it saw the close) speaks no presence,
    // and its late unbind neither removes the new session nor speaks for it.
    old.send(&server, &format!("<presence {}/>", ns())).await;
    old.send(
        &server,
        &format!("<presence {} to='carol@localhost/desk'/>", ns()),
    )
    .await;
    old.logout(&server).await;
    for c in [&mut bob, &mut carol, &mut other] {
        let seen = c.drain();
        assert!(
            presence_from(&seen, "alice@localhost/pc", None).is_empty()
                && presence_from(&seen, "alice@localhost/pc", Some("unavailable")).is_empty(),
            "{seen:?}"
        );
    }
    assert_eq!(
        server
            .router()
            .resource_count(&BareJid::new("alice@localhost").unwrap()),
        2
    );
    let records = xmppd_storage::SessionStore::sessions(server.store().as_ref())
        .await
        .unwrap();
    assert!(
        records.iter().any(|r| r.jid == "alice@localhost/pc"),
        "{records:?}"
    );

    // The successor's presence then comes after the unavailable, as a new arrival.
    go_online(&server, &mut new).await;
    assert_eq!(
        presence_from(&bob.drain(), "alice@localhost/pc", None).len(),
        1
    );
    assert_eq!(
        presence_from(&other.drain(), "alice@localhost/pc", None).len(),
        1
    );
}

#[tokio::test]
async fn roster_versioning_and_disco() {
    let server = setup(&["alice"], CoreConfig::default()).await;
    let mut a = login(&server, "alice", "pc").await;
    a.send(&server, &format!("<iq {} type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='carol@localhost' name='Carol'><group>Friends</group></item></query></iq>", ns())).await;
    a.send(
        &server,
        &format!(
            "<iq {} type='get' id='g1'><query xmlns='jabber:iq:roster'/></iq>",
            ns()
        ),
    )
    .await;
    let got = a.drain();
    let res = got.iter().find(|e| e.attr("id") == Some("g1")).unwrap();
    let q = res.children().next().unwrap();
    let ver = q.attr("ver").unwrap().to_owned();
    assert_eq!(q.children().count(), 1);
    a.send(
        &server,
        &format!(
            "<iq {} type='get' id='g2'><query xmlns='jabber:iq:roster' ver='{ver}'/></iq>",
            ns()
        ),
    )
    .await;
    let got = a.drain();
    let res = got.iter().find(|e| e.attr("id") == Some("g2")).unwrap();
    assert_eq!(res.attr("type"), Some("result"));
    assert_eq!(res.children().count(), 0, "unchanged roster: empty result");

    a.send(&server, &format!("<iq {} type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>", ns())).await;
    a.send(
        &server,
        &format!(
            "<iq {} type='get' id='v1' to='localhost'><query xmlns='jabber:iq:version'/></iq>",
            ns()
        ),
    )
    .await;
    a.send(
        &server,
        &format!(
            "<iq {} type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
            ns()
        ),
    )
    .await;
    a.send(
        &server,
        &format!(
            "<iq {} type='get' id='u1' to='localhost'><unknown xmlns='urn:example'/></iq>",
            ns()
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let got = a.drain();
    let disco = got.iter().find(|e| e.attr("id") == Some("d1")).unwrap();
    let features: Vec<_> = disco
        .children()
        .next()
        .unwrap()
        .children()
        .filter_map(|c| c.attr("var"))
        .collect();
    for f in [
        "urn:xmpp:ping",
        "jabber:iq:version",
        "jabber:iq:last",
        "msgoffline",
    ] {
        assert!(features.contains(&f), "{f} missing from {features:?}");
    }
    let version = got.iter().find(|e| e.attr("id") == Some("v1")).unwrap();
    let q = version.children().next().unwrap();
    assert_eq!(
        q.get_child("name", "jabber:iq:version").unwrap().text(),
        "xmppd"
    );
    assert!(
        q.get_child("os", "jabber:iq:version").is_none(),
        "OS hidden by default"
    );
    assert_eq!(
        got.iter()
            .find(|e| e.attr("id") == Some("p1"))
            .unwrap()
            .attr("type"),
        Some("result")
    );
    assert_eq!(
        got.iter()
            .find(|e| e.attr("id") == Some("u1"))
            .unwrap()
            .attr("type"),
        Some("error")
    );
}

/// A ping without `to` (the sender's own bare JID, RFC 6120 §10.3.3) or to the sender's own
/// bare JID is answered by the server; a ping to another account's bare JID gets the error any
/// unhandled namespace gets there, whether or not the account exists.
#[tokio::test]
async fn a_ping_to_the_own_account_is_answered_and_to_another_is_not() {
    let server = setup(&["alice", "bob"], CoreConfig::default()).await;
    let mut a = login(&server, "alice", "pc").await;
    for (id, to) in [
        ("none", ""),
        ("own", " to='alice@localhost'"),
        ("other", " to='bob@localhost'"),
        ("nobody", " to='nobody@localhost'"),
    ] {
        a.send(
            &server,
            &format!(
                "<iq {} type='get' id='{id}'{to}><ping xmlns='urn:xmpp:ping'/></iq>",
                ns()
            ),
        )
        .await;
    }
    // `send` returns once the server routed the stanza: the answers are queued already.
    let got = a.drain();
    let answer = |id: &str| {
        let iq = got.iter().find(|e| e.attr("id") == Some(id)).unwrap();
        let condition = iq
            .get_child("error", NS_CLIENT)
            .and_then(|e| e.children().next())
            .map(|c| c.name().to_string());
        (iq.attr("type").unwrap().to_string(), condition)
    };
    assert_eq!(answer("none"), ("result".into(), None));
    assert_eq!(answer("own"), ("result".into(), None));
    let unavailable = ("error".to_string(), Some("service-unavailable".to_string()));
    assert_eq!(answer("other"), unavailable);
    assert_eq!(answer("nobody"), unavailable);
}

/// A payload of the right namespace that is not what XEP-0030, XEP-0199, XEP-0092 or XEP-0012
/// define is refused with `<bad-request/>`, not answered as if it were a query.
#[tokio::test]
async fn malformed_disco_ping_version_and_last_requests_are_bad_requests() {
    let server = setup(&["alice"], CoreConfig::default()).await;
    let mut a = login(&server, "alice", "pc").await;
    let requests = [
        (
            "d1",
            "<info xmlns='http://jabber.org/protocol/disco#info'/>",
        ),
        // XEP-0059: `max` is a number.
        (
            "d2",
            "<query xmlns='http://jabber.org/protocol/disco#items'>\
             <set xmlns='http://jabber.org/protocol/rsm'><max>many</max></set></query>",
        ),
        ("p1", "<pong xmlns='urn:xmpp:ping'/>"),
        ("v1", "<version xmlns='jabber:iq:version'/>"),
        ("l1", "<last xmlns='jabber:iq:last'/>"),
    ];
    for (id, payload) in requests {
        let xml = format!(
            "<iq {} type='get' id='{id}' to='localhost'>{payload}</iq>",
            ns()
        );
        a.send(&server, &xml).await;
    }
    let got = a.drain();
    for (id, payload) in requests {
        let reply = got.iter().find(|e| e.attr("id") == Some(id));
        let error = reply.and_then(|r| r.get_child("error", "jabber:client"));
        let condition = error.and_then(|e| e.children().next()).map(|c| c.name());
        assert_eq!(condition, Some("bad-request"), "{payload}: {reply:?}");
    }
    // The session is still served.
    let xml = format!(
        "<iq {} type='get' id='v2' to='localhost'><query xmlns='jabber:iq:version'/></iq>",
        ns()
    );
    a.send(&server, &xml).await;
    let got = a.drain();
    assert_eq!(
        find(&got, "iq", Some("result")).and_then(|e| e.attr("id")),
        Some("v2")
    );
}

/// A module contributing a shared group: everyone sees everyone else.
struct EveryoneShared(Vec<&'static str>);

#[async_trait::async_trait]
impl xmppd_core::module::Module for EveryoneShared {
    fn name(&self) -> &'static str {
        "test-shared"
    }

    async fn roster_items(
        &self,
        _cx: &xmppd_core::Context<'_>,
        _user: &BareJid,
    ) -> Vec<xmppd_storage::RosterItem> {
        self.0
            .iter()
            .map(|u| xmppd_storage::RosterItem {
                jid: format!("{u}@localhost"),
                groups: vec!["Staff".into()],
                ..Default::default()
            })
            .collect()
    }
}

#[tokio::test]
async fn shared_roster_items_carry_presence_without_subscription() {
    let shared = Arc::new(EveryoneShared(vec!["alice", "bob"]));
    let server = setup_with(&["alice", "bob"], CoreConfig::default(), vec![shared]).await;
    let mut b = login(&server, "bob", "phone").await;
    b.send(&server, &format!("<presence {}/>", ns())).await;
    b.drain();
    let mut a = login(&server, "alice", "pc").await;
    a.send(
        &server,
        &format!(
            "<iq {} type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
            ns()
        ),
    )
    .await;
    a.send(&server, &format!("<presence {}/>", ns())).await;
    let got = a.drain();
    let roster = got.iter().find(|e| e.attr("id") == Some("r")).unwrap();
    let items: Vec<_> = roster.children().next().unwrap().children().collect();
    assert_eq!(items.len(), 1, "own JID is not listed: {items:?}");
    assert_eq!(items[0].attr("jid"), Some("bob@localhost"));
    assert_eq!(items[0].attr("subscription"), Some("both"));
    let from = |who: &str| {
        got.iter().any(|e| {
            e.name() == "presence" && e.attr("type").is_none() && e.attr("from") == Some(who)
        })
    };
    assert!(
        from("bob@localhost/phone"),
        "bob's presence answers alice's probe"
    );
    assert!(
        from("alice@localhost/pc"),
        "alice's own presence comes back (RFC 6121 §4.2.2)"
    );
    let got_b = b.drain();
    assert!(
        find(&got_b, "presence", None).is_some(),
        "alice's presence reaches bob"
    );
}

#[tokio::test]
async fn disabled_account_cannot_bind_and_loses_sessions() {
    let server = setup(&["alice", "bob"], CoreConfig::default()).await;
    let mut a = login(&server, "alice", "pc").await;
    let alice = BareJid::new("alice@localhost").unwrap();
    server.set_disabled(&alice, true).await.unwrap();
    let got = a.drain();
    assert_eq!(got.len(), 1);
    assert!(got[0].is("not-authorized", CLOSE_NS), "{got:?}");
    let r = server
        .bind(
            alice.clone(),
            Some("x"),
            SessionInfo::default(),
            QueueLimits::default(),
        )
        .await;
    assert_eq!(r.err(), Some(xmppd_core::BindError::NotAllowed));
    server.set_disabled(&alice, false).await.unwrap();
    assert!(server
        .bind(
            alice,
            Some("x"),
            SessionInfo::default(),
            QueueLimits::default()
        )
        .await
        .is_ok());
}

#[tokio::test]
async fn admins_are_recognised() {
    let cfg = CoreConfig {
        admins: vec!["alice@localhost".into()],
        ..CoreConfig::default()
    };
    let server = setup(&["alice", "bob"], cfg).await;
    let bob = BareJid::new("bob@localhost").unwrap();
    assert!(server.is_admin(&BareJid::new("alice@localhost").unwrap()));
    assert!(!server.is_admin(&bob));
    server.set_dynamic_admins([bob.clone()].into_iter().collect());
    assert!(server.is_admin(&bob));
}

#[tokio::test]
async fn directed_presence_without_initial_presence_ends_with_unavailable() {
    let server = setup(&["alice", "bob"], CoreConfig::default()).await;
    let mut b = login(&server, "bob", "phone").await;
    let mut a = login(&server, "alice", "pc").await;
    a.send(
        &server,
        &format!("<presence {} to='bob@localhost/phone'/>", ns()),
    )
    .await;
    assert!(find(&b.drain(), "presence", None).is_some());
    a.logout(&server).await;
    let got = b.drain();
    let un =
        find(&got, "presence", Some("unavailable")).expect("unavailable to the directed target");
    assert_eq!(un.attr("from"), Some("alice@localhost/pc"));
}

#[tokio::test]
async fn shared_item_change_pushes_roster_and_presence() {
    let server = setup(&["alice", "bob"], CoreConfig::default()).await;
    let mut a = login(&server, "alice", "pc").await;
    let mut b = login(&server, "bob", "phone").await;
    go_online(&server, &mut a).await;
    go_online(&server, &mut b).await;
    let alice = BareJid::new("alice@localhost").unwrap();
    let item = xmppd_storage::RosterItem {
        jid: "bob@localhost".into(),
        groups: vec!["Staff".into()],
        ..Default::default()
    };
    let bob = BareJid::new("bob@localhost").unwrap();
    let back = xmppd_storage::RosterItem {
        jid: "alice@localhost".into(),
        ..item.clone()
    };
    xmppd_im::shared_roster_item_changed(&server, &alice, &item, false).await;
    assert!(
        find(&b.drain(), "presence", None).is_none(),
        "one direction per call"
    );
    xmppd_im::shared_roster_item_changed(&server, &bob, &back, false).await;
    let got = a.drain();
    let push = find(&got, "iq", Some("set")).expect("roster push");
    let pushed = push.children().next().unwrap().children().next().unwrap();
    assert_eq!(pushed.attr("subscription"), Some("both"));
    assert_eq!(
        find(&got, "presence", None).unwrap().attr("from"),
        Some("bob@localhost/phone")
    );
    assert_eq!(
        find(&b.drain(), "presence", None).unwrap().attr("from"),
        Some("alice@localhost/pc")
    );

    xmppd_im::shared_roster_item_changed(&server, &alice, &item, true).await;
    xmppd_im::shared_roster_item_changed(&server, &bob, &back, true).await;
    let got = a.drain();
    let push = find(&got, "iq", Some("set")).expect("roster push on removal");
    let pushed = push.children().next().unwrap().children().next().unwrap();
    assert_eq!(pushed.attr("subscription"), Some("remove"));
    assert!(find(&got, "presence", Some("unavailable")).is_some());
    assert!(find(&b.drain(), "presence", Some("unavailable")).is_some());
}

#[tokio::test]
async fn roster_size_is_capped() {
    let cfg = CoreConfig {
        max_roster_items: 2,
        ..CoreConfig::default()
    };
    let server = setup(&["alice"], cfg).await;
    let mut a = login(&server, "alice", "pc").await;
    for (i, c) in ["c1", "c2", "c3", "c1"].iter().enumerate() {
        let (id, jid, name) = (format!("s{i}"), format!("{c}@localhost"), format!("n{i}"));
        set_roster_item(&server, &mut a, &id, &jid, &name).await;
    }
    let got = a.drain();
    let kind = |id: &str| {
        got.iter()
            .find(|e| e.attr("id") == Some(id))
            .unwrap()
            .attr("type")
    };
    assert_eq!(kind("s0"), Some("result"));
    assert_eq!(kind("s1"), Some("result"));
    assert_eq!(kind("s2"), Some("error"), "a third contact does not fit");
    assert_eq!(
        kind("s3"),
        Some("result"),
        "changing a stored contact still works"
    );
}

#[tokio::test]
async fn unknown_types_late_responses_and_unsubscribed_probes() {
    let server = setup(&["alice", "bob"], CoreConfig::default()).await;
    let mut a = login(&server, "alice", "pc").await;
    let mut b = login(&server, "bob", "phone").await;
    b.send(&server, &format!("<presence {}/>", ns())).await;
    b.drain();
    // RFC 6121 §5.2.2: an unknown type is "normal", delivered to the online resource.
    a.send(
        &server,
        &format!(
            "<message {} to='bob@localhost' type='bogus'><body>x</body></message>",
            ns()
        ),
    )
    .await;
    assert_eq!(
        find(&b.drain(), "message", Some("bogus")).map(|m| m.attr("from")),
        Some(Some("alice@localhost/pc"))
    );
    // A result for a resource that is gone is dropped, not answered with an error.
    a.send(
        &server,
        &format!(
            "<iq {} type='result' id='late' to='bob@localhost/gone'/>",
            ns()
        ),
    )
    .await;
    a.send(
        &server,
        &format!(
            "<iq {} type='get' id='req' to='bob@localhost/gone'><ping xmlns='urn:xmpp:ping'/></iq>",
            ns()
        ),
    )
    .await;
    let got = a.drain();
    assert!(got.iter().all(|e| e.attr("id") != Some("late")), "{got:?}");
    assert_eq!(
        got.iter()
            .find(|e| e.attr("id") == Some("req"))
            .unwrap()
            .attr("type"),
        Some("error")
    );
    // A probe from someone without a subscription gets "unsubscribed" (RFC 6121 §4.3.2),
    // which repairs the prober's roster when it went out of step.
    let alice_ref = UserRef::new("alice", "localhost");
    let out_of_step = xmppd_storage::RosterItem {
        jid: "bob@localhost".into(),
        subscription: xmppd_storage::Subscription::To,
        ..Default::default()
    };
    let store = server.store();
    xmppd_storage::RosterStore::set_roster_item(store.as_ref(), &alice_ref, &out_of_step)
        .await
        .unwrap();
    server
        .dispatch(
            format!(
                "<presence {} type='probe' from='alice@localhost' to='bob@localhost'/>",
                ns()
            )
            .parse()
            .unwrap(),
        )
        .await;
    let item = xmppd_storage::RosterStore::roster_item(store.as_ref(), &alice_ref, "bob@localhost")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.subscription, xmppd_storage::Subscription::None);
    assert!(
        find(&a.drain(), "presence", None).is_none(),
        "no presence leaks"
    );
}

#[tokio::test]
async fn concurrent_binds_never_exceed_the_resource_limit() {
    let cfg = CoreConfig {
        max_resources_per_user: 3,
        ..CoreConfig::default()
    };
    let server = setup(&["alice"], cfg).await;
    let alice = BareJid::new("alice@localhost").unwrap();
    let binds = (0..12).map(|i| {
        let (server, alice) = (server.clone(), alice.clone());
        tokio::spawn(async move {
            let r = format!("r{i}");
            server
                .bind(
                    alice,
                    Some(&r),
                    SessionInfo::default(),
                    QueueLimits::default(),
                )
                .await
        })
    });
    let mut kept = Vec::new();
    for b in binds {
        if let Ok(ok) = b.await.unwrap() {
            kept.push(ok);
        }
    }
    assert!(kept.len() <= 3, "{} sessions bound", kept.len());
    assert_eq!(server.router().resource_count(&alice), kept.len());
}

/// Counts the messages it sees; declares the message hook only when `declared`.
struct Counter {
    declared: bool,
    seen: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl xmppd_core::module::Module for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }

    fn hooks(&self) -> xmppd_core::module::Hooks {
        use xmppd_core::module::Hooks;
        Hooks {
            message_in: self.declared,
            ..Hooks::NONE
        }
    }

    async fn on_message_in(
        &self,
        _cx: &mut xmppd_core::Context<'_>,
        _msg: &mut Element,
    ) -> xmppd_core::module::HookAction {
        self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        xmppd_core::module::HookAction::Continue
    }
}

#[tokio::test]
async fn message_hooks_run_only_on_modules_that_declare_them() {
    let on = Arc::new(Counter {
        declared: true,
        seen: Default::default(),
    });
    let off = Arc::new(Counter {
        declared: false,
        seen: Default::default(),
    });
    let modules: Vec<Arc<dyn xmppd_core::module::Module>> = vec![on.clone(), off.clone()];
    let server = setup_with(&["alice", "bob"], CoreConfig::default(), modules).await;
    let mut a = login(&server, "alice", "pc").await;
    let _b = login(&server, "bob", "phone").await;
    a.send(
        &server,
        &format!(
            "<message {} to='bob@localhost/phone'><body>x</body></message>",
            ns()
        ),
    )
    .await;
    use std::sync::atomic::Ordering::SeqCst;
    assert_eq!(on.seen.load(SeqCst), 1);
    assert_eq!(off.seen.load(SeqCst), 0);
}

/// Records the accounts it is told were removed.
#[derive(Default)]
struct Forgetful {
    removed: std::sync::Mutex<Vec<BareJid>>,
}

#[async_trait::async_trait]
impl xmppd_core::module::Module for Forgetful {
    fn name(&self) -> &'static str {
        "forgetful"
    }

    async fn on_account_removed(&self, _cx: &mut xmppd_core::Context<'_>, user: &BareJid) {
        self.removed.lock().unwrap().push(user.clone());
    }
}

#[tokio::test]
async fn removing_an_account_tells_contacts_and_ends_its_sessions() {
    let forgetful = Arc::new(Forgetful::default());
    let modules: Vec<Arc<dyn xmppd_core::module::Module>> = vec![forgetful.clone()];
    let server = setup_with(&["alice", "bob"], CoreConfig::default(), modules).await;
    let mut pc = login(&server, "alice", "pc").await;
    let mut phone = login(&server, "alice", "phone").await;
    let mut b = login(&server, "bob", "desk").await;
    for c in [&mut pc, &mut phone, &mut b] {
        go_online(&server, c).await;
    }
    for (from, to) in [(&mut pc, "bob"), (&mut b, "alice")] {
        from.send(
            &server,
            &format!("<presence {} to='{to}@localhost' type='subscribe'/>", ns()),
        )
        .await;
    }
    for (from, to) in [(&mut b, "alice"), (&mut pc, "bob")] {
        from.send(
            &server,
            &format!("<presence {} to='{to}@localhost' type='subscribed'/>", ns()),
        )
        .await;
    }
    for c in [&mut pc, &mut phone, &mut b] {
        c.drain();
    }

    let alice = BareJid::new("alice@localhost").unwrap();
    let removal = server
        .remove_account(&alice, Some(&pc.session.jid))
        .await
        .unwrap();
    assert_eq!(removal.contacts.len(), 1);

    let got = b.drain();
    let push = find(&got, "iq", Some("set")).expect("roster push to bob");
    let item = push.children().next().unwrap().children().next().unwrap();
    assert_eq!(item.attr("jid"), Some("alice@localhost"));
    assert_eq!(item.attr("subscription"), Some("none"));
    for kind in ["unsubscribe", "unsubscribed"] {
        let p = find(&got, "presence", Some(kind)).expect(kind);
        assert_eq!(p.attr("from"), Some("alice@localhost"));
    }
    let mut gone: Vec<&str> = (got.iter())
        .filter(|e| e.name() == "presence" && e.attr("type") == Some("unavailable"))
        .filter_map(|e| e.attr("from"))
        .collect();
    gone.sort();
    assert_eq!(gone, ["alice@localhost/pc", "alice@localhost/phone"]);

    // The other session ends at once; the requester's is left for its answer.
    let closed = |v: &[Element]| v.iter().any(|e| e.is("not-authorized", CLOSE_NS));
    assert!(closed(&phone.drain()));
    assert!(!closed(&pc.drain()));
    assert_eq!(
        *forgetful.removed.lock().unwrap(),
        std::slice::from_ref(&alice)
    );

    // The name is kept (30 days by default), and a second removal finds nothing.
    let uref = UserRef::new("alice", "localhost");
    assert!(server.store().tombstone(&uref).await.unwrap().is_some());
    let again = server.store().create_user(&uref, &[]).await;
    assert!(matches!(
        again,
        Err(xmppd_storage::StorageError::Tombstoned { .. })
    ));
    assert!(matches!(
        server.remove_account(&alice, None).await,
        Err(xmppd_storage::StorageError::NoSuchUser)
    ));
}

fn body_of(e: &Element) -> Option<String> {
    e.get_child("body", "jabber:client").map(|b| b.text())
}

#[tokio::test]
async fn closing_needs_no_queue_space_and_is_reported_truthfully() {
    let server = setup(&["alice", "bob"], CoreConfig::default()).await;
    let mut a = login(&server, "alice", "pc").await;
    let bob = BareJid::new("bob@localhost").unwrap();
    let limits = QueueLimits {
        stanzas: 2,
        ..QueueLimits::default()
    };
    let mut b = Client::login_with(&server, bob.clone(), "phone", limits).await;
    // Bob reads nothing: his queue is full.
    for i in 0..2 {
        let xml = format!(
            "<message {} to='bob@localhost/phone'><body>q{i}</body></message>",
            ns()
        );
        a.send(&server, &xml).await;
    }
    assert!(a.drain().is_empty());
    server.set_disabled(&bob, true).await.unwrap();
    // Closing, bob takes nothing more: this one is stored for his next login.
    let xml = format!(
        "<message {} to='bob@localhost/phone'><body>q2</body></message>",
        ns()
    );
    a.send(&server, &xml).await;
    let uref = UserRef::new("bob", "localhost");
    assert_eq!(server.store().offline_count(&uref).await.unwrap(), 1);
    let got = b.drain();
    let bodies: Vec<_> = got.iter().filter_map(body_of).collect();
    assert_eq!(
        bodies,
        ["q0", "q1"],
        "what was queued before the close: {got:?}"
    );
    assert!(
        got.last().is_some_and(|e| e.is("not-authorized", CLOSE_NS)),
        "then the close, though the queue was full: {got:?}"
    );
    // Told once; a session already closing is not counted again.
    let cond = xmppd_stream::StreamErrorCondition::PolicyViolation;
    assert_eq!(server.end_sessions(&bob, cond, None), 0);
    b.logout(&server).await;
    assert_eq!(server.end_sessions(&bob, cond, None), 0);
}

#[tokio::test]
async fn what_an_ended_session_still_had_queued_goes_where_rfc6121_sends_it() {
    let server = setup(&["alice", "bob"], CoreConfig::default()).await;
    let mut a = login(&server, "alice", "pc").await;
    let mut phone = login(&server, "bob", "phone").await;
    let mut pc = login(&server, "bob", "pc").await;
    go_online(&server, &mut a).await;
    phone
        .send(
            &server,
            &format!("<presence {}><priority>5</priority></presence>", ns()),
        )
        .await;
    go_online(&server, &mut pc).await;
    phone.drain();
    a.drain();
    let sends = [
        "<message {ns} to='bob@localhost/phone' type='chat'><body>full chat</body></message>",
        "<message {ns} to='bob@localhost'><body>bare normal</body></message>",
        "<message {ns} to='bob@localhost/phone' type='groupchat'><body>gc</body></message>",
        "<message {ns} to='bob@localhost/phone' type='headline'><body>news</body></message>",
        "<iq {ns} to='bob@localhost/phone' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>",
    ];
    for xml in sends {
        a.send(&server, &xml.replace("{ns}", ns())).await;
    }
    assert!(a.drain().is_empty());
    assert!(pc.drain().is_empty(), "priority 5 took everything");
    // The phone vanishes with all of it unread.
    phone.logout(&server).await;
    let got = pc.drain();
    let bodies: Vec<_> = got.iter().filter_map(body_of).collect();
    assert_eq!(bodies, ["full chat", "bare normal"], "{got:?}");
    let err = find(&a.drain(), "iq", Some("error"))
        .cloned()
        .expect("iq answered");
    assert_eq!(err.attr("id"), Some("v1"));
    assert!(err
        .get_child("error", "jabber:client")
        .unwrap()
        .has_child("service-unavailable", "urn:ietf:params:xml:ns:xmpp-stanzas"));

    // With no other resource, a message with a body is stored for the next login.
    a.send(
        &server,
        &format!(
            "<message {} to='bob@localhost/pc' type='chat'><body>later</body></message>",
            ns()
        ),
    )
    .await;
    pc.logout(&server).await;
    let mut back = login(&server, "bob", "tablet").await;
    go_online(&server, &mut back).await;
    server.written(&back.session).await;
    let bodies: Vec<_> = back
        .pump(&server)
        .await
        .iter()
        .filter_map(body_of)
        .collect();
    assert_eq!(bodies, ["later"]);
}

#[tokio::test]
async fn a_message_to_the_bare_jid_is_not_rerouted_to_a_resource_that_had_it() {
    let server = setup(&["alice", "bob"], CoreConfig::default()).await;
    let mut a = login(&server, "alice", "pc").await;
    let mut one = login(&server, "bob", "one").await;
    let mut two = login(&server, "bob", "two").await;
    go_online(&server, &mut one).await;
    go_online(&server, &mut two).await;
    one.drain();
    let xml = format!(
        "<message {} to='bob@localhost' type='chat'><body>tie</body></message>",
        ns()
    );
    a.send(&server, &xml).await;
    assert_eq!(
        two.drain().iter().filter_map(body_of).collect::<Vec<_>>(),
        ["tie"]
    );
    one.logout(&server).await;
    assert!(
        two.drain().iter().all(|e| body_of(e).is_none()),
        "no duplicate"
    );
}

#[tokio::test]
async fn a_presence_over_the_size_limit_is_refused_and_not_kept() {
    let cfg = CoreConfig {
        max_presence_bytes: 2048,
        ..CoreConfig::default()
    };
    let server = setup(&["alice"], cfg).await;
    let mut a = login(&server, "alice", "pc").await;
    go_online(&server, &mut a).await;
    let big = format!(
        "<presence {}><status>{}</status></presence>",
        ns(),
        "s".repeat(4000)
    );
    a.send(&server, &big).await;
    let got = a.drain();
    let err = find(&got, "presence", Some("error")).expect("refused");
    assert!(err
        .get_child("error", "jabber:client")
        .unwrap()
        .has_child("policy-violation", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    assert!(
        find(&got, "presence", None).is_none(),
        "not broadcast: {got:?}"
    );
    let alice = BareJid::new("alice@localhost").unwrap();
    let kept = server.router().resources(&alice)[0]
        .presence
        .clone()
        .unwrap();
    assert!(
        kept.get_child("status", "jabber:client").is_none(),
        "the last one is kept"
    );
    // A directed one (a room join) is refused alike.
    let join = big.replace("<presence ", "<presence to='room@conference.localhost/al' ");
    a.send(&server, &join).await;
    assert!(find(&a.drain(), "presence", Some("error")).is_some());
}
