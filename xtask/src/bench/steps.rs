//! `--steps R1,R2,…`: an open-loop rate ladder on one server, and `--vs prosody,ejabberd`: the
//! identical ladder against xmppd and the Debian Prosody and ejabberd, one after the other in
//! one run, printed as one table.
//!
//! A ladder logs `--clients` sessions in (the server's CPU time over the logins gives logins
//! per CPU-second, its memory growth the KiB per idle session), then sends, in pairs, at each
//! total rate of `--steps` in turn: a warm-up (`--warmup`), then `--duration` seconds
//! measured, then a drain. The sessions stay up from step to step. A step is sustained when
//! nothing was lost, the delivered rate was within 5 % of the offered one and p99 latency
//! stayed under 50 ms; the ladder stops after the first step that was not.
//!
//! With `--vs`, each server runs alone, pinned to the first CPU (`taskset -c 0`), the load
//! generator pinned to the second, all three presenting one certificate made for the run
//! (RSA-2048, or ECDSA P-256 with `--key ecdsa`); xmppd's accounts are made with
//! `xmppd register`, the others' in-band (XEP-0077).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::client::{close, login_all, Target};
use super::external::{register_all, Processes};
use super::peers::{Certificate, PeerServer};
use super::report::{percentiles, Percentiles};
use super::server::{
    clock_ticks_per_second, cpu_model, register_users, utc_date, write_config_for, ConfigExtra,
    ServerProcess, TempDir,
};
use super::{pair_peers, run_phase, runtime, Options, DOMAIN, SETTLE_TIME};

/// Total messages per second of each step, by default.
pub(super) const DEFAULT_STEPS: [f64; 5] = [500.0, 1000.0, 2000.0, 4000.0, 8000.0];
/// Sessions of `--steps` and `--vs`, by default.
pub(super) const DEFAULT_SESSIONS: usize = 500;
/// A step is sustained when p99 latency stays below this.
const P99_LIMIT_NS: u64 = 50_000_000;
/// … and at least this share of the offered rate is delivered.
const RATE_TOLERANCE: f64 = 0.95;
/// CPUs of `--vs`: the server's and the load generator's.
const SERVER_CPU: &str = "0";
const CLIENT_CPU: &str = "1";

/// A server under test: where its clients log in and which processes are its own.
struct Subject {
    label: String,
    target: Target,
    processes: Processes,
}

/// What one rate step measured.
struct StepResult {
    /// Offered messages per second, all clients together.
    rate: f64,
    secs: f64,
    delivered_in_run: u64,
    lost: u64,
    latency: Option<Percentiles>,
    server_cpu_secs: Option<f64>,
    client_cpu_secs: f64,
    late_sends: u64,
    errors: u64,
}

impl StepResult {
    fn achieved(&self) -> f64 {
        self.delivered_in_run as f64 / self.secs.max(1e-9)
    }

    fn sustained(&self) -> bool {
        self.lost == 0
            && self.errors == 0
            && self.achieved() >= RATE_TOLERANCE * self.rate
            && self.latency.is_some_and(|l| l.p99 < P99_LIMIT_NS)
    }

    fn us_per_message(&self, cpu_secs: f64) -> f64 {
        cpu_secs * 1e6 / self.delivered_in_run.max(1) as f64
    }
}

/// What one server's ladder measured.
struct LadderResult {
    label: String,
    sessions: usize,
    login_secs: f64,
    /// Server CPU over the first logins: full TLS handshakes.
    login_cpu_secs: Option<f64>,
    /// … over the second ones, each client resuming its TLS session if it can.
    relogin_cpu_secs: Option<f64>,
    /// Second logins whose TLS handshake resumed the session.
    resumed: usize,
    rss_idle_kib: Option<u64>,
    rss_sessions_kib: Option<u64>,
    steps: Vec<StepResult>,
    /// Why the ladder stopped before its last step.
    stopped: Option<String>,
}

fn per_cpu_second(count: usize, cpu_secs: Option<f64>) -> Option<f64> {
    cpu_secs.filter(|&s| s > 0.0).map(|s| count as f64 / s)
}

impl LadderResult {
    fn logins_per_cpu_second(&self) -> Option<f64> {
        per_cpu_second(self.sessions, self.login_cpu_secs)
    }

    fn relogins_per_cpu_second(&self) -> Option<f64> {
        per_cpu_second(self.sessions, self.relogin_cpu_secs)
    }

    fn kib_per_session(&self) -> Option<f64> {
        Some(
            self.rss_sessions_kib?.saturating_sub(self.rss_idle_kib?) as f64 / self.sessions as f64,
        )
    }

    fn highest_sustained(&self) -> Option<f64> {
        self.steps
            .iter()
            .take_while(|s| s.sustained())
            .map(|s| s.rate)
            .last()
    }
}

/// `--steps` on xmppd started by the bench, or on the server of `--connect`.
pub(super) fn run_steps(opts: &Options, binary: &Path) -> Result<()> {
    let runtime = runtime()?;
    let result = match &opts.external {
        Some(external) => {
            let subject = Subject {
                label: external.domain.clone(),
                target: external.target()?,
                processes: match external.pid {
                    Some(pid) => Processes::group_of(pid)?,
                    None => Processes::default(),
                },
            };
            runtime.block_on(async {
                if external.register {
                    register_all(&subject.target, opts.clients).await?;
                }
                ladder(&subject, opts).await
            })?
        }
        None => {
            let work = TempDir::create()?;
            let config = write_config_for(&work.0, &ConfigExtra::new(opts.archive))?;
            register_users(binary, &config, opts.clients)?;
            let mut server = ServerProcess::start(binary, &config)?;
            let subject = Subject {
                label: "xmppd".into(),
                target: Target::tcp(server.direct_tls)?,
                processes: Processes(vec![server.pid()]),
            };
            server.drive(&runtime, ladder(&subject, opts), super::CLOSE_TIMEOUT)?
        }
    };
    let results = [result];
    print!("{}", table(opts, &results));
    check(&results)
}

/// `--vs`: xmppd, then each server of `opts.vs`, the same ladder on each.
pub(super) fn run_vs(opts: &Options, binary: &Path) -> Result<()> {
    let work = TempDir::create()?;
    let cert = Certificate::create(&work.0, DOMAIN, opts.key)?;
    // Counted before pinning, which leaves this process one CPU to see.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = pin_self(cpus)?;
    let runtime = runtime()?;
    let mut results = Vec::new();

    // xmppd, with the run's certificate.
    let dir = work.0.join("xmppd");
    std::fs::create_dir_all(dir.join("data"))?;
    let sections = format!(
        "\n[[tls.certificate]]\ndomain = \"{DOMAIN}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.cert.display(),
        cert.key.display()
    );
    let config = write_config_for(
        &dir,
        &ConfigExtra {
            sections: &sections,
            ..ConfigExtra::new(false)
        },
    )?;
    register_users(binary, &config, opts.clients)?;
    let command = if pin {
        let mut c = std::process::Command::new("taskset");
        c.args(["-c", SERVER_CPU]).arg(binary);
        c
    } else {
        std::process::Command::new(binary)
    };
    let mut server = ServerProcess::spawn(command, &config, Duration::from_secs(30))?;
    let subject = Subject {
        label: "xmppd".into(),
        target: Target::tcp(server.direct_tls)?,
        processes: Processes(vec![server.pid()]),
    };
    results.push(server.drive(&runtime, ladder(&subject, opts), super::CLOSE_TIMEOUT)?);
    drop(server);

    for &kind in &opts.vs {
        let dir = work.0.join(kind.name());
        let mut peer = PeerServer::start(kind, &dir, DOMAIN, &cert, pin.then_some(SERVER_CPU))?;
        let subject = Subject {
            label: kind.name().into(),
            target: Target::tcp(peer.direct_tls)?,
            processes: peer.processes()?,
        };
        let outcome = runtime.block_on(async {
            register_all(&subject.target, opts.clients).await?;
            ladder(&subject, opts).await
        });
        match outcome {
            Ok(result) => results.push(result),
            Err(err) => {
                eprintln!(
                    "bench: {} failed; its output:\n{}",
                    kind.name(),
                    peer.last_output(&dir)
                );
                return Err(err);
            }
        }
        peer.stop();
    }
    println!(
        "machine: {cpus} CPUs, {}; certificate: {}; server pinned: {}",
        cpu_model(),
        opts.key.name(),
        if pin {
            format!("CPU {SERVER_CPU}, load generator CPU {CLIENT_CPU}")
        } else {
            "no (one CPU)".into()
        }
    );
    print!("{}", table(opts, &results));
    check(&results)
}

/// Pins this process (every thread it has; those it starts inherit it) to [`CLIENT_CPU`];
/// `false` on a machine of one CPU, where nothing is pinned.
fn pin_self(cpus: usize) -> Result<bool> {
    if cpus < 2 {
        return Ok(false);
    }
    let status = std::process::Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            CLIENT_CPU,
            &std::process::id().to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset (util-linux)")?;
    if !status.success() {
        bail!("taskset could not pin the load generator ({status})");
    }
    Ok(true)
}

/// Logs the sessions in, then runs the steps on them until one is not sustained.
async fn ladder(subject: &Subject, opts: &Options) -> Result<LadderResult> {
    let clk_tck = clock_ticks_per_second() as f64;
    let procs = &subject.processes;
    tokio::time::sleep(SETTLE_TIME).await;
    let rss_idle_kib = procs.rss_kib()?;
    let cpu_before = procs.cpu_ticks()?;
    eprintln!(
        "bench: {}: logging in {} clients",
        subject.label, opts.clients
    );
    // Each account keeps its TLS session, as a client does, for the second round.
    let target = subject.target.clone().resuming();
    let started = Instant::now();
    let logins = (0..opts.clients).map(|i| (target.clone(), i));
    let first = login_all(logins, opts.sasl).await?;
    let login_secs = started.elapsed().as_secs_f64();
    let cpu_after = procs.cpu_ticks()?;
    tokio::time::sleep(SETTLE_TIME).await;
    let rss_sessions_kib = procs.rss_kib()?;
    let login_cpu_secs = cpu_secs(cpu_before, cpu_after, clk_tck);

    // Every client leaves and logs in again, resuming its TLS session where the server
    // offered one: what a restart of the clients' network costs the server.
    eprintln!(
        "bench: {}: the same {} clients again, resuming their TLS sessions",
        subject.label, opts.clients
    );
    close_all(first).await;
    tokio::time::sleep(SETTLE_TIME).await;
    let cpu_before = procs.cpu_ticks()?;
    let logins = (0..opts.clients).map(|i| (target.clone(), i));
    let mut sessions = login_all(logins, opts.sasl).await?;
    let cpu_after = procs.cpu_ticks()?;
    let relogin_cpu_secs = cpu_secs(cpu_before, cpu_after, clk_tck);
    let resumed = sessions.iter().filter(|s| s.resumed).count();

    let mut steps = Vec::new();
    let mut stopped = None;
    for &rate in &opts.steps {
        eprintln!(
            "bench: {}: {rate} msg/s for {:.0}s after {:.0}s of warm-up",
            subject.label,
            opts.duration.as_secs_f64(),
            opts.warmup.as_secs_f64()
        );
        let load = super::client::Load {
            fan_out: 1,
            rate: Some(rate / sessions.len() as f64),
            in_flight: 1,
            payload: opts.payload,
            measure_from_ns: u64::try_from(opts.warmup.as_nanos()).unwrap_or(u64::MAX),
        };
        let peers = pair_peers(&sessions);
        let count = sessions.len();
        let pids = &procs.0;
        let (phase, kept) = run_phase(sessions, peers, &load, opts.duration, pids, true).await?;
        let step = StepResult {
            rate,
            secs: phase.run_secs,
            delivered_in_run: phase.delivered_in_run,
            lost: phase.lost(),
            latency: percentiles(&phase.latencies),
            server_cpu_secs: (!pids.is_empty())
                .then(|| phase.cpu_run.iter().sum::<u64>() as f64 / clk_tck),
            client_cpu_secs: phase.client_cpu_run as f64 / clk_tck,
            late_sends: phase.late_sends,
            errors: phase.error_stanzas + phase.connection_errors,
        };
        let sustained = step.sustained();
        steps.push(step);
        sessions = kept;
        if sessions.len() != count {
            stopped = Some(format!("connections failed at {rate} msg/s"));
            break;
        }
        if !sustained {
            stopped = Some(format!("not sustained at {rate} msg/s"));
            break;
        }
    }
    close_all(sessions).await;
    Ok(LadderResult {
        label: subject.label.clone(),
        sessions: opts.clients,
        login_secs,
        login_cpu_secs,
        relogin_cpu_secs,
        resumed,
        rss_idle_kib,
        rss_sessions_kib,
        steps,
        stopped,
    })
}

/// Seconds of CPU between two readings of clock ticks, when both could be read.
fn cpu_secs(before: Option<u64>, after: Option<u64>, clk_tck: f64) -> Option<f64> {
    before
        .zip(after)
        .map(|(b, a)| a.saturating_sub(b) as f64 / clk_tck)
}

/// Closes the streams, as many at a time as logins run; closing is courtesy, what was measured is measured.
async fn close_all(sessions: Vec<super::client::Session>) {
    let mut closing = tokio::task::JoinSet::new();
    for session in sessions {
        if closing.len() >= super::LOGIN_CONCURRENCY {
            closing.join_next().await;
        }
        closing.spawn(tokio::time::timeout(Duration::from_secs(5), close(session)));
    }
    while closing.join_next().await.is_some() {}
}

/// A lost message anywhere fails the run, as in the other modes; a step that was merely not
/// sustained (too slow) does not.
fn check(results: &[LadderResult]) -> Result<()> {
    let lost: u64 = results
        .iter()
        .flat_map(|r| &r.steps)
        .filter(|s| s.achieved() >= RATE_TOLERANCE * s.rate)
        .map(|s| s.lost)
        .sum();
    if lost != 0 {
        bail!("{lost} message(s) lost at a rate the server kept up with");
    }
    Ok(())
}

/// One table, a column per server.
fn table(opts: &Options, results: &[LadderResult]) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: String, cell: &dyn Fn(&LadderResult) -> String| {
        rows.push((name, results.iter().map(cell).collect()));
    };
    let dash = || "-".to_string();
    row("sessions".into(), &|r| r.sessions.to_string());
    row(
        format!(
            "logins per CPU-second ({}, full TLS handshake)",
            opts.sasl.name()
        ),
        &|r| {
            r.logins_per_cpu_second()
                .map_or_else(dash, |v| format!("{v:.0}"))
        },
    );
    row(
        "logins again per CPU-second (TLS sessions resumed)".into(),
        &|r| {
            r.relogins_per_cpu_second().map_or_else(dash, |v| {
                format!("{v:.0} ({} of {} resumed)", r.resumed, r.sessions)
            })
        },
    );
    row("login of all sessions".into(), &|r| {
        format!("{:.2} s", r.login_secs)
    });
    row("KiB per idle session".into(), &|r| {
        r.kib_per_session().map_or_else(dash, |v| format!("{v:.1}"))
    });
    row(
        "highest rate with p99 < 50 ms".into(),
        &|r| match (r.highest_sustained(), &r.stopped) {
            (Some(rate), None) => format!("≥ {rate:.0} msg/s"),
            (Some(rate), Some(_)) => format!("{rate:.0} msg/s"),
            (None, _) => format!("< {:.0} msg/s", opts.steps[0]),
        },
    );
    let ms = |ns: u64| format!("{:.1}", ns as f64 / 1e6);
    for (i, &rate) in opts.steps.iter().enumerate() {
        let cell = |r: &LadderResult, f: &dyn Fn(&StepResult) -> String| match r.steps.get(i) {
            Some(s) => f(s),
            None if r.stopped.is_some() => "(stopped)".into(),
            None => "-".into(),
        };
        row(format!("{rate:.0} msg/s: delivered"), &|r| {
            cell(r, &|s| format!("{:.0} msg/s", s.achieved()))
        });
        row(
            format!("{rate:.0} msg/s: server CPU-µs per message"),
            &|r| {
                cell(r, &|s| {
                    s.server_cpu_secs.map_or_else(dash, |c| {
                        format!(
                            "{:.1} ({:.0} % of a core)",
                            s.us_per_message(c),
                            100.0 * c / s.secs.max(1e-9)
                        )
                    })
                })
            },
        );
        row(
            format!("{rate:.0} msg/s: generator CPU-µs per message"),
            &|r| {
                cell(r, &|s| {
                    format!("{:.1}", s.us_per_message(s.client_cpu_secs))
                })
            },
        );
        row(
            format!("{rate:.0} msg/s: latency p50 / p99 / max (ms)"),
            &|r| {
                cell(r, &|s| {
                    s.latency.map_or_else(dash, |l| {
                        format!("{} / {} / {}", ms(l.p50), ms(l.p99), ms(l.max))
                    })
                })
            },
        );
        row(format!("{rate:.0} msg/s: lost / late sends"), &|r| {
            cell(r, &|s| format!("{} / {}", s.lost, s.late_sends))
        });
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cargo xtask bench steps: {}, {} sessions in pairs, open loop spread evenly, one message \
         per TLS record, SASL {}, {:.0} s warm-up + {:.0} s per step",
        utc_date(),
        opts.clients,
        opts.sasl.name(),
        opts.warmup.as_secs_f64(),
        opts.duration.as_secs_f64()
    );
    let header: Vec<&str> = results.iter().map(|r| r.label.as_str()).collect();
    let _ = writeln!(out, "| | {} |", header.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(results.len()));
    for (name, cells) in rows {
        let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
    }
    for r in results {
        if let Some(why) = &r.stopped {
            let _ = writeln!(out, "{}: {why}", r.label);
        }
    }
    out
}
