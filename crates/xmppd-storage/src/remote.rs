//! What the engines on a database server (PostgreSQL, MariaDB/MySQL) share: their connection
//! settings and how a password is kept out of logs, the queue of ordered writes, and the
//! helpers their trait implementations use alike.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

use crate::{OfflineMessage, Queued, StorageError};

/// How to reach the database server. The password is kept apart from the URL so that the URL
/// can be logged; [`DbSettings::redacted`] is the only form of either that reaches a log or an
/// error.
#[derive(Clone)]
pub struct DbSettings {
    /// The engine's URL (`postgres://…`, `mysql://…`), with or without a password; PostgreSQL
    /// also takes a `key=value` connection string.
    pub url: String,
    /// The password, when it does not come in the URL (from a file or the environment).
    pub password: Option<String>,
    /// Connections kept at most.
    pub pool_size: usize,
    /// How long opening one connection may take.
    pub connect_timeout: Duration,
    /// How long a caller waits for a free connection before its call fails.
    pub wait_timeout: Duration,
}

impl std::fmt::Debug for DbSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSettings")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("wait_timeout", &self.wait_timeout)
            .finish()
    }
}

impl DbSettings {
    /// The URL with any password replaced by `***`, for logs and errors.
    pub fn redacted(&self) -> String {
        redact_url(&self.url)
    }

    /// `e` as text with the settings' password, should a parser echo it, replaced.
    pub(crate) fn scrub(&self, e: impl std::fmt::Display) -> String {
        let mut text = e.to_string();
        if let Some(p) = self.password.as_deref().filter(|p| !p.is_empty()) {
            text = text.replace(p, "***");
        }
        redact_url(&text)
    }

    /// A failure to open the store, naming the database without its password.
    pub(crate) fn opening_failed(&self, e: StorageError) -> StorageError {
        match e {
            StorageError::Backend(m) => {
                StorageError::Backend(format!("database {}: {}", self.redacted(), self.scrub(m)))
            }
            other => other,
        }
    }
}

/// `url` with the password of a `scheme://user:password@host` URL, or of a `password=` pair
/// in a `key=value` string or a query, replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@').map(|i| rest + i) {
            if let Some(colon) = out[rest..at].find(':').map(|i| rest + i) {
                out.replace_range(colon + 1..at, "***");
            }
        }
    }
    // `password=...` in a query string (`&` ends it) or a key=value string (a space does).
    let mut from = 0;
    while let Some(i) = out[from..].find("password=").map(|i| from + i) {
        let start = i + "password=".len();
        let end = out[start..]
            .find(['&', ' '])
            .map_or(out.len(), |j| start + j);
        out.replace_range(start..end, "***");
        from = start + 3;
    }
    out
}

/// `url` without the query parameter `key`, and that parameter's (percent-decoded) value.
pub(crate) fn take_query_param(url: &str, key: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut value = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some((k, v)) if k == key => {
                value = Some(percent_decode(v));
                false
            }
            _ => true,
        })
        .collect();
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, value)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

type OrderedJob<P> = Box<dyn FnOnce(P) -> Queued<()> + Send>;

/// Writes that commit in the order they were queued (see [`crate::RoomStore::save_room`]): one
/// task runs them one after the other, each on a connection of the pool `P`.
pub(crate) struct Ordered<P> {
    jobs: mpsc::UnboundedSender<OrderedJob<P>>,
}

impl<P: Clone + Send + 'static> Ordered<P> {
    /// Starts the task that runs the queued writes on `pool` (on the current tokio runtime).
    pub(crate) fn start(pool: P) -> Ordered<P> {
        let (jobs, mut queued) = mpsc::unbounded_channel::<OrderedJob<P>>();
        tokio::spawn(async move {
            while let Some(job) = queued.recv().await {
                let _ = job(pool.clone()).await;
            }
        });
        Ordered { jobs }
    }

    /// Queues a write behind every write queued before it. Returns once queued; the future
    /// resolves at commit.
    pub(crate) fn queue<F>(&self, f: F) -> Queued<()>
    where
        F: FnOnce(P) -> Queued<()> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: OrderedJob<P> = Box::new(move |pool| {
            let run = f(pool);
            Box::pin(async move {
                let _ = tx.send(run.await);
                Ok(())
            })
        });
        if self.jobs.send(job).is_err() {
            return Box::pin(std::future::ready(Err(stopped())));
        }
        Box::pin(async move { rx.await.map_err(|_| stopped())? })
    }
}

/// One offline message to store ([`crate::OfflineStore::push_offline`]).
#[derive(Clone)]
pub(crate) struct Push {
    pub(crate) user: crate::UserRef,
    pub(crate) stamp_ms: i64,
    pub(crate) xml: String,
    pub(crate) max: usize,
}

/// Pushes written in one transaction at most.
const MAX_PUSHES: usize = 256;

type PushJob = (Push, oneshot::Sender<Result<bool, StorageError>>);

/// How an engine writes a batch of pushes in one transaction: for each, whether it was stored
/// (false: its account's store was full), in the batch's order.
pub(crate) type WritePushes<P> = fn(P, std::sync::Arc<[Push]>) -> Queued<Vec<bool>>;

/// Group commit of offline messages on PostgreSQL (MariaDB stores each push in a transaction
/// of its own: batched the same way it measured slower, see docs/BENCHMARKS.md): one task
/// per store takes the pushes queued while the previous transaction ran (up to
/// [`MAX_PUSHES`]) and writes them in one transaction, answering each after its commit. Each push alone would be a transaction of its
/// own, and with a transaction's flush per push the pool's size would bound the rate. Pushes
/// are written in the order they were queued, so the ids of one account's messages follow the
/// order its senders' messages came in. When the database refuses a batch, its pushes are
/// written again one transaction each, so that only the push it refuses fails.
pub(crate) struct PushQueue {
    jobs: mpsc::UnboundedSender<PushJob>,
}

impl PushQueue {
    /// Starts the task on the current tokio runtime; `write` runs each batch on `pool`.
    pub(crate) fn start<P: Clone + Send + 'static>(pool: P, write: WritePushes<P>) -> PushQueue {
        let (jobs, mut queued) = mpsc::unbounded_channel::<PushJob>();
        tokio::spawn(async move {
            while let Some(first) = queued.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_PUSHES {
                    match queued.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let (pushes, answers): (Vec<Push>, Vec<_>) = batch.into_iter().unzip();
                // Shared with the write, kept for the rare retry push by push: no copy of the
                // stanzas per batch.
                let pushes: std::sync::Arc<[Push]> = pushes.into();
                let several = pushes.len() > 1;
                match write(pool.clone(), pushes.clone()).await {
                    Ok(stored) => {
                        for (answer, stored) in answers.into_iter().zip(stored) {
                            let _ = answer.send(Ok(stored));
                        }
                    }
                    Err(e) if !several => {
                        if let Some(answer) = answers.into_iter().next() {
                            let _ = answer.send(Err(e));
                        }
                    }
                    Err(_) => {
                        for (push, answer) in pushes.iter().zip(answers) {
                            let alone = write(pool.clone(), [push.clone()].into()).await;
                            let _ = answer.send(alone.map(|s| s.first().copied().unwrap_or(false)));
                        }
                    }
                }
            }
        });
        PushQueue { jobs }
    }

    /// Queues `push`; answers once its transaction committed.
    pub(crate) async fn push(&self, push: Push) -> Result<bool, StorageError> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send((push, tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Which of `pushes` fit, given the messages each account holds (`held`, by account): in
/// order, each push takes a place while its account holds fewer than its `max`.
pub(crate) fn fitting(
    pushes: &[Push],
    mut held: std::collections::HashMap<crate::UserRef, usize>,
) -> Vec<bool> {
    pushes
        .iter()
        .map(|p| {
            let n = held.entry(p.user.clone()).or_insert(0);
            let fits = *n < p.max;
            *n += usize::from(fits);
            fits
        })
        .collect()
}

/// The distinct accounts of `pushes`, in the order of their JIDs: locks taken in this order
/// by every process cannot deadlock.
pub(crate) fn accounts(pushes: &[Push]) -> Vec<crate::UserRef> {
    let mut users: Vec<crate::UserRef> = pushes.iter().map(|p| p.user.clone()).collect();
    users.sort_by_key(|u| u.jid());
    users.dedup();
    users
}

/// The messages of `rows` (id, stamp, xml, in id order) that fit: at most `max_bytes` of XML
/// unless the first alone is larger.
pub(crate) fn fit_page(
    rows: impl IntoIterator<Item = (i64, i64, String)>,
    max_bytes: usize,
) -> Vec<OfflineMessage> {
    let (mut page, mut bytes) = (Vec::new(), 0usize);
    for (id, stamp_ms, xml) in rows {
        bytes += xml.len();
        if bytes > max_bytes && !page.is_empty() {
            break;
        }
        page.push(OfflineMessage { id, stamp_ms, xml });
    }
    page
}

/// A `LIMIT` for at most `max_count` rows.
pub(crate) fn limit(max_count: usize) -> i64 {
    i64::try_from(max_count).unwrap_or(i64::MAX)
}

/// A group listed twice is one group, in the place it was first named.
pub(crate) fn distinct_groups(groups: &[String]) -> Vec<&String> {
    let mut out: Vec<&String> = Vec::with_capacity(groups.len());
    for g in groups {
        if !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

/// A call that found no connection: the database is down or every connection is busy.
pub(crate) fn unavailable(why: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(format!("database unavailable: {why}"))
}

fn stopped() -> StorageError {
    StorageError::Backend("storage task stopped".into())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn corrupt(what: &str) -> StorageError {
    StorageError::Backend(format!("corrupt value in database: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_appear_in_the_redacted_url() {
        for (url, want) in [
            (
                "postgres://xmppd:s3cret@db.example:5432/xmppd",
                "postgres://xmppd:***@db.example:5432/xmppd",
            ),
            (
                "postgresql://xmppd@db/xmppd?password=s3cret&sslmode=disable",
                "postgresql://xmppd@db/xmppd?password=***&sslmode=disable",
            ),
            (
                "host=/run/pg user=xmppd password=s3cret dbname=x",
                "host=/run/pg user=xmppd password=*** dbname=x",
            ),
            ("postgres://xmppd@db/xmppd", "postgres://xmppd@db/xmppd"),
            ("postgres://a:p@ss@host/db", "postgres://a:***@host/db"),
            (
                "mysql://xmppd:s3cret@db:3306/xmppd?require_ssl=true",
                "mysql://xmppd:***@db:3306/xmppd?require_ssl=true",
            ),
        ] {
            assert_eq!(redact_url(url), want);
            assert!(!redact_url(url).contains("s3cret"));
        }
        let settings = DbSettings {
            url: "postgres://xmppd:s3cret@db/x".into(),
            password: Some("other".into()),
            pool_size: 1,
            connect_timeout: Duration::from_secs(1),
            wait_timeout: Duration::from_secs(1),
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("other"),
            "{shown}"
        );
        assert_eq!(settings.scrub("no other here"), "no *** here");
    }

    #[test]
    fn a_page_holds_the_first_message_even_when_it_is_too_large() {
        let rows = |sizes: &[usize]| -> Vec<(i64, i64, String)> {
            (sizes.iter().enumerate())
                .map(|(i, n)| (i as i64, 0, "x".repeat(*n)))
                .collect()
        };
        assert_eq!(fit_page(rows(&[10, 10, 10]), 25).len(), 2);
        assert_eq!(fit_page(rows(&[100, 1]), 25).len(), 1);
        assert!(fit_page(rows(&[]), 25).is_empty());
    }
}
