//! LDAP for xmppd: an [`AuthBackend`](xmppd_auth::AuthBackend) that checks passwords against
//! a directory, and group lookups for administrators and shared roster groups.
//!
//! - [`Directory`]: a small pool of connections to one LDAP server (plain, `ldaps://` or
//!   StartTLS, with the server certificate verified against a configured CA), bound as a
//!   service account. It finds a user with a search (the configured filter, the user name
//!   escaped per RFC 4515), checks a password by binding as the entry found, and reads group
//!   members. Every operation is bounded by the configured timeout.
//! - [`LdapBackend`]: the authentication backend. Every login searches the directory first, so
//!   a user removed from it can no longer log in. An LDAP bind can only check a password, so
//!   only PLAIN works — unless the optional SCRAM cache keeps the salted keys derived at the
//!   user's last successful PLAIN login (see `docs/LDAP.md` for the trade-off).
//! - [`Directory::group_members`] reads a group (the binary turns it into a shared roster
//!   group source: this crate knows no feature module), and [`Directory::spawn_group_watch`]
//!   keeps the administrators' group current.
//! - [`Directory::count_users`] counts the entries matching the user filter, up to
//!   [`COUNT_LIMIT`] (the administrators' user count of LDAP hosts).
//! - Active Directory's ways are followed: searches that can return many entries are paged
//!   (RFC 2696), a large `member` attribute is read in ranges, groups within groups are
//!   resolved (in-chain matching rule or recursive reads), a group that is a user's primary
//!   group (`primaryGroupID`) counts that user as a member, and a refused bind's reason
//!   (AD's `data 52e`, `533`, `775`…) is logged.
//!
//! Deliberately not here: writing to the directory (accounts are created, changed and removed
//! there, not through XMPP), SASL binds to the directory, and referral chasing.

mod backend;
mod directory;
mod pool;

use std::path::PathBuf;
use std::time::Duration;

pub use backend::{LdapBackend, SCRAM_CACHE_KEY_PREFIX};
pub use directory::{escape_filter_value, Directory, COUNT_LIMIT, MAX_NESTING_DEPTH};

/// How the connection to the LDAP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain LDAP: passwords cross the network in clear. For loopback or tests only.
    None,
    /// `ldap://` upgraded with the StartTLS extended operation before anything is sent.
    StartTls,
    /// TLS from the first byte (`ldaps://`).
    Ldaps,
}

/// Everything needed to reach and query one directory.
#[derive(Debug, Clone)]
pub struct LdapConfig {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub uri: String,
    /// The service account searches run as; empty for anonymous searches.
    pub bind_dn: String,
    pub bind_password: String,
    /// Where users are searched (subtree).
    pub base: String,
    /// A filter in which `%u` stands for the escaped user name.
    pub user_filter: String,
    /// The attribute holding the user name (the JID's local part), e.g. `uid`; a value with
    /// an `@` (a `userPrincipalName`) counts up to the `@`.
    pub uid_attribute: String,
    /// The attribute of a group entry listing its members: member DNs (`member`,
    /// `uniqueMember`) or user names (`memberUid`).
    pub group_member_attribute: String,
    pub tls: TlsMode,
    /// PEM file with the CA(s) the server certificate must chain to; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    /// Connections kept open at most (and operations in flight at most).
    pub pool_size: usize,
    /// Bound on connecting, on each operation, and on waiting for a free connection.
    pub timeout: Duration,
    /// Entries asked for per page of a search that can return many (RFC 2696).
    pub page_size: u32,
    /// Values of the member attribute asked for per request (`member;range=0-N`); `None`:
    /// ask for the whole attribute and follow the ranges the directory chooses to send.
    pub range_size: Option<u32>,
    /// How groups within groups are resolved.
    pub nesting: Nesting,
    /// Suffixes a PLAIN user name may carry after an `@` (userPrincipalName suffixes, e.g.
    /// `corp.example`), lowercase; the account is named by what comes before.
    pub upn_suffixes: Vec<String>,
}

/// How members that are groups themselves are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nesting {
    /// The in-chain rule where the directory is Active Directory (its root DSE says so) and
    /// members are DNs, recursive expansion elsewhere.
    Auto,
    /// One search with the in-chain matching rule (`1.2.840.113556.1.4.1941`), which Active
    /// Directory and Samba evaluate on the server.
    InChain,
    /// Group entries are read one by one, with cycle detection and a depth limit.
    Recursive,
}

/// Why the directory could not answer. Wrong passwords and unknown users are not errors.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    #[error("LDAP: {0}")]
    Protocol(#[from] ldap3::LdapError),
    #[error("LDAP: no answer within {0:?}")]
    Timeout(Duration),
    #[error("LDAP configuration: {0}")]
    Config(String),
}
