//! The checked configuration the binary maps onto the other crates.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{
    AdminHttpSettings, AuthBackendKind, ContactAddresses, ExtDiscoSettings, HttpSettings,
    LdapSettings, LogLevel, MamSettings, MucSettings, PersonalSettings, Proxy65Settings,
    PubSubSettings, PushSettings, S2sSettings, SharedGroupSettings, StorageSettings,
    UploadSettings,
};

/// A checked configuration: hosts normalised, addresses parsed, paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedConfig {
    /// The file it came from ([`BUILTIN_NAME`] when none).
    pub source: String,
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub c2s: C2sSettings,
    pub tls: TlsSettings,
    /// Offline messages kept per user; 0 disables offline storage.
    pub offline_max_per_user: usize,
    pub resources_max_per_user: usize,
    /// Stored roster items per account.
    pub roster_max_items: usize,
    /// The authentication backend of every host.
    pub auth_backends: BTreeMap<String, AuthBackendKind>,
    pub ldap: Option<LdapSettings>,
    pub shared_groups: Vec<SharedGroupSettings>,
    pub registration: RegistrationSettings,
    pub muc: MucSettings,
    pub mam: MamSettings,
    pub pubsub: PubSubSettings,
    /// `None`: no HTTP listeners.
    pub http: Option<HttpSettings>,
    pub push: PushSettings,
    /// XEP-0157 contact addresses of each host that publishes some.
    pub contact: BTreeMap<String, ContactAddresses>,
    /// `[vcard]` and `[private]`.
    pub personal: PersonalSettings,
    pub extdisco: ExtDiscoSettings,
    /// `None` when the proxy is disabled.
    pub proxy65: Option<Proxy65Settings>,
    /// `None`: no upload service.
    pub upload: Option<UploadSettings>,
    /// `None`: no administration listener (REST API, metrics).
    pub admin_http: Option<AdminHttpSettings>,
    /// `None`: certificates come from files or are self-signed.
    pub acme: Option<crate::AcmeSettings>,
    /// `None`: no federation (stanzas to other domains bounce).
    pub s2s: Option<S2sSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationSettings {
    /// Hosts accepting in-band registration, each one of `server.hosts`; empty: none.
    pub hosts: Vec<String>,
    pub max_per_ip_per_hour: u32,
    pub min_password_length: usize,
    /// How long the name of a removed account may not be registered again (any way); zero:
    /// no wait.
    pub tombstone: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Lowercased, unique, in file order; never empty.
    pub hosts: Vec<String>,
    pub data_dir: PathBuf,
    pub node_name: String,
    pub log_level: LogLevel,
    pub hide_ip_in_logs: bool,
    pub show_os: bool,
    /// Bare JIDs: localpart nodeprep'd, domain lowercased.
    pub admins: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct C2sSettings {
    pub starttls_listen: Vec<SocketAddr>,
    pub direct_tls_listen: Vec<SocketAddr>,
    pub require_starttls: bool,
    pub max_stanza_bytes: usize,
    pub pre_auth_max_stanza_bytes: usize,
    pub session_queue: usize,
    pub session_queue_bytes: usize,
    pub session_reply_bytes: usize,
    /// 0: no shaping.
    pub shaper_bytes_per_sec: usize,
    pub shaper_burst_bytes: usize,
    pub max_presence_bytes: usize,
    pub handshake_timeout: Duration,
    pub max_auth_failures: u32,
    pub max_connections: usize,
    pub max_pending_per_ip: usize,
    /// XEP-0198 offered after authentication.
    pub stream_management: bool,
    /// How long a session whose connection broke is kept for resumption.
    pub resume_timeout: Duration,
    /// Stanzas sent to a client and not yet acknowledged, at most.
    pub sm_max_unacked: usize,
    /// Their bytes (serialised size), at most.
    pub sm_max_unacked_bytes: usize,
    /// Quiet time after which the server checks that the client is there; `None`: never.
    pub ping_interval: Option<Duration>,
    /// How long the client has to answer that check.
    pub ping_timeout: Duration,
    /// SASL2 (XEP-0388) with Bind2 and FAST offered on TLS streams.
    pub sasl2: bool,
    /// How long a FAST token (XEP-0484) is valid.
    pub fast_token_lifetime: Duration,
    /// Proxies whose connections start with a PROXY protocol header.
    pub proxy_protocol_from: Vec<xmppd_realip::Network>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub reload_interval: Duration,
    /// TLS session resumption offered to clients (tickets, and session IDs for TLS 1.2).
    pub session_resumption: bool,
    pub certificates: Vec<CertificateSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSettings {
    /// One of the hosts, lowercased.
    pub domain: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}
