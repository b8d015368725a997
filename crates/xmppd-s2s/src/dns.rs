//! Finding a remote domain's servers (RFC 6120 §3.2, XEP-0368): SRV records for direct TLS
//! (`_xmpps-server._tcp`) and STARTTLS (`_xmpp-server._tcp`) ordered by priority and weight
//! (RFC 2782), else the domain itself on port 5269. The resolver is behind [`Resolve`];
//! production uses hickory-resolver, with the system's or a configured name server.

use std::net::{IpAddr, SocketAddr};

use async_trait::async_trait;

/// The default port of server-to-server STARTTLS streams (RFC 6120 §14.7).
pub const DEFAULT_PORT: u16 = 5269;

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The host name, without the trailing dot; "." means "no service here" (RFC 2782).
    pub target: String,
}

/// Where to try to connect, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// TLS from the first byte (XEP-0368), else STARTTLS.
    pub direct_tls: bool,
}

/// DNS as the s2s links need it.
#[async_trait]
pub trait Resolve: Send + Sync {
    /// The SRV records of `name`; empty when there are none (or the lookup failed: then the
    /// domain's own address is tried, RFC 6120 §3.2.2).
    async fn srv(&self, name: &str) -> Vec<Srv>;
    /// The addresses of `host`.
    async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, String>;
}

/// The targets for `domain`: SRV records of both services, ordered together by RFC 2782;
/// none when a record says the service is not offered; the domain on 5269 when there are no
/// records. `random(n)` gives a number in `0..=n` (weighted selection).
pub async fn targets(
    resolver: &dyn Resolve,
    domain: &str,
    random: &mut (dyn FnMut(u32) -> u32 + Send),
) -> Vec<Target> {
    let direct = resolver.srv(&format!("_xmpps-server._tcp.{domain}.")).await;
    let starttls = resolver.srv(&format!("_xmpp-server._tcp.{domain}.")).await;
    let records: Vec<(Srv, bool)> = (direct.into_iter().map(|r| (r, true)))
        .chain(starttls.into_iter().map(|r| (r, false)))
        .collect();
    if records.is_empty() {
        return vec![Target {
            host: domain.to_owned(),
            port: DEFAULT_PORT,
            direct_tls: false,
        }];
    }
    order(records, random)
        .into_iter()
        .filter(|(r, _)| r.target != "." && !r.target.is_empty())
        .map(|(r, direct_tls)| Target {
            host: r.target,
            port: r.port,
            direct_tls,
        })
        .collect()
}

/// RFC 2782: by priority, lowest first; within one priority, a weighted random draw without
/// replacement (zero-weight records first in the pool, so they are only rarely chosen first).
pub fn order<T>(mut records: Vec<(Srv, T)>, random: &mut dyn FnMut(u32) -> u32) -> Vec<(Srv, T)> {
    records.sort_by_key(|(r, _)| (r.priority, r.weight != 0));
    let mut out = Vec::with_capacity(records.len());
    while !records.is_empty() {
        let priority = records[0].0.priority;
        let end = records
            .iter()
            .position(|(r, _)| r.priority != priority)
            .unwrap_or(records.len());
        let mut group: Vec<(Srv, T)> = records.drain(..end).collect();
        while !group.is_empty() {
            let total: u32 = group.iter().map(|(r, _)| u32::from(r.weight)).sum();
            let pick = random(total);
            let mut running = 0u32;
            let index = group
                .iter()
                .position(|(r, _)| {
                    running += u32::from(r.weight);
                    running >= pick
                })
                .unwrap_or(group.len() - 1);
            out.push(group.remove(index));
        }
    }
    out
}

/// Whether xmppd connects to `ip` when DNS gives it for a remote domain: not to this host
/// (loopback, unspecified), nor a private network (RFC 1918, RFC 6598 shared space, IPv6
/// unique local fc00::/7), nor link-local addresses (169.254/16, fe80::/10; cloud metadata
/// services live there), nor multicast or broadcast. Anyone can publish such a record, so
/// without this check a stanza to a domain of theirs would make xmppd open connections
/// inside its own network. IPv4-mapped IPv6 addresses are judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80)
            }
        },
    }
}

/// hickory-resolver, with the system's configuration or one name server.
pub struct Hickory(hickory_resolver::TokioResolver);

impl Hickory {
    /// `nameserver`: ask only this server (UDP and TCP); `None`: the system's configuration.
    pub fn new(nameserver: Option<SocketAddr>) -> Result<Hickory, String> {
        use hickory_resolver::config::{NameServerConfig, ResolverConfig};
        use hickory_resolver::net::runtime::TokioRuntimeProvider;
        let builder = match nameserver {
            Some(addr) => {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                hickory_resolver::TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => hickory_resolver::TokioResolver::builder_tokio().map_err(|e| e.to_string())?,
        };
        builder.build().map(Hickory).map_err(|e| e.to_string())
    }
}

#[async_trait]
impl Resolve for Hickory {
    async fn srv(&self, name: &str) -> Vec<Srv> {
        use hickory_resolver::proto::rr::RData;
        match self.0.srv_lookup(name).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::SRV(srv) => Some(Srv {
                        priority: srv.priority,
                        weight: srv.weight,
                        port: srv.port,
                        target: srv.target.to_utf8().trim_end_matches('.').to_owned(),
                    }),
                    _ => None,
                })
                .collect(),
            Err(e) => {
                tracing::debug!(name, error = %e, "no SRV records");
                Vec::new()
            }
        }
    }

    async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        let found = self.0.lookup_ip(fqdn).await.map_err(|e| e.to_string())?;
        Ok(found.iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, target: &str) -> (Srv, ()) {
        let target = target.to_owned();
        let port = 5269;
        (
            Srv {
                priority,
                weight,
                port,
                target,
            },
            (),
        )
    }

    fn names(v: Vec<(Srv, ())>) -> Vec<String> {
        v.into_iter().map(|(r, _)| r.target).collect()
    }

    #[test]
    fn lower_priority_comes_first_whatever_the_weight() {
        let records = vec![srv(20, 100, "c"), srv(10, 0, "a"), srv(15, 1, "b")];
        assert_eq!(names(order(records, &mut |n| n)), ["a", "b", "c"]);
    }

    #[test]
    fn within_a_priority_the_draw_follows_the_weights() {
        let records = || {
            vec![
                srv(10, 60, "heavy"),
                srv(10, 40, "light"),
                srv(10, 0, "zero"),
            ]
        };
        // Sorted pool: zero (0), heavy (60), light (40); running sums 0, 60, 100.
        assert_eq!(
            names(order(records(), &mut |_| 0)),
            ["zero", "heavy", "light"]
        );
        assert_eq!(
            names(order(records(), &mut |n| n)),
            ["light", "heavy", "zero"]
        );
        assert_eq!(
            names(order(records(), &mut |_| 30)),
            ["heavy", "light", "zero"]
        );
    }

    #[test]
    fn only_public_addresses_are_public() {
        let public = |s: &str| is_public(s.parse().unwrap());
        for ip in ["192.0.2.1", "8.8.8.8", "2001:db8::1", "::ffff:198.51.100.7"] {
            assert!(public(ip), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.1.1",
        ] {
            assert!(!public(ip), "{ip}");
        }
    }

    struct Fixed(Vec<Srv>, Vec<Srv>);

    #[async_trait]
    impl Resolve for Fixed {
        async fn srv(&self, name: &str) -> Vec<Srv> {
            if name.starts_with("_xmpps-") {
                self.0.clone()
            } else {
                self.1.clone()
            }
        }
        async fn ips(&self, _: &str) -> Result<Vec<IpAddr>, String> {
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn both_services_are_merged_and_no_records_mean_the_domain_on_5269() {
        let none = Fixed(Vec::new(), Vec::new());
        let got = targets(&none, "example.org", &mut |n| n).await;
        assert_eq!(
            got,
            [Target {
                host: "example.org".into(),
                port: 5269,
                direct_tls: false
            }]
        );
        let both = Fixed(
            vec![srv(5, 0, "tls.example.org").0],
            vec![
                srv(1, 0, "xmpp.example.org").0,
                srv(9, 0, "backup.example.org").0,
            ],
        );
        let got = targets(&both, "example.org", &mut |n| n).await;
        let got: Vec<_> = got
            .iter()
            .map(|t| (t.host.as_str(), t.direct_tls))
            .collect();
        assert_eq!(
            got,
            [
                ("xmpp.example.org", false),
                ("tls.example.org", true),
                ("backup.example.org", false)
            ]
        );
        let refused = Fixed(Vec::new(), vec![srv(0, 0, ".").0]);
        assert!(targets(&refused, "example.org", &mut |n| n)
            .await
            .is_empty());
    }
}
