//! `[http]`: the HTTP listeners and the services on them (XEP-0156 host-meta, WebSocket,
//! BOSH).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::{in_range, ConfigError};

/// `[http]` as written. Off unless `enabled`; the plain listener is on loopback by default, so
/// turning it on exposes nothing until an address or a TLS listener is chosen.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    pub enabled: bool,
    /// Plain HTTP listeners.
    pub listen: Vec<String>,
    /// HTTPS listeners, with the certificates of `[tls]`.
    pub tls_listen: Vec<String>,
    /// Bytes of one request's body, at most.
    pub max_body_bytes: u64,
    /// Bytes of one request's head (request line and headers), at most.
    pub max_header_bytes: u64,
    /// Time a client has to send a request's head, also while a kept-alive connection idles.
    pub header_timeout_secs: u64,
    /// Time a request (its body included) may take to be answered.
    pub request_timeout_secs: u64,
    /// HTTP connections open at once.
    pub max_connections: u64,
    /// One line per request at the info level.
    pub access_log: bool,
    /// Plain-HTTP connections are considered secure: a TLS-terminating proxy is in front of
    /// every plain listener and nothing else can reach them.
    pub behind_tls_proxy: bool,
    /// XMPP over WebSocket (RFC 7395) on `/xmpp-websocket`.
    pub websocket: bool,
    /// Origins (`https://chat.example.org`) whose pages may open a WebSocket; `*` allows any.
    pub websocket_origins: Vec<String>,
    /// The WebSocket URL that host-meta advertises; empty: the URL it was asked on.
    pub websocket_url: String,
    /// XMPP over BOSH (XEP-0124, XEP-0206) on `/http-bind`.
    pub bosh: bool,
    /// The BOSH URL that host-meta advertises; empty: the URL it was asked on, when `bosh`
    /// is on.
    pub bosh_url: String,
    /// Origins whose pages may use BOSH (CORS); `*` allows any.
    pub bosh_origins: Vec<String>,
    /// The longest a BOSH request is held open (the `wait` a client gets at most).
    pub bosh_max_wait_secs: u64,
    /// BOSH requests held open at once per session, at most (`hold`).
    pub bosh_max_hold: u64,
    /// A BOSH session with no request open for this long ends.
    pub bosh_inactivity_secs: u64,
    /// Proxies (addresses or CIDR blocks) whose connections start with a PROXY protocol
    /// header naming the client.
    pub proxy_protocol_from: Vec<String>,
    /// Proxies (addresses or CIDR blocks) whose `forwarded_header` names the client.
    pub trusted_proxies: Vec<String>,
    /// The header the trusted proxies append the client to: `x-forwarded-for` or
    /// `forwarded` (RFC 7239).
    pub forwarded_header: String,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            enabled: false,
            listen: vec!["127.0.0.1:5280".into()],
            tls_listen: Vec::new(),
            max_body_bytes: 1 << 20,
            max_header_bytes: 16 * 1024,
            header_timeout_secs: 10,
            request_timeout_secs: 60,
            max_connections: 10_000,
            access_log: true,
            behind_tls_proxy: false,
            websocket: true,
            websocket_origins: Vec::new(),
            websocket_url: String::new(),
            bosh: true,
            bosh_url: String::new(),
            bosh_origins: Vec::new(),
            bosh_max_wait_secs: 30,
            bosh_max_hold: 1,
            bosh_inactivity_secs: 60,
            proxy_protocol_from: Vec::new(),
            trusted_proxies: Vec::new(),
            forwarded_header: "x-forwarded-for".into(),
        }
    }
}

/// The checked `[http]` section; `None` in [`crate::ValidatedConfig`] when it is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    pub listen: Vec<SocketAddr>,
    pub tls_listen: Vec<SocketAddr>,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub access_log: bool,
    pub behind_tls_proxy: bool,
    pub websocket: bool,
    /// Lowercased, without a final `/`.
    pub websocket_origins: Vec<String>,
    pub websocket_url: Option<String>,
    pub bosh: bool,
    pub bosh_url: Option<String>,
    /// Lowercased, without a final `/`.
    pub bosh_origins: Vec<String>,
    pub bosh_max_wait: Duration,
    pub bosh_max_hold: u64,
    pub bosh_inactivity: Duration,
    pub proxy_protocol_from: Vec<xmppd_realip::Network>,
    pub trusted_proxies: Vec<xmppd_realip::Network>,
    pub forwarded_header: xmppd_realip::forwarded::ForwardedHeader,
}

/// Parses one list of listener addresses, naming its key in errors.
pub(crate) type ParseAddrs<'a> =
    dyn FnMut(&str, &[String]) -> Result<Vec<SocketAddr>, ConfigError> + 'a;

impl HttpSection {
    /// Checks the section; `parse_addrs` parses a list of listener addresses (shared with the
    /// c2s listeners, so that no address is listed twice).
    pub(crate) fn validate(
        &self,
        parse_addrs: &mut ParseAddrs<'_>,
        fail: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<Option<HttpSettings>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let listen = parse_addrs("http.listen", &self.listen)?;
        let tls_listen = parse_addrs("http.tls_listen", &self.tls_listen)?;
        if listen.is_empty() && tls_listen.is_empty() {
            let why =
                "no HTTP listener: set http.listen or http.tls_listen, or http.enabled = false";
            return Err(fail("http.listen", why.into()));
        }
        let origins = |key: &str, list: &[String]| {
            let mut checked = Vec::with_capacity(list.len());
            for (i, origin) in list.iter().enumerate() {
                let Some(origin) = crate::upload::origin(origin) else {
                    let why = format!(
                        "{origin:?} is not an origin (scheme://host[:port], e.g. https://chat.example.org, or *)"
                    );
                    return Err(fail(&format!("{key}[{i}]"), why));
                };
                checked.push(origin);
            }
            Ok(checked)
        };
        let websocket_origins = origins("http.websocket_origins", &self.websocket_origins)?;
        let bosh_origins = origins("http.bosh_origins", &self.bosh_origins)?;
        let request_timeout_secs = in_range(self.request_timeout_secs, 1, 86_400)
            .map_err(|why| fail("http.request_timeout_secs", why))?;
        // A held request must be answered before the HTTP layer gives up on it.
        let bosh_max_wait_secs = in_range(self.bosh_max_wait_secs, 1, 3600)
            .and_then(|w| match w < request_timeout_secs {
                true => Ok(w),
                false => Err(format!(
                    "{w} must be less than http.request_timeout_secs ({request_timeout_secs})"
                )),
            })
            .map_err(|why| fail("http.bosh_max_wait_secs", why))?;
        let url = |key: &str, value: &str, schemes: [&str; 2]| {
            let value = value.trim();
            if value.is_empty() {
                return Ok(None);
            }
            match schemes.iter().find_map(|s| value.strip_prefix(s)) {
                Some(rest) if !rest.is_empty() && !rest.contains(char::is_whitespace) => {
                    Ok(Some(value.to_owned()))
                }
                _ => Err(fail(
                    key,
                    format!("{value:?} is not a {} or {} URL", schemes[0], schemes[1]),
                )),
            }
        };
        let forwarded_header = match self.forwarded_header.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => xmppd_realip::forwarded::ForwardedHeader::XForwardedFor,
            "forwarded" => xmppd_realip::forwarded::ForwardedHeader::Forwarded,
            other => {
                let why = format!("{other:?} is not x-forwarded-for or forwarded");
                return Err(fail("http.forwarded_header", why));
            }
        };
        let networks = |key: &str, list: &[String]| crate::validate::networks(key, list, fail);
        Ok(Some(HttpSettings {
            proxy_protocol_from: networks("http.proxy_protocol_from", &self.proxy_protocol_from)?,
            trusted_proxies: networks("http.trusted_proxies", &self.trusted_proxies)?,
            forwarded_header,
            listen,
            tls_listen,
            max_body_bytes: in_range(self.max_body_bytes, 0, 1 << 40)
                .map_err(|why| fail("http.max_body_bytes", why))?,
            // hyper needs room for at least 8 KiB of head.
            max_header_bytes: in_range(self.max_header_bytes, 8192, 1 << 20)
                .map_err(|why| fail("http.max_header_bytes", why))?,
            header_timeout: Duration::from_secs(
                in_range(self.header_timeout_secs, 1, 3600)
                    .map_err(|why| fail("http.header_timeout_secs", why))? as u64,
            ),
            request_timeout: Duration::from_secs(request_timeout_secs as u64),
            max_connections: in_range(self.max_connections, 1, 10_000_000)
                .map_err(|why| fail("http.max_connections", why))?,
            access_log: self.access_log,
            behind_tls_proxy: self.behind_tls_proxy,
            websocket: self.websocket,
            websocket_origins,
            websocket_url: url(
                "http.websocket_url",
                &self.websocket_url,
                ["ws://", "wss://"],
            )?,
            bosh: self.bosh,
            bosh_url: url("http.bosh_url", &self.bosh_url, ["http://", "https://"])?,
            bosh_origins,
            bosh_max_wait: Duration::from_secs(bosh_max_wait_secs as u64),
            bosh_max_hold: in_range(self.bosh_max_hold, 1, 16)
                .map_err(|why| fail("http.bosh_max_hold", why))? as u64,
            bosh_inactivity: Duration::from_secs(
                in_range(self.bosh_inactivity_secs, 1, 86_400)
                    .map_err(|why| fail("http.bosh_inactivity_secs", why))? as u64,
            ),
        }))
    }
}
