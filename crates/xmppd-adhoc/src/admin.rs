//! XEP-0133 service administration: the commands an administrator runs against the server,
//! and the actions behind them that the binary's admin socket shares ([`announce`],
//! [`end_session`]).
//!
//! Every command is for administrators only ([`Server::is_admin`]); accounts named in forms may
//! be on any served host. Problems with a form's content (an invalid JID, an unknown account)
//! end the command with an error note; stanza errors are kept for protocol problems.
//!
//! Accounts are counted in xmppd's store, or for hosts whose accounts live in a directory by
//! that host's [`AccountCount`].
//!
//! Not here: the XEP-0133 commands that would reveal passwords, edit rosters or shut the
//! server down, and user statistics.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, Jid};
use xmppd_auth::{AuthBackend, AuthError};
use xmppd_core::address::{parse_jid, Bare};
use xmppd_core::stanza::StanzaError;
use xmppd_core::{user_ref, Context};
use xmppd_storage::Store;
use xmppd_stream::StreamErrorCondition;

use crate::form::{self, DataForm, DataFormType, Field, FieldExt, FieldType, FormExt};
use crate::motd::Motd;
use crate::{AdHoc, Command, Context as AdhocContext, NoteKind, Step};

/// The XEP-0133 `FORM_TYPE` and node prefix.
pub const NS_ADMIN: &str = "http://jabber.org/protocol/admin";

/// Authentication backends by served host (lowercase).
pub type Backends = HashMap<String, Arc<dyn AuthBackend>>;

/// Counts the accounts of a host whose accounts live outside xmppd's store (a directory).
#[async_trait]
pub trait AccountCount: Send + Sync {
    /// The number of accounts, and whether counting stopped at a limit (there may be more).
    async fn count_accounts(&self) -> Result<(usize, bool), String>;
}

/// [`AccountCount`]s by served host (lowercase); other hosts count xmppd's own accounts.
pub type AccountCounts = HashMap<String, Arc<dyn AccountCount>>;

/// Sends `body` (with an optional subject) as a message from each user's host to every session
/// of `host`, or of every host when `None`. Returns how many sessions took it.
pub fn announce(
    cx: &mut Context<'_>,
    host: Option<&str>,
    subject: Option<&str>,
    body: &str,
) -> usize {
    let mut sent = 0;
    for jid in cx.online() {
        let domain = jid.domain().as_str();
        if host.is_some_and(|h| !h.eq_ignore_ascii_case(domain)) {
            continue;
        }
        let msg = crate::notice(domain, &jid, subject, body);
        cx.deliver(&jid, msg);
        sent += 1;
    }
    sent
}

/// Ends the sessions of `jid`: every session of a bare JID, the one session of a full JID.
/// Returns how many were told to close.
pub fn end_session(cx: &Context<'_>, jid: &Jid) -> usize {
    const TEXT: &str = "Session ended by an administrator";
    match jid.try_as_full() {
        Ok(full) => cx
            .sessions()
            .resources(&jid.bare())
            .iter()
            .filter(|r| &r.jid == full)
            .filter(|r| {
                let cond = StreamErrorCondition::PolicyViolation;
                cx.sessions().close(r.session, cond, Some(TEXT))
            })
            .count(),
        Err(_) => cx.end_sessions(
            &jid.bare(),
            StreamErrorCondition::PolicyViolation,
            Some(TEXT),
        ),
    }
}

/// The number of accounts of `host`, from its [`AccountCount`] if it has one (a directory),
/// else from xmppd's store; and whether counting stopped at a limit (there may be more).
pub async fn count_accounts(
    store: &dyn Store,
    counts: &AccountCounts,
    host: &str,
) -> Result<(usize, bool), String> {
    match counts.get(host) {
        Some(counter) => counter.count_accounts().await,
        None => match store.list_users(host).await {
            Ok(users) => Ok((users.len(), false)),
            Err(e) => Err(e.to_string()),
        },
    }
}

/// An [`AdHoc`] module offering every XEP-0133 command of [`commands`].
pub fn module(backends: Arc<Backends>, counts: Arc<AccountCounts>, motd: Arc<Motd>) -> AdHoc {
    commands(backends, counts, motd)
        .into_iter()
        .fold(AdHoc::new(), AdHoc::command)
}

/// The XEP-0133 commands xmppd offers, for [`crate::AdHoc::command`].
pub fn commands(
    backends: Arc<Backends>,
    counts: Arc<AccountCounts>,
    motd: Arc<Motd>,
) -> Vec<Arc<dyn Command>> {
    OPS.iter()
        .map(|&(op, node, name)| {
            Arc::new(Admin {
                op,
                node: format!("{NS_ADMIN}#{node}"),
                name,
                backends: backends.clone(),
                counts: counts.clone(),
                motd: motd.clone(),
            }) as Arc<dyn Command>
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Announce,
    SetMotd,
    EditMotd,
    DeleteMotd,
    OnlineList,
    OnlineNum,
    RegisteredNum,
    Disable,
    Reenable,
    EndSession,
    ChangePassword,
}

const OPS: [(Op, &str, &str); 12] = [
    (
        Op::Announce,
        "announce",
        "Send Announcement to Online Users",
    ),
    (Op::SetMotd, "set-motd", "Set Message of the Day"),
    (Op::EditMotd, "edit-motd", "Edit Message of the Day"),
    (Op::DeleteMotd, "delete-motd", "Delete Message of the Day"),
    (
        Op::OnlineList,
        "get-online-users-list",
        "Get List of Online Users",
    ),
    (
        Op::OnlineList,
        "get-online-users",
        "Get List of Online Users",
    ),
    (
        Op::OnlineNum,
        "get-online-users-num",
        "Get Number of Online Users",
    ),
    (
        Op::RegisteredNum,
        "get-registered-users-num",
        "Get Number of Registered Users",
    ),
    (Op::Disable, "disable-user", "Disable a User"),
    (Op::Reenable, "reenable-user", "Re-Enable a User"),
    (Op::EndSession, "end-user-session", "End User Session"),
    (
        Op::ChangePassword,
        "change-user-password",
        "Change User Password",
    ),
];

struct Admin {
    op: Op,
    node: String,
    name: &'static str,
    backends: Arc<Backends>,
    counts: Arc<AccountCounts>,
    motd: Arc<Motd>,
}

fn form(title: &str) -> DataForm {
    form::new(DataFormType::Form, NS_ADMIN).title(title)
}

fn result_form() -> DataForm {
    form::new(DataFormType::Result_, NS_ADMIN)
}

/// The subject/announcement form of announce, set-motd and edit-motd.
fn message_form(title: &str, subject: Option<&str>, body: Option<&str>) -> Step {
    let mut s = Field::new("subject", FieldType::TextSingle).label("Subject");
    if let Some(v) = subject {
        s = s.with_value(v);
    }
    let mut b = Field::new("announcement", FieldType::TextMulti)
        .label("Message")
        .required();
    if let Some(v) = body {
        b = b.text(v);
    }
    Step::Form {
        form: form(title).field(s).field(b),
        last: true,
    }
}

fn accounts_form(title: &str) -> Step {
    let f = Field::new("accountjids", FieldType::JidMulti)
        .label("The Jabber ID(s)")
        .required();
    Step::Form {
        form: form(title).field(f),
        last: true,
    }
}

/// The local JIDs of field `var`, or an error step naming the first bad one.
fn local_jids(cx: &Context<'_>, f: &DataForm, var: &str) -> Result<Vec<Jid>, Step> {
    let values: Vec<&str> = f
        .values(var)
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        return Err(Step::error("No account given"));
    }
    values
        .into_iter()
        .map(|v| match parse_jid(v) {
            Ok(j) if j.node().is_some() && cx.is_local_host(j.domain().as_str()) => Ok(j),
            _ => Err(Step::error(format!("Not an account of this server: {v}"))),
        })
        .collect()
}

impl Admin {
    fn backend(&self, user: &BareJid) -> Option<&Arc<dyn AuthBackend>> {
        self.backends.get(user.domain().as_str())
    }

    /// Whether `user` exists in its host's backend; an error step otherwise.
    async fn existing(&self, user: &BareJid) -> Result<(), Step> {
        let Some(backend) = self.backend(user) else {
            return Err(Step::error(format!("No such account: {user}")));
        };
        match backend.user_exists(&user_ref(user)).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Step::error(format!("No such account: {user}"))),
            Err(e) => Err(Step::error(format!("Could not look up {user}: {e}"))),
        }
    }

    async fn run(&self, ctx: &mut AdhocContext<'_, '_>, forms: &[DataForm]) -> Result<Step, Step> {
        let host = ctx.host;
        let cx = &mut *ctx.cx;
        let submitted = forms.last();
        Ok(match (self.op, submitted) {
            (Op::Announce, None) => message_form("Make an Announcement", None, None),
            (Op::SetMotd, None) => message_form("Set Message of the Day", None, None),
            (Op::EditMotd, None) => {
                let m = self.motd.get(cx.store(), host).await;
                let (subject, body) = match &m {
                    Some(m) => (m.subject.as_deref(), Some(m.body.as_str())),
                    None => (None, None),
                };
                message_form("Edit Message of the Day", subject, body)
            }
            (Op::Announce | Op::SetMotd | Op::EditMotd, Some(f)) => {
                let Some(body) = f.text("announcement") else {
                    return Err(Step::error("The message is empty"));
                };
                let subject = f.value("subject");
                if self.op == Op::Announce {
                    let n = announce(cx, Some(host), subject, &body);
                    Step::info(format!("Announcement sent to {n} sessions"))
                } else {
                    self.set_motd(cx, host, Some((subject, &body))).await?
                }
            }
            (Op::DeleteMotd, _) => self.set_motd(cx, host, None).await?,
            (Op::OnlineList, None) => {
                let mut max =
                    Field::new("max_items", FieldType::ListSingle).label("Maximum number");
                for n in ["25", "50", "75", "100", "150", "200"] {
                    max = max.option(n, n);
                }
                max = max.option("None", "none");
                Step::Form {
                    form: form("Get List of Online Users").field(max),
                    last: true,
                }
            }
            (Op::OnlineList, Some(f)) => {
                let max = f
                    .value("max_items")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(usize::MAX);
                let mut field =
                    Field::new("onlineuserjids", FieldType::JidMulti).label("Online users");
                for jid in online_users(cx, host).iter().take(max) {
                    field = field.with_value(jid);
                }
                Step::result(result_form().field(field))
            }
            (Op::OnlineNum, _) => {
                let n = online_users(cx, host).len().to_string();
                let field = Field::new("onlineusersnum", FieldType::TextSingle)
                    .label("Number of online users")
                    .with_value(&n);
                Step::result(result_form().field(field))
            }
            (Op::RegisteredNum, _) => self.registered_num(cx, host).await?,
            (Op::Disable, None) => accounts_form("Disabling a User"),
            (Op::Reenable, None) => accounts_form("Re-Enable a User"),
            (Op::EndSession, None) => accounts_form("End User Session"),
            (Op::Disable | Op::Reenable, Some(f)) => {
                let jids = local_jids(cx, f, "accountjids")?;
                let disable = self.op == Op::Disable;
                for jid in &jids {
                    let user = jid.bare();
                    self.existing(&user).await?;
                    if let Err(e) = cx.set_disabled(&user, disable).await {
                        return Err(Step::error(format!("Could not change {user}: {e}")));
                    }
                }
                let what = if disable { "disabled" } else { "re-enabled" };
                Step::info(format!("{} account(s) {what}", jids.len()))
            }
            (Op::EndSession, Some(f)) => {
                let jids = local_jids(cx, f, "accountjids")?;
                let n: usize = jids.iter().map(|j| end_session(cx, j)).sum();
                Step::info(format!("{n} session(s) ended"))
            }
            (Op::ChangePassword, None) => {
                let jid = Field::new("accountjid", FieldType::JidSingle)
                    .label("The Jabber ID")
                    .required();
                let pw = Field::new("password", FieldType::TextPrivate)
                    .label("The password for this account")
                    .required();
                Step::Form {
                    form: form("Changing a User Password").field(jid).field(pw),
                    last: true,
                }
            }
            (Op::ChangePassword, Some(f)) => {
                let jid = local_jids(cx, f, "accountjid")?.remove(0).bare();
                // Not trimmed: spaces may be part of a password.
                let password = f.values("password").first().cloned().unwrap_or_default();
                if password.is_empty() {
                    return Err(Step::error("The password is empty"));
                }
                self.existing(&jid).await?;
                let backend = self
                    .backend(&jid)
                    .ok_or_else(|| Step::error("No backend"))?;
                match backend.set_password(&user_ref(&jid), &password).await {
                    Ok(()) => Step::info(format!("Password of {jid} changed")),
                    Err(AuthError::Unsupported) => {
                        Step::error("The account's directory does not allow password changes")
                    }
                    Err(e) => Step::error(format!("Could not change the password: {e}")),
                }
            }
        })
    }

    /// The account count of `host`: from its [`AccountCount`] if it has one (a directory),
    /// else from xmppd's store.
    async fn registered_num(&self, cx: &Context<'_>, host: &str) -> Result<Step, Step> {
        let failed = |e: String| Step::error(format!("Could not count users: {e}"));
        let (n, more) = count_accounts(cx.store().as_ref(), &self.counts, host)
            .await
            .map_err(failed)?;
        let field = Field::new("registeredusersnum", FieldType::TextSingle)
            .label("Number of registered users")
            .with_value(&n.to_string());
        let notes = if more {
            let text = format!("The directory stopped counting at {n}: there may be more");
            vec![(NoteKind::Warn, text)]
        } else {
            Vec::new()
        };
        Ok(Step::Done {
            form: Some(result_form().field(field)),
            notes,
        })
    }

    async fn set_motd(
        &self,
        cx: &mut Context<'_>,
        host: &str,
        text: Option<(Option<&str>, &str)>,
    ) -> Result<Step, Step> {
        let deleting = text.is_none();
        match self.motd.set(cx, host, text).await {
            Ok(_) if deleting => Ok(Step::info("Message of the day deleted")),
            Ok(n) => Ok(Step::info(format!(
                "Message of the day set and sent to {n} online sessions"
            ))),
            Err(e) => Err(Step::error(format!("Could not store the message: {e}"))),
        }
    }
}

/// Bare JIDs with a session on `host`, sorted.
fn online_users(cx: &Context<'_>, host: &str) -> Vec<String> {
    let set: BTreeSet<String> = cx
        .online()
        .into_iter()
        .filter(|j| j.domain().as_str() == host)
        .map(|j| j.bare().to_string())
        .collect();
    set.into_iter().collect()
}

#[async_trait]
impl Command for Admin {
    fn node(&self) -> &str {
        &self.node
    }

    fn name(&self) -> &str {
        self.name
    }

    async fn step(
        &self,
        ctx: &mut AdhocContext<'_, '_>,
        forms: &[DataForm],
    ) -> Result<Step, StanzaError> {
        Ok(self.run(ctx, forms).await.unwrap_or_else(|step| step))
    }
}
