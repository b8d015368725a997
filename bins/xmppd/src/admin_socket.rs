//! The local admin socket: how `xmppd unregister`, `broadcast`, `kick`, `motd` and `sessions`
//! reach a running server.
//!
//! `serve` listens on the Unix socket `admin.sock` in the data directory, created with mode
//! 0600 and removed at exit; a connection is also refused unless its peer runs as the socket's
//! owner or root, so file permissions are not the only guard. It is never reachable over the
//! network.
//!
//! The protocol is one request line and a reply of zero or more lines, closed by the server:
//! fields are separated by TAB, and within a field `\\`, `\t` and `\n` stand for a backslash, a
//! TAB and a newline. Requests: `unregister JID`, `broadcast HOST TEXT`, `kick JID`,
//! `motd-set HOST TEXT`, `motd-clear HOST`, `sessions` (an empty HOST means every host). Replies: `data` lines with
//! the result's fields, then `ok`, or `error MESSAGE`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use xmppd_adhoc::motd::Motd;
use xmppd_config::ValidatedConfig;
use xmppd_core::{BareJid, Context, Jid, Outbox, Server};
use xmppd_storage::StorageError;

use crate::Failure;

/// The socket's file name in the data directory.
const SOCKET_NAME: &str = "admin.sock";
/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;
/// Time a client gets to send its request, and the CLI to get its answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the server of `config` listens.
pub fn path(config: &ValidatedConfig) -> PathBuf {
    config.server.data_dir.join(SOCKET_NAME)
}

/// The listening socket; dropping it stops accepting and removes the file.
pub struct AdminSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket of `config` and serves it in the background.
pub fn start(
    config: &ValidatedConfig,
    server: Arc<Server>,
    motd: Arc<Motd>,
) -> Result<AdminSocket, Failure> {
    let path = path(config);
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(Failure(format!(
                "another xmppd is running with this data directory ({} answers)",
                path.display()
            )));
        }
        // Left behind by a server that did not exit cleanly.
        std::fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
    }
    let listener =
        UnixListener::bind(&path).map_err(|e| format!("admin socket {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("admin socket {}: {e}", path.display()))?;
    let owner = std::fs::metadata(&path)
        .map_err(|e| format!("admin socket {}: {e}", path.display()))?
        .uid();
    let handler = Arc::new(Handler { server, motd });
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let handler = Arc::clone(&handler);
                    tokio::spawn(async move { handler.serve(stream, owner).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(AdminSocket { path, task })
}

struct Handler {
    server: Arc<Server>,
    motd: Arc<Motd>,
}

impl Handler {
    async fn serve(&self, stream: UnixStream, owner: u32) {
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == owner || cred.uid() == 0 => {}
            _ => {
                tracing::warn!("admin socket: connection from another user refused");
                return;
            }
        }
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST));
        let read = tokio::time::timeout(IO_TIMEOUT, reader.read_line(&mut line)).await;
        let reply = match read {
            Ok(Ok(_)) if line.ends_with('\n') => {
                let fields = split(line.trim_end_matches(['\r', '\n']));
                match self.run(&fields).await {
                    Ok(rows) => {
                        let mut out: String = rows
                            .iter()
                            .map(|r| format!("data\t{}\n", join(r)))
                            .collect();
                        out.push_str("ok\n");
                        out
                    }
                    Err(message) => format!("error\t{}\n", escape(&message)),
                }
            }
            _ => "error\tincomplete or oversized request\n".to_owned(),
        };
        let _ = tokio::time::timeout(IO_TIMEOUT, write.write_all(reply.as_bytes())).await;
    }

    async fn run(&self, fields: &[String]) -> Result<Vec<Vec<String>>, String> {
        let server = &self.server;
        let f = |i: usize| fields.get(i).map(String::as_str).unwrap_or_default();
        tracing::info!(command = f(0), "admin socket request");
        match (f(0), fields.len()) {
            ("broadcast", 3) => {
                let host = self.host(f(1))?;
                let mut outbox = Outbox::default();
                let mut cx = Context::new(server, &mut outbox);
                let n = xmppd_adhoc::admin::announce(&mut cx, host, None, f(2));
                server.drain(&mut outbox).await;
                Ok(vec![vec![n.to_string()]])
            }
            ("unregister", 2) => {
                let jid = BareJid::new(f(1)).map_err(|e| format!("invalid JID {:?}: {e}", f(1)))?;
                if !server.is_local_host(jid.domain().as_str()) || jid.node().is_none() {
                    return Err(format!("{jid} is not an account of this server"));
                }
                match server.remove_account(&jid, None).await {
                    Ok(removal) => Ok(vec![vec![
                        removal.contacts.len().to_string(),
                        removal.rooms.len().to_string(),
                    ]]),
                    Err(StorageError::NoSuchUser) => Err(format!("user {jid} does not exist")),
                    Err(e) => Err(format!("storage: {e}")),
                }
            }
            ("kick", 2) => {
                let jid = Jid::new(f(1)).map_err(|e| format!("invalid JID {:?}: {e}", f(1)))?;
                let mut outbox = Outbox::default();
                let n = xmppd_adhoc::admin::end_session(&Context::new(server, &mut outbox), &jid);
                Ok(vec![vec![n.to_string()]])
            }
            ("motd-set", 3) | ("motd-clear", 2) => {
                let text = (f(0) == "motd-set").then(|| (None, f(2)));
                let hosts = match self.host(f(1))? {
                    Some(h) => vec![h.to_owned()],
                    None => server.hosts().to_vec(),
                };
                let mut outbox = Outbox::default();
                let mut stored = Ok(());
                for h in &hosts {
                    let mut cx = Context::new(server, &mut outbox);
                    stored = self.motd.set(&mut cx, h, text).await.map(drop);
                    if stored.is_err() {
                        break;
                    }
                }
                // What the hosts stored so far was queued for their online users: sent anyway.
                server.drain(&mut outbox).await;
                stored.map_err(|e| format!("storing the message: {e}"))?;
                Ok(hosts.into_iter().map(|h| vec![h]).collect())
            }
            ("sessions", 1) => {
                let records = server.store().sessions().await.unwrap_or_default();
                let mut rows: Vec<Vec<String>> = server
                    .online()
                    .into_iter()
                    .map(|jid| {
                        let jid = jid.to_string();
                        let rec = records.iter().find(|r| r.jid == jid);
                        vec![
                            jid,
                            rec.map(|r| r.peer.clone()).unwrap_or_default(),
                            rec.map_or(0, |r| r.started_ms).to_string(),
                            server.config().node_name.clone(),
                            rec.map(|r| r.user_agent.clone()).unwrap_or_default(),
                        ]
                    })
                    .collect();
                rows.sort();
                Ok(rows)
            }
            _ => Err(format!("unknown request {:?}", f(0))),
        }
    }

    /// `None` for all hosts (empty), else the served host named.
    fn host<'a>(&self, name: &'a str) -> Result<Option<&'a str>, String> {
        if name.is_empty() {
            return Ok(None);
        }
        if self.server.is_local_host(name) {
            Ok(Some(name))
        } else {
            Err(format!("{name} is not a host of this server"))
        }
    }
}

/// Sends one request to the running server of `config`; `Ok(None)` when no server listens.
pub fn request(
    config: &ValidatedConfig,
    fields: &[&str],
) -> Result<Option<Vec<Vec<String>>>, Failure> {
    request_at(&path(config), fields)
}

fn request_at(path: &Path, fields: &[&str]) -> Result<Option<Vec<Vec<String>>>, Failure> {
    let mut stream = match std::os::unix::net::UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(Failure(format!("admin socket {}: {e}", path.display()))),
    };
    let io = |e: std::io::Error| Failure(format!("admin socket {}: {e}", path.display()));
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
    stream
        .write_all(format!("{}\n", join(&fields)).as_bytes())
        .map_err(io)?;
    let mut rows = Vec::new();
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(io)?;
        let mut parts = split(&line);
        match parts.first().map(String::as_str) {
            Some("data") => rows.push(parts.split_off(1)),
            Some("ok") => return Ok(Some(rows)),
            Some("error") => return Err(Failure(parts.get(1).cloned().unwrap_or_default())),
            _ => break,
        }
    }
    Err(Failure(
        "the server closed the admin socket without an answer".into(),
    ))
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

fn join(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| escape(f))
        .collect::<Vec<_>>()
        .join("\t")
}

/// The TAB-separated fields of `line`, unescaped.
fn split(line: &str) -> Vec<String> {
    line.split('\t')
        .map(|field| {
            let mut out = String::with_capacity(field.len());
            let mut chars = field.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('t') => out.push('\t'),
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some(other) => out.push(other),
                    None => out.push('\\'),
                }
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_through_the_line_encoding() {
        let fields: Vec<String> = ["motd-set", "", "two\tcolumns\nand a \\ line\r"]
            .map(String::from)
            .to_vec();
        let line = join(&fields);
        assert!(!line.contains('\n') && !line.contains('\r'));
        assert_eq!(split(&line), fields);
        assert_eq!(split("a\\"), ["a\\"]);
    }

    #[test]
    fn no_server_means_none() {
        let dir = std::env::temp_dir().join(format!("xmppd-admin-sock-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let reply = request_at(&dir.join("absent.sock"), &["sessions"]).unwrap();
        assert!(reply.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
