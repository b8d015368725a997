//! Replays the committed `config` fuzz corpus, and seeded mutations of it, through the
//! configuration oracle (`xmppd_config::fuzzing::check`) on stable Rust.

#[path = "../../../fuzz/replay.rs"]
mod replay;

use xmppd_config::fuzzing::{check, Outcome};

/// TOML punctuation, escapes, and values the validator normalises.
const TOKENS: &[&[u8]] = &[
    b"[",
    b"]",
    b"[[",
    b"]]",
    b"=",
    b"\"",
    b"'",
    b"\"\"\"",
    b"\n",
    b"\r\n",
    b"#",
    b".",
    b",",
    b"{",
    b"}",
    b"\\n",
    b"\\r",
    b"\\u2028",
    b"\\u0085",
    b"{host}",
    b"0",
    b"-1",
    b"true",
    b"[server]\n",
    b"[c2s]\n",
    b"[muc]\n",
    b"[ldap]\n",
    b"[pubsub]\n",
    b"[proxy65]\n",
    b"[upload]\n",
    b"[[extdisco.service]]\n",
    b"[auth.hosts]\n",
    b"hosts = ",
    b"\"Cargo.toml\"",
    b"\"127.0.0.1:5222\"",
    b"\"[::1]:0\"",
    b"ldaps://",
    "\u{2028}".as_bytes(),
];

#[test]
fn config_corpus_and_mutations_pass_the_oracle() {
    replay::replay_corpus("config", 20, 30, TOKENS, |data| {
        check(data);
    });
}

/// The seeds load and fail, so the oracle is not vacuously satisfied.
#[test]
fn seeds_reach_both_outcomes() {
    let outcome = |name: &str| check(&replay::seed("config", name));
    for seed in [
        "empty",
        "example",
        "everything",
        "host_twice_in_muc_domain",
        "services",
        "proxy_public_host",
    ] {
        assert_eq!(outcome(seed), Outcome::Loaded, "{seed}");
    }
    for seed in ["syntax_error", "unknown_key", "auth_host_with_newline"] {
        assert_eq!(outcome(seed), Outcome::Refused, "{seed}");
    }
}
