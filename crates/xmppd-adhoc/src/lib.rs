//! Ad-hoc commands (XEP-0050) for xmppd, the service administration commands built on them
//! (XEP-0133), and the message of the day.
//!
//! - [`AdHoc`] is a core [`Module`]: it answers `<command/>` IQs to a served domain, lists the
//!   commands a requester may run under the `http://jabber.org/protocol/commands` disco node,
//!   and keeps the sessions of multi-stage commands (`sessionid`, actions execute / next /
//!   prev / complete / cancel).
//! - A [`Command`] is one node. It is written as a function of the forms submitted so far:
//!   stage *n* receives the *n* earlier forms and returns the next form or the final outcome.
//!   Going back (`prev`) drops the last form and runs the earlier stage again, so commands
//!   keep no state of their own between stages.
//! - Payloads are typed: XEP-0004 forms are xmpp-parsers' [`DataForm`]s ([`form`] has the
//!   builders and readers commands use), the `<command/>` element is [`CommandPayload`]
//!   ([`payload`], xso derives, since xmpp-parsers has no XEP-0050). A malformed one gets
//!   `<bad-request/>` with `<bad-payload/>` (XEP-0050 §4.6).
//! - [`admin`] has the XEP-0133 commands; [`motd`] the message of the day, a module of its own
//!   that delivers the current message once per change at a user's first available presence.
//!
//! Not here: commands addressed to accounts or components (only the server's own domain has
//! commands) and `xml:lang` localisation.

pub mod admin;
pub mod form;
pub mod motd;
pub mod payload;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jid::BareJid;
use jid::Jid;
use minidom::Element;
use xmpp_parsers::disco::{DiscoInfoResult, Identity, Item};
use xmppd_core::address::Bare;
use xmppd_core::module::{Hooks, IqKind, IqRequest, IqResponse, Module};
use xmppd_core::stanza::{self, elem, text_elem, Condition, StanzaError};

pub use form::{DataForm, DataFormType, Field, FieldExt, FieldType, FormExt};
pub use payload::{Actions, CommandPayload, Note, NoteKind, Status};

pub const NS_COMMANDS: &str = "http://jabber.org/protocol/commands";

/// An unfinished command session is forgotten after this long without a request.
const SESSION_TTL: Duration = Duration::from_secs(600);
/// Sessions kept at once, over all requesters; beyond it the oldest go first.
const MAX_SESSIONS: usize = 4096;
/// Sessions one requester (full JID) may have open at once.
const MAX_SESSIONS_PER_REQUESTER: usize = 16;

/// What a command's stage sees: the handler's context (reads and the outbox) and the request.
pub struct Context<'a, 'b> {
    pub cx: &'a mut xmppd_core::Context<'b>,
    /// The requester's full JID.
    pub requester: &'a Jid,
    /// The served domain the command was addressed to.
    pub host: &'a str,
}

/// What one stage of a command returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Show `form` and wait; `last` when submitting it completes the command.
    Form { form: DataForm, last: bool },
    /// The command is done: an optional result form and notes.
    Done {
        form: Option<DataForm>,
        notes: Vec<(NoteKind, String)>,
    },
}

impl Step {
    /// Done, with one informational note.
    pub fn info(text: impl Into<String>) -> Step {
        Step::Done {
            form: None,
            notes: vec![(NoteKind::Info, text.into())],
        }
    }

    /// Done, with an error note (the request was understood but could not be carried out).
    pub fn error(text: impl Into<String>) -> Step {
        Step::Done {
            form: None,
            notes: vec![(NoteKind::Error, text.into())],
        }
    }

    /// Done, with a result form.
    pub fn result(form: DataForm) -> Step {
        Step::Done {
            form: Some(form),
            notes: Vec::new(),
        }
    }
}

/// One ad-hoc command node.
#[async_trait]
pub trait Command: Send + Sync {
    /// The node, e.g. `http://jabber.org/protocol/admin#announce`.
    fn node(&self) -> &str;
    /// The human-readable name listed in disco#items.
    fn name(&self) -> &str;
    /// Whether `ctx.requester` may see and run it. Administrators only unless overridden.
    fn allowed(&self, cx: &xmppd_core::Context<'_>, requester: &Jid) -> bool {
        cx.is_admin(&requester.bare())
    }
    /// Stage `forms.len()`: `forms` are the forms submitted at the earlier stages, in order.
    async fn step(
        &self,
        ctx: &mut Context<'_, '_>,
        forms: &[DataForm],
    ) -> Result<Step, StanzaError>;
}

/// A client's `action` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Execute,
    Next,
    Prev,
    Complete,
    Cancel,
}

impl Action {
    fn parse(s: Option<&str>) -> Option<Action> {
        Some(match s {
            None | Some("execute") => Action::Execute,
            Some("next") => Action::Next,
            Some("prev") => Action::Prev,
            Some("complete") => Action::Complete,
            Some("cancel") => Action::Cancel,
            Some(_) => return None,
        })
    }
}

/// An unfinished multi-stage command.
struct Session {
    owner: Jid,
    node: String,
    forms: Vec<DataForm>,
    /// The form shown now completes the command.
    last: bool,
    touched: Instant,
}

/// The XEP-0050 module: a registry of [`Command`]s and their sessions.
pub struct AdHoc {
    commands: Vec<Arc<dyn Command>>,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Default for AdHoc {
    fn default() -> Self {
        AdHoc::new()
    }
}

impl AdHoc {
    pub fn new() -> Self {
        AdHoc {
            commands: Vec::new(),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Adds a command; a node already present keeps its first command.
    pub fn command(mut self, c: Arc<dyn Command>) -> Self {
        if !self.commands.iter().any(|k| k.node() == c.node()) {
            self.commands.push(c);
        }
        self
    }

    fn find(&self, node: &str) -> Option<&Arc<dyn Command>> {
        self.commands.iter().find(|c| c.node() == node)
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic elsewhere while holding the lock leaves only a session table behind.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn execute(
        &self,
        cx: &mut xmppd_core::Context<'_>,
        from: &Jid,
        host: &str,
        cmd: CommandPayload,
    ) -> IqResponse {
        let node = cmd.node.as_str();
        let Some(command) = self.find(node).cloned() else {
            return Err(Condition::ItemNotFound.into());
        };
        if !command.allowed(cx, from) {
            return Err(Condition::Forbidden.into());
        }
        let Some(action) = Action::parse(cmd.action.as_deref()) else {
            return Err(command_error("malformed-action"));
        };
        let submitted = cmd.form;
        let mut ctx = Context {
            cx,
            requester: from,
            host,
        };
        let Some(sid) = cmd.sessionid.as_deref().filter(|s| !s.is_empty()) else {
            if action != Action::Execute {
                return Err(command_error("bad-action"));
            }
            let sid = format!("{:016x}", rand::random::<u64>());
            let step = command.step(&mut ctx, &[]).await?;
            return Ok(Some(self.answer(node, &sid, from, Vec::new(), step)));
        };
        let sid = sid.to_owned();
        let Some(mut session) = self.take_session(&sid, from, node) else {
            return Err(command_error("bad-sessionid"));
        };
        let advance = if session.last {
            Action::Complete
        } else {
            Action::Next
        };
        let action = if action == Action::Execute {
            advance
        } else {
            action
        };
        match action {
            Action::Cancel => Ok(Some(
                CommandPayload::answer(node, &sid, Status::Canceled).into(),
            )),
            Action::Prev if !session.forms.is_empty() => {
                session.forms.pop();
                let step = command.step(&mut ctx, &session.forms).await?;
                Ok(Some(self.answer(node, &sid, from, session.forms, step)))
            }
            a if a == advance => {
                let Some(form) = submitted.filter(|f| f.type_ == DataFormType::Submit) else {
                    self.put_session(sid.clone(), session);
                    return Err(command_error("bad-payload"));
                };
                session.forms.push(form);
                let step = command.step(&mut ctx, &session.forms).await?;
                Ok(Some(self.answer(node, &sid, from, session.forms, step)))
            }
            _ => {
                self.put_session(sid.clone(), session);
                Err(StanzaError::with_text(Condition::BadRequest, "bad-action"))
            }
        }
    }

    /// The `<command/>` answer for `step`; a form keeps (or starts) the session.
    fn answer(
        &self,
        node: &str,
        sid: &str,
        from: &Jid,
        forms: Vec<DataForm>,
        step: Step,
    ) -> Element {
        match step {
            Step::Form { form, last } => {
                let mut reply = CommandPayload::answer(node, sid, Status::Executing);
                reply.actions = Some(Actions {
                    execute: Some(if last { "complete" } else { "next" }.into()),
                    prev: !forms.is_empty(),
                    next: !last,
                    complete: last,
                });
                let shown = form::to_element(&form);
                let session = Session {
                    owner: from.clone(),
                    node: node.to_owned(),
                    forms,
                    last,
                    touched: Instant::now(),
                };
                self.put_session(sid.to_owned(), session);
                let mut reply = Element::from(reply);
                reply.append_child(shown);
                reply
            }
            Step::Done { form, notes } => {
                let mut reply = CommandPayload::answer(node, sid, Status::Completed);
                reply.notes = notes
                    .into_iter()
                    .map(|(kind, text)| Note { kind, text })
                    .collect();
                let mut reply = Element::from(reply);
                if let Some(f) = form {
                    reply.append_child(form::to_element(&f));
                }
                reply
            }
        }
    }

    /// Removes and returns the live session `sid` if `from` owns it for `node`.
    fn take_session(&self, sid: &str, from: &Jid, node: &str) -> Option<Session> {
        let mut sessions = self.sessions();
        let s = sessions.get(sid)?;
        if s.owner != *from || s.node != node {
            return None;
        }
        let s = sessions.remove(sid)?;
        (s.touched.elapsed() < SESSION_TTL).then_some(s)
    }

    fn put_session(&self, sid: String, session: Session) {
        let mut sessions = self.sessions();
        let now = Instant::now();
        sessions.retain(|_, s| now.duration_since(s.touched) < SESSION_TTL);
        let owned = sessions
            .values()
            .filter(|s| s.owner == session.owner)
            .count();
        if owned >= MAX_SESSIONS_PER_REQUESTER || sessions.len() >= MAX_SESSIONS {
            let owner = (owned >= MAX_SESSIONS_PER_REQUESTER).then(|| session.owner.clone());
            let oldest = sessions
                .iter()
                .filter(|(_, s)| owner.as_ref().is_none_or(|o| s.owner == *o))
                .min_by_key(|(_, s)| s.touched)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                sessions.remove(&k);
            }
        }
        sessions.insert(sid, session);
    }

    #[cfg(test)]
    fn session_count(&self) -> usize {
        self.sessions().len()
    }
}

/// A `normal` message from the server `host` to the session `to` (announcements, the message of
/// the day).
pub(crate) fn notice(host: &str, to: &jid::FullJid, subject: Option<&str>, body: &str) -> Element {
    let to = to.to_string();
    let mut msg = elem(
        "message",
        stanza::NS_CLIENT,
        &[("from", host), ("to", &to), ("type", "normal")],
    );
    if let Some(s) = subject.filter(|s| !s.is_empty()) {
        msg.append_child(text_elem("subject", stanza::NS_CLIENT, s));
    }
    msg.append_child(text_elem("body", stanza::NS_CLIENT, body));
    msg
}

#[async_trait]
impl Module for AdHoc {
    fn name(&self) -> &'static str {
        "adhoc"
    }

    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }

    fn server_features(&self) -> Vec<String> {
        vec![NS_COMMANDS.into()]
    }

    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS_COMMANDS]
    }

    async fn handle_iq(&self, cx: &mut xmppd_core::Context<'_>, req: IqRequest) -> IqResponse {
        if req.kind != IqKind::Set {
            return Err(Condition::BadRequest.into());
        }
        let cmd = CommandPayload::try_from(req.payload.clone())
            .map_err(|e| malformed(&req.payload, e))?;
        let host = req.to.domain().as_str().to_owned();
        self.execute(cx, &req.from, &host, cmd).await
    }

    async fn disco_items(
        &self,
        cx: &xmppd_core::Context<'_>,
        from: &Jid,
        to: &Jid,
        node: Option<&str>,
    ) -> Option<Vec<Element>> {
        if node != Some(NS_COMMANDS) {
            return None;
        }
        let host = Jid::from(BareJid::from_parts(None, to.domain()));
        Some(
            self.commands
                .iter()
                .filter(|c| c.allowed(cx, from))
                .map(|c| {
                    Item {
                        jid: host.clone(),
                        node: Some(c.node().into()),
                        name: Some(c.name().into()),
                    }
                    .into()
                })
                .collect(),
        )
    }

    async fn disco_info(
        &self,
        cx: &xmppd_core::Context<'_>,
        from: &Jid,
        _to: &Jid,
        node: &str,
    ) -> Option<Element> {
        let (category_type, name) = if node == NS_COMMANDS {
            ("command-list", "Commands")
        } else {
            let c = self.find(node)?;
            if !c.allowed(cx, from) {
                // Not visible to this requester: as if it did not exist.
                return None;
            }
            ("command-node", c.name())
        };
        let info = DiscoInfoResult {
            node: Some(node.into()),
            identities: vec![Identity {
                category: "automation".into(),
                type_: category_type.into(),
                lang: None,
                name: Some(name.into()),
            }],
            features: [NS_COMMANDS, form::NS_DATA].map(String::from).into(),
            extensions: Vec::new(),
        };
        Some(info.into())
    }
}

/// The error for a `<command/>` that does not parse: `<bad-payload/>` when its data form is
/// what is malformed (XEP-0050 §4.6), a plain `<bad-request/>` otherwise (no `node`, a bad
/// `status`, …).
fn malformed(cmd: &Element, e: xso::error::FromElementError) -> StanzaError {
    let bad_form = cmd
        .get_child("x", form::NS_DATA)
        .is_some_and(|x| DataForm::try_from(x.clone()).is_err());
    let error = StanzaError::with_text(Condition::BadRequest, format!("Malformed command: {e}"));
    if bad_form {
        error.with_app(Element::bare("bad-payload", NS_COMMANDS))
    } else {
        error
    }
}

/// `<bad-request/>` with XEP-0050's specific condition (`malformed-action`, `bad-action`,
/// `bad-sessionid`, …) as the application-specific child.
fn command_error(specific: &str) -> StanzaError {
    StanzaError::new(Condition::BadRequest).with_app(Element::bare(specific, NS_COMMANDS))
}

#[cfg(test)]
mod tests;
