//! Replays the committed `negotiation` fuzz corpus, and seeded mutations of it, through the
//! negotiation oracle (`xmppd_negotiation::fuzzing::check`) on stable Rust.

#[path = "../../../fuzz/replay.rs"]
mod replay;

use xmppd_negotiation::fuzzing::{check, Reached};

/// Steps of the script format: answers to a pending request, headers, the TLS step, `<auth/>`
/// with PLAIN and SCRAM payloads, responses, binds and registration IQs.
const TOKENS: &[&[u8]] = &[
    b"\x80",
    b"\x81",
    b"\x82",
    b"\x83",
    b"\x87",
    b"\x00\x00",
    b"\x09\x01",
    b"\x09\x03",
    b"\x01",
    b"\x02\x00\x00",
    b"\x02\x02\x03",
    b"\x02\x04\x05",
    b"\x02\x02\x04",
    b"\x03\x03",
    b"\x04",
    b"\x05\x02",
    b"\x05\x04",
    b"\x05\x00",
    b"\x07",
    b"\x0f\x00",
];

#[test]
fn negotiation_corpus_and_mutations_pass_the_oracle() {
    replay::replay_corpus("negotiation", 13, 200, TOKENS, |data| {
        check(data);
    });
}

/// The login seeds still reach what they were written for: a script that no longer gets past
/// its first steps would fuzz nothing behind them.
#[test]
fn login_seeds_reach_their_goal() {
    let reached = |name: &str| check(&replay::seed("negotiation", name));
    let bound = Reached {
        tls: true,
        authenticated: true,
        bound: true,
    };
    assert_eq!(reached("plain_login_direct"), bound);
    assert_eq!(reached("bind_refused_then_bound"), bound);
    assert_eq!(
        reached("clear_text"),
        Reached::default(),
        "no login without TLS"
    );
    assert!(reached("registration").tls);
    assert!(!reached("wrong_password_backoff").authenticated);
}
