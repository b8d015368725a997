//! The blocking module on a server with in-memory sessions and the IM modules: what a domain
//! item blocks and what it never does, and account removal.

use std::sync::Arc;

use minidom::Element;
use xmppd_blocking::{BlockStore, Blocking, Settings, SqliteBlocks};
use xmppd_core::testing::TestClient;
use xmppd_core::{BareJid, CoreConfig, Server};
use xmppd_storage::{CredentialStore, SqliteStore, UserRef};

const NS: &str = "xmlns='jabber:client'";

async fn setup() -> (Arc<Server>, Arc<SqliteBlocks>) {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    for u in ["alice", "bob"] {
        let user = UserRef::new(u, "localhost");
        store.create_user(&user, &[]).await.unwrap();
    }
    let blocks = Arc::new(SqliteBlocks::open(store.clone()).await.unwrap());
    let module = Blocking::new(blocks.clone(), Settings::default());
    let server = Server::builder(CoreConfig::default(), store)
        .module(Arc::new(module))
        .modules(xmppd_im::modules())
        .build();
    (server, blocks)
}

async fn online(server: &Arc<Server>, user: &str, resource: &str) -> TestClient {
    let mut c = TestClient::login(server, user, resource).await;
    c.go_online(server).await;
    c
}

fn error_condition(el: &Element) -> Option<String> {
    let err = el.get_child("error", "jabber:client")?;
    err.children()
        .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas")
        .map(|c| c.name().to_owned())
}

fn reply(got: &[Element], id: &str) -> Element {
    got.iter()
        .find(|e| e.attr("id") == Some(id))
        .unwrap_or_else(|| panic!("no reply {id} in {got:?}"))
        .clone()
}

#[tokio::test]
async fn a_domain_item_blocks_its_accounts_but_never_the_users_own() {
    let (server, _) = setup().await;
    let mut alice = online(&server, "alice", "a").await;
    let mut other = online(&server, "alice", "b").await;
    let mut bob = online(&server, "bob", "r").await;
    other.drain();
    let block = format!(
        "<iq {NS} type='set' id='b1'><block xmlns='urn:xmpp:blocking'>\
         <item jid='localhost'/></block></iq>"
    );
    alice.send(&server, &block).await;
    assert_eq!(reply(&alice.drain(), "b1").attr("type"), Some("result"));

    bob.send(
        &server,
        &format!("<message {NS} to='alice@localhost' id='m1'><body>hi</body></message>"),
    )
    .await;
    assert_eq!(
        error_condition(&reply(&bob.drain(), "m1")).as_deref(),
        Some("service-unavailable")
    );

    // The server itself and alice's own resources stay reachable.
    let ping =
        format!("<iq {NS} type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    alice.send(&server, &ping).await;
    assert_eq!(reply(&alice.drain(), "p1").attr("type"), Some("result"));
    let to_self = format!("<message {NS} to='alice@localhost/b' id='m2'><body>me</body></message>");
    alice.send(&server, &to_self).await;
    assert!(other.drain().iter().any(|e| e.attr("id") == Some("m2")));
}

#[tokio::test]
async fn removing_the_account_removes_its_list() {
    let (server, blocks) = setup().await;
    let mut alice = online(&server, "alice", "a").await;
    let block = format!(
        "<iq {NS} type='set' id='b1'><block xmlns='urn:xmpp:blocking'>\
         <item jid='bob@localhost'/></block></iq>"
    );
    alice.send(&server, &block).await;
    assert_eq!(reply(&alice.drain(), "b1").attr("type"), Some("result"));
    assert_eq!(
        blocks.items("alice@localhost").await.unwrap(),
        ["bob@localhost"]
    );

    let user = BareJid::new("alice@localhost").unwrap();
    server.remove_account(&user, None).await.unwrap();
    assert!(blocks.items("alice@localhost").await.unwrap().is_empty());
    alice.logout(&server).await;
}

/// [`SqliteBlocks`], counting the lists read.
struct CountingReads(Arc<SqliteBlocks>, std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl BlockStore for CountingReads {
    async fn items(&self, owner: &str) -> Result<Vec<String>, xmppd_storage::StorageError> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.items(owner).await
    }
    async fn add(&self, owner: &str, items: Vec<String>) -> xmppd_storage::Result<()> {
        self.0.add(owner, items).await
    }
    async fn remove(&self, owner: &str, items: Option<Vec<String>>) -> xmppd_storage::Result<()> {
        self.0.remove(owner, items).await
    }
    async fn owners(&self) -> xmppd_storage::Result<Vec<String>> {
        self.0.owners().await
    }
}

#[tokio::test]
async fn accounts_that_block_nobody_cost_no_list_reads() {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    for u in ["alice", "bob", "carol"] {
        let user = UserRef::new(u, "localhost");
        store.create_user(&user, &[]).await.unwrap();
    }
    let blocks = Arc::new(SqliteBlocks::open(store.clone()).await.unwrap());
    // Carol blocked someone before this server started.
    let carol = "carol@localhost";
    blocks
        .add(carol, vec!["mallory@localhost".into()])
        .await
        .unwrap();
    let counting = Arc::new(CountingReads(blocks, Default::default()));
    let module = Blocking::new(counting.clone(), Settings::default());
    let server = Server::builder(CoreConfig::default(), store)
        .module(Arc::new(module))
        .modules(xmppd_im::modules())
        .build();
    let mut alice = online(&server, "alice", "a").await;
    let mut bob = online(&server, "bob", "b").await;
    for i in 0..5 {
        let msg =
            format!("<message {NS} to='bob@localhost' type='chat'><body>{i}</body></message>");
        alice.send(&server, &msg).await;
        let msg =
            format!("<message {NS} to='carol@localhost' type='chat'><body>{i}</body></message>");
        bob.send(&server, &msg).await;
    }
    assert_eq!(
        bob.drain().iter().filter(|e| e.name() == "message").count(),
        5
    );
    let reads = counting.1.load(std::sync::atomic::Ordering::SeqCst);
    // Only carol's list is read (she is offline, so it is not kept): once per message.
    assert_eq!(reads, 5, "alice's and bob's lists are never read");
}
