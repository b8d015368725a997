//! The `xmppd` executable's administration commands, run as an operator would: in a scratch
//! directory, with a configuration file, against a real SQLite database.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const CONFIG: &str = "[server]\nhosts = [\"localhost\", \"example.org\"]\ndata_dir = \"var\"\n";

/// A scratch directory holding `xmppd.toml`, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, config: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("xmppd-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("xmppd.toml"), config).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Runs `xmppd ARGS` in the directory (so `./xmppd.toml` is found) with `stdin` piped in.
    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_xmppd"))
            .args(args)
            .current_dir(&self.0)
            .env_remove("XMPPD_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("xmppd starts");
        // The child may exit before reading (e.g. a bad argument): a broken pipe is fine here.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, "")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_ok(o: &Output) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// Exit code 1 and exactly one line on stderr, returned.
#[track_caller]
fn assert_user_error(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("error: "), "{err:?}");
    err.trim_end().to_owned()
}

#[test]
fn check_config_accepts_a_good_file() {
    let s = Scratch::new("check-good", CONFIG);
    let o = s.run(&["check-config"]);
    assert_ok(&o);
    assert_eq!(stdout(&o).trim(), "configuration OK");
}

#[test]
fn check_config_reports_the_bad_key_and_line() {
    let s = Scratch::new(
        "check-bad",
        "[server]\nhosts = [\"localhost\"]\n[c2s]\nmax_stanza_byte = 1\n",
    );
    let err = assert_user_error(&s.run(&["check-config"]));
    assert!(
        err.starts_with("error: xmppd.toml:4: c2s.max_stanza_byte: unknown key"),
        "{err}"
    );

    let s = Scratch::new(
        "check-bad2",
        "[c2s]\nstarttls_listen = [\"0.0.0.0:99999\"]\n",
    );
    let err = assert_user_error(&s.run(&["check-config"]));
    assert_eq!(
        err,
        "error: xmppd.toml:2: c2s.starttls_listen: invalid socket address \"0.0.0.0:99999\" \
         (expected IP:PORT)"
    );
}

#[test]
fn config_flag_and_environment_name_the_file() {
    let s = Scratch::new("flag", CONFIG);
    std::fs::write(
        s.path().join("other.toml"),
        "[server]\nlog_level = \"chatty\"\n",
    )
    .unwrap();
    let other = s.path().join("other.toml");
    let other = other.to_str().unwrap();

    let err = assert_user_error(&s.run(&["--config", other, "check-config"]));
    assert!(
        err.starts_with(&format!("error: {other}:2: server.log_level:")),
        "{err}"
    );

    let o = Command::new(env!("CARGO_BIN_EXE_xmppd"))
        .arg("check-config")
        .current_dir(s.path())
        .env("XMPPD_CONFIG", other)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("server.log_level"), "{}", stderr(&o));

    let err = assert_user_error(&s.run(&["--config", "missing.toml", "check-config"]));
    assert!(err.contains("missing.toml"), "{err}");
}

#[test]
fn usage_errors_exit_with_2() {
    let s = Scratch::new("usage", CONFIG);
    assert_eq!(s.run(&["register"]).status.code(), Some(2));
    assert_eq!(s.run(&["no-such-command"]).status.code(), Some(2));
    assert_eq!(s.run(&["users", "list", "a", "b"]).status.code(), Some(2));
}

#[test]
fn account_lifecycle() {
    let s = Scratch::new("accounts", CONFIG);

    let o = s.run(&["register", "Alice", "localhost", "s3cret"]);
    assert_ok(&o);
    assert_eq!(stdout(&o).trim(), "registered alice@localhost");
    // The database lands under data_dir, relative to the configuration file.
    assert!(s.path().join("var/xmppd.sqlite").is_file());

    assert_ok(&s.run_with_stdin(&["register", "bob", "example.org"], "pw from stdin\n"));
    assert_ok(&s.run(&["register", "carol", "LOCALHOST", "x"]));

    let o = s.run(&["users", "list"]);
    assert_ok(&o);
    assert_eq!(
        stdout(&o),
        "alice@localhost\ncarol@localhost\nbob@example.org\n"
    );
    let o = s.run(&["users", "list", "example.org"]);
    assert_ok(&o);
    assert_eq!(stdout(&o), "bob@example.org\n");

    let err = assert_user_error(&s.run(&["register", "alice", "localhost", "other"]));
    assert_eq!(err, "error: user alice@localhost already exists");

    let o = s.run_with_stdin(&["passwd", "alice", "localhost"], "n3w\n");
    assert_ok(&o);
    assert_eq!(stdout(&o).trim(), "password changed for alice@localhost");
    let err = assert_user_error(&s.run(&["passwd", "nobody", "localhost", "x"]));
    assert_eq!(err, "error: user nobody@localhost does not exist");

    let o = s.run(&["unregister", "alice", "localhost"]);
    assert_ok(&o);
    assert_eq!(stdout(&o).trim(), "unregistered alice@localhost");
    let err = assert_user_error(&s.run(&["unregister", "alice", "localhost"]));
    assert_eq!(err, "error: user alice@localhost does not exist");

    let o = s.run(&["users", "list", "localhost"]);
    assert_ok(&o);
    assert_eq!(stdout(&o), "carol@localhost\n");
}

#[test]
fn bad_domains_users_and_passwords_are_refused() {
    let s = Scratch::new("refusals", CONFIG);
    let err = assert_user_error(&s.run(&["register", "alice", "elsewhere.net", "pw"]));
    assert_eq!(
        err,
        "error: elsewhere.net is not a host of this server (hosts: localhost, example.org)"
    );
    let err = assert_user_error(&s.run(&["users", "list", "elsewhere.net"]));
    assert!(err.contains("not a host"), "{err}");

    let err = assert_user_error(&s.run(&["register", "a@b", "localhost", "pw"]));
    assert!(err.contains("invalid user name"), "{err}");
    let err = assert_user_error(&s.run(&["register", "", "localhost", "pw"]));
    assert!(err.contains("invalid user name"), "{err}");

    let err = assert_user_error(&s.run_with_stdin(&["register", "alice", "localhost"], ""));
    assert_eq!(err, "error: empty password");

    // Nothing was created by the refused commands.
    let o = s.run(&["users", "list"]);
    assert_ok(&o);
    assert_eq!(stdout(&o), "");
}

#[test]
fn sessions_on_an_empty_database_lists_nothing() {
    let s = Scratch::new("sessions", CONFIG);
    let o = s.run(&["sessions"]);
    assert_ok(&o);
    assert_eq!(stdout(&o), "");
}

#[test]
fn sessions_lists_what_a_server_recorded() {
    use xmppd_storage::{SessionRecord, SessionStore, SqliteStore};

    let s = Scratch::new("sessions-live", CONFIG);
    let db = s.path().join("var/xmppd.sqlite");
    let store = SqliteStore::open(&db).unwrap();
    let records = [
        ("bob@example.org/phone", "", 1_000),
        ("alice@localhost/pc", "192.0.2.7:40000", 951_782_400_000),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for (jid, peer, started_ms) in records {
            let rec = SessionRecord {
                jid: jid.into(),
                peer: peer.into(),
                node: "n1".into(),
                started_ms,
                user_agent: String::new(),
            };
            store.session_opened(&rec).await.unwrap();
        }
    });
    // The store stays open, as a running server's would.
    let o = s.run(&["sessions"]);
    assert_ok(&o);
    assert_eq!(
        stdout(&o),
        "alice@localhost/pc\t192.0.2.7:40000\t2000-02-29T00:00:00Z\tn1\t-\n\
         bob@example.org/phone\t-\t1970-01-01T00:00:01Z\tn1\t-\n"
    );
    drop(store);
}

#[test]
fn builtin_defaults_apply_without_a_file() {
    let s = Scratch::new("nofile", CONFIG);
    std::fs::remove_file(s.path().join("xmppd.toml")).unwrap();
    let o = s.run(&["check-config"]);
    assert_ok(&o);
    let err = assert_user_error(&s.run(&["register", "a", "example.org", "pw"]));
    assert!(err.contains("(hosts: localhost)"), "{err}");
    assert_ok(&s.run(&["register", "a", "localhost", "pw"]));
    assert!(s.path().join("data/xmppd.sqlite").is_file());
}

/// A server on free ports, reading its banner, stopped by SIGTERM.
#[test]
fn serve_prints_its_listeners_and_stops_on_sigterm() {
    use std::io::BufRead;

    let s = Scratch::new(
        "serve",
        "[server]\nhosts = [\"localhost\"]\n[c2s]\nstarttls_listen = [\"127.0.0.1:0\"]\n\
         direct_tls_listen = [\"127.0.0.1:0\"]\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_xmppd"))
        .current_dir(s.path())
        .env_remove("XMPPD_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.starts_with("connect a client");
        banner.push(line);
        if done {
            break;
        }
    }
    let listening: Vec<(String, std::net::SocketAddr)> = banner
        .iter()
        .filter_map(|l| l.strip_prefix("xmppd listening: "))
        .map(|rest| {
            let (kind, addr) = rest.split_once(' ').unwrap();
            (kind.to_owned(), addr.parse().unwrap())
        })
        .collect();
    let kinds: Vec<&str> = listening.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["starttls", "direct-tls"], "{banner:?}");
    for (_, addr) in &listening {
        assert_ne!(addr.port(), 0);
        std::net::TcpStream::connect(addr).expect("listener accepts");
    }
    assert!(banner.contains(&"register a first user: xmppd register alice localhost".to_owned()));
    let port = listening[0].1.port();
    let hint = format!("connect a client to alice@localhost on port {port}");
    assert!(banner.iter().any(|l| l.starts_with(&hint)), "{banner:?}");

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("xmppd did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn serve_names_an_address_it_cannot_bind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let s = Scratch::new(
        "bind-fail",
        &format!("[c2s]\nstarttls_listen = [\"{addr}\"]\ndirect_tls_listen = []\n"),
    );
    let o = s.run(&["serve"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    let last = stderr(&o).lines().last().unwrap_or_default().to_owned();
    assert!(
        last.starts_with("error: ") && last.contains(&addr.to_string()),
        "{last}"
    );
}
