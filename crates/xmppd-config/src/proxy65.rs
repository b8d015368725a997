//! `[proxy65]`: the SOCKS5 bytestreams proxy (XEP-0065) on `proxy.HOST`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::muc::service_domains;
use crate::{in_range, normalise_domain, ConfigError};

/// `[proxy65]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Proxy65Section {
    /// Off unless enabled: it relays other people's bytes through the server's bandwidth.
    pub enabled: bool,
    /// The service domain; `{host}` stands for each served host.
    pub domain: String,
    /// Where the SOCKS5 listener binds.
    pub listen: String,
    /// The host name or IP address clients connect to; empty: the listener's address, or the
    /// proxy's domain when the listener is bound to every address.
    pub public_host: String,
    /// The port clients connect to; 0: the listener's.
    pub public_port: u64,
    /// Domains and bare JIDs that may use the proxy; empty: the users of the served hosts.
    pub allow: Vec<String>,
    pub max_transfers: u64,
    pub transfer_bytes_per_sec: u64,
    pub total_bytes_per_sec: u64,
    pub pairing_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub max_pending_per_ip: u64,
}

impl Default for Proxy65Section {
    fn default() -> Self {
        Proxy65Section {
            enabled: false,
            domain: "proxy.{host}".into(),
            listen: "0.0.0.0:7777".into(),
            public_host: String::new(),
            public_port: 0,
            allow: Vec::new(),
            max_transfers: 16,
            transfer_bytes_per_sec: 10 << 20,
            total_bytes_per_sec: 50 << 20,
            pairing_timeout_secs: 60,
            idle_timeout_secs: 120,
            max_pending_per_ip: 8,
        }
    }
}

/// The checked `[proxy65]` section; `None` in the settings when disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy65Settings {
    /// (host, proxy domain, public host) per served host.
    pub services: Vec<(String, String, String)>,
    pub listen: SocketAddr,
    /// 0: the bound port.
    pub public_port: u16,
    /// Lower-case domains and bare JIDs; empty: the users of the served hosts.
    pub allow: Vec<String>,
    pub max_transfers: usize,
    /// Bytes a second; 0: no limit.
    pub transfer_bytes_per_sec: u64,
    pub total_bytes_per_sec: u64,
    pub pairing_timeout: Duration,
    pub idle_timeout: Duration,
    /// Connections from one address in their SOCKS5 handshake at once.
    pub max_pending_per_ip: usize,
}

impl Proxy65Section {
    pub(crate) fn validate(
        &self,
        hosts: &[String],
        fail: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<Option<Proxy65Settings>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let listen: SocketAddr = self.listen.trim().parse().map_err(|_| {
            let why = format!(
                "invalid socket address {:?} (expected IP:PORT)",
                self.listen
            );
            fail("proxy65.listen", why)
        })?;
        let public_host = self.public_host.trim();
        if public_host.contains(|c: char| c.is_whitespace() || "/@:".contains(c))
            && public_host.parse::<std::net::IpAddr>().is_err()
        {
            let why = format!("{public_host:?} is neither a host name nor an IP address");
            return Err(fail("proxy65.public_host", why));
        }
        let services = service_domains(&self.domain, hosts, "proxy65.domain", fail)?;
        let services = (services.into_iter())
            .map(|(host, domain)| {
                let public = match public_host {
                    "" if listen.ip().is_unspecified() => domain.clone(),
                    "" => listen.ip().to_string(),
                    given => given.to_owned(),
                };
                (host, domain, public)
            })
            .collect();
        let mut allow = Vec::new();
        for (i, entry) in self.allow.iter().enumerate() {
            let key = format!("proxy65.allow[{i}]");
            let bad = || {
                fail(
                    &key,
                    format!("{entry:?} is neither a domain nor a bare JID"),
                )
            };
            let normalised = match entry.split_once('@') {
                Some((node, domain)) => {
                    let jid = jid::BareJid::new(&format!("{node}@{domain}")).map_err(|_| bad())?;
                    if jid.node().is_none() {
                        return Err(bad());
                    }
                    jid.to_string()
                }
                None => normalise_domain(entry).map_err(|_| bad())?,
            };
            allow.push(normalised);
        }
        let secs = |key: &str, v: u64| {
            in_range(v, 1, 24 * 3600)
                .map(|s| Duration::from_secs(s as u64))
                .map_err(|why| fail(key, why))
        };
        Ok(Some(Proxy65Settings {
            services,
            listen,
            public_port: in_range(self.public_port, 0, 65535)
                .map_err(|why| fail("proxy65.public_port", why))? as u16,
            allow,
            max_transfers: in_range(self.max_transfers, 1, 100_000)
                .map_err(|why| fail("proxy65.max_transfers", why))?,
            transfer_bytes_per_sec: in_range(self.transfer_bytes_per_sec, 0, 1 << 40)
                .map_err(|why| fail("proxy65.transfer_bytes_per_sec", why))?
                as u64,
            total_bytes_per_sec: in_range(self.total_bytes_per_sec, 0, 1 << 40)
                .map_err(|why| fail("proxy65.total_bytes_per_sec", why))?
                as u64,
            pairing_timeout: secs("proxy65.pairing_timeout_secs", self.pairing_timeout_secs)?,
            idle_timeout: secs("proxy65.idle_timeout_secs", self.idle_timeout_secs)?,
            max_pending_per_ip: in_range(self.max_pending_per_ip, 1, 100_000)
                .map_err(|why| fail("proxy65.max_pending_per_ip", why))?,
        }))
    }
}
