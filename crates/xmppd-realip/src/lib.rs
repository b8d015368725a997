//! The client's own address when connections come through a proxy or load balancer.
//!
//! - [`Network`]: an address or a CIDR block of trusted proxies, as configured.
//! - [`proxy_header`]: the PROXY protocol header (versions 1 and 2) a proxy sends before the
//!   client's bytes, parsed without I/O, and [`read_proxy_header`], which reads exactly one
//!   header from a connection and nothing of what follows it.
//! - [`forwarded`]: the client's address from the `Forwarded` (RFC 7239) or
//!   `X-Forwarded-For` header of an HTTP request that came through trusted proxies.
//!
//! Nothing here decides whom to trust: callers only parse what a configured proxy sent.

pub mod forwarded;
pub mod fuzzing;
pub mod proxy_header;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

#[cfg(feature = "io")]
pub use proxy_header::read_proxy_header;
pub use proxy_header::{HeaderError, ProxyHeader};

/// An address block: one address (`10.0.0.5`, `::1`) or a CIDR block (`10.0.0.0/8`,
/// `2001:db8::/32`). Host bits below the prefix are cleared, so a block is written one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `ip` is inside the block. An IPv4-mapped IPv6 address (`::ffff:10.0.0.5`, what
    /// a dual-stack socket reports for an IPv4 peer) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// Whether `ip` is in any of `networks`.
pub fn listed(networks: &[Network], ip: IpAddr) -> bool {
    networks.iter().any(|n| n.contains(ip))
}

/// `bits` with all but the first `prefix` bits cleared.
fn mask_v4(bits: u32, prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => bits & (u32::MAX << (32 - u32::from(p))),
    }
}

fn mask_v6(bits: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => bits & (u128::MAX << (128 - u32::from(p))),
    }
}

/// Why a [`Network`] did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkError(pub String);

impl fmt::Display for NetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NetworkError {}

impl FromStr for Network {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Network, NetworkError> {
        let bad = || {
            NetworkError(format!(
                "{s:?} is not an IP address or a CIDR block (e.g. 10.0.0.5, 10.0.0.0/8, 2001:db8::/32)"
            ))
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        if prefix > max {
            return Err(bad());
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(mask_v4(u32::from(a), prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(mask_v6(u128::from(a), prefix))),
        };
        Ok(Network { addr, prefix })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Network {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_match_and_print_one_way() {
        assert!(net("10.0.0.5").contains(ip("10.0.0.5")));
        assert!(!net("10.0.0.5").contains(ip("10.0.0.6")));
        assert!(net("10.1.2.3/8").contains(ip("10.200.0.1")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert_eq!(net("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("10.1.2.3").to_string(), "10.1.2.3/32");
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.7")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")));
        assert!(net("::/0").contains(ip("2001:db8::1")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::1")));
        assert_eq!(net("2001:db8::1/32").to_string(), "2001:db8::/32");
        // A dual-stack socket reports IPv4 peers as mapped addresses.
        assert!(net("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        for s in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "x",
            "10.0.0.0/8/8",
            "",
        ] {
            assert!(s.parse::<Network>().is_err(), "{s}");
        }
        for s in [
            "10.0.0.0/8",
            "192.168.1.0/24",
            "::1/128",
            "fe80::/10",
            "0.0.0.0/0",
        ] {
            assert_eq!(net(&net(s).to_string()), net(s), "{s}");
        }
    }
}
