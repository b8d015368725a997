//! xmppd's multi-user chat service (XEP-0045), a [`xmppd_core::module::Component`] owning a
//! subdomain such as `conference.example.org`.
//!
//! - [`room::Room`]: one room as a sans-I/O state machine (presence, messages, admin and owner
//!   IQs in, stanzas out), tested without sockets.
//! - [`form`]: the data forms it speaks, and [`form::RoomConfig`] with its `muc#roomconfig` form.
//! - [`archive`]: discussion history and the [`archive::RoomArchive`] hook a XEP-0313 service
//!   implements (`xmppd_mam::RoomArchives`); [`archive::MemoryArchive`] is the built-in
//!   default.
//! - [`occupant_id`]: XEP-0421 occupant ids, an HMAC of room and real JID under the service's
//!   stored secret.
//! - [`service::MucService`]: the component: room registry, creation rules, persistence of
//!   persistent rooms through [`xmppd_storage::RoomStore`] (SQLite keeps them as its own `muc`
//!   schema, versioned in `xmppd_schemas`), routing.
//!
//! Deliberately not here: sockets, SQL, the configuration file (the binary maps `[muc]` onto
//! [`service::MucSettings`]), and durable archiving itself (the archive service plugs in).

pub mod archive;
pub mod form;
pub mod occupant_id;
pub mod room;
pub mod service;

pub use archive::{
    HistoryEntry, HistoryQuery, IqAnswer, MemoryArchive, Moderation, RetractRequest, RoomArchive,
    Stored,
};
pub use occupant_id::OccupantIds;
pub use room::{Affiliation, OccupantInfo, Role, Room, RoomLimits};
pub use service::{
    CreateRoomError, Creation, LeaseSettings, MucService, MucSettings, NewRoom, RoomInfo,
};

/// An element as XML text (for storage and size accounting).
/// An address the server stamped or routed (`from`, `to` of what reaches a room): one check
/// when it is in canonical form, as those are (see `xmppd_core::address::parse_jid`).
pub(crate) fn address(s: &str) -> Option<jid::Jid> {
    xmppd_core::address::parse_jid(s).ok()
}

/// [`address`] of a full JID.
pub(crate) fn full_address(s: &str) -> Option<jid::FullJid> {
    address(s)?.try_into_full().ok()
}

pub(crate) fn to_xml(el: &minidom::Element) -> String {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail for I/O reasons; an element that cannot be written is empty.
    if el.write_to(&mut out).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}
