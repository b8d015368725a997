//! `[s2s]`: federation composed from the s2s crate, the c2s certificates and DNS.

use std::sync::Arc;

use xmppd_c2s::Tls;
use xmppd_config::ValidatedConfig;
use xmppd_s2s::{dns, Certificates, PeerTls, S2s, S2sSettings};
use xmppd_stream::Limits;

use crate::Failure;

/// The certificates of the client listeners, served to peers too.
struct Served(Arc<Tls>);

impl Certificates for Served {
    fn resolver(&self) -> Arc<dyn rustls::server::ResolvesServerCert> {
        self.0.cert_resolver()
    }

    fn certified_key(&self, domain: &str) -> Arc<rustls::sign::CertifiedKey> {
        self.0.certified_key(domain)
    }
}

/// The federation service, or `None` when `[s2s]` is off.
pub fn federation(config: &ValidatedConfig, tls: &Arc<Tls>) -> Result<Option<S2s>, Failure> {
    let Some(s) = &config.s2s else {
        return Ok(None);
    };
    let peer_tls = PeerTls::new(Arc::new(Served(Arc::clone(tls))), s.ca_file.as_deref())
        .map_err(|e| format!("s2s.ca_file: {e}"))?;
    let resolver = dns::Hickory::new(s.resolver).map_err(|e| format!("s2s.resolver: {e}"))?;
    let settings = S2sSettings {
        listen: s.listen.clone(),
        direct_tls_listen: s.direct_tls_listen.clone(),
        ca_file: s.ca_file.clone(),
        dialback: s.dialback,
        require_valid_certificates: s.require_valid_certificates,
        allow: s.allow.clone(),
        deny: s.deny.clone(),
        stanzas_per_sec: s.stanzas_per_sec,
        refuse_strangers: s.refuse_strangers,
        routes: s.routes.clone().into_iter().collect(),
        connect_timeout: s.connect_timeout,
        handshake_timeout: s.handshake_timeout,
        idle_timeout: s.idle_timeout,
        bidi: s.bidi,
        ping_interval: s.ping_interval,
        ping_timeout: s.ping_timeout,
        queue_max: s.queue_max,
        max_inbound: s.max_inbound,
        max_pending_per_ip: s.max_pending_per_ip,
        max_outbound: s.max_outbound,
        max_domains_per_stream: s.max_domains_per_stream,
        failure_cache: s.failure_cache,
        allow_private_addresses: s.allow_private_addresses,
        limits: Limits {
            max_stanza_bytes: config.c2s.max_stanza_bytes,
            ..Limits::DEFAULT
        },
    };
    Ok(Some(S2s::new(settings, peer_tls, Arc::new(resolver))))
}
