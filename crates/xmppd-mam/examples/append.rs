//! The SQLite archive's write path alone, without a server: many tasks append one-to-one
//! messages (two rows each, as the server archives a local chat message) through the store's
//! group-commit writer, and the writer thread's CPU per message is reported.
//!
//! ```text
//! cargo run --release -p xmppd-mam --example append -- [--messages N] [--owners N]
//!     [--in-flight N] [--preload N] [--db PATH]
//! ```
//!
//! `--preload` first fills the database with that many messages in large transactions (the
//! bulk loader's path), so the indexes have the depth and spread of a used archive. The figure
//! to compare between changes is "writer CPU per message": times vary on a shared machine,
//! that one much less.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use xmppd_mam::sqlite::load_messages;
use xmppd_mam::store::{Direction, NewMessage};
use xmppd_mam::{ArchiveStore, SqliteArchive};
use xmppd_storage::SqliteStore;

struct Args {
    messages: u64,
    owners: u64,
    in_flight: u64,
    preload: u64,
    db: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        messages: 100_000,
        owners: 1_000,
        in_flight: 200,
        preload: 0,
        db: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let number = || {
            value
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{flag}: a number"))
        };
        match flag.as_str() {
            "--messages" => a.messages = number(),
            "--owners" => a.owners = number().max(2),
            "--in-flight" => a.in_flight = number().max(1),
            "--preload" => a.preload = number(),
            "--db" => a.db = Some(value.into()),
            _ => panic!("unknown flag {flag}"),
        }
    }
    a
}

/// xorshift64*: a fixed sequence, so two runs append the same messages.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// The two rows the server archives for a chat message from `from` to `to`.
fn rows(from: u64, to: u64, n: u64) -> Vec<NewMessage> {
    let (a, b) = (
        format!("user{from}@localhost"),
        format!("user{to}@localhost"),
    );
    let body = format!("message {n} from {a}: the quick brown fox jumps over the lazy dog");
    let stanza = format!(
        "<message xmlns='jabber:client' from='{a}/phone' to='{b}' type='chat' id='m{n}'>\
         <body>{body}</body><origin-id xmlns='urn:xmpp:sid:0' id='o{n}'/></message>"
    );
    let row = |owner: &str, with: &str, resource: &str, direction| NewMessage {
        owner: owner.to_owned(),
        with_bare: with.to_owned(),
        with_resource: resource.to_owned(),
        direction,
        stanza: stanza.clone(),
        text: Some(body.clone()),
    };
    vec![
        row(&a, &b, "", Direction::Outgoing),
        row(&b, &a, "phone", Direction::Incoming),
    ]
}

/// Nanoseconds of CPU the thread named `name` has used (Linux `schedstat`).
fn thread_cpu_ns(name: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            total += stat
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

fn main() {
    let args = args();
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = args
        .db
        .clone()
        .unwrap_or_else(|| dir.path().join("mam.sqlite"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let store = Arc::new(SqliteStore::open(&path).expect("open the database"));
        let archive = Arc::new(SqliteArchive::open(store.clone()).await.expect("archive"));
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        if args.preload > 0 {
            let began = Instant::now();
            let (owners, total) = (args.owners, args.preload);
            store
                .write(move |c| {
                    let mut seed = seed;
                    let msgs = (0..total).flat_map(|n| {
                        let from = next(&mut seed) % owners;
                        let to = (from + 1 + next(&mut seed) % (owners - 1)) % owners;
                        rows(from, to, n).into_iter().map(|m| (m, 1))
                    });
                    Ok(load_messages(c, msgs)?)
                })
                .await
                .expect("preload");
            println!(
                "preloaded {} messages in {:.1} s",
                args.preload,
                began.elapsed().as_secs_f64()
            );
            seed ^= 0x5555;
        }
        let done = Arc::new(AtomicU64::new(0));
        let commits = store.commit_count();
        let cpu = thread_cpu_ns("xmppd-sqlite-wr");
        let began = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..args.in_flight {
            let (archive, done) = (archive.clone(), done.clone());
            let mut seed = seed ^ (t + 1).wrapping_mul(0x1000_0000_01b3);
            let (owners, total) = (args.owners, args.messages);
            tasks.push(tokio::spawn(async move {
                let mut waits = Vec::new();
                loop {
                    let n = done.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    let from = next(&mut seed) % owners;
                    let to = (from + 1 + next(&mut seed) % (owners - 1)) % owners;
                    let asked = Instant::now();
                    archive.append_all(rows(from, to, n)).await.expect("append");
                    waits.push(asked.elapsed());
                }
                waits
            }));
        }
        let mut waits = Vec::new();
        for task in tasks {
            waits.extend(task.await.expect("task"));
        }
        waits.sort();
        let at = |q: f64| waits[((waits.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
        let wall = began.elapsed().as_secs_f64();
        let cpu = thread_cpu_ns("xmppd-sqlite-wr") - cpu;
        let commits = store.commit_count() - commits;
        let n = args.messages as f64;
        println!("messages               {}", args.messages);
        println!("owners                 {}", args.owners);
        println!("appends in flight      {}", args.in_flight);
        println!("messages/s             {:.0}", n / wall);
        println!("commits                {commits}");
        println!("messages per commit    {:.1}", n / commits.max(1) as f64);
        println!("writer CPU per message {:.1} µs", cpu as f64 / 1e3 / n);
        println!("append to commit p50   {:.1} ms", at(0.5));
        println!("append to commit p99   {:.1} ms", at(0.99));
        println!("append to commit max   {:.1} ms", at(1.0));
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!("database bytes         {size}");
    });
}
