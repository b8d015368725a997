//! TLS of server-to-server streams (RFC 6120 §5, §13.7.2).
//!
//! Both sides present a certificate: the served one for the stream's domain. A peer's chain
//! is accepted at the handshake whatever it is, and judged afterwards against the trusted
//! roots and the domain the peer claims (RFC 6125 DNS-ID from the subjectAltName, never the
//! common name; wildcards only as the whole left-most label): a valid one allows SASL
//! EXTERNAL (XEP-0178), an invalid one leaves dialback (XEP-0220) where it is allowed. The
//! reference identity is always the domain itself: no SRV-ID, no delegation to the host an
//! SRV record names (a certificate of `xmpp.hosting.example` does not vouch for
//! `customer.example`).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// ALPN protocol of direct-TLS server-to-server connections (XEP-0368).
pub const ALPN_XMPP_SERVER: &[u8] = b"xmpp-server";

/// The certificates xmppd serves, by name: the same as for clients.
pub trait Certificates: Send + Sync {
    /// Chooses the certificate by SNI for a peer connecting to us.
    fn resolver(&self) -> Arc<dyn ResolvesServerCert>;
    /// The certificate presented as `domain` when xmppd connects out.
    fn certified_key(&self, domain: &str) -> Arc<CertifiedKey>;
}

/// The TLS side of federation: configurations and the judgement of peers' certificates.
pub struct PeerTls {
    provider: Arc<CryptoProvider>,
    /// `None`: no trusted root at all, so no peer certificate is valid.
    verifier: Option<Arc<WebPkiServerVerifier>>,
    certificates: Arc<dyn Certificates>,
    starttls: Arc<ServerConfig>,
    direct: Arc<ServerConfig>,
}

impl PeerTls {
    /// Trusts the roots of `ca_file` (PEM) if given, else the system's.
    pub fn new(
        certificates: Arc<dyn Certificates>,
        ca_file: Option<&Path>,
    ) -> Result<PeerTls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!("{}: no CERTIFICATE section", path.display()));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::warn!(error = %e, "reading the system's trusted certificates");
                }
                roots.add_parsable_certificates(found.certs);
            }
        }
        let verifier = if roots.is_empty() {
            tracing::warn!("no trusted root certificates: no peer certificate can be valid");
            None
        } else {
            let built =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| e.to_string())?;
            Some(built)
        };
        let server = |alpn: &[&[u8]]| -> Result<Arc<ServerConfig>, String> {
            let mut config = ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| e.to_string())?
                .with_client_cert_verifier(Arc::new(AnyClientCert(provider.clone())))
                .with_cert_resolver(certificates.resolver());
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(config))
        };
        Ok(PeerTls {
            starttls: server(&[])?,
            direct: server(&[ALPN_XMPP_SERVER])?,
            provider,
            verifier,
            certificates,
        })
    }

    pub fn acceptor(&self, direct: bool) -> tokio_rustls::TlsAcceptor {
        let config = if direct { &self.direct } else { &self.starttls };
        tokio_rustls::TlsAcceptor::from(Arc::clone(config))
    }

    /// A connector presenting the certificate of `local` (ALPN `xmpp-server` on direct TLS).
    pub fn connector(
        &self,
        local: &str,
        direct: bool,
    ) -> Result<tokio_rustls::TlsConnector, String> {
        let key = self.certificates.certified_key(local);
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(self.provider.clone())))
            .with_client_cert_resolver(Arc::new(OwnCert(key)));
        if direct {
            config.alpn_protocols = vec![ALPN_XMPP_SERVER.to_vec()];
        }
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    /// Whether `chain` (leaf first) is a valid certificate of `domain`: signed up to a
    /// trusted root, in its validity period, and naming `domain` in a DNS subjectAltName.
    pub fn check(&self, chain: &[CertificateDer<'_>], domain: &str) -> Result<(), String> {
        let verifier = self.verifier.as_ref().ok_or("no trusted roots")?;
        let (leaf, intermediates) = chain.split_first().ok_or("no certificate")?;
        let name = ServerName::try_from(domain.to_owned()).map_err(|e| e.to_string())?;
        if !matches!(name, ServerName::DnsName(_)) {
            return Err(format!("{domain} is not a domain name"));
        }
        verifier
            .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The handshake-signature checks of both verifiers below, the same on either side: the
/// peer must hold the key of the certificate it presents, with the provider's algorithms.
macro_rules! handshake_signatures {
    () => {
        handshake_signatures!(verify_tls12_signature, verify_tls13_signature);

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    };
    ($($check:ident),*) => {$(
        fn $check(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algs = &self.0.signature_verification_algorithms;
            rustls::crypto::$check(message, cert, dss, algs)
        }
    )*};
}

/// Takes the peer's certificate whatever it is (judged after the handshake, [`PeerTls::check`]),
/// checking only that the peer holds its key.
#[derive(Debug)]
struct AnyClientCert(Arc<CryptoProvider>);

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures!();
}

/// The same for the certificate of a server xmppd connects to.
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

/// Presents one certificate, the local domain's, when a server asks for one.
#[derive(Debug)]
struct OwnCert(Arc<CertifiedKey>);

impl ResolvesClientCert for OwnCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoCerts;

    impl Certificates for NoCerts {
        fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
            Arc::new(rustls::server::ResolvesServerCertUsingSni::new())
        }
        fn certified_key(&self, _: &str) -> Arc<CertifiedKey> {
            unreachable!()
        }
    }

    struct Ca {
        cert: rcgen::Certificate,
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    fn ca() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn leaf(ca: &Ca, sans: &[&str], cn: &str) -> CertificateDer<'static> {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.signed_by(&key, &ca.issuer).unwrap().der().clone()
    }

    fn trusting(ca: &Ca) -> PeerTls {
        let dir = std::env::temp_dir().join(format!("xmppd-s2s-tls-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).unwrap();
        let tls = PeerTls::new(Arc::new(NoCerts), Some(&path)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        tls
    }

    #[test]
    fn a_certificate_is_valid_for_the_names_of_its_dns_sans() {
        let ca = ca();
        let tls = trusting(&ca);
        let chain = [leaf(&ca, &["example.org", "*.example.org"], "example.org")];
        assert_eq!(tls.check(&chain, "example.org"), Ok(()));
        assert_eq!(tls.check(&chain, "EXAMPLE.org"), Ok(()));
        assert_eq!(tls.check(&chain, "conference.example.org"), Ok(()));
        // A wildcard stands for one whole label only (RFC 6125 §6.4.3).
        assert!(tls.check(&chain, "a.b.example.org").is_err());
        assert!(tls.check(&chain, "example.net").is_err());
    }

    #[test]
    fn the_common_name_is_never_an_identity() {
        let ca = ca();
        let tls = trusting(&ca);
        let cert = leaf(&ca, &["other.example"], "example.org");
        assert!(tls.check(&[cert], "example.org").is_err());
    }

    #[test]
    fn a_certificate_from_another_authority_is_not_valid() {
        let (ours, theirs) = (ca(), ca());
        let tls = trusting(&ours);
        let cert = leaf(&theirs, &["example.org"], "example.org");
        assert!(tls.check(&[cert], "example.org").is_err());
        assert!(tls.check(&[], "example.org").is_err());
    }
}
