//! Per-address limits before login.
//!
//! [`AuthThrottle`] slows down password guessing: each failed authentication from an address
//! makes the next `<not-authorized/>` from that address come later (0.5 s, 1 s, 2 s … capped
//! at 8 s), and ten quiet minutes forgive it all. Once an address has failed, its further
//! attempts are also spaced out *before* the credentials are checked ([`AuthThrottle::reserve`]),
//! so opening many connections and hanging up on the slow `<failure/>` buys no parallel guesses. [`RegistrationLimit`] caps the accounts one
//! address may create in-band per hour.
//!
//! Keyed by IPv4 address or IPv6 /64 (one host usually owns a whole /64). Success does not
//! reset the count: one valid account must not buy an attacker fresh guesses on another.
//! The table is bounded; when it is full of recent entries, unknown addresses get the maximum
//! delay rather than growing it. This slows guessing, it does not lock accounts.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

const BASE_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(8);
/// Failures are forgotten after this long without a new one.
const FORGET_AFTER: Duration = Duration::from_secs(600);
const DEFAULT_MAX_ENTRIES: usize = 100_000;

/// Failure counts per source address, shared by all connections.
#[derive(Debug)]
pub(crate) struct AuthThrottle {
    entries: DashMap<IpAddr, Entry>,
    max_entries: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
    /// The earliest time the next attempt from this address may be checked.
    next: Instant,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle::with_capacity(DEFAULT_MAX_ENTRIES)
    }
}

impl AuthThrottle {
    pub(crate) fn with_capacity(max_entries: usize) -> Self {
        AuthThrottle {
            entries: DashMap::new(),
            max_entries,
        }
    }

    /// Counts one failure from `ip` at `now`; returns how long to wait before answering it.
    pub(crate) fn record_failure(&self, ip: IpAddr, now: Instant) -> Duration {
        let key = throttle_key(ip);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.max_entries {
            self.entries
                .retain(|_, e| now.saturating_duration_since(e.last) < FORGET_AFTER);
            if self.entries.len() >= self.max_entries {
                return MAX_DELAY;
            }
        }
        let mut entry = self.entries.entry(key).or_insert(Entry {
            failures: 0,
            last: now,
            next: now,
        });
        if now.saturating_duration_since(entry.last) >= FORGET_AFTER {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last = now;
        delay_for(entry.failures)
    }

    /// Reserves the next slot for an authentication attempt from `ip`; returns how long to wait
    /// before checking its credentials. Addresses without recent failures never wait; after
    /// failures, attempts from one address are checked one per `delay_for(failures)` at most,
    /// however many connections carry them.
    pub(crate) fn reserve(&self, ip: IpAddr, now: Instant) -> Duration {
        let Some(mut entry) = self.entries.get_mut(&throttle_key(ip)) else {
            return Duration::ZERO;
        };
        if entry.failures == 0 || now.saturating_duration_since(entry.last) >= FORGET_AFTER {
            return Duration::ZERO;
        }
        let slot = entry.next.max(now);
        entry.next = slot + delay_for(entry.failures);
        slot - now
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Connections per address that have not logged in yet. A [`PendingGuard`] stands for one and
/// gives it back when dropped (at login, or when the connection ends).
#[derive(Debug)]
pub(crate) struct PendingLimit {
    counts: DashMap<IpAddr, usize>,
    max: usize,
}

impl PendingLimit {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(PendingLimit {
            counts: DashMap::new(),
            max,
        })
    }

    /// Counts one more pending connection from `ip`, unless it already has `max`.
    pub(crate) fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<PendingGuard> {
        let key = throttle_key(ip);
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
pub(crate) struct PendingGuard {
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

/// Accounts created per address in the current hour-long window (a fixed window per address,
/// starting at its first registration). Bounded like [`AuthThrottle`]: when the table is full
/// of live windows, unknown addresses are refused rather than growing it.
#[derive(Debug)]
pub(crate) struct RegistrationLimit {
    entries: DashMap<IpAddr, (u32, Instant)>,
    max_entries: usize,
}

const REGISTRATION_WINDOW: Duration = Duration::from_secs(3600);

impl Default for RegistrationLimit {
    fn default() -> Self {
        RegistrationLimit::with_capacity(DEFAULT_MAX_ENTRIES)
    }
}

impl RegistrationLimit {
    pub(crate) fn with_capacity(max_entries: usize) -> Self {
        RegistrationLimit {
            entries: DashMap::new(),
            max_entries,
        }
    }

    /// Counts one account from `ip` at `now` if fewer than `max` were created in its window;
    /// returns whether it may be created.
    pub(crate) fn admit(&self, ip: IpAddr, now: Instant, max: u32) -> bool {
        let key = throttle_key(ip);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.max_entries {
            self.entries.retain(|_, (_, start)| {
                now.saturating_duration_since(*start) < REGISTRATION_WINDOW
            });
            if self.entries.len() >= self.max_entries {
                return false;
            }
        }
        let mut entry = self.entries.entry(key).or_insert((0, now));
        if now.saturating_duration_since(entry.1) >= REGISTRATION_WINDOW {
            *entry = (0, now);
        }
        if entry.0 >= max {
            return false;
        }
        entry.0 += 1;
        true
    }
}

/// The wait before answering the `failures`-th recent failure.
pub(crate) fn delay_for(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        // 2^5 × 0.5 s already exceeds the cap; bounding the shift keeps it from overflowing.
        n => (BASE_DELAY * (1u32 << (n - 1).min(5))).min(MAX_DELAY),
    }
}

fn throttle_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn delay_doubles_up_to_the_cap() {
        let ms = |n| delay_for(n).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4), ms(5), ms(6)],
            [0, 500, 1000, 2000, 4000, 8000, 8000]
        );
        assert_eq!(delay_for(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn failures_accumulate_per_address_and_are_forgotten_after_quiet() {
        let t = AuthThrottle::default();
        let start = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!(t.record_failure(a, start), Duration::from_millis(500));
        assert_eq!(
            t.record_failure(a, start + Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            t.record_failure(ip("192.0.2.2"), start),
            Duration::from_millis(500),
            "other IP"
        );
        let later = start + Duration::from_secs(1) + FORGET_AFTER - Duration::from_secs(1);
        assert_eq!(
            t.record_failure(a, later),
            Duration::from_secs(2),
            "not quiet long enough"
        );
        assert_eq!(
            t.record_failure(a, later + FORGET_AFTER),
            Duration::from_millis(500),
            "forgiven"
        );
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_mapped_v4_by_address() {
        let t = AuthThrottle::default();
        let now = Instant::now();
        t.record_failure(ip("2001:db8:1:2::1"), now);
        assert_eq!(
            t.record_failure(ip("2001:db8:1:2:ffff::9"), now),
            Duration::from_secs(1)
        );
        assert_eq!(
            t.record_failure(ip("2001:db8:1:3::1"), now),
            Duration::from_millis(500)
        );
        t.record_failure(ip("::ffff:192.0.2.7"), now);
        assert_eq!(
            t.record_failure(ip("192.0.2.7"), now),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn registrations_are_capped_per_address_and_hour() {
        let r = RegistrationLimit::default();
        let now = Instant::now();
        let a = ip("192.0.2.1");
        assert!(r.admit(a, now, 2));
        assert!(r.admit(a, now + Duration::from_secs(10), 2));
        assert!(
            !r.admit(a, now + Duration::from_secs(20), 2),
            "third in the hour"
        );
        assert!(r.admit(ip("192.0.2.2"), now, 2), "other address");
        assert!(r.admit(a, now + REGISTRATION_WINDOW, 2), "next window");
        assert!(!r.admit(a, now, 0), "zero allows none");

        let small = RegistrationLimit::with_capacity(1);
        assert!(small.admit(a, now, 5));
        assert!(!small.admit(ip("192.0.2.9"), now, 5), "full table refuses");
        assert!(small.admit(ip("192.0.2.9"), now + REGISTRATION_WINDOW, 5));
    }

    #[test]
    fn table_is_bounded() {
        let t = AuthThrottle::with_capacity(2);
        let now = Instant::now();
        t.record_failure(ip("192.0.2.1"), now);
        t.record_failure(ip("192.0.2.2"), now);
        assert_eq!(
            t.record_failure(ip("192.0.2.3"), now),
            MAX_DELAY,
            "full: maximum delay"
        );
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.record_failure(ip("192.0.2.1"), now),
            Duration::from_secs(1),
            "known address"
        );
        // Once the old entries are stale they make room.
        let later = now + FORGET_AFTER;
        assert_eq!(
            t.record_failure(ip("192.0.2.3"), later),
            Duration::from_millis(500)
        );
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn attempts_after_failures_are_spaced_whatever_the_connection() {
        let t = AuthThrottle::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let now = Instant::now();
        assert_eq!(
            t.reserve(ip, now),
            Duration::ZERO,
            "no failure yet: no wait"
        );
        t.record_failure(ip, now);
        t.record_failure(ip, now);
        // Three parallel attempts at the same instant get consecutive slots.
        let waits: Vec<_> = (0..3).map(|_| t.reserve(ip, now)).collect();
        assert_eq!(waits[0], Duration::ZERO);
        assert_eq!(waits[1], delay_for(2));
        assert_eq!(waits[2], delay_for(2) * 2);
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(
            t.reserve(other, now),
            Duration::ZERO,
            "other addresses are not slowed"
        );
        let later = now + FORGET_AFTER;
        assert_eq!(t.reserve(ip, later), Duration::ZERO, "quiet time forgives");
    }

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
}
