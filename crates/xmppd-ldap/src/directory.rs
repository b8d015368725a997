//! The directory client: user lookups, password checks by binding, group members.
//!
//! Each operation leases a pooled connection and runs under the configured timeout. A reused
//! connection that turns out dead (the server restarted since) is replaced once and the
//! operation retried, so a directory that comes back is used again at once. An operation that
//! times out drops its lease: the pool slot is free again and the connection, in an unknown
//! state, is closed (dropping the last handle ends ldap3's connection task).
//!
//! Entries are decoded here ([`parse_entry`]), never with a decoder that panics on malformed
//! input: a directory's answer can skip an entry but cannot crash anything.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jid::BareJid;
use ldap3::asn1::{StructureTag, TagClass, PL};
use ldap3::{ResultEntry, Scope, SearchOptions};

use crate::pool::{Conn, Lease, Pool};
use crate::{LdapConfig, LdapError};

/// Result codes of a bind that mean "these credentials do not get in" rather than an outage:
/// inappropriateAuthentication, invalidCredentials, insufficientAccessRights, unwillingToPerform.
const BIND_REJECTED: [u32; 4] = [48, 49, 50, 53];
/// noSuchObject: a group that was deleted has no members.
const NO_SUCH_OBJECT: u32 = 32;
/// sizeLimitExceeded: the entries returned are only the first ones.
const SIZE_LIMIT_EXCEEDED: u32 = 4;

/// The answer to a password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    Accepted,
    WrongPassword,
    /// No entry matches the user filter (never existed, or removed from the directory).
    UnknownUser,
}

/// One LDAP server, reached through a small connection pool.
pub struct Directory {
    pool: Arc<Pool>,
}

impl Directory {
    /// Checks the TLS settings and reads the CA file; connects only when first used.
    pub fn new(cfg: LdapConfig) -> Result<Arc<Directory>, LdapError> {
        if !cfg.user_filter.contains("%u") {
            return Err(LdapError::Config("user_filter must contain %u".into()));
        }
        let pool = Pool::new(Arc::new(cfg))?;
        Ok(Arc::new(Directory {
            pool: Arc::new(pool),
        }))
    }

    fn cfg(&self) -> &LdapConfig {
        self.pool.config()
    }

    /// The DN of the user called `name`, if exactly one entry matches the user filter.
    pub async fn find_user(&self, name: &str) -> Result<Option<String>, LdapError> {
        let cfg = self.cfg();
        self.run(|mut lease| async move {
            let found = search_user(&mut lease.conn, cfg, name).await;
            (lease, found)
        })
        .await
    }

    /// Finds `name`, then binds as that entry with `password`. An empty password is refused
    /// without asking: LDAP treats a bind with one as anonymous, which would succeed.
    pub async fn check_password(&self, name: &str, password: &str) -> Result<Login, LdapError> {
        if password.is_empty() {
            return Ok(Login::WrongPassword);
        }
        let cfg = self.cfg();
        self.run(|mut lease| async move {
            let outcome = match search_user(&mut lease.conn, cfg, name).await {
                Ok(Some(dn)) => user_bind(&mut lease.conn, &dn, password).await,
                Ok(None) => Ok(Login::UnknownUser),
                Err(e) => Err(e),
            };
            (lease, outcome)
        })
        .await
    }

    /// How many entries match the user filter (`%u` as `*`), counting at most `limit`. The
    /// flag says the count stopped at a size limit, ours or the directory's, so the true
    /// number may be higher.
    pub async fn count_users(&self, limit: usize) -> Result<(usize, bool), LdapError> {
        let cfg = self.cfg();
        self.run(|mut lease| async move {
            let counted = count_entries(&mut lease.conn, cfg, limit).await;
            (lease, counted)
        })
        .await
    }

    /// The user names in the group `group_dn` (members that are not users are left out).
    pub async fn group_member_names(&self, group_dn: &str) -> Result<Vec<String>, LdapError> {
        let cfg = self.cfg();
        self.run(|mut lease| async move {
            let names = read_group(&mut lease.conn, cfg, group_dn).await;
            (lease, names)
        })
        .await
    }

    /// The members of `group_dn` as JIDs on each of `hosts`.
    pub async fn group_members(
        &self,
        group_dn: &str,
        hosts: &[String],
    ) -> Result<Vec<BareJid>, LdapError> {
        let names = self.group_member_names(group_dn).await?;
        Ok(names_to_jids(&names, hosts))
    }

    /// Reads `group_dn` now and then every `period`, handing each membership read to
    /// `on_change`; a failed read is logged and the previous membership stays in force.
    pub fn spawn_group_watch<F>(
        self: &Arc<Self>,
        group_dn: String,
        hosts: Vec<String>,
        period: Duration,
        on_change: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Fn(HashSet<BareJid>) + Send + Sync + 'static,
    {
        let dir = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match dir.group_members(&group_dn, &hosts).await {
                    Ok(members) => on_change(members.into_iter().collect()),
                    Err(e) => tracing::warn!(group = %group_dn, error = %e, "group not refreshed"),
                }
                tokio::time::sleep(period).await;
            }
        })
    }

    /// Runs `op` on a leased connection under the timeout; a dead reused connection is
    /// replaced and `op` run once more.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, LdapError>
    where
        F: Fn(Lease) -> Fut,
        Fut: Future<Output = (Lease, Result<T, ldap3::LdapError>)>,
    {
        let timeout = self.cfg().timeout;
        let lease = self.pool.get().await?;
        let reused = lease.reused;
        let (lease, outcome) = tokio::time::timeout(timeout, op(lease))
            .await
            .map_err(|_| LdapError::Timeout(timeout))?;
        let (lease, outcome) = match outcome {
            Err(e) if reused && is_connection_failure(&e) => {
                tracing::debug!(error = %e, "pooled LDAP connection dead; reconnecting");
                let lease = self.pool.reconnect(lease).await?;
                tokio::time::timeout(timeout, op(lease))
                    .await
                    .map_err(|_| LdapError::Timeout(timeout))?
            }
            other => (lease, other),
        };
        // On error the lease is dropped, closing a connection in an unknown state.
        let value = outcome?;
        lease.release();
        Ok(value)
    }
}

/// Entries counted at most for `get-registered-users-num`: enough for a count, small enough
/// that the answer stays quick and light.
pub const COUNT_LIMIT: usize = 10_000;

/// Escapes a value for use inside an LDAP search filter (RFC 4515 §3): `*`, `(`, `)`, `\` and
/// NUL must be written as `\XX`; other control characters are escaped too, so that a user
/// name can never change the structure of the configured filter.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '*' | '(' | ')' | '\\') || c.is_ascii_control() {
            let _ = write!(out, "\\{:02x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

fn names_to_jids(names: &[String], hosts: &[String]) -> Vec<BareJid> {
    let mut out = Vec::with_capacity(names.len() * hosts.len());
    for name in names {
        for host in hosts {
            match BareJid::new(&format!("{}@{host}", name.to_lowercase())) {
                Ok(jid) => out.push(jid),
                Err(e) => tracing::debug!(name, error = %e, "group member is not a valid JID"),
            }
        }
    }
    out
}

/// Errors that say the connection is gone, not that the server refused something.
fn is_connection_failure(e: &ldap3::LdapError) -> bool {
    !matches!(e, ldap3::LdapError::LdapResult { .. })
}

/// Binds as the service account unless the connection already is.
async fn service_bind(conn: &mut Conn, cfg: &LdapConfig) -> Result<(), ldap3::LdapError> {
    if conn.service_bound {
        return Ok(());
    }
    // With no bind DN configured this is an anonymous bind, which also undoes a user bind.
    conn.ldap
        .simple_bind(&cfg.bind_dn, &cfg.bind_password)
        .await?
        .success()?;
    conn.service_bound = true;
    Ok(())
}

async fn search_user(
    conn: &mut Conn,
    cfg: &LdapConfig,
    name: &str,
) -> Result<Option<String>, ldap3::LdapError> {
    service_bind(conn, cfg).await?;
    let filter = cfg.user_filter.replace("%u", &escape_filter_value(name));
    // "1.1": no attributes, only the DN (RFC 4511 §4.5.1.8).
    let (entries, _) = conn
        .ldap
        .search(&cfg.base, Scope::Subtree, &filter, vec!["1.1"])
        .await?
        .success()?;
    let dns: Vec<String> = entries
        .into_iter()
        .filter_map(|e| parse_entry(e).map(|e| e.dn))
        .collect();
    match dns.len() {
        0 => Ok(None),
        1 => Ok(dns.into_iter().next()),
        n => {
            // Logging in as whichever entry came first would be a guess; refuse instead.
            tracing::warn!(
                user = name,
                entries = n,
                "user filter matches several entries"
            );
            Ok(None)
        }
    }
}

async fn count_entries(
    conn: &mut Conn,
    cfg: &LdapConfig,
    limit: usize,
) -> Result<(usize, bool), ldap3::LdapError> {
    service_bind(conn, cfg).await?;
    let filter = cfg.user_filter.replace("%u", "*");
    let sizelimit = i32::try_from(limit).unwrap_or(i32::MAX);
    let found = conn
        .ldap
        .with_search_options(SearchOptions::new().sizelimit(sizelimit))
        .search(&cfg.base, Scope::Subtree, &filter, vec!["1.1"])
        .await?;
    let truncated = found.1.rc == SIZE_LIMIT_EXCEEDED;
    let entries = if truncated {
        found.0
    } else {
        found.success()?.0
    };
    let count = entries.into_iter().filter_map(parse_entry).count();
    Ok((count.min(limit), truncated || count > limit))
}

async fn user_bind(conn: &mut Conn, dn: &str, password: &str) -> Result<Login, ldap3::LdapError> {
    conn.service_bound = false;
    let result = conn.ldap.simple_bind(dn, password).await?;
    if result.rc == 0 {
        return Ok(Login::Accepted);
    }
    if BIND_REJECTED.contains(&result.rc) {
        return Ok(Login::WrongPassword);
    }
    result.success().map(|_| Login::WrongPassword)
}

async fn read_group(
    conn: &mut Conn,
    cfg: &LdapConfig,
    group_dn: &str,
) -> Result<Vec<String>, ldap3::LdapError> {
    service_bind(conn, cfg).await?;
    let attr = cfg.group_member_attribute.as_str();
    let found = conn
        .ldap
        .search(group_dn, Scope::Base, "(objectClass=*)", vec![attr])
        .await?;
    if found.1.rc == NO_SUCH_OBJECT {
        return Ok(Vec::new());
    }
    let (entries, _) = found.success()?;
    let values: Vec<String> = entries
        .into_iter()
        .filter_map(parse_entry)
        .flat_map(|e| attribute(e, attr))
        .collect();
    // Only entries that pass the user filter are users; "%u" as "*" makes it a presence test.
    let user_filter = cfg.user_filter.replace("%u", "*");
    let mut names = Vec::with_capacity(values.len());
    for value in values {
        if !value.contains('=') {
            names.push(value); // memberUid-style: already a user name
            continue;
        }
        let found = conn
            .ldap
            .search(
                &value,
                Scope::Base,
                &user_filter,
                vec![cfg.uid_attribute.as_str()],
            )
            .await?;
        if found.1.rc == NO_SUCH_OBJECT {
            continue; // a dangling member reference
        }
        let (entries, _) = found.success()?;
        names.extend(
            entries
                .into_iter()
                .filter_map(parse_entry)
                .flat_map(|e| attribute(e, &cfg.uid_attribute))
                .take(1),
        );
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The values of `name` (attribute names are case-insensitive).
fn attribute(entry: Entry, name: &str) -> Vec<String> {
    entry
        .attrs
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// A search result entry: its DN and the attributes whose values are all UTF-8.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    dn: String,
    attrs: Vec<(String, Vec<String>)>,
}

/// A search result entry, or `None` for referrals and for entries that are not well formed.
///
/// The entry is read here rather than with ldap3's `SearchEntry::construct`, which panics on
/// a malformed entry: a directory's answer must never take a task down.
fn parse_entry(entry: ResultEntry) -> Option<Entry> {
    // SearchResultEntry is [APPLICATION 4] (RFC 4511 §4.5.2).
    if entry.0.id != 4 || entry.0.class != TagClass::Application {
        return None;
    }
    let mut parts = constructed(entry.0)?.into_iter();
    let dn = utf8(parts.next()?)?;
    let mut attrs = Vec::new();
    for attr in constructed(parts.next()?)? {
        let mut attr = constructed(attr)?.into_iter();
        let name = utf8(attr.next()?)?;
        let values: Option<Vec<String>> =
            constructed(attr.next()?)?.into_iter().map(utf8).collect();
        // Binary values (a photo, a certificate) are never needed here: leave them out.
        if let Some(values) = values {
            attrs.push((name, values));
        }
    }
    Some(Entry { dn, attrs })
}

fn constructed(tag: StructureTag) -> Option<Vec<StructureTag>> {
    match tag.payload {
        PL::C(children) => Some(children),
        PL::P(_) => None,
    }
}

fn utf8(tag: StructureTag) -> Option<String> {
    match tag.payload {
        PL::P(bytes) => String::from_utf8(bytes).ok(),
        PL::C(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TlsMode;

    fn config(uri: &str, tls: TlsMode, filter: &str) -> LdapConfig {
        LdapConfig {
            uri: uri.into(),
            bind_dn: String::new(),
            bind_password: String::new(),
            base: "dc=x".into(),
            user_filter: filter.into(),
            uid_attribute: "uid".into(),
            group_member_attribute: "member".into(),
            tls,
            ca_file: None,
            pool_size: 1,
            timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn filter_values_cannot_change_the_filter() {
        assert_eq!(escape_filter_value("alice"), "alice");
        assert_eq!(
            escape_filter_value("*)(uid=*"),
            "\\2a\\29\\28uid=\\2a",
            "wildcards and parentheses are escaped"
        );
        assert_eq!(escape_filter_value("a\\b\0c\nd"), "a\\5cb\\00c\\0ad");
        // UTF-8 passes through (RFC 4515 allows it unescaped).
        assert_eq!(escape_filter_value("jürgen"), "jürgen");
        let filter = "(&(objectClass=inetOrgPerson)(uid=%u))"
            .replace("%u", &escape_filter_value("x)(|(uid=*"));
        assert!(ldap3::parse_filter(&filter).is_ok(), "{filter}");
        assert_eq!(filter.matches('(').count(), 3, "{filter}");
    }

    #[test]
    fn group_names_become_lowercase_jids_on_each_host() {
        let names = vec!["Alice".to_owned(), "bad@name".to_owned()];
        let hosts = vec!["a.org".to_owned(), "b.org".to_owned()];
        let jids: Vec<String> = names_to_jids(&names, &hosts)
            .iter()
            .map(|j| j.to_string())
            .collect();
        assert_eq!(jids, ["alice@a.org", "alice@b.org"]);
    }

    #[test]
    fn tls_mode_must_match_the_uri_and_the_filter_needs_a_placeholder() {
        let cfg = config;
        use TlsMode::*;
        assert!(Directory::new(cfg("ldap://h", None, "(uid=%u)")).is_ok());
        assert!(Directory::new(cfg("ldap://h", StartTls, "(uid=%u)")).is_ok());
        assert!(Directory::new(cfg("ldaps://h", Ldaps, "(uid=%u)")).is_ok());
        assert!(Directory::new(cfg("ldap://h", Ldaps, "(uid=%u)")).is_err());
        assert!(Directory::new(cfg("ldaps://h", None, "(uid=%u)")).is_err());
        assert!(Directory::new(cfg("ldap://h", None, "(uid=alice)")).is_err());
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_within_the_timeout() {
        // A port nobody listens on: connection refused, promptly, as an error.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let uri = format!("ldap://127.0.0.1:{port}");
        let dir = Directory::new(config(&uri, crate::TlsMode::None, "(uid=%u)")).unwrap();
        let started = std::time::Instant::now();
        assert!(dir.check_password("alice", "pw").await.is_err());
        assert!(started.elapsed() < Duration::from_secs(3));
        // The empty password is refused before any network use.
        assert_eq!(
            dir.check_password("alice", "").await.unwrap(),
            Login::WrongPassword
        );
    }

    #[tokio::test]
    async fn a_timed_out_operation_gives_back_its_slot_and_closes_its_connection() {
        use std::io::Read;
        use std::sync::atomic::{AtomicUsize, Ordering};
        // A server that accepts and never answers: every bind hangs until our timeout.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let uri = format!("ldap://{}", silent.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (a, c) = (accepted.clone(), closed.clone());
        std::thread::spawn(move || {
            for conn in silent.incoming() {
                let Ok(mut conn) = conn else { return };
                a.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 512];
                    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        let mut cfg = config(&uri, TlsMode::None, "(uid=%u)");
        cfg.timeout = Duration::from_millis(300);
        let dir = Directory::new(cfg).unwrap();
        for _ in 0..3 {
            let outcome = dir.check_password("alice", "pw").await;
            assert!(matches!(outcome, Err(LdapError::Timeout(_))), "{outcome:?}");
        }
        // With one slot, each attempt could only connect if the last one gave its slot back.
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        for _ in 0..50 {
            if closed.load(Ordering::SeqCst) == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            closed.load(Ordering::SeqCst),
            3,
            "timed-out connections are closed"
        );
    }

    fn octets(s: &[u8]) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id: 4,
            payload: PL::P(s.to_vec()),
        }
    }

    fn seq(id: u64, class: TagClass, children: Vec<StructureTag>) -> StructureTag {
        StructureTag {
            class,
            id,
            payload: PL::C(children),
        }
    }

    fn entry(dn: StructureTag, attrs: Vec<StructureTag>) -> ResultEntry {
        let attrs = seq(16, TagClass::Universal, attrs);
        ResultEntry::new(seq(4, TagClass::Application, vec![dn, attrs]))
    }

    fn attr(name: &[u8], values: &[&[u8]]) -> StructureTag {
        let values = seq(
            17,
            TagClass::Universal,
            values.iter().map(|v| octets(v)).collect(),
        );
        seq(16, TagClass::Universal, vec![octets(name), values])
    }

    #[test]
    fn malformed_entries_are_skipped_without_panicking() {
        let good = entry(
            octets(b"uid=a,dc=x"),
            vec![attr(b"uid", &[b"a"]), attr(b"jpegPhoto", &[b"\xff\xfe"])],
        );
        let parsed = parse_entry(good).unwrap();
        assert_eq!(parsed.dn, "uid=a,dc=x");
        assert_eq!(parsed.attrs, [("uid".to_owned(), vec!["a".to_owned()])]);

        let bad_dn = entry(octets(b"\xff"), vec![]);
        let no_attrs = ResultEntry::new(seq(4, TagClass::Application, vec![octets(b"dc=x")]));
        let primitive = ResultEntry::new(octets(b"dc=x"));
        let attr_not_a_sequence = entry(octets(b"dc=x"), vec![octets(b"uid")]);
        let values_missing = entry(
            octets(b"dc=x"),
            vec![seq(16, TagClass::Universal, vec![octets(b"uid")])],
        );
        let referral = ResultEntry::new(seq(19, TagClass::Application, vec![octets(b"ldap://h")]));
        for e in [
            bad_dn,
            no_attrs,
            primitive,
            attr_not_a_sequence,
            values_missing,
            referral,
        ] {
            assert_eq!(parse_entry(e), None);
        }
    }
}
