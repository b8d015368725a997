//! Fuzzes the stream framer with arbitrary bytes in arbitrary chunkings; the oracle is
//! `xmppd_stream::fuzzing::check` (documented there), which CI also replays over the corpus.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xmppd_stream::fuzzing::check(data));
