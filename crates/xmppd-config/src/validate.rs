//! Parsing the document and checking every value: [`Config::parse`], [`Config::validate`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::contact::validate_contact;
use crate::directory::{auth_backends, normalise_bare_jid};
use crate::locate::{trim_index, Locator};
use crate::muc::validate_muc;
use crate::pubsub::validate_pubsub;
use crate::*;

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

        let storage = self.storage.validate(&source.base_dir, &data_dir, &fail)?;

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

        let resume_secs = in_range(c2s.resume_timeout_secs, 1, 86_400)
            .map_err(|why| fail("c2s.resume_timeout_secs", why))?;
        let sm_max_unacked = in_range(c2s.sm_max_unacked, 1, 1 << 20)
            .map_err(|why| fail("c2s.sm_max_unacked", why))?;
        let sm_max_unacked_bytes = in_range(c2s.sm_max_unacked_bytes, max_stanza_bytes, 1 << 30)
            .map_err(|why| {
                let why = format!("{why}; it must hold one stanza of c2s.max_stanza_bytes");
                fail("c2s.sm_max_unacked_bytes", why)
            })?;
        let ping_interval =
            match c2s.ping_interval_secs {
                0 => None,
                secs => Some(in_range(secs, 1, 86_400).map_err(|why| {
                    fail("c2s.ping_interval_secs", format!("{why}, or 0 for never"))
                })?),
            };
        let ping_timeout_secs = in_range(c2s.ping_timeout_secs, 1, 3600)
            .map_err(|why| fail("c2s.ping_timeout_secs", why))?;
        let fast_days = in_range(c2s.fast_token_lifetime_days, 1, 365)
            .map_err(|why| fail("c2s.fast_token_lifetime_days", why))?;
        let proxy_protocol_from =
            networks("c2s.proxy_protocol_from", &c2s.proxy_protocol_from, &fail)?;

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
        let http = self.http.validate(&mut parse_addrs, &fail)?;
        let admin_http = self.admin_http.validate(&mut parse_addrs, &fail)?;
        let muc = validate_muc(&self.muc, &hosts, &fail)?;
        let mam = self.mam.validate(&fail)?;
        let pubsub = validate_pubsub(&self.pubsub, &hosts, &fail)?;
        let push = self.push.validate(&fail)?;
        let contact = validate_contact(&self.contact, &hosts, &fail)?;
        let personal = crate::personal::validate_personal(&self.vcard, &self.private, &fail)?;
        let extdisco = self.extdisco.validate(source, &fail)?;
        let proxy65 = self.proxy65.validate(&hosts, &fail)?;
        let s2s = self.s2s.validate(&source.base_dir, &fail)?;
        let upload = (self.upload).validate(&hosts, &data_dir, http.is_some(), &fail)?;
        let acme = (self.acme).validate(source, &hosts, &data_dir, http.is_some(), &fail)?;
        if let Some(a) = &acme {
            if let Some(h) = (a.hosts.iter()).find(|h| certificates.iter().any(|c| &c.domain == *h))
            {
                let why = format!("{h:?} has a [[tls.certificate]] already; list the others");
                return Err(fail("acme.hosts", why));
            }
        }
        // Each subdomain is one component's: the router hands a domain's stanzas to exactly one
        // service, so two services on one domain would silently leave one unreachable.
        let mut taken: Vec<(&str, &str)> = Vec::new();
        let in_use = [
            ("muc.domain", &muc.services),
            ("pubsub.domain", &pubsub.services),
        ]
        .into_iter()
        .chain(upload.iter().map(|u| ("upload.domain", &u.services)))
        .flat_map(|(key, services)| services.iter().map(move |(_, d)| (key, d.as_str())))
        .chain(
            (proxy65.iter())
                .flat_map(|p| (p.services.iter()).map(|(_, d, _)| ("proxy65.domain", d.as_str()))),
        );
        for (key, domain) in in_use {
            if let Some((other, _)) = taken.iter().find(|(_, d)| *d == domain) {
                let why = format!("{domain:?} is already {other}'s domain");
                return Err(fail(key, why));
            }
            taken.push((key, domain));
        }

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
                stream_management: c2s.stream_management,
                resume_timeout: Duration::from_secs(resume_secs as u64),
                sm_max_unacked,
                sm_max_unacked_bytes,
                ping_interval: ping_interval.map(|s| Duration::from_secs(s as u64)),
                ping_timeout: Duration::from_secs(ping_timeout_secs as u64),
                sasl2: c2s.sasl2,
                fast_token_lifetime: Duration::from_secs(fast_days as u64 * 86_400),
                proxy_protocol_from,
            },
            tls: TlsSettings {
                reload_interval: Duration::from_secs(reload_secs as u64),
                session_resumption: self.tls.session_resumption,
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
            mam,
            pubsub,
            http,
            push,
            contact,
            personal,
            extdisco,
            proxy65,
            upload,
            admin_http,
            acme,
            s2s,
        })
    }
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

pub(crate) fn in_range(v: u64, min: usize, max: usize) -> Result<usize, String> {
    match usize::try_from(v) {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ if min == 0 => Err(format!("{v} is out of range (at most {max})")),
        _ => Err(format!("{v} is out of range ({min} to {max})")),
    }
}

/// Parses a list of trusted proxies (addresses or CIDR blocks), naming the entry in errors.
pub(crate) fn networks(
    key: &str,
    list: &[String],
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Vec<xmppd_realip::Network>, ConfigError> {
    let mut checked: Vec<xmppd_realip::Network> = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let network = (entry.trim().parse::<xmppd_realip::Network>())
            .map_err(|e| fail(&format!("{key}[{i}]"), e.to_string()))?;
        if checked.contains(&network) {
            return Err(fail(
                &format!("{key}[{i}]"),
                format!("{network} is listed twice"),
            ));
        }
        checked.push(network);
    }
    Ok(checked)
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
