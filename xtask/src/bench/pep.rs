//! `cargo xtask bench --pep-fanout`: personal eventing (XEP-0163) fan-out. One account has N
//! contacts, each online with entity capabilities (XEP-0115) that ask for tunes
//! (`http://jabber.org/protocol/tune+notify`); the account publishes a tune, and every contact
//! must get the notification.
//!
//! 1. **Set-up.** N + 1 accounts are registered; the rosters are written through the server's
//!    own storage code before it starts (publisher and each contact subscribed both ways), so
//!    the set-up costs no protocol round trips. The first contact logs in, sends its
//!    capabilities and answers the server's disco#info query (its hash verifies, so the
//!    server caches it); the others then log in concurrently and are served from the cache.
//!    Each is ready once its ping is answered: the server handled its presence before.
//! 2. **Rounds.** The publisher publishes one item; each contact notes when its notification
//!    arrives. Per round: latency from the publish to the **first** and to the **last**
//!    notification, and **notifications/s** (N over the time to the last one). The rounds
//!    follow one another once every contact got the previous one.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::Engine as _;
use minidom::Element;
use sha1::{Digest, Sha1};
use tokio::sync::{Barrier, Semaphore};
use xmppd_storage::{RosterItem, RosterStore, SqliteStore, Subscription, UserRef};

use super::client::{login, wait_for, Session, Target};
use super::server::{register_users, write_config, ServerProcess, TempDir};
use super::{runtime, user_name, Options, Sasl, DOMAIN, LOGIN_CONCURRENCY, LOGIN_TIMEOUT};

/// Contacts by default.
pub(super) const DEFAULT_CONTACTS: usize = 1000;
/// Publishes, each to every contact.
const ROUNDS: usize = 5;
/// Every notification of a round arrives within this, or the run fails.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);
const TUNE: &str = "http://jabber.org/protocol/tune";
const CAPS_NODE: &str = "https://xmppd.invalid/bench";

/// The contacts' capabilities: one identity, disco#info, and tunes with `+notify`.
const IDENTITY: (&str, &str) = ("client", "bot");

fn features() -> [String; 2] {
    [
        "http://jabber.org/protocol/disco#info".to_owned(),
        format!("{TUNE}+notify"),
    ]
}

/// The contacts' verification string.
fn ver() -> String {
    verification(IDENTITY, "", &features())
}

/// XEP-0115 §5.1 for one identity without a language and no extended information.
fn verification((category, kind): (&str, &str), name: &str, features: &[String]) -> String {
    let mut s = format!("{category}/{kind}//{name}<");
    let mut sorted = features.to_vec();
    sorted.sort();
    for feature in sorted {
        s.push_str(&feature);
        s.push('<');
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

/// One round's figures, in microseconds from the publish.
struct Round {
    first_us: u64,
    last_us: u64,
}

pub(super) fn run(opts: &Options, binary: &Path) -> Result<()> {
    let contacts = opts.clients;
    let work = TempDir::create()?;
    let config = write_config(&work.0, false)?;
    register_users(binary, &config, contacts + 1)?;
    runtime()?.block_on(write_rosters(&work.0.join("data/xmppd.sqlite"), contacts))?;
    let mut server = ServerProcess::start(binary, &config)?;
    eprintln!(
        "bench: server pid {} on {}",
        server.pid(),
        server.direct_tls
    );
    let addr = server.direct_tls;
    let outcome = runtime()?.block_on(drive(addr, contacts, opts.sasl));
    let log = server.stop();
    let rounds = match outcome {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: last server output:\n{log}");
            return Err(e);
        }
    };
    println!("PEP fan-out: {contacts} contacts online with +notify, {ROUNDS} publishes");
    println!("round  first ms  last ms  notifications/s");
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "{:>5}  {:>8.2}  {:>7.2}  {:>15.0}",
            i + 1,
            r.first_us as f64 / 1000.0,
            r.last_us as f64 / 1000.0,
            contacts as f64 / (r.last_us.max(1) as f64 / 1e6),
        );
    }
    Ok(())
}

/// bench0 is the publisher; bench1..=benchN its contacts, subscribed both ways.
async fn write_rosters(path: &Path, contacts: usize) -> Result<()> {
    let store = SqliteStore::open(path).context("opening the database")?;
    let item = |jid: String| RosterItem {
        jid,
        name: None,
        subscription: Subscription::Both,
        ask: false,
        approved: false,
        groups: Vec::new(),
    };
    let publisher = UserRef::new(user_name(0), DOMAIN);
    for i in 1..=contacts {
        let contact = UserRef::new(user_name(i), DOMAIN);
        store
            .set_roster_item(&publisher, &item(contact.jid()))
            .await?;
        store
            .set_roster_item(&contact, &item(publisher.jid()))
            .await?;
    }
    Ok(())
}

async fn drive(addr: SocketAddr, contacts: usize, sasl: Sasl) -> Result<Vec<Round>> {
    let target = Target::tcp(addr)?;
    let started = Instant::now();
    let mut publisher = login(&target, &user_name(0), sasl).await?;
    settle(&mut publisher).await?;
    // The first contact fills the server's capabilities cache; the rest find it there.
    let first = tokio::time::timeout(LOGIN_TIMEOUT, contact(&target, 1, sasl))
        .await
        .map_err(|_| anyhow!("login timed out"))??;
    let mut sessions = vec![first];
    let gate = Arc::new(Semaphore::new(LOGIN_CONCURRENCY));
    let mut tasks = Vec::new();
    for i in 2..=contacts {
        let (gate, target) = (gate.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            tokio::time::timeout(LOGIN_TIMEOUT, contact(&target, i, sasl))
                .await
                .map_err(|_| anyhow!("login of {} timed out", user_name(i)))?
        }));
    }
    for t in tasks {
        sessions.push(t.await.context("login task died")??);
    }
    eprintln!(
        "bench: {contacts} contacts online in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // Each contact task waits for the notification of each round and reports its arrival;
    // the barrier lets the publisher start a round once every contact is listening.
    let barrier = Arc::new(Barrier::new(contacts + 1));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    for mut s in sessions {
        let (barrier, tx) = (barrier.clone(), tx.clone());
        tokio::spawn(async move {
            for round in 0..ROUNDS {
                if tokio::time::timeout(ROUND_TIMEOUT, barrier.wait())
                    .await
                    .is_err()
                {
                    return;
                }
                let id = format!("r{round}");
                let got = wait_for(&mut s, |el| is_notification(el, &id)).await;
                if got.is_err() || tx.send((round, Instant::now())).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        tokio::time::timeout(ROUND_TIMEOUT, barrier.wait())
            .await
            .map_err(|_| anyhow!("round {}: a contact is gone", round + 1))?;
        let publish = format!(
            "<iq type='set' id='pub{round}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <publish node='{TUNE}'><item id='r{round}'><tune xmlns='{TUNE}'>\
             <title>round {round}</title></tune></item></publish></pubsub></iq>"
        );
        let sent = Instant::now();
        publisher.send(&publish).await?;
        let mut arrivals = Vec::with_capacity(contacts);
        while arrivals.len() < contacts {
            let next = tokio::time::timeout(ROUND_TIMEOUT, rx.recv())
                .await
                .map_err(|_| {
                    anyhow!(
                        "round {}: {} of {contacts} notifications within {ROUND_TIMEOUT:?}",
                        round + 1,
                        arrivals.len()
                    )
                })?;
            let Some((r, at)) = next else {
                bail!("a contact's connection failed in round {}", round + 1);
            };
            if r == round {
                arrivals.push(at.duration_since(sent));
            }
        }
        let id = format!("pub{round}");
        wait_for(&mut publisher, |el| el.attr("id") == Some(id.as_str())).await?;
        let micros = |d: Option<&Duration>| d.map_or(0, |d| d.as_micros() as u64);
        arrivals.sort();
        rounds.push(Round {
            first_us: micros(arrivals.first()),
            last_us: micros(arrivals.last()),
        });
    }
    Ok(rounds)
}

/// A message carrying the item `id` of tunes.
fn is_notification(el: &Element, id: &str) -> bool {
    const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
    el.name() == "message"
        && el
            .get_child("event", EVENT)
            .and_then(|e| e.get_child("items", EVENT))
            .and_then(|items| items.get_child("item", EVENT))
            .is_some_and(|item| item.attr("id") == Some(id))
}

/// Pings the server and reads up to the answer: everything sent before was handled.
async fn settle(s: &mut Session) -> Result<Option<Element>> {
    let ping =
        format!("<iq type='get' id='settle' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>");
    s.send(&ping).await?;
    let query = std::sync::Mutex::new(None);
    wait_for(s, |el| {
        if el.name() == "iq"
            && el.attr("type") == Some("get")
            && el.has_child("query", "http://jabber.org/protocol/disco#info")
        {
            *query.lock().unwrap_or_else(|e| e.into_inner()) = Some(el.clone());
        }
        el.name() == "iq" && el.attr("id") == Some("settle")
    })
    .await?;
    Ok(query.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// A contact online with its capabilities; if the server asked what they mean, answered, and
/// the answer handled.
async fn contact(target: &Target, index: usize, sasl: Sasl) -> Result<Session> {
    let mut s = login(target, &user_name(index), sasl).await?;
    let presence = format!(
        "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{CAPS_NODE}' \
         ver='{}'/></presence>",
        ver()
    );
    s.send(&presence).await?;
    if let Some(query) = settle(&mut s).await? {
        let node = query
            .get_child("query", "http://jabber.org/protocol/disco#info")
            .and_then(|q| q.attr("node"))
            .unwrap_or_default()
            .to_owned();
        let features: String = features()
            .iter()
            .map(|f| format!("<feature var='{f}'/>"))
            .collect();
        let answer = format!(
            "<iq type='result' id='{}' to='{}'><query xmlns='http://jabber.org/protocol/disco#info' \
             node='{node}'><identity category='{}' type='{}'/>{features}</query></iq>",
            query.attr("id").unwrap_or_default(),
            query.attr("from").unwrap_or_default(),
            IDENTITY.0,
            IDENTITY.1,
        );
        s.send(&answer).await?;
        settle(&mut s).await?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verification_string_of_xep_0115s_simple_example() {
        // XEP-0115 §5.2, with the features out of order.
        let features = [
            "http://jabber.org/protocol/muc",
            "http://jabber.org/protocol/disco#info",
            "http://jabber.org/protocol/caps",
            "http://jabber.org/protocol/disco#items",
        ]
        .map(String::from);
        assert_eq!(
            verification(("client", "pc"), "Exodus 0.9.1", &features),
            "QgayPKawpkPSDYmwT/WM94uAlu0="
        );
    }

    #[test]
    fn only_the_rounds_item_counts() {
        let el: Element = "<message xmlns='jabber:client'><event \
             xmlns='http://jabber.org/protocol/pubsub#event'><items \
             node='http://jabber.org/protocol/tune'><item id='r1'/></items></event></message>"
            .parse()
            .unwrap();
        assert!(is_notification(&el, "r1"));
        assert!(!is_notification(&el, "r0"));
    }
}
