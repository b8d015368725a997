//! Pacing relayed bytes to a rate: a token bucket that lends, so that callers are served in
//! the order they ask and none waits longer than the debt before it says.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket of `rate` bytes a second holding at most `burst`. Taking more than it holds
/// leaves it in debt; the caller waits until the debt would be paid.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// Full at `now`.
    pub fn new(rate: u64, burst: u64, now: Instant) -> Self {
        Bucket {
            rate: rate as f64,
            burst: burst as f64,
            tokens: burst as f64,
            last: now,
        }
    }

    /// Takes `n` bytes at `now`; returns how long to wait before sending them.
    pub fn take(&mut self, n: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// A bucket shared by the tasks it paces, or none: no limit.
#[derive(Debug)]
pub struct Pacer(Option<Mutex<Bucket>>);

impl Pacer {
    /// `rate` bytes a second (0: unlimited), bursts of `burst`.
    pub fn new(rate: u64, burst: u64) -> Self {
        Pacer((rate > 0).then(|| Mutex::new(Bucket::new(rate, burst, Instant::now()))))
    }

    /// Waits until `n` more bytes may pass.
    pub async fn pace(&self, n: usize) {
        let Some(bucket) = &self.0 else { return };
        let wait = bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(n, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_lets_a_burst_pass_then_lends() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000, 100, t0);
        assert_eq!(b.take(100, t0), Duration::ZERO);
        assert_eq!(b.take(100, t0), Duration::from_millis(100));
        // 100 ms later the debt is paid; 50 more bytes cost 50 ms.
        let later = t0 + Duration::from_millis(100);
        assert_eq!(b.take(50, later), Duration::from_millis(50));
    }

    #[test]
    fn refill_stops_at_the_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000, 100, t0);
        let much_later = t0 + Duration::from_secs(60);
        assert_eq!(b.take(100, much_later), Duration::ZERO);
        assert_eq!(b.take(10, much_later), Duration::from_millis(10));
    }

    /// Whatever the chunking, sending N bytes takes at least (N - burst) / rate.
    #[test]
    fn total_wait_follows_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(4096, 1024, t0);
        let mut now = t0;
        for n in [1000, 3000, 7, 4096, 900, 5000, 10] {
            now += b.take(n, now);
        }
        let sent = 1000 + 3000 + 7 + 4096 + 900 + 5000 + 10;
        let least = Duration::from_secs_f64((sent - 1024 - 10) as f64 / 4096.0);
        assert!(now - t0 >= least, "{:?} < {least:?}", now - t0);
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_sleeps_for_the_debt() {
        let p = Pacer::new(1000, 100);
        let t0 = Instant::now();
        p.pace(100).await;
        p.pace(500).await;
        assert!(Instant::now() - t0 >= Duration::from_millis(500));
        let unlimited = Pacer::new(0, 0);
        let t1 = Instant::now();
        unlimited.pace(1 << 30).await;
        assert_eq!(Instant::now(), t1);
    }
}
