//! A server the bench did not start: where it listens, its domain and accounts, and which
//! processes are its own, so that the same workload can drive xmppd, Prosody or ejabberd.
//!
//! The accounts are `{prefix}0` … `{prefix}N-1`, all with one password. They exist already,
//! or `--register` creates them first by in-band registration (XEP-0077) over direct TLS,
//! which needs the server to allow it from 127.0.0.1. A server's CPU time and memory are read
//! from `/proc` for the processes named by `--server-pid` (and every process of that PID's
//! process group, so that an Erlang VM's helpers count too); without it they are not reported.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use tokio::sync::Semaphore;

use super::client::{wait_for, Session, Target, Transport};
use super::server::read_cpu_ticks;
use super::{PASSWORD, USER_PREFIX};

/// Registrations in progress at once.
const REGISTER_CONCURRENCY: usize = 16;
/// One registration must finish within this.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
const NS_REGISTER: &str = "jabber:iq:register";

/// `--connect ADDR` and the options that go with it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct External {
    /// The server's direct-TLS (XEP-0368) listener.
    pub(super) addr: SocketAddr,
    pub(super) domain: String,
    pub(super) prefix: String,
    pub(super) password: String,
    /// The server's process (and its process group), whose CPU and memory are read.
    pub(super) pid: Option<u32>,
    /// Create the accounts by in-band registration first.
    pub(super) register: bool,
}

impl External {
    pub(super) fn new(addr: &str) -> Result<Self> {
        Ok(External {
            addr: addr.parse().map_err(|_| {
                anyhow!("--connect: {addr:?} is not an address like 127.0.0.1:5223")
            })?,
            domain: super::DOMAIN.to_owned(),
            prefix: USER_PREFIX.to_owned(),
            password: PASSWORD.to_owned(),
            pid: None,
            register: false,
        })
    }

    pub(super) fn target(&self) -> Result<Target> {
        Ok(Target::new(self.addr, &self.domain, Transport::Tcp)?
            .with_accounts(&self.prefix, &self.password))
    }
}

/// The processes of a server: its main process and the others of its process group.
#[derive(Debug, Clone, Default)]
pub(super) struct Processes(pub(super) Vec<u32>);

impl Processes {
    /// `pid` and every live process whose process group is `pid`'s.
    pub(super) fn group_of(pid: u32) -> Result<Self> {
        let group = stat_field(pid, 4)?;
        let mut pids = vec![pid];
        for entry in std::fs::read_dir("/proc").context("reading /proc")? {
            let Some(other) = entry?
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // A process may end while /proc is read: it is simply not one of them.
            if other != pid && stat_field(other, 4).is_ok_and(|g| g == group) {
                pids.push(other);
            }
        }
        Ok(Processes(pids))
    }

    /// CPU ticks of all of them, or `None` when there are none to read.
    pub(super) fn cpu_ticks(&self) -> Result<Option<u64>> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let mut total = 0;
        for &pid in &self.0 {
            total += read_cpu_ticks(pid)?;
        }
        Ok(Some(total))
    }

    /// Resident memory of all of them, or `None` when there are none to read.
    pub(super) fn rss_kib(&self) -> Result<Option<u64>> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let mut total = 0;
        for &pid in &self.0 {
            // A zombie (exited, not reaped yet) has no VmRSS, and a process gone since the
            // group was listed has no status: neither holds memory.
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                continue;
            };
            total += super::server::parse_status_kib(&status, "VmRSS").unwrap_or(0);
        }
        Ok(Some(total))
    }
}

/// Field `index` (0-based: 3 is the parent, 4 the process group) of /proc/PID/stat, counted
/// after the command name, which may itself contain spaces and parentheses.
fn stat_field(pid: u32, index: usize) -> Result<u32> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let rest = &stat[stat
        .rfind(')')
        .ok_or_else(|| anyhow!("{path}: no command"))?
        + 1..];
    rest.split_whitespace()
        .nth(index - 2)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| anyhow!("{path}: no field {index}"))
}

/// Registers the accounts `0..count` of `target` in-band, a few at a time; an account that
/// exists already (`<conflict/>`) is fine when its password is the bench's, which the login
/// will tell.
pub(super) async fn register_all(target: &Target, count: usize) -> Result<()> {
    eprintln!(
        "bench: registering {count} users on {} in-band",
        target.domain
    );
    let gate = Arc::new(Semaphore::new(REGISTER_CONCURRENCY));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let (gate, target) = (gate.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let user = target.user(i);
            tokio::time::timeout(REGISTER_TIMEOUT, register(&target, &user))
                .await
                .map_err(|_| anyhow!("registration timed out after {REGISTER_TIMEOUT:?}"))?
                .with_context(|| format!("registering {user}@{}", target.domain))
        }));
    }
    for task in tasks {
        task.await.context("registration task died")??;
    }
    Ok(())
}

/// XEP-0077 §3.1 before authentication: one `<iq type='set'/>` with the username and
/// password, on a TLS stream of its own.
async fn register(target: &Target, user: &str) -> Result<()> {
    let mut s = Session::connect(target, user).await?;
    s.open_stream().await?;
    s.expect_header().await?;
    s.next_element().await?;
    let esc = super::client::xml_escape;
    s.send(&format!(
        "<iq type='set' id='reg1'><query xmlns='{NS_REGISTER}'><username>{}</username>\
         <password>{}</password></query></iq>",
        esc(user),
        esc(&target.password)
    ))
    .await?;
    let answer = loop {
        let el = s.next_element().await?;
        if el.name() == "iq" && el.attr("id") == Some("reg1") {
            break el;
        }
    };
    let conflict = answer
        .children()
        .filter(|c| c.name() == "error")
        .flat_map(|e| e.children())
        .any(|c| c.name() == "conflict");
    if answer.attr("type") != Some("result") && !conflict {
        bail!(
            "registration refused: {}",
            String::from(&answer).chars().take(300).collect::<String>()
        );
    }
    s.close_stream().await?;
    // The server's answer to the close does not matter; it ends the connection.
    let _ = tokio::time::timeout(Duration::from_secs(2), wait_for(&mut s, |_| false)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_in_its_group() {
        let me = std::process::id();
        let group = Processes::group_of(me).unwrap();
        assert_eq!(group.0[0], me);
        assert!(group.cpu_ticks().unwrap().is_some());
        assert!(group.rss_kib().unwrap().unwrap() > 0);
        assert_eq!(Processes::default().cpu_ticks().unwrap(), None);
        // The parent of this process is a real process.
        assert!(stat_field(me, 3).unwrap() > 0);
    }

    #[test]
    fn connect_address_is_checked() {
        assert!(External::new("127.0.0.1:5223").is_ok());
        assert!(External::new("localhost").is_err());
    }
}
