//! The `<stream:features/>` offered at each step before authentication, and the SASL mechanism
//! list behind them. Pure functions.

use minidom::Element;
use xmppd_sasl::{CbType, ChannelBindings, HashAlg, Mechanism};
use xmppd_stream::{Limits, NS_STREAM};

use crate::xml::{element, text_element};
use crate::{NS_SASL, NS_TLS};

const NS_SASL_CB: &str = "urn:xmpp:sasl-cb:0";
const NS_LIMITS: &str = "urn:xmpp:stream-limits:0";

/// Strongest first: clients pick the first one they support.
const SCRAM_ORDER: [HashAlg; 3] = [HashAlg::Sha512, HashAlg::Sha256, HashAlg::Sha1];

/// The mechanisms for a stream: SCRAM `-PLUS` only with channel-binding data, SCRAM only
/// when the backend has salted keys, PLAIN only under TLS.
pub fn offered_mechanisms(
    secure: bool,
    bindings: &ChannelBindings,
    backend_scram: bool,
) -> Vec<Mechanism> {
    let mut mechs = Vec::with_capacity(7);
    if backend_scram {
        if !bindings.available().is_empty() {
            mechs.extend(SCRAM_ORDER.map(|alg| Mechanism::Scram { alg, plus: true }));
        }
        mechs.extend(SCRAM_ORDER.map(|alg| Mechanism::Scram { alg, plus: false }));
    }
    if secure {
        mechs.push(Mechanism::Plain);
    }
    mechs
}

/// `<stream:features>` holding `children`, then the XEP-0478 limits.
pub(crate) fn features(children: Vec<Element>, limits: &Limits) -> Element {
    let mut features = Element::bare("features", NS_STREAM);
    for child in children {
        features.append_child(child);
    }
    let mut max = Element::bare("limits", NS_LIMITS);
    max.append_child(text_element(
        "max-bytes",
        NS_LIMITS,
        &limits.max_stanza_bytes.to_string(),
    ));
    features.append_child(max);
    features
}

/// Before TLS on a STARTTLS transport. When TLS is optional the SASL mechanisms (`mechs`,
/// built without TLS) are offered next to it.
pub(crate) fn pre_tls(required: bool, mechs: &[Mechanism]) -> Vec<Element> {
    let mut starttls = Element::bare("starttls", NS_TLS);
    let mut children = Vec::with_capacity(2);
    if required {
        starttls.append_child(Element::bare("required", NS_TLS));
        children.push(starttls);
    } else {
        children.push(starttls);
        children.extend(mechanisms(mechs));
    }
    children
}

/// Under TLS (or with TLS optional and declined), before authentication; `extra` are the
/// features of pre-authentication services (in-band registration, XEP-0077).
pub(crate) fn pre_auth(mechs: &[Mechanism], cb: &[CbType], extra: &[Element]) -> Vec<Element> {
    let mut children: Vec<Element> = mechanisms(mechs).into_iter().collect();
    children.extend(extra.iter().cloned());
    if !cb.is_empty() {
        // XEP-0440: the channel-binding types this stream supports.
        let mut types = Element::bare("sasl-channel-binding", NS_SASL_CB);
        for t in cb {
            types.append_child(element(
                "channel-binding",
                NS_SASL_CB,
                &[("type", t.name())],
            ));
        }
        children.push(types);
    }
    children
}

fn mechanisms(mechs: &[Mechanism]) -> Option<Element> {
    if mechs.is_empty() {
        return None;
    }
    let mut list = Element::bare("mechanisms", NS_SASL);
    for m in mechs {
        list.append_child(text_element("mechanism", NS_SASL, m.name()));
    }
    Some(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(m: &[Mechanism]) -> Vec<&'static str> {
        m.iter().map(|m| m.name()).collect()
    }

    fn text(children: Vec<Element>, limits: &Limits) -> String {
        let mut out = Vec::new();
        xmppd_stream::serialize(
            &features(children, limits),
            xmppd_stream::NS_CLIENT,
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn mechanisms_with_channel_binding() {
        let cb = ChannelBindings {
            tls_exporter: Some(vec![1; 32]),
            tls_server_end_point: None,
        };
        assert_eq!(
            names(&offered_mechanisms(true, &cb, true)),
            [
                "SCRAM-SHA-512-PLUS",
                "SCRAM-SHA-256-PLUS",
                "SCRAM-SHA-1-PLUS",
                "SCRAM-SHA-512",
                "SCRAM-SHA-256",
                "SCRAM-SHA-1",
                "PLAIN"
            ]
        );
    }

    #[test]
    fn mechanisms_without_binding_data_or_tls_or_scram() {
        let none = ChannelBindings::default();
        assert_eq!(
            names(&offered_mechanisms(true, &none, true)),
            ["SCRAM-SHA-512", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
        );
        assert_eq!(
            names(&offered_mechanisms(false, &none, true)),
            ["SCRAM-SHA-512", "SCRAM-SHA-256", "SCRAM-SHA-1"],
            "no PLAIN without TLS"
        );
        let cb = ChannelBindings {
            tls_exporter: None,
            tls_server_end_point: Some(vec![2; 32]),
        };
        assert_eq!(
            names(&offered_mechanisms(true, &cb, false)),
            ["PLAIN"],
            "password-only backend"
        );
        assert!(offered_mechanisms(false, &none, false).is_empty());
    }

    #[test]
    fn pre_tls_features() {
        let lim = Limits::PRE_AUTH;
        let required = text(pre_tls(true, &[Mechanism::Plain]), &lim);
        assert!(required
            .contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"));
        assert!(!required.contains("<mechanisms"), "{required}");
        let scram = Mechanism::Scram {
            alg: HashAlg::Sha256,
            plus: false,
        };
        let optional = text(pre_tls(false, &[scram]), &lim);
        assert!(optional.contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"));
        assert!(
            optional.contains("<mechanism>SCRAM-SHA-256</mechanism>"),
            "{optional}"
        );
    }

    #[test]
    fn pre_auth_features_carry_channel_binding_types_and_limits() {
        let lim = Limits {
            max_stanza_bytes: 4321,
            ..Limits::PRE_AUTH
        };
        let mechs = [
            Mechanism::Scram {
                alg: HashAlg::Sha256,
                plus: true,
            },
            Mechanism::Plain,
        ];
        let cb = [CbType::TlsExporter, CbType::TlsServerEndPoint];
        assert_eq!(
            text(pre_auth(&mechs, &cb, &[]), &lim),
            "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
             <mechanism>SCRAM-SHA-256-PLUS</mechanism><mechanism>PLAIN</mechanism></mechanisms>\
             <sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>\
             <channel-binding type='tls-exporter'/><channel-binding type='tls-server-end-point'/>\
             </sasl-channel-binding><limits xmlns='urn:xmpp:stream-limits:0'>\
             <max-bytes>4321</max-bytes></limits></stream:features>"
        );
        let no_cb = text(pre_auth(&mechs, &[], &[]), &lim);
        assert!(!no_cb.contains("sasl-channel-binding"));
        let feature = Element::bare("register", "http://jabber.org/features/iq-register");
        let register = text(pre_auth(&mechs, &[], &[feature]), &lim);
        assert!(
            register.contains(
                "</mechanisms><register xmlns='http://jabber.org/features/iq-register'/>"
            ),
            "{register}"
        );
    }
}
