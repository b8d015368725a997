//! TLS for client connections: certificates per virtual host chosen by SNI, a self-signed
//! fallback kept on disk, hot reload of certificate files, and the channel-binding data
//! (`tls-exporter`, `tls-server-end-point`) of an established connection.
//!
//! Only TLS 1.2 and 1.3 with the ring provider; no client certificates. This module does not
//! speak XMPP and does not run ACME: certificates come from files someone else renews.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConnection};
use rustls::sign::CertifiedKey;
use rustls::{ProtocolVersion, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;
use xmppd_sasl::ChannelBindings;

/// ALPN protocol of direct-TLS client connections (XEP-0368).
pub const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";
/// ALPN protocol of the HTTPS listeners.
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";
/// ALPN protocol of ACME's tls-alpn-01 validation (RFC 8737 §6.2): such a handshake gets the
/// challenge certificate of its name, and the connection ends with the handshake.
pub const ALPN_ACME_TLS: &[u8] = b"acme-tls/1";

/// Label of the RFC 9266 `tls-exporter` channel binding.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// A certificate configured for one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSpec {
    pub domain: String,
    /// PEM file: the leaf certificate first, then the intermediates.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// What [`Tls::load`] needs.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub certificates: Vec<CertificateSpec>,
    /// The self-signed fallback lives in `data_dir/tls/`.
    pub data_dir: PathBuf,
    /// The virtual hosts; the first one's certificate is served to clients without SNI.
    pub hosts: Vec<String>,
    pub reload_interval: Duration,
    /// Offer session resumption: TLS 1.3 tickets (stateless: encrypted under keys kept in
    /// memory and rotated every six hours), TLS 1.2 tickets and session IDs. A client that
    /// reconnects within hours skips the certificate and the server's signature.
    pub session_resumption: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Pem { path: PathBuf, msg: String },
    #[error("certificate for {domain}: {source}")]
    Key {
        domain: String,
        source: rustls::Error,
    },
    #[error("generating the self-signed certificate: {0}")]
    Generate(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("no virtual hosts configured")]
    NoHosts,
}

/// TLS state shared by all listeners.
pub struct Tls {
    provider: Arc<CryptoProvider>,
    hosts: Vec<String>,
    resolver: Arc<SniResolver>,
    session_resumption: bool,
    /// Made again, with new ticket keys and session caches, whenever the certificates change.
    configs: RwLock<Configs>,
    reload_interval: Duration,
    /// Configured certificates with the file stamps they were loaded from.
    configured: Mutex<Vec<Loaded>>,
    self_signed: Option<Arc<ServedCert>>,
}

/// The server configurations of the three listener kinds.
struct Configs {
    starttls: Arc<ServerConfig>,
    direct: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
}

impl Configs {
    fn new(
        provider: &Arc<CryptoProvider>,
        resolver: &Arc<SniResolver>,
        resumption: bool,
    ) -> Result<Configs, TlsError> {
        Ok(Configs {
            starttls: server_config(provider, resolver, &[], resumption)?,
            // An ACME server validates on port 443 (RFC 8737 §3), where either listener may be.
            direct: server_config(
                provider,
                resolver,
                &[ALPN_XMPP_CLIENT, ALPN_ACME_TLS],
                resumption,
            )?,
            // HTTP/1.1 only: WebSocket (RFC 6455) upgrades an HTTP/1.1 connection.
            http: server_config(
                provider,
                resolver,
                &[ALPN_HTTP_1_1, ALPN_ACME_TLS],
                resumption,
            )?,
        })
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the configured PEM certs (one per domain, chosen by SNI); hosts without one get a
    /// self-signed certificate generated at first start (SANs = those hosts) and kept in
    /// `data_dir/tls/`, reused on the next start while the host list is unchanged.
    pub fn load(settings: TlsSettings) -> Result<Arc<Tls>, TlsError> {
        let hosts: Vec<String> = settings.hosts.iter().map(|h| normalize_name(h)).collect();
        if hosts.is_empty() {
            return Err(TlsError::NoHosts);
        }
        let provider = Arc::new(CryptoProvider {
            cipher_suites: preferred_cipher_suites(),
            ..rustls::crypto::ring::default_provider()
        });
        let mut configured = Vec::with_capacity(settings.certificates.len());
        for spec in &settings.certificates {
            let spec = CertificateSpec {
                domain: normalize_name(&spec.domain),
                ..spec.clone()
            };
            let stamp = stamp_of(&spec);
            let cert = load_spec(&spec, &provider)?;
            configured.push(Loaded { spec, stamp, cert });
        }
        let uncovered: Vec<String> = hosts
            .iter()
            .filter(|h| !configured.iter().any(|l| &l.spec.domain == *h))
            .cloned()
            .collect();
        let self_signed = if uncovered.is_empty() {
            None
        } else {
            Some(self_signed(
                &settings.data_dir.join("tls"),
                &uncovered,
                &provider,
            )?)
        };
        let table = build_table(&hosts, &configured, self_signed.as_ref());
        let resolver = Arc::new(SniResolver {
            table: RwLock::new(Arc::new(table)),
            acme: RwLock::default(),
        });
        let configs = Configs::new(&provider, &resolver, settings.session_resumption)?;
        Ok(Arc::new(Tls {
            provider,
            hosts,
            resolver,
            session_resumption: settings.session_resumption,
            configs: RwLock::new(configs),
            reload_interval: settings.reload_interval,
            configured: Mutex::new(configured),
            self_signed,
        }))
    }

    /// Polls the configured files' mtimes every `reload_interval` and swaps certificates in
    /// without a restart (a bad new file is logged and the old certificate kept).
    pub fn spawn_reloader(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let tls = Arc::clone(self);
        tokio::spawn(async move {
            let period = tls.reload_interval.max(Duration::from_secs(1));
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                tls.reload_now();
            }
        })
    }

    /// Re-reads every configured certificate whose files changed since the last look; returns
    /// how many were swapped in. Files that fail to load keep the old certificate in service.
    pub fn reload_now(&self) -> usize {
        let mut configured = match self.configured.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut swapped = 0;
        for loaded in configured.iter_mut() {
            let stamp = stamp_of(&loaded.spec);
            if stamp == loaded.stamp {
                continue;
            }
            // Remember the stamp even on failure, so a broken file is reported once, not on
            // every tick; the next write to either file triggers another attempt.
            loaded.stamp = stamp;
            match load_spec(&loaded.spec, &self.provider) {
                Ok(cert) => {
                    tracing::info!(domain = %loaded.spec.domain, "reloaded TLS certificate");
                    loaded.cert = cert;
                    swapped += 1;
                }
                Err(e) => tracing::warn!(
                    domain = %loaded.spec.domain,
                    error = %e,
                    "new TLS certificate not usable, keeping the old one"
                ),
            }
        }
        if swapped > 0 {
            let table = build_table(&self.hosts, &configured, self.self_signed.as_ref());
            self.resolver.replace(table);
            self.forget_sessions();
        }
        swapped
    }

    /// Serves `spec` for its domain from now on, in place of what served it (a self-signed
    /// certificate, or an earlier file pair), and watches its files like the configured ones.
    /// A pair that does not load is refused and nothing changes.
    pub fn install(&self, spec: CertificateSpec) -> Result<(), TlsError> {
        let spec = CertificateSpec {
            domain: normalize_name(&spec.domain),
            ..spec
        };
        let cert = load_spec(&spec, &self.provider)?;
        let stamp = stamp_of(&spec);
        let mut configured = match self.configured.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        configured.retain(|l| l.spec.domain != spec.domain);
        configured.push(Loaded { spec, stamp, cert });
        let table = build_table(&self.hosts, &configured, self.self_signed.as_ref());
        self.resolver.replace(table);
        self.forget_sessions();
        Ok(())
    }

    /// After a change of certificates, no session made before it resumes: a resumed
    /// handshake sends no certificate, so its client still holds the old one, and the
    /// `tls-server-end-point` binding (computed from the certificate served now) would not
    /// match. New configurations with new ticket keys and empty session caches make every
    /// client's next handshake a full one.
    fn forget_sessions(&self) {
        if !self.session_resumption {
            return;
        }
        match Configs::new(&self.provider, &self.resolver, true) {
            Ok(configs) => *self.configs.write().unwrap_or_else(|p| p.into_inner()) = configs,
            // Only the ticket keys' generation can fail (the system's random source).
            Err(e) => {
                tracing::warn!(error = %e, "TLS sessions of before the certificate change kept")
            }
        }
    }

    fn config(&self, pick: impl Fn(&Configs) -> &Arc<ServerConfig>) -> Arc<ServerConfig> {
        let configs = self.configs.read().unwrap_or_else(|p| p.into_inner());
        Arc::clone(pick(&configs))
    }

    /// Serves `cert` (DER) with `key` (PKCS#8 DER) to tls-alpn-01 validations of `name` until
    /// cleared (RFC 8737 §3).
    pub fn set_acme_challenge(
        &self,
        name: &str,
        cert: Vec<u8>,
        key: Vec<u8>,
    ) -> Result<(), TlsError> {
        let key = PrivateKeyDer::Pkcs8(key.into());
        let signer = self.provider.key_provider.load_private_key(key)?;
        let certified = CertifiedKey::new(vec![CertificateDer::from(cert)], signer);
        let mut acme = self
            .resolver
            .acme
            .write()
            .unwrap_or_else(|p| p.into_inner());
        acme.insert(normalize_name(name), Arc::new(certified));
        Ok(())
    }

    /// Ends the tls-alpn-01 challenge of `name`.
    pub fn clear_acme_challenge(&self, name: &str) {
        let mut acme = self
            .resolver
            .acme
            .write()
            .unwrap_or_else(|p| p.into_inner());
        acme.remove(&normalize_name(name));
    }

    /// The chain served to a client that asked for `sni` (leaf first).
    pub fn served_chain(&self, sni: Option<&str>) -> Vec<CertificateDer<'static>> {
        self.resolver.current().lookup(sni).key.cert.clone()
    }

    /// The certificates by SNI, for other listeners serving the same domains (server-to-server
    /// federation), which build their own configuration around it.
    pub fn cert_resolver(&self) -> Arc<dyn ResolvesServerCert> {
        Arc::clone(&self.resolver) as Arc<dyn ResolvesServerCert>
    }

    /// The certificate and key served for `name` (or the fallback): what xmppd presents as
    /// `name` when it is the TLS client (XEP-0178: the certificate of the initiating server).
    pub fn certified_key(&self, name: &str) -> Arc<CertifiedKey> {
        Arc::clone(&self.resolver.current().lookup(Some(name)).key)
    }

    pub(crate) fn starttls_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config(|c| &c.starttls))
    }

    pub(crate) fn direct_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config(|c| &c.direct))
    }

    /// The acceptor of the HTTPS listeners (`xmppd-http`): the same certificates, by SNI, with
    /// ALPN `http/1.1`.
    pub fn http_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config(|c| &c.http))
    }

    /// Channel-binding data of an established connection. The served certificate is looked up
    /// again by SNI (a resumed session was made under the certificates served now: sessions
    /// are forgotten when they change); a reload racing with a handshake can at worst make
    /// `-PLUS` fail for that one connection, which the client then sees as an authentication
    /// failure.
    pub fn channel_bindings(&self, conn: &ServerConnection) -> ChannelBindings {
        let tls_exporter = if conn.protocol_version() == Some(ProtocolVersion::TLSv1_3) {
            conn.export_keying_material(vec![0u8; 32], EXPORTER_LABEL, None)
                .ok()
        } else {
            // RFC 9266 defines tls-exporter for TLS 1.3 only (1.2 lacks the needed guarantees
            // unless extended master secret is in force).
            None
        };
        let table = self.resolver.current();
        let tls_server_end_point = table.lookup(conn.server_name()).end_point.clone();
        ChannelBindings {
            tls_exporter,
            tls_server_end_point,
        }
    }
}

/// A certificate ready to serve, with its precomputed `tls-server-end-point` hash.
#[derive(Debug)]
struct ServedCert {
    key: Arc<CertifiedKey>,
    end_point: Option<Vec<u8>>,
}

impl ServedCert {
    fn new(key: CertifiedKey) -> ServedCert {
        let end_point = key
            .cert
            .first()
            .and_then(|leaf| end_point_hash(leaf.as_ref()));
        ServedCert {
            key: Arc::new(key),
            end_point,
        }
    }
}

struct Loaded {
    spec: CertificateSpec,
    stamp: Option<Stamp>,
    cert: Arc<ServedCert>,
}

/// Modification times and sizes of a cert/key pair: what the reloader compares.
type Stamp = [(SystemTime, u64); 2];

fn stamp_of(spec: &CertificateSpec) -> Option<Stamp> {
    let one = |p: &Path| std::fs::metadata(p).and_then(|m| Ok((m.modified()?, m.len())));
    Some([one(&spec.cert).ok()?, one(&spec.key).ok()?])
}

/// Domain names as SNI delivers them: lowercase, no trailing dot.
fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The certificates by name, swapped as a whole on reload.
#[derive(Debug)]
struct CertTable {
    by_name: HashMap<String, Arc<ServedCert>>,
    fallback: Arc<ServedCert>,
}

impl CertTable {
    /// Exact name first, then the parent domain (a host's certificate usually covers its
    /// subdomains by wildcard), then the first host's certificate.
    fn lookup(&self, sni: Option<&str>) -> &Arc<ServedCert> {
        let Some(sni) = sni else {
            return &self.fallback;
        };
        let name = normalize_name(sni);
        if let Some(c) = self.by_name.get(&name) {
            return c;
        }
        if let Some(c) = name
            .split_once('.')
            .and_then(|(_, parent)| self.by_name.get(parent))
        {
            return c;
        }
        &self.fallback
    }
}

fn build_table(
    hosts: &[String],
    configured: &[Loaded],
    self_signed: Option<&Arc<ServedCert>>,
) -> CertTable {
    let mut by_name = HashMap::new();
    for l in configured {
        by_name.insert(l.spec.domain.clone(), Arc::clone(&l.cert));
    }
    if let Some(ss) = self_signed {
        for h in hosts {
            by_name.entry(h.clone()).or_insert_with(|| Arc::clone(ss));
        }
    }
    // `load` guarantees every host has an entry: configured or self-signed.
    let fallback = hosts
        .first()
        .and_then(|h| by_name.get(h))
        .or(self_signed)
        .or_else(|| configured.first().map(|l| &l.cert))
        .map(Arc::clone)
        .expect("at least one certificate per host");
    CertTable { by_name, fallback }
}

struct SniResolver {
    table: RwLock<Arc<CertTable>>,
    /// tls-alpn-01 challenge certificates by name, while ACME validates them.
    acme: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SniResolver")
    }
}

impl SniResolver {
    fn current(&self) -> Arc<CertTable> {
        match self.table.read() {
            Ok(t) => Arc::clone(&t),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn replace(&self, table: CertTable) {
        match self.table.write() {
            Ok(mut t) => *t = Arc::new(table),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(table),
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = client_hello
            .alpn()
            .is_some_and(|mut p| p.any(|p| p == ALPN_ACME_TLS));
        if acme {
            // RFC 8737 §3: the challenge certificate or none; never the served one.
            let name = normalize_name(client_hello.server_name()?);
            let challenges = self.acme.read().unwrap_or_else(|p| p.into_inner());
            return challenges.get(&name).cloned();
        }
        Some(Arc::clone(
            &self.current().lookup(client_hello.server_name()).key,
        ))
    }
}

/// The cipher suites, in the server's order of preference, which decides (the clients' order
/// is not followed). AES-128-GCM with SHA-256 first: every TLS 1.3 client implements it
/// (RFC 8446 §9.1), its key schedule hashes with SHA-256, which current CPUs compute with
/// their SHA extensions, where SHA-384 (of AES-256-GCM, which most clients list first) runs
/// in software (13 % of a SCRAM login's instructions under callgrind); and its records take
/// 10 AES rounds instead of 14. ChaCha20-Poly1305 next, for clients without AES-GCM; AES-256-GCM last. Every
/// suite stays offered.
fn preferred_cipher_suites() -> Vec<rustls::SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite::*;
    vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_CHACHA20_POLY1305_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ]
}

/// How many TLS 1.2 sessions (by session ID) each listener kind remembers for resumption;
/// a client that offers a ticket needs no entry.
const SESSION_CACHE: usize = 1024;

fn server_config(
    provider: &Arc<CryptoProvider>,
    resolver: &Arc<SniResolver>,
    alpn: &[&[u8]],
    resumption: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(resolver) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.ignore_client_order = true;
    if resumption {
        // Stateless tickets: the server keeps nothing per session, so a reconnect storm of
        // every client resumes. Each listener kind has keys of its own, so a session resumes
        // only where it was made. TLS 1.3 resumption still runs an ECDHE exchange (rustls
        // offers only psk_dhe_ke), so it keeps forward secrecy; keys live in memory only, and
        // a restart makes every client do a full handshake once.
        config.ticketer = rustls::crypto::ring::Ticketer::new()?;
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    } else {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(Arc::new(config))
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn load_spec(
    spec: &CertificateSpec,
    provider: &CryptoProvider,
) -> Result<Arc<ServedCert>, TlsError> {
    let cert_pem = read_file(&spec.cert)?;
    let key_pem = read_file(&spec.key)?;
    load_pem(
        &spec.domain,
        &spec.cert,
        &cert_pem,
        &spec.key,
        &key_pem,
        provider,
    )
}

fn load_pem(
    domain: &str,
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<Arc<ServedCert>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert_path.to_owned(),
            msg: e.to_string(),
        })?;
    if chain.is_empty() {
        let msg = "no CERTIFICATE section".to_owned();
        return Err(TlsError::Pem {
            path: cert_path.to_owned(),
            msg,
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
        path: key_path.to_owned(),
        msg: e.to_string(),
    })?;
    let certified =
        CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Key {
            domain: domain.to_owned(),
            source,
        })?;
    Ok(Arc::new(ServedCert::new(certified)))
}

const SELF_SIGNED_CERT: &str = "self-signed.crt";
const SELF_SIGNED_KEY: &str = "self-signed.key";
/// The hosts the stored self-signed certificate was made for, one per line.
const SELF_SIGNED_HOSTS: &str = "self-signed.hosts";

/// Loads the self-signed certificate for `hosts` from `dir`, generating (and storing) a new
/// one when there is none, it was made for other hosts, or it does not load.
fn self_signed(
    dir: &Path,
    hosts: &[String],
    provider: &CryptoProvider,
) -> Result<Arc<ServedCert>, TlsError> {
    let (cert_path, key_path) = (dir.join(SELF_SIGNED_CERT), dir.join(SELF_SIGNED_KEY));
    let hosts_line = hosts.join("\n");
    let stored_hosts = std::fs::read_to_string(dir.join(SELF_SIGNED_HOSTS)).unwrap_or_default();
    if stored_hosts.trim_end() == hosts_line {
        let reused = read_file(&cert_path).and_then(|cert| {
            let key = read_file(&key_path)?;
            load_pem(&hosts[0], &cert_path, &cert, &key_path, &key, provider)
        });
        match reused {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(error = %e, "stored self-signed certificate unusable, replacing it")
            }
        }
    }
    let generate = || -> Result<(String, String), rcgen::Error> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(hosts.to_vec())?;
        // Clients that show the subject (and older ones matching on it) see the host.
        params.distinguished_name = rcgen::DistinguishedName::new();
        (params.distinguished_name).push(rcgen::DnType::CommonName, hosts[0].as_str());
        Ok((params.self_signed(&key)?.pem(), key.serialize_pem()))
    };
    let (cert_pem, key_pem) = generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_private(&key_path, key_pem.as_bytes()).map_err(io(&key_path))?;
    std::fs::write(&cert_path, &cert_pem).map_err(io(&cert_path))?;
    let hosts_path = dir.join(SELF_SIGNED_HOSTS);
    std::fs::write(&hosts_path, format!("{hosts_line}\n")).map_err(io(&hosts_path))?;
    tracing::warn!(
        hosts = %hosts.join(", "),
        path = %cert_path.display(),
        "no certificate configured: serving a generated self-signed one"
    );
    load_pem(
        &hosts[0],
        &cert_path,
        cert_pem.as_bytes(),
        &key_path,
        key_pem.as_bytes(),
        provider,
    )
}

/// Writes a file only the owner can read (a private key).
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(data)
}

/// RFC 5929 `tls-server-end-point`: the leaf certificate hashed with its signature's hash
/// function, SHA-256 when that is MD5, SHA-1 or unrecognised. `None` when the signature
/// algorithm has no single hash function (EdDSA), where the binding is undefined.
pub(crate) fn end_point_hash(cert_der: &[u8]) -> Option<Vec<u8>> {
    Some(match signature_hash(cert_der)? {
        EndPointHash::Sha256 => sha2::Sha256::digest(cert_der).to_vec(),
        EndPointHash::Sha384 => sha2::Sha384::digest(cert_der).to_vec(),
        EndPointHash::Sha512 => sha2::Sha512::digest(cert_der).to_vec(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndPointHash {
    Sha256,
    Sha384,
    Sha512,
}

// OID contents (DER, without tag and length).
const OID_RSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const OID_RSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
const OID_RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const OID_ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const OID_ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_ED448: &[u8] = &[0x2b, 0x65, 0x71];
// With tag and length: RSASSA-PSS names its hash inside the parameters.
const OID_SHA384_TLV: &[u8] = &[
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
];
const OID_SHA512_TLV: &[u8] = &[
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
];

/// Reads `Certificate.signatureAlgorithm` (RFC 5280 §4.1.1.2) from a DER certificate.
fn signature_hash(cert_der: &[u8]) -> Option<EndPointHash> {
    let Some((0x30, cert, _)) = der_tlv(cert_der) else {
        return Some(EndPointHash::Sha256);
    };
    let sig_alg = der_tlv(cert).and_then(|(_tbs_tag, _tbs, rest)| der_tlv(rest));
    let Some((0x30, alg, _)) = sig_alg else {
        return Some(EndPointHash::Sha256);
    };
    let Some((0x06, oid, params)) = der_tlv(alg) else {
        return Some(EndPointHash::Sha256);
    };
    let contains = |needle: &[u8]| params.windows(needle.len()).any(|w| w == needle);
    Some(match oid {
        OID_RSA_SHA384 | OID_ECDSA_SHA384 => EndPointHash::Sha384,
        OID_RSA_SHA512 | OID_ECDSA_SHA512 => EndPointHash::Sha512,
        OID_ED25519 | OID_ED448 => return None,
        OID_RSA_PSS if contains(OID_SHA384_TLV) => EndPointHash::Sha384,
        OID_RSA_PSS if contains(OID_SHA512_TLV) => EndPointHash::Sha512,
        _ => EndPointHash::Sha256,
    })
}

/// One DER TLV: (tag, contents, rest). Definite lengths only, as DER requires.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (len_bytes, after) = rest.split_at(n);
        rest = after;
        len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    Some((tag, contents, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate(names: &[&str], alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write_pair(dir: &Path, stem: &str, pem: &(String, String)) -> CertificateSpec {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &pem.0).unwrap();
        std::fs::write(&key, &pem.1).unwrap();
        CertificateSpec {
            domain: stem.to_owned(),
            cert,
            key,
        }
    }

    fn settings(dir: &Path, hosts: &[&str], certificates: Vec<CertificateSpec>) -> TlsSettings {
        TlsSettings {
            certificates,
            data_dir: dir.join("data"),
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            reload_interval: Duration::from_secs(60),
            session_resumption: true,
        }
    }

    fn leaf(tls: &Tls, sni: Option<&str>) -> Vec<u8> {
        tls.served_chain(sni)[0].as_ref().to_vec()
    }

    #[test]
    fn der_tlv_reads_short_and_long_lengths() {
        assert_eq!(
            der_tlv(&[0x04, 0x02, 0xaa, 0xbb, 0xcc]),
            Some((4, &[0xaa, 0xbb][..], &[0xcc][..]))
        );
        let mut long = vec![0x30, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7u8, 0x80));
        let (tag, contents, rest) = der_tlv(&long).unwrap();
        assert_eq!((tag, contents.len(), rest.len()), (0x30, 0x80, 0));
        assert_eq!(der_tlv(&[0x30, 0x05, 0x00]), None, "truncated contents");
        assert_eq!(der_tlv(&[0x30, 0x80]), None, "indefinite length is not DER");
    }

    #[test]
    fn end_point_hash_follows_the_signature_hash() {
        for (alg, len) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, 32),
            (&rcgen::PKCS_ECDSA_P384_SHA384, 48),
        ] {
            let (pem, _) = generate(&["a.example"], alg);
            let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            let hash = end_point_hash(der.as_ref()).unwrap();
            assert_eq!(hash.len(), len);
            let expected = if len == 32 {
                sha2::Sha256::digest(der.as_ref()).to_vec()
            } else {
                sha2::Sha384::digest(der.as_ref()).to_vec()
            };
            assert_eq!(hash, expected);
        }
        let (pem, _) = generate(&["a.example"], &rcgen::PKCS_ED25519);
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(
            end_point_hash(der.as_ref()),
            None,
            "EdDSA has no defined end-point hash"
        );
        // Garbage is hashed with the default rather than rejected.
        assert_eq!(end_point_hash(b"\x01\x02").map(|h| h.len()), Some(32));
    }

    #[test]
    fn sni_resolver_chooses_per_domain() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_pair(
            dir.path(),
            "a.example",
            &generate(&["a.example"], &rcgen::PKCS_ECDSA_P256_SHA256),
        );
        let b = write_pair(
            dir.path(),
            "b.example",
            &generate(&["b.example"], &rcgen::PKCS_ECDSA_P256_SHA256),
        );
        let tls = Tls::load(settings(
            dir.path(),
            &["b.example", "a.example", "c.example"],
            vec![a.clone(), b.clone()],
        ))
        .unwrap();
        let a_der = CertificateDer::from_pem_file(&a.cert)
            .unwrap()
            .as_ref()
            .to_vec();
        let b_der = CertificateDer::from_pem_file(&b.cert)
            .unwrap()
            .as_ref()
            .to_vec();
        assert_eq!(leaf(&tls, Some("a.example")), a_der);
        assert_eq!(
            leaf(&tls, Some("A.Example.")),
            a_der,
            "SNI is case-insensitive"
        );
        assert_eq!(leaf(&tls, Some("b.example")), b_der);
        assert_eq!(
            leaf(&tls, Some("upload.a.example")),
            a_der,
            "parent domain's certificate"
        );
        assert_eq!(leaf(&tls, None), b_der, "no SNI: first host");
        assert_eq!(
            leaf(&tls, Some("other.test")),
            b_der,
            "unknown name: first host"
        );
        let c = leaf(&tls, Some("c.example"));
        assert_ne!(c, a_der);
        assert_ne!(c, b_der);
        assert!(
            dir.path().join("data/tls").join(SELF_SIGNED_CERT).exists(),
            "c.example is self-signed"
        );
    }

    #[test]
    fn an_installed_certificate_replaces_the_self_signed_one_and_a_bad_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let tls = Tls::load(settings(dir.path(), &["a.example"], vec![])).unwrap();
        let self_signed = leaf(&tls, Some("a.example"));
        let pair = generate(&["a.example"], &rcgen::PKCS_ECDSA_P256_SHA256);
        let spec = write_pair(dir.path(), "a.example", &pair);
        let der = CertificateDer::from_pem_file(&spec.cert)
            .unwrap()
            .as_ref()
            .to_vec();
        // A pair whose key does not load is refused; the old certificate still serves.
        let broken = CertificateSpec {
            key: spec.cert.clone(),
            ..spec.clone()
        };
        assert!(tls.install(broken).is_err());
        assert_eq!(leaf(&tls, Some("a.example")), self_signed);
        tls.install(spec.clone()).unwrap();
        assert_eq!(leaf(&tls, Some("a.example")), der);
        assert_eq!(leaf(&tls, Some("conference.a.example")), der);
        assert_eq!(leaf(&tls, None), der, "the first host's, without SNI");
        // Installed again (renewed): still one entry, watched by the reloader.
        tls.install(spec).unwrap();
        assert_eq!(tls.configured.lock().unwrap().len(), 1);
    }

    /// The commonName values of a DER certificate's subject (RFC 5280 §4.1.2.6).
    fn subject_common_names(cert_der: &[u8]) -> Vec<String> {
        const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
        let (_, cert, _) = der_tlv(cert_der).unwrap();
        let (_, mut tbs, _) = der_tlv(cert).unwrap();
        if tbs[0] == 0xa0 {
            tbs = der_tlv(tbs).unwrap().2; // version
        }
        // serial, signature, issuer, validity; then the subject.
        for _ in 0..4 {
            tbs = der_tlv(tbs).unwrap().2;
        }
        let (_, mut rdns, _) = der_tlv(tbs).unwrap();
        let mut names = Vec::new();
        while let Some((_, set, rest)) = der_tlv(rdns) {
            let (_, attr, _) = der_tlv(set).unwrap();
            let (_, oid, value) = der_tlv(attr).unwrap();
            if oid == OID_CN {
                let text = der_tlv(value).unwrap().1;
                names.push(String::from_utf8(text.to_vec()).unwrap());
            }
            rdns = rest;
        }
        names
    }

    #[test]
    fn self_signed_subject_names_the_first_host() {
        let dir = tempfile::tempdir().unwrap();
        let tls = Tls::load(settings(dir.path(), &["x.example", "y.example"], vec![])).unwrap();
        assert_eq!(
            subject_common_names(&leaf(&tls, Some("y.example"))),
            ["x.example"]
        );
    }

    #[test]
    fn self_signed_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = Tls::load(settings(dir.path(), &["x.example", "y.example"], vec![])).unwrap();
        let der = leaf(&first, Some("y.example"));
        assert_eq!(
            der,
            leaf(&first, Some("x.example")),
            "one certificate for all uncovered hosts"
        );
        let key_meta =
            std::fs::metadata(dir.path().join("data/tls").join(SELF_SIGNED_KEY)).unwrap();
        #[cfg(unix)]
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&key_meta.permissions()) & 0o077,
            0
        );
        let _ = key_meta;
        let again = Tls::load(settings(dir.path(), &["x.example", "y.example"], vec![])).unwrap();
        assert_eq!(leaf(&again, None), der, "reused on the next start");
        let other = Tls::load(settings(dir.path(), &["x.example", "z.example"], vec![])).unwrap();
        assert_ne!(leaf(&other, None), der, "regenerated when the hosts change");
    }

    #[test]
    fn reload_picks_up_a_new_certificate_and_keeps_the_old_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let spec = write_pair(dir.path(), "a.example", &generate(&["a.example"], alg));
        let tls = Tls::load(settings(dir.path(), &["a.example"], vec![spec.clone()])).unwrap();
        let old = leaf(&tls, None);
        assert_eq!(tls.reload_now(), 0, "nothing changed");

        std::thread::sleep(Duration::from_millis(20));
        write_pair(dir.path(), "a.example", &generate(&["a.example"], alg));
        assert_eq!(tls.reload_now(), 1);
        let new = leaf(&tls, None);
        assert_ne!(new, old);
        assert_eq!(
            new,
            CertificateDer::from_pem_file(&spec.cert)
                .unwrap()
                .as_ref()
                .to_vec()
        );

        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&spec.cert, "not a certificate").unwrap();
        assert_eq!(tls.reload_now(), 0);
        assert_eq!(leaf(&tls, None), new, "broken file: old certificate stays");

        // A key that does not match the certificate is refused too.
        std::thread::sleep(Duration::from_millis(20));
        let (cert, _) = generate(&["a.example"], alg);
        let (_, key) = generate(&["a.example"], alg);
        write_pair(dir.path(), "a.example", &(cert, key));
        assert_eq!(tls.reload_now(), 0);
        assert_eq!(leaf(&tls, None), new);
    }

    #[test]
    fn load_reports_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let spec = CertificateSpec {
            domain: "a.example".into(),
            cert: dir.path().join("missing.crt"),
            key: dir.path().join("missing.key"),
        };
        let err = Tls::load(settings(dir.path(), &["a.example"], vec![spec])).unwrap_err();
        assert!(matches!(err, TlsError::Io { .. }), "{err}");
        assert!(matches!(
            Tls::load(settings(dir.path(), &[], vec![])),
            Err(TlsError::NoHosts)
        ));
    }
}
