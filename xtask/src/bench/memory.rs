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

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};

use super::callgrind::{grouped, spread, step};
use super::client::{close, login_with_roster, Target};
use super::server::{read_rss_kib, register_users, write_config, ServerProcess, TempDir};
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

/// Resident memory (KiB) at the three points of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    idle: u64,
    half: u64,
    all: u64,
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
        let sample = measure(opts, binary).with_context(|| format!("run {run}"))?;
        eprintln!(
            "bench: run {run}: idle {} KiB, {} sessions {} KiB, {} sessions {} KiB ({:.0} s)",
            sample.idle,
            opts.clients / 2,
            sample.half,
            opts.clients,
            sample.all,
            started.elapsed().as_secs_f64()
        );
        runs.push(sample);
    }
    print!("{}", table(opts, &runs));
    if opts.json {
        println!("{}", json(opts, &runs));
    }
    Ok(())
}

fn measure(opts: &Options, binary: &Path) -> Result<Sample> {
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
    server.drive(&runtime, drive(opts, pid, addr), EXIT_TIMEOUT)
}

async fn drive(opts: &Options, pid: u32, addr: std::net::SocketAddr) -> Result<Sample> {
    let idle = settled_rss(pid).await?;
    let target = Target::tcp(addr)?;
    let mut sessions = Vec::with_capacity(opts.clients);
    let mut half = idle;
    for i in 0..opts.clients {
        if i == opts.clients / 2 {
            half = settled_rss(pid).await?;
        }
        let user = user_name(i);
        let session = step(login_with_roster(&target, &user, opts.sasl))
            .await
            .with_context(|| format!("login of {user}"))?;
        sessions.push(session);
    }
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
fn rows(opts: &Options, runs: &[Sample]) -> Vec<(String, Vec<f64>)> {
    let n = opts.clients;
    let col = |f: &dyn Fn(&Sample) -> f64| runs.iter().map(f).collect::<Vec<_>>();
    vec![
        ("idle (KiB)".into(), col(&|s| s.idle as f64)),
        (format!("{} sessions (KiB)", n / 2), col(&|s| s.half as f64)),
        (format!("{n} sessions (KiB)"), col(&|s| s.all as f64)),
        ("per session, average (KiB)".into(), col(&|s| s.average(n))),
        (
            "per session, marginal (KiB)".into(),
            col(&|s| s.marginal(n)),
        ),
    ]
}

fn table(opts: &Options, runs: &[Sample]) -> String {
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
                if label.starts_with("per session") {
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

fn json(opts: &Options, runs: &[Sample]) -> String {
    let runs: Vec<String> = runs
        .iter()
        .map(|s| {
            format!(
                "{{\"idle_kib\":{},\"half_kib\":{},\"all_kib\":{},\"average_kib\":{:.2},\"marginal_kib\":{:.2}}}",
                s.idle,
                s.half,
                s.all,
                s.average(opts.clients),
                s.marginal(opts.clients)
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
