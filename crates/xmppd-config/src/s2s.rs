//! `[s2s]`: federation with other servers (docs/S2S.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::{in_range, normalise_domain, ConfigError};

/// `[s2s]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S2sSection {
    /// Off unless enabled: federation opens a port to the Internet.
    pub enabled: bool,
    pub listen: Vec<String>,
    pub direct_tls_listen: Vec<String>,
    /// A DNS server, `IP:PORT`; empty: the system's resolver configuration.
    pub resolver: String,
    /// PEM file of the roots trusted for peers' certificates; empty: the system's.
    pub ca_file: PathBuf,
    pub dialback: bool,
    pub require_valid_certificates: bool,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub stanzas_per_sec: u64,
    pub refuse_strangers: bool,
    pub connect_timeout_secs: u64,
    pub handshake_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    /// XEP-0288 bidirectional streams.
    pub bidi: bool,
    /// XEP-0199 pings on silent links; 0: none.
    pub ping_interval_secs: u64,
    pub ping_timeout_secs: u64,
    pub queue_max: u64,
    pub max_inbound: u64,
    pub max_pending_per_ip: u64,
    pub max_outbound: u64,
    pub max_domains_per_stream: u64,
    pub failure_cache_secs: u64,
    pub allow_private_addresses: bool,
    /// Domain → `HOST:PORT` (STARTTLS), instead of DNS.
    pub routes: BTreeMap<String, String>,
}

impl Default for S2sSection {
    fn default() -> Self {
        S2sSection {
            enabled: false,
            listen: vec!["0.0.0.0:5269".into()],
            direct_tls_listen: Vec::new(),
            resolver: String::new(),
            ca_file: PathBuf::new(),
            dialback: true,
            require_valid_certificates: false,
            allow: Vec::new(),
            deny: Vec::new(),
            stanzas_per_sec: 500,
            refuse_strangers: false,
            connect_timeout_secs: 10,
            handshake_timeout_secs: 30,
            idle_timeout_secs: 600,
            bidi: true,
            ping_interval_secs: 300,
            ping_timeout_secs: 60,
            queue_max: 1000,
            max_inbound: 1000,
            max_pending_per_ip: 8,
            max_outbound: 1000,
            max_domains_per_stream: 100,
            failure_cache_secs: 60,
            allow_private_addresses: false,
            routes: BTreeMap::new(),
        }
    }
}

/// The checked `[s2s]`; `None` in the settings when disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S2sSettings {
    pub listen: Vec<SocketAddr>,
    pub direct_tls_listen: Vec<SocketAddr>,
    pub resolver: Option<SocketAddr>,
    /// Resolved against the configuration's directory.
    pub ca_file: Option<PathBuf>,
    pub dialback: bool,
    pub require_valid_certificates: bool,
    /// Lower-case domains.
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// 0: no limit.
    pub stanzas_per_sec: u32,
    pub refuse_strangers: bool,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub bidi: bool,
    /// `None`: links are not pinged.
    pub ping_interval: Option<Duration>,
    pub ping_timeout: Duration,
    pub queue_max: usize,
    /// Inbound connections at once; more are closed on accept.
    pub max_inbound: usize,
    /// Inbound connections from one address (IPv4, IPv6 /64) before authentication.
    pub max_pending_per_ip: usize,
    /// Outbound connections (links, dialback verifications) at once.
    pub max_outbound: usize,
    /// Domains one inbound stream may authenticate.
    pub max_domains_per_stream: usize,
    /// How long stanzas for a domain pair whose link failed bounce at once; zero: never.
    pub failure_cache: Duration,
    /// Connect to loopback, private and link-local addresses found through DNS.
    pub allow_private_addresses: bool,
    /// Domain → (host, port).
    pub routes: BTreeMap<String, (String, u16)>,
}

impl S2sSection {
    pub(crate) fn validate(
        &self,
        base_dir: &Path,
        fail: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<Option<S2sSettings>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let addrs = |key: &str, list: &[String]| -> Result<Vec<SocketAddr>, ConfigError> {
            (list.iter().enumerate())
                .map(|(i, text)| {
                    text.trim().parse().map_err(|_| {
                        let why = format!("invalid socket address {text:?} (expected IP:PORT)");
                        fail(&format!("{key}[{i}]"), why)
                    })
                })
                .collect()
        };
        let listen = addrs("s2s.listen", &self.listen)?;
        let direct_tls_listen = addrs("s2s.direct_tls_listen", &self.direct_tls_listen)?;
        let resolver = match self.resolver.trim() {
            "" => None,
            text => Some(text.parse().map_err(|_| {
                let why =
                    format!("invalid socket address {text:?} (expected IP:PORT of a DNS server)");
                fail("s2s.resolver", why)
            })?),
        };
        let ca_file = if self.ca_file.as_os_str().is_empty() {
            None
        } else {
            let full = base_dir.join(&self.ca_file);
            if !full.is_file() {
                let why = format!("file not found: {}", full.display());
                return Err(fail("s2s.ca_file", why));
            }
            Some(full)
        };
        let domains = |key: &str, list: &[String]| -> Result<Vec<String>, ConfigError> {
            (list.iter().enumerate())
                .map(|(i, d)| {
                    normalise_domain(d).map_err(|why| {
                        fail(
                            &format!("{key}[{i}]"),
                            format!("invalid domain {d:?}: {why}"),
                        )
                    })
                })
                .collect()
        };
        let mut routes = BTreeMap::new();
        for (domain, target) in &self.routes {
            let key = format!("s2s.routes.{domain}");
            let d = normalise_domain(domain)
                .map_err(|why| fail(&key, format!("invalid domain {domain:?}: {why}")))?;
            let bad = || fail(&key, format!("{target:?} is not HOST:PORT"));
            let (host, port) = target.trim().rsplit_once(':').ok_or_else(bad)?;
            let port: u16 = port.parse().map_err(|_| bad())?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() || port == 0 {
                return Err(bad());
            }
            routes.insert(d, (host.to_owned(), port));
        }
        let secs = |key: &str, v: u64, max: usize| {
            in_range(v, 1, max)
                .map(|s| Duration::from_secs(s as u64))
                .map_err(|why| fail(key, why))
        };
        Ok(Some(S2sSettings {
            listen,
            direct_tls_listen,
            resolver,
            ca_file,
            dialback: self.dialback,
            require_valid_certificates: self.require_valid_certificates,
            allow: domains("s2s.allow", &self.allow)?,
            deny: domains("s2s.deny", &self.deny)?,
            stanzas_per_sec: in_range(self.stanzas_per_sec, 0, 1_000_000)
                .map_err(|why| fail("s2s.stanzas_per_sec", why))?
                as u32,
            refuse_strangers: self.refuse_strangers,
            connect_timeout: secs("s2s.connect_timeout_secs", self.connect_timeout_secs, 600)?,
            handshake_timeout: secs(
                "s2s.handshake_timeout_secs",
                self.handshake_timeout_secs,
                600,
            )?,
            idle_timeout: secs(
                "s2s.idle_timeout_secs",
                self.idle_timeout_secs,
                7 * 24 * 3600,
            )?,
            bidi: self.bidi,
            ping_interval: match self.ping_interval_secs {
                0 => None,
                v => Some(secs("s2s.ping_interval_secs", v, 7 * 24 * 3600)?),
            },
            ping_timeout: secs("s2s.ping_timeout_secs", self.ping_timeout_secs, 3600)?,
            queue_max: in_range(self.queue_max, 1, 1_000_000)
                .map_err(|why| fail("s2s.queue_max", why))?,
            max_inbound: in_range(self.max_inbound, 1, 1_000_000)
                .map_err(|why| fail("s2s.max_inbound", why))?,
            max_pending_per_ip: in_range(self.max_pending_per_ip, 1, 1_000_000)
                .map_err(|why| fail("s2s.max_pending_per_ip", why))?,
            max_outbound: in_range(self.max_outbound, 1, 1_000_000)
                .map_err(|why| fail("s2s.max_outbound", why))?,
            max_domains_per_stream: in_range(self.max_domains_per_stream, 1, 1_000_000)
                .map_err(|why| fail("s2s.max_domains_per_stream", why))?,
            failure_cache: Duration::from_secs(
                in_range(self.failure_cache_secs, 0, 24 * 3600)
                    .map_err(|why| fail("s2s.failure_cache_secs", why))? as u64,
            ),
            allow_private_addresses: self.allow_private_addresses,
            routes,
        }))
    }
}
