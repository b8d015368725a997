//! Administration commands: accounts, live sessions, announcements, the message of the day and
//! the message archive.
//!
//! Account commands open the server's database directly (`crate::stores`), which is safe while
//! the server runs (SQLite: WAL mode, one writer at a time with a busy timeout; PostgreSQL:
//! transactions). `unregister`, `broadcast`, `kick`,
//! `motd` and `sessions` talk to the running server over its admin socket
//! (`crate::admin_socket`), so that a removed account's sessions end and its contacts are told
//! at once; without a running server, `unregister` removes the account and its footprint in the
//! database (the same storage operation), `motd` changes the stored message and `sessions`
//! reads the database.

use std::future::Future;
use std::io::BufRead;

use xmppd_auth::{AuthBackend, AuthError, InternalBackend};
use xmppd_config::ValidatedConfig;
use xmppd_storage::{SessionRecord, StorageError, UserRef};

use crate::{admin_socket, stores, Failure};

/// Runs one command on a small runtime of its own (the commands are short and sequential).
pub fn block_on<F: Future<Output = Result<(), Failure>>>(f: F) -> Result<(), Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?
        .block_on(f)
}

pub async fn register(
    config: &ValidatedConfig,
    user: &str,
    domain: &str,
    password: Option<String>,
    ignore_tombstone: bool,
) -> Result<(), Failure> {
    let account = account(config, user, domain)?;
    refuse_directory_host(config, &account.domain)?;
    let store = stores::open(config).await?.credentials;
    let storage = |e: StorageError| explain(e.into(), &account);
    // Checked first so that nobody types a password for a name that is not free.
    if ignore_tombstone {
        store.clear_tombstone(&account).await.map_err(storage)?;
    } else if let Some(until_ms) = store.tombstone(&account).await.map_err(storage)? {
        return Err(explain(AuthError::Tombstoned { until_ms }, &account));
    }
    let password = password_or_stdin(password)?;
    InternalBackend::new(store)
        .create_user(&account, &password)
        .await
        .map_err(|e| explain(e, &account))?;
    println!("registered {}", jid(&account));
    Ok(())
}

/// `xmppd unregister`: through the running server when there is one (its sessions end and its
/// contacts are told), else in the database alone.
pub async fn unregister(config: &ValidatedConfig, user: &str, domain: &str) -> Result<(), Failure> {
    let account = account(config, user, domain)?;
    if admin_socket::request(config, &["unregister", &jid(&account)])?.is_none() {
        let stores = stores::open(config).await?;
        let tombstone = config.registration.tombstone;
        xmppd_core::remove_stored_account(stores.credentials.as_ref(), &account, tombstone)
            .await
            .map_err(|e| explain(e.into(), &account))?;
        // A running server deletes the archive through the module's account-removal hook.
        let archive = crate::service_stores::archive(&stores.engine).await?;
        (archive.remove_owner(&jid(&account)).await).map_err(|e| explain(e.into(), &account))?;
        // So are the push registrations: nothing may wake a device for a gone account.
        let push = crate::service_stores::push(&stores.engine).await?;
        (push.remove_owner(&jid(&account)).await).map_err(|e| explain(e.into(), &account))?;
    }
    println!("unregistered {}", jid(&account));
    Ok(())
}

pub async fn passwd(
    config: &ValidatedConfig,
    user: &str,
    domain: &str,
    password: Option<String>,
) -> Result<(), Failure> {
    let account = account(config, user, domain)?;
    refuse_directory_host(config, &account.domain)?;
    let backend = InternalBackend::new(stores::open(config).await?.credentials);
    // Checked first so that nobody types a password for an account that does not exist.
    if !backend
        .user_exists(&account)
        .await
        .map_err(|e| explain(e, &account))?
    {
        return Err(explain(AuthError::NoSuchUser, &account));
    }
    let password = password_or_stdin(password)?;
    backend
        .set_password(&account, &password)
        .await
        .map_err(|e| explain(e, &account))?;
    println!("password changed for {}", jid(&account));
    Ok(())
}

/// The stores an import or export works on: the core's and the personal data's.
async fn portable_stores(config: &ValidatedConfig) -> Result<xmppd_portable::Stores, Failure> {
    let stores = stores::open(config).await?;
    let personal = crate::service_stores::personal(&stores.engine).await?;
    Ok(xmppd_portable::Stores {
        core: stores.core,
        personal,
    })
}

/// The hosts whose accounts are xmppd's own (a directory's are managed there).
fn own_hosts(config: &ValidatedConfig) -> Vec<String> {
    (config.server.hosts.iter())
        .filter(|h| refuse_directory_host(config, h).is_ok())
        .cloned()
        .collect()
}

/// `xmppd import FILE`: the file is checked whole before anything is written.
pub async fn import(
    config: &ValidatedConfig,
    file: &std::path::Path,
    replace: bool,
) -> Result<(), Failure> {
    let hosts = own_hosts(config);
    let stores = portable_stores(config).await?;
    let existing = if replace {
        xmppd_portable::Existing::Replace
    } else {
        xmppd_portable::Existing::Skip
    };
    let counts = xmppd_portable::import(file, &hosts, &stores, existing).await?;
    println!("{counts}");
    Ok(())
}

/// `xmppd export DIR`: one file per host.
pub async fn export(config: &ValidatedConfig, dir: &std::path::Path) -> Result<(), Failure> {
    let stores = portable_stores(config).await?;
    let (files, accounts) = xmppd_portable::export(dir, &own_hosts(config), &stores).await?;
    for file in files {
        println!("wrote {}", file.display());
    }
    println!("accounts exported: {accounts}");
    Ok(())
}

/// One JID per line, hosts in configuration order, users sorted within a host.
pub async fn list_users(config: &ValidatedConfig, domain: Option<&str>) -> Result<(), Failure> {
    let domains = match domain {
        Some(d) => vec![host(config, d)?],
        None => config.server.hosts.clone(),
    };
    let store = stores::open(config).await?.credentials;
    for domain in domains {
        let users = store.list_users(&domain).await.map_err(|e| e.to_string())?;
        for user in users {
            println!("{user}@{domain}");
        }
    }
    Ok(())
}

/// One session per line: JID, peer address (`-` when hidden), start time (UTC), node, the
/// client's SASL2 user agent (id, software, device; `-` when it named none). Live from
/// the running server when there is one, else as recorded in the database.
pub async fn sessions(config: &ValidatedConfig) -> Result<(), Failure> {
    let mut sessions = match admin_socket::request(config, &["sessions"])? {
        Some(rows) => rows
            .into_iter()
            .map(|r| {
                let field = |i: usize| r.get(i).cloned().unwrap_or_default();
                SessionRecord {
                    jid: field(0),
                    peer: field(1),
                    started_ms: field(2).parse().unwrap_or(0),
                    node: field(3),
                    user_agent: field(4),
                }
            })
            .collect(),
        None => {
            let store = stores::open(config).await?.core;
            store.sessions().await.map_err(|e| e.to_string())?
        }
    };
    sessions.sort_by(|a, b| a.jid.cmp(&b.jid));
    for s in sessions {
        let peer = if s.peer.is_empty() {
            "-"
        } else {
            s.peer.as_str()
        };
        let agent = if s.user_agent.is_empty() {
            "-"
        } else {
            s.user_agent.as_str()
        };
        println!(
            "{}\t{}\t{}\t{}\t{}",
            s.jid,
            peer,
            format_utc(s.started_ms),
            s.node,
            agent
        );
    }
    Ok(())
}

/// `xmppd broadcast`: a message from the server to every online session (of one host).
pub async fn broadcast(
    config: &ValidatedConfig,
    message: &str,
    domain: Option<&str>,
) -> Result<(), Failure> {
    let domain = domain.map(|d| host(config, d)).transpose()?;
    let rows = running(
        config,
        &["broadcast", domain.as_deref().unwrap_or(""), message],
    )?;
    println!("message sent to {} session(s)", first(&rows));
    Ok(())
}

/// `xmppd kick`: ends the sessions of a bare JID, or one session of a full JID.
pub async fn kick(config: &ValidatedConfig, jid: &str) -> Result<(), Failure> {
    let parsed = jid::Jid::new(jid).map_err(|e| Failure(format!("invalid JID {jid:?}: {e}")))?;
    if parsed.node().is_none() {
        return Err(Failure(format!("{jid} is not a user's JID")));
    }
    let rows = running(config, &["kick", parsed.as_str()])?;
    match first(&rows) {
        "0" => Err(Failure(format!("{parsed} has no session"))),
        n => {
            println!("ended {n} session(s) of {parsed}");
            Ok(())
        }
    }
}

/// `xmppd motd set|clear`: through the running server, or in the database when it is down.
pub async fn motd(
    config: &ValidatedConfig,
    text: Option<&str>,
    domain: Option<&str>,
) -> Result<(), Failure> {
    let domain = domain.map(|d| host(config, d)).transpose()?;
    let request = match text {
        Some(t) => vec!["motd-set", domain.as_deref().unwrap_or(""), t],
        None => vec!["motd-clear", domain.as_deref().unwrap_or("")],
    };
    let hosts = match admin_socket::request(config, &request)? {
        Some(rows) => rows
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect(),
        None => {
            let hosts = domain.map_or_else(|| config.server.hosts.clone(), |d| vec![d]);
            let store = stores::open(config).await?.user_data;
            for h in &hosts {
                xmppd_adhoc::motd::store(store.as_ref(), h, text.map(|t| (None, t)))
                    .await
                    .map_err(|e| format!("storing the message: {e}"))?;
            }
            hosts
        }
    };
    let what = if text.is_some() { "set" } else { "cleared" };
    println!("message of the day {what} for {}", hosts.join(", "));
    Ok(())
}

/// `xmppd mam purge`: deletes archived messages in the database, a user's or everyone's, all
/// or those older than `older_than_days`. A running server shares the file (WAL): the deletion
/// goes in batches of `mam.purge_batch`, each its own transaction, so the server's writes wait
/// at most one batch (and the busy timeout covers that wait). The server keeps no archived
/// message in memory, so it needs not be told.
pub async fn mam_purge(
    config: &ValidatedConfig,
    user: Option<&str>,
    older_than_days: Option<f64>,
) -> Result<(), Failure> {
    let owner = user.map(|u| bare_account(config, u)).transpose()?;
    let before_ms = match older_than_days {
        Some(days) => xmppd_mam::retention::cutoff(
            xmppd_core::stanza::now_ms(),
            std::time::Duration::from_secs_f64(days * 86_400.0),
        ),
        None => i64::MAX,
    };
    let archive = crate::service_stores::archive(&stores::open(config).await?.engine).await?;
    let batch = config.mam.purge_batch;
    let deleted = xmppd_mam::retention::purge(&*archive, owner.as_deref(), before_ms, batch)
        .await
        .map_err(|e| format!("purging the message archive: {e}"))?;
    println!("deleted {deleted} archived message(s)");
    Ok(())
}

/// `xmppd fast list`: one token per line: user, client id, mechanism, issued, expires (UTC).
/// The tokens themselves are not stored, so they cannot be shown.
pub async fn fast_list(config: &ValidatedConfig, user: Option<&str>) -> Result<(), Failure> {
    let user = user.map(|u| fast_user(config, u)).transpose()?;
    let tokens = fast_tokens(config).await?;
    let rows = (tokens.list(user.as_ref()).await).map_err(|e| format!("listing tokens: {e}"))?;
    for r in rows {
        println!(
            "{}\t{}\t{}\t{}\t{}",
            r.user,
            r.client,
            r.mechanism,
            format_utc(r.issued_ms),
            format_utc(r.expires_ms)
        );
    }
    Ok(())
}

/// `xmppd fast revoke`: drops a user's tokens (of one client id).
pub async fn fast_revoke(
    config: &ValidatedConfig,
    user: &str,
    client: Option<&str>,
) -> Result<(), Failure> {
    let user = fast_user(config, user)?;
    let tokens = fast_tokens(config).await?;
    let n = (tokens.revoke(&user, client).await).map_err(|e| format!("revoking tokens: {e}"))?;
    println!("revoked {n} token(s)");
    Ok(())
}

/// `xmppd api-token create`: prints the token, which is not stored (its hash is).
pub async fn api_token_create(
    config: &ValidatedConfig,
    scope: &str,
    expires_days: Option<f64>,
    name: &str,
) -> Result<(), Failure> {
    use xmppd_api::token::Scope;
    let scope = Scope::parse(scope).ok_or_else(|| Failure(format!("unknown scope {scope:?}")))?;
    let now = xmppd_core::stanza::now_ms();
    let expires = expires_days.map(|d| now + (d * 86_400_000.0) as i64);
    let tokens = api_tokens(config).await?;
    let (token, info) = (tokens.create(scope, name, now, expires).await)
        .map_err(|e| format!("storing the token: {e}"))?;
    println!("{token}");
    let until = info.expires_ms.map_or("never".into(), format_utc);
    eprintln!(
        "token {} (scope {}, expires {until}): shown once, only its hash is kept",
        info.id,
        scope.as_str()
    );
    Ok(())
}

/// `xmppd api-token list`: one token per line: id, scope, created, expires (UTC), name.
pub async fn api_token_list(config: &ValidatedConfig) -> Result<(), Failure> {
    let tokens = api_tokens(config).await?;
    let rows = tokens
        .list()
        .await
        .map_err(|e| format!("listing tokens: {e}"))?;
    for t in rows {
        let expires = t.expires_ms.map_or("never".into(), format_utc);
        println!(
            "{}\t{}\t{}\t{expires}\t{}",
            t.id,
            t.scope.as_str(),
            format_utc(t.created_ms),
            t.name
        );
    }
    Ok(())
}

/// `xmppd api-token revoke`: deletes a token by its id.
pub async fn api_token_revoke(config: &ValidatedConfig, id: &str) -> Result<(), Failure> {
    let tokens = api_tokens(config).await?;
    match tokens.revoke(id).await {
        Ok(true) => {
            println!("revoked token {id}");
            Ok(())
        }
        Ok(false) => Err(Failure(format!("no token {id} (see xmppd api-token list)"))),
        Err(e) => Err(Failure(format!("revoking the token: {e}"))),
    }
}

/// The API tokens, on the configured engine (the server reads the same table).
async fn api_tokens(config: &ValidatedConfig) -> Result<xmppd_api::token::ApiTokens, Failure> {
    crate::service_stores::api_tokens(&stores::open(config).await?.engine).await
}

/// The FAST tokens, on the configured engine (the server reads the same table).
async fn fast_tokens(
    config: &ValidatedConfig,
) -> Result<std::sync::Arc<dyn xmppd_fast::TokenStore>, Failure> {
    crate::service_stores::fast_tokens(&stores::open(config).await?.engine).await
}

fn fast_user(config: &ValidatedConfig, text: &str) -> Result<jid::BareJid, Failure> {
    let bare = bare_account(config, text)?;
    jid::BareJid::new(&bare).map_err(|e| Failure(format!("invalid JID {text:?}: {e}")))
}

/// A user's bare JID on a served host, normalised as the archive names its owner.
fn bare_account(config: &ValidatedConfig, text: &str) -> Result<String, Failure> {
    let parsed = jid::Jid::new(text).map_err(|e| Failure(format!("invalid JID {text:?}: {e}")))?;
    match (parsed.node(), parsed.resource()) {
        (Some(node), None) => Ok(jid(&account(
            config,
            node.as_str(),
            parsed.domain().as_str(),
        )?)),
        _ => Err(Failure(format!("{text} is not a user's bare JID"))),
    }
}

/// The answer of the running server; an error when none runs.
fn running(config: &ValidatedConfig, request: &[&str]) -> Result<Vec<Vec<String>>, Failure> {
    admin_socket::request(config, request)?.ok_or_else(|| {
        Failure(format!(
            "the server is not running (no admin socket at {})",
            admin_socket::path(config).display()
        ))
    })
}

/// The first field of the first row (a count), or "0".
fn first(rows: &[Vec<String>]) -> &str {
    rows.first()
        .and_then(|r| r.first())
        .map(String::as_str)
        .unwrap_or("0")
}

/// Validates and normalises `user@domain` the way the server will see it at login.
fn account(config: &ValidatedConfig, user: &str, domain: &str) -> Result<UserRef, Failure> {
    let domain = host(config, domain)?;
    let node = jid::NodePart::new(user)
        .map_err(|e| Failure(format!("invalid user name {user:?}: {e}")))?;
    Ok(UserRef::new(node.as_str(), domain))
}

/// `domain` normalised, if it is one of the hosts served.
fn host(config: &ValidatedConfig, domain: &str) -> Result<String, Failure> {
    let hosts = &config.server.hosts;
    match xmppd_config::normalise_domain(domain) {
        Ok(d) if hosts.contains(&d) => Ok(d),
        _ => Err(Failure(format!(
            "{domain} is not a host of this server (hosts: {})",
            hosts.join(", ")
        ))),
    }
}

/// Accounts of a host whose backend is LDAP are managed in the directory, not here.
fn refuse_directory_host(config: &ValidatedConfig, host: &str) -> Result<(), Failure> {
    if config.auth_backends.get(host) == Some(&xmppd_config::AuthBackendKind::Ldap) {
        return Err(Failure(format!(
            "{host} takes its accounts from LDAP: create them and change passwords there"
        )));
    }
    Ok(())
}

/// The password argument, or one line of stdin (so it stays out of shell history and `ps`).
fn password_or_stdin(password: Option<String>) -> Result<String, Failure> {
    let password = match password {
        Some(p) => p,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("reading the password from stdin: {e}"))?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if password.is_empty() {
        return Err(Failure("empty password".into()));
    }
    Ok(password)
}

fn jid(account: &UserRef) -> String {
    format!("{}@{}", account.user, account.domain)
}

fn explain(e: AuthError, account: &UserRef) -> Failure {
    Failure(match e {
        AuthError::AlreadyExists => format!("user {} already exists", jid(account)),
        AuthError::NoSuchUser => format!("user {} does not exist", jid(account)),
        AuthError::AccountDisabled => format!("user {} is disabled", jid(account)),
        AuthError::InvalidPassword(why) => format!("invalid password: {why}"),
        AuthError::Unsupported => "the authentication backend does not allow this".into(),
        AuthError::Tombstoned { until_ms } => format!(
            "user {} was removed recently and its name is kept until {} \
             (registration.tombstone_days; --ignore-tombstone registers it now)",
            jid(account),
            format_utc(until_ms)
        ),
        AuthError::Temporary(why) => format!("storage: {why}"),
    })
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_utc(ms: i64) -> String {
    let (y, m, d, hh, mm, ss) = xmppd_core::stanza::utc_fields(ms.div_euclid(1000));
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

#[cfg(test)]
mod tests {
    use super::format_utc;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_709_251_199_999), "2024-02-29T23:59:59Z");
        assert_eq!(format_utc(-1000), "1969-12-31T23:59:59Z");
    }
}
