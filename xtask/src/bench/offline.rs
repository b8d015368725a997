//! `cargo xtask bench --offline`: messages to accounts that are offline (XEP-0160), on any
//! storage engine (`--backend`), with or without the archive (`--archive`).
//!
//! 1. **Store.** Half the accounts log in (the senders, `bench0`, `bench2`, …); each sends
//!    `--messages` chat messages to its partner (`bench1`, `bench3`, …), who is offline,
//!    back to back, each message in its own TLS record. The server stores each before it
//!    handles the sender's next stanza, so when a sender's ping is answered all its messages
//!    are stored. Reported: messages stored per second (from the first send to the last
//!    ping answered) and the server's CPU per stored message.
//! 2. **Retrieve.** The partners log in, at most [`LOGIN_CONCURRENCY`] at once, and each reads
//!    until it has all its messages. Reported: messages delivered per second from the start of
//!    the first login to the last message, and per recipient the time from its login to its
//!    last message (p50/p99/max). Every message must arrive once and in order.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use tokio::sync::Semaphore;

use super::client::{decode_body, encode_body, login, login_all, wait_for, Session, Target};
use super::report::percentiles;
use super::server::{
    clock_ticks_per_second, read_cpu_ticks, register_users, utc_date, write_config_for,
    ConfigExtra, TempDir,
};
use super::{
    runtime, start_server, Options, DOMAIN, LOGIN_CONCURRENCY, LOGIN_TIMEOUT, USER_PREFIX,
};

/// Accounts by default: 250 senders, 250 recipients.
pub(super) const DEFAULT_CLIENTS: usize = 500;
/// Messages each recipient finds waiting, by default.
pub(super) const DEFAULT_PER_RECIPIENT: usize = 200;
/// A sender's messages must all be stored within this.
const STORE_TIMEOUT: Duration = Duration::from_secs(300);
/// A recipient's messages must all arrive within this after its login.
const RETRIEVE_TIMEOUT: Duration = Duration::from_secs(120);

pub(super) fn run(opts: &Options, binary: &Path) -> Result<()> {
    let work = TempDir::create()?;
    let mut sections = super::server::storage_section(opts.backend, &work.0)?;
    // Room for every message of the run, whatever the default cap.
    let _ = write!(
        sections,
        "\n[offline]\nmax_per_user = {}\n",
        opts.messages.max(1)
    );
    let config = write_config_for(
        &work.0,
        &ConfigExtra {
            sections: &sections,
            ..ConfigExtra::new(opts.archive)
        },
    )?;
    register_users(binary, &config, opts.clients)?;
    let mut server = start_server(binary, &config, opts.backend)?;
    let (pid, addr) = (server.pid(), server.direct_tls);
    let outcome = runtime()?.block_on(measure(opts, pid, addr));
    let log = server.stop();
    let outcome = outcome.inspect_err(|_| eprintln!("bench: last server output:\n{log}"))?;
    print!("{}", table(opts, &outcome));
    if outcome.lost() != 0 || outcome.duplicates != 0 || outcome.reordered != 0 {
        bail!(
            "{} message(s) lost, {} duplicated, {} out of order",
            outcome.lost(),
            outcome.duplicates,
            outcome.reordered
        );
    }
    Ok(())
}

/// What the two phases measured.
struct Outcome {
    pairs: usize,
    sent: u64,
    store_secs: f64,
    store_cpu_secs: f64,
    received: u64,
    duplicates: u64,
    reordered: u64,
    retrieve_secs: f64,
    retrieve_cpu_secs: f64,
    /// Per recipient, from the start of its login to its last message (ns, ascending).
    per_recipient: Vec<u64>,
}

impl Outcome {
    fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }
}

async fn measure(opts: &Options, pid: u32, addr: SocketAddr) -> Result<Outcome> {
    let target = Target::tcp(addr)?;
    let pairs = opts.clients / 2;
    let per = opts.messages;
    let ticks = clock_ticks_per_second() as f64;

    eprintln!("bench: logging in {pairs} senders");
    let senders = login_all((0..pairs).map(|p| (target.clone(), 2 * p)), opts.sasl).await?;
    // Their initial presence is handled before the pings are answered.
    let senders = ping_all(senders).await?;

    eprintln!("bench: {pairs} senders, {per} messages each to an offline account");
    let cpu = read_cpu_ticks(pid)?;
    let started = Instant::now();
    let padding = "x".repeat(opts.payload);
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(p, s)| {
            let to = format!("{USER_PREFIX}{}@{DOMAIN}", 2 * p + 1);
            let padding = padding.clone();
            tokio::spawn(async move {
                tokio::time::timeout(
                    STORE_TIMEOUT,
                    send_to_offline(s, &to, per, &padding, started),
                )
                .await
                .map_err(|_| anyhow!("storing took over {STORE_TIMEOUT:?}"))?
            })
        })
        .collect();
    let mut sent = 0u64;
    for task in tasks {
        sent += task.await.context("sender task died")??;
    }
    let store_secs = started.elapsed().as_secs_f64();
    let store_cpu_secs = read_cpu_ticks(pid)?.saturating_sub(cpu) as f64 / ticks;

    eprintln!("bench: {pairs} recipients log in and read their messages");
    let cpu = read_cpu_ticks(pid)?;
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(LOGIN_CONCURRENCY));
    let tasks: Vec<_> = (0..pairs)
        .map(|p| {
            let (gate, target, sasl) = (gate.clone(), target.clone(), opts.sasl);
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await?;
                let user = target.user(2 * p + 1);
                let begun = Instant::now();
                let session = tokio::time::timeout(LOGIN_TIMEOUT, login(&target, &user, sasl))
                    .await
                    .map_err(|_| anyhow!("login of {user} timed out"))??;
                let got = tokio::time::timeout(RETRIEVE_TIMEOUT, read_backlog(session, per))
                    .await
                    .map_err(|_| anyhow!("{user}: its messages did not all arrive"))??;
                Ok::<_, anyhow::Error>((got, begun.elapsed()))
            })
        })
        .collect();
    let (mut received, mut duplicates, mut reordered) = (0, 0, 0);
    let mut per_recipient = Vec::with_capacity(pairs);
    for task in tasks {
        let (got, took) = task.await.context("recipient task died")??;
        received += got.received;
        duplicates += got.duplicates;
        reordered += got.reordered;
        per_recipient.push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }
    let retrieve_secs = started.elapsed().as_secs_f64();
    let retrieve_cpu_secs = read_cpu_ticks(pid)?.saturating_sub(cpu) as f64 / ticks;
    per_recipient.sort_unstable();
    Ok(Outcome {
        pairs,
        sent,
        store_secs,
        store_cpu_secs,
        received,
        duplicates,
        reordered,
        retrieve_secs,
        retrieve_cpu_secs,
        per_recipient,
    })
}

/// Pings each session and waits for the answers: what was sent before has been handled.
async fn ping_all(sessions: Vec<Session>) -> Result<Vec<Session>> {
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                ping(&mut s).await?;
                Ok::<_, anyhow::Error>(s)
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.context("ping task died")??);
    }
    Ok(out)
}

async fn ping(s: &mut Session) -> Result<()> {
    s.send(&format!(
        "<iq type='get' id='stored' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>"
    ))
    .await?;
    // An error message bounced for one of ours fails the run: nothing may be refused.
    let answer = wait_for(s, |el| {
        (el.name() == "iq" && el.attr("id") == Some("stored")) || el.attr("type") == Some("error")
    })
    .await?;
    if answer.name() != "iq" {
        bail!("a message was refused: {}", String::from(&answer));
    }
    Ok(())
}

/// Sends `count` messages to `to`, one per write, then waits until the server has handled
/// them all; the stream is closed afterwards. Returns the messages sent.
async fn send_to_offline(
    mut s: Session,
    to: &str,
    count: usize,
    padding: &str,
    epoch: Instant,
) -> Result<u64> {
    for seq in 0..count as u64 {
        let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        s.send(&format!(
            "<message to='{to}' type='chat'><body>{}</body></message>",
            encode_body(seq, now, padding)
        ))
        .await?;
    }
    ping(&mut s).await?;
    super::client::close(s).await?;
    Ok(count as u64)
}

/// What one recipient found.
struct Backlog {
    received: u64,
    duplicates: u64,
    reordered: u64,
}

/// Reads until `count` distinct messages of the bench have arrived.
async fn read_backlog(mut s: Session, count: usize) -> Result<Backlog> {
    let mut seen = HashSet::with_capacity(count);
    let (mut duplicates, mut reordered, mut last) = (0, 0, None);
    while seen.len() < count {
        let el = s.next_element().await?;
        if el.name() != "message" {
            continue;
        }
        let body = el.children().find(|c| c.name() == "body");
        let Some((seq, _)) = body.and_then(|b| decode_body(&b.text())) else {
            continue;
        };
        if !seen.insert(seq) {
            duplicates += 1;
        }
        if last.is_some_and(|l| seq < l) {
            reordered += 1;
        }
        last = Some(seq);
    }
    super::client::close(s).await?;
    Ok(Backlog {
        received: seen.len() as u64,
        duplicates,
        reordered,
    })
}

fn table(opts: &Options, o: &Outcome) -> String {
    let per_sec = |n: u64, secs: f64| format!("{:.0} msg/s", n as f64 / secs.max(1e-9));
    let us_per = |cpu: f64, n: u64| format!("{:.1} µs", cpu * 1e6 / n.max(1) as f64);
    let ms = |ns: u64| format!("{:.1} ms", ns as f64 / 1e6);
    let spread = percentiles(&o.per_recipient).map_or("-".into(), |p| {
        format!("{} / {} / {}", ms(p.p50), ms(p.p99), ms(p.max))
    });
    let rows = [
        ("storage", opts.backend.name().to_owned()),
        (
            "archive",
            if opts.archive { "on" } else { "off" }.to_owned(),
        ),
        (
            "senders, recipients (offline)",
            format!("{}, {}", o.pairs, o.pairs),
        ),
        ("messages per recipient", opts.messages.to_string()),
        ("messages sent", o.sent.to_string()),
        (
            "stored",
            format!("{} in {:.2} s", per_sec(o.sent, o.store_secs), o.store_secs),
        ),
        (
            "server CPU per stored message",
            us_per(o.store_cpu_secs, o.sent),
        ),
        (
            "delivered at login (logins included)",
            format!(
                "{} in {:.2} s",
                per_sec(o.received, o.retrieve_secs),
                o.retrieve_secs
            ),
        ),
        (
            "server CPU per delivered message",
            us_per(o.retrieve_cpu_secs, o.received),
        ),
        ("login to last message, p50 / p99 / max", spread),
        ("lost", o.lost().to_string()),
        (
            "duplicated / out of order",
            format!("{} / {}", o.duplicates, o.reordered),
        ),
    ];
    let mut out = format!(
        "cargo xtask bench --offline: {}, SASL {}\n| | |\n|---|---:|\n",
        utc_date(),
        opts.sasl.name()
    );
    for (name, value) in rows {
        let _ = writeln!(out, "| {name} | {value} |");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> Outcome {
        Outcome {
            pairs: 2,
            sent: 400,
            store_secs: 0.5,
            store_cpu_secs: 0.2,
            received: 399,
            duplicates: 1,
            reordered: 0,
            retrieve_secs: 0.25,
            retrieve_cpu_secs: 0.1,
            per_recipient: vec![100_000_000, 200_000_000],
        }
    }

    #[test]
    fn the_table_reports_rates_cpu_and_losses() {
        let opts = Options {
            messages: 200,
            ..Options::default()
        };
        let t = table(&opts, &outcome());
        for want in [
            "| stored | 800 msg/s in 0.50 s |",
            "| server CPU per stored message | 500.0 µs |",
            "| delivered at login (logins included) | 1596 msg/s in 0.25 s |",
            "| login to last message, p50 / p99 / max | 100.0 ms / 200.0 ms / 200.0 ms |",
            "| lost | 1 |",
            "| duplicated / out of order | 1 / 0 |",
        ] {
            assert!(t.contains(want), "{want:?} not in\n{t}");
        }
    }
}
