//! `[[contact]]`: the addresses a server publishes for reaching its operators (XEP-0157).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{normalise_domain, ConfigError};

/// One `[[contact]]` entry: addresses (URIs) per kind, for one host or every host.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContactEntry {
    /// The served host these addresses are for; none: every host without an entry of its own.
    pub host: Option<String>,
    pub abuse: Vec<String>,
    pub admin: Vec<String>,
    pub feedback: Vec<String>,
    pub sales: Vec<String>,
    pub security: Vec<String>,
    pub status: Vec<String>,
    pub support: Vec<String>,
}

/// A host's checked contact addresses: (XEP-0157 field, URIs) for each kind that has some,
/// in the XEP's order.
pub type ContactAddresses = Vec<(&'static str, Vec<String>)>;

impl ContactEntry {
    fn lists(&self) -> [(&'static str, &'static str, &Vec<String>); 7] {
        [
            ("abuse", "abuse-addresses", &self.abuse),
            ("admin", "admin-addresses", &self.admin),
            ("feedback", "feedback-addresses", &self.feedback),
            ("sales", "sales-addresses", &self.sales),
            ("security", "security-addresses", &self.security),
            ("status", "status-addresses", &self.status),
            ("support", "support-addresses", &self.support),
        ]
    }
}

/// Checks `[[contact]]`: served hosts, one entry per host (and one for every host), URIs.
/// The result has an entry for each host that publishes addresses.
pub(crate) fn validate_contact(
    entries: &[ContactEntry],
    hosts: &[String],
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<BTreeMap<String, ContactAddresses>, ConfigError> {
    let mut own: BTreeMap<String, ContactAddresses> = BTreeMap::new();
    let mut every: Option<ContactAddresses> = None;
    for (i, entry) in entries.iter().enumerate() {
        let mut lists = Vec::new();
        for (key, field, uris) in entry.lists() {
            for (j, uri) in uris.iter().enumerate() {
                check_uri(uri).map_err(|why| fail(&format!("contact[{i}].{key}[{j}]"), why))?;
            }
            if !uris.is_empty() {
                lists.push((field, uris.clone()));
            }
        }
        match &entry.host {
            Some(host) => {
                let path = format!("contact[{i}].host");
                let host = match normalise_domain(host) {
                    Ok(h) if hosts.contains(&h) => h,
                    _ => return Err(fail(&path, format!("{host:?} is not one of server.hosts"))),
                };
                if own.insert(host.clone(), lists).is_some() {
                    return Err(fail(&path, format!("a second entry for {host:?}")));
                }
            }
            None if every.is_some() => {
                let why = "a second entry without a host (one may apply to every host)";
                return Err(fail(&format!("contact[{i}]"), why.into()));
            }
            None => every = Some(lists),
        }
    }
    let mut out = BTreeMap::new();
    for host in hosts {
        let lists = own
            .remove(host)
            .or_else(|| every.clone())
            .unwrap_or_default();
        if !lists.is_empty() {
            out.insert(host.clone(), lists);
        }
    }
    Ok(out)
}

/// An absolute URI (RFC 3986 §3: a scheme, then something): `mailto:`, `xmpp:`, `https:`…
fn check_uri(uri: &str) -> Result<(), String> {
    let bad = || format!("{uri:?} is not a URI (like mailto:abuse@example.org or xmpp:…)");
    let (scheme, rest) = uri.split_once(':').ok_or_else(bad)?;
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok || rest.is_empty() || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_need_a_scheme_and_no_spaces() {
        assert!(check_uri("mailto:abuse@example.org").is_ok());
        assert!(check_uri("xmpp:admin@example.org?message").is_ok());
        assert!(check_uri("https://status.example.org/").is_ok());
        for bad in ["abuse@example.org", ":x", "1a:b", "mailto:", "mailto:a b"] {
            assert!(check_uri(bad).is_err(), "{bad}");
        }
    }
}
