//! The command framework and the XEP-0133 commands through the core: IQs in through
//! `handle_from_client`, answers out of the session queues, a real SQLite store underneath.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use jid::BareJid;
use minidom::Element;
use xmppd_auth::{AuthBackend, InternalBackend};
use xmppd_core::stanza::{StanzaError, NS_STANZAS};
use xmppd_core::testing::{TestClient as Client, CLOSE_NS};
use xmppd_core::{CoreConfig, Server, SessionInfo};
use xmppd_storage::{CredentialStore, SqliteStore, UserRef};

use super::*;
use crate::motd::Motd;

/// Command helpers on the core's in-memory test session.
trait CommandClient {
    /// Sends a command IQ to the domain and returns the reply.
    async fn command(&mut self, server: &Arc<Server>, inner: &str) -> Element;
}

impl CommandClient for Client {
    async fn command(&mut self, server: &Arc<Server>, inner: &str) -> Element {
        let xml =
            format!("<iq xmlns='jabber:client' type='set' id='c' to='localhost'>{inner}</iq>");
        self.send(server, &xml).await;
        let replies: Vec<Element> = self
            .drain()
            .into_iter()
            .filter(|e| e.name() == "iq")
            .collect();
        assert_eq!(replies.len(), 1, "one reply expected: {replies:?}");
        replies.into_iter().next().unwrap()
    }
}

/// A two-stage command that echoes what was submitted at both stages.
struct TwoStage;

#[async_trait]
impl Command for TwoStage {
    fn node(&self) -> &str {
        "test#two"
    }
    fn name(&self) -> &str {
        "Two stages"
    }
    async fn step(
        &self,
        _ctx: &mut Context<'_, '_>,
        forms: &[DataForm],
    ) -> Result<Step, StanzaError> {
        let field = |n: usize| DataForm {
            type_: DataFormType::Form,
            title: None,
            instructions: None,
            fields: vec![Field::new(&format!("f{n}"), FieldType::TextSingle)],
        };
        Ok(match forms.len() {
            0 => Step::Form {
                form: field(0),
                last: false,
            },
            1 => Step::Form {
                form: field(1),
                last: true,
            },
            _ => Step::info(format!(
                "{}+{}",
                forms[0].value("f0").unwrap_or("-"),
                forms[1].value("f1").unwrap_or("-")
            )),
        })
    }
}

async fn setup_with_backend() -> (Arc<Server>, Arc<Motd>, Arc<dyn AuthBackend>) {
    setup_with(admin::AccountCounts::new()).await
}

async fn setup_with(
    counts: admin::AccountCounts,
) -> (Arc<Server>, Arc<Motd>, Arc<dyn AuthBackend>) {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let creds: Arc<dyn CredentialStore> = store.clone();
    let backend: Arc<dyn AuthBackend> = Arc::new(InternalBackend::with_iterations(creds, 1));
    for u in ["admin", "bob"] {
        backend
            .create_user(&UserRef::new(u, "localhost"), "pw")
            .await
            .unwrap();
    }
    let backends: HashMap<String, Arc<dyn AuthBackend>> =
        [("localhost".to_owned(), backend.clone())].into();
    let motd = Arc::new(Motd::new());
    let mut adhoc = AdHoc::new().command(Arc::new(TwoStage));
    for c in admin::commands(Arc::new(backends), Arc::new(counts), motd.clone()) {
        adhoc = adhoc.command(c);
    }
    let cfg = CoreConfig {
        admins: vec!["admin@localhost".into()],
        ..CoreConfig::default()
    };
    let server = Server::builder(cfg, store)
        .modules(xmppd_im::modules())
        .module(Arc::new(adhoc))
        .module(motd.clone())
        .build();
    (server, motd, backend)
}

async fn setup() -> (Arc<Server>, Arc<Motd>) {
    let (server, motd, _) = setup_with_backend().await;
    (server, motd)
}

async fn login(server: &Arc<Server>, user: &str, res: &str) -> Client {
    Client::login(server, user, res).await
}

fn cmd(node: &str, extra: &str, body: &str) -> String {
    format!("<command xmlns='{NS_COMMANDS}' node='{node}' {extra}>{body}</command>")
}

fn submit(fields: &[(&str, &str)]) -> String {
    let mut x = String::from("<x xmlns='jabber:x:data' type='submit'>");
    for (var, value) in fields {
        x.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    x + "</x>"
}

/// Executes `node` and submits `fields` at its first form; returns the final `<command/>` reply.
async fn complete(
    admin: &mut Client,
    server: &Arc<Server>,
    node: &str,
    fields: &[(&str, &str)],
) -> Element {
    let reply = admin.command(server, &cmd(node, "", "")).await;
    let sid = command_of(&reply).attr("sessionid").unwrap().to_owned();
    let extra = format!("sessionid='{sid}'");
    admin
        .command(server, &cmd(node, &extra, &submit(fields)))
        .await
}

fn error_of(reply: &Element) -> Option<(String, Option<String>)> {
    let err = reply.get_child("error", "jabber:client")?;
    let cond = err
        .children()
        .find(|c| c.ns() == NS_STANZAS && c.name() != "text")?;
    // XEP-0050's specific condition travels as the application-specific child.
    let specific = err
        .get_child("text", NS_STANZAS)
        .map(Element::text)
        .or_else(|| {
            err.children()
                .find(|c| c.ns() == NS_COMMANDS)
                .map(|c| c.name().to_owned())
        });
    Some((cond.name().to_owned(), specific))
}

fn command_of(reply: &Element) -> &Element {
    reply
        .get_child("command", NS_COMMANDS)
        .unwrap_or_else(|| panic!("no command in {reply:?}"))
}

fn admin_node(op: &str) -> String {
    format!("{}#{op}", admin::NS_ADMIN)
}

#[tokio::test]
async fn non_admins_are_forbidden_and_see_no_commands() {
    let (server, _) = setup().await;
    let mut bob = login(&server, "bob", "r").await;
    let reply = bob
        .command(&server, &cmd(&admin_node("announce"), "", ""))
        .await;
    assert_eq!(error_of(&reply).unwrap().0, "forbidden");
    let items = format!(
        "<iq xmlns='jabber:client' type='get' id='d' to='localhost'>\
         <query xmlns='http://jabber.org/protocol/disco#items' node='{NS_COMMANDS}'/></iq>"
    );
    bob.send(&server, &items).await;
    let reply = bob.drain().remove(0);
    assert_eq!(reply.attr("type"), Some("result"));
    let q = reply.children().next().unwrap();
    assert_eq!(q.children().count(), 0, "bob sees no admin command");

    let mut admin = login(&server, "admin", "r").await;
    admin.send(&server, &items).await;
    let reply = admin.drain().remove(0);
    let nodes: Vec<&str> = reply
        .children()
        .next()
        .unwrap()
        .children()
        .filter_map(|i| i.attr("node"))
        .collect();
    assert!(
        nodes.contains(&admin_node("announce").as_str()),
        "{nodes:?}"
    );
    assert!(nodes.contains(&admin_node("change-user-password").as_str()));
}

#[tokio::test]
async fn unknown_node_and_bad_action_and_session() {
    let (server, _) = setup().await;
    let mut admin = login(&server, "admin", "r").await;
    let reply = admin.command(&server, &cmd("nope", "", "")).await;
    assert_eq!(error_of(&reply).unwrap().0, "item-not-found");
    let reply = admin
        .command(&server, &cmd("test#two", "action='dance'", ""))
        .await;
    assert_eq!(
        error_of(&reply).unwrap(),
        ("bad-request".into(), Some("malformed-action".into()))
    );
    let reply = admin
        .command(&server, &cmd("test#two", "sessionid='forged'", ""))
        .await;
    assert_eq!(
        error_of(&reply).unwrap(),
        ("bad-request".into(), Some("bad-sessionid".into()))
    );
}

#[tokio::test]
async fn a_malformed_payload_is_a_bad_request_and_keeps_the_session() {
    let (server, _) = setup().await;
    let mut admin = login(&server, "admin", "r").await;
    let reply = admin.command(&server, &cmd("test#two", "", "")).await;
    let sid = command_of(&reply).attr("sessionid").unwrap().to_owned();
    let extra = format!("sessionid='{sid}'");
    let conditions = |reply: &Element| {
        let err = reply.get_child("error", "jabber:client").expect("an error");
        (
            err.has_child("bad-request", NS_STANZAS),
            err.has_child("bad-payload", NS_COMMANDS),
        )
    };
    // XEP-0050 §4.6: a form that is not a valid XEP-0004 form is a bad payload.
    for form in [
        "<x xmlns='jabber:x:data' type='bogus'/>",
        "<x xmlns='jabber:x:data' type='submit'><field><value>a</value></field></x>",
    ] {
        let reply = admin.command(&server, &cmd("test#two", &extra, form)).await;
        assert_eq!(conditions(&reply), (true, true), "{form}: {reply:?}");
    }
    // A command without its required node is malformed, but not its payload.
    let reply = admin
        .command(&server, &format!("<command xmlns='{NS_COMMANDS}'/>"))
        .await;
    assert_eq!(conditions(&reply), (true, false), "{reply:?}");
    // Nothing was lost: the session goes on.
    let reply = admin
        .command(&server, &cmd("test#two", &extra, &submit(&[("f0", "a")])))
        .await;
    assert_eq!(command_of(&reply).attr("status"), Some("executing"));
}

#[tokio::test]
async fn multi_stage_next_prev_complete_and_cancel() {
    let (server, _) = setup().await;
    let mut admin = login(&server, "admin", "r").await;
    let reply = admin.command(&server, &cmd("test#two", "", "")).await;
    let c = command_of(&reply);
    assert_eq!(c.attr("status"), Some("executing"));
    let sid = c.attr("sessionid").unwrap().to_owned();
    let actions = c.get_child("actions", NS_COMMANDS).unwrap();
    assert_eq!(actions.attr("execute"), Some("next"));
    assert!(
        !actions.has_child("prev", NS_COMMANDS),
        "no prev at the first stage"
    );

    // Another requester may not continue the session.
    let mut other = login(&server, "admin", "other").await;
    let extra = format!("sessionid='{sid}' action='next'");
    let reply = other
        .command(&server, &cmd("test#two", &extra, &submit(&[("f0", "x")])))
        .await;
    assert_eq!(error_of(&reply).unwrap().0, "bad-request");

    // complete is not offered at the first stage.
    let extra = format!("sessionid='{sid}' action='complete'");
    let reply = admin
        .command(&server, &cmd("test#two", &extra, &submit(&[("f0", "x")])))
        .await;
    assert_eq!(error_of(&reply).unwrap().1.as_deref(), Some("bad-action"));

    let extra = format!("sessionid='{sid}' action='next'");
    let reply = admin
        .command(&server, &cmd("test#two", &extra, &submit(&[("f0", "a")])))
        .await;
    let actions = command_of(&reply)
        .get_child("actions", NS_COMMANDS)
        .unwrap();
    assert_eq!(actions.attr("execute"), Some("complete"));
    assert!(actions.has_child("prev", NS_COMMANDS));

    let extra = format!("sessionid='{sid}' action='prev'");
    let reply = admin.command(&server, &cmd("test#two", &extra, "")).await;
    let x = command_of(&reply).get_child("x", form::NS_DATA).unwrap();
    assert_eq!(
        DataForm::try_from(x.clone()).unwrap().fields[0]
            .var
            .as_deref(),
        Some("f0"),
        "back at stage one"
    );

    let extra = format!("sessionid='{sid}'");
    admin
        .command(&server, &cmd("test#two", &extra, &submit(&[("f0", "b")])))
        .await;
    let reply = admin
        .command(&server, &cmd("test#two", &extra, &submit(&[("f1", "c")])))
        .await;
    let c = command_of(&reply);
    assert_eq!(c.attr("status"), Some("completed"));
    assert_eq!(c.attr("sessionid"), Some(sid.as_str()));
    assert_eq!(c.get_child("note", NS_COMMANDS).unwrap().text(), "b+c");
    // A finished session is gone.
    let reply = admin
        .command(&server, &cmd("test#two", &extra, &submit(&[("f1", "c")])))
        .await;
    assert_eq!(
        error_of(&reply).unwrap().1.as_deref(),
        Some("bad-sessionid")
    );

    let reply = admin.command(&server, &cmd("test#two", "", "")).await;
    let sid = command_of(&reply).attr("sessionid").unwrap().to_owned();
    let extra = format!("sessionid='{sid}' action='cancel'");
    let reply = admin.command(&server, &cmd("test#two", &extra, "")).await;
    assert_eq!(command_of(&reply).attr("status"), Some("canceled"));
}

#[test]
fn sessions_per_requester_are_bounded() {
    let adhoc = AdHoc::new();
    let owner: Jid = Jid::new("a@localhost/r").unwrap();
    for i in 0..(MAX_SESSIONS_PER_REQUESTER + 5) {
        let s = Session {
            owner: owner.clone(),
            node: "n".into(),
            forms: Vec::new(),
            last: true,
            touched: Instant::now(),
        };
        adhoc.put_session(i.to_string(), s);
    }
    assert_eq!(adhoc.session_count(), MAX_SESSIONS_PER_REQUESTER);
}

#[tokio::test]
async fn announce_reaches_every_session_of_the_host() {
    let (server, _) = setup().await;
    let mut admin = login(&server, "admin", "r").await;
    let mut bob1 = login(&server, "bob", "one").await;
    let mut bob2 = login(&server, "bob", "two").await;
    let reply = admin
        .command(&server, &cmd(&admin_node("announce"), "", ""))
        .await;
    let sid = command_of(&reply).attr("sessionid").unwrap().to_owned();
    let extra = format!("sessionid='{sid}' action='complete'");
    let body = submit(&[("subject", "Hi"), ("announcement", "maintenance at 5")]);
    let reply = admin
        .command(&server, &cmd(&admin_node("announce"), &extra, &body))
        .await;
    assert_eq!(command_of(&reply).attr("status"), Some("completed"));
    for b in [&mut bob1, &mut bob2] {
        let got = b.drain();
        let m = got
            .iter()
            .find(|e| e.name() == "message")
            .expect("announcement");
        assert_eq!(m.attr("from"), Some("localhost"));
        assert_eq!(
            m.get_child("body", "jabber:client").unwrap().text(),
            "maintenance at 5"
        );
        assert_eq!(
            m.get_child("subject", "jabber:client").unwrap().text(),
            "Hi"
        );
    }
}

async fn available(c: &mut Client, server: &Arc<Server>) -> Vec<Element> {
    c.send(server, "<presence xmlns='jabber:client'/>").await;
    c.drain()
}

fn has_body(v: &[Element], body: &str) -> bool {
    v.iter().any(|e| {
        e.name() == "message"
            && e.get_child("body", "jabber:client").map(Element::text) == Some(body.into())
    })
}

#[tokio::test]
async fn motd_is_shown_once_per_change() {
    let (server, motd) = setup().await;
    let mut admin = login(&server, "admin", "r").await;
    let node = admin_node("set-motd");
    let reply = admin.command(&server, &cmd(&node, "", "")).await;
    let sid = command_of(&reply).attr("sessionid").unwrap().to_owned();
    let body = submit(&[("announcement", "welcome")]);
    let extra = format!("sessionid='{sid}'");
    admin.command(&server, &cmd(&node, &extra, &body)).await;

    let mut bob = login(&server, "bob", "a").await;
    assert!(has_body(&available(&mut bob, &server).await, "welcome"));
    let mut bob2 = login(&server, "bob", "b").await;
    assert!(
        !has_body(&available(&mut bob2, &server).await, "welcome"),
        "once"
    );

    // edit-motd shows the current text, and a change is shown again.
    let node = admin_node("edit-motd");
    let reply = admin.command(&server, &cmd(&node, "", "")).await;
    let c = command_of(&reply);
    let form = DataForm::try_from(c.get_child("x", form::NS_DATA).unwrap().clone()).unwrap();
    assert_eq!(form.text("announcement").as_deref(), Some("welcome"));
    let extra = format!("sessionid='{}'", c.attr("sessionid").unwrap());
    let body = submit(&[("announcement", "changed")]);
    admin.command(&server, &cmd(&node, &extra, &body)).await;
    // bob is online: the change reaches him at once, so his next login does not repeat it.
    assert!(has_body(&bob.drain(), "changed"));
    let mut bob3 = login(&server, "bob", "c").await;
    assert!(!has_body(&available(&mut bob3, &server).await, "changed"));
    // Someone offline at the change sees it at login.
    let mut carol = login(&server, "carol", "c").await;
    assert!(has_body(&available(&mut carol, &server).await, "changed"));

    let reply = admin
        .command(&server, &cmd(&admin_node("delete-motd"), "", ""))
        .await;
    assert_eq!(command_of(&reply).attr("status"), Some("completed"));
    assert!(motd.get(server.store(), "localhost").await.is_none());
}

#[tokio::test]
async fn a_new_motd_reaches_online_sessions_at_once_and_only_once() {
    let (server, _) = setup().await;
    let mut admin = login(&server, "admin", "r").await;
    let mut bob = login(&server, "bob", "a").await;
    available(&mut bob, &server).await;
    let mut bob_quiet = login(&server, "bob", "b").await; // bound, no presence yet
    let node = admin_node("set-motd");
    let reply = complete(&mut admin, &server, &node, &[("announcement", "now")]).await;
    let note = command_of(&reply).get_child("note", NS_COMMANDS).unwrap();
    assert!(note.text().contains("3 online sessions"), "{}", note.text());
    assert!(has_body(&bob.drain(), "now"));
    assert!(has_body(&bob_quiet.drain(), "now"));
    // Seen: neither a later presence nor a new login shows it again.
    assert!(!has_body(&available(&mut bob_quiet, &server).await, "now"));
    let mut bob_later = login(&server, "bob", "c").await;
    assert!(!has_body(&available(&mut bob_later, &server).await, "now"));

    // Deleting tells nobody.
    let delete = cmd(&admin_node("delete-motd"), "", "");
    admin.command(&server, &delete).await;
    assert!(bob.drain().iter().all(|e| e.name() != "message"));
}

/// A directory stand-in that stopped counting at a limit.
struct Counted(usize, bool);

#[async_trait]
impl admin::AccountCount for Counted {
    async fn count_accounts(&self) -> Result<(usize, bool), String> {
        Ok((self.0, self.1))
    }
}

#[tokio::test]
async fn registered_users_of_a_directory_host_come_from_its_counter() {
    let counts: admin::AccountCounts =
        [("localhost".to_owned(), Arc::new(Counted(500, true)) as _)].into();
    let (server, _, _) = setup_with(counts).await;
    let mut admin = login(&server, "admin", "r").await;
    let node = admin_node("get-registered-users-num");
    let reply = admin.command(&server, &cmd(&node, "", "")).await;
    let c = command_of(&reply);
    let form = DataForm::try_from(c.get_child("x", form::NS_DATA).unwrap().clone()).unwrap();
    assert_eq!(form.values("registeredusersnum"), ["500"]);
    let note = c.get_child("note", NS_COMMANDS).unwrap();
    assert_eq!(note.attr("type"), Some("warn"));
    assert!(note.text().contains("may be more"), "{}", note.text());
}

#[tokio::test]
async fn disable_end_session_and_counts() {
    let (server, _) = setup().await;
    let mut admin = login(&server, "admin", "r").await;
    let mut bob = login(&server, "bob", "r").await;
    let result_value = |reply: &Element, var: &str| {
        let x = command_of(reply).get_child("x", form::NS_DATA).unwrap();
        DataForm::try_from(x.clone()).unwrap().values(var).to_vec()
    };

    let node = admin_node("get-online-users-num");
    let reply = admin.command(&server, &cmd(&node, "", "")).await;
    assert_eq!(result_value(&reply, "onlineusersnum"), ["2"]);
    let node = admin_node("get-registered-users-num");
    let reply = admin.command(&server, &cmd(&node, "", "")).await;
    assert_eq!(result_value(&reply, "registeredusersnum"), ["2"]);
    let node = admin_node("get-online-users-list");
    let reply = complete(&mut admin, &server, &node, &[("max_items", "1")]).await;
    assert_eq!(result_value(&reply, "onlineuserjids"), ["admin@localhost"]);

    let disable = admin_node("disable-user");
    let nobody = [("accountjids", "nobody@localhost")];
    let reply = complete(&mut admin, &server, &disable, &nobody).await;
    let note = command_of(&reply).get_child("note", NS_COMMANDS).unwrap();
    assert_eq!(note.attr("type"), Some("error"));

    // A final dot on the domain names the same account (RFC 7622 §3.2).
    let bob_field = [("accountjids", "bob@localhost.")];
    complete(&mut admin, &server, &disable, &bob_field).await;
    let bob_jid = BareJid::new("bob@localhost").unwrap();
    assert!(server.is_disabled(&bob_jid).await);
    let closed = bob.drain().iter().any(|e| e.ns() == CLOSE_NS);
    assert!(closed, "bob's session ends");
    let bind = server.bind(
        bob_jid.clone(),
        Some("x"),
        SessionInfo::default(),
        xmppd_core::QueueLimits::default(),
    );
    assert!(bind.await.is_err());

    complete(
        &mut admin,
        &server,
        &admin_node("reenable-user"),
        &bob_field,
    )
    .await;
    assert!(!server.is_disabled(&bob_jid).await);

    let mut bob = login(&server, "bob", "again").await;
    let node = admin_node("end-user-session");
    complete(
        &mut admin,
        &server,
        &node,
        &[("accountjids", "bob@localhost/again")],
    )
    .await;
    assert!(bob.drain().iter().any(|e| e.ns() == CLOSE_NS));
}

#[tokio::test]
async fn change_user_password() {
    let (server, _, backend) = setup_with_backend().await;
    let mut admin = login(&server, "admin", "r").await;
    let node = admin_node("change-user-password");
    let fields = [("accountjid", "bob@localhost"), ("password", "new secret")];
    let reply = complete(&mut admin, &server, &node, &fields).await;
    let note = command_of(&reply).get_child("note", NS_COMMANDS).unwrap();
    assert_eq!(note.attr("type"), Some("info"), "{}", note.text());
    let bob = UserRef::new("bob", "localhost");
    assert!(backend.check_password(&bob, "new secret").await.unwrap());
    assert!(!backend.check_password(&bob, "pw").await.unwrap());
}
