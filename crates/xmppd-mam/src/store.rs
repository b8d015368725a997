//! What the archive keeps and how it is asked: [`ArchiveStore`], behind which SQLite
//! ([`crate::SqliteArchive`]) is the first engine. The protocol layer (`query`, `module`) sees
//! only this trait, so a server-class SQL backend implements the same calls.

use async_trait::async_trait;
use xmppd_storage::{Queued, StorageError};

/// Whether the archive's owner received or sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Incoming,
    Outgoing,
}

impl Direction {
    pub(crate) fn as_i64(self) -> i64 {
        match self {
            Direction::Incoming => 0,
            Direction::Outgoing => 1,
        }
    }

    pub(crate) fn from_i64(v: i64) -> Direction {
        if v == 1 {
            Direction::Outgoing
        } else {
            Direction::Incoming
        }
    }
}

/// A message to archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The archive's JID: an account's bare JID (a room's, later).
    pub owner: String,
    /// The other party's bare JID.
    pub with_bare: String,
    /// The other party's resource, empty when it had none.
    pub with_resource: String,
    pub direction: Direction,
    /// The stanza as XML, `jabber:client`.
    pub stanza: String,
    /// The text the full-text index searches (the body), if any.
    pub text: Option<String>,
}

/// An archived message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    pub id: i64,
    /// Unix milliseconds when it was archived; never decreasing along ids.
    pub stamp_ms: i64,
    pub direction: Direction,
    pub stanza: String,
}

/// `with` filter (XEP-0313 §4.1.1): a bare JID matches every resource of it, a full JID only
/// itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct With {
    pub bare: String,
    pub resource: Option<String>,
}

/// The filters of a query (XEP-0313 §4.1 and the `#extended` fields), all optional, all
/// combined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub with: Option<With>,
    /// Archived at or after this Unix millisecond.
    pub start_ms: Option<i64>,
    /// Archived at or before this Unix millisecond.
    pub end_ms: Option<i64>,
    /// Strictly after this archive id (`after-id`).
    pub after_id: Option<i64>,
    /// Strictly before this archive id (`before-id`).
    pub before_id: Option<i64>,
    /// Only these ids (`ids`).
    pub ids: Option<Vec<i64>>,
    /// Every whitespace-separated term of it occurs in the body (XEP-0431).
    pub fulltext: Option<String>,
}

/// Which page of the filtered set (XEP-0059).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paging {
    /// The first `max` items after `after` (from the start when `None`).
    Forward { after: Option<i64> },
    /// The last `max` items before `before` (the latest page when `None`: an empty
    /// `<before/>`).
    Backward { before: Option<i64> },
}

/// One query: filters, the page and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub filter: Filter,
    pub paging: Paging,
    pub max: usize,
}

/// A page, oldest first, and whether it reaches the end of the set in the paging direction
/// (XEP-0313 §4.3 `<fin complete='true'/>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<Archived>,
    pub complete: bool,
}

/// The archive-wide default of XEP-0313 §6 / XEP-0441.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultPolicy {
    Always,
    Roster,
    Never,
}

impl DefaultPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::Always => "always",
            DefaultPolicy::Roster => "roster",
            DefaultPolicy::Never => "never",
        }
    }

    pub fn parse(s: &str) -> Option<DefaultPolicy> {
        match s {
            "always" => Some(DefaultPolicy::Always),
            "roster" => Some(DefaultPolicy::Roster),
            "never" => Some(DefaultPolicy::Never),
            _ => None,
        }
    }
}

/// An owner's archiving preferences: bare JIDs always or never archived, and the default for
/// the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefs {
    pub default: DefaultPolicy,
    pub always: Vec<String>,
    pub never: Vec<String>,
}

impl Prefs {
    /// The preferences of an owner who never set any.
    pub fn with_default(default: DefaultPolicy) -> Prefs {
        Prefs {
            default,
            always: Vec::new(),
            never: Vec::new(),
        }
    }
}

/// A JID list of [`Prefs`] as stored: one JID a line.
pub(crate) fn join_jids(jids: &[String]) -> String {
    jids.join("\n")
}

/// A JID list of [`Prefs`] as [`join_jids`] stored it.
pub(crate) fn split_jids(s: &str) -> Vec<String> {
    s.split('\n')
        .filter(|j| !j.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Why a query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An id the query names (RSM `after`/`before`, `after-id`, `before-id`, `ids`) is not in
    /// this archive: `<item-not-found/>` (XEP-0313 §4.1.2, §5.1.3).
    #[error("unknown archive id")]
    UnknownId,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A test on an archived stanza's XML, run where the rows are read.
pub type Matcher = Box<dyn Fn(&str) -> bool + Send>;

/// The archive's storage.
#[async_trait]
pub trait ArchiveStore: Send + Sync {
    /// Stores `msgs` durably, all or none, in one transaction (the sender's and the recipient's
    /// copy of one message); resolves to their ids and stamps, in order. The ids grow in that
    /// order and the stamps are equal. The write is queued before this returns, in order with
    /// every other write to the store, so a caller (a room's task) may go on and await the
    /// commit later.
    fn append_all(&self, msgs: Vec<NewMessage>) -> Queued<Vec<(i64, i64)>>;

    /// Stores `msg` durably; returns its id and stamp.
    async fn append(&self, msg: NewMessage) -> Result<(i64, i64), StorageError> {
        let mut got = self.append_all(vec![msg]).await?;
        got.pop()
            .ok_or_else(|| StorageError::Backend("archive append returned no id".into()))
    }

    /// A page of `owner`'s archive.
    async fn query(&self, owner: &str, req: PageRequest) -> Result<Page, ArchiveError>;

    /// The first and the last message of `owner`'s archive (id, stamp), none when empty.
    async fn bounds(&self, owner: &str) -> Result<Option<((i64, i64), (i64, i64))>, StorageError>;

    /// `owner`'s stored preferences, none when never set.
    async fn prefs(&self, owner: &str) -> Result<Option<Prefs>, StorageError>;

    async fn set_prefs(&self, owner: &str, prefs: &Prefs) -> Result<(), StorageError>;

    /// Deletes `owner`'s archive and preferences; returns how many messages went.
    async fn remove_owner(&self, owner: &str) -> Result<u64, StorageError>;

    /// Deletes at most `limit` of the oldest messages archived before `before_ms`, in one
    /// transaction; returns how many went.
    async fn purge_older(&self, before_ms: i64, limit: usize) -> Result<usize, StorageError>;

    /// Deletes at most `limit` of the oldest messages of `owner`'s archive archived before
    /// `before_ms`, in one transaction; returns how many went. Preferences stay.
    async fn purge_owner(
        &self,
        owner: &str,
        before_ms: i64,
        limit: usize,
    ) -> Result<usize, StorageError>;

    /// The newest message of `owner`'s archive exchanged with `with_bare` in `direction` whose
    /// stanza contains `needle` and satisfies `names` (id and stanza); none when there is none.
    /// What a retraction names (XEP-0424) is looked for this way.
    async fn find_latest(
        &self,
        owner: &str,
        with_bare: &str,
        direction: Direction,
        needle: &str,
        names: Matcher,
    ) -> Result<Option<(i64, String)>, StorageError>;

    /// Replaces the stanza of message `id` of `owner`'s archive, keeping its id and stamp, and
    /// takes it out of the full-text index (a tombstone has no body to find); whether it was
    /// there.
    async fn replace_stanza(
        &self,
        owner: &str,
        id: i64,
        stanza: String,
    ) -> Result<bool, StorageError>;

    /// While the archive holds more than `max_bytes` of stanzas, deletes at most `limit` of the
    /// oldest messages (of any owner), in one transaction; returns how many went.
    async fn trim_to_bytes(&self, max_bytes: u64, limit: usize) -> Result<usize, StorageError>;

    /// Bytes of stanza XML the archive holds.
    async fn total_bytes(&self) -> Result<u64, StorageError>;
}

/// The opaque string form of an archive id (XEP-0359 `stanza-id/@id`, RSM UIDs). Clients
/// compare it for equality only.
pub fn encode_id(id: i64) -> String {
    id.to_string()
}

/// An id in the form [`encode_id`] gives; `None` for anything else (then unknown).
pub fn decode_id(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 18 {
        return None;
    }
    s.parse().ok()
}
