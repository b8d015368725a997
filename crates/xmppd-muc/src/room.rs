//! One chat room as a state machine: [`Room::handle`] takes a stanza addressed to the room or
//! one of its occupants and returns an [`Outcome`]: the stanzas to send, and what the service
//! must do next (fetch history, archive a message, save or delete the room).
//!
//! No I/O, no clock, no locking here: the service owns the room behind its own lock, passes
//! the time in, and routes what comes out. Every stanza from a peer ends either in its effect
//! or in a stanza error for that peer; nothing here panics on input.
//!
//! Occupants joined from several sessions of one user are one occupant to the others
//! (§7.2.9): messages to the occupant JID reach every session, an IQ request reaches the
//! oldest session only (an IQ has exactly one answer), and the answer goes back to the very
//! session that asked.
//!
//! Not done here: room-level privacy lists, presence broadcast filtering by role, admin
//! approval of registrations (a registration is accepted or refused at once).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmppd_core::address::parse_jid;
use xmppd_core::stanza::{
    self, elem, error_reply, iq_result, set_attr, text_elem, Condition, ErrorType, StanzaError,
    NS_CLIENT,
};
use xmppd_storage::{RoomAffiliation, StoredRoom};

use crate::archive::{HistoryEntry, HistoryQuery};
use crate::form::{
    Form, FormBuilder, RoomConfig, Whois, FORM_REGISTER, FORM_REQUEST, FORM_ROOMINFO,
};

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
pub const FEATURE_SELF_PING: &str = "http://jabber.org/protocol/muc#self-ping-optimization";
pub const NS_REGISTER: &str = "jabber:iq:register";
/// The disco#info node that tells a user its reserved nick (XEP-0045 §7.12).
pub const NODE_ROOMUSER: &str = "x-roomuser-item";
/// IQ requests between occupants whose answer is still awaited, per room (the oldest are
/// forgotten first: their answers then go to the asker's oldest session).
const MAX_PENDING_IQS: usize = 256;
/// Mediated invitations that a decline may still answer, per room (the oldest are forgotten
/// first), and for how long: an invitation may wait in offline storage for days.
const MAX_PENDING_INVITES: usize = 256;
const INVITE_TTL_MS: i64 = 7 * 24 * 3600 * 1000;
const NS_DISCO_INFO: &str = stanza::NS_DISCO_INFO;
const NS_DISCO_ITEMS: &str = stanza::NS_DISCO_ITEMS;

/// A long-lived relation between a user and the room, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Affiliation {
    Outcast,
    None,
    Member,
    Admin,
    Owner,
}

impl Affiliation {
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Owner => "owner",
            Affiliation::Admin => "admin",
            Affiliation::Member => "member",
            Affiliation::None => "none",
            Affiliation::Outcast => "outcast",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "owner" => Affiliation::Owner,
            "admin" => Affiliation::Admin,
            "member" => Affiliation::Member,
            "none" => Affiliation::None,
            "outcast" => Affiliation::Outcast,
            _ => return None,
        })
    }
}

/// A role within the current visit, highest last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    None,
    Visitor,
    Participant,
    Moderator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Moderator => "moderator",
            Role::Participant => "participant",
            Role::Visitor => "visitor",
            Role::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "moderator" => Role::Moderator,
            "participant" => Role::Participant,
            "visitor" => Role::Visitor,
            "none" => Role::None,
            _ => return None,
        })
    }
}

/// Limits of the service that bound every room.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoomLimits {
    pub max_occupants: usize,
    pub max_history: usize,
    /// Sustained groupchat messages per second per occupant (bursts of twice that); 0: no limit.
    pub messages_per_second: u32,
}

/// What handling one stanza produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Stanzas to route, in order.
    pub out: Vec<Element>,
    /// Stanzas for every occupant session, each one element for all (a 256 KiB message to 500
    /// occupants is one copy, not 500), interleaved with `out` as their `at` says.
    pub broadcasts: Vec<Broadcast>,
    /// A new occupant's session and what history it asked for: sent after `out`.
    pub history_for: Option<(FullJid, HistoryQuery)>,
    /// Stanzas to route after the history (the subject on join).
    pub after: Vec<Element>,
    /// A message to hand to the archive.
    pub archive: Option<HistoryEntry>,
    /// Configuration, affiliations or subject changed: save (or delete if not persistent).
    pub changed: bool,
    /// The room is gone (destroyed, or a temporary room emptied).
    pub destroyed: bool,
}

/// One stanza for many occupant sessions: a single element, addressed to each recipient only
/// as it is written.
#[derive(Debug, Clone)]
pub struct Broadcast {
    /// Goes before `out[at]` of its [`Outcome`] (after all of it when `at` is its length).
    pub at: usize,
    pub stanza: Arc<Element>,
    pub to: Vec<FullJid>,
}

/// One thing to send, in the order a room produced it.
#[derive(Debug, Clone)]
pub enum Send {
    /// A stanza with its own `to`.
    One(Element),
    /// One element for several sessions.
    Shared(Arc<Element>, Vec<FullJid>),
}

impl Outcome {
    /// `out` with the broadcasts in their places.
    pub fn take_sends(&mut self) -> Vec<Send> {
        let mut broadcasts = std::mem::take(&mut self.broadcasts).into_iter().peekable();
        let mut sends = Vec::with_capacity(self.out.len() + broadcasts.len());
        for (i, el) in std::mem::take(&mut self.out).into_iter().enumerate() {
            while let Some(b) = broadcasts.next_if(|b| b.at <= i) {
                sends.push(Send::Shared(b.stanza, b.to));
            }
            sends.push(Send::One(el));
        }
        sends.extend(broadcasts.map(|b| Send::Shared(b.stanza, b.to)));
        sends
    }
}

#[derive(Debug, Clone)]
struct AffItem {
    affiliation: Affiliation,
    nick: Option<String>,
    reason: Option<String>,
}

#[derive(Debug, Clone)]
struct Occupant {
    nick: String,
    real: BareJid,
    /// Every session of the user joined under this nick, oldest first.
    sessions: Vec<FullJid>,
    role: Role,
    /// The occupant's presence as broadcast (show, status, …), without addresses.
    presence: Element,
    tokens: f64,
    last_ms: i64,
}

/// Extras of an occupant's `<item/>` and presence.
#[derive(Default)]
struct Extra<'a> {
    actor: Option<&'a str>,
    reason: Option<&'a str>,
    new_nick: Option<&'a str>,
    destroy: Option<Element>,
    affiliation: Option<Affiliation>,
}

/// An IQ request forwarded from one occupant to another.
#[derive(Debug, Clone, PartialEq)]
struct PendingIq {
    /// The nick that will answer.
    responder: String,
    /// The asking occupant's nick, and the session that asked.
    asker: String,
    session: FullJid,
    id: String,
}

/// A mediated invitation not answered yet (XEP-0045 §7.8.2).
#[derive(Debug, Clone, PartialEq)]
struct PendingInvite {
    invitee: BareJid,
    inviter: BareJid,
    at_ms: i64,
}

/// A chat room.
pub struct Room {
    pub jid: BareJid,
    pub config: RoomConfig,
    /// Created but not configured yet: only owners may enter (XEP-0045 §10.1.1).
    pub locked: bool,
    pub subject: String,
    subject_from: Option<String>,
    affiliations: HashMap<BareJid, AffItem>,
    occupants: BTreeMap<String, Occupant>,
    sessions: HashMap<FullJid, String>,
    /// Forwarded IQ requests between occupants, to answer the session that asked.
    pending_iqs: VecDeque<PendingIq>,
    /// Invitations sent, oldest first: the invitee who declines is not an occupant, so only
    /// these tell the room whom a decline may go to.
    pending_invites: VecDeque<PendingInvite>,
    limits: RoomLimits,
    /// Set once the room is gone, for whoever still holds a handle to it.
    pub gone: bool,
}

impl Room {
    /// A new, locked room owned by `owner`.
    pub fn create(jid: BareJid, owner: BareJid, limits: RoomLimits) -> Room {
        let mut room = Room::empty(jid, limits);
        room.locked = true;
        room.affiliations.insert(
            owner,
            AffItem {
                affiliation: Affiliation::Owner,
                nick: None,
                reason: None,
            },
        );
        room
    }

    fn empty(jid: BareJid, limits: RoomLimits) -> Room {
        Room {
            jid,
            config: RoomConfig::new(limits.max_occupants, limits.max_history.min(20)),
            locked: false,
            subject: String::new(),
            subject_from: None,
            affiliations: HashMap::new(),
            occupants: BTreeMap::new(),
            sessions: HashMap::new(),
            pending_iqs: VecDeque::new(),
            pending_invites: VecDeque::new(),
            limits,
            gone: false,
        }
    }

    /// A persistent room as stored; `None` if the record is unreadable.
    pub fn restore(jid: BareJid, stored: &StoredRoom, limits: RoomLimits) -> Option<Room> {
        let mut room = Room::empty(jid, limits);
        room.config =
            RoomConfig::deserialize(&stored.config, limits.max_occupants, limits.max_history)?;
        room.config.persistent = true;
        room.subject = stored.subject.clone();
        for a in &stored.affiliations {
            let (Ok(j), Some(aff)) = (BareJid::new(&a.jid), Affiliation::parse(&a.affiliation))
            else {
                continue;
            };
            room.affiliations.insert(
                j,
                AffItem {
                    affiliation: aff,
                    nick: a.nick.clone(),
                    reason: a.reason.clone(),
                },
            );
        }
        Some(room)
    }

    /// What is stored for this room.
    pub fn snapshot(&self) -> StoredRoom {
        let mut affiliations: Vec<RoomAffiliation> = self
            .affiliations
            .iter()
            .map(|(j, a)| RoomAffiliation {
                jid: j.to_string(),
                affiliation: a.affiliation.as_str().to_owned(),
                nick: a.nick.clone(),
                reason: a.reason.clone(),
            })
            .collect();
        affiliations.sort_by(|a, b| a.jid.cmp(&b.jid));
        StoredRoom {
            domain: self.jid.domain().to_string(),
            name: self.jid.node().map(|n| n.to_string()).unwrap_or_default(),
            config: self.config.serialize(),
            subject: self.subject.clone(),
            affiliations,
        }
    }

    pub fn occupant_count(&self) -> usize {
        self.occupants.len()
    }

    pub fn affiliation(&self, jid: &BareJid) -> Affiliation {
        self.affiliations
            .get(jid)
            .map(|a| a.affiliation)
            .unwrap_or(Affiliation::None)
    }

    /// Whether `jid` owns this room (for the per-user room limit).
    pub fn is_owner(&self, jid: &BareJid) -> bool {
        self.affiliation(jid) == Affiliation::Owner
    }

    /// The room's owners, sorted.
    pub fn owners(&self) -> Vec<BareJid> {
        let mut v: Vec<BareJid> = self
            .affiliations
            .iter()
            .filter(|(_, a)| a.affiliation == Affiliation::Owner)
            .map(|(j, _)| j.clone())
            .collect();
        v.sort();
        v
    }

    /// Forgets the affiliation of a removed account, with the nick reserved with it; returns
    /// whether there was one. The room may be left without owner (see [`Room::adopt`]).
    pub fn forget_account(&mut self, jid: &BareJid) -> bool {
        self.affiliations.remove(jid).is_some()
    }

    /// Makes `admin`, a server administrator, the owner of a room that has none (its last
    /// owner's account was removed), so that the room can be managed again. Returns the
    /// presence updates for `admin`'s occupants, if it is in the room.
    pub fn adopt(&mut self, admin: &BareJid) -> Outcome {
        let mut o = Outcome::default();
        self.apply_affiliation(admin, Affiliation::Owner, None, None, None, &mut o);
        o
    }

    /// The nick `jid` reserved by registering (XEP-0045 §7.10), if any.
    pub fn reserved_nick(&self, jid: &BareJid) -> Option<&str> {
        self.affiliations.get(jid).and_then(|a| a.nick.as_deref())
    }

    /// Handles a stanza whose `to` is the room or an occupant, at `now_ms`.
    pub fn handle(&mut self, st: &Element, now_ms: i64) -> Outcome {
        let mut o = Outcome::default();
        let Some(from) = st.attr("from").and_then(|f| FullJid::new(f).ok()) else {
            // Only sessions (full JIDs) talk to rooms; anything else has no one to answer.
            return o;
        };
        let to = st.attr("to").and_then(|t| Jid::new(t).ok());
        let nick = to
            .as_ref()
            .and_then(|t| t.resource())
            .map(|r| r.to_string());
        let result = match st.name() {
            "presence" => self.on_presence(&from, nick, st, &mut o, now_ms),
            "message" => self.on_message(&from, nick, st, &mut o, now_ms),
            "iq" => self.on_iq(&from, nick, st, &mut o),
            _ => Ok(()),
        };
        if let Err(e) = result {
            o.out.extend(error_reply(st, &e));
        }
        if self.occupants.is_empty() && !self.config.persistent {
            o.destroyed = true;
        }
        if o.destroyed {
            self.gone = true;
        }
        o
    }

    fn occupant_jid(&self, nick: &str) -> String {
        format!("{}/{nick}", self.jid)
    }

    fn default_role(&self, aff: Affiliation) -> Role {
        match aff {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    fn role_of(&self, jid: &FullJid) -> Role {
        self.sessions
            .get(jid)
            .and_then(|n| self.occupants.get(n))
            .map(|o| o.role)
            .unwrap_or(Role::None)
    }

    /// The nick `jid` may not take because another user reserved it.
    fn reserved_by_other(&self, nick: &str, real: &BareJid) -> bool {
        self.affiliations
            .iter()
            .any(|(j, a)| j != real && a.nick.as_deref() == Some(nick))
    }

    // --- presence ---------------------------------------------------------------------------

    fn on_presence(
        &mut self,
        from: &FullJid,
        nick: Option<String>,
        p: &Element,
        o: &mut Outcome,
        now_ms: i64,
    ) -> Result<(), StanzaError> {
        let current = self.sessions.get(from).cloned();
        match p.attr("type") {
            None => {}
            Some("unavailable") => {
                if current.is_some() {
                    self.leave(from, p, &[], o);
                }
                return Ok(());
            }
            Some("error") => {
                self.on_error(from, p, o);
                return Ok(());
            }
            Some(_) => return Ok(()),
        }
        let Some(nick) = nick else {
            return Err(StanzaError::with_text(
                Condition::JidMalformed,
                "a nickname is required",
            ));
        };
        match current {
            Some(cur) if cur == nick => {
                self.update_presence(&cur, p, o);
                Ok(())
            }
            Some(cur) => self.change_nick(from, &cur, &nick, p, o),
            None => self.join(from, &nick, p, o, now_ms),
        }
    }

    fn join(
        &mut self,
        from: &FullJid,
        nick: &str,
        p: &Element,
        o: &mut Outcome,
        now_ms: i64,
    ) -> Result<(), StanzaError> {
        let real = from.to_bare();
        let aff = self.affiliation(&real);
        let creating = self.locked && self.occupants.is_empty() && aff == Affiliation::Owner;
        if aff == Affiliation::Outcast {
            return Err(StanzaError::with_text(
                Condition::Forbidden,
                "you are banned from this room",
            ));
        }
        if self.locked && aff != Affiliation::Owner {
            return Err(StanzaError::with_text(
                Condition::ItemNotFound,
                "this room is not configured yet",
            ));
        }
        if self.config.members_only && aff < Affiliation::Member {
            return Err(StanzaError::with_text(
                Condition::RegistrationRequired,
                "this room is members-only",
            ));
        }
        let same_user = match self.occupants.get(nick) {
            Some(occ) if occ.real != real => {
                return Err(StanzaError::with_text(
                    Condition::Conflict,
                    "that nickname is in use",
                ))
            }
            Some(_) => true,
            None => false,
        };
        if self.reserved_by_other(nick, &real) {
            return Err(StanzaError::with_text(
                Condition::Conflict,
                "that nickname is reserved",
            ));
        }
        if !same_user
            && self.occupants.len() >= self.config.max_occupants
            && aff < Affiliation::Admin
        {
            // XEP-0045 §7.2.10: a full room is a temporary refusal; trying later may work.
            let mut full =
                StanzaError::with_text(Condition::ServiceUnavailable, "the room is full");
            full.kind = ErrorType::Wait;
            return Err(full);
        }
        let muc = p.get_child("x", NS_MUC);
        if let Some(secret) = &self.config.password {
            let given = muc.and_then(|x| x.get_child("password", NS_MUC).map(|e| e.text()));
            if !creating && given.as_deref() != Some(secret.as_str()) {
                return Err(StanzaError::with_text(
                    Condition::NotAuthorized,
                    "a password is required",
                ));
            }
        }
        let presence = presence_payload(p);
        let history = HistoryQuery::parse(muc.and_then(|x| x.get_child("history", NS_MUC)));
        if let Some(occ) = self.occupants.get_mut(nick).filter(|_| same_user) {
            // Another session of an occupant joins under its nick: it sees the room as it is.
            occ.sessions.push(from.clone());
            occ.presence = presence;
            self.sessions.insert(from.clone(), nick.to_owned());
        } else {
            let occ = Occupant {
                nick: nick.to_owned(),
                real: real.clone(),
                sessions: vec![from.clone()],
                role: self.default_role(aff),
                presence,
                tokens: self.burst(),
                last_ms: now_ms,
            };
            self.occupants.insert(nick.to_owned(), occ);
            self.sessions.insert(from.clone(), nick.to_owned());
        }
        // Entering answers the user's invitations: no decline may follow.
        self.pending_invites.retain(|p| p.invitee != real);
        for other in self.occupants.values().filter(|x| x.nick != nick) {
            o.out
                .push(self.presence_for(other, from, false, &Extra::default(), &[]));
        }
        let mut codes = Vec::new();
        if self.config.whois == Whois::Anyone {
            codes.push(100);
        }
        if self.config.archived {
            codes.push(170);
        }
        if creating {
            codes.push(201);
        }
        let Some(occ) = self.occupants.get(nick).cloned() else {
            return Ok(());
        };
        self.broadcast(&occ, false, &Extra::default(), &[], &codes, o);
        o.history_for = Some((from.clone(), history));
        let mut subject = elem("message", NS_CLIENT, &[("type", "groupchat")]);
        let subject_from = match &self.subject_from {
            Some(n) => self.occupant_jid(n),
            None => self.jid.to_string(),
        };
        set_attr(&mut subject, "from", subject_from);
        set_attr(&mut subject, "to", from.to_string());
        subject.append_child(text_elem("subject", NS_CLIENT, &self.subject));
        o.after.push(subject);
        Ok(())
    }

    fn update_presence(&mut self, nick: &str, p: &Element, o: &mut Outcome) {
        let Some(occ) = self.occupants.get_mut(nick) else {
            return;
        };
        occ.presence = presence_payload(p);
        let occ = occ.clone();
        self.broadcast(&occ, false, &Extra::default(), &[], &[], o);
    }

    fn change_nick(
        &mut self,
        from: &FullJid,
        old: &str,
        new: &str,
        p: &Element,
        o: &mut Outcome,
    ) -> Result<(), StanzaError> {
        let real = from.to_bare();
        if self.occupants.contains_key(new) || self.reserved_by_other(new, &real) {
            return Err(StanzaError::with_text(
                Condition::Conflict,
                "that nickname is in use",
            ));
        }
        let Some(mut occ) = self.occupants.remove(old) else {
            return Ok(());
        };
        let extra = Extra {
            new_nick: Some(new),
            ..Extra::default()
        };
        // The old nick leaves with 303 (the new nick in the item), then the new one arrives.
        self.broadcast(&occ, true, &extra, &[303], &[], o);
        occ.nick = new.to_owned();
        occ.presence = presence_payload(p);
        for s in &occ.sessions {
            self.sessions.insert(s.clone(), new.to_owned());
        }
        self.occupants.insert(new.to_owned(), occ.clone());
        self.broadcast(&occ, false, &Extra::default(), &[], &[], o);
        Ok(())
    }

    /// One session leaves; the occupant leaves with its last session.
    fn leave(&mut self, from: &FullJid, p: &Element, codes: &[u16], o: &mut Outcome) {
        let Some(nick) = self.sessions.remove(from) else {
            return;
        };
        let Some(occ) = self.occupants.get_mut(&nick) else {
            return;
        };
        occ.sessions.retain(|s| s != from);
        let mut leaving = occ.clone();
        leaving.presence = presence_payload(p);
        if occ.sessions.is_empty() {
            self.occupants.remove(&nick);
            leaving.sessions = vec![from.clone()];
            self.broadcast(&leaving, true, &Extra::default(), codes, &[], o);
        } else {
            // The others sessions stay: only the leaving one learns it is out.
            let mut el = self.presence_for(&leaving, from, true, &Extra::default(), codes);
            add_status(&mut el, 110);
            o.out.push(el);
        }
    }

    /// An error stanza (message or presence) from an occupant's session. XEP-0045 §18.1 removes
    /// the session with 333 when the error shows it can no longer be reached. Any other error
    /// (a client refusing one message: blocking, an unsupported payload) is dropped, and the
    /// session stays: the room cannot tell whether it answers a groupchat message or a private
    /// one, so relaying it to "the sender" could reach the wrong occupant.
    fn on_error(&mut self, from: &FullJid, st: &Element, o: &mut Outcome) {
        if self.sessions.contains_key(from) && is_unreachable(st) {
            self.leave(from, &Element::bare("presence", NS_CLIENT), &[333], o);
        }
    }

    /// Removes an occupant (every session) with the given codes: kick, ban, membership loss.
    fn remove_occupant(&mut self, nick: &str, extra: &Extra, codes: &[u16], o: &mut Outcome) {
        let Some(mut occ) = self.occupants.remove(nick) else {
            return;
        };
        for s in &occ.sessions {
            self.sessions.remove(s);
        }
        occ.role = Role::None;
        occ.presence = Element::bare("presence", NS_CLIENT);
        self.broadcast(&occ, true, extra, codes, &[], o);
    }

    /// `occ`'s presence to every occupant session and to `occ`'s own sessions (with 110 and
    /// `self_codes`).
    fn broadcast(
        &self,
        occ: &Occupant,
        unavailable: bool,
        extra: &Extra,
        codes: &[u16],
        self_codes: &[u16],
        o: &mut Outcome,
    ) {
        for other in self.occupants.values().filter(|x| x.nick != occ.nick) {
            for s in &other.sessions {
                o.out
                    .push(self.presence_for(occ, s, unavailable, extra, codes));
            }
        }
        for s in &occ.sessions {
            let mut el = self.presence_for(occ, s, unavailable, extra, codes);
            add_status(&mut el, 110);
            for c in self_codes {
                add_status(&mut el, *c);
            }
            o.out.push(el);
        }
    }

    /// `occ`'s presence as `to` sees it.
    fn presence_for(
        &self,
        occ: &Occupant,
        to: &FullJid,
        unavailable: bool,
        extra: &Extra,
        codes: &[u16],
    ) -> Element {
        let mut p = occ.presence.clone();
        set_attr(&mut p, "from", self.occupant_jid(&occ.nick));
        set_attr(&mut p, "to", to.to_string());
        if unavailable {
            set_attr(&mut p, "type", "unavailable");
        }
        let show_jid = self.config.whois == Whois::Anyone
            || self.role_of(to) == Role::Moderator
            || occ.sessions.contains(to);
        let aff = extra
            .affiliation
            .unwrap_or_else(|| self.affiliation(&occ.real));
        let role = if unavailable { Role::None } else { occ.role };
        let mut item = elem(
            "item",
            NS_MUC_USER,
            &[("affiliation", aff.as_str()), ("role", role.as_str())],
        );
        if show_jid {
            if let Some(s) = occ.sessions.first() {
                set_attr(&mut item, "jid", s.to_string());
            }
        }
        if let Some(n) = extra.new_nick {
            set_attr(&mut item, "nick", n);
        }
        if let Some(a) = extra.actor {
            item.append_child(elem("actor", NS_MUC_USER, &[("nick", a)]));
        }
        if let Some(r) = extra.reason {
            item.append_child(text_elem("reason", NS_MUC_USER, r));
        }
        let mut x = Element::bare("x", NS_MUC_USER);
        x.append_child(item);
        if let Some(d) = &extra.destroy {
            x.append_child(d.clone());
        }
        for c in codes {
            x.append_child(status(*c));
        }
        p.append_child(x);
        p
    }

    // --- messages ---------------------------------------------------------------------------

    fn on_message(
        &mut self,
        from: &FullJid,
        nick: Option<String>,
        m: &Element,
        o: &mut Outcome,
        now_ms: i64,
    ) -> Result<(), StanzaError> {
        let kind = m.attr("type").unwrap_or("normal");
        if kind == "error" {
            self.on_error(from, m, o);
            return Ok(());
        }
        if let Some(target) = nick {
            return self.private_message(from, &target, m, o);
        }
        if let Some(x) = m.get_child("x", NS_MUC_USER) {
            if x.get_child("invite", NS_MUC_USER).is_some() {
                return self.invite(from, x, o, now_ms);
            }
            if let Some(d) = x.get_child("decline", NS_MUC_USER) {
                return self.decline(from, d, o, now_ms);
            }
        }
        if let Some(form) = m
            .get_child("x", crate::form::NS_DATA)
            .and_then(Form::parse)
            .filter(|f| f.form_type() == Some(FORM_REQUEST))
        {
            return self.voice_request(from, &form, o);
        }
        if kind != "groupchat" {
            return Err(StanzaError::with_text(
                Condition::BadRequest,
                "only groupchat messages, invitations and requests go to the room",
            ));
        }
        self.groupchat(from, m, o, now_ms)
    }

    fn burst(&self) -> f64 {
        f64::from(self.limits.messages_per_second) * 2.0
    }

    fn groupchat(
        &mut self,
        from: &FullJid,
        m: &Element,
        o: &mut Outcome,
        now_ms: i64,
    ) -> Result<(), StanzaError> {
        let Some(nick) = self.sessions.get(from).cloned() else {
            return Err(StanzaError::with_text(
                Condition::NotAcceptable,
                "you are not in this room",
            ));
        };
        let rate = f64::from(self.limits.messages_per_second);
        let burst = self.burst();
        let occ = self
            .occupants
            .get_mut(&nick)
            .ok_or(Condition::NotAcceptable)?;
        if rate > 0.0 {
            let elapsed = (now_ms - occ.last_ms).max(0) as f64 / 1000.0;
            occ.tokens = (occ.tokens + elapsed * rate).min(burst);
            occ.last_ms = now_ms;
            if occ.tokens < 1.0 {
                return Err(StanzaError::with_text(
                    Condition::ResourceConstraint,
                    "too many messages; slow down",
                ));
            }
            occ.tokens -= 1.0;
        }
        let role = occ.role;
        let real = occ.real.clone();
        let subject = m.get_child("subject", NS_CLIENT);
        let has_body = m.get_child("body", NS_CLIENT).is_some();
        if let (Some(subject), false) = (subject, has_body) {
            if !(role == Role::Moderator
                || (self.config.change_subject && role >= Role::Participant))
            {
                return Err(StanzaError::with_text(
                    Condition::Forbidden,
                    "you may not change the subject",
                ));
            }
            self.subject = subject.text();
            self.subject_from = Some(nick.clone());
            o.changed = true;
        } else if role < Role::Participant {
            return Err(StanzaError::with_text(
                Condition::Forbidden,
                "visitors may not speak in a moderated room",
            ));
        }
        let mut msg = m.clone();
        stanza::remove_attr(&mut msg, "to");
        set_attr(&mut msg, "from", self.occupant_jid(&nick));
        if subject.is_none() || has_body {
            o.archive = Some(HistoryEntry {
                // The clock reads whole milliseconds, rounded down, while a `since` (XEP-0045
                // §7.2.13) may name any instant: a message accepted at 5.0007 s stamped 5.000
                // would fall before a `since` of 5.0004 s its sender read before sending it.
                // The end of the millisecond is after every instant that preceded the message,
                // and a `since` copied from its delay stamp still leaves it out.
                stamp_ms: now_ms.saturating_add(1),
                sender: real,
                message: msg.clone(),
            });
        }
        self.to_all(msg, o);
        Ok(())
    }

    /// `msg` to every occupant session, as one shared element.
    fn to_all(&self, msg: Element, o: &mut Outcome) {
        let to: Vec<FullJid> = self
            .occupants
            .values()
            .flat_map(|x| x.sessions.iter().cloned())
            .collect();
        if !to.is_empty() {
            o.broadcasts.push(Broadcast {
                at: o.out.len(),
                stanza: Arc::new(msg),
                to,
            });
        }
    }

    fn private_message(
        &mut self,
        from: &FullJid,
        target: &str,
        m: &Element,
        o: &mut Outcome,
    ) -> Result<(), StanzaError> {
        let Some(nick) = self.sessions.get(from) else {
            return Err(StanzaError::with_text(
                Condition::NotAcceptable,
                "you are not in this room",
            ));
        };
        if m.attr("type") == Some("groupchat") {
            return Err(StanzaError::with_text(
                Condition::BadRequest,
                "a groupchat message goes to the room",
            ));
        }
        let Some(occ) = self.occupants.get(target) else {
            return Err(StanzaError::new(Condition::ItemNotFound));
        };
        let mut msg = m.clone();
        set_attr(&mut msg, "from", self.occupant_jid(nick));
        if msg.get_child("x", NS_MUC_USER).is_none() {
            msg.append_child(Element::bare("x", NS_MUC_USER));
        }
        for s in &occ.sessions {
            let mut copy = msg.clone();
            set_attr(&mut copy, "to", s.to_string());
            o.out.push(copy);
        }
        Ok(())
    }

    /// A mediated invitation (XEP-0045 §7.8.2) from an occupant. In a members-only room it
    /// adds the invitee to the member list, so there it takes an admin, or a member when the
    /// room allows members to invite (`muc#roomconfig_allowinvites`); the XEP asks for
    /// `<forbidden/>` otherwise. Elsewhere moderators invite, and everyone with that option.
    fn invite(
        &mut self,
        from: &FullJid,
        x: &Element,
        o: &mut Outcome,
        now_ms: i64,
    ) -> Result<(), StanzaError> {
        let Some(nick) = self.sessions.get(from).cloned() else {
            return Err(StanzaError::with_text(
                Condition::NotAcceptable,
                "you are not in this room",
            ));
        };
        let inviter = from.to_bare();
        let inviter_aff = self.affiliation(&inviter);
        let may_invite = if self.config.members_only {
            inviter_aff >= Affiliation::Admin
                || (inviter_aff >= Affiliation::Member && self.config.allow_invites)
        } else {
            self.config.allow_invites || self.role_of(from) == Role::Moderator
        };
        if !may_invite {
            return Err(StanzaError::with_text(
                Condition::Forbidden,
                "you may not invite to this room",
            ));
        }
        let mut invitees = Vec::new();
        for inv in x.children().filter(|c| c.is("invite", NS_MUC_USER)) {
            let to = inv
                .attr("to")
                .and_then(|t| parse_jid(t).ok())
                .ok_or(Condition::JidMalformed)?;
            self.user_outside_service(&to)?;
            if self.affiliation(&to.to_bare()) == Affiliation::Outcast {
                // Only the admins lift a ban, through the outcast list.
                return Err(StanzaError::with_text(
                    Condition::Forbidden,
                    "that user is banned from this room",
                ));
            }
            invitees.push((to, inv.get_child("reason", NS_MUC_USER).map(|r| r.text())));
        }
        for (to, reason) in invitees {
            let bare = to.to_bare();
            if self.config.members_only && self.affiliation(&bare) < Affiliation::Member {
                self.affiliations.insert(
                    bare.clone(),
                    AffItem {
                        affiliation: Affiliation::Member,
                        nick: None,
                        reason: None,
                    },
                );
                o.changed = true;
            }
            self.remember_invite(bare, inviter.clone(), now_ms);
            let mut msg = elem("message", NS_CLIENT, &[]);
            set_attr(&mut msg, "from", self.jid.to_string());
            set_attr(&mut msg, "to", to.to_string());
            let mut ux = Element::bare("x", NS_MUC_USER);
            let mut i = elem("invite", NS_MUC_USER, &[("from", inviter.as_str())]);
            if let Some(r) = &reason {
                i.append_child(text_elem("reason", NS_MUC_USER, r));
            }
            ux.append_child(i);
            if let Some(p) = &self.config.password {
                ux.append_child(text_elem("password", NS_MUC_USER, p));
            }
            msg.append_child(ux);
            msg.append_child(text_elem(
                "body",
                NS_CLIENT,
                &format!("{nick} invites you to the room {}", self.jid),
            ));
            o.out.push(msg);
        }
        Ok(())
    }

    /// Invitations and declines go to users. On this service's domain they would make the room
    /// message itself, another room or an occupant JID in a user's name.
    fn user_outside_service(&self, to: &Jid) -> Result<(), StanzaError> {
        if to.domain() == self.jid.domain() {
            return Err(StanzaError::with_text(
                Condition::BadRequest,
                "invitations and declines go to users, not to this chat service",
            ));
        }
        Ok(())
    }

    fn remember_invite(&mut self, invitee: BareJid, inviter: BareJid, now_ms: i64) {
        self.expire_invites(now_ms);
        self.pending_invites
            .retain(|p| !(p.invitee == invitee && p.inviter == inviter));
        if self.pending_invites.len() >= MAX_PENDING_INVITES {
            self.pending_invites.pop_front();
        }
        self.pending_invites.push_back(PendingInvite {
            invitee,
            inviter,
            at_ms: now_ms,
        });
    }

    fn expire_invites(&mut self, now_ms: i64) {
        self.pending_invites
            .retain(|p| now_ms.saturating_sub(p.at_ms) <= INVITE_TTL_MS);
    }

    /// XEP-0045 §7.8.2: the invitee declines through the room, which tells the inviter. The
    /// invitee is not an occupant, so only an invitation the room sent lets a decline through,
    /// and it goes to whoever sent that invitation: the one the decline names if that user
    /// invited the decliner, else the latest inviter. One invitation, one decline.
    fn decline(
        &mut self,
        from: &FullJid,
        d: &Element,
        o: &mut Outcome,
        now_ms: i64,
    ) -> Result<(), StanzaError> {
        let named = match d.attr("to") {
            Some(t) => Some(parse_jid(t).map_err(|_| Condition::JidMalformed)?),
            None => None,
        };
        if let Some(to) = &named {
            self.user_outside_service(to)?;
        }
        self.expire_invites(now_ms);
        let invitee = from.to_bare();
        let named = named.map(|j| j.to_bare());
        let mine = |p: &PendingInvite| p.invitee == invitee;
        let pending = self
            .pending_invites
            .iter()
            .rposition(|p| mine(p) && Some(&p.inviter) == named.as_ref())
            .or_else(|| self.pending_invites.iter().rposition(mine));
        let Some(inviter) = pending
            .and_then(|i| self.pending_invites.remove(i))
            .map(|p| p.inviter)
        else {
            return Err(StanzaError::with_text(
                Condition::NotAcceptable,
                "no invitation of yours to this room is pending",
            ));
        };
        let mut msg = elem("message", NS_CLIENT, &[]);
        set_attr(&mut msg, "from", self.jid.to_string());
        set_attr(&mut msg, "to", inviter.to_string());
        let mut ux = Element::bare("x", NS_MUC_USER);
        let mut dl = elem("decline", NS_MUC_USER, &[("from", invitee.as_str())]);
        if let Some(r) = d.get_child("reason", NS_MUC_USER) {
            dl.append_child(text_elem("reason", NS_MUC_USER, &r.text()));
        }
        ux.append_child(dl);
        msg.append_child(ux);
        o.out.push(msg);
        Ok(())
    }

    /// A visitor's voice request goes to the moderators; a moderator's approval grants voice.
    fn voice_request(
        &mut self,
        from: &FullJid,
        form: &Form,
        o: &mut Outcome,
    ) -> Result<(), StanzaError> {
        let Some(nick) = self.sessions.get(from).cloned() else {
            return Err(StanzaError::new(Condition::NotAcceptable));
        };
        if form.kind == "submit" && form.value("muc#request_allow").is_some() {
            if self.role_of(from) != Role::Moderator {
                return Err(StanzaError::new(Condition::Forbidden));
            }
            if form.bool("muc#request_allow")? == Some(true) {
                let target = form
                    .value("muc#roomnick")
                    .ok_or(Condition::BadRequest)?
                    .to_owned();
                return self.set_role(from, &target, Role::Participant, None, o);
            }
            return Ok(());
        }
        let Some(occ) = self.occupants.get(&nick) else {
            return Ok(());
        };
        let real = occ
            .sessions
            .first()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let approval = FormBuilder::new("form", FORM_REQUEST)
            .title("Voice request")
            .field(
                "muc#role",
                "list-single",
                "Requested role",
                &["participant"],
            )
            .field("muc#jid", "jid-single", "User ID", &[&real])
            .field("muc#roomnick", "text-single", "Room Nickname", &[&nick])
            .field(
                "muc#request_allow",
                "boolean",
                "Grant voice to this person?",
                &["false"],
            )
            .build();
        let mods: Vec<&FullJid> = self
            .occupants
            .values()
            .filter(|x| x.role == Role::Moderator)
            .flat_map(|x| &x.sessions)
            .collect();
        for s in mods {
            let mut msg = elem("message", NS_CLIENT, &[]);
            set_attr(&mut msg, "from", self.jid.to_string());
            set_attr(&mut msg, "to", s.to_string());
            msg.append_child(approval.clone());
            o.out.push(msg);
        }
        Ok(())
    }

    // --- IQs --------------------------------------------------------------------------------

    fn on_iq(
        &mut self,
        from: &FullJid,
        nick: Option<String>,
        iq: &Element,
        o: &mut Outcome,
    ) -> Result<(), StanzaError> {
        let kind = iq.attr("type").unwrap_or("");
        if let Some(target) = nick {
            return self.iq_to_occupant(from, &target, iq, o);
        }
        if !matches!(kind, "get" | "set") {
            return Ok(());
        }
        let Some(payload) = iq.children().next() else {
            return Err(Condition::BadRequest.into());
        };
        let ns = payload.ns();
        let answer = match (ns.as_str(), kind) {
            (NS_DISCO_INFO, "get") => match payload.attr("node") {
                None => Some(self.disco_info()),
                Some(NODE_ROOMUSER) => Some(self.roomuser_item(&from.to_bare())),
                Some(_) => return Err(Condition::ItemNotFound.into()),
            },
            (NS_DISCO_ITEMS, "get") => Some(self.disco_items(from)),
            (stanza::NS_PING, "get") => None,
            (NS_MUC_ADMIN, "get") => Some(self.admin_get(from, payload)?),
            (NS_MUC_ADMIN, "set") => {
                self.admin_set(from, payload, o)?;
                None
            }
            (NS_REGISTER, "get") => Some(self.register_get(from)?),
            (NS_REGISTER, "set") => {
                self.register_set(from, payload, o)?;
                None
            }
            (NS_MUC_OWNER, "get") => Some(self.owner_get(from)?),
            (NS_MUC_OWNER, "set") => {
                self.owner_set(from, payload, o)?;
                None
            }
            _ => return Err(Condition::ServiceUnavailable.into()),
        };
        o.out.insert(0, iq_result(iq, answer));
        Ok(())
    }

    fn iq_to_occupant(
        &mut self,
        from: &FullJid,
        target: &str,
        iq: &Element,
        o: &mut Outcome,
    ) -> Result<(), StanzaError> {
        let kind = iq.attr("type").unwrap_or("");
        let sender = self.sessions.get(from).cloned();
        if matches!(kind, "result" | "error") {
            // An answer from an occupant to a request we forwarded on another occupant's behalf:
            // it goes to the session that asked, if it is still in the room.
            let sessions = self.occupants.get(target).map(|x| x.sessions.clone());
            if let (Some(sender), Some(sessions)) = (sender, sessions) {
                let id = iq.attr("id").unwrap_or("");
                let pending = self
                    .pending_iqs
                    .iter()
                    .position(|p| p.responder == sender && p.asker == target && p.id == id);
                let asked = pending
                    .and_then(|i| self.pending_iqs.remove(i))
                    .map(|p| p.session)
                    .filter(|s| sessions.contains(s));
                if let Some(s) = asked.as_ref().or(sessions.first()) {
                    let mut a = iq.clone();
                    set_attr(&mut a, "from", self.occupant_jid(&sender));
                    set_attr(&mut a, "to", s.to_string());
                    o.out.push(a);
                }
            }
            return Ok(());
        }
        let Some(sender) = sender else {
            return Err(StanzaError::with_text(
                Condition::NotAcceptable,
                "you are not in this room",
            ));
        };
        let is_ping = iq.get_child("ping", stanza::NS_PING).is_some();
        if is_ping && sender == target {
            // XEP-0410: the service answers a self-ping itself.
            o.out.push(iq_result(iq, None));
            return Ok(());
        }
        let Some(occ) = self.occupants.get(target) else {
            return Err(StanzaError::new(Condition::ItemNotFound));
        };
        // One request, one answer: the oldest session of the occupant gets it.
        if let Some(s) = occ.sessions.first() {
            let mut fwd = iq.clone();
            set_attr(&mut fwd, "from", self.occupant_jid(&sender));
            set_attr(&mut fwd, "to", s.to_string());
            o.out.push(fwd);
            if self.pending_iqs.len() >= MAX_PENDING_IQS {
                self.pending_iqs.pop_front();
            }
            self.pending_iqs.push_back(PendingIq {
                responder: target.to_owned(),
                asker: sender,
                session: from.clone(),
                id: iq.attr("id").unwrap_or("").to_owned(),
            });
        }
        Ok(())
    }

    /// The room's disco#info (XEP-0045 §6.4) with the `muc#roominfo` form.
    pub fn disco_info(&self) -> Element {
        let mut q = Element::bare("query", NS_DISCO_INFO);
        let name = if self.config.name.is_empty() {
            self.jid.node().map(|n| n.to_string()).unwrap_or_default()
        } else {
            self.config.name.clone()
        };
        q.append_child(elem(
            "identity",
            NS_DISCO_INFO,
            &[
                ("category", "conference"),
                ("type", "text"),
                ("name", &name),
            ],
        ));
        let c = &self.config;
        let pick = |b: bool, yes: &'static str, no: &'static str| if b { yes } else { no };
        let features = [
            NS_MUC,
            NS_DISCO_INFO,
            NS_DISCO_ITEMS,
            NS_REGISTER,
            stanza::NS_PING,
            FEATURE_SELF_PING,
            pick(c.persistent, "muc_persistent", "muc_temporary"),
            pick(c.public, "muc_public", "muc_hidden"),
            pick(c.members_only, "muc_membersonly", "muc_open"),
            pick(c.moderated, "muc_moderated", "muc_unmoderated"),
            pick(
                c.password.is_some(),
                "muc_passwordprotected",
                "muc_unsecured",
            ),
            pick(
                c.whois == Whois::Anyone,
                "muc_nonanonymous",
                "muc_semianonymous",
            ),
        ];
        for f in features {
            q.append_child(elem("feature", NS_DISCO_INFO, &[("var", f)]));
        }
        let count = self.occupants.len().to_string();
        q.append_child(
            FormBuilder::new("result", FORM_ROOMINFO)
                .field(
                    "muc#roominfo_description",
                    "",
                    "Description",
                    &[&c.description],
                )
                .field("muc#roominfo_subject", "", "Subject", &[&self.subject])
                .field("muc#roominfo_occupants", "", "Occupants", &[&count])
                .field("muc#roomconfig_roomname", "", "Name", &[&name])
                .build(),
        );
        q
    }

    /// Occupants, for occupants only (the list is not shown to outsiders).
    fn disco_items(&self, from: &FullJid) -> Element {
        let mut q = Element::bare("query", NS_DISCO_ITEMS);
        if self.sessions.contains_key(from) {
            for nick in self.occupants.keys() {
                q.append_child(elem(
                    "item",
                    NS_DISCO_ITEMS,
                    &[("jid", &self.occupant_jid(nick))],
                ));
            }
        }
        q
    }

    // --- administration ---------------------------------------------------------------------

    fn admin_get(&self, from: &FullJid, q: &Element) -> Result<Element, StanzaError> {
        let item = q
            .get_child("item", NS_MUC_ADMIN)
            .ok_or(Condition::BadRequest)?;
        let mut out = Element::bare("query", NS_MUC_ADMIN);
        let actor_aff = self.affiliation(&from.to_bare());
        if let Some(a) = item.attr("affiliation") {
            let wanted = Affiliation::parse(a).ok_or(Condition::BadRequest)?;
            if !self.may_list(actor_aff, wanted) {
                return Err(StanzaError::new(Condition::Forbidden));
            }
            let mut list: Vec<_> = self
                .affiliations
                .iter()
                .filter(|(_, i)| i.affiliation == wanted)
                .collect();
            list.sort_by(|a, b| a.0.cmp(b.0));
            for (jid, i) in list {
                let mut e = elem(
                    "item",
                    NS_MUC_ADMIN,
                    &[("affiliation", a), ("jid", jid.as_str())],
                );
                if let Some(n) = &i.nick {
                    set_attr(&mut e, "nick", n.as_str());
                }
                if let Some(r) = &i.reason {
                    e.append_child(text_elem("reason", NS_MUC_ADMIN, r));
                }
                out.append_child(e);
            }
        } else if let Some(r) = item.attr("role") {
            let wanted = Role::parse(r).ok_or(Condition::BadRequest)?;
            if self.role_of(from) != Role::Moderator {
                return Err(StanzaError::new(Condition::Forbidden));
            }
            for occ in self.occupants.values().filter(|x| x.role == wanted) {
                let mut e = elem(
                    "item",
                    NS_MUC_ADMIN,
                    &[
                        ("role", r),
                        ("nick", &occ.nick),
                        ("affiliation", self.affiliation(&occ.real).as_str()),
                    ],
                );
                if let Some(s) = occ.sessions.first() {
                    set_attr(&mut e, "jid", s.to_string());
                }
                out.append_child(e);
            }
        } else {
            return Err(Condition::BadRequest.into());
        }
        Ok(out)
    }

    /// Whether a user of affiliation `actor` may read the list of `wanted`. Admins and owners
    /// read every list. In a members-only room where everyone sees real JIDs, members read the
    /// member, admin and owner lists too: the room hides no JID from them, and clients that
    /// encrypt end-to-end (OMEMO) need every participant's JID, present or not. The outcast
    /// list stays with the admins.
    fn may_list(&self, actor: Affiliation, wanted: Affiliation) -> bool {
        actor >= Affiliation::Admin
            || (actor == Affiliation::Member
                && wanted >= Affiliation::Member
                && self.config.members_only
                && self.config.whois == Whois::Anyone)
    }

    fn admin_set(
        &mut self,
        from: &FullJid,
        q: &Element,
        o: &mut Outcome,
    ) -> Result<(), StanzaError> {
        let items: Vec<&Element> = q
            .children()
            .filter(|c| c.is("item", NS_MUC_ADMIN))
            .collect();
        if items.is_empty() {
            return Err(Condition::BadRequest.into());
        }
        for item in items {
            let reason = item.get_child("reason", NS_MUC_ADMIN).map(|r| r.text());
            if let Some(a) = item.attr("affiliation") {
                let aff = Affiliation::parse(a).ok_or(Condition::BadRequest)?;
                let target = match (item.attr("jid"), item.attr("nick")) {
                    (Some(j), _) => parse_jid(j)
                        .map(|j| j.to_bare())
                        .map_err(|_| Condition::JidMalformed)?,
                    (None, Some(n)) => self
                        .occupants
                        .get(n)
                        .map(|x| x.real.clone())
                        .ok_or(Condition::ItemNotFound)?,
                    (None, None) => return Err(Condition::BadRequest.into()),
                };
                let nick = item.attr("jid").and(item.attr("nick"));
                self.set_affiliation(from, target, aff, nick, reason.as_deref(), o)?;
            } else if let Some(r) = item.attr("role") {
                let role = Role::parse(r).ok_or(Condition::BadRequest)?;
                let nick = item.attr("nick").ok_or(Condition::BadRequest)?;
                self.set_role(from, nick, role, reason.as_deref(), o)?;
            } else {
                return Err(Condition::BadRequest.into());
            }
        }
        Ok(())
    }

    fn set_role(
        &mut self,
        actor: &FullJid,
        nick: &str,
        role: Role,
        reason: Option<&str>,
        o: &mut Outcome,
    ) -> Result<(), StanzaError> {
        let actor_aff = self.affiliation(&actor.to_bare());
        if self.role_of(actor) != Role::Moderator {
            return Err(StanzaError::new(Condition::Forbidden));
        }
        let Some(target) = self.occupants.get(nick) else {
            return Err(StanzaError::new(Condition::ItemNotFound));
        };
        let target_aff = self.affiliation(&target.real);
        // XEP-0045 §8.4, §9.7: nobody changes the role of an admin or owner, and only admins
        // and owners grant or revoke moderation.
        if target_aff >= Affiliation::Admin && target_aff >= actor_aff {
            return Err(StanzaError::new(Condition::NotAllowed));
        }
        // §8.2: nobody kicks an occupant of higher affiliation than their own. §8.5: nobody
        // revokes the voice of an admin or owner, nor of a member or above whose affiliation is
        // at or above their own (a member who moderates cannot silence another member).
        let protected = match role {
            Role::None => target_aff > actor_aff,
            Role::Visitor => {
                target_aff >= Affiliation::Admin
                    || (target_aff >= Affiliation::Member && target_aff >= actor_aff)
            }
            Role::Participant | Role::Moderator => false,
        };
        if protected {
            return Err(StanzaError::new(Condition::NotAllowed));
        }
        if (role == Role::Moderator || target.role == Role::Moderator)
            && actor_aff < Affiliation::Admin
        {
            return Err(StanzaError::new(Condition::NotAllowed));
        }
        let actor_nick = self.sessions.get(actor).cloned();
        let extra = Extra {
            actor: actor_nick.as_deref(),
            reason,
            ..Extra::default()
        };
        if role == Role::None {
            self.remove_occupant(nick, &extra, &[307], o);
            return Ok(());
        }
        let Some(t) = self.occupants.get_mut(nick) else {
            return Ok(());
        };
        t.role = role;
        let t = t.clone();
        self.broadcast(&t, false, &extra, &[], &[], o);
        Ok(())
    }

    fn set_affiliation(
        &mut self,
        actor: &FullJid,
        target: BareJid,
        aff: Affiliation,
        nick: Option<&str>,
        reason: Option<&str>,
        o: &mut Outcome,
    ) -> Result<(), StanzaError> {
        let actor_aff = self.affiliation(&actor.to_bare());
        let current = self.affiliation(&target);
        let needs_owner = aff >= Affiliation::Admin || current >= Affiliation::Admin;
        let needed = if needs_owner {
            Affiliation::Owner
        } else {
            Affiliation::Admin
        };
        if actor_aff < needed {
            return Err(StanzaError::new(if actor_aff >= Affiliation::Admin {
                Condition::NotAllowed
            } else {
                Condition::Forbidden
            }));
        }
        let owners = self
            .affiliations
            .values()
            .filter(|a| a.affiliation == Affiliation::Owner)
            .count();
        if current == Affiliation::Owner && aff != Affiliation::Owner && owners <= 1 {
            return Err(StanzaError::with_text(
                Condition::Conflict,
                "a room keeps at least one owner",
            ));
        }
        let nick = nick.map(|n| self.free_nick(n, &target)).transpose()?;
        let actor_nick = self.sessions.get(actor).cloned();
        let present = self.apply_affiliation(&target, aff, nick, reason, actor_nick.as_deref(), o);
        if !present && aff != current {
            // XEP-0045 §9: a user who is not in the room learns of the change by message (101).
            let mut msg = elem("message", NS_CLIENT, &[]);
            set_attr(&mut msg, "from", self.jid.to_string());
            set_attr(&mut msg, "to", target.to_string());
            let mut x = Element::bare("x", NS_MUC_USER);
            let mut item = elem(
                "item",
                NS_MUC_USER,
                &[("affiliation", aff.as_str()), ("jid", target.as_str())],
            );
            if let Some(r) = reason {
                item.append_child(text_elem("reason", NS_MUC_USER, r));
            }
            x.append_child(item);
            x.append_child(status(101));
            msg.append_child(x);
            o.out.push(msg);
        }
        Ok(())
    }

    /// `nick` normalised as an occupant JID's resource, if no other user holds or reserved it.
    fn free_nick(&self, nick: &str, real: &BareJid) -> Result<String, StanzaError> {
        let nick = FullJid::new(&self.occupant_jid(nick))
            .map_err(|_| Condition::JidMalformed)?
            .resource()
            .to_string();
        let in_use = self.occupants.get(&nick).is_some_and(|x| &x.real != real);
        if in_use || self.reserved_by_other(&nick, real) {
            return Err(StanzaError::with_text(
                Condition::Conflict,
                "that nickname is reserved or in use",
            ));
        }
        Ok(nick)
    }

    /// Records `target`'s affiliation (a reserved nick stays unless `nick` replaces it; it
    /// goes with the membership) and applies it to the user's occupant in the room: new role,
    /// or removal (301 banned, 321 no longer a member of a members-only room). Returns whether
    /// the user was in the room.
    fn apply_affiliation(
        &mut self,
        target: &BareJid,
        aff: Affiliation,
        nick: Option<String>,
        reason: Option<&str>,
        actor: Option<&str>,
        o: &mut Outcome,
    ) -> bool {
        let nick = nick.or_else(|| self.affiliations.get(target).and_then(|a| a.nick.clone()));
        if aff == Affiliation::None {
            self.affiliations.remove(target);
        } else {
            self.affiliations.insert(
                target.clone(),
                AffItem {
                    affiliation: aff,
                    nick: nick.filter(|_| aff >= Affiliation::Member),
                    reason: reason.map(str::to_owned),
                },
            );
        }
        o.changed = true;
        let present: Vec<String> = self
            .occupants
            .values()
            .filter(|x| &x.real == target)
            .map(|x| x.nick.clone())
            .collect();
        for n in &present {
            let extra = Extra {
                actor,
                reason,
                ..Extra::default()
            };
            if aff == Affiliation::Outcast {
                self.remove_occupant(n, &extra, &[301], o);
            } else if aff < Affiliation::Member && self.config.members_only {
                self.remove_occupant(n, &extra, &[321], o);
            } else {
                let role = self.default_role(aff);
                if let Some(occ) = self.occupants.get_mut(n) {
                    occ.role = role;
                    let occ = occ.clone();
                    self.broadcast(&occ, false, &extra, &[], &[], o);
                }
            }
        }
        !present.is_empty()
    }

    // --- registration (XEP-0045 §7.10, §7.12) -----------------------------------------------

    /// Whether `real` may register; its current affiliation if so.
    fn may_register(&self, real: &BareJid) -> Result<Affiliation, StanzaError> {
        let aff = self.affiliation(real);
        if aff == Affiliation::Outcast {
            return Err(StanzaError::with_text(
                Condition::Forbidden,
                "you are banned from this room",
            ));
        }
        if self.locked {
            return Err(StanzaError::with_text(
                Condition::ItemNotFound,
                "this room is not configured yet",
            ));
        }
        if aff < Affiliation::Member && self.config.members_only && !self.config.open_registration {
            return Err(StanzaError::with_text(
                Condition::NotAllowed,
                "only members may register with this room",
            ));
        }
        Ok(aff)
    }

    /// The registration form, or the user's registration (`<registered/>` and the nick).
    fn register_get(&self, from: &FullJid) -> Result<Element, StanzaError> {
        let real = from.to_bare();
        self.may_register(&real)?;
        let mut q = Element::bare("query", NS_REGISTER);
        if let Some(n) = self.reserved_nick(&real) {
            q.append_child(Element::bare("registered", NS_REGISTER));
            q.append_child(text_elem("username", NS_REGISTER, n));
            return Ok(q);
        }
        q.append_child(text_elem(
            "instructions",
            NS_REGISTER,
            "Choose the nickname to reserve in this room.",
        ));
        let mut form = FormBuilder::new("form", FORM_REGISTER)
            .title("Register with the room")
            .field("muc#register_roomnick", "text-single", "Nickname", &[])
            .build();
        if let Some(f) = form
            .children_mut()
            .find(|f| f.attr("var") == Some("muc#register_roomnick"))
        {
            f.append_child(Element::bare("required", crate::form::NS_DATA));
        }
        q.append_child(form);
        Ok(q)
    }

    /// A submitted registration makes the user a member (higher affiliations stay) with the
    /// nick reserved; `<remove/>` cancels it (a member is no longer one).
    fn register_set(
        &mut self,
        from: &FullJid,
        q: &Element,
        o: &mut Outcome,
    ) -> Result<(), StanzaError> {
        let real = from.to_bare();
        let aff = self.may_register(&real)?;
        if q.get_child("remove", NS_REGISTER).is_some() {
            if aff == Affiliation::Member {
                self.apply_affiliation(&real, Affiliation::None, None, None, None, o);
            } else if let Some(a) = self.affiliations.get_mut(&real) {
                a.nick = None;
                o.changed = true;
            }
            return Ok(());
        }
        let form = data_form(q)?;
        match form.kind.as_str() {
            "cancel" => return Ok(()),
            "submit" => {}
            _ => return Err(Condition::BadRequest.into()),
        }
        if form.form_type().is_some_and(|t| t != FORM_REGISTER) {
            return Err(Condition::BadRequest.into());
        }
        let nick = form
            .value("muc#register_roomnick")
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                StanzaError::with_text(
                    Condition::NotAcceptable,
                    "muc#register_roomnick is required",
                )
            })?;
        let nick = self.free_nick(nick, &real)?;
        let aff = aff.max(Affiliation::Member);
        self.apply_affiliation(&real, aff, Some(nick), None, None, o);
        Ok(())
    }

    /// XEP-0045 §7.12: the nick the asker reserved, as an identity (none: no identity).
    fn roomuser_item(&self, real: &BareJid) -> Element {
        let mut q = elem("query", NS_DISCO_INFO, &[("node", NODE_ROOMUSER)]);
        if let Some(n) = self.reserved_nick(real) {
            q.append_child(elem(
                "identity",
                NS_DISCO_INFO,
                &[("category", "conference"), ("name", n), ("type", "text")],
            ));
        }
        q
    }

    fn owner_get(&self, from: &FullJid) -> Result<Element, StanzaError> {
        if self.affiliation(&from.to_bare()) != Affiliation::Owner {
            return Err(StanzaError::new(Condition::Forbidden));
        }
        let mut q = Element::bare("query", NS_MUC_OWNER);
        q.append_child(self.config.to_form("form", self.limits.max_occupants));
        Ok(q)
    }

    fn owner_set(
        &mut self,
        from: &FullJid,
        q: &Element,
        o: &mut Outcome,
    ) -> Result<(), StanzaError> {
        if self.affiliation(&from.to_bare()) != Affiliation::Owner {
            return Err(StanzaError::new(Condition::Forbidden));
        }
        if let Some(d) = q.get_child("destroy", NS_MUC_OWNER) {
            self.destroy(d, o);
            return Ok(());
        }
        let form = data_form(q)?;
        match form.kind.as_str() {
            "cancel" => {
                if self.locked {
                    // XEP-0045 §10.1.3: cancelling the initial configuration destroys the room.
                    self.destroy(&Element::bare("destroy", NS_MUC_OWNER), o);
                }
                Ok(())
            }
            "submit" => {
                let new =
                    self.config
                        .apply(&form, self.limits.max_occupants, self.limits.max_history)?;
                self.reconfigure(new, o);
                Ok(())
            }
            _ => Err(Condition::BadRequest.into()),
        }
    }

    fn reconfigure(&mut self, new: RoomConfig, o: &mut Outcome) {
        let old = std::mem::replace(&mut self.config, new);
        let was_locked = std::mem::replace(&mut self.locked, false);
        o.changed = true;
        if was_locked {
            return;
        }
        let mut codes = vec![104];
        if old.whois != self.config.whois {
            codes.push(if self.config.whois == Whois::Anyone {
                172
            } else {
                173
            });
        }
        if old.archived != self.config.archived {
            codes.push(if self.config.archived { 170 } else { 171 });
        }
        let mut msg = elem("message", NS_CLIENT, &[("type", "groupchat")]);
        set_attr(&mut msg, "from", self.jid.to_string());
        let mut x = Element::bare("x", NS_MUC_USER);
        for c in codes {
            x.append_child(status(c));
        }
        msg.append_child(x);
        self.to_all(msg, o);
        if self.config.members_only && !old.members_only {
            let outsiders: Vec<String> = self
                .occupants
                .values()
                .filter(|x| self.affiliation(&x.real) < Affiliation::Member)
                .map(|x| x.nick.clone())
                .collect();
            for n in outsiders {
                self.remove_occupant(&n, &Extra::default(), &[322], o);
            }
        }
    }

    fn destroy(&mut self, d: &Element, o: &mut Outcome) {
        let mut notice = Element::bare("destroy", NS_MUC_USER);
        if let Some(alt) = d.attr("jid") {
            set_attr(&mut notice, "jid", alt);
        }
        if let Some(r) = d.get_child("reason", NS_MUC_OWNER) {
            notice.append_child(text_elem("reason", NS_MUC_USER, &r.text()));
        }
        let nicks: Vec<String> = self.occupants.keys().cloned().collect();
        for n in nicks {
            let extra = Extra {
                destroy: Some(notice.clone()),
                affiliation: Some(Affiliation::None),
                ..Extra::default()
            };
            if let Some(mut occ) = self.occupants.remove(&n) {
                occ.role = Role::None;
                occ.presence = Element::bare("presence", NS_CLIENT);
                for s in &occ.sessions {
                    self.sessions.remove(s);
                    let mut el = self.presence_for(&occ, s, true, &extra, &[]);
                    add_status(&mut el, 110);
                    o.out.push(el);
                }
                // The others hear it too, while they are still listed.
                for other in self.occupants.values() {
                    for s in &other.sessions {
                        o.out.push(self.presence_for(&occ, s, true, &extra, &[]));
                    }
                }
            }
        }
        self.config.persistent = false;
        o.changed = true;
        o.destroyed = true;
    }
}

/// The data form inside a query; `<bad-request/>` without one.
fn data_form(q: &Element) -> Result<Form, StanzaError> {
    q.get_child("x", crate::form::NS_DATA)
        .and_then(Form::parse)
        .ok_or_else(|| Condition::BadRequest.into())
}

/// Whether an error stanza's condition shows its sender's session is gone or unreachable (the
/// conditions XEP-0045 §18.1 lists as reasons to remove an occupant).
fn is_unreachable(st: &Element) -> bool {
    const GONE: [Condition; 9] = [
        Condition::Gone,
        Condition::ItemNotFound,
        Condition::RecipientUnavailable,
        Condition::Redirect,
        Condition::RemoteServerNotFound,
        Condition::RemoteServerTimeout,
        Condition::ServiceUnavailable,
        Condition::JidMalformed,
        Condition::InternalServerError,
    ];
    st.get_child("error", NS_CLIENT)
        .into_iter()
        .flat_map(|e| e.children())
        .any(|c| c.ns() == stanza::NS_STANZAS && GONE.iter().any(|g| c.name() == g.as_str()))
}

/// The parts of an occupant's presence that are broadcast: everything but MUC payloads.
fn presence_payload(p: &Element) -> Element {
    let mut out = Element::bare("presence", NS_CLIENT);
    for c in p.children() {
        if !(c.is("x", NS_MUC) || c.is("x", NS_MUC_USER)) {
            out.append_child(c.clone());
        }
    }
    out
}

fn status(code: u16) -> Element {
    elem("status", NS_MUC_USER, &[("code", &code.to_string())])
}

/// Adds a status code to the `<x xmlns=muc#user/>` of a presence built by `presence_for`.
fn add_status(p: &mut Element, code: u16) {
    if let Some(x) = p.get_child_mut("x", NS_MUC_USER) {
        x.append_child(status(code));
    }
}

#[cfg(test)]
mod tests;
