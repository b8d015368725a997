//! ACME (RFC 8555) for xmppd: one certificate per served host, covering the host and its
//! service subdomains (`conference.`, `upload.`, …), obtained with the http-01 challenge
//! (§8.3) answered by the HTTP layer or the tls-alpn-01 challenge (RFC 8737) answered by the
//! TLS listeners, kept in `dir/HOST/`, handed to the TLS store, and renewed before it expires.
//!
//! The crate speaks no XMPP. Its seams: [`Challenges`] is the HTTP service of
//! `/.well-known/acme-challenge/`, and a [`CertificateStore`] takes new certificates and
//! tls-alpn-01 challenge certificates (the binary passes xmppd-c2s's TLS store). The protocol
//! itself is `instant-acme`'s.
//!
//! On disk, under `dir` (mode 0700): `account.json` (the account's key and URL, for the
//! configured directory; a new directory URL makes a new account), and per host
//! `HOST/certificate.pem` (mode 0600): the private key, then the chain, leaf first. Key and
//! chain are one file so that one rename replaces both: a crash leaves the old pair or the new
//! one, never a key beside another key's chain.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use tokio::sync::watch;
use xmppd_http::{full, text, Peer, RequestBody, ResponseBody};

/// Where the HTTP layer routes http-01 challenges (RFC 8555 §8.3).
pub const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// What the binary configures.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The ACME server's directory URL.
    pub directory_url: String,
    /// Contact URIs for the account (`mailto:…`).
    pub contact: Vec<String>,
    /// A PEM root that signs the ACME server's HTTPS certificate, for private ACME servers;
    /// `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// One certificate per served host: the names it covers, the host first.
    pub certificates: Vec<Vec<String>>,
    /// Where the account and the certificates are kept.
    pub dir: PathBuf,
    /// A certificate is renewed once it expires within this.
    pub renew_before: Duration,
    /// How often certificates are looked at.
    pub check_interval: Duration,
    /// How soon a failed attempt is retried.
    pub retry_interval: Duration,
    pub challenge: Challenge,
}

/// How the ACME server checks that this server answers for a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// A file under `/.well-known/acme-challenge/` on port 80 (RFC 8555 §8.3).
    Http01,
    /// A TLS handshake with ALPN `acme-tls/1` on port 443 (RFC 8737).
    TlsAlpn01,
}

/// Where certificates go: the TLS store that serves them.
pub trait CertificateStore: Send + Sync {
    /// Serves a host's new certificate from now on (`cert` and `key` may be one PEM file).
    fn install(&self, host: &str, cert: &Path, key: &Path) -> Result<(), String>;
    /// Answers tls-alpn-01 validations of `name` with `cert` (DER) and `key` (PKCS#8 DER).
    fn set_alpn_challenge(&self, name: &str, cert: Vec<u8>, key: Vec<u8>) -> Result<(), String>;
    /// Ends the tls-alpn-01 challenge of `name`.
    fn clear_alpn_challenge(&self, name: &str);
}

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME: {0}")]
    Protocol(#[from] instant_acme::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the order for {names} ended {status}")]
    Order { names: String, status: String },
    #[error("installing the certificate: {0}")]
    Install(String),
}

/// The key authorizations of the challenges in progress, by token; served over HTTP.
#[derive(Debug, Default)]
pub struct Challenges {
    tokens: Mutex<HashMap<String, String>>,
}

impl Challenges {
    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key authorization answered for `token`, if a challenge with it is in progress.
    pub fn answer(&self, token: &str) -> Option<String> {
        self.tokens().get(token).cloned()
    }
}

#[async_trait::async_trait]
impl xmppd_http::Service for Challenges {
    async fn call(&self, req: Request<RequestBody>, _peer: &Peer) -> Response<ResponseBody> {
        let token = req.uri().path().strip_prefix(CHALLENGE_PATH).unwrap_or("");
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only");
        }
        match self.answer(token) {
            // §8.3: the body is the key authorization itself, nothing around it.
            Some(key_authorization) => {
                let mut resp = Response::new(full(key_authorization));
                let octets = HeaderValue::from_static("application/octet-stream");
                resp.headers_mut().insert(CONTENT_TYPE, octets);
                resp
            }
            None => text(StatusCode::NOT_FOUND, "no such challenge"),
        }
    }
}

/// The file of one host's certificate under `dir`: its key, then its chain (PEM).
pub fn certificate_path(dir: &Path, host: &str) -> PathBuf {
    dir.join(host).join("certificate.pem")
}

/// What a certificate on disk covers and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateState {
    pub names: Vec<String>,
    pub not_after: SystemTime,
}

/// Reads the leaf of a PEM chain (the first certificate; other sections, such as the key, are
/// passed over): its DNS names and expiry. `None` if unreadable.
pub fn read_certificate(pem: &[u8]) -> Option<CertificateState> {
    let pem = x509_parser::pem::Pem::iter_from_buffer(pem)
        .map_while(Result::ok)
        .find(|p| p.label == "CERTIFICATE")?;
    let cert = pem.parse_x509().ok()?;
    let not_after = cert.validity().not_after.timestamp();
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(not_after).ok()?);
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => (san.value.general_names.iter())
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some(CertificateState { names, not_after })
}

/// Whether a certificate must be ordered: none, one that does not cover every wanted name,
/// or one that expires within `renew_before` of `now`.
pub fn needs_order(
    current: Option<&CertificateState>,
    wanted: &[String],
    now: SystemTime,
    renew_before: Duration,
) -> bool {
    let Some(c) = current else { return true };
    let covered = wanted.iter().all(|w| c.names.iter().any(|n| n == w));
    !covered || c.not_after <= now + renew_before
}

/// The client: orders what is missing or due, then sleeps.
pub struct Acme {
    settings: AcmeSettings,
    challenges: Arc<Challenges>,
    store: Arc<dyn CertificateStore>,
}

impl Acme {
    pub fn new(settings: AcmeSettings, store: Arc<dyn CertificateStore>) -> Acme {
        Acme {
            settings,
            challenges: Arc::default(),
            store,
        }
    }

    /// The HTTP service to route under [`CHALLENGE_PATH`].
    pub fn challenges(&self) -> Arc<Challenges> {
        Arc::clone(&self.challenges)
    }

    /// Checks every certificate now, then every `check_interval` (every `retry_interval`
    /// after a failure), until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let mut failed = false;
            for names in &self.settings.certificates {
                if let Err(e) = self.ensure(names).await {
                    failed = true;
                    tracing::warn!(host = %names[0], error = %e, "ACME: no certificate yet");
                }
            }
            let wait = match failed {
                true => self.settings.retry_interval,
                false => self.settings.check_interval,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Orders `names`' certificate if it is missing or due; `true` when one was obtained.
    pub async fn ensure(&self, names: &[String]) -> Result<bool, AcmeError> {
        let host = &names[0];
        let path = certificate_path(&self.settings.dir, host);
        let current = std::fs::read(&path)
            .ok()
            .and_then(|pem| read_certificate(&pem));
        let now = SystemTime::now();
        if !needs_order(current.as_ref(), names, now, self.settings.renew_before) {
            let days = (current.as_ref()).and_then(|c| c.not_after.duration_since(now).ok());
            let days = days.map_or(0, |d| d.as_secs() / 86_400);
            tracing::info!(%host, days, "ACME: certificate up to date");
            return Ok(false);
        }
        tracing::info!(%host, names = names.len(), "ACME: ordering a certificate");
        let (chain, key) = self.order(names).await?;
        create_private_dir(&self.settings.dir.join(host))?;
        let pem = format!("{}\n{chain}", key.trim_end());
        write_atomically(&path, pem.as_bytes(), 0o600)?;
        if let Err(e) = self.store.install(host, &path, &path) {
            // Not kept: the next check orders again rather than trusting a pair that failed.
            let _ = std::fs::remove_file(&path);
            return Err(AcmeError::Install(e));
        }
        tracing::info!(%host, "ACME: certificate obtained and installed");
        Ok(true)
    }

    /// One order: account, authorizations through the configured challenge, finalisation.
    /// Returns the PEM chain and the PEM key.
    async fn order(&self, names: &[String]) -> Result<(String, String), AcmeError> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = names.iter().cloned().map(Identifier::Dns).collect();
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        // What this order put up, taken down whatever its outcome.
        let mut tokens = Vec::new();
        let mut alpn_names = Vec::new();
        let outcome = async {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz?;
                if authz.status == AuthorizationStatus::Valid {
                    continue;
                }
                let kind = match self.settings.challenge {
                    Challenge::Http01 => ChallengeType::Http01,
                    Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
                };
                let Some(mut challenge) = authz.challenge(kind.clone()) else {
                    return Err(AcmeError::Order {
                        names: names.join(", "),
                        status: format!("without a {kind:?} challenge"),
                    });
                };
                let key_authorization = challenge.key_authorization();
                match self.settings.challenge {
                    Challenge::Http01 => {
                        let token = challenge.token.clone();
                        let answer = key_authorization.as_str().to_owned();
                        self.challenges.tokens().insert(token.clone(), answer);
                        tokens.push(token);
                    }
                    Challenge::TlsAlpn01 => {
                        let name = challenge.identifier().to_string();
                        let (cert, key) = alpn_certificate(&name, key_authorization.digest())?;
                        (self.store.set_alpn_challenge(&name, cert, key))
                            .map_err(AcmeError::Install)?;
                        alpn_names.push(name);
                    }
                }
                challenge.set_ready().await?;
            }
            let retries = RetryPolicy::new().timeout(Duration::from_secs(120));
            let status = order.poll_ready(&retries).await?;
            if status != OrderStatus::Ready {
                return Err(AcmeError::Order {
                    names: names.join(", "),
                    status: format!("{status:?}"),
                });
            }
            let key = order.finalize().await?;
            let chain = order.poll_certificate(&retries).await?;
            Ok((chain, key))
        }
        .await;
        let mut pending = self.challenges.tokens();
        tokens.iter().for_each(|t| drop(pending.remove(t)));
        alpn_names
            .iter()
            .for_each(|n| self.store.clear_alpn_challenge(n));
        outcome
    }

    /// The stored account for the configured directory, or a new one.
    async fn account(&self) -> Result<Account, AcmeError> {
        let path = self.settings.dir.join("account.json");
        let stored = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<StoredAccount>(&b).ok())
            .filter(|s| s.directory_url == self.settings.directory_url);
        if let Some(stored) = stored {
            return Ok(self.builder()?.from_credentials(stored.credentials).await?);
        }
        let contact: Vec<&str> = self.settings.contact.iter().map(String::as_str).collect();
        let new = NewAccount {
            contact: &contact,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let url = self.settings.directory_url.clone();
        let (account, credentials) = self.builder()?.create(&new, url, None).await?;
        let stored = StoredAccount {
            directory_url: self.settings.directory_url.clone(),
            credentials,
        };
        create_private_dir(&self.settings.dir)?;
        let json = serde_json::to_vec_pretty(&stored).map_err(instant_acme::Error::from)?;
        write_atomically(&path, &json, 0o600)?;
        tracing::info!(id = account.id(), "ACME: account created");
        Ok(account)
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, AcmeError> {
        Ok(match &self.settings.ca_file {
            Some(ca) => Account::builder_with_root(ca)?,
            None => Account::builder()?,
        })
    }
}

/// The self-signed certificate of a tls-alpn-01 challenge (RFC 8737 §3): `name` as its only
/// name, and the SHA-256 digest of the key authorization in the critical acmeIdentifier
/// extension. Returns the certificate and its PKCS#8 key, both DER.
fn alpn_certificate(name: &str, digest: impl AsRef<[u8]>) -> Result<(Vec<u8>, Vec<u8>), AcmeError> {
    let failed = |e: rcgen::Error| AcmeError::Install(format!("challenge certificate: {e}"));
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(failed)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest.as_ref())];
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok((cert.der().to_vec(), key.serialize_der()))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAccount {
    directory_url: String,
    credentials: AccountCredentials,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> AcmeError + '_ {
    move |source| AcmeError::Io {
        path: path.to_owned(),
        source,
    }
}

fn create_private_dir(dir: &Path) -> Result<(), AcmeError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(dir))
}

/// Writes `bytes` to a temporary file beside `path` with `mode`, syncs it, and renames it.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AcmeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    f.write_all(bytes).map_err(io_error(&tmp))?;
    f.sync_all().map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_for(names: &[&str], days: i64) -> String {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let now = rcgen::date_time_ymd(2026, 1, 1);
        params.not_before = now;
        params.not_after = now + Duration::from_secs(days as u64 * 86_400);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    fn at(y: i32, m: u8, d: u8) -> SystemTime {
        let t = rcgen::date_time_ymd(y, m, d).unix_timestamp();
        SystemTime::UNIX_EPOCH + Duration::from_secs(t as u64)
    }

    #[test]
    fn a_certificate_is_read_with_its_names_and_expiry() {
        let pem = pem_for(&["Example.org", "conference.example.org"], 90);
        let state = read_certificate(pem.as_bytes()).unwrap();
        assert_eq!(state.names, ["example.org", "conference.example.org"]);
        assert_eq!(state.not_after, at(2026, 4, 1));
        assert_eq!(read_certificate(b"not a certificate"), None);
        // As stored: the key first, then the chain.
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let stored = read_certificate(format!("{key}{pem}").as_bytes());
        assert_eq!(stored, Some(state));
    }

    #[test]
    fn an_order_is_due_when_missing_short_of_names_or_expiring() {
        let wanted = ["example.org".to_owned(), "upload.example.org".to_owned()];
        let month = Duration::from_secs(30 * 86_400);
        let both = read_certificate(pem_for(&["example.org", "upload.example.org"], 90).as_bytes());
        let one = read_certificate(pem_for(&["example.org"], 90).as_bytes());
        assert!(needs_order(None, &wanted, at(2026, 1, 2), month));
        assert!(!needs_order(both.as_ref(), &wanted, at(2026, 1, 2), month));
        assert!(needs_order(one.as_ref(), &wanted, at(2026, 1, 2), month));
        // 2026-04-01 expiry: renewed from 30 days before it.
        assert!(!needs_order(both.as_ref(), &wanted, at(2026, 3, 1), month));
        assert!(needs_order(both.as_ref(), &wanted, at(2026, 3, 3), month));
    }

    #[tokio::test]
    async fn challenges_answer_their_key_authorization_only() {
        let c = Challenges::default();
        c.tokens().insert("tok".into(), "tok.thumb".into());
        assert_eq!(c.answer("tok").as_deref(), Some("tok.thumb"));
        assert_eq!(c.answer("other"), None);
    }

    #[test]
    fn the_alpn_certificate_names_the_domain_and_carries_the_digest() {
        let digest = [7u8; 32];
        let (der, _key) = alpn_certificate("upload.example.org", digest).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            [x509_parser::extensions::GeneralName::DNSName(
                "upload.example.org"
            )]
        );
        // id-pe-acmeIdentifier (RFC 8737 §6.1), critical, an OCTET STRING of the digest.
        let ext = (cert.extensions().iter())
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        assert_eq!(ext.value, [&[4u8, 32][..], &digest].concat());
    }

    #[test]
    fn files_are_replaced_whole_with_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_atomically(&path, b"one", 0o600).unwrap();
        write_atomically(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!path.with_extension("tmp").exists());
    }
}
