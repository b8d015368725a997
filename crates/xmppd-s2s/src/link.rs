//! What an established link does whichever side opened it: writing what the core queued
//! for it, and finding out whether the peer is still there (XEP-0199 pings when it is
//! silent).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use minidom::Element;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use xmppd_core::stanza::elem;
use xmppd_stream::{NS_CLIENT, NS_SERVER};

use crate::xml::{renamespace, stream_id};
use crate::Inner;

pub const NS_PING: &str = "urn:xmpp:ping";

/// `first` and whatever else is queued behind it, as written into a server-to-server stream;
/// and the stanzas, to bounce them should the write fail ([`unsent`]).
pub(crate) fn batch(first: Element, rx: &mut mpsc::Receiver<Element>) -> (Vec<Element>, Vec<u8>) {
    let mut stanzas = vec![renamespace(first, NS_CLIENT, NS_SERVER)];
    while let Ok(el) = rx.try_recv() {
        stanzas.push(renamespace(el, NS_CLIENT, NS_SERVER));
    }
    let mut out = Vec::new();
    for el in &stanzas {
        xmppd_stream::serialize(el, NS_SERVER, &mut out);
    }
    (stanzas, out)
}

/// The stanzas of a [`batch`] whose write failed, as the core knows them again.
pub(crate) fn unsent(stanzas: Vec<Element>) -> Vec<Element> {
    (stanzas.into_iter())
        .map(|el| renamespace(el, NS_SERVER, NS_CLIENT))
        .collect()
}

/// The pings links sent, by IQ id: the remote domain that must answer, and who waits. The
/// answer may come over another stream than the ping (a one-way link's peer answers over
/// its own link to this server), so streams look here before handing a stanza to the core.
#[derive(Default)]
pub(crate) struct Pings(Mutex<HashMap<String, (String, oneshot::Sender<()>)>>);

impl Pings {
    /// Whether `iq` answers a ping of ours from `remote`; if so, whoever waits is told.
    pub(crate) fn answered(&self, remote: &str, iq: &Element) -> bool {
        if iq.name() != "iq" || !matches!(iq.attr("type"), Some("result" | "error")) {
            return false;
        }
        let Some(id) = iq.attr("id") else {
            return false;
        };
        let mut pings = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if pings.get(id).is_none_or(|(from, _)| from != remote) {
            return false;
        }
        if let Some((_, waiting)) = pings.remove(id) {
            let _ = waiting.send(());
        }
        true
    }

    fn forget(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// What [`Liveness::wait`] found.
pub(crate) enum Due {
    /// The peer answered; nothing to do.
    Answered,
    /// Send this ping.
    Ping(Element),
    /// The ping went unanswered for `ping_timeout`: the link is dead.
    Dead,
}

/// Whether the peer of one link still answers: after `ping_interval` without traffic either
/// way, a ping (XEP-0199 §4.3, server to server) from the link's local domain to its remote
/// one, which the peer must answer (a result or an error) within `ping_timeout`.
pub(crate) struct Liveness {
    s2s: Arc<Inner>,
    local: String,
    remote: String,
    last: Instant,
    pending: Option<(String, Instant, oneshot::Receiver<()>)>,
}

impl Liveness {
    pub(crate) fn new(s2s: &Arc<Inner>, local: &str, remote: &str) -> Liveness {
        Liveness {
            s2s: Arc::clone(s2s),
            local: local.to_owned(),
            remote: remote.to_owned(),
            last: Instant::now(),
            pending: None,
        }
    }

    /// Something came from the peer: it is there.
    pub(crate) fn heard(&mut self) {
        self.last = Instant::now();
        if let Some((id, _, _)) = self.pending.take() {
            self.s2s.pings.forget(&id);
        }
    }

    /// Something was written to the peer; a ping waiting for its answer still waits.
    pub(crate) fn sent(&mut self) {
        if self.pending.is_none() {
            self.last = Instant::now();
        }
    }

    /// Returns when the peer answered the ping, a ping is due, or the ping went unanswered
    /// for too long; never with pings off. Cancel-safe: nothing changes before it returns.
    pub(crate) async fn wait(&mut self) -> Due {
        let settings = &self.s2s.settings;
        let at = match (&self.pending, settings.ping_interval) {
            (Some((_, deadline, _)), _) => *deadline,
            (None, Some(interval)) => self.last + interval,
            (None, None) => return std::future::pending().await,
        };
        let answered = async {
            match &mut self.pending {
                Some((_, _, answer)) => {
                    let _ = answer.await;
                }
                None => std::future::pending().await,
            }
        };
        let answered = tokio::select! {
            _ = answered => true,
            _ = tokio::time::sleep_until(at) => false,
        };
        if answered {
            self.pending = None;
            self.last = Instant::now();
            tracing::debug!(local = %self.local, remote = %self.remote, "s2s link answered a ping");
            return Due::Answered;
        }
        if self.pending.is_some() {
            return Due::Dead;
        }
        let id = format!("ping-{}", stream_id());
        let (tx, rx) = oneshot::channel();
        {
            let mut pings = (self.s2s.pings.0.lock()).unwrap_or_else(|p| p.into_inner());
            pings.insert(id.clone(), (self.remote.clone(), tx));
        }
        let deadline = Instant::now() + settings.ping_timeout;
        let mut iq = elem(
            "iq",
            NS_SERVER,
            &[
                ("type", "get"),
                ("id", &id),
                ("from", &self.local),
                ("to", &self.remote),
            ],
        );
        iq.append_child(elem("ping", NS_PING, &[]));
        self.pending = Some((id, deadline, rx));
        Due::Ping(iq)
    }
}

impl Drop for Liveness {
    fn drop(&mut self) {
        if let Some((id, _, _)) = &self.pending {
            self.s2s.pings.forget(id);
        }
    }
}
