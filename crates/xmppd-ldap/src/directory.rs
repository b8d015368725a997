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

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jid::BareJid;
use ldap3::asn1::{parse_tag, StructureTag, TagClass, PL};
use ldap3::controls::{PagedResults, RawControl};
use ldap3::{LdapResult, ResultEntry, Scope, SearchResult};

use crate::pool::{Conn, Lease, Pool};
use crate::{LdapConfig, LdapError, Nesting};

/// Result codes of a bind that mean "these credentials do not get in" rather than an outage:
/// inappropriateAuthentication, invalidCredentials, insufficientAccessRights, unwillingToPerform.
const BIND_REJECTED: [u32; 4] = [48, 49, 50, 53];
/// noSuchObject: a group that was deleted has no members.
const NO_SUCH_OBJECT: u32 = 32;
/// sizeLimitExceeded: the entries returned are only the first ones.
const SIZE_LIMIT_EXCEEDED: u32 = 4;
/// The paged results control (RFC 2696 §2).
const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";
/// LDAP_MATCHING_RULE_IN_CHAIN: Active Directory follows `member` links transitively.
const IN_CHAIN_RULE: &str = "1.2.840.113556.1.4.1941";
/// LDAP_CAP_ACTIVE_DIRECTORY_OID, in the root DSE's `supportedCapabilities`.
const AD_CAPABILITY: &str = "1.2.840.113556.1.4.800";
/// An Active Directory group's RID, which its primary members carry as `primaryGroupID`.
const PRIMARY_GROUP_TOKEN: &str = "primaryGroupToken";

/// Groups within groups are followed this many levels down from the configured group when
/// they are read one by one; deeper ones are left out (and logged).
pub const MAX_NESTING_DEPTH: usize = 16;

/// The answer to a password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    Accepted,
    WrongPassword,
    /// No entry matches the user filter (never existed, removed from the directory, or kept
    /// out by the filter, e.g. a disabled account).
    UnknownUser,
    /// The directory checked the password and refused the bind because the account is
    /// disabled or expired (Active Directory's `data 533`, `701`).
    Disabled,
}

/// One LDAP server, reached through a small connection pool.
pub struct Directory {
    pool: Arc<Pool>,
    /// Whether groups are resolved with the in-chain rule; `None` until the root DSE of a
    /// directory configured with [`Nesting::Auto`] has been read.
    in_chain: Mutex<Option<bool>>,
}

impl Directory {
    /// Checks the TLS settings and reads the CA file; connects only when first used.
    pub fn new(cfg: LdapConfig) -> Result<Arc<Directory>, LdapError> {
        if !cfg.user_filter.contains("%u") {
            return Err(LdapError::Config("user_filter must contain %u".into()));
        }
        // The in-chain rule follows `member` DNs; user names (memberUid) cannot nest.
        let dn_members = cfg.group_member_attribute.eq_ignore_ascii_case("member");
        let in_chain = match cfg.nesting {
            Nesting::InChain => Some(true),
            Nesting::Recursive => Some(false),
            Nesting::Auto if !dn_members => Some(false),
            Nesting::Auto => None,
        };
        let pool = Pool::new(Arc::new(cfg))?;
        Ok(Arc::new(Directory {
            pool: Arc::new(pool),
            in_chain: Mutex::new(in_chain),
        }))
    }

    fn cfg(&self) -> &LdapConfig {
        self.pool.config()
    }

    /// The userPrincipalName suffixes a login name may carry.
    pub(crate) fn upn_suffixes(&self) -> &[String] {
        &self.cfg().upn_suffixes
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
                Ok(Some(dn)) => user_bind(&mut lease.conn, name, &dn, password).await,
                Ok(None) => {
                    tracing::info!(
                        user = %name,
                        "login refused: no directory entry matches the user filter"
                    );
                    Ok(Login::UnknownUser)
                }
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

    /// The user names in the group `group_dn`, through nested groups and primary groups
    /// (members that are not users are left out).
    pub async fn group_member_names(&self, group_dn: &str) -> Result<Vec<String>, LdapError> {
        let cfg = self.cfg();
        self.run(|mut lease| async move {
            let names = self.read_group(&mut lease.conn, cfg, group_dn).await;
            (lease, names)
        })
        .await
    }

    async fn read_group(
        &self,
        conn: &mut Conn,
        cfg: &LdapConfig,
        group_dn: &str,
    ) -> Result<Vec<String>, ldap3::LdapError> {
        service_bind(conn, cfg).await?;
        let known = self.in_chain.lock().ok().and_then(|known| *known);
        let in_chain = match known {
            Some(known) => known,
            None => {
                let ad = is_active_directory(conn).await?;
                tracing::info!(
                    active_directory = ad,
                    "nested groups resolved {}",
                    if ad {
                        "with the in-chain rule"
                    } else {
                        "recursively"
                    }
                );
                if let Ok(mut known) = self.in_chain.lock() {
                    *known = Some(ad);
                }
                ad
            }
        };
        let mut names = if in_chain {
            in_chain_members(conn, cfg, group_dn).await?
        } else {
            recursive_members(conn, cfg, group_dn).await?
        };
        names.sort();
        names.dedup();
        Ok(names)
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

/// The search for `name`'s entry, which must give `name` back as its user name: a filter
/// that also matched another attribute (a login by `sAMAccountName` while group members are
/// named by `userPrincipalName`) would otherwise log a user in under a second JID.
async fn search_user(
    conn: &mut Conn,
    cfg: &LdapConfig,
    name: &str,
) -> Result<Option<String>, ldap3::LdapError> {
    service_bind(conn, cfg).await?;
    let filter = cfg.user_filter.replace("%u", &escape_filter_value(name));
    let (entries, _) = conn
        .ldap
        .search(
            &cfg.base,
            Scope::Subtree,
            &filter,
            vec![cfg.uid_attribute.as_str()],
        )
        .await?
        .success()?;
    let mut entries: Vec<Entry> = entries.into_iter().filter_map(parse_entry).collect();
    match entries.len() {
        0 => Ok(None),
        1 => {
            let entry = entries.remove(0);
            let wanted = name.to_lowercase();
            let names = user_names(&entry, &cfg.uid_attribute);
            if names.iter().any(|n| n.to_lowercase() == wanted) {
                return Ok(Some(entry.dn));
            }
            tracing::warn!(
                user = name,
                dn = %entry.dn,
                attribute = %cfg.uid_attribute,
                found = ?names,
                "the entry the user filter found is named otherwise: refused"
            );
            Ok(None)
        }
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

/// The user names an entry gives: the values of `attribute`, each up to an `@` (a
/// userPrincipalName `dave.smith@corp.example` names `dave.smith`).
fn user_names(entry: &Entry, attribute: &str) -> Vec<String> {
    let values = entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attribute));
    let values = values.map(|(_, v)| v.as_slice()).unwrap_or_default();
    values
        .iter()
        .map(|v| v.split_once('@').map_or(v.as_str(), |(local, _)| local))
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The request control of one page (RFC 2696 §2): `size` entries after `cookie`.
fn page_control(size: u32, cookie: Vec<u8>) -> RawControl {
    let size = i32::try_from(size).unwrap_or(i32::MAX);
    PagedResults { size, cookie }.into()
}

/// The cookie of the paged results response control; empty when the search is complete (or
/// the directory does not page, answering everything at once).
fn next_cookie(result: &LdapResult) -> Vec<u8> {
    let value = (result.ctrls.iter())
        .find(|c| c.1.ctype == PAGED_RESULTS_OID)
        .and_then(|c| c.1.val.as_deref());
    value.and_then(paged_cookie).unwrap_or_default()
}

/// `realSearchControlValue ::= SEQUENCE { size INTEGER, cookie OCTET STRING }`, read without
/// the panicking decoder: a malformed value ends the search as if it were complete.
fn paged_cookie(value: &[u8]) -> Option<Vec<u8>> {
    let (_, tag) = parse_tag(value).ok()?;
    let mut parts = constructed(tag)?.into_iter();
    let _size = parts.next()?;
    match parts.next()?.payload {
        PL::P(cookie) => Some(cookie),
        PL::C(_) => None,
    }
}

/// A subtree search under the configured base that can return many entries, page by page
/// (RFC 2696), so that a directory's per-page limit (Active Directory's MaxPageSize, 1000)
/// does not cut it short. At most `limit` entries are kept; the flag says there were more
/// (ours or the directory's size limit stopped it).
async fn paged_search(
    conn: &mut Conn,
    cfg: &LdapConfig,
    filter: &str,
    attrs: &[&str],
    limit: usize,
) -> Result<(Vec<Entry>, bool), ldap3::LdapError> {
    let mut entries = Vec::new();
    let mut cookie = Vec::new();
    for page in 1u64.. {
        let SearchResult(found, result) = conn
            .ldap
            .with_controls(page_control(cfg.page_size, cookie))
            .search(&cfg.base, Scope::Subtree, filter, attrs.to_vec())
            .await?;
        tracing::debug!(filter, page, entries = found.len(), "LDAP search page");
        entries.extend(found.into_iter().filter_map(parse_entry));
        if result.rc == SIZE_LIMIT_EXCEEDED {
            entries.truncate(limit);
            return Ok((entries, true));
        }
        cookie = next_cookie(&result.success()?);
        if cookie.is_empty() {
            break;
        }
        if entries.len() >= limit {
            // RFC 2696 §3: a page size of zero with the cookie ends the search on the server.
            let _ = conn
                .ldap
                .with_controls(page_control(0, cookie))
                .search(&cfg.base, Scope::Subtree, filter, vec!["1.1"])
                .await;
            entries.truncate(limit);
            return Ok((entries, true));
        }
    }
    let more = entries.len() > limit;
    entries.truncate(limit);
    Ok((entries, more))
}

async fn count_entries(
    conn: &mut Conn,
    cfg: &LdapConfig,
    limit: usize,
) -> Result<(usize, bool), ldap3::LdapError> {
    service_bind(conn, cfg).await?;
    let filter = cfg.user_filter.replace("%u", "*");
    // "1.1": no attributes, only the DN (RFC 4511 §4.5.1.8).
    let (entries, truncated) = paged_search(conn, cfg, &filter, &["1.1"], limit).await?;
    Ok((entries.len(), truncated))
}

async fn user_bind(
    conn: &mut Conn,
    name: &str,
    dn: &str,
    password: &str,
) -> Result<Login, ldap3::LdapError> {
    conn.service_bound = false;
    let result = conn.ldap.simple_bind(dn, password).await?;
    if result.rc == 0 {
        return Ok(Login::Accepted);
    }
    if BIND_REJECTED.contains(&result.rc) {
        // The peer's address is in the connection's span, unless hide_ip_in_logs left it out.
        tracing::info!(
            user = %name,
            code = result.rc,
            reason = %refusal_reason(&result.text),
            "login refused by the directory"
        );
        return Ok(match ad_data_code(&result.text).as_deref() {
            // Active Directory names these only once the password has been checked.
            Some("533" | "701") => Login::Disabled,
            _ => Login::WrongPassword,
        });
    }
    result.success().map(|_| Login::WrongPassword)
}

/// Why the directory refused a bind. Active Directory says it in the diagnostic message,
/// `80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 775, v4563`,
/// the data being a Windows error code; other directories give their text as it is.
fn refusal_reason(text: &str) -> String {
    let code = ad_data_code(text);
    let meaning = match code.as_deref() {
        Some("52e") => "wrong password",
        Some("525") => "no such user",
        Some("530") => "not permitted to log on at this time",
        Some("531") => "not permitted to log on from this workstation",
        Some("532") => "password expired",
        Some("533") => "account disabled",
        Some("701") => "account expired",
        Some("773") => "password must be changed",
        Some("775") => "account locked",
        _ if text.is_empty() => return "invalid credentials".into(),
        _ => return text.to_owned(),
    };
    format!("{meaning} (data {})", code.unwrap_or_default())
}

/// The `data` code of Active Directory's diagnostic message, lowercase.
fn ad_data_code(text: &str) -> Option<String> {
    text.split_once("data ").map(|(_, rest)| {
        let end = rest
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(rest.len());
        rest[..end].to_ascii_lowercase()
    })
}

/// Whether the root DSE names Active Directory (or Samba acting as its domain controller).
/// A root DSE that cannot be read says no: recursive reads work everywhere.
async fn is_active_directory(conn: &mut Conn) -> Result<bool, ldap3::LdapError> {
    let found = conn
        .ldap
        .search(
            "",
            Scope::Base,
            "(objectClass=*)",
            vec!["supportedCapabilities"],
        )
        .await?;
    let Ok((entries, _)) = found.success() else {
        return Ok(false);
    };
    let entries = entries.into_iter().filter_map(parse_entry);
    let capabilities = entries.flat_map(|e| attribute(e, "supportedCapabilities"));
    Ok(capabilities.into_iter().any(|c| c == AD_CAPABILITY))
}

/// `(primaryGroupID=…)` for each token: Active Directory does not list a user's primary
/// group (Domain Users by default) among the group's `member` values, only the group's RID in
/// the user's `primaryGroupID`.
fn primary_group_clauses(tokens: &[String]) -> String {
    (tokens.iter())
        .map(|t| format!("(primaryGroupID={})", escape_filter_value(t)))
        .collect()
}

/// The names of the users (entries matching the user filter) matching any of `clauses`.
async fn users_matching(
    conn: &mut Conn,
    cfg: &LdapConfig,
    clauses: &str,
) -> Result<Vec<String>, ldap3::LdapError> {
    let filter = format!("(&{}(|{clauses}))", cfg.user_filter.replace("%u", "*"));
    let attrs = [cfg.uid_attribute.as_str()];
    let (users, _) = paged_search(conn, cfg, &filter, &attrs, usize::MAX).await?;
    Ok(users
        .iter()
        .flat_map(|e| user_names(e, &cfg.uid_attribute).into_iter().take(1))
        .collect())
}

/// Members through any depth of nesting in one search the directory evaluates, plus the
/// users whose primary group is the group or a group nested in it (under the base).
async fn in_chain_members(
    conn: &mut Conn,
    cfg: &LdapConfig,
    group_dn: &str,
) -> Result<Vec<String>, ldap3::LdapError> {
    let found = conn
        .ldap
        .search(
            group_dn,
            Scope::Base,
            "(objectClass=*)",
            vec![PRIMARY_GROUP_TOKEN],
        )
        .await?;
    if found.1.rc == NO_SUCH_OBJECT {
        return Ok(Vec::new());
    }
    let (entries, _) = found.success()?;
    let mut tokens: Vec<String> = (entries.into_iter().filter_map(parse_entry))
        .flat_map(|e| attribute(e, PRIMARY_GROUP_TOKEN))
        .collect();
    let in_chain = format!(
        "(memberOf:{IN_CHAIN_RULE}:={})",
        escape_filter_value(group_dn)
    );
    let nested = format!("(&(objectClass=group){in_chain})");
    let (groups, _) = paged_search(conn, cfg, &nested, &[PRIMARY_GROUP_TOKEN], usize::MAX).await?;
    tokens.extend(
        groups
            .into_iter()
            .flat_map(|g| attribute(g, PRIMARY_GROUP_TOKEN)),
    );
    users_matching(conn, cfg, &(in_chain + &primary_group_clauses(&tokens))).await
}

/// A group entry's members (all of them, read range by range when the directory splits the
/// attribute) and its primary group token, if it has one.
#[derive(Debug, Default)]
struct GroupEntry {
    members: Vec<String>,
    token: Option<String>,
}

/// Reads the member attribute of `dn`; `None` if there is no such entry. Active Directory
/// sends an attribute with more values than its range limit (1500) as `member;range=0-1499`
/// and the rest on request, range by range; with `range_size` set, ranges of that size are
/// asked for from the start.
async fn read_group_entry(
    conn: &mut Conn,
    cfg: &LdapConfig,
    dn: &str,
) -> Result<Option<GroupEntry>, ldap3::LdapError> {
    let attr = cfg.group_member_attribute.as_str();
    let mut group = GroupEntry::default();
    let mut start: u64 = 0;
    loop {
        let wanted = match (cfg.range_size, start) {
            (None, 0) => attr.to_owned(),
            (None, from) => format!("{attr};range={from}-*"),
            (Some(n), from) => format!("{attr};range={from}-{}", from + u64::from(n.max(1)) - 1),
        };
        let mut attrs = vec![wanted.as_str()];
        if start == 0 {
            attrs.push(PRIMARY_GROUP_TOKEN);
        }
        let found = conn
            .ldap
            .search(dn, Scope::Base, "(objectClass=*)", attrs)
            .await?;
        if found.1.rc == NO_SUCH_OBJECT && start == 0 {
            return Ok(None);
        }
        let (entries, _) = found.success()?;
        let Some(entry) = entries.into_iter().find_map(parse_entry) else {
            return Ok((start > 0).then_some(group));
        };
        let mut next = None;
        for (name, values) in entry.attrs {
            if name.eq_ignore_ascii_case(PRIMARY_GROUP_TOKEN) {
                group.token = values.into_iter().next();
            } else if name.eq_ignore_ascii_case(attr) {
                group.members.extend(values);
            } else if let Some(end) = member_range(&name, attr) {
                tracing::debug!(group = dn, range = %name, values = values.len(), "LDAP ranged read");
                // A range with no values cannot advance: take it as the last.
                next = end.filter(|_| !values.is_empty());
                group.members.extend(values);
            }
        }
        match next {
            Some(next) if next > start => start = next,
            _ => return Ok(Some(group)),
        }
    }
}

/// For the attribute name `member;range=1500-2999`: `Some(Some(3000))`, where the next range
/// starts; for the last range, `member;range=1500-*`: `Some(None)`; `None` for any other name.
fn member_range(name: &str, attr: &str) -> Option<Option<u64>> {
    let (base, option) = name.split_once(';')?;
    let prefix = option.get(..6)?;
    if !base.eq_ignore_ascii_case(attr) || !prefix.eq_ignore_ascii_case("range=") {
        return None;
    }
    let (_, end) = option[6..].split_once('-')?;
    if end == "*" {
        return Some(None);
    }
    Some(end.parse::<u64>().ok().and_then(|e| e.checked_add(1)))
}

/// What a member DN turned out to be.
enum Member {
    /// An entry matching the user filter, with its user name (if it has one).
    User(Option<String>),
    /// Anything else: maybe a group, maybe a user the filter keeps out, maybe nothing.
    Other,
}

async fn read_member(
    conn: &mut Conn,
    cfg: &LdapConfig,
    dn: &str,
    user_filter: &str,
) -> Result<Member, ldap3::LdapError> {
    let attrs = vec![cfg.uid_attribute.as_str()];
    let found = conn
        .ldap
        .search(dn, Scope::Base, user_filter, attrs)
        .await?;
    if found.1.rc == NO_SUCH_OBJECT {
        return Ok(Member::Other); // a dangling member reference
    }
    let (entries, _) = found.success()?;
    Ok(match entries.into_iter().find_map(parse_entry) {
        Some(user) => Member::User(user_names(&user, &cfg.uid_attribute).into_iter().next()),
        None => Member::Other,
    })
}

/// Members read group by group: a member DN that is not a user is read as a group in turn,
/// each group once (a cycle ends there), at most [`MAX_NESTING_DEPTH`] levels down.
async fn recursive_members(
    conn: &mut Conn,
    cfg: &LdapConfig,
    group_dn: &str,
) -> Result<Vec<String>, ldap3::LdapError> {
    // Only entries that pass the user filter are users; "%u" as "*" makes it a presence test.
    let user_filter = cfg.user_filter.replace("%u", "*");
    let mut names = Vec::new();
    let mut tokens = Vec::new();
    let mut seen = HashSet::from([group_dn.to_lowercase()]);
    let mut queue = VecDeque::from([(group_dn.to_owned(), 0usize)]);
    while let Some((dn, depth)) = queue.pop_front() {
        let Some(group) = read_group_entry(conn, cfg, &dn).await? else {
            continue;
        };
        tokens.extend(group.token);
        for value in group.members {
            if !value.contains('=') {
                names.push(value); // memberUid-style: already a user name
                continue;
            }
            if let Member::User(name) = read_member(conn, cfg, &value, &user_filter).await? {
                names.extend(name);
                continue;
            }
            if !seen.insert(value.to_lowercase()) {
                tracing::debug!(group = %dn, member = %value, "group already read (a cycle)");
                continue;
            }
            if depth + 1 > MAX_NESTING_DEPTH {
                tracing::warn!(
                    group = group_dn,
                    member = %value,
                    "groups nested more than {MAX_NESTING_DEPTH} levels deep: left out"
                );
                continue;
            }
            queue.push_back((value, depth + 1));
        }
    }
    if !tokens.is_empty() {
        names.extend(users_matching(conn, cfg, &primary_group_clauses(&tokens)).await?);
    }
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
            page_size: 500,
            range_size: None,
            upn_suffixes: Vec::new(),
            nesting: Nesting::Auto,
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
    fn active_directory_refusals_are_named_by_their_data_code() {
        let ad = |data: &str| {
            format!("80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data {data}, v4563")
        };
        assert_eq!(refusal_reason(&ad("52e")), "wrong password (data 52e)");
        assert_eq!(refusal_reason(&ad("533")), "account disabled (data 533)");
        assert_eq!(refusal_reason(&ad("775")), "account locked (data 775)");
        assert_eq!(refusal_reason(&ad("532")), "password expired (data 532)");
        assert_eq!(refusal_reason(&ad("701")), "account expired (data 701)");
        assert_eq!(
            refusal_reason(&ad("773")),
            "password must be changed (data 773)"
        );
        // Other directories: their text as it is.
        assert_eq!(refusal_reason(""), "invalid credentials");
        assert_eq!(refusal_reason("bad creds"), "bad creds");
        assert_eq!(refusal_reason(&ad("999")), ad("999"));
        assert_eq!(ad_data_code(&ad("533")).as_deref(), Some("533"));
        assert_eq!(ad_data_code(&ad("52E")).as_deref(), Some("52e"));
        assert_eq!(ad_data_code("invalid credentials"), None);
    }

    #[test]
    fn member_ranges_say_where_the_next_one_starts() {
        assert_eq!(
            member_range("member;range=0-1499", "member"),
            Some(Some(1500))
        );
        assert_eq!(member_range("Member;Range=1500-*", "member"), Some(None));
        assert_eq!(member_range("member", "member"), None);
        assert_eq!(member_range("uniqueMember;range=0-9", "member"), None);
        assert_eq!(member_range("member;binary", "member"), None);
        assert_eq!(member_range("member;range=0-x", "member"), Some(None));
        assert_eq!(member_range("member;range=", "member"), None);
    }

    #[test]
    fn the_paging_cookie_is_read_without_panicking() {
        // SEQUENCE { INTEGER size, OCTET STRING cookie } (RFC 2696 §2), in BER.
        let with_cookie = b"\x30\x08\x02\x01\x00\x04\x03abc";
        let last = b"\x30\x05\x02\x01\x07\x04\x00";
        assert_eq!(paged_cookie(with_cookie), Some(b"abc".to_vec()));
        assert_eq!(paged_cookie(last), Some(Vec::new()));
        for bad in [&b""[..], b"\x30", b"\x04\x01a", b"\x30\x03\x02\x01\x00"] {
            assert_eq!(paged_cookie(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn user_names_stop_at_the_at_sign() {
        let entry = Entry {
            dn: "CN=d".into(),
            attrs: vec![(
                "userPrincipalName".into(),
                vec![
                    "dave.smith@corp.example".into(),
                    "@x".into(),
                    "plain".into(),
                ],
            )],
        };
        assert_eq!(
            user_names(&entry, "userprincipalname"),
            ["dave.smith", "plain"]
        );
        assert!(user_names(&entry, "uid").is_empty());
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
