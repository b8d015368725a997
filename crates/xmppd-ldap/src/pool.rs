//! A small pool of LDAP connections, each remembering whether it is bound as the service
//! account (a password check leaves it bound as the user until the next lease rebinds it).
//!
//! A lease holds a semaphore permit, so at most `pool_size` connections exist. A connection
//! goes back to the idle list only when the lease is released after a successful operation;
//! one dropped after an error or a timeout is closed, since its state is unknown.

use std::sync::{Arc, Mutex};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{LdapConfig, LdapError, TlsMode};

pub(crate) struct Conn {
    pub ldap: Ldap,
    /// Bound as the service account (or anonymous when no bind DN is configured).
    pub service_bound: bool,
}

pub(crate) struct Pool {
    cfg: Arc<LdapConfig>,
    tls: Option<Arc<rustls::ClientConfig>>,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
}

/// One connection in use. Dropping it closes the connection; [`Lease::release`] keeps it.
pub(crate) struct Lease {
    pub conn: Conn,
    /// Taken from the idle list (it may have died since), not freshly opened.
    pub reused: bool,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    pub fn new(cfg: Arc<LdapConfig>) -> Result<Pool, LdapError> {
        let secure_uri = cfg.uri.to_ascii_lowercase().starts_with("ldaps://");
        match (cfg.tls, secure_uri) {
            (TlsMode::Ldaps, false) => {
                return Err(LdapError::Config(
                    "tls = ldaps needs an ldaps:// uri".into(),
                ))
            }
            (TlsMode::None | TlsMode::StartTls, true) => {
                return Err(LdapError::Config(
                    "an ldaps:// uri needs tls = ldaps".into(),
                ))
            }
            _ => {}
        }
        let tls = match (&cfg.ca_file, cfg.tls) {
            (Some(path), TlsMode::StartTls | TlsMode::Ldaps) => Some(client_config(path)?),
            _ => None,
        };
        Ok(Pool {
            permits: Arc::new(Semaphore::new(cfg.pool_size.max(1))),
            cfg,
            tls,
            idle: Mutex::new(Vec::new()),
        })
    }

    pub fn config(&self) -> &LdapConfig {
        &self.cfg
    }

    /// An idle connection that still looks open, else a new one; waits at most the timeout
    /// for a free slot.
    pub async fn get(self: &Arc<Self>) -> Result<Lease, LdapError> {
        let permit = tokio::time::timeout(self.cfg.timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| LdapError::Timeout(self.cfg.timeout))?
            .map_err(|_| LdapError::Config("connection pool closed".into()))?;
        while let Some(mut conn) = self.take_idle() {
            if !conn.ldap.is_closed() {
                return Ok(self.lease(conn, true, permit));
            }
        }
        let conn = self.connect().await?;
        Ok(self.lease(conn, false, permit))
    }

    /// A new connection for a lease whose reused connection turned out dead.
    pub async fn reconnect(self: &Arc<Self>, lease: Lease) -> Result<Lease, LdapError> {
        let Lease { _permit, .. } = lease;
        let conn = self.connect().await?;
        Ok(self.lease(conn, false, _permit))
    }

    fn lease(self: &Arc<Self>, conn: Conn, reused: bool, permit: OwnedSemaphorePermit) -> Lease {
        Lease {
            conn,
            reused,
            pool: Arc::clone(self),
            _permit: permit,
        }
    }

    fn take_idle(&self) -> Option<Conn> {
        self.idle.lock().ok()?.pop()
    }

    async fn connect(&self) -> Result<Conn, LdapError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.cfg.timeout)
            .set_starttls(self.cfg.tls == TlsMode::StartTls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(Arc::clone(tls));
        }
        let connecting = LdapConnAsync::with_settings(settings, &self.cfg.uri);
        // The connect timeout covers TCP only; TLS and StartTLS are bounded here.
        let (driver, ldap) = tokio::time::timeout(self.cfg.timeout, connecting)
            .await
            .map_err(|_| LdapError::Timeout(self.cfg.timeout))??;
        tokio::spawn(async move {
            if let Err(e) = driver.drive().await {
                tracing::debug!(error = %e, "LDAP connection ended");
            }
        });
        Ok(Conn {
            ldap,
            service_bound: false,
        })
    }
}

impl Lease {
    /// Returns the connection to the idle list.
    pub fn release(self) {
        let Lease { conn, pool, .. } = self;
        let idle = pool.idle.lock();
        if let Ok(mut idle) = idle {
            idle.push(conn);
        }
    }
}

/// A TLS client configuration trusting only the CA certificates in `path`.
fn client_config(path: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, LdapError> {
    let shown = path.display();
    let bad = |why: String| LdapError::Config(format!("ca_file {shown}: {why}"));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate found".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
