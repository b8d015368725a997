//! A real PostgreSQL server for tests: Debian's `postgresql` (installed with apt-get when
//! missing and the tests run as root), a cluster made with `initdb` in a temporary directory,
//! listening on a free loopback port and on a Unix socket in that directory. PostgreSQL refuses
//! to run as root, so as root its programs run as the `postgres` user (`runuser`).
//!
//! When it cannot be installed the tests that need it are skipped with a message, except under
//! CI (`CI=true` or `XMPPD_E2E_CI=1`), where that is a failure.

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::system::{
    database_name, ensure_package, free_port, required, running_as_root, test_settings, uid_of,
    Watchdog,
};
use xmppd_storage::{PgSettings, PgStore};

/// The superuser of the test clusters and its password (TCP connections must give it).
pub const SUPERUSER: &str = "xmppd";
pub const PASSWORD: &str = "pg-test-secret";

/// The `bin` directory of the newest installed PostgreSQL.
fn installed_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin)
}

/// The PostgreSQL programs, installing Debian's package if they are missing; why not, if
/// they cannot be had.
fn bin_dir() -> Result<PathBuf, String> {
    ensure_package("postgresql", || installed_bin_dir().is_some())?;
    installed_bin_dir().ok_or_else(|| "PostgreSQL is not installed".into())
}

/// A command for one of PostgreSQL's programs, as the `postgres` user when we are root.
fn pg_command(bin: &Path, program: &str) -> Command {
    let path = bin.join(program);
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

/// A running PostgreSQL cluster. Dropping it stops the server and removes its directory; so
/// does the end of the test process (a watchdog waits for our end of a pipe to close), for the
/// cluster shared by a whole test binary, which is never dropped.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    watchdog: Option<Watchdog>,
    /// TLS on (`ssl=on`), with the certificate and key in its directory.
    tls: bool,
    /// Whether `fsync` stays on (the tests turn it off; see [`Cluster::start_durable`]).
    durable: bool,
}

/// A test certificate authority: its certificate as PEM, and a server certificate it signed
/// (for `127.0.0.1` and `localhost`) with its key, as PEM.
pub struct TestAuthority {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestAuthority {
    /// A new authority of its own (so two are never the same).
    pub fn generate() -> TestAuthority {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        (ca.distinguished_name).push(rcgen::DnType::CommonName, "xmppd test authority");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        TestAuthority {
            ca_pem: ca.pem(),
            cert_pem: server.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Cluster {
    /// A new cluster, or why there can be none here (a failure under CI).
    pub fn start() -> Option<Cluster> {
        required("PostgreSQL", Self::try_start(None, false))
    }

    /// A new cluster that keeps the durability the tests do without (`fsync` on: each commit
    /// on disk before it is answered), as a benchmark against SQLite's `synchronous=FULL`
    /// needs.
    pub fn start_durable() -> Option<Cluster> {
        required("PostgreSQL", Self::try_start(None, true))
    }

    /// A new cluster with TLS on (`ssl=on`), serving the certificate `authority` signed.
    pub fn start_tls(authority: &TestAuthority) -> Option<Cluster> {
        required("PostgreSQL", Self::try_start(Some(authority), false))
    }

    fn try_start(tls: Option<&TestAuthority>, durable: bool) -> Result<Cluster, String> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("xmppd-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        if running_as_root() {
            let (uid, gid) = uid_of("postgres").ok_or("no postgres user")?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, PASSWORD).map_err(|e| e.to_string())?;
        if running_as_root() {
            let (uid, gid) = uid_of("postgres").ok_or("no postgres user")?;
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
        let out = pg_command(&bin, "initdb")
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                SUPERUSER,
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
            ])
            .args(["--encoding=UTF8", "--locale=C.UTF-8"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if let Some(authority) = tls {
            // PostgreSQL wants its key readable by its own user only.
            for (name, pem) in [
                ("server.crt", &authority.cert_pem),
                ("server.key", &authority.key_pem),
            ] {
                let path = dir.join(name);
                std::fs::write(&path, pem).map_err(|e| e.to_string())?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| e.to_string())?;
                if running_as_root() {
                    let (uid, gid) = uid_of("postgres").ok_or("no postgres user")?;
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        let mut cluster = Cluster {
            bin,
            dir,
            port: 0,
            watchdog: None,
            tls: tls.is_some(),
            durable,
        };
        cluster.arm_watchdog()?;
        // A free port may be taken between our probe and the server's bind: try another.
        let mut last = String::new();
        for _ in 0..5 {
            cluster.port = free_port();
            match cluster.pg_ctl_start() {
                Ok(()) => return Ok(cluster),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Starts the server (again) on `self.port`, waiting until it accepts connections.
    pub fn pg_ctl_start(&self) -> Result<(), String> {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        if !self.durable {
            options += " -c fsync=off";
        }
        if self.tls {
            options += &format!(
                " -c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
                self.dir.display()
            );
        }
        let status = pg_command(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "120", "-o", &options, "start"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("running pg_ctl: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            Err(format!("pg_ctl start failed ({status}): {log}"))
        }
    }

    /// Stops the server (fast shutdown: sessions are ended), waiting until it is down.
    pub fn pg_ctl_stop(&self) {
        let status = pg_command(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-m", "fast", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("running pg_ctl stop");
        assert!(status.success(), "pg_ctl stop: {status}");
    }

    /// A process that stops the server and removes its directory once its standard input
    /// closes: when we drop the cluster or the test process ends, however it ends.
    fn arm_watchdog(&mut self) -> Result<(), String> {
        let stop = if running_as_root() {
            "runuser -u postgres -- \"$0\" -D \"$1/data\" -m immediate stop"
        } else {
            "\"$0\" -D \"$1/data\" -m immediate stop"
        };
        let script = format!("{stop} >/dev/null 2>&1; rm -rf \"$1\"");
        let pg_ctl = self.bin.join("pg_ctl");
        self.watchdog = Some(Watchdog::arm(
            &script,
            &[pg_ctl.as_os_str(), self.dir.as_os_str()],
        )?);
        Ok(())
    }

    /// Settings for the database `db`, as the superuser over TCP with the password apart.
    pub fn settings(&self, db: &str) -> PgSettings {
        test_settings(
            format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port),
            PASSWORD,
        )
    }

    /// The superuser on the `postgres` database, over TCP.
    async fn admin_client(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user={SUPERUSER} password={PASSWORD} dbname=postgres",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// A new, empty database of its own for one test.
    pub async fn create_database(&self) -> String {
        let name = database_name();
        let client = (self.admin_client().await).expect("connecting to the test cluster");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE");
        name
    }

    /// A store on a new database of its own.
    pub async fn fresh_store(&self) -> (String, PgStore) {
        let db = self.create_database().await;
        let store = PgStore::connect(&self.settings(&db)).await.unwrap();
        (db, store)
    }
}

/// The cluster shared by the tests of one test binary (started by the first that needs it),
/// or `None` when PostgreSQL cannot be had here.
pub fn shared() -> Option<&'static Cluster> {
    static SHARED: OnceLock<Option<Cluster>> = OnceLock::new();
    SHARED.get_or_init(Cluster::start).as_ref()
}

/// A durable cluster ([`Cluster::start_durable`]) shared by the callers of one process.
pub fn shared_durable() -> Option<&'static Cluster> {
    static SHARED: OnceLock<Option<Cluster>> = OnceLock::new();
    SHARED.get_or_init(Cluster::start_durable).as_ref()
}
