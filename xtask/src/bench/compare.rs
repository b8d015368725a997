//! Two workloads of pairs, measured one after the other in the same run against the same
//! server(s), reported side by side:
//! - `--websocket`: pairs of XMPP over WebSocket sessions (RFC 7395, on the HTTPS listener)
//!   and pairs of direct-TLS sessions (XEP-0368);
//! - `--s2s`: pairs across two federated servers (one client on each) and pairs within one.
//!
//! Each lane logs in after the previous one has, so the growth of each server's memory from
//! one lane's logins is that lane's alone; then each lane runs its message phase alone, so its
//! throughput and the servers' CPU time are its own too. The run fails if a message was lost.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use super::client::{login_all, wait_for, Session, Target, Transport};
use super::report::percentiles;
use super::server::{
    clock_ticks_per_second, read_rss_kib, register_users_on, utc_date, write_config_for,
    ConfigExtra, ServerProcess, TempDir,
};
use super::{message_phase, pair_peers, runtime, Options, PhaseOutcome, DOMAIN, SETTLE_TIME};

/// Sessions per transport with `--websocket`, by default.
pub(super) const DEFAULT_WEBSOCKET_SESSIONS: usize = 1000;
/// Clients per lane with `--s2s`, by default.
pub(super) const DEFAULT_S2S_CLIENTS: usize = 200;
/// The two domains of `--s2s`, each served by its own process.
const DOMAIN_A: &str = "a.localhost";
const DOMAIN_B: &str = "b.localhost";

/// One workload: clients 2k and 2k + 1 of `logins` talk to each other.
struct Lane {
    label: &'static str,
    /// Each client's server and user index.
    logins: Vec<(Target, usize)>,
}

/// A server process whose memory and CPU are read.
struct Measured {
    label: &'static str,
    pid: u32,
    /// Its client listener: the sessions it serves are those logged in there.
    addr: std::net::SocketAddr,
}

/// What one lane measured.
struct LaneResult {
    label: &'static str,
    sessions: usize,
    login_secs: f64,
    /// Growth of each measured server's memory from this lane's logins, and the sessions
    /// each serves.
    rss_growth_kib: Vec<i64>,
    served: Vec<usize>,
    /// Each measured server's CPU time over this lane's message phase.
    cpu_secs: Vec<f64>,
    phase: PhaseOutcome,
}

/// `--websocket`: `opts.clients` sessions over each transport on one server.
pub(super) fn run_websocket(opts: &Options, binary: &Path) -> Result<()> {
    let work = TempDir::create()?;
    let sections = "[http]\nenabled = true\nlisten = []\ntls_listen = [\"127.0.0.1:0\"]\n\
                    access_log = false\n";
    let config = write_config_for(
        &work.0,
        &ConfigExtra {
            sections,
            ..ConfigExtra::new(false)
        },
    )?;
    let n = opts.clients;
    register_users_on(binary, &config, DOMAIN, 0..2 * n)?;
    let mut server = ServerProcess::start(binary, &config)?;
    let https = server.listener("https")?;
    let tcp = Target::tcp(server.direct_tls)?;
    let ws = Target::new(https, DOMAIN, Transport::WebSocket)?;
    let lanes = vec![
        Lane {
            label: "direct TLS (TCP)",
            logins: (0..n).map(|i| (tcp.clone(), i)).collect(),
        },
        Lane {
            label: "WebSocket over TLS",
            logins: (n..2 * n).map(|i| (ws.clone(), i)).collect(),
        },
    ];
    // Both transports end in the same process: its growth is per session of the lane.
    let measured = [Measured {
        label: "server",
        pid: server.pid(),
        addr: server.direct_tls,
    }];
    let runtime = runtime()?;
    let results = server.drive(
        &runtime,
        run_lanes(lanes, opts, &measured),
        super::CLOSE_TIMEOUT,
    )?;
    finish(opts, "--websocket", &measured, &results)
}

/// `--s2s`: `opts.clients` clients in pairs across two servers (half on each), then as many
/// in pairs on the first server alone.
pub(super) fn run_s2s(opts: &Options, binary: &Path) -> Result<()> {
    let n = opts.clients;
    // Each server's configuration names the other's port: both are chosen before either starts.
    let (port_a, port_b) = (free_port()?, free_port()?);
    let s2s = |peer: &str, own_port: u16, peer_port: u16| {
        // No rate limit on the peer's stanzas: the bench measures the link, not the limiter.
        // Both servers have the fallback self-signed certificate: they authenticate each
        // other with dialback (XEP-0220), reached through the static routes.
        format!(
            "[s2s]\nenabled = true\nlisten = [\"127.0.0.1:{own_port}\"]\nstanzas_per_sec = 0\n\
             queue_max = 100000\n\n[s2s.routes]\n\"{peer}\" = \"127.0.0.1:{peer_port}\"\n"
        )
    };
    let (work_a, work_b) = (TempDir::create()?, TempDir::create()?);
    let sections_a = s2s(DOMAIN_B, port_a, port_b);
    let sections_b = s2s(DOMAIN_A, port_b, port_a);
    let config_a = write_config_for(
        &work_a.0,
        &ConfigExtra {
            domain: DOMAIN_A,
            sections: &sections_a,
            ..ConfigExtra::new(false)
        },
    )?;
    let config_b = write_config_for(
        &work_b.0,
        &ConfigExtra {
            domain: DOMAIN_B,
            sections: &sections_b,
            ..ConfigExtra::new(false)
        },
    )?;
    // Clients 0..n on A talk within A; of n..2n, the even ones are on A and the odd ones,
    // their peers, on B.
    let on_b = |i: usize| i >= n && i % 2 == 1;
    register_users_on(
        binary,
        &config_a,
        DOMAIN_A,
        (0..2 * n).filter(|&i| !on_b(i)),
    )?;
    register_users_on(binary, &config_b, DOMAIN_B, (0..2 * n).filter(|&i| on_b(i)))?;
    let mut server_a = ServerProcess::start(binary, &config_a)?;
    let server_b = ServerProcess::start(binary, &config_b)?;
    let a = Target::new(server_a.direct_tls, DOMAIN_A, Transport::Tcp)?;
    let b = Target::new(server_b.direct_tls, DOMAIN_B, Transport::Tcp)?;
    let lanes = vec![
        Lane {
            label: "c2s only (both on A)",
            logins: (0..n).map(|i| (a.clone(), i)).collect(),
        },
        Lane {
            label: "across s2s (A <-> B)",
            logins: (n..2 * n)
                .map(|i| (if on_b(i) { b.clone() } else { a.clone() }, i))
                .collect(),
        },
    ];
    let measured = [
        Measured {
            label: "server A",
            pid: server_a.pid(),
            addr: server_a.direct_tls,
        },
        Measured {
            label: "server B",
            pid: server_b.pid(),
            addr: server_b.direct_tls,
        },
    ];
    let runtime = runtime()?;
    let mut server_b = server_b;
    let results = match runtime.block_on(run_lanes(lanes, opts, &measured)) {
        Ok(results) => results,
        Err(err) => {
            eprintln!("bench: last output of server B:\n{}", server_b.stop());
            eprintln!("bench: last output of server A:\n{}", server_a.stop());
            return Err(err);
        }
    };
    server_a.stop();
    server_b.stop();
    finish(opts, "--s2s", &measured, &results)
}

/// A TCP port free on 127.0.0.1 a moment ago, for a listener that must be named in advance.
pub(super) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

async fn run_lanes(
    lanes: Vec<Lane>,
    opts: &Options,
    measured: &[Measured],
) -> Result<Vec<LaneResult>> {
    let pids: Vec<u32> = measured.iter().map(|m| m.pid).collect();
    let rss = || -> Result<Vec<i64>> {
        pids.iter()
            .map(|&pid| Ok(i64::try_from(read_rss_kib(pid)?)?))
            .collect()
    };
    tokio::time::sleep(SETTLE_TIME).await;
    let mut before = rss()?;
    let mut logged_in = Vec::new();
    for lane in lanes {
        eprintln!(
            "bench: {}: logging in {} clients",
            lane.label,
            lane.logins.len()
        );
        let served = (measured.iter())
            .map(|m| {
                let own = |t: &Target| t.addr == m.addr || measured.len() == 1;
                lane.logins.iter().filter(|(t, _)| own(t)).count()
            })
            .collect();
        let started = Instant::now();
        let mut sessions = login_all(lane.logins, opts.sasl).await?;
        let login_secs = started.elapsed().as_secs_f64();
        warm_up(&mut sessions).await?;
        tokio::time::sleep(SETTLE_TIME).await;
        let after = rss()?;
        let growth = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        before = after;
        logged_in.push((lane.label, sessions, login_secs, growth, served));
    }
    let clk_tck = clock_ticks_per_second() as f64;
    let mut results = Vec::new();
    for (label, sessions, login_secs, rss_growth_kib, served) in logged_in {
        eprintln!("bench: {label}: message phase");
        let count = sessions.len();
        let peers = pair_peers(&sessions);
        let phase = message_phase(sessions, peers, 1, opts, &pids).await?;
        let cpu_secs = phase
            .cpu_run
            .iter()
            .map(|&ticks| ticks as f64 / clk_tck)
            .collect();
        results.push(LaneResult {
            label,
            sessions: count,
            login_secs,
            rss_growth_kib,
            served,
            cpu_secs,
            phase,
        });
    }
    Ok(results)
}

/// The first client of a lane pings its peer's domain and waits for the answer: when that is
/// another server, the federation carries stanzas both ways before the timed phase (a link
/// being set up queues stanzas, which the phase would count as latency).
async fn warm_up(sessions: &mut [Session]) -> Result<()> {
    let Some(peer_domain) = sessions
        .get(1)
        .and_then(|s| s.jid.split_once('@'))
        .and_then(|(_, rest)| rest.split('/').next())
        .map(str::to_owned)
    else {
        return Ok(());
    };
    let first = &mut sessions[0];
    first
        .send(&format!(
            "<iq type='get' id='warm' to='{peer_domain}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await?;
    super::callgrind::step(wait_for(first, |el| {
        el.name() == "iq" && el.attr("id") == Some("warm")
    }))
    .await
    .with_context(|| format!("pinging {peer_domain}"))?;
    Ok(())
}

/// Prints the table and fails on any loss.
fn finish(opts: &Options, mode: &str, measured: &[Measured], results: &[LaneResult]) -> Result<()> {
    print!("{}", table(opts, mode, measured, results));
    let lost: u64 = results.iter().map(|r| r.phase.lost()).sum();
    let errors: u64 = results.iter().map(|r| r.phase.connection_errors).sum();
    if lost != 0 || errors != 0 {
        bail!("{lost} message(s) lost, {errors} connection error(s)");
    }
    Ok(())
}

fn table(opts: &Options, mode: &str, measured: &[Measured], results: &[LaneResult]) -> String {
    let ms = |ns: u64| format!("{:.2} ms", ns as f64 / 1e6);
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: String, f: &dyn Fn(&LaneResult) -> String| {
        rows.push((name, results.iter().map(f).collect()));
    };
    row("sessions".into(), &|r| r.sessions.to_string());
    row("login of all".into(), &|r| format!("{:.2} s", r.login_secs));
    for (i, m) in measured.iter().enumerate() {
        row(
            format!("{} RSS per session it serves", m.label),
            &|r| match r.served[i] {
                0 => format!("({:+} KiB in all)", r.rss_growth_kib[i]),
                n => format!("{:.1} KiB", r.rss_growth_kib[i] as f64 / n as f64),
            },
        );
    }
    row("message phase".into(), &|r| {
        format!("{:.2} s", r.phase.run_secs)
    });
    row("messages sent".into(), &|r| r.phase.sent.to_string());
    row("messages delivered".into(), &|r| {
        r.phase.delivered.to_string()
    });
    row("throughput".into(), &|r| {
        format!(
            "{:.0} msg/s",
            r.phase.delivered_in_run as f64 / r.phase.run_secs.max(1e-9)
        )
    });
    for (name, pick) in [
        ("latency p50", 0usize),
        ("latency p90", 1),
        ("latency p99", 2),
        ("latency max", 3),
    ] {
        row(name.into(), &|r| {
            percentiles(&r.phase.latencies)
                .map_or("-".into(), |p| ms([p.p50, p.p90, p.p99, p.max][pick]))
        });
    }
    for (i, m) in measured.iter().enumerate() {
        row(format!("{} CPU, message phase", m.label), &|r| {
            format!(
                "{:.2} s ({:.0} % of a core)",
                r.cpu_secs[i],
                100.0 * r.cpu_secs[i] / r.phase.run_secs.max(1e-9)
            )
        });
    }
    row("bench client CPU".into(), &|r| {
        format!(
            "{:.2} s",
            r.phase.client_cpu_run as f64 / clock_ticks_per_second() as f64
        )
    });
    row("lost messages".into(), &|r| r.phase.lost().to_string());
    row("reordered / error stanzas".into(), &|r| {
        format!("{} / {}", r.phase.reordered, r.phase.error_stanzas)
    });
    row("connection errors".into(), &|r| {
        r.phase.connection_errors.to_string()
    });

    let mut out = String::new();
    let load = match opts.rate {
        Some(rate) => format!("open loop, {rate} msg/s per client"),
        None => format!("closed loop, {} in flight per client", opts.in_flight),
    };
    let _ = writeln!(
        out,
        "cargo xtask bench {mode}: {}, {load}, SASL {}, {} s per phase",
        utc_date(),
        opts.sasl.name(),
        opts.duration.as_secs()
    );
    let header: Vec<&str> = results.iter().map(|r| r.label).collect();
    let _ = writeln!(out, "| | {} |", header.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(results.len()));
    for (name, cells) in rows {
        let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
    }
    out
}
