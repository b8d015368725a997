//! Server-to-server federation (RFC 6120 §13 and the s2s parts throughout): xmppd's links to
//! other XMPP servers.
//!
//! - Outbound (`outbound.rs`): one link per pair of local and remote domain, opened on the
//!   first stanza ([`S2s`] is the core's [`RemoteRouter`]), found through SRV records
//!   (`dns.rs`), secured with TLS and authenticated with SASL EXTERNAL (XEP-0178) or
//!   dialback (XEP-0220); stanzas wait in a bounded queue meanwhile and bounce if it fails;
//!   the link closes when idle.
//! - Inbound (`inbound.rs`): the listeners (STARTTLS, and direct TLS, XEP-0368), which
//!   authenticate the peer the same two ways, answer dialback verifications for the links
//!   this server opened, and hand each stanza to the core as coming from the peer's domain,
//!   once its `from` is checked against the domains the peer authenticated as.
//! - `tls.rs`: certificates, `dialback.rs`: the keys (XEP-0185), `xml.rs`: the stream.
//!
//! No XMPP routing here: stanzas enter the core through [`Server::dispatch`] and leave it
//! through [`RemoteRouter::route`].

mod dialback;
pub mod dns;
mod inbound;
mod link;
mod links;
mod outbound;
mod policy;
pub mod tls;
mod xml;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use jid::Jid;
use minidom::Element;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use xmppd_core::pending::PendingLimit;
use xmppd_core::stanza::{error_reply, Condition, StanzaError};
use xmppd_core::{Refused, RemoteRouter, Server};
use xmppd_stream::Limits;

pub use dialback::DialbackSecret;
pub use tls::{Certificates, PeerTls};

/// What federation is configured with (`[s2s]`).
#[derive(Debug, Clone)]
pub struct S2sSettings {
    /// STARTTLS listeners (port 5269).
    pub listen: Vec<SocketAddr>,
    /// Direct TLS listeners (XEP-0368, `_xmpps-server`).
    pub direct_tls_listen: Vec<SocketAddr>,
    /// Trusted roots: this PEM file, else the system's.
    pub ca_file: Option<PathBuf>,
    /// Whether dialback may authenticate a peer whose certificate does not.
    pub dialback: bool,
    /// Refuse every peer whose certificate is not valid for its domain, dialback or not.
    pub require_valid_certificates: bool,
    /// Only these remote domains (empty: all but `deny`).
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// Stanzas a second taken from one remote domain; 0: no limit.
    pub stanzas_per_sec: u32,
    /// Messages to local accounts from senders outside the recipient's roster are refused.
    pub refuse_strangers: bool,
    /// Where a domain's server is, instead of DNS: host (or IP) and port, STARTTLS.
    pub routes: HashMap<String, (String, u16)>,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    /// A link with no stanza either way for this long is closed.
    pub idle_timeout: Duration,
    /// XEP-0288: streams carry stanzas both ways where both servers agree.
    pub bidi: bool,
    /// XEP-0199: a link silent for this long is pinged; `None`: never.
    pub ping_interval: Option<Duration>,
    /// How long a ping may wait for its answer before the link is closed.
    pub ping_timeout: Duration,
    /// Stanzas waiting for one link while it connects, at most.
    pub queue_max: usize,
    /// Inbound connections open at once; further ones are closed on accept.
    pub max_inbound: usize,
    /// Inbound connections one address (IPv4, IPv6 /64) may have open before it authenticated.
    pub max_pending_per_ip: usize,
    /// Outbound links and dialback verifications open (or being opened) at once.
    pub max_outbound: usize,
    /// Domains one inbound stream may authenticate (dialback multiplexing, XEP-0220 §4).
    pub max_domains_per_stream: usize,
    /// After a link could not be opened, stanzas for it bounce at once this long; zero: never.
    pub failure_cache: Duration,
    /// Connect to loopback, private and link-local addresses DNS gives (routes always may).
    pub allow_private_addresses: bool,
    /// The XML limits of an authenticated stream (those of client streams).
    pub limits: Limits,
}

/// Federation: the core's [`RemoteRouter`] and the listeners.
#[derive(Clone)]
pub struct S2s {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    settings: S2sSettings,
    tls: PeerTls,
    resolver: Arc<dyn dns::Resolve>,
    secret: DialbackSecret,
    server: OnceLock<Weak<Server>>,
    links: Mutex<links::Links>,
    limiter: policy::RateLimiter,
    /// The pings this server's links sent and await an answer to, by IQ id.
    pings: link::Pings,
    /// Inbound connections (`max_inbound`), and those not authenticated per address.
    inbound: Arc<Semaphore>,
    pending: Arc<PendingLimit>,
    /// Outbound connections: links and dialback verifications (`max_outbound`).
    outbound: Arc<Semaphore>,
    /// Domain pairs whose link could not be opened lately (`failure_cache`).
    failures: Mutex<policy::FailureCache>,
}

impl S2s {
    pub fn new(settings: S2sSettings, tls: PeerTls, resolver: Arc<dyn dns::Resolve>) -> S2s {
        let limiter = policy::RateLimiter::new(settings.stanzas_per_sec);
        S2s {
            inner: Arc::new(Inner {
                inbound: Arc::new(Semaphore::new(settings.max_inbound)),
                pending: PendingLimit::new(settings.max_pending_per_ip),
                outbound: Arc::new(Semaphore::new(settings.max_outbound)),
                failures: Mutex::new(policy::FailureCache::new(settings.failure_cache)),
                settings,
                tls,
                resolver,
                secret: DialbackSecret::random(),
                server: OnceLock::new(),
                links: Mutex::new(links::Links::default()),
                limiter,
                pings: link::Pings::default(),
            }),
        }
    }

    /// Binds the listeners and starts accepting; returns each bound address, with whether it
    /// is direct TLS.
    pub async fn listen(&self) -> std::io::Result<Vec<(bool, SocketAddr)>> {
        inbound::listen(&self.inner).await
    }

    /// The server stanzas from peers are handed to; before this, peers' stanzas are refused.
    pub fn start(&self, server: &Arc<Server>) {
        let _ = self.inner.server.set(Arc::downgrade(server));
    }
}

impl Inner {
    pub(crate) fn server(&self) -> Option<Arc<Server>> {
        self.server.get().and_then(Weak::upgrade)
    }

    /// A domain served here: a host or a component's.
    pub(crate) fn serves(&self, domain: &str) -> bool {
        self.server().is_some_and(|s| {
            s.is_local_host(domain) || s.component_domains().any(|(d, _)| d == domain)
        })
    }

    /// Whether a peer whose certificate is not valid may still be believed (dialback).
    pub(crate) fn dialback_allowed(&self) -> bool {
        self.settings.dialback && !self.settings.require_valid_certificates
    }

    pub(crate) fn allowed(&self, domain: &str) -> bool {
        policy::allowed(&self.settings.allow, &self.settings.deny, domain)
    }

    /// Queues `stanza` on the link from `local` to `remote`, opening it if needed.
    fn enqueue(
        self: &Arc<Self>,
        local: &str,
        remote: &str,
        stanza: Element,
    ) -> Result<(), Refused> {
        let key = (local.to_owned(), remote.to_owned());
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let pushed = links.push(&key, stanza, self.settings.queue_max, &mut |id, rx| {
            self.open(&key, id, rx, None)
        });
        pushed.map_err(|(el, cond)| Box::new((el, StanzaError::new(cond))))
    }

    /// Spawns the task of a new link, unless `key` failed lately or too many links are open;
    /// `permit`: the slot of the link it replaces.
    fn open(
        self: &Arc<Self>,
        key: &(String, String),
        id: u64,
        rx: mpsc::Receiver<Element>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(), Condition> {
        let failed = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cond) = failed.get(key, Instant::now()) {
            return Err(cond);
        }
        drop(failed);
        let permit = match permit {
            Some(permit) => permit,
            None => Arc::clone(&self.outbound)
                .try_acquire_owned()
                .map_err(|_| {
                    tracing::warn!(local = %key.0, remote = %key.1, "s2s max_outbound reached");
                    Condition::ResourceConstraint
                })?,
        };
        let link = outbound::run(Arc::clone(self), key.clone(), id, rx, permit);
        tokio::spawn(link);
        Ok(())
    }

    /// The link `id` of `key` could not be opened: new stanzas for `key` bounce with
    /// `failure` for a while (`failure_cache`) instead of each trying again.
    pub(crate) fn failed(&self, key: &(String, String), failure: Condition) {
        let mut failed = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failed.insert(key.clone(), failure, Instant::now());
    }

    /// A new link id.
    pub(crate) fn link_id(&self) -> u64 {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.next_id()
    }

    /// XEP-0288 §2: the inbound stream `id`, which the peer made bidirectional and on which
    /// it authenticated as `key.1` to `key.0`, carries this server's stanzas for that pair,
    /// unless a link for it exists already (then that one goes on carrying them). True if
    /// it does.
    pub(crate) fn adopt(
        &self,
        key: &(String, String),
        id: u64,
        tx: &mpsc::Sender<Element>,
    ) -> bool {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.adopt(key, id, tx)
    }

    /// The link `id` of `keys` ends: out of the map, then what it still held bounces with
    /// `failure`, or, without one (it closed after working), goes to a new link per pair, the
    /// first of which takes over `permit`. Both under one lock, so stanzas routed meanwhile
    /// queue behind them. `unsent`: a batch that could not be written, bounced with
    /// `<remote-server-timeout/>` (part of it may have reached the peer; without stream
    /// management, XEP-0198, it cannot be known which).
    pub(crate) async fn end_link(
        self: &Arc<Self>,
        keys: &[(String, String)],
        id: u64,
        rx: &mut mpsc::Receiver<Element>,
        failure: Option<Condition>,
        unsent: Vec<Element>,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let mut refused: Vec<(Element, Condition)> = (unsent.into_iter())
            .map(|el| (el, Condition::RemoteServerTimeout))
            .collect();
        {
            let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
            let rest = links.end(keys, id, rx);
            match failure {
                Some(cond) => refused.extend(rest.into_iter().map(|el| (el, cond))),
                None => {
                    let mut permit = permit;
                    let cap = self.settings.queue_max;
                    for el in rest {
                        let Some(key) = route_key(&el) else {
                            refused.push((el, Condition::InternalServerError));
                            continue;
                        };
                        let pushed = links.push(&key, el, cap, &mut |id, rx| {
                            self.open(&key, id, rx, permit.take())
                        });
                        refused.extend(pushed.err());
                    }
                }
            }
        }
        let bounces: Vec<Element> = (refused.iter())
            .filter_map(|(el, cond)| error_reply(el, &StanzaError::new(*cond)))
            .collect();
        if let (false, Some(server)) = (bounces.is_empty(), self.server()) {
            server.dispatch_all(bounces).await;
        }
    }
}

/// The domain pair a queued stanza travels on: its `from`'s and its `to`'s domains (both
/// checked when it was queued).
fn route_key(el: &Element) -> Option<(String, String)> {
    let domain = |attr| {
        let jid = xmppd_core::address::parse_jid(el.attr(attr)?).ok()?;
        Some(jid.domain().as_str().to_owned())
    };
    Some((domain("from")?, domain("to")?))
}

impl RemoteRouter for S2s {
    fn route(&self, stanza: Element, to: &Jid) -> Result<(), Refused> {
        let remote = to.domain().as_str();
        if !self.inner.allowed(remote) {
            return Err(Box::new((stanza, Condition::NotAllowed.into())));
        }
        let local = match stanza.attr("from").map(xmppd_core::address::parse_jid) {
            Some(Ok(from)) if self.inner.serves(from.domain().as_str()) => {
                from.domain().as_str().to_owned()
            }
            // Stanzas of this server always carry one of its own domains.
            _ => return Err(Box::new((stanza, Condition::BadRequest.into()))),
        };
        self.inner.enqueue(&local, remote, stanza)
    }
}
