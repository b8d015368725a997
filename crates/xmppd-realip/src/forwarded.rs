//! The client's address of an HTTP request that came through proxies: the `Forwarded` header
//! (RFC 7239) or `X-Forwarded-For`, read from the right.
//!
//! Each proxy appends the address it received the request from, so the list reads client
//! first, nearest proxy last; anything left of an address a trusted proxy appended may have
//! been written by the client itself. [`client_addr`] therefore starts from the connection's
//! own address and walks to the left over trusted proxies only: the first address that is not
//! a trusted proxy is the client. A hop that names no address (`unknown`, an obfuscated
//! identifier, RFC 7239 §6.3) stops the walk at the proxy that wrote it.

use std::net::{IpAddr, SocketAddr};

use crate::{listed, Network};

/// Which header the trusted proxies write. Only one is read: a proxy that appends to one
/// passes the other through as the client sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name, lowercase.
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }
}

/// The client's address of a request that came from `peer` with `values`, the field lines of
/// `header` in order. A request from an address not in `trusted` is its own client; so is one
/// without the header. A hop without a port gets port 0.
pub fn client_addr<'a>(
    peer: SocketAddr,
    trusted: &[Network],
    header: ForwardedHeader,
    values: impl IntoIterator<Item = &'a [u8]>,
) -> SocketAddr {
    if !listed(trusted, peer.ip()) {
        return peer;
    }
    let mut hops = Vec::new();
    for value in values {
        let Ok(value) = std::str::from_utf8(value) else {
            hops.push(None);
            continue;
        };
        for element in split_outside_quotes(value, ',') {
            hops.push(match header {
                ForwardedHeader::XForwardedFor => node(element.trim()),
                ForwardedHeader::Forwarded => forwarded_for(element),
            });
        }
    }
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        let Some(hop) = hop else {
            return client;
        };
        client = hop;
        if !listed(trusted, hop.ip()) {
            return hop;
        }
    }
    client
}

/// RFC 7239 §4: the `for` parameter of one element (`for=192.0.2.60;proto=http`).
fn forwarded_for(element: &str) -> Option<SocketAddr> {
    let value = split_outside_quotes(element, ';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })?;
    let value = match value.strip_prefix('"') {
        // A quoted-string (RFC 9110 §5.6.4); a node has no character worth escaping.
        Some(quoted) => quoted.strip_suffix('"')?.replace('\\', ""),
        None => value.to_owned(),
    };
    node(&value)
}

/// RFC 7239 §6: `IPv4`, `[IPv6]`, either with `:port` (an obfuscated port counts as none);
/// `X-Forwarded-For` writes a bare IPv6 address too. `unknown` and obfuscated names are
/// `None`.
fn node(node: &str) -> Option<SocketAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 0));
    }
    let (host, port) = match node.strip_prefix('[') {
        Some(rest) => {
            let (host, rest) = rest.split_once(']')?;
            (host, rest.strip_prefix(':'))
        }
        None => match node.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (node, None),
        },
    };
    let ip: IpAddr = host.parse().ok()?;
    let port = match port {
        None => 0,
        Some(p) if p.starts_with('_') => 0,
        Some(p) if (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse().ok()?
        }
        Some(_) => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// `s` split at `sep` where it is not inside a quoted string.
fn split_outside_quotes(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<Network> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn xff(peer: &str, trusted: &[&str], values: &[&str]) -> String {
        let peer = peer.parse().unwrap();
        let values = values.iter().map(|v| v.as_bytes());
        client_addr(peer, &nets(trusted), ForwardedHeader::XForwardedFor, values).to_string()
    }

    fn fwd(peer: &str, trusted: &[&str], values: &[&str]) -> String {
        let peer = peer.parse().unwrap();
        let values = values.iter().map(|v| v.as_bytes());
        client_addr(peer, &nets(trusted), ForwardedHeader::Forwarded, values).to_string()
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let proxy = "10.0.0.5:40000";
        // Not from a trusted proxy: the header is the client's word, and ignored.
        assert_eq!(
            xff("198.51.100.1:1", &["10.0.0.5"], &["203.0.113.7"]),
            "198.51.100.1:1"
        );
        assert_eq!(xff(proxy, &["10.0.0.5"], &[]), proxy);
        assert_eq!(xff(proxy, &["10.0.0.5"], &["203.0.113.7"]), "203.0.113.7:0");
        // A client that writes its own header only adds hops to the left.
        let spoofed = ["1.2.3.4, 203.0.113.7"];
        assert_eq!(xff(proxy, &["10.0.0.5"], &spoofed), "203.0.113.7:0");
        // Chains of trusted proxies, in one field line or several.
        let chain = ["1.2.3.4, 203.0.113.7", "10.0.0.9"];
        assert_eq!(xff(proxy, &["10.0.0.0/24"], &chain), "203.0.113.7:0");
        assert_eq!(
            xff(proxy, &["10.0.0.0/24"], &["10.0.0.8, 10.0.0.9"]),
            "10.0.0.8:0"
        );
        assert_eq!(
            xff(proxy, &["10.0.0.5"], &["2001:db8::7"]),
            "[2001:db8::7]:0"
        );
        assert_eq!(
            xff(proxy, &["10.0.0.5"], &["[2001:db8::7]:443"]),
            "[2001:db8::7]:443"
        );
        assert_eq!(
            xff(proxy, &["10.0.0.5"], &["203.0.113.7:8080"]),
            "203.0.113.7:8080"
        );
        // What names no address stops at the proxy that wrote it.
        assert_eq!(xff(proxy, &["10.0.0.5"], &["203.0.113.7, unknown"]), proxy);
        assert_eq!(
            xff(proxy, &["10.0.0.0/24"], &["garbage, 10.0.0.9"]),
            "10.0.0.9:0"
        );
        assert_eq!(xff(proxy, &["10.0.0.5"], &["203.0.113.7,"]), proxy);
    }

    #[test]
    fn forwarded_elements_and_their_for_parameter() {
        let proxy = "10.0.0.5:40000";
        let trusted = ["10.0.0.0/24"];
        assert_eq!(fwd(proxy, &trusted, &["for=203.0.113.7"]), "203.0.113.7:0");
        let v6 = [r#"for="[2001:db8:cafe::17]:4711";proto=https"#];
        assert_eq!(fwd(proxy, &trusted, &v6), "[2001:db8:cafe::17]:4711");
        let many = [
            "for=192.0.2.43, for=198.51.100.17;by=10.0.0.5",
            "For=10.0.0.9",
        ];
        assert_eq!(fwd(proxy, &trusted, &many), "198.51.100.17:0");
        let obfuscated_port = [r#"for="203.0.113.7:_abc""#];
        assert_eq!(fwd(proxy, &trusted, &obfuscated_port), "203.0.113.7:0");
        // A comma inside a quoted value does not split elements.
        let quoted = [r#"for=203.0.113.7;ext="a,b""#];
        assert_eq!(fwd(proxy, &trusted, &quoted), "203.0.113.7:0");
        for hidden in ["for=_hidden", "for=unknown", "proto=https", r#"for="_x:1""#] {
            assert_eq!(fwd(proxy, &trusted, &[hidden]), proxy, "{hidden}");
        }
        // X-Forwarded-For is not read when Forwarded is the configured header.
        assert_eq!(fwd(proxy, &trusted, &[]), proxy);
    }
}
