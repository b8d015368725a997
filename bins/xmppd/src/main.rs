//! The `xmppd` executable: the server (`xmppd serve`, the default) and the administration
//! commands that share its configuration and database (`register`, `users list`, `sessions`...).
//!
//! Exit codes: 0 success, 1 an error the operator can act on (one line on stderr, starting with
//! `error:`), 2 a usage error reported by the argument parser.
//!
//! This binary only composes the crates: it holds no protocol logic, and the administration
//! commands reach accounts through the same [`xmppd_auth::AuthBackend`] the server uses.

mod admin;
mod admin_http;
mod admin_socket;
mod federation;
mod migrate;
mod serve;
mod service_stores;
mod stores;
mod trim;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xmppd_config::{Source, ValidatedConfig, DEFAULT_FILE_NAME};

#[derive(Debug, Parser)]
#[command(name = "xmppd", version, about = "An XMPP server")]
struct Cli {
    /// Configuration file [default: ./xmppd.toml when present, else built-in defaults]
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "XMPPD_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default)
    Serve,
    /// Validate the configuration and exit
    CheckConfig,
    /// Create an account (the password is read from stdin when omitted)
    Register {
        user: String,
        domain: String,
        password: Option<String>,
        /// Take the name even if it belonged to an account removed less than
        /// `registration.tombstone_days` ago
        #[arg(long)]
        ignore_tombstone: bool,
    },
    /// Delete an account, everything stored for it and its place in others' rosters and rooms
    /// (through the running server when there is one, so its sessions end and contacts are
    /// told)
    Unregister { user: String, domain: String },
    /// Change an account's password (read from stdin when omitted)
    Passwd {
        user: String,
        domain: String,
        password: Option<String>,
    },
    /// Account administration
    #[command(subcommand)]
    Users(UsersCommand),
    /// Import accounts from a XEP-0227 file (as ejabberd's `export_piefxis` and Prosody's
    /// migrator write them): passwords or SCRAM keys, rosters, vCards, private XML, offline
    /// messages. Accounts already present are skipped, so a second run goes on where one
    /// stopped.
    Import {
        file: PathBuf,
        /// Overwrite accounts already present (credentials, roster, vCard, private XML)
        #[arg(long)]
        replace: bool,
    },
    /// Export every host's accounts to DIR/HOST.xml (XEP-0227), SCRAM keys of every hash
    /// included
    Export { dir: PathBuf },
    /// Copy a SQLite database to PostgreSQL or MariaDB: every table, in batches, resumable,
    /// with the rows counted on both sides at the end (a difference exits 1). Stop the server
    /// first. Tables whose service keeps its store in SQLite with a database server stay in the
    /// SQLite file (keep it as `storage.sqlite_path`). See docs/STORAGE.md.
    Migrate {
        /// The SQLite database to copy
        #[arg(long, value_name = "sqlite:PATH")]
        from: String,
        /// The database to copy to: postgres://USER@HOST[:PORT]/DATABASE or
        /// mysql://USER@HOST[:PORT]/DATABASE (mariadb://), without the password, which is read
        /// from --password-file, else `storage.password_file`, else XMPPD_STORAGE_PASSWORD
        /// [default: the configuration's [storage] server]
        #[arg(long, value_name = "URL")]
        to: Option<String>,
        /// A file holding the target database's password
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Go on with a migration into this database that was interrupted (the tables it
        /// completed are not copied again; the others are copied over what is there)
        #[arg(long)]
        resume: bool,
        /// Copy into a database that already holds accounts: rows with the same key are
        /// overwritten, the others kept (counts then check the target holds at least the
        /// source's rows)
        #[arg(long)]
        force: bool,
        /// Rows written per transaction
        #[arg(long, value_name = "N", default_value = "500", value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch_rows: u32,
    },
    /// List the sessions connected to running servers sharing this database
    Sessions,
    /// Send a message to every online session (of one host) of the running server
    Broadcast {
        message: String,
        #[arg(long = "host", value_name = "HOST")]
        domain: Option<String>,
    },
    /// End the sessions of a user (bare JID) or one session (full JID) on the running server
    Kick { jid: String },
    /// The message of the day, shown once per change to each user at login
    #[command(subcommand)]
    Motd(MotdCommand),
    /// The message archive (XEP-0313)
    #[command(subcommand)]
    Mam(MamCommand),
    /// FAST login tokens (XEP-0484) issued to clients
    #[command(subcommand)]
    Fast(FastCommand),
    /// Bearer tokens of the administration API (`[admin_http]`)
    #[command(subcommand)]
    ApiToken(ApiTokenCommand),
}

#[derive(Debug, Subcommand)]
enum ApiTokenCommand {
    /// Make a token and print it (once: only its hash is stored). Safe while the server runs.
    Create {
        /// What it may do: read (lists, statistics, metrics), admin (everything), metrics
        #[arg(long, default_value = "read", value_parser = ["read", "admin", "metrics"])]
        scope: String,
        /// Days until it expires (fractions allowed)
        #[arg(long, value_name = "DAYS", value_parser = parse_token_days, default_value = "90", conflicts_with = "no_expiry")]
        expires: f64,
        /// It never expires
        #[arg(long)]
        no_expiry: bool,
        /// A note shown by `api-token list` (what uses it)
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List the tokens: id, scope, created, expires, name
    List,
    /// Revoke a token by its id; refused from its next request on
    Revoke { id: String },
}

/// A token's lifetime for `--expires`: more than 0 and at most 36500 days.
fn parse_token_days(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(d) if d.is_finite() && d > 0.0 && d <= 36_500.0 => Ok(d),
        _ => Err("expected a number of days above 0, at most 36500 (or --no-expiry)".into()),
    }
}

#[derive(Debug, Subcommand)]
enum FastCommand {
    /// List the tokens (of one user, a bare JID): user, client id, mechanism, issued, expires
    List { user: Option<String> },
    /// Revoke a user's tokens (of one client id, if given); its clients log in with a password
    /// again. Safe while the server runs.
    Revoke {
        user: String,
        client: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum MamCommand {
    /// Delete archived messages: a user's (all, or those older than DAYS), or those older than
    /// DAYS in every archive. Safe while the server runs.
    Purge {
        /// Only this user's archive (a bare JID)
        #[arg(long, value_name = "JID")]
        user: Option<String>,
        /// Only messages archived more than DAYS days ago (fractions allowed)
        #[arg(long, value_name = "DAYS", value_parser = parse_days)]
        older_than: Option<f64>,
    },
}

/// A number of days for `--older-than`: finite, 0 to 36500 (as `mam.retention_days`).
fn parse_days(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(d) if d.is_finite() && (0.0..=36_500.0).contains(&d) => Ok(d),
        _ => Err("expected a number of days from 0 to 36500".into()),
    }
}

#[derive(Debug, Subcommand)]
enum MotdCommand {
    /// Set the message of the day (of every host, or of one)
    Set {
        text: String,
        #[arg(long = "host", value_name = "HOST")]
        domain: Option<String>,
    },
    /// Remove the message of the day (of every host, or of one)
    Clear {
        #[arg(long = "host", value_name = "HOST")]
        domain: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// List accounts, of one host or of all of them
    List { domain: Option<String> },
}

/// An error for the operator: printed as `error: <message>`, exit code 1.
#[derive(Debug)]
pub struct Failure(pub String);

impl<T: std::fmt::Display> From<T> for Failure {
    fn from(e: T) -> Self {
        Failure(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Mam(MamCommand::Purge {
        user: None,
        older_than: None,
    })) = cli.command
    {
        // A usage error (exit 2) in one line: deleting every archive is not a default.
        clap::Error::raw(
            clap::error::ErrorKind::MissingRequiredArgument,
            "mam purge needs --user JID, --older-than DAYS, or both\n",
        )
        .exit();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let explicit = cli.config.is_some();
    let config = load_config(cli.config)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let hint = explicit.then(|| config_arg(&config));
            serve::run(config, hint)
        }
        Command::CheckConfig => {
            println!("configuration OK");
            Ok(())
        }
        Command::Register {
            user,
            domain,
            password,
            ignore_tombstone,
        } => admin::block_on(admin::register(
            &config,
            &user,
            &domain,
            password,
            ignore_tombstone,
        )),
        Command::Unregister { user, domain } => {
            admin::block_on(admin::unregister(&config, &user, &domain))
        }
        Command::Passwd {
            user,
            domain,
            password,
        } => admin::block_on(admin::passwd(&config, &user, &domain, password)),
        Command::Users(UsersCommand::List { domain }) => {
            admin::block_on(admin::list_users(&config, domain.as_deref()))
        }
        Command::Import { file, replace } => {
            admin::block_on(admin::import(&config, &file, replace))
        }
        Command::Export { dir } => admin::block_on(admin::export(&config, &dir)),
        Command::Migrate {
            from,
            to,
            password_file,
            resume,
            force,
            batch_rows,
        } => {
            let request = migrate::Request {
                from,
                to,
                password_file,
                options: xmppd_storage::migrate::Options {
                    batch_rows: batch_rows as usize,
                    resume,
                    force,
                    ..Default::default()
                },
            };
            admin::block_on(migrate::run(&config, request))
        }
        Command::Sessions => admin::block_on(admin::sessions(&config)),
        Command::Broadcast { message, domain } => {
            admin::block_on(admin::broadcast(&config, &message, domain.as_deref()))
        }
        Command::Kick { jid } => admin::block_on(admin::kick(&config, &jid)),
        Command::Motd(MotdCommand::Set { text, domain }) => {
            admin::block_on(admin::motd(&config, Some(&text), domain.as_deref()))
        }
        Command::Motd(MotdCommand::Clear { domain }) => {
            admin::block_on(admin::motd(&config, None, domain.as_deref()))
        }
        Command::Fast(FastCommand::List { user }) => {
            admin::block_on(admin::fast_list(&config, user.as_deref()))
        }
        Command::Fast(FastCommand::Revoke { user, client }) => {
            admin::block_on(admin::fast_revoke(&config, &user, client.as_deref()))
        }
        Command::ApiToken(ApiTokenCommand::Create {
            scope,
            expires,
            no_expiry,
            name,
        }) => {
            let expires = (!no_expiry).then_some(expires);
            admin::block_on(admin::api_token_create(&config, &scope, expires, &name))
        }
        Command::ApiToken(ApiTokenCommand::List) => admin::block_on(admin::api_token_list(&config)),
        Command::ApiToken(ApiTokenCommand::Revoke { id }) => {
            admin::block_on(admin::api_token_revoke(&config, &id))
        }
        Command::Mam(MamCommand::Purge { user, older_than }) => {
            admin::block_on(admin::mam_purge(&config, user.as_deref(), older_than))
        }
    }
}

/// `--config` (or `XMPPD_CONFIG`), else `./xmppd.toml` if it exists, else the defaults.
fn load_config(path: Option<PathBuf>) -> Result<ValidatedConfig, Failure> {
    let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
    let source = match path {
        Some(p) => Source::read(&p)?,
        None if cwd.join(DEFAULT_FILE_NAME).is_file() => {
            Source::read(std::path::Path::new(DEFAULT_FILE_NAME))?
        }
        None => Source::builtin(cwd),
    };
    // The error already reads `file:line: key: message`.
    source.load().map_err(|e| Failure(e.to_string()))
}

/// How the banner's hints name the configuration file the operator chose.
fn config_arg(config: &ValidatedConfig) -> String {
    let file = &config.source;
    if file
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c))
    {
        format!("--config {file} ")
    } else {
        format!("--config '{}' ", file.replace('\'', r"'\''"))
    }
}
