//! Message carbons (XEP-0280): each client of an account that asks for it gets a copy of the
//! account's conversations that its other clients have, what they send (`<sent/>`) and what
//! reaches them (`<received/>`).
//!
//! - Enabling is per session (`<enable/>`/`<disable/>` in `urn:xmpp:carbons:2`, §4, §5) and
//!   ends with it: a new session, also one binding the same resource again, starts without.
//! - A received copy is made on `on_message_delivered`, once the core chose the sessions that
//!   get the message itself (those get no copy, §7), so it carries the recipient archive's
//!   `<stanza-id/>` (XEP-0359), which the archive adds on `on_message_in`.
//! - A sent copy carries the sender archive's `<stanza-id/>`, which the archive adds to the
//!   message once it wrote the sender's row (`MamSettings::sender_ids`) and this module moves
//!   onto the copy: the message itself goes on without it. So the copy is made after the
//!   archive's hooks (the binary adds this module after the archive's): for a local account,
//!   whose archive writes the sender's row with its own as the message reaches it (one
//!   commit for both), on `on_message_in`; for anything else on `on_message_out`. The copy
//!   carries none of the recipient archive's ids. A message that never reaches the local
//!   account (blocked, or the account unknown) gets no sent copy.
//! - Copies are queued straight for each session (`cx.deliver`): they pass no message hook,
//!   so nothing archives or copies a copy.
//! - Which messages: [`rules::eligible`]. A message reaching an account with a `<sent/>` or
//!   `<received/>` at its top level from anyone but the account itself is forged (§11): they
//!   are removed before the account's clients get it.

pub mod rules;

use async_trait::async_trait;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmpp_parsers::carbons::{Disable, Enable};
use xmppd_core::address::Bare;
use xmppd_core::hash::DashSet;
use xmppd_core::module::{HookAction, Hooks, IqKind, IqRequest, IqResponse, Module};
use xmppd_core::stanza::{Condition, StanzaError};
use xmppd_core::{Addressing, ClientSession, Context};

pub use rules::{eligible, Direction, NS_CARBONS, NS_CARBONS_RULES};

/// Sent copies of one message, made by [`CarbonsModule::sent_copies`].
struct Copies {
    original: Element,
    account: BareJid,
    targets: Vec<FullJid>,
}

impl Copies {
    fn queue(self, cx: &mut Context<'_>) {
        let Copies {
            original,
            account,
            targets,
        } = self;
        CarbonsModule::copy_to(cx, &original, Direction::Sent, &account, &targets);
    }
}

/// The message carbons module.
#[derive(Default)]
pub struct CarbonsModule {
    /// The sessions that enabled carbons.
    enabled: DashSet<FullJid>,
}

impl CarbonsModule {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the session `jid` has carbons enabled.
    pub fn is_enabled(&self, jid: &FullJid) -> bool {
        self.enabled.contains(jid)
    }

    /// The carbons-enabled sessions of `account` other than those in `skip`: none, without
    /// looking at the account, while no session has carbons on.
    fn copy_targets(&self, cx: &Context<'_>, account: &BareJid, skip: &[&FullJid]) -> Vec<FullJid> {
        let mut targets = Vec::new();
        if self.enabled.is_empty() {
            return targets;
        }
        cx.sessions().with_resources(account, &mut |resources| {
            targets.extend(
                resources
                    .iter()
                    .filter(|r| self.enabled.contains(&r.jid) && !skip.contains(&&r.jid))
                    .map(|r| r.jid.clone()),
            )
        });
        targets
    }

    /// Queues a copy of `msg` for each of `targets`, clients of `account`.
    fn copy_to(
        cx: &mut Context<'_>,
        msg: &Element,
        direction: Direction,
        account: &BareJid,
        targets: &[FullJid],
    ) {
        for to in targets {
            let copy = rules::copy(msg, direction, account.as_str(), to.as_str());
            cx.deliver(to, copy);
        }
    }

    /// The `<sent/>` copies of `msg`, which the session `from` sends to `to`, for the other
    /// clients of its account; the sender archive's id moves from `msg` onto the copy. Made
    /// while the caller still borrows the message's addressing, queued by [`Copies::queue`].
    fn sent_copies(
        &self,
        cx: &Context<'_>,
        msg: &mut Element,
        from: &FullJid,
        to: &Jid,
    ) -> Option<Copies> {
        let account = from.bare();
        let own_id = rules::take_stanza_id(msg, account.as_str());
        if to.node() == account.node() && to.domain() == account.domain() {
            return None;
        }
        let targets = self.copy_targets(cx, &account, &[from]);
        if targets.is_empty() || !rules::eligible(msg, Direction::Sent) {
            return None;
        }
        let mut original = msg.clone();
        rules::strip_stanza_ids(&mut original);
        if let Some(id) = own_id {
            original.append_child(id);
        }
        Some(Copies {
            original,
            account,
            targets,
        })
    }

    /// Whether `from` may switch carbons for itself through an IQ to `to` (§4.1, §5.1): a
    /// session bound here, asking its own account or its server.
    fn may_switch(cx: &Context<'_>, from: &Jid, to: &Jid) -> Option<FullJid> {
        let full = from.try_as_full().ok()?;
        let own = match to.node() {
            Some(_) => to.bare() == full.bare(),
            None => to.domain() == full.domain(),
        };
        (own && Self::bound(cx, full)).then(|| full.clone())
    }

    /// Whether the session `jid` is bound here.
    fn bound(cx: &Context<'_>, jid: &FullJid) -> bool {
        let mut bound = false;
        (cx.sessions()).with_resources(&jid.bare(), &mut |resources| {
            bound = resources.iter().any(|r| &r.jid == jid)
        });
        bound
    }
}

#[async_trait]
impl Module for CarbonsModule {
    fn name(&self) -> &'static str {
        "carbons"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            message_out: true,
            message_in: true,
            delivered: true,
            ..Hooks::NONE
        }
    }

    // `urn:xmpp:carbons:rules:0` (XEP-0280 since 0.13) tells clients that which messages are copied
    // follows §6.1's rules (chat, normal with a body, IM payloads, MUC private messages), not
    // only `type='chat'`, so they need no workaround for the older behaviour.
    fn server_features(&self) -> Vec<String> {
        vec![NS_CARBONS.into(), NS_CARBONS_RULES.into()]
    }

    // A client enables carbons with an IQ without 'to', which the core addresses to its
    // own bare JID (RFC 6120 §10.3.3); some address their server.
    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS_CARBONS]
    }

    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS_CARBONS]
    }

    async fn handle_iq(&self, cx: &mut Context<'_>, req: IqRequest) -> IqResponse {
        if req.kind != IqKind::Set {
            return Err(StanzaError::new(Condition::BadRequest));
        }
        let Some(session) = Self::may_switch(cx, &req.from, &req.to) else {
            return Err(StanzaError::new(Condition::NotAllowed));
        };
        // §10.1: enabling twice, or disabling twice, is no error.
        if Enable::try_from(req.payload.clone()).is_ok() {
            self.enabled.insert(session);
        } else if Disable::try_from(req.payload).is_ok() {
            self.enabled.remove(&session);
        } else {
            return Err(StanzaError::new(Condition::BadRequest));
        }
        Ok(None)
    }

    fn bind2_namespaces(&self) -> Vec<&'static str> {
        vec![NS_CARBONS]
    }

    // XEP-0386 §2.3: `<enable/>` inside Bind2's `<bind/>` is the enabling IQ without the IQ.
    async fn on_bind2(
        &self,
        _cx: &mut Context<'_>,
        session: &ClientSession,
        request: &Element,
    ) -> Option<Element> {
        if Enable::try_from(request.clone()).is_ok() {
            self.enabled.insert(session.jid.clone());
        }
        None
    }

    async fn on_session_opened(&self, _cx: &mut Context<'_>, jid: &FullJid) {
        self.enabled.remove(jid);
    }

    async fn on_session_closed(&self, _cx: &mut Context<'_>, jid: &FullJid) {
        self.enabled.remove(jid);
    }

    async fn on_message_out(&self, cx: &mut Context<'_>, msg: &mut Element) -> HookAction {
        // Without 'to' it goes to the sender's own account (RFC 6120 §10.3), whose clients
        // get it, or a received copy, as it arrives; so does one to the account's JIDs.
        let Some(addressing) = cx.addressing(msg) else {
            return HookAction::Continue;
        };
        let Addressing { from, to } = &*addressing;
        // To a local account: copied as it reaches it, once its archive has the sender's row.
        let local_account = to.node().is_some() && cx.is_local_host(to.domain().as_str());
        let copies = match from.try_as_full() {
            Ok(from) if !local_account => self.sent_copies(cx, msg, from, to),
            _ => None,
        };
        drop(addressing);
        if let Some(copies) = copies {
            copies.queue(cx);
        }
        HookAction::Continue
    }

    async fn on_message_in(&self, cx: &mut Context<'_>, msg: &mut Element) -> HookAction {
        let Some(addressing) = cx.addressing(msg) else {
            return HookAction::Continue;
        };
        let Addressing { from, to } = &*addressing;
        if rules::claims_to_be_a_copy(msg) && *from != to.bare() {
            tracing::debug!(from = ?msg.attr("from"), "forged carbon copy removed");
            rules::strip_claimed_copies(msg);
        }
        // A local session's message, copied for its other clients (see `on_message_out`).
        let copies = match from.try_as_full() {
            Ok(from) if cx.is_local_host(from.domain().as_str()) && Self::bound(cx, from) => {
                self.sent_copies(cx, msg, from, to)
            }
            _ => None,
        };
        drop(addressing);
        if let Some(copies) = copies {
            copies.queue(cx);
        }
        HookAction::Continue
    }

    async fn on_message_delivered(&self, cx: &mut Context<'_>, msg: &Element, targets: &[FullJid]) {
        if self.enabled.is_empty() || !rules::eligible(msg, Direction::Received) {
            return;
        }
        let Some(addressing) = cx.addressing(msg) else {
            return;
        };
        let Addressing { from, to } = &*addressing;
        // The sending session of a message to its own account has it already.
        let mut skip: Vec<&FullJid> = targets.iter().collect();
        skip.extend(from.try_as_full().ok());
        let account = to.bare();
        let copies = self.copy_targets(cx, &account, &skip);
        drop(skip);
        drop(addressing);
        Self::copy_to(cx, msg, Direction::Received, &account, &copies);
    }
}
