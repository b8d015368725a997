//! Fuzzes how the core reads addresses from peers (`to`, SASL authcid, requested resource); the
//! oracle is `xmppd_core::fuzzing::check_jid` (documented there), which CI also replays over the
//! corpus.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xmppd_core::fuzzing::check_jid(data));
