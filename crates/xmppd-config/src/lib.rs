//! xmppd's configuration: one TOML file, parsed into [`Config`], checked and completed by
//! [`Config::validate`] into a [`ValidatedConfig`] the binary maps onto the other crates.
//!
//! Every section and key is optional; defaults are documented in `docs/CONFIG.md`. Unknown keys
//! are rejected so that a typo never silently falls back to a default. Every error is a single
//! line naming the file, the line and the key path (`xmppd.toml:12: c2s.starttls_listen: ...`),
//! because operators read them in a terminal or a unit's journal.
//!
//! This crate deliberately does not open sockets, read certificates or touch the database: it
//! only resolves relative paths and checks that configured certificate files exist.

mod acme;
mod admin_http;
mod contact;
mod directory;
mod error;
mod extdisco;
pub mod fuzzing;
mod http;
mod locate;
mod mam;
mod muc;
mod personal;
mod proxy65;
mod pubsub;
mod push;
mod s2s;
mod sections;
mod settings;
mod source;
mod storage;
#[cfg(test)]
mod tests;
mod upload;
mod validate;

pub use acme::{AcmeChallenge, AcmeSection, AcmeSettings};
pub use admin_http::{AdminHttpSection, AdminHttpSettings};
pub use contact::{ContactAddresses, ContactEntry};
pub use directory::{
    AuthBackendKind, AuthSection, BindPassword, LdapSection, LdapSettings, LdapTls, NestedGroups,
    SharedGroupEntry, SharedGroupSettings, SharedGroupSource, SharedRosterSection,
};
pub use error::ConfigError;
pub use extdisco::{ExtDiscoSection, ExtDiscoSettings, ExtService, ExtServiceEntry, TurnSecret};
pub use http::{HttpSection, HttpSettings};
pub use mam::{MamDefault, MamSection, MamSettings, DEFAULT_RETENTION_DAYS};
pub use muc::{MucCreation, MucSection, MucSettings};
pub use personal::{PersonalSettings, PrivateSection, VCardSection};
pub use proxy65::{Proxy65Section, Proxy65Settings};
pub use pubsub::{PubSubCreate, PubSubSection, PubSubSettings};
pub use push::{PushSection, PushSettings};
pub use s2s::{S2sSection, S2sSettings};
pub use sections::*;
pub use settings::*;
pub use source::Source;
pub use storage::{
    url_has_password, DatabaseSettings, DatabaseUrl, StorageBackend, StorageSection,
    StorageSettings, PASSWORD_ENV,
};
pub use upload::{UploadBackend, UploadSection, UploadSettings};
use validate::in_range;
pub use validate::normalise_domain;

/// The file looked for in the working directory when no `--config` is given.
pub const DEFAULT_FILE_NAME: &str = "xmppd.toml";

/// Name used in error messages when no file was read.
pub const BUILTIN_NAME: &str = "<built-in defaults>";
