//! Storage for xmppd: one async trait per concern, and [`sqlite::SqliteStore`] implementing them
//! all.
//!
//! The traits speak plain data (user names, domains, serialized XML as `String`), never XMPP
//! rules: deciding *what* to store is the core's job, storing it durably is this crate's.
//! Every write that returns `Ok` has been committed (the SQLite store acknowledges after the
//! transaction that holds it is committed with `synchronous=FULL`), so a caller may acknowledge
//! a stanza to its sender once the call returns.
//!
//! The SQLite engine is behind the `sqlite` feature: crates that only need the traits do not
//! compile SQLite. A service crate adds tables of its own with a [`Schema`] and
//! `SqliteStore::extend`, without editing this crate.
//!
//! Architecture invariant: no XMPP types, no network, no tokio runtime requirement: the SQLite
//! store runs its own writer and reader threads and answers through `tokio::sync::oneshot`
//! channels, which any executor can await.

#[cfg(feature = "sqlite")]
pub mod sqlite;

use async_trait::async_trait;

#[cfg(feature = "sqlite")]
mod extend;
#[cfg(all(feature = "sqlite", any(feature = "postgres", feature = "mysql")))]
pub mod migrate;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod remote;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod versions;
#[cfg(feature = "mysql")]
pub use mysql::{MysqlSettings, MysqlStore};
#[cfg(feature = "postgres")]
pub use postgres::{PgSettings, PgStore};
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub use remote::{redact_url, DbSettings};
#[cfg(feature = "sqlite")]
pub use sqlite::{create_private_dir_all, Deferred, SqliteStore, ROOMS_SCHEMA};

/// The tables of one service: `migrations[i]` takes the schema from version `i` to `i + 1`.
/// Never edit a released entry; append. Each engine has its own SQL, so a service declares
/// one `Schema` per engine it supports (same name).
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// Unique per service, e.g. `"mam"`; prefix its tables with it.
    pub name: &'static str,
    pub migrations: &'static [&'static str],
}

/// Errors of any storage backend.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The account to create already exists.
    #[error("user already exists")]
    AlreadyExists,
    /// The account to change does not exist.
    #[error("no such user")]
    NoSuchUser,
    /// The account to create was removed recently and its name is kept until `until_ms`
    /// (Unix milliseconds), so nobody takes over what its contacts knew it by.
    #[error("the name was in use until recently")]
    Tombstoned { until_ms: i64 },
    /// A room write made under a lease that is no longer the room's (another process took the
    /// room over, or this one's lease lapsed and was granted anew): nothing was written.
    #[error("the room's lease is no longer held")]
    LeaseLost,
    /// The backend failed (I/O, SQL, corruption); the message is for logs.
    #[error("storage backend: {0}")]
    Backend(String),
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// A write already queued for the storage engine, in order with every write queued before it;
/// it resolves once the write is committed (durable) or failed. See [`RoomStore::save_room`].
pub type Queued<T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send>>;

/// One account: its localpart and domain. Both are already normalised (nodeprep/nameprep) by
/// the caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserRef {
    pub user: String,
    pub domain: String,
}

impl UserRef {
    pub fn new(user: impl Into<String>, domain: impl Into<String>) -> Self {
        UserRef {
            user: user.into(),
            domain: domain.into(),
        }
    }

    /// The account's bare JID as text (`user@domain`), as roster items and room affiliations
    /// of others name it.
    pub fn jid(&self) -> String {
        format!("{}@{}", self.user, self.domain)
    }
}

/// SCRAM salted credentials for one hash function, as stored. Never a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredScram {
    /// "SHA-1", "SHA-256" or "SHA-512".
    pub hash: String,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// Creates an account with its SCRAM credentials (one entry per hash). `AlreadyExists` if
    /// present, `Tombstoned` while the name is kept after a removal. Anything a previous
    /// account of that name left behind (written by its last sessions after the removal) is
    /// cleared first: the new account starts empty.
    async fn create_user(&self, user: &UserRef, creds: &[StoredScram]) -> Result<()>;
    /// Replaces all SCRAM credentials of an existing account. `NoSuchUser` if absent.
    async fn set_credentials(&self, user: &UserRef, creds: &[StoredScram]) -> Result<()>;
    /// Removes the account, everything stored for it, and its footprint in other accounts'
    /// data, in one transaction. `NoSuchUser` if absent.
    ///
    /// - Its credentials, roster, pending requests, offline messages and user data go. Its
    ///   roster version counter stays (and is bumped), so a roster cached by a client of the
    ///   old account never matches a version of a new account of the same name.
    /// - Every other account's roster item for it is reset to subscription `none`, without
    ///   `ask` or pre-approval (both directions of the subscription are cancelled), and that
    ///   account's roster version is bumped.
    /// - Subscription requests from it waiting for an answer are dropped.
    /// - Its chat room affiliations (and nicks reserved with them) are removed.
    /// - With `tombstone_until_ms`, the name cannot be created again before that time.
    ///
    /// Returns what changed for others, so that a running server can tell them.
    async fn remove_account(
        &self,
        user: &UserRef,
        tombstone_until_ms: Option<i64>,
    ) -> Result<AccountRemoval>;
    /// Until when (Unix milliseconds) the name of a removed account is kept, if it still is.
    async fn tombstone(&self, user: &UserRef) -> Result<Option<i64>>;
    /// Lets the name be registered again at once (an administrator's decision).
    async fn clear_tombstone(&self, user: &UserRef) -> Result<()>;
    async fn user_exists(&self, user: &UserRef) -> Result<bool>;
    /// The credentials for `hash` ("SHA-1", "SHA-256", "SHA-512"), if the user and entry exist.
    async fn credentials(&self, user: &UserRef, hash: &str) -> Result<Option<StoredScram>>;
    /// Users of `domain`, sorted by name.
    async fn list_users(&self, domain: &str) -> Result<Vec<String>>;
}

/// What [`CredentialStore::remove_account`] changed besides the removed account's own data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountRemoval {
    /// The removed account's roster as it was.
    pub roster: Vec<RosterItem>,
    /// The other accounts whose roster had an item for the removed one: each item as it was
    /// (it is now `none`, without `ask` or pre-approval).
    pub contacts: Vec<(UserRef, RosterItem)>,
    /// The accounts whose pending subscription request from the removed one was dropped.
    pub requests_dropped: Vec<UserRef>,
    /// The chat rooms (service domain, room name) where it had an affiliation, sorted.
    pub rooms: Vec<(String, String)>,
}

/// A roster subscription state (RFC 6121 §2.1.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Subscription {
    #[default]
    None,
    To,
    From,
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Subscription::None,
            "to" => Subscription::To,
            "from" => Subscription::From,
            "both" => Subscription::Both,
            _ => return None,
        })
    }
}

/// One roster entry of a user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RosterItem {
    /// The contact's bare JID, normalised.
    pub jid: String,
    pub name: Option<String>,
    pub subscription: Subscription,
    /// Outbound subscription request pending (`ask='subscribe'`).
    pub ask: bool,
    /// The user pre-approved the contact's subscription (RFC 6121 §3.4).
    pub approved: bool,
    pub groups: Vec<String>,
}

#[async_trait]
pub trait RosterStore: Send + Sync {
    /// The roster version (a counter, bumped by every change) and all items.
    async fn roster(&self, user: &UserRef) -> Result<(u64, Vec<RosterItem>)>;
    async fn roster_item(&self, user: &UserRef, contact: &str) -> Result<Option<RosterItem>>;
    /// Inserts or replaces the item; returns the new roster version.
    async fn set_roster_item(&self, user: &UserRef, item: &RosterItem) -> Result<u64>;
    /// Removes the item if present; returns the new roster version (unchanged if absent).
    async fn remove_roster_item(&self, user: &UserRef, contact: &str) -> Result<u64>;
    /// The number of items, without reading them (for the roster size limit).
    async fn roster_len(&self, user: &UserRef) -> Result<usize>;
    /// Moves the roster to its next version without changing a stored item: for changes of
    /// items kept elsewhere (shared groups) that are pushed to clients (RFC 6121 §2.6), so each
    /// push carries a version of its own. Returns the new version.
    async fn bump_roster_version(&self, user: &UserRef) -> Result<u64>;

    /// Stores an inbound subscription request (the `<presence type='subscribe'/>` XML) until the
    /// user answers; replaces an earlier request from the same contact.
    async fn add_pending_subscription(
        &self,
        user: &UserRef,
        contact: &str,
        stanza_xml: &str,
    ) -> Result<()>;
    async fn remove_pending_subscription(&self, user: &UserRef, contact: &str) -> Result<()>;
    /// Pending inbound subscription requests: (contact, stanza XML).
    async fn pending_subscriptions(&self, user: &UserRef) -> Result<Vec<(String, String)>>;
}

/// A stored offline message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineMessage {
    pub id: i64,
    /// Unix time in milliseconds when the server accepted it.
    pub stamp_ms: i64,
    /// The `<message/>` as XML.
    pub xml: String,
}

#[async_trait]
pub trait OfflineStore: Send + Sync {
    /// Stores `xml` for `user` unless the user already has `max` messages; returns whether it was
    /// stored.
    /// The message is durable when this returns `Ok(true)`.
    async fn push_offline(
        &self,
        user: &UserRef,
        stamp_ms: i64,
        xml: &str,
        max: usize,
    ) -> Result<bool>;
    /// All stored messages, oldest first (not removed).
    async fn offline_messages(&self, user: &UserRef) -> Result<Vec<OfflineMessage>>;
    /// Stored messages with ids above `after_id`, oldest first (not removed): at most
    /// `max_count`, and no more than `max_bytes` of XML unless the first alone is larger.
    async fn offline_page(
        &self,
        user: &UserRef,
        after_id: i64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<OfflineMessage>>;
    /// Removes and returns the oldest stored messages, bounded like [`OfflineStore::offline_page`],
    /// in one atomic step: when several processes share the database and take from the same
    /// account at once, each message goes to exactly one of them.
    async fn take_offline(
        &self,
        user: &UserRef,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<OfflineMessage>>;
    /// Removes the messages with ids up to and including `up_to_id`, after they were delivered.
    async fn remove_offline(&self, user: &UserRef, up_to_id: i64) -> Result<()>;
    /// Replaces the XML of stored message `id`, keeping its place and stamp (a retraction
    /// turning the copy into a tombstone); whether it was still stored.
    async fn replace_offline(&self, user: &UserRef, id: i64, xml: &str) -> Result<bool>;
    async fn offline_count(&self, user: &UserRef) -> Result<usize>;
}

/// Small per-user documents keyed by a namespace-like key: private XML storage (XEP-0049),
/// vCards, last activity (XEP-0012) and what later modules need.
#[async_trait]
pub trait UserDataStore: Send + Sync {
    async fn get_data(&self, user: &UserRef, key: &str) -> Result<Option<String>>;
    async fn set_data(&self, user: &UserRef, key: &str, value: &str) -> Result<()>;
    async fn remove_data(&self, user: &UserRef, key: &str) -> Result<()>;
}

/// Live sessions as seen by every process sharing the database, so the CLI (`xmppd sessions`)
/// can list who is connected to a running server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub jid: String,
    /// Peer address as text; empty when the server hides IP addresses.
    pub peer: String,
    pub node: String,
    pub started_ms: i64,
    /// The client's SASL2 user agent (XEP-0388 §2.3.1) as "id software device", or empty.
    pub user_agent: String,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn session_opened(&self, rec: &SessionRecord) -> Result<()>;
    async fn session_closed(&self, jid: &str) -> Result<()>;
    /// Removes every record of `node` (at start-up, after a crash).
    async fn clear_sessions(&self, node: &str) -> Result<()>;
    async fn sessions(&self) -> Result<Vec<SessionRecord>>;
}

/// One affiliation of a multi-user chat room, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomAffiliation {
    /// The affiliated bare JID, normalised.
    pub jid: String,
    /// "owner", "admin", "member" or "outcast" (the room service defines the values).
    pub affiliation: String,
    /// A nickname reserved for this JID, if any.
    pub nick: Option<String>,
    pub reason: Option<String>,
}

/// A persistent multi-user chat room: what must survive a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoom {
    /// The chat service's domain (`conference.example.org`).
    pub domain: String,
    /// The room's localpart, normalised.
    pub name: String,
    /// The room configuration, serialized by the room service (opaque here).
    pub config: String,
    /// The current subject, serialized by the room service (opaque here).
    pub subject: String,
    /// Sorted by JID when read back.
    pub affiliations: Vec<RoomAffiliation>,
}

/// What [`RoomStore::lease_room`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomLease {
    /// The caller hosts the room for the lease's time from (at the latest) when it made the
    /// call. `epoch` is the fencing token of its writes ([`LeaseToken`]): it is the same for
    /// a renewal and grows whenever the room changes hands or a lease lapsed.
    Granted { epoch: i64 },
    /// Another process hosts the room, for `remaining_ms` more unless it renews.
    Held { node: String, remaining_ms: i64 },
}

/// The lease a room's writes are made under: [`RoomStore::save_leased_room`] writes only while
/// the room's lease still has this holder and epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseToken {
    pub node: String,
    pub epoch: i64,
}

/// Persistent chat rooms (XEP-0045): configuration, subject and affiliations per room; and,
/// when several processes share the database, which one hosts each room (its lease).
///
/// Leases: a room is hosted by one process at a time, the holder of its lease. A lease lasts
/// `ttl_ms` on the database's clock from when it was granted or renewed; a process that stops
/// renewing (crashed, cut off) loses it when it expires, and another may take the room then.
/// The holder must stop hosting before its lease ends as measured from when it asked (so
/// before the database could grant it to another), and its writes carry a [`LeaseToken`]
/// that the store checks in the write's transaction: a write of a former holder is refused
/// with [`StorageError::LeaseLost`], never applied over the new holder's.
#[async_trait]
pub trait RoomStore: Send + Sync {
    /// Inserts or replaces the room with everything in it (its affiliation list included).
    /// Queued before it returns, in order with the writes queued before and after it (a room's
    /// archived messages, say): a room's task queues its state and goes on with its next
    /// stanza, and awaits the commit only before it sends what depends on it.
    fn save_room(&self, room: &StoredRoom) -> Queued<()>;
    /// Removes the room and its affiliations; absent rooms are not an error. Queued before it
    /// returns, like [`RoomStore::save_room`].
    fn delete_room(&self, domain: &str, name: &str) -> Queued<()>;
    async fn room(&self, domain: &str, name: &str) -> Result<Option<StoredRoom>>;
    /// Every stored room of the service `domain`, sorted by name.
    async fn rooms(&self, domain: &str) -> Result<Vec<StoredRoom>>;

    /// [`RoomStore::save_room`], only while `lease` is still the room's lease (else
    /// [`StorageError::LeaseLost`] and nothing written).
    fn save_leased_room(&self, room: &StoredRoom, lease: &LeaseToken) -> Queued<()>;
    /// [`RoomStore::delete_room`], only while `lease` is still the room's lease.
    fn delete_leased_room(&self, domain: &str, name: &str, lease: &LeaseToken) -> Queued<()>;
    /// Takes the room's lease for `node` for `ttl_ms` if it is free, expired or already
    /// `node`'s (then it is renewed, same epoch); else says who holds it.
    async fn lease_room(
        &self,
        domain: &str,
        name: &str,
        node: &str,
        ttl_ms: i64,
    ) -> Result<RoomLease>;
    /// Renews every unexpired lease of `node` for `ttl_ms`; returns those rooms (service
    /// domain, name), sorted. A room of `node` missing from the answer is no longer its.
    async fn renew_room_leases(&self, node: &str, ttl_ms: i64) -> Result<Vec<(String, String)>>;
    /// Gives up `node`'s lease of the room (it stopped hosting it): another process may take
    /// it at once. A room that is not stored leaves no trace.
    async fn release_room(&self, domain: &str, name: &str, node: &str) -> Result<()>;
    /// Gives up every lease of `node` (at shutdown).
    async fn release_room_leases(&self, node: &str) -> Result<()>;
}

/// How a lease request changes the lease row of a room (shared by the engines, each of which
/// reads the row under a lock first): `Ok((epoch, expires_ms))` to write, or who holds it.
/// `current` is (node, epoch, expires_ms) as stored; `now_ms` is the database's clock.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) fn next_lease(
    current: Option<(&str, i64, i64)>,
    node: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> std::result::Result<(i64, i64), RoomLease> {
    let expires = now_ms.saturating_add(ttl_ms.max(1));
    match current {
        None => Ok((1, expires)),
        Some((holder, epoch, until)) if until > now_ms => match holder == node {
            true => Ok((epoch, expires)),
            false => Err(RoomLease::Held {
                node: holder.to_owned(),
                remaining_ms: until - now_ms,
            }),
        },
        // Lapsed (or released): whoever takes it, the holder it had may not write any more.
        Some((_, epoch, _)) => Ok((epoch + 1, expires)),
    }
}

/// Everything the core needs, in one handle.
pub trait Store:
    CredentialStore + RosterStore + OfflineStore + UserDataStore + SessionStore
{
}
impl<T: CredentialStore + RosterStore + OfflineStore + UserDataStore + SessionStore> Store for T {}
