//! The dispatcher's invariants: a handler never routes inline (what it sends waits in the
//! outbox, so a stanza coming back to it cannot re-enter it, even under its own lock), and
//! stanzas from one sender to one recipient arrive in the order sent (RFC 6120 §10.1),
//! whichever path each one takes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use minidom::Element;
use tokio::sync::Mutex;
use xmppd_core::module::{Component, HookAction, Hooks, Module};
use xmppd_core::stanza::set_attr;
use xmppd_core::testing::TestClient;
use xmppd_core::{Addressing, Context, CoreConfig, FullJid, Outbound, Server};

async fn server_with(components: Vec<(&str, Arc<dyn Component>)>) -> Arc<Server> {
    server_with_module(components, None).await
}

async fn server_with_module(
    components: Vec<(&str, Arc<dyn Component>)>,
    module: Option<Arc<dyn Module>>,
) -> Arc<Server> {
    let store = xmppd_core::testing::store_with_users(&["alice", "bob"]).await;
    components
        .into_iter()
        .fold(
            Server::builder(CoreConfig::default(), store)
                .modules(xmppd_im::modules())
                .modules(module),
            |b, (d, c)| b.component(d, c),
        )
        .build()
}

fn message(from: &str, to: &str, body: &str) -> Element {
    format!(
        "<message xmlns='jabber:client' type='chat' from='{from}' to='{to}'>\
         <body>{body}</body></message>"
    )
    .parse()
    .unwrap()
}

/// Holds its lock while handling, and sends each stanza back to itself until `rounds` have
/// passed: routing inline would wait on its own lock forever.
struct Echo {
    count: Mutex<u32>,
    rounds: u32,
}

#[async_trait]
impl Component for Echo {
    fn name(&self) -> &str {
        "echo"
    }

    async fn handle(&self, cx: &mut Context<'_>, stanza: Element) {
        let mut count = self.count.lock().await;
        *count += 1;
        if *count < self.rounds {
            cx.send(stanza);
        }
    }
}

#[tokio::test]
async fn a_component_sending_to_itself_under_its_lock_does_not_deadlock() {
    let echo = Arc::new(Echo {
        count: Mutex::new(0),
        rounds: 500,
    });
    let server = server_with(vec![("echo.localhost", echo.clone())]).await;
    let first = message("alice@localhost/pc", "echo.localhost", "ping");
    tokio::time::timeout(Duration::from_secs(30), server.dispatch(first))
        .await
        .expect("dispatch finishes");
    // Each round went through the outbox rather than the stack, so 500 rounds are no deeper
    // than one.
    assert_eq!(*echo.count.lock().await, 500);
}

/// Forwards every message to bob's session, as sent, after a yield: a second path from
/// alice to bob beside the direct one.
struct Relay;

#[async_trait]
impl Component for Relay {
    fn name(&self) -> &str {
        "relay"
    }

    async fn handle(&self, cx: &mut Context<'_>, mut stanza: Element) {
        tokio::task::yield_now().await;
        set_attr(&mut stanza, "to", "bob@localhost/phone");
        cx.send(stanza);
    }
}

#[tokio::test]
async fn one_senders_stanzas_to_one_recipient_keep_their_order_across_paths() {
    let server = server_with(vec![("relay.localhost", Arc::new(Relay))]).await;
    let mut alice = TestClient::login(&server, "alice", "pc").await;
    let mut bob = TestClient::login(&server, "bob", "phone").await;
    bob.send(&server, "<presence xmlns='jabber:client'/>").await;
    bob.drain();
    // Three paths, interleaved: to bob's full JID, to his bare JID (resource choice), and
    // through the relay component.
    let targets = ["bob@localhost/phone", "bob@localhost", "relay.localhost"];
    let sent: Vec<String> = (0..60).map(|i| format!("m{i}")).collect();
    for (i, body) in sent.iter().enumerate() {
        let xml = format!(
            "<message xmlns='jabber:client' type='chat' to='{}'><body>{body}</body></message>",
            targets[i % 3]
        );
        alice.send(&server, &xml).await;
    }
    let got: Vec<String> = bob
        .drain()
        .iter()
        .filter(|e| e.name() == "message")
        .map(|e| e.get_child("body", "jabber:client").unwrap().text())
        .collect();
    assert_eq!(got, sent);
}

/// Sends every message it gets to alice's and bob's sessions and to a session that does not
/// exist, as one shared element.
struct Fanout;

#[async_trait]
impl Component for Fanout {
    fn name(&self) -> &str {
        "fanout"
    }

    async fn handle(&self, cx: &mut Context<'_>, mut stanza: Element) {
        set_attr(&mut stanza, "from", "fanout.localhost");
        let stanza = Arc::new(stanza);
        for to in [
            "alice@localhost/pc",
            "bob@localhost/phone",
            "bob@localhost/gone",
        ] {
            cx.send_shared(&FullJid::new(to).unwrap(), Arc::clone(&stanza));
        }
    }
}

#[tokio::test]
async fn a_fan_out_queues_one_element_for_every_local_recipient() {
    let server = server_with(vec![("fanout.localhost", Arc::new(Fanout))]).await;
    let alice = TestClient::login(&server, "alice", "pc").await;
    let bob = TestClient::login(&server, "bob", "phone").await;
    let body = "z".repeat(256 * 1024);
    let mut msg = message("carol@localhost/x", "fanout.localhost", &body);
    set_attr(&mut msg, "type", "groupchat");
    server.dispatch(msg).await;
    let shared = |c: &TestClient| match c.rx.try_recv() {
        Some((Outbound::Addressed(el, to), _)) => (el, to.to_string()),
        other => panic!("{other:?}"),
    };
    let (a, a_to) = shared(&alice);
    let (b, b_to) = shared(&bob);
    assert!(Arc::ptr_eq(&a, &b), "one copy for both recipients");
    assert_eq!(
        (a_to.as_str(), b_to.as_str()),
        ("alice@localhost/pc", "bob@localhost/phone")
    );
    // Written, each is addressed to its recipient.
    let mut out = Vec::new();
    xmppd_stream::serialize_addressed(&b, "", &b_to, &mut out);
    let written: Element = String::from_utf8(out).unwrap().parse().unwrap();
    assert_eq!(written.attr("to"), Some("bob@localhost/phone"));
}

/// Refuses every message to bob, the way a block list does: a check that changes nothing.
struct RefuseBob;

#[async_trait]
impl Module for RefuseBob {
    fn name(&self) -> &'static str {
        "refuse-bob"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            message_check: true,
            ..Hooks::NONE
        }
    }

    async fn check_message_in(
        &self,
        _cx: &mut Context<'_>,
        msg: &Element,
        addressing: &Addressing,
    ) -> HookAction {
        assert_eq!(addressing.from.as_str(), msg.attr("from").unwrap());
        match addressing.to.node().map(|n| n.as_str()) {
            Some("bob") => HookAction::Stop(None),
            _ => HookAction::Continue,
        }
    }
}

#[tokio::test]
async fn a_fan_out_stays_one_element_when_modules_only_check_incoming_messages() {
    let fanout: Vec<(&str, Arc<dyn Component>)> = vec![("fanout.localhost", Arc::new(Fanout))];
    let server = server_with_module(fanout, Some(Arc::new(RefuseBob))).await;
    let alice = TestClient::login(&server, "alice", "pc").await;
    let bob = TestClient::login(&server, "bob", "phone").await;
    let mut msg = message("carol@localhost/x", "fanout.localhost", "hello");
    set_attr(&mut msg, "type", "groupchat");
    server.dispatch(msg).await;
    match alice.rx.try_recv() {
        Some((Outbound::Addressed(_, to), _)) => assert_eq!(to.as_str(), "alice@localhost/pc"),
        other => panic!("alice's copy is the shared element: {other:?}"),
    }
    assert!(bob.rx.try_recv().is_none(), "the check stopped bob's");
}

/// Takes stanzas for remote domains, or refuses those for `refused`.
struct Remote {
    taken: std::sync::Mutex<Vec<(Element, String)>>,
    refused: &'static str,
}

impl xmppd_core::RemoteRouter for Remote {
    fn route(&self, stanza: Element, to: &xmppd_core::Jid) -> Result<(), xmppd_core::Refused> {
        if to.domain().as_str() == self.refused {
            let err = xmppd_core::stanza::Condition::NotAllowed.into();
            return Err(Box::new((stanza, err)));
        }
        self.taken.lock().unwrap().push((stanza, to.to_string()));
        Ok(())
    }
}

#[tokio::test]
async fn stanzas_for_other_domains_go_to_the_remote_router_or_bounce_with_its_error() {
    let remote = Arc::new(Remote {
        taken: Default::default(),
        refused: "refused.example",
    });
    let store = xmppd_core::testing::store_with_users(&["alice"]).await;
    let server = Server::builder(CoreConfig::default(), store)
        .modules(xmppd_im::modules())
        .remote(remote.clone())
        .build();
    let mut alice = TestClient::login(&server, "alice", "pc").await;
    alice
        .send(&server, "<message xmlns='jabber:client' type='chat' to='Bob@Remote.Example'><body>hi</body></message>")
        .await;
    let taken = remote.taken.lock().unwrap().clone();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].1, "bob@remote.example");
    assert_eq!(taken[0].0.attr("from"), Some("alice@localhost/pc"));
    alice
        .send(&server, "<message xmlns='jabber:client' type='chat' id='m2' to='bob@refused.example'><body>x</body></message>")
        .await;
    let got = alice.drain();
    let error = got
        .iter()
        .find(|e| e.attr("id") == Some("m2"))
        .expect("bounce");
    assert_eq!(error.attr("type"), Some("error"));
    let condition = (error.get_child("error", "jabber:client"))
        .and_then(|e| e.children().next())
        .map(|c| c.name().to_owned());
    assert_eq!(condition.as_deref(), Some("not-allowed"), "{error:?}");
}
