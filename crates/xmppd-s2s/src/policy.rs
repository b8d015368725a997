//! Which domains may federate, how fast they may send, and which were unreachable lately.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use xmppd_core::stanza::Condition;

/// Buckets of the rate limiter, and domain pairs of the failure cache, kept at most: each
/// remote domain has one, so without a bound a peer authenticating ever new domains (or
/// stanzas to ever new domains) would grow them without end.
const MAX_ENTRIES: usize = 10_000;

/// `allow` (empty: every domain) minus `deny`; a listed domain covers its subdomains.
pub fn allowed(allow: &[String], deny: &[String], domain: &str) -> bool {
    let covers = |listed: &String| {
        domain == listed
            || domain
                .strip_suffix(listed.as_str())
                .is_some_and(|rest| rest.ends_with('.'))
    };
    (allow.is_empty() || allow.iter().any(covers)) && !deny.iter().any(covers)
}

/// A token bucket per remote domain: `rate` stanzas a second, bursts of one second's worth.
/// A domain over its rate is slowed down (its streams are not read meanwhile), never cut off.
/// At most `max` buckets: when full, those that have refilled (idle for a second: the same as
/// no bucket) go, and if none has, the least recently used.
pub struct RateLimiter {
    rate: u32,
    max: usize,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate: u32) -> Self {
        RateLimiter::with_capacity(rate, MAX_ENTRIES)
    }

    fn with_capacity(rate: u32, max: usize) -> Self {
        RateLimiter {
            rate,
            max: max.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// How long `domain` must wait before its next stanza (zero: at once); takes the token.
    pub fn delay(&self, domain: &str, now: Instant) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let rate = f64::from(self.rate);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= self.max && !buckets.contains_key(domain) {
            let full = |(tokens, last): &(f64, Instant)| {
                *tokens + now.saturating_duration_since(*last).as_secs_f64() * rate >= rate
            };
            buckets.retain(|_, bucket| !full(bucket));
            if buckets.len() >= self.max {
                let oldest = (buckets.iter())
                    .min_by_key(|(_, (_, last))| *last)
                    .map(|(d, _)| d.clone());
                if let Some(oldest) = oldest {
                    buckets.remove(&oldest);
                }
            }
        }
        let (tokens, last) = buckets.entry(domain.to_owned()).or_insert((rate, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * rate).min(rate) - 1.0;
        *last = now;
        if *tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-*tokens / rate)
        }
    }
}

/// Domain pairs whose link could not be opened, until when, and what stanzas for them bounce
/// with meanwhile: a domain that does not answer costs one attempt per period, not one per
/// stanza. Bounded like the rate limiter: when full of live entries, a new failure is not
/// remembered (its next stanza tries again).
pub struct FailureCache {
    ttl: Duration,
    entries: HashMap<(String, String), (Instant, Condition)>,
}

impl FailureCache {
    /// `ttl` zero: nothing is remembered.
    pub fn new(ttl: Duration) -> Self {
        FailureCache {
            ttl,
            entries: HashMap::new(),
        }
    }

    pub fn insert(&mut self, key: (String, String), failure: Condition, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.retain(|_, (until, _)| *until > now);
            if self.entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        self.entries.insert(key, (now + self.ttl, failure));
    }

    /// What a stanza for `key` bounces with at `now`, if its link failed lately.
    pub fn get(&self, key: &(String, String), now: Instant) -> Option<Condition> {
        (self.entries.get(key)).and_then(|(until, cond)| (*until > now).then_some(*cond))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_wins_and_lists_cover_subdomains() {
        let (none, deny) = (Vec::new(), vec!["evil.example".to_owned()]);
        assert!(allowed(&none, &none, "any.example"));
        assert!(!allowed(&none, &deny, "evil.example"));
        assert!(!allowed(&none, &deny, "muc.evil.example"));
        assert!(allowed(&none, &deny, "notevil.example"));
        let allow = vec!["friend.example".to_owned()];
        assert!(allowed(&allow, &deny, "conference.friend.example"));
        assert!(!allowed(&allow, &deny, "stranger.example"));
    }

    #[test]
    fn a_domain_over_its_rate_waits() {
        let limiter = RateLimiter::new(2);
        let t0 = Instant::now();
        assert_eq!(limiter.delay("a", t0), Duration::ZERO);
        assert_eq!(limiter.delay("a", t0), Duration::ZERO);
        assert_eq!(limiter.delay("a", t0), Duration::from_millis(500));
        assert_eq!(limiter.delay("b", t0), Duration::ZERO);
        assert_eq!(RateLimiter::new(0).delay("a", t0), Duration::ZERO);
    }

    #[test]
    fn idle_buckets_make_way_and_the_table_stays_bounded() {
        let limiter = RateLimiter::with_capacity(2, 2);
        let t0 = Instant::now();
        // "busy" is over its rate; "quiet" sent once.
        for _ in 0..3 {
            limiter.delay("busy", t0);
        }
        limiter.delay("quiet", t0);
        // Half a second later "quiet" has refilled, "busy" not: a new domain takes the
        // place of "quiet", and "busy" still owes its wait.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(limiter.delay("new", t1), Duration::ZERO);
        assert!(!limiter.buckets.lock().unwrap().contains_key("quiet"));
        assert_eq!(limiter.delay("busy", t1), Duration::from_millis(500));
        // With no idle bucket, the least recently used goes; the table never grows.
        for (i, d) in ["d", "e", "f"].into_iter().enumerate() {
            limiter.delay(d, t1 + Duration::from_millis(i as u64));
            assert!(limiter.buckets.lock().unwrap().len() <= 2);
        }
    }

    #[test]
    fn a_failed_pair_bounces_until_its_time_is_up() {
        let key = ("a.example".to_owned(), "b.example".to_owned());
        let t0 = Instant::now();
        let mut cache = FailureCache::new(Duration::from_secs(30));
        assert_eq!(cache.get(&key, t0), None);
        cache.insert(key.clone(), Condition::RemoteServerTimeout, t0);
        let later = t0 + Duration::from_secs(29);
        assert_eq!(cache.get(&key, later), Some(Condition::RemoteServerTimeout));
        let other = ("c.example".to_owned(), "b.example".to_owned());
        assert_eq!(cache.get(&other, later), None);
        assert_eq!(cache.get(&key, t0 + Duration::from_secs(30)), None);
        let mut off = FailureCache::new(Duration::ZERO);
        off.insert(key.clone(), Condition::RemoteServerNotFound, t0);
        assert_eq!(off.get(&key, t0), None);
    }
}
