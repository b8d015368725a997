//! Drives the client negotiation machine with a scripted sequence of events; the oracle is
//! `xmppd_negotiation::fuzzing::check`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xmppd_negotiation::fuzzing::check(data));
