//! Replays the committed `proxy_header` fuzz corpus, and seeded mutations of it, through the
//! oracle (`xmppd_realip::fuzzing::check`) on stable Rust.

#[path = "../../../fuzz/replay.rs"]
mod replay;

/// The pieces of both PROXY header versions and of the forwarding headers.
const TOKENS: &[&[u8]] = &[
    b"\r\n\r\n\0\r\nQUIT\n",
    b"\x21\x11\x00\x0c",
    b"\x21\x21\x00\x24",
    b"\x20\x00\x00\x00",
    b"PROXY ",
    b"TCP4 ",
    b"TCP6 ",
    b"UNKNOWN",
    b"\r\n",
    b" ",
    b"1.2.3.4",
    b"::1",
    b"65535",
    b",",
    b";",
    b"for=",
    b"\"",
    b"[",
    b"]:",
    b"10.0.0.9",
    b"unknown",
    b"_x",
];

#[test]
fn proxy_header_corpus_and_mutations_pass_the_oracle() {
    replay::replay_corpus("proxy_header", 20, 60, TOKENS, |data| {
        xmppd_realip::fuzzing::check(data);
    });
}

/// The seeds reach every end, so the oracle is not vacuously satisfied.
#[test]
fn seeds_reach_every_outcome() {
    use xmppd_realip::fuzzing::{check, Outcome::*};
    let outcome = |name: &str| check(&replay::seed("proxy_header", name));
    for (seed, expected) in [
        ("v2_tcp4_then_xml", Header),
        ("v2_tcp6_then_tls", Header),
        ("v2_tcp4_with_tlvs", Header),
        ("v2_local_health_check", Header),
        ("v2_unix", Header),
        ("v2_bad_version", Refused),
        ("v2_too_long", Refused),
        ("v2_truncated", Incomplete),
        ("v1_tcp4", Header),
        ("v1_tcp6", Header),
        ("v1_unknown", Header),
        ("v1_lf_only", Refused),
        ("v1_too_long", Refused),
        ("not_proxy_xml", Refused),
        ("xff_client_and_proxies", Forwarded),
        ("forwarded_v6_quoted", Forwarded),
    ] {
        assert_eq!(outcome(seed), expected, "{seed}");
    }
}
