//! `cargo xtask ci`: the gate every change must pass, in the order CI runs it.
//!
//! Steps, failing fast: `cargo fmt --check`, `cargo clippy -D warnings`, cargo-deny's licence
//! and duplicate-version checks (`deny.toml`), `cargo build -p xmppd`, a short smoke of the load
//! benchmark against that debug binary (`cargo xtask bench --smoke`, which fails on a lost
//! message), `cargo test --workspace`,
//! a Python virtualenv with the end-to-end test dependencies, the JavaScript clients of
//! `tests/node` (`npm ci`), and `pytest tests/e2e` against the freshly built debug binary. `--quick` skips fmt, clippy and cargo-deny; arguments after `--`
//! are handed to pytest (e.g. `cargo xtask ci --quick -- -k sasl`).
//!
//! Each step prints its name and duration; the last line is `e2e: N passed, N failed, N skipped`
//! from pytest's JUnit report (written to `target/e2e-junit.xml`).
//!
//! It does not install Rust toolchains or system packages, with two exceptions: cargo-deny is
//! built with `cargo install cargo-deny --locked` when it is missing (a few minutes, once), and
//! the e2e tests' Debian packages (a real `slapd`, `ldap-utils`, a Samba AD domain controller
//! with `ldb-tools`, `go-sendxmpp`, `poezio`, `tmux`, `nodejs`, `npm`, `coturn`, `chromium` (the
//! browser converse.js runs in), and the federation peers `prosody` with `lua-unbound`,
//! `ejabberd` and `dnsmasq-base`) are installed with apt-get when they are missing, and the
//! JavaScript clients (`tests/node`: xmpp.js and converse.js, pinned by its
//! `package-lock.json`) with `npm ci`. A missing `python3` is reported,
//! not fixed. The virtualenvs (the suite's, and one with the slixmpp release Debian 12 ships)
//! are rebuilt only when their requirements files change, and `tests/node` only when its
//! lock file does, so re-runs stay fast.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Runs the CI pipeline with the arguments that followed `ci` on the command line.
pub fn run(args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    let root = workspace_root()?;
    let steps = plan(&root, &options);
    // A report left by an earlier run must not be mistaken for this run's.
    let _ = std::fs::remove_file(junit_path(&root));
    print_free_disk(&root);
    let mut timings = Vec::with_capacity(steps.len());
    let total = steps.len();
    for (index, step) in steps.into_iter().enumerate() {
        println!("==> [{}/{total}] {}", index + 1, step.name);
        let started = Instant::now();
        let outcome = (step.action)();
        let elapsed = started.elapsed();
        match outcome {
            Ok(()) => {
                println!("<== {}: ok ({})", step.name, seconds(elapsed));
                timings.push((step.name, elapsed));
            }
            Err(err) => {
                print_free_disk(&root);
                print_summary(&timings);
                print_e2e_counts(&root);
                bail!(
                    "step `{}` failed after {}: {err:#}",
                    step.name,
                    seconds(elapsed)
                );
            }
        }
    }
    print_summary(&timings);
    println!("xtask ci: all {total} steps passed");
    // Last on purpose: one plain "N passed, N failed" line sums up the end-to-end run.
    print_e2e_counts(&root);
    Ok(())
}

/// Prints the free space where the build writes: a cold run needs several GiB, and a full disk
/// otherwise surfaces as an unrelated-looking failure deep inside some step.
fn print_free_disk(root: &Path) {
    let output = Command::new("df").args(["-Ph"]).arg(root).output();
    let free = output.ok().and_then(|out| {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text.lines().nth(1)?.to_owned();
        line.split_whitespace().nth(3).map(str::to_owned)
    });
    if let Some(free) = free {
        println!("    disk: {free} free at {}", root.display());
    }
}

/// What the command line asked for.
#[derive(Debug)]
struct Options {
    /// Skip the formatting, lint and dependency-policy steps (for fast local iteration).
    quick: bool,
    /// Extra arguments for pytest, given after `--`.
    pytest_args: Vec<String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut options = Options {
            quick: false,
            pytest_args: Vec::new(),
        };
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--" => {
                    options.pytest_args = iter.by_ref().cloned().collect();
                }
                other => bail!("unknown option `{other}` for `ci` (expected --quick or -- ARGS)"),
            }
        }
        Ok(options)
    }
}

/// One named stage of the pipeline; the closure runs it and reports why it failed.
struct Step {
    name: &'static str,
    action: Box<dyn FnOnce() -> Result<()>>,
}

fn plan(root: &Path, options: &Options) -> Vec<Step> {
    let mut steps = Vec::new();
    if !options.quick {
        steps.push(cargo_step(
            root,
            "cargo fmt --check",
            &["fmt", "--all", "--", "--check"],
        ));
        steps.push(cargo_step(
            root,
            "cargo clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ));
        let deny_root = root.to_path_buf();
        steps.push(Step {
            name: "cargo deny",
            action: Box::new(move || cargo_deny(&deny_root, &cargo())),
        });
    }
    steps.push(cargo_step(
        root,
        "cargo build -p xmppd",
        &["build", "-p", "xmppd"],
    ));
    let smoke_root = root.to_path_buf();
    steps.push(Step {
        name: "bench smoke",
        action: Box::new(move || bench_smoke(&smoke_root)),
    });
    steps.push(cargo_step(
        root,
        "cargo test --workspace",
        &["test", "--workspace"],
    ));
    steps.push(Step {
        name: "system packages for e2e tests",
        action: Box::new(ensure_system_packages),
    });
    let venv_root = root.to_path_buf();
    steps.push(Step {
        name: "python venv for e2e tests",
        action: Box::new(move || ensure_venvs(&venv_root)),
    });
    let node_root = root.to_path_buf();
    steps.push(Step {
        name: "node packages for e2e tests",
        action: Box::new(move || ensure_node_packages(&node_root)),
    });
    let e2e_root = root.to_path_buf();
    let pytest_args = options.pytest_args.clone();
    steps.push(Step {
        name: "pytest tests/e2e",
        action: Box::new(move || run_e2e(&e2e_root, &pytest_args)),
    });
    steps
}

fn cargo_step(root: &Path, name: &'static str, args: &'static [&'static str]) -> Step {
    let root = root.to_path_buf();
    Step {
        name,
        action: Box::new(move || {
            let mut command = Command::new(cargo());
            command.args(args).current_dir(&root);
            run_command(&mut command)
        }),
    }
}

/// `cargo xtask bench --smoke` on the debug binary just built: a few seconds of open-loop
/// messages between 20 clients, failing when one is lost or a connection fails. The numbers
/// mean nothing on a debug build; what is checked is that every message arrives.
fn bench_smoke(root: &Path) -> Result<()> {
    let binary = target_dir(root).join("debug").join("xmppd");
    let args = [
        "--smoke".to_owned(),
        "--server".to_owned(),
        binary.display().to_string(),
    ];
    println!("    $ cargo xtask bench {}", args.join(" "));
    crate::bench::run(&args)
}

/// What `cargo deny` checks: licences and duplicate versions, as `deny.toml` allows them. The
/// advisory database is not fetched (`--offline`); CI reaches no network beyond crates.io.
const DENY_CHECK: [&str; 5] = ["deny", "--offline", "check", "licenses", "bans"];

/// Runs [`DENY_CHECK`] with `cargo`, first installing cargo-deny when `cargo deny` is missing.
fn cargo_deny(root: &Path, cargo: &OsStr) -> Result<()> {
    let installed = Command::new(cargo)
        .args(["deny", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !installed {
        println!("    cargo-deny is not installed: installing it (it compiles for a few minutes)");
        run_command(Command::new(cargo).args(["install", "cargo-deny", "--locked"]))
            .context("installing cargo-deny failed")?;
    }
    // cargo-deny reads the metadata of every dependency on every target; the builds before
    // fetched only this host's, and `--offline` must not find one missing.
    run_command(Command::new(cargo).arg("fetch").current_dir(root))?;
    run_command(Command::new(cargo).args(DENY_CHECK).current_dir(root))
}

/// Debian packages the end-to-end tests run, as (program to look for, packages): real
/// directory servers for the LDAP tests (OpenLDAP, and Samba as an Active Directory domain
/// controller with the modules and data its provisioning needs, even where recommended
/// packages are not installed), a second client implementation (Go) beside slixmpp, and
/// poezio (in a tmux terminal), whose dependency python3-slixmpp is the distribution's own
/// slixmpp that `test_old_clients.py` also logs in with directly; coturn, the TURN server
/// that checks the credentials of `test_extdisco.py`; the federation peers of
/// `s2s_fixture.py`: Prosody (with libunbound, its usual resolver), ejabberd, and dnsmasq
/// (the binary only, without the package that runs it as the system's resolver) for their
/// private DNS, which `test_acme.py` uses too; pebble, the ACME server that
/// `test_acme.py` obtains certificates from; chromium, the browser converse.js runs in
/// for `test_converse.py`; PostgreSQL and MariaDB, for the storage conformance tests,
/// `test_postgres.py` and `test_mariadb.py`.
const SYSTEM_PACKAGES: [(&str, &str); 17] = [
    ("slapd", "slapd"),
    ("ldapadd", "ldap-utils"),
    ("samba", "samba samba-dsdb-modules samba-ad-provision"),
    ("ldbadd", "ldb-tools"),
    ("go-sendxmpp", "go-sendxmpp"),
    ("poezio", "poezio"),
    ("tmux", "tmux"),
    ("node", "nodejs"),
    ("npm", "npm"),
    ("turnserver", "coturn"),
    ("prosody", "prosody lua-unbound"),
    ("ejabberdctl", "ejabberd"),
    ("pebble", "pebble"),
    ("dnsmasq", "dnsmasq-base"),
    ("chromium", "chromium"),
    ("pg_ctlcluster", "postgresql"),
    ("mariadbd", "mariadb-server"),
];

/// Installs the missing [`SYSTEM_PACKAGES`] with apt-get.
fn ensure_system_packages() -> Result<()> {
    if install_missing(&SYSTEM_PACKAGES, "the end-to-end tests need")? {
        println!("    all installed");
    }
    Ok(())
}

/// Installs with apt-get the Debian packages of `packages` (program to look for, packages
/// separated by spaces) whose program is not found; `Ok(true)` when nothing was missing. `needed_by` starts the
/// hint given when that fails ("the end-to-end tests need").
pub(crate) fn install_missing(packages: &[(&str, &str)], needed_by: &str) -> Result<bool> {
    let found = |tool: &str| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
            .any(|dir| dir.join(tool).is_file())
    };
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(tool, _)| !found(tool))
        .flat_map(|(_, packages)| packages.split_whitespace())
        .collect();
    if missing.is_empty() {
        return Ok(true);
    }
    let hint = format!(
        "{needed_by} the Debian packages {} \
         (as root: apt-get update && apt-get install -y {})",
        missing.join(", "),
        missing.join(" ")
    );
    run_command(Command::new("apt-get").arg("update")).with_context(|| hint.clone())?;
    run_command(
        Command::new("apt-get")
            .args(["install", "-y"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| hint)?;
    Ok(false)
}

/// The virtualenvs of the end-to-end tests, as (directory under the root, requirements file):
/// the suite's own, and slixmpp as Debian 12 ships it, which `test_old_clients.py` runs.
const VENVS: [(&str, &str); 2] = [
    (".venv", "tests/e2e/requirements.txt"),
    (
        ".venv-slixmpp-1.8",
        "tests/e2e/requirements-slixmpp-1.8.txt",
    ),
];

/// Creates each of [`VENVS`] and installs its requirements, unless a stamp file shows the
/// same requirements were already installed there.
fn ensure_venvs(root: &Path) -> Result<()> {
    VENVS
        .iter()
        .try_for_each(|(dir, requirements)| ensure_venv(root, dir, requirements))
}

fn ensure_venv(root: &Path, dir: &str, requirements: &str) -> Result<()> {
    let venv = root.join(dir);
    let requirements_path = root.join(requirements);
    let requirements = std::fs::read_to_string(&requirements_path)
        .with_context(|| format!("reading {}", requirements_path.display()))?;
    let stamp = venv.join(".xtask-requirements");
    let python = venv.join("bin").join("python");
    let installed = std::fs::read_to_string(&stamp).ok();
    if python.exists() && installed.as_deref() == Some(requirements.as_str()) {
        println!("    {} is up to date", venv.display());
        return Ok(());
    }
    if !python.exists() {
        let mut create = Command::new("python3");
        create.args(["-m", "venv"]).arg(&venv).current_dir(root);
        run_command(&mut create).context(
            "creating the virtualenv failed; is python3 (with the venv module) installed?",
        )?;
    }
    let mut install = Command::new(&python);
    install
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements_path)
        .current_dir(root);
    run_command(&mut install).context("installing the e2e test requirements failed")?;
    std::fs::write(&stamp, requirements).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(())
}

/// The JavaScript clients of the end-to-end tests, each with its lock file: `@xmpp/client`
/// (`tests/node`) over WebSocket, and with SASL2, Bind2 and FAST over TCP; converse.js, served
/// to chromium.
const NODE_DIRS: [&str; 1] = ["tests/node"];

/// Installs the packages of each of [`NODE_DIRS`] exactly as locked (`npm ci`), unless a stamp
/// file shows that lock file was already installed there.
fn ensure_node_packages(root: &Path) -> Result<()> {
    NODE_DIRS
        .iter()
        .try_for_each(|dir| ensure_node_dir(&root.join(dir)))
}

fn ensure_node_dir(dir: &Path) -> Result<()> {
    let lock_path = dir.join("package-lock.json");
    let lock = std::fs::read_to_string(&lock_path)
        .with_context(|| format!("reading {}", lock_path.display()))?;
    let stamp = dir.join("node_modules").join(".xtask-lock");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(lock.as_str()) {
        println!("    {} is up to date", dir.display());
        return Ok(());
    }
    install_missing(&[("npm", "npm")], "the end-to-end tests need")?;
    let mut install = Command::new("npm");
    install
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir);
    run_command(&mut install).context("installing the e2e test node packages failed")?;
    std::fs::write(&stamp, lock).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(())
}

fn run_e2e(root: &Path, extra: &[String]) -> Result<()> {
    let binary = target_dir(root).join("debug").join("xmppd");
    if !binary.exists() {
        bail!(
            "{} does not exist; the build step should have made it",
            binary.display()
        );
    }
    let junit = junit_path(root);
    // A report left by an earlier run must not be mistaken for this one's.
    let _ = std::fs::remove_file(&junit);
    let mut command = Command::new(venv_python(root));
    command
        .args(["-m", "pytest", "-q", "tests/e2e"])
        .arg(format!("--junitxml={}", junit.display()))
        .args(extra)
        .env("XMPPD_BIN", &binary)
        // The system packages step installed every tool: a test must not skip for want of one.
        .env("XMPPD_E2E_CI", "1")
        .current_dir(root);
    run_command(&mut command).map_err(|err| match err.downcast_ref::<CommandFailed>() {
        // pytest's "no tests were collected": a gate that tested nothing must not pass quietly.
        Some(failed) if failed.code == Some(5) => anyhow!("pytest collected no tests"),
        _ => err,
    })
}

/// Runs a command with inherited stdio; a non-zero exit becomes a [`CommandFailed`].
fn run_command(command: &mut Command) -> Result<()> {
    let shown = describe(command);
    println!("    $ {shown}");
    let status = command
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if status.success() {
        return Ok(());
    }
    Err(CommandFailed {
        shown,
        code: status.code(),
    }
    .into())
}

/// A command ran but did not succeed; `code` is `None` when a signal ended it.
#[derive(Debug)]
struct CommandFailed {
    shown: String,
    code: Option<i32>,
}

impl std::fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "`{}` exited with status {code}", self.shown),
            None => write!(f, "`{}` was killed by a signal", self.shown),
        }
    }
}

impl std::error::Error for CommandFailed {}

fn describe(command: &Command) -> String {
    let mut parts = vec![command.get_program().to_string_lossy().into_owned()];
    parts.extend(
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    parts.join(" ")
}

fn workspace_root() -> Result<PathBuf> {
    // xtask lives one level below the workspace root; the manifest dir is fixed at build time,
    // so this works from any current directory.
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .context("xtask's manifest directory has no parent")
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

fn junit_path(root: &Path) -> PathBuf {
    target_dir(root).join("e2e-junit.xml")
}

/// Prints `e2e: N passed, N failed, N skipped` from pytest's JUnit report, if there is one.
fn print_e2e_counts(root: &Path) {
    let Ok(report) = std::fs::read_to_string(junit_path(root)) else {
        return;
    };
    if let Some(counts) = E2eCounts::from_junit(&report) {
        println!(
            "e2e: {} passed, {} failed, {} skipped",
            counts.passed, counts.failed, counts.skipped
        );
    }
}

/// Test outcomes summed over the `<testsuite>` elements of a JUnit XML report.
#[derive(Debug, PartialEq, Eq)]
struct E2eCounts {
    passed: u64,
    failed: u64,
    skipped: u64,
}

impl E2eCounts {
    fn from_junit(report: &str) -> Option<Self> {
        let mut total = E2eCounts {
            passed: 0,
            failed: 0,
            skipped: 0,
        };
        let mut found = false;
        for (index, _) in report.match_indices("<testsuite ") {
            let tag = &report[index..];
            let tag = &tag[..tag.find('>')?];
            let number = |name: &str| attribute(tag, name).and_then(|v| v.parse::<u64>().ok());
            let tests = number("tests")?;
            let failed = number("failures").unwrap_or(0) + number("errors").unwrap_or(0);
            let skipped = number("skipped").unwrap_or(0);
            total.passed += tests.saturating_sub(failed + skipped);
            total.failed += failed;
            total.skipped += skipped;
            found = true;
        }
        found.then_some(total)
    }
}

/// The value of `name="…"` inside one start tag (JUnit reports use double quotes).
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

fn venv_python(root: &Path) -> PathBuf {
    root.join(VENVS[0].0).join("bin").join("python")
}

/// The cargo that launched us (so `cargo +toolchain xtask` stays on that toolchain).
fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

fn print_summary(timings: &[(&'static str, Duration)]) {
    if timings.is_empty() {
        return;
    }
    println!("---- step durations ----");
    for (name, elapsed) in timings {
        println!("{:>9}  {name}", seconds(*elapsed));
    }
}

fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn quick_skips_fmt_clippy_and_deny() {
        let root = Path::new("/nonexistent");
        let full = plan(root, &Options::parse(&[]).unwrap());
        let quick = plan(root, &Options::parse(&args(&["--quick"])).unwrap());
        let names = |steps: &[Step]| steps.iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(
            names(&full),
            [
                "cargo fmt --check",
                "cargo clippy",
                "cargo deny",
                "cargo build -p xmppd",
                "bench smoke",
                "cargo test --workspace",
                "system packages for e2e tests",
                "python venv for e2e tests",
                "node packages for e2e tests",
                "pytest tests/e2e"
            ]
        );
        assert_eq!(names(&quick), names(&full)[3..].to_vec());
    }

    #[test]
    fn arguments_after_double_dash_go_to_pytest() {
        let options = Options::parse(&args(&["--quick", "--", "-k", "sasl", "--quick"])).unwrap();
        assert!(options.quick);
        assert_eq!(options.pytest_args, ["-k", "sasl", "--quick"]);
    }

    #[test]
    fn unknown_option_is_rejected() {
        let err = Options::parse(&args(&["--fast"])).expect_err("must fail");
        assert!(err.to_string().contains("--fast"), "{err}");
    }

    #[test]
    fn junit_counts_are_summed_per_suite() {
        let report = r#"<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">
            <testsuite name="pytest" errors="1" failures="2" skipped="3" tests="10" time="1.0">
            <testcase name="a"/></testsuite>
            <testsuite name="more" failures="0" tests="4" errors="0"></testsuite></testsuites>"#;
        assert_eq!(
            E2eCounts::from_junit(report),
            Some(E2eCounts {
                passed: 8,
                failed: 3,
                skipped: 3
            })
        );
        assert_eq!(E2eCounts::from_junit("<testsuites></testsuites>"), None);
        assert_eq!(E2eCounts::from_junit(r#"<testsuite tests="x">"#), None);
    }

    #[test]
    fn failing_command_reports_its_status() {
        let mut command = Command::new("sh");
        command.args(["-c", "exit 3"]);
        let err = run_command(&mut command).expect_err("must fail");
        assert!(err.to_string().contains("status 3"), "{err}");
    }

    /// A stand-in for cargo that logs its arguments and knows no `deny` subcommand until
    /// `install` ran, as on a fresh CI machine.
    fn fake_cargo(dir: &Path) -> PathBuf {
        let script = dir.join("cargo");
        std::fs::write(
            &script,
            "#!/bin/sh\n\
             echo \"$*\" >> \"$(dirname \"$0\")/log\"\n\
             if [ \"$1 $2\" = \"deny --version\" ]; then test -e \"$(dirname \"$0\")/installed\"; exit $?; fi\n\
             if [ \"$1\" = install ]; then touch \"$(dirname \"$0\")/installed\"; fi\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }

    #[test]
    fn cargo_deny_installs_itself_once_then_checks_offline() {
        let dir = std::env::temp_dir().join(format!("xtask-deny-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cargo = fake_cargo(&dir);
        cargo_deny(&dir, cargo.as_os_str()).unwrap();
        cargo_deny(&dir, cargo.as_os_str()).unwrap();
        let log = std::fs::read_to_string(dir.join("log")).unwrap();
        let check = "deny --offline check licenses bans";
        assert_eq!(
            log.lines().collect::<Vec<_>>(),
            [
                "deny --version",
                "install cargo-deny --locked",
                "fetch",
                check,
                "deny --version",
                "fetch",
                check,
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
