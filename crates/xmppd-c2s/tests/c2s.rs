//! End-to-end tests of the c2s listeners: a real core with a SQLite store, a real TLS client,
//! SCRAM from `xmppd_sasl::client`, and the negative paths clients trip over.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use minidom::Element;
use rustls::HandshakeKind;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use xmppd_auth::{AuthBackend, InternalBackend};
use xmppd_c2s::{C2s, C2sSettings, ListenerKind, Tls, TlsSettings};
use xmppd_core::{CoreConfig, Server};
use xmppd_sasl::client::ScramClient;
use xmppd_sasl::{CbType, HashAlg, Mechanism};
use xmppd_storage::{SqliteStore, UserRef};
use xmppd_stream::{Event, Framer, Limits};

const HOST: &str = "localhost";
const USER: &str = "juliet";
const PASSWORD: &str = "secret-pencil";
const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
const WAIT: Duration = Duration::from_secs(15);

struct TestServer {
    starttls: std::net::SocketAddr,
    direct: std::net::SocketAddr,
    tls: Arc<Tls>,
    shutdown: watch::Sender<bool>,
    run: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start(require_starttls: bool, max_auth_failures: u32) -> TestServer {
    start_with(|s| {
        s.require_starttls = require_starttls;
        s.max_auth_failures = max_auth_failures;
    })
    .await
}

/// A server whose c2s settings `adjust` changed from the tests' defaults.
async fn start_with(adjust: impl FnOnce(&mut C2sSettings)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("xmppd.sqlite")).unwrap());
    let backend = Arc::new(InternalBackend::with_iterations(store.clone(), 4096));
    backend
        .create_user(&UserRef::new(USER, HOST), PASSWORD)
        .await
        .unwrap();
    let config = CoreConfig {
        hosts: vec![HOST.into()],
        ..CoreConfig::default()
    };
    let server: Arc<Server> = Server::builder(config, store)
        .modules(xmppd_im::modules())
        .build();
    let tls = Tls::load(TlsSettings {
        certificates: vec![],
        data_dir: dir.path().to_owned(),
        hosts: vec![HOST.into()],
        reload_interval: Duration::from_secs(60),
        session_resumption: true,
    })
    .unwrap();
    let mut settings = C2sSettings {
        starttls_listen: vec!["127.0.0.1:0".parse().unwrap()],
        direct_tls_listen: vec!["127.0.0.1:0".parse().unwrap()],
        require_starttls: true,
        pre_auth_limits: Limits::PRE_AUTH,
        limits: Limits::DEFAULT,
        queue: xmppd_core::QueueLimits::default(),
        shaper: xmppd_c2s::ShaperSettings::OFF,
        hide_ip: false,
        // Generous: the whole negotiation, throttling waits included, must fit on a loaded
        // machine. Tests of the deadline set their own.
        handshake_timeout: Duration::from_secs(60),
        max_auth_failures: 3,
        max_connections: 1000,
        max_pending_per_ip: 100,
        sm: xmppd_c2s::SmSettings::default(),
        ping_interval: None,
        ping_timeout: Duration::from_secs(60),
        sasl2: true,
        fast_token_lifetime: Duration::from_secs(86_400),
        proxy_protocol_from: Vec::new(),
    };
    adjust(&mut settings);
    let mut auth: HashMap<String, Arc<dyn AuthBackend>> = HashMap::new();
    auth.insert(HOST.into(), backend);
    let c2s = C2s::bind(settings, Arc::clone(&tls), server, auth, Vec::new())
        .await
        .unwrap();
    let addr = |kind| {
        c2s.local_addrs()
            .into_iter()
            .find(|(k, _)| *k == kind)
            .unwrap()
            .1
    };
    let (starttls, direct) = (addr(ListenerKind::StartTls), addr(ListenerKind::DirectTls));
    let (shutdown, rx) = watch::channel(false);
    let run = tokio::spawn(c2s.run(rx));
    TestServer {
        starttls,
        direct,
        tls,
        shutdown,
        run,
        _dir: dir,
    }
}

/// A client over any transport, parsing the server's stream with xmppd's own framer.
struct Client<S> {
    io: S,
    framer: Framer,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(io: S) -> Self {
        Client {
            io,
            framer: Framer::new(Limits::DEFAULT),
        }
    }

    async fn send(&mut self, xml: &str) {
        self.io.write_all(xml.as_bytes()).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// The next event; `None` on EOF.
    async fn event(&mut self) -> Option<Event> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(ev) = self.framer.next_event().expect("server sent bad XML") {
                return Some(ev);
            }
            let read = tokio::time::timeout(WAIT, self.io.read(&mut buf)).await;
            match read.expect("server went silent") {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.framer.feed(&buf[..n]),
            }
        }
    }

    async fn element(&mut self) -> Element {
        match self.event().await {
            Some(Event::Element(el)) => el,
            other => panic!("expected an element, got {other:?}"),
        }
    }

    /// Opens a stream to `to` and returns the features.
    async fn open(&mut self, to: &str) -> Element {
        self.framer.reset();
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='{NS_STREAMS}' to='{to}' version='1.0'>"
        ))
        .await;
        match self.event().await {
            Some(Event::Header(h)) => assert_eq!(h.from.as_deref(), Some(HOST)),
            other => panic!("expected the stream header, got {other:?}"),
        }
        let features = self.element().await;
        assert!(features.is("features", NS_STREAMS), "{features:?}");
        features
    }

    /// Expects `<stream:error><cond/></stream:error>` followed by the end of the stream.
    async fn expect_stream_error(&mut self, cond: &str) {
        let el = loop {
            match self.event().await {
                Some(Event::Header(_)) => continue,
                Some(Event::Element(el)) if el.is("error", NS_STREAMS) => break el,
                Some(Event::Element(el)) if el.is("features", NS_STREAMS) => continue,
                other => panic!("expected a stream error, got {other:?}"),
            }
        };
        assert!(
            el.has_child(cond, NS_STREAM_ERRORS),
            "expected {cond}, got {el:?}"
        );
        assert!(
            matches!(self.event().await, Some(Event::Close)),
            "stream close after the error"
        );
        assert!(self.event().await.is_none(), "connection closed");
    }
}

/// Trust in the certificate the server serves for [`HOST`] (self-signed).
fn served_roots(tls: &Tls) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(tls.served_chain(Some(HOST))[0].clone()).unwrap();
    roots
}

fn client_tls_config(tls: &Tls) -> Arc<rustls::ClientConfig> {
    let roots = served_roots(tls);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

type TlsClient = Client<tokio_rustls::client::TlsStream<TcpStream>>;

/// The client's `tls-exporter` channel binding (RFC 9266) of its connection.
fn tls_exporter(client: &TlsClient) -> Vec<u8> {
    let mut exporter = vec![0u8; 32];
    (client.io.get_ref().1)
        .export_keying_material(&mut exporter, b"EXPORTER-Channel-Binding", None)
        .unwrap();
    exporter
}

/// Connects to the STARTTLS port and upgrades; returns the client and the post-TLS features.
async fn starttls(server: &TestServer) -> (TlsClient, Element) {
    let mut plain = Client::new(TcpStream::connect(server.starttls).await.unwrap());
    let features = plain.open(HOST).await;
    let starttls = features
        .get_child("starttls", NS_TLS)
        .expect("starttls offered");
    assert!(starttls.has_child("required", NS_TLS));
    assert!(
        !features.has_child("mechanisms", NS_SASL),
        "no SASL before TLS when required"
    );
    plain.send(&format!("<starttls xmlns='{NS_TLS}'/>")).await;
    assert!(plain.element().await.is("proceed", NS_TLS));
    upgrade(plain, server).await
}

async fn upgrade(plain: Client<TcpStream>, server: &TestServer) -> (TlsClient, Element) {
    let connector = tokio_rustls::TlsConnector::from(client_tls_config(&server.tls));
    let name = rustls_pki_types::ServerName::try_from(HOST).unwrap();
    let stream = connector.connect(name, plain.io).await.unwrap();
    let mut client = Client::new(stream);
    let features = client.open(HOST).await;
    (client, features)
}

fn mechanisms(features: &Element) -> Vec<String> {
    let mechs = features
        .get_child("mechanisms", NS_SASL)
        .expect("mechanisms offered");
    mechs.children().map(|m| m.text()).collect()
}

/// Runs SCRAM; returns the server's final `<success/>` or `<failure/>`.
async fn scram<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<S>,
    features: &Element,
    mut scram: ScramClient,
) -> Element {
    let offered: Vec<Mechanism> = mechanisms(features)
        .iter()
        .filter_map(|m| Mechanism::from_name(m))
        .collect();
    let cb: Vec<CbType> = features
        .get_child("sasl-channel-binding", "urn:xmpp:sasl-cb:0")
        .map(|c| {
            c.children()
                .filter_map(|t| t.attr("type").and_then(CbType::from_name))
                .collect()
        })
        .unwrap_or_default();
    scram = scram.expect_downgrade_protection(&offered, &cb);
    let first = B64.encode(scram.client_first());
    let mech = scram.mechanism().name();
    client
        .send(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='{mech}'>{first}</auth>"
        ))
        .await;
    let challenge = client.element().await;
    assert!(challenge.is("challenge", NS_SASL), "{challenge:?}");
    let server_first = B64.decode(challenge.text()).unwrap();
    let fin = B64.encode(scram.client_final(&server_first).unwrap());
    client
        .send(&format!("<response xmlns='{NS_SASL}'>{fin}</response>"))
        .await;
    let outcome = client.element().await;
    if outcome.is("success", NS_SASL) {
        scram
            .verify_server_final(&B64.decode(outcome.text()).unwrap())
            .unwrap();
    }
    outcome
}

async fn bind<S: AsyncRead + AsyncWrite + Unpin>(client: &mut Client<S>, resource: &str) -> String {
    let features = client.open(HOST).await;
    assert!(features.has_child("bind", NS_BIND), "{features:?}");
    assert!(features.has_child("limits", "urn:xmpp:stream-limits:0"));
    let bind = format!("<bind xmlns='{NS_BIND}'><resource>{resource}</resource></bind>");
    client
        .send(&format!("<iq type='set' id='b1'>{bind}</iq>"))
        .await;
    let result = client.element().await;
    assert_eq!(result.attr("type"), Some("result"), "{result:?}");
    assert_eq!(result.attr("id"), Some("b1"));
    result
        .get_child("bind", NS_BIND)
        .and_then(|b| b.get_child("jid", NS_BIND))
        .unwrap()
        .text()
}

/// Sends `xml` and returns the next element.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<S>,
    xml: String,
) -> Element {
    client.send(&xml).await;
    client.element().await
}

#[tokio::test]
async fn starttls_scram_bind_and_message_to_self() {
    let server = start(true, 3).await;
    let (mut client, features) = starttls(&server).await;
    let mechs = mechanisms(&features);
    for m in [
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
    ] {
        assert!(mechs.iter().any(|x| x == m), "{m} missing from {mechs:?}");
    }
    let cb = features
        .get_child("sasl-channel-binding", "urn:xmpp:sasl-cb:0")
        .unwrap();
    assert!(
        cb.children()
            .any(|c| c.attr("type") == Some("tls-exporter")),
        "TLS 1.3 exporter"
    );
    assert!(cb
        .children()
        .any(|c| c.attr("type") == Some("tls-server-end-point")));

    let outcome = scram(
        &mut client,
        &features,
        ScramClient::new(HashAlg::Sha256, USER, PASSWORD, None),
    )
    .await;
    assert!(outcome.is("success", NS_SASL), "{outcome:?}");
    let jid = bind(&mut client, "balcony").await;
    assert_eq!(jid, format!("{USER}@{HOST}/balcony"));

    client
        .send(&format!(
            "<message to='{jid}' type='chat' id='m1'><body>hello me</body></message>"
        ))
        .await;
    let msg = loop {
        let el = client.element().await;
        if el.name() == "message" {
            break el;
        }
    };
    assert_eq!(msg.attr("from"), Some(jid.as_str()));
    assert_eq!(
        msg.get_child("body", "jabber:client")
            .map(|b| b.text())
            .as_deref(),
        Some("hello me")
    );

    client.send("</stream:stream>").await;
    assert!(matches!(client.event().await, Some(Event::Close)));
}

#[tokio::test]
async fn scram_plus_with_tls_exporter() {
    let server = start(true, 3).await;
    let (mut client, features) = starttls(&server).await;
    let exporter = tls_exporter(&client);
    let scram_client = ScramClient::new(
        HashAlg::Sha512,
        USER,
        PASSWORD,
        Some((CbType::TlsExporter, exporter)),
    );
    let outcome = scram(&mut client, &features, scram_client).await;
    assert!(outcome.is("success", NS_SASL), "{outcome:?}");
    assert_eq!(
        bind(&mut client, "plus").await,
        format!("{USER}@{HOST}/plus")
    );
}

#[tokio::test]
async fn wrong_password_is_not_authorized_then_policy_violation() {
    let server = start(true, 2).await;
    let (mut client, features) = starttls(&server).await;
    let started = std::time::Instant::now();
    let wrong = ScramClient::new(HashAlg::Sha256, USER, "wrong", None);
    let outcome = scram(&mut client, &features, wrong).await;
    assert!(outcome.is("failure", NS_SASL), "{outcome:?}");
    assert!(outcome.has_child("not-authorized", NS_SASL));
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "failure is delayed"
    );
    let unknown = ScramClient::new(HashAlg::Sha256, "nobody", PASSWORD, None);
    let outcome = scram(&mut client, &features, unknown).await;
    assert!(outcome.has_child("not-authorized", NS_SASL), "{outcome:?}");
    client.expect_stream_error("policy-violation").await;
}

#[tokio::test]
async fn plain_over_direct_tls_and_sasl_failures() {
    let server = start(true, 5).await;
    let connector = tokio_rustls::TlsConnector::from({
        let mut config = (*client_tls_config(&server.tls)).clone();
        config.alpn_protocols = vec![b"xmpp-client".to_vec()];
        Arc::new(config)
    });
    let name = rustls_pki_types::ServerName::try_from(HOST).unwrap();
    let tcp = TcpStream::connect(server.direct).await.unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    assert_eq!(
        stream.get_ref().1.alpn_protocol(),
        Some(&b"xmpp-client"[..])
    );
    let mut client = Client::new(stream);
    let features = client.open(HOST).await;
    assert!(
        !features.has_child("starttls", NS_TLS),
        "no STARTTLS on a direct TLS stream"
    );

    let el = exchange(
        &mut client,
        format!("<auth xmlns='{NS_SASL}' mechanism='X-UNKNOWN'>=</auth>"),
    )
    .await;
    assert!(el.has_child("invalid-mechanism", NS_SASL), "{el:?}");
    let el = exchange(
        &mut client,
        format!("<auth xmlns='{NS_SASL}' mechanism='PLAIN'>!!!</auth>"),
    )
    .await;
    assert!(el.has_child("incorrect-encoding", NS_SASL), "{el:?}");
    let other = B64.encode(format!("romeo@{HOST}\0{USER}\0{PASSWORD}"));
    let el = exchange(
        &mut client,
        format!("<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{other}</auth>"),
    )
    .await;
    assert!(el.has_child("invalid-authzid", NS_SASL), "{el:?}");
    // No initial response: an empty challenge, then abort.
    let el = exchange(
        &mut client,
        format!("<auth xmlns='{NS_SASL}' mechanism='PLAIN'/>"),
    )
    .await;
    assert!(
        el.is("challenge", NS_SASL) && el.text().is_empty(),
        "{el:?}"
    );
    let el = exchange(&mut client, format!("<abort xmlns='{NS_SASL}'/>")).await;
    assert!(el.has_child("aborted", NS_SASL), "{el:?}");

    let creds = B64.encode(format!("\0{USER}\0{PASSWORD}"));
    let el = exchange(
        &mut client,
        format!("<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{creds}</auth>"),
    )
    .await;
    assert!(el.is("success", NS_SASL), "{el:?}");
    assert_eq!(
        bind(&mut client, "direct").await,
        format!("{USER}@{HOST}/direct")
    );
}

#[tokio::test]
async fn stanza_before_auth_is_not_authorized() {
    let server = start(true, 3).await;
    let mut client = Client::new(TcpStream::connect(server.starttls).await.unwrap());
    client.open(HOST).await;
    client
        .send("<message to='juliet@localhost'><body>x</body></message>")
        .await;
    client.expect_stream_error("not-authorized").await;

    // Also after TLS, before SASL.
    let (mut client, _) = starttls(&server).await;
    client
        .send("<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    client.expect_stream_error("not-authorized").await;
}

#[tokio::test]
async fn auth_before_required_starttls_is_a_policy_violation() {
    let server = start(true, 3).await;
    let mut client = Client::new(TcpStream::connect(server.starttls).await.unwrap());
    client.open(HOST).await;
    let creds = B64.encode(format!("\0{USER}\0{PASSWORD}"));
    client
        .send(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{creds}</auth>"
        ))
        .await;
    client.expect_stream_error("policy-violation").await;
}

#[tokio::test]
async fn optional_starttls_offers_scram_but_never_plain_in_the_clear() {
    let server = start(false, 3).await;
    let mut client = Client::new(TcpStream::connect(server.starttls).await.unwrap());
    let features = client.open(HOST).await;
    let starttls = features.get_child("starttls", NS_TLS).unwrap();
    assert!(!starttls.has_child("required", NS_TLS));
    let mechs = mechanisms(&features);
    assert!(mechs.iter().any(|m| m == "SCRAM-SHA-256"), "{mechs:?}");
    assert!(
        !mechs.iter().any(|m| m == "PLAIN" || m.ends_with("-PLUS")),
        "{mechs:?}"
    );
    let creds = B64.encode(format!("\0{USER}\0{PASSWORD}"));
    client
        .send(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{creds}</auth>"
        ))
        .await;
    let el = client.element().await;
    assert!(el.has_child("encryption-required", NS_SASL), "{el:?}");
    let outcome = scram(
        &mut client,
        &features,
        ScramClient::new(HashAlg::Sha1, USER, PASSWORD, None),
    )
    .await;
    assert!(outcome.is("success", NS_SASL), "{outcome:?}");
    assert_eq!(
        bind(&mut client, "clear").await,
        format!("{USER}@{HOST}/clear")
    );
}

#[tokio::test]
async fn header_errors() {
    let server = start(true, 3).await;
    let cases = [
        ("example.net", "jabber:client", "1.0", "host-unknown"),
        (HOST, "jabber:server", "1.0", "invalid-namespace"),
        (HOST, "jabber:client", "2.0", "unsupported-version"),
    ];
    for (to, ns, version, cond) in cases {
        let mut client = Client::new(TcpStream::connect(server.starttls).await.unwrap());
        client
            .send(&format!(
                "<?xml version='1.0'?><stream:stream xmlns='{ns}' xmlns:stream='{NS_STREAMS}' \
                 to='{to}' version='{version}'>"
            ))
            .await;
        match client.event().await {
            Some(Event::Header(h)) => assert_eq!(h.from.as_deref(), Some(HOST), "our header first"),
            other => panic!("{other:?}"),
        }
        client.expect_stream_error(cond).await;
    }
    // A header without `to`.
    let mut client = Client::new(TcpStream::connect(server.starttls).await.unwrap());
    client
        .send(&format!(
            "<stream:stream xmlns='jabber:client' xmlns:stream='{NS_STREAMS}' version='1.0'>"
        ))
        .await;
    client.expect_stream_error("host-unknown").await;
}

#[tokio::test]
async fn data_pipelined_after_starttls_is_discarded() {
    let server = start(true, 3).await;
    let mut plain = Client::new(TcpStream::connect(server.starttls).await.unwrap());
    plain.open(HOST).await;
    // If the injected stanza survived into the TLS stream it would precede the new header and
    // break it; the features arriving normally show it was dropped.
    plain
        .send(&format!(
            "<starttls xmlns='{NS_TLS}'/><message to='x@localhost'><body>i</body></message>"
        ))
        .await;
    assert!(plain.element().await.is("proceed", NS_TLS));
    let (_client, features) = upgrade(plain, &server).await;
    assert!(features.has_child("mechanisms", NS_SASL));
}

#[tokio::test]
async fn shutdown_sends_system_shutdown() {
    let server = start(true, 3).await;
    let (mut client, _) = logged_in(&server, "bye").await;
    shut_down(server, &mut client).await;
}

#[tokio::test]
async fn scram_plus_with_server_end_point_over_tls12() {
    let server = start(true, 3).await;
    let mut plain = Client::new(TcpStream::connect(server.starttls).await.unwrap());
    plain.open(HOST).await;
    plain.send(&format!("<starttls xmlns='{NS_TLS}'/>")).await;
    assert!(plain.element().await.is("proceed", NS_TLS));
    let roots = served_roots(&server.tls);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from(HOST).unwrap();
    let stream = connector.connect(name, plain.io).await.unwrap();
    // The hash of the certificate the server presented on this very connection.
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let mut client = Client::new(stream);
    let features = client.open(HOST).await;
    let cb = features
        .get_child("sasl-channel-binding", "urn:xmpp:sasl-cb:0")
        .unwrap();
    let types: Vec<_> = cb.children().filter_map(|c| c.attr("type")).collect();
    assert_eq!(
        types,
        ["tls-server-end-point"],
        "no tls-exporter under TLS 1.2"
    );
    let end_point = <sha2::Sha256 as sha2::Digest>::digest(leaf.as_ref()).to_vec();
    let scram_client = ScramClient::new(
        HashAlg::Sha256,
        USER,
        PASSWORD,
        Some((CbType::TlsServerEndPoint, end_point)),
    );
    let outcome = scram(&mut client, &features, scram_client).await;
    assert!(outcome.is("success", NS_SASL), "{outcome:?}");
}

/// A client of one TLS version trusting `roots`, with a session cache of its own (rustls keeps
/// it in the configuration): one per client, as a real client has.
fn resuming_connector(
    roots: rustls::RootCertStore,
    version: &'static rustls::SupportedProtocolVersion,
) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A TLS connection to the direct or the STARTTLS port through `connector` (whose session
/// cache it uses), how its handshake went, and the stream's features.
async fn connect_tls(
    server: &TestServer,
    connector: &tokio_rustls::TlsConnector,
    direct: bool,
) -> (TlsClient, Element, Option<HandshakeKind>) {
    let tcp = if direct {
        TcpStream::connect(server.direct).await.unwrap()
    } else {
        let mut plain = Client::new(TcpStream::connect(server.starttls).await.unwrap());
        plain.open(HOST).await;
        plain.send(&format!("<starttls xmlns='{NS_TLS}'/>")).await;
        assert!(plain.element().await.is("proceed", NS_TLS));
        plain.io
    };
    let name = rustls_pki_types::ServerName::try_from(HOST).unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let kind = stream.get_ref().1.handshake_kind();
    let mut client = Client::new(stream);
    // Reading the features also reads the tickets the server sent first.
    let features = client.open(HOST).await;
    (client, features, kind)
}

/// A client that comes back resumes its TLS session (a ticket under TLS 1.3, a ticket or
/// session ID under 1.2) on either port, and SCRAM-PLUS then binds to the resumed
/// connection: the exporter of its new keys under 1.3, the certificate's hash under 1.2.
#[tokio::test]
async fn a_returning_client_resumes_its_tls_session_and_logs_in_with_scram_plus() {
    let server = start(true, 3).await;
    let roots = served_roots(&server.tls);
    let end_point =
        <sha2::Sha256 as sha2::Digest>::digest(server.tls.served_chain(Some(HOST))[0].as_ref())
            .to_vec();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        for direct in [true, false] {
            let connector = resuming_connector(roots.clone(), version);
            let case = format!("{:?}, direct TLS {direct}", version.version);
            let (first, _, kind) = connect_tls(&server, &connector, direct).await;
            assert_eq!(kind, Some(HandshakeKind::Full), "{case}");
            drop(first);
            let (mut client, features, kind) = connect_tls(&server, &connector, direct).await;
            assert_eq!(kind, Some(HandshakeKind::Resumed), "{case}");
            let binding = if version.version == rustls::ProtocolVersion::TLSv1_3 {
                (CbType::TlsExporter, tls_exporter(&client))
            } else {
                (CbType::TlsServerEndPoint, end_point.clone())
            };
            let scram_client = ScramClient::new(HashAlg::Sha256, USER, PASSWORD, Some(binding));
            let outcome = scram(&mut client, &features, scram_client).await;
            assert!(outcome.is("success", NS_SASL), "{case}: {outcome:?}");
            assert_eq!(
                bind(&mut client, "again").await,
                format!("{USER}@{HOST}/again"),
                "{case}"
            );
        }
    }
}

/// Each listener kind has ticket keys of its own: a session made on the direct TLS port does
/// not resume on the STARTTLS port (the same client, the same name, a full handshake there).
#[tokio::test]
async fn a_session_resumes_only_on_the_listener_that_made_it() {
    let server = start(true, 3).await;
    let connector = resuming_connector(served_roots(&server.tls), &rustls::version::TLS13);
    let (_, _, kind) = connect_tls(&server, &connector, true).await;
    assert_eq!(kind, Some(HandshakeKind::Full));
    // The client does offer its tickets: the direct port resumes one…
    let (_, _, kind) = connect_tls(&server, &connector, true).await;
    assert_eq!(kind, Some(HandshakeKind::Resumed));
    // …and the STARTTLS port, offered another, refuses it.
    let (_, _, kind) = connect_tls(&server, &connector, false).await;
    assert_eq!(kind, Some(HandshakeKind::Full));
}

/// A certificate change ends resumption: a resumed handshake sends no certificate, so a client
/// would bind SCRAM-PLUS to the old one. The next handshake is a full one with the new
/// certificate, and `tls-server-end-point` binds to it.
#[tokio::test]
async fn after_a_certificate_change_no_session_resumes_and_scram_plus_binds_to_the_new_one() {
    let server = start(true, 3).await;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![HOST.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let mut roots = served_roots(&server.tls);
    roots.add(cert.der().clone()).unwrap();
    // TLS 1.2, whose only binding is the certificate's hash.
    let connector = resuming_connector(roots, &rustls::version::TLS12);
    let (_, _, kind) = connect_tls(&server, &connector, true).await;
    assert_eq!(kind, Some(HandshakeKind::Full));
    let (_, _, kind) = connect_tls(&server, &connector, true).await;
    assert_eq!(kind, Some(HandshakeKind::Resumed));

    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("new.crt"), dir.path().join("new.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    server
        .tls
        .install(xmppd_c2s::CertificateSpec {
            domain: HOST.into(),
            cert: cert_path,
            key: key_path,
        })
        .unwrap();

    let (mut client, features, kind) = connect_tls(&server, &connector, true).await;
    assert_eq!(kind, Some(HandshakeKind::Full));
    let served = client.io.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(served.as_ref(), cert.der().as_ref());
    let end_point = <sha2::Sha256 as sha2::Digest>::digest(served.as_ref()).to_vec();
    let binding = Some((CbType::TlsServerEndPoint, end_point));
    let scram_client = ScramClient::new(HashAlg::Sha256, USER, PASSWORD, binding);
    let outcome = scram(&mut client, &features, scram_client).await;
    assert!(outcome.is("success", NS_SASL), "{outcome:?}");
}

/// The server's order of cipher suites decides: AES-128-GCM-SHA256 although the client lists
/// AES-256-GCM-SHA384 first (as rustls and OpenSSL clients do); a client that offers only
/// another suite still gets it, under TLS 1.3 and 1.2.
#[tokio::test]
async fn the_server_prefers_aes_128_gcm_and_still_offers_every_suite() {
    use rustls::crypto::ring::cipher_suite::*;
    let server = start(true, 3).await;
    let roots = served_roots(&server.tls);
    let cases = [
        (
            vec![TLS13_AES_256_GCM_SHA384, TLS13_AES_128_GCM_SHA256],
            TLS13_AES_128_GCM_SHA256,
        ),
        (vec![TLS13_AES_256_GCM_SHA384], TLS13_AES_256_GCM_SHA384),
        (
            vec![TLS13_CHACHA20_POLY1305_SHA256],
            TLS13_CHACHA20_POLY1305_SHA256,
        ),
        (
            vec![
                TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            ],
            // The test's certificate is the self-signed ECDSA one.
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
    ];
    for (offered, expected) in cases {
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: offered.clone(),
            ..rustls::crypto::ring::default_provider()
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls_pki_types::ServerName::try_from(HOST).unwrap();
        let tcp = TcpStream::connect(server.direct).await.unwrap();
        let stream = connector.connect(name, tcp).await.unwrap();
        let chosen = stream.get_ref().1.negotiated_cipher_suite().unwrap();
        assert_eq!(chosen.suite(), expected.suite(), "offered {offered:?}");
    }
}

#[tokio::test]
async fn oversized_element_before_auth_ends_the_stream() {
    let server = start(true, 3).await;
    let (mut client, _) = starttls(&server).await;
    let big = "a".repeat(Limits::PRE_AUTH.max_stanza_bytes + 1);
    client
        .send(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{big}</auth>"
        ))
        .await;
    client.expect_stream_error("policy-violation").await;
}

#[tokio::test]
async fn direct_tls_accepts_clients_without_alpn() {
    let server = start(true, 3).await;
    let connector = tokio_rustls::TlsConnector::from(client_tls_config(&server.tls));
    let name = rustls_pki_types::ServerName::try_from(HOST).unwrap();
    let tcp = TcpStream::connect(server.direct).await.unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    let mut client = Client::new(stream);
    let features = client.open(HOST).await;
    assert!(mechanisms(&features).iter().any(|m| m == "PLAIN"));
}

/// SCRAM-SHA-256-PLUS and SCRAM-SHA-1-PLUS (tls-exporter) through the `sasl` crate: a SCRAM
/// client xmppd's authors did not write checks the server's channel binding, not only our own
/// client. A client bound to another TLS session's exporter is refused.
#[tokio::test]
async fn scram_plus_through_an_independent_sasl_client() {
    use sasl::client::mechanisms::Scram;
    use sasl::common::scram::{Sha1, Sha256};
    use sasl::common::ChannelBinding;

    async fn run(
        client: &mut Client<impl AsyncRead + AsyncWrite + Unpin>,
        mut mech: Box<dyn sasl::client::Mechanism>,
    ) -> Element {
        let first = B64.encode(mech.initial());
        let name = mech.name().to_owned();
        let challenge = exchange(
            client,
            format!("<auth xmlns='{NS_SASL}' mechanism='{name}'>{first}</auth>"),
        )
        .await;
        assert!(challenge.is("challenge", NS_SASL), "{challenge:?}");
        let fin = mech
            .response(&B64.decode(challenge.text()).unwrap())
            .unwrap();
        let fin = B64.encode(fin);
        let outcome = exchange(
            client,
            format!("<response xmlns='{NS_SASL}'>{fin}</response>"),
        )
        .await;
        if outcome.is("success", NS_SASL) {
            mech.success(&B64.decode(outcome.text()).unwrap())
                .expect("server signature");
        }
        outcome
    }

    let server = start(true, 3).await;
    for (i, sha256) in [true, false].into_iter().enumerate() {
        let (mut client, _) = starttls(&server).await;
        let cb = ChannelBinding::TlsExporter(tls_exporter(&client));
        let mech: Box<dyn sasl::client::Mechanism> = if sha256 {
            Box::new(Scram::<Sha256>::new(USER, PASSWORD, cb).unwrap())
        } else {
            Box::new(Scram::<Sha1>::new(USER, PASSWORD, cb).unwrap())
        };
        assert!(mech.name().ends_with("-PLUS"));
        let outcome = run(&mut client, mech).await;
        assert!(outcome.is("success", NS_SASL), "{outcome:?}");
        let resource = format!("indep{i}");
        assert_eq!(
            bind(&mut client, &resource).await,
            format!("{USER}@{HOST}/{resource}")
        );
    }

    // Binding data of another connection: the proof is right, the channel is not.
    let (other, _) = starttls(&server).await;
    let foreign = tls_exporter(&other);
    let (mut client, _) = starttls(&server).await;
    let mech = Scram::<Sha256>::new(USER, PASSWORD, ChannelBinding::TlsExporter(foreign)).unwrap();
    let outcome = run(&mut client, Box::new(mech)).await;
    assert!(outcome.is("failure", NS_SASL), "{outcome:?}");
}

/// The `<text/>` of a SASL `<failure/>`, if any.
fn failure_text(failure: &Element) -> Option<String> {
    failure.get_child("text", NS_SASL).map(Element::text)
}

/// Sends `<auth/>` for `mech` with `payload` (base64-encoded here) and returns the answer.
async fn auth<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<S>,
    mech: &str,
    payload: &str,
) -> Element {
    client.send(&auth_xml(mech, payload)).await;
    client.element().await
}

fn auth_xml(mech: &str, payload: &str) -> String {
    let payload = B64.encode(payload);
    format!("<auth xmlns='{NS_SASL}' mechanism='{mech}'>{payload}</auth>")
}

/// Sends a PLAIN `<auth/>` for `user` with `password` and returns the answer.
async fn plain_auth<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<S>,
    user: &str,
    password: &str,
) -> Element {
    auth(client, "PLAIN", &format!("\0{user}\0{password}")).await
}

#[tokio::test]
async fn tls_unique_plus_attempts_then_y_flag_log_in_on_one_stream() {
    // What a client that binds only with tls-unique does under TLS 1.3 (RFC 9266 §3): every
    // advertised -PLUS mechanism is refused for its binding type, then it falls back to plain
    // SCRAM with the `y` flag (RFC 5802 §6). The default failure limit (3) must not end it.
    let server = start(true, 3).await;
    let (mut client, features) = starttls(&server).await;
    for mech in [
        "SCRAM-SHA-512-PLUS",
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
    ] {
        let failure = auth(
            &mut client,
            mech,
            &format!("p=tls-unique,,n={USER},r=abcdefgh"),
        )
        .await;
        assert!(failure.is("failure", NS_SASL), "{failure:?}");
        assert!(failure.has_child("not-authorized", NS_SASL), "{failure:?}");
        let text = failure_text(&failure).expect("the reason is named");
        assert!(text.contains("tls-unique"), "{text}");
    }
    let outcome = scram(
        &mut client,
        &features,
        ScramClient::new(HashAlg::Sha512, USER, PASSWORD, None).claim_cb_support(),
    )
    .await;
    assert!(outcome.is("success", NS_SASL), "{outcome:?}");
    bind(&mut client, "old-client").await;
}

#[tokio::test]
async fn y_flag_with_a_stripped_mechanism_list_is_still_refused() {
    // A client that saw no -PLUS mechanism (an attacker removed them) says `y` at once: the
    // server did offer -PLUS and nothing on this stream explains the flag, so it is a
    // downgrade. A failure before any proof of another kind does not unlock it either.
    let server = start(true, 3).await;
    let (mut client, features) = starttls(&server).await;
    let malformed = auth(&mut client, "SCRAM-SHA-256-PLUS", "n,,n=juliet").await;
    assert!(malformed.is("failure", NS_SASL), "{malformed:?}");
    let failure = auth(
        &mut client,
        "SCRAM-SHA-256",
        &format!("y,,n={USER},r=abcdefgh"),
    )
    .await;
    assert!(failure.is("failure", NS_SASL), "{failure:?}");
    assert!(failure.has_child("not-authorized", NS_SASL), "{failure:?}");
    assert!(failure_text(&failure).unwrap().contains("downgrade"));
    // The stream is still usable with a proper exchange.
    let outcome = scram(
        &mut client,
        &features,
        ScramClient::new(HashAlg::Sha256, USER, PASSWORD, None),
    )
    .await;
    assert!(outcome.is("success", NS_SASL), "{outcome:?}");
}

#[tokio::test]
async fn failures_before_proof_are_capped() {
    // Free failures are bounded: a stream cannot try malformed messages forever.
    let server = start(true, 2).await;
    let (mut client, _) = starttls(&server).await;
    for _ in 0..xmppd_sasl::UNCOUNTED_BEFORE_PROOF + 1 {
        let failure = auth(&mut client, "SCRAM-SHA-256", "z,,garbage").await;
        assert!(
            failure.has_child("malformed-request", NS_SASL),
            "{failure:?}"
        );
        assert!(failure_text(&failure).is_some(), "{failure:?}");
    }
    let failure = auth(&mut client, "SCRAM-SHA-256", "z,,garbage").await;
    assert!(failure.is("failure", NS_SASL));
    client.expect_stream_error("policy-violation").await;
}

#[tokio::test]
async fn a_trickling_client_is_closed_at_the_handshake_deadline() {
    // One deadline from accept to bound session: a client that sends a byte now and then,
    // never finishing its stream header, is closed once `handshake_timeout` has passed.
    let server = start_with(|s| s.handshake_timeout = Duration::from_secs(2)).await;
    let mut tcp = TcpStream::connect(server.starttls).await.unwrap();
    let started = tokio::time::Instant::now();
    let header = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' ";
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let mut sent = 0;
    let closed = loop {
        if sent < header.len() {
            let _ = tcp.write_all(&header[sent..sent + 1]).await;
            sent += 1;
        }
        match tokio::time::timeout(Duration::from_millis(250), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if started.elapsed() > Duration::from_secs(30) {
            break false;
        }
    };
    assert!(closed, "still open after 30 s with a 2 s handshake timeout");
    let text = String::from_utf8_lossy(&received);
    assert!(text.contains("connection-timeout"), "{text}");
}

#[tokio::test]
async fn the_deadline_ends_a_throttle_wait() {
    // Each wrong password is answered later (0.5, 1, 2, 4, 8 s): within five attempts one
    // wait outlasts the 4 s handshake deadline, which ends the stream with connection-timeout
    // instead of a late <failure/>.
    let server = start_with(|s| {
        s.handshake_timeout = Duration::from_secs(4);
        s.max_auth_failures = 10;
    })
    .await;
    let (mut client, _) = starttls(&server).await;
    for _ in 0..6 {
        client
            .send(&auth_xml("PLAIN", &format!("\0{USER}\0wrong")))
            .await;
        let el = client.element().await;
        if el.is("error", NS_STREAMS) {
            assert!(
                el.has_child("connection-timeout", NS_STREAM_ERRORS),
                "{el:?}"
            );
            return;
        }
        assert!(el.has_child("not-authorized", NS_SASL), "{el:?}");
    }
    panic!("six wrong passwords answered although the handshake deadline was 4 s");
}

#[tokio::test]
async fn shutdown_ends_a_throttle_wait() {
    let server = start_with(|s| {
        s.max_auth_failures = 10;
        s.handshake_timeout = Duration::from_secs(120);
    })
    .await;
    let (mut client, _) = starttls(&server).await;
    // The first failure is answered after 0.5 s, the second after 1 s.
    let failure = plain_auth(&mut client, USER, "wrong").await;
    assert!(failure.is("failure", NS_SASL));
    client
        .send(&auth_xml("PLAIN", &format!("\0{USER}\0wrong")))
        .await;
    // Give the server time to be inside the 1 s wait; if it is not yet, the shutdown is seen
    // before the attempt and the outcome is the same.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.shutdown.send(true).unwrap();
    client.expect_stream_error("system-shutdown").await;
}

/// Logs `resource` in over STARTTLS with SCRAM-SHA-256; returns the client and its full JID.
async fn logged_in(server: &TestServer, resource: &str) -> (TlsClient, String) {
    let (mut client, features) = starttls(server).await;
    let scram_client = ScramClient::new(HashAlg::Sha256, USER, PASSWORD, None);
    let outcome = scram(&mut client, &features, scram_client).await;
    assert!(outcome.is("success", NS_SASL), "{outcome:?}");
    let jid = bind(&mut client, resource).await;
    (client, jid)
}

/// Sends a chat message to `jid` (the client's own) and returns it as it comes back.
async fn message_to_self(client: &mut TlsClient, jid: &str, id: &str) -> Element {
    client
        .send(&format!(
            "<message to='{jid}' type='chat' id='{id}'><body>note {id}</body></message>"
        ))
        .await;
    loop {
        let el = client.element().await;
        if el.name() == "message" {
            return el;
        }
    }
}

/// A server whose logged-in sessions are shaped to `bytes_per_sec`, with `burst_bytes`.
async fn start_shaped(bytes_per_sec: u64, burst_bytes: u64) -> TestServer {
    start_with(|s| {
        s.shaper = xmppd_c2s::ShaperSettings {
            bytes_per_sec,
            burst_bytes,
        }
    })
    .await
}

/// Shuts the server down: the client gets `<system-shutdown/>`, and `run()` returns.
async fn shut_down(server: TestServer, client: &mut TlsClient) {
    server.shutdown.send(true).unwrap();
    client.expect_stream_error("system-shutdown").await;
    tokio::time::timeout(WAIT, server.run)
        .await
        .expect("run() returns after shutdown")
        .unwrap();
}

/// While the shaper holds reading back, what is queued for the session is still written, and
/// a shutdown still ends the stream at once, not when the shaper would let it read again.
#[tokio::test]
async fn a_session_the_shaper_holds_back_gets_its_stanzas_and_the_shutdown() {
    // One byte of burst and one byte a second: the first stanza after binding puts the
    // session a hundred seconds in debt.
    let server = start_shaped(1, 1).await;
    let (mut client, jid) = logged_in(&server, "slow").await;
    let echo = message_to_self(&mut client, &jid, "m1").await;
    assert_eq!(echo.attr("id"), Some("m1"));
    shut_down(server, &mut client).await;
}

/// Each time the shaper's wait is over the session reads again, however often it is held
/// back; a session that went through many turns of its loop still ends at a shutdown.
#[tokio::test]
async fn a_shaped_session_reads_again_after_each_wait() {
    // Each message of about 120 bytes waits some 30 ms.
    let server = start_shaped(4000, 1).await;
    let (mut client, jid) = logged_in(&server, "paced").await;
    for i in 0..6 {
        let id = format!("m{i}");
        let echo = message_to_self(&mut client, &jid, &id).await;
        assert_eq!(echo.attr("id"), Some(id.as_str()));
    }
    shut_down(server, &mut client).await;
}

/// The PROXY header a load balancer sends for a client at `client` (version 2).
fn proxy_v2(client: &str) -> Vec<u8> {
    xmppd_realip::ProxyHeader {
        source: Some(client.parse().unwrap()),
        destination: Some("127.0.0.1:5223".parse().unwrap()),
    }
    .to_v2()
}

/// Direct TLS passed through a proxy (its PROXY header, then the client's TLS): the TLS is
/// ours end to end, so SCRAM -PLUS binds to it as on a direct connection.
#[tokio::test]
async fn scram_plus_over_direct_tls_behind_a_proxy_header() {
    let server = start_with(|s| s.proxy_protocol_from = vec!["127.0.0.1".parse().unwrap()]).await;
    let mut tcp = TcpStream::connect(server.direct).await.unwrap();
    tcp.write_all(&proxy_v2("203.0.113.7:50123")).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_tls_config(&server.tls));
    let name = rustls_pki_types::ServerName::try_from(HOST).unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let mut client = Client::new(stream);
    let features = client.open(HOST).await;
    assert!(mechanisms(&features).iter().any(|m| m.ends_with("-PLUS")));
    let binding = Some((CbType::TlsExporter, tls_exporter(&client)));
    let scram_client = ScramClient::new(HashAlg::Sha256, USER, PASSWORD, binding);
    let outcome = scram(&mut client, &features, scram_client).await;
    assert!(outcome.is("success", NS_SASL), "{outcome:?}");
}

/// The pending cap counts the address a proxy's header names, not the proxy's: two clients
/// behind one proxy do not share a cap, and a connection from a configured proxy that sends
/// no valid header is closed without a stream.
#[tokio::test]
async fn proxied_connections_count_against_the_clients_address() {
    let server = start_with(|s| {
        s.proxy_protocol_from = vec!["127.0.0.0/8".parse().unwrap()];
        s.max_pending_per_ip = 1;
    })
    .await;
    let connect = |client: &'static str| async move {
        let mut tcp = TcpStream::connect(server.starttls).await.unwrap();
        tcp.write_all(&proxy_v2(client)).await.unwrap();
        Client::new(tcp)
    };
    let mut first = connect("203.0.113.7:1").await;
    first.open(HOST).await;
    // The same client again: over its cap while the first is pending.
    let mut again = connect("203.0.113.7:2").await;
    again.send("<?xml version='1.0'?>").await;
    assert!(again.event().await.is_none(), "closed without a stream");
    // Another client through the same proxy has a cap of its own.
    let mut other = connect("203.0.113.8:1").await;
    other.open(HOST).await;
    // The configured proxy without a header: closed, nothing parsed as XML.
    let mut bare = Client::new(TcpStream::connect(server.starttls).await.unwrap());
    bare.send(&format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='{NS_STREAMS}' to='{HOST}' version='1.0'>"
    ))
    .await;
    assert!(bare.event().await.is_none(), "closed without a stream");
}

/// A connection from an address that is not a configured proxy is a client: a PROXY header
/// it sends is not honoured, and the stream fails as any non-XML input does.
#[tokio::test]
async fn a_header_from_elsewhere_is_not_honoured() {
    let server = start_with(|s| s.proxy_protocol_from = vec!["10.0.0.5".parse().unwrap()]).await;
    let mut client = Client::new(TcpStream::connect(server.starttls).await.unwrap());
    client
        .io
        .write_all(&proxy_v2("203.0.113.7:1"))
        .await
        .unwrap();
    client.send("<?xml version='1.0'?>").await;
    let mut error = None;
    while let Some(event) = client.event().await {
        if let Event::Element(el) = event {
            assert!(
                !el.is("features", NS_STREAMS),
                "a stream was offered: {el:?}"
            );
            error = Some(el);
        }
    }
    assert!(
        error.is_some_and(|e| e.is("error", NS_STREAMS)),
        "a stream error"
    );
    // A plain client from there is served as usual.
    let mut plain = Client::new(TcpStream::connect(server.starttls).await.unwrap());
    plain.open(HOST).await;
}
