//! The `urn:xmpp:extdisco:2` elements (XEP-0215 §3), written with xso derives: xmpp-parsers'
//! `Service` keeps its fields private, so it can be neither built nor read outside it.

use xso::{AsXml, FromXml};

pub const NS_EXTDISCO: &str = "urn:xmpp:extdisco:2";

/// `<service/>`: one server, with credentials when it needs them.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = NS_EXTDISCO, name = "service")]
pub struct Service {
    /// XEP-0082 DateTime after which the credentials no longer work.
    #[xml(attribute(default))]
    pub expires: Option<String>,
    #[xml(attribute)]
    pub host: String,
    #[xml(attribute(default))]
    pub name: Option<String>,
    #[xml(attribute(default))]
    pub password: Option<String>,
    #[xml(attribute(default))]
    pub port: Option<u16>,
    /// Credentials are needed (§3.1).
    #[xml(attribute(default))]
    pub restricted: Option<bool>,
    #[xml(attribute(default))]
    pub transport: Option<String>,
    #[xml(attribute = "type")]
    pub kind: String,
    #[xml(attribute(default))]
    pub username: Option<String>,
}

/// `<services/>` as a request (§3.1, §3.2: maybe restricted to one type).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = NS_EXTDISCO, name = "services")]
pub struct ServicesQuery {
    #[xml(attribute(default, name = "type"))]
    pub kind: Option<String>,
}

/// `<services/>` as an answer.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = NS_EXTDISCO, name = "services")]
pub struct ServicesResult {
    #[xml(attribute(default, name = "type"))]
    pub kind: Option<String>,
    #[xml(child(n = ..))]
    pub services: Vec<Service>,
}

/// `<credentials/>`: the request names a service (§3.3), the answer carries its credentials.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = NS_EXTDISCO, name = "credentials")]
pub struct CredentialsQuery {
    #[xml(child(n = ..))]
    pub services: Vec<Service>,
}

impl CredentialsQuery {
    pub fn is_credentials(el: &minidom::Element) -> bool {
        el.is("credentials", NS_EXTDISCO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minidom::Element;

    #[test]
    fn credentials_request_parses() {
        let el: Element = "<credentials xmlns='urn:xmpp:extdisco:2'>\
            <service host='turn.example.org' type='turn'/></credentials>"
            .parse()
            .unwrap();
        let q = CredentialsQuery::try_from(el).unwrap();
        assert_eq!(q.services[0].host, "turn.example.org");
        assert_eq!(q.services[0].kind, "turn");
        assert_eq!(q.services[0].port, None);
    }

    #[test]
    fn services_answer_serialises_attributes() {
        let el: Element = ServicesResult {
            kind: None,
            services: vec![Service {
                expires: Some("2026-01-01T00:00:00.000Z".into()),
                host: "192.0.2.1".into(),
                name: None,
                password: Some("pw".into()),
                port: Some(3478),
                restricted: Some(true),
                transport: Some("udp".into()),
                kind: "turn".into(),
                username: Some("1:alice@example.org".into()),
            }],
        }
        .into();
        let s = el.get_child("service", NS_EXTDISCO).unwrap();
        assert_eq!(s.attr("port"), Some("3478"));
        assert_eq!(s.attr("type"), Some("turn"));
        assert_eq!(s.attr("restricted"), Some("true"));
        assert_eq!(s.attr("username"), Some("1:alice@example.org"));
    }
}
