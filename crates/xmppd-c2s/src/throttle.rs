//! Per-address limits before login.
//!
//! [`AuthThrottle`] slows down password guessing without slowing everyone behind one address.
//! Failures are counted per (address, account): each failed authentication makes the next
//! `<not-authorized/>` for that pair come later (0.5 s, 1 s, 2 s … capped at 8 s), and its
//! further attempts are spaced out the same way *before* the credentials are checked
//! ([`AuthThrottle::reserve`]), however many connections carry them, so opening many
//! connections and hanging up on the slow `<failure/>` buys no parallel guesses. A success
//! forgives its own pair. Other accounts behind the same address (a company or carrier-grade
//! NAT) are not slowed by one mistyped password.
//!
//! Guessing across many accounts from one address is caught by a second count per address:
//! once it reaches [`ADDRESS_QUEUE_AFTER`] recent failures, every attempt from that address
//! waits its turn, whichever account it names. Ten quiet minutes forgive either count.
//! [`RegistrationLimit`] caps the accounts one address may create in-band per hour.
//!
//! Addresses are IPv4 addresses or IPv6 /64s (one host usually owns a whole /64). The tables
//! are bounded; when one is full of recent entries, unknown keys get the maximum delay rather
//! than growing it. This slows guessing, it does not lock accounts.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use xmppd_core::pending::address_key as throttle_key;

const BASE_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(8);
/// Failures are forgotten after this long without a new one.
const FORGET_AFTER: Duration = Duration::from_secs(600);
const DEFAULT_MAX_ENTRIES: usize = 100_000;
/// Recent failures from one address, across accounts, before all its attempts queue.
pub(crate) const ADDRESS_QUEUE_AFTER: u32 = 20;

/// Failure counts per (address, account) and per address, shared by all connections.
#[derive(Debug)]
pub struct AuthThrottle {
    /// Keyed by address and a keyed hash of the account name, so that an entry stays small
    /// whatever name a client sends.
    accounts: Table<(IpAddr, u64)>,
    addresses: Table<IpAddr>,
    hasher: RandomState,
}

#[derive(Debug)]
struct Table<K: Hash + Eq> {
    entries: DashMap<K, Entry>,
    max_entries: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
    /// The earliest time the next attempt may be checked.
    next: Instant,
}

impl Entry {
    fn recent_failures(&self, now: Instant) -> u32 {
        if now.saturating_duration_since(self.last) >= FORGET_AFTER {
            0
        } else {
            self.failures
        }
    }

    /// Takes the next slot spaced by `spacing`; returns the wait until it.
    fn take_slot(&mut self, now: Instant, spacing: Duration) -> Duration {
        let slot = self.next.max(now);
        self.next = slot + spacing;
        slot - now
    }
}

impl<K: Hash + Eq + Copy> Table<K> {
    fn new(max_entries: usize) -> Self {
        Table {
            entries: DashMap::new(),
            max_entries,
        }
    }

    /// Counts one failure for `key`; `None` when the table is full of recent entries.
    fn record(&self, key: K, now: Instant) -> Option<u32> {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.max_entries {
            self.entries
                .retain(|_, e| now.saturating_duration_since(e.last) < FORGET_AFTER);
            if self.entries.len() >= self.max_entries {
                return None;
            }
        }
        let mut entry = self.entries.entry(key).or_insert(Entry {
            failures: 0,
            last: now,
            next: now,
        });
        entry.failures = entry.recent_failures(now).saturating_add(1);
        entry.last = now;
        Some(entry.failures)
    }

    /// The wait for `key`'s next slot when it has at least `threshold` recent failures.
    fn reserve(&self, key: K, now: Instant, threshold: u32) -> Duration {
        let Some(mut entry) = self.entries.get_mut(&key) else {
            return Duration::ZERO;
        };
        let failures = entry.recent_failures(now);
        if failures == 0 || failures < threshold {
            return Duration::ZERO;
        }
        entry.take_slot(now, delay_for(failures + 1 - threshold.max(1)))
    }
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle::with_capacity(DEFAULT_MAX_ENTRIES)
    }
}

impl AuthThrottle {
    pub(crate) fn with_capacity(max_entries: usize) -> Self {
        AuthThrottle {
            accounts: Table::new(max_entries),
            addresses: Table::new(max_entries),
            hasher: RandomState::new(),
        }
    }

    fn account_key(&self, ip: IpAddr, account: &str) -> (IpAddr, u64) {
        (throttle_key(ip), self.hasher.hash_one(account))
    }

    /// Counts one failure for `account` from `ip` at `now`; returns how long to wait before
    /// answering it.
    pub fn record_failure(&self, ip: IpAddr, account: &str, now: Instant) -> Duration {
        let pair = self.accounts.record(self.account_key(ip, account), now);
        let address = self.addresses.record(throttle_key(ip), now);
        let (Some(pair), Some(address)) = (pair, address) else {
            return MAX_DELAY;
        };
        let address_delay = match address.checked_sub(ADDRESS_QUEUE_AFTER) {
            Some(over) => delay_for(over + 1),
            None => Duration::ZERO,
        };
        delay_for(pair).max(address_delay)
    }

    /// A successful login for `account` from `ip`: that pair's failures are forgiven (the
    /// address's count is not, so one known password buys no guesses on other accounts).
    pub fn record_success(&self, ip: IpAddr, account: &str) {
        self.accounts.entries.remove(&self.account_key(ip, account));
    }

    /// Reserves the next slot for an attempt on `account` from `ip`; returns how long to wait
    /// before checking its credentials. A pair without recent failures, from an address below
    /// [`ADDRESS_QUEUE_AFTER`], never waits; otherwise such attempts are checked one per
    /// `delay_for(failures)` at most, however many connections carry them.
    pub fn reserve(&self, ip: IpAddr, account: &str, now: Instant) -> Duration {
        let pair = self.accounts.reserve(self.account_key(ip, account), now, 1);
        let address = self
            .addresses
            .reserve(throttle_key(ip), now, ADDRESS_QUEUE_AFTER);
        pair.max(address)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.accounts.entries.len()
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
    fn failures_accumulate_per_account_and_are_forgotten_after_quiet() {
        let t = AuthThrottle::default();
        let start = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!(
            t.record_failure(a, "alice", start),
            Duration::from_millis(500)
        );
        assert_eq!(
            t.record_failure(a, "alice", start + Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            t.record_failure(a, "bob", start),
            Duration::from_millis(500),
            "other account"
        );
        assert_eq!(
            t.record_failure(ip("192.0.2.2"), "alice", start),
            Duration::from_millis(500),
            "other IP"
        );
        let later = start + Duration::from_secs(1) + FORGET_AFTER - Duration::from_secs(1);
        assert_eq!(
            t.record_failure(a, "alice", later),
            Duration::from_secs(2),
            "not quiet long enough"
        );
        assert_eq!(
            t.record_failure(a, "alice", later + FORGET_AFTER),
            Duration::from_millis(500),
            "forgiven"
        );
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_mapped_v4_by_address() {
        let t = AuthThrottle::default();
        let now = Instant::now();
        t.record_failure(ip("2001:db8:1:2::1"), "u", now);
        assert_eq!(
            t.record_failure(ip("2001:db8:1:2:ffff::9"), "u", now),
            Duration::from_secs(1)
        );
        assert_eq!(
            t.record_failure(ip("2001:db8:1:3::1"), "u", now),
            Duration::from_millis(500)
        );
        t.record_failure(ip("::ffff:192.0.2.7"), "u", now);
        assert_eq!(
            t.record_failure(ip("192.0.2.7"), "u", now),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn table_is_bounded() {
        let t = AuthThrottle::with_capacity(2);
        let now = Instant::now();
        t.record_failure(ip("192.0.2.1"), "u", now);
        t.record_failure(ip("192.0.2.2"), "u", now);
        assert_eq!(
            t.record_failure(ip("192.0.2.3"), "u", now),
            MAX_DELAY,
            "full: maximum delay"
        );
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.record_failure(ip("192.0.2.1"), "u", now),
            Duration::from_secs(1),
            "known pair"
        );
        // Once the old entries are stale they make room.
        let later = now + FORGET_AFTER;
        assert_eq!(
            t.record_failure(ip("192.0.2.3"), "u", later),
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
            t.reserve(ip, "alice", now),
            Duration::ZERO,
            "no failure yet: no wait"
        );
        t.record_failure(ip, "alice", now);
        t.record_failure(ip, "alice", now);
        // Three parallel attempts at the same instant get consecutive slots.
        let waits: Vec<_> = (0..3).map(|_| t.reserve(ip, "alice", now)).collect();
        assert_eq!(waits[0], Duration::ZERO);
        assert_eq!(waits[1], delay_for(2));
        assert_eq!(waits[2], delay_for(2) * 2);
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(
            t.reserve(other, "alice", now),
            Duration::ZERO,
            "other addresses are not slowed"
        );
        let later = now + FORGET_AFTER;
        assert_eq!(
            t.reserve(ip, "alice", later),
            Duration::ZERO,
            "quiet time forgives"
        );
    }

    #[test]
    fn one_mistyped_password_does_not_slow_others_behind_the_address() {
        let t = AuthThrottle::default();
        let nat = ip("198.51.100.1");
        let now = Instant::now();
        t.record_failure(nat, "alice", now);
        t.reserve(nat, "alice", now);
        for n in 0..5 {
            assert_eq!(
                t.reserve(nat, "bob", now),
                Duration::ZERO,
                "bob's login {n} waits for alice's typo"
            );
        }
        // Alice gets in at last: her own later logins are not slowed either.
        t.record_success(nat, "alice");
        assert_eq!(t.reserve(nat, "alice", now), Duration::ZERO);
        assert_eq!(t.reserve(nat, "alice", now), Duration::ZERO);
    }

    #[test]
    fn many_failures_from_one_address_queue_all_its_attempts() {
        let t = AuthThrottle::default();
        let a = ip("203.0.113.5");
        let now = Instant::now();
        // Spraying one guess across many accounts: each pair has one failure only.
        for n in 0..ADDRESS_QUEUE_AFTER - 1 {
            assert_eq!(
                t.record_failure(a, &format!("user{n}"), now),
                Duration::from_millis(500)
            );
        }
        assert_eq!(
            t.reserve(a, "fresh", now),
            Duration::ZERO,
            "below the threshold"
        );
        let last = format!("user{}", ADDRESS_QUEUE_AFTER - 1);
        t.record_failure(a, &last, now);
        assert_eq!(
            t.reserve(a, "fresh", now),
            Duration::ZERO,
            "first slot is now"
        );
        assert_eq!(
            t.reserve(a, "another", now),
            delay_for(1),
            "every account now queues"
        );
        assert!(
            t.record_failure(a, "user0x", now) >= delay_for(2),
            "answers slow down too"
        );
        assert_eq!(
            t.reserve(ip("203.0.113.6"), "fresh", now),
            Duration::ZERO,
            "other addresses are not slowed"
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
}
