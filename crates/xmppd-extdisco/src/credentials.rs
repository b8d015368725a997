//! Time-limited TURN credentials, as TURN servers check them without a user database
//! ("A REST API for access to TURN services", draft-uberti-behave-turn-rest-00 §2.2):
//! the username is `expiry:user` (the expiry in seconds since the Unix epoch), the password
//! the base64 of HMAC-SHA1 of that username under the secret shared with the TURN server.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// A username and password a TURN server accepts until `expiry` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    pub username: String,
    pub password: String,
    pub expiry: u64,
}

/// The credentials of `user` valid until `expiry`, under `secret`.
pub fn turn_credentials(secret: &str, user: &str, expiry: u64) -> TurnCredentials {
    let username = format!("{expiry}:{user}");
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    TurnCredentials {
        username,
        password,
        expiry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A known answer, computed independently of this code (Python's `hmac`):
    /// base64(HMAC-SHA1("north", "1334353187:alice@example.org")).
    #[test]
    fn password_is_base64_hmac_sha1_of_the_username() {
        let c = turn_credentials("north", "alice@example.org", 1_334_353_187);
        assert_eq!(c.username, "1334353187:alice@example.org");
        assert_eq!(c.password, "Yb9mHt6cYKVYUEWqcEgHjf0hPts=");
    }

    #[test]
    fn username_is_expiry_colon_user() {
        let c = turn_credentials("s3cret", "alice@example.org", 1_700_000_000);
        assert_eq!(c.username, "1700000000:alice@example.org");
        assert_eq!(c.expiry, 1_700_000_000);
        assert_ne!(
            c.password,
            turn_credentials("other", "alice@example.org", 1_700_000_000).password
        );
    }
}
