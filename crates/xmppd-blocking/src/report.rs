//! Spam and abuse reports (XEP-0377): each is passed on to the server's administrators as a
//! message, a few per reporter and hour so that one account cannot flood them.

use dashmap::DashMap;
use jid::{BareJid, Jid};
use minidom::Element;
use xmppd_core::stanza::{self, NS_CLIENT};

use crate::payload::Accepted;

/// How many reports of one reporter are passed on within one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportLimit {
    pub per_window: u32,
    pub window_ms: i64,
}

impl Default for ReportLimit {
    fn default() -> Self {
        ReportLimit {
            per_window: 10,
            window_ms: 3_600_000,
        }
    }
}

/// Reporters' counts in their current window (fixed windows from each one's first report).
#[derive(Default)]
pub struct Quota {
    limit: ReportLimit,
    used: DashMap<BareJid, (i64, u32)>,
}

/// Reporters remembered before expired windows are swept out.
const SWEEP_ABOVE: usize = 10_000;

impl Quota {
    pub fn new(limit: ReportLimit) -> Quota {
        Quota {
            limit,
            used: DashMap::new(),
        }
    }

    /// Takes one report of `reporter` at `now_ms` from its quota; false if none is left.
    pub fn admit(&self, reporter: &BareJid, now_ms: i64) -> bool {
        let window = self.limit.window_ms;
        if self.used.len() > SWEEP_ABOVE {
            self.used.retain(|_, (start, _)| now_ms - *start < window);
        }
        let mut entry = self.used.entry(reporter.clone()).or_insert((now_ms, 0));
        let (start, count) = entry.value_mut();
        if now_ms - *start >= window || now_ms < *start {
            (*start, *count) = (now_ms, 0);
        }
        if *count >= self.limit.per_window {
            return false;
        }
        *count += 1;
        true
    }

    pub fn forget(&self, reporter: &BareJid) {
        self.used.remove(reporter);
    }
}

/// The message telling the administrator `admin` of `report`, from the reporter's domain:
/// a readable body (reporter, reported JID, reason, the reporter's text), and the report
/// element itself with the reported JID for software reading it.
pub fn admin_message(reporter: &BareJid, admin: &Jid, report: &Accepted, id: u64) -> Element {
    let reason = if report.spam { "spam" } else { "abuse" };
    let mut body = format!("Report from {reporter}: {} ({reason})", report.jid.as_str());
    for text in &report.report.texts {
        body.push('\n');
        body.push_str(text);
    }
    for sid in &report.report.stanza_ids {
        body.push_str(&format!("\nMessage {} (archive of {})", sid.id, sid.by));
    }
    let mut msg = stanza::elem(
        "message",
        NS_CLIENT,
        &[
            ("type", "normal"),
            ("from", reporter.domain().as_str()),
            ("to", admin.as_str()),
            ("id", &format!("report-{id}")),
        ],
    );
    msg.append_child(stanza::text_elem(
        "subject",
        NS_CLIENT,
        &format!(
            "{} report about {}",
            capitalised(reason),
            report.jid.as_str()
        ),
    ));
    msg.append_child(stanza::text_elem("body", NS_CLIENT, &body));
    let mut item = stanza::elem(
        "item",
        crate::payload::NS_BLOCKING,
        &[("jid", report.jid.as_str())],
    );
    item.append_child(report.report.clone().into());
    msg.append_child(item);
    msg
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Report;

    fn bare(s: &str) -> BareJid {
        BareJid::new(s).unwrap()
    }

    #[test]
    fn a_reporter_gets_its_quota_per_window_and_others_theirs() {
        let q = Quota::new(ReportLimit {
            per_window: 2,
            window_ms: 1000,
        });
        let (a, b) = (bare("a@x"), bare("b@x"));
        assert!(q.admit(&a, 0));
        assert!(q.admit(&a, 10));
        assert!(!q.admit(&a, 999));
        assert!(q.admit(&b, 999));
        assert!(q.admit(&a, 1000));
        assert!(q.admit(&a, 1500));
        assert!(!q.admit(&a, 1999));
        q.forget(&a);
        assert!(q.admit(&a, 1999));
    }

    #[test]
    fn the_admin_message_names_reporter_reported_reason_and_text() {
        let report = Accepted {
            jid: Jid::new("spammer@y").unwrap(),
            spam: true,
            report: Report {
                reason: Some(crate::payload::REASON_SPAM.into()),
                stanza_ids: Vec::new(),
                texts: vec!["buy now".into()],
            },
        };
        let m = admin_message(&bare("alice@x"), &Jid::new("root@x").unwrap(), &report, 7);
        assert_eq!(m.attr("to"), Some("root@x"));
        assert_eq!(m.attr("from"), Some("x"));
        let body = m.get_child("body", NS_CLIENT).unwrap().text();
        assert!(body.contains("alice@x"), "{body}");
        assert!(body.contains("spammer@y (spam)"), "{body}");
        assert!(body.contains("buy now"), "{body}");
        let item = m.get_child("item", crate::payload::NS_BLOCKING).unwrap();
        assert!(item.has_child("report", crate::payload::NS_REPORTING));
    }
}
