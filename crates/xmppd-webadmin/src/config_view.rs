//! The configuration as the web admin shows it: the file the server started with, its secrets
//! hidden.
//!
//! Hidden are the values of keys that name a secret (`password`, `secret`, `token`, `psk`,
//! `private` in their name; not `…_file` keys, which hold where a secret is, not the secret),
//! and, in any string, a URL's password (`scheme://user:PASSWORD@host`) and a connection
//! string's `password=…`. The rest is shown as written (re-serialised), since an
//! administrator reads it to know what the server runs with.

/// What replaces a hidden value.
pub const HIDDEN: &str = "(hidden)";

/// `text` (a TOML document) with its secrets hidden, re-serialised; an explanation when it
/// does not parse (it did at start, but the file may have changed since).
pub fn redacted(text: &str) -> String {
    match text.parse::<toml::Table>() {
        Ok(mut table) => {
            redact_table(&mut table);
            toml::to_string_pretty(&table).unwrap_or_else(|e| format!("# cannot show: {e}\n"))
        }
        Err(_) => "# the configuration file no longer parses; it is not shown\n".to_owned(),
    }
}

fn secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    !key.ends_with("_file")
        && ["password", "secret", "token", "psk", "private"]
            .iter()
            .any(|s| key.contains(s))
}

fn redact_table(table: &mut toml::Table) {
    for (key, value) in table.iter_mut() {
        if secret_key(key) && !matches!(value, toml::Value::Table(_) | toml::Value::Array(_)) {
            *value = toml::Value::String(HIDDEN.into());
        } else {
            redact_value(value, secret_key(key));
        }
    }
}

fn redact_value(value: &mut toml::Value, secret: bool) {
    match value {
        toml::Value::String(s) if secret => *s = HIDDEN.into(),
        toml::Value::String(s) => *s = redact_string(s),
        toml::Value::Array(items) => items.iter_mut().for_each(|v| redact_value(v, secret)),
        toml::Value::Table(t) => redact_table(t),
        _ if secret => *value = toml::Value::String(HIDDEN.into()),
        _ => {}
    }
}

/// `s` with a URL's password and any `password=` value hidden.
pub fn redact_string(s: &str) -> String {
    let mut out = s.to_owned();
    // scheme://user:password@host
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let authority_end = out[start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..authority_end].rfind('@').map(|i| start + i) {
            if let Some(colon) = out[start..at].find(':').map(|i| start + i) {
                out.replace_range(colon + 1..at, HIDDEN);
            }
        }
    }
    // password=… in a query or a key=value connection string, up to the next separator.
    let mut from = 0;
    while let Some(i) = out[from..].to_ascii_lowercase().find("password=") {
        let value_start = from + i + "password=".len();
        let value_end = out[value_start..]
            .find(['&', ' ', ';'])
            .map_or(out.len(), |j| value_start + j);
        out.replace_range(value_start..value_end, HIDDEN);
        from = value_start + HIDDEN.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hidden_and_the_rest_shown() {
        let text = r#"
[server]
hosts = ["example.org"]
[storage]
backend = "postgres"
url = "postgres://xmppd:pg-secret-1@db.example.org/xmppd?sslmode=require&password=pg-secret-2"
password_file = "/etc/xmppd/pg-password"
[directory]
bind_password = "ldap-secret"
[upload]
secret = "upload-secret"
external_secret = "ext-secret"
[extdisco]
credentials_ttl_secs = 3600
[[extdisco.services]]
host = "turn.example.org"
secret = "turn-secret"
[other]
tokens = ["t1", "t2"]
api_token = 42
conn = "host=db user=x password=kv-secret sslmode=disable"
"#;
        let shown = redacted(text);
        for secret in [
            "pg-secret-1",
            "pg-secret-2",
            "ldap-secret",
            "upload-secret",
            "ext-secret",
            "turn-secret",
            "t1",
            "42",
            "kv-secret",
        ] {
            assert!(!shown.contains(secret), "{secret} shown in:\n{shown}");
        }
        for kept in [
            "example.org",
            "postgres://xmppd:(hidden)@db.example.org/xmppd",
            "sslmode=require",
            "/etc/xmppd/pg-password",
            "credentials_ttl_secs = 3600",
            "turn.example.org",
            "sslmode=disable",
        ] {
            assert!(shown.contains(kept), "{kept} missing from:\n{shown}");
        }
    }

    #[test]
    fn strings_without_secrets_are_unchanged() {
        for s in [
            "https://example.org/x?a=b",
            "user@example.org",
            "https://user@example.org/",
            "",
            "password",
        ] {
            assert_eq!(redact_string(s), s);
        }
        assert_eq!(
            redact_string("https://u:p@h:1/a@b"),
            "https://u:(hidden)@h:1/a@b"
        );
        assert_eq!(
            redact_string("PASSWORD=x&password=y"),
            "PASSWORD=(hidden)&password=(hidden)"
        );
    }

    #[test]
    fn a_file_that_no_longer_parses_is_not_shown() {
        assert!(!redacted("secret = \"abc").contains("abc"));
    }
}
