//! Fuzzes what proxies send before a client's bytes (PROXY protocol headers) and the
//! forwarding headers of HTTP requests; the oracle is `xmppd_realip::fuzzing::check`
//! (documented there), which CI also replays over the corpus.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xmppd_realip::fuzzing::check(data);
});
