//! What the archive's engines share: the SQL of a query, built once with `?` placeholders
//! (PostgreSQL numbers them, [`numbered`]; each engine brings its full-text condition), the ids
//! a query names, the page made of its rows, the oldest rows that free enough bytes, and, for
//! the engines on a database server, the text an archived stanza gives the full-text index.

use minidom::Element;

use crate::store::{Archived, Direction, NewMessage, Page, PageRequest, Paging};

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
}

/// Rows read per round trip while looking for what a retraction names, newest first.
pub(crate) const FIND_CHUNK: i64 = 200;

/// Rows of an archive from before its text was indexed (copied by `xmppd migrate`) indexed
/// per transaction at start-up.
pub(crate) const BACKFILL_BATCH: i64 = 2_000;

/// The first and the last message of an archive (`owner` three times): none, one or two rows.
pub(crate) const BOUNDS: &str = "SELECT id, stamp_ms FROM mam_messages WHERE owner = ? AND id IN (
     (SELECT MIN(id) FROM mam_messages WHERE owner = ?),
     (SELECT MAX(id) FROM mam_messages WHERE owner = ?)) ORDER BY id";

/// A chunk of the messages that may be what a retraction names, newest first: owner,
/// with_bare, direction, the needle the stanza contains, below which id, how many.
pub(crate) const FIND_LATEST: &str = "SELECT id, stanza FROM mam_messages
     WHERE owner = ? AND with_bare = ? AND direction = ? AND POSITION(? IN stanza) > 0
       AND id < ?
     ORDER BY id DESC LIMIT ?";

/// The highest id of the oldest messages (`(id, bytes)` in id order) that together free
/// `excess` bytes, or all of them when they do not; none when there are none.
pub(crate) fn oldest_to_free(
    sizes: impl IntoIterator<Item = (i64, i64)>,
    excess: u64,
) -> Option<i64> {
    let (mut freed, mut upto) = (0u64, None);
    for (id, bytes) in sizes {
        upto = Some(id);
        freed += u64::try_from(bytes).unwrap_or(0);
        if freed >= excess {
            break;
        }
    }
    upto
}

/// The text the full-text index keeps for `msg`: its body, unless it is a tombstone or has
/// none (then `""`: nothing to find, and indexed).
pub(crate) fn index_text(msg: &NewMessage) -> &str {
    msg.text
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or("")
}

/// The text to index for an archived stanza read back (an archive copied without its index).
pub(crate) fn stanza_text(stanza: &str) -> String {
    stanza
        .parse::<Element>()
        .ok()
        .filter(|m| !crate::retract::is_tombstone(m))
        .and_then(|m| crate::policy::body(&m))
        .unwrap_or_default()
}

/// Every id `req` names (RSM `after`/`before`, `after-id`, `before-id`, `ids`), each once:
/// all must be in the owner's archive, or the query is answered `item-not-found`.
pub(crate) fn named_ids(req: &PageRequest) -> Vec<i64> {
    let f = &req.filter;
    let mut named = Vec::new();
    named.extend(f.after_id);
    named.extend(f.before_id);
    named.extend(f.ids.iter().flatten().copied());
    match req.paging {
        Paging::Forward { after: Some(id) } | Paging::Backward { before: Some(id) } => {
            named.push(id)
        }
        _ => {}
    }
    named.sort_unstable();
    named.dedup();
    named
}

/// `SELECT COUNT(*)` of the rows of `owner` among `ids`, with its arguments.
pub(crate) fn count_ids(owner: &str, ids: &[i64]) -> (String, Vec<Arg>) {
    let mut sql = String::from("SELECT COUNT(*) FROM mam_messages WHERE owner = ? AND id IN (");
    let mut args = vec![Arg::Text(owner.to_owned())];
    for (i, id) in ids.iter().enumerate() {
        sql.push_str(if i == 0 { "?" } else { ", ?" });
        args.push(Arg::Int(*id));
    }
    sql.push(')');
    (sql, args)
}

/// The SELECT of one page of `owner`'s archive (`id, stamp_ms, direction, stanza`), one row
/// more than the page holds: whether it comes tells whether the page completes the set.
/// `fulltext` gives the engine's condition for the query's `fulltext` field (with `?`
/// placeholders) and its arguments; `None` leaves the field out (no term in it).
pub(crate) fn page_query(
    owner: &str,
    req: &PageRequest,
    fulltext: impl FnOnce(&str) -> Option<(String, Vec<Arg>)>,
) -> (String, Vec<Arg>) {
    let f = &req.filter;
    let mut sql =
        String::from("SELECT id, stamp_ms, direction, stanza FROM mam_messages WHERE owner = ?");
    let mut args = vec![Arg::Text(owner.to_owned())];
    let mut cond = |clause: &str, v: Arg| {
        sql.push_str(clause);
        args.push(v);
    };
    if let Some(w) = &f.with {
        cond(" AND with_bare = ?", Arg::Text(w.bare.clone()));
        if let Some(r) = &w.resource {
            cond(" AND with_resource = ?", Arg::Text(r.clone()));
        }
    }
    if let Some(v) = f.start_ms {
        cond(" AND stamp_ms >= ?", Arg::Int(v));
    }
    if let Some(v) = f.end_ms {
        cond(" AND stamp_ms <= ?", Arg::Int(v));
    }
    if let Some(v) = f.after_id {
        cond(" AND id > ?", Arg::Int(v));
    }
    if let Some(v) = f.before_id {
        cond(" AND id < ?", Arg::Int(v));
    }
    match req.paging {
        Paging::Forward { after: Some(v) } => cond(" AND id > ?", Arg::Int(v)),
        Paging::Backward { before: Some(v) } => cond(" AND id < ?", Arg::Int(v)),
        _ => {}
    }
    if let Some(ids) = &f.ids {
        sql.push_str(" AND id IN (");
        for (i, id) in ids.iter().enumerate() {
            sql.push_str(if i == 0 { "?" } else { ", ?" });
            args.push(Arg::Int(*id));
        }
        sql.push(')');
    }
    let text = f.fulltext.as_deref().filter(|t| !t.trim().is_empty());
    if let Some((clause, more)) = text.and_then(fulltext) {
        sql.push_str(" AND ");
        sql.push_str(&clause);
        args.extend(more);
    }
    let backward = matches!(req.paging, Paging::Backward { .. });
    sql.push_str(if backward {
        " ORDER BY id DESC LIMIT ?"
    } else {
        " ORDER BY id ASC LIMIT ?"
    });
    args.push(Arg::Int(
        i64::try_from(req.max.saturating_add(1)).unwrap_or(i64::MAX),
    ));
    (sql, args)
}

/// The page of `rows` (as [`page_query`] selected them) for `req`.
pub(crate) fn page_of(req: &PageRequest, rows: Vec<(i64, i64, i64, String)>) -> Page {
    let mut items: Vec<Archived> = rows
        .into_iter()
        .map(|(id, stamp_ms, direction, stanza)| Archived {
            id,
            stamp_ms,
            direction: Direction::from_i64(direction),
            stanza,
        })
        .collect();
    let complete = items.len() <= req.max;
    items.truncate(req.max);
    if matches!(req.paging, Paging::Backward { .. }) {
        items.reverse();
    }
    Page { items, complete }
}

/// `sql` with its `?` placeholders numbered `$1`, `$2`, … (PostgreSQL's); the SQL built here
/// has no `?` anywhere else.
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Filter;

    #[test]
    fn placeholders_are_numbered_in_order() {
        let req = PageRequest {
            filter: Filter {
                start_ms: Some(5),
                ids: Some(vec![1, 2]),
                fulltext: Some("x".into()),
                ..Default::default()
            },
            paging: Paging::Backward { before: None },
            max: 3,
        };
        let (sql, args) = page_query("o@x", &req, |t| {
            Some(("f(?)".into(), vec![Arg::Text(t.into())]))
        });
        assert_eq!(
            numbered(&sql),
            "SELECT id, stamp_ms, direction, stanza FROM mam_messages WHERE owner = $1 \
             AND stamp_ms >= $2 AND id IN ($3, $4) AND f($5) ORDER BY id DESC LIMIT $6"
        );
        assert_eq!(args.len(), 6);
        assert_eq!(args[5], Arg::Int(4));
    }
}
