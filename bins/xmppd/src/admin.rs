//! Administration commands: accounts and the list of live sessions.
//!
//! They open the server's SQLite file directly, which is safe while the server runs (WAL mode,
//! one writer at a time with a busy timeout). They do not talk to the running server: a session
//! of a deleted account stays connected until it ends.

use std::future::Future;
use std::io::BufRead;
use std::sync::Arc;

use xmppd_auth::{AuthBackend, AuthError, InternalBackend};
use xmppd_config::ValidatedConfig;
use xmppd_storage::{CredentialStore, SessionStore, SqliteStore, UserRef};

use crate::Failure;

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
) -> Result<(), Failure> {
    let account = account(config, user, domain)?;
    let password = password_or_stdin(password)?;
    let backend = backend(config)?;
    backend
        .create_user(&account, &password)
        .await
        .map_err(|e| explain(e, &account))?;
    println!("registered {}", jid(&account));
    Ok(())
}

pub async fn unregister(config: &ValidatedConfig, user: &str, domain: &str) -> Result<(), Failure> {
    let account = account(config, user, domain)?;
    let backend = backend(config)?;
    backend
        .delete_user(&account)
        .await
        .map_err(|e| explain(e, &account))?;
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
    let backend = backend(config)?;
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

/// One JID per line, hosts in configuration order, users sorted within a host.
pub async fn list_users(config: &ValidatedConfig, domain: Option<&str>) -> Result<(), Failure> {
    let domains = match domain {
        Some(d) => vec![host(config, d)?],
        None => config.server.hosts.clone(),
    };
    let store = open_store(config)?;
    for domain in domains {
        let users = store.list_users(&domain).await.map_err(|e| e.to_string())?;
        for user in users {
            println!("{user}@{domain}");
        }
    }
    Ok(())
}

/// One session per line: JID, peer address (`-` when hidden), start time (UTC), node.
pub async fn sessions(config: &ValidatedConfig) -> Result<(), Failure> {
    let store = open_store(config)?;
    let mut sessions = store.sessions().await.map_err(|e| e.to_string())?;
    sessions.sort_by(|a, b| a.jid.cmp(&b.jid));
    for s in sessions {
        let peer = if s.peer.is_empty() {
            "-"
        } else {
            s.peer.as_str()
        };
        println!(
            "{}\t{}\t{}\t{}",
            s.jid,
            peer,
            format_utc(s.started_ms),
            s.node
        );
    }
    Ok(())
}

/// Opens the configured database (the server does the same at start-up).
pub fn open_store(config: &ValidatedConfig) -> Result<Arc<SqliteStore>, Failure> {
    let path = &config.storage.sqlite_path;
    SqliteStore::open(path)
        .map(Arc::new)
        .map_err(|e| Failure(format!("opening database {}: {e}", path.display())))
}

fn backend(config: &ValidatedConfig) -> Result<InternalBackend, Failure> {
    let store: Arc<dyn CredentialStore> = open_store(config)?;
    Ok(InternalBackend::new(store))
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
        AuthError::InvalidPassword(why) => format!("invalid password: {why}"),
        AuthError::Unsupported => "the authentication backend does not allow this".into(),
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
