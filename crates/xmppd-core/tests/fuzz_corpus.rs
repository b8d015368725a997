//! Replays the committed `jid` fuzz corpus, and seeded mutations of it, through the address
//! oracle (`xmppd_core::fuzzing::check_jid`) on stable Rust.

#[path = "../../../fuzz/replay.rs"]
mod replay;

/// Separators, case, dots of other scripts, characters that preparation maps or refuses.
const TOKENS: &[&[u8]] = &[
    b"@",
    b"/",
    b".",
    b"\n",
    b" ",
    b"\t",
    b"A",
    b"xn--",
    b"[::1]",
    b"127.0.0.1",
    "\u{ff0e}".as_bytes(),
    "\u{3002}".as_bytes(),
    "\u{ff20}".as_bytes(),
    "\u{ff0f}".as_bytes(),
    "\u{ad}".as_bytes(),
    "\u{a0}".as_bytes(),
    "\u{df}".as_bytes(),
    "\u{130}".as_bytes(),
    "\u{2168}".as_bytes(),
    "\u{5d0}".as_bytes(),
    "\u{200d}".as_bytes(),
    "\u{fb01}".as_bytes(),
];

#[test]
fn jid_corpus_and_mutations_pass_the_oracle() {
    replay::replay_corpus("jid", 10, 50, TOKENS, xmppd_core::fuzzing::check_jid);
}
