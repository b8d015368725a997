//! `[acme]`: certificates from an ACME server (RFC 8555) for the served hosts and their
//! service subdomains, obtained with the http-01 challenge.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::{in_range, normalise_domain, ConfigError, Source};

/// `[acme]` as written. Off by default: it needs the hosts' names to reach this server's HTTP
/// listener on port 80 from the ACME server.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AcmeSection {
    pub enabled: bool,
    /// The ACME server's directory URL.
    pub directory_url: String,
    /// Contact URIs of the account, e.g. `mailto:hostmaster@example.org`.
    pub contact: Vec<String>,
    /// The served hosts that get a certificate; empty: every host.
    pub hosts: Vec<String>,
    /// A PEM root for the ACME server's own HTTPS certificate (a private ACME server).
    pub ca_file: Option<PathBuf>,
    /// Where the account and certificates are kept; relative to `server.data_dir`.
    pub dir: PathBuf,
    pub renew_before_days: u64,
    pub check_interval_secs: u64,
    pub retry_interval_secs: u64,
    /// `http-01` or `tls-alpn-01`.
    pub challenge: String,
}

impl Default for AcmeSection {
    fn default() -> Self {
        AcmeSection {
            enabled: false,
            directory_url: String::new(),
            contact: Vec::new(),
            hosts: Vec::new(),
            ca_file: None,
            dir: PathBuf::from("acme"),
            // A third of a 90-day certificate's life, so a failing renewal has weeks of retries.
            renew_before_days: 30,
            check_interval_secs: 12 * 3600,
            retry_interval_secs: 3600,
            challenge: "http-01".into(),
        }
    }
}

/// The checked `[acme]` section; `None` in the settings when disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    pub directory_url: String,
    pub contact: Vec<String>,
    /// The hosts that get a certificate, in `server.hosts` order.
    pub hosts: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub dir: PathBuf,
    pub renew_before: Duration,
    pub check_interval: Duration,
    pub retry_interval: Duration,
    pub challenge: AcmeChallenge,
}

/// How the ACME server checks that this server answers for a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// Over HTTP on port 80, answered by the `[http]` listeners.
    Http01,
    /// A TLS handshake on port 443 with ALPN `acme-tls/1`, answered by the HTTPS and
    /// direct-TLS listeners.
    TlsAlpn01,
}

impl AcmeSection {
    pub(crate) fn validate(
        &self,
        source: &Source,
        hosts: &[String],
        data_dir: &std::path::Path,
        http_enabled: bool,
        fail: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<Option<AcmeSettings>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let challenge = match self.challenge.trim() {
            "http-01" => AcmeChallenge::Http01,
            "tls-alpn-01" => AcmeChallenge::TlsAlpn01,
            other => {
                let why = format!("{other:?} is not http-01 or tls-alpn-01");
                return Err(fail("acme.challenge", why));
            }
        };
        if challenge == AcmeChallenge::Http01 && !http_enabled {
            let why = "the http-01 challenge is answered over HTTP: set http.enabled = true, \
                       or acme.challenge = \"tls-alpn-01\"";
            return Err(fail("acme.enabled", why.into()));
        }
        let url = self.directory_url.trim();
        if !url.starts_with("https://") || url.len() <= "https://".len() || url.contains(' ') {
            let why = format!("{url:?} is not an https:// URL");
            return Err(fail("acme.directory_url", why));
        }
        for (i, c) in self.contact.iter().enumerate() {
            if !c.starts_with("mailto:") || c.contains(char::is_whitespace) {
                let why = format!("{c:?} is not a mailto: URI");
                return Err(fail(&format!("acme.contact[{i}]"), why));
            }
        }
        let mut chosen = Vec::new();
        for (i, h) in self.hosts.iter().enumerate() {
            match normalise_domain(h) {
                Ok(h) if hosts.contains(&h) => chosen.push(h),
                _ => {
                    let why = format!("{h:?} is not one of server.hosts");
                    return Err(fail(&format!("acme.hosts[{i}]"), why));
                }
            }
        }
        let hosts = match chosen.is_empty() {
            true => hosts.to_vec(),
            false => (hosts.iter())
                .filter(|h| chosen.contains(h))
                .cloned()
                .collect(),
        };
        let ca_file = match &self.ca_file {
            Some(f) => {
                let full = source.base_dir.join(f);
                if f.as_os_str().is_empty() || !full.is_file() {
                    let why = format!("file not found: {}", full.display());
                    return Err(fail("acme.ca_file", why));
                }
                Some(full)
            }
            None => None,
        };
        if self.dir.as_os_str().is_empty() {
            return Err(fail("acme.dir", "must not be empty".into()));
        }
        let secs = |key: &str, v: u64, max: usize| {
            in_range(v, 1, max)
                .map(|s| Duration::from_secs(s as u64))
                .map_err(|why| fail(key, why))
        };
        let days = in_range(self.renew_before_days, 1, 365)
            .map_err(|why| fail("acme.renew_before_days", why))?;
        Ok(Some(AcmeSettings {
            directory_url: url.to_owned(),
            contact: self.contact.clone(),
            hosts,
            ca_file,
            dir: data_dir.join(&self.dir),
            renew_before: Duration::from_secs(days as u64 * 86_400),
            check_interval: secs(
                "acme.check_interval_secs",
                self.check_interval_secs,
                7 * 86_400,
            )?,
            retry_interval: secs("acme.retry_interval_secs", self.retry_interval_secs, 86_400)?,
            challenge,
        }))
    }
}
