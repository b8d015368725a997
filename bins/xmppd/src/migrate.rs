//! `xmppd migrate`: copies a SQLite database to PostgreSQL or MariaDB
//! (`xmppd_storage::migrate`), after opening both as the server opens them at start-up so
//! that every schema this build knows is in place on each.

use std::path::{Path, PathBuf};

use xmppd_config::{DatabaseSettings, DatabaseUrl, StorageBackend, ValidatedConfig};
use xmppd_storage::migrate::{Options, Outcome, Report};

use crate::{admin_socket, stores, Failure};

/// What `xmppd migrate` was asked.
pub struct Request {
    pub from: String,
    pub to: Option<String>,
    pub password_file: Option<PathBuf>,
    pub options: Options,
}

pub async fn run(config: &ValidatedConfig, request: Request) -> Result<(), Failure> {
    let source = source_path(&request.from)?;
    if admin_socket::request(config, &["sessions"])?.is_some() {
        return Err(Failure(
            "a server is running on this configuration: stop it before migrating (the copy \
             must see a database nobody writes to)"
                .into(),
        ));
    }
    let target = target_config(config, &source, &request)?;
    let backend = target.storage.backend;
    // The source as the server opens it (every service's tables migrated to this build's
    // schema), then the target the same way; the source is the services' SQLite file there.
    let stores = stores::open(&target).await?;
    stores::open_services(&stores).await?;
    let name = match backend {
        StorageBackend::Postgres => "PostgreSQL",
        _ => "MariaDB",
    };
    println!("copying {} to {name}", source.display());
    let mut progress = |line: &str| println!("{line}");
    let report = copy(&stores.engine, &source, &request.options, &mut progress).await?;
    print_counts(&report);
    let bad = report.mismatches();
    if !bad.is_empty() {
        let names: Vec<&str> = bad.iter().map(|t| t.table.as_str()).collect();
        return Err(Failure(format!(
            "the counts differ for {}: the copy is not complete",
            names.join(", ")
        )));
    }
    println!(
        "done: every row counted on both sides. Start xmppd with [storage] backend = \"{}\" and \
         this URL; keep sqlite_path = \"{}\" while tables stay in SQLite",
        backend.as_str(),
        source.display()
    );
    Ok(())
}

async fn copy(
    engine: &stores::Engine,
    source: &Path,
    options: &Options,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Report, Failure> {
    let report = match engine {
        #[cfg(feature = "postgres")]
        stores::Engine::Postgres(pg) => {
            xmppd_storage::migrate::to_postgres(source, pg, options, progress).await
        }
        #[cfg(feature = "mysql")]
        stores::Engine::Mysql(my) => {
            xmppd_storage::migrate::to_mysql(source, my, options, progress).await
        }
        stores::Engine::Sqlite(_) => {
            return Err(Failure("the target must be a database server".into()))
        }
    };
    report.map_err(|e| Failure(e.to_string()))
}

fn print_counts(report: &Report) {
    let width = (report.tables.iter())
        .map(|t| t.table.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!("{:width$}  {:>10}  {:>10}", "table", "sqlite", "target");
    for t in &report.tables {
        let target = match &t.outcome {
            Outcome::KeptInSqlite => "(stays)".to_owned(),
            _ => t.target_rows.to_string(),
        };
        let note = match (&t.outcome, t.matches(report.forced)) {
            (_, false) => "  MISMATCH".to_owned(),
            (Outcome::Folded { into }, _) => format!("  (in {into})"),
            (Outcome::KeptInSqlite, _) => "  (kept in the SQLite file)".to_owned(),
            (Outcome::Copied, true) => String::new(),
        };
        println!(
            "{:width$}  {:>10}  {:>10}{note}",
            t.table, t.source_rows, target
        );
    }
}

/// The file of `sqlite:PATH`.
fn source_path(from: &str) -> Result<PathBuf, Failure> {
    let path = from.strip_prefix("sqlite:").ok_or_else(|| {
        Failure(format!(
            "--from {from}: expected sqlite:PATH (the SQLite database to copy)"
        ))
    })?;
    let path = PathBuf::from(path.strip_prefix("//").unwrap_or(path));
    if !path.is_file() {
        return Err(Failure(format!(
            "{}: no such database file",
            path.display()
        )));
    }
    Ok(path)
}

/// The configuration the server would run with on the target: its backend and URL, the
/// source as the SQLite file beside it.
fn target_config(
    config: &ValidatedConfig,
    source: &Path,
    request: &Request,
) -> Result<ValidatedConfig, Failure> {
    let mut target = config.clone();
    target.storage.sqlite_path = source.to_owned();
    match &request.to {
        Some(url) => {
            let scheme = url.split_once("://").map_or("", |(s, _)| s);
            target.storage.backend = match scheme {
                "postgres" | "postgresql" => StorageBackend::Postgres,
                "mysql" | "mariadb" => StorageBackend::Mysql,
                _ => {
                    return Err(Failure(
                        "--to: expected postgres://USER@HOST/DATABASE or \
                         mysql://USER@HOST/DATABASE (mariadb://)"
                            .into(),
                    ))
                }
            };
            if xmppd_config::url_has_password(url) {
                return Err(Failure(format!(
                    "--to: the URL must not hold the password (command lines are visible to \
                     other users): give it in --password-file or {}",
                    xmppd_config::PASSWORD_ENV
                )));
            }
            let configured = config.storage.server.as_ref();
            target.storage.server = Some(DatabaseSettings {
                url: DatabaseUrl::Inline(url.clone()),
                password_file: (request.password_file.clone())
                    .or_else(|| configured.and_then(|s| s.password_file.clone())),
                pool_size: configured.map_or(4, |s| s.pool_size),
                connect_timeout: configured
                    .map_or(std::time::Duration::from_secs(10), |s| s.connect_timeout),
                pool_wait: configured.map_or(std::time::Duration::from_secs(10), |s| s.pool_wait),
            });
        }
        None => {
            if config.storage.backend == StorageBackend::Sqlite {
                return Err(Failure(
                    "--to URL is needed: the configuration's [storage] backend is sqlite".into(),
                ));
            }
            if let (Some(file), Some(server)) =
                (&request.password_file, target.storage.server.as_mut())
            {
                server.password_file = Some(file.clone());
            }
        }
    }
    Ok(target)
}
