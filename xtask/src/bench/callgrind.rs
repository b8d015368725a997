//! `cargo xtask bench --callgrind`: the instructions the server executes per login and per
//! message, counted by valgrind's callgrind.
//!
//! Wall-clock times on a shared machine vary by a quarter from run to run; instruction counts
//! of a fixed workload do not, so they show a regression of a few percent. Three phases, each a
//! fresh server under `valgrind --tool=callgrind` with the same registered users:
//!
//! - **idle**: start, then shut down (SIGTERM) with no client;
//! - **logins**: L sessions log in one after the other (TLS, SASL, bind, presence, roster),
//!   then close their streams one after the other, then shut down;
//! - **messages**: the same, with M chat messages between the logins and the closes.
//!
//! Per login is (logins − idle) / L, per message (messages − logins) / M; login here includes
//! the session's end. Every step waits for the server's answer before the next one starts, so
//! the server handles one stanza at a time in the same order on every run (each message is one
//! TLS record and is received before the next is sent), and the tokio runtime of the server
//! runs one worker thread (`TOKIO_WORKER_THREADS=1`): what is left to vary is little more than
//! how often a thread finds nothing to do. The client is not measured; it runs natively.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use super::client::{close, login_with_roster, wait_for, xml_escape, Session, Target};
use super::server::{database_bytes, register_users, write_config, ServerProcess, TempDir};
use super::{user_name, Options};

/// Sessions logged in by default: enough that a login's cost stands out from start-up's.
pub(super) const DEFAULT_LOGINS: usize = 50;
/// Messages of the message phase by default.
pub(super) const DEFAULT_MESSAGES: usize = 2000;
/// Under valgrind the server starts (and generates its certificate) about fifty times slower.
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// One step (a login, a message, a close) must finish within this; a safety net only.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// Shutting down includes writing the profile.
const EXIT_TIMEOUT: Duration = Duration::from_secs(300);

/// What a phase does between the server's start and its shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Idle,
    Logins,
    Messages,
}

impl Workload {
    const ALL: [Workload; 3] = [Workload::Idle, Workload::Logins, Workload::Messages];

    fn name(self) -> &'static str {
        match self {
            Workload::Idle => "idle",
            Workload::Logins => "logins",
            Workload::Messages => "messages",
        }
    }
}

/// Instructions (callgrind's `Ir`) of the three phases of one measurement, and the bytes of
/// the database files each phase left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Counts {
    idle: u64,
    logins: u64,
    messages: u64,
    logins_db: u64,
    messages_db: u64,
}

impl Counts {
    fn per_login(&self, logins: usize) -> f64 {
        self.logins.saturating_sub(self.idle) as f64 / logins as f64
    }

    fn per_message(&self, messages: usize) -> f64 {
        self.messages.saturating_sub(self.logins) as f64 / messages as f64
    }

    /// Database growth per message: what the message phase left beyond the logins phase.
    fn db_per_message(&self, messages: usize) -> f64 {
        self.messages_db.saturating_sub(self.logins_db) as f64 / messages as f64
    }
}

/// Measures `opts.repeat` times, prints the counts and their spread.
pub(super) fn run(opts: &Options, binary: &Path, out_dir: &Path) -> Result<()> {
    crate::ci::install_missing(
        &[("valgrind", "valgrind"), ("callgrind_annotate", "valgrind")],
        "the instruction counts need",
    )?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut runs = Vec::with_capacity(opts.repeat);
    for run in 1..=opts.repeat {
        let mut counts = [(0u64, 0u64); 3];
        for (slot, workload) in counts.iter_mut().zip(Workload::ALL) {
            let out = out_dir.join(format!("{}.{run}.out", workload.name()));
            let started = Instant::now();
            *slot = measure(opts, binary, workload, &out)
                .with_context(|| format!("phase {} of run {run}", workload.name()))?;
            eprintln!(
                "bench: run {run}, {}: {} instructions ({:.0} s under valgrind) in {}",
                workload.name(),
                grouped(slot.0),
                started.elapsed().as_secs_f64(),
                out.display()
            );
        }
        let [(idle, _), (logins, logins_db), (messages, messages_db)] = counts;
        runs.push(Counts {
            idle,
            logins,
            messages,
            logins_db,
            messages_db,
        });
    }
    print!("{}", table(opts, &runs));
    if opts.json {
        println!("{}", json(opts, &runs));
    }
    Ok(())
}

/// One phase: a fresh data directory, the server under callgrind, the workload, SIGTERM.
/// Returns the instructions and the bytes of the database files after the shutdown.
fn measure(opts: &Options, binary: &Path, workload: Workload, out: &Path) -> Result<(u64, u64)> {
    let work = TempDir::create()?;
    let config = write_config(&work.0, opts.archive)?;
    // Every phase starts from the same accounts, the idle one included.
    register_users(binary, &config, opts.clients)?;
    let _ = std::fs::remove_file(out);
    let mut valgrind = Command::new("valgrind");
    valgrind
        .arg("--tool=callgrind")
        .arg("--collect-atstart=yes")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(binary)
        // One worker: the same interleaving of the same tasks on every run.
        .env("TOKIO_WORKER_THREADS", "1");
    let mut server = ServerProcess::spawn(valgrind, &config, START_TIMEOUT)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let addr = server.direct_tls;
    server.drive(&runtime, drive(opts, workload, addr), EXIT_TIMEOUT)?;
    let profile =
        std::fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
    let instructions = total_instructions(&profile)
        .ok_or_else(|| anyhow!("no instruction total in {}", out.display()))?;
    Ok((instructions, database_bytes(binary, &config, &work.0)?))
}

/// The client's side of a phase; every step waits for its answer.
async fn drive(opts: &Options, workload: Workload, addr: std::net::SocketAddr) -> Result<()> {
    if workload == Workload::Idle {
        return Ok(());
    }
    let target = Target::tcp(addr)?;
    let mut sessions = Vec::with_capacity(opts.clients);
    for i in 0..opts.clients {
        let user = user_name(i);
        let session = step(login_with_roster(&target, &user, opts.sasl))
            .await
            .with_context(|| format!("login of {user}"))?;
        sessions.push(session);
    }
    if workload == Workload::Messages {
        for seq in 0..opts.messages {
            let (from, to) = message_pair(seq, sessions.len());
            step(send_one(&mut sessions, from, to, seq))
                .await
                .with_context(|| format!("message {seq}"))?;
        }
    }
    for (i, s) in sessions.into_iter().enumerate() {
        step(close(s))
            .await
            .with_context(|| format!("closing the stream of {}", user_name(i)))?;
    }
    Ok(())
}

pub(super) async fn step<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, work)
        .await
        .map_err(|_| anyhow!("no answer within {STEP_TIMEOUT:?}"))?
}

/// Sender and receiver of message `seq`: the pairs take turns, and within a pair the direction
/// alternates each round, so every session sends and receives the same number of messages.
fn message_pair(seq: usize, sessions: usize) -> (usize, usize) {
    let pairs = sessions / 2;
    let from = 2 * (seq % pairs) + (seq / pairs) % 2;
    (from, from ^ 1)
}

/// One chat message in one TLS record, and its arrival.
async fn send_one(sessions: &mut [Session], from: usize, to: usize, seq: usize) -> Result<()> {
    let stanza = format!(
        "<message to='{}' type='chat'><body>{seq}</body></message>",
        xml_escape(&sessions[to].jid)
    );
    sessions[from].send(&stanza).await?;
    let got = wait_for(&mut sessions[to], |el| el.name() == "message").await?;
    let body = got
        .children()
        .find(|c| c.name() == "body")
        .map(|b| b.text());
    if got.attr("type") == Some("error") || body.as_deref() != Some(seq.to_string().as_str()) {
        bail!("expected message {seq}, received {}", String::from(&got));
    }
    Ok(())
}

/// The total of the first event (callgrind's default is `Ir` alone): the `totals:` line that
/// ends the profile, or the `summary:` line of its header.
fn total_instructions(profile: &str) -> Option<u64> {
    let field = |prefix: &str| {
        profile
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    };
    let first_event = profile
        .lines()
        .find_map(|l| l.strip_prefix("events:"))
        .and_then(|events| events.split_whitespace().next());
    if first_event != Some("Ir") {
        return None;
    }
    field("totals:").or_else(|| field("summary:"))
}

/// `1234567` as `1 234 567`.
pub(super) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// (max − min) / min of `values`, in percent.
pub(super) fn spread(values: &[f64]) -> f64 {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if min > 0.0 {
        (max - min) / min * 100.0
    } else {
        0.0
    }
}

/// The rows of the report: a label and one value per run.
fn rows(opts: &Options, runs: &[Counts]) -> Vec<(String, Vec<f64>)> {
    let (l, m) = (opts.clients, opts.messages);
    let col = |f: &dyn Fn(&Counts) -> f64| runs.iter().map(f).collect::<Vec<_>>();
    let mut rows = vec![
        ("idle: start + shutdown".into(), col(&|c| c.idle as f64)),
        (format!("logins: + {l} logins"), col(&|c| c.logins as f64)),
        (
            format!("messages: + {m} messages"),
            col(&|c| c.messages as f64),
        ),
        ("per login".into(), col(&|c| c.per_login(l))),
        ("per message".into(), col(&|c| c.per_message(m))),
    ];
    if opts.archive {
        rows.push((
            "database bytes per message".into(),
            col(&|c| c.db_per_message(m)),
        ));
    }
    rows
}

fn table(opts: &Options, runs: &[Counts]) -> String {
    let mut out = format!(
        "instructions (callgrind Ir), {} logins with SASL {}, {} messages, archive {}\n",
        opts.clients,
        opts.sasl.name(),
        opts.messages,
        if opts.archive { "on" } else { "off" }
    );
    let rows = rows(opts, runs);
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (label, values) in &rows {
        let cells: Vec<String> = values
            .iter()
            .map(|v| format!("{:>15}", grouped(v.round() as u64)))
            .collect();
        out.push_str(&format!("{label:<width$}  {}", cells.join(" ")));
        if values.len() > 1 {
            out.push_str(&format!("  spread {:.2} %", spread(values)));
        }
        out.push('\n');
    }
    out
}

fn json(opts: &Options, runs: &[Counts]) -> String {
    let runs: Vec<String> = runs
        .iter()
        .map(|c| {
            format!(
                "{{\"idle\":{},\"logins\":{},\"messages\":{},\"per_login\":{:.0},\"per_message\":{:.0},\"db_bytes_per_message\":{:.0}}}",
                c.idle,
                c.logins,
                c.messages,
                c.per_login(opts.clients),
                c.per_message(opts.messages),
                c.db_per_message(opts.messages)
            )
        })
        .collect();
    format!(
        "{{\"logins\":{},\"messages\":{},\"sasl\":\"{}\",\"archive\":{},\"runs\":[{}]}}",
        opts.clients,
        opts.messages,
        opts.sasl.name(),
        opts.archive,
        runs.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_read_from_the_profile() {
        let profile = "# callgrind format\nversion: 1\ncmd: xmppd\nevents: Ir\n\
                       summary: 1234\n\nfn=(1) main\n3 10\n\ntotals: 1234\n";
        assert_eq!(total_instructions(profile), Some(1234));
        let header_only = "events: Ir\nsummary: 99\n";
        assert_eq!(total_instructions(header_only), Some(99));
        // Another first event would be counted as instructions: refuse it.
        assert_eq!(total_instructions("events: Dr Ir\ntotals: 5 6\n"), None);
        assert_eq!(total_instructions("events: Ir\n"), None);
        assert_eq!(total_instructions(""), None);
    }

    #[test]
    fn pairs_take_turns_and_alternate() {
        let sent: Vec<(usize, usize)> = (0..8).map(|seq| message_pair(seq, 4)).collect();
        assert_eq!(
            sent,
            [
                (0, 1),
                (2, 3),
                (1, 0),
                (3, 2),
                (0, 1),
                (2, 3),
                (1, 0),
                (3, 2)
            ]
        );
        let mut received = [0; 50];
        for seq in 0..2000 {
            let (from, to) = message_pair(seq, 50);
            assert_eq!(from ^ 1, to);
            received[to] += 1;
        }
        assert!(received.iter().all(|&n| n == 40), "{received:?}");
    }

    #[test]
    fn per_login_and_per_message() {
        let c = Counts {
            idle: 1_000,
            logins: 11_000,
            messages: 31_000,
            logins_db: 4_096,
            messages_db: 45_056,
        };
        assert_eq!(c.per_login(10), 1_000.0);
        assert_eq!(c.per_message(40), 500.0);
        assert_eq!(c.db_per_message(40), 1_024.0);
        assert_eq!(spread(&[100.0, 101.0, 100.5]), 1.0);
        assert_eq!(spread(&[7.0]), 0.0);
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_234_567), "1 234 567");
    }
}
