//! What the test servers (PostgreSQL, MariaDB) share: installing Debian's package when it is
//! missing, skipping where it cannot be had (a failure under CI), a free loopback port, and a
//! watchdog that stops a server and removes its directory when the test process ends.

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::os::unix::fs::MetadataExt as _;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use xmppd_storage::DbSettings;

pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("XMPPD_E2E_CI").is_ok_and(|v| v == "1")
}

pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub fn uid_of(user: &str) -> Option<(u32, u32)> {
    let out = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, user]).output().ok()?;
        String::from_utf8(o.stdout).ok()?.trim().parse().ok()
    };
    Some((out("-u")?, out("-g")?))
}

/// The server a test needs, or `None` (with a message) where it cannot be had; a panic under
/// CI, which installs every package the tests need.
pub fn required<T>(what: &str, started: Result<T, String>) -> Option<T> {
    match started {
        Ok(server) => Some(server),
        Err(why) if under_ci() => panic!("{what} is required under CI: {why}"),
        Err(why) => {
            eprintln!("SKIPPED: no {what} for this test: {why}");
            None
        }
    }
}

/// Installs the Debian `package` with apt-get when `present` says it is missing; why not,
/// where it cannot be (not root, apt-get failing).
pub fn ensure_package(package: &str, present: impl Fn() -> bool) -> Result<(), String> {
    if present() {
        return Ok(());
    }
    if !running_as_root() {
        return Err(format!(
            "{package} is not installed (apt-get install {package} as root)"
        ));
    }
    eprintln!("installing {package} (apt-get install {package}) for the storage tests");
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("running apt-get: {e}"))?;
    if !status.success() {
        return Err(format!("apt-get install {package} failed ({status})"));
    }
    if present() {
        Ok(())
    } else {
        Err(format!("{package} still missing after apt-get"))
    }
}

/// A process that runs a shell command once its standard input closes: when its owner drops
/// it or the test process ends, however it ends.
pub struct Watchdog(Mutex<Option<(ChildStdin, Child)>>);

impl Watchdog {
    /// Runs `script` (with `args` as `$0`, `$1`, …) at the end.
    pub fn arm(script: &str, args: &[&std::ffi::OsStr]) -> Result<Watchdog, String> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("read _; {script}"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawning the cleanup watchdog: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        Ok(Watchdog(Mutex::new(Some((stdin, child)))))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Closing the pipe lets the watchdog clean up; wait for it.
        if let Some((stdin, mut child)) = self.0.lock().unwrap().take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// A name for a test's own database, unique in this process and among test processes.
pub fn database_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// Settings for a test server's database at `url`, with the password apart and timeouts
/// generous enough for a loaded machine.
pub fn test_settings(url: String, password: &str) -> DbSettings {
    DbSettings {
        url,
        password: Some(password.into()),
        pool_size: 4,
        connect_timeout: Duration::from_secs(10),
        wait_timeout: Duration::from_secs(10),
    }
}
