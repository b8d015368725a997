//! Client state indication (XEP-0352): a client tells the server when its user is not looking
//! (`<inactive/>`) and when they are back (`<active/>`); meanwhile what the user need not
//! see at once waits, and availability changes collapse to the latest per sender.
//!
//! - The stream feature `<csi/>` is offered after login; the two nonzas reach
//!   [`Module::on_nonza`]. A session starts active, and so does a new one for the same
//!   resource, and a session resumed on a new stream (§4: the server assumes active at the
//!   start of a stream; XEP-0198 §5): what it held while inactive goes out then.
//! - The module's outbound filter sees every stanza routed to a session. For an inactive
//!   session it holds what [`urgency::urgency`] says may wait ([`held::Held`]); something
//!   urgent first lets everything held go, then passes, so the client sees stanzas in the
//!   order they came except for availability, of which it gets the latest. `<active/>` lets
//!   everything held go before the client's next stanza is handled (§5.1). Holding more than
//!   [`HeldLimits`] allows lets everything go too: nothing held is ever dropped while the
//!   session lives.
//! - Releases go through the core's [`Outlet`], under this module's lock for the session, so
//!   what it releases keeps its place against stanzas other tasks route to the session then.
//! - A session's rooms and nicks are read from the rooms' self-presence, so that a mention of
//!   the nick passes at once while the rest of the room's talk waits.
//! - When the session ends, what it held goes with it: availability and a room's talk are
//!   dropped for a gone session anyway; chat states, receipts and markers are not re-routed
//!   to another resource as queued messages are.

pub mod held;
pub mod urgency;

use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use jid::FullJid;
use minidom::Element;
use xmpp_parsers::csi::{Active, Feature, Inactive};
use xmppd_core::module::{Hooks, Module, Outlet};
use xmppd_core::{ClientSession, Context};

pub use held::{Held, HeldLimits};
use urgency::{Nicks, Urgency};

/// `urn:xmpp:csi:0`.
pub const NS_CSI: &str = "urn:xmpp:csi:0";

/// What the module keeps for one session: only for one that is inactive or in a room.
#[derive(Default)]
struct SessionState {
    inactive: bool,
    held: Held,
    nicks: Nicks,
}

impl SessionState {
    fn release(&mut self, outlet: &Outlet<'_>) {
        for s in self.held.take() {
            outlet.push(s);
        }
    }
}

/// The client state indication module.
pub struct CsiModule {
    limits: HeldLimits,
    sessions: DashMap<FullJid, SessionState>,
}

impl CsiModule {
    pub fn new(limits: HeldLimits) -> Self {
        CsiModule {
            limits,
            sessions: DashMap::new(),
        }
    }

    /// `session` is active: what it held goes out, and only its rooms are kept.
    fn activate(&self, cx: &Context<'_>, session: &FullJid) {
        if let Some(mut state) = self.sessions.get_mut(session) {
            state.inactive = false;
            state.release(&cx.outlet(session));
        }
        self.sessions
            .remove_if(session, |_, s| !s.inactive && s.nicks.is_empty());
    }

    /// How many stanzas are held for `session` now.
    pub fn held(&self, session: &FullJid) -> usize {
        self.sessions.get(session).map_or(0, |s| s.held.len())
    }
}

impl Default for CsiModule {
    fn default() -> Self {
        Self::new(HeldLimits::default())
    }
}

#[async_trait]
impl Module for CsiModule {
    fn name(&self) -> &'static str {
        "csi"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            outbound: true,
            ..Hooks::NONE
        }
    }

    fn stream_features(&self, _host: &str) -> Vec<Element> {
        vec![Feature.into()]
    }

    fn nonza_namespaces(&self) -> Vec<&'static str> {
        vec![NS_CSI]
    }

    async fn on_nonza(&self, cx: &mut Context<'_>, session: &ClientSession, nonza: &Element) {
        if Inactive::try_from(nonza.clone()).is_ok() {
            (self.sessions.entry(session.jid.clone()).or_default()).inactive = true;
        } else if Active::try_from(nonza.clone()).is_ok() {
            self.activate(cx, &session.jid);
        }
    }

    async fn on_session_resumed(&self, cx: &mut Context<'_>, session: &ClientSession) {
        self.activate(cx, &session.jid);
    }

    fn bind2_namespaces(&self) -> Vec<&'static str> {
        vec![NS_CSI]
    }

    // XEP-0352 §4: a client may start out inactive, inline in Bind2's `<bind/>`.
    async fn on_bind2(
        &self,
        cx: &mut Context<'_>,
        session: &ClientSession,
        request: &Element,
    ) -> Option<Element> {
        self.on_nonza(cx, session, request).await;
        None
    }

    fn filter_outbound(
        &self,
        session: &FullJid,
        stanza: &Arc<Element>,
        outlet: &Outlet<'_>,
    ) -> bool {
        if let Some((room, nick, leaving)) = urgency::self_presence(stanza) {
            let mut state = self.sessions.entry(session.clone()).or_default();
            if leaving {
                state.nicks.remove(&room);
            } else {
                state.nicks.insert(room, nick);
            }
        }
        let Some(mut state) = self.sessions.get_mut(session) else {
            return false;
        };
        if !state.inactive {
            return false;
        }
        let latest_of = match urgency::urgency(stanza, &state.nicks) {
            Urgency::Now => {
                state.release(outlet);
                return false;
            }
            Urgency::LatestPresence(from) => Some(from),
            Urgency::Later => None,
        };
        let limits = self.limits;
        if state.held.hold(stanza, latest_of, limits) {
            return true;
        }
        state.release(outlet);
        false
    }

    async fn on_session_opened(&self, _cx: &mut Context<'_>, jid: &FullJid) {
        self.sessions.remove(jid);
    }

    async fn on_session_closed(&self, _cx: &mut Context<'_>, jid: &FullJid) {
        self.sessions.remove(jid);
    }
}
