//! `[storage]`: the section, its checked form, and its checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::{in_range, ConfigError};

/// `[storage]`: where accounts, rosters, offline messages and the services' data live.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    pub backend: StorageBackend,
    pub sqlite_path: PathBuf,
    /// The database server's URL (PostgreSQL or MariaDB), without its password.
    pub url: Option<String>,
    /// A file holding the database URL (which may hold the password).
    pub url_file: Option<PathBuf>,
    /// A file holding the database password.
    pub password_file: Option<PathBuf>,
    pub pool_size: u64,
    pub connect_timeout_secs: u64,
    pub pool_wait_secs: u64,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            backend: StorageBackend::Sqlite,
            sqlite_path: PathBuf::from("xmppd.sqlite"),
            url: None,
            url_file: None,
            password_file: None,
            pool_size: 16,
            connect_timeout_secs: 5,
            pool_wait_secs: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    #[default]
    Sqlite,
    Postgres,
    /// MariaDB (`"mysql"`, or `"mariadb"`).
    #[serde(alias = "mariadb")]
    Mysql,
}

impl StorageBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageBackend::Sqlite => "sqlite",
            StorageBackend::Postgres => "postgres",
            StorageBackend::Mysql => "mysql",
        }
    }

    /// The URL schemes this engine's `storage.url` takes (none: a file, not a server).
    fn url_schemes(self) -> &'static [&'static str] {
        match self {
            StorageBackend::Sqlite => &[],
            StorageBackend::Postgres => &["postgres://", "postgresql://"],
            StorageBackend::Mysql => &["mysql://", "mariadb://"],
        }
    }
}

/// The checked `[storage]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSettings {
    pub backend: StorageBackend,
    /// Resolved against `data_dir`. With PostgreSQL, the file of the services that keep their
    /// data in SQLite still.
    pub sqlite_path: PathBuf,
    /// With a database server (`backend = "postgres"` or `"mysql"`).
    pub server: Option<DatabaseSettings>,
}

/// How to reach the database server. The password is read by the binary at start-up, from
/// `password_file`, else the `XMPPD_STORAGE_PASSWORD` environment variable, else the URL of
/// `url_file`; it is never part of the configuration itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSettings {
    pub url: DatabaseUrl,
    /// Resolved against the configuration file's directory.
    pub password_file: Option<PathBuf>,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub pool_wait: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `storage.url`: checked to hold no password.
    Inline(String),
    /// `storage.url_file`, resolved against the configuration file's directory.
    File(PathBuf),
}

/// The environment variable the binary takes the database password from.
pub const PASSWORD_ENV: &str = "XMPPD_STORAGE_PASSWORD";

/// Whether a `postgres://` or `mysql://` URL carries a password (`user:password@`, or `password=` in its
/// query).
pub fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let in_userinfo = authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    let in_query = rest
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("password=")));
    in_userinfo || in_query
}

impl StorageSection {
    pub(crate) fn validate(
        self,
        base_dir: &Path,
        data_dir: &Path,
        fail: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<StorageSettings, ConfigError> {
        if self.sqlite_path.as_os_str().is_empty() {
            return Err(fail("storage.sqlite_path", "must not be empty".into()));
        }
        let server = match self.backend {
            StorageBackend::Sqlite => {
                for (key, set) in [
                    ("storage.url", self.url.is_some()),
                    ("storage.url_file", self.url_file.is_some()),
                    ("storage.password_file", self.password_file.is_some()),
                ] {
                    if set {
                        let why = "only with backend = \"postgres\" or \"mysql\"".into();
                        return Err(fail(key, why));
                    }
                }
                None
            }
            StorageBackend::Postgres | StorageBackend::Mysql => Some(self.server(base_dir, fail)?),
        };
        Ok(StorageSettings {
            backend: self.backend,
            sqlite_path: data_dir.join(&self.sqlite_path),
            server,
        })
    }

    fn server(
        &self,
        base_dir: &Path,
        fail: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<DatabaseSettings, ConfigError> {
        let backend = self.backend.as_str();
        let existing = |key: &str, p: &PathBuf| -> Result<PathBuf, ConfigError> {
            let full = base_dir.join(p);
            if p.as_os_str().is_empty() || !full.is_file() {
                return Err(fail(key, format!("file not found: {}", full.display())));
            }
            Ok(full)
        };
        let url = match (&self.url, &self.url_file) {
            (Some(_), Some(_)) => {
                let why = "set url or url_file, not both".into();
                return Err(fail("storage.url_file", why));
            }
            (None, None) => {
                let why = format!("backend = \"{backend}\" needs url (or url_file)");
                return Err(fail("storage.backend", why));
            }
            (Some(url), None) => {
                let url = url.trim();
                let schemes = self.backend.url_schemes();
                if !schemes.iter().any(|s| url.starts_with(s)) {
                    let why = format!("must be a {} URL", schemes.join(" or "));
                    return Err(fail("storage.url", why));
                }
                if url_has_password(url) {
                    let why = format!(
                        "must not contain the password: put it in storage.password_file or \
                         the {PASSWORD_ENV} environment variable (or the whole URL in \
                         storage.url_file)"
                    );
                    return Err(fail("storage.url", why));
                }
                DatabaseUrl::Inline(url.to_owned())
            }
            (None, Some(f)) => DatabaseUrl::File(existing("storage.url_file", f)?),
        };
        let password_file = match &self.password_file {
            Some(f) => Some(existing("storage.password_file", f)?),
            None => None,
        };
        let pool_size =
            in_range(self.pool_size, 1, 1024).map_err(|why| fail("storage.pool_size", why))?;
        let connect = in_range(self.connect_timeout_secs, 1, 300)
            .map_err(|why| fail("storage.connect_timeout_secs", why))?;
        let wait = in_range(self.pool_wait_secs, 1, 300)
            .map_err(|why| fail("storage.pool_wait_secs", why))?;
        Ok(DatabaseSettings {
            url,
            password_file,
            pool_size,
            connect_timeout: Duration::from_secs(connect as u64),
            pool_wait: Duration::from_secs(wait as u64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Source};

    fn check(storage: &str) -> Result<StorageSettings, ConfigError> {
        let text = format!("[server]\nhosts = [\"example.org\"]\n[storage]\n{storage}");
        let source = Source::new("test.toml", text, PathBuf::from("/nonexistent"));
        Config::parse(&source)?.validate(&source).map(|c| c.storage)
    }

    #[test]
    fn postgres_needs_a_url_without_its_password() {
        let ok =
            check("backend = \"postgres\"\nurl = \"postgres://xmppd@db/xmppd\"\npool_size = 4\n")
                .unwrap();
        let pg = ok.server.unwrap();
        assert_eq!(
            pg.url,
            DatabaseUrl::Inline("postgres://xmppd@db/xmppd".into())
        );
        assert_eq!(pg.pool_size, 4);
        assert_eq!(pg.connect_timeout, Duration::from_secs(5));

        for (text, key, words) in [
            ("backend = \"postgres\"\n", "storage.backend", "needs url"),
            (
                "backend = \"postgres\"\nurl = \"postgres://xmppd:s3cret@db/x\"\n",
                "storage.url",
                "must not contain the password",
            ),
            (
                "backend = \"postgres\"\nurl = \"postgres://xmppd@db/x?password=s3cret\"\n",
                "storage.url",
                "must not contain the password",
            ),
            (
                "backend = \"postgres\"\nurl = \"mysql://db/x\"\n",
                "storage.url",
                "postgres://",
            ),
            (
                "backend = \"postgres\"\nurl = \"postgres://db/x\"\npool_size = 0\n",
                "storage.pool_size",
                "out of range",
            ),
            (
                "backend = \"postgres\"\nurl_file = \"missing\"\n",
                "storage.url_file",
                "file not found",
            ),
            (
                "url = \"postgres://db/x\"\n",
                "storage.url",
                "only with backend",
            ),
            (
                "backend = \"oracle\"\n",
                "storage.backend",
                "unknown variant",
            ),
            ("backend = \"mysql\"\n", "storage.backend", "needs url"),
            (
                "backend = \"mariadb\"\nurl = \"mysql://xmppd:s3cret@db/x\"\n",
                "storage.url",
                "must not contain the password",
            ),
            (
                "backend = \"mysql\"\nurl = \"postgres://db/x\"\n",
                "storage.url",
                "mysql:// or mariadb://",
            ),
        ] {
            let err = check(text).unwrap_err();
            assert_eq!(err.key.as_deref(), Some(key), "{text}: {err}");
            let shown = err.to_string();
            assert!(shown.contains(words), "{text}: {shown}");
            assert!(!shown.contains("s3cret"), "{shown}");
            assert_eq!(shown.lines().count(), 1, "{shown}");
        }
    }
}

#[cfg(test)]
mod mysql_tests {
    use super::*;
    use crate::{Config, Source};

    fn check(storage: &str) -> Result<StorageSettings, ConfigError> {
        let text = format!("[server]\nhosts = [\"example.org\"]\n[storage]\n{storage}");
        let source = Source::new("test.toml", text, PathBuf::from("/nonexistent"));
        Config::parse(&source)?.validate(&source).map(|c| c.storage)
    }

    #[test]
    fn mariadb_is_an_alias_of_mysql_with_the_same_settings() {
        for backend in ["mysql", "mariadb"] {
            let ok = check(&format!(
                "backend = \"{backend}\"\nurl = \"mariadb://xmppd@db/xmppd?require_ssl=true\"\n"
            ))
            .unwrap();
            assert_eq!(ok.backend, StorageBackend::Mysql);
            assert_eq!(ok.backend.as_str(), "mysql");
            let server = ok.server.unwrap();
            assert_eq!(
                server.url,
                DatabaseUrl::Inline("mariadb://xmppd@db/xmppd?require_ssl=true".into())
            );
            assert_eq!(server.pool_wait, Duration::from_secs(5));
        }
    }
}
