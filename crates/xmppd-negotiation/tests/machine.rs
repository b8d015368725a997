//! The negotiation machine driven by events, its actions asserted: no sockets, no clock.

use std::sync::Arc;

use base64::Engine;
use jid::{BareJid, FullJid};
use minidom::Element;
use xmppd_negotiation::{
    Action, BackendFailure, BindRefusal, ClientRole, Event, HostPolicy, Negotiation, Request,
    Settings, TlsStep, NS_BIND, NS_SASL, NS_TLS,
};
use xmppd_sasl::client::ScramClient;
use xmppd_sasl::{ChannelBindings, HashAlg, ScramKeys};
use xmppd_stream::{Limits, StreamErrorCondition as Cond, StreamHeader, NS_CLIENT};

const HOST: &str = "example.org";
const NS_REGISTER: &str = "jabber:iq:register";

type Machine = Negotiation<ClientRole>;
type Actions = Vec<Action<ClientRole>>;

fn settings(require_tls: bool, max_auth_failures: u32) -> Arc<Settings> {
    Arc::new(Settings {
        hosts: vec![HostPolicy {
            name: HOST.into(),
            scram: true,
            login_suffixes: vec!["upn.example".into()],
            pre_auth: vec![(
                NS_REGISTER.into(),
                Element::bare("register", "http://jabber.org/features/iq-register"),
            )],
        }],
        require_tls,
        pre_auth_limits: Limits {
            max_stanza_bytes: 1111,
            ..Limits::PRE_AUTH
        },
        limits: Limits {
            max_stanza_bytes: 99999,
            ..Limits::DEFAULT
        },
        max_auth_failures,
        pre_auth_namespaces: vec![NS_REGISTER.into()],
        sasl2: None,
    })
}

fn machine(tls: TlsStep, settings: Arc<Settings>) -> Machine {
    let features: Arc<[Element]> = vec![Element::bare("ver", "urn:xmpp:features:rosterver")].into();
    Negotiation::new(ClientRole::new(features), settings, tls)
}

fn header() -> Event<ClientRole> {
    Event::StreamOpened(StreamHeader {
        to: Some(HOST.into()),
        version: Some("1.0".into()),
        default_ns: Some(NS_CLIENT.into()),
        ..Default::default()
    })
}

fn el(xml: &str) -> Event<ClientRole> {
    Event::Element(xml.parse().expect("test XML"))
}

fn xml(el: &Element) -> String {
    let mut out = Vec::new();
    xmppd_stream::serialize(el, NS_CLIENT, &mut out);
    String::from_utf8(out).unwrap()
}

/// Everything sent, as text.
fn sent(actions: &Actions) -> String {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(el) => Some(xml(el)),
            _ => None,
        })
        .collect()
}

fn stream_error(actions: &Actions) -> Option<Cond> {
    actions.iter().find_map(|a| match a {
        Action::StreamError(cond, _) => Some(*cond),
        _ => None,
    })
}

fn auth(mech: &str, data: &[u8]) -> Event<ClientRole> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    el(&format!(
        "<auth xmlns='{NS_SASL}' mechanism='{mech}'>{b64}</auth>"
    ))
}

fn response(data: &[u8]) -> Event<ClientRole> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    el(&format!("<response xmlns='{NS_SASL}'>{b64}</response>"))
}

/// The single request among `actions`.
fn request(actions: Actions) -> Request<ClientRole> {
    let mut asks = actions.into_iter().filter_map(|a| match a {
        Action::Ask(r) => Some(r),
        _ => None,
    });
    let r = asks.next().expect("a request");
    assert!(asks.next().is_none());
    r
}

/// A direct-TLS machine with channel-binding data `cb`, at its pre-auth features.
fn secure(settings: Arc<Settings>, cb: ChannelBindings) -> (Machine, Actions) {
    let mut m = machine(TlsStep::Direct, settings);
    assert!(matches!(m.start().as_slice(), [Action::UpgradeTls]));
    assert!(m.handle(Event::TlsEstablished(cb)).is_empty());
    let a = m.handle(header());
    (m, a)
}

fn user() -> BareJid {
    BareJid::new("juliet@example.org").unwrap()
}

/// PLAIN for juliet up to the password check.
fn plain_to_password_check(m: &mut Machine, password: &str) {
    let creds = format!("\0Juliet\0{password}");
    match request(m.handle(auth("PLAIN", creds.as_bytes()))) {
        Request::Turn { account } => assert_eq!(account, "juliet@example.org"),
        other => panic!("{other:?}"),
    }
    match request(m.handle(Event::Waited)) {
        Request::CheckPassword {
            user: u,
            password: p,
        } => {
            assert_eq!(u, user());
            assert_eq!(p, password);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn starttls_is_offered_and_required_before_auth() {
    let mut m = machine(TlsStep::StartTls, settings(true, 3));
    assert!(m.start().is_empty());
    let a = m.handle(header());
    assert!(matches!(&a[0], Action::OpenStream(o) if o.from == HOST && o.ns == NS_CLIENT));
    let features = sent(&a);
    assert!(
        features.contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>"),
        "{features}"
    );
    assert!(!features.contains("mechanism"), "{features}");
    let a = m.handle(auth("PLAIN", b"\0juliet\0pw"));
    assert_eq!(stream_error(&a), Some(Cond::PolicyViolation));
}

#[test]
fn starttls_then_new_stream_under_tls() {
    let mut m = machine(TlsStep::StartTls, settings(true, 3));
    m.handle(header());
    let a = m.handle(el(&format!("<starttls xmlns='{NS_TLS}'/>")));
    assert!(sent(&a).contains("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"));
    assert!(matches!(a.last(), Some(Action::UpgradeTls)));
    assert!(m
        .handle(Event::TlsEstablished(ChannelBindings::default()))
        .is_empty());
    assert!(m.is_secure());
    let features = sent(&m.handle(header()));
    assert!(
        features.contains("<mechanism>PLAIN</mechanism>"),
        "{features}"
    );
    assert!(!features.contains("starttls"), "{features}");
    // A second STARTTLS has no place under TLS.
    let a = m.handle(el(&format!("<starttls xmlns='{NS_TLS}'/>")));
    assert_eq!(stream_error(&a), Some(Cond::PolicyViolation));
}

#[test]
fn plain_is_never_offered_or_accepted_without_tls() {
    let mut m = machine(TlsStep::StartTls, settings(false, 3));
    let features = sent(&m.handle(header()));
    assert!(
        features.contains("<mechanism>SCRAM-SHA-256</mechanism>"),
        "{features}"
    );
    assert!(!features.contains("PLAIN"), "{features}");
    let a = m.handle(auth("PLAIN", b"\0juliet\0pw"));
    let answer = sent(&a);
    assert!(answer.contains("<encryption-required/>"), "{answer}");
    assert_eq!(
        stream_error(&a),
        None,
        "a failure, not the end of the stream"
    );
    assert!(!a.iter().any(|a| matches!(a, Action::Ask(_))));
}

#[test]
fn plain_login_bind_and_ready() {
    let (mut m, a) = secure(settings(true, 3), ChannelBindings::default());
    let features = sent(&a);
    assert!(
        features.contains("<max-bytes>1111</max-bytes>"),
        "pre-auth limits: {features}"
    );
    assert!(features.contains("iq-register"), "{features}");
    plain_to_password_check(&mut m, "pw");
    match request(m.handle(Event::PasswordChecked(Ok(true)))) {
        Request::CheckAccount { user: u } => assert_eq!(u, user()),
        other => panic!("{other:?}"),
    }
    let a = m.handle(Event::AccountChecked { enabled: true });
    assert!(matches!(&a[0], Action::Authenticated { user: u, .. } if *u == user()));
    assert_eq!(sent(&a), format!("<success xmlns='{NS_SASL}'/>"));
    assert!(
        matches!(a.last(), Some(Action::RestartStream { limits }) if limits.max_stanza_bytes == 99999)
    );
    assert_eq!(m.user(), Some(&user()));
    let features = sent(&m.handle(header()));
    assert!(
        features.contains(&format!("<bind xmlns='{NS_BIND}'/>")),
        "{features}"
    );
    assert!(features.contains("rosterver"), "{features}");
    assert!(
        features.contains("<max-bytes>99999</max-bytes>"),
        "{features}"
    );
    // The legacy session request is answered before binding too.
    let a = m.handle(el(&format!(
        "<iq xmlns='{NS_CLIENT}' type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"
    )));
    assert!(sent(&a).contains("type='result'"), "{}", sent(&a));
    let bind = format!(
        "<iq xmlns='{NS_CLIENT}' type='set' id='b1'><bind xmlns='{NS_BIND}'><resource>balcony</resource></bind></iq>"
    );
    match request(m.handle(el(&bind))) {
        Request::Role(r) => {
            assert_eq!(r.user, user());
            assert_eq!(r.resource.as_deref(), Some("balcony"));
        }
        other => panic!("{other:?}"),
    }
    // A refused bind is answered; the client may try again.
    let a = m.handle(Event::Role(Err(BindRefusal::ResourceConstraint)));
    assert!(sent(&a).contains("<resource-constraint"), "{}", sent(&a));
    assert!(!m.is_done());
    let _ = request(m.handle(el(&bind)));
    let jid = FullJid::new("juliet@example.org/balcony").unwrap();
    let a = m.handle(Event::Role(Ok(jid.clone())));
    assert!(
        sent(&a).contains("<jid>juliet@example.org/balcony</jid>"),
        "{}",
        sent(&a)
    );
    assert!(sent(&a).contains("id='b1'"), "{}", sent(&a));
    assert!(matches!(a.last(), Some(Action::Ready(j)) if *j == jid));
    assert!(m.is_done());
    assert!(
        m.handle(Event::DeadlinePassed).is_empty(),
        "nothing after the end"
    );
}

#[test]
fn wrong_password_backs_off_and_too_many_end_the_stream() {
    let (mut m, _) = secure(settings(true, 2), ChannelBindings::default());
    plain_to_password_check(&mut m, "bad");
    match request(m.handle(Event::PasswordChecked(Ok(false)))) {
        Request::Backoff { account } => assert_eq!(account, "juliet@example.org"),
        other => panic!("{other:?}"),
    }
    let a = m.handle(Event::Waited);
    let answer = sent(&a);
    assert!(answer.contains("<not-authorized/>"), "{answer}");
    assert!(
        !answer.contains("<text"),
        "after a proof, no reason: {answer}"
    );
    assert_eq!(stream_error(&a), None);
    plain_to_password_check(&mut m, "bad");
    let _ = request(m.handle(Event::PasswordChecked(Ok(false))));
    let a = m.handle(Event::Waited);
    assert_eq!(stream_error(&a), Some(Cond::PolicyViolation));
}

#[test]
fn backend_outage_and_disabled_account_fail_the_attempt() {
    let (mut m, _) = secure(settings(true, 5), ChannelBindings::default());
    plain_to_password_check(&mut m, "pw");
    let a = m.handle(Event::PasswordChecked(Err(BackendFailure("down".into()))));
    assert!(
        sent(&a).contains("<temporary-auth-failure/>"),
        "{}",
        sent(&a)
    );
    plain_to_password_check(&mut m, "pw");
    let _ = request(m.handle(Event::PasswordChecked(Ok(true))));
    let a = m.handle(Event::AccountChecked { enabled: false });
    assert!(sent(&a).contains("<account-disabled/>"), "{}", sent(&a));
    assert!(!a.iter().any(|a| matches!(a, Action::Authenticated { .. })));
    assert_eq!(m.user(), None);
}

#[test]
fn throttle_account_is_the_authcid_when_it_is_no_localpart() {
    let (mut m, _) = secure(settings(true, 5), ChannelBindings::default());
    match request(m.handle(auth("PLAIN", b"\0a@b\0pw"))) {
        Request::Turn { account } => assert_eq!(account, "a@b"),
        other => panic!("{other:?}"),
    }
    // Not an account: no backend lookup, a counted failure after the throttle's delay.
    match request(m.handle(Event::Waited)) {
        Request::Backoff { account } => assert_eq!(account, "a@b"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_login_suffix_of_the_host_is_dropped_from_the_plain_user_name() {
    // The host accepts userPrincipalName-style names ending in @upn.example (any case).
    for name in ["juliet@upn.example", "Juliet@UPN.Example"] {
        let (mut m, _) = secure(settings(true, 5), ChannelBindings::default());
        let creds = format!("\0{name}\0pw");
        match request(m.handle(auth("PLAIN", creds.as_bytes()))) {
            Request::Turn { account } => assert_eq!(account, "juliet@example.org"),
            other => panic!("{other:?}"),
        }
        match request(m.handle(Event::Waited)) {
            Request::CheckPassword { user: u, .. } => assert_eq!(u, user()),
            other => panic!("{other:?}"),
        }
    }
    // Another suffix is no account name.
    let (mut m, _) = secure(settings(true, 5), ChannelBindings::default());
    match request(m.handle(auth("PLAIN", b"\0juliet@other.example\0pw"))) {
        Request::Turn { account } => assert_eq!(account, "juliet@other.example"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn failures_before_any_proof_do_not_count() {
    let (mut m, _) = secure(settings(true, 1), ChannelBindings::default());
    for _ in 0..xmppd_sasl::UNCOUNTED_BEFORE_PROOF {
        let a = m.handle(auth("X-UNKNOWN", b"x"));
        let answer = sent(&a);
        assert!(answer.contains("<invalid-mechanism/>"), "{answer}");
        assert!(
            answer.contains("<text xml:lang='en'>"),
            "reason named: {answer}"
        );
        assert_eq!(stream_error(&a), None);
    }
    let a = m.handle(auth("X-UNKNOWN", b"x"));
    assert_eq!(stream_error(&a), Some(Cond::PolicyViolation));
}

#[test]
fn abort_and_bad_encoding_fail_before_proof() {
    let (mut m, _) = secure(settings(true, 1), ChannelBindings::default());
    let a = m.handle(el(&format!("<auth xmlns='{NS_SASL}' mechanism='PLAIN'/>")));
    assert_eq!(sent(&a), format!("<challenge xmlns='{NS_SASL}'/>"));
    let a = m.handle(el(&format!("<abort xmlns='{NS_SASL}'/>")));
    assert!(sent(&a).contains("<aborted/>"));
    let a = m.handle(el(&format!(
        "<auth xmlns='{NS_SASL}' mechanism='PLAIN'>!!</auth>"
    )));
    assert!(sent(&a).contains("<incorrect-encoding/>"));
    assert_eq!(stream_error(&a), None);
}

/// One SCRAM-SHA-256 exchange of `client` against the machine, the account's keys given.
fn scram(m: &mut Machine, mut client: ScramClient, keys: &ScramKeys) -> Actions {
    let first = client.client_first();
    let name = client.mechanism().name();
    let a = m.handle(auth(name, &first));
    if !a
        .iter()
        .any(|a| matches!(a, Action::Ask(Request::Turn { .. })))
    {
        return a;
    }
    match request(m.handle(Event::Waited)) {
        Request::ScramKeys { user: u, alg } => {
            assert_eq!(u, user());
            assert_eq!(alg, HashAlg::Sha256);
        }
        other => panic!("{other:?}"),
    }
    let a = m.handle(Event::ScramKeys(Ok(Some(keys.clone()))));
    let challenge: Element = match &a[..] {
        [Action::Send(c)] => c.clone(),
        other => panic!("{other:?}"),
    };
    let server_first = base64::engine::general_purpose::STANDARD
        .decode(challenge.text())
        .unwrap();
    let client_final = client.client_final(&server_first).unwrap();
    let a = m.handle(response(&client_final));
    if !a
        .iter()
        .any(|a| matches!(a, Action::Ask(Request::CheckAccount { .. })))
    {
        return a;
    }
    m.handle(Event::AccountChecked { enabled: true })
}

fn authenticated(a: &Actions) -> bool {
    a.iter().any(|a| matches!(a, Action::Authenticated { .. }))
}

#[test]
fn scram_login() {
    let (mut m, _) = secure(settings(true, 3), ChannelBindings::default());
    let keys = ScramKeys::generate(HashAlg::Sha256, "secret", 4096).unwrap();
    let wrong = scram(
        &mut m,
        ScramClient::new(HashAlg::Sha256, "juliet", "wrong", None),
        &keys,
    );
    assert!(wrong
        .iter()
        .any(|a| matches!(a, Action::Ask(Request::Backoff { .. }))));
    let _ = m.handle(Event::Waited);
    let ok = scram(
        &mut m,
        ScramClient::new(HashAlg::Sha256, "juliet", "secret", None),
        &keys,
    );
    assert!(authenticated(&ok), "{ok:?}");
}

#[test]
fn y_flag_is_believed_only_after_a_refused_binding_type() {
    let cb = ChannelBindings {
        tls_exporter: Some(vec![7; 32]),
        tls_server_end_point: None,
    };
    let keys = ScramKeys::generate(HashAlg::Sha256, "secret", 4096).unwrap();
    let y_client =
        || ScramClient::new(HashAlg::Sha256, "juliet", "secret", None).claim_cb_support();

    // Without a refused -PLUS attempt, `y` where -PLUS was offered is a downgrade.
    let (mut m, _) = secure(settings(true, 5), cb.clone());
    let a = scram(&mut m, y_client(), &keys);
    assert!(!authenticated(&a), "{a:?}");

    // A client that can bind only with tls-unique is refused before any proof, then its `y`
    // is the truth.
    let (mut m, _) = secure(settings(true, 5), cb);
    let a = m.handle(auth(
        "SCRAM-SHA-256-PLUS",
        b"p=tls-unique,,n=juliet,r=abcdef",
    ));
    let answer = sent(&a);
    assert!(answer.contains("<not-authorized/>"), "{answer}");
    assert!(
        answer.contains("tls-unique"),
        "the reason is named: {answer}"
    );
    let a = scram(&mut m, y_client(), &keys);
    assert!(authenticated(&a), "{a:?}");
}

#[test]
fn registration_is_answered_before_auth_only_under_tls() {
    let iq =
        format!("<iq xmlns='{NS_CLIENT}' type='get' id='r1'><query xmlns='{NS_REGISTER}'/></iq>");
    let (mut m, _) = secure(settings(true, 3), ChannelBindings::default());
    match request(m.handle(el(&iq))) {
        Request::PreAuthIq {
            host, namespace, ..
        } => {
            assert_eq!(host, HOST);
            assert_eq!(namespace, NS_REGISTER);
        }
        other => panic!("{other:?}"),
    }
    let reply: Element = format!("<iq xmlns='{NS_CLIENT}' type='result' id='r1'/>")
        .parse()
        .unwrap();
    let a = m.handle(Event::PreAuthReply(reply));
    assert!(sent(&a).contains("id='r1'"));
    // Then SASL goes on as usual.
    plain_to_password_check(&mut m, "pw");

    let mut clear = machine(TlsStep::StartTls, settings(false, 3));
    let features = sent(&clear.handle(header()));
    assert!(!features.contains("iq-register"), "{features}");
    let a = clear.handle(el(&iq));
    let answer = sent(&a);
    assert!(answer.contains("<not-allowed"), "{answer}");
    assert_eq!(stream_error(&a), None);
}

#[test]
fn stanzas_and_bind_before_auth_end_the_stream() {
    for (input, cond) in [
        (
            format!("<iq xmlns='{NS_CLIENT}' type='set' id='b'><bind xmlns='{NS_BIND}'/></iq>"),
            Cond::NotAuthorized,
        ),
        (
            format!("<message xmlns='{NS_CLIENT}' to='romeo@example.org'/>"),
            Cond::NotAuthorized,
        ),
        (
            format!("<response xmlns='{NS_SASL}'/>"),
            Cond::PolicyViolation,
        ),
        (
            "<foo xmlns='urn:example'/>".to_owned(),
            Cond::UnsupportedStanzaType,
        ),
    ] {
        let (mut m, _) = secure(settings(true, 3), ChannelBindings::default());
        let a = m.handle(el(&input));
        assert_eq!(stream_error(&a), Some(cond), "{input}");
        assert!(m.is_done());
    }
}

#[test]
fn header_checks() {
    let opened = |ns: Option<&str>, version: Option<&str>, to: &str| {
        let mut m = machine(TlsStep::StartTls, settings(true, 3));
        let a = m.handle(Event::StreamOpened(StreamHeader {
            to: Some(to.into()),
            default_ns: ns.map(str::to_owned),
            version: version.map(str::to_owned),
            ..Default::default()
        }));
        assert!(
            matches!(a[0], Action::OpenStream(_)),
            "our header comes first"
        );
        stream_error(&a)
    };
    assert_eq!(opened(Some(NS_CLIENT), Some("1.0"), HOST), None);
    assert_eq!(opened(Some(NS_CLIENT), Some("1.7"), "Example.ORG."), None);
    assert_eq!(
        opened(Some("jabber:server"), Some("1.0"), HOST),
        Some(Cond::InvalidNamespace)
    );
    assert_eq!(
        opened(None, Some("1.0"), HOST),
        Some(Cond::InvalidNamespace)
    );
    for bad in [
        None,
        Some("0.9"),
        Some("2.0"),
        Some("1"),
        Some("1."),
        Some("1.x"),
        Some(""),
    ] {
        assert_eq!(
            opened(Some(NS_CLIENT), bad, HOST),
            Some(Cond::UnsupportedVersion),
            "{bad:?}"
        );
    }
    assert_eq!(
        opened(Some(NS_CLIENT), Some("1.0"), "other.example"),
        Some(Cond::HostUnknown)
    );
}

#[test]
fn deadline_shutdown_and_close_end_the_stream_with_our_header() {
    // After TLS the new stream's header is not out yet: it precedes the error.
    let mut m = machine(TlsStep::Direct, settings(true, 3));
    m.start();
    m.handle(Event::TlsEstablished(ChannelBindings::default()));
    let a = m.handle(Event::DeadlinePassed);
    assert!(
        matches!(&a[..], [Action::OpenStream(o), Action::StreamError(Cond::ConnectionTimeout, None)] if o.from == HOST)
    );

    let (mut m, _) = secure(settings(true, 3), ChannelBindings::default());
    let a = m.handle(Event::ShuttingDown);
    assert!(matches!(
        &a[..],
        [Action::StreamError(Cond::SystemShutdown, None)]
    ));

    let (mut m, _) = secure(settings(true, 3), ChannelBindings::default());
    assert!(matches!(
        &m.handle(Event::StreamClosed)[..],
        [Action::EndStream]
    ));
    let mut m = machine(TlsStep::StartTls, settings(true, 3));
    assert!(matches!(
        &m.handle(Event::StreamClosed)[..],
        [Action::Close]
    ));
}

#[test]
fn events_out_of_order_end_the_stream_without_authenticating() {
    let (mut m, _) = secure(settings(true, 3), ChannelBindings::default());
    let a = m.handle(Event::AccountChecked { enabled: true });
    assert_eq!(stream_error(&a), Some(Cond::InternalServerError));
    assert!(!authenticated(&a));
    let (mut m, _) = secure(settings(true, 3), ChannelBindings::default());
    plain_to_password_check(&mut m, "pw");
    // Input while a request is outstanding is the driver's mistake.
    let a = m.handle(el(&format!("<abort xmlns='{NS_SASL}'/>")));
    assert_eq!(stream_error(&a), Some(Cond::InternalServerError));
    let (mut m, _) = secure(settings(true, 3), ChannelBindings::default());
    let a = m.handle(Event::Role(Ok(
        FullJid::new("juliet@example.org/x").unwrap()
    )));
    assert!(!a.iter().any(|a| matches!(a, Action::Ready(_))));
}

#[test]
fn a_stream_below_another_protocol_offers_no_starttls() {
    // TLS required: nothing to authenticate with and no way to upgrade, so the stream ends
    // at once, saying why.
    let mut m = machine(TlsStep::Below, settings(true, 3));
    assert!(m.start().is_empty());
    let a = m.handle(header());
    assert!(matches!(&a[0], Action::OpenStream(_)));
    assert_eq!(stream_error(&a), Some(Cond::PolicyViolation));
    assert!(!sent(&a).contains("starttls"));
    // TLS optional: SCRAM in the clear, never PLAIN.
    let mut m = machine(TlsStep::Below, settings(false, 3));
    let features = sent(&m.handle(header()));
    assert!(!features.contains("starttls"), "{features}");
    assert!(features.contains("SCRAM-SHA-256"), "{features}");
    assert!(!features.contains("PLAIN"), "{features}");
    let a = m.handle(el(&format!("<starttls xmlns='{NS_TLS}'/>")));
    assert!(!sent(&a).contains("proceed"));
}

fn sasl2_settings() -> Arc<Settings> {
    let mut s = (*settings(false, 3)).clone();
    s.sasl2 = Some(xmppd_negotiation::Sasl2Settings {
        inline: vec![Element::bare("sm", "urn:xmpp:sm:3")],
        fast: true,
    });
    Arc::new(s)
}

fn authenticate(mech: &str, data: &[u8], inline: &str) -> Event<ClientRole> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    el(&format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='{mech}'>\
         <initial-response>{b64}</initial-response>\
         <user-agent id='ua-1'><software>Test</software><device>Phone</device></user-agent>\
         {inline}</authenticate>"
    ))
}

#[test]
fn sasl2_is_offered_under_tls_with_the_same_mechanisms_and_fast() {
    let (_, a) = secure(sasl2_settings(), ChannelBindings::default());
    let features = sent(&a);
    assert!(
        features.contains(
            "<authentication xmlns='urn:xmpp:sasl:2'><mechanism>SCRAM-SHA-512</mechanism>"
        ),
        "{features}"
    );
    assert!(
        features.contains("<mechanism>PLAIN</mechanism><inline>"),
        "{features}"
    );
    assert!(
        features
            .contains("<mechanism>HT-SHA-256-NONE</mechanism></fast></inline></authentication>"),
        "{features}"
    );
    assert!(
        features.contains("<sm xmlns='urn:xmpp:sm:3'/>"),
        "{features}"
    );
    // Not before TLS.
    let mut m = machine(TlsStep::StartTls, sasl2_settings());
    let features = sent(&m.handle(header()));
    assert!(!features.contains("urn:xmpp:sasl:2"), "{features}");
    // PLAIN over SASL2 is refused without TLS, in SASL2's failure.
    let a = m.handle(authenticate("PLAIN", b"\0juliet\0pw", ""));
    let answer = sent(&a);
    assert!(
        answer.contains("<failure xmlns='urn:xmpp:sasl:2'><encryption-required xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
        "{answer}"
    );
    assert!(!a.iter().any(|a| matches!(a, Action::Ask(_))));
}

#[test]
fn sasl2_plain_success_carries_the_inline_outcome_and_no_restart() {
    let (mut m, _) = secure(sasl2_settings(), ChannelBindings::default());
    let a = m.handle(authenticate(
        "PLAIN",
        b"\0juliet\0pw",
        "<bind xmlns='urn:xmpp:bind:0'><tag>phone</tag></bind>",
    ));
    assert!(matches!(request(a), Request::Turn { .. }));
    assert!(matches!(
        request(m.handle(Event::Waited)),
        Request::CheckPassword { .. }
    ));
    assert!(matches!(
        request(m.handle(Event::PasswordChecked(Ok(true)))),
        Request::CheckAccount { .. }
    ));
    let inline = match request(m.handle(Event::AccountChecked { enabled: true })) {
        Request::Inline { user: u, inline } => {
            assert_eq!(u, user());
            inline
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(inline.user_agent.id.as_deref(), Some("ua-1"));
    assert_eq!(inline.user_agent.software.as_deref(), Some("Test"));
    assert_eq!(inline.user_agent.device.as_deref(), Some("Phone"));
    assert!(inline.bind.is_some());
    let jid = FullJid::new("juliet@example.org/phone.1").unwrap();
    let a = m.handle(Event::Inline(xmppd_negotiation::InlineOutcome::Bound {
        jid: jid.clone(),
        payloads: vec![Element::bare("bound", "urn:xmpp:bind:0")],
    }));
    let text = sent(&a);
    assert!(
        text.contains("<success xmlns='urn:xmpp:sasl:2'><authorization-identifier>juliet@example.org/phone.1</authorization-identifier><bound xmlns='urn:xmpp:bind:0'/></success>"),
        "{text}"
    );
    assert!(!a.iter().any(|a| matches!(a, Action::RestartStream { .. })));
    assert!(matches!(a.last(), Some(Action::Ready(j)) if *j == jid));
}

#[test]
fn sasl2_without_inline_bind_offers_binding_on_the_same_stream() {
    let (mut m, _) = secure(sasl2_settings(), ChannelBindings::default());
    m.handle(authenticate("PLAIN", b"\0juliet\0pw", ""));
    m.handle(Event::Waited);
    m.handle(Event::PasswordChecked(Ok(true)));
    m.handle(Event::AccountChecked { enabled: true });
    let a = m.handle(Event::Inline(xmppd_negotiation::InlineOutcome::Unbound {
        payloads: vec![],
    }));
    let text = sent(&a);
    assert!(
        text.contains("<authorization-identifier>juliet@example.org</authorization-identifier>"),
        "{text}"
    );
    assert!(
        text.contains("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"),
        "{text}"
    );
    assert!(a.iter().any(|a| matches!(a, Action::SetLimits(_))));
    let a = m.handle(el(&format!(
        "<iq xmlns='{NS_CLIENT}' type='set' id='b'><bind xmlns='{NS_BIND}'/></iq>"
    )));
    assert!(matches!(request(a), Request::Role(_)));
}

#[test]
fn a_wrong_sasl2_password_is_throttled_and_answered_in_sasl2() {
    let (mut m, _) = secure(sasl2_settings(), ChannelBindings::default());
    m.handle(authenticate("PLAIN", b"\0juliet\0wrong", ""));
    m.handle(Event::Waited);
    match request(m.handle(Event::PasswordChecked(Ok(false)))) {
        Request::Backoff { account } => assert_eq!(account, "juliet@example.org"),
        other => panic!("{other:?}"),
    }
    let text = sent(&m.handle(Event::Waited));
    assert!(
        text.contains("<failure xmlns='urn:xmpp:sasl:2'><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/></failure>"),
        "{text}"
    );
}

#[test]
fn a_fast_token_login_is_checked_against_the_stored_hashes() {
    use xmppd_sasl::ht;
    let token = ht::new_token();
    let proof = |t: &str| {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(t.as_bytes()).unwrap();
        mac.update(b"Initiator");
        mac.finalize().into_bytes().to_vec()
    };
    let login = |m: &mut Machine, t: &str, fast: &str| {
        let mut data = b"juliet\0".to_vec();
        data.extend(proof(t));
        let a = m.handle(authenticate("HT-SHA-256-NONE", &data, fast));
        assert!(matches!(request(a), Request::Turn { .. }));
        match request(m.handle(Event::Waited)) {
            Request::FastTokens { client, .. } => assert_eq!(client, "ua-1"),
            other => panic!("{other:?}"),
        }
        m.handle(Event::FastTokens(Ok(vec![
            xmppd_negotiation::StoredToken {
                hash: token.hash,
                count: Some(5),
            },
        ])))
    };
    // The right token, a new count.
    let (mut m, _) = secure(sasl2_settings(), ChannelBindings::default());
    let a = login(
        &mut m,
        &token.token,
        "<fast xmlns='urn:xmpp:fast:0' count='6' invalidate='true'/>",
    );
    assert!(matches!(request(a), Request::CheckAccount { .. }));
    match request(m.handle(Event::AccountChecked { enabled: true })) {
        Request::Inline { inline, .. } => {
            let used = inline.token.expect("the token used");
            assert_eq!(used.hash, token.hash);
            assert_eq!(used.count, Some(6));
            assert!(used.invalidate);
        }
        other => panic!("{other:?}"),
    }
    // A replayed count, or another token, fails like a wrong password.
    for (t, fast) in [
        (
            token.token.clone(),
            "<fast xmlns='urn:xmpp:fast:0' count='5'/>",
        ),
        (ht::new_token().token, "<fast xmlns='urn:xmpp:fast:0'/>"),
    ] {
        let (mut m, _) = secure(sasl2_settings(), ChannelBindings::default());
        let a = login(&mut m, &t, fast);
        assert!(matches!(request(a), Request::Backoff { .. }), "{fast}");
    }
}
