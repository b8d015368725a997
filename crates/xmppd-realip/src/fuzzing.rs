//! The fuzzing oracle of the target `proxy_header` (`fuzz/`), which a stable test also runs
//! over the committed corpus (`fuzz/corpus/proxy_header/`).
//!
//! [`check`] takes the first byte as a switch: even, the rest is the start of a connection
//! from a trusted proxy, read as a PROXY header; odd, the rest is the value of an
//! `X-Forwarded-For` (bit 1 clear) or `Forwarded` (bit 1 set) header on a request from a
//! trusted proxy. It panics unless:
//! - nothing panics;
//! - reading the header the way `read_proxy_header` does (each time exactly the bytes
//!   [`parse`] asks for) never asks for fewer bytes than it has, takes exactly the header, and
//!   ends as parsing everything at once does (or waits for more where that already refuses);
//! - a version 2 header is taken exactly when a model of §2.2 written apart from the parser
//!   says it is valid, with the length it gives and, for TCP over IPv4, the address it names;
//! - a header taken, written again as version 1 and as version 2, reads back the same;
//! - a forwarded address comes from a trusted proxy's word only: a trusted hop appended on
//!   the right changes nothing (or names itself, when nothing else was taken), and an address
//!   prepended to the left of an untrusted client is never taken instead.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::forwarded::{client_addr, ForwardedHeader};
use crate::proxy_header::{parse, Parsed, MAX_HEADER_BYTES, V2_SIGNATURE};
use crate::Network;

/// How far an input got, so that tests can tell that the corpus reaches every end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Refused,
    Incomplete,
    Header,
    Forwarded,
}

/// Runs the oracle on one input; panics on a violation.
pub fn check(data: &[u8]) -> Outcome {
    match data.split_first() {
        None => Outcome::Incomplete,
        Some((switch, rest)) if switch & 1 == 0 => check_header(rest),
        Some((switch, rest)) => {
            let header = match switch & 2 {
                0 => ForwardedHeader::XForwardedFor,
                _ => ForwardedHeader::Forwarded,
            };
            check_forwarded(header, rest);
            Outcome::Forwarded
        }
    }
}

fn check_header(data: &[u8]) -> Outcome {
    let whole = parse(data);
    // As the reader does: exactly what is asked for, never more.
    let mut have = 0;
    let stepwise = loop {
        match parse(&data[..have]) {
            Ok(Parsed::Need(n)) => {
                assert!(n > have, "asked for {n} bytes with {have}");
                if n > data.len() {
                    break None;
                }
                have = n;
            }
            Ok(Parsed::Done(header, used)) => {
                assert_eq!(used, have, "the reader read past the header");
                break Some(Ok(Parsed::Done(header, used)));
            }
            Err(e) => break Some(Err(e)),
        }
    };
    match stepwise {
        Some(end) => assert_eq!(end, whole, "reading by parts ends differently"),
        // The reader waits for more; the bytes at hand may already show there is no header,
        // but never a whole one (the reader would have asked past its end).
        None => assert!(!matches!(whole, Ok(Parsed::Done(..))), "{whole:?}"),
    }
    check_v2_model(data, &whole);
    match whole {
        Ok(Parsed::Done(header, _)) => {
            for again in [header.to_v1(), header.to_v2()] {
                assert_eq!(parse(&again), Ok(Parsed::Done(header, again.len())));
            }
            Outcome::Header
        }
        Ok(Parsed::Need(_)) => Outcome::Incomplete,
        Err(_) => Outcome::Refused,
    }
}

fn check_v2_model(data: &[u8], whole: &Result<Parsed, crate::HeaderError>) {
    if data.len() < 16 || data[..12] != V2_SIGNATURE {
        return;
    }
    let (ver_cmd, fam) = (data[12], data[13]);
    let total = 16 + ((data[14] as usize) << 8 | data[15] as usize);
    let addresses = [0, 12, 36, 216].get(usize::from(fam >> 4)).copied();
    let valid = (ver_cmd == 0x20 || ver_cmd == 0x21)
        && fam & 0x0f <= 2
        && total <= MAX_HEADER_BYTES
        && addresses.is_some_and(|a| total - 16 >= a);
    match whole {
        Ok(Parsed::Done(header, used)) => {
            assert!(valid, "an invalid header was taken");
            assert_eq!(*used, total);
            if ver_cmd == 0x21 && fam >> 4 == 1 {
                let ip = Ipv4Addr::new(data[16], data[17], data[18], data[19]);
                let port = u16::from_be_bytes([data[24], data[25]]);
                assert_eq!(header.source, Some(SocketAddr::new(IpAddr::V4(ip), port)));
            } else if ver_cmd == 0x20 || fam >> 4 == 0 || fam >> 4 == 3 {
                assert_eq!(header.source, None);
            }
        }
        Ok(Parsed::Need(n)) => assert!(valid && *n == total && data.len() < total),
        Err(_) => assert!(!valid, "a valid header was refused"),
    }
}

fn check_forwarded(header: ForwardedHeader, value: &[u8]) {
    let peer = SocketAddr::from(([10, 0, 0, 5], 40000));
    let trusted: Vec<Network> = ["10.0.0.0/8"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    let got = client_addr(peer, &trusted, header, [value]);
    let untrusted = SocketAddr::from(([198, 51, 100, 1], 1));
    assert_eq!(client_addr(untrusted, &trusted, header, [value]), untrusted);
    // Quotes and escapes may swallow what is added around the value.
    if value.contains(&b'"') || value.contains(&b'\\') || std::str::from_utf8(value).is_err() {
        return;
    }
    let (hop, left) = match header {
        ForwardedHeader::XForwardedFor => ("10.9.9.9", "192.0.2.1"),
        ForwardedHeader::Forwarded => ("for=10.9.9.9", "for=192.0.2.1"),
    };
    let appended = [value, b", ", hop.as_bytes()].concat();
    let with_hop = client_addr(peer, &trusted, header, [appended.as_slice()]);
    let named_itself = got == peer && with_hop.ip() == IpAddr::from([10, 9, 9, 9]);
    assert!(
        with_hop == got || named_itself,
        "a trusted hop on the right changed the client"
    );
    if got != peer && !crate::listed(&trusted, got.ip()) {
        let prepended = [left.as_bytes(), b", ", value].concat();
        let spoofed = client_addr(peer, &trusted, header, [prepended.as_slice()]);
        assert_eq!(spoofed, got, "an address left of the client was taken");
    }
}
