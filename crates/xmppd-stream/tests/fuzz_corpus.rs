//! Replays the committed `stream_framer` fuzz corpus through the fuzzing oracle on stable Rust,
//! under every chunk size a corpus file could select, plus seeded random mutations of each
//! file: a smoke run of the fuzz target that CI can afford.

#[path = "../../../fuzz/replay.rs"]
mod replay;

use xmppd_stream::fuzzing::check;

/// Bytes that make mutations hit the XML grammar rather than only text.
const XML_TOKENS: &[&[u8]] = &[
    b"<", b">", b"/", b"=", b"'", b"\"", b"&", b";", b":", b"x", b" ", b"\n", b"?", b"!", b"-",
    b"[",
];

#[test]
fn corpus_passes_the_oracle_at_every_chunk_size() {
    for (name, data) in replay::corpus("stream_framer", 5) {
        let Some((_, stream)) = data.split_first() else {
            continue;
        };
        for chunk in [0u8, 1, 2, 3, 7, 16, 64, 255] {
            let input = [&[chunk], stream].concat();
            replay::replay(&format!("{name} with chunk size {chunk}"), &input, check);
        }
    }
}

#[test]
fn mutated_corpus_passes_the_oracle() {
    replay::replay_corpus("stream_framer", 5, 20, XML_TOKENS, check);
}
