//! Who is logged in: random session ids kept server-side with their expiry, each with its own
//! CSRF token, and the cookie that carries the id.
//!
//! The id is 256 random bits, base64url; the browser holds it in a cookie that scripts cannot
//! read (`HttpOnly`), that other sites' requests do not carry (`SameSite=Strict`), that is
//! sent only under `/admin`, and only over TLS when the listener is TLS or behind a TLS proxy
//! (`Secure`). A session ends at logout, after [`IDLE`] without a request, or [`LIFETIME`]
//! after login, whichever comes first.
//!
//! Every form carries the session's CSRF token in a hidden field and every POST must give it
//! back (compared in constant time): a page elsewhere cannot read it, so it cannot make the
//! administrator's browser post a form that passes, even where `SameSite` is not honoured.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use jid::BareJid;
use rand::RngCore;
use subtle::ConstantTimeEq;

/// A session not used for this long ends.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after login, used or not.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; beyond it the oldest is dropped, so logins cannot grow the table.
const MAX_SESSIONS: usize = 1000;

/// The cookie holding the session id.
pub const COOKIE: &str = "xmppd_admin";
/// The cookie holding the login form's token (double submit: the login form has no session).
pub const LOGIN_COOKIE: &str = "xmppd_admin_login";

/// 256 random bits, base64url without padding.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether a token given back equals the expected one; constant time, so that the answer's
/// timing does not tell how much of a guess was right.
pub fn token_matches(given: Option<&str>, expected: &str) -> bool {
    match given {
        Some(g) => !expected.is_empty() && bool::from(g.as_bytes().ct_eq(expected.as_bytes())),
        None => false,
    }
}

/// One logged-in administrator.
#[derive(Debug, Clone)]
pub struct Session {
    pub admin: BareJid,
    /// The token every form of this session carries.
    pub csrf: String,
    /// What the last action did, shown once on the next page: (is an error, text).
    pub flash: Option<(bool, String)>,
    created: Instant,
    last: Instant,
}

impl Session {
    fn live(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) < IDLE
            && now.saturating_duration_since(self.created) < LIFETIME
    }
}

/// The sessions of the web admin, by id.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for `admin`; returns its id.
    pub fn open(&self, admin: BareJid, now: Instant) -> String {
        let id = random_token();
        let mut map = self.lock();
        map.retain(|_, s| s.live(now));
        if map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
        let session = Session {
            admin,
            csrf: random_token(),
            flash: None,
            created: now,
            last: now,
        };
        map.insert(id.clone(), session);
        id
    }

    /// The live session of `id`, touched (its idle time starts again), its flash taken.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let mut map = self.lock();
        let session = map.get_mut(id)?;
        if !session.live(now) {
            map.remove(id);
            return None;
        }
        session.last = now;
        let copy = session.clone();
        session.flash = None;
        Some(copy)
    }

    /// Leaves a message for the session's next page.
    pub fn flash(&self, id: &str, error: bool, text: String) {
        if let Some(s) = self.lock().get_mut(id) {
            s.flash = Some((error, text));
        }
    }

    /// Ends the session of `id` (logout).
    pub fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Ends every session of `admin` (its account was removed or disabled).
    pub fn close_all_of(&self, admin: &BareJid) {
        self.lock().retain(|_, s| s.admin != *admin);
    }
}

/// The value of cookie `name` in a `Cookie` header (RFC 6265 §4.2.1: `a=b; c=d`).
pub fn cookie<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// The `Set-Cookie` value for cookie `name` (RFC 6265 §4.1): `value` for `max_age`, or the
/// cookie removed when `max_age` is zero.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    let mut c = format!(
        "{name}={value}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}",
        max_age.as_secs()
    );
    if secure {
        c.push_str("; Secure");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> BareJid {
        s.parse().unwrap()
    }

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn csrf_tokens_match_only_exactly() {
        let t = random_token();
        assert!(token_matches(Some(&t), &t));
        assert!(!token_matches(None, &t));
        assert!(!token_matches(Some(""), &t));
        assert!(!token_matches(Some(&t[..42]), &t));
        assert!(!token_matches(Some(&format!("{t}x")), &t));
        assert!(
            !token_matches(Some(""), ""),
            "an empty expected token never matches"
        );
    }

    #[test]
    fn sessions_expire_when_idle_or_old_and_end_at_logout() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let id = sessions.open(jid("admin@example.org"), t0);
        let s = sessions.get(&id, t0).unwrap();
        assert_eq!(s.admin, jid("admin@example.org"));
        assert!(sessions.get("someone-else", t0).is_none());
        // Used every 20 minutes it lives on, up to its lifetime.
        let mut t = t0;
        while t + Duration::from_secs(20 * 60) < t0 + LIFETIME {
            t += Duration::from_secs(20 * 60);
            assert!(sessions.get(&id, t).is_some(), "{:?}", t - t0);
        }
        assert!(sessions.get(&id, t0 + LIFETIME).is_none());
        // Idle too long.
        let id = sessions.open(jid("admin@example.org"), t0);
        assert!(sessions.get(&id, t0 + IDLE).is_none());
        // Logout.
        let id = sessions.open(jid("admin@example.org"), t0);
        sessions.close(&id);
        assert!(sessions.get(&id, t0).is_none());
    }

    #[test]
    fn each_session_has_its_own_csrf_token_and_flash_shows_once() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let a = sessions.open(jid("a@example.org"), now);
        let b = sessions.open(jid("b@example.org"), now);
        let (sa, sb) = (
            sessions.get(&a, now).unwrap(),
            sessions.get(&b, now).unwrap(),
        );
        assert_ne!(sa.csrf, sb.csrf);
        assert_ne!(a, sa.csrf, "the token is not the session id");
        sessions.flash(&a, false, "done".into());
        assert_eq!(
            sessions.get(&a, now).unwrap().flash,
            Some((false, "done".into()))
        );
        assert_eq!(sessions.get(&a, now).unwrap().flash, None);
        sessions.close_all_of(&jid("a@example.org"));
        assert!(sessions.get(&a, now).is_none() && sessions.get(&b, now).is_some());
    }

    #[test]
    fn the_table_is_bounded() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let first = sessions.open(jid("a@example.org"), now);
        for i in 0..MAX_SESSIONS {
            sessions.open(
                jid("a@example.org"),
                now + Duration::from_millis(i as u64 + 1),
            );
        }
        assert_eq!(sessions.lock().len(), MAX_SESSIONS);
        assert!(sessions.get(&first, now).is_none(), "the oldest went");
    }

    #[test]
    fn cookies_are_read_and_written_with_their_attributes() {
        let h = "other=1; xmppd_admin=abc-_; xmppd_admin_login=\"zz\"";
        assert_eq!(cookie(h, COOKIE), Some("abc-_"));
        assert_eq!(cookie(h, LOGIN_COOKIE), Some("zz"));
        assert_eq!(cookie(h, "missing"), None);
        assert_eq!(cookie("xmppd_admin_x=1", COOKIE), None);
        let plain = set_cookie(COOKIE, "v", IDLE, false);
        assert_eq!(
            plain,
            "xmppd_admin=v; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=1800"
        );
        assert!(set_cookie(COOKIE, "v", IDLE, true).ends_with("; Secure"));
        assert!(set_cookie(COOKIE, "", Duration::ZERO, false).contains("Max-Age=0"));
    }
}
