//! Discussion history and the hook an archive service (XEP-0313) plugs into: [`RoomArchive`].
//!
//! Every groupchat message a room broadcasts is handed to [`RoomArchive::store`] before the
//! broadcast; a new occupant's history comes from [`RoomArchive::history`]. The default,
//! [`MemoryArchive`], keeps the last `history_length` messages of each room in memory (lost on
//! restart), and no more than a number of bytes per room. A MAM service implements the trait
//! over durable storage for the rooms whose archiving is on: it gives each stored message an
//! archive id, which the room stamps on the broadcast as `<stanza-id/>` (XEP-0359), serves
//! their history, and answers their queries through [`RoomArchive::iq_namespaces`] /
//! [`RoomArchive::handle_iq`].

use std::collections::VecDeque;

use async_trait::async_trait;
use dashmap::DashMap;
use jid::{BareJid, FullJid};
use minidom::Element;
use xmppd_core::stanza::{Condition, StanzaError};

/// XEP-0359 unique and stable stanza ids.
pub const NS_SID: &str = "urn:xmpp:sid:0";
/// XEP-0424 message retraction.
pub const NS_RETRACT: &str = "urn:xmpp:message-retract:1";

/// XEP-0425 moderated message retraction.
pub const NS_MODERATE: &str = "urn:xmpp:message-moderate:1";

/// A retraction (XEP-0424) an occupant sent to a room, or one a moderator asked for
/// (XEP-0425).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetractRequest {
    /// The message to retract: its archive id in an archived room (XEP-0424 §6.1), the `id`
    /// or origin id its sender gave it in a room whose history is in memory.
    pub target: String,
    /// The real bare JID of the occupant retracting it: without `moderation`, only its own
    /// messages.
    pub sender: BareJid,
    /// The retraction's own `id`, which the tombstone carries.
    pub id: Option<String>,
    /// Set when a moderator retracts (any message, XEP-0425).
    pub moderation: Option<Moderation>,
}

/// Who moderated a message and why (XEP-0425 `<moderated by=…/>` and `<reason/>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moderation {
    /// The moderator's occupant JID.
    pub by: String,
    pub reason: Option<String>,
}

/// One message as the room broadcast it (`from` the occupant JID, no `to`).
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// Unix milliseconds: the end of the millisecond in which the room accepted it, so that
    /// it is later than every instant before the message (see `HistoryQuery::since_ms`).
    pub stamp_ms: i64,
    /// The sender's real bare JID (what an archive shows to those who may see real JIDs;
    /// never shown to occupants with the history).
    pub sender: BareJid,
    pub message: Element,
}

/// What a new occupant asked for (`<history/>` in its join presence, XEP-0045 §7.2.13).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    pub max_chars: Option<usize>,
    pub max_stanzas: Option<usize>,
    /// Only messages of the last `seconds`.
    pub seconds: Option<u64>,
    /// Only messages after this Unix millisecond (a finer `since` is cut to the millisecond).
    pub since_ms: Option<i64>,
}

impl HistoryQuery {
    /// Reads `<history maxchars maxstanzas seconds since/>`; unparsable values are ignored.
    pub fn parse(history: Option<&Element>) -> HistoryQuery {
        let Some(h) = history else {
            return HistoryQuery::default();
        };
        let num = |a: &str| h.attr(a).and_then(|v| v.trim().parse::<u64>().ok());
        HistoryQuery {
            max_chars: num("maxchars").map(|v| v as usize),
            max_stanzas: num("maxstanzas").map(|v| v as usize),
            seconds: num("seconds"),
            since_ms: h.attr("since").and_then(parse_datetime_ms),
        }
    }

    /// The earliest stamp `seconds` and `since` let through as of `now_ms`, if they limit at
    /// all (for an archive that narrows its read before [`HistoryQuery::select`]).
    pub fn earliest_ms(&self, now_ms: i64) -> Option<i64> {
        let by_age = self.seconds.map(|s| {
            let window = i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000);
            now_ms.saturating_sub(window)
        });
        let by_since = self.since_ms.map(|since| since.saturating_add(1));
        by_age.into_iter().chain(by_since).max()
    }

    /// Applies the limits to entries (oldest first) as of `now_ms`, keeping the newest ones.
    pub fn select(&self, entries: &[HistoryEntry], now_ms: i64) -> Vec<HistoryEntry> {
        let mut out: Vec<HistoryEntry> = Vec::new();
        let mut chars = 0usize;
        let earliest = self.earliest_ms(now_ms);
        for e in entries.iter().rev() {
            if self.max_stanzas.is_some_and(|m| out.len() >= m) {
                break;
            }
            if earliest.is_some_and(|t| e.stamp_ms < t) {
                break;
            }
            if let Some(max) = self.max_chars {
                chars += crate::to_xml(&e.message).chars().count();
                if chars > max {
                    break;
                }
            }
            out.push(e.clone());
        }
        out.reverse();
        out
    }
}

/// What answering an archive IQ gives: the result messages (XEP-0313 §4.2), each addressed
/// to the asker, sent in order before the IQ result with `payload`.
#[derive(Debug, Default)]
pub struct IqAnswer {
    pub results: Vec<Element>,
    pub payload: Option<Element>,
}

/// What [`RoomArchive::store`] resolves to: the archive id, once durable.
pub type Stored = std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>>;

/// Storage of room messages: history for new occupants, and the XEP-0313 archive.
#[async_trait]
pub trait RoomArchive: Send + Sync {
    /// A groupchat message is about to be broadcast in `room`. `keep` is the room's history
    /// length; `archived` is the room's archiving setting. Resolves to the message's archive
    /// id once it is stored durably (the room then stamps it on the broadcast), none when it
    /// is not archived. The write is queued before this returns, in order with the room's
    /// other writes, and history already includes the message: the room goes on with its
    /// next stanza while the write commits.
    fn store(&self, room: &BareJid, entry: HistoryEntry, keep: usize, archived: bool) -> Stored;

    /// The discussion history for a new occupant, oldest first, at most `keep` messages.
    async fn history(
        &self,
        room: &BareJid,
        query: &HistoryQuery,
        keep: usize,
        archived: bool,
        now_ms: i64,
    ) -> Vec<HistoryEntry>;

    /// The room is gone (destroyed or emptied), or a new room of that name was created: its
    /// history and archive go.
    async fn forget(&self, room: &BareJid);

    /// Applies `request` to `room` before the retraction is broadcast and stored (`archived` is
    /// the room's archiving setting): the message it names becomes a tombstone in an archive
    /// (XEP-0424 §4), and leaves an in-memory history. `<forbidden/>` when that message was
    /// sent by someone else and no moderator asks: the retraction is then refused, not
    /// broadcast. An id not known changes nothing, refused to a moderator with
    /// `<item-not-found/>` (XEP-0425); a message already retracted stays as it is.
    async fn retract(
        &self,
        room: &BareJid,
        request: &RetractRequest,
        archived: bool,
    ) -> Result<(), StanzaError>;

    /// Payload namespaces of IQs to an archived room that [`RoomArchive::handle_iq`] answers
    /// (`urn:xmpp:mam:2` for a MAM service).
    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[]
    }

    /// The disco#info features of a room whose archiving is on (`urn:xmpp:mam:2`, …).
    fn features(&self) -> &'static [&'static str] {
        &[]
    }

    /// Answers a claimed IQ to archived `room` from `from`, whom the room allowed to read its
    /// archive; `real_jids` says whether they see the senders' real JIDs.
    async fn handle_iq(
        &self,
        room: &BareJid,
        from: &FullJid,
        iq: &Element,
        real_jids: bool,
    ) -> Result<IqAnswer, StanzaError> {
        let _ = (room, from, iq, real_jids);
        Err(StanzaError::new(Condition::FeatureNotImplemented))
    }
}

/// The built-in history: the last messages of each room, in memory, bounded in bytes per room
/// (every new occupant gets a copy of what it asks for, so a room's history costs memory once
/// here and once more per join).
pub struct MemoryArchive {
    rooms: DashMap<BareJid, History>,
    max_bytes: usize,
}

#[derive(Default)]
struct History {
    entries: VecDeque<(HistoryEntry, usize)>,
    bytes: usize,
}

impl History {
    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }
}

impl MemoryArchive {
    /// The default bound of one room's history.
    pub const DEFAULT_MAX_BYTES: usize = 256 * 1024;

    /// Keeps at most `max_bytes` of messages per room (their serialised size): the oldest go
    /// first, and a message larger than that alone is not kept.
    pub fn new(max_bytes: usize) -> Self {
        MemoryArchive {
            rooms: DashMap::new(),
            max_bytes,
        }
    }
}

impl Default for MemoryArchive {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_BYTES)
    }
}

#[async_trait]
impl RoomArchive for MemoryArchive {
    fn store(&self, room: &BareJid, entry: HistoryEntry, keep: usize, _archived: bool) -> Stored {
        let size = xmppd_core::queue::element_size(&entry.message);
        if keep == 0 || size > self.max_bytes {
            if keep == 0 {
                self.rooms.remove(room);
            }
            return Box::pin(std::future::ready(None));
        }
        let mut h = self.rooms.entry(room.clone()).or_default();
        h.entries.push_back((entry, size));
        h.bytes += size;
        while h.entries.len() > keep || h.bytes > self.max_bytes {
            h.pop_front();
        }
        Box::pin(std::future::ready(None))
    }

    async fn history(
        &self,
        room: &BareJid,
        query: &HistoryQuery,
        keep: usize,
        _archived: bool,
        now_ms: i64,
    ) -> Vec<HistoryEntry> {
        let Some(h) = self.rooms.get(room) else {
            return Vec::new();
        };
        let skip = h.entries.len().saturating_sub(keep);
        let entries: Vec<HistoryEntry> = (h.entries.iter().skip(skip))
            .map(|(e, _)| e.clone())
            .collect();
        drop(h);
        query.select(&entries, now_ms)
    }

    async fn forget(&self, room: &BareJid) {
        self.rooms.remove(room);
    }

    /// A room without an archive gives no ids of its own (XEP-0359), so a retraction names the
    /// message by the `id` its sender gave it or its `<origin-id/>` (as XEP-0424 did before
    /// rooms' ids, and as one-to-one chats do); the newest such message goes from the history,
    /// so that newcomers no longer get it. A tombstone there would carry nothing a newcomer's
    /// client could match, the retraction that follows in the history being all it needs.
    async fn retract(
        &self,
        room: &BareJid,
        request: &RetractRequest,
        _archived: bool,
    ) -> Result<(), StanzaError> {
        let named = |e: &HistoryEntry| {
            let m = &e.message;
            m.attr("id") == Some(request.target.as_str())
                || (m.get_child("origin-id", NS_SID).and_then(|o| o.attr("id")))
                    == Some(request.target.as_str())
        };
        let unknown = || match request.moderation {
            Some(_) => Err(StanzaError::new(Condition::ItemNotFound)),
            None => Ok(()),
        };
        let Some(mut h) = self.rooms.get_mut(room) else {
            return unknown();
        };
        let mine = |e: &HistoryEntry| request.moderation.is_some() || e.sender == request.sender;
        let Some(pos) = (h.entries.iter()).rposition(|(e, _)| named(e) && mine(e)) else {
            if request.moderation.is_none() && h.entries.iter().any(|(e, _)| named(e)) {
                // XEP-0424 §6: only the author retracts (moderators moderate, XEP-0425).
                return Err(StanzaError::with_text(
                    Condition::Forbidden,
                    "only its sender may retract a message",
                ));
            }
            return unknown();
        };
        if let Some((_, size)) = h.entries.remove(pos) {
            h.bytes -= size;
        }
        Ok(())
    }
}

/// Parses an XEP-0082 DateTime (`2024-05-01T12:00:00Z`, optional fraction and `±hh:mm`
/// offset) into Unix milliseconds.
pub fn parse_datetime_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let (time, offset_min) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else {
        let pos = rest.rfind(['+', '-'])?;
        let (t, off) = rest.split_at(pos);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        let (oh, om): (i64, i64) = (oh.parse().ok()?, om.parse().ok()?);
        if !(0..=23).contains(&oh) || !(0..=59).contains(&om) {
            return None;
        }
        (t, sign * (oh * 60 + om))
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':');
    let (hh, mm, ss): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if !(0..=23).contains(&hh) || !(0..=59).contains(&mm) || !(0..=60).contains(&ss) {
        return None;
    }
    let ms = if frac.is_empty() {
        0
    } else {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits = &frac[..frac.len().min(3)];
        let v: i64 = digits.parse().ok()?;
        v * 10i64.pow(3 - digits.len() as u32)
    };
    // Days from civil (the inverse of the core's civil-from-days). The year is the peer's
    // and unbounded, so the steps that scale it are checked: an absurd year is no date.
    let y2 = if m <= 2 { y.checked_sub(1)? } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era.checked_mul(146_097)?.checked_add(doe - 719_468)?;
    let secs = days
        .checked_mul(86_400)?
        .checked_add(hh * 3600 + mm * 60 + ss - offset_min * 60)?;
    secs.checked_mul(1000)?.checked_add(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stamp_ms: i64, body: &str) -> HistoryEntry {
        let mut m = Element::bare("message", "jabber:client");
        m.append_text(body);
        HistoryEntry {
            stamp_ms,
            sender: BareJid::new("a@x").unwrap(),
            message: m,
        }
    }

    fn bodies(v: &[HistoryEntry]) -> Vec<String> {
        v.iter().map(|e| e.message.text()).collect()
    }

    #[test]
    fn datetimes_parse_like_the_core_formats_them() {
        for ms in [0, 1_700_000_000_123, 951_782_400_000] {
            let s = xmppd_core::stanza::xep82_datetime(ms);
            assert_eq!(parse_datetime_ms(&s), Some(ms), "{s}");
        }
        assert_eq!(
            parse_datetime_ms("1970-01-01T01:00:00+01:00"),
            Some(0),
            "offsets are applied"
        );
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-01-01T25:00:00Z",
            "2024-01-01T00:00:00.éé9Z",
            "2024-01-01T00:00:00.+1Z",
            "2024-01-01T00:00:00+é:00",
            "2024-01-01T00:00:00+",
        ] {
            assert_eq!(parse_datetime_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn extreme_dates_are_no_dates() {
        for bad in [
            "9223372036854775807-01-01T00:00:00Z",
            "-9223372036854775808-01-01T00:00:00Z",
            "-9223372036854775808-03-01T00:00:00Z",
            "292278994-08-17T07:12:56Z",
            "2000-01-01T00:00:00+9223372036854775807:00",
            "2000-01-01T00:00:00+00:9223372036854775807",
            "2000-01-01T-1:00:00Z",
        ] {
            assert_eq!(parse_datetime_ms(bad), None, "{bad}");
        }
        // Far but representable years still parse.
        assert!(parse_datetime_ms("99999-12-31T23:59:59Z").is_some());
        assert!(parse_datetime_ms("0001-01-01T00:00:00Z").is_some());
    }

    #[test]
    fn history_limits_keep_the_newest() {
        let all: Vec<_> = (1..=5).map(|i| entry(i * 1000, &format!("m{i}"))).collect();
        let q = |s: &str| {
            let el: Element = format!("<history xmlns='x' {s}/>").parse().unwrap();
            HistoryQuery::parse(Some(&el))
        };
        assert_eq!(
            bodies(&q("maxstanzas='2'").select(&all, 6000)),
            ["m4", "m5"]
        );
        assert_eq!(bodies(&q("seconds='2'").select(&all, 6000)), ["m4", "m5"]);
        let since = xmppd_core::stanza::xep82_datetime(3000);
        assert_eq!(
            bodies(&q(&format!("since='{since}'")).select(&all, 6000)),
            ["m4", "m5"]
        );
        assert!(q("maxchars='0'").select(&all, 6000).is_empty());
        // maxchars counts whole stanzas: room for two and a half keeps the newest two.
        let one = crate::to_xml(&all[0].message).chars().count();
        let fit = format!("maxchars='{}'", one * 5 / 2);
        assert_eq!(bodies(&q(&fit).select(&all, 6000)), ["m4", "m5"]);
        // Limits combine: the strictest wins.
        assert_eq!(
            bodies(&q(&format!("seconds='3' {fit}")).select(&all, 6000)),
            ["m4", "m5"]
        );
        assert_eq!(
            bodies(&q("seconds='1' maxstanzas='5'").select(&all, 6000)),
            ["m5"]
        );
        assert_eq!(q("maxstanzas='x'").select(&all, 6000).len(), 5);
        let forever = format!("seconds='{}'", u64::MAX);
        assert_eq!(q(&forever).select(&all, 6000).len(), 5);
        assert_eq!(HistoryQuery::parse(None).select(&all, 6000).len(), 5);
    }

    #[tokio::test]
    async fn memory_archive_keeps_the_last_messages_per_room() {
        let a = MemoryArchive::default();
        let r1 = BareJid::new("r1@muc").unwrap();
        let r2 = BareJid::new("r2@muc").unwrap();
        for i in 0..5 {
            a.store(&r1, entry(i, &format!("m{i}")), 3, false).await;
        }
        a.store(&r2, entry(0, "other"), 3, false).await;
        let all = HistoryQuery::default();
        assert_eq!(
            bodies(&a.history(&r1, &all, 3, false, 10).await),
            ["m2", "m3", "m4"]
        );
        // A room whose history length shrank shows only what it allows now.
        assert_eq!(bodies(&a.history(&r1, &all, 1, false, 10).await), ["m4"]);
        a.forget(&r1).await;
        assert!(a.history(&r1, &all, 3, false, 10).await.is_empty());
        assert_eq!(a.history(&r2, &all, 3, false, 10).await.len(), 1);
    }

    #[tokio::test]
    async fn retraction_and_moderation_take_messages_out_of_the_memory_history() {
        let a = MemoryArchive::default();
        let r = BareJid::new("r@muc").unwrap();
        let sent = |id: &str, by: &str, body: &str| {
            let mut e = entry(0, body);
            e.sender = BareJid::new(by).unwrap();
            xmppd_core::stanza::set_attr(&mut e.message, "id", id);
            e.message.append_child(xmppd_core::stanza::elem(
                "origin-id",
                NS_SID,
                &[("id", &format!("o-{id}"))],
            ));
            e
        };
        for (id, by, body) in [
            ("1", "a@x", "mine"),
            ("2", "b@x", "his"),
            ("3", "a@x", "spam"),
        ] {
            a.store(&r, sent(id, by, body), 10, false).await;
        }
        let req = |target: &str, by: &str, moderated: bool| RetractRequest {
            target: target.into(),
            sender: BareJid::new(by).unwrap(),
            id: None,
            moderation: moderated.then(|| Moderation {
                by: "r@muc/mod".into(),
                reason: None,
            }),
        };
        let left =
            || async { bodies(&a.history(&r, &HistoryQuery::default(), 10, false, 9).await) };
        // Someone else's message: refused, kept.
        let e = a
            .retract(&r, &req("2", "a@x", false), false)
            .await
            .unwrap_err();
        assert_eq!(e.condition, Condition::Forbidden);
        // An unknown id changes nothing; a moderator learns it is not there.
        a.retract(&r, &req("9", "a@x", false), false).await.unwrap();
        let e = a
            .retract(&r, &req("9", "m@x", true), false)
            .await
            .unwrap_err();
        assert_eq!(e.condition, Condition::ItemNotFound);
        assert_eq!(left().await, ["mine", "his", "spam"]);
        // The author by origin id, a moderator by id.
        a.retract(&r, &req("o-1", "a@x", false), false)
            .await
            .unwrap();
        a.retract(&r, &req("3", "m@x", true), false).await.unwrap();
        assert_eq!(left().await, ["his"]);
    }

    #[tokio::test]
    async fn memory_archive_keeps_a_bounded_number_of_bytes_per_room() {
        let r = BareJid::new("r@muc").unwrap();
        let size = xmppd_core::queue::element_size(&entry(0, &"x".repeat(1000)).message);
        let a = MemoryArchive::new(3 * size);
        for i in 0..5 {
            let body = format!("{i}{}", "x".repeat(999));
            a.store(&r, entry(i, &body), 50, false).await;
        }
        let kept = bodies(&a.history(&r, &HistoryQuery::default(), 50, false, 10).await);
        assert_eq!(
            kept.iter().map(|b| &b[..1]).collect::<Vec<_>>(),
            ["2", "3", "4"]
        );
        // Too large alone: not kept, and the rest stays.
        a.store(&r, entry(5, &"y".repeat(4 * size)), 50, false)
            .await;
        assert_eq!(
            a.history(&r, &HistoryQuery::default(), 50, false, 10)
                .await
                .len(),
            3
        );
    }
}
