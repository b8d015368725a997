//! `[muc]`: the section, its checked form, and its checks.

use serde::Deserialize;

use crate::{in_range, normalise_domain, ConfigError};

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
    /// With a database server several processes share: how long a process's lease on a
    /// room lasts without renewal (a crashed process's rooms are taken over after this).
    pub lease_secs: u64,
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
            lease_secs: 30,
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
    /// How long a room's lease lasts without renewal (database servers only).
    pub lease_secs: u64,
}

/// Checks `[muc]`: one service domain per host, none of them a host itself.
pub(crate) fn validate_muc(
    m: &MucSection,
    hosts: &[String],
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<MucSettings, ConfigError> {
    let services = if m.enabled {
        service_domains(&m.domain, hosts, "muc.domain", fail)?
    } else {
        Vec::new()
    };
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
        lease_secs: in_range(m.lease_secs, 3, 3600).map_err(|why| fail("muc.lease_secs", why))?
            as u64,
    })
}

/// The (host, service domain) pairs of a service whose domain is written as `pattern`
/// (`{host}` standing for each host) under the key `key`: one per host, none a host itself.
pub(crate) fn service_domains(
    pattern: &str,
    hosts: &[String],
    key: &str,
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Vec<(String, String)>, ConfigError> {
    if hosts.len() > 1 && !pattern.contains("{host}") {
        return Err(fail(
            key,
            "with several hosts the domain must contain {host}".into(),
        ));
    }
    let mut services = Vec::new();
    for host in hosts {
        let domain = normalise_domain(&pattern.replace("{host}", host))
            .map_err(|why| fail(key, format!("invalid domain: {why}")))?;
        if hosts.contains(&domain) {
            return Err(fail(key, format!("{domain:?} is a host, not a subdomain")));
        }
        services.push((host.clone(), domain));
    }
    Ok(services)
}
