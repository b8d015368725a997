//! Copying a SQLite database to PostgreSQL or MariaDB (`xmppd migrate`): every table, resumable,
//! with the rows counted on both sides at the end.
//!
//! The tables are discovered, not listed: every table of the SQLite file is copied to the table
//! of the same name on the target, except SQLite's own (`sqlite_*`), the schema versions
//! (`xmppd_schemas`: the target's migrations own its versions) and FTS5 indexes with their
//! shadow tables (the target indexes text its own way). So a service whose tables reach the
//! database servers with the names they have in SQLite is copied without a change here. The
//! caller opens the target as the server does at start-up, so every schema this build knows
//! is in place before the copy.
//!
//! Values are converted by the target column's type, read from the target's catalog (integers
//! to booleans, text to `BYTEA`, ...). Column names that had to change on the servers are
//! mapped (`user` is reserved in PostgreSQL: `username`; `key` in MariaDB: `data_key`), and
//! one table has an adapter because its shape differs: SQLite's `roster_groups` rows go into
//! the roster item's `groups` (PostgreSQL, `TEXT[]`) or `groups_list` (MariaDB) column.
//!
//! Resumable: rows are read in primary-key order, in batches, each batch written in one
//! transaction as an upsert on the target's primary key, so a batch written twice (a run killed
//! after its commit and started again) leaves the same rows. A progress table on the target
//! (`xmppd_migration`) records each table once it is complete; a run with `resume` skips those.
//! Identity and serial sequences are moved past the copied ids (and past SQLite's
//! `AUTOINCREMENT` high-water mark, so no id is handed out twice).
//!
//! A table the target lacks is an error when it is the core's or when the target has the
//! schema of the service it belongs to (by its name's prefix); otherwise its service still
//! keeps its store in SQLite with a database server, and the table stays in the SQLite file,
//! which the server keeps using beside the database (`storage.sqlite_path`).
//!
//! Not done here: the source must not change during the copy (stop the server); rows the
//! target holds that the source does not are left alone (with `force`).

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;

use std::collections::BTreeSet;
use std::path::Path;

use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OptionalExtension};

use crate::{Result, StorageError};

/// How [`to_postgres`] and [`to_mysql`] copy.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rows read and written together, in one transaction.
    pub batch_rows: usize,
    /// Go on with a migration that was interrupted: the tables it completed are not copied
    /// again.
    pub resume: bool,
    /// Copy into a target that already holds accounts: rows with the same key are
    /// overwritten, others kept.
    pub force: bool,
    /// Stops with an error after this many batches (to test an interruption).
    #[doc(hidden)]
    pub stop_after_batches: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch_rows: 500,
            resume: false,
            force: false,
            stop_after_batches: None,
        }
    }
}

/// What became of one SQLite table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Copied to the table of the same name.
    Copied,
    /// Its rows are a column of another table on the target (`roster_groups` in `roster`);
    /// the count compared is of the values in that column.
    Folded { into: String },
    /// The target has no such table: its service keeps it in the SQLite file.
    KeptInSqlite,
}

/// One table's counts.
#[derive(Debug, Clone)]
pub struct TableReport {
    pub table: String,
    pub outcome: Outcome,
    /// Rows in the SQLite file.
    pub source_rows: u64,
    /// Rows on the target after the copy (0 for a table kept in SQLite).
    pub target_rows: u64,
}

/// What a migration did, table by table.
#[derive(Debug, Clone)]
pub struct Report {
    pub tables: Vec<TableReport>,
    /// Copied with [`Options::force`]: the target may hold more rows than the source.
    pub forced: bool,
}

impl TableReport {
    /// Whether the target holds what the source holds: as many rows (at least as many after
    /// a forced copy into a database that had rows of its own).
    pub fn matches(&self, forced: bool) -> bool {
        match self.outcome {
            Outcome::KeptInSqlite => true,
            _ if forced => self.target_rows >= self.source_rows,
            _ => self.target_rows == self.source_rows,
        }
    }
}

impl Report {
    /// The tables whose counts differ.
    pub fn mismatches(&self) -> Vec<&TableReport> {
        (self.tables.iter())
            .filter(|t| !t.matches(self.forced))
            .collect()
    }
}

/// Copies the SQLite database at `source` into `target` (already opened and migrated, as the
/// server opens it). `progress` receives a line per step, for the operator.
#[cfg(feature = "postgres")]
pub async fn to_postgres(
    source: &Path,
    target: &crate::PgStore,
    options: &Options,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Report> {
    let mut target = postgres::PgTarget::new(target).await?;
    run(source, &mut target, options, progress).await
}

/// [`to_postgres`] for MariaDB.
#[cfg(feature = "mysql")]
pub async fn to_mysql(
    source: &Path,
    target: &crate::MysqlStore,
    options: &Options,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Report> {
    let mut target = mysql::MyTarget::new(target).await?;
    run(source, &mut target, options, progress).await
}

/// The core's tables, in the order they are copied (a table before those that refer to it).
/// One missing on the target is an error.
const CORE_TABLES: &[&str] = &[
    "users",
    "scram",
    "tombstones",
    "roster",
    "roster_groups",
    "roster_version",
    "pending_subscriptions",
    "offline",
    "user_data",
    "sessions",
    "muc_rooms",
    "muc_affiliations",
];

/// Column names that differ on the database servers (words they reserve), tried when the
/// target has no column of the SQLite name.
const RENAMED: &[(&str, &str)] = &[("user", "username"), ("key", "data_key")];

/// The shadow tables FTS5 makes for a virtual table `V`: `V_data`, `V_idx`...
const FTS5_SHADOWS: &[&str] = &["data", "idx", "content", "docsize", "config"];

/// The progress table on the target.
const PROGRESS: &str = "xmppd_migration";

/// A value as the target takes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Bool(bool),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    /// A PostgreSQL `TEXT[]`.
    Texts(Vec<String>),
}

/// What a target column holds, as far as the copy converts to it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Int,
    Bool,
    Float,
    Text,
    Bytes,
    Texts,
    /// A type the copy does not convert to (named as the target names it).
    Other(String),
}

/// A column of a target table.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub name: String,
    pub kind: Kind,
    /// Must be given a value: `NOT NULL` without a default, not generated.
    pub required: bool,
    /// Takes its value from a sequence (identity, serial, `AUTO_INCREMENT`).
    pub auto: bool,
    /// Computed by the target (never written).
    pub generated: bool,
}

/// A database server the copy writes to.
#[async_trait]
pub(crate) trait Target: Send {
    /// Its columns in order; empty when the table does not exist.
    async fn columns(&mut self, table: &str) -> Result<Vec<Column>>;
    /// Its unique keys (column lists), the primary key first.
    async fn keys(&mut self, table: &str) -> Result<Vec<Vec<String>>>;
    /// `(table, table it refers to)` for every foreign key.
    async fn references(&mut self) -> Result<Vec<(String, String)>>;
    /// The schemas recorded in `xmppd_schemas`.
    async fn schemas(&mut self) -> Result<Vec<String>>;
    async fn count(&mut self, table: &str) -> Result<u64>;
    /// The roster groups in the roster items' group column.
    async fn count_groups(&mut self, column: &str) -> Result<u64>;
    /// The tables a previous run completed; `None` when no migration ran here.
    async fn completed(&mut self) -> Result<Option<BTreeSet<String>>>;
    /// Creates the progress table.
    async fn start(&mut self) -> Result<()>;
    async fn complete(&mut self, table: &str, rows: u64) -> Result<()>;
    /// Writes `rows` in one transaction; a row whose `key` is present replaces it.
    async fn upsert(
        &mut self,
        table: &str,
        columns: &[&Column],
        key: &[String],
        rows: Vec<Vec<Value>>,
    ) -> Result<()>;
    /// Moves the sequences of `table`'s `auto` columns past its ids and past `floor`.
    async fn advance_sequences(
        &mut self,
        table: &str,
        columns: &[Column],
        floor: i64,
    ) -> Result<()>;
    /// Roster groups as the target's group column holds them.
    fn groups(&self, groups: Vec<String>) -> Value;
}

/// A SQLite table to copy.
struct SourceTable {
    name: String,
    columns: Vec<String>,
    /// The primary key's columns; empty: the rowid.
    key: Vec<String>,
}

/// How one table is copied.
struct Plan {
    source: SourceTable,
    outcome: Outcome,
    /// For each source column, the target column it goes to (`None`: computed there).
    targets: Vec<Option<Column>>,
    /// The roster's group column, filled from `roster_groups`.
    groups: Option<Column>,
    key: Vec<String>,
    all_columns: Vec<Column>,
}

async fn run(
    path: &Path,
    target: &mut dyn Target,
    options: &Options,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Report> {
    let source = open_source(path)?;
    let completed = target.completed().await?;
    let accounts = target.count("users").await?;
    match &completed {
        Some(done) if !options.resume && !options.force => {
            return Err(StorageError::Backend(format!(
                "a migration into this database started before ({} tables done) and did not \
                 finish or was not confirmed: run again with --resume to go on with it",
                done.len()
            )))
        }
        None if accounts > 0 && !options.force => {
            return Err(StorageError::Backend(format!(
                "the target database already holds {accounts} accounts: refusing to copy into \
                 it (--force copies anyway: rows with the same key are overwritten, others \
                 kept)"
            )))
        }
        _ => {}
    }
    let completed = if options.resume {
        completed.unwrap_or_default()
    } else {
        BTreeSet::new()
    };
    target.start().await?;
    let plans = plan(&source, target, path).await?;
    let mut tables = Vec::with_capacity(plans.len());
    let mut batches = 0u64;
    for plan in &plans {
        let name = &plan.source.name;
        let source_rows = count_source(&source, name)?;
        match &plan.outcome {
            Outcome::KeptInSqlite => {
                progress(&format!(
                    "{name}: {source_rows} rows stay in the SQLite file {} (the target has no \
                     such table: its service keeps its store in SQLite beside the database)",
                    path.display()
                ));
                tables.push(TableReport {
                    table: name.clone(),
                    outcome: plan.outcome.clone(),
                    source_rows,
                    target_rows: 0,
                });
                continue;
            }
            Outcome::Folded { into } => {
                progress(&format!(
                    "{name}: {source_rows} rows go into {into} (copied with it)"
                ));
            }
            Outcome::Copied if completed.contains(name) => {
                progress(&format!("{name}: copied by the previous run"));
            }
            Outcome::Copied => {
                progress(&format!("{name}: {source_rows} rows to copy"));
                copy_table(
                    &source,
                    target,
                    plan,
                    source_rows,
                    options,
                    &mut batches,
                    progress,
                )
                .await?;
                let floor = autoincrement_floor(&source, name)?;
                target
                    .advance_sequences(name, &plan.all_columns, floor)
                    .await?;
                target.complete(name, source_rows).await?;
            }
        }
        tables.push(TableReport {
            table: name.clone(),
            outcome: plan.outcome.clone(),
            source_rows,
            target_rows: 0,
        });
    }
    // Counted at the end, after every table, the resumed ones too.
    let roster_groups = plans.iter().find_map(|p| p.groups.as_ref());
    for report in &mut tables {
        report.target_rows = match &report.outcome {
            Outcome::KeptInSqlite => 0,
            Outcome::Folded { .. } => match roster_groups {
                Some(column) => target.count_groups(&column.name).await?,
                None => 0,
            },
            Outcome::Copied => target.count(&report.table).await?,
        };
    }
    Ok(Report {
        tables,
        forced: options.force,
    })
}

fn open_source(path: &Path) -> Result<Connection> {
    if !path.is_file() {
        return Err(StorageError::Backend(format!(
            "{}: no such database file",
            path.display()
        )));
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(crate::sqlite::BUSY_TIMEOUT)?;
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
}

/// The tables of the SQLite file worth copying, with their columns and keys.
fn source_tables(conn: &Connection) -> Result<Vec<SourceTable>> {
    let mut stmt = conn.prepare("SELECT name, sql FROM sqlite_master WHERE type = 'table'")?;
    let all: Vec<(String, String)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let virtuals: Vec<&str> = (all.iter())
        .filter(|(_, sql)| {
            sql.trim_start()
                .to_ascii_uppercase()
                .starts_with("CREATE VIRTUAL TABLE")
        })
        .map(|(name, _)| name.as_str())
        .collect();
    let shadow = |name: &str| {
        virtuals.iter().any(|v| {
            name.strip_prefix(v)
                .and_then(|rest| rest.strip_prefix('_'))
                .is_some_and(|suffix| FTS5_SHADOWS.contains(&suffix))
        })
    };
    let mut tables = Vec::new();
    for (name, _) in &all {
        if name.starts_with("sqlite_")
            || name == "xmppd_schemas"
            || virtuals.contains(&name.as_str())
            || shadow(name)
        {
            continue;
        }
        let mut stmt = conn.prepare("SELECT name, pk FROM pragma_table_info(?1) ORDER BY cid")?;
        let columns: Vec<(String, i64)> = stmt
            .query_map(params![name], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut key: Vec<&(String, i64)> = columns.iter().filter(|(_, pk)| *pk > 0).collect();
        key.sort_by_key(|(_, pk)| *pk);
        tables.push(SourceTable {
            name: name.clone(),
            key: key.into_iter().map(|(c, _)| c.clone()).collect(),
            columns: columns.into_iter().map(|(c, _)| c).collect(),
        });
    }
    Ok(tables)
}

/// Decides where each table goes, and in which order they are copied: the core's first, then
/// the others with every table after those it refers to.
async fn plan(source: &Connection, target: &mut dyn Target, path: &Path) -> Result<Vec<Plan>> {
    let tables = source_tables(source)?;
    let schemas = target.schemas().await?;
    let mut plans = Vec::with_capacity(tables.len());
    for table in tables {
        let columns = target.columns(&table.name).await?;
        let core = CORE_TABLES.contains(&table.name.as_str());
        if columns.is_empty() {
            if table.name == "roster_groups" {
                let roster = target.columns("roster").await?;
                let groups = roster
                    .into_iter()
                    .find(|c| c.name == "groups" || c.name == "groups_list");
                if groups.is_some() {
                    plans.push(Plan {
                        source: table,
                        outcome: Outcome::Folded {
                            into: "roster".into(),
                        },
                        targets: Vec::new(),
                        groups: None,
                        key: Vec::new(),
                        all_columns: Vec::new(),
                    });
                    continue;
                }
            }
            let owner = (schemas.iter()).find(|s| {
                s.as_str() != "core"
                    && table
                        .name
                        .strip_prefix(s.as_str())
                        .is_some_and(|r| r.starts_with('_'))
            });
            if core || owner.is_some() {
                let whose = owner.map_or("the core".to_owned(), |s| format!("schema {s}"));
                return Err(StorageError::Backend(format!(
                    "table {} (of {whose}) is missing on the target database; was it opened by \
                     this version of xmppd?",
                    table.name
                )));
            }
            plans.push(Plan {
                source: table,
                outcome: Outcome::KeptInSqlite,
                targets: Vec::new(),
                groups: None,
                key: Vec::new(),
                all_columns: Vec::new(),
            });
            continue;
        }
        let mut targets = Vec::with_capacity(table.columns.len());
        for name in &table.columns {
            let column = (columns.iter())
                .find(|c| &c.name == name)
                .or_else(|| {
                    let renamed = RENAMED.iter().find(|(from, _)| from == name)?.1;
                    columns.iter().find(|c| c.name == renamed)
                })
                .ok_or_else(|| {
                    StorageError::Backend(format!(
                        "column {}.{name} of {} has no place on the target database",
                        table.name,
                        path.display()
                    ))
                })?;
            targets.push((!column.generated).then(|| column.clone()));
        }
        let groups = if table.name == "roster" && !targets_has(&targets, "groups") {
            columns
                .iter()
                .find(|c| c.name == "groups" || c.name == "groups_list")
                .cloned()
        } else {
            None
        };
        let filled: Vec<&str> = (targets.iter().flatten())
            .chain(groups.iter())
            .map(|c| c.name.as_str())
            .collect();
        if let Some(missing) = (columns.iter()).find(|c| c.required && !filled.contains(&&*c.name))
        {
            return Err(StorageError::Backend(format!(
                "column {}.{} of the target has no value in {}",
                table.name,
                missing.name,
                path.display()
            )));
        }
        let keys = target.keys(&table.name).await?;
        let key = keys
            .into_iter()
            .find(|k| k.iter().all(|c| filled.contains(&c.as_str())))
            .ok_or_else(|| {
                StorageError::Backend(format!(
                    "table {} of the target has no primary key or unique key among the copied \
                     columns: it cannot be copied without duplicates on a second run",
                    table.name
                ))
            })?;
        plans.push(Plan {
            source: table,
            outcome: Outcome::Copied,
            targets,
            groups,
            key,
            all_columns: columns,
        });
    }
    let references = target.references().await?;
    Ok(order(plans, &references))
}

fn targets_has(targets: &[Option<Column>], name: &str) -> bool {
    targets.iter().flatten().any(|c| c.name == name)
}

/// The core's tables in [`CORE_TABLES`] order, then the others alphabetically, each after the
/// tables it refers to (a cycle is broken alphabetically).
fn order(mut plans: Vec<Plan>, references: &[(String, String)]) -> Vec<Plan> {
    plans.sort_by(|a, b| a.source.name.cmp(&b.source.name));
    let rank = |p: &Plan| CORE_TABLES.iter().position(|t| *t == p.source.name);
    let (mut core, mut rest): (Vec<Plan>, Vec<Plan>) =
        plans.into_iter().partition(|p| rank(p).is_some());
    core.sort_by_key(|p| rank(p));
    let mut placed: BTreeSet<String> = core.iter().map(|p| p.source.name.clone()).collect();
    let mut out = core;
    while !rest.is_empty() {
        let ready = rest
            .iter()
            .position(|p| {
                (references.iter())
                    .filter(|(child, parent)| *child == p.source.name && *parent != p.source.name)
                    .all(|(_, parent)| {
                        placed.contains(parent) || !rest.iter().any(|r| &r.source.name == parent)
                    })
            })
            .unwrap_or(0);
        let next = rest.remove(ready);
        placed.insert(next.source.name.clone());
        out.push(next);
    }
    out
}

fn count_source(conn: &Connection, table: &str) -> Result<u64> {
    let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM {}", quote(table)), [], |r| {
        r.get(0)
    })?;
    Ok(n as u64)
}

/// The highest id SQLite's `AUTOINCREMENT` handed out for `table` (0 without one).
fn autoincrement_floor(conn: &Connection, table: &str) -> Result<i64> {
    let has: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence')",
        [],
        |r| r.get(0),
    )?;
    if !has {
        return Ok(0);
    }
    let seq: Option<i64> = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = ?1",
            params![table],
            |r| r.get(0),
        )
        .optional()?;
    Ok(seq.unwrap_or(0))
}

/// A SQLite identifier, quoted.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn copy_table(
    source: &Connection,
    target: &mut dyn Target,
    plan: &Plan,
    total: u64,
    options: &Options,
    batches: &mut u64,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<()> {
    let table = &plan.source.name;
    let columns: Vec<&Column> = (plan.targets.iter().flatten())
        .chain(plan.groups.iter())
        .collect();
    let per_batch = options.batch_rows.clamp(1, 60_000 / columns.len().max(1));
    let mut after: Option<Vec<SqlValue>> = None;
    let mut copied = 0u64;
    loop {
        let (rows, last) = read_batch(source, plan, after.as_deref(), per_batch, &*target)?;
        let Some(last) = last else { break };
        let n = rows.len() as u64;
        target.upsert(table, &columns, &plan.key, rows).await?;
        copied += n;
        *batches += 1;
        progress(&format!("{table}: {copied} of {total} rows"));
        if options
            .stop_after_batches
            .is_some_and(|stop| *batches >= stop)
        {
            return Err(StorageError::Backend(format!(
                "stopped after {batches} batches, as asked"
            )));
        }
        after = Some(last);
    }
    Ok(())
}

/// Rows converted for the target, and the source key of the last one.
type Batch = (Vec<Vec<Value>>, Option<Vec<SqlValue>>);

/// Up to `limit` rows of `plan`'s table after the key `after`, converted for the target, and
/// the key of the last one (`None`: no more rows).
fn read_batch(
    conn: &Connection,
    plan: &Plan,
    after: Option<&[SqlValue]>,
    limit: usize,
    target: &dyn Target,
) -> Result<Batch> {
    let table = &plan.source;
    let key: Vec<String> = if table.key.is_empty() {
        vec!["rowid".into()]
    } else {
        table.key.iter().map(|k| quote(k)).collect()
    };
    let key_list = key.join(", ");
    let columns: Vec<String> = table.columns.iter().map(|c| quote(c)).collect();
    let placeholders = vec!["?"; key.len()].join(", ");
    let filter = match after {
        Some(_) => format!("WHERE ({key_list}) > ({placeholders})"),
        None => String::new(),
    };
    let sql = format!(
        "SELECT {key_list}, {} FROM {} {filter} ORDER BY {key_list} LIMIT {limit}",
        columns.join(", "),
        quote(&table.name)
    );
    let mut stmt = conn.prepare(&sql)?;
    let width = key.len() + columns.len();
    let raw: Vec<Vec<SqlValue>> = stmt
        .query_map(rusqlite::params_from_iter(after.unwrap_or(&[])), |r| {
            (0..width).map(|i| r.get::<_, SqlValue>(i)).collect()
        })?
        .collect::<rusqlite::Result<_>>()?;
    let last = raw.last().map(|r| r[..key.len()].to_vec());
    let mut rows = Vec::with_capacity(raw.len());
    for row in raw {
        let values = &row[key.len()..];
        let mut out = Vec::with_capacity(values.len() + 1);
        for ((value, column), name) in values.iter().zip(&plan.targets).zip(&table.columns) {
            let Some(column) = column else { continue };
            let converted = convert(value.clone(), &column.kind)
                .map_err(|why| StorageError::Backend(format!("{}.{name}: {why}", table.name)))?;
            out.push(converted);
        }
        if plan.groups.is_some() {
            let at = |c: &str| {
                (table.columns.iter())
                    .position(|n| n == c)
                    .map(|i| values[i].clone())
                    .unwrap_or(SqlValue::Null)
            };
            let groups = roster_groups(conn, at("domain"), at("user"), at("contact"))?;
            out.push(target.groups(groups));
        }
        rows.push(out);
    }
    Ok((rows, last))
}

/// The groups of one roster item, in their order.
fn roster_groups(
    conn: &Connection,
    domain: SqlValue,
    user: SqlValue,
    contact: SqlValue,
) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT grp FROM roster_groups WHERE domain = ?1 AND user = ?2 AND contact = ?3
         ORDER BY pos",
    )?;
    let groups = stmt
        .query_map(params![domain, user, contact], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(groups)
}

/// A SQLite value as a column of `kind` takes it, or why it cannot.
fn convert(value: SqlValue, kind: &Kind) -> std::result::Result<Value, String> {
    Ok(match (value, kind) {
        (SqlValue::Null, _) => Value::Null,
        (SqlValue::Integer(i), Kind::Int) => Value::Int(i),
        (SqlValue::Integer(i), Kind::Bool) => Value::Bool(i != 0),
        (SqlValue::Integer(i), Kind::Float) => Value::Float(i as f64),
        (SqlValue::Integer(i), Kind::Text) => Value::Text(i.to_string()),
        (SqlValue::Real(f), Kind::Float) => Value::Float(f),
        (SqlValue::Real(f), Kind::Int) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
            Value::Int(f as i64)
        }
        (SqlValue::Real(f), Kind::Text) => Value::Text(f.to_string()),
        (SqlValue::Text(s), Kind::Text) => Value::Text(s),
        (SqlValue::Text(s), Kind::Bytes) => Value::Bytes(s.into_bytes()),
        (SqlValue::Text(s), Kind::Int) if s.trim().parse::<i64>().is_ok() => {
            Value::Int(s.trim().parse().unwrap_or_default())
        }
        (SqlValue::Blob(b), Kind::Bytes) => Value::Bytes(b),
        (SqlValue::Blob(b), Kind::Text) => match String::from_utf8(b) {
            Ok(s) => Value::Text(s),
            Err(_) => return Err("a blob that is not UTF-8 text, for a text column".into()),
        },
        (value, kind) => {
            let what = match value {
                SqlValue::Null => "null",
                SqlValue::Integer(_) => "an integer",
                SqlValue::Real(_) => "a real number",
                SqlValue::Text(_) => "a text",
                SqlValue::Blob(_) => "a blob",
            };
            return Err(format!(
                "{what} cannot be converted to the target column's type ({kind:?})"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_take_the_target_columns_type() {
        assert_eq!(
            convert(SqlValue::Integer(1), &Kind::Bool),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            convert(SqlValue::Integer(0), &Kind::Bool),
            Ok(Value::Bool(false))
        );
        assert_eq!(
            convert(SqlValue::Text("ab".into()), &Kind::Bytes),
            Ok(Value::Bytes(b"ab".to_vec()))
        );
        assert_eq!(
            convert(SqlValue::Blob(b"ok".to_vec()), &Kind::Text),
            Ok(Value::Text("ok".into()))
        );
        assert_eq!(convert(SqlValue::Null, &Kind::Int), Ok(Value::Null));
        assert!(convert(SqlValue::Blob(vec![0xff]), &Kind::Text).is_err());
        assert!(convert(SqlValue::Text("x".into()), &Kind::Int).is_err());
        assert!(convert(SqlValue::Integer(1), &Kind::Other("jsonb".into())).is_err());
    }

    #[test]
    fn fts5_indexes_their_shadows_and_bookkeeping_are_not_copied() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE kept (a TEXT PRIMARY KEY, b INTEGER) WITHOUT ROWID;
             CREATE TABLE plain (x TEXT, y TEXT, UNIQUE (x, y));
             CREATE TABLE xmppd_schemas (name TEXT PRIMARY KEY, version INTEGER);
             CREATE TABLE seq (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);
             CREATE VIRTUAL TABLE idx USING fts5 (body, content = '');",
        )
        .unwrap();
        let mut names: Vec<(String, Vec<String>)> = source_tables(&conn)
            .unwrap()
            .into_iter()
            .map(|t| (t.name, t.key))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ("kept".to_owned(), vec!["a".to_owned()]),
                ("plain".to_owned(), vec![]),
                ("seq".to_owned(), vec!["id".to_owned()]),
            ]
        );
    }
}
