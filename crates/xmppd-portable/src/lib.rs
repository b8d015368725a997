//! Accounts in and out of xmppd in the portable format of XEP-0227, so that a server's users
//! move to xmppd (or away from it) without choosing new passwords.
//!
//! - [`import`] reads a document one `<user/>` at a time ([`reader`]), converts each
//!   ([`account`]) and stores it through the storage traits only: accounts and SCRAM keys,
//!   rosters and pending subscription requests, offline messages, vCards and private XML.
//!   A password in the clear becomes SCRAM keys for every hash and is never stored. The whole
//!   document is read once before anything is written, so a malformed file changes nothing
//!   and its error names the file, the line and the user.
//! - [`export`] writes one document per host, `DIR/HOST.xml`, with every hash's keys.
//!
//! Accounts that arrive with SCRAM-SHA-1 keys only (what ejabberd and Prosody store by
//! default) log in with SCRAM-SHA-1 and PLAIN; `xmppd-auth` derives their SHA-256 and SHA-512
//! keys at their first PLAIN login.

pub mod account;
pub mod reader;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use xmppd_personal::PersonalStore;
use xmppd_sasl::{HashAlg, ScramKeys};
use xmppd_storage::{StorageError, Store, UserRef};

pub use account::{parse_user, user_element, Account, Secret};
use reader::{Document, Position, NS_PIE};

/// A document that cannot be imported, or a store that failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}: {message}")]
    File { file: PathBuf, message: String },
    /// Malformed content, where it is.
    #[error("{position}: {message}")]
    At { position: Position, message: String },
    #[error("{user}: storage: {error}")]
    Storage { user: String, error: StorageError },
}

impl ImportError {
    pub fn at(position: &Position, message: impl Into<String>) -> ImportError {
        ImportError::At {
            position: position.clone(),
            message: message.into(),
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Accounts created.
    pub accounts: usize,
    /// Existing accounts overwritten (`replace`).
    pub replaced: usize,
    /// Existing accounts left as they were.
    pub existing: usize,
    pub roster_items: usize,
    pub pending_requests: usize,
    pub vcards: usize,
    pub private: usize,
    pub offline: usize,
    /// What the format carried and xmppd does not import, by kind.
    pub skipped: BTreeMap<String, usize>,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "accounts created: {}", self.accounts)?;
        writeln!(f, "accounts replaced: {}", self.replaced)?;
        writeln!(f, "accounts skipped (already present): {}", self.existing)?;
        writeln!(f, "roster items: {}", self.roster_items)?;
        writeln!(
            f,
            "pending subscription requests: {}",
            self.pending_requests
        )?;
        writeln!(f, "vCards: {}", self.vcards)?;
        writeln!(f, "private XML elements: {}", self.private)?;
        write!(f, "offline messages: {}", self.offline)?;
        for (kind, n) in &self.skipped {
            write!(f, "\nnot imported: {kind}: {n}")?;
        }
        Ok(())
    }
}

/// Where accounts go and come from.
#[derive(Clone)]
pub struct Stores {
    pub core: Arc<dyn Store>,
    pub personal: Arc<dyn PersonalStore>,
}

/// How an import treats an account that exists already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Left as it is (a second run of the same import goes on where the first stopped).
    Skip,
    /// Its credentials, roster, vCard and the private elements in the file are overwritten;
    /// offline messages are only added to accounts this import creates, never twice.
    Replace,
}

/// The host a `<host jid=.../>` names, if this server serves it.
fn served_host(hosts: &[String], jid: &str) -> Option<String> {
    let bare = jid::BareJid::new(jid).ok()?;
    if bare.node().is_some() {
        return None;
    }
    let domain = bare.domain().as_str().to_owned();
    hosts.contains(&domain).then_some(domain)
}

/// Reads every account of `path` (and of the files it includes), checking each.
fn read_all(
    path: &Path,
    hosts: &[String],
    mut each: impl FnMut(Account) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    let mut doc = Document::open(path)?;
    while let Some(user) = doc.next_user()? {
        let domain = served_host(hosts, &user.host).ok_or_else(|| {
            ImportError::at(
                &user.position,
                format!(
                    "host {:?} is not served here (server.hosts: {})",
                    user.host,
                    hosts.join(", ")
                ),
            )
        })?;
        let account =
            parse_user(&domain, &user.element).map_err(|e| ImportError::at(&user.position, e))?;
        each(account)?;
    }
    Ok(())
}

/// Checks the whole of `path` without writing anything; the number of accounts in it.
pub fn check(path: &Path, hosts: &[String]) -> Result<usize, ImportError> {
    let mut n = 0;
    read_all(path, hosts, |_| {
        n += 1;
        Ok(())
    })?;
    Ok(n)
}

/// Imports `path` into `stores` (see the crate's documentation).
pub async fn import(
    path: &Path,
    hosts: &[String],
    stores: &Stores,
    existing: Existing,
) -> Result<Counts, ImportError> {
    check(path, hosts)?;
    let mut counts = Counts::default();
    // The document is read a second time, now writing: accounts go one at a time, so memory
    // stays bounded by the largest account whatever the file's size.
    let mut doc = Document::open(path)?;
    while let Some(user) = doc.next_user()? {
        let Some(domain) = served_host(hosts, &user.host) else {
            continue;
        };
        let account =
            parse_user(&domain, &user.element).map_err(|e| ImportError::at(&user.position, e))?;
        store_account(stores, account, existing, &mut counts).await?;
    }
    Ok(counts)
}

/// SCRAM keys for every hash from a password in the clear, with fresh salts.
async fn keys_of(password: String) -> Result<Vec<xmppd_storage::StoredScram>, String> {
    let derive = move || {
        HashAlg::ALL
            .iter()
            .map(|alg| {
                ScramKeys::generate(*alg, &password, xmppd_auth::DEFAULT_ITERATIONS)
                    .map(|k| xmppd_auth::to_stored(&k))
                    .map_err(|e| format!("the password cannot be used: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    // PBKDF2 is slow on purpose: off the runtime's thread.
    tokio::task::spawn_blocking(derive)
        .await
        .map_err(|e| format!("key derivation failed: {e}"))?
}

async fn store_account(
    stores: &Stores,
    account: Account,
    existing: Existing,
    counts: &mut Counts,
) -> Result<(), ImportError> {
    let store = &stores.core;
    let user = account.user.clone();
    let storage = |error: StorageError| ImportError::Storage {
        user: user.jid(),
        error,
    };
    for (kind, n) in &account.skipped {
        *counts.skipped.entry(kind.clone()).or_default() += n;
    }
    let present = store.user_exists(&user).await.map_err(storage)?;
    if present && existing == Existing::Skip {
        counts.existing += 1;
        return Ok(());
    }
    let creds = match account.secret {
        Secret::Scram(keys) => keys,
        Secret::Password(p) => keys_of(p).await.map_err(|message| ImportError::File {
            file: PathBuf::from(user.jid()),
            message,
        })?,
    };
    if present {
        store
            .set_credentials(&user, &creds)
            .await
            .map_err(storage)?;
        let (_, old) = store.roster(&user).await.map_err(storage)?;
        for item in old {
            if !account.roster.iter().any(|i| i.jid == item.jid) {
                store
                    .remove_roster_item(&user, &item.jid)
                    .await
                    .map_err(storage)?;
            }
        }
        counts.replaced += 1;
    } else {
        match store.create_user(&user, &creds).await {
            Ok(()) => counts.accounts += 1,
            Err(StorageError::Tombstoned { .. }) => {
                // The name belonged to an account removed here recently: not taken over.
                *counts
                    .skipped
                    .entry("accounts whose name was removed recently".into())
                    .or_default() += 1;
                return Ok(());
            }
            Err(e) => return Err(storage(e)),
        }
    }
    for item in &account.roster {
        store.set_roster_item(&user, item).await.map_err(storage)?;
        counts.roster_items += 1;
    }
    for (contact, xml) in &account.pending {
        (store.add_pending_subscription(&user, contact, xml).await).map_err(storage)?;
        counts.pending_requests += 1;
    }
    if let Some(vcard) = &account.vcard {
        stores
            .personal
            .set_vcard(&user, vcard)
            .await
            .map_err(storage)?;
        counts.vcards += 1;
    }
    for (ns, xml) in &account.private {
        stores
            .personal
            .set_private(&user, ns, xml)
            .await
            .map_err(storage)?;
        counts.private += 1;
    }
    if !present {
        let now = now_ms();
        for (stamp, xml) in &account.offline {
            // Every message of the file is kept: the per-user limit refuses new messages only.
            let stored = store.push_offline(&user, stamp.unwrap_or(now), xml, usize::MAX);
            stored.await.map_err(storage)?;
            counts.offline += 1;
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Reads everything stored for `user` into the portable form.
pub async fn read_account(stores: &Stores, user: &UserRef) -> Result<Account, StorageError> {
    let store = &stores.core;
    let mut keys = Vec::new();
    for alg in HashAlg::ALL {
        if let Some(k) = store.credentials(user, alg.as_str()).await? {
            keys.push(k);
        }
    }
    let (_, roster) = store.roster(user).await?;
    let offline = (store.offline_messages(user).await?.into_iter())
        .map(|m| (Some(m.stamp_ms), m.xml))
        .collect();
    Ok(Account {
        user: user.clone(),
        secret: Secret::Scram(keys),
        roster,
        pending: store.pending_subscriptions(user).await?,
        vcard: stores.personal.vcard(user).await?,
        private: stores.personal.all_private(user).await?,
        offline,
        skipped: BTreeMap::new(),
    })
}

/// Writes one document per host into `dir` (created if missing): `DIR/HOST.xml`, each a
/// complete `<server-data/>` with its one `<host/>`. A file is written under a temporary name
/// and renamed when complete. Returns the files written and the number of accounts.
pub async fn export(
    dir: &Path,
    hosts: &[String],
    stores: &Stores,
) -> Result<(Vec<PathBuf>, usize), ImportError> {
    use std::io::Write;
    let io = |file: &Path, e: std::io::Error| ImportError::File {
        file: file.to_owned(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let (mut files, mut accounts) = (Vec::new(), 0);
    for host in hosts {
        let path = dir.join(format!("{host}.xml"));
        let tmp = dir.join(format!(".{host}.xml.partial"));
        let file = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        let mut out = std::io::BufWriter::new(file);
        write!(
            out,
            "<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='{NS_PIE}'>\n<host jid='{host}'>\n"
        )
        .map_err(|e| io(&tmp, e))?;
        let users = (stores.core.list_users(host).await).map_err(|error| ImportError::Storage {
            user: host.clone(),
            error,
        })?;
        for name in users {
            let user = UserRef::new(name, host.clone());
            let account =
                (read_account(stores, &user).await).map_err(|error| ImportError::Storage {
                    user: user.jid(),
                    error,
                })?;
            let el = user_element(&account).map_err(|message| ImportError::File {
                file: path.clone(),
                message,
            })?;
            let mut xml = Vec::new();
            xmppd_stream::serialize(&el, NS_PIE, &mut xml);
            out.write_all(&xml).map_err(|e| io(&tmp, e))?;
            out.write_all(b"\n").map_err(|e| io(&tmp, e))?;
            accounts += 1;
        }
        out.write_all(b"</host>\n</server-data>\n")
            .map_err(|e| io(&tmp, e))?;
        let file = out.into_inner().map_err(|e| io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        files.push(path);
    }
    Ok((files, accounts))
}

#[cfg(test)]
mod tests;
