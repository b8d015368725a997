//! The hooks later services build on, each through a small module standing in for them:
//! after delivery targets are chosen (archive, carbons), presence and IQ interception
//! (blocking, PEP), the per-session outbound filter (client state indication), and the session
//! hooks the IM rules are built on (presence and IQs from a session, presence to an account,
//! the end of a session's presence).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use minidom::Element;
use xmppd_core::module::{HookAction, Hooks, Module, Outlet};
use xmppd_core::stanza::{Condition, StanzaError};
use xmppd_core::testing::TestClient;
use xmppd_core::{ClientSession, Context, CoreConfig, FullJid, PresenceState, Server};

async fn server_with(module: Arc<dyn Module>) -> Arc<Server> {
    let store = xmppd_core::testing::store_with_users(&["alice", "bob", "mallory"]).await;
    Server::builder(CoreConfig::default(), store)
        .modules(xmppd_im::modules())
        .module(module)
        .build()
}

async fn online(server: &Arc<Server>, user: &str, resource: &str) -> TestClient {
    let mut c = TestClient::login(server, user, resource).await;
    c.send(server, "<presence xmlns='jabber:client'/>").await;
    c.drain();
    c
}

fn bodies(got: &[Element]) -> Vec<String> {
    got.iter()
        .filter(|e| e.name() == "message")
        .filter_map(|e| e.get_child("body", "jabber:client").map(Element::text))
        .collect()
}

/// Records which sessions each message was delivered to.
#[derive(Default)]
struct Deliveries(Mutex<Vec<(String, Vec<String>)>>);

#[async_trait]
impl Module for Deliveries {
    fn name(&self) -> &'static str {
        "deliveries"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            delivered: true,
            ..Hooks::NONE
        }
    }

    async fn on_message_delivered(
        &self,
        _cx: &mut Context<'_>,
        msg: &Element,
        targets: &[FullJid],
    ) {
        let body = msg.get_child("body", "jabber:client").map(Element::text);
        let mut targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        targets.sort();
        self.0
            .lock()
            .unwrap()
            .push((body.unwrap_or_default(), targets));
    }
}

#[tokio::test]
async fn delivered_hook_sees_the_chosen_sessions_and_not_offline_messages() {
    let hook = Arc::new(Deliveries::default());
    let server = server_with(hook.clone()).await;
    let mut alice = online(&server, "alice", "pc").await;
    let _bob1 = online(&server, "bob", "a").await;
    let _bob2 = online(&server, "bob", "b").await;
    // Equal priorities: the bare JID reaches both (RFC 6121 §8.5.2.1.1).
    alice
        .send(
            &server,
            "<message xmlns='jabber:client' type='chat' to='bob@localhost'><body>both</body></message>",
        )
        .await;
    alice
        .send(
            &server,
            "<message xmlns='jabber:client' type='chat' to='bob@localhost/b'><body>one</body></message>",
        )
        .await;
    // Nobody of mallory's is online: stored offline, not delivered.
    alice
        .send(
            &server,
            "<message xmlns='jabber:client' type='chat' to='mallory@localhost'><body>later</body></message>",
        )
        .await;
    let seen = hook.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            (
                "both".to_owned(),
                vec!["bob@localhost/a".to_owned(), "bob@localhost/b".to_owned()]
            ),
            ("one".to_owned(), vec!["bob@localhost/b".to_owned()]),
        ]
    );
}

/// Blocks everything mallory sends to bob: presence dropped silently, IQs answered with
/// `<service-unavailable/>` (as XEP-0191 §3.5 has it).
struct BlockMallory;

#[async_trait]
impl Module for BlockMallory {
    fn name(&self) -> &'static str {
        "block"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            presence_in: true,
            iq_in: true,
            ..Hooks::NONE
        }
    }

    async fn on_presence_in(&self, _cx: &mut Context<'_>, pres: &mut Element) -> HookAction {
        if pres.attr("from").is_some_and(|f| f.starts_with("mallory@")) {
            return HookAction::Stop(None);
        }
        HookAction::Continue
    }

    async fn on_iq_in(&self, _cx: &mut Context<'_>, iq: &mut Element) -> HookAction {
        if iq.attr("from").is_some_and(|f| f.starts_with("mallory@")) {
            return HookAction::Stop(Some(StanzaError::new(Condition::ServiceUnavailable)));
        }
        HookAction::Continue
    }
}

#[tokio::test]
async fn presence_and_iq_interception_stop_what_a_module_blocks() {
    let server = server_with(Arc::new(BlockMallory)).await;
    let mut bob = online(&server, "bob", "phone").await;
    let mut alice = online(&server, "alice", "pc").await;
    let mut mallory = online(&server, "mallory", "pc").await;
    for c in [&mut alice, &mut mallory] {
        c.send(
            &server,
            "<presence xmlns='jabber:client' to='bob@localhost/phone'/>",
        )
        .await;
        c.send(
            &server,
            "<iq xmlns='jabber:client' type='get' id='v1' to='bob@localhost/phone'>\
             <query xmlns='jabber:iq:version'/></iq>",
        )
        .await;
    }
    let got = bob.drain();
    let senders: HashSet<&str> = got.iter().filter_map(|e| e.attr("from")).collect();
    assert!(senders.contains("alice@localhost/pc"), "{got:?}");
    assert!(
        !senders.iter().any(|s| s.starts_with("mallory@")),
        "{got:?}"
    );
    // Alice's IQ went through (bob would answer it); mallory's came back as an error.
    assert!(alice
        .drain()
        .iter()
        .all(|e| e.attr("type") != Some("error")));
    let refused = mallory.drain();
    let err = refused
        .iter()
        .find(|e| e.name() == "iq" && e.attr("type") == Some("error"))
        .expect("an error for mallory's IQ");
    assert!(
        err.get_child("error", "jabber:client")
            .and_then(|e| e.get_child("service-unavailable", "urn:ietf:params:xml:ns:xmpp-stanzas"))
            .is_some(),
        "{err:?}"
    );
}

/// Holds back headlines for sessions marked inactive, as client state indication would.
#[derive(Default)]
struct HoldHeadlines {
    inactive: Mutex<HashSet<FullJid>>,
    held: Mutex<Vec<Arc<Element>>>,
}

#[async_trait]
impl Module for HoldHeadlines {
    fn name(&self) -> &'static str {
        "hold"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            outbound: true,
            ..Hooks::NONE
        }
    }

    fn filter_outbound(
        &self,
        session: &FullJid,
        stanza: &Arc<Element>,
        outlet: &Outlet<'_>,
    ) -> bool {
        if !self.inactive.lock().unwrap().contains(session) {
            return false;
        }
        let mut held = self.held.lock().unwrap();
        if stanza.attr("type") == Some("headline") {
            held.push(stanza.clone());
            return true;
        }
        // Anything else lets what was held go first, in order.
        for h in held.drain(..) {
            outlet.push(h);
        }
        false
    }

    fn nonza_namespaces(&self) -> Vec<&'static str> {
        vec!["urn:xmppd:test:release"]
    }

    async fn on_nonza(&self, cx: &mut Context<'_>, session: &ClientSession, _: &Element) {
        self.inactive.lock().unwrap().remove(&session.jid);
        let outlet = cx.outlet(&session.jid);
        for h in self.held.lock().unwrap().drain(..) {
            outlet.push(h);
        }
    }
}

#[tokio::test]
async fn held_stanzas_go_out_through_the_outlet_in_order() {
    let hold = Arc::new(HoldHeadlines::default());
    let server = server_with(hold.clone()).await;
    let mut alice = online(&server, "alice", "pc").await;
    let mut bob = online(&server, "bob", "quiet").await;
    hold.inactive
        .lock()
        .unwrap()
        .insert(bob.session.jid.clone());
    let send = |kind: &str, body: &str| {
        format!("<message xmlns='jabber:client' type='{kind}' to='bob@localhost/quiet'><body>{body}</body></message>")
    };
    alice.send(&server, &send("headline", "one")).await;
    alice.send(&server, &send("headline", "two")).await;
    assert!(bob.drain().is_empty());
    alice.send(&server, &send("chat", "urgent")).await;
    assert_eq!(bodies(&bob.drain()), ["one", "two", "urgent"]);
    alice.send(&server, &send("headline", "three")).await;
    assert!(bob.drain().is_empty());
    let release: Element = "<release xmlns='urn:xmppd:test:release'/>".parse().unwrap();
    assert!(server.handle_nonza(&bob.session, &release).await);
    assert_eq!(bodies(&bob.drain()), ["three"]);
    let unknown: Element = "<r xmlns='urn:xmppd:test:unknown'/>".parse().unwrap();
    assert!(!server.handle_nonza(&bob.session, &unknown).await);
}

#[tokio::test]
async fn outbound_filter_holds_back_per_session() {
    let hold = Arc::new(HoldHeadlines::default());
    let server = server_with(hold.clone()).await;
    let mut alice = online(&server, "alice", "pc").await;
    let mut quiet = online(&server, "bob", "quiet").await;
    let mut busy = online(&server, "bob", "busy").await;
    hold.inactive
        .lock()
        .unwrap()
        .insert(FullJid::new("bob@localhost/quiet").unwrap());
    alice
        .send(
            &server,
            "<message xmlns='jabber:client' type='headline' to='bob@localhost'><body>news</body></message>",
        )
        .await;
    assert_eq!(bodies(&busy.drain()), ["news"]);
    assert!(
        bodies(&quiet.drain()).is_empty(),
        "the headline is held back"
    );
    let held = hold.held.lock().unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].attr("type"), Some("headline"));
}

/// Records the session hooks the IM rules are built on, and takes nothing: the core's own
/// behaviour shows behind it.
#[derive(Default)]
struct SessionLog(Mutex<Vec<String>>);

impl SessionLog {
    fn push(&self, event: String) {
        self.0.lock().unwrap().push(event);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[async_trait]
impl Module for SessionLog {
    fn name(&self) -> &'static str {
        "log"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            presence_out: true,
            iq_out: true,
            presence_to_account: true,
            ..Hooks::NONE
        }
    }

    async fn on_presence_out(
        &self,
        _cx: &mut Context<'_>,
        session: &ClientSession,
        state: &mut PresenceState,
        pres: &mut Element,
    ) -> HookAction {
        // What a presence handler keeps for the session's end.
        if pres.attr("to").is_none() {
            state.available = true;
        }
        let to = pres.attr("to").unwrap_or("-");
        self.push(format!("out {} {to}", session.jid));
        HookAction::Continue
    }

    async fn on_iq_out(
        &self,
        _cx: &mut Context<'_>,
        session: &ClientSession,
        iq: &mut Element,
    ) -> HookAction {
        let to = iq.attr("to").unwrap_or("-");
        self.push(format!("iq {} {to}", session.jid));
        HookAction::Continue
    }

    async fn on_presence_to_account(
        &self,
        _cx: &mut Context<'_>,
        pres: &mut Element,
        to: &xmppd_core::Jid,
    ) -> HookAction {
        self.push(format!("in {} {to}", pres.attr("from").unwrap_or("-")));
        HookAction::Continue
    }

    async fn on_presence_end(
        &self,
        _cx: &mut Context<'_>,
        jid: &FullJid,
        _session_id: xmppd_core::SessionId,
        state: &mut PresenceState,
    ) {
        self.push(format!("end {jid} available={}", state.available));
    }
}

#[tokio::test]
async fn session_hooks_see_presence_iqs_and_the_end_of_a_replaced_session() {
    let store = xmppd_core::testing::store_with_users(&["alice", "bob"]).await;
    let log = Arc::new(SessionLog::default());
    // No IM modules: the core alone, with the recorder.
    let server = Server::builder(CoreConfig::default(), store)
        .module(log.clone())
        .build();
    let mut alice = TestClient::login(&server, "alice", "pc").await;
    let mut bob = TestClient::login(&server, "bob", "phone").await;
    alice
        .send(&server, "<presence xmlns='jabber:client'/>")
        .await;
    alice
        .send(
            &server,
            "<presence xmlns='jabber:client' to='bob@localhost/phone'/>",
        )
        .await;
    alice
        .send(
            &server,
            "<iq xmlns='jabber:client' type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
        )
        .await;
    assert_eq!(
        log.take(),
        [
            "out alice@localhost/pc -",
            "out alice@localhost/pc bob@localhost/phone",
            "in alice@localhost/pc bob@localhost/phone",
            "iq alice@localhost/pc alice@localhost",
        ]
    );
    // Untaken: broadcast presence is dropped, directed presence delivered, and the roster IQ,
    // which no module claims here, refused.
    let got = bob.drain();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attr("from"), Some("alice@localhost/pc"));
    let got = alice.drain();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attr("type"), Some("error"));

    // A new session for the same resource ends the old one's presence before its bind returns,
    // once: the old session's own unbind does not end it again.
    let successor = TestClient::login(&server, "alice", "pc").await;
    assert_eq!(log.take(), ["end alice@localhost/pc available=true"]);
    alice.logout(&server).await;
    assert!(log.take().is_empty());
    successor.logout(&server).await;
    assert_eq!(log.take(), ["end alice@localhost/pc available=false"]);
}

/// Records the addresses message hooks are given, and readdresses a message saying so.
#[derive(Default)]
struct Addresses {
    seen: Mutex<Vec<(&'static str, String, String)>>,
    readdress: bool,
}

impl Addresses {
    fn note(&self, hook: &'static str, cx: &Context<'_>, msg: &Element) {
        let a = cx.addressing(msg).expect("both addresses");
        let seen = (hook, a.from.to_string(), a.to.to_string());
        self.seen.lock().unwrap().push(seen);
    }
}

#[async_trait]
impl Module for Addresses {
    fn name(&self) -> &'static str {
        "addresses"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            message_out: true,
            message_in: true,
            ..Hooks::NONE
        }
    }

    async fn on_message_out(&self, cx: &mut Context<'_>, msg: &mut Element) -> HookAction {
        let redirect = msg.get_child("body", "jabber:client").map(Element::text);
        if self.readdress && redirect.as_deref() == Some("to mallory") {
            xmppd_core::stanza::set_attr(msg, "to", "mallory@localhost");
        }
        self.note("out", cx, msg);
        HookAction::Continue
    }

    async fn on_message_in(&self, cx: &mut Context<'_>, msg: &mut Element) -> HookAction {
        self.note("in", cx, msg);
        HookAction::Continue
    }
}

#[tokio::test]
async fn message_hooks_get_the_addresses_as_they_read_after_earlier_hooks() {
    let store = xmppd_core::testing::store_with_users(&["alice", "bob", "mallory"]).await;
    let first = Arc::new(Addresses {
        readdress: true,
        ..Addresses::default()
    });
    let second = Arc::new(Addresses::default());
    let server = Server::builder(CoreConfig::default(), store)
        .modules(xmppd_im::modules())
        .module(first.clone())
        .module(second.clone())
        .build();
    let mut alice = online(&server, "alice", "pc").await;
    let mut mallory = online(&server, "mallory", "m").await;
    for body in ["hello", "to mallory"] {
        let msg = format!(
            "<message xmlns='jabber:client' to='Bob@LOCALHOST'><body>{body}</body></message>"
        );
        alice.send(&server, &msg).await;
    }
    assert_eq!(bodies(&mallory.drain()), ["to mallory"]);
    let (a, b, m) = ("alice@localhost/pc", "bob@localhost", "mallory@localhost");
    let expected = [("out", a, b), ("in", a, b), ("out", a, m), ("in", a, m)]
        .map(|(h, f, t)| (h, f.to_owned(), t.to_owned()));
    assert_eq!(*second.seen.lock().unwrap(), expected);
    assert_eq!(first.seen.lock().unwrap()[0], expected[0], "prepared once");
}
