//! xmppd's configuration: one TOML file, parsed into [`Config`], checked and completed by
//! [`Config::validate`] into a [`ValidatedConfig`] the binary maps onto the other crates.
//!
//! Every section and key is optional; defaults are documented in `docs/CONFIG.md`. Unknown keys
//! are rejected so that a typo never silently falls back to a default. Every error is a single
//! line naming the file, the line and the key path (`xmppd.toml:12: c2s.starttls_listen: ...`),
//! because operators read them in a terminal or a unit's journal.
//!
//! This crate deliberately does not open sockets, read certificates or touch the database: it
//! only resolves relative paths and checks that configured certificate files exist.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};

mod directory;
pub mod fuzzing;

use directory::{auth_backends, normalise_bare_jid};
pub use directory::{
    AuthBackendKind, AuthSection, BindPassword, LdapSection, LdapSettings, LdapTls,
    SharedGroupEntry, SharedGroupSettings, SharedGroupSource, SharedRosterSection,
};

/// The file looked for in the working directory when no `--config` is given.
pub const DEFAULT_FILE_NAME: &str = "xmppd.toml";

/// Name used in error messages when no file was read.
pub const BUILTIN_NAME: &str = "<built-in defaults>";

/// A configuration error, displayed as one line: `file:line: key: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file as the operator named it.
    pub file: String,
    /// 1-based line of the offending key or value, when it is known.
    pub line: Option<usize>,
    /// Dotted key path (`c2s.starttls_listen`, `tls.certificate[0].domain`), when known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            // A quoted TOML key may hold any character, a line break included.
            write_one_line(f, key)?;
            write!(f, ": ")?;
        }
        // Messages from the TOML parser may span lines; the contract is one line.
        let mut first = true;
        for part in self
            .message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            if !first {
                write!(f, "; ")?;
            }
            write_one_line(f, part)?;
            first = false;
        }
        Ok(())
    }
}

/// Writes `s` with control characters and Unicode line and paragraph separators escaped, so
/// that nothing quoted from the document can start a new line in a terminal or a journal.
fn write_one_line(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    for c in s.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            write!(f, "{}", c.escape_default())?;
        } else {
            write!(f, "{c}")?;
        }
    }
    Ok(())
}

/// A configuration document and the directory its relative paths are resolved against.
#[derive(Debug, Clone)]
pub struct Source {
    name: String,
    text: String,
    base_dir: PathBuf,
}

impl Source {
    /// Reads `path`; relative paths inside it are relative to the file's directory.
    pub fn read(path: &Path) -> Result<Source, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base_dir = std::path::absolute(&parent).unwrap_or(parent);
        Ok(Source {
            name,
            text,
            base_dir,
        })
    }

    /// A document held in memory (`name` is used in error messages).
    pub fn new(name: impl Into<String>, text: impl Into<String>, base_dir: PathBuf) -> Source {
        Source {
            name: name.into(),
            text: text.into(),
            base_dir,
        }
    }

    /// No file at all: every default, relative paths resolved against `cwd`.
    pub fn builtin(cwd: PathBuf) -> Source {
        Source::new(BUILTIN_NAME, "", cwd)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// Parses and validates.
    pub fn load(&self) -> Result<ValidatedConfig, ConfigError> {
        Config::parse(self)?.validate(self)
    }
}

/// The file as written, with serde defaults filled in but nothing checked or resolved yet.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerSection,
    pub storage: StorageSection,
    pub c2s: C2sSection,
    pub tls: TlsSection,
    pub offline: OfflineSection,
    pub resources: ResourcesSection,
    pub roster: RosterSection,
    pub auth: AuthSection,
    pub ldap: Option<LdapSection>,
    pub shared_roster: SharedRosterSection,
    pub registration: RegistrationSection,
    pub muc: MucSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    pub hosts: Vec<String>,
    pub data_dir: PathBuf,
    /// `None`: the machine's host name, or "xmppd" when it cannot be read.
    pub node_name: Option<String>,
    pub log_level: LogLevel,
    pub hide_ip_in_logs: bool,
    pub show_os: bool,
    pub admins: Vec<String>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            hosts: vec!["localhost".into()],
            data_dir: PathBuf::from("data"),
            node_name: None,
            log_level: LogLevel::Info,
            hide_ip_in_logs: false,
            show_os: false,
            admins: Vec::new(),
        }
    }
}

/// Verbosity of the logs (`RUST_LOG` overrides it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    pub backend: StorageBackend,
    pub sqlite_path: PathBuf,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            backend: StorageBackend::Sqlite,
            sqlite_path: PathBuf::from("xmppd.sqlite"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    #[default]
    Sqlite,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct C2sSection {
    pub starttls_listen: Vec<String>,
    pub direct_tls_listen: Vec<String>,
    pub require_starttls: bool,
    pub max_stanza_bytes: u64,
    pub pre_auth_max_stanza_bytes: u64,
    pub session_queue: u64,
    pub session_queue_bytes: u64,
    pub session_reply_bytes: u64,
    pub shaper_bytes_per_sec: u64,
    pub shaper_burst_bytes: u64,
    pub max_presence_bytes: u64,
    pub handshake_timeout_secs: u64,
    pub max_auth_failures: u32,
    pub max_connections: u64,
    pub max_pending_per_ip: u64,
}

impl Default for C2sSection {
    fn default() -> Self {
        C2sSection {
            starttls_listen: vec!["0.0.0.0:5222".into()],
            direct_tls_listen: vec!["0.0.0.0:5223".into()],
            require_starttls: true,
            max_stanza_bytes: 262_144,
            pre_auth_max_stanza_bytes: 8192,
            session_queue: 512,
            session_queue_bytes: 1 << 20,
            session_reply_bytes: 4 << 20,
            shaper_bytes_per_sec: 64 * 1024,
            shaper_burst_bytes: 512 * 1024,
            max_presence_bytes: 16 * 1024,
            handshake_timeout_secs: 30,
            max_auth_failures: 3,
            max_connections: 100_000,
            max_pending_per_ip: 32,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    pub reload_interval_secs: u64,
    #[serde(rename = "certificate")]
    pub certificates: Vec<CertificateEntry>,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            reload_interval_secs: 60,
            certificates: Vec::new(),
        }
    }
}

/// One `[[tls.certificate]]`: every key is required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateEntry {
    pub domain: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OfflineSection {
    pub max_per_user: u64,
}

impl Default for OfflineSection {
    fn default() -> Self {
        OfflineSection { max_per_user: 1000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourcesSection {
    pub max_per_user: u64,
}

impl Default for ResourcesSection {
    fn default() -> Self {
        ResourcesSection { max_per_user: 16 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RosterSection {
    pub max_items: u64,
}

impl Default for RosterSection {
    fn default() -> Self {
        RosterSection { max_items: 5000 }
    }
}

/// `[muc]`: the multi-user chat service (XEP-0045), one per host.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MucSection {
    pub enabled: bool,
    /// The service domain; `{host}` stands for each served host.
    pub domain: String,
    pub creation: MucCreation,
    pub max_rooms_per_user: u64,
    pub max_occupants: u64,
    pub max_history: u64,
    pub max_history_bytes: u64,
    pub messages_per_second: u64,
}

impl Default for MucSection {
    fn default() -> Self {
        MucSection {
            enabled: true,
            domain: "conference.{host}".into(),
            creation: MucCreation::All,
            max_rooms_per_user: 100,
            max_occupants: 500,
            max_history: 50,
            max_history_bytes: 256 * 1024,
            messages_per_second: 5,
        }
    }
}

/// Who may create chat rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MucCreation {
    /// Every local user.
    #[default]
    All,
    /// Server administrators only.
    Admins,
}

/// The checked `[muc]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MucSettings {
    /// (host, service domain) pairs; empty when the service is disabled.
    pub services: Vec<(String, String)>,
    pub creation: MucCreation,
    /// 0: no limit.
    pub max_rooms_per_user: usize,
    pub max_occupants: usize,
    pub max_history: usize,
    /// Bytes of history a room keeps in memory.
    pub max_history_bytes: usize,
    /// 0: no limit.
    pub messages_per_second: u32,
}

/// `[registration]`: in-band account creation (XEP-0077), off unless hosts are listed.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationSection {
    pub hosts: Vec<String>,
    pub max_per_ip_per_hour: u64,
    pub min_password_length: u64,
    pub tombstone_days: u64,
}

impl Default for RegistrationSection {
    fn default() -> Self {
        RegistrationSection {
            hosts: Vec::new(),
            max_per_ip_per_hour: 5,
            min_password_length: 8,
            tombstone_days: 30,
        }
    }
}

/// A checked configuration: hosts normalised, addresses parsed, paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedConfig {
    /// The file it came from ([`BUILTIN_NAME`] when none).
    pub source: String,
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub c2s: C2sSettings,
    pub tls: TlsSettings,
    /// Offline messages kept per user; 0 disables offline storage.
    pub offline_max_per_user: usize,
    pub resources_max_per_user: usize,
    /// Stored roster items per account.
    pub roster_max_items: usize,
    /// The authentication backend of every host.
    pub auth_backends: BTreeMap<String, AuthBackendKind>,
    pub ldap: Option<LdapSettings>,
    pub shared_groups: Vec<SharedGroupSettings>,
    pub registration: RegistrationSettings,
    pub muc: MucSettings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationSettings {
    /// Hosts accepting in-band registration, each one of `server.hosts`; empty: none.
    pub hosts: Vec<String>,
    pub max_per_ip_per_hour: u32,
    pub min_password_length: usize,
    /// How long the name of a removed account may not be registered again (any way); zero:
    /// no wait.
    pub tombstone: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Lowercased, unique, in file order; never empty.
    pub hosts: Vec<String>,
    pub data_dir: PathBuf,
    pub node_name: String,
    pub log_level: LogLevel,
    pub hide_ip_in_logs: bool,
    pub show_os: bool,
    /// Bare JIDs: localpart nodeprep'd, domain lowercased.
    pub admins: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSettings {
    pub backend: StorageBackend,
    /// Resolved against `data_dir`.
    pub sqlite_path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct C2sSettings {
    pub starttls_listen: Vec<SocketAddr>,
    pub direct_tls_listen: Vec<SocketAddr>,
    pub require_starttls: bool,
    pub max_stanza_bytes: usize,
    pub pre_auth_max_stanza_bytes: usize,
    pub session_queue: usize,
    pub session_queue_bytes: usize,
    pub session_reply_bytes: usize,
    /// 0: no shaping.
    pub shaper_bytes_per_sec: usize,
    pub shaper_burst_bytes: usize,
    pub max_presence_bytes: usize,
    pub handshake_timeout: Duration,
    pub max_auth_failures: u32,
    pub max_connections: usize,
    pub max_pending_per_ip: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub reload_interval: Duration,
    pub certificates: Vec<CertificateSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSettings {
    /// One of the hosts, lowercased.
    pub domain: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    /// Parses the document; syntax errors, wrong types and unknown keys are reported here.
    pub fn parse(source: &Source) -> Result<Config, ConfigError> {
        toml::from_str(&source.text).map_err(|e| {
            let locator = Locator::new(&source.text);
            let span = e.span();
            let key = span.as_ref().and_then(|s| locator.path_at(s.start));
            ConfigError {
                file: source.name.clone(),
                line: span.map(|s| locator.line_of_offset(s.start)),
                key: key.map(|k| locator.display_path(k).to_owned()),
                message: e.message().replace("unknown field", "unknown key"),
            }
        })
    }

    /// Checks every value and resolves relative paths against `source`'s directory.
    pub fn validate(self, source: &Source) -> Result<ValidatedConfig, ConfigError> {
        let locator = Locator::new(&source.text);
        let fail = |path: &str, message: String| ConfigError {
            file: source.name.clone(),
            line: locator.line_of_key(path),
            key: Some(trim_index(path).to_owned()),
            message,
        };

        let server = self.server;
        if server.hosts.is_empty() {
            return Err(fail("server.hosts", "at least one host is required".into()));
        }
        let mut hosts: Vec<String> = Vec::with_capacity(server.hosts.len());
        for (i, host) in server.hosts.iter().enumerate() {
            let path = format!("server.hosts[{i}]");
            let host = match normalise_domain(host) {
                Ok(h) => h,
                Err(why) => return Err(fail(&path, format!("invalid domain {host:?}: {why}"))),
            };
            if hosts.contains(&host) {
                return Err(fail(&path, format!("duplicate host {host:?}")));
            }
            hosts.push(host);
        }

        if server.data_dir.as_os_str().is_empty() {
            return Err(fail("server.data_dir", "must not be empty".into()));
        }
        let data_dir = source.base_dir.join(&server.data_dir);

        let node_name = match server.node_name {
            Some(n) => {
                let n = n.trim().to_owned();
                if n.is_empty() || n.chars().any(char::is_control) {
                    return Err(fail("server.node_name", "must be a non-empty name".into()));
                }
                n
            }
            None => default_node_name(),
        };

        if self.storage.sqlite_path.as_os_str().is_empty() {
            return Err(fail("storage.sqlite_path", "must not be empty".into()));
        }
        let storage = StorageSettings {
            backend: self.storage.backend,
            sqlite_path: data_dir.join(&self.storage.sqlite_path),
        };

        let c2s = self.c2s;
        let mut seen = HashSet::new();
        let mut parse_addrs =
            |key: &str, list: &[String]| -> Result<Vec<SocketAddr>, ConfigError> {
                let mut out = Vec::with_capacity(list.len());
                for (i, text) in list.iter().enumerate() {
                    let path = format!("{key}[{i}]");
                    let addr: SocketAddr = match text.trim().parse() {
                        Ok(a) => a,
                        Err(_) => {
                            return Err(fail(
                                &path,
                                format!("invalid socket address {text:?} (expected IP:PORT)"),
                            ))
                        }
                    };
                    // Port 0 binds a free port each time, so it can never clash with another entry.
                    if addr.port() != 0 && !seen.insert(addr) {
                        return Err(fail(&path, format!("address {addr} is listed twice")));
                    }
                    out.push(addr);
                }
                Ok(out)
            };
        let starttls_listen = parse_addrs("c2s.starttls_listen", &c2s.starttls_listen)?;
        let direct_tls_listen = parse_addrs("c2s.direct_tls_listen", &c2s.direct_tls_listen)?;
        if starttls_listen.is_empty() && direct_tls_listen.is_empty() {
            return Err(fail(
                "c2s.starttls_listen",
                "no client listener: set c2s.starttls_listen or c2s.direct_tls_listen".into(),
            ));
        }

        let max_stanza_bytes = in_range(c2s.max_stanza_bytes, 10_000, 64 << 20)
            .map_err(|why| fail("c2s.max_stanza_bytes", why))?;
        let pre_auth_max_stanza_bytes =
            in_range(c2s.pre_auth_max_stanza_bytes, 4096, max_stanza_bytes)
                .map_err(|why| fail("c2s.pre_auth_max_stanza_bytes", why))?;
        let session_queue = in_range(c2s.session_queue, 1, 1 << 20)
            .map_err(|why| fail("c2s.session_queue", why))?;
        // Others' stanzas for a session must fit its queue, the largest one included.
        let session_queue_bytes = in_range(c2s.session_queue_bytes, max_stanza_bytes, 1 << 30)
            .map_err(|why| {
                let why = format!("{why}; it must hold one stanza of c2s.max_stanza_bytes");
                fail("c2s.session_queue_bytes", why)
            })?;
        let session_reply_bytes = in_range(c2s.session_reply_bytes, 0, 1 << 30)
            .map_err(|why| fail("c2s.session_reply_bytes", why))?;
        let shaper_bytes_per_sec = match c2s.shaper_bytes_per_sec {
            0 => 0,
            rate => in_range(rate, 1024, 1 << 30).map_err(|why| {
                fail(
                    "c2s.shaper_bytes_per_sec",
                    format!("{why}, or 0 for no shaping"),
                )
            })?,
        };
        let shaper_burst_bytes = in_range(c2s.shaper_burst_bytes, 0, 1 << 30)
            .map_err(|why| fail("c2s.shaper_burst_bytes", why))?;
        let max_presence_bytes = in_range(c2s.max_presence_bytes, 1024, max_stanza_bytes)
            .map_err(|why| fail("c2s.max_presence_bytes", why))?;
        let handshake_secs = in_range(c2s.handshake_timeout_secs, 1, 3600)
            .map_err(|why| fail("c2s.handshake_timeout_secs", why))?;
        if c2s.max_auth_failures == 0 {
            return Err(fail("c2s.max_auth_failures", "must be at least 1".into()));
        }
        let max_connections = in_range(c2s.max_connections, 1, 10_000_000)
            .map_err(|why| fail("c2s.max_connections", why))?;
        let max_pending_per_ip = in_range(c2s.max_pending_per_ip, 1, 1_000_000)
            .map_err(|why| fail("c2s.max_pending_per_ip", why))?;

        let reload_secs = in_range(self.tls.reload_interval_secs, 1, 86_400)
            .map_err(|why| fail("tls.reload_interval_secs", why))?;
        let mut certificates: Vec<CertificateSettings> = Vec::new();
        for (i, entry) in self.tls.certificates.iter().enumerate() {
            let at = |k: &str| format!("tls.certificate[{i}].{k}");
            let domain = entry
                .domain
                .trim()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            if !hosts.contains(&domain) {
                return Err(fail(
                    &at("domain"),
                    format!("{:?} is not one of server.hosts", entry.domain),
                ));
            }
            if certificates.iter().any(|c| c.domain == domain) {
                return Err(fail(
                    &at("domain"),
                    format!("second certificate for {domain:?}"),
                ));
            }
            let resolve = |k: &str, p: &Path| -> Result<PathBuf, ConfigError> {
                if p.as_os_str().is_empty() {
                    return Err(fail(&at(k), "must not be empty".into()));
                }
                let full = source.base_dir.join(p);
                if !full.is_file() {
                    return Err(fail(&at(k), format!("file not found: {}", full.display())));
                }
                Ok(full)
            };
            let cert = resolve("cert", &entry.cert)?;
            let key = resolve("key", &entry.key)?;
            certificates.push(CertificateSettings { domain, cert, key });
        }

        let offline_max_per_user = in_range(self.offline.max_per_user, 0, 1 << 24)
            .map_err(|why| fail("offline.max_per_user", why))?;
        let resources_max_per_user = in_range(self.resources.max_per_user, 1, 1024)
            .map_err(|why| fail("resources.max_per_user", why))?;
        let roster_max_items = in_range(self.roster.max_items, 1, 1 << 20)
            .map_err(|why| fail("roster.max_items", why))?;

        let mut admins = Vec::with_capacity(server.admins.len());
        for (i, admin) in server.admins.iter().enumerate() {
            let path = format!("server.admins[{i}]");
            admins.push(normalise_bare_jid(admin).map_err(|why| fail(&path, why))?);
        }
        let auth_backends = auth_backends(&self.auth, &hosts, &fail)?;
        let ldap = match self.ldap {
            Some(section) => Some(section.validate(source, &auth_backends, &fail)?),
            None => match auth_backends
                .iter()
                .find(|(_, k)| **k == AuthBackendKind::Ldap)
            {
                Some((host, _)) => {
                    let why = format!("host {host:?} uses ldap but there is no [ldap] section");
                    return Err(fail("auth", why));
                }
                None => None,
            },
        };
        let shared_groups = self
            .shared_roster
            .validate(&hosts, &auth_backends, &ldap, &fail)?;

        let mut registration_hosts = Vec::new();
        for (i, host) in self.registration.hosts.iter().enumerate() {
            let path = format!("registration.hosts[{i}]");
            match normalise_domain(host) {
                Ok(h) if hosts.contains(&h) => registration_hosts.push(h),
                _ => return Err(fail(&path, format!("{host:?} is not one of server.hosts"))),
            }
        }
        let max_per_ip_per_hour = in_range(self.registration.max_per_ip_per_hour, 0, 1_000_000)
            .map_err(|why| fail("registration.max_per_ip_per_hour", why))?;
        let min_password_length = in_range(self.registration.min_password_length, 1, 1024)
            .map_err(|why| fail("registration.min_password_length", why))?;
        let tombstone_days = in_range(self.registration.tombstone_days, 0, 36_500)
            .map_err(|why| fail("registration.tombstone_days", why))?;
        let muc = validate_muc(&self.muc, &hosts, &fail)?;

        Ok(ValidatedConfig {
            source: source.name.clone(),
            server: ServerSettings {
                hosts,
                data_dir,
                node_name,
                log_level: server.log_level,
                hide_ip_in_logs: server.hide_ip_in_logs,
                show_os: server.show_os,
                admins,
            },
            storage,
            c2s: C2sSettings {
                starttls_listen,
                direct_tls_listen,
                require_starttls: c2s.require_starttls,
                max_stanza_bytes,
                pre_auth_max_stanza_bytes,
                session_queue,
                session_queue_bytes,
                session_reply_bytes,
                shaper_bytes_per_sec,
                shaper_burst_bytes,
                max_presence_bytes,
                handshake_timeout: Duration::from_secs(handshake_secs as u64),
                max_auth_failures: c2s.max_auth_failures,
                max_connections,
                max_pending_per_ip,
            },
            tls: TlsSettings {
                reload_interval: Duration::from_secs(reload_secs as u64),
                certificates,
            },
            offline_max_per_user,
            resources_max_per_user,
            roster_max_items,
            auth_backends,
            ldap,
            shared_groups,
            registration: RegistrationSettings {
                hosts: registration_hosts,
                max_per_ip_per_hour: max_per_ip_per_hour as u32,
                min_password_length,
                tombstone: Duration::from_secs(tombstone_days as u64 * 24 * 3600),
            },
            muc,
        })
    }
}

/// Checks `[muc]`: one service domain per host, none of them a host itself.
fn validate_muc(
    m: &MucSection,
    hosts: &[String],
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<MucSettings, ConfigError> {
    let mut services = Vec::new();
    if m.enabled {
        if hosts.len() > 1 && !m.domain.contains("{host}") {
            return Err(fail(
                "muc.domain",
                "with several hosts the domain must contain {host}".into(),
            ));
        }
        for host in hosts {
            let domain = normalise_domain(&m.domain.replace("{host}", host))
                .map_err(|why| fail("muc.domain", format!("invalid domain: {why}")))?;
            if hosts.contains(&domain) {
                return Err(fail(
                    "muc.domain",
                    format!("{domain:?} is a host, not a subdomain"),
                ));
            }
            services.push((host.clone(), domain));
        }
    }
    Ok(MucSettings {
        services,
        creation: m.creation,
        max_rooms_per_user: in_range(m.max_rooms_per_user, 0, 1 << 20)
            .map_err(|why| fail("muc.max_rooms_per_user", why))?,
        max_occupants: in_range(m.max_occupants, 1, 100_000)
            .map_err(|why| fail("muc.max_occupants", why))?,
        max_history: in_range(m.max_history, 0, 10_000)
            .map_err(|why| fail("muc.max_history", why))?,
        max_history_bytes: in_range(m.max_history_bytes, 0, 1 << 30)
            .map_err(|why| fail("muc.max_history_bytes", why))?,
        messages_per_second: in_range(m.messages_per_second, 0, 1_000_000)
            .map_err(|why| fail("muc.messages_per_second", why))?
            as u32,
    })
}

/// Lowercases and checks a DNS name (ASCII labels; internationalised names in their `xn--` form).
pub fn normalise_domain(input: &str) -> Result<String, &'static str> {
    let d = input
        .trim()
        .strip_suffix('.')
        .unwrap_or(input.trim())
        .to_ascii_lowercase();
    if d.is_empty() {
        return Err("empty");
    }
    if d.len() > 253 {
        return Err("longer than 253 characters");
    }
    if !d.is_ascii() {
        return Err("use the ASCII (xn--) form of internationalised names");
    }
    for label in d.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("only letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label may not start or end with '-'");
        }
    }
    Ok(d)
}

fn in_range(v: u64, min: usize, max: usize) -> Result<usize, String> {
    match usize::try_from(v) {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ if min == 0 => Err(format!("{v} is out of range (at most {max})")),
        _ => Err(format!("{v} is out of range ({min} to {max})")),
    }
}

/// The host name (so several nodes sharing a database keep their session records apart).
fn default_node_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "xmppd".into())
}

/// `c2s.starttls_listen[1]` becomes `c2s.starttls_listen`: the line already says which element,
/// while `tls.certificate[0].domain` keeps its index since the key follows it.
fn trim_index(path: &str) -> &str {
    match path
        .strip_suffix(']')
        .and_then(|p| p.rfind('[').map(|i| &path[..i]))
    {
        Some(base) => base,
        None => path,
    }
}

/// Maps key paths to source positions, from a span-keeping parse of the document.
type Entry = (String, Range<usize>, Range<usize>, bool);

struct Locator<'a> {
    text: &'a str,
    /// (key path, span of the key, span of the value, is a scalar list element); list elements
    /// have no key of their own.
    entries: Vec<Entry>,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str) -> Self {
        // Recoverable parsing still locates the keys before a syntax error.
        let (root, _errors) = DeTable::parse_recoverable(text);
        let mut entries = Vec::new();
        walk_table(root.get_ref(), "", &mut entries);
        Locator { text, entries }
    }

    fn line_of_offset(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// Line of `path`, or of its closest ancestor present in the file (a default value has none).
    fn line_of_key(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some((_, key, _, _)) = self.entries.iter().find(|e| e.0 == path) {
                return Some(self.line_of_offset(key.start));
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }

    /// `path` as shown to the reader: an index into a list of scalars is dropped (the line says
    /// which element), an index selecting a table is kept.
    fn display_path<'p>(&self, path: &'p str) -> &'p str {
        match self.entries.iter().find(|e| e.0 == path) {
            Some(e) if e.3 => trim_index(path),
            _ => path,
        }
    }

    /// The innermost entry whose key or value covers `offset`.
    fn path_at(&self, offset: usize) -> Option<&str> {
        let covers = |r: &Range<usize>| r.start <= offset && offset < r.end.max(r.start + 1);
        self.entries
            .iter()
            .filter_map(|(p, k, v, _)| {
                let best = [k, v]
                    .into_iter()
                    .filter(|r| covers(r))
                    .map(Range::len)
                    .min()?;
                Some((p, best))
            })
            // On equal spans the later entry is the deeper one (an array and its first table).
            .rev()
            .min_by_key(|(_, len)| *len)
            .map(|(p, _)| p.as_str())
    }
}

fn walk_table(table: &DeTable<'_>, prefix: &str, out: &mut Vec<Entry>) {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        out.push((path.clone(), key.span(), value.span(), false));
        walk_value(value.get_ref(), &path, out);
    }
}

fn walk_value(value: &DeValue<'_>, path: &str, out: &mut Vec<Entry>) {
    match value {
        DeValue::Table(t) => walk_table(t, path, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                let scalar = !matches!(item.get_ref(), DeValue::Table(_) | DeValue::Array(_));
                out.push((item_path.clone(), item.span(), item.span(), scalar));
                walk_value(item.get_ref(), &item_path, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<ValidatedConfig, ConfigError> {
        Source::new("t.toml", text, PathBuf::from("/etc/xmppd")).load()
    }

    fn err(text: &str) -> ConfigError {
        load(text).expect_err("config should be rejected")
    }

    #[test]
    fn muc_section_gives_one_service_per_host() {
        let c = load("[server]\nhosts = [\"a.org\", \"b.org\"]\n").unwrap();
        let expected = [("a.org", "conference.a.org"), ("b.org", "conference.b.org")];
        let got: Vec<(&str, &str)> = c
            .muc
            .services
            .iter()
            .map(|(h, d)| (h.as_str(), d.as_str()))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(c.muc.creation, MucCreation::All);
        let c = load("[muc]\ndomain = \"Chat.Example.org\"\ncreation = \"admins\"\n").unwrap();
        assert_eq!(c.muc.services[0].1, "chat.example.org");
        assert_eq!(c.muc.creation, MucCreation::Admins);
        assert!(load("[muc]\nenabled = false\n")
            .unwrap()
            .muc
            .services
            .is_empty());
        let e = err("[server]\nhosts = [\"a.org\", \"b.org\"]\n[muc]\ndomain = \"chat.org\"\n");
        assert_eq!((e.key.as_deref(), e.line), (Some("muc.domain"), Some(4)));
        let e = err("[muc]\nmax_occupants = 0\n");
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("muc.max_occupants"), Some(2))
        );
        assert_eq!(
            err("[muc]\ndomain = \"localhost\"\n").key.as_deref(),
            Some("muc.domain")
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.server.hosts, vec!["localhost".to_string()]);
        assert_eq!(c.server.data_dir, PathBuf::from("/etc/xmppd/data"));
        assert_eq!(
            c.storage.sqlite_path,
            PathBuf::from("/etc/xmppd/data/xmppd.sqlite")
        );
        assert_eq!(c.server.log_level, LogLevel::Info);
        assert!(!c.server.hide_ip_in_logs && !c.server.show_os);
        assert!(!c.server.node_name.is_empty());
        assert_eq!(
            c.c2s.starttls_listen,
            vec!["0.0.0.0:5222".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            c.c2s.direct_tls_listen,
            vec!["0.0.0.0:5223".parse::<SocketAddr>().unwrap()]
        );
        assert!(c.c2s.require_starttls);
        assert_eq!(c.c2s.max_stanza_bytes, 262_144);
        assert_eq!(c.c2s.pre_auth_max_stanza_bytes, 8192);
        assert_eq!(c.c2s.session_queue, 512);
        assert_eq!(c.c2s.session_queue_bytes, 1 << 20);
        assert_eq!(c.c2s.session_reply_bytes, 4 << 20);
        assert_eq!(c.c2s.shaper_bytes_per_sec, 65_536);
        assert_eq!(c.c2s.shaper_burst_bytes, 524_288);
        assert_eq!(c.c2s.max_presence_bytes, 16_384);
        assert_eq!(c.muc.max_history_bytes, 262_144);
        assert_eq!(c.c2s.handshake_timeout, Duration::from_secs(30));
        assert_eq!(c.c2s.max_auth_failures, 3);
        assert_eq!(c.tls.reload_interval, Duration::from_secs(60));
        assert!(c.tls.certificates.is_empty());
        assert_eq!(c.offline_max_per_user, 1000);
        assert_eq!(c.resources_max_per_user, 16);
        assert_eq!(c.roster_max_items, 5000);
    }

    #[test]
    fn builtin_resolves_against_cwd() {
        let c = Source::builtin(PathBuf::from("/srv/x")).load().unwrap();
        assert_eq!(c.server.data_dir, PathBuf::from("/srv/x/data"));
        assert_eq!(c.source, BUILTIN_NAME);
    }

    #[test]
    fn hosts_are_lowercased_and_checked() {
        let c = load("[server]\nhosts = [\"Example.ORG\", \"chat.example.org.\"]\n").unwrap();
        assert_eq!(c.server.hosts, vec!["example.org", "chat.example.org"]);

        let e = err("[server]\nhosts = [\n  \"a.org\",\n  \"A.org\",\n]\n");
        assert_eq!(e.line, Some(4));
        assert_eq!(e.key.as_deref(), Some("server.hosts"));
        assert!(e.message.contains("duplicate"), "{e}");

        let e = err("\n[server]\nhosts = [\"bad domain\"]\n");
        assert_eq!(
            e.to_string(),
            format!("t.toml:3: server.hosts: {}", e.message)
        );
        assert!(e.message.contains("bad domain"));

        let e = err("[server]\nhosts = []\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("server.hosts")));

        for bad in ["-a.org", "a..org", "ä.org", ""] {
            assert!(normalise_domain(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bad_listen_address_names_key_and_line() {
        let text = "# c\n[c2s]\nrequire_starttls = false\nstarttls_listen = [\"0.0.0.0:99999\"]\n";
        let e = err(text);
        assert_eq!(
            e.to_string(),
            "t.toml:4: c2s.starttls_listen: invalid socket address \"0.0.0.0:99999\" \
             (expected IP:PORT)"
        );
    }

    #[test]
    fn listen_addresses_parse_and_clash() {
        let c = load("[c2s]\nstarttls_listen = [\"[::]:5222\", \"127.0.0.1:0\"]\n").unwrap();
        assert_eq!(
            c.c2s.starttls_listen[0],
            "[::]:5222".parse::<SocketAddr>().unwrap()
        );

        let e = err("[c2s]\nstarttls_listen = [\"0.0.0.0:5223\"]\n");
        assert_eq!(e.key.as_deref(), Some("c2s.direct_tls_listen"));
        assert!(e.message.contains("listed twice"), "{e}");
        // The clashing default has no line of its own: the error points at its section.
        assert_eq!(e.line, Some(1));

        let e = err("[c2s]\nstarttls_listen = []\ndirect_tls_listen = []\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("c2s.starttls_listen"))
        );
    }

    #[test]
    fn numeric_limits_name_their_key() {
        let cases = [
            ("[c2s]\nmax_stanza_bytes = 9999\n", "c2s.max_stanza_bytes"),
            (
                "[c2s]\npre_auth_max_stanza_bytes = 100\n",
                "c2s.pre_auth_max_stanza_bytes",
            ),
            ("[c2s]\nsession_queue = 0\n", "c2s.session_queue"),
            (
                "[c2s]\nsession_queue_bytes = 100000\n",
                "c2s.session_queue_bytes",
            ),
            (
                "[c2s]\nsession_reply_bytes = 2000000000\n",
                "c2s.session_reply_bytes",
            ),
            (
                "[c2s]\nshaper_bytes_per_sec = 100\n",
                "c2s.shaper_bytes_per_sec",
            ),
            (
                "[c2s]\nshaper_burst_bytes = 2000000000\n",
                "c2s.shaper_burst_bytes",
            ),
            (
                "[c2s]\nmax_presence_bytes = 1000\n",
                "c2s.max_presence_bytes",
            ),
            (
                "[muc]\nmax_history_bytes = 2000000000\n",
                "muc.max_history_bytes",
            ),
            (
                "[c2s]\nhandshake_timeout_secs = 0\n",
                "c2s.handshake_timeout_secs",
            ),
            ("[c2s]\nmax_auth_failures = 0\n", "c2s.max_auth_failures"),
            ("[c2s]\nmax_connections = 0\n", "c2s.max_connections"),
            ("[c2s]\nmax_pending_per_ip = 0\n", "c2s.max_pending_per_ip"),
            (
                "[tls]\nreload_interval_secs = 0\n",
                "tls.reload_interval_secs",
            ),
            ("[resources]\nmax_per_user = 0\n", "resources.max_per_user"),
            ("[offline]\nmax_per_user = -1\n", "offline.max_per_user"),
        ];
        for (text, key) in cases {
            let e = err(text);
            assert_eq!(
                (e.line, e.key.as_deref()),
                (Some(2), Some(key)),
                "{text}: {e}"
            );
        }
        // The queue must hold the largest stanza; raising that alone names the queue.
        let e = err("[c2s]\nmax_stanza_bytes = 2000000\n");
        assert_eq!(e.key.as_deref(), Some("c2s.session_queue_bytes"), "{e}");
        assert!(e.message.contains("c2s.max_stanza_bytes"), "{e}");
        let c = load("[c2s]\nshaper_bytes_per_sec = 0\nsession_reply_bytes = 0\n").unwrap();
        assert_eq!(
            (c.c2s.shaper_bytes_per_sec, c.c2s.session_reply_bytes),
            (0, 0)
        );
        let c = load("[offline]\nmax_per_user = 0\n").unwrap();
        assert_eq!(c.offline_max_per_user, 0);
    }

    #[test]
    fn pre_auth_limit_may_not_exceed_the_post_auth_one() {
        let e = err("[c2s]\nmax_stanza_bytes = 10000\npre_auth_max_stanza_bytes = 20000\n");
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        let e = err("[server]\nhosts = [\"a.org\"]\n\n[c2s]\nrequire_startls = false\n");
        assert_eq!(e.line, Some(5));
        assert_eq!(e.key.as_deref(), Some("c2s.require_startls"));
        assert!(e.message.contains("unknown key"), "{e}");

        let e = err("[server]\nhosts = [\"a.org\"]\n[serverr]\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("serverr")));

        let e =
            err("[[tls.certificate]]\ndomain = \"localhost\"\ncert = \"c\"\nkey = \"k\"\npw = 1\n");
        assert_eq!(e.line, Some(5));
        assert_eq!(e.key.as_deref(), Some("tls.certificate[0].pw"));
    }

    #[test]
    fn wrong_types_and_enums_are_rejected_with_their_line() {
        let e = err("[server]\n\nlog_level = \"loud\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("server.log_level"))
        );
        let e = err("[c2s]\nrequire_starttls = \"yes\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("c2s.require_starttls"))
        );
        let e = err("[storage]\nbackend = \"postgres\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("storage.backend"))
        );
    }

    #[test]
    fn other_spellings_are_located_too() {
        // Dotted keys and inline tables name the same paths as sections do.
        let e = err("# x\nc2s.max_stanza_bytes = 1\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("c2s.max_stanza_bytes"))
        );
        let e = err("\nserver = { hosts = [\"a.org\"], colour = 1 }\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("server.colour")));
        // A list element of the wrong type is named by its list, on the element's line.
        let e = err("[server]\nhosts = [\n\"a.org\",\n1,\n]\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("server.hosts")));
        // A section given as a scalar.
        let e = err("\nserver = 5\n");
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("server")));
        // Overflowing the integer type.
        let e = err("[c2s]\nmax_auth_failures = 99999999999\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("c2s.max_auth_failures"))
        );
    }

    #[test]
    fn syntax_errors_are_one_line_with_a_line_number() {
        let e = err("[server]\nhosts = [\"a.org\"\n[c2s]\n");
        assert!(e.line.is_some());
        let shown = e.to_string();
        assert!(!shown.contains('\n'), "{shown}");
        assert!(shown.starts_with("t.toml:"), "{shown}");
    }

    #[test]
    fn line_breaks_quoted_from_the_document_are_escaped() {
        for (text, expect) in [
            (
                "[auth.hosts]\n\"a\\nb\" = \"ldap\"\n",
                "t.toml:2: auth.hosts.a\\nb: ",
            ),
            ("[server]\n\"x\\ry\" = 1\n", "t.toml:2: server.x\\ry: "),
            (
                "[server]\n\"x\\u2028y\" = 1\n",
                "t.toml:2: server.x\\u{2028}y: ",
            ),
        ] {
            let shown = err(text).to_string();
            assert!(shown.starts_with(expect), "{shown}");
            assert!(!shown.contains(['\n', '\r', '\u{2028}']), "{shown:?}");
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_file_directory() {
        let c =
            load("[server]\ndata_dir = \"var\"\n[storage]\nsqlite_path = \"db/x.db\"\n").unwrap();
        assert_eq!(c.server.data_dir, PathBuf::from("/etc/xmppd/var"));
        assert_eq!(
            c.storage.sqlite_path,
            PathBuf::from("/etc/xmppd/var/db/x.db")
        );
        let c = load("[server]\ndata_dir = \"/abs\"\n[storage]\nsqlite_path = \"/db.sqlite\"\n")
            .unwrap();
        assert_eq!(c.server.data_dir, PathBuf::from("/abs"));
        assert_eq!(c.storage.sqlite_path, PathBuf::from("/db.sqlite"));
    }

    #[test]
    fn read_resolves_against_the_file_and_names_it() {
        let dir = scratch_dir("read");
        let file = dir.join("conf.toml");
        std::fs::write(&file, "[server]\ndata_dir = \"d\"\n").unwrap();
        let c = Source::read(&file).unwrap().load().unwrap();
        assert_eq!(c.server.data_dir, dir.join("d"));
        assert_eq!(c.source, file.display().to_string());

        let missing = Source::read(&dir.join("nope.toml")).unwrap_err();
        assert!(missing.to_string().contains("nope.toml"), "{missing}");
    }

    #[test]
    fn certificates_resolve_and_must_exist_and_match_a_host() {
        let dir = scratch_dir("certs");
        std::fs::create_dir_all(dir.join("tls")).unwrap();
        std::fs::write(dir.join("tls/a.pem"), "x").unwrap();
        std::fs::write(dir.join("tls/a.key"), "x").unwrap();
        let src = |extra: &str| {
            let text = format!(
                "[server]\nhosts = [\"a.org\"]\n[[tls.certificate]]\ndomain = \"A.org\"\n\
                 cert = \"tls/a.pem\"\nkey = \"tls/a.key\"\n{extra}"
            );
            Source::new("t.toml", text, dir.clone())
        };
        let c = src("").load().unwrap();
        assert_eq!(
            c.tls.certificates,
            vec![CertificateSettings {
                domain: "a.org".into(),
                cert: dir.join("tls/a.pem"),
                key: dir.join("tls/a.key"),
            }]
        );

        let e = src("[[tls.certificate]]\ndomain = \"b.org\"\ncert = \"x\"\nkey = \"y\"\n")
            .load()
            .unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(8), Some("tls.certificate[1].domain"))
        );

        let e = src("[[tls.certificate]]\ndomain = \"a.org\"\ncert = \"x\"\nkey = \"y\"\n")
            .load()
            .unwrap_err();
        assert!(e.message.contains("second certificate"), "{e}");

        let text = "[[tls.certificate]]\ndomain = \"localhost\"\ncert = \"tls/a.pem\"\n\
                    key = \"tls/missing.key\"\n";
        let e = Source::new("t.toml", text, dir.clone()).load().unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(4), Some("tls.certificate[0].key"))
        );
        assert!(e.message.contains("file not found"), "{e}");

        let e = err("[[tls.certificate]]\ndomain = \"localhost\"\ncert = \"c\"\n");
        assert!(e.message.contains("missing field `key`"), "{e}");
        assert_eq!(e.key.as_deref(), Some("tls.certificate[0]"));
    }

    #[test]
    fn registration_is_off_by_default_and_hosts_must_be_served() {
        let c = load("").unwrap();
        assert!(c.registration.hosts.is_empty());
        assert_eq!(c.registration.max_per_ip_per_hour, 5);
        assert_eq!(c.registration.min_password_length, 8);
        assert_eq!(c.registration.tombstone, Duration::from_secs(30 * 86_400));
        let c = load("[registration]\nhosts = [\"LocalHost\"]\nmax_per_ip_per_hour = 0\ntombstone_days = 0\n").unwrap();
        assert_eq!(c.registration.hosts, vec!["localhost"]);
        assert_eq!(c.registration.max_per_ip_per_hour, 0);
        assert_eq!(c.registration.tombstone, Duration::ZERO);
        let e = err("[registration]\ntombstone_days = 100000\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("registration.tombstone_days"))
        );
        let e = err("[registration]\nhosts = [\"other.org\"]\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("registration.hosts"))
        );
        let e = err("[registration]\nmin_password_length = 0\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("registration.min_password_length"))
        );
    }

    #[test]
    fn example_file_is_valid() {
        let text = include_str!("../../../examples/xmppd.toml");
        let c = Source::new("examples/xmppd.toml", text, PathBuf::from("/x")).load();
        let c = c.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.source, "examples/xmppd.toml");
    }

    /// A fresh directory under the system temp dir (removed first if a previous run left it).
    fn scratch_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("xmppd-config-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
