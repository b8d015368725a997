//! External service discovery (XEP-0215): the STUN and TURN servers a client may use for
//! calls, answered on each served domain, with credentials for the TURN servers that share a
//! secret with xmppd.
//!
//! - `payload.rs`: the `urn:xmpp:extdisco:2` elements (xso derives: xmpp-parsers' `Service`
//!   keeps its fields private).
//! - `credentials.rs`: the time-limited TURN credentials ("TURN REST API": a username
//!   `expiry:user` and the base64 HMAC-SHA1 of it under the shared secret), which a TURN
//!   server configured with the same secret checks without asking xmppd (coturn's
//!   `use-auth-secret` and `static-auth-secret`).
//!
//! Only the users of the served hosts get an answer: credentials are a relay's bandwidth.

mod credentials;
pub mod payload;

use async_trait::async_trait;
use xmppd_core::address::Bare;
use xmppd_core::module::{Hooks, IqKind, IqRequest, IqResponse, Module};
use xmppd_core::stanza::{self, Condition, StanzaError};
use xmppd_core::Context;

pub use credentials::{turn_credentials, TurnCredentials};
use payload::{CredentialsQuery, Service, ServicesQuery, ServicesResult, NS_EXTDISCO};

/// One configured external service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// `stun`, `stuns`, `turn` or `turns` (the XEP-0215 registry).
    pub kind: String,
    pub host: String,
    pub port: u16,
    /// `udp` or `tcp`.
    pub transport: String,
    /// A human-readable name.
    pub name: Option<String>,
    /// The secret shared with the TURN server: credentials are issued for it.
    pub secret: Option<String>,
}

/// The module: services from the configuration, credentials valid for `ttl_secs`.
pub struct ExtDisco {
    services: Vec<ServiceConfig>,
    ttl_secs: u64,
}

impl ExtDisco {
    pub fn new(services: Vec<ServiceConfig>, ttl_secs: u64) -> Self {
        ExtDisco { services, ttl_secs }
    }

    /// The element for `s`, with fresh credentials for `user` if it has a secret.
    fn service(&self, s: &ServiceConfig, user: &str, now_ms: i64) -> Service {
        let mut out = Service {
            kind: s.kind.clone(),
            host: s.host.clone(),
            port: Some(s.port),
            transport: Some(s.transport.clone()),
            name: s.name.clone(),
            restricted: None,
            username: None,
            password: None,
            expires: None,
        };
        if let Some(secret) = &s.secret {
            let now = u64::try_from(now_ms / 1000).unwrap_or(0);
            let c = turn_credentials(secret, user, now + self.ttl_secs);
            out.restricted = Some(true);
            out.username = Some(c.username);
            out.password = Some(c.password);
            out.expires = Some(stanza::xep82_datetime(c.expiry as i64 * 1000));
        }
        out
    }
}

fn parse<T>(payload: minidom::Element) -> Result<T, StanzaError>
where
    T: TryFrom<minidom::Element, Error = xso::error::FromElementError>,
{
    T::try_from(payload).map_err(|e| {
        StanzaError::with_text(Condition::BadRequest, format!("Malformed request: {e}"))
    })
}

#[async_trait]
impl Module for ExtDisco {
    fn name(&self) -> &'static str {
        "extdisco"
    }

    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }

    fn server_features(&self) -> Vec<String> {
        vec![NS_EXTDISCO.into()]
    }

    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS_EXTDISCO]
    }

    async fn handle_iq(&self, cx: &mut Context<'_>, req: IqRequest) -> IqResponse {
        if req.kind != IqKind::Get {
            return Err(StanzaError::new(Condition::BadRequest));
        }
        // A TURN relay's bandwidth is for the users of the served hosts only.
        let local = req.from.node().is_some() && cx.is_local_host(req.from.domain().as_str());
        if !local {
            return Err(StanzaError::new(Condition::Forbidden));
        }
        let user = req.from.bare().to_string();
        let now = cx.now_ms();
        if CredentialsQuery::is_credentials(&req.payload) {
            // XEP-0215 §3.3: credentials for the one service named by host and type.
            let query: CredentialsQuery = parse(req.payload)?;
            let asked = query
                .services
                .first()
                .ok_or_else(|| StanzaError::with_text(Condition::BadRequest, "No service named"))?;
            let found = self.services.iter().find(|s| {
                s.host == asked.host
                    && s.kind == asked.kind
                    && asked.port.is_none_or(|p| p == s.port)
                    && s.secret.is_some()
            });
            let Some(s) = found else {
                return Err(StanzaError::new(Condition::ItemNotFound));
            };
            let answer = CredentialsQuery {
                services: vec![self.service(s, &user, now)],
            };
            return Ok(Some(answer.into()));
        }
        let query: ServicesQuery = parse(req.payload)?;
        let services = (self.services.iter())
            .filter(|s| query.kind.as_ref().is_none_or(|k| *k == s.kind))
            .map(|s| self.service(s, &user, now))
            .collect();
        Ok(Some(
            ServicesResult {
                kind: query.kind,
                services,
            }
            .into(),
        ))
    }
}
