//! `[pubsub]`: the section, its checked form, and its checks.

use serde::Deserialize;

use crate::muc::service_domains;
use crate::{in_range, ConfigError};

/// `[pubsub]`: publish-subscribe (XEP-0060): personal eventing on every account (XEP-0163)
/// and a pubsub service per host.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PubSubSection {
    /// Whether the pubsub service runs (personal eventing always does).
    pub enabled: bool,
    /// The service domain; `{host}` stands for each served host.
    pub domain: String,
    pub create: PubSubCreate,
    pub max_items: u64,
    pub max_payload_bytes: u64,
    pub max_nodes: u64,
    pub max_service_nodes: u64,
    pub caps_cache: u64,
}

impl Default for PubSubSection {
    fn default() -> Self {
        PubSubSection {
            enabled: true,
            domain: "pubsub.{host}".into(),
            create: PubSubCreate::Local,
            max_items: 256,
            max_payload_bytes: 64 * 1024,
            max_nodes: 1000,
            max_service_nodes: 100_000,
            caps_cache: 10_000,
        }
    }
}

/// Who may create nodes on the pubsub service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PubSubCreate {
    /// Every account of the served hosts.
    #[default]
    Local,
    /// Server administrators only.
    Admins,
}

/// The checked `[pubsub]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubSubSettings {
    /// (host, service domain) pairs; empty when the service is disabled.
    pub services: Vec<(String, String)>,
    pub create: PubSubCreate,
    /// Items a node keeps at most (what `pubsub#max_items` `max` means).
    pub max_items: u32,
    pub max_payload_bytes: usize,
    /// Nodes per account: its own, and those it created on a service.
    pub max_nodes: usize,
    /// Nodes per service.
    pub max_service_nodes: usize,
    /// Verified entity capabilities kept.
    pub caps_cache: usize,
}

/// Checks `[pubsub]`: one service domain per host, none of them a host itself.
pub(crate) fn validate_pubsub(
    p: &PubSubSection,
    hosts: &[String],
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<PubSubSettings, ConfigError> {
    let services = if p.enabled {
        service_domains(&p.domain, hosts, "pubsub.domain", fail)?
    } else {
        Vec::new()
    };
    Ok(PubSubSettings {
        services,
        create: p.create,
        max_items: in_range(p.max_items, 1, 100_000).map_err(|why| fail("pubsub.max_items", why))?
            as u32,
        max_payload_bytes: in_range(p.max_payload_bytes, 1024, 16 << 20)
            .map_err(|why| fail("pubsub.max_payload_bytes", why))?,
        max_nodes: in_range(p.max_nodes, 1, 1 << 20)
            .map_err(|why| fail("pubsub.max_nodes", why))?,
        max_service_nodes: in_range(p.max_service_nodes, 1, 1 << 24)
            .map_err(|why| fail("pubsub.max_service_nodes", why))?,
        caps_cache: in_range(p.caps_cache, 1, 1 << 24)
            .map_err(|why| fail("pubsub.caps_cache", why))?,
    })
}
