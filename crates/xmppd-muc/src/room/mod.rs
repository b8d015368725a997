//! One chat room as a state machine: [`Room::handle`] takes a stanza addressed to the room or
//! one of its occupants and returns an [`Outcome`]: the stanzas to send, and what the service
//! must do next (fetch history, archive a message, save or delete the room).
//!
//! No I/O, no clock, no locking here: the service's task for the room owns it, passes the time
//! in, and routes what comes out. Every stanza from a peer ends either in its effect or in a
//! stanza error for that peer; nothing here panics on input.
//!
//! Occupants joined from several sessions of one user are one occupant to the others
//! (§7.2.9): messages to the occupant JID reach every session, an IQ request reaches the
//! oldest session only (an IQ has exactly one answer), and the answer goes back to the very
//! session that asked.
//!
//! This file holds the room's state, its storage record and [`Room::handle`], which passes
//! each stanza to the file of its XEP-0045 use case; each file has its tests at its end:
//!
//! | file | XEP-0045 |
//! |---|---|
//! | `presence.rs` | entering (§7.2), nick and presence changes (§7.6, §7.7), exiting, occupants gone (§18.1) |
//! | `message.rs` | groupchat (§7.4), private messages (§7.5), the subject (§8.1), the rate limit |
//! | `invite.rs` | mediated invitations and declines (§7.8.2) |
//! | `moderation.rs` | roles (§8): kick, voice, voice requests (§7.13, §8.6), moderators (§9.6–9.7) |
//! | `admin.rs` | affiliations and their lists: bans, members, admins, owners (§9, §10.3–10.8) |
//! | `register.rs` | registration and reserved nicks (§7.10, §7.12) |
//! | `config.rs` | initial and later configuration (§10.1, §10.2), destruction (§10.9) |
//! | `iq.rs` | disco (§6.4, §6.5), self-ping, IQs between occupants (§7.2.9) |
//!
//! History is kept and served outside the room (`crate::archive`): the room reads what a new
//! occupant asks for when it enters (`Outcome::history_for`) and hands over each message to
//! keep (`Outcome::archive`).
//!
//! Not done here: room-level privacy lists, presence broadcast filtering by role, admin
//! approval of registrations (a registration is accepted or refused at once).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use jid::{BareJid, FullJid};
use minidom::Element;
use xmppd_core::address::Bare;
use xmppd_core::stanza::{self, elem, error_reply, Condition, StanzaError};
use xmppd_storage::{RoomAffiliation, StoredRoom};

use crate::archive::{HistoryEntry, HistoryQuery, RetractRequest};
use crate::form::{Form, RoomConfig};

mod admin;
mod config;
mod invite;
mod iq;
mod message;
mod moderation;
mod presence;
mod register;

use invite::PendingInvite;
use iq::PendingIq;

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
pub const FEATURE_SELF_PING: &str = "http://jabber.org/protocol/muc#self-ping-optimization";
pub const NS_REGISTER: &str = "jabber:iq:register";

/// The disco#info node that tells a user its reserved nick (XEP-0045 §7.12).
pub const NODE_ROOMUSER: &str = "x-roomuser-item";
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
    /// Which of `broadcasts` carries the message in `archive`.
    archived_broadcast: Option<usize>,
    /// A retraction the archive must apply (and may refuse) before the message goes out.
    pub retract: Option<RetractRequest>,
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
    /// Adds `child` to the broadcast of the archived message (its `<stanza-id/>`, XEP-0359
    /// §3). Called before the outcome is routed, while the broadcast is the only holder of its
    /// element, so nothing is copied.
    pub fn add_to_archived(&mut self, child: Element) {
        let Some(b) = (self.archived_broadcast).and_then(|i| self.broadcasts.get_mut(i)) else {
            return;
        };
        Arc::make_mut(&mut b.stanza).append_child(child);
    }

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

/// An occupant as the server's administrators see it ([`Room::occupants`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OccupantInfo {
    pub nick: String,
    pub real: BareJid,
    /// Its sessions joined under the nick, oldest first.
    pub sessions: Vec<FullJid>,
    pub role: Role,
    pub affiliation: Affiliation,
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
    /// Its XEP-0421 id, when the service gives them.
    occupant_id: Option<String>,
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
    /// The disco#info features the archive adds while the room's archiving is on (XEP-0313
    /// §7, XEP-0359 §5); none when the service keeps no durable archive.
    pub archive_features: &'static [&'static str],
    /// XEP-0421: the ids the room gives its occupants on their messages and presence; none
    /// when the service gives none.
    pub occupant_ids: Option<crate::OccupantIds>,
    /// Set once the room is gone, for whoever still holds a handle to it.
    pub gone: bool,
}

impl Room {
    /// The nick of the occupant session `from`; `<not-acceptable/>` for a session that is not
    /// in the room (XEP-0045 §7.4, §7.5, §7.8.2).
    fn occupant_nick(&self, from: &FullJid) -> Result<&str, StanzaError> {
        self.sessions.get(from).map(String::as_str).ok_or_else(|| {
            StanzaError::with_text(Condition::NotAcceptable, "you are not in this room")
        })
    }

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
            archive_features: &[],
            occupant_ids: None,
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

    /// Who is in the room, by nick, with real JIDs whatever the room's anonymity (for the
    /// server's administrators).
    pub fn occupants(&self) -> Vec<OccupantInfo> {
        (self.occupants.values())
            .map(|o| OccupantInfo {
                nick: o.nick.clone(),
                real: o.real.clone(),
                sessions: o.sessions.clone(),
                role: o.role,
                affiliation: self.affiliation(&o.real),
            })
            .collect()
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

    /// Whether `from` may read the room's archive, and if so whether it sees the senders' real
    /// JIDs. XEP-0313 §5.2 / XEP-0045 §7.2: whoever may enter may read: nobody banned; only
    /// members (admins, owners) in a members-only room, and only owners while it is locked;
    /// in a password-protected room, occupants and affiliated users (the password is not
    /// part of a query). Real JIDs (XEP-0045 §7.2.3, §7.2.4): to everyone in a non-anonymous
    /// room, else to moderators only (occupants with that role, and admins and owners, who
    /// have it whenever they are in).
    pub fn archive_reader(&self, from: &FullJid) -> Result<bool, StanzaError> {
        let user = from.bare();
        let aff = self.affiliation(&user);
        let occupant = self.occupants.values().find(|o| o.real == user);
        let may = match aff {
            Affiliation::Outcast => false,
            Affiliation::Owner => true,
            _ if self.locked => false,
            Affiliation::Admin | Affiliation::Member => true,
            Affiliation::None => {
                occupant.is_some() || !(self.config.members_only || self.config.password.is_some())
            }
        };
        if !may {
            return Err(StanzaError::with_text(
                Condition::Forbidden,
                "you may not read this room's archive",
            ));
        }
        let moderator =
            aff >= Affiliation::Admin || occupant.is_some_and(|o| o.role == Role::Moderator);
        Ok(self.config.whois == crate::form::Whois::Anyone || moderator)
    }

    /// Handles a stanza whose `to` is the room or an occupant, at `now_ms`.
    pub fn handle(&mut self, st: &Element, now_ms: i64) -> Outcome {
        let mut o = Outcome::default();
        let Some(from) = st.attr("from").and_then(crate::full_address) else {
            // Only sessions (full JIDs) talk to rooms; anything else has no one to answer.
            return o;
        };
        let to = st.attr("to").and_then(crate::address);
        let nick = to
            .as_ref()
            .and_then(|t| t.resource())
            .map(|r| r.to_string());
        let result = match st.name() {
            "presence" => self.on_presence(&from, nick, st, &mut o, now_ms),
            "message" => self.on_message(&from, nick, st, &mut o, now_ms),
            "iq" => self.on_iq(&from, nick, st, &mut o, now_ms),
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
}

/// The data form inside a query; `<bad-request/>` without one.
fn data_form(q: &Element) -> Result<Form, StanzaError> {
    q.get_child("x", crate::form::NS_DATA)
        .and_then(Form::parse)
        .ok_or_else(|| Condition::BadRequest.into())
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
mod fixtures;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::fixtures::*;

    #[test]
    fn persistent_rooms_round_trip_through_storage() {
        let mut room = configured(
            &(field("muc#roomconfig_persistentroom", "1")
                + &field("muc#roomconfig_roomname", "Lounge")),
            0,
        );
        room.handle(
            &st(&format!(
            "<iq xmlns='jabber:client' type='set' id='m' from='alice@example.org/a' to='{ROOM}'>\
             <query xmlns='{NS_MUC_ADMIN}'>\
             <item affiliation='outcast' jid='eve@example.org'/></query></iq>"
        )),
            0,
        );
        room.handle(
            &st(&format!(
                "<message xmlns='jabber:client' type='groupchat' from='alice@example.org/a' \
             to='{ROOM}'><subject>Topic</subject></message>"
            )),
            0,
        );
        let stored = room.snapshot();
        let mut back = Room::restore(room.jid.clone(), &stored, limits(0)).unwrap();
        assert_eq!(back.config, room.config);
        assert_eq!(back.subject, "Topic");
        assert_eq!(
            back.affiliation(&BareJid::new("eve@example.org").unwrap()),
            Affiliation::Outcast
        );
        assert!(back.is_owner(&BareJid::new("alice@example.org").unwrap()));
        let o = join(&mut back, "eve@example.org/e", "eve");
        assert_eq!(error_of(&o).as_deref(), Some("forbidden"));
    }

    #[test]
    fn who_reads_the_archive_and_who_sees_real_jids() {
        let reader = |room: &Room, who: &str| {
            room.archive_reader(&FullJid::new(who).unwrap())
                .map_err(|e| e.condition)
        };
        let forbidden = Err(Condition::Forbidden);
        // An open, semi-anonymous room: anyone not banned reads; only moderators see real JIDs.
        let mut room = configured("", 0);
        join(&mut room, "bob@example.org/b", "bob");
        admin_set(
            &mut room,
            "<item affiliation='outcast' jid='eve@example.org'/>",
        );
        assert_eq!(reader(&room, "alice@example.org/other"), Ok(true), "owner");
        assert_eq!(reader(&room, "bob@example.org/b"), Ok(false), "participant");
        assert_eq!(reader(&room, "carol@example.org/c"), Ok(false), "may join");
        assert_eq!(reader(&room, "eve@example.org/e"), forbidden, "banned");
        admin_set(&mut room, "<item role='moderator' nick='bob'/>");
        assert_eq!(
            reader(&room, "bob@example.org/phone"),
            Ok(true),
            "moderator"
        );

        // Members-only: members and occupants; outsiders are refused.
        let mut room = configured(
            &(field("muc#roomconfig_membersonly", "1") + &field("muc#roomconfig_whois", "anyone")),
            0,
        );
        admin_set(
            &mut room,
            "<item affiliation='member' jid='bob@example.org'/>",
        );
        assert_eq!(
            reader(&room, "bob@example.org/b"),
            Ok(true),
            "non-anonymous"
        );
        assert_eq!(reader(&room, "carol@example.org/c"), forbidden);

        // Password-protected: the password is not part of a query, so occupants only.
        let mut room = configured(
            &(field("muc#roomconfig_passwordprotectedroom", "1")
                + &field("muc#roomconfig_roomsecret", "pw")),
            0,
        );
        assert_eq!(reader(&room, "carol@example.org/c"), forbidden);
        room.handle(
            &st(&format!(
                "<presence xmlns='jabber:client' from='carol@example.org/c' to='{ROOM}/carol'>\
                 <x xmlns='{NS_MUC}'><password>pw</password></x></presence>"
            )),
            0,
        );
        assert_eq!(reader(&room, "carol@example.org/c"), Ok(false));

        // Locked: its owner only.
        let room = Room::create(
            BareJid::new(ROOM).unwrap(),
            BareJid::new("alice@example.org").unwrap(),
            limits(0),
        );
        assert_eq!(reader(&room, "alice@example.org/a"), Ok(true));
        assert_eq!(reader(&room, "bob@example.org/b"), forbidden);
    }

    #[test]
    fn an_archived_room_advertises_its_archive() {
        const FEATURES: &[&str] = &["urn:xmpp:mam:2", "urn:xmpp:sid:0"];
        let features = |room: &Room| -> Vec<String> {
            let q = room.disco_info();
            (q.children().filter(|c| c.is("feature", NS_DISCO_INFO)))
                .filter_map(|c| c.attr("var").map(str::to_owned))
                .collect()
        };
        let mut room = configured(&field("muc#roomconfig_enablearchiving", "1"), 0);
        assert!(
            !features(&room).contains(&"urn:xmpp:mam:2".to_owned()),
            "memory only"
        );
        room.archive_features = FEATURES;
        let f = features(&room);
        assert!(FEATURES.iter().all(|x| f.contains(&x.to_string())), "{f:?}");
        let mut room = configured("", 0);
        room.archive_features = FEATURES;
        assert!(
            !features(&room).contains(&"urn:xmpp:mam:2".to_owned()),
            "not archived"
        );
    }

    #[test]
    fn malformed_stanzas_get_errors_not_panics() {
        let mut room = configured("", 0);
        for xml in [
            format!("<iq xmlns='jabber:client' type='get' id='1' from='x@y/z' to='{ROOM}'/>"),
            format!(
                "<iq xmlns='jabber:client' type='set' id='2' from='alice@example.org/a' \
             to='{ROOM}'><query xmlns='{NS_MUC_ADMIN}'><item role='bogus' nick='al'/></query></iq>"
            ),
            format!(
                "<iq xmlns='jabber:client' type='set' id='3' from='alice@example.org/a' \
             to='{ROOM}'><query xmlns='{NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>\
             <field var='muc#roomconfig_maxusers'><value>lots</value></field></x></query></iq>"
            ),
            format!("<presence xmlns='jabber:client' from='x@y/z' to='{ROOM}'/>"),
            format!(
                "<message xmlns='jabber:client' from='x@y/z' to='{ROOM}'><body>?</body></message>"
            ),
            format!(
                "<message xmlns='jabber:client' from='alice@example.org/a' to='{ROOM}'>\
             <x xmlns='{NS_MUC_USER}'><invite to='@@@'/></x></message>"
            ),
        ] {
            let o = room.handle(&st(&xml), 0);
            assert!(error_of(&o).is_some(), "{xml}");
        }
        // No sender: nobody to answer, nothing happens.
        assert!(room
            .handle(&st("<message xmlns='jabber:client'/>"), 0)
            .out
            .is_empty());
        assert_eq!(room.occupant_count(), 1);
    }

    #[test]
    fn broadcasts_keep_their_place_among_the_other_stanzas() {
        let el = |id: &str| st(&format!("<message xmlns='jabber:client' id='{id}'/>"));
        let shared = |id: &str, at: usize| Broadcast {
            at,
            stanza: Arc::new(el(id)),
            to: vec![FullJid::new("a@example.org/r").unwrap()],
        };
        let mut o = Outcome {
            out: vec![el("1"), el("3")],
            broadcasts: vec![shared("0", 0), shared("2", 1), shared("4", 2)],
            ..Outcome::default()
        };
        let ids: Vec<_> = (o.take_sends().iter())
            .map(|s| match s {
                Send::One(e) => e.attr("id").unwrap().to_owned(),
                Send::Shared(e, _) => e.attr("id").unwrap().to_owned(),
            })
            .collect();
        assert_eq!(ids, ["0", "1", "2", "3", "4"]);
    }
}
