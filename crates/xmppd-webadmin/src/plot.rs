//! The last hour of connected sessions and messages per second: a ring of samples taken every
//! [`INTERVAL`] from the metrics counters, drawn server-side as inline SVG (no script).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use maud::{html, Markup};

/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Samples kept: one hour.
pub const KEPT: usize = 360;

/// One sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds since the first sample.
    pub at: u64,
    pub sessions: i64,
    /// Messages read from clients per second since the sample before.
    pub messages_per_sec: f64,
}

/// The ring of samples.
#[derive(Debug)]
pub struct Samples {
    ring: Mutex<VecDeque<Sample>>,
    /// The counter and the time of the last sample, for the next rate.
    last: Mutex<Option<(u64, Instant)>>,
    start: Instant,
}

impl Default for Samples {
    fn default() -> Self {
        Samples {
            ring: Mutex::new(VecDeque::with_capacity(KEPT)),
            last: Mutex::new(None),
            start: Instant::now(),
        }
    }
}

impl Samples {
    /// Records one sample: `sessions` connected, `messages` read since the start, at `now`.
    pub fn record(&self, sessions: i64, messages: u64, now: Instant) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let rate = match *last {
            Some((before, then)) if now > then => {
                messages.saturating_sub(before) as f64 / (now - then).as_secs_f64()
            }
            _ => 0.0,
        };
        *last = Some((messages, now));
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(Sample {
            at: now.saturating_duration_since(self.start).as_secs(),
            sessions,
            messages_per_sec: rate,
        });
    }

    /// The samples, oldest first.
    pub fn all(&self) -> Vec<Sample> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().copied().collect()
    }

    /// Takes a sample from the metrics now and every [`INTERVAL`], as long as the ring is
    /// in use (the task holds it weakly).
    pub fn spawn_sampler(self: &Arc<Self>) {
        let weak: Weak<Samples> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(samples) = weak.upgrade() else { break };
                let (sessions, messages) =
                    (xmppd_metrics::sessions(), xmppd_metrics::messages_in());
                samples.record(sessions, messages, Instant::now());
            }
        });
    }
}

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 120.0;

/// A line chart of `value` over the samples, as an `<svg>` element, with `title` and the
/// largest value as its scale. The hour spans the width; the newest sample is at the right.
pub fn chart(title: &str, samples: &[Sample], value: fn(&Sample) -> f64) -> Markup {
    let max = samples.iter().map(value).fold(0.0f64, f64::max);
    let top = if max > 0.0 { max } else { 1.0 };
    let newest = samples.last().map_or(0, |s| s.at);
    let span = (KEPT as u64 * INTERVAL.as_secs()) as f64;
    let mut points = String::new();
    for s in samples {
        let age = newest.saturating_sub(s.at) as f64;
        let x = WIDTH - (age / span * WIDTH).min(WIDTH);
        let y = HEIGHT - value(s) / top * (HEIGHT - 10.0);
        let _ = write!(points, "{x:.1},{y:.1} ");
    }
    let scale = if max.fract() == 0.0 {
        format!("{max:.0}")
    } else {
        format!("{max:.2}")
    };
    let view = format!("0 0 {WIDTH} {HEIGHT}");
    html! {
        figure class="chart" {
            figcaption { (title) " (last hour, max " (scale) ")" }
            svg xmlns="http://www.w3.org/2000/svg" viewBox=(view) width=(WIDTH) height=(HEIGHT)
                role="img" aria-label=(title) {
                rect class="frame" x="0" y="0" width=(WIDTH) height=(HEIGHT) {}
                @if samples.len() > 1 {
                    polyline class="line" points=(points.trim_end()) {}
                } @else if let Some(s) = samples.first() {
                    circle class="dot" cx=(WIDTH) cy=(HEIGHT - value(s) / top * (HEIGHT - 10.0)) r="3" {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(m: Markup) -> String {
        m.into_string()
    }

    #[test]
    fn the_ring_keeps_an_hour_and_computes_rates() {
        let samples = Samples::default();
        let t0 = Instant::now();
        samples.record(1, 100, t0);
        samples.record(2, 150, t0 + INTERVAL);
        let all = samples.all();
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[0].messages_per_sec, 0.0,
            "no rate without a sample before"
        );
        assert_eq!(all[1].messages_per_sec, 5.0);
        assert_eq!(all[1].sessions, 2);
        for i in 2..KEPT as u32 + 10 {
            samples.record(0, 150, t0 + INTERVAL * i);
        }
        let all = samples.all();
        assert_eq!(all.len(), KEPT);
        assert_eq!(all.last().unwrap().messages_per_sec, 0.0);
        assert!(all[0].at >= 10 * INTERVAL.as_secs());
    }

    #[test]
    fn charts_are_svg_with_one_point_per_sample() {
        let s = |at, sessions| Sample {
            at,
            sessions,
            messages_per_sec: 0.5,
        };
        let svg = render(chart("Sessions", &[s(0, 1), s(10, 2), s(20, 3)], |s| {
            s.sessions as f64
        }));
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.contains("max 3)"), "{svg}");
        let points = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(points.split(' ').count(), 3, "{points}");
        assert!(
            points.ends_with("600.0,10.0"),
            "the newest at the right, at the top: {points}"
        );
        assert!(!svg.contains("<script"));
        // One sample: a dot; none: the frame only.
        assert!(render(chart("x", &[s(0, 1)], |s| s.sessions as f64)).contains("<circle"));
        let empty = render(chart("x", &[], |s| s.sessions as f64));
        assert!(!empty.contains("<polyline") && !empty.contains("<circle"));
        // The title is escaped like any value.
        assert!(render(chart("<b>", &[], |s| s.messages_per_sec)).contains("&lt;b&gt;"));
    }
}
