//! `[extdisco]`: the STUN and TURN servers announced to clients (XEP-0215).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::{in_range, ConfigError, Source};

/// `[extdisco]` as written: a list of `[[extdisco.service]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtDiscoSection {
    /// How long issued TURN credentials work.
    pub credentials_ttl_secs: u64,
    #[serde(rename = "service")]
    pub services: Vec<ExtServiceEntry>,
}

impl Default for ExtDiscoSection {
    fn default() -> Self {
        ExtDiscoSection {
            credentials_ttl_secs: 24 * 3600,
            services: Vec::new(),
        }
    }
}

/// One `[[extdisco.service]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtServiceEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub host: String,
    pub port: Option<u64>,
    pub transport: Option<String>,
    pub name: Option<String>,
    /// The TURN server's `static-auth-secret`, inline or in a file.
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
}

/// The checked `[extdisco]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtDiscoSettings {
    pub services: Vec<ExtService>,
    pub credentials_ttl: Duration,
}

/// One checked service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtService {
    /// `stun`, `stuns`, `turn` or `turns`.
    pub kind: String,
    pub host: String,
    pub port: u16,
    /// `udp` or `tcp`.
    pub transport: String,
    pub name: Option<String>,
    pub secret: TurnSecret,
}

/// The secret shared with a TURN server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnSecret {
    None,
    Inline(String),
    /// Resolved; the file exists. Its content, less a trailing newline, is the secret.
    File(PathBuf),
}

impl ExtDiscoSection {
    pub(crate) fn validate(
        &self,
        source: &Source,
        fail: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<ExtDiscoSettings, ConfigError> {
        let ttl = in_range(self.credentials_ttl_secs, 60, 30 * 24 * 3600)
            .map_err(|why| fail("extdisco.credentials_ttl_secs", why))?;
        let mut services = Vec::new();
        for (i, s) in self.services.iter().enumerate() {
            let key = |k: &str| format!("extdisco.service[{i}].{k}");
            let secure = match s.kind.as_str() {
                "stun" | "turn" => false,
                "stuns" | "turns" => true,
                other => {
                    let why = format!("{other:?} is not one of stun, stuns, turn, turns");
                    return Err(fail(&key("type"), why));
                }
            };
            let host = s.host.trim();
            if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
                return Err(fail(&key("host"), format!("{:?} is not a host", s.host)));
            }
            // RFC 8489 §6 and RFC 8656 §4: 3478, and 5349 over TLS.
            let default_port = if secure { 5349 } else { 3478 };
            let port = in_range(s.port.unwrap_or(default_port), 1, 65535)
                .map_err(|why| fail(&key("port"), why))?;
            let transport = match s.transport.as_deref() {
                None if secure => "tcp".to_owned(),
                None => "udp".to_owned(),
                Some(t @ ("udp" | "tcp")) => t.to_owned(),
                Some(other) => {
                    return Err(fail(
                        &key("transport"),
                        format!("{other:?} is not udp or tcp"),
                    ))
                }
            };
            let turn = s.kind.starts_with("turn");
            let secret = match (&s.secret, &s.secret_file) {
                (Some(_), Some(_)) => {
                    let why = "set secret or secret_file, not both".into();
                    return Err(fail(&key("secret_file"), why));
                }
                (Some(_), None) | (None, Some(_)) if !turn => {
                    let why = "only a TURN server takes a secret".into();
                    return Err(fail(&key("secret"), why));
                }
                (Some(p), None) if p.is_empty() => {
                    return Err(fail(&key("secret"), "must not be empty".into()))
                }
                (Some(p), None) => TurnSecret::Inline(p.clone()),
                (None, Some(f)) => {
                    let full = source.base_dir.join(f);
                    if f.as_os_str().is_empty() || !full.is_file() {
                        let why = format!("file not found: {}", full.display());
                        return Err(fail(&key("secret_file"), why));
                    }
                    TurnSecret::File(full)
                }
                (None, None) => TurnSecret::None,
            };
            services.push(ExtService {
                kind: s.kind.clone(),
                host: host.to_owned(),
                port: port as u16,
                transport,
                name: s.name.clone(),
                secret,
            });
        }
        Ok(ExtDiscoSettings {
            services,
            credentials_ttl: Duration::from_secs(ttl as u64),
        })
    }
}
