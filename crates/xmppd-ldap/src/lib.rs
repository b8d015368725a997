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
//!
//! Deliberately not here: writing to the directory (accounts are created, changed and removed
//! there, not through XMPP), SASL binds to the directory, and referral chasing.

mod backend;
mod directory;
mod pool;

use std::path::PathBuf;
use std::time::Duration;

pub use backend::{LdapBackend, SCRAM_CACHE_KEY_PREFIX};
pub use directory::{escape_filter_value, Directory, COUNT_LIMIT};

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
    /// The attribute holding the user name (the JID's local part), e.g. `uid`.
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
