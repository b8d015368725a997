//! `[upload]`: HTTP file upload (XEP-0363) on `upload.HOST`, served by the HTTP layer or
//! handed to an external upload service.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::muc::service_domains;
use crate::{in_range, ConfigError};

/// `[upload]` as written. Off by default; needs `[http]` unless an external service stores
/// the files.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadSection {
    pub enabled: bool,
    /// The service domain; `{host}` stands for each served host.
    pub domain: String,
    /// Where clients reach the HTTP layer's `/upload/` path; empty: the first listener's
    /// address (HTTPS first) with the account's host name.
    pub public_url: String,
    /// Where files are kept; relative to `server.data_dir`.
    pub dir: PathBuf,
    pub max_file_bytes: u64,
    /// Bytes one account may keep at once; 0: no quota.
    pub quota_bytes_per_user: u64,
    /// Bytes all accounts together may keep; 0: no cap.
    pub max_total_bytes: u64,
    /// Files are deleted this many days after their upload; 0 keeps them. Fractions allowed.
    pub expire_days: f64,
    pub expire_interval_secs: u64,
    /// How long a slot's PUT URL stays valid.
    pub slot_lifetime_secs: u64,
    /// Longest wait for the next part of an upload's body.
    pub idle_timeout_secs: u64,
    /// The key signing PUT URLs; empty: generated once and stored.
    pub secret: String,
    /// Origins whose pages may read and upload files (CORS); `*` allows any.
    pub cors_origins: Vec<String>,
    /// An external upload service's base URL; files then never reach this server.
    pub external_url: String,
    /// The secret shared with the external service.
    pub external_secret: String,
}

impl Default for UploadSection {
    fn default() -> Self {
        UploadSection {
            enabled: false,
            domain: "upload.{host}".into(),
            public_url: String::new(),
            dir: PathBuf::from("upload"),
            max_file_bytes: 100 << 20,
            quota_bytes_per_user: 1 << 30,
            max_total_bytes: 0,
            expire_days: 30.0,
            expire_interval_secs: 3600,
            slot_lifetime_secs: 300,
            idle_timeout_secs: 60,
            secret: String::new(),
            cors_origins: Vec::new(),
            external_url: String::new(),
            external_secret: String::new(),
        }
    }
}

/// Where slots are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadBackend {
    /// In `dir`, served by the HTTP layer under `/upload/`.
    Local {
        dir: PathBuf,
        /// Without a final `/`; `None`: derived from the listeners.
        public_url: Option<String>,
    },
    /// By an external service: `url` ends in `/`.
    External { url: String, secret: String },
}

/// The checked `[upload]` section; `None` in [`crate::ValidatedConfig`] when it is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSettings {
    /// (host, service domain) pairs.
    pub services: Vec<(String, String)>,
    pub backend: UploadBackend,
    pub max_file_bytes: u64,
    pub quota_bytes_per_user: Option<u64>,
    pub max_total_bytes: Option<u64>,
    /// `None`: files are kept.
    pub expire_after: Option<Duration>,
    pub expire_interval: Duration,
    pub slot_lifetime: Duration,
    pub idle_timeout: Duration,
    /// `None`: generated and stored.
    pub secret: Option<String>,
    /// Lowercased, without a final `/`.
    pub cors_origins: Vec<String>,
}

/// Checks an `http(s)://` URL under `key`; returns it without a final `/`.
fn base_url(
    key: &str,
    value: &str,
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<String, ConfigError> {
    let value = value.trim();
    let rest = ["http://", "https://"]
        .iter()
        .find_map(|s| value.strip_prefix(s));
    match rest {
        Some(rest)
            if !rest.is_empty()
                && !rest.starts_with('/')
                && !value.contains(['?', '#'])
                && !value.contains(char::is_whitespace) =>
        {
            Ok(value.trim_end_matches('/').to_owned())
        }
        _ => Err(fail(
            key,
            format!("{value:?} is not an http:// or https:// URL without query"),
        )),
    }
}

/// Checks one origin (`scheme://host[:port]` or `*`), lowercased and without a final `/`.
pub(crate) fn origin(value: &str) -> Option<String> {
    let origin = value.trim().trim_end_matches('/').to_ascii_lowercase();
    let valid = origin == "*"
        || ["http://", "https://"].iter().any(|scheme| {
            origin
                .strip_prefix(scheme)
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
        });
    valid.then_some(origin)
}

impl UploadSection {
    pub(crate) fn validate(
        &self,
        hosts: &[String],
        data_dir: &Path,
        http_enabled: bool,
        fail: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<Option<UploadSettings>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let services = service_domains(&self.domain, hosts, "upload.domain", fail)?;
        let backend = if !self.external_url.trim().is_empty() {
            let url = base_url("upload.external_url", &self.external_url, fail)? + "/";
            let secret = self.external_secret.trim();
            if secret.is_empty() {
                let why = "an external upload service needs the secret it shares with xmppd";
                return Err(fail("upload.external_secret", why.into()));
            }
            UploadBackend::External {
                url,
                secret: secret.to_owned(),
            }
        } else {
            if !http_enabled {
                let why = "files are served over HTTP: set http.enabled = true, \
                           or upload.external_url for an external upload service";
                return Err(fail("upload.enabled", why.into()));
            }
            if self.dir.as_os_str().is_empty() {
                return Err(fail("upload.dir", "must not be empty".into()));
            }
            let public_url = match self.public_url.trim() {
                "" => None,
                url => Some(base_url("upload.public_url", url, fail)?),
            };
            UploadBackend::Local {
                dir: data_dir.join(&self.dir),
                public_url,
            }
        };
        let days = self.expire_days;
        if !days.is_finite() || !(0.0..=36_500.0).contains(&days) {
            return Err(fail(
                "upload.expire_days",
                format!("{days} is out of range (0 to 36500)"),
            ));
        }
        let secs = |key: &str, v: u64, min: usize, max: usize| {
            in_range(v, min, max)
                .map(|s| Duration::from_secs(s as u64))
                .map_err(|why| fail(key, why))
        };
        let bytes = |key: &str, v: u64| {
            in_range(v, 0, 1 << 50)
                .map(|n| (n > 0).then_some(n as u64))
                .map_err(|why| fail(key, why))
        };
        let max_file_bytes = in_range(self.max_file_bytes, 1, 1 << 50)
            .map_err(|why| fail("upload.max_file_bytes", why))? as u64;
        let mut cors_origins = Vec::with_capacity(self.cors_origins.len());
        for (i, o) in self.cors_origins.iter().enumerate() {
            let Some(o) = origin(o) else {
                let why = format!(
                    "{o:?} is not an origin (scheme://host[:port], e.g. https://chat.example.org, or *)"
                );
                return Err(fail(&format!("upload.cors_origins[{i}]"), why));
            };
            cors_origins.push(o);
        }
        let secret = match self.secret.trim() {
            "" => None,
            s if s.len() < 16 => {
                let why = "too short: use at least 16 characters (or leave it empty to have one generated)";
                return Err(fail("upload.secret", why.into()));
            }
            s => Some(s.to_owned()),
        };
        Ok(Some(UploadSettings {
            services,
            backend,
            max_file_bytes,
            quota_bytes_per_user: bytes("upload.quota_bytes_per_user", self.quota_bytes_per_user)?,
            max_total_bytes: bytes("upload.max_total_bytes", self.max_total_bytes)?,
            // Whole seconds, at least one (as the archive's retention).
            expire_after: (days > 0.0)
                .then(|| Duration::from_secs((days * 86_400.0).round().max(1.0) as u64)),
            expire_interval: secs(
                "upload.expire_interval_secs",
                self.expire_interval_secs,
                1,
                7 * 86_400,
            )?,
            slot_lifetime: secs(
                "upload.slot_lifetime_secs",
                self.slot_lifetime_secs,
                1,
                7 * 86_400,
            )?,
            idle_timeout: secs("upload.idle_timeout_secs", self.idle_timeout_secs, 1, 3600)?,
            secret,
            cors_origins,
        }))
    }
}
