//! The server process and the machine: a throwaway data directory and configuration, user
//! registration, starting and stopping `xmppd serve`, and memory and CPU time from `/proc`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};

use super::{user_name, Backend, DOMAIN, PASSWORD};

/// How long the server may take to print its listening addresses.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// A directory under the system temp dir, removed with everything in it on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn create() -> Result<Self> {
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

/// The configuration of a run in `dir` (its data directory is `dir/data`); the message archive
/// is on only when `archive` is set.
pub(super) fn write_config(dir: &Path, archive: bool) -> Result<PathBuf> {
    write_config_with(dir, archive, "")
}

/// [`write_config`] with `c2s`, lines of TOML, added to the `[c2s]` section.
pub(super) fn write_config_with(dir: &Path, archive: bool, c2s: &str) -> Result<PathBuf> {
    write_config_for(
        dir,
        &ConfigExtra {
            c2s,
            ..ConfigExtra::new(archive)
        },
    )
}

/// What a mode changes in the bench's configuration.
pub(super) struct ConfigExtra<'a> {
    /// The one host the server serves.
    pub(super) domain: &'a str,
    pub(super) archive: bool,
    /// Lines of TOML added to the `[c2s]` section.
    pub(super) c2s: &'a str,
    /// Whole sections of TOML added at the end (`[http]`, `[s2s]`, `[upload]`).
    pub(super) sections: &'a str,
    /// The server's limit of connections per address before login stays as it is by default:
    /// for clients spread over many addresses. Otherwise it is lifted.
    pub(super) per_address_limit: bool,
}

impl ConfigExtra<'_> {
    pub(super) fn new(archive: bool) -> Self {
        ConfigExtra {
            domain: DOMAIN,
            archive,
            c2s: "",
            sections: "",
            per_address_limit: false,
        }
    }
}

/// The configuration of a run in `dir` as `extra` says.
pub(super) fn write_config_for(dir: &Path, extra: &ConfigExtra<'_>) -> Result<PathBuf> {
    let path = dir.join("xmppd.toml");
    std::fs::write(&path, config_text(&dir.join("data"), extra))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Both listeners on port 0: the server prints the ports it got, so runs never collide. Every
/// bench client comes from 127.0.0.1, so the per-address limit before login is lifted. The
/// per-session shaper and room rate limits are off: the bench measures the server's capacity,
/// not how it slows one fast client down. The archive is off unless asked for, so that figures
/// stay comparable with those measured before it existed.
fn config_text(data_dir: &Path, extra: &ConfigExtra<'_>) -> String {
    let ConfigExtra {
        domain,
        archive,
        c2s,
        sections,
        per_address_limit,
    } = extra;
    let pending = if *per_address_limit {
        ""
    } else {
        "max_pending_per_ip = 1000000\n"
    };
    format!(
        "[server]\nhosts = [\"{domain}\"]\ndata_dir = {}\n\n[c2s]\n\
         starttls_listen = [\"127.0.0.1:0\"]\ndirect_tls_listen = [\"127.0.0.1:0\"]\n\
         {pending}shaper_bytes_per_sec = 0\n{c2s}\n\
         [muc]\nmessages_per_second = 0\nmax_occupants = 100000\n\n[mam]\nenabled = {archive}\n\
         {sections}",
        toml_string(&data_dir.to_string_lossy())
    )
}

/// The `[storage]` section for `backend`: nothing for SQLite (the file in the data
/// directory), else a database of its own on a private PostgreSQL cluster or MariaDB server
/// started for this run as the storage tests start theirs (`xmppd-dbtest`; stopped when the
/// bench exits), with the durability the tests relax turned back on (every commit on disk
/// before it is answered, as SQLite's `synchronous=FULL`). The password goes in a file beside the configuration, never on a command
/// line nor in the configuration.
pub(super) fn storage_section(backend: Backend, dir: &Path) -> Result<String> {
    if backend == Backend::Sqlite {
        return Ok(String::new());
    }
    eprintln!("bench: starting a private {} server", backend.name());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let (engine, settings) = match backend {
        Backend::Postgres => {
            let cluster = xmppd_dbtest::pg::shared_durable()
                .ok_or_else(|| anyhow!("PostgreSQL could not be started here"))?;
            let db = runtime.block_on(cluster.create_database());
            ("postgres", cluster.settings(&db))
        }
        Backend::Mariadb => {
            let server = xmppd_dbtest::mariadb::shared()
                .ok_or_else(|| anyhow!("MariaDB could not be started here"))?;
            (server.make_durable()).map_err(|e| anyhow!("making MariaDB durable: {e}"))?;
            let db = runtime.block_on(server.create_database());
            ("mysql", server.settings(&db))
        }
        Backend::Sqlite => unreachable!("handled above"),
    };
    let password_file = dir.join("db-password");
    let password = settings.password.clone().unwrap_or_default();
    std::fs::write(&password_file, password)
        .with_context(|| format!("writing {}", password_file.display()))?;
    Ok(storage_text(engine, &settings.url, &password_file))
}

fn storage_text(engine: &str, url: &str, password_file: &Path) -> String {
    format!(
        "\n[storage]\nbackend = \"{engine}\"\nurl = {}\npassword_file = {}\n",
        toml_string(url),
        toml_string(&password_file.to_string_lossy())
    )
}

/// Bytes on disk of the database (the default `storage.sqlite_path` in the data directory of
/// `dir`) once the server has stopped. Its write-ahead log still holds the latest commits if
/// the server was killed, or up to a checkpoint's worth of pages anyway, so the log is folded
/// in first: `xmppd users list` opens the file and, the last connection to close it,
/// checkpoints the log into it and deletes it. What remains of the log is counted too.
pub(super) fn database_bytes(binary: &Path, config: &Path, dir: &Path) -> Result<u64> {
    run_cli(binary, config, &["users", "list"])?;
    let data = dir.join("data");
    let mut total = 0;
    for name in ["xmppd.sqlite", "xmppd.sqlite-wal"] {
        match std::fs::metadata(data.join(name)) {
            Ok(m) => total += m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", data.display())),
        }
    }
    Ok(total)
}

/// Runs one `xmppd` command on `config`; its error output when it fails.
fn run_cli(binary: &Path, config: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(binary)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    if !out.status.success() {
        bail!(
            "xmppd {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
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

pub(super) fn register_users(binary: &Path, config: &Path, count: usize) -> Result<()> {
    register_users_on(binary, config, DOMAIN, 0..count)
}

/// Registers the bench users of these indexes on `domain`.
pub(super) fn register_users_on(
    binary: &Path,
    config: &Path,
    domain: &str,
    indexes: impl Iterator<Item = usize>,
) -> Result<()> {
    let indexes: Vec<usize> = indexes.collect();
    eprintln!("bench: registering {} users on {domain}", indexes.len());
    let started = Instant::now();
    for i in indexes {
        // One process at a time: concurrent writers to one database would only contend.
        run_cli(
            binary,
            config,
            &["register", &user_name(i), domain, PASSWORD],
        )?;
    }
    eprintln!(
        "bench: registered in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The running server; killed on drop so an aborted bench leaves nothing behind.
pub(super) struct ServerProcess {
    child: Child,
    pub(super) direct_tls: SocketAddr,
    /// Every listener the banner named before the direct-TLS one (`https`, `s2s`, …).
    listeners: Vec<(String, SocketAddr)>,
    /// The last lines the server printed, for diagnosing a failed run.
    log: Arc<Mutex<VecDeque<String>>>,
    /// Lines containing each text, counted from when it was asked for ([`Self::counter`]).
    counted: Counted,
}

type Counted = Arc<Mutex<Vec<(&'static str, Arc<AtomicU64>)>>>;

impl ServerProcess {
    pub(super) fn start(binary: &Path, config: &Path) -> Result<Self> {
        Self::spawn(Command::new(binary), config, SERVER_START_TIMEOUT)
    }

    /// Runs `command serve` with `config`, where `command` is the xmppd binary or a tool that
    /// runs it (valgrind), and waits up to `timeout` for the direct-TLS listener.
    pub(super) fn spawn(mut command: Command, config: &Path, timeout: Duration) -> Result<Self> {
        let mut child = command
            .arg("--config")
            .arg(config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", Path::new(command.get_program()).display()))?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let counted = Counted::default();
        let (tx, rx) = mpsc::channel();
        // Both pipes are drained for the whole run: a full pipe would stall the server.
        if let Some(out) = child.stdout.take() {
            spawn_line_reader(out, tx.clone(), log.clone(), counted.clone());
        }
        if let Some(err) = child.stderr.take() {
            spawn_line_reader(err, tx, log.clone(), counted.clone());
        }
        let mut server = ServerProcess {
            child,
            direct_tls: SocketAddr::from(([127, 0, 0, 1], 0)),
            listeners: Vec::new(),
            log,
            counted,
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                // The banner names c2s's listeners last (after HTTP's and s2s's).
                Ok(line) => match parse_listener(&line) {
                    Some(("direct-tls", addr)) => {
                        server.direct_tls = addr;
                        return Ok(server);
                    }
                    Some((kind, addr)) => server.listeners.push((kind.to_owned(), addr)),
                    None => {}
                },
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

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first listener of this kind in the banner (`https`, `s2s`, …).
    pub(super) fn listener(&self, kind: &str) -> Result<SocketAddr> {
        self.listeners
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, addr)| *addr)
            .ok_or_else(|| anyhow!("the server reported no {kind} listener"))
    }

    /// Whether the server has printed a line containing `text` among its last lines, waiting
    /// up to `timeout` for it (its two pipes are read by two threads).
    pub(super) fn printed(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(log) = self.log.lock() {
                if log.iter().any(|line| line.contains(text)) {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many lines the server prints from now on that contain `text`: what a client cannot
    /// see for itself (that the server noticed a dropped connection).
    pub(super) fn counter(&self, text: &'static str) -> Arc<AtomicU64> {
        let count = Arc::new(AtomicU64::new(0));
        if let Ok(mut counted) = self.counted.lock() {
            counted.push((text, count.clone()));
        }
        count
    }

    /// Asks the server to shut down as an operator would (SIGTERM) and waits up to `timeout`
    /// for it to exit; a server that does not is killed.
    pub(super) fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -TERM {pid} failed ({status})");
        }
        let deadline = Instant::now() + timeout;
        // No portable wait with a timeout on a child: poll, it is one process exiting.
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().context("waiting for the server")? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "the server did not exit within {timeout:?} of SIGTERM; output:\n{}",
            self.stop()
        )
    }

    /// Runs `work` against the server on `runtime`, then asks the server to exit (SIGTERM) and
    /// checks that it did cleanly within `exit_timeout`. When `work` fails, the server is
    /// killed and its last output shown.
    pub(super) fn drive<T>(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        work: impl std::future::Future<Output = Result<T>>,
        exit_timeout: Duration,
    ) -> Result<T> {
        let out = match runtime.block_on(work) {
            Ok(out) => out,
            Err(err) => {
                eprintln!("bench: last server output:\n{}", self.stop());
                return Err(err);
            }
        };
        self.terminate_cleanly(exit_timeout)?;
        Ok(out)
    }

    /// [`Self::terminate`], and an exit status other than success is an error.
    pub(super) fn terminate_cleanly(&mut self, timeout: Duration) -> Result<()> {
        let status = self.terminate(timeout)?;
        if !status.success() {
            bail!(
                "the server exited with {status}; output:\n{}",
                self.last_output()
            );
        }
        Ok(())
    }

    /// The server's last output lines.
    pub(super) fn last_output(&self) -> String {
        let log = self
            .log
            .lock()
            .map(|l| l.iter().cloned().collect::<Vec<_>>());
        log.unwrap_or_default().join("\n")
    }

    /// Kills the server and returns its last output lines.
    pub(super) fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.last_output()
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
    counted: Counted,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if line.contains("xmppd listening:") {
                let _ = tx.send(line.clone());
            }
            if let Ok(counted) = counted.lock() {
                for (text, count) in counted.iter() {
                    if line.contains(text) {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
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
fn parse_listener(line: &str) -> Option<(&str, SocketAddr)> {
    let rest = line.split_once("xmppd listening:")?.1.trim();
    let (kind, addr) = rest.split_once(char::is_whitespace)?;
    Some((kind, addr.trim().parse().ok()?))
}

pub(super) fn read_rss_kib(pid: u32) -> Result<u64> {
    read_status_kib(pid, "VmRSS")
}

/// A memory field of /proc/PID/status (`VmRSS`, `VmHWM`), in KiB.
pub(super) fn read_status_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status_kib(&status, field).ok_or_else(|| anyhow!("no {field} in {path}"))
}

pub(super) fn read_cpu_ticks(pid: u32) -> Result<u64> {
    read_stat_ticks(&format!("/proc/{pid}/stat"))
}

pub(super) fn read_cpu_ticks_self() -> Result<u64> {
    read_stat_ticks("/proc/self/stat")
}

fn read_stat_ticks(path: &str) -> Result<u64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    parse_cpu_ticks(&stat).ok_or_else(|| anyhow!("cannot parse {path}"))
}

/// `VmRSS:   12345 kB` (for `field` `VmRSS`) from /proc/PID/status.
pub(super) fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let mut parts = line[field.len() + 1..].split_whitespace();
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

pub(super) fn clock_ticks_per_second() -> u64 {
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

pub(super) fn cpu_model() -> String {
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
pub(super) fn utc_date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%F"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_parsed() {
        let status = "Name:\txmppd\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(12345));
        assert_eq!(parse_status_kib(status, "VmPeak"), Some(99999));
        assert_eq!(parse_status_kib("Name:\tx\n", "VmRSS"), None);
        assert_eq!(parse_status_kib("VmRSS:\t12 MB\n", "VmRSS"), None);
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(parse_status_kib(&own, "VmRSS").unwrap() > 0);
        assert!(parse_status_kib(&own, "VmHWM").unwrap() > 0);
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
            parse_listener(line),
            Some(("direct-tls", "127.0.0.1:45678".parse().unwrap()))
        );
        assert_eq!(
            parse_listener("xmppd listening: https 127.0.0.1:1"),
            Some(("https", "127.0.0.1:1".parse().unwrap()))
        );
        assert_eq!(parse_listener("xmppd listening: direct-tls nonsense"), None);
        assert_eq!(parse_listener("something else"), None);
    }

    #[test]
    fn escaping() {
        assert_eq!(toml_string("/tmp/a\"b"), "\"/tmp/a\\\"b\"");
    }

    #[test]
    fn config_names_both_listeners() {
        let text = config_text(Path::new("/tmp/bench/data"), &ConfigExtra::new(false));
        assert!(text.contains("data_dir = \"/tmp/bench/data\""));
        assert!(text.contains("[mam]\nenabled = false\n"));
        let other = ConfigExtra {
            domain: "a.localhost",
            sections: "[http]\nenabled = true\n",
            ..ConfigExtra::new(true)
        };
        let other = config_text(Path::new("/d"), &other);
        assert!(other.contains("[mam]\nenabled = true\n[http]\nenabled = true\n"));
        assert!(other.contains("hosts = [\"a.localhost\"]"));
        assert!(text.contains("direct_tls_listen = [\"127.0.0.1:0\"]"));
        assert!(text.contains("hosts = [\"localhost\"]"));
    }

    #[test]
    fn storage_section_names_the_engine_and_keeps_the_password_apart() {
        let text = storage_text(
            "postgres",
            "postgres://xmppd@127.0.0.1:5432/t1_0",
            Path::new("/tmp/bench/db-password"),
        );
        let full = format!(
            "{}{text}",
            config_text(Path::new("/tmp/bench/data"), &ConfigExtra::new(false))
        );
        assert!(full.contains(
            "\n[storage]\nbackend = \"postgres\"\nurl = \"postgres://xmppd@127.0.0.1:5432/t1_0\"\n\
             password_file = \"/tmp/bench/db-password\"\n"
        ));
        assert_eq!(full.matches("[storage]").count(), 1);
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
}
