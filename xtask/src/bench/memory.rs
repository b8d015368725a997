//! `cargo xtask bench --memory`: what an idle TLS session costs the server in memory.
//!
//! The timed run samples memory as well, but after logins 64 at a time on a runtime with one
//! worker per core, where the allocator's per-thread arenas and handshakes still in flight move
//! the figure by several KiB from run to run. Here the sessions log in one after the other
//! (TLS, SASL, bind, presence, roster), each waiting for its roster before the next starts, on
//! a server with one runtime worker (`TOKIO_WORKER_THREADS=1`), and the server's resident
//! memory (`VmRSS`) is read once it stops moving at three points: idle, with half of the
//! sessions, with all of them. Two figures come out:
//!
//! - **average**: (all − idle) / N, which includes what the first sessions set up once (the
//!   database pages read, buffers the allocator keeps);
//! - **marginal**: (all − half) / (N − N/2), what one more session costs once that is done.
//!
//! Resident memory counts pages and the allocator keeps what it freed: the marginal figure of
//! a few hundred sessions usually repeats to a few tenths of a KiB, but a run now and then
//! lands some KiB away, hence `--repeat`.
//!
//! Each run measures three servers, each started afresh:
//!
//! - **plain** sessions, as above;
//! - **phone** sessions, which after the roster also enable stream management with resumption
//!   (XEP-0198), message carbons (XEP-0280) and tell the server they are inactive (XEP-0352),
//!   as mobile clients run;
//! - a **flood** of [`FLOOD`] connections that stop before authenticating (TLS, the stream
//!   header, the features read): the server's memory idle, with all of them open, and once
//!   they are all closed, which shows whether the memory of a burst goes back to the system.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::callgrind::{grouped, spread, step};
use super::client::{close, login_with_roster, wait_for, Session, Target};
use super::server::{
    read_rss_kib, register_users, write_config, write_config_with, ServerProcess, TempDir,
};
use super::{user_name, Options};

/// Sessions by default: enough that a page more or less is under 0.1 KiB per session.
pub(super) const DEFAULT_SESSIONS: usize = 1000;
const START_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Resident memory counts as settled when it reads the same this many times in a row…
const STABLE_READS: usize = 3;
/// …this far apart…
const READ_INTERVAL: Duration = Duration::from_millis(200);
/// …or after this long, whatever it reads then.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// After the flood is closed, the wait before its memory is read: two of the server's
/// once-a-second checks of its allocator's free memory, and a margin.
const TRIM_WAIT: Duration = Duration::from_millis(2500);

/// Before the sessions' memory is read: the server frees an established session's input
/// buffers once it has read nothing for two seconds (`IDLE_RELEASE` in xmppd-c2s), and a
/// margin.
const IDLE_WAIT: Duration = Duration::from_millis(2500);

/// Connections of the pre-authentication flood.
const FLOOD: usize = 3000;
/// Flood connections set up at once.
const FLOOD_PARALLEL: usize = 32;
/// What a phone turns on after its roster: stream management with resumption, carbons, and
/// inactivity (XEP-0352 sends no answer; the carbons result comes after it).
const PHONE_SETUP: [&str; 3] = [
    "<enable xmlns='urn:xmpp:sm:3' resume='true'/>",
    "<inactive xmlns='urn:xmpp:csi:0'/>",
    "<iq type='set' id='carbons1'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
];

/// Resident memory (KiB) at the three points of one measurement of sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    idle: u64,
    half: u64,
    all: u64,
}

/// Resident memory (KiB) around the flood of connections that do not log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flood {
    idle: u64,
    open: u64,
    closed: u64,
}

impl Flood {
    fn per_connection(&self) -> f64 {
        self.open.saturating_sub(self.idle) as f64 / FLOOD as f64
    }
}

/// The three measurements of one run.
#[derive(Debug, Clone, Copy)]
struct Run {
    plain: Sample,
    phone: Sample,
    flood: Flood,
}

/// What the sessions of a measurement do after their login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    Plain,
    Phone,
}

impl Sample {
    fn average(&self, sessions: usize) -> f64 {
        self.all.saturating_sub(self.idle) as f64 / sessions as f64
    }

    fn marginal(&self, sessions: usize) -> f64 {
        self.all.saturating_sub(self.half) as f64 / (sessions - sessions / 2) as f64
    }
}

/// Measures `opts.repeat` times, each on a fresh server, and prints the figures.
pub(super) fn run(opts: &Options, binary: &Path) -> Result<()> {
    let mut runs = Vec::with_capacity(opts.repeat);
    for run in 1..=opts.repeat {
        let started = Instant::now();
        let sample = |profile| {
            let sample = measure(opts, binary, profile)
                .with_context(|| format!("run {run}, {profile:?} sessions"))?;
            eprintln!(
                "bench: run {run}, {profile:?}: idle {} KiB, {} sessions {} KiB, {} sessions {} KiB",
                sample.idle,
                opts.clients / 2,
                sample.half,
                opts.clients,
                sample.all,
            );
            anyhow::Ok(sample)
        };
        let (plain, phone) = (sample(Profile::Plain)?, sample(Profile::Phone)?);
        let flood = measure_flood(opts, binary).with_context(|| format!("run {run}, flood"))?;
        eprintln!(
            "bench: run {run}, flood: idle {} KiB, {FLOOD} open {} KiB, closed {} KiB ({:.0} s)",
            flood.idle,
            flood.open,
            flood.closed,
            started.elapsed().as_secs_f64()
        );
        runs.push(Run {
            plain,
            phone,
            flood,
        });
    }
    print!("{}", table(opts, &runs));
    if opts.json {
        println!("{}", json(opts, &runs));
    }
    Ok(())
}

fn measure(opts: &Options, binary: &Path, profile: Profile) -> Result<Sample> {
    let work = TempDir::create()?;
    let config = write_config(&work.0, opts.archive)?;
    register_users(binary, &config, opts.clients)?;
    let mut command = Command::new(binary);
    // One worker: one allocator arena for the sessions' tasks, the same on every run.
    command.env("TOKIO_WORKER_THREADS", "1");
    let mut server = ServerProcess::spawn(command, &config, START_TIMEOUT)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let (pid, addr) = (server.pid(), server.direct_tls);
    server.drive(&runtime, drive(opts, pid, addr, profile), EXIT_TIMEOUT)
}

/// The flood on a server of its own, with a handshake timeout long enough that none of its
/// connections is closed by the server while it is measured.
fn measure_flood(opts: &Options, binary: &Path) -> Result<Flood> {
    let work = TempDir::create()?;
    let config = write_config_with(&work.0, opts.archive, "handshake_timeout_secs = 3600")?;
    let mut command = Command::new(binary);
    command.env("TOKIO_WORKER_THREADS", "1");
    let mut server = ServerProcess::spawn(command, &config, START_TIMEOUT)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let (pid, addr) = (server.pid(), server.direct_tls);
    server.drive(&runtime, flood(pid, addr), EXIT_TIMEOUT)
}

async fn flood(pid: u32, addr: std::net::SocketAddr) -> Result<Flood> {
    let idle = settled_rss(pid).await?;
    let target = std::sync::Arc::new(Target::tcp(addr)?);
    let mut open = Vec::with_capacity(FLOOD);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..FLOOD {
        if tasks.len() == FLOOD_PARALLEL {
            open.push(tasks.join_next().await.context("flood task")???);
        }
        let target = std::sync::Arc::clone(&target);
        tasks.spawn(async move {
            step(pre_auth(&target))
                .await
                .with_context(|| format!("flood connection {i}"))
        });
    }
    while let Some(done) = tasks.join_next().await {
        open.push(done.context("flood task")??);
    }
    let up = settled_rss(pid).await?;
    drop(open);
    // The server sees every connection end (a reset or EOF) before its memory settles. Its
    // allocator is asked to return free memory once a second (`bins/xmppd/src/trim.rs`):
    // memory may read the same for 600 ms before that, so the reading waits past two ticks.
    tokio::time::sleep(TRIM_WAIT).await;
    let closed = settled_rss(pid).await?;
    Ok(Flood {
        idle,
        open: up,
        closed,
    })
}

/// A connection that stops where a client would authenticate: TLS, the stream header, and
/// the stream features read.
async fn pre_auth(
    target: &Target,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut tls = target.connect_tls().await?;
    let header = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{}' version='1.0'>",
        super::DOMAIN
    );
    tls.write_all(header.as_bytes()).await?;
    tls.flush().await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(18).any(|w| w == b"</stream:features>") {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            bail!("the server closed the connection before its features");
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(tls)
}

/// After the roster, what a phone turns on ([`PHONE_SETUP`]); done once carbons answered and
/// stream management is on.
async fn phone_setup(s: &mut Session) -> Result<()> {
    for stanza in PHONE_SETUP {
        s.send(stanza).await?;
    }
    wait_for(s, |el| el.name() == "enabled" || el.name() == "failed")
        .await
        .and_then(|el| match el.name() {
            "enabled" => Ok(()),
            _ => Err(anyhow!("stream management refused")),
        })?;
    wait_for(s, |el| {
        el.name() == "iq" && el.attr("id") == Some("carbons1")
    })
    .await?;
    Ok(())
}

async fn drive(
    opts: &Options,
    pid: u32,
    addr: std::net::SocketAddr,
    profile: Profile,
) -> Result<Sample> {
    let idle = settled_rss(pid).await?;
    let target = Target::tcp(addr)?;
    let mut sessions = Vec::with_capacity(opts.clients);
    let mut half = idle;
    for i in 0..opts.clients {
        if i == opts.clients / 2 {
            tokio::time::sleep(IDLE_WAIT).await;
            half = settled_rss(pid).await?;
        }
        let user = user_name(i);
        let mut session = step(login_with_roster(&target, &user, opts.sasl))
            .await
            .with_context(|| format!("login of {user}"))?;
        if profile == Profile::Phone {
            step(phone_setup(&mut session))
                .await
                .with_context(|| format!("stream management, carbons and CSI of {user}"))?;
        }
        sessions.push(session);
    }
    tokio::time::sleep(IDLE_WAIT).await;
    let all = settled_rss(pid).await?;
    // Closed streams let the server exit at once instead of waiting on unread stream errors.
    for (i, s) in sessions.into_iter().enumerate() {
        step(close(s))
            .await
            .with_context(|| format!("closing the stream of {}", user_name(i)))?;
    }
    Ok(Sample { idle, half, all })
}

/// The server's resident memory once it has stopped changing: whatever a login left to do
/// after its answer (the session's record in storage) is done by then.
pub(super) async fn settled_rss(pid: u32) -> Result<u64> {
    let deadline = Instant::now() + SETTLE_LIMIT;
    let mut last = read_rss_kib(pid)?;
    let mut same = 1;
    while same < STABLE_READS && Instant::now() < deadline {
        tokio::time::sleep(READ_INTERVAL).await;
        let now = read_rss_kib(pid)?;
        same = if now == last { same + 1 } else { 1 };
        last = now;
    }
    if last == 0 {
        return Err(anyhow!("the server reports no resident memory"));
    }
    Ok(last)
}

/// The rows of the report: a label and one value per run.
fn rows(opts: &Options, runs: &[Run]) -> Vec<(String, Vec<f64>)> {
    let n = opts.clients;
    let col = |f: &dyn Fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<_>>();
    let mut rows = Vec::new();
    for (name, pick) in [
        ("plain", (|r: &Run| r.plain) as fn(&Run) -> Sample),
        ("phone (SM, carbons, CSI)", |r: &Run| r.phone),
    ] {
        rows.extend([
            (format!("{name}: idle (KiB)"), col(&|r| pick(r).idle as f64)),
            (
                format!("{name}: {} sessions (KiB)", n / 2),
                col(&|r| pick(r).half as f64),
            ),
            (
                format!("{name}: {n} sessions (KiB)"),
                col(&|r| pick(r).all as f64),
            ),
            (
                format!("{name}: per session, average (KiB)"),
                col(&|r| pick(r).average(n)),
            ),
            (
                format!("{name}: per session, marginal (KiB)"),
                col(&|r| pick(r).marginal(n)),
            ),
        ]);
    }
    rows.extend([
        ("flood: idle (KiB)".into(), col(&|r| r.flood.idle as f64)),
        (
            format!("flood: {FLOOD} pre-auth connections (KiB)"),
            col(&|r| r.flood.open as f64),
        ),
        (
            "flood: all closed (KiB)".into(),
            col(&|r| r.flood.closed as f64),
        ),
        (
            "flood: per connection (KiB)".into(),
            col(&|r| r.flood.per_connection()),
        ),
    ]);
    rows
}

fn table(opts: &Options, runs: &[Run]) -> String {
    let mut out = format!(
        "server memory (VmRSS) per idle TLS session, {} sessions with SASL {}, one worker\n",
        opts.clients,
        opts.sasl.name()
    );
    let rows = rows(opts, runs);
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (label, values) in &rows {
        let cells: Vec<String> = values
            .iter()
            .map(|v| {
                if label.contains("per ") {
                    format!("{v:>12.1}")
                } else {
                    format!("{:>12}", grouped(*v as u64))
                }
            })
            .collect();
        out.push_str(&format!("{label:<width$}  {}", cells.join(" ")));
        if values.len() > 1 {
            out.push_str(&format!("  spread {:.2} %", spread(values)));
        }
        out.push('\n');
    }
    out
}

fn json(opts: &Options, runs: &[Run]) -> String {
    let sample = |s: &Sample| {
        format!(
            "{{\"idle_kib\":{},\"half_kib\":{},\"all_kib\":{},\"average_kib\":{:.2},\"marginal_kib\":{:.2}}}",
            s.idle,
            s.half,
            s.all,
            s.average(opts.clients),
            s.marginal(opts.clients)
        )
    };
    let runs: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{{\"plain\":{},\"phone\":{},\"flood\":{{\"connections\":{FLOOD},\"idle_kib\":{},\"open_kib\":{},\"closed_kib\":{},\"per_connection_kib\":{:.2}}}}}",
                sample(&r.plain),
                sample(&r.phone),
                r.flood.idle,
                r.flood.open,
                r.flood.closed,
                r.flood.per_connection()
            )
        })
        .collect();
    format!(
        "{{\"sessions\":{},\"sasl\":\"{}\",\"runs\":[{}]}}",
        opts.clients,
        opts.sasl.name(),
        runs.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_and_marginal_per_session() {
        let s = Sample {
            idle: 10_000,
            half: 14_000,
            all: 17_000,
        };
        assert_eq!(s.average(100), 70.0);
        assert_eq!(s.marginal(100), 60.0);
        // An odd count: the second part is the larger one.
        assert_eq!(s.marginal(101), 3_000.0 / 51.0);
        // Memory that shrank reads as nothing, not as a huge unsigned number.
        let shrank = Sample {
            idle: 10_000,
            half: 9_000,
            all: 8_000,
        };
        assert_eq!(shrank.average(10), 0.0);
        assert_eq!(shrank.marginal(10), 0.0);
    }
}
