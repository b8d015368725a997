//! The per-session shaper: a token bucket on what a logged-in client sends.
//!
//! Each read takes its size in tokens; tokens come back at `rate` bytes per second up to
//! `burst`. A read may take more than is left (one large stanza is always accepted), after
//! which the connection does not read again until the debt is repaid. So a client that sends
//! faster than `rate` is slowed down by TCP back-pressure, never disconnected, and whatever it
//! sends to others reaches them at most at `rate` (after the first `burst`): it cannot fill
//! another session's queue faster than a reading client empties it.

use std::time::Duration;

use tokio::time::Instant;

/// Rate and burst of the shaper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShaperSettings {
    /// Sustained bytes per second; 0 turns shaping off.
    pub bytes_per_sec: u64,
    /// Bytes a client may send at once after being quiet.
    pub burst_bytes: u64,
}

impl ShaperSettings {
    pub const OFF: ShaperSettings = ShaperSettings {
        bytes_per_sec: 0,
        burst_bytes: 0,
    };
}

/// One session's token bucket.
#[derive(Debug)]
pub(crate) struct Shaper {
    settings: ShaperSettings,
    /// Tokens left, negative while in debt.
    tokens: f64,
    last: Instant,
}

impl Shaper {
    /// A full bucket.
    pub(crate) fn new(settings: ShaperSettings, now: Instant) -> Shaper {
        Shaper {
            settings,
            tokens: settings.burst_bytes as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let rate = self.settings.bytes_per_sec as f64;
        self.tokens = (self.tokens + elapsed * rate).min(self.settings.burst_bytes as f64);
    }

    /// Takes `n` bytes just read; returns when the next read may happen (`None`: at once).
    pub(crate) fn take(&mut self, n: usize, now: Instant) -> Option<Instant> {
        if self.settings.bytes_per_sec == 0 {
            return None;
        }
        self.refill(now);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            return None;
        }
        let wait = -self.tokens / self.settings.bytes_per_sec as f64;
        Some(now + Duration::from_secs_f64(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: ShaperSettings = ShaperSettings {
        bytes_per_sec: 1000,
        burst_bytes: 4000,
    };

    #[test]
    fn a_burst_passes_then_reads_wait_for_the_rate() {
        let t0 = Instant::now();
        let mut s = Shaper::new(S, t0);
        assert_eq!(s.take(3000, t0), None);
        assert_eq!(s.take(1000, t0), None, "the whole burst");
        // 500 bytes of debt: half a second at 1000 bytes/s.
        let next = s.take(500, t0).expect("must wait");
        assert_eq!(next - t0, Duration::from_millis(500));
        // Repaid exactly then; a second later there is room for 1000 more.
        assert_eq!(s.take(0, next), None);
        assert_eq!(s.take(1000, next + Duration::from_secs(1)), None);
    }

    #[test]
    fn one_large_read_is_accepted_and_paid_off_afterwards() {
        let t0 = Instant::now();
        let mut s = Shaper::new(S, t0);
        let next = s.take(10_000, t0).expect("debt");
        assert_eq!(next - t0, Duration::from_secs(6));
    }

    #[test]
    fn quiet_time_refills_up_to_the_burst_only() {
        let t0 = Instant::now();
        let mut s = Shaper::new(S, t0);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(s.take(4000, later), None);
        assert!(
            s.take(1, later).is_some(),
            "an hour of quiet is still one burst"
        );
    }

    #[test]
    fn off_never_waits() {
        let t0 = Instant::now();
        let mut s = Shaper::new(ShaperSettings::OFF, t0);
        assert_eq!(s.take(usize::MAX / 2, t0), None);
    }
}
