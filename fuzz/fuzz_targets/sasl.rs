//! Fuzzes the SCRAM server state machine and the PLAIN parser; the input format and the oracle
//! are `xmppd_sasl::fuzzing::check` (documented there), which CI also replays over the corpus.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xmppd_sasl::fuzzing::check(data);
});
