//! A session resumed on a new stream (XEP-0198 §5) starts active (XEP-0352 §4): what it held
//! while its client was inactive goes out, and what comes next passes at once.

use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use xmppd_core::address::Bare;
use xmppd_core::testing::TestClient;
use xmppd_core::{CoreConfig, Server};
use xmppd_csi::CsiModule;

const COMPOSING: &str = "<message xmlns='jabber:client' type='chat' to='alice@localhost/phone'>\
    <composing xmlns='http://jabber.org/protocol/chatstates'/></message>";

fn composing(got: &[Element]) -> usize {
    (got.iter())
        .filter(|e| e.has_child("composing", "http://jabber.org/protocol/chatstates"))
        .count()
}

#[tokio::test]
async fn a_resumed_session_is_active_and_gets_what_it_held() {
    let store = xmppd_core::testing::store_with_users(&["alice", "bob"]).await;
    let csi = Arc::new(CsiModule::default());
    let server = Server::builder(CoreConfig::default(), store)
        .modules(xmppd_im::modules())
        .module(csi.clone())
        .build();
    let alice = TestClient::login(&server, "alice", "phone").await;
    let mut bob = TestClient::login(&server, "bob", "pc").await;
    let jid = alice.session.jid.clone();
    let inactive: Element = "<inactive xmlns='urn:xmpp:csi:0'/>".parse().unwrap();
    assert!(server.handle_nonza(&alice.session, &inactive).await);
    bob.send(&server, COMPOSING).await;
    assert_eq!(csi.held(&jid), 1, "a chat state waits while inactive");

    // The connection breaks; the client resumes on a new stream without saying <active/>.
    let TestClient { session, rx } = alice;
    let (id, _takeover) = server.resumable(&session);
    server.detach(
        session,
        rx,
        Vec::new(),
        Duration::from_secs(60),
        id.clone(),
        Arc::new(()),
    );
    let Ok(resumed) = server
        .resume(&id, &jid.bare(), Duration::from_secs(1))
        .await
    else {
        panic!("the parked session resumes");
    };
    let mut alice = TestClient {
        session: resumed.session,
        rx: resumed.rx,
    };
    assert_eq!(csi.held(&jid), 0, "active again: nothing held");
    assert_eq!(composing(&alice.drain()), 1, "what was held went out");

    bob.send(&server, COMPOSING).await;
    assert_eq!(csi.held(&jid), 0);
    assert_eq!(
        composing(&alice.drain()),
        1,
        "and what comes next passes at once"
    );
}
