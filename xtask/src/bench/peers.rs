//! The other servers of `--vs`: the Debian packages of Prosody and ejabberd, each started on
//! loopback with a private configuration, data directory and logs (as the federation tests do,
//! `tests/e2e/s2s_fixture.py`), direct TLS (XEP-0368) with the bench's certificate, in-band
//! registration open to 127.0.0.1 so the bench creates its accounts, and nothing else that
//! the workload does not use (no s2s, no archive, no rate limits). Each is stopped, with every
//! process it started, when dropped.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::external::Processes;

/// A cold Erlang VM on a loaded two-core machine takes its time.
const START_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A server `--vs` can compare xmppd with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Prosody,
    Ejabberd,
}

impl Kind {
    pub(super) fn parse(name: &str) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "prosody" => Ok(Kind::Prosody),
            "ejabberd" => Ok(Kind::Ejabberd),
            other => bail!("--vs: unknown server {other:?} (prosody or ejabberd)"),
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Prosody => "Prosody",
            Kind::Ejabberd => "ejabberd",
        }
    }
}

/// The bench's certificate and key for `domain`, RSA-2048 and self-signed, made with the
/// `openssl` command; every server of a `--vs` run presents this one.
pub(super) struct Certificate {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    /// Both in one file, as ejabberd reads them.
    pub(super) combined: PathBuf,
}

/// The key of the run's certificate: what each full TLS handshake signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
    Rsa2048,
    EcdsaP256,
}

impl KeyKind {
    pub(super) fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "rsa" | "rsa2048" => Ok(KeyKind::Rsa2048),
            "ecdsa" | "p256" => Ok(KeyKind::EcdsaP256),
            other => bail!("--key: unknown key {other:?} (rsa or ecdsa)"),
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            KeyKind::Rsa2048 => "RSA-2048",
            KeyKind::EcdsaP256 => "ECDSA P-256",
        }
    }

    fn openssl_args(self) -> &'static [&'static str] {
        match self {
            KeyKind::Rsa2048 => &["-newkey", "rsa:2048"],
            KeyKind::EcdsaP256 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        }
    }
}

impl Certificate {
    pub(super) fn create(dir: &Path, domain: &str, kind: KeyKind) -> Result<Self> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let out = Command::new("openssl")
            .args(["req", "-x509"])
            .args(kind.openssl_args())
            .args(["-nodes", "-days", "7"])
            .arg("-subj")
            .arg(format!("/CN={domain}"))
            .arg("-addext")
            .arg(format!("subjectAltName=DNS:{domain}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdin(Stdio::null())
            .output()
            .context("running openssl (Debian package openssl)")?;
        if !out.status.success() {
            bail!(
                "openssl req failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let combined = dir.join("combined.pem");
        let both = [std::fs::read(&cert)?, std::fs::read(&key)?].concat();
        std::fs::write(&combined, both)?;
        Ok(Certificate {
            cert,
            key,
            combined,
        })
    }
}

/// A running Prosody or ejabberd; stopped (its whole process group) on drop.
pub(super) struct PeerServer {
    pub(super) direct_tls: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl PeerServer {
    /// Starts `kind` for `domain` in `dir` (which it owns), with `pin` (a `taskset` CPU list)
    /// if given, and waits until its direct-TLS port accepts connections.
    pub(super) fn start(
        kind: Kind,
        dir: &Path,
        domain: &str,
        cert: &Certificate,
        pin: Option<&str>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = super::compare::free_port()?;
        let direct_tls = SocketAddr::from(([127, 0, 0, 1], port));
        let (argv, env, log) = match kind {
            Kind::Prosody => prosody(dir, domain, cert, port)?,
            Kind::Ejabberd => ejabberd(dir, domain, cert, port)?,
        };
        let mut command = match pin {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).args(&argv);
                c
            }
            None => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        let out = std::fs::File::create(dir.join("server.out"))?;
        let child = command
            .envs(env)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // A process group of its own: the shell scripts, the VM and its helpers.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", kind.name()))?;
        let mut server = PeerServer {
            direct_tls,
            child,
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&direct_tls, Duration::from_secs(1)).is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "{} exited with {status} before listening:\n{}",
                    kind.name(),
                    server.last_output(dir)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen on {direct_tls} within {START_TIMEOUT:?}:\n{}",
                    kind.name(),
                    server.last_output(dir)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "bench: {} pid {} on {direct_tls}",
            kind.name(),
            server.child.id()
        );
        Ok(server)
    }

    /// The server's processes: the one started and the rest of its process group.
    pub(super) fn processes(&self) -> Result<Processes> {
        Processes::group_of(self.child.id())
    }

    /// The last lines of its log and of what it printed.
    pub(super) fn last_output(&self, dir: &Path) -> String {
        let tail = |path: &Path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        format!(
            "---- {} ----\n{}\n---- server.out ----\n{}",
            self.log.display(),
            tail(&self.log),
            tail(&dir.join("server.out"))
        )
    }

    /// SIGTERM to the process group, SIGKILL to what is left after [`STOP_TIMEOUT`].
    pub(super) fn stop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let group_alive = Command::new("kill")
                .args(["-0", "--", &group])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            let _ = self.child.try_wait();
            if !group_alive {
                break;
            }
            if Instant::now() > deadline {
                let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.wait();
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

type Launch = (Vec<String>, Vec<(String, String)>, PathBuf);

/// Prosody 0.12: its configuration (Lua) in `dir`, run in the foreground as the current user.
fn prosody(dir: &Path, domain: &str, cert: &Certificate, port: u16) -> Result<Launch> {
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let log = dir.join("prosody.log");
    let config = dir.join("prosody.cfg.lua");
    let s = |p: &Path| lua_string(&p.to_string_lossy());
    let ssl = format!(
        "{{ certificate = {}; key = {} }}",
        s(&cert.cert),
        s(&cert.key)
    );
    // Info, as each server logs by default: a line or two per session, none per message.
    let text = format!(
        "run_as_root = true\npidfile = {pid}\ndata_path = {data}\nlog = {{ info = {log} }}\n\
         modules_enabled = {{ \"roster\"; \"saslauth\"; \"tls\"; \"disco\"; \"ping\"; \
         \"register\"; \"posix\" }}\nmodules_disabled = {{ \"s2s\" }}\n\
         allow_registration = true\n\
         c2s_ports = {{ }}\nc2s_direct_tls_ports = {{ {port} }}\n\
         c2s_interfaces = {{ \"127.0.0.1\" }}\ns2s_ports = {{ }}\n\
         authentication = \"internal_hashed\"\nstorage = \"internal\"\nssl = {ssl}\n\
         VirtualHost {domain}\n    ssl = {ssl}\n",
        pid = s(&dir.join("prosody.pid")),
        data = s(&data),
        log = s(&log),
        domain = lua_string(domain),
    );
    std::fs::write(&config, text)?;
    let argv = vec![
        "prosody".into(),
        "--config".into(),
        config.to_string_lossy().into_owned(),
        "-F".into(),
    ];
    Ok((argv, Vec::new(), log))
}

fn lua_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// ejabberd: a node of its own (random name and cookie, a fixed distribution port and no
/// epmd), as the current user, its configuration, spool and logs in `dir`. Passwords are
/// stored as SCRAM-SHA-1 keys, as Prosody's and xmppd's are, so neither a SCRAM nor a PLAIN
/// login costs it more than the others. The listener's backlog is 1024 (ejabberd's example
/// configuration sets 1000; xmppd's is 4096, Prosody's default 128): with its default, the bench's 64 concurrent logins with
/// full TLS handshakes overflowed it, and connections waited for SYN retransmissions.
fn ejabberd(dir: &Path, domain: &str, cert: &Certificate, port: u16) -> Result<Launch> {
    let (spool, logs) = (dir.join("spool"), dir.join("logs"));
    std::fs::create_dir_all(&spool)?;
    std::fs::create_dir_all(&logs)?;
    let config = dir.join("ejabberd.yml");
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let text = format!(
        "hosts: [{domain}]\nloglevel: info\nlog_rotate_count: 0\ncertfiles: [{combined}]\n\
         listen:\n  - port: {port}\n    ip: \"127.0.0.1\"\n    module: ejabberd_c2s\n    tls: true\n    backlog: 1024\n\
         auth_method: internal\nauth_password_format: scram\ndefault_db: mnesia\n\
         registration_timeout: infinity\n\
         modules:\n  mod_disco: {{}}\n  mod_ping: {{}}\n  mod_roster: {{}}\n\
         \x20 mod_register:\n    access: all\n    ip_access: all\n",
        domain = q(domain),
        combined = q(&cert.combined.to_string_lossy()),
    );
    std::fs::write(&config, text)?;
    let node = format!("xmppd_bench_{}@localhost", std::process::id());
    let dist_port = super::compare::free_port()?;
    let ctl_config = dir.join("ejabberdctl.cfg");
    // Not a secret worth much: the node listens on loopback for the length of one run.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let cookie = format!("{:x}", nanos.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    std::fs::write(
        &ctl_config,
        format!(
            "EXEC_CMD=as_current_user\nERLANG_NODE={node}\nERL_DIST_PORT={dist_port}\n\
             ERL_OPTIONS=\"-setcookie {cookie}\"\nEJABBERD_BYPASS_WARNINGS=true\n"
        ),
    )?;
    let p = |path: &Path| path.to_string_lossy().into_owned();
    let argv = vec![
        "ejabberdctl".into(),
        "--config-dir".into(),
        p(dir),
        "--ctl-config".into(),
        p(&ctl_config),
        "--config".into(),
        p(&config),
        "--spool".into(),
        p(&spool),
        "--logs".into(),
        p(&logs),
        "--node".into(),
        node,
        "foreground".into(),
    ];
    let env = vec![("HOME".into(), p(dir))];
    Ok((argv, env, logs.join("ejabberd.log")))
}
