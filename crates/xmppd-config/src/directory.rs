//! The directory-related sections: `[auth]` (the backend of each host), `[ldap]`, and
//! `[[shared_roster.group]]`, plus `server.admins` entries' JID check.
//!
//! Like the rest of this crate it only checks and resolves: the bind password file is not
//! read here (the server reads it at start), and nothing connects to the directory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{in_range, normalise_domain, ConfigError, Source};

/// `[auth]`: `default` applies to every host not named in `[auth.hosts]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    pub default: AuthBackendKind,
    pub hosts: BTreeMap<String, AuthBackendKind>,
}

/// Where a host's accounts live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthBackendKind {
    /// xmppd's own store (SCRAM keys in SQLite).
    #[default]
    Internal,
    /// The directory of the `[ldap]` section.
    Ldap,
}

/// `[ldap]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LdapSection {
    pub uri: String,
    pub bind_dn: String,
    pub bind_password: Option<String>,
    pub bind_password_file: Option<PathBuf>,
    pub base: String,
    pub user_filter: String,
    pub uid_attribute: String,
    /// `None`: `ldaps` for an `ldaps://` uri, else `starttls`.
    pub tls: Option<LdapTls>,
    pub ca_file: Option<PathBuf>,
    pub pool_size: u64,
    pub timeout_secs: u64,
    pub admin_group: Option<String>,
    pub group_member_attribute: String,
    pub refresh_secs: u64,
    pub scram_cache: bool,
    pub page_size: u64,
    /// 0: ask for the whole member attribute (and follow the ranges the directory sends).
    pub range_size: u64,
    pub nested_groups: NestedGroups,
    pub upn_suffixes: Vec<String>,
}

/// How groups within groups are resolved (`ldap.nested_groups`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NestedGroups {
    /// The in-chain rule on Active Directory (detected from the root DSE), else recursive.
    #[default]
    Auto,
    /// The matching rule 1.2.840.113556.1.4.1941 (Active Directory, Samba).
    InChain,
    /// Group entries read one by one (any directory).
    Recursive,
}

impl Default for LdapSection {
    fn default() -> Self {
        LdapSection {
            uri: String::new(),
            bind_dn: String::new(),
            bind_password: None,
            bind_password_file: None,
            base: String::new(),
            user_filter: "(&(objectClass=inetOrgPerson)(uid=%u))".into(),
            uid_attribute: "uid".into(),
            tls: None,
            ca_file: None,
            pool_size: 4,
            timeout_secs: 5,
            admin_group: None,
            group_member_attribute: "member".into(),
            refresh_secs: 300,
            scram_cache: false,
            page_size: 500,
            range_size: 0,
            nested_groups: NestedGroups::Auto,
            upn_suffixes: Vec::new(),
        }
    }
}

/// How the LDAP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LdapTls {
    None,
    StartTls,
    Ldaps,
}

/// The checked `[ldap]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapSettings {
    pub uri: String,
    pub bind_dn: String,
    pub bind_password: BindPassword,
    pub base: String,
    pub user_filter: String,
    pub uid_attribute: String,
    pub tls: LdapTls,
    /// Resolved against the configuration file's directory; the file exists.
    pub ca_file: Option<PathBuf>,
    pub pool_size: usize,
    pub timeout: Duration,
    /// The group whose members administer the server, as JIDs on every LDAP-backed host.
    pub admin_group: Option<String>,
    pub group_member_attribute: String,
    pub refresh: Duration,
    pub scram_cache: bool,
    /// Entries per page of the searches that can return many (RFC 2696).
    pub page_size: u32,
    /// Values per ranged read of the member attribute; `None`: the directory chooses.
    pub range_size: Option<u32>,
    pub nested_groups: NestedGroups,
    /// userPrincipalName suffixes a PLAIN user name may carry, lowercase.
    pub upn_suffixes: Vec<String>,
}

/// The service account's password, given inline or in a file read at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindPassword {
    None,
    Inline(String),
    /// Resolved; the file exists. Its content, less a trailing newline, is the password.
    File(PathBuf),
}

/// `[shared_roster]`: a list of `[[shared_roster.group]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharedRosterSection {
    #[serde(rename = "group")]
    pub groups: Vec<SharedGroupEntry>,
}

/// One `[[shared_roster.group]]`: a name and either `members` or `ldap_group`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedGroupEntry {
    pub name: String,
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default)]
    pub ldap_group: Option<String>,
    /// For `ldap_group`: the host of the members' JIDs.
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedGroupSettings {
    pub name: String,
    pub source: SharedGroupSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedGroupSource {
    /// Bare JIDs: localpart nodeprep'd, domain lowercased.
    Members(Vec<String>),
    /// An LDAP group's DN; its members' JIDs are on `host`.
    Ldap { dn: String, host: String },
}

/// The backend of every host: `[auth.hosts]` entries must name served hosts.
pub(crate) fn auth_backends(
    auth: &AuthSection,
    hosts: &[String],
    fail: &impl Fn(&str, String) -> ConfigError,
) -> Result<BTreeMap<String, AuthBackendKind>, ConfigError> {
    let mut out: BTreeMap<String, AuthBackendKind> =
        hosts.iter().map(|h| (h.clone(), auth.default)).collect();
    for (host, kind) in &auth.hosts {
        let path = format!("auth.hosts.{host}");
        match normalise_domain(host) {
            Ok(h) if out.contains_key(&h) => {
                out.insert(h, *kind);
            }
            _ => return Err(fail(&path, format!("{host:?} is not one of server.hosts"))),
        }
    }
    Ok(out)
}

impl LdapSection {
    pub(crate) fn validate(
        self,
        source: &Source,
        backends: &BTreeMap<String, AuthBackendKind>,
        fail: &impl Fn(&str, String) -> ConfigError,
    ) -> Result<LdapSettings, ConfigError> {
        let uri = self.uri.trim().to_owned();
        let lower = uri.to_ascii_lowercase();
        let ldaps_uri = lower.starts_with("ldaps://");
        if !ldaps_uri && !lower.starts_with("ldap://") {
            let why = format!("{uri:?} is not an ldap:// or ldaps:// URI");
            return Err(fail("ldap.uri", why));
        }
        let tls = match (self.tls, ldaps_uri) {
            (None, true) => LdapTls::Ldaps,
            (None, false) => LdapTls::StartTls,
            (Some(LdapTls::Ldaps), false) => {
                return Err(fail("ldap.tls", "ldaps needs an ldaps:// uri".into()))
            }
            (Some(LdapTls::None | LdapTls::StartTls), true) => {
                return Err(fail(
                    "ldap.tls",
                    "an ldaps:// uri is always TLS: use ldaps".into(),
                ))
            }
            (Some(t), _) => t,
        };
        if self.base.trim().is_empty() {
            return Err(fail("ldap.base", "the search base is required".into()));
        }
        if !self.user_filter.contains("%u") {
            let why = "must contain %u (where the user name goes)".into();
            return Err(fail("ldap.user_filter", why));
        }
        for (key, value) in [
            ("ldap.uid_attribute", &self.uid_attribute),
            ("ldap.group_member_attribute", &self.group_member_attribute),
        ] {
            if value.trim().is_empty() || value.contains(['(', ')', '=', ' ']) {
                return Err(fail(key, format!("{value:?} is not an attribute name")));
            }
        }
        let existing = |key: &str, p: &PathBuf| -> Result<PathBuf, ConfigError> {
            let full = source.base_dir.join(p);
            if p.as_os_str().is_empty() || !full.is_file() {
                return Err(fail(key, format!("file not found: {}", full.display())));
            }
            Ok(full)
        };
        let bind_password = match (self.bind_password, &self.bind_password_file) {
            (Some(_), Some(_)) => {
                let why = "set bind_password or bind_password_file, not both".into();
                return Err(fail("ldap.bind_password_file", why));
            }
            (Some(p), None) => BindPassword::Inline(p),
            (None, Some(f)) => BindPassword::File(existing("ldap.bind_password_file", f)?),
            (None, None) => BindPassword::None,
        };
        let ca_file = match &self.ca_file {
            Some(f) => Some(existing("ldap.ca_file", f)?),
            None => None,
        };
        let pool_size =
            in_range(self.pool_size, 1, 64).map_err(|why| fail("ldap.pool_size", why))?;
        let timeout_secs =
            in_range(self.timeout_secs, 1, 300).map_err(|why| fail("ldap.timeout_secs", why))?;
        let refresh_secs =
            in_range(self.refresh_secs, 1, 86_400).map_err(|why| fail("ldap.refresh_secs", why))?;
        let page_size =
            in_range(self.page_size, 1, 100_000).map_err(|why| fail("ldap.page_size", why))?;
        let range_size = match self.range_size {
            0 => None,
            n => Some(in_range(n, 1, 100_000).map_err(|why| fail("ldap.range_size", why))?),
        };
        let mut upn_suffixes = Vec::with_capacity(self.upn_suffixes.len());
        for suffix in &self.upn_suffixes {
            let lower = suffix.trim().to_ascii_lowercase();
            if lower.is_empty() || lower.contains(['@', ' ', '/']) {
                let why = format!("{suffix:?} is not a suffix (a domain such as corp.example)");
                return Err(fail("ldap.upn_suffixes", why));
            }
            upn_suffixes.push(lower);
        }
        let ldap_host = backends.values().any(|k| *k == AuthBackendKind::Ldap);
        if self.admin_group.is_some() && !ldap_host {
            let why = "administrators from LDAP need a host whose auth backend is ldap".into();
            return Err(fail("ldap.admin_group", why));
        }
        Ok(LdapSettings {
            uri,
            bind_dn: self.bind_dn,
            bind_password,
            base: self.base,
            user_filter: self.user_filter,
            uid_attribute: self.uid_attribute,
            tls,
            ca_file,
            pool_size,
            timeout: Duration::from_secs(timeout_secs as u64),
            admin_group: self.admin_group.filter(|g| !g.trim().is_empty()),
            group_member_attribute: self.group_member_attribute,
            refresh: Duration::from_secs(refresh_secs as u64),
            scram_cache: self.scram_cache,
            page_size: page_size as u32,
            range_size: range_size.map(|n| n as u32),
            nested_groups: self.nested_groups,
            upn_suffixes,
        })
    }
}

impl SharedRosterSection {
    pub(crate) fn validate(
        self,
        hosts: &[String],
        backends: &BTreeMap<String, AuthBackendKind>,
        ldap: &Option<LdapSettings>,
        fail: &impl Fn(&str, String) -> ConfigError,
    ) -> Result<Vec<SharedGroupSettings>, ConfigError> {
        let mut out: Vec<SharedGroupSettings> = Vec::with_capacity(self.groups.len());
        for (i, group) in self.groups.into_iter().enumerate() {
            let at = |k: &str| format!("shared_roster.group[{i}].{k}");
            let name = group.name.trim().to_owned();
            if name.is_empty() || out.iter().any(|g| g.name == name) {
                let why = format!("{name:?}: group names must be non-empty and unique");
                return Err(fail(&at("name"), why));
            }
            let source = match (group.ldap_group, group.members.is_empty()) {
                (Some(_), false) => {
                    let why = "set members or ldap_group, not both".into();
                    return Err(fail(&at("ldap_group"), why));
                }
                (None, true) => {
                    let why = "set members (JIDs) or ldap_group (a group DN)".into();
                    return Err(fail(&at("name"), why));
                }
                (None, false) => {
                    let mut members = Vec::with_capacity(group.members.len());
                    for m in &group.members {
                        let jid = normalise_bare_jid(m).map_err(|why| fail(&at("members"), why))?;
                        members.push(jid);
                    }
                    SharedGroupSource::Members(members)
                }
                (Some(dn), true) => {
                    if ldap.is_none() {
                        let why = "ldap_group needs an [ldap] section".into();
                        return Err(fail(&at("ldap_group"), why));
                    }
                    let host = match &group.host {
                        Some(h) => match normalise_domain(h) {
                            Ok(h) if hosts.contains(&h) => h,
                            _ => {
                                let why = format!("{h:?} is not one of server.hosts");
                                return Err(fail(&at("host"), why));
                            }
                        },
                        None => match backends.iter().find(|(_, k)| **k == AuthBackendKind::Ldap) {
                            Some((h, _)) => h.clone(),
                            None => {
                                let why = "no host uses ldap: name the members' host".into();
                                return Err(fail(&at("ldap_group"), why));
                            }
                        },
                    };
                    SharedGroupSource::Ldap { dn, host }
                }
            };
            out.push(SharedGroupSettings { name, source });
        }
        Ok(out)
    }
}

/// Checks a bare JID `user@domain` (no resource) and writes it the way the server compares
/// JIDs: the localpart nodeprep'd (RFC 7622 §3.3, as accounts are named at login), the domain
/// lowercased. Lowercasing alone would keep `Straße@…` from ever matching the account
/// `strasse@…`.
pub(crate) fn normalise_bare_jid(input: &str) -> Result<String, String> {
    let bad = |why: &str| format!("{input:?} is not a bare JID (user@domain): {why}");
    let (user, domain) = input.trim().split_once('@').ok_or_else(|| bad("no '@'"))?;
    if domain.contains('/') {
        return Err(bad("a resource is not allowed"));
    }
    let user = jid::NodePart::new(user).map_err(|_| bad("invalid user part"))?;
    let domain = normalise_domain(domain).map_err(bad)?;
    Ok(format!("{user}@{domain}"))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::{Source, ValidatedConfig};

    use super::*;

    fn load(text: &str) -> Result<ValidatedConfig, ConfigError> {
        Source::new("t.toml", text, PathBuf::from("/etc/xmppd")).load()
    }

    const HOSTS: &str = "[server]\nhosts = [\"a.org\", \"corp.org\"]\n";
    const LDAP: &str = "[ldap]\nuri = \"ldap://127.0.0.1:389\"\nbase = \"dc=corp\"\n";

    #[test]
    fn hosts_use_the_default_backend_unless_named() {
        let c = load(HOSTS).unwrap();
        assert!(c
            .auth_backends
            .values()
            .all(|k| *k == AuthBackendKind::Internal));
        assert!(c.ldap.is_none() && c.shared_groups.is_empty() && c.server.admins.is_empty());

        let text = format!("{HOSTS}[auth.hosts]\n\"Corp.org\" = \"ldap\"\n{LDAP}");
        let c = load(&text).unwrap();
        assert_eq!(c.auth_backends["a.org"], AuthBackendKind::Internal);
        assert_eq!(c.auth_backends["corp.org"], AuthBackendKind::Ldap);
        let ldap = c.ldap.unwrap();
        assert_eq!(
            ldap.tls,
            LdapTls::StartTls,
            "StartTLS unless told otherwise"
        );
        assert_eq!(ldap.timeout, Duration::from_secs(5));
        assert_eq!(ldap.pool_size, 4);
        assert!(!ldap.scram_cache);

        let e = load(&format!("{HOSTS}[auth.hosts]\n\"corp.org\" = \"ldap\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("auth"), "{e}");
        let e = load(&format!("{HOSTS}[auth.hosts]\n\"x.org\" = \"ldap\"\n")).unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(4), Some("auth.hosts.x.org"))
        );
        let e = load(&format!("{HOSTS}[auth]\ndefault = \"kerberos\"\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("auth.default")));
    }

    #[test]
    fn ldap_keys_are_checked_with_their_line() {
        let base = format!("{HOSTS}[auth]\ndefault = \"ldap\"\n{LDAP}");
        let cases = [
            ("tls = \"ldaps\"\n", "ldap.tls"),
            ("user_filter = \"(uid=alice)\"\n", "ldap.user_filter"),
            ("pool_size = 0\n", "ldap.pool_size"),
            ("timeout_secs = 0\n", "ldap.timeout_secs"),
            ("ca_file = \"missing.pem\"\n", "ldap.ca_file"),
            ("uid_attribute = \"a b\"\n", "ldap.uid_attribute"),
            ("page_size = 0\n", "ldap.page_size"),
            ("range_size = 100001\n", "ldap.range_size"),
            ("nested_groups = \"deep\"\n", "ldap.nested_groups"),
            ("upn_suffixes = [\"a@b\"]\n", "ldap.upn_suffixes"),
            (
                "bind_password_file = \"f\"\nbind_password = \"x\"\n",
                "ldap.bind_password_file",
            ),
        ];
        for (extra, key) in cases {
            let e = load(&format!("{base}{extra}")).unwrap_err();
            assert_eq!(
                (e.line, e.key.as_deref()),
                (Some(8), Some(key)),
                "{extra}: {e}"
            );
        }
        let e = load(&base.replace("ldap://", "http://")).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(6), Some("ldap.uri")));
        let c = load(&base.replace("ldap://", "ldaps://")).unwrap();
        let ldap = c.ldap.unwrap();
        assert_eq!(ldap.tls, LdapTls::Ldaps);
        assert_eq!(
            (ldap.page_size, ldap.range_size, ldap.nested_groups),
            (500, None, NestedGroups::Auto)
        );
        let extra = "page_size = 100\nrange_size = 10\nnested_groups = \"in_chain\"\n";
        let ldap = load(&format!("{base}{extra}")).unwrap().ldap.unwrap();
        assert_eq!(
            (ldap.page_size, ldap.range_size, ldap.nested_groups),
            (100, Some(10), NestedGroups::InChain)
        );
        // An LDAP admin group with no LDAP host could never map anyone to a JID.
        let e = load(&format!("{HOSTS}{LDAP}admin_group = \"cn=admins\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("ldap.admin_group"));
    }

    #[test]
    fn admins_and_shared_groups() {
        let text = format!(
            "[server]\nhosts = [\"a.org\", \"corp.org\"]\nadmins = [\"Root@A.org\"]\n\
             [auth.hosts]\n\"corp.org\" = \"ldap\"\n{LDAP}\
             [[shared_roster.group]]\nname = \"Ops\"\nmembers = [\"x@a.org\", \"Y@a.org\"]\n\
             [[shared_roster.group]]\nname = \"Staff\"\nldap_group = \"cn=staff,dc=corp\"\n"
        );
        let c = load(&text).unwrap();
        assert_eq!(c.server.admins, ["root@a.org"]);
        assert_eq!(
            c.shared_groups,
            [
                SharedGroupSettings {
                    name: "Ops".into(),
                    source: SharedGroupSource::Members(vec!["x@a.org".into(), "y@a.org".into()]),
                },
                SharedGroupSettings {
                    name: "Staff".into(),
                    source: SharedGroupSource::Ldap {
                        dn: "cn=staff,dc=corp".into(),
                        host: "corp.org".into(),
                    },
                },
            ]
        );

        // As accounts are named at login: nodeprep folds ß to "ss" (RFC 3454 B.2).
        let c = load("[server]\nadmins = [\"Stra\u{df}e@localhost\"]\n").unwrap();
        assert_eq!(c.server.admins, ["strasse@localhost"]);
        let e = load("[server]\nadmins = [\"a\u{2028}b@localhost\"]\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("server.admins"));
        let e = load("[server]\nadmins = [\"root\"]\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("server.admins")));
        let e = load("[server]\nadmins = [\"a@b.org/res\"]\n").unwrap_err();
        assert!(e.message.contains("resource"), "{e}");
        let group = |body: &str| load(&format!("[[shared_roster.group]]\n{body}")).unwrap_err();
        let e = group("name = \"G\"\n");
        assert_eq!(e.key.as_deref(), Some("shared_roster.group[0].name"));
        let e = group("name = \"G\"\nmembers = [\"nojid\"]\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("shared_roster.group[0].members"))
        );
        let e = group("name = \"G\"\nldap_group = \"cn=g\"\n");
        assert!(e.message.contains("[ldap]"), "{e}");
    }
}
