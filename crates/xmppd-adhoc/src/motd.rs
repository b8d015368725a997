//! The message of the day: one per served host, shown to each user once per change, as a
//! message from the host: at once to users online at the change, else at the user's first
//! available presence after it.
//!
//! The message lives in the [`UserDataStore`] under the host's own entry (empty localpart), so
//! it survives restarts and the CLI can set it while the server is down; each user's entry
//! remembers the version last shown. Versions are Unix milliseconds of the change, strictly
//! increasing per host. The current messages are cached in memory: everything that changes
//! them in a running server goes through [`Motd`].
//!
//! A message set or edited while users are online goes to their sessions at once, and counts as
//! seen for them (XEP-0133 §4.24 says users online when the message is set receive it then).
//! Deleting a message tells nobody.
//!
//! Not here: per-language messages.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use jid::{BareJid, FullJid};
use xmppd_core::address::Bare;
use xmppd_core::module::{Hooks, Module};
use xmppd_core::stanza;
use xmppd_core::{user_ref, Context};
use xmppd_storage::{StorageError, Store, UserDataStore, UserRef};

/// Key of the host's message, on the host's own entry.
const MOTD_KEY: &str = "xmppd:motd";
/// Key of the version a user last saw.
const SEEN_KEY: &str = "xmppd:motd-seen";

/// One host's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub version: i64,
    pub subject: Option<String>,
    pub body: String,
}

impl Message {
    fn encode(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.version,
            self.subject.as_deref().unwrap_or_default(),
            self.body
        )
    }

    fn decode(s: &str) -> Option<Message> {
        let mut parts = s.splitn(3, '\n');
        let version = parts.next()?.parse().ok()?;
        let subject = parts.next()?;
        Some(Message {
            version,
            subject: (!subject.is_empty()).then(|| subject.to_owned()),
            body: parts.next()?.to_owned(),
        })
    }
}

fn host_ref(host: &str) -> UserRef {
    UserRef::new("", host)
}

/// Reads the stored message of `host` (for tools working on the database directly).
pub async fn load(store: &dyn UserDataStore, host: &str) -> Result<Option<Message>, StorageError> {
    let raw = store.get_data(&host_ref(host), MOTD_KEY).await?;
    Ok(raw.as_deref().and_then(Message::decode))
}

/// Stores a new message for `host` (or removes it with `None`); returns the stored message.
pub async fn store(
    store: &dyn UserDataStore,
    host: &str,
    text: Option<(Option<&str>, &str)>,
) -> Result<Option<Message>, StorageError> {
    let Some((subject, body)) = text else {
        store.remove_data(&host_ref(host), MOTD_KEY).await?;
        return Ok(None);
    };
    let previous = load(store, host).await?.map_or(0, |m| m.version);
    let message = Message {
        version: stanza::now_ms().max(previous + 1),
        // The encoding keeps the subject on one line.
        subject: subject
            .map(|s| s.replace(['\r', '\n'], " ").trim().to_owned())
            .filter(|s| !s.is_empty()),
        body: body.to_owned(),
    };
    store
        .set_data(&host_ref(host), MOTD_KEY, &message.encode())
        .await?;
    Ok(Some(message))
}

/// The message-of-the-day module; also the handle that changes the message.
#[derive(Default)]
pub struct Motd {
    /// host → its message (`None`: known to have none); absent hosts are read on first use.
    cache: RwLock<HashMap<String, Option<Arc<Message>>>>,
}

impl Motd {
    pub fn new() -> Self {
        Motd::default()
    }

    /// The current message of `host`.
    pub async fn get(&self, store: &Arc<dyn Store>, host: &str) -> Option<Arc<Message>> {
        if let Some(m) = self.cache.read().ok().and_then(|c| c.get(host).cloned()) {
            return m;
        }
        match load(store.as_ref(), host).await {
            Ok(m) => {
                let m = m.map(Arc::new);
                self.remember(host, m.clone());
                m
            }
            Err(e) => {
                tracing::warn!(error = %e, host, "could not read the message of the day");
                None
            }
        }
    }

    /// Sets (`Some`) or deletes (`None`) the message of `host`. A new message also goes at
    /// once to every session on `host` (XEP-0133 §4.24: users online when it is set receive it
    /// then), and counts as seen for their users. Returns how many sessions took it.
    pub async fn set(
        &self,
        cx: &mut Context<'_>,
        host: &str,
        text: Option<(Option<&str>, &str)>,
    ) -> Result<usize, StorageError> {
        let m = store(cx.store().as_ref(), host, text).await?.map(Arc::new);
        self.remember(host, m.clone());
        Ok(match m {
            Some(m) => send_to_online(cx, host, &m).await,
            None => 0,
        })
    }

    fn remember(&self, host: &str, m: Option<Arc<Message>>) {
        if let Ok(mut c) = self.cache.write() {
            c.insert(host.to_owned(), m);
        }
    }
}

#[async_trait]
impl Module for Motd {
    fn name(&self) -> &'static str {
        "motd"
    }

    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }

    async fn on_available(&self, cx: &mut Context<'_>, jid: &FullJid) {
        let host = jid.domain().as_str();
        let Some(m) = self.get(cx.store(), host).await else {
            return;
        };
        if first_sight(cx.store(), &jid.bare(), m.version).await {
            let msg = crate::notice(host, jid, m.subject.as_deref(), &m.body);
            cx.deliver(jid, msg);
        }
    }
}

/// Sends `m` to every session on `host`, once per user who has not seen it; returns how many
/// sessions took it.
async fn send_to_online(cx: &mut Context<'_>, host: &str, m: &Message) -> usize {
    let mut users: BTreeMap<BareJid, Vec<FullJid>> = BTreeMap::new();
    for jid in cx.online() {
        if jid.domain().as_str().eq_ignore_ascii_case(host) {
            users.entry(jid.bare()).or_default().push(jid);
        }
    }
    let mut sent = 0;
    for (user, sessions) in users {
        if !first_sight(cx.store(), &user, m.version).await {
            continue;
        }
        for jid in sessions {
            let domain = jid.domain().as_str();
            let msg = crate::notice(domain, &jid, m.subject.as_deref(), &m.body);
            cx.deliver(&jid, msg);
            sent += 1;
        }
    }
    sent
}

/// Whether `user` has yet to see message `version`; if so it is recorded as seen. Recorded
/// before it is shown: a failed write must not show the message at every login.
async fn first_sight(store: &Arc<dyn Store>, user: &BareJid, version: i64) -> bool {
    let user = user_ref(user);
    let seen = store.get_data(&user, SEEN_KEY).await.ok().flatten();
    if seen.and_then(|s| s.parse::<i64>().ok()) >= Some(version) {
        return false;
    }
    if let Err(e) = store.set_data(&user, SEEN_KEY, &version.to_string()).await {
        tracing::warn!(error = %e, "could not record the message of the day as seen");
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_encoding_round_trips() {
        let m = Message {
            version: 42,
            subject: Some("S".into()),
            body: "line 1\nline 2\n".into(),
        };
        assert_eq!(Message::decode(&m.encode()), Some(m));
        let m = Message {
            version: 7,
            subject: None,
            body: String::new(),
        };
        assert_eq!(Message::decode(&m.encode()), Some(m));
        assert_eq!(Message::decode("x\ny\nz"), None);
        assert_eq!(Message::decode("1"), None);
    }
}
