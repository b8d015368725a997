//! Addresses a peer wrote (RFC 7622): how xmppd turns a `to`, a SASL authcid or a requested
//! resource into the canonical JID it routes and compares with.
//!
//! Everything that takes a JID from the network goes through here, so that one address has one
//! form everywhere (routing, rosters, storage keys). `xmppd_core::fuzzing::check_address` states the
//! invariants and the `address` fuzz target checks them.

use jid::{BareJid, DomainPart, FullJid, Jid, NodePart, ResourcePart};

/// Parses a JID from the network into its canonical form: nodeprep'd localpart, nameprep'd
/// domainpart, resourceprep'd resourcepart (RFC 7622 §3), and a domainpart without the final
/// dot of a fully qualified name, which "MUST be stripped ... before the JID ... is used for the
/// purpose of routing an XML stanza, comparing against another JID" (RFC 7622 §3.2).
///
/// The parts are prepared one by one and the JID is assembled from them, so that its string and
/// its parts always agree, whatever dot the preparation leaves at the end of the domain.
pub fn parse_jid(input: &str) -> Result<Jid, jid::Error> {
    if is_canonical_ascii(input) {
        // Preparing changes nothing here (see `is_canonical_ascii`): one pass of the `jid`
        // crate's own checks gives the same JID as preparing part by part below.
        return Jid::new(input);
    }
    prepare_jid(input)
}

/// [`parse_jid`] without its shortcut for input already canonical: every part prepared. The
/// `address` fuzz target checks that the two always agree.
pub fn prepare_jid(input: &str) -> Result<Jid, jid::Error> {
    // The localpart and domainpart end at the first '/', the resourcepart may contain anything.
    let (head, resource) = match input.split_once('/') {
        Some((head, resource)) => (head, Some(resource)),
        None => (input, None),
    };
    let (node, domain) = match head.split_once('@') {
        Some((_, domain)) if domain.contains('@') => return Err(jid::Error::TooManyAts),
        Some((node, domain)) => (Some(node), domain),
        None => (None, head),
    };
    let node = node.map(prepare_node).transpose()?;
    let domain = prepare_domain(domain)?;
    let resource = resource.map(ResourcePart::new).transpose()?;
    Ok(Jid::from_parts(
        node.as_deref(),
        &domain,
        resource.as_deref(),
    ))
}

/// Whether `input` is a JID that every preparation leaves as it is, judged on its bytes alone:
/// the common case (ASCII, lower case, a host name), for which [`parse_jid`] skips preparing
/// part by part. Conservative: anything it is unsure of (upper case, non-ASCII, a final dot, an
/// IP address, an `xn--` or other `??--` label) is left to the full path.
///
/// - localpart: 1 to 1023 bytes of printable ASCII other than upper case and the eight
///   characters nodeprep prohibits (RFC 7622 §3.3.1, RFC 3920 appendix A.5);
/// - domainpart: 1 to 253 bytes of labels of 1 to 63 letters (lower case), digits and hyphens,
///   no hyphen first, last, or in the third and fourth places, the last label with a letter
///   (RFC 5890 §2.3.1 LDH labels; what UTS #46 and nameprep map to themselves);
/// - resourcepart: 1 to 1023 bytes of printable ASCII or space (resourceprep maps none of them).
fn is_canonical_ascii(input: &str) -> bool {
    let (head, resource) = match input.split_once('/') {
        Some((head, resource)) => (head, Some(resource)),
        None => (input, None),
    };
    let (node, domain) = match head.split_once('@') {
        Some((node, domain)) => (Some(node), domain),
        None => (None, head),
    };
    let node_ok = node.is_none_or(|n| {
        (1..=1023).contains(&n.len())
            && n.bytes().all(|b| {
                matches!(b, 0x21..=0x7e)
                    && !b.is_ascii_uppercase()
                    && !matches!(b, b'"' | b'&' | b'\'' | b'/' | b':' | b'<' | b'>' | b'@')
            })
    });
    let resource_ok = resource.is_none_or(|r| {
        (1..=1023).contains(&r.len()) && r.bytes().all(|b| matches!(b, 0x20..=0x7e))
    });
    node_ok && resource_ok && is_ldh_host(domain)
}

/// A host name of lower-case LDH labels whose last label has a letter (so never an IPv4
/// address), without a final dot: see [`is_canonical_ascii`].
fn is_ldh_host(domain: &str) -> bool {
    if domain.is_empty() || domain.len() > 253 {
        return false;
    }
    let mut last_has_letter = false;
    for label in domain.split('.') {
        let b = label.as_bytes();
        if b.is_empty()
            || b.len() > 63
            || b[0] == b'-'
            || b[b.len() - 1] == b'-'
            || (b.len() >= 4 && b[2] == b'-' && b[3] == b'-')
            || !b
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        {
            return false;
        }
        last_has_letter = b.iter().any(u8::is_ascii_lowercase);
    }
    last_has_letter
}

/// A domainpart without its final label separator. Preparation can expose a final dot (nameprep
/// maps U+1806 MONGOLIAN TODO SOFT HYPHEN to nothing), so the dot is looked for after preparing
/// too; only one is stripped, since a second one would end an empty label.
///
/// The IDNA checks apply to the domain as written, before nameprep; what preparing leaves must
/// pass them as well (and prepare to itself), or the canonical JID would not parse again: "᠆"
/// prepares to an empty domain (RFC 7622 §3.2.1 asks for one byte at least), "a᠆b--c" to a label
/// with hyphens in the third and fourth places.
fn prepare_domain(domain: &str) -> Result<DomainPart, jid::Error> {
    let (domain, stripped) = match domain.strip_suffix('.') {
        Some(d) => (d, true),
        None => (domain, false),
    };
    if domain.ends_with('.') {
        return Err(jid::Error::Idna);
    }
    let prepared = DomainPart::new(domain)?;
    let prepared = match prepared.as_str().strip_suffix('.') {
        None => prepared.into_owned(),
        Some(without) if !stripped => DomainPart::new(without)?.into_owned(),
        Some(_) => return Err(jid::Error::Idna),
    };
    match DomainPart::new(prepared.as_str()) {
        Ok(again) if again.as_str() == prepared.as_str() => Ok(prepared),
        _ => Err(jid::Error::Idna),
    }
}

/// A prepared localpart that preparing again leaves as it is. Nodeprep (RFC 3920 appendix A)
/// is defined on Unicode 3.2, whose unassigned code points it must refuse; the `stringprep`
/// crate normalises with today's Unicode before it checks, so a character newer than 3.2 can
/// come out as letters that fold again: U+33DF SQUARE A OVER M gives "A∕m", which prepares to
/// "a∕m". Two spellings would then name two accounts; such a localpart is refused.
fn prepare_node(node: &str) -> Result<std::borrow::Cow<'_, jid::NodeRef>, jid::Error> {
    let prepared = NodePart::new(node)?;
    match NodePart::new(prepared.as_str()) {
        Ok(again) if again.as_str() == prepared.as_str() => Ok(prepared),
        _ => Err(jid::Error::NodePrep),
    }
}

/// The account a SASL authcid names on `host` (a served host, already normalised): the
/// authcid is the localpart, nodeprep'd (RFC 6120 §6.3.8 leaves the mapping to the server).
/// `None` if it is not a valid localpart.
pub fn account_jid(authcid: &str, host: &str) -> Option<BareJid> {
    if authcid.is_empty() || authcid.contains(['@', '/']) {
        return None;
    }
    let node = prepare_node(authcid).ok()?;
    let jid = BareJid::new(&format!("{}@{host}", node.as_str())).ok()?;
    (jid.node().is_some() && jid.domain().as_str() == host).then_some(jid)
}

/// The full JID a bind request yields for `user` (RFC 6120 §7.6): the requested resource,
/// trimmed and resourceprep'd, or a server-generated one when none or only whitespace was
/// requested. `None` if the requested resource is not a valid resourcepart.
pub fn bound_jid(user: &BareJid, requested: Option<&str>) -> Option<FullJid> {
    let resource = match requested.map(str::trim) {
        Some(r) if !r.is_empty() => r.to_owned(),
        _ => format!("xmppd-{:016x}", rand::random::<u64>()),
    };
    user.with_resource_str(&resource).ok()
}

/// A JID without its resourcepart, made by cutting the JID's own string: `jid`'s `to_bare`
/// formats the parts into a new string (about 900 instructions, several times per message on
/// the routing path), this copies it once. The workspace's clippy configuration refuses
/// `to_bare` so that the routing path does not drift back to it.
pub trait Bare {
    /// The bare JID (RFC 7622 §3: localpart and domainpart) of this one.
    fn bare(&self) -> BareJid;
}

impl Bare for Jid {
    fn bare(&self) -> BareJid {
        self.clone().into_bare()
    }
}

impl Bare for FullJid {
    fn bare(&self) -> BareJid {
        self.clone().into_bare()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(input: &str) -> Option<String> {
        parse_jid(input).ok().map(|j| j.to_string())
    }

    #[test]
    fn bare_cuts_the_resource_and_keeps_the_rest() {
        for (full, bare) in [
            ("juliet@example.org/balcony", "juliet@example.org"),
            ("juliet@example.org/a/b@c", "juliet@example.org"),
            ("example.org/res", "example.org"),
            ("juliet@example.org", "juliet@example.org"),
            ("example.org", "example.org"),
        ] {
            let jid = parse_jid(full).unwrap();
            #[allow(clippy::disallowed_methods)] // what `bare` replaces, as the reference
            let reference = jid.to_bare();
            assert_eq!(jid.bare(), reference, "{full}");
            assert_eq!(jid.bare().as_str(), bare, "{full}");
            assert_eq!(jid.bare().node(), reference.node(), "{full}");
            if let Ok(full_jid) = jid.clone().try_into_full() {
                assert_eq!(full_jid.bare(), reference, "{full}");
            }
        }
    }

    #[test]
    fn parse_jid_prepares_every_part() {
        assert_eq!(
            canonical("Juliet@Example.ORG/Balcony").as_deref(),
            Some("juliet@example.org/Balcony")
        );
        assert_eq!(canonical("example.org").as_deref(), Some("example.org"));
        assert_eq!(
            canonical("example.org/a/b@c").as_deref(),
            Some("example.org/a/b@c")
        );
        for bad in [
            "",
            "@example.org",
            "a@b@example.org",
            "a@example.org/",
            "a b@example.org",
        ] {
            assert!(parse_jid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parse_jid_strips_the_final_dot_of_the_domain() {
        // RFC 7622 §3.2: the same address with and without the final dot.
        for (input, expect) in [
            ("juliet@example.org.", "juliet@example.org"),
            ("juliet@example.org./balcony", "juliet@example.org/balcony"),
            ("example.org./r", "example.org/r"),
            ("example.org.", "example.org"),
            ("juliet@example.org.\u{1806}/r", "juliet@example.org/r"),
        ] {
            let jid = parse_jid(input).expect(input);
            assert_eq!(jid.to_string(), expect, "{input:?}");
            assert_eq!(jid.domain().as_str(), "example.org", "{input:?}");
            assert_eq!(jid, parse_jid(expect).expect(expect));
        }
        let full = parse_jid("juliet@example.org./balcony").expect("valid");
        assert_eq!(full.resource().map(|r| r.as_str()), Some("balcony"));
        for bad in [
            "juliet@example.org..",
            ".",
            "juliet@.",
            "example.org../r",
            "example.org.\u{1806}.",
            // Nameprep maps the whole domain to nothing.
            "\u{1806}/r",
            // What nameprep leaves breaks the IDNA hyphen rule.
            "j\u{1806}x--bccrr",
            "juliet@\u{1806}",
            "\u{1806}.",
        ] {
            assert!(parse_jid(bad).is_err(), "{bad:?}");
        }
    }

    fn prepared(input: &str) -> Option<String> {
        prepare_jid(input).ok().map(|j| j.to_string())
    }

    #[test]
    fn canonical_ascii_shortcut_agrees_with_preparing() {
        let long_label = "a".repeat(63);
        let too_long_label = "a".repeat(64);
        let long_node = "n".repeat(1023);
        let cases = [
            "juliet@example.org/balcony".to_owned(),
            "juliet@example.org/Balcony Two".to_owned(),
            "j.u-l_i+e~t!#$%(){}*=?^`|@ex-ample.org".to_owned(),
            "example.org".to_owned(),
            "localhost/r".to_owned(),
            "a@b.c.d.e.f/x/y@z".to_owned(),
            "conference.example.org/nick".to_owned(),
            format!("{long_node}@{long_label}.org"),
            format!("x@{too_long_label}.org"),
            format!("{long_node}n@example.org"),
            "ab--c@example.org".to_owned(),
            "x@ab--cd.org".to_owned(),
            "x@xn--nxasmq6b.org".to_owned(),
            "x@-a.org".to_owned(),
            "x@a-.org".to_owned(),
            "x@a..org".to_owned(),
            "x@127.0.0.1".to_owned(),
            "x@1.2".to_owned(),
            "x@a.1".to_owned(),
            "x@[::1]".to_owned(),
            "x@a_b.org".to_owned(),
            "Juliet@example.org".to_owned(),
            "juliet@Example.org".to_owned(),
            "juliet@example.org.".to_owned(),
            "ju liet@example.org".to_owned(),
            "ju'liet@example.org".to_owned(),
            "juliet@example.org/".to_owned(),
            "juliet@example.org/a\tb".to_owned(),
            "juliet@example.org/a\u{7f}".to_owned(),
            "@example.org".to_owned(),
            "a@@example.org".to_owned(),
            "".to_owned(),
        ];
        for case in &cases {
            let fast = is_canonical_ascii(case);
            let full = prepared(case);
            if fast {
                assert_eq!(full.as_deref(), Some(case.as_str()), "{case:?}");
            }
            assert_eq!(canonical(case), full, "{case:?}");
        }
        // The shortcut is taken where it matters.
        for common in [
            "juliet@example.org/balcony",
            "example.org",
            "room@conference.example.org/nick",
        ] {
            assert!(is_canonical_ascii(common), "{common:?}");
        }
    }

    #[test]
    fn a_localpart_that_prepares_differently_twice_is_refused() {
        // U+33DF SQUARE A OVER M, unassigned in Unicode 3.2: it prepares to "A∕m", which
        // prepares to "a∕m".
        assert!(parse_jid("\u{33df}@example.org").is_err());
        assert!(parse_jid("\u{33df}@example.org/r").is_err());
        assert!(account_jid("\u{33df}", "example.org").is_none());
        // What it would have become stays an account of its own, reached one way.
        assert_eq!(
            canonical("A\u{2215}m@example.org").as_deref(),
            Some("a\u{2215}m@example.org")
        );
        assert_eq!(
            account_jid("A\u{2215}m", "example.org").unwrap().as_str(),
            "a\u{2215}m@example.org"
        );
    }

    #[test]
    fn account_jid_is_normalised_and_validated() {
        assert_eq!(
            account_jid("Juliet", "example.org").unwrap().as_str(),
            "juliet@example.org"
        );
        assert!(account_jid("", "example.org").is_none());
        assert!(account_jid("a@b", "example.org").is_none());
        assert!(account_jid("a/b", "example.org").is_none());
        assert!(account_jid("bad\"quote", "example.org").is_none());
    }

    #[test]
    fn bound_jid_trims_or_generates_the_resource() {
        let user = BareJid::new("juliet@example.org").unwrap();
        let jid = bound_jid(&user, Some(" balcony\t")).expect("valid");
        assert_eq!(jid.as_str(), "juliet@example.org/balcony");
        for none in [None, Some(""), Some("  ")] {
            let jid = bound_jid(&user, none).expect("generated");
            assert_eq!(jid.bare(), user);
            assert!(jid.resource().as_str().starts_with("xmppd-"));
        }
        assert!(bound_jid(&user, Some("a\u{7}b")).is_none());
    }
}
