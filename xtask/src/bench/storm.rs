//! `cargo xtask bench --storm`: a reconnect storm after a restart, the worst hour of an
//! operator's week.
//!
//! `--clients` sessions (default 1000) log in, 64 at a time, from addresses
//! spread over 127.0.0.0/8 ([`SPREAD_SOURCES`] of them), so that the server's limits per
//! address apply as they do to clients on a network (the bench's other modes lift them). The
//! server is then restarted as an operator would (SIGTERM, start again on the same data) and
//! every client connects again at once, each presenting the TLS session of its first
//! connection (which the restarted server can no longer resume: its ticket keys were in
//! memory), then SASL, bind, presence and the roster, as a client coming back does. Reported:
//! how many were admitted and why the others were not, the time until the last was admitted,
//! each login's time from its connect (p50 / p99 / max), and the server's CPU over the storm.
//!
//! More than about 1000 sessions need `ulimit -n` raised (20 000 here: 18 000 sessions); the
//! server inherits the limit.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::client::{login_with_roster, Target, SPREAD_SOURCES};
use super::report::percentiles;
use super::server::{
    clock_ticks_per_second, read_cpu_ticks, register_users, utc_date, write_config_for,
    ConfigExtra, ServerProcess, TempDir,
};
use super::{runtime, Options, SETTLE_TIME};

/// Sessions by default.
pub(super) const DEFAULT_SESSIONS: usize = 1000;
/// The longest one login of the storm may take: all come at once, so the last waits for the
/// others.
const STORM_LOGIN_TIMEOUT: Duration = Duration::from_secs(300);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// What the storm measured.
struct Storm {
    sessions: usize,
    first_logins: Duration,
    restart: Duration,
    /// From the first connect to the last admitted login.
    all_admitted: Duration,
    /// Each admitted login's time, connect to roster, in nanoseconds.
    login_ns: Vec<u64>,
    /// Logins that failed, by their error.
    refused: BTreeMap<String, usize>,
    /// Handshakes that resumed a TLS session of before the restart (expected: none).
    resumed: usize,
    server_cpu_secs: f64,
}

pub(super) fn run(opts: &Options, binary: &Path) -> Result<()> {
    let n = opts.clients;
    let runtime = runtime()?;
    let work = TempDir::create()?;
    let c2s = format!("max_connections = {}\n", n + n / 10 + 100);
    let config = write_config_for(
        &work.0,
        &ConfigExtra {
            c2s: &c2s,
            per_address_limit: true,
            ..ConfigExtra::new(false)
        },
    )?;
    register_users(binary, &config, n)?;
    let mut server = ServerProcess::start(binary, &config)?;
    let target = Target::tcp(server.direct_tls)?
        .spread_over_sources()
        .resuming();
    eprintln!("bench: logging in {n} clients from {SPREAD_SOURCES} addresses");
    let started = Instant::now();
    let logins = (0..n).map(|i| (target.clone(), i));
    let first = match runtime.block_on(super::client::login_all(logins, opts.sasl)) {
        Ok(sessions) => sessions,
        Err(err) => {
            eprintln!("bench: last server output:\n{}", server.stop());
            return Err(err);
        }
    };
    let first_logins = started.elapsed();

    eprintln!("bench: restarting the server with {n} sessions on it");
    let restarted = Instant::now();
    server.terminate_cleanly(EXIT_TIMEOUT)?;
    // The clients learn of it as they would: their connections end. Nothing more to read.
    drop(first);
    let mut server = ServerProcess::start(binary, &config)?;
    let restart = restarted.elapsed();
    let target = target.at(server.direct_tls);
    let pid = server.pid();

    eprintln!("bench: all {n} clients connect again at once");
    let storm = runtime.block_on(async {
        tokio::time::sleep(SETTLE_TIME).await;
        let cpu_before = read_cpu_ticks(pid)?;
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let target = target.clone();
            let sasl = opts.sasl;
            tasks.push(tokio::spawn(async move {
                let user = target.user(i);
                let begun = Instant::now();
                let login = login_with_roster(&target, &user, sasl);
                match tokio::time::timeout(STORM_LOGIN_TIMEOUT, login).await {
                    Ok(Ok(session)) => Ok((begun.elapsed(), started.elapsed(), session)),
                    Ok(Err(err)) => Err(format!("{err:#}")),
                    Err(_) => Err(format!("no login within {STORM_LOGIN_TIMEOUT:?}")),
                }
            }));
        }
        let mut storm = Storm {
            sessions: n,
            first_logins,
            restart,
            all_admitted: Duration::ZERO,
            login_ns: Vec::with_capacity(n),
            refused: BTreeMap::new(),
            resumed: 0,
            server_cpu_secs: 0.0,
        };
        // Admitted sessions stay connected until every client is through, as in a storm.
        let mut admitted = Vec::with_capacity(n);
        for task in tasks {
            match task.await? {
                Ok((took, at, session)) => {
                    storm
                        .login_ns
                        .push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
                    storm.all_admitted = storm.all_admitted.max(at);
                    storm.resumed += usize::from(session.resumed);
                    admitted.push(session);
                }
                Err(why) => *storm.refused.entry(why).or_default() += 1,
            }
        }
        let cpu_after = read_cpu_ticks(pid)?;
        drop(admitted);
        storm.login_ns.sort_unstable();
        storm.server_cpu_secs =
            cpu_after.saturating_sub(cpu_before) as f64 / clock_ticks_per_second() as f64;
        anyhow::Ok(storm)
    });
    let storm = match storm {
        Ok(storm) => storm,
        Err(err) => {
            eprintln!("bench: last server output:\n{}", server.stop());
            return Err(err);
        }
    };
    server.terminate_cleanly(EXIT_TIMEOUT)?;
    print!("{}", table(opts, &storm));
    let refused: usize = storm.refused.values().sum();
    if refused != 0 {
        bail!("{refused} of {n} clients were not admitted after the restart");
    }
    Ok(())
}

fn table(opts: &Options, s: &Storm) -> String {
    let ms = |ns: u64| format!("{:.1}", ns as f64 / 1e6);
    let admitted = s.login_ns.len();
    let mut rows: Vec<(String, String)> = vec![
        ("date".into(), utc_date()),
        (
            "first logins (64 at a time)".into(),
            format!("{:.2} s", s.first_logins.as_secs_f64()),
        ),
        (
            "restart (SIGTERM to listening again)".into(),
            format!("{:.2} s", s.restart.as_secs_f64()),
        ),
        (
            "admitted after the restart".into(),
            format!("{admitted} of {}", s.sessions),
        ),
        (
            "time until the last was admitted".into(),
            format!("{:.2} s", s.all_admitted.as_secs_f64()),
        ),
    ];
    if let Some(p) = percentiles(&s.login_ns) {
        rows.push((
            "login p50 / p99 / max (connect to roster)".into(),
            format!("{} / {} / {} ms", ms(p.p50), ms(p.p99), ms(p.max)),
        ));
    }
    rows.push((
        "server CPU over the storm".into(),
        format!(
            "{:.2} s ({:.0} logins per CPU-second)",
            s.server_cpu_secs,
            admitted as f64 / s.server_cpu_secs.max(1e-9)
        ),
    ));
    rows.push((
        "TLS sessions resumed (keys are lost at restart)".into(),
        s.resumed.to_string(),
    ));
    for (why, count) in &s.refused {
        rows.push((format!("not admitted: {why}"), count.to_string()));
    }
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = format!(
        "reconnect storm: {} sessions from {SPREAD_SOURCES} addresses of 127.0.0.0/8, SASL {}, \
         all reconnecting at once after a restart\n",
        s.sessions,
        opts.sasl.name()
    );
    for (label, value) in rows {
        out.push_str(&format!("{label:<width$}  {value}\n"));
    }
    out
}
