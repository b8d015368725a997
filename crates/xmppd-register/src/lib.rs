//! In-band registration (XEP-0077) for xmppd.
//!
//! - Before login: [`Register`] is a [`PreAuthService`]: the c2s driver offers its stream
//!   feature under TLS on the hosts the [`RegistrationPolicy`] names, and hands it
//!   `jabber:iq:register` gets and sets ([`pre_auth_iq`]), which create the account in the
//!   host's backend. It is sans-socket; the driver supplies the per-address rate limit as a
//!   callback.
//! - After login: [`Register`] is a core module answering `jabber:iq:register` from a logged-in
//!   user to their server: the registration form, a password change, and removal of the
//!   account.
//!
//! Payloads are xmpp-parsers' XEP-0077 types: [`LegacyQuery`] for the fields, [`RemoveQuery`]
//! for `<remove/>`. A query that does not parse (a field given twice) gets `<bad-request/>`
//! (XEP-0077 §3.1); one missing a required field, `<not-acceptable/>`.
//!
//! Only accounts of the internal backend can be created, changed or removed here; accounts of
//! a directory (LDAP) get `<not-allowed/>`. Not here: registration forms with extra fields
//! (XEP-0077 data forms, CAPTCHAs), out-of-band registration, or registration with services
//! other than the server itself.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, NodePart};
use minidom::Element;
use xmpp_parsers::ibr::{LegacyQuery, RemoveQuery};
use xmppd_auth::{AuthBackend, AuthError};
use xmppd_core::address::Bare;
use xmppd_core::module::{Hooks, IqKind, IqRequest, IqResponse, Module, PreAuthService};
use xmppd_core::stanza::{error_reply, iq_result, Condition, StanzaError};
use xmppd_core::{user_ref, Context};
use xmppd_storage::UserRef;
use xmppd_stream::StreamErrorCondition;

pub const NS_REGISTER: &str = "jabber:iq:register";
/// The stream feature advertising registration before login.
pub const NS_FEATURE_REGISTER: &str = "http://jabber.org/features/iq-register";

/// Where and how accounts may be created before login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationPolicy {
    /// Hosts (lowercase) that accept in-band registration; empty: none.
    pub hosts: Vec<String>,
    /// Accounts one address may create per hour.
    pub max_per_ip_per_hour: u32,
    /// Shortest password accepted, in characters (also for password changes).
    pub min_password_length: usize,
}

impl Default for RegistrationPolicy {
    fn default() -> Self {
        RegistrationPolicy {
            hosts: Vec::new(),
            max_per_ip_per_hour: 5,
            min_password_length: 8,
        }
    }
}

impl RegistrationPolicy {
    /// Whether `host` accepts registration before login.
    pub fn enabled_for(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    fn check_password(&self, password: &str) -> Result<(), StanzaError> {
        if password.chars().count() < self.min_password_length {
            return Err(StanzaError::with_text(
                Condition::NotAcceptable,
                format!(
                    "The password must have at least {} characters",
                    self.min_password_length
                ),
            ));
        }
        Ok(())
    }
}

/// The empty registration form (XEP-0077 §3.1): username and password.
fn form(instructions: &str) -> Element {
    LegacyQuery {
        instructions: Some(instructions.into()),
        username: Some(String::new()),
        password: Some(String::new()),
        ..LegacyQuery::default()
    }
    .into()
}

/// A set's query: whether it asks for removal, and the fields (not trimmed: passwords may have
/// spaces). `<bad-request/>` when it does not parse (XEP-0077 §3.1).
fn parse_set(query: &Element) -> Result<(bool, LegacyQuery), StanzaError> {
    let malformed =
        |e| StanzaError::with_text(Condition::BadRequest, format!("Malformed query: {e}"));
    let remove = RemoveQuery::try_from(query.clone())
        .map_err(malformed)?
        .remove;
    Ok((
        remove,
        LegacyQuery::try_from(query.clone()).map_err(malformed)?,
    ))
}

/// Whether accounts of this backend may be changed through XMPP.
fn is_internal(backend: &dyn AuthBackend) -> bool {
    backend.name() == "internal"
}

fn auth_error(e: AuthError) -> StanzaError {
    match e {
        AuthError::AlreadyExists => Condition::Conflict.into(),
        AuthError::NoSuchUser => Condition::ItemNotFound.into(),
        AuthError::InvalidPassword(why) => StanzaError::with_text(Condition::NotAcceptable, why),
        AuthError::Unsupported | AuthError::AccountDisabled => Condition::NotAllowed.into(),
        // The name is taken for now, as far as the registrant is concerned.
        AuthError::Tombstoned { .. } => StanzaError::with_text(
            Condition::Conflict,
            "This user name belonged to an account removed recently and is not free yet",
        ),
        AuthError::Temporary(why) => {
            tracing::warn!(error = %why, "registration: backend failed");
            Condition::InternalServerError.into()
        }
    }
}

/// Answers a `jabber:iq:register` IQ received before authentication on a stream for `host`
/// whose registration the caller has already allowed. `admit` is asked right before an account
/// is created and may refuse (rate limit). Returns the reply to write (without addresses).
pub async fn pre_auth_iq(
    policy: &RegistrationPolicy,
    backend: &dyn AuthBackend,
    host: &str,
    iq: &Element,
    admit: &mut (dyn FnMut() -> bool + Send),
) -> Element {
    match pre_auth_answer(policy, backend, host, iq, admit).await {
        Ok(payload) => iq_result(iq, payload),
        // error_reply answers anything but an error; an error IQ has nothing to answer.
        Err(e) => error_reply(iq, &e).unwrap_or_else(|| iq_result(iq, None)),
    }
}

async fn pre_auth_answer(
    policy: &RegistrationPolicy,
    backend: &dyn AuthBackend,
    host: &str,
    iq: &Element,
    admit: &mut (dyn FnMut() -> bool + Send),
) -> Result<Option<Element>, StanzaError> {
    let Some(query) = iq.get_child("query", NS_REGISTER) else {
        return Err(Condition::BadRequest.into());
    };
    if !is_internal(backend) {
        return Err(StanzaError::with_text(
            Condition::NotAllowed,
            "Accounts of this host are managed elsewhere",
        ));
    }
    match iq.attr("type") {
        Some("get") => {
            return Ok(Some(form("Choose a user name and password")));
        }
        Some("set") => {}
        _ => return Err(Condition::BadRequest.into()),
    }
    let (remove, fields) = parse_set(query)?;
    if remove {
        // Only a logged-in user may remove their account.
        return Err(Condition::NotAuthorized.into());
    }
    let (Some(username), Some(password)) = (fields.username, fields.password) else {
        return Err(StanzaError::with_text(
            Condition::NotAcceptable,
            "A user name and a password are required",
        ));
    };
    let Ok(node) = NodePart::new(username.trim()) else {
        return Err(StanzaError::with_text(
            Condition::NotAcceptable,
            "This user name is not allowed",
        ));
    };
    if node.as_str().is_empty() {
        return Err(Condition::NotAcceptable.into());
    }
    policy.check_password(&password)?;
    let account = UserRef::new(node.as_str(), host);
    // Counted before the existence check: every attempt, taken name or not, uses the address's
    // quota, so registration cannot be used to find out which accounts exist.
    if !admit() {
        return Err(StanzaError::with_text(
            Condition::ResourceConstraint,
            "Too many accounts created from this address; try again later",
        ));
    }
    if backend.user_exists(&account).await.map_err(auth_error)? {
        return Err(Condition::Conflict.into());
    }
    backend
        .create_user(&account, &password)
        .await
        .map_err(auth_error)?;
    tracing::info!(user = %account.user, host, "account registered in-band");
    Ok(None)
}

/// `jabber:iq:register` for logged-in users: form, password change, account removal.
pub struct Register {
    backends: HashMap<String, Arc<dyn AuthBackend>>,
    policy: RegistrationPolicy,
}

impl Register {
    /// `backends` maps each served host (lowercase) to its authentication backend.
    pub fn new(
        backends: HashMap<String, Arc<dyn AuthBackend>>,
        policy: RegistrationPolicy,
    ) -> Self {
        Register { backends, policy }
    }

    async fn answer(&self, cx: &mut Context<'_>, req: IqRequest) -> IqResponse {
        let user = req.from.bare();
        // Only to one's own server (or own bare JID, when the client left out 'to').
        let to = &req.to;
        let own = if to.node().is_none() {
            to.is_bare() && to.domain() == user.domain()
        } else {
            to.bare() == user
        };
        if !own || !cx.is_local_host(user.domain().as_str()) || user.node().is_none() {
            return Err(Condition::NotAllowed.into());
        }
        let backend = self
            .backends
            .get(user.domain().as_str())
            .ok_or(Condition::NotAllowed)?;
        let query = &req.payload;
        if req.kind == IqKind::Get {
            let node = user.node().map(|n| n.as_str()).unwrap_or_default();
            let q = LegacyQuery {
                registered: true,
                username: Some(node.into()),
                password: Some(String::new()),
                ..LegacyQuery::default()
            };
            return Ok(Some(q.into()));
        }
        if !is_internal(backend.as_ref()) {
            return Err(StanzaError::with_text(
                Condition::NotAllowed,
                "Accounts of this host are managed elsewhere",
            ));
        }
        let (removal, fields) = parse_set(query)?;
        if removal {
            return remove(cx, user, &req.from).await;
        }
        let (Some(username), Some(password)) = (fields.username, fields.password) else {
            return Err(StanzaError::with_text(
                Condition::BadRequest,
                "A user name and a password are required",
            ));
        };
        let same = NodePart::new(username.trim())
            .is_ok_and(|n| user.node().is_some_and(|u| n.as_str() == u.as_str()));
        if !same {
            return Err(Condition::NotAuthorized.into());
        }
        self.policy.check_password(&password)?;
        backend
            .set_password(&user_ref(&user), &password)
            .await
            .map_err(auth_error)?;
        tracing::info!(jid = %user, "password changed in-band");
        Ok(None)
    }
}

/// Removes the account of the logged-in `user` at the request of its session `from`.
async fn remove(cx: &mut Context<'_>, user: BareJid, from: &xmppd_core::Jid) -> IqResponse {
    // XEP-0077 §3.2: the answer first, then the requesting session ends (in `after_reply`).
    let requester = from.try_as_full().ok();
    match cx.remove_account(&user, requester).await {
        Ok(_) => {
            tracing::info!(jid = %user, "account removed in-band");
            Ok(None)
        }
        Err(e) => Err(auth_error(e.into())),
    }
}

/// Registration before login, on the hosts the policy names.
#[async_trait]
impl PreAuthService for Register {
    fn namespace(&self) -> &'static str {
        NS_REGISTER
    }

    fn feature(&self, host: &str) -> Option<Element> {
        self.policy
            .enabled_for(host)
            .then(|| Element::bare("register", NS_FEATURE_REGISTER))
    }

    fn quota_per_hour(&self) -> u32 {
        self.policy.max_per_ip_per_hour
    }

    async fn answer(
        &self,
        host: &str,
        iq: &Element,
        admit: &mut (dyn FnMut() -> bool + Send),
    ) -> Element {
        let Some(backend) = self.backends.get(&host.to_ascii_lowercase()) else {
            let err = StanzaError::new(Condition::NotAllowed);
            return error_reply(iq, &err).unwrap_or_else(|| iq_result(iq, None));
        };
        pre_auth_iq(&self.policy, backend.as_ref(), host, iq, admit).await
    }
}

#[async_trait]
impl Module for Register {
    fn name(&self) -> &'static str {
        "register"
    }

    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }

    fn server_features(&self) -> Vec<String> {
        vec![NS_REGISTER.into()]
    }

    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS_REGISTER]
    }

    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS_REGISTER]
    }

    async fn handle_iq(&self, cx: &mut Context<'_>, req: IqRequest) -> IqResponse {
        if !req.payload.is("query", NS_REGISTER) {
            return Err(Condition::BadRequest.into());
        }
        self.answer(cx, req).await
    }

    async fn after_reply(&self, cx: &mut Context<'_>, iq: &Element) {
        // Only a removal that was carried out gets here with a parsable query.
        let removed = iq.attr("type") == Some("set")
            && iq
                .get_child("query", NS_REGISTER)
                .and_then(|q| RemoveQuery::try_from(q.clone()).ok())
                .is_some_and(|q| q.remove);
        let from = iq.attr("from").and_then(|f| xmppd_core::Jid::new(f).ok());
        if let (true, Some(from)) = (removed, from) {
            cx.end_sessions(
                &from.bare(),
                StreamErrorCondition::NotAuthorized,
                Some("Account removed"),
            );
        }
    }
}

#[cfg(test)]
mod tests;
