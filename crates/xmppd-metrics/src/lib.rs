//! xmppd's metrics, as the administration listener serves them on `/metrics` (Prometheus text
//! exposition format 0.0.4).
//!
//! The set of metrics is fixed, so each one is a static of atomics and the code that counts
//! calls a function of this crate: no registry, no lookup by name or label on the hot path, no
//! lock. Counters on the stanza path ([`stanza_in`], [`stanza_out`]) are sharded: each thread
//! adds to its own cache line, and [`encode`] sums the shards, so sessions on different cores
//! never contend for one line. A counter is read without stopping writers: a scrape may miss
//! what is being added at that instant, never more.
//!
//! Why no metrics library: with a fixed set of metrics they would add a registry and label maps
//! (a lock or a hash per labelled increment) to do what a few statics do, and the text format
//! is a few lines per metric (docs/API.md).
//!
//! **Invariant:** no dependencies, no I/O: the crates that count stay free of anything but
//! this.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

const SHARDS: usize = 8;

/// One cache line, so that shards of a counter never share one.
#[repr(align(64))]
struct Line(AtomicU64);

/// A monotonic counter, sharded by thread.
pub struct Counter([Line; SHARDS]);

impl Counter {
    pub const fn new() -> Counter {
        Counter([const { Line(AtomicU64::new(0)) }; SHARDS])
    }

    pub fn add(&self, n: u64) {
        self.0[shard()].0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.iter().map(|l| l.0.load(Relaxed)).sum()
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

/// This thread's shard, handed out in turn as threads first count.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    MINE.with(|m| {
        if m.get() == usize::MAX {
            m.set(NEXT.fetch_add(1, Relaxed) % SHARDS);
        }
        m.get()
    })
}

/// Upper bounds of the storage commit histogram, in seconds.
const COMMIT_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram of durations with fixed bounds: per-bucket counts (made cumulative when
/// encoded), their sum in microseconds, and the count.
pub struct Histogram {
    buckets: [AtomicU64; COMMIT_BOUNDS.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; COMMIT_BOUNDS.len() + 1],
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = COMMIT_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(COMMIT_BOUNDS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }
}

/// How a client session is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The plain port, upgraded with STARTTLS.
    Tcp,
    /// TLS from the first byte (XEP-0368).
    Tls,
    /// Carried by HTTP: XMPP over WebSocket.
    WebSocket,
    /// Carried by HTTP: XMPP over BOSH.
    Bosh,
}

const TRANSPORTS: [(Transport, &str); 4] = [
    (Transport::Tcp, "tcp"),
    (Transport::Tls, "tls"),
    (Transport::WebSocket, "websocket"),
    (Transport::Bosh, "bosh"),
];

const KINDS: [&str; 3] = ["message", "presence", "iq"];

/// The mechanisms counted by name; any other counts as `other`, a failure before a mechanism
/// was chosen as `none`.
const MECHANISMS: [&str; 14] = [
    "PLAIN",
    "SCRAM-SHA-1",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-512",
    "SCRAM-SHA-512-PLUS",
    "HT-SHA-256-NONE",
    "HT-SHA-256-ENDP",
    "HT-SHA-256-EXPR",
    "HT-SHA-256-UNIQ",
    "EXTERNAL",
    "other",
    "none",
];

static SESSIONS: [AtomicI64; TRANSPORTS.len()] = [const { AtomicI64::new(0) }; TRANSPORTS.len()];
static STANZAS_IN: [Counter; 3] = [const { Counter::new() }; 3];
static STANZAS_OUT: [Counter; 3] = [const { Counter::new() }; 3];
/// Per mechanism: successes, failures.
static AUTH: [[AtomicU64; 2]; MECHANISMS.len()] =
    [const { [const { AtomicU64::new(0) }; 2] }; MECHANISMS.len()];
static QUEUE_OVERFLOWS: AtomicU64 = AtomicU64::new(0);
static STORAGE_COMMITS: Histogram = Histogram::new();
/// Bytes uploaded (stored), bytes downloaded.
static UPLOAD_BYTES: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// Counts a connected client session of `transport` until the guard is dropped.
pub fn session_opened(transport: Transport) -> SessionGuard {
    SESSIONS[transport as usize].fetch_add(1, Relaxed);
    SessionGuard(transport)
}

/// Keeps a session counted (see [`session_opened`]).
#[must_use = "the session counts only while the guard lives"]
#[derive(Debug)]
pub struct SessionGuard(Transport);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        SESSIONS[self.0 as usize].fetch_sub(1, Relaxed);
    }
}

fn kind(name: &str) -> Option<usize> {
    KINDS.iter().position(|k| *k == name)
}

/// A stanza read from a client session (`message`, `presence` or `iq`).
pub fn stanza_in(name: &str) {
    if let Some(i) = kind(name) {
        STANZAS_IN[i].add(1);
    }
}

/// A stanza written to a client session.
pub fn stanza_out(name: &str) {
    if let Some(i) = kind(name) {
        STANZAS_OUT[i].add(1);
    }
}

/// A SASL exchange ended: `mechanism` (`None` before one was chosen) succeeded or failed.
pub fn auth(mechanism: Option<&str>, success: bool) {
    let name = mechanism.unwrap_or("none");
    let i = (MECHANISMS.iter().position(|m| *m == name)).unwrap_or(MECHANISMS.len() - 2);
    AUTH[i][usize::from(!success)].fetch_add(1, Relaxed);
}

/// A session was closed because its queue was full (it read too slowly).
pub fn queue_overflow() {
    QUEUE_OVERFLOWS.fetch_add(1, Relaxed);
}

/// A storage transaction committed after `d` (from its begin).
pub fn storage_commit(d: Duration) {
    STORAGE_COMMITS.observe(d);
}

/// Bytes of an uploaded file, once stored.
pub fn upload_stored(bytes: u64) {
    UPLOAD_BYTES[0].fetch_add(bytes, Relaxed);
}

/// Bytes of uploaded files sent to a downloader.
pub fn upload_served(bytes: u64) {
    UPLOAD_BYTES[1].fetch_add(bytes, Relaxed);
}

/// Client sessions connected now, over every transport.
pub fn sessions() -> i64 {
    SESSIONS.iter().map(|s| s.load(Relaxed)).sum()
}

/// Messages read from client sessions since the start.
pub fn messages_in() -> u64 {
    STANZAS_IN[0].get()
}

/// Writes `# HELP` and `# TYPE` of one metric.
fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Every metric in the Prometheus text format (version 0.0.4).
pub fn encode() -> String {
    let mut out = String::with_capacity(4096);
    let o = &mut out;
    head(o, "xmppd_sessions", "gauge", "Connected client sessions.");
    for (t, label) in TRANSPORTS {
        let n = SESSIONS[t as usize].load(Relaxed).max(0);
        let _ = writeln!(o, "xmppd_sessions{{transport=\"{label}\"}} {n}");
    }
    for (name, help, counters) in [
        (
            "xmppd_stanzas_in_total",
            "Stanzas read from client sessions.",
            &STANZAS_IN,
        ),
        (
            "xmppd_stanzas_out_total",
            "Stanzas written to client sessions.",
            &STANZAS_OUT,
        ),
    ] {
        head(o, name, "counter", help);
        for (kind, c) in KINDS.iter().zip(counters) {
            let _ = writeln!(o, "{name}{{kind=\"{kind}\"}} {}", c.get());
        }
    }
    head(
        o,
        "xmppd_auth_total",
        "counter",
        "SASL authentications by mechanism and result.",
    );
    for (mech, counts) in MECHANISMS.iter().zip(&AUTH) {
        for (result, c) in ["success", "failure"].iter().zip(counts) {
            let n = c.load(Relaxed);
            let _ = writeln!(
                o,
                "xmppd_auth_total{{mechanism=\"{mech}\",result=\"{result}\"}} {n}"
            );
        }
    }
    head(
        o,
        "xmppd_queue_overflows_total",
        "counter",
        "Sessions closed because their outbound queue was full.",
    );
    let _ = writeln!(
        o,
        "xmppd_queue_overflows_total {}",
        QUEUE_OVERFLOWS.load(Relaxed)
    );
    let name = "xmppd_storage_commit_seconds";
    head(
        o,
        name,
        "histogram",
        "Time from the begin of a storage transaction (a batch of writes) to its commit.",
    );
    let mut cumulative = 0;
    for (i, bucket) in STORAGE_COMMITS.buckets.iter().enumerate() {
        cumulative += bucket.load(Relaxed);
        let le = COMMIT_BOUNDS
            .get(i)
            .map_or("+Inf".into(), |b| b.to_string());
        let _ = writeln!(o, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let sum = STORAGE_COMMITS.sum_us.load(Relaxed) as f64 / 1e6;
    let _ = writeln!(o, "{name}_sum {sum}\n{name}_count {cumulative}");
    head(
        o,
        "xmppd_upload_bytes_total",
        "counter",
        "Bytes of HTTP file upload: stored (in) and served (out).",
    );
    for (dir, c) in ["in", "out"].iter().zip(&UPLOAD_BYTES) {
        let n = c.load(Relaxed);
        let _ = writeln!(o, "xmppd_upload_bytes_total{{direction=\"{dir}\"}} {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `line_start` (name and labels) in `text`.
    fn sample(text: &str, line_start: &str) -> f64 {
        let line = (text.lines())
            .find(|l| l.starts_with(line_start) && l[line_start.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"));
        line[line_start.len()..].trim().parse().unwrap()
    }

    #[test]
    fn sharded_counters_sum_every_thread() {
        let c = std::sync::Arc::new(Counter::new());
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.add(1)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(c.get(), 12_000);
    }

    #[test]
    fn the_exposition_holds_every_family_with_its_counts() {
        // Tests share the statics: read before, act, read after.
        let before = encode();
        let guard = session_opened(Transport::WebSocket);
        stanza_in("message");
        stanza_in("stream:features");
        stanza_out("iq");
        auth(Some("SCRAM-SHA-256"), true);
        auth(Some("X-UNKNOWN"), false);
        auth(None, false);
        storage_commit(Duration::from_micros(700));
        storage_commit(Duration::from_secs(30));
        upload_stored(10);
        let after = encode();
        drop(guard);
        let delta = |s: &str| sample(&after, s) - sample(&before, s);
        assert_eq!(delta("xmppd_sessions{transport=\"websocket\"}"), 1.0);
        assert_eq!(
            sample(&encode(), "xmppd_sessions{transport=\"websocket\"}"),
            sample(&before, "xmppd_sessions{transport=\"websocket\"}")
        );
        assert_eq!(delta("xmppd_stanzas_in_total{kind=\"message\"}"), 1.0);
        assert_eq!(delta("xmppd_stanzas_out_total{kind=\"iq\"}"), 1.0);
        let auth_line = "xmppd_auth_total{mechanism=\"SCRAM-SHA-256\",result=\"success\"}";
        assert_eq!(delta(auth_line), 1.0);
        assert_eq!(
            delta("xmppd_auth_total{mechanism=\"other\",result=\"failure\"}"),
            1.0
        );
        assert_eq!(
            delta("xmppd_auth_total{mechanism=\"none\",result=\"failure\"}"),
            1.0
        );
        // Cumulative buckets: 700 µs is within 1 ms, 30 s only within +Inf.
        let name = "xmppd_storage_commit_seconds";
        assert_eq!(delta(&format!("{name}_bucket{{le=\"0.0005\"}}")), 0.0);
        assert_eq!(delta(&format!("{name}_bucket{{le=\"0.001\"}}")), 1.0);
        assert_eq!(delta(&format!("{name}_bucket{{le=\"10\"}}")), 1.0);
        assert_eq!(delta(&format!("{name}_bucket{{le=\"+Inf\"}}")), 2.0);
        assert_eq!(delta(&format!("{name}_count")), 2.0);
        assert!((delta(&format!("{name}_sum")) - 30.0007).abs() < 1e-6);
        assert_eq!(delta("xmppd_upload_bytes_total{direction=\"in\"}"), 10.0);
        // Every sample line belongs to a family announced before it.
        let mut families = Vec::new();
        for line in after.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                families.push(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(
                    families.iter().any(|f| name == f
                        || name
                            .strip_prefix(f.as_str())
                            .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))),
                    "{line}"
                );
            }
        }
    }
}
