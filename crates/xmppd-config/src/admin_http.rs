//! `[admin_http]`: the administration listener (the REST API under `/api`, Prometheus
//! metrics on `/metrics`, the web admin under `/admin`).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::http::ParseAddrs;
use crate::{in_range, ConfigError};

/// `[admin_http]` as written. Off unless `enabled`; on loopback by default, since it
/// administers the server (the API needs a token anyway).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminHttpSection {
    pub enabled: bool,
    /// Plain HTTP listeners.
    pub listen: Vec<String>,
    /// The REST API under `/api`.
    pub api: bool,
    /// Prometheus metrics on `/metrics`.
    pub metrics: bool,
    /// The web admin under `/admin`.
    pub webadmin: bool,
    /// A TLS-terminating proxy is in front of every listener and nothing else reaches them:
    /// the web admin's cookie is then marked `Secure`.
    pub behind_tls_proxy: bool,
    /// Bytes of one request's body, at most.
    pub max_body_bytes: u64,
    /// Time a request (its body included) may take to be answered.
    pub request_timeout_secs: u64,
}

impl Default for AdminHttpSection {
    fn default() -> Self {
        AdminHttpSection {
            enabled: false,
            listen: vec!["127.0.0.1:5290".into()],
            api: true,
            metrics: true,
            webadmin: true,
            behind_tls_proxy: false,
            max_body_bytes: 64 * 1024,
            request_timeout_secs: 30,
        }
    }
}

/// The checked `[admin_http]` section; `None` in [`crate::ValidatedConfig`] when it is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminHttpSettings {
    pub listen: Vec<SocketAddr>,
    pub api: bool,
    pub metrics: bool,
    pub webadmin: bool,
    pub behind_tls_proxy: bool,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

impl AdminHttpSection {
    pub(crate) fn validate(
        &self,
        parse_addrs: &mut ParseAddrs<'_>,
        fail: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<Option<AdminHttpSettings>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let listen = parse_addrs("admin_http.listen", &self.listen)?;
        if listen.is_empty() {
            let why = "no listener: set admin_http.listen, or admin_http.enabled = false";
            return Err(fail("admin_http.listen", why.into()));
        }
        Ok(Some(AdminHttpSettings {
            listen,
            api: self.api,
            metrics: self.metrics,
            webadmin: self.webadmin,
            behind_tls_proxy: self.behind_tls_proxy,
            max_body_bytes: in_range(self.max_body_bytes, 1024, 64 << 20)
                .map_err(|why| fail("admin_http.max_body_bytes", why))?,
            request_timeout: Duration::from_secs(
                in_range(self.request_timeout_secs, 1, 3600)
                    .map_err(|why| fail("admin_http.request_timeout_secs", why))?
                    as u64,
            ),
        }))
    }
}
