//! `cargo xtask bench`: a load benchmark of the xmppd binary over loopback.
//!
//! It builds (or reuses) the release binary, registers N users in a throwaway data directory,
//! starts the server, logs N clients in over direct TLS (XEP-0368) with SASL PLAIN or
//! SCRAM-SHA-256, binds a resource and sends initial presence on each, then lets pairs of
//! clients exchange chat messages for a fixed time. Each message body carries its send time, so
//! the receiver measures delivery latency. The report gives throughput, latency percentiles,
//! lost messages, server memory per session (VmRSS) and server CPU time, as a table, as JSON
//! (`--json`) or into `docs/BENCHMARKS.md` (`--markdown`). The client always runs optimized: a
//! debug build re-runs itself with `--release`.
//!
//! Deliberately not: a conformance test (the client speaks only the happy path of login), a test
//! of certificate checking (the client trusts any certificate, which is safe only because all
//! traffic stays on 127.0.0.1), or a distributed load generator. Linux only: memory and CPU are
//! read from `/proc`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use minidom::Element;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use xmppd_sasl::client::ScramClient;
use xmppd_sasl::HashAlg;
use xmppd_stream::{Event, Framer, Limits};

/// The domain every benchmark user lives on.
const DOMAIN: &str = "localhost";
/// All benchmark users share one password: logins are not what is being measured.
const PASSWORD: &str = "bench-password";
/// Logins in progress at once; more only fills the server's accept queue.
const LOGIN_CONCURRENCY: usize = 64;
/// One login (TCP + TLS + SASL + bind + presence) must finish within this.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may take to print its listening addresses.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// After the run, how long to wait for messages still in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Closing all streams at the end must finish within this.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Presence broadcasts after login settle within this before memory is sampled.
const SETTLE_TIME: Duration = Duration::from_millis(500);
/// Set on the optimized re-run, so that it never re-runs itself again.
const REEXEC_ENV: &str = "XMPPD_BENCH_OPTIMIZED";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Start and end of the generated block in docs/BENCHMARKS.md.
const MD_START: &str = "<!-- bench-results:start -->";
const MD_END: &str = "<!-- bench-results:end -->";

const USAGE: &str = "\
usage: cargo xtask bench [options]

  --clients N       concurrent client sessions, even (default 200)
  --duration SECS   length of the message phase (default 10)
  --rate R          open loop: each client sends R messages/s (default: closed loop)
  --in-flight K     closed loop: messages each client keeps in flight (default 4)
  --payload BYTES   extra filler bytes in each message body (default 0)
  --sasl MECH       plain or scram-sha-256 (default plain)
  --server PATH     use this xmppd binary instead of building target/release/xmppd
  --muc             chat room fan-out: every client joins one room and sends groupchat
                    messages (open loop, default --rate 1); each delivery is counted
  --occupants N     with --muc: occupants of the room (default 100)
  --json            also print the results as one JSON object
  --markdown        write the results into docs/BENCHMARKS.md
  -h, --help        this text
";

/// Runs the benchmark with the arguments that follow `bench` on the command line.
pub fn run(args: &[String]) -> Result<()> {
    let Some(opts) = parse_args(args)? else {
        print!("{USAGE}");
        return Ok(());
    };
    let root = workspace_root();
    if cfg!(debug_assertions) && std::env::var_os(REEXEC_ENV).is_none() {
        return rerun_optimized(&root, args);
    }
    let binary = match &opts.server {
        Some(path) => path.clone(),
        None => build_release(&root)?,
    };
    let work = TempDir::create()?;
    let config = write_config(&work.0)?;
    register_users(&binary, &config, opts.clients)?;
    let mut server = ServerProcess::start(&binary, &config)?;
    eprintln!(
        "bench: server pid {} on {}",
        server.pid(),
        server.direct_tls
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let pid = server.pid();
    let addr = server.direct_tls;
    let outcome = runtime.block_on(drive(&opts, pid, addr));
    let server_log = server.stop();
    let report = match outcome {
        Ok(report) => report,
        Err(err) => {
            eprintln!("bench: last server output:\n{server_log}");
            return Err(err);
        }
    };

    print!("{}", report.table());
    if opts.json {
        println!("{}", report.json());
    }
    if opts.markdown {
        let path = root.join("docs/BENCHMARKS.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let new = update_results_block(&old, &report.markdown());
        std::fs::write(&path, new).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: results written to {}", path.display());
    }
    if report.lost != 0 || report.connection_errors != 0 {
        bail!(
            "{} message(s) lost, {} connection error(s)",
            report.lost,
            report.connection_errors
        );
    }
    Ok(())
}

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq)]
struct Options {
    clients: usize,
    duration: Duration,
    /// Messages per second per client (open loop); `None` is closed loop.
    rate: Option<f64>,
    in_flight: usize,
    payload: usize,
    sasl: Sasl,
    server: Option<PathBuf>,
    json: bool,
    markdown: bool,
    /// Clients share one chat room instead of talking in pairs.
    muc: bool,
}

/// How clients authenticate. PLAIN by default: the message phase is what is measured, and
/// SCRAM's key derivation would make logging in the bench client's own bottleneck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sasl {
    Plain,
    ScramSha256,
}

impl Sasl {
    fn name(self) -> &'static str {
        match self {
            Sasl::Plain => "PLAIN",
            Sasl::ScramSha256 => "SCRAM-SHA-256",
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clients: 200,
            duration: Duration::from_secs(10),
            rate: None,
            in_flight: 4,
            payload: 0,
            sasl: Sasl::Plain,
            server: None,
            json: false,
            markdown: false,
            muc: false,
        }
    }
}

impl Options {
    fn mode(&self) -> String {
        let load = match self.rate {
            Some(rate) => format!("open loop, {rate} msg/s per client"),
            None => format!("closed loop, {} in flight per client", self.in_flight),
        };
        if self.muc {
            return format!(
                "MUC fan-out: {} occupants in one room, {load}; SASL {}",
                self.clients,
                self.sasl.name()
            );
        }
        format!("{load}; SASL {}", self.sasl.name())
    }
}

/// `Ok(None)` when help was asked for.
fn parse_args(args: &[String]) -> Result<Option<Options>> {
    let mut opts = Options::default();
    let mut occupants: Option<usize> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| anyhow!("{name} needs a value")),
            }
        };
        match flag {
            "-h" | "--help" => return Ok(None),
            "--clients" => opts.clients = parse_num(&value(flag)?, flag)?,
            "--duration" => {
                opts.duration = Duration::from_secs(parse_num::<u64>(&value(flag)?, flag)?)
            }
            "--rate" => opts.rate = Some(parse_num(&value(flag)?, flag)?),
            "--in-flight" => opts.in_flight = parse_num(&value(flag)?, flag)?,
            "--payload" => opts.payload = parse_num(&value(flag)?, flag)?,
            "--sasl" => {
                opts.sasl = match value(flag)?.to_ascii_lowercase().as_str() {
                    "plain" => Sasl::Plain,
                    "scram-sha-256" | "scram" => Sasl::ScramSha256,
                    other => bail!("--sasl: unknown mechanism {other:?}"),
                }
            }
            "--server" => opts.server = Some(PathBuf::from(value(flag)?)),
            "--json" => opts.json = true,
            "--markdown" => opts.markdown = true,
            "--muc" => opts.muc = true,
            "--occupants" => occupants = Some(parse_num(&value(flag)?, flag)?),
            _ => bail!("unknown argument {arg:?}\n{USAGE}"),
        }
    }
    if opts.muc {
        opts.clients = occupants.unwrap_or(100);
        // Closed loop would multiply: every occupant receives every message.
        opts.rate.get_or_insert(1.0);
        if opts.markdown {
            bail!("--markdown writes the one-to-one results; copy the MUC table by hand");
        }
        if !(2..=10_000).contains(&opts.clients) {
            bail!("--occupants must be between 2 and 10000");
        }
    } else if occupants.is_some() {
        bail!("--occupants needs --muc");
    } else if opts.clients < 2 || opts.clients % 2 != 0 {
        bail!("--clients must be an even number of at least 2 (clients talk in pairs)");
    }
    if opts.duration.is_zero() || opts.duration > Duration::from_secs(3600) {
        bail!("--duration must be between 1 and 3600 seconds");
    }
    if let Some(rate) = opts.rate {
        if !(rate.is_finite() && rate > 0.0 && rate <= 100_000.0) {
            bail!("--rate must be a number above 0 and at most 100000");
        }
    }
    if opts.in_flight == 0 || opts.in_flight > 1000 {
        bail!("--in-flight must be between 1 and 1000");
    }
    if opts.payload > 64 * 1024 {
        bail!("--payload must be at most 65536 bytes");
    }
    Ok(Some(opts))
}

fn parse_num<T: std::str::FromStr>(s: &str, flag: &str) -> Result<T> {
    s.trim()
        .parse()
        .map_err(|_| anyhow!("{flag}: {s:?} is not a valid number"))
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Runs this same benchmark from an optimized xtask build. An unoptimized client spends about
/// three times the CPU per message and, sharing the machine with the server, would cap the
/// measured throughput at its own speed.
fn rerun_optimized(root: &Path, args: &[String]) -> Result<()> {
    eprintln!("bench: this xtask is unoptimized; re-running as cargo run --release -p xtask");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["run", "--quiet", "--release", "-p", "xtask", "--", "bench"])
        .args(args)
        .env(REEXEC_ENV, "1")
        .current_dir(root)
        .status()
        .context("running cargo run --release -p xtask")?;
    if !status.success() {
        bail!("the optimized bench run failed ({status})");
    }
    Ok(())
}

fn build_release(root: &Path) -> Result<PathBuf> {
    eprintln!("bench: cargo build --release -p xmppd");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "xmppd"])
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p xmppd failed ({status})");
    }
    // CARGO_TARGET_DIR moves the binary; honour it as cargo does.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        root.join(target)
    };
    Ok(target.join("release/xmppd"))
}

/// A directory under the system temp dir, removed with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let path = std::env::temp_dir().join(format!("xmppd-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(path.join("data"))
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_config(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("xmppd.toml");
    std::fs::write(&path, config_text(&dir.join("data")))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Both listeners on port 0: the server prints the ports it got, so runs never collide. Every
/// bench client comes from 127.0.0.1, so the per-address limit before login is lifted. The
/// per-session shaper and room rate limits are off: the bench measures the server's capacity,
/// not how it slows one fast client down.
fn config_text(data_dir: &Path) -> String {
    format!(
        "[server]\nhosts = [\"{DOMAIN}\"]\ndata_dir = {}\n\n[c2s]\n\
         starttls_listen = [\"127.0.0.1:0\"]\ndirect_tls_listen = [\"127.0.0.1:0\"]\n\
         max_pending_per_ip = 1000000\nshaper_bytes_per_sec = 0\n\n\
         [muc]\nmessages_per_second = 0\nmax_occupants = 100000\n",
        toml_string(&data_dir.to_string_lossy())
    )
}

/// A TOML basic string; temp paths are ASCII in practice, but quote anyway.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn user_name(index: usize) -> String {
    format!("bench{index}")
}

fn register_users(binary: &Path, config: &Path, count: usize) -> Result<()> {
    eprintln!("bench: registering {count} users");
    let started = Instant::now();
    for i in 0..count {
        // One process at a time: concurrent writers to one database would only contend.
        let out = Command::new(binary)
            .arg("--config")
            .arg(config)
            .args(["register", &user_name(i), DOMAIN, PASSWORD])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", binary.display()))?;
        if !out.status.success() {
            bail!(
                "xmppd register {} failed ({}): {}",
                user_name(i),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    eprintln!(
        "bench: registered in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The running server; killed on drop so an aborted bench leaves nothing behind.
struct ServerProcess {
    child: Child,
    direct_tls: SocketAddr,
    /// The last lines the server printed, for diagnosing a failed run.
    log: Arc<Mutex<VecDeque<String>>>,
}

impl ServerProcess {
    fn start(binary: &Path, config: &Path) -> Result<Self> {
        let mut child = Command::new(binary)
            .arg("--config")
            .arg(config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        // Both pipes are drained for the whole run: a full pipe would stall the server.
        if let Some(out) = child.stdout.take() {
            spawn_line_reader(out, tx.clone(), log.clone());
        }
        if let Some(err) = child.stderr.take() {
            spawn_line_reader(err, tx, log.clone());
        }
        let mut server = ServerProcess {
            child,
            direct_tls: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = parse_listening(&line, "direct-tls") {
                        server.direct_tls = addr;
                        return Ok(server);
                    }
                }
                Err(_) => {
                    let status = server.child.try_wait().ok().flatten();
                    bail!(
                        "server did not report a direct-tls listener (exit status: {status:?}); \
                         output:\n{}",
                        server.stop()
                    );
                }
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server and returns its last output lines.
    fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self
            .log
            .lock()
            .map(|l| l.iter().cloned().collect::<Vec<_>>());
        log.unwrap_or_default().join("\n")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_line_reader(
    pipe: impl std::io::Read + Send + 'static,
    tx: mpsc::Sender<String>,
    log: Arc<Mutex<VecDeque<String>>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if line.contains("xmppd listening:") {
                let _ = tx.send(line.clone());
            }
            if let Ok(mut log) = log.lock() {
                if log.len() >= 40 {
                    log.pop_front();
                }
                log.push_back(line);
            }
        }
    });
}

/// Parses `xmppd listening: <kind> <addr>`.
fn parse_listening(line: &str, kind: &str) -> Option<SocketAddr> {
    let rest = line.split_once("xmppd listening:")?.1.trim();
    let (k, addr) = rest.split_once(char::is_whitespace)?;
    if k != kind {
        return None;
    }
    addr.trim().parse().ok()
}

// ---------------------------------------------------------------------------------------------
// The load run
// ---------------------------------------------------------------------------------------------

/// Results of one run.
#[derive(Debug, Clone, PartialEq)]
struct Report {
    date: String,
    nproc: usize,
    cpu_model: String,
    clients: usize,
    mode: String,
    payload: usize,
    login_secs: f64,
    run_secs: f64,
    sent: u64,
    delivered: u64,
    delivered_in_run: u64,
    lost: u64,
    reordered: u64,
    error_stanzas: u64,
    connection_errors: u64,
    latency: Option<Percentiles>,
    rss_idle_kib: u64,
    rss_sessions_kib: u64,
    rss_end_kib: u64,
    server_cpu_login_secs: f64,
    server_cpu_run_secs: f64,
    client_cpu_run_secs: f64,
}

/// Delivery latencies in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Percentiles {
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
}

/// Nearest-rank percentiles of `sorted` (ascending); `None` when empty.
fn percentiles(sorted: &[u64]) -> Option<Percentiles> {
    let rank = |p: u64| {
        // Nearest rank: the smallest value with at least p% of samples at or below it.
        let n = sorted.len() as u64;
        let idx = (p * n).div_ceil(100).max(1) - 1;
        sorted[idx as usize]
    };
    let max = *sorted.last()?;
    Some(Percentiles {
        p50: rank(50),
        p90: rank(90),
        p99: rank(99),
        max,
    })
}

/// Phases of the message exchange, broadcast to every connection task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Send and receive.
    Run,
    /// Stop sending; keep receiving what is still in flight.
    Drain,
    /// Close the stream.
    Finish,
}

/// Counters every connection task adds to.
struct Shared {
    epoch: Instant,
    sent: AtomicU64,
    received: AtomicU64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// What one connection task saw.
#[derive(Debug, Default)]
struct ConnStats {
    latencies: Vec<u64>,
    reordered: u64,
    error_stanzas: u64,
}

/// A logged-in, bound, available session.
struct Session {
    tls: TlsStream<TcpStream>,
    framer: Framer,
    jid: String,
}

async fn drive(opts: &Options, pid: u32, addr: SocketAddr) -> Result<Report> {
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
    });
    let clk_tck = clock_ticks_per_second();
    tokio::time::sleep(SETTLE_TIME).await;
    let rss_idle_kib = read_rss_kib(pid)?;
    let cpu_start = read_cpu_ticks(pid)?;

    eprintln!("bench: logging in {} clients", opts.clients);
    let login_started = Instant::now();
    let mut sessions = login_all(addr, opts.clients, opts.sasl).await?;
    if opts.muc {
        sessions = join_room(sessions).await?;
    }
    let login_secs = login_started.elapsed().as_secs_f64();
    eprintln!("bench: {} sessions up in {login_secs:.2}s", sessions.len());
    tokio::time::sleep(SETTLE_TIME).await;
    let rss_sessions_kib = read_rss_kib(pid)?;
    let cpu_login = read_cpu_ticks(pid)?;
    let client_cpu_start = read_cpu_ticks_self()?;

    let jids: Vec<String> = sessions.iter().map(|s| s.jid.clone()).collect();
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let body_padding = "x".repeat(opts.payload);
    eprintln!(
        "bench: exchanging messages for {}s ({})",
        opts.duration.as_secs(),
        opts.mode()
    );
    let run_started = Instant::now();
    let mut tasks = Vec::with_capacity(sessions.len());
    for (i, session) in sessions.into_iter().enumerate() {
        let (peer, fan_out) = if opts.muc {
            (BENCH_ROOM.to_owned(), jids.len() as u64)
        } else {
            (jids[i ^ 1].clone(), 1)
        };
        let ctx = ConnCtx {
            shared: shared.clone(),
            phase: phase_rx.clone(),
            peer,
            fan_out,
            rate: opts.rate,
            in_flight: opts.in_flight,
            padding: body_padding.clone(),
        };
        tasks.push(tokio::spawn(exchange(session, ctx)));
    }
    tokio::time::sleep(opts.duration).await;
    let _ = phase_tx.send(Phase::Drain);
    let run_secs = run_started.elapsed().as_secs_f64();
    let delivered_in_run = shared.received.load(Ordering::Relaxed);
    let cpu_run = read_cpu_ticks(pid)?;
    let client_cpu_run = read_cpu_ticks_self()?;

    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    while shared.received.load(Ordering::Relaxed) < shared.sent.load(Ordering::Relaxed)
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rss_end_kib = read_rss_kib(pid)?;
    let _ = phase_tx.send(Phase::Finish);

    let mut latencies = Vec::new();
    let mut reordered = 0;
    let mut error_stanzas = 0;
    let mut connection_errors = 0u64;
    let close_deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
    for task in tasks {
        match tokio::time::timeout_at(close_deadline, task).await {
            Ok(Ok(Ok(stats))) => {
                latencies.extend_from_slice(&stats.latencies);
                // Several senders share a room: one sequence per connection means nothing there.
                if !opts.muc {
                    reordered += stats.reordered;
                }
                error_stanzas += stats.error_stanzas;
            }
            Ok(Ok(Err(err))) => {
                if connection_errors == 0 {
                    eprintln!("bench: connection failed: {err:#}");
                }
                connection_errors += 1;
            }
            Ok(Err(join)) => {
                eprintln!("bench: connection task died: {join}");
                connection_errors += 1;
            }
            Err(_) => connection_errors += 1,
        }
    }
    latencies.sort_unstable();

    let sent = shared.sent.load(Ordering::Relaxed);
    let delivered = shared.received.load(Ordering::Relaxed);
    let secs = |ticks: u64| ticks as f64 / clk_tck as f64;
    Ok(Report {
        date: utc_date(),
        nproc: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model: cpu_model(),
        clients: opts.clients,
        mode: opts.mode(),
        payload: opts.payload,
        login_secs,
        run_secs,
        sent,
        delivered,
        delivered_in_run,
        lost: sent.saturating_sub(delivered),
        reordered,
        error_stanzas,
        connection_errors,
        latency: percentiles(&latencies),
        rss_idle_kib,
        rss_sessions_kib,
        rss_end_kib,
        server_cpu_login_secs: secs(cpu_login.saturating_sub(cpu_start)),
        server_cpu_run_secs: secs(cpu_run.saturating_sub(cpu_login)),
        client_cpu_run_secs: secs(client_cpu_run.saturating_sub(client_cpu_start)),
    })
}

async fn login_all(addr: SocketAddr, count: usize, sasl: Sasl) -> Result<Vec<Session>> {
    let connector = TlsConnector::from(Arc::new(tls_client_config()?));
    let gate = Arc::new(Semaphore::new(LOGIN_CONCURRENCY));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let connector = connector.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            tokio::time::timeout(LOGIN_TIMEOUT, login(addr, &connector, &user_name(i), sasl))
                .await
                .map_err(|_| anyhow!("login timed out after {LOGIN_TIMEOUT:?}"))?
                .with_context(|| format!("login of {}", user_name(i)))
        }));
    }
    let mut sessions = Vec::with_capacity(count);
    for task in tasks {
        sessions.push(task.await.context("login task died")??);
    }
    Ok(sessions)
}

/// The room of the MUC mode.
const BENCH_ROOM: &str = "bench@conference.localhost";

/// MUC mode: the first session creates and configures the room (instant room, no message
/// limit), then every other one joins; returns once each has seen its own presence.
async fn join_room(sessions: Vec<Session>) -> Result<Vec<Session>> {
    let mut it = sessions.into_iter().enumerate();
    let Some((_, first)) = it.next() else {
        return Ok(Vec::new());
    };
    let mut owner = enter_room(first, 0).await.context("creating the room")?;
    let form = "<query xmlns='http://jabber.org/protocol/muc#owner'>\
                <x xmlns='jabber:x:data' type='submit'/></query>";
    owner
        .tls
        .write_all(format!("<iq type='set' id='cfg' to='{BENCH_ROOM}'>{form}</iq>").as_bytes())
        .await?;
    wait_for(&mut owner, |el| {
        el.name() == "iq" && el.attr("id") == Some("cfg")
    })
    .await
    .context("configuring the room")?;
    let mut joined = vec![owner];
    let gate = Arc::new(Semaphore::new(LOGIN_CONCURRENCY));
    let mut tasks = Vec::new();
    for (i, s) in it {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            enter_room(s, i).await
        }));
    }
    for t in tasks {
        joined.push(t.await.context("join task died")??);
    }
    eprintln!("bench: {} occupants in {BENCH_ROOM}", joined.len());
    Ok(joined)
}

async fn enter_room(mut s: Session, index: usize) -> Result<Session> {
    let me = format!("{BENCH_ROOM}/u{index}");
    let join = format!(
        "<presence to='{me}'><x xmlns='http://jabber.org/protocol/muc'>\
         <history maxstanzas='0'/></x></presence>"
    );
    s.tls.write_all(join.as_bytes()).await?;
    tokio::time::timeout(
        LOGIN_TIMEOUT,
        wait_for(&mut s, |el| {
            el.name() == "presence" && el.attr("from") == Some(me.as_str())
        }),
    )
    .await
    .map_err(|_| anyhow!("joining {me} timed out"))??;
    Ok(s)
}

/// Reads until an element matching `want` arrives (others are dropped); errors end the wait.
async fn wait_for(s: &mut Session, want: impl Fn(&Element) -> bool) -> Result<Element> {
    loop {
        let el = next_element(&mut s.tls, &mut s.framer, &mut vec![0u8; 16 * 1024]).await?;
        if el.attr("type") == Some("error") && el.name() != "message" {
            bail!("<{}/> error from {:?}", el.name(), el.attr("from"));
        }
        if want(&el) {
            return Ok(el);
        }
    }
}

/// Direct TLS, SASL PLAIN, stream restart, resource binding, initial presence.
async fn login(
    addr: SocketAddr,
    connector: &TlsConnector,
    user: &str,
    sasl: Sasl,
) -> Result<Session> {
    let tcp = TcpStream::connect(addr).await.context("connecting")?;
    // Small stanzas each matter for latency; batching is done by the client itself.
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from(DOMAIN)?.to_owned();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    let mut framer = Framer::new(Limits::DEFAULT);
    let mut buf = vec![0u8; 16 * 1024];

    tls.write_all(client_stream_header().as_bytes()).await?;
    tls.flush().await?;
    expect_header(&mut tls, &mut framer, &mut buf).await?;
    let features = next_element(&mut tls, &mut framer, &mut buf).await?;
    if !offers_mechanism(&features, sasl.name()) {
        bail!("server does not offer SASL {} over TLS", sasl.name());
    }
    let mut scram = match sasl {
        Sasl::Plain => None,
        Sasl::ScramSha256 => Some(ScramClient::new(HashAlg::Sha256, user, PASSWORD, None)),
    };
    let initial = match &mut scram {
        Some(client) => B64.encode(client.client_first()),
        None => plain_initial_response(user, PASSWORD),
    };
    let auth = format!(
        "<auth xmlns='{NS_SASL}' mechanism='{}'>{initial}</auth>",
        sasl.name()
    );
    tls.write_all(auth.as_bytes()).await?;
    tls.flush().await?;
    let mut outcome = next_element(&mut tls, &mut framer, &mut buf).await?;
    if let (Some(client), "challenge") = (&mut scram, outcome.name()) {
        let server_first = sasl_payload(&outcome)?;
        let response = client
            .client_final(&server_first)
            .context("SCRAM server-first")?;
        let response = format!(
            "<response xmlns='{NS_SASL}'>{}</response>",
            B64.encode(response)
        );
        tls.write_all(response.as_bytes()).await?;
        tls.flush().await?;
        outcome = next_element(&mut tls, &mut framer, &mut buf).await?;
    }
    if outcome.name() != "success" {
        bail!(
            "authentication failed: <{}>",
            first_child_name(&outcome).unwrap_or("?")
        );
    }
    if let Some(client) = &scram {
        // The server proves it knew the password too (RFC 5802 §3, server-final in success).
        client
            .verify_server_final(&sasl_payload(&outcome)?)
            .context("SCRAM server-final")?;
    }

    // RFC 6120 §6.4.6: after success both sides start a fresh stream.
    framer.reset();
    tls.write_all(client_stream_header().as_bytes()).await?;
    tls.flush().await?;
    expect_header(&mut tls, &mut framer, &mut buf).await?;
    let features = next_element(&mut tls, &mut framer, &mut buf).await?;
    if !features.children().any(|c| c.name() == "bind") {
        bail!("server offers no resource binding after authentication");
    }
    tls.write_all(
        b"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
          <resource>bench</resource></bind></iq>",
    )
    .await?;
    tls.flush().await?;
    let jid = loop {
        let el = next_element(&mut tls, &mut framer, &mut buf).await?;
        if el.name() == "iq" && el.attr("id") == Some("bind1") {
            break bound_jid(&el)?;
        }
    };
    tls.write_all(b"<presence/>").await?;
    tls.flush().await?;
    Ok(Session { tls, framer, jid })
}

fn client_stream_header() -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}' version='1.0'>"
    )
}

async fn expect_header<S: AsyncRead + Unpin>(
    io: &mut S,
    framer: &mut Framer,
    buf: &mut [u8],
) -> Result<()> {
    match next_event(io, framer, buf).await? {
        Event::Header(_) => Ok(()),
        other => bail!("expected a stream header, got {}", describe(&other)),
    }
}

/// The next top-level element; a stream close or stream error is an error.
async fn next_element<S: AsyncRead + Unpin>(
    io: &mut S,
    framer: &mut Framer,
    buf: &mut [u8],
) -> Result<Element> {
    match next_event(io, framer, buf).await? {
        Event::Element(el) if el.name() == "error" && el.ns() == xmppd_stream::NS_STREAM => {
            bail!("stream error <{}>", first_child_name(&el).unwrap_or("?"))
        }
        Event::Element(el) => Ok(el),
        other => bail!("expected an element, got {}", describe(&other)),
    }
}

async fn next_event<S: AsyncRead + Unpin>(
    io: &mut S,
    framer: &mut Framer,
    buf: &mut [u8],
) -> Result<Event> {
    loop {
        if let Some(event) = framer.next_event().context("parsing the server's stream")? {
            return Ok(event);
        }
        let n = io.read(buf).await.context("reading from the server")?;
        if n == 0 {
            bail!("server closed the connection");
        }
        framer.feed(&buf[..n]);
    }
}

fn describe(event: &Event) -> String {
    match event {
        Event::Header(_) => "a stream header".into(),
        Event::Element(el) => format!("<{}>", el.name()),
        Event::Close => "the stream close".into(),
    }
}

fn first_child_name(el: &Element) -> Option<&str> {
    el.children().next().map(|c| c.name())
}

fn offers_mechanism(features: &Element, mechanism: &str) -> bool {
    features
        .children()
        .filter(|c| c.name() == "mechanisms")
        .flat_map(|m| m.children())
        .any(|m| m.name() == "mechanism" && m.text().trim() == mechanism)
}

fn bound_jid(iq: &Element) -> Result<String> {
    if iq.attr("type") != Some("result") {
        bail!(
            "resource binding failed: <{}>",
            first_child_name(iq).unwrap_or("?")
        );
    }
    let jid = iq
        .children()
        .filter(|c| c.name() == "bind")
        .flat_map(|b| b.children())
        .find(|c| c.name() == "jid")
        .map(|j| j.text().trim().to_string())
        .ok_or_else(|| anyhow!("bind result carries no <jid/>"))?;
    if jid.is_empty() {
        bail!("bind result carries an empty <jid/>");
    }
    Ok(jid)
}

/// Decoded base64 content of `<challenge/>` or `<success/>` (`=` is the empty payload).
fn sasl_payload(el: &Element) -> Result<Vec<u8>> {
    let text = el.text();
    let text = text.trim();
    if text == "=" {
        return Ok(Vec::new());
    }
    B64.decode(text)
        .map_err(|_| anyhow!("<{}> carries invalid base64", el.name()))
}

/// RFC 4616 message: empty authzid, authcid, password, base64 for the `<auth/>` element.
fn plain_initial_response(user: &str, password: &str) -> String {
    let raw = format!("\0{user}\0{password}");
    B64.encode(raw.as_bytes())
}

/// Everything a connection task needs besides its session.
struct ConnCtx {
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
    /// A peer's JID, or the room's in MUC mode.
    peer: String,
    /// Deliveries one sent message makes: 1, or every occupant of the room.
    fan_out: u64,
    rate: Option<f64>,
    in_flight: usize,
    padding: String,
}

/// Sends to and receives from the peer until told to finish, then closes the stream.
async fn exchange(session: Session, mut ctx: ConnCtx) -> Result<ConnStats> {
    let Session {
        mut tls,
        mut framer,
        ..
    } = session;
    let mut stats = ConnStats::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::with_capacity(4096);
    let mut next_seq = 0u64;
    let mut last_seen: Option<u64> = None;
    let to = xml_escape(&ctx.peer);
    let started = Instant::now();
    // Open loop ticks at most every millisecond and sends what is due: the timer's resolution
    // caps how often, not how many.
    let period = match ctx.rate {
        Some(rate) => Duration::from_secs_f64((1.0 / rate).clamp(0.001, 0.1)),
        None => Duration::from_secs(3600),
    };
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    if ctx.rate.is_none() {
        for _ in 0..ctx.in_flight {
            push_message(&mut out, &to, &mut next_seq, &ctx);
        }
    }
    let mut phase = *ctx.phase.borrow();
    loop {
        if !out.is_empty() {
            tls.write_all(&out).await.context("writing to the server")?;
            tls.flush().await.context("writing to the server")?;
            out.clear();
        }
        if phase == Phase::Finish {
            break;
        }
        tokio::select! {
            read = tls.read(&mut buf) => {
                let n = read.context("reading from the server")?;
                if n == 0 {
                    bail!("server closed the connection");
                }
                framer.feed(&buf[..n]);
                // Every event already buffered is handled before writing once: batching.
                while let Some(event) =
                    framer.next_event().context("parsing the server's stream")?
                {
                    let el = match event {
                        Event::Element(el) => el,
                        Event::Close => bail!("server closed the stream"),
                        Event::Header(_) => bail!("unexpected stream header"),
                    };
                    match incoming(&el, &ctx.shared, &mut stats, &mut last_seen)? {
                        Incoming::Message if phase == Phase::Run && ctx.rate.is_none() => {
                            push_message(&mut out, &to, &mut next_seq, &ctx);
                        }
                        Incoming::Reply(reply) => out.extend_from_slice(reply.as_bytes()),
                        Incoming::Message | Incoming::Ignored => {}
                    }
                }
            }
            _ = ticker.tick(), if phase == Phase::Run && ctx.rate.is_some() => {
                let rate = ctx.rate.unwrap_or(0.0);
                let due = (started.elapsed().as_secs_f64() * rate) as u64;
                // Bounded catch-up after a stall keeps one write from growing without limit.
                let owed = due.saturating_sub(next_seq).min(1000);
                for _ in 0..owed {
                    push_message(&mut out, &to, &mut next_seq, &ctx);
                }
            }
            changed = ctx.phase.changed() => {
                phase = match changed {
                    Ok(()) => *ctx.phase.borrow_and_update(),
                    // The driver is gone: nothing more will be measured.
                    Err(_) => Phase::Finish,
                };
            }
        }
    }
    tls.write_all(b"</stream:stream>").await.ok();
    tls.flush().await.ok();
    // The server answers with its own close; waiting for it is courtesy, not correctness.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(n) = tls.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    let _ = tls.shutdown().await;
    Ok(stats)
}

fn push_message(out: &mut Vec<u8>, to: &str, seq: &mut u64, ctx: &ConnCtx) {
    let body = encode_body(*seq, ctx.shared.now_ns(), &ctx.padding);
    *seq += 1;
    ctx.shared.sent.fetch_add(ctx.fan_out, Ordering::Relaxed);
    let kind = if ctx.fan_out > 1 { "groupchat" } else { "chat" };
    let _ = write!(
        VecWriter(out),
        "<message to='{to}' type='{kind}'><body>{body}</body></message>"
    );
}

/// `fmt::Write` into a byte buffer, so messages are formatted without a temporary String.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// How one received stanza is handled.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    /// A benchmark message from the peer, recorded.
    Message,
    /// An answer the server is owed (e.g. to a ping).
    Reply(String),
    /// Presence and anything else.
    Ignored,
}

fn incoming(
    el: &Element,
    shared: &Shared,
    stats: &mut ConnStats,
    last_seen: &mut Option<u64>,
) -> Result<Incoming> {
    match el.name() {
        "message" => {
            if el.attr("type") == Some("error") {
                stats.error_stanzas += 1;
                return Ok(Incoming::Ignored);
            }
            let Some(body) = el.children().find(|c| c.name() == "body") else {
                return Ok(Incoming::Ignored);
            };
            let Some((seq, sent_ns)) = decode_body(&body.text()) else {
                return Ok(Incoming::Ignored);
            };
            stats
                .latencies
                .push(shared.now_ns().saturating_sub(sent_ns));
            if last_seen.is_some_and(|last| seq <= last) {
                stats.reordered += 1;
            }
            *last_seen = Some(seq);
            shared.received.fetch_add(1, Ordering::Relaxed);
            Ok(Incoming::Message)
        }
        "iq" => Ok(iq_reply(el).map_or(Incoming::Ignored, Incoming::Reply)),
        "error" if el.ns() == xmppd_stream::NS_STREAM => {
            bail!("stream error <{}>", first_child_name(el).unwrap_or("?"))
        }
        _ => Ok(Incoming::Ignored),
    }
}

/// RFC 6120 §8.2.3: every get/set gets an answer; a ping a result, anything else an error.
fn iq_reply(iq: &Element) -> Option<String> {
    let kind = iq.attr("type")?;
    if kind != "get" && kind != "set" {
        return None;
    }
    let id = xml_escape(iq.attr("id").unwrap_or(""));
    let to = iq
        .attr("from")
        .map(|f| format!(" to='{}'", xml_escape(f)))
        .unwrap_or_default();
    let is_ping = kind == "get" && iq.children().any(|c| c.is("ping", "urn:xmpp:ping"));
    Some(if is_ping {
        format!("<iq type='result' id='{id}'{to}/>")
    } else {
        format!(
            "<iq type='error' id='{id}'{to}><error type='cancel'><service-unavailable \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        )
    })
}

/// Body text: sequence number, send time in ns since the bench epoch, optional filler.
fn encode_body(seq: u64, sent_ns: u64, padding: &str) -> String {
    if padding.is_empty() {
        format!("{seq} {sent_ns}")
    } else {
        format!("{seq} {sent_ns} {padding}")
    }
}

fn decode_body(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.split_ascii_whitespace();
    let seq = parts.next()?.parse().ok()?;
    let sent_ns = parts.next()?.parse().ok()?;
    Some((seq, sent_ns))
}

/// Escapes for both text and single- or double-quoted attribute values.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

fn tls_client_config() -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(danger::AcceptAnyCert(provider)))
        .with_no_client_auth();
    // XEP-0368: direct TLS names the protocol with ALPN.
    config.alpn_protocols = vec![b"xmpp-client".to_vec()];
    Ok(config)
}

mod danger {
    //! A certificate verifier that accepts any server certificate. The benchmark server uses a
    //! self-signed certificate and is reached only over 127.0.0.1; nothing else may use this.

    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    #[derive(Debug)]
    pub(super) struct AcceptAnyCert(pub(super) Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyCert {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        // The handshake signature is still checked: only the certificate's identity is not.
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// /proc and the machine
// ---------------------------------------------------------------------------------------------

fn read_rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss_kib(&status).ok_or_else(|| anyhow!("no VmRSS in {path}"))
}

fn read_cpu_ticks(pid: u32) -> Result<u64> {
    read_stat_ticks(&format!("/proc/{pid}/stat"))
}

fn read_cpu_ticks_self() -> Result<u64> {
    read_stat_ticks("/proc/self/stat")
}

fn read_stat_ticks(path: &str) -> Result<u64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    parse_cpu_ticks(&stat).ok_or_else(|| anyhow!("cannot parse {path}"))
}

/// `VmRSS:   12345 kB` from /proc/PID/status.
fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

/// utime + stime (fields 14 and 15 of proc(5) stat), in clock ticks.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses; fields resume after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        // The Linux userspace value on every common architecture.
        .unwrap_or(100)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Today's `YYYY-MM-DD` in UTC, from `date(1)`: xtask builds no server crate of its own.
fn utc_date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%F"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

impl Report {
    fn msgs_per_sec(&self) -> f64 {
        if self.run_secs > 0.0 {
            self.delivered_in_run as f64 / self.run_secs
        } else {
            0.0
        }
    }

    /// Session memory: growth from the idle server to all sessions up, per session.
    fn rss_per_session_kib(&self) -> f64 {
        self.rss_sessions_kib.saturating_sub(self.rss_idle_kib) as f64 / self.clients as f64
    }

    fn rows(&self) -> Vec<(&'static str, String)> {
        let ms = |ns: u64| format!("{:.3} ms", ns as f64 / 1e6);
        let mut rows = vec![
            ("date", self.date.clone()),
            (
                "machine",
                format!("{} CPUs, {}", self.nproc, self.cpu_model),
            ),
            ("clients", self.clients.to_string()),
            ("mode", self.mode.clone()),
            ("body filler", format!("{} bytes", self.payload)),
            ("login of all clients", format!("{:.2} s", self.login_secs)),
            ("message phase", format!("{:.2} s", self.run_secs)),
            ("messages sent", self.sent.to_string()),
            ("messages delivered", self.delivered.to_string()),
            ("throughput", format!("{:.0} msg/s", self.msgs_per_sec())),
        ];
        if let Some(l) = self.latency {
            rows.extend([
                ("latency p50", ms(l.p50)),
                ("latency p90", ms(l.p90)),
                ("latency p99", ms(l.p99)),
                ("latency max", ms(l.max)),
            ]);
        }
        let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
        rows.extend([
            ("server RSS idle", mib(self.rss_idle_kib)),
            ("server RSS, sessions up", mib(self.rss_sessions_kib)),
            ("server RSS at end", mib(self.rss_end_kib)),
            (
                "server RSS per session",
                format!("{:.1} KiB", self.rss_per_session_kib()),
            ),
            (
                "server CPU, logins",
                format!("{:.2} s", self.server_cpu_login_secs),
            ),
            (
                "server CPU, message phase",
                format!("{:.2} s", self.server_cpu_run_secs),
            ),
            (
                "bench client CPU, message phase",
                format!("{:.2} s", self.client_cpu_run_secs),
            ),
            (
                "lost messages",
                format!("{} ({})", self.lost, pass(self.lost == 0)),
            ),
            ("reordered messages", self.reordered.to_string()),
            ("error stanzas", self.error_stanzas.to_string()),
            ("connection errors", self.connection_errors.to_string()),
        ]);
        rows
    }

    fn table(&self) -> String {
        let rows = self.rows();
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }

    fn markdown(&self) -> String {
        let mut out = String::from("| metric | value |\n|---|---|\n");
        for (k, v) in self.rows() {
            let _ = writeln!(out, "| {k} | {} |", v.replace('|', "\\|"));
        }
        out
    }

    fn json(&self) -> String {
        let mut fields: Vec<(&str, String)> = vec![
            ("date", json_string(&self.date)),
            ("nproc", self.nproc.to_string()),
            ("cpu_model", json_string(&self.cpu_model)),
            ("clients", self.clients.to_string()),
            ("mode", json_string(&self.mode)),
            ("payload_bytes", self.payload.to_string()),
            ("login_secs", json_f64(self.login_secs)),
            ("run_secs", json_f64(self.run_secs)),
            ("sent", self.sent.to_string()),
            ("delivered", self.delivered.to_string()),
            ("delivered_in_run", self.delivered_in_run.to_string()),
            ("msgs_per_sec", json_f64(self.msgs_per_sec())),
        ];
        let l = self.latency;
        for (key, v) in [
            ("latency_p50_ns", l.map(|l| l.p50)),
            ("latency_p90_ns", l.map(|l| l.p90)),
            ("latency_p99_ns", l.map(|l| l.p99)),
            ("latency_max_ns", l.map(|l| l.max)),
        ] {
            fields.push((key, v.map_or_else(|| "null".into(), |v| v.to_string())));
        }
        fields.extend([
            ("rss_idle_kib", self.rss_idle_kib.to_string()),
            ("rss_sessions_kib", self.rss_sessions_kib.to_string()),
            ("rss_end_kib", self.rss_end_kib.to_string()),
            ("rss_per_session_kib", json_f64(self.rss_per_session_kib())),
            (
                "server_cpu_login_secs",
                json_f64(self.server_cpu_login_secs),
            ),
            ("server_cpu_run_secs", json_f64(self.server_cpu_run_secs)),
            ("client_cpu_run_secs", json_f64(self.client_cpu_run_secs)),
            ("lost", self.lost.to_string()),
            ("reordered", self.reordered.to_string()),
            ("error_stanzas", self.error_stanzas.to_string()),
            ("connection_errors", self.connection_errors.to_string()),
        ]);
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    }
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "FAIL"
    }
}

fn json_f64(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.6}")
    } else {
        "null".into()
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Replaces the generated block of `doc` with `block`, or appends one if there is none.
fn update_results_block(doc: &str, block: &str) -> String {
    let fresh = format!("{MD_START}\n{}{MD_END}", ensure_newline(block));
    if let Some(start) = doc.find(MD_START) {
        if let Some(end_rel) = doc[start..].find(MD_END) {
            let end = start + end_rel + MD_END.len();
            return format!("{}{fresh}{}", &doc[..start], &doc[end..]);
        }
    }
    let mut out = ensure_newline(doc);
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str("## Latest results\n\n");
    out.push_str(&fresh);
    out.push('\n');
    out
}

fn ensure_newline(s: &str) -> String {
    let mut s = s.to_string();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn args_default_and_overrides() {
        let opts = parse_args(&[]).unwrap().unwrap();
        assert_eq!(opts, Options::default());
        let opts = parse_args(&args(&[
            "--clients",
            "10",
            "--duration=3",
            "--rate",
            "2.5",
            "--server",
            "/x/xmppd",
            "--json",
            "--markdown",
            "--payload",
            "100",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(opts.clients, 10);
        assert_eq!(opts.duration, Duration::from_secs(3));
        assert_eq!(opts.rate, Some(2.5));
        assert_eq!(opts.server.as_deref(), Some(Path::new("/x/xmppd")));
        assert!(opts.json && opts.markdown);
        assert_eq!(opts.payload, 100);
        assert!(parse_args(&args(&["--help"])).unwrap().is_none());
        let opts = parse_args(&args(&["--sasl", "SCRAM-SHA-256"]))
            .unwrap()
            .unwrap();
        assert_eq!(opts.sasl, Sasl::ScramSha256);
        // MUC mode: any occupant count, open loop by default.
        let opts = parse_args(&args(&["--muc", "--occupants", "7"]))
            .unwrap()
            .unwrap();
        assert!(opts.muc);
        assert_eq!((opts.clients, opts.rate), (7, Some(1.0)));
    }

    #[test]
    fn args_rejected() {
        for bad in [
            &["--clients", "3"][..],
            &["--clients", "0"],
            &["--clients"],
            &["--clients", "many"],
            &["--duration", "0"],
            &["--rate", "-1"],
            &["--rate", "NaN"],
            &["--in-flight", "0"],
            &["--payload", "100000"],
            &["--frobnicate"],
            &["--sasl", "digest-md5"],
            &["stray"],
            &["--occupants", "10"],
            &["--muc", "--occupants", "1"],
            &["--muc", "--markdown"],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn body_round_trips() {
        for (seq, ts, pad) in [
            (0, 0, ""),
            (7, 123_456_789, "xxxx"),
            (u64::MAX, u64::MAX, ""),
        ] {
            assert_eq!(decode_body(&encode_body(seq, ts, pad)), Some((seq, ts)));
        }
    }

    #[test]
    fn body_garbage_is_not_a_sample() {
        for bad in [
            "",
            "12",
            "a 1",
            "1 b",
            "-1 5",
            "18446744073709551616 1",
            "hello there",
        ] {
            assert_eq!(decode_body(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn percentiles_nearest_rank() {
        assert_eq!(percentiles(&[]), None);
        let one = percentiles(&[42]).unwrap();
        assert_eq!((one.p50, one.p99, one.max), (42, 42, 42));
        let hundred: Vec<u64> = (1..=100).collect();
        let p = percentiles(&hundred).unwrap();
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50, 90, 99, 100));
        let ten: Vec<u64> = (1..=10).map(|v| v * 10).collect();
        let p = percentiles(&ten).unwrap();
        // ceil(0.99 * 10) = 10th sample: with few samples p99 is the maximum.
        assert_eq!((p.p50, p.p90, p.p99), (50, 90, 100));
    }

    #[test]
    fn vm_rss_parsed() {
        let status = "Name:\txmppd\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss_kib(status), Some(12345));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss_kib("VmRSS:\t12 MB\n"), None);
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(parse_vm_rss_kib(&own).unwrap() > 0);
    }

    #[test]
    fn cpu_ticks_parsed_past_odd_command_names() {
        let stat = "4242 (we ird) (x) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 15";
        assert_eq!(parse_cpu_ticks(stat), Some(333));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_cpu_ticks("no parens"), None);
        assert!(parse_cpu_ticks(&std::fs::read_to_string("/proc/self/stat").unwrap()).is_some());
    }

    #[test]
    fn listening_lines() {
        let line = "xmppd listening: direct-tls 127.0.0.1:45678";
        assert_eq!(
            parse_listening(line, "direct-tls"),
            Some("127.0.0.1:45678".parse().unwrap())
        );
        assert_eq!(parse_listening(line, "starttls"), None);
        assert_eq!(
            parse_listening("xmppd listening: direct-tls nonsense", "direct-tls"),
            None
        );
        assert_eq!(parse_listening("something else", "direct-tls"), None);
    }

    #[test]
    fn plain_response_is_rfc4616() {
        let encoded = plain_initial_response("bench3", "pw");
        let raw = B64.decode(encoded).unwrap();
        assert_eq!(raw, b"\0bench3\0pw");
    }

    #[test]
    fn sasl_payloads() {
        let el = |text: &str| Element::builder("success", NS_SASL).append(text).build();
        assert_eq!(sasl_payload(&el("=")).unwrap(), b"");
        assert_eq!(sasl_payload(&el(&B64.encode("v=abc"))).unwrap(), b"v=abc");
        assert!(sasl_payload(&el("not base64!")).is_err());
    }

    #[test]
    fn escaping() {
        assert_eq!(xml_escape("a&b<c>'\"d"), "a&amp;b&lt;c&gt;&apos;&quot;d");
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        assert_eq!(toml_string("/tmp/a\"b"), "\"/tmp/a\\\"b\"");
    }

    #[test]
    fn config_names_both_listeners() {
        let text = config_text(Path::new("/tmp/bench/data"));
        assert!(text.contains("data_dir = \"/tmp/bench/data\""));
        assert!(text.contains("direct_tls_listen = [\"127.0.0.1:0\"]"));
        assert!(text.contains("hosts = [\"localhost\"]"));
    }

    #[test]
    fn message_is_addressed_and_timestamped() {
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        });
        let (_tx, rx) = watch::channel(Phase::Run);
        let ctx = ConnCtx {
            shared: shared.clone(),
            phase: rx,
            peer: "bench1@localhost/bench".into(),
            fan_out: 1,
            rate: None,
            in_flight: 1,
            padding: String::new(),
        };
        let mut out = Vec::new();
        let mut seq = 5;
        push_message(&mut out, &ctx.peer, &mut seq, &ctx);
        push_message(&mut out, &ctx.peer, &mut seq, &ctx);
        assert_eq!(seq, 7);
        assert_eq!(shared.sent.load(Ordering::Relaxed), 2);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text.matches("<message to='bench1@localhost/bench' type='chat'>")
                .count(),
            2
        );
        assert!(text.contains("<body>5 ") && text.contains("<body>6 "));
    }

    fn message(body: &str, kind: Option<&str>) -> Element {
        let mut b = Element::builder("message", "jabber:client");
        if let Some(kind) = kind {
            b = b.attr("type".try_into().unwrap(), kind);
        }
        b.append(
            Element::builder("body", "jabber:client")
                .append(body)
                .build(),
        )
        .build()
    }

    #[test]
    fn incoming_messages_recorded() {
        let shared = Shared {
            epoch: Instant::now() - Duration::from_secs(1),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        };
        let mut stats = ConnStats::default();
        let mut last = None;
        let sent_ns = 500_000_000;
        for seq in [0, 1, 1] {
            let el = message(&encode_body(seq, sent_ns, ""), Some("chat"));
            assert_eq!(
                incoming(&el, &shared, &mut stats, &mut last).unwrap(),
                Incoming::Message
            );
        }
        assert_eq!(shared.received.load(Ordering::Relaxed), 3);
        assert_eq!(stats.reordered, 1);
        assert_eq!(stats.latencies.len(), 3);
        // Sent half a second after the epoch, received at least a second after it.
        assert!(stats.latencies.iter().all(|&l| l >= 500_000_000));

        let err = message(&encode_body(2, 0, ""), Some("error"));
        assert_eq!(
            incoming(&err, &shared, &mut stats, &mut last).unwrap(),
            Incoming::Ignored
        );
        assert_eq!(stats.error_stanzas, 1);
        let junk = message("not a bench body", None);
        assert_eq!(
            incoming(&junk, &shared, &mut stats, &mut last).unwrap(),
            Incoming::Ignored
        );
        let presence = Element::builder("presence", "jabber:client").build();
        assert_eq!(
            incoming(&presence, &shared, &mut stats, &mut last).unwrap(),
            Incoming::Ignored
        );
        assert_eq!(shared.received.load(Ordering::Relaxed), 3);

        let stream_err = Element::builder("error", xmppd_stream::NS_STREAM)
            .append(Element::builder("conflict", xmppd_stream::NS_STREAM_ERRORS).build())
            .build();
        assert!(incoming(&stream_err, &shared, &mut stats, &mut last).is_err());
    }

    #[test]
    fn iq_get_and_set_are_answered() {
        let ping = Element::builder("iq", "jabber:client")
            .attr("type".try_into().unwrap(), "get")
            .attr("id".try_into().unwrap(), "p<1")
            .attr("from".try_into().unwrap(), "localhost")
            .append(Element::builder("ping", "urn:xmpp:ping").build())
            .build();
        assert_eq!(
            iq_reply(&ping).as_deref(),
            Some("<iq type='result' id='p&lt;1' to='localhost'/>")
        );
        let other = Element::builder("iq", "jabber:client")
            .attr("type".try_into().unwrap(), "set")
            .attr("id".try_into().unwrap(), "x")
            .append(Element::builder("query", "jabber:iq:roster").build())
            .build();
        assert!(iq_reply(&other).unwrap().contains("service-unavailable"));
        let result = Element::builder("iq", "jabber:client")
            .attr("type".try_into().unwrap(), "result")
            .build();
        assert_eq!(iq_reply(&result), None);
    }

    #[test]
    fn features_and_bind_result() {
        let features = Element::builder("features", xmppd_stream::NS_STREAM)
            .append(
                Element::builder("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl")
                    .append(
                        Element::builder("mechanism", "urn:ietf:params:xml:ns:xmpp-sasl")
                            .append("SCRAM-SHA-256")
                            .build(),
                    )
                    .append(
                        Element::builder("mechanism", "urn:ietf:params:xml:ns:xmpp-sasl")
                            .append("PLAIN")
                            .build(),
                    )
                    .build(),
            )
            .build();
        assert!(offers_mechanism(&features, "PLAIN"));
        assert!(!offers_mechanism(&features, "EXTERNAL"));

        let bind_ns = "urn:ietf:params:xml:ns:xmpp-bind";
        let ok = Element::builder("iq", "jabber:client")
            .attr("type".try_into().unwrap(), "result")
            .append(
                Element::builder("bind", bind_ns)
                    .append(
                        Element::builder("jid", bind_ns)
                            .append("bench0@localhost/b")
                            .build(),
                    )
                    .build(),
            )
            .build();
        assert_eq!(bound_jid(&ok).unwrap(), "bench0@localhost/b");
        let failed = Element::builder("iq", "jabber:client")
            .attr("type".try_into().unwrap(), "error")
            .build();
        assert!(bound_jid(&failed).is_err());
        let empty = Element::builder("iq", "jabber:client")
            .attr("type".try_into().unwrap(), "result")
            .append(Element::builder("bind", bind_ns).build())
            .build();
        assert!(bound_jid(&empty).is_err());
    }

    #[test]
    fn date_is_iso() {
        let d = utc_date();
        let parts: Vec<&str> = d.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [4, 2, 2],
            "{d}"
        );
    }

    #[test]
    fn results_block_replaced_or_appended() {
        let appended = update_results_block("# Benchmarks\nintro", "| a | 1 |\n");
        assert!(appended.starts_with("# Benchmarks\nintro\n"));
        assert!(appended.contains(&format!("{MD_START}\n| a | 1 |\n{MD_END}")));

        let replaced = update_results_block(&format!("{appended}\n## After\n"), "| b | 2 |");
        assert!(!replaced.contains("| a | 1 |"));
        assert!(replaced.contains(&format!("{MD_START}\n| b | 2 |\n{MD_END}")));
        assert!(replaced.ends_with("\n## After\n"));
        assert_eq!(replaced.matches(MD_START).count(), 1);
    }

    #[test]
    fn report_outputs_carry_the_numbers() {
        let report = Report {
            date: "2025-01-02".into(),
            nproc: 2,
            cpu_model: "Test \"CPU\"".into(),
            clients: 4,
            mode: Options::default().mode(),
            payload: 0,
            login_secs: 0.5,
            run_secs: 2.0,
            sent: 1000,
            delivered: 998,
            delivered_in_run: 900,
            lost: 2,
            reordered: 0,
            error_stanzas: 0,
            connection_errors: 0,
            latency: Some(Percentiles {
                p50: 1_000_000,
                p90: 2_000_000,
                p99: 3_000_000,
                max: 9,
            }),
            rss_idle_kib: 1000,
            rss_sessions_kib: 1400,
            rss_end_kib: 1500,
            server_cpu_login_secs: 0.1,
            server_cpu_run_secs: 1.5,
            client_cpu_run_secs: 1.0,
        };
        assert_eq!(report.msgs_per_sec(), 450.0);
        assert_eq!(report.rss_per_session_kib(), 100.0);
        let table = report.table();
        assert!(table.contains("450 msg/s") && table.contains("FAIL"));
        assert!(table.contains("2.000 ms"));
        let json = report.json();
        assert!(json.starts_with('{') && json.ends_with('}'));
        assert!(json.contains("\"lost\":2") && json.contains("\"latency_p99_ns\":3000000"));
        assert!(json.contains("\"cpu_model\":\"Test \\\"CPU\\\"\""));
        assert_eq!(report.markdown().lines().count(), report.rows().len() + 2);
    }
}
