//! Which domains may federate, and how fast they may send.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
pub struct RateLimiter {
    rate: u32,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate: u32) -> Self {
        RateLimiter {
            rate,
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
}
