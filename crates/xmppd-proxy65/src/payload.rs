//! The `http://jabber.org/protocol/bytestreams` query (XEP-0065 §6), written with xso
//! derives: xmpp-parsers has no XEP-0065 types.

use xso::{AsXml, FromXml};

pub const NS_BYTESTREAMS: &str = "http://jabber.org/protocol/bytestreams";

/// `<query/>`: empty to ask a proxy for its address (§6.3.1), with `<streamhost/>` in the
/// answer; with `sid` and `<activate/>` to activate a bytestream (§6.3.4).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Default)]
#[xml(namespace = NS_BYTESTREAMS, name = "query")]
pub struct Query {
    #[xml(attribute(default))]
    pub sid: Option<String>,
    /// `tcp` (the default) or `udp`, which the proxy does not offer.
    #[xml(attribute(default))]
    pub mode: Option<String>,
    #[xml(attribute(default))]
    pub dstaddr: Option<String>,
    #[xml(child(n = ..))]
    pub streamhosts: Vec<StreamHost>,
    #[xml(child(default))]
    pub activate: Option<Activate>,
}

/// `<streamhost/>`: where a proxy takes SOCKS5 connections.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = NS_BYTESTREAMS, name = "streamhost")]
pub struct StreamHost {
    #[xml(attribute)]
    pub jid: String,
    #[xml(attribute)]
    pub host: String,
    #[xml(attribute(default))]
    pub port: Option<u16>,
}

/// `<activate/>`: the target's full JID.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = NS_BYTESTREAMS, name = "activate")]
pub struct Activate {
    #[xml(text)]
    pub jid: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use minidom::Element;

    #[test]
    fn activation_request_parses() {
        let el: Element =
            "<query xmlns='http://jabber.org/protocol/bytestreams' sid='vxf9n471bn46'>\
            <activate>target@example.org/bar</activate></query>"
                .parse()
                .unwrap();
        let q = Query::try_from(el).unwrap();
        assert_eq!(q.sid.as_deref(), Some("vxf9n471bn46"));
        assert_eq!(q.activate.unwrap().jid, "target@example.org/bar");
    }

    #[test]
    fn streamhost_answer_serialises() {
        let el: Element = Query {
            streamhosts: vec![StreamHost {
                jid: "proxy.example.org".into(),
                host: "192.0.2.7".into(),
                port: Some(7777),
            }],
            ..Query::default()
        }
        .into();
        let sh = el.get_child("streamhost", NS_BYTESTREAMS).unwrap();
        assert_eq!(sh.attr("host"), Some("192.0.2.7"));
        assert_eq!(sh.attr("port"), Some("7777"));
    }
}
