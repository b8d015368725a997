//! The file as written: one struct per section, with the defaults of its keys.

use std::path::PathBuf;

use serde::Deserialize;

use crate::{
    AdminHttpSection, AuthSection, ContactEntry, ExtDiscoSection, HttpSection, LdapSection,
    MamSection, MucSection, PrivateSection, Proxy65Section, PubSubSection, PushSection, S2sSection,
    SharedRosterSection, StorageSection, UploadSection, VCardSection,
};

/// The file as written, with serde defaults filled in but nothing checked or resolved yet.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerSection,
    pub storage: StorageSection,
    pub c2s: C2sSection,
    pub tls: TlsSection,
    pub offline: OfflineSection,
    pub resources: ResourcesSection,
    pub roster: RosterSection,
    pub auth: AuthSection,
    pub ldap: Option<LdapSection>,
    pub shared_roster: SharedRosterSection,
    pub registration: RegistrationSection,
    pub muc: MucSection,
    pub mam: MamSection,
    pub pubsub: PubSubSection,
    pub http: HttpSection,
    pub push: PushSection,
    pub contact: Vec<ContactEntry>,
    pub vcard: VCardSection,
    pub private: PrivateSection,
    pub extdisco: ExtDiscoSection,
    pub proxy65: Proxy65Section,
    pub upload: UploadSection,
    pub admin_http: AdminHttpSection,
    pub acme: crate::AcmeSection,
    pub s2s: S2sSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    pub hosts: Vec<String>,
    pub data_dir: PathBuf,
    /// `None`: the machine's host name, or "xmppd" when it cannot be read.
    pub node_name: Option<String>,
    pub log_level: LogLevel,
    pub hide_ip_in_logs: bool,
    pub show_os: bool,
    pub admins: Vec<String>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            hosts: vec!["localhost".into()],
            data_dir: PathBuf::from("data"),
            node_name: None,
            log_level: LogLevel::Info,
            hide_ip_in_logs: false,
            show_os: false,
            admins: Vec::new(),
        }
    }
}

/// Verbosity of the logs (`RUST_LOG` overrides it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct C2sSection {
    pub starttls_listen: Vec<String>,
    pub direct_tls_listen: Vec<String>,
    pub require_starttls: bool,
    pub max_stanza_bytes: u64,
    pub pre_auth_max_stanza_bytes: u64,
    pub session_queue: u64,
    pub session_queue_bytes: u64,
    pub session_reply_bytes: u64,
    pub shaper_bytes_per_sec: u64,
    pub shaper_burst_bytes: u64,
    pub max_presence_bytes: u64,
    pub handshake_timeout_secs: u64,
    pub max_auth_failures: u32,
    pub max_connections: u64,
    pub max_pending_per_ip: u64,
    pub stream_management: bool,
    pub resume_timeout_secs: u64,
    pub sm_max_unacked: u64,
    pub sm_max_unacked_bytes: u64,
    pub ping_interval_secs: u64,
    pub ping_timeout_secs: u64,
    pub sasl2: bool,
    pub fast_token_lifetime_days: u64,
    /// Proxies (addresses or CIDR blocks) whose connections start with a PROXY protocol
    /// header naming the client.
    pub proxy_protocol_from: Vec<String>,
}

impl Default for C2sSection {
    fn default() -> Self {
        C2sSection {
            starttls_listen: vec!["0.0.0.0:5222".into()],
            direct_tls_listen: vec!["0.0.0.0:5223".into()],
            require_starttls: true,
            max_stanza_bytes: 262_144,
            pre_auth_max_stanza_bytes: 8192,
            session_queue: 512,
            session_queue_bytes: 1 << 20,
            session_reply_bytes: 4 << 20,
            shaper_bytes_per_sec: 64 * 1024,
            shaper_burst_bytes: 512 * 1024,
            max_presence_bytes: 16 * 1024,
            handshake_timeout_secs: 30,
            max_auth_failures: 3,
            max_connections: 100_000,
            max_pending_per_ip: 32,
            stream_management: true,
            resume_timeout_secs: 300,
            sm_max_unacked: 1024,
            sm_max_unacked_bytes: 1 << 20,
            ping_interval_secs: 240,
            ping_timeout_secs: 60,
            sasl2: true,
            fast_token_lifetime_days: 14,
            proxy_protocol_from: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    pub reload_interval_secs: u64,
    pub session_resumption: bool,
    #[serde(rename = "certificate")]
    pub certificates: Vec<CertificateEntry>,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            reload_interval_secs: 60,
            session_resumption: true,
            certificates: Vec::new(),
        }
    }
}

/// One `[[tls.certificate]]`: every key is required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateEntry {
    pub domain: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OfflineSection {
    pub max_per_user: u64,
}

impl Default for OfflineSection {
    fn default() -> Self {
        OfflineSection { max_per_user: 1000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourcesSection {
    pub max_per_user: u64,
}

impl Default for ResourcesSection {
    fn default() -> Self {
        ResourcesSection { max_per_user: 16 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RosterSection {
    pub max_items: u64,
}

impl Default for RosterSection {
    fn default() -> Self {
        RosterSection { max_items: 5000 }
    }
}

/// `[registration]`: in-band account creation (XEP-0077), off unless hosts are listed.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationSection {
    pub hosts: Vec<String>,
    pub max_per_ip_per_hour: u64,
    pub min_password_length: u64,
    pub tombstone_days: u64,
}

impl Default for RegistrationSection {
    fn default() -> Self {
        RegistrationSection {
            hosts: Vec::new(),
            max_per_ip_per_hour: 5,
            min_password_length: 8,
            tombstone_days: 30,
        }
    }
}
