//! Fuzzes the configuration loader with arbitrary TOML text; the oracle is
//! `xmppd_config::fuzzing::check` (documented there), which CI also replays over the corpus.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xmppd_config::fuzzing::check(data);
});
