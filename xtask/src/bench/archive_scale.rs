//! `cargo xtask bench --archive-scale`: the message archive (XEP-0313) at ten million messages.
//!
//! 1. **Load.** A database is created by the server's own code (`SqliteStore::open`, then
//!    `SqliteArchive::open`, which applies the archive's migrations) and filled directly, in
//!    large transactions, with rows and full-text entries written by
//!    [`xmppd_mam::sqlite::load_messages`], the code the server's appends use. The rows are
//!    generated: 10 000 users, each with contacts it talks to more or less often, 1 000 rooms,
//!    stamps spread over the last year along the ids, bodies drawn from a Zipf-distributed
//!    vocabulary (so a few words are in most messages and most words are rare). A message
//!    between two local users is two rows, as on the server. The table's secondary indexes are
//!    dropped while loading and created again from the schema's own SQL at the end (sorting
//!    once is much faster than inserting into them row by row).
//! 2. **Queries.** Through `ArchiveStore::query` on a `SqliteArchive` over the loaded file (the
//!    server's reader threads and SQL), one query at a time, random owners: a page of 50 with
//!    `with`, the latest page, a page by id, a full-text search for a rare term.
//! 3. **Purge under load** (`--purge`): archive appends at a steady rate through the store's
//!    writer, first alone, then while the retention job (its default batch and pacing) deletes
//!    the oldest million rows (half the rows when fewer than two million were loaded).
//!
//! The database stays (`target/archive-scale/`), so a later run (a changed query, a new
//! migration) measures the same rows; `--reload` makes a new one, and `--purge` deletes it
//! afterwards, since it no longer holds what was loaded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use rusqlite::{params, Connection, OptionalExtension};
use xmppd_mam::retention::{purge_once, Retention};
use xmppd_mam::sqlite::{load_messages, owner_token};
use xmppd_mam::store::{Direction, Filter, NewMessage, PageRequest, Paging, With};
use xmppd_mam::{ArchiveStore, SqliteArchive};
use xmppd_storage::SqliteStore;

use super::report::percentiles;
use super::server::{cpu_model, utc_date};

/// Rows loaded unless `--messages` says otherwise.
pub const DEFAULT_MESSAGES: u64 = 10_000_000;
/// Queries of each kind.
pub const DEFAULT_QUERIES: usize = 1000;
const USERS: u64 = 10_000;
const ROOMS: u64 = 1_000;
const DOMAIN: &str = "localhost";
const MUC: &str = "conference.localhost";
/// Distinct words of the bodies; word `r` (from 0) is drawn with weight 1 / (r + 1).
const VOCABULARY: usize = 20_000;
/// Contacts each user talks to, the `k`-th (from 0) with weight 1 / (k + 1).
const CONTACTS: u64 = 40;
/// Of the messages, the share sent in rooms (one row each) and, of the one-to-one ones, the
/// share exchanged with an account of another server (one row, the local side).
const ROOM_SHARE: f64 = 0.10;
const REMOTE_SHARE: f64 = 0.05;
const YEAR_MS: i64 = 365 * 86_400_000;
/// Rows per transaction of the loader.
const LOAD_BATCH: u64 = 200_000;
const PAGE: usize = 50;
/// A full-text term is rare when it is in fewer than 1 % of the owner's messages.
const RARE: f64 = 0.01;
/// Rows the purge phase deletes, at most (half the rows loaded when that is fewer).
const PURGE_ROWS: u64 = 1_000_000;
/// Messages per second archived during the purge phase (two rows each), by this many tasks.
const LOAD_RATE: u64 = 200;
const LOAD_TASKS: u64 = 20;
const BASELINE: Duration = Duration::from_secs(20);

/// What `--archive-scale` was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleOptions {
    pub messages: u64,
    pub queries: usize,
    pub reload: bool,
    pub purge: bool,
}

/// SplitMix64: a fixed seed gives the same database on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Index of `cumulative` (increasing weights' running sums) drawn by weight.
    fn weighted(&mut self, cumulative: &[f64]) -> usize {
        let x = self.unit() * cumulative.last().copied().unwrap_or(0.0);
        cumulative
            .partition_point(|c| *c <= x)
            .min(cumulative.len() - 1)
    }

    /// Skewed towards 0 (the product of two uniform draws, density -ln(i / n)), so the first
    /// owners are several times busier than most.
    fn skewed(&mut self, n: u64) -> u64 {
        ((self.unit() * self.unit()) * n as f64) as u64 % n
    }
}

fn zipf(n: usize) -> Vec<f64> {
    let mut sum = 0.0;
    (0..n)
        .map(|r| {
            sum += 1.0 / (r as f64 + 1.0);
            sum
        })
        .collect()
}

/// The syllables words are spelt with.
const SYL: [&str; 20] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "be", "do", "fa", "gu", "hi", "jo", "pe", "ri",
    "su", "ta", "we", "zo",
];

/// Word `r` of the vocabulary: syllables spelling `r`, so every word is distinct and
/// pronounceable-looking (a tokenizer sees ordinary words).
fn word(r: usize) -> String {
    let mut w = String::new();
    let mut n = r + 20;
    while n > 0 {
        w.push_str(SYL[n % 20]);
        n /= 20;
    }
    w
}

fn user(u: u64) -> String {
    format!("user{u}@{DOMAIN}")
}

fn room(r: u64) -> String {
    format!("room{r}@{MUC}")
}

/// The `k`-th contact of user `u` (a local account, never `u`).
fn contact(u: u64, k: u64) -> u64 {
    let mut r = Rng(u.wrapping_mul(1_000_003).wrapping_add(k));
    let c = r.below(USERS - 1);
    if c >= u {
        c + 1
    } else {
        c
    }
}

const RESOURCES: [&str; 3] = ["phone-4f2a", "laptop-91c3", "web-07de"];

/// Generates the archive's rows in id order.
struct Generator {
    rng: Rng,
    words: Vec<String>,
    vocabulary: Vec<f64>,
    contacts: Vec<f64>,
    serial: u64,
}

impl Generator {
    fn new() -> Generator {
        Generator {
            rng: Rng(0x5EED),
            words: (0..VOCABULARY).map(word).collect(),
            vocabulary: zipf(VOCABULARY),
            contacts: zipf(CONTACTS as usize),
            serial: 0,
        }
    }

    fn body(&mut self) -> String {
        // Mostly short lines, sometimes a paragraph: 1 to 40 words, about 9 on average.
        let n = 1 + (-(1.0 - self.rng.unit()).ln() * 8.0) as usize;
        let mut body = String::new();
        for i in 0..n.min(40) {
            if i > 0 {
                body.push(' ');
            }
            let w = self.rng.weighted(&self.vocabulary);
            body.push_str(&self.words[w]);
        }
        body
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.rng.next(), self.rng.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }

    /// The rows of the next message: one for a room or a remote peer, two between local users
    /// (the sender's, then the recipient's, as the server writes them).
    fn message(&mut self) -> Vec<NewMessage> {
        self.serial += 1;
        let body = self.body();
        let id = self.uuid();
        if self.rng.unit() < ROOM_SHARE {
            let r = room(self.rng.skewed(ROOMS));
            let sender = self.rng.below(USERS);
            let nick = format!("nick{sender}");
            let stanza = format!(
                "<message xmlns='jabber:client' from='{r}/{nick}' type='groupchat' id='{id}'>\
                 <body>{body}</body><origin-id xmlns='urn:xmpp:sid:0' id='{id}'/>\
                 <x xmlns='http://jabber.org/protocol/muc#user'>\
                 <item jid='{}/{}'/></x></message>",
                user(sender),
                RESOURCES[(sender % 3) as usize]
            );
            return vec![NewMessage {
                owner: r.clone(),
                with_bare: r,
                with_resource: nick,
                direction: Direction::Incoming,
                stanza,
                text: Some(body),
            }];
        }
        let u = self.rng.skewed(USERS);
        let k = self.rng.weighted(&self.contacts) as u64;
        let from = format!("{}/{}", user(u), RESOURCES[self.rng.below(3) as usize]);
        let remote = self.rng.unit() < REMOTE_SHARE;
        let to = if remote {
            format!("friend{}@remote{}.example", contact(u, k), k % 7)
        } else {
            user(contact(u, k))
        };
        let stanza = format!(
            "<message xmlns='jabber:client' from='{from}' to='{to}' type='chat' id='{id}'>\
             <body>{body}</body><origin-id xmlns='urn:xmpp:sid:0' id='{id}'/>\
             <request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/>\
             <active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        );
        let sent = NewMessage {
            owner: user(u),
            with_bare: to.clone(),
            with_resource: String::new(),
            direction: Direction::Outgoing,
            stanza: stanza.clone(),
            text: Some(body.clone()),
        };
        if remote {
            return vec![sent];
        }
        let (bare, resource) = from.split_once('/').unwrap_or((&from, ""));
        let received = NewMessage {
            owner: to,
            with_bare: bare.to_owned(),
            with_resource: resource.to_owned(),
            direction: Direction::Incoming,
            stanza,
            text: Some(body),
        };
        vec![sent, received]
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn db_path(root: &Path, messages: u64) -> PathBuf {
    super::target_dir(root)
        .join("archive-scale")
        .join(format!("mam-{messages}.sqlite"))
}

fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

fn file_bytes(path: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .map(|s| {
            let mut p = path.as_os_str().to_owned();
            p.push(s);
            std::fs::metadata(PathBuf::from(p))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum()
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Runs the whole mode.
pub fn run(root: &Path, opts: &ScaleOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let path = db_path(root, opts.messages);
    eprintln!(
        "archive-scale: {} on {} ({}), {}",
        utc_date(),
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        path.display()
    );
    if opts.reload || !path.exists() {
        remove_db(&path);
        load(&runtime, &path, opts.messages)?;
    } else {
        eprintln!("archive-scale: reusing the loaded database (--reload to load it again)");
    }
    let started = Instant::now();
    let (store, archive) = runtime.block_on(async {
        let store = Arc::new(SqliteStore::open(&path)?);
        let archive = SqliteArchive::open(store.clone()).await?;
        anyhow::Ok((store, archive))
    })?;
    println!(
        "open and migrate: {:.1} s; database {}",
        started.elapsed().as_secs_f64(),
        gib(file_bytes(&path))
    );
    let archive = Arc::new(archive);
    let plan = plan_queries(&path, opts.queries)?;
    runtime.block_on(run_queries(&archive, &plan))?;
    if opts.purge {
        let rows = PURGE_ROWS.min(opts.messages / 2);
        runtime.block_on(purge_under_load(&store, &archive, &path, rows))?;
        drop(archive);
        drop(store);
        remove_db(&path);
        eprintln!("archive-scale: database deleted (it no longer holds what was loaded)");
    }
    Ok(())
}

/// Creates the database as the server does, then fills it.
fn load(runtime: &tokio::runtime::Runtime, path: &Path, messages: u64) -> Result<()> {
    let started = Instant::now();
    runtime.block_on(async {
        let store = Arc::new(SqliteStore::open(path)?);
        SqliteArchive::open(store).await?;
        anyhow::Ok(())
    })?;
    let mut c = Connection::open(path)?;
    // A failed load is thrown away, so nothing is journalled or synced until the end.
    c.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA locking_mode = EXCLUSIVE;
         PRAGMA cache_size = -1000000; PRAGMA temp_store = MEMORY;",
    )?;
    let indexes: Vec<(String, String)> = c
        .prepare(
            "SELECT name, sql FROM sqlite_master
             WHERE type = 'index' AND tbl_name = 'mam_messages' AND sql IS NOT NULL",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, _) in &indexes {
        c.execute_batch(&format!("DROP INDEX {name}"))?;
    }
    let mut gen = Generator::new();
    let start_ms = unix_ms() - YEAR_MS;
    // Stamps follow the ids (the server never lets them go back) and span the year.
    let estimate = messages as f64 / (2.0 - ROOM_SHARE - (1.0 - ROOM_SHARE) * REMOTE_SHARE);
    let mut rows = 0u64;
    let mut last = Instant::now();
    while rows < messages {
        let end = (rows + LOAD_BATCH).min(messages);
        let mut batch = Vec::with_capacity(LOAD_BATCH as usize + 1);
        while rows < end {
            let stamp = start_ms + (gen.serial as f64 / estimate * YEAR_MS as f64) as i64;
            for m in gen.message() {
                if rows < messages {
                    batch.push((m, stamp.min(start_ms + YEAR_MS)));
                    rows += 1;
                }
            }
        }
        let tx = c.transaction()?;
        load_messages(&tx, batch)?;
        tx.commit()?;
        if last.elapsed() > Duration::from_secs(30) {
            last = Instant::now();
            eprintln!(
                "archive-scale: {rows} rows in {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let rows_done = started.elapsed();
    for (_, sql) in &indexes {
        c.execute_batch(sql)?;
    }
    let indexed = started.elapsed();
    // Back to the server's journal: the file is then what the server would open.
    c.execute_batch("PRAGMA locking_mode = NORMAL; PRAGMA journal_mode = WAL;")?;
    drop(c);
    println!(
        "load: {rows} rows ({} messages) in {:.0} s: rows and full text {:.0} s, indexes {:.0} s; \
         {:.0} rows/s; database {}, {:.0} bytes per row",
        gen.serial,
        started.elapsed().as_secs_f64(),
        rows_done.as_secs_f64(),
        (indexed - rows_done).as_secs_f64(),
        rows as f64 / started.elapsed().as_secs_f64(),
        gib(file_bytes(path)),
        file_bytes(path) as f64 / rows.max(1) as f64
    );
    Ok(())
}

/// One query of the benchmark, chosen before any is timed.
struct Planned {
    owner: String,
    req: PageRequest,
}

struct Plan {
    kinds: Vec<(&'static str, Vec<Planned>)>,
    /// Of the full-text queries: the share of the owner's messages each term is in.
    rare_shares: Vec<f64>,
}

/// Picks the queries: random accounts (uniformly, so most are of ordinary size), for each a
/// contact it talked to, an id of its archive, a rare word of one of its messages.
fn plan_queries(path: &Path, n: usize) -> Result<Plan> {
    let c = Connection::open(path)?;
    c.execute_batch("PRAGMA query_only = ON")?;
    let mut rng = Rng(0xBE7C);
    let mut with = Vec::new();
    let mut latest = Vec::new();
    let mut by_id = Vec::new();
    let mut fulltext = Vec::new();
    let mut rare_shares = Vec::new();
    let count_of = |owner: &str| -> rusqlite::Result<i64> {
        c.prepare_cached("SELECT COUNT(*) FROM mam_messages WHERE owner = ?1")?
            .query_row(params![owner], |r| r.get(0))
    };
    let nth = |owner: &str, k: i64| -> rusqlite::Result<Option<(i64, String, String)>> {
        c.prepare_cached(
            "SELECT id, with_bare, stanza FROM mam_messages WHERE owner = ?1
             ORDER BY id LIMIT 1 OFFSET ?2",
        )?
        .query_row(params![owner, k], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
    };
    let page = |filter: Filter, paging: Paging| PageRequest {
        filter,
        paging,
        max: PAGE,
    };
    // Small databases have few owners with 100 messages or more: then fewer full-text queries.
    for _ in 0..50 * n {
        if fulltext.len() >= n && by_id.len() >= n {
            break;
        }
        let owner = if rng.unit() < ROOM_SHARE {
            room(rng.below(ROOMS))
        } else {
            user(rng.below(USERS))
        };
        let count = count_of(&owner)?;
        if count == 0 {
            continue;
        }
        let Some((id, peer, stanza)) = nth(&owner, rng.below(count as u64) as i64)? else {
            continue;
        };
        if by_id.len() < n {
            latest.push(Planned {
                owner: owner.clone(),
                req: page(Filter::default(), Paging::Backward { before: None }),
            });
            with.push(Planned {
                owner: owner.clone(),
                req: page(
                    Filter {
                        with: Some(With {
                            bare: peer,
                            resource: None,
                        }),
                        ..Filter::default()
                    },
                    Paging::Backward { before: None },
                ),
            });
            let paging = if by_id.len() % 2 == 0 {
                Paging::Forward { after: Some(id) }
            } else {
                Paging::Backward { before: Some(id) }
            };
            by_id.push(Planned {
                owner: owner.clone(),
                req: page(Filter::default(), paging),
            });
        }
        // The rarest word of that message, if it is in fewer than 1 % of the owner's.
        if fulltext.len() < n && count >= (1.0 / RARE) as i64 {
            let body = stanza
                .split_once("<body>")
                .and_then(|(_, b)| b.split_once("</body>"))
                .map(|(b, _)| b)
                .unwrap_or("");
            let Some(term) = body
                .split(' ')
                .max_by_key(|w| word_rank(w))
                .map(str::to_owned)
            else {
                continue;
            };
            let hits: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM mam_messages WHERE owner = ?1
                     AND id IN (SELECT rowid FROM mam_text WHERE mam_text MATCH ?2)",
                )?
                .query_row(
                    params![
                        owner,
                        format!("owner : {} AND body : \"{term}\"", owner_token(&owner))
                    ],
                    |r| r.get(0),
                )?;
            let share = hits as f64 / count as f64;
            if share < RARE {
                rare_shares.push(share);
                fulltext.push(Planned {
                    owner,
                    req: page(
                        Filter {
                            fulltext: Some(term),
                            ..Filter::default()
                        },
                        Paging::Backward { before: None },
                    ),
                });
            }
        }
    }
    if by_id.is_empty() {
        bail!("no owner with messages to query");
    }
    Ok(Plan {
        kinds: vec![
            ("with=JID, latest page of 50", with),
            ("latest page of 50 (<before/>)", latest),
            ("page of 50 by id (<after>/<before>)", by_id),
            ("full text, rare term, latest 50", fulltext),
        ],
        rare_shares,
    })
}

/// The rank of a vocabulary word (its inverse of [`word`]); higher is rarer.
fn word_rank(w: &str) -> usize {
    let mut n = 0usize;
    for chunk in w.as_bytes().chunks(2).rev() {
        let d = SYL.iter().position(|s| s.as_bytes() == chunk).unwrap_or(0);
        n = n * 20 + d;
    }
    n.saturating_sub(20)
}

async fn run_queries(archive: &Arc<SqliteArchive>, plan: &Plan) -> Result<()> {
    let mut shares = plan.rare_shares.clone();
    shares.sort_by(f64::total_cmp);
    if let (Some(mid), Some(max)) = (shares.get(shares.len() / 2), shares.last()) {
        println!(
            "full-text terms: in {:.2} % (median) and at most {:.2} % of the owner's messages",
            mid * 100.0,
            max * 100.0
        );
    }
    println!(
        "{:<40} {:>7} {:>10} {:>10} {:>10} {:>10}",
        "query", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (name, queries) in &plan.kinds {
        let mut micros = Vec::with_capacity(queries.len());
        let mut rows = 0usize;
        for q in queries {
            let t = Instant::now();
            let page = archive
                .query(&q.owner, q.req.clone())
                .await
                .with_context(|| format!("{name} for {}", q.owner))?;
            micros.push(t.elapsed().as_micros() as u64);
            rows += page.items.len();
        }
        micros.sort_unstable();
        let Some(p) = percentiles(&micros) else {
            continue;
        };
        let ms = |v: u64| v as f64 / 1000.0;
        println!(
            "{name:<40} {:>7} {:>10.2} {:>10.2} {:>10.2} {:>10.2}   ({:.1} rows per page)",
            micros.len(),
            ms(p.p50),
            ms(p.p90),
            ms(p.p99),
            ms(p.max),
            rows as f64 / queries.len().max(1) as f64
        );
    }
    Ok(())
}

/// Appends at [`LOAD_RATE`] messages per second (a local pair of rows each) until `stop`;
/// returns each append's time from submission to commit, in microseconds.
async fn steady_load(
    archive: Arc<SqliteArchive>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<u64> {
    let mut tasks = Vec::new();
    for t in 0..LOAD_TASKS {
        let archive = archive.clone();
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut gen = Generator::new();
            gen.rng = Rng(t + 1);
            let period = Duration::from_micros(1_000_000 * LOAD_TASKS / LOAD_RATE);
            let mut tick = tokio::time::interval(period);
            let mut got = Vec::new();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                let rows = gen.message();
                let t = Instant::now();
                if archive.append_all(rows).await.is_ok() {
                    got.push(t.elapsed().as_micros() as u64);
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort_unstable();
    all
}

async fn purge_under_load(
    store: &Arc<SqliteStore>,
    archive: &Arc<SqliteArchive>,
    path: &Path,
    rows: u64,
) -> Result<()> {
    // The stamp below which the oldest `rows` rows lie.
    let cut: i64 = store
        .read(move |c| {
            Ok(c.query_row(
                "SELECT stamp_ms FROM mam_messages ORDER BY id LIMIT 1 OFFSET ?1",
                params![rows as i64],
                |r| r.get(0),
            )?)
        })
        .await?;
    let report = |name: &str, lat: &[u64]| {
        if let Some(p) = percentiles(lat) {
            println!(
                "{name:<40} {:>7} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
                lat.len(),
                p.p50 as f64 / 1000.0,
                p.p90 as f64 / 1000.0,
                p.p99 as f64 / 1000.0,
                p.max as f64 / 1000.0
            );
        }
    };
    println!(
        "{:<40} {:>7} {:>10} {:>10} {:>10} {:>10}",
        "archive append (2 rows, commit)", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(steady_load(archive.clone(), rx));
    tokio::time::sleep(BASELINE).await;
    let _ = tx.send(true);
    let baseline = load.await?;
    report("baseline, no purge", &baseline);

    let (tx, rx) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(steady_load(archive.clone(), rx));
    let now = unix_ms();
    let r = Retention {
        max_age: Some(Duration::from_millis((now - cut).max(0) as u64)),
        max_bytes: None,
        interval: Duration::from_secs(3600),
        ..Retention::default()
    };
    let commits = store.commit_count();
    let t = Instant::now();
    let deleted = purge_once(archive.as_ref(), &r, now).await?;
    let took = t.elapsed();
    let commits = store.commit_count() - commits;
    let _ = tx.send(true);
    let during = load.await?;
    report("during the purge", &during);
    println!(
        "purge: {deleted} rows in {:.1} s ({:.0} rows/s), batches of {}, \
         {commits} commits in all; database {}",
        took.as_secs_f64(),
        deleted as f64 / took.as_secs_f64(),
        r.batch,
        gib(file_bytes(path))
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_distinct_and_ranked_back() {
        let mut seen = std::collections::HashSet::new();
        for r in 0..VOCABULARY {
            let w = word(r);
            assert_eq!(word_rank(&w), r, "{w}");
            assert!(seen.insert(w));
        }
    }

    #[test]
    fn a_message_is_two_rows_between_local_users_and_one_otherwise() {
        let mut g = Generator::new();
        let (mut one, mut two) = (0, 0);
        for _ in 0..1000 {
            let rows = g.message();
            match rows.as_slice() {
                [m] => {
                    one += 1;
                    assert!(m.stanza.contains(m.text.as_deref().unwrap()));
                }
                [a, b] => {
                    two += 1;
                    assert_eq!(
                        (a.direction, b.direction),
                        (Direction::Outgoing, Direction::Incoming)
                    );
                    assert_eq!(a.with_bare, b.owner);
                    assert_eq!(b.with_bare, a.owner);
                    assert_eq!(a.stanza, b.stanza);
                    assert!(!b.with_resource.is_empty());
                }
                _ => panic!("{rows:?}"),
            }
        }
        assert!(one > 50 && two > 700, "{one} {two}");
    }
}
