//! Drives the client negotiation machine with a scripted sequence of events; the oracle is
//! `xmppd_negotiation::fuzzing::check`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // What the script reached matters to the corpus replay test, not here.
    xmppd_negotiation::fuzzing::check(data);
});
