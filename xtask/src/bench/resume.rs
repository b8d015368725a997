//! `cargo xtask bench --resume`: stream management resumption (XEP-0198 §5) of many sessions
//! at once, and what the server holds for a session while nobody is connected to it.
//!
//! 1. **Parking.** Each client in turn logs in (as the timed run does), enables stream
//!    management with resumption and drops its connection: the socket is closed without a
//!    closing tag, as a phone losing its network would. The next one starts once the server
//!    logged that it parked the session. The server's resident memory is read once it settles,
//!    before the first, at half and after the last, as `--memory` does: **average**
//!    (all − idle) / N and **marginal** (all − half) / (N − N/2) per parked session. Each
//!    connection is gone before the next one is made, so what a connection cost is freed and
//!    reused, and what grows is what the parked sessions hold.
//! 2. **Rounds.** A sender account sends [`MESSAGES`] chat messages to each parked session and
//!    waits for the answer to a ping behind them (the server handles one session's stanzas in
//!    order, so they are all queued by then). Then every client reconnects at once and sends
//!    `<resume/>` with the count of what it handled; each is timed from its connect to
//!    `<resumed/>`. Each then pings the server and reads up to the answer: everything parked
//!    for it is written before that, so what it has by then is what it gets. Every message
//!    must have arrived exactly once. The first round resumes the sessions parked one by one;
//!    before the second, every connection is dropped at once.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use minidom::Element;

use super::callgrind::step;
use super::client::{
    authenticate, close, decode_body, encode_body, iq_reply, login, wait_for, Session, Target,
};
use super::memory::settled_rss;
use super::report::{percentiles, Percentiles};
use super::server::{register_users, utc_date, write_config_with, ServerProcess, TempDir};
use super::{user_name, Options, DOMAIN, LOGIN_TIMEOUT};

/// Sessions by default.
pub(super) const DEFAULT_SESSIONS: usize = 1000;
/// Messages sent to each parked session in each round.
const MESSAGES: u64 = 5;
/// Rounds of dropping and resuming.
const ROUNDS: u64 = 2;
/// Far longer than a run: no session may end before it is resumed.
const RESUME_TIMEOUT_SECS: u64 = 3600;
/// What the server logs when it parks a session.
const PARKED_LINE: &str = "session detached from its connection";
const NS_SM: &str = "urn:xmpp:sm:3";
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// What each session resumed at once adds to the time the last one may take.
const RESUME_EACH: Duration = Duration::from_millis(60);

/// A session the server keeps for its client, who is not connected.
struct Parked {
    index: usize,
    jid: String,
    previd: String,
    /// Stanzas the client handled since it enabled stream management (its `h`).
    handled: u32,
}

/// A resumed session, connected again.
struct Live {
    session: Session,
    parked: Parked,
}

/// What one client's resumption gave.
struct Resumption {
    live: Live,
    /// From its connect to `<resumed/>`.
    resume: Duration,
    /// From the start of the round until it had everything parked for it.
    done: Duration,
    /// Messages of this round it got, and those it got more than once.
    received: u64,
    duplicates: u64,
}

/// One round's figures.
#[derive(Debug, Default, Clone)]
struct Round {
    /// Wall time from the first connect until every session was resumed and had its messages.
    total: Duration,
    /// Connect to `<resumed/>`, per session, in ns.
    resume_ns: Vec<u64>,
    expected: u64,
    received: u64,
    missing: u64,
    duplicates: u64,
}

/// What a run measured.
struct Outcome {
    rss_idle: u64,
    rss_half: u64,
    rss_all: u64,
    rounds: Vec<Round>,
}

pub(super) fn run(opts: &Options, binary: &Path) -> Result<()> {
    let work = TempDir::create()?;
    let c2s = format!("resume_timeout_secs = {RESUME_TIMEOUT_SECS}\n");
    let config = write_config_with(&work.0, opts.archive, &c2s)?;
    // The last account sends to the others.
    register_users(binary, &config, opts.clients + 1)?;
    let mut server = ServerProcess::start(binary, &config)?;
    let parked = server.counter(PARKED_LINE);
    let runtime = super::runtime()?;
    let (pid, addr) = (server.pid(), server.direct_tls);
    let outcome = server.drive(&runtime, drive(opts, pid, addr, &parked), EXIT_TIMEOUT)?;
    print!("{}", table(opts, &outcome));
    if opts.json {
        println!("{}", json(opts, &outcome));
    }
    let (missing, duplicates) =
        (outcome.rounds.iter()).fold((0, 0), |(m, d), r| (m + r.missing, d + r.duplicates));
    if missing != 0 || duplicates != 0 {
        bail!("{missing} message(s) lost, {duplicates} delivered twice");
    }
    Ok(())
}

async fn drive(
    opts: &Options,
    pid: u32,
    addr: SocketAddr,
    parked_count: &AtomicU64,
) -> Result<Outcome> {
    let target = Target::tcp(addr)?;
    let n = opts.clients;
    let rss_idle = settled_rss(pid).await?;
    eprintln!("bench: parking {n} sessions one after the other");
    let mut parked = Vec::with_capacity(n);
    let mut rss_half = rss_idle;
    for index in 0..n {
        if index == n / 2 {
            rss_half = settled_rss(pid).await?;
        }
        let p = step(park(&target, index, opts))
            .await
            .with_context(|| format!("parking the session of {}", user_name(index)))?;
        parked.push(p);
        until_parked(parked_count, index as u64 + 1).await?;
    }
    let rss_all = settled_rss(pid).await?;

    let mut sender = step(login(&target, &user_name(n), opts.sasl))
        .await
        .context("login of the sender")?;
    let mut rounds = Vec::new();
    let mut live: Vec<Live> = Vec::new();
    for round in 0..ROUNDS {
        if round > 0 {
            // Every connection dropped at once: the clients close their sockets without a word.
            let before = parked_count.load(Ordering::Relaxed);
            parked = live.drain(..).map(|l| l.parked).collect();
            until_parked(parked_count, before + n as u64).await?;
        }
        send_to_parked(&mut sender, &parked, round).await?;
        eprintln!("bench: round {}: {n} sessions resume at once", round + 1);
        let r;
        (r, live) = resume_all(&target, std::mem::take(&mut parked), round, opts).await?;
        eprintln!(
            "bench: round {}: all resumed in {:.2}s",
            round + 1,
            r.total.as_secs_f64()
        );
        rounds.push(r);
    }
    for l in live {
        step(close(l.session)).await.ok();
    }
    step(close(sender)).await.ok();
    Ok(Outcome {
        rss_idle,
        rss_half,
        rss_all,
        rounds,
    })
}

/// Waits until the server logged `count` parked sessions in all.
async fn until_parked(count: &AtomicU64, want: u64) -> Result<()> {
    let deadline = Instant::now() + LOGIN_TIMEOUT;
    while count.load(Ordering::Relaxed) < want {
        if Instant::now() > deadline {
            bail!(
                "the server parked {} of {want} sessions within {LOGIN_TIMEOUT:?}",
                count.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Logs client `index` in, enables stream management with resumption, and drops the
/// connection.
async fn park(target: &Target, index: usize, opts: &Options) -> Result<Parked> {
    let mut s = login(target, &user_name(index), opts.sasl).await?;
    let enable = format!("<enable xmlns='{NS_SM}' resume='true'/>");
    s.send(&enable).await?;
    let enabled = wait_for(&mut s, |el| {
        el.is("enabled", NS_SM) || el.is("failed", NS_SM)
    })
    .await?;
    let previd = match (enabled.name(), enabled.attr("id")) {
        ("enabled", Some(id)) if enabled.attr("resume") == Some("true") => id.to_owned(),
        _ => bail!(
            "stream management with resumption refused: {}",
            text(&enabled)
        ),
    };
    // Dropped without `</stream:stream>`: the server parks the session. What it wrote after
    // `<enabled/>` (presence) was not read: it is not counted, and comes again on resumption.
    let jid = std::mem::take(&mut s.jid);
    drop(s);
    Ok(Parked {
        index,
        jid,
        previd,
        handled: 0,
    })
}

/// The sender sends [`MESSAGES`] messages to each parked session, numbered from
/// `round * MESSAGES`, then waits for the answer to a ping behind them.
async fn send_to_parked(sender: &mut Session, parked: &[Parked], round: u64) -> Result<()> {
    let epoch = Instant::now();
    let mut out = String::new();
    for p in parked {
        for seq in round * MESSAGES..(round + 1) * MESSAGES {
            let sent_ns = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            out.push_str(&format!(
                "<message to='{}' type='chat'><body>{}</body></message>",
                p.jid,
                encode_body(seq, sent_ns, "")
            ));
        }
        if out.len() > 32 * 1024 {
            sender.send(&out).await?;
            out.clear();
        }
    }
    let id = format!("sent{round}");
    out.push_str(&format!(
        "<iq type='get' id='{id}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    sender.send(&out).await?;
    step(wait_for(sender, |el| {
        el.name() == "iq" && el.attr("id") == Some(id.as_str())
    }))
    .await
    .context("waiting for the sender's messages to be handled")?;
    Ok(())
}

/// Every parked session resumed at once, each on a task of its own.
async fn resume_all(
    target: &Target,
    parked: Vec<Parked>,
    round: u64,
    opts: &Options,
) -> Result<(Round, Vec<Live>)> {
    let started = Instant::now();
    let sasl = opts.sasl;
    // All at once, each logs in again first (TLS and SASL): the last waits behind every other
    // handshake, so the bound grows with the count instead of holding one login's.
    let bound = LOGIN_TIMEOUT + RESUME_EACH * u32::try_from(parked.len()).unwrap_or(u32::MAX);
    let tasks: Vec<_> = parked
        .into_iter()
        .map(|p| {
            let target = target.clone();
            tokio::spawn(async move {
                let user = user_name(p.index);
                tokio::time::timeout(bound, resume(&target, p, sasl, round, started))
                    .await
                    .map_err(|_| anyhow!("resumption timed out after {bound:?}"))?
                    .with_context(|| format!("resumption of {user}"))
            })
        })
        .collect();
    let mut r = Round::default();
    let mut live = Vec::with_capacity(tasks.len());
    for task in tasks {
        let got = task.await.context("resumption task died")??;
        r.resume_ns
            .push(u64::try_from(got.resume.as_nanos()).unwrap_or(u64::MAX));
        r.total = r.total.max(got.done);
        r.expected += MESSAGES;
        r.received += got.received;
        r.missing += MESSAGES - got.received.min(MESSAGES);
        r.duplicates += got.duplicates;
        live.push(got.live);
    }
    r.resume_ns.sort_unstable();
    Ok((r, live))
}

/// Reconnects, resumes, and reads everything parked for the session.
async fn resume(
    target: &Target,
    mut parked: Parked,
    sasl: super::Sasl,
    round: u64,
    started: Instant,
) -> Result<Resumption> {
    let t0 = Instant::now();
    let mut session = authenticate(target, &user_name(parked.index), sasl).await?;
    let resume = format!(
        "<resume xmlns='{NS_SM}' previd='{}' h='{}'/>",
        parked.previd, parked.handled
    );
    session.send(&resume).await?;
    let answer = session.next_element().await?;
    if !answer.is("resumed", NS_SM) {
        bail!("resumption refused: {}", text(&answer));
    }
    let resumed = t0.elapsed();
    session
        .send("<iq type='get' id='parked'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await?;
    let first = round * MESSAGES;
    let mut seen = [0u32; MESSAGES as usize];
    let mut duplicates = 0;
    loop {
        let el = session.next_element().await?;
        if el.is("r", NS_SM) {
            let a = format!("<a xmlns='{NS_SM}' h='{}'/>", parked.handled);
            session.send(&a).await?;
            continue;
        }
        if !matches!(el.name(), "message" | "presence" | "iq") {
            continue;
        }
        parked.handled = parked.handled.wrapping_add(1);
        if el.name() == "iq" && el.attr("id") == Some("parked") {
            break;
        }
        if let Some(reply) = iq_reply(&el) {
            session.send(&reply).await?;
        }
        let seq = (el.name() == "message")
            .then(|| el.get_child("body", "jabber:client"))
            .flatten()
            .and_then(|b| decode_body(&b.text()))
            .map(|(seq, _)| seq);
        match seq {
            Some(seq) if (first..first + MESSAGES).contains(&seq) => {
                let n = &mut seen[(seq - first) as usize];
                *n += 1;
                if *n > 1 {
                    duplicates += 1;
                }
            }
            // One of an earlier round, again.
            Some(_) => duplicates += 1,
            None => {}
        }
    }
    let received = seen.iter().filter(|&&n| n > 0).count() as u64;
    Ok(Resumption {
        live: Live { session, parked },
        resume: resumed,
        done: started.elapsed(),
        received,
        duplicates,
    })
}

fn text(el: &Element) -> String {
    String::from(el)
}

fn table(opts: &Options, o: &Outcome) -> String {
    let n = opts.clients as u64;
    let mut rows: Vec<(String, String)> = vec![
        ("date".into(), utc_date()),
        ("server RSS idle".into(), format!("{} KiB", o.rss_idle)),
        (
            format!("server RSS, {} parked", n / 2),
            format!("{} KiB", o.rss_half),
        ),
        (
            format!("server RSS, {n} parked"),
            format!("{} KiB", o.rss_all),
        ),
        (
            "per parked session, average".into(),
            format!("{:.1} KiB", average(o, n)),
        ),
        (
            "per parked session, marginal".into(),
            format!("{:.1} KiB", marginal(o, n)),
        ),
    ];
    for (i, r) in o.rounds.iter().enumerate() {
        let p = resume_times(r);
        let how = if i == 0 {
            "parked one by one"
        } else {
            "all dropped at once"
        };
        let round = i + 1;
        rows.extend([
            (
                format!("round {round} ({how}): all resumed"),
                format!("{:.3} s", r.total.as_secs_f64()),
            ),
            (
                format!("round {round}: resume p50 / p99 / max"),
                format!("{:.1} / {:.1} / {:.1} ms", ms(p.p50), ms(p.p99), ms(p.max)),
            ),
            (
                format!("round {round}: messages sent / delivered"),
                format!("{} / {}", r.expected, r.received),
            ),
            (
                format!("round {round}: lost / delivered twice"),
                format!("{} / {}", r.missing, r.duplicates),
            ),
        ]);
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = format!(
        "stream management resumption: {n} sessions, SASL {}, {MESSAGES} messages to each parked session per round\n",
        opts.sasl.name()
    );
    for (label, value) in rows {
        out.push_str(&format!("{label:<width$}  {value}\n"));
    }
    out
}

/// Connect to `<resumed/>`: p50, p99, max (all zero when no session took part).
fn resume_times(r: &Round) -> Percentiles {
    percentiles(&r.resume_ns).unwrap_or(Percentiles {
        p50: 0,
        p90: 0,
        p99: 0,
        max: 0,
    })
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn average(o: &Outcome, n: u64) -> f64 {
    o.rss_all.saturating_sub(o.rss_idle) as f64 / n as f64
}

fn marginal(o: &Outcome, n: u64) -> f64 {
    o.rss_all.saturating_sub(o.rss_half) as f64 / (n - n / 2) as f64
}

fn json(opts: &Options, o: &Outcome) -> String {
    let n = opts.clients as u64;
    let rounds: Vec<String> = (o.rounds.iter())
        .map(|r| {
            let p = resume_times(r);
            format!(
                "{{\"total_s\":{:.3},\"resume_p50_ms\":{:.2},\"resume_p99_ms\":{:.2},\"resume_max_ms\":{:.2},\"expected\":{},\"received\":{},\"lost\":{},\"duplicates\":{}}}",
                r.total.as_secs_f64(),
                ms(p.p50),
                ms(p.p99),
                ms(p.max),
                r.expected,
                r.received,
                r.missing,
                r.duplicates
            )
        })
        .collect();
    format!(
        "{{\"sessions\":{n},\"rss_idle_kib\":{},\"rss_half_kib\":{},\"rss_all_kib\":{},\"parked_average_kib\":{:.2},\"parked_marginal_kib\":{:.2},\"rounds\":[{}]}}",
        o.rss_idle,
        o.rss_half,
        o.rss_all,
        average(o, n),
        marginal(o, n),
        rounds.join(",")
    )
}
