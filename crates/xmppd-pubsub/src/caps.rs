//! Entity capabilities (XEP-0115) as personal eventing reads them: which nodes a client wants
//! notifications of (`NODE+notify`, XEP-0163 §4.2). A verification string is trusted only
//! once the features the client itself answered hash to it (XEP-0115 §5.4), and only then
//! cached for other clients that announce it, in a cache of bounded size: an unverified or
//! forged string never stands for anyone else's features.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use jid::FullJid;
use xmpp_parsers::caps::{compute_disco, hash_caps};
use xmpp_parsers::disco::DiscoInfoResult;
use xmpp_parsers::hashes::Algo;

/// The nodes a client wants notifications of.
pub type Interest = Arc<HashSet<String>>;

/// The `+notify` nodes among `features`.
pub fn notify_nodes<'a>(features: impl IntoIterator<Item = &'a String>) -> Interest {
    Arc::new(
        features
            .into_iter()
            .filter_map(|f| f.strip_suffix("+notify"))
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect(),
    )
}

/// Whether `info` hashes to `ver` (base64) with `algo` (XEP-0115 §5.1, §5.4).
pub fn verify(info: &DiscoInfoResult, algo: Algo, ver: &str) -> bool {
    let mut info = info.clone();
    // §5.1 step 5.2: the fields of a form sorted by var (the parser's hashing keeps their
    // order as received).
    for form in &mut info.extensions {
        form.fields
            .sort_by(|a, b| a.var.as_deref().cmp(&b.var.as_deref()));
    }
    match hash_caps(&compute_disco(&info), algo) {
        Ok(hash) => hash.to_base64() == ver,
        Err(_) => false,
    }
}

/// A cache key: the hash algorithm and the verification string.
pub fn key(algo: &Algo, ver: &str) -> String {
    format!("{}:{ver}", String::from(algo.clone()))
}

/// Verified verification strings and the interest they stand for, the oldest forgotten
/// beyond a bound; and the queries sent to learn the ones not known yet.
pub struct CapsCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

struct Inner {
    verified: HashMap<String, Interest>,
    order: VecDeque<String>,
    /// Disco queries in flight, by IQ id: whom it went to and the key it would verify.
    pending: HashMap<String, (FullJid, Algo, String)>,
    pending_order: VecDeque<String>,
}

impl CapsCache {
    pub fn new(capacity: usize) -> CapsCache {
        CapsCache {
            inner: Mutex::new(Inner {
                verified: HashMap::new(),
                order: VecDeque::new(),
                pending: HashMap::new(),
                pending_order: VecDeque::new(),
            }),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Interest> {
        self.lock().verified.get(key).cloned()
    }

    /// Caches the interest of a verified string.
    pub fn insert(&self, key: String, interest: Interest) {
        let mut g = self.lock();
        if g.verified.insert(key.clone(), interest).is_none() {
            g.order.push_back(key);
        }
        while g.order.len() > self.capacity {
            if let Some(old) = g.order.pop_front() {
                g.verified.remove(&old);
            }
        }
    }

    /// Records a query `id` sent to `jid` for `ver`; the oldest in flight are forgotten
    /// beyond the bound (their answers are then ignored).
    pub fn expect(&self, id: String, jid: FullJid, algo: Algo, ver: String) {
        let mut g = self.lock();
        g.pending.insert(id.clone(), (jid, algo, ver));
        g.pending_order.push_back(id);
        while g.pending_order.len() > self.capacity {
            if let Some(old) = g.pending_order.pop_front() {
                g.pending.remove(&old);
            }
        }
    }

    /// The query `id` answered by `from`, if it is one in flight to that very client.
    pub fn answered(&self, id: &str, from: &str) -> Option<(FullJid, Algo, String)> {
        let mut g = self.lock();
        match g.pending.get(id) {
            Some((jid, ..)) if jid.as_str() == from => {
                g.pending_order.retain(|p| p != id);
                g.pending.remove(id)
            }
            _ => None,
        }
    }

    /// Whether a query for `ver` to `jid` is in flight already.
    pub fn asking(&self, jid: &FullJid, ver: &str) -> bool {
        (self.lock().pending.values()).any(|(j, _, v)| j == jid && v == ver)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().verified.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmpp_parsers::disco::Identity;

    /// XEP-0115 §5.2's simple example.
    fn example() -> DiscoInfoResult {
        DiscoInfoResult {
            node: None,
            identities: vec![Identity {
                category: "client".into(),
                type_: "pc".into(),
                lang: None,
                name: Some("Exodus 0.9.1".into()),
            }],
            features: [
                "http://jabber.org/protocol/caps",
                "http://jabber.org/protocol/disco#info",
                "http://jabber.org/protocol/disco#items",
                "http://jabber.org/protocol/muc",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            extensions: Vec::new(),
        }
    }

    #[test]
    fn a_hash_is_verified_against_the_features_answered() {
        let info = example();
        assert!(verify(&info, Algo::Sha_1, "QgayPKawpkPSDYmwT/WM94uAlu0="));
        let mut forged = info.clone();
        forged
            .features
            .insert("urn:xmpp:avatar:metadata+notify".into());
        assert!(!verify(
            &forged,
            Algo::Sha_1,
            "QgayPKawpkPSDYmwT/WM94uAlu0="
        ));
    }

    #[test]
    fn notify_nodes_are_the_features_ending_in_notify() {
        let f: Vec<String> = ["urn:xmpp:omemo:2:devices+notify", "+notify", "urn:a"]
            .into_iter()
            .map(String::from)
            .collect();
        let n = notify_nodes(&f);
        assert_eq!(n.len(), 1);
        assert!(n.contains("urn:xmpp:omemo:2:devices"));
    }

    #[test]
    fn the_cache_is_bounded_and_answers_only_the_client_asked() {
        let cache = CapsCache::new(2);
        for k in ["a", "b", "c"] {
            cache.insert(k.into(), notify_nodes(&[]));
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get("a").is_none());
        assert!(cache.get("c").is_some());
        let jid = FullJid::new("u@x/r").unwrap();
        cache.expect("1".into(), jid.clone(), Algo::Sha_1, "v".into());
        assert!(cache.asking(&jid, "v"));
        assert!(cache.answered("1", "other@x/r").is_none());
        assert!(cache.answered("1", "u@x/r").is_some());
        assert!(cache.answered("1", "u@x/r").is_none());
    }
}
