//! Connections per network address that have not authenticated yet, for every listener that
//! accepts strangers (client and server-to-server streams): one address cannot hold more
//! than a few connections in their handshake, whatever the global cap leaves free.
//!
//! Addresses are IPv4 addresses or IPv6 /64s (one host usually owns a whole /64): see
//! [`address_key`].

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use dashmap::DashMap;

/// The key one host is counted under: an IPv4 address (also when IPv4-mapped), or the /64 of
/// an IPv6 address.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Connections per address not authenticated yet. A [`PendingGuard`] stands for one and
/// gives it back when dropped (once authenticated, or when the connection ends).
#[derive(Debug)]
pub struct PendingLimit {
    counts: DashMap<IpAddr, usize>,
    max: usize,
}

impl PendingLimit {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(PendingLimit {
            counts: DashMap::new(),
            max,
        })
    }

    /// The connections from `ip` (its [`address_key`]) counted now.
    pub fn count(&self, ip: IpAddr) -> usize {
        self.counts.get(&address_key(ip)).map_or(0, |n| *n)
    }

    /// Counts one more pending connection from `ip`, unless it already has `max`.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<PendingGuard> {
        let key = address_key(ip);
        let mut n = self.counts.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PendingGuard {
            limit: Arc::clone(self),
            key,
        })
    }
}

/// One pending connection, counted until dropped.
#[derive(Debug)]
pub struct PendingGuard {
    limit: Arc<PendingLimit>,
    key: IpAddr,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if let Some(mut n) = self.limit.counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
        self.limit.counts.remove_if(&self.key, |_, n| *n == 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_connections_are_capped_per_address_and_given_back() {
        let limit = PendingLimit::new(2);
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let a = limit.try_acquire(ip).expect("first");
        let b = limit.try_acquire(ip).expect("second");
        assert!(
            limit.try_acquire(ip).is_none(),
            "third from one address is refused"
        );
        assert!(limit.try_acquire("198.51.100.2".parse().unwrap()).is_some());
        drop(a);
        let c = limit.try_acquire(ip).expect("a slot was given back");
        drop((b, c));
        assert!(limit.counts.is_empty(), "no entry left for idle addresses");
    }

    #[test]
    fn one_ipv6_host_is_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
