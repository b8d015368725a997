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
//!
//! `--callgrind` measures something else: the instructions the server executes per login and
//! per message, counted under valgrind (see [`callgrind`]). Unlike times, these counts repeat
//! from run to run on a shared machine, so they can tell a small regression from noise.
//! `--memory` measures the server's memory per idle TLS session (see [`memory`]).
//! `--resume` measures stream management resumption of many sessions at once and the memory
//! of parked sessions (see [`resume`]). `--storm` restarts a server with many sessions on it
//! and times their reconnecting all at once (see [`storm`]).

mod archive_scale;
mod callgrind;
mod client;
mod compare;
mod external;
mod memory;
mod muc;
mod offline;
mod peers;
mod pep;
mod report;
mod resume;
mod server;
mod steps;
mod storm;
mod upload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use tokio::sync::watch;

use client::{converse, exchange, login_all, ConnCtx, Load, Phase, Session, Shared, Target};
use muc::{join_room, BENCH_ROOM};
use report::{percentiles, update_results_block, Report};
use server::{
    clock_ticks_per_second, cpu_model, database_bytes, read_cpu_ticks, read_cpu_ticks_self,
    read_rss_kib, register_users, utc_date, write_config_for, ConfigExtra, ServerProcess, TempDir,
};

/// The domain every benchmark user lives on.
const DOMAIN: &str = "localhost";
/// All benchmark users share one password: logins are not what is being measured.
const PASSWORD: &str = "bench-password";
/// Benchmark user `i` is `bench{i}`.
const USER_PREFIX: &str = "bench";
/// Of the message phase, what comes first and is not measured, unless `--warmup` says.
const DEFAULT_WARMUP: Duration = Duration::from_secs(2);
/// Logins in progress at once; more only fills the server's accept queue.
const LOGIN_CONCURRENCY: usize = 64;
/// One login (TCP + TLS + SASL + bind + presence) must finish within this.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// After the run, how long to wait for messages still in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Closing all streams at the end must finish within this.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Presence broadcasts after login settle within this before memory is sampled.
const SETTLE_TIME: Duration = Duration::from_millis(500);
/// `--smoke`: clients, messages per second per client, measured seconds.
const SMOKE_CLIENTS: usize = 20;
const SMOKE_RATE: f64 = 5.0;
const SMOKE_DURATION: Duration = Duration::from_secs(5);
/// Set on the optimized re-run, so that it never re-runs itself again.
const REEXEC_ENV: &str = "XMPPD_BENCH_OPTIMIZED";

const USAGE: &str = "\
usage: cargo xtask bench [options]

  --clients N       concurrent client sessions, even (default 200)
  --duration SECS   length of the message phase (default 10)
  --rate R          open loop: each client sends R messages/s (default: closed loop)
  --in-flight K     closed loop: messages each client keeps in flight (default 4)
  --payload BYTES   extra filler bytes in each message body (default 0)
  --warmup SECS     first part of the message phase, not measured (default 2): messages are
                    sent and counted, their latency and the CPU time are not
  --sasl MECH       plain or scram-sha-256 (default plain)
  --server PATH     use this xmppd binary instead of building target/release/xmppd
  --backend ENGINE  where the server stores its data: sqlite (default), postgres or mariadb;
                    postgres and mariadb run on a private server started for the run (as
                    the storage tests start it), a database of its own; with the plain run
                    and --smoke only
  --archive         with the message archive on (XEP-0313; off by default, so that figures
                    compare with those from before it); reports bytes on disk per message
  --offline         offline storage (XEP-0160): half the --clients (default 500) send
                    --messages each (default 200) to their partner, who is offline; then the
                    partners log in and read them. Stored and delivered msg/s, server CPU per
                    message, login-to-last-message p50/p99; with --backend and --archive
  --muc             chat room fan-out: every client joins one room and sends groupchat
                    messages (open loop, default --rate 1); each delivery is counted
  --occupants N     with --muc: occupants of the room (default 100)
  --pep-fanout      personal eventing fan-out: one account publishes to --contacts
                    contacts online with +notify; first/last notification latency and
                    notifications/s per publish (see docs/BENCHMARKS.md)
  --contacts N      with --pep-fanout: contacts of the publisher (default 1000)
  --json            also print the results as one JSON object
  --markdown        write the results into docs/BENCHMARKS.md
  --callgrind       count the server's instructions per login and per message under
                    valgrind instead (a fixed, sequential workload; see docs/BENCHMARKS.md)
  --messages M      with --callgrind: chat messages of the message phase (default 2000)
  --memory          measure the server's memory per idle TLS session instead: sessions log
                    in one at a time (default --clients 1000; see docs/BENCHMARKS.md)
  --resume          stream management: park --clients sessions (default 1000), send each
                    messages, resume them all at once; time, exactly-once delivery, memory
                    per parked session (see docs/BENCHMARKS.md)
  --storm           reconnect storm: --clients sessions (default 1000) from 4096 addresses
                    of 127.0.0.0/8, the server restarted, all reconnecting at once; time
                    until all are admitted, refusals, login p50/p99, server CPU
  --websocket       WebSocket beside TCP: --clients sessions (default 1000) over XMPP over
                    WebSocket (RFC 7395, TLS) and as many over direct TLS, pairs on each,
                    one phase after the other; msg/s, latency, memory per session of each
  --s2s             federation: two servers (a.localhost, b.localhost) linked by s2s;
                    --clients pairs' clients (default 200) across them, then as many on
                    one server (c2s only); msg/s, latency, CPU of each server process
  --upload          HTTP file upload (XEP-0363): request a slot, PUT a file of --size MiB
                    over HTTPS, GET it back and check its hash; MiB/s, server CPU and
                    memory during each transfer
  --size MIB        with --upload: the file's size (default 100)
  --repeat N        with --callgrind or --memory: measure N times, report the spread
                    (default 1)
  --archive-scale   load a large message archive (default --messages 10000000 rows) into
                    target/archive-scale/ and time the archive's queries on it, without a
                    server (see docs/BENCHMARKS.md); the database is kept for the next run
  --queries N       with --archive-scale: queries of each kind (default 1000)
  --reload          with --archive-scale: load the database again even if it exists
  --purge           with --archive-scale: then time archive appends while the retention
                    job deletes the oldest million rows (at most half of them), and
                    delete the database
  --smoke           a short check that nothing is lost, as CI runs it: 20 clients, open loop
                    5 msg/s each, 5 s after the warm-up, against target/debug/xmppd (or
                    --server) without building it, the client unoptimized
  --steps R1,R2,…   open-loop steps of R messages/s in all (default 500,1000,2000,4000,8000)
                    on --clients sessions (default 500), each after --warmup, --duration
                    long; logins per CPU-second, KiB per idle session, CPU-µs per message
                    and p50/p99/max latency per step, the highest rate with p99 < 50 ms
  --vs LIST         the steps on xmppd and on each of LIST (prosody, ejabberd: the Debian
                    packages, started on loopback), server pinned to CPU 0 and the load
                    generator to CPU 1; one table
  --key KIND        with --vs: the certificate's key, rsa (RSA-2048, the default) or
                    ecdsa (P-256)
  --connect ADDR    the steps on a server the bench did not start, at its direct-TLS
                    (XEP-0368) address; with --domain D (default localhost), --prefix P
                    (accounts P0, P1, …; default bench), --password PW, --server-pid PID
                    (its process group's CPU and memory are reported) and --register
                    (create the accounts in-band first, XEP-0077)
  -h, --help        this text
";

/// Runs the benchmark with the arguments that follow `bench` on the command line.
pub fn run(args: &[String]) -> Result<()> {
    let Some(opts) = parse_args(args)? else {
        print!("{USAGE}");
        return Ok(());
    };
    let root = workspace_root();
    if cfg!(debug_assertions) && std::env::var_os(REEXEC_ENV).is_none() && !opts.smoke {
        return rerun_optimized(&root, args);
    }
    if let Some(scale) = &opts.archive_scale {
        return archive_scale::run(&root, scale);
    }
    if opts.external.is_some() {
        // Someone else's server: nothing to build.
        return steps::run_steps(&opts, Path::new(""));
    }
    let binary = match &opts.server {
        Some(path) => path.clone(),
        // The smoke checks the binary the tests run: whatever `cargo build` made last.
        None if opts.smoke => target_dir(&root).join("debug/xmppd"),
        None => build_release(&root)?,
    };
    if !opts.vs.is_empty() {
        return steps::run_vs(&opts, &binary);
    }
    if !opts.steps.is_empty() {
        return steps::run_steps(&opts, &binary);
    }
    if opts.callgrind {
        return callgrind::run(&opts, &binary, &target_dir(&root).join("callgrind"));
    }
    if opts.memory {
        return memory::run(&opts, &binary);
    }
    if opts.resume {
        return resume::run(&opts, &binary);
    }
    if opts.storm {
        return storm::run(&opts, &binary);
    }
    if opts.pep_fanout {
        return pep::run(&opts, &binary);
    }
    if opts.websocket {
        return compare::run_websocket(&opts, &binary);
    }
    if opts.s2s {
        return compare::run_s2s(&opts, &binary);
    }
    if let Some(mib) = opts.upload_mib {
        return upload::run(&opts, &binary, mib);
    }
    if opts.offline {
        return offline::run(&opts, &binary);
    }
    let work = TempDir::create()?;
    let storage = server::storage_section(opts.backend, &work.0)?;
    let config = write_config_for(
        &work.0,
        &ConfigExtra {
            sections: &storage,
            ..ConfigExtra::new(opts.archive)
        },
    )?;
    register_users(&binary, &config, opts.clients)?;
    // Bytes on disk are measured on SQLite's file only.
    let on_file = opts.backend == Backend::Sqlite;
    let db_before = if on_file {
        database_bytes(&binary, &config, &work.0)?
    } else {
        0
    };
    let mut server = start_server(&binary, &config, opts.backend)?;

    let runtime = runtime()?;
    let pid = server.pid();
    let addr = server.direct_tls;
    let outcome = runtime.block_on(drive(&opts, pid, addr));
    let server_log = server.stop();
    let report = match outcome {
        Ok(mut report) => {
            if opts.archive && on_file {
                let grown = database_bytes(&binary, &config, &work.0)?.saturating_sub(db_before);
                report.archive_bytes_per_message =
                    Some(grown as f64 / report.delivered.max(1) as f64);
            }
            report
        }
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

/// Starts the server on `config`; it must report that it opened `backend`.
fn start_server(binary: &Path, config: &Path, backend: Backend) -> Result<ServerProcess> {
    let mut server = ServerProcess::start(binary, config)?;
    eprintln!(
        "bench: server pid {} on {}",
        server.pid(),
        server.direct_tls
    );
    // The server names its storage when it opens it, before it listens.
    let storage_line = format!("storage: {}", backend.name());
    if backend != Backend::Sqlite && !server.printed(&storage_line, Duration::from_secs(5)) {
        bail!(
            "the server did not report {storage_line:?}; output:\n{}",
            server.stop()
        );
    }
    Ok(server)
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
    /// The first part of the message phase, whose latencies and CPU are not measured.
    warmup: Duration,
    sasl: Sasl,
    server: Option<PathBuf>,
    json: bool,
    markdown: bool,
    /// Clients share one chat room instead of talking in pairs.
    muc: bool,
    /// Count instructions under callgrind instead of measuring times.
    callgrind: bool,
    /// With `callgrind`: messages of the message phase.
    messages: usize,
    /// With `callgrind` or `memory`: how many times to measure.
    repeat: usize,
    /// Measure memory per idle session instead of times.
    memory: bool,
    /// Run the server with the message archive on (`[mam] enabled`).
    archive: bool,
    /// Where the server stores its data.
    backend: Backend,
    /// Park sessions and resume them all at once instead.
    resume: bool,
    /// A reconnect storm after a restart instead.
    storm: bool,
    /// Personal eventing fan-out to `clients` contacts instead.
    pep_fanout: bool,
    /// Pairs over WebSocket and over direct TLS, one phase each.
    websocket: bool,
    /// Pairs across two federated servers, and on one.
    s2s: bool,
    /// Upload a file of this many MiB and download it again instead.
    upload_mib: Option<u64>,
    /// Messages to offline accounts, then their retrieval at login, instead.
    offline: bool,
    /// Load a large archive and query it instead (no server).
    archive_scale: Option<archive_scale::ScaleOptions>,
    /// A short open-loop run of the debug build that fails on a lost message (CI).
    smoke: bool,
    /// Open-loop steps: total messages per second of each (`--steps`, `--vs`).
    steps: Vec<f64>,
    /// Servers to run the steps on beside xmppd.
    vs: Vec<peers::Kind>,
    /// With `vs`: the key of the run's certificate.
    key: peers::KeyKind,
    /// Run the steps on a server the bench did not start.
    external: Option<external::External>,
}

/// The storage engine of the server under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
    Mariadb,
}

impl Backend {
    fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            "mariadb" | "mysql" => Ok(Backend::Mariadb),
            other => bail!("--backend: unknown engine {other:?} (sqlite, postgres or mariadb)"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
            Backend::Mariadb => "MariaDB",
        }
    }
}

/// How clients authenticate. PLAIN by default: the message phase is what is measured, and
/// SCRAM's key derivation would make logging in the bench client's own bottleneck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sasl {
    Plain,
    /// What every server offers (Prosody 0.12 stores SHA-1 keys only).
    ScramSha1,
    ScramSha256,
}

impl Sasl {
    fn name(self) -> &'static str {
        match self {
            Sasl::Plain => "PLAIN",
            Sasl::ScramSha1 => "SCRAM-SHA-1",
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
            warmup: DEFAULT_WARMUP,
            sasl: Sasl::Plain,
            server: None,
            json: false,
            markdown: false,
            muc: false,
            callgrind: false,
            messages: callgrind::DEFAULT_MESSAGES,
            repeat: 1,
            memory: false,
            archive: false,
            backend: Backend::Sqlite,
            resume: false,
            storm: false,
            pep_fanout: false,
            websocket: false,
            s2s: false,
            upload_mib: None,
            offline: false,
            archive_scale: None,
            smoke: false,
            steps: Vec::new(),
            vs: Vec::new(),
            key: peers::KeyKind::Rsa2048,
            external: None,
        }
    }
}

impl Options {
    /// One of the modes that measure something else than the message phase.
    fn own_measurement(&self) -> bool {
        self.pep_fanout
            || self.websocket
            || self.s2s
            || self.resume
            || self.memory
            || self.callgrind
    }

    fn mode(&self) -> String {
        let load = match self.rate {
            Some(rate) => format!("open loop, {rate} msg/s per client, spread evenly"),
            None => format!("closed loop, {} in flight per client", self.in_flight),
        };
        let archive = match (self.archive, self.backend) {
            (false, Backend::Sqlite) => String::new(),
            (true, Backend::Sqlite) => "; archive on".to_owned(),
            (false, b) => format!("; {} storage", b.name()),
            (true, b) => format!("; archive on, {} storage", b.name()),
        };
        if self.muc {
            return format!(
                "MUC fan-out: {} occupants in one room, {load}; SASL {}{archive}",
                self.clients,
                self.sasl.name()
            );
        }
        format!("{load}; SASL {}{archive}", self.sasl.name())
    }
}

/// `Ok(None)` when help was asked for.
fn parse_args(args: &[String]) -> Result<Option<Options>> {
    let mut opts = Options::default();
    let mut occupants: Option<usize> = None;
    let mut clients: Option<usize> = None;
    // Flags of the timed load run, and of the instruction count: neither applies to the other.
    let mut load_flags: Vec<&str> = Vec::new();
    let mut callgrind_flags: Vec<&str> = Vec::new();
    let mut scale_flags: Vec<&str> = Vec::new();
    let mut scale = archive_scale::ScaleOptions {
        messages: archive_scale::DEFAULT_MESSAGES,
        queries: archive_scale::DEFAULT_QUERIES,
        reload: false,
        purge: false,
    };
    let mut archive_scale = false;
    let mut messages: Option<u64> = None;
    let mut contacts: Option<usize> = None;
    let mut upload = false;
    let mut size: Option<u64> = None;
    let mut key: Option<peers::KeyKind> = None;
    let mut account_flags: Vec<(&str, String)> = Vec::new();
    if args.iter().any(|a| a == "--smoke") {
        // Small and gentle, so that an unoptimized client and server keep up; the options
        // that follow may change it.
        opts.smoke = true;
        opts.clients = SMOKE_CLIENTS;
        opts.rate = Some(SMOKE_RATE);
        opts.duration = SMOKE_DURATION;
    }
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
            "--duration" | "--rate" | "--in-flight" | "--payload" | "--warmup" | "--markdown"
            | "--muc" | "--occupants" => load_flags.push(flag),
            "--messages" => callgrind_flags.push(flag),
            "--queries" | "--reload" | "--purge" => scale_flags.push(flag),
            _ => {}
        }
        match flag {
            "-h" | "--help" => return Ok(None),
            "--clients" => clients = Some(parse_num(&value(flag)?, flag)?),
            "--duration" => {
                opts.duration = Duration::from_secs(parse_num::<u64>(&value(flag)?, flag)?)
            }
            "--rate" => opts.rate = Some(parse_num(&value(flag)?, flag)?),
            "--in-flight" => opts.in_flight = parse_num(&value(flag)?, flag)?,
            "--payload" => opts.payload = parse_num(&value(flag)?, flag)?,
            "--warmup" => {
                let secs: f64 = parse_num(&value(flag)?, flag)?;
                if !(0.0..=600.0).contains(&secs) {
                    bail!("--warmup must be between 0 and 600 seconds");
                }
                opts.warmup = Duration::from_secs_f64(secs);
            }
            "--sasl" => {
                opts.sasl = match value(flag)?.to_ascii_lowercase().as_str() {
                    "plain" => Sasl::Plain,
                    "scram-sha-256" | "scram" => Sasl::ScramSha256,
                    "scram-sha-1" => Sasl::ScramSha1,
                    other => bail!("--sasl: unknown mechanism {other:?}"),
                }
            }
            "--server" => opts.server = Some(PathBuf::from(value(flag)?)),
            "--json" => opts.json = true,
            "--markdown" => opts.markdown = true,
            "--muc" => opts.muc = true,
            "--occupants" => occupants = Some(parse_num(&value(flag)?, flag)?),
            "--callgrind" => opts.callgrind = true,
            "--messages" => messages = Some(parse_num(&value(flag)?, flag)?),
            "--repeat" => opts.repeat = parse_num(&value(flag)?, flag)?,
            "--memory" => opts.memory = true,
            "--resume" => opts.resume = true,
            "--storm" => opts.storm = true,
            "--pep-fanout" => opts.pep_fanout = true,
            "--websocket" => opts.websocket = true,
            "--s2s" => opts.s2s = true,
            "--upload" => upload = true,
            "--offline" => opts.offline = true,
            "--size" => size = Some(parse_num(&value(flag)?, flag)?),
            "--contacts" => contacts = Some(parse_num(&value(flag)?, flag)?),
            "--archive" => opts.archive = true,
            "--backend" => opts.backend = Backend::parse(&value(flag)?)?,
            "--smoke" => {}
            "--steps" => {
                opts.steps = value(flag)?
                    .split(',')
                    .map(|r| parse_num(r, flag))
                    .collect::<Result<_>>()?
            }
            "--vs" => {
                opts.vs = value(flag)?
                    .split(',')
                    .map(peers::Kind::parse)
                    .collect::<Result<_>>()?
            }
            "--key" => key = Some(peers::KeyKind::parse(&value(flag)?)?),
            "--connect" => opts.external = Some(external::External::new(&value(flag)?)?),
            "--domain" | "--prefix" | "--password" | "--server-pid" | "--register" => {
                let v = if flag == "--register" {
                    String::new()
                } else {
                    value(flag)?
                };
                account_flags.push((flag, v));
            }
            "--archive-scale" => archive_scale = true,
            "--queries" => scale.queries = parse_num(&value(flag)?, flag)?,
            "--reload" => scale.reload = true,
            "--purge" => scale.purge = true,
            _ => bail!("unknown argument {arg:?}\n{USAGE}"),
        }
    }
    if opts.offline {
        let allowed = [
            "--offline",
            "--clients",
            "--messages",
            "--payload",
            "--backend",
            "--archive",
            "--server",
            "--sasl",
        ];
        if let Some(flag) = flag_outside(args, &allowed) {
            bail!("{flag} does not apply to --offline");
        }
        opts.clients = clients.unwrap_or(offline::DEFAULT_CLIENTS);
        if opts.clients < 2 || !opts.clients.is_multiple_of(2) || opts.clients > 100_000 {
            bail!("--clients must be an even number between 2 and 100000 (senders and recipients)");
        }
        opts.messages = match messages {
            Some(m) => usize::try_from(m)?,
            None => offline::DEFAULT_PER_RECIPIENT,
        };
        if !(1..=100_000).contains(&opts.messages) {
            bail!("--messages must be between 1 and 100000 with --offline");
        }
        return check_load(opts).map(Some);
    }
    let steps_mode = !account_flags.is_empty()
        || opts.external.is_some()
        || !opts.vs.is_empty()
        || !opts.steps.is_empty();
    if opts.backend != Backend::Sqlite
        && (steps_mode
            || archive_scale
            || upload
            || opts.own_measurement()
            || opts.muc
            || opts.markdown)
    {
        bail!("--backend applies to the plain one-to-one run and --smoke only");
    }
    if let Some(key) = key {
        if opts.vs.is_empty() {
            bail!("--key needs --vs (the certificate made for the run)");
        }
        opts.key = key;
    }
    if steps_mode {
        return steps_options(opts, clients, account_flags, &load_flags).map(Some);
    }
    let other_mode = archive_scale || upload || opts.own_measurement() || opts.muc || opts.markdown;
    if opts.smoke && other_mode {
        bail!("--smoke is the plain one-to-one run of its own; it takes only the load options");
    }
    if archive_scale {
        if let Some(flag) = flag_outside(
            args,
            &[
                "--archive-scale",
                "--messages",
                "--queries",
                "--reload",
                "--purge",
            ],
        ) {
            bail!("{flag} does not apply to --archive-scale (no server, no clients)");
        }
        scale.messages = messages.unwrap_or(scale.messages);
        if !(1_000..=100_000_000).contains(&scale.messages) {
            bail!("--messages must be between 1000 and 100000000 with --archive-scale");
        }
        if !(1..=100_000).contains(&scale.queries) {
            bail!("--queries must be between 1 and 100000");
        }
        opts.archive_scale = Some(scale);
        return Ok(Some(opts));
    }
    if let Some(flag) = scale_flags.first() {
        bail!("{flag} needs --archive-scale");
    }
    if let Some(m) = messages {
        opts.messages = usize::try_from(m)?;
    }
    if !(1..=10).contains(&opts.repeat) {
        bail!("--repeat must be between 1 and 10");
    }
    if contacts.is_some() && !opts.pep_fanout {
        bail!("--contacts needs --pep-fanout");
    }
    if opts.pep_fanout {
        if opts.resume || opts.memory || opts.callgrind {
            bail!("--pep-fanout is a measurement of its own; run it apart from the others");
        }
        if let Some(flag) = load_flags.first().or(callgrind_flags.first()) {
            bail!("{flag} does not apply to --pep-fanout");
        }
        if clients.is_some() {
            bail!("--pep-fanout counts --contacts, not --clients");
        }
        if opts.repeat != 1 {
            bail!("--repeat needs --callgrind or --memory");
        }
        opts.clients = contacts.unwrap_or(pep::DEFAULT_CONTACTS);
        if !(1..=100_000).contains(&opts.clients) {
            bail!("--contacts must be between 1 and 100000");
        }
        return Ok(Some(opts));
    }
    if opts.storm {
        if let Some(flag) = flag_outside(args, &["--storm", "--clients", "--server", "--sasl"]) {
            bail!("{flag} does not apply to --storm");
        }
        opts.clients = clients.unwrap_or(storm::DEFAULT_SESSIONS);
        if !(1..=100_000).contains(&opts.clients) {
            bail!("--clients must be between 1 and 100000");
        }
        return Ok(Some(opts));
    }
    if size.is_some() && !upload {
        bail!("--size needs --upload");
    }
    if upload {
        if let Some(flag) = flag_outside(args, &["--upload", "--size", "--server", "--sasl"]) {
            bail!("{flag} does not apply to --upload");
        }
        let mib = size.unwrap_or(upload::DEFAULT_MIB);
        if !(1..=100_000).contains(&mib) {
            bail!("--size must be between 1 and 100000 MiB");
        }
        opts.upload_mib = Some(mib);
        return Ok(Some(opts));
    }
    if opts.websocket || opts.s2s {
        let mode = if opts.websocket {
            "--websocket"
        } else {
            "--s2s"
        };
        if (opts.websocket && opts.s2s) || opts.resume || opts.memory || opts.callgrind {
            bail!("{mode} is a measurement of its own; run it apart from the others");
        }
        if let Some(flag) = callgrind_flags.first() {
            bail!("{flag} does not apply to {mode}");
        }
        if opts.muc || opts.markdown || opts.json || opts.archive {
            bail!(
                "{mode} prints its own table; --muc, --archive, --markdown and --json do not apply"
            );
        }
        if opts.repeat != 1 {
            bail!("--repeat needs --callgrind or --memory");
        }
        opts.clients = clients.unwrap_or(if opts.websocket {
            compare::DEFAULT_WEBSOCKET_SESSIONS
        } else {
            compare::DEFAULT_S2S_CLIENTS
        });
        if opts.clients < 2 || opts.clients % 2 != 0 || opts.clients > 100_000 {
            bail!("--clients must be an even number between 2 and 100000 (clients talk in pairs)");
        }
        return check_load(opts).map(Some);
    }
    if opts.resume {
        if opts.memory || opts.callgrind {
            bail!(
                "--resume is a measurement of its own; run it apart from --memory and --callgrind"
            );
        }
        if let Some(flag) = load_flags.first().or(callgrind_flags.first()) {
            bail!("{flag} does not apply to --resume");
        }
        if opts.repeat != 1 {
            bail!("--repeat needs --callgrind or --memory");
        }
        opts.clients = clients.unwrap_or(resume::DEFAULT_SESSIONS);
        if !(2..=100_000).contains(&opts.clients) {
            bail!("--clients must be between 2 and 100000");
        }
        return Ok(Some(opts));
    }
    if opts.memory {
        if opts.callgrind {
            bail!("--memory and --callgrind are separate measurements; run them one at a time");
        }
        if let Some(flag) = load_flags.first().or(callgrind_flags.first()) {
            bail!("{flag} does not apply to --memory (idle sessions, no messages)");
        }
        opts.clients = clients.unwrap_or(memory::DEFAULT_SESSIONS);
        if !(2..=100_000).contains(&opts.clients) {
            bail!("--clients must be between 2 and 100000");
        }
        return Ok(Some(opts));
    }
    if opts.repeat != 1 && !opts.callgrind {
        bail!("--repeat needs --callgrind or --memory");
    }
    if opts.callgrind {
        if let Some(flag) = load_flags.first() {
            bail!("{flag} belongs to the timed run; --callgrind runs a fixed workload");
        }
        opts.clients = clients.unwrap_or(callgrind::DEFAULT_LOGINS);
        if opts.clients < 2 || opts.clients % 2 != 0 {
            bail!("--clients must be an even number of at least 2 (clients talk in pairs)");
        }
        if !(1..=1_000_000).contains(&opts.messages) {
            bail!("--messages must be between 1 and 1000000");
        }
        return Ok(Some(opts));
    }
    if let Some(flag) = callgrind_flags.first() {
        bail!("{flag} needs --callgrind");
    }
    if let Some(n) = clients {
        opts.clients = n;
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
    check_load(opts).map(Some)
}

/// The first `--flag` of `args` (its name, without an inline value) that `allowed` lacks.
fn flag_outside<'a>(args: &'a [String], allowed: &[&str]) -> Option<&'a str> {
    args.iter()
        .map(|a| a.split_once('=').map_or(a.as_str(), |(f, _)| f))
        .find(|a| a.starts_with("--") && !allowed.contains(a))
}

/// `--steps`, `--vs` and `--connect` with its account options.
fn steps_options(
    mut opts: Options,
    clients: Option<usize>,
    account_flags: Vec<(&str, String)>,
    load_flags: &[&str],
) -> Result<Options> {
    if let Some(flag) = load_flags.iter().find(|f| {
        [
            "--rate",
            "--in-flight",
            "--muc",
            "--occupants",
            "--markdown",
        ]
        .contains(f)
    }) {
        bail!(
            "{flag} does not apply to --steps, --vs or --connect (open loop at each step's rate)"
        );
    }
    let other_mode = opts.smoke
        || opts.own_measurement()
        || opts.archive_scale.is_some()
        || opts.upload_mib.is_some()
        || opts.json;
    if other_mode {
        bail!("--steps, --vs and --connect are a measurement of their own; run them apart");
    }
    match &mut opts.external {
        Some(external) => {
            if !opts.vs.is_empty() {
                bail!("--vs starts its servers itself; --connect does not apply");
            }
            for (flag, value) in account_flags {
                match flag {
                    "--domain" => external.domain = value,
                    "--prefix" => external.prefix = value,
                    "--password" => external.password = value,
                    "--server-pid" => external.pid = Some(parse_num(&value, flag)?),
                    _ => external.register = true,
                }
            }
        }
        None => {
            if let Some((flag, _)) = account_flags.first() {
                bail!("{flag} needs --connect (a server the bench did not start)");
            }
        }
    }
    if opts.steps.is_empty() {
        opts.steps = steps::DEFAULT_STEPS.to_vec();
    }
    if opts
        .steps
        .iter()
        .any(|r| !(r.is_finite() && *r > 0.0 && *r <= 1_000_000.0))
    {
        bail!("--steps: each rate must be above 0 and at most 1000000 messages per second");
    }
    opts.clients = clients.unwrap_or(steps::DEFAULT_SESSIONS);
    if opts.clients < 2 || !opts.clients.is_multiple_of(2) || opts.clients > 100_000 {
        bail!("--clients must be an even number between 2 and 100000 (clients talk in pairs)");
    }
    check_load(opts)
}

/// The limits of the message phase's options.
fn check_load(opts: Options) -> Result<Options> {
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
    Ok(opts)
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
    Ok(target_dir(root).join("release/xmppd"))
}

/// Cargo's target directory; CARGO_TARGET_DIR moves it, so honour it as cargo does.
fn target_dir(root: &Path) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    if target.is_absolute() {
        target
    } else {
        root.join(target)
    }
}

async fn drive(opts: &Options, pid: u32, addr: SocketAddr) -> Result<Report> {
    let clk_tck = clock_ticks_per_second();
    tokio::time::sleep(SETTLE_TIME).await;
    let rss_idle_kib = read_rss_kib(pid)?;
    let cpu_start = read_cpu_ticks(pid)?;

    eprintln!("bench: logging in {} clients", opts.clients);
    let login_started = Instant::now();
    let target = Target::tcp(addr)?;
    let mut sessions = login_all((0..opts.clients).map(|i| (target.clone(), i)), opts.sasl).await?;
    if opts.muc {
        sessions = join_room(sessions).await?;
    }
    let login_secs = login_started.elapsed().as_secs_f64();
    eprintln!("bench: {} sessions up in {login_secs:.2}s", sessions.len());
    tokio::time::sleep(SETTLE_TIME).await;
    let rss_sessions_kib = read_rss_kib(pid)?;
    let cpu_login = read_cpu_ticks(pid)?;

    let fan_out = if opts.muc { sessions.len() as u64 } else { 1 };
    let peers = if opts.muc {
        vec![BENCH_ROOM.to_owned(); sessions.len()]
    } else {
        pair_peers(&sessions)
    };
    let phase = message_phase(sessions, peers, fan_out, opts, &[pid]).await?;
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
        run_secs: phase.run_secs,
        sent: phase.sent,
        delivered: phase.delivered,
        delivered_in_run: phase.delivered_in_run,
        lost: phase.lost(),
        reordered: phase.reordered,
        error_stanzas: phase.error_stanzas,
        connection_errors: phase.connection_errors,
        latency: percentiles(&phase.latencies),
        rss_idle_kib,
        rss_sessions_kib,
        rss_end_kib: phase.rss_end_kib[0],
        server_cpu_login_secs: secs(cpu_login.saturating_sub(cpu_start)),
        server_cpu_run_secs: secs(phase.cpu_run[0]),
        client_cpu_run_secs: secs(phase.client_cpu_run),
        late_sends: phase.late_sends,
        archive_bytes_per_message: None,
    })
}

/// Each session's peer in the one-to-one modes: sessions 2k and 2k + 1 talk to each other.
fn pair_peers(sessions: &[Session]) -> Vec<String> {
    (0..sessions.len())
        .map(|i| sessions[i ^ 1].jid.clone())
        .collect()
}

/// What one message phase measured.
struct PhaseOutcome {
    run_secs: f64,
    sent: u64,
    delivered: u64,
    delivered_in_run: u64,
    /// Delivery latencies, ascending.
    latencies: Vec<u64>,
    reordered: u64,
    error_stanzas: u64,
    connection_errors: u64,
    /// CPU ticks each server process used over the measured part of the run (after the
    /// warm-up, before the drain).
    cpu_run: Vec<u64>,
    /// The bench client's CPU ticks over the same time.
    client_cpu_run: u64,
    /// Open loop: messages the generator sent late, being busy (see [`client::converse`]).
    late_sends: u64,
    /// Resident memory of each server process after the drain.
    rss_end_kib: Vec<u64>,
}

impl PhaseOutcome {
    fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.delivered)
    }
}

/// The message phase: every session sends to its peer (a JID, or the room's) for
/// `opts.duration` after `opts.warmup`, then stops and waits for what is in flight, then
/// closes its stream. `fan_out` is how many deliveries one message makes. `pids` are the
/// server processes whose CPU and memory are read.
async fn message_phase(
    sessions: Vec<Session>,
    peers: Vec<String>,
    fan_out: u64,
    opts: &Options,
    pids: &[u32],
) -> Result<PhaseOutcome> {
    eprintln!(
        "bench: exchanging messages for {:.0}s after a {:.0}s warm-up ({})",
        opts.duration.as_secs_f64(),
        opts.warmup.as_secs_f64(),
        opts.mode()
    );
    let load = Load {
        fan_out,
        rate: opts.rate,
        in_flight: opts.in_flight,
        payload: opts.payload,
        measure_from_ns: u64::try_from(opts.warmup.as_nanos()).unwrap_or(u64::MAX),
    };
    let (outcome, _) = run_phase(sessions, peers, &load, opts.duration, pids, false).await?;
    Ok(outcome)
}

/// A message phase of `load`, measured for `duration` after `load.measure_from_ns`. With
/// `keep_open` the streams stay open and the sessions come back (in their order) for the
/// next phase, unless a connection failed; otherwise each stream is closed.
async fn run_phase(
    sessions: Vec<Session>,
    peers: Vec<String>,
    load: &Load,
    duration: Duration,
    pids: &[u32],
    keep_open: bool,
) -> Result<(PhaseOutcome, Vec<Session>)> {
    let shared = Arc::new(Shared::new());
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let count = sessions.len();
    let mut tasks: Vec<tokio::task::JoinHandle<Result<_>>> = Vec::with_capacity(count);
    for (index, (mut session, peer)) in sessions.into_iter().zip(peers).enumerate() {
        let mut ctx = ConnCtx::new(shared.clone(), phase_rx.clone(), peer, (index, count), load);
        tasks.push(tokio::spawn(async move {
            if keep_open {
                let stats = converse(&mut session, &mut ctx).await?;
                Ok((stats, Some(session)))
            } else {
                Ok((exchange(session, ctx).await?, None))
            }
        }));
    }
    let warmup = Duration::from_nanos(load.measure_from_ns);
    tokio::time::sleep_until((shared.epoch + warmup).into()).await;
    let delivered_in_warmup = shared.received.load(Ordering::Relaxed);
    let cpu_start = pids
        .iter()
        .map(|&pid| read_cpu_ticks(pid))
        .collect::<Result<Vec<_>>>()?;
    let client_cpu_start = read_cpu_ticks_self()?;
    let run_started = Instant::now();
    tokio::time::sleep(duration).await;
    let _ = phase_tx.send(Phase::Drain);
    let run_secs = run_started.elapsed().as_secs_f64();
    let delivered_in_run = shared
        .received
        .load(Ordering::Relaxed)
        .saturating_sub(delivered_in_warmup);
    let cpu_run = pids
        .iter()
        .zip(&cpu_start)
        .map(|(&pid, start)| Ok(read_cpu_ticks(pid)?.saturating_sub(*start)))
        .collect::<Result<Vec<_>>>()?;
    let client_cpu_run = read_cpu_ticks_self()?.saturating_sub(client_cpu_start);

    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    // First every connection stops sending, then what it sent arrives.
    while (shared.stopped.load(Ordering::Relaxed) < count as u64
        || shared.received.load(Ordering::Relaxed) < shared.sent.load(Ordering::Relaxed))
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rss_end_kib = pids
        .iter()
        .map(|&pid| read_rss_kib(pid))
        .collect::<Result<Vec<_>>>()?;
    let _ = phase_tx.send(Phase::Finish);

    let mut latencies = Vec::new();
    let mut reordered = 0;
    let mut error_stanzas = 0;
    let mut late_sends = 0;
    let mut connection_errors = 0u64;
    let mut kept = Vec::new();
    let close_deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
    for task in tasks {
        match tokio::time::timeout_at(close_deadline, task).await {
            Ok(Ok(Ok((stats, session)))) => {
                kept.extend(session);
                latencies.extend_from_slice(&stats.latencies);
                // Several senders share a room: one sequence per connection means nothing there.
                if load.fan_out == 1 {
                    reordered += stats.reordered;
                }
                error_stanzas += stats.error_stanzas;
                late_sends += stats.late_sends;
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
    if connection_errors != 0 {
        // The pairs are broken: nothing more can run on these sessions.
        kept.clear();
    }
    let outcome = PhaseOutcome {
        run_secs,
        sent: shared.sent.load(Ordering::Relaxed),
        delivered: shared.received.load(Ordering::Relaxed),
        delivered_in_run,
        latencies,
        reordered,
        error_stanzas,
        connection_errors,
        cpu_run,
        client_cpu_run,
        late_sends,
        rss_end_kib,
    };
    Ok((outcome, kept))
}

/// The bench client's runtime: one worker per core.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")
}

fn user_name(index: usize) -> String {
    format!("{USER_PREFIX}{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn args_offline() {
        let opts = parse_args(&args(&["--offline"])).unwrap().unwrap();
        assert!(opts.offline);
        assert_eq!(
            (opts.clients, opts.messages),
            (offline::DEFAULT_CLIENTS, offline::DEFAULT_PER_RECIPIENT)
        );
        let opts = parse_args(&args(&[
            "--offline",
            "--clients=40",
            "--messages",
            "7",
            "--backend",
            "postgres",
            "--archive",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((opts.clients, opts.messages), (40, 7));
        assert_eq!((opts.backend, opts.archive), (Backend::Postgres, true));
        for (list, want) in [
            (
                &["--offline", "--rate", "5"][..],
                "--rate does not apply to --offline",
            ),
            (
                &["--offline", "--muc"][..],
                "--muc does not apply to --offline",
            ),
            (
                &["--offline", "--clients", "3"][..],
                "--clients must be an even",
            ),
            (
                &["--offline", "--messages", "0"][..],
                "--messages must be between",
            ),
        ] {
            let err = parse_args(&args(list)).unwrap_err().to_string();
            assert!(err.contains(want), "{list:?}: {err}");
        }
    }

    #[test]
    fn args_backend() {
        assert_eq!(parse_args(&[]).unwrap().unwrap().backend, Backend::Sqlite);
        for (given, backend) in [
            ("sqlite", Backend::Sqlite),
            ("postgres", Backend::Postgres),
            ("PostgreSQL", Backend::Postgres),
            ("mariadb", Backend::Mariadb),
            ("mysql", Backend::Mariadb),
        ] {
            let opts = parse_args(&args(&["--backend", given])).unwrap().unwrap();
            assert_eq!(opts.backend, backend, "{given}");
            assert_eq!(opts.clients, 200);
        }
        let opts = parse_args(&args(&[
            "--backend=postgres",
            "--archive",
            "--clients",
            "20",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(opts.backend, Backend::Postgres);
        assert!(opts.archive);
        assert_eq!(opts.clients, 20);
        assert!(opts.mode().contains("archive on, PostgreSQL storage"));
        // With the smoke run, which keeps its own small load.
        let opts = parse_args(&args(&["--smoke", "--backend", "mariadb"]))
            .unwrap()
            .unwrap();
        assert!(opts.smoke);
        assert_eq!(opts.backend, Backend::Mariadb);
        assert_eq!(opts.clients, SMOKE_CLIENTS);
        assert!(opts.mode().contains("MariaDB storage"));
        assert!(!parse_args(&[]).unwrap().unwrap().mode().contains("storage"));

        let err = parse_args(&args(&["--backend", "oracle"])).unwrap_err();
        assert!(
            err.to_string().contains("unknown engine \"oracle\""),
            "{err}"
        );
        let err = parse_args(&args(&["--backend"])).unwrap_err();
        assert!(err.to_string().contains("--backend needs a value"), "{err}");
        // Every other mode starts its server(s) on SQLite; naming the default is allowed there.
        for other in [
            &["--muc"][..],
            &["--memory"],
            &["--callgrind"],
            &["--resume"],
            &["--websocket"],
            &["--s2s"],
            &["--upload"],
            &["--archive-scale"],
            &["--markdown"],
            &["--steps", "100"],
            &["--pep-fanout"],
        ] {
            let mut list = vec!["--backend", "postgres"];
            list.extend_from_slice(other);
            let err = parse_args(&args(&list)).unwrap_err();
            assert!(
                err.to_string().contains("--backend applies to the plain"),
                "{other:?}: {err}"
            );
        }
        assert!(parse_args(&args(&["--backend", "sqlite", "--muc"])).is_ok());
        assert!(parse_args(&args(&["--backend", "sqlite", "--steps", "100"])).is_ok());
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
        // The archive is off unless asked for, in every mode.
        assert!(!opts.archive);
        for mode in [
            &["--archive"][..],
            &["--archive", "--callgrind"],
            &["--archive", "--rate", "3"],
        ] {
            let opts = parse_args(&args(mode)).unwrap().unwrap();
            assert!(
                opts.archive && opts.mode().ends_with("; archive on"),
                "{mode:?}"
            );
        }
        // Instruction counts: a small fixed workload unless told otherwise.
        let opts = parse_args(&args(&["--callgrind"])).unwrap().unwrap();
        assert!(opts.callgrind);
        assert_eq!(
            (opts.clients, opts.messages, opts.repeat),
            (callgrind::DEFAULT_LOGINS, callgrind::DEFAULT_MESSAGES, 1)
        );
        let opts = parse_args(&args(&[
            "--callgrind",
            "--clients=10",
            "--messages",
            "30",
            "--repeat",
            "2",
            "--sasl",
            "scram",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((opts.clients, opts.messages, opts.repeat), (10, 30, 2));
        assert_eq!(opts.sasl, Sasl::ScramSha256);
        // Memory per idle session: many sessions by default, any count of at least two.
        let opts = parse_args(&args(&["--memory"])).unwrap().unwrap();
        assert!(opts.memory && !opts.callgrind);
        assert_eq!((opts.clients, opts.repeat), (memory::DEFAULT_SESSIONS, 1));
        let opts = parse_args(&args(&["--memory", "--clients", "301", "--repeat", "3"]))
            .unwrap()
            .unwrap();
        assert_eq!((opts.clients, opts.repeat), (301, 3));
        // Resumption: a thousand sessions unless told otherwise.
        let opts = parse_args(&args(&["--resume"])).unwrap().unwrap();
        assert!(opts.resume && !opts.memory);
        assert_eq!(opts.clients, resume::DEFAULT_SESSIONS);
        let opts = parse_args(&args(&["--resume", "--clients", "7", "--json"]))
            .unwrap()
            .unwrap();
        assert_eq!(opts.clients, 7);
        // The reconnect storm: a thousand sessions unless told otherwise.
        let opts = parse_args(&args(&["--storm"])).unwrap().unwrap();
        assert!(opts.storm && !opts.resume);
        assert_eq!(opts.clients, storm::DEFAULT_SESSIONS);
        let opts = parse_args(&args(&["--storm", "--clients", "18000", "--sasl", "scram"]))
            .unwrap()
            .unwrap();
        assert_eq!((opts.clients, opts.sasl), (18000, Sasl::ScramSha256));
        // The certificate of --vs: RSA-2048 unless told otherwise.
        let opts = parse_args(&args(&["--vs", "prosody"])).unwrap().unwrap();
        assert_eq!(opts.key, peers::KeyKind::Rsa2048);
        let opts = parse_args(&args(&["--vs", "prosody", "--key", "ecdsa"]))
            .unwrap()
            .unwrap();
        assert_eq!(opts.key, peers::KeyKind::EcdsaP256);
        // PEP fan-out: contacts, a thousand unless told otherwise.
        let opts = parse_args(&args(&["--pep-fanout"])).unwrap().unwrap();
        assert!(opts.pep_fanout && !opts.resume);
        assert_eq!(opts.clients, pep::DEFAULT_CONTACTS);
        let opts = parse_args(&args(&["--pep-fanout", "--contacts", "3"]))
            .unwrap()
            .unwrap();
        assert_eq!(opts.clients, 3);
        // Transport and federation comparisons: their own default sizes, the load options.
        let opts = parse_args(&args(&["--websocket"])).unwrap().unwrap();
        assert!(opts.websocket && !opts.s2s);
        assert_eq!(opts.clients, compare::DEFAULT_WEBSOCKET_SESSIONS);
        let opts = parse_args(&args(&["--s2s", "--clients", "20", "--duration", "2"]))
            .unwrap()
            .unwrap();
        assert!(opts.s2s);
        assert_eq!((opts.clients, opts.duration), (20, Duration::from_secs(2)));
        // Upload: 100 MiB unless told otherwise.
        let opts = parse_args(&args(&["--upload"])).unwrap().unwrap();
        assert_eq!(opts.upload_mib, Some(upload::DEFAULT_MIB));
        let opts = parse_args(&args(&["--upload", "--size=2"]))
            .unwrap()
            .unwrap();
        assert_eq!(opts.upload_mib, Some(2));
        // The CI smoke: small, open loop, a warm-up, overridable.
        let opts = parse_args(&args(&["--smoke"])).unwrap().unwrap();
        assert!(opts.smoke);
        assert_eq!(
            (opts.clients, opts.rate, opts.duration, opts.warmup),
            (
                SMOKE_CLIENTS,
                Some(SMOKE_RATE),
                SMOKE_DURATION,
                DEFAULT_WARMUP
            )
        );
        let opts = parse_args(&args(&["--smoke", "--clients", "4", "--warmup", "0.5"]))
            .unwrap()
            .unwrap();
        assert_eq!((opts.clients, opts.warmup), (4, Duration::from_millis(500)));
        // Rate steps, on xmppd, beside the peers, or on a server the bench did not start.
        let opts = parse_args(&args(&["--steps", "100,200"])).unwrap().unwrap();
        assert_eq!(opts.steps, [100.0, 200.0]);
        assert_eq!(opts.clients, steps::DEFAULT_SESSIONS);
        let opts = parse_args(&args(&["--vs", "prosody,ejabberd", "--clients", "10"]))
            .unwrap()
            .unwrap();
        assert_eq!(opts.vs, [peers::Kind::Prosody, peers::Kind::Ejabberd]);
        assert_eq!(
            (opts.steps.len(), opts.clients),
            (steps::DEFAULT_STEPS.len(), 10)
        );
        let opts = parse_args(&args(&[
            "--connect",
            "127.0.0.1:5223",
            "--domain",
            "example.org",
            "--prefix",
            "load",
            "--password",
            "pw",
            "--server-pid",
            "42",
            "--register",
        ]))
        .unwrap()
        .unwrap();
        let external = opts.external.unwrap();
        assert_eq!(
            (external.domain.as_str(), external.prefix.as_str()),
            ("example.org", "load")
        );
        assert_eq!((external.password.as_str(), external.pid), ("pw", Some(42)));
        assert!(external.register);
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
            &["--messages", "10"],
            &["--repeat", "2"],
            &["--callgrind", "--clients", "3"],
            &["--callgrind", "--messages", "0"],
            &["--callgrind", "--repeat", "11"],
            &["--callgrind", "--duration", "5"],
            &["--callgrind", "--muc"],
            &["--callgrind", "--markdown"],
            &["--memory", "--callgrind"],
            &["--memory", "--messages", "10"],
            &["--memory", "--duration", "5"],
            &["--memory", "--muc"],
            &["--memory", "--clients", "1"],
            &["--memory", "--repeat", "0"],
            &["--resume", "--memory"],
            &["--resume", "--duration", "5"],
            &["--resume", "--clients", "1"],
            &["--resume", "--repeat", "2"],
            &["--storm", "--resume"],
            &["--steps", "500", "--key", "ecdsa"],
            &["--vs", "prosody", "--key", "dsa"],
            &["--storm", "--duration", "5"],
            &["--storm", "--clients", "0"],
            &["--contacts", "5"],
            &["--pep-fanout", "--clients", "5"],
            &["--pep-fanout", "--contacts", "0"],
            &["--pep-fanout", "--resume"],
            &["--pep-fanout", "--duration", "5"],
            &["--websocket", "--s2s"],
            &["--websocket", "--clients", "3"],
            &["--websocket", "--muc"],
            &["--websocket", "--markdown"],
            &["--s2s", "--messages", "5"],
            &["--s2s", "--duration", "0"],
            &["--s2s", "--resume"],
            &["--size", "2"],
            &["--upload", "--size", "0"],
            &["--upload", "--clients", "2"],
            &["--upload", "--s2s"],
            &["--smoke", "--muc"],
            &["--smoke", "--memory"],
            &["--warmup", "-1"],
            &["--steps", "100,x"],
            &["--steps", "0"],
            &["--steps", "100", "--rate", "5"],
            &["--steps", "100", "--clients", "3"],
            &["--vs", "openfire"],
            &["--vs", "prosody", "--connect", "127.0.0.1:5223"],
            &["--domain", "example.org"],
            &["--register"],
            &["--connect", "nowhere"],
            &["--steps", "100", "--memory"],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?} accepted");
        }
    }
}
