//! In-memory sessions for tests of the core and of modules built on it (feature `testing`).
//!
//! A [`TestClient`] is a bound session without a socket: stanzas go in through
//! [`Server::handle_from_client`], and what the server queued for the session comes out of
//! [`TestClient::drain`] (or [`TestClient::pump`], which also reports writes back to the core
//! as a socket writer does). Stream closes show up as an element named after the stream error
//! condition in the namespace [`CLOSE_NS`].

use std::sync::Arc;

use jid::BareJid;
use minidom::Element;

use crate::context::{Context, Outbox};
use crate::{ClientSession, Outbound, QueueLimits, QueueReceiver, Server, SessionInfo};

/// An in-memory store with the accounts `users` of `localhost` (no credentials).
pub async fn store_with_users(users: &[&str]) -> Arc<xmppd_storage::SqliteStore> {
    use xmppd_storage::{CredentialStore, UserRef};
    let store = Arc::new(xmppd_storage::SqliteStore::open_in_memory().unwrap());
    for u in users {
        let user = UserRef::new(*u, "localhost");
        store.create_user(&user, &[]).await.unwrap();
    }
    store
}

/// Namespace of the pseudo-elements standing for `Outbound::Close`.
pub const CLOSE_NS: &str = "urn:xmppd:test:close";

/// A bound session driven by a test.
pub struct TestClient {
    pub session: ClientSession,
    pub rx: QueueReceiver,
}

impl TestClient {
    /// Binds `user@localhost/resource` (`user` may also be a full bare JID with a domain).
    pub async fn login(server: &Arc<Server>, user: &str, resource: &str) -> TestClient {
        let bare = if user.contains('@') {
            BareJid::new(user)
        } else {
            BareJid::new(&format!("{user}@localhost"))
        }
        .expect("test JID is valid");
        Self::login_with(server, bare, resource, QueueLimits::default()).await
    }

    /// Binds `bare/resource` with a queue bounded by `limits`.
    pub async fn login_with(
        server: &Arc<Server>,
        bare: BareJid,
        resource: &str,
        limits: QueueLimits,
    ) -> TestClient {
        let (session, rx) = server
            .bind(bare, Some(resource), SessionInfo::default(), limits)
            .await
            .expect("test session binds");
        TestClient { session, rx }
    }

    /// Parses `xml` (which must declare `xmlns='jabber:client'`) and hands it to the server as
    /// if this session had sent it.
    pub async fn send(&mut self, server: &Arc<Server>, xml: &str) {
        let el: Element = xml.parse().expect("test stanza parses");
        server.handle_from_client(&mut self.session, el).await;
    }

    /// Fetches the roster (so roster pushes arrive) and sends initial presence; drops what
    /// came back.
    pub async fn go_online(&mut self, server: &Arc<Server>) {
        let ns = "xmlns='jabber:client'";
        self.send(
            server,
            &format!("<iq {ns} type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>"),
        )
        .await;
        self.send(server, &format!("<presence {ns}/>")).await;
        self.drain();
    }

    /// Everything queued for this session right now.
    pub fn drain(&mut self) -> Vec<Element> {
        let mut v = Vec::new();
        while let Some((o, _)) = self.rx.try_recv() {
            v.extend(Self::element(o));
        }
        v
    }

    /// Like [`TestClient::drain`], reporting each [`Outbound::Written`] to the core as the
    /// socket writer does (which hands out further pages of offline messages), until nothing
    /// more comes.
    pub async fn pump(&mut self, server: &Arc<Server>) -> Vec<Element> {
        let mut v = Vec::new();
        while let Some((o, _)) = self.rx.try_recv() {
            if let Outbound::Written = o {
                server.written(&self.session).await;
            }
            v.extend(Self::element(o));
        }
        v
    }

    fn element(o: Outbound) -> Option<Element> {
        match o {
            Outbound::Close(c, _) => Some(Element::bare(c.as_str(), CLOSE_NS)),
            other => other.to_element(),
        }
    }

    /// Ends the session as its driver would.
    pub async fn logout(self, server: &Arc<Server>) {
        server.unbind(self.session).await;
    }
}

/// An outbox for calling a module's hooks directly in a test: [`Scratch::context`] gives the
/// [`Context`] a hook takes, [`Scratch::dispatch`] routes what the hook queued.
#[derive(Default)]
pub struct Scratch(Outbox);

impl Scratch {
    pub fn new() -> Self {
        Self::default()
    }

    /// A context on `server` whose outbox is this one.
    pub fn context<'a>(&'a mut self, server: &'a Arc<Server>) -> Context<'a> {
        Context::new(server, &mut self.0)
    }

    /// Routes everything queued so far.
    pub async fn dispatch(&mut self, server: &Arc<Server>) {
        server.drain(&mut self.0).await;
    }
}
