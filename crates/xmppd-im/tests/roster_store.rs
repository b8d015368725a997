//! Roster changes against storage that fails or is watched: a failed write is reported to the
//! client and nothing follows it; a change costs the same whatever the roster's size.
//!
//! The store is the real SQLite one, wrapped: writes can be switched to fail, and reads of a
//! whole roster are counted.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use async_trait::async_trait;
use minidom::Element;
use xmppd_core::testing::TestClient as Client;
use xmppd_core::{BareJid, CoreConfig, Server};
use xmppd_storage::{
    AccountRemoval, CredentialStore, OfflineMessage, OfflineStore, Result, RosterItem, RosterStore,
    SessionRecord, SessionStore, SqliteStore, StorageError, StoredScram, Subscription,
    UserDataStore, UserRef,
};

/// SQLite with a switch that makes one account's writes fail, and a count of whole-roster
/// reads.
#[derive(Default)]
struct Watched {
    inner: Option<SqliteStore>,
    failing: std::sync::Mutex<Option<UserRef>>,
    roster_reads: AtomicUsize,
}

impl Watched {
    fn new() -> Self {
        Watched {
            inner: Some(SqliteStore::open_in_memory().unwrap()),
            ..Default::default()
        }
    }

    fn db(&self) -> &SqliteStore {
        self.inner.as_ref().expect("store opened")
    }

    fn fail_writes_of(&self, user: Option<&str>) {
        *self.failing.lock().unwrap() = user.map(|u| UserRef::new(u, "localhost"));
    }

    fn write(&self, user: &UserRef) -> Result<()> {
        if self.failing.lock().unwrap().as_ref() == Some(user) {
            return Err(StorageError::Backend("disk full (test)".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl CredentialStore for Watched {
    async fn create_user(&self, user: &UserRef, creds: &[StoredScram]) -> Result<()> {
        self.write(user)?;
        self.db().create_user(user, creds).await
    }
    async fn set_credentials(&self, user: &UserRef, creds: &[StoredScram]) -> Result<()> {
        self.write(user)?;
        self.db().set_credentials(user, creds).await
    }
    async fn remove_account(
        &self,
        user: &UserRef,
        tombstone_until_ms: Option<i64>,
    ) -> Result<AccountRemoval> {
        self.write(user)?;
        self.db().remove_account(user, tombstone_until_ms).await
    }
    async fn tombstone(&self, user: &UserRef) -> Result<Option<i64>> {
        self.db().tombstone(user).await
    }
    async fn clear_tombstone(&self, user: &UserRef) -> Result<()> {
        self.write(user)?;
        self.db().clear_tombstone(user).await
    }
    async fn user_exists(&self, user: &UserRef) -> Result<bool> {
        self.db().user_exists(user).await
    }
    async fn credentials(&self, user: &UserRef, hash: &str) -> Result<Option<StoredScram>> {
        self.db().credentials(user, hash).await
    }
    async fn list_users(&self, domain: &str) -> Result<Vec<String>> {
        self.db().list_users(domain).await
    }
}

#[async_trait]
impl RosterStore for Watched {
    async fn roster(&self, user: &UserRef) -> Result<(u64, Vec<RosterItem>)> {
        self.roster_reads.fetch_add(1, SeqCst);
        self.db().roster(user).await
    }
    async fn roster_item(&self, user: &UserRef, contact: &str) -> Result<Option<RosterItem>> {
        self.db().roster_item(user, contact).await
    }
    async fn set_roster_item(&self, user: &UserRef, item: &RosterItem) -> Result<u64> {
        self.write(user)?;
        self.db().set_roster_item(user, item).await
    }
    async fn remove_roster_item(&self, user: &UserRef, contact: &str) -> Result<u64> {
        self.write(user)?;
        self.db().remove_roster_item(user, contact).await
    }
    async fn add_pending_subscription(
        &self,
        user: &UserRef,
        contact: &str,
        stanza_xml: &str,
    ) -> Result<()> {
        self.write(user)?;
        self.db()
            .add_pending_subscription(user, contact, stanza_xml)
            .await
    }
    async fn remove_pending_subscription(&self, user: &UserRef, contact: &str) -> Result<()> {
        self.write(user)?;
        self.db().remove_pending_subscription(user, contact).await
    }
    async fn pending_subscriptions(&self, user: &UserRef) -> Result<Vec<(String, String)>> {
        self.db().pending_subscriptions(user).await
    }
    async fn roster_len(&self, user: &UserRef) -> Result<usize> {
        self.db().roster_len(user).await
    }
    async fn bump_roster_version(&self, user: &UserRef) -> Result<u64> {
        self.write(user)?;
        self.db().bump_roster_version(user).await
    }
}

#[async_trait]
impl OfflineStore for Watched {
    async fn push_offline(
        &self,
        user: &UserRef,
        stamp_ms: i64,
        xml: &str,
        max: usize,
    ) -> Result<bool> {
        self.write(user)?;
        self.db().push_offline(user, stamp_ms, xml, max).await
    }
    async fn offline_messages(&self, user: &UserRef) -> Result<Vec<OfflineMessage>> {
        self.db().offline_messages(user).await
    }
    async fn offline_page(
        &self,
        user: &UserRef,
        after_id: i64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<OfflineMessage>> {
        (self.db())
            .offline_page(user, after_id, max_count, max_bytes)
            .await
    }
    async fn take_offline(
        &self,
        user: &UserRef,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<OfflineMessage>> {
        self.write(user)?;
        self.db().take_offline(user, max_count, max_bytes).await
    }
    async fn remove_offline(&self, user: &UserRef, up_to_id: i64) -> Result<()> {
        self.write(user)?;
        self.db().remove_offline(user, up_to_id).await
    }
    async fn replace_offline(&self, user: &UserRef, id: i64, xml: &str) -> Result<bool> {
        self.write(user)?;
        self.db().replace_offline(user, id, xml).await
    }
    async fn offline_count(&self, user: &UserRef) -> Result<usize> {
        self.db().offline_count(user).await
    }
}

#[async_trait]
impl UserDataStore for Watched {
    async fn get_data(&self, user: &UserRef, key: &str) -> Result<Option<String>> {
        self.db().get_data(user, key).await
    }
    async fn set_data(&self, user: &UserRef, key: &str, value: &str) -> Result<()> {
        self.write(user)?;
        self.db().set_data(user, key, value).await
    }
    async fn remove_data(&self, user: &UserRef, key: &str) -> Result<()> {
        self.write(user)?;
        self.db().remove_data(user, key).await
    }
}

#[async_trait]
impl SessionStore for Watched {
    async fn session_opened(&self, rec: &SessionRecord) -> Result<()> {
        self.db().session_opened(rec).await
    }
    async fn session_closed(&self, jid: &str) -> Result<()> {
        self.db().session_closed(jid).await
    }
    async fn clear_sessions(&self, node: &str) -> Result<()> {
        self.db().clear_sessions(node).await
    }
    async fn sessions(&self) -> Result<Vec<SessionRecord>> {
        self.db().sessions().await
    }
}

async fn setup(
    users: &[&str],
    cfg: CoreConfig,
    modules: Vec<Arc<dyn xmppd_core::module::Module>>,
) -> (Arc<Server>, Arc<Watched>) {
    let store = Arc::new(Watched::new());
    for u in users {
        store
            .create_user(&UserRef::new(*u, "localhost"), &[])
            .await
            .unwrap();
    }
    let server = modules
        .into_iter()
        .fold(
            Server::builder(cfg, store.clone()).modules(xmppd_im::modules()),
            |b, m| b.module(m),
        )
        .build();
    (server, store)
}

fn ns() -> &'static str {
    "xmlns='jabber:client'"
}

/// Subscription presence of `kind` to `to`, with `id`.
fn subscription(to: &str, kind: &str, id: &str) -> String {
    format!(
        "<presence {} to='{to}@localhost' type='{kind}' id='{id}'/>",
        ns()
    )
}

fn roster_set(id: &str, item: &str) -> String {
    format!(
        "<iq {} type='set' id='{id}'><query xmlns='jabber:iq:roster'>{item}</query></iq>",
        ns()
    )
}

fn reply<'a>(got: &'a [Element], id: &str) -> &'a Element {
    got.iter()
        .find(|e| e.attr("id") == Some(id))
        .unwrap_or_else(|| panic!("no reply {id}: {got:?}"))
}

fn error_condition(e: &Element) -> Option<String> {
    let err = e.get_child("error", "jabber:client")?;
    err.children()
        .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")
        .map(|c| c.name().to_owned())
}

fn pushes(got: &[Element]) -> Vec<&Element> {
    got.iter()
        .filter(|e| e.name() == "iq" && e.attr("type") == Some("set"))
        .collect()
}

#[tokio::test]
async fn a_failed_roster_write_is_reported_and_nothing_follows_it() {
    let (server, store) = setup(&["alice", "bob"], CoreConfig::default(), Vec::new()).await;
    let mut pc = Client::login(&server, "alice", "pc").await;
    let mut phone = Client::login(&server, "alice", "phone").await;
    let mut bob = Client::login(&server, "bob", "desk").await;
    for c in [&mut pc, &mut phone, &mut bob] {
        c.go_online(&server).await;
    }
    // A contact in both directions, stored while storage works.
    pc.send(&server, &roster_set("s0", "<item jid='bob@localhost'/>"))
        .await;
    pc.send(&server, &subscription("bob", "subscribe", "subscribe"))
        .await;
    bob.send(&server, &subscription("alice", "subscribed", "subscribed"))
        .await;
    bob.send(&server, &subscription("alice", "subscribe", "subscribe"))
        .await;
    pc.send(&server, &subscription("bob", "subscribed", "subscribed"))
        .await;
    for c in [&mut pc, &mut phone, &mut bob] {
        c.drain();
    }
    let alice_ref = UserRef::new("alice", "localhost");
    let stored = store
        .roster_item(&alice_ref, "bob@localhost")
        .await
        .unwrap();
    assert_eq!(stored.map(|i| i.subscription), Some(Subscription::Both));

    store.fail_writes_of(Some("alice"));
    // Adding, renaming and removing: each is answered with an error, and no push, no
    // subscription change and no presence goes anywhere.
    pc.send(&server, &roster_set("add", "<item jid='carol@localhost'/>"))
        .await;
    pc.send(
        &server,
        &roster_set("rename", "<item jid='bob@localhost' name='Bobby'/>"),
    )
    .await;
    pc.send(
        &server,
        &roster_set(
            "remove",
            "<item jid='bob@localhost' subscription='remove'/>",
        ),
    )
    .await;
    let got = pc.drain();
    for id in ["add", "rename", "remove"] {
        let r = reply(&got, id);
        assert_eq!(r.attr("type"), Some("error"), "{id}: {r:?}");
        assert_eq!(
            error_condition(r).as_deref(),
            Some("internal-server-error"),
            "{id}"
        );
    }
    assert!(pushes(&got).is_empty(), "{got:?}");
    assert!(pushes(&phone.drain()).is_empty());
    assert!(bob.drain().is_empty(), "nothing reaches the contact");

    // Subscription presence whose roster change cannot be stored: the sender is told, the
    // contact hears nothing.
    pc.send(&server, &subscription("carol", "subscribe", "sub"))
        .await;
    pc.send(&server, &subscription("bob", "unsubscribed", "uns"))
        .await;
    let got = pc.drain();
    for id in ["sub", "uns"] {
        let r = reply(&got, id);
        assert_eq!(r.attr("type"), Some("error"), "{id}: {r:?}");
        assert_eq!(error_condition(r).as_deref(), Some("internal-server-error"));
    }
    assert!(pushes(&got).is_empty(), "{got:?}");
    assert!(bob.drain().is_empty(), "nothing reaches the contact");

    // An inbound change that cannot be stored is refused to its sender rather than shown.
    bob.send(&server, &subscription("alice", "unsubscribe", "in"))
        .await;
    let got_b = bob.drain();
    assert_eq!(reply(&got_b, "in").attr("type"), Some("error"), "{got_b:?}");
    assert!(pc.drain().is_empty());
    assert!(phone.drain().is_empty());

    store.fail_writes_of(None);
    let stored = store
        .roster_item(&alice_ref, "bob@localhost")
        .await
        .unwrap();
    assert_eq!(
        stored.map(|i| (i.subscription, i.name)),
        Some((Subscription::Both, None)),
        "nothing changed"
    );
}

/// A shared group whose members the test changes.
#[derive(Default)]
struct Shared {
    members: std::sync::Mutex<Vec<&'static str>>,
}

#[async_trait]
impl xmppd_core::module::Module for Shared {
    fn name(&self) -> &'static str {
        "test-shared"
    }

    async fn roster_items(&self, _cx: &xmppd_core::Context<'_>, user: &BareJid) -> Vec<RosterItem> {
        let members = self.members.lock().unwrap().clone();
        if !members
            .iter()
            .any(|m| user.node().is_some_and(|n| n.as_str() == *m))
        {
            return Vec::new();
        }
        members
            .iter()
            .map(|u| RosterItem {
                jid: format!("{u}@localhost"),
                groups: vec!["Staff".into()],
                ..Default::default()
            })
            .filter(|i| i.jid != user.as_str())
            .collect()
    }
}

#[tokio::test]
async fn a_roster_change_does_not_read_the_whole_roster() {
    let cfg = CoreConfig {
        max_roster_items: 200,
        ..CoreConfig::default()
    };
    let shared = Arc::new(Shared::default());
    *shared.members.lock().unwrap() = vec!["alice", "dave"];
    let (server, store) = setup(&["alice", "bob"], cfg, vec![shared]).await;
    let alice_ref = UserRef::new("alice", "localhost");
    for i in 0..198 {
        let item = RosterItem {
            jid: format!("c{i}@localhost"),
            ..Default::default()
        };
        store.set_roster_item(&alice_ref, &item).await.unwrap();
    }
    let mut pc = Client::login(&server, "alice", "pc").await;
    let mut phone = Client::login(&server, "alice", "phone").await;
    pc.go_online(&server).await;
    phone.go_online(&server).await;

    let before = store.roster_reads.load(SeqCst);
    // Adding, naming a shared contact (the 200th item), refusing one past the limit, asking for
    // a subscription, removing.
    pc.send(
        &server,
        &roster_set("add", "<item jid='bob@localhost' name='Bob'/>"),
    )
    .await;
    pc.send(
        &server,
        &roster_set("shared", "<item jid='dave@localhost' name='Dave'/>"),
    )
    .await;
    pc.send(&server, &roster_set("full", "<item jid='zed@localhost'/>"))
        .await;
    pc.send(&server, &subscription("bob", "subscribe", "subscribe"))
        .await;
    pc.send(
        &server,
        &roster_set("remove", "<item jid='c2@localhost' subscription='remove'/>"),
    )
    .await;
    assert_eq!(
        store.roster_reads.load(SeqCst) - before,
        0,
        "a roster change read the whole roster"
    );

    let got = pc.drain();
    assert_eq!(reply(&got, "add").attr("type"), Some("result"));
    assert_eq!(reply(&got, "shared").attr("type"), Some("result"));
    assert_eq!(
        error_condition(reply(&got, "full")).as_deref(),
        Some("resource-constraint")
    );
    assert_eq!(reply(&got, "remove").attr("type"), Some("result"));
    // The pushes show merged items and carry distinct versions, and the last one is what a
    // roster get reports.
    let seen = phone.drain();
    let pushed: Vec<(String, String, String)> = pushes(&seen)
        .iter()
        .map(|p| {
            let q = p.get_child("query", "jabber:iq:roster").unwrap();
            let item = q.get_child("item", "jabber:iq:roster").unwrap();
            (
                q.attr("ver").unwrap().to_owned(),
                item.attr("jid").unwrap().to_owned(),
                item.attr("subscription").unwrap().to_owned(),
            )
        })
        .collect();
    let summary: Vec<(&str, &str)> = pushed
        .iter()
        .map(|(_, j, s)| (j.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("bob@localhost", "none"),
            ("dave@localhost", "both"),
            ("bob@localhost", "none"),
            ("c2@localhost", "remove"),
        ]
    );
    let mut versions: Vec<&str> = pushed.iter().map(|(v, _, _)| v.as_str()).collect();
    let last = versions.last().unwrap().to_string();
    versions.dedup();
    assert_eq!(versions.len(), 4, "{versions:?}");
    pc.send(
        &server,
        &format!(
            "<iq {} type='get' id='g'><query xmlns='jabber:iq:roster' ver='{last}'/></iq>",
            ns()
        ),
    )
    .await;
    let got = pc.drain();
    assert_eq!(
        reply(&got, "g").children().count(),
        0,
        "the last pushed version is current"
    );
}

/// alice and bob on a server with a shared group of `members`.
async fn with_shared(members: &[&'static str]) -> (Arc<Server>, Arc<Shared>) {
    let shared = Arc::new(Shared::default());
    *shared.members.lock().unwrap() = members.to_vec();
    let modules: Vec<Arc<dyn xmppd_core::module::Module>> = vec![shared.clone()];
    let (server, _store) = setup(&["alice", "bob"], CoreConfig::default(), modules).await;
    (server, shared)
}

#[tokio::test]
async fn the_roster_version_changes_when_shared_items_do() {
    let (server, shared) = with_shared(&["alice", "bob"]).await;
    let mut pc = Client::login(&server, "alice", "pc").await;
    let get = |id: &str, ver: &str| {
        format!(
            "<iq {} type='get' id='{id}'><query xmlns='jabber:iq:roster' ver='{ver}'/></iq>",
            ns()
        )
    };
    let version = |got: &[Element], id: &str| {
        reply(got, id)
            .get_child("query", "jabber:iq:roster")
            .and_then(|q| q.attr("ver"))
            .map(str::to_owned)
    };
    pc.send(&server, &get("g1", "")).await;
    let v1 = version(&pc.drain(), "g1").expect("full roster with a version");
    // Changed behind the core's back, as a group changed while nobody was told (the server
    // was down, or the user offline): a client's copy is out of date.
    shared.members.lock().unwrap().push("carol");
    pc.send(&server, &get("g2", &v1)).await;
    let got = pc.drain();
    let v2 = version(&got, "g2").expect("the changed roster is sent again");
    assert_ne!(v1, v2);
    shared.members.lock().unwrap().pop();
    pc.send(&server, &get("g3", &v2)).await;
    let v3 = version(&pc.drain(), "g3").expect("and again");
    assert_ne!(v2, v3);
    pc.send(&server, &get("g4", &v3)).await;
    assert_eq!(reply(&pc.drain(), "g4").children().count(), 0);
}

#[tokio::test]
async fn a_shared_item_change_gets_its_own_version() {
    let (server, shared) = with_shared(&["alice", "bob", "carol"]).await;
    let mut pc = Client::login(&server, "alice", "pc").await;
    pc.go_online(&server).await;
    let alice = BareJid::new("alice@localhost").unwrap();
    // Two items leave in one refresh: each push has its own version, so a client that kept
    // only the first cannot be told later that its copy is current.
    *shared.members.lock().unwrap() = vec!["alice"];
    for who in ["bob", "carol"] {
        let item = RosterItem {
            jid: format!("{who}@localhost"),
            groups: vec!["Staff".into()],
            ..Default::default()
        };
        xmppd_im::shared_roster_item_changed(&server, &alice, &item, true).await;
    }
    let got = pc.drain();
    let versions: Vec<&str> = pushes(&got)
        .iter()
        .map(|p| {
            p.get_child("query", "jabber:iq:roster")
                .unwrap()
                .attr("ver")
                .unwrap()
        })
        .collect();
    assert_eq!(versions.len(), 2, "{got:?}");
    assert_ne!(versions[0], versions[1]);
}
