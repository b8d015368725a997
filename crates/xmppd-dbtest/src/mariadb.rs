//! A real MariaDB server for tests: Debian's `mariadb-server` (installed with apt-get when
//! missing and the tests run as root), a data directory made with `mariadb-install-db` in a
//! temporary directory, and `mariadbd` on its own Unix socket there and on a free loopback
//! port, with a database user who logs in with a password over TCP, as a deployment's would
//! (the grant tables are in force). As root the server runs as the `mysql` user.
//!
//! When it cannot be installed the tests that need it are skipped with a message, except under
//! CI (`CI=true` or `XMPPD_E2E_CI=1`), where that is a failure.

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::system::{
    database_name, ensure_package, free_port, required, running_as_root, test_settings, uid_of,
    Watchdog,
};
use xmppd_storage::{MysqlSettings, MysqlStore};

/// The database user of the tests and its password.
pub const USER: &str = "xmppd";
pub const PASSWORD: &str = "maria-test-secret";

const SERVER: &str = "/usr/sbin/mariadbd";

/// A running MariaDB server. Dropping it stops the server and removes its directory; so does
/// the end of the test process (a watchdog waits for our end of a pipe to close), for the
/// server shared by a whole test binary, which is never dropped.
pub struct Server {
    dir: PathBuf,
    pub port: u16,
    /// With TLS: the PEM file of the authority that signed the server's certificate.
    pub ca: Option<PathBuf>,
    process: Mutex<Option<Child>>,
    _watchdog: Watchdog,
}

impl Server {
    /// A new server, or why there can be none here (a failure under CI).
    pub fn start() -> Option<Server> {
        required("MariaDB", Self::try_start(false))
    }

    /// A new server that also takes TLS, with a certificate for 127.0.0.1 from an authority
    /// of its own ([`Server::ca`]).
    pub fn start_with_tls() -> Option<Server> {
        required("MariaDB", Self::try_start(true))
    }

    fn try_start(tls: bool) -> Result<Server, String> {
        ensure_package("mariadb-server", || Path::new(SERVER).exists())?;
        let dir = tempfile::Builder::new()
            .prefix("xmppd-mariadb-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        if running_as_root() {
            let (uid, gid) = uid_of("mysql").ok_or("no mysql user")?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
        let watchdog = Watchdog::arm(
            "kill -9 $(cat \"$0/pid\") >/dev/null 2>&1; rm -rf \"$0\"",
            &[dir.as_os_str()],
        )?;
        // A temporary directory of its own: two bootstraps at once (a test binary's shared
        // server and a test's own) otherwise collide on their temporary tables in /tmp.
        let tmp = dir.join("tmp");
        std::fs::create_dir(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
        if running_as_root() {
            let (uid, gid) = uid_of("mysql").ok_or("no mysql user")?;
            std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
        let mut install = Command::new("mariadb-install-db");
        install
            .env("TMPDIR", &tmp)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .args(["--auth-root-authentication-method=socket", "--skip-test-db"]);
        if running_as_root() {
            install.arg("--user=mysql");
        }
        let out = install
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running mariadb-install-db: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mariadb-install-db failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let ca = if tls {
            Some(make_certificates(&dir)?)
        } else {
            None
        };
        let mut server = Server {
            dir,
            port: 0,
            ca,
            process: Mutex::new(None),
            _watchdog: watchdog,
        };
        // A free port may be taken between our probe and the server's bind: try another.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.run() {
                Ok(()) => {
                    server.admin_sql(&format!(
                        "CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';
                         GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1';"
                    ))?;
                    return Ok(server);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// Starts `mariadbd` (again) on `self.port`, waiting until it answers on its socket.
    pub fn run(&self) -> Result<(), String> {
        let mut command = Command::new(SERVER);
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--tmpdir={}", self.dir.join("tmp").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .arg(format!("--log-error={}", self.dir.join("log").display()))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                // Durability of the test server's own files is not under test here.
                "--innodb-flush-log-at-trx-commit=2",
                "--innodb-doublewrite=0",
            ]);
        if running_as_root() {
            command.arg("--user=mysql");
        }
        if self.ca.is_some() {
            command
                .arg(format!("--ssl-ca={}", self.dir.join("ca.pem").display()))
                .arg(format!(
                    "--ssl-cert={}",
                    self.dir.join("cert.pem").display()
                ))
                .arg(format!("--ssl-key={}", self.dir.join("key.pem").display()));
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("running mariadbd: {e}"))?;
        // The server has no "start and wait" mode: ask it until it answers, or it exits.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
                return Err(format!("mariadbd exited ({status}): {log}"));
            }
            if self.admin_sql("SELECT 1").is_ok() {
                *self.process.lock().unwrap() = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("mariadbd did not answer within 120 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (a clean shutdown: sessions are ended), waiting until it is down.
    pub fn stop(&self) {
        self.admin_sql("SHUTDOWN").expect("SHUTDOWN");
        if let Some(mut child) = self.process.lock().unwrap().take() {
            child.wait().expect("waiting for mariadbd");
        }
    }

    /// Turns the durability the tests do without back on (each commit flushed to the log
    /// file before it is answered) and gives InnoDB a buffer pool of 256 MiB, as a benchmark
    /// against SQLite's `synchronous=FULL` needs. The doublewrite buffer stays off: it can
    /// only be set at start-up.
    pub fn make_durable(&self) -> Result<(), String> {
        self.admin_sql(
            "SET GLOBAL innodb_flush_log_at_trx_commit = 1; \
             SET GLOBAL innodb_buffer_pool_size = 268435456",
        )
        .map(drop)
    }

    /// Runs `sql` as the administrator over the Unix socket.
    pub fn admin_sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-u", "root", "-N", "-B", "-e", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running mariadb: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Settings for the database `db`, as the test user over TCP with the password apart.
    pub fn settings(&self, db: &str) -> MysqlSettings {
        test_settings(
            format!("mysql://{USER}@127.0.0.1:{}/{db}", self.port),
            PASSWORD,
        )
    }

    /// A new, empty database of its own for one test.
    pub async fn create_database(&self) -> String {
        let name = database_name();
        let sql = format!("CREATE DATABASE {name}");
        tokio::task::block_in_place(|| self.admin_sql(&sql)).expect("CREATE DATABASE");
        name
    }

    /// A store on a new database of its own.
    pub async fn fresh_store(&self) -> (String, MysqlStore) {
        let db = self.create_database().await;
        let store = MysqlStore::connect(&self.settings(&db)).await.unwrap();
        (db, store)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Makes an authority (`ca.pem`) and a certificate for 127.0.0.1 it signed (`cert.pem`,
/// `key.pem`) in `dir`, readable by the server; returns the authority's file.
fn make_certificates(dir: &Path) -> Result<PathBuf, String> {
    let openssl = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running openssl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"],
            &key[..],
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            &["-subj", "/CN=xmppd test authority"],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign"],
        ]
        .concat(),
    )?;
    openssl(
        &[
            &["req"],
            &key[..],
            &[
                "-keyout",
                "key.pem",
                "-out",
                "req.pem",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    )?;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "req.pem",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "cert.pem",
        "-extfile",
        "ext.cnf",
    ])?;
    if running_as_root() {
        let (uid, gid) = uid_of("mysql").ok_or("no mysql user")?;
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            std::os::unix::fs::chown(dir.join(file), Some(uid), Some(gid))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(dir.join("ca.pem"))
}

/// The server shared by the tests of one test binary (started by the first that needs it), or
/// `None` when MariaDB cannot be had here.
pub fn shared() -> Option<&'static Server> {
    static SHARED: OnceLock<Option<Server>> = OnceLock::new();
    SHARED.get_or_init(Server::start).as_ref()
}
