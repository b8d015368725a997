//! The `<stream:features/>` xmppd offers at each step of client stream negotiation, and the
//! SASL mechanism list behind them. Pure functions: no I/O, no session state.

use xmppd_sasl::{CbType, ChannelBindings, HashAlg, Mechanism};
use xmppd_stream::Limits;

pub(crate) const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub(crate) const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub(crate) const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub(crate) const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub(crate) const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
const NS_SASL_CB: &str = "urn:xmpp:sasl-cb:0";
const NS_LIMITS: &str = "urn:xmpp:stream-limits:0";

/// Strongest first: clients pick the first one they support.
const SCRAM_ORDER: [HashAlg; 3] = [HashAlg::Sha512, HashAlg::Sha256, HashAlg::Sha1];

/// The mechanisms for a connection: SCRAM `-PLUS` only with channel-binding data, SCRAM only
/// when the backend has salted keys, PLAIN only under TLS.
pub(crate) fn offered_mechanisms(
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

/// `<stream:features>` before TLS on a STARTTLS listener. When TLS is optional the SASL
/// mechanisms (`mechs`, built without TLS) are offered next to it.
pub(crate) fn pre_tls(out: &mut Vec<u8>, required: bool, mechs: &[Mechanism], limits: &Limits) {
    out.extend_from_slice(b"<stream:features><starttls xmlns='");
    out.extend_from_slice(NS_TLS.as_bytes());
    if required {
        out.extend_from_slice(b"'><required/></starttls>");
    } else {
        out.extend_from_slice(b"'/>");
        write_mechanisms(out, mechs);
    }
    write_limits(out, limits);
    out.extend_from_slice(b"</stream:features>");
}

/// `<stream:features>` once TLS is up (or optional and declined), before authentication;
/// `extra` are the features of pre-authentication services (in-band registration, XEP-0077).
pub(crate) fn pre_auth(
    out: &mut Vec<u8>,
    mechs: &[Mechanism],
    cb: &[CbType],
    extra: &[minidom::Element],
    limits: &Limits,
) {
    out.extend_from_slice(b"<stream:features>");
    write_mechanisms(out, mechs);
    for feature in extra {
        xmppd_stream::serialize(feature, xmppd_stream::NS_CLIENT, out);
    }
    if !cb.is_empty() {
        out.extend_from_slice(b"<sasl-channel-binding xmlns='");
        out.extend_from_slice(NS_SASL_CB.as_bytes());
        out.extend_from_slice(b"'>");
        for t in cb {
            out.extend_from_slice(b"<channel-binding type='");
            out.extend_from_slice(t.name().as_bytes());
            out.extend_from_slice(b"'/>");
        }
        out.extend_from_slice(b"</sasl-channel-binding>");
    }
    write_limits(out, limits);
    out.extend_from_slice(b"</stream:features>");
}

/// `<stream:features>` after authentication: bind, the optional legacy session, whatever the
/// core's modules add, and the post-auth limits.
pub(crate) fn post_auth(out: &mut Vec<u8>, core: &[minidom::Element], limits: &Limits) {
    out.extend_from_slice(b"<stream:features><bind xmlns='");
    out.extend_from_slice(NS_BIND.as_bytes());
    out.extend_from_slice(b"'/><session xmlns='");
    out.extend_from_slice(NS_SESSION.as_bytes());
    out.extend_from_slice(b"'><optional/></session>");
    for el in core {
        xmppd_stream::serialize(el, xmppd_stream::NS_CLIENT, out);
    }
    write_limits(out, limits);
    out.extend_from_slice(b"</stream:features>");
}

fn write_mechanisms(out: &mut Vec<u8>, mechs: &[Mechanism]) {
    if mechs.is_empty() {
        return;
    }
    out.extend_from_slice(b"<mechanisms xmlns='");
    out.extend_from_slice(NS_SASL.as_bytes());
    out.extend_from_slice(b"'>");
    for m in mechs {
        out.extend_from_slice(b"<mechanism>");
        out.extend_from_slice(m.name().as_bytes());
        out.extend_from_slice(b"</mechanism>");
    }
    out.extend_from_slice(b"</mechanisms>");
}

/// XEP-0478: the largest stanza this stream accepts.
fn write_limits(out: &mut Vec<u8>, limits: &Limits) {
    out.extend_from_slice(b"<limits xmlns='");
    out.extend_from_slice(NS_LIMITS.as_bytes());
    out.extend_from_slice(b"'><max-bytes>");
    out.extend_from_slice(limits.max_stanza_bytes.to_string().as_bytes());
    out.extend_from_slice(b"</max-bytes></limits>");
}

/// Appends `s` with the five XML special characters escaped (attribute- and text-safe).
pub(crate) fn escape_into(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            b'\'' => out.extend_from_slice(b"&apos;"),
            b'"' => out.extend_from_slice(b"&quot;"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(m: &[Mechanism]) -> Vec<&'static str> {
        m.iter().map(|m| m.name()).collect()
    }

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
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
        let required = text(|o| pre_tls(o, true, &[Mechanism::Plain], &lim));
        assert!(required
            .contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"));
        assert!(!required.contains("<mechanisms"), "{required}");
        let optional = text(|o| {
            pre_tls(
                o,
                false,
                &[Mechanism::Scram {
                    alg: HashAlg::Sha256,
                    plus: false,
                }],
                &lim,
            )
        });
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
        let f = text(|o| {
            pre_auth(
                o,
                &mechs,
                &[CbType::TlsExporter, CbType::TlsServerEndPoint],
                &[],
                &lim,
            )
        });
        assert_eq!(
            f,
            "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
             <mechanism>SCRAM-SHA-256-PLUS</mechanism><mechanism>PLAIN</mechanism></mechanisms>\
             <sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>\
             <channel-binding type='tls-exporter'/><channel-binding type='tls-server-end-point'/>\
             </sasl-channel-binding><limits xmlns='urn:xmpp:stream-limits:0'>\
             <max-bytes>4321</max-bytes></limits></stream:features>"
        );
        let no_cb = text(|o| pre_auth(o, &mechs, &[], &[], &lim));
        assert!(!no_cb.contains("sasl-channel-binding"));
        let feature = minidom::Element::bare("register", "http://jabber.org/features/iq-register");
        let register = text(|o| pre_auth(o, &mechs, &[], &[feature], &lim));
        assert!(
            register.contains(
                "</mechanisms><register xmlns='http://jabber.org/features/iq-register'/>"
            ),
            "{register}"
        );
    }

    #[test]
    fn post_auth_features_include_core_features() {
        let ver = minidom::Element::bare("ver", "urn:xmpp:features:rosterver");
        let f = text(|o| post_auth(o, &[ver], &Limits::DEFAULT));
        assert!(f.starts_with("<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"));
        assert!(f.contains(
            "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>"
        ));
        assert!(f.contains("urn:xmpp:features:rosterver"), "{f}");
        assert!(f.contains(&format!(
            "<max-bytes>{}</max-bytes>",
            Limits::DEFAULT.max_stanza_bytes
        )));
    }

    #[test]
    fn escaping() {
        assert_eq!(
            text(|o| escape_into(o, "a<b>&'\"c")),
            "a&lt;b&gt;&amp;&apos;&quot;c"
        );
    }
}
