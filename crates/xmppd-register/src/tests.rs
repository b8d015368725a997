//! Registration before login through [`pre_auth_iq`], and the logged-in module through the
//! core, on a real SQLite store.

use std::collections::HashMap;
use std::sync::Arc;

use minidom::Element;
use xmppd_auth::{AuthBackend, InternalBackend};
use xmppd_core::stanza::NS_STANZAS;
use xmppd_core::{BareJid, ClientSession, CoreConfig, Outbound, Server, SessionInfo};
use xmppd_storage::{CredentialStore, SqliteStore, UserRef};

use super::*;

fn backend() -> Arc<dyn AuthBackend> {
    let store: Arc<dyn CredentialStore> = Arc::new(SqliteStore::open_in_memory().unwrap());
    Arc::new(InternalBackend::with_iterations(store, 1))
}

fn policy() -> RegistrationPolicy {
    RegistrationPolicy {
        hosts: vec!["localhost".into()],
        ..RegistrationPolicy::default()
    }
}

fn iq(kind: &str, query: &str) -> Element {
    format!(
        "<iq xmlns='jabber:client' type='{kind}' id='r1'>\
         <query xmlns='{NS_REGISTER}'>{query}</query></iq>"
    )
    .parse()
    .unwrap()
}

fn condition(reply: &Element) -> Option<String> {
    let err = reply.get_child("error", "jabber:client")?;
    err.children()
        .find(|c| c.ns() == NS_STANZAS && c.name() != "text")
        .map(|c| c.name().to_owned())
}

async fn pre(b: &dyn AuthBackend, el: &Element, allow: bool) -> Element {
    pre_auth_iq(&policy(), b, "localhost", el, &mut || allow).await
}

#[tokio::test]
async fn pre_auth_form_create_conflict_and_missing_fields() {
    let b = backend();
    let form = pre(b.as_ref(), &iq("get", ""), true).await;
    assert_eq!(form.attr("type"), Some("result"));
    assert_eq!(form.attr("id"), Some("r1"));
    let q = form.get_child("query", NS_REGISTER).unwrap();
    assert!(q.has_child("username", NS_REGISTER) && q.has_child("password", NS_REGISTER));

    let set = iq(
        "set",
        "<username>Newbie</username><password>long enough</password>",
    );
    let ok = pre(b.as_ref(), &set, true).await;
    assert_eq!(ok.attr("type"), Some("result"), "{ok:?}");
    let user = UserRef::new("newbie", "localhost");
    assert!(b.check_password(&user, "long enough").await.unwrap());

    let again = pre(b.as_ref(), &set, true).await;
    assert_eq!(condition(&again).as_deref(), Some("conflict"));

    let missing = iq("set", "<username>x</username>");
    assert_eq!(
        condition(&pre(b.as_ref(), &missing, true).await).as_deref(),
        Some("not-acceptable")
    );
    let short = iq("set", "<username>y</username><password>short</password>");
    assert_eq!(
        condition(&pre(b.as_ref(), &short, true).await).as_deref(),
        Some("not-acceptable")
    );
    let bad_name = iq(
        "set",
        "<username>a@b</username><password>long enough</password>",
    );
    assert_eq!(
        condition(&pre(b.as_ref(), &bad_name, true).await).as_deref(),
        Some("not-acceptable")
    );
    let remove = iq("set", "<remove/>");
    assert_eq!(
        condition(&pre(b.as_ref(), &remove, true).await).as_deref(),
        Some("not-authorized")
    );
}

#[tokio::test]
async fn pre_auth_rate_limit_refuses_without_creating() {
    let b = backend();
    let set = iq(
        "set",
        "<username>z</username><password>long enough</password>",
    );
    let reply = pre(b.as_ref(), &set, false).await;
    assert_eq!(condition(&reply).as_deref(), Some("resource-constraint"));
    assert!(!b
        .user_exists(&UserRef::new("z", "localhost"))
        .await
        .unwrap());
}

struct Client {
    session: ClientSession,
    rx: xmppd_core::QueueReceiver,
}

impl Client {
    async fn iq(&mut self, server: &Arc<Server>, xml: &str) -> Element {
        let el: Element = xml.parse().unwrap();
        server.handle_from_client(&mut self.session, el).await;
        loop {
            match self.rx.try_recv() {
                Some((Outbound::Stanza(s), _)) if s.name() == "iq" => return (*s).clone(),
                Some(_) => {}
                None => panic!("no reply to {xml}"),
            }
        }
    }
}

/// A server with alice (password "old password") whose host uses `directory` instead of
/// the internal backend when given; returns the internal backend too.
async fn server_with(
    directory: Option<Arc<dyn AuthBackend>>,
) -> (Arc<Server>, Client, Arc<dyn AuthBackend>) {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let creds: Arc<dyn CredentialStore> = store.clone();
    let internal: Arc<dyn AuthBackend> = Arc::new(InternalBackend::with_iterations(creds, 1));
    internal
        .create_user(&UserRef::new("alice", "localhost"), "old password")
        .await
        .unwrap();
    let backend = directory.unwrap_or_else(|| internal.clone());
    let backends: HashMap<String, Arc<dyn AuthBackend>> =
        [("localhost".to_owned(), backend)].into();
    let server = Server::builder(CoreConfig::default(), store)
        .modules(xmppd_im::modules())
        .module(Arc::new(Register::new(backends, policy())))
        .build();
    let (session, rx) = server
        .bind(
            BareJid::new("alice@localhost").unwrap(),
            Some("r"),
            SessionInfo::default(),
            xmppd_core::QueueLimits::default(),
        )
        .await
        .unwrap();
    (server, Client { session, rx }, internal)
}

fn set(to: &str, query: &str) -> String {
    format!(
        "<iq xmlns='jabber:client' type='set' id='p' {to}>\
         <query xmlns='{NS_REGISTER}'>{query}</query></iq>"
    )
}

/// XEP-0077 §3.1: a query that is not well-formed is a `<bad-request/>`; nothing is created or
/// changed for it.
#[tokio::test]
async fn a_malformed_query_is_a_bad_request_and_changes_nothing() {
    let b = backend();
    let twice = iq(
        "set",
        "<username>first</username><username>second</username>\
         <password>long enough</password>",
    );
    let reply = pre(b.as_ref(), &twice, true).await;
    assert_eq!(
        condition(&reply).as_deref(),
        Some("bad-request"),
        "{reply:?}"
    );
    for name in ["first", "second"] {
        let user = UserRef::new(name, "localhost");
        assert!(!b.user_exists(&user).await.unwrap(), "{name} created");
    }

    let (server, mut alice, internal) = server_with(None).await;
    let change = set(
        "to='localhost'",
        "<username>alice</username><password>new password</password>\
         <password>other password</password>",
    );
    let reply = alice.iq(&server, &change).await;
    assert_eq!(
        condition(&reply).as_deref(),
        Some("bad-request"),
        "{reply:?}"
    );
    let alice_ref = UserRef::new("alice", "localhost");
    for pw in ["new password", "other password"] {
        assert!(!internal.check_password(&alice_ref, pw).await.unwrap());
    }
}

#[tokio::test]
async fn logged_in_password_change_and_removal() {
    let (server, mut alice, internal) = server_with(None).await;
    let get = format!(
        "<iq xmlns='jabber:client' type='get' id='g' to='localhost'>\
         <query xmlns='{NS_REGISTER}'/></iq>"
    );
    let form = alice.iq(&server, &get).await;
    let q = form.get_child("query", NS_REGISTER).unwrap();
    assert!(q.has_child("registered", NS_REGISTER));
    assert_eq!(
        q.get_child("username", NS_REGISTER).unwrap().text(),
        "alice"
    );

    let other = set(
        "to='localhost'",
        "<username>bob</username><password>new password</password>",
    );
    assert_eq!(
        condition(&alice.iq(&server, &other).await).as_deref(),
        Some("not-authorized")
    );
    let short = set(
        "to='localhost'",
        "<username>alice</username><password>x</password>",
    );
    assert_eq!(
        condition(&alice.iq(&server, &short).await).as_deref(),
        Some("not-acceptable")
    );

    // No 'to': addressed to the user's own bare JID.
    let change = set(
        "",
        "<username>alice</username><password>new password</password>",
    );
    let reply = alice.iq(&server, &change).await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    let alice_ref = UserRef::new("alice", "localhost");
    assert!(internal
        .check_password(&alice_ref, "new password")
        .await
        .unwrap());

    let remove = set("to='localhost'", "<remove/>");
    let reply = alice.iq(&server, &remove).await;
    assert_eq!(reply.attr("type"), Some("result"));
    assert!(!server.store().user_exists(&alice_ref).await.unwrap());
    // The session is closed shortly after the answer.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while !matches!(alice.rx.recv().await.0, Outbound::Close(..)) {}
    })
    .await;
    assert!(closed.is_ok(), "session not closed after removal");

    // The name is kept for a while: registering it again is a conflict, with the reason.
    let again = iq(
        "set",
        "<username>alice</username><password>long enough</password>",
    );
    let reply = pre(internal.as_ref(), &again, true).await;
    assert_eq!(condition(&reply).as_deref(), Some("conflict"), "{reply:?}");
    let text = reply
        .get_child("error", "jabber:client")
        .and_then(|e| e.get_child("text", NS_STANZAS));
    assert!(
        text.is_some_and(|t| t.text().contains("removed")),
        "{reply:?}"
    );
    assert!(!internal.user_exists(&alice_ref).await.unwrap());
}

/// A backend that is not the internal one (a directory).
struct Directory;

#[async_trait::async_trait]
impl AuthBackend for Directory {
    fn name(&self) -> &'static str {
        "ldap"
    }
    fn supports_scram(&self) -> bool {
        false
    }
    async fn scram_keys(
        &self,
        _: &UserRef,
        _: xmppd_sasl::HashAlg,
    ) -> Result<Option<xmppd_sasl::ScramKeys>, AuthError> {
        Ok(None)
    }
    async fn check_password(&self, _: &UserRef, _: &str) -> Result<bool, AuthError> {
        Ok(true)
    }
    async fn user_exists(&self, _: &UserRef) -> Result<bool, AuthError> {
        Ok(true)
    }
    async fn create_user(&self, _: &UserRef, _: &str) -> Result<(), AuthError> {
        Err(AuthError::Unsupported)
    }
    async fn set_password(&self, _: &UserRef, _: &str) -> Result<(), AuthError> {
        Err(AuthError::Unsupported)
    }
}

#[tokio::test]
async fn directory_accounts_are_not_allowed() {
    let (server, mut alice, _) = server_with(Some(Arc::new(Directory))).await;
    let change = set(
        "",
        "<username>alice</username><password>new password</password>",
    );
    assert_eq!(
        condition(&alice.iq(&server, &change).await).as_deref(),
        Some("not-allowed")
    );
    let remove = set("to='localhost'", "<remove/>");
    assert_eq!(
        condition(&alice.iq(&server, &remove).await).as_deref(),
        Some("not-allowed")
    );
    let create = iq(
        "set",
        "<username>n</username><password>long enough</password>",
    );
    assert_eq!(
        condition(&pre(&Directory, &create, true).await).as_deref(),
        Some("not-allowed")
    );
}
