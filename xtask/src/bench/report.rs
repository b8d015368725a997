//! The results: one run's numbers as a table, JSON or a markdown block in docs/BENCHMARKS.md.

use std::fmt::Write as _;

/// Start and end of the generated block in docs/BENCHMARKS.md.
const MD_START: &str = "<!-- bench-results:start -->";
const MD_END: &str = "<!-- bench-results:end -->";

/// Results of one run.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Report {
    pub(super) date: String,
    pub(super) nproc: usize,
    pub(super) cpu_model: String,
    pub(super) clients: usize,
    pub(super) mode: String,
    pub(super) payload: usize,
    pub(super) login_secs: f64,
    pub(super) run_secs: f64,
    pub(super) sent: u64,
    pub(super) delivered: u64,
    pub(super) delivered_in_run: u64,
    pub(super) lost: u64,
    pub(super) reordered: u64,
    pub(super) error_stanzas: u64,
    pub(super) connection_errors: u64,
    pub(super) latency: Option<Percentiles>,
    pub(super) rss_idle_kib: u64,
    pub(super) rss_sessions_kib: u64,
    pub(super) rss_end_kib: u64,
    pub(super) server_cpu_login_secs: f64,
    pub(super) server_cpu_run_secs: f64,
    pub(super) client_cpu_run_secs: f64,
    /// Open loop: sends the generator made more than 2 ms after they were due.
    pub(super) late_sends: u64,
    /// With the archive on: growth of the database files over the run, per message delivered
    /// (each one-to-one message is archived twice, once per side).
    pub(super) archive_bytes_per_message: Option<f64>,
}

/// Delivery latencies in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Percentiles {
    pub(super) p50: u64,
    pub(super) p90: u64,
    pub(super) p99: u64,
    pub(super) max: u64,
}

/// Nearest-rank percentiles of `sorted` (ascending); `None` when empty.
pub(super) fn percentiles(sorted: &[u64]) -> Option<Percentiles> {
    let rank = |p: u64| {
        // Nearest rank: the smallest value with at least p% of samples at or below it.
        let n = sorted.len() as u64;
        let idx = (p * n).div_ceil(100).max(1) - 1;
        sorted[idx as usize]
    };
    let max = *sorted.last()?;
    Some(Percentiles {
        p50: rank(50),
        p90: rank(90),
        p99: rank(99),
        max,
    })
}

impl Report {
    fn msgs_per_sec(&self) -> f64 {
        if self.run_secs > 0.0 {
            self.delivered_in_run as f64 / self.run_secs
        } else {
            0.0
        }
    }

    /// Session memory: growth from the idle server to all sessions up, per session.
    fn rss_per_session_kib(&self) -> f64 {
        self.rss_sessions_kib.saturating_sub(self.rss_idle_kib) as f64 / self.clients as f64
    }

    fn rows(&self) -> Vec<(&'static str, String)> {
        let ms = |ns: u64| format!("{:.3} ms", ns as f64 / 1e6);
        let mut rows = vec![
            ("date", self.date.clone()),
            (
                "machine",
                format!("{} CPUs, {}", self.nproc, self.cpu_model),
            ),
            ("clients", self.clients.to_string()),
            ("mode", self.mode.clone()),
            ("body filler", format!("{} bytes", self.payload)),
            ("login of all clients", format!("{:.2} s", self.login_secs)),
            ("message phase", format!("{:.2} s", self.run_secs)),
            ("messages sent", self.sent.to_string()),
            ("messages delivered", self.delivered.to_string()),
            ("throughput", format!("{:.0} msg/s", self.msgs_per_sec())),
        ];
        if let Some(l) = self.latency {
            rows.extend([
                ("latency p50", ms(l.p50)),
                ("latency p90", ms(l.p90)),
                ("latency p99", ms(l.p99)),
                ("latency max", ms(l.max)),
            ]);
        }
        let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
        rows.extend([
            ("server RSS idle", mib(self.rss_idle_kib)),
            ("server RSS, sessions up", mib(self.rss_sessions_kib)),
            ("server RSS at end", mib(self.rss_end_kib)),
            (
                "server RSS per session",
                format!("{:.1} KiB", self.rss_per_session_kib()),
            ),
            (
                "server CPU, logins",
                format!("{:.2} s", self.server_cpu_login_secs),
            ),
            (
                "server CPU, message phase",
                format!("{:.2} s", self.server_cpu_run_secs),
            ),
            (
                "bench client CPU, message phase",
                format!("{:.2} s", self.client_cpu_run_secs),
            ),
            ("generator sends >2 ms late", self.late_sends.to_string()),
            (
                "lost messages",
                format!("{} ({})", self.lost, pass(self.lost == 0)),
            ),
            ("reordered messages", self.reordered.to_string()),
            ("error stanzas", self.error_stanzas.to_string()),
            ("connection errors", self.connection_errors.to_string()),
        ]);
        if let Some(b) = self.archive_bytes_per_message {
            rows.push(("database bytes per message", format!("{b:.0}")));
        }
        rows
    }

    pub(super) fn table(&self) -> String {
        let rows = self.rows();
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }

    pub(super) fn markdown(&self) -> String {
        let mut out = String::from("| metric | value |\n|---|---|\n");
        for (k, v) in self.rows() {
            let _ = writeln!(out, "| {k} | {} |", v.replace('|', "\\|"));
        }
        out
    }

    pub(super) fn json(&self) -> String {
        let mut fields: Vec<(&str, String)> = vec![
            ("date", json_string(&self.date)),
            ("nproc", self.nproc.to_string()),
            ("cpu_model", json_string(&self.cpu_model)),
            ("clients", self.clients.to_string()),
            ("mode", json_string(&self.mode)),
            ("payload_bytes", self.payload.to_string()),
            ("login_secs", json_f64(self.login_secs)),
            ("run_secs", json_f64(self.run_secs)),
            ("sent", self.sent.to_string()),
            ("delivered", self.delivered.to_string()),
            ("delivered_in_run", self.delivered_in_run.to_string()),
            ("msgs_per_sec", json_f64(self.msgs_per_sec())),
        ];
        let l = self.latency;
        for (key, v) in [
            ("latency_p50_ns", l.map(|l| l.p50)),
            ("latency_p90_ns", l.map(|l| l.p90)),
            ("latency_p99_ns", l.map(|l| l.p99)),
            ("latency_max_ns", l.map(|l| l.max)),
        ] {
            fields.push((key, v.map_or_else(|| "null".into(), |v| v.to_string())));
        }
        fields.extend([
            ("rss_idle_kib", self.rss_idle_kib.to_string()),
            ("rss_sessions_kib", self.rss_sessions_kib.to_string()),
            ("rss_end_kib", self.rss_end_kib.to_string()),
            ("rss_per_session_kib", json_f64(self.rss_per_session_kib())),
            (
                "server_cpu_login_secs",
                json_f64(self.server_cpu_login_secs),
            ),
            ("server_cpu_run_secs", json_f64(self.server_cpu_run_secs)),
            ("client_cpu_run_secs", json_f64(self.client_cpu_run_secs)),
            ("late_sends", self.late_sends.to_string()),
            ("lost", self.lost.to_string()),
            ("reordered", self.reordered.to_string()),
            ("error_stanzas", self.error_stanzas.to_string()),
            ("connection_errors", self.connection_errors.to_string()),
        ]);
        if let Some(b) = self.archive_bytes_per_message {
            fields.push(("database_bytes_per_message", json_f64(b)));
        }
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    }
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "FAIL"
    }
}

fn json_f64(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.6}")
    } else {
        "null".into()
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Replaces the generated block of `doc` with `block`, or appends one if there is none.
pub(super) fn update_results_block(doc: &str, block: &str) -> String {
    let fresh = format!("{MD_START}\n{}{MD_END}", ensure_newline(block));
    if let Some(start) = doc.find(MD_START) {
        if let Some(end_rel) = doc[start..].find(MD_END) {
            let end = start + end_rel + MD_END.len();
            return format!("{}{fresh}{}", &doc[..start], &doc[end..]);
        }
    }
    let mut out = ensure_newline(doc);
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str("## Latest results\n\n");
    out.push_str(&fresh);
    out.push('\n');
    out
}

fn ensure_newline(s: &str) -> String {
    let mut s = s.to_string();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        assert_eq!(percentiles(&[]), None);
        let one = percentiles(&[42]).unwrap();
        assert_eq!((one.p50, one.p99, one.max), (42, 42, 42));
        let hundred: Vec<u64> = (1..=100).collect();
        let p = percentiles(&hundred).unwrap();
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50, 90, 99, 100));
        let ten: Vec<u64> = (1..=10).map(|v| v * 10).collect();
        let p = percentiles(&ten).unwrap();
        // ceil(0.99 * 10) = 10th sample: with few samples p99 is the maximum.
        assert_eq!((p.p50, p.p90, p.p99), (50, 90, 100));
    }

    #[test]
    fn escaping() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn results_block_replaced_or_appended() {
        let appended = update_results_block("# Benchmarks\nintro", "| a | 1 |\n");
        assert!(appended.starts_with("# Benchmarks\nintro\n"));
        assert!(appended.contains(&format!("{MD_START}\n| a | 1 |\n{MD_END}")));

        let replaced = update_results_block(&format!("{appended}\n## After\n"), "| b | 2 |");
        assert!(!replaced.contains("| a | 1 |"));
        assert!(replaced.contains(&format!("{MD_START}\n| b | 2 |\n{MD_END}")));
        assert!(replaced.ends_with("\n## After\n"));
        assert_eq!(replaced.matches(MD_START).count(), 1);
    }

    #[test]
    fn report_outputs_carry_the_numbers() {
        let report = Report {
            date: "2025-01-02".into(),
            nproc: 2,
            cpu_model: "Test \"CPU\"".into(),
            clients: 4,
            mode: crate::bench::Options::default().mode(),
            payload: 0,
            login_secs: 0.5,
            run_secs: 2.0,
            sent: 1000,
            delivered: 998,
            delivered_in_run: 900,
            lost: 2,
            reordered: 0,
            error_stanzas: 0,
            connection_errors: 0,
            latency: Some(Percentiles {
                p50: 1_000_000,
                p90: 2_000_000,
                p99: 3_000_000,
                max: 9,
            }),
            rss_idle_kib: 1000,
            rss_sessions_kib: 1400,
            rss_end_kib: 1500,
            server_cpu_login_secs: 0.1,
            server_cpu_run_secs: 1.5,
            client_cpu_run_secs: 1.0,
            late_sends: 0,
            archive_bytes_per_message: Some(512.0),
        };
        assert_eq!(report.msgs_per_sec(), 450.0);
        assert_eq!(report.rss_per_session_kib(), 100.0);
        let table = report.table();
        assert!(table.contains("450 msg/s") && table.contains("FAIL"));
        assert!(table.contains("2.000 ms"));
        let json = report.json();
        assert!(json.starts_with('{') && json.ends_with('}'));
        assert!(json.contains("\"lost\":2") && json.contains("\"latency_p99_ns\":3000000"));
        assert!(json.contains("\"cpu_model\":\"Test \\\"CPU\\\"\""));
        assert!(json.contains("\"database_bytes_per_message\":512.000000"));
        assert!(table
            .lines()
            .any(|l| l.starts_with("database bytes per message") && l.ends_with(" 512")));
        assert_eq!(report.markdown().lines().count(), report.rows().len() + 2);
    }
}
