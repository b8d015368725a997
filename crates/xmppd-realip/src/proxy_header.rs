//! The PROXY protocol header (HAProxy's "PROXY protocol" specification, versions 1 and 2):
//! what a proxy or load balancer that passes a connection through sends before the client's
//! first byte, naming the client's address.
//!
//! [`parse`] works on the bytes read so far and says how many more it needs without ever asking
//! for a byte past the header's end, so [`read_proxy_header`] leaves what follows (the TLS
//! handshake, the XML stream, the HTTP request) unread on the connection. Only connections
//! from configured proxies are read this way: the header is how they say who the client is,
//! and from anybody else it would be a lie.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

#[cfg(feature = "io")]
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    time::Instant,
};

/// The 12 bytes that open a version 2 header (§2.2).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// §2.1: a version 1 line is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// The shortest header of either version: `PROXY UNKNOWN\r\n`. Reading this much first
/// never reads past a header.
const MIN_HEADER: usize = 15;
/// The largest version 2 header accepted (the fixed 16 bytes, the addresses and the TLVs).
/// The specification allows 64 KiB of TLVs; what proxies send (a few TLVs of tens of bytes)
/// fits many times over, and nothing more is held per connection before it is known.
pub const MAX_HEADER_BYTES: usize = 4096;

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client's address, when the proxy relays a TCP connection over IPv4 or IPv6.
    /// `None`: the proxy speaks for itself (version 2 `LOCAL`, a health check) or does not
    /// know (`UNKNOWN`, `AF_UNSPEC`, a Unix socket): the connection's own address stands (§2.1,
    /// §2.2).
    pub source: Option<SocketAddr>,
    /// The address the client connected to, on the proxy.
    pub destination: Option<SocketAddr>,
}

impl ProxyHeader {
    /// The version 2 header a proxy sends for this connection (`PROXY` over TCP, or `LOCAL`
    /// without a source). Mixed address families cannot be written: then `LOCAL`.
    pub fn to_v2(&self) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        match (self.source, self.destination) {
            (Some(SocketAddr::V4(s)), Some(SocketAddr::V4(d))) => {
                out.extend_from_slice(&[0x21, 0x11, 0, 12]);
                out.extend_from_slice(&s.ip().octets());
                out.extend_from_slice(&d.ip().octets());
                out.extend_from_slice(&s.port().to_be_bytes());
                out.extend_from_slice(&d.port().to_be_bytes());
            }
            (Some(SocketAddr::V6(s)), Some(SocketAddr::V6(d))) => {
                out.extend_from_slice(&[0x21, 0x21, 0, 36]);
                out.extend_from_slice(&s.ip().octets());
                out.extend_from_slice(&d.ip().octets());
                out.extend_from_slice(&s.port().to_be_bytes());
                out.extend_from_slice(&d.port().to_be_bytes());
            }
            _ => out.extend_from_slice(&[0x20, 0x00, 0, 0]),
        }
        out
    }

    /// The version 1 line a proxy sends for this connection (`UNKNOWN` without addresses of
    /// one family).
    pub fn to_v1(&self) -> Vec<u8> {
        match (self.source, self.destination) {
            (Some(s @ SocketAddr::V4(_)), Some(d @ SocketAddr::V4(_))) => {
                format!(
                    "PROXY TCP4 {} {} {} {}\r\n",
                    s.ip(),
                    d.ip(),
                    s.port(),
                    d.port()
                )
            }
            (Some(s @ SocketAddr::V6(_)), Some(d @ SocketAddr::V6(_))) => {
                format!(
                    "PROXY TCP6 {} {} {} {}\r\n",
                    s.ip(),
                    d.ip(),
                    s.port(),
                    d.port()
                )
            }
            _ => "PROXY UNKNOWN\r\n".to_owned(),
        }
        .into_bytes()
    }
}

/// Why no header could be taken from a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// The bytes are no PROXY header at all (a client talking directly to the port).
    NotProxy,
    /// A header, but not a valid one.
    Malformed(&'static str),
    /// Longer than a version 1 line may be, or than [`MAX_HEADER_BYTES`].
    TooLong,
    /// The connection ended, or failed, before the header did.
    Closed,
    /// The header did not come in time.
    TimedOut,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::NotProxy => f.write_str("no PROXY protocol header"),
            HeaderError::Malformed(why) => write!(f, "malformed PROXY protocol header: {why}"),
            HeaderError::TooLong => f.write_str("PROXY protocol header too long"),
            HeaderError::Closed => f.write_str("connection closed before the PROXY header"),
            HeaderError::TimedOut => f.write_str("no PROXY protocol header in time"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// How far [`parse`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The header is longer than what was given: have this many bytes in all, then parse
    /// again. Never more than the header's length, and always more than was given.
    Need(usize),
    /// The header, and how many of the given bytes it took.
    Done(ProxyHeader, usize),
}

/// Parses the start of a connection's bytes as a PROXY header of either version.
pub fn parse(buf: &[u8]) -> Result<Parsed, HeaderError> {
    let starts = |prefix: &[u8]| {
        let n = buf.len().min(prefix.len());
        buf[..n] == prefix[..n]
    };
    if starts(&V2_SIGNATURE) && starts(V1_PREFIX) {
        // Nothing read yet: either version may follow.
        return Ok(Parsed::Need(MIN_HEADER));
    }
    if starts(&V2_SIGNATURE) {
        parse_v2(buf)
    } else if starts(V1_PREFIX) {
        parse_v1(buf)
    } else {
        Err(HeaderError::NotProxy)
    }
}

/// §2.1: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n`, or `PROXY UNKNOWN…\r\n`.
fn parse_v1(buf: &[u8]) -> Result<Parsed, HeaderError> {
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        return match buf.len() {
            n if n >= V1_MAX => Err(HeaderError::TooLong),
            n => Ok(Parsed::Need((n + 1).max(MIN_HEADER))),
        };
    };
    if lf + 1 > V1_MAX {
        return Err(HeaderError::TooLong);
    }
    let Some(line) = buf[..lf].strip_suffix(b"\r") else {
        return Err(HeaderError::Malformed("line not ended by CRLF"));
    };
    let line = std::str::from_utf8(line).map_err(|_| HeaderError::Malformed("not ASCII"))?;
    let mut fields = line.split(' ').skip(1);
    let family = fields.next().unwrap_or_default();
    let header = match family {
        // §2.1: the rest of an UNKNOWN line is ignored.
        "UNKNOWN" => ProxyHeader {
            source: None,
            destination: None,
        },
        "TCP4" | "TCP6" => {
            let fields: Vec<&str> = fields.collect();
            let [src, dst, sport, dport] = fields[..] else {
                return Err(HeaderError::Malformed("wrong number of fields"));
            };
            let ip = |s: &str| -> Result<IpAddr, HeaderError> {
                let ip = match family {
                    "TCP4" => s.parse::<Ipv4Addr>().map(IpAddr::V4),
                    _ => s.parse::<Ipv6Addr>().map(IpAddr::V6),
                };
                ip.map_err(|_| HeaderError::Malformed("bad address"))
            };
            let port = |s: &str| match s.len() {
                1..=5 if s.bytes().all(|b| b.is_ascii_digit()) => {
                    (s.parse::<u16>().ok()).ok_or(HeaderError::Malformed("bad port"))
                }
                _ => Err(HeaderError::Malformed("bad port")),
            };
            ProxyHeader {
                source: Some(SocketAddr::new(ip(src)?, port(sport)?)),
                destination: Some(SocketAddr::new(ip(dst)?, port(dport)?)),
            }
        }
        _ => return Err(HeaderError::Malformed("unknown protocol")),
    };
    Ok(Parsed::Done(header, lf + 1))
}

/// §2.2: the signature, version and command, family and transport, length, then the
/// addresses and TLVs (which are skipped).
fn parse_v2(buf: &[u8]) -> Result<Parsed, HeaderError> {
    if buf.len() < 16 {
        return Ok(Parsed::Need(16));
    }
    let (ver_cmd, fam) = (buf[12], buf[13]);
    let total = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 2 {
        return Err(HeaderError::Malformed("not version 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(HeaderError::Malformed("unknown command")),
    };
    if fam & 0x0f > 2 {
        return Err(HeaderError::Malformed("unknown transport protocol"));
    }
    let addresses = match fam >> 4 {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        _ => return Err(HeaderError::Malformed("unknown address family")),
    };
    if total > MAX_HEADER_BYTES {
        return Err(HeaderError::TooLong);
    }
    if total - 16 < addresses {
        return Err(HeaderError::Malformed("too short for its addresses"));
    }
    if buf.len() < total {
        return Ok(Parsed::Need(total));
    }
    let body = &buf[16..total];
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    let (source, destination) = match fam >> 4 {
        // §2.2: LOCAL ignores the address block; the connection's own addresses stand.
        _ if local => (None, None),
        1 => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    body[at],
                    body[at + 1],
                    body[at + 2],
                    body[at + 3],
                ))
            };
            (
                Some(SocketAddr::new(ip(0), port(8))),
                Some(SocketAddr::new(ip(4), port(10))),
            )
        }
        2 => {
            let ip = |at: usize| {
                let octets: [u8; 16] = body[at..at + 16].try_into().unwrap_or_default();
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            (
                Some(SocketAddr::new(ip(0), port(32))),
                Some(SocketAddr::new(ip(16), port(34))),
            )
        }
        // AF_UNSPEC and AF_UNIX name no IP address.
        _ => (None, None),
    };
    Ok(Parsed::Done(
        ProxyHeader {
            source,
            destination,
        },
        total,
    ))
}

/// Reads one PROXY header from `io` by `deadline`, and not one byte more.
#[cfg(feature = "io")]
pub async fn read_proxy_header<R: AsyncRead + Unpin>(
    io: &mut R,
    deadline: Instant,
) -> Result<ProxyHeader, HeaderError> {
    let read = async {
        let mut buf = Vec::with_capacity(64);
        loop {
            match parse(&buf)? {
                Parsed::Done(header, _) => return Ok(header),
                Parsed::Need(n) => {
                    let have = buf.len();
                    buf.resize(n, 0);
                    if io.read_exact(&mut buf[have..]).await.is_err() {
                        return Err(HeaderError::Closed);
                    }
                }
            }
        }
    };
    tokio::time::timeout_at(deadline, read)
        .await
        .unwrap_or(Err(HeaderError::TimedOut))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "io")]
    use tokio::io::AsyncReadExt;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn whole(bytes: &[u8]) -> Result<Parsed, HeaderError> {
        parse(bytes)
    }

    #[test]
    fn both_versions_round_trip_and_take_exactly_the_header() {
        for (src, dst) in [
            ("203.0.113.7:50123", "10.0.0.1:5222"),
            ("[2001:db8::7]:443", "[2001:db8::1]:5223"),
        ] {
            let header = ProxyHeader {
                source: Some(addr(src)),
                destination: Some(addr(dst)),
            };
            for bytes in [header.to_v2(), header.to_v1()] {
                let mut stream = bytes.clone();
                stream.extend_from_slice(b"<?xml version='1.0'?>");
                assert_eq!(whole(&stream), Ok(Parsed::Done(header, bytes.len())));
            }
        }
        let unknown = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nGET";
        let none = ProxyHeader {
            source: None,
            destination: None,
        };
        assert_eq!(whole(unknown), Ok(Parsed::Done(none, unknown.len() - 3)));
        assert_eq!(whole(b"PROXY UNKNOWN\r\n"), Ok(Parsed::Done(none, 15)));
        // LOCAL (a health check): the address block is skipped.
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x11, 0, 12]);
        local.extend_from_slice(&[1; 12]);
        assert_eq!(whole(&local), Ok(Parsed::Done(none, 28)));
        // TLVs after the addresses are taken and ignored.
        let mut tlvs = ProxyHeader {
            source: Some(addr("203.0.113.7:1")),
            destination: Some(addr("10.0.0.1:2")),
        }
        .to_v2();
        tlvs[15] += 7;
        tlvs.extend_from_slice(&[0x04, 0, 4, 1, 2, 3, 4]);
        assert!(
            matches!(whole(&tlvs), Ok(Parsed::Done(h, 35)) if h.source == Some(addr("203.0.113.7:1")))
        );
    }

    #[test]
    fn partial_headers_ask_for_no_more_than_the_header() {
        assert_eq!(whole(b""), Ok(Parsed::Need(15)));
        assert_eq!(whole(b"PROXY UNKNOWN"), Ok(Parsed::Need(15)));
        assert_eq!(whole(b"PROXY UNKNOWN\r"), Ok(Parsed::Need(15)));
        assert_eq!(whole(b"PROXY TCP4 1.2.3.4 "), Ok(Parsed::Need(20)));
        let v2 = ProxyHeader {
            source: Some(addr("203.0.113.7:1")),
            destination: Some(addr("10.0.0.1:2")),
        }
        .to_v2();
        assert_eq!(whole(&v2[..15]), Ok(Parsed::Need(16)));
        assert_eq!(whole(&v2[..16]), Ok(Parsed::Need(28)));
        assert_eq!(whole(&v2[..27]), Ok(Parsed::Need(28)));
    }

    #[test]
    fn what_is_not_a_valid_header_is_refused() {
        use HeaderError::*;
        assert_eq!(whole(b"<?xml version='1.0'?>"), Err(NotProxy));
        assert_eq!(whole(b"GET / HTTP/1.1\r\n"), Err(NotProxy));
        assert_eq!(whole(b"\x16\x03\x01"), Err(NotProxy));
        let bad = |b: &[u8]| matches!(whole(b), Err(Malformed(_)));
        assert!(bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"));
        assert!(bad(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"));
        assert!(bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"));
        assert!(bad(b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n"));
        assert!(bad(b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n"));
        assert!(bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"));
        assert!(bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"));
        assert!(bad(b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"));
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert_eq!(whole(&long), Err(TooLong));
        let v2 = |ver_cmd: u8, fam: u8, len: u16| {
            let mut h = V2_SIGNATURE.to_vec();
            h.extend_from_slice(&[ver_cmd, fam]);
            h.extend_from_slice(&len.to_be_bytes());
            h.resize(16 + usize::from(len), 0);
            whole(&h)
        };
        assert!(matches!(v2(0x11, 0x11, 12), Err(Malformed(_))));
        assert!(matches!(v2(0x22, 0x11, 12), Err(Malformed(_))));
        assert!(matches!(v2(0x21, 0x41, 12), Err(Malformed(_))));
        assert!(matches!(v2(0x21, 0x13, 12), Err(Malformed(_))));
        assert!(matches!(v2(0x21, 0x11, 11), Err(Malformed(_))));
        assert!(matches!(v2(0x21, 0x21, 12), Err(Malformed(_))));
        assert_eq!(v2(0x21, 0x11, 5000), Err(TooLong));
        // AF_UNSPEC and Unix sockets name no client address.
        assert!(matches!(v2(0x21, 0x00, 0), Ok(Parsed::Done(h, 16)) if h.source.is_none()));
        assert!(matches!(v2(0x21, 0x31, 216), Ok(Parsed::Done(h, 232)) if h.source.is_none()));
    }

    #[cfg(feature = "io")]
    #[tokio::test]
    async fn reading_leaves_what_follows_on_the_connection() {
        let header = ProxyHeader {
            source: Some(addr("203.0.113.7:50123")),
            destination: Some(addr("10.0.0.1:5222")),
        };
        for bytes in [header.to_v1(), header.to_v2()] {
            let (mut client, mut server) = tokio::io::duplex(64);
            let deadline = Instant::now() + std::time::Duration::from_secs(30);
            let sent = [bytes.as_slice(), b"<stream>"].concat();
            let writer = async move {
                // A byte at a time, as a slow network may deliver it.
                for b in sent {
                    tokio::io::AsyncWriteExt::write_all(&mut client, &[b])
                        .await
                        .unwrap();
                }
                client
            };
            let (got, _client) = tokio::join!(read_proxy_header(&mut server, deadline), writer);
            assert_eq!(got, Ok(header));
            let mut rest = [0; 8];
            server.read_exact(&mut rest).await.unwrap();
            assert_eq!(&rest, b"<stream>");
        }
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        assert_eq!(
            read_proxy_header(&mut server, deadline).await,
            Err(HeaderError::Closed)
        );
    }
}
