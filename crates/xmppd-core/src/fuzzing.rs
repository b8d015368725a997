//! The address fuzzing oracle, shared by the cargo-fuzz target `jid` (`fuzz/`) and by a stable
//! test that replays the committed corpus (`fuzz/corpus/jid/`) in CI.
//!
//! [`check_jid`] reads its input as text (invalid UTF-8 replaced: an XML attribute or a SASL
//! name reaches the core as a string) and panics unless:
//! - normalising it as a `to` ([`parse_jid`]) is idempotent: the canonical string parses to the
//!   same JID and prints the same again, and the plain parser agrees on it;
//! - the canonical string is its parts joined (`node@domain/resource`), each part non-empty, at
//!   most 1023 bytes (RFC 7622 §3), already prepared, and the domain has no final dot (§3.2);
//! - bare and full agree: `BareJid::new` accepts the canonical string exactly when it has no
//!   resource, `FullJid::new` exactly when it has one, and the bare JID is the string before the
//!   first '/';
//! - the input up to its first newline, as a SASL authcid on each served host, names an account
//!   only as a localpart: a bare JID on that host, whose own localpart names the same account,
//!   whose storage key is its parts, and which `to` normalisation leaves as it is;
//! - the rest of the input, as the resource a bind request asks for, yields a full JID of that
//!   account whose resource is the trimmed request prepared (or generated, when blank), and
//!   which parses back to itself; a refused request is not a valid resourcepart.

use jid::{BareJid, DomainPart, FullJid, Jid, NodePart, ResourcePart};

use crate::address::{account_jid, bound_jid, parse_jid, Bare};
use crate::server::user_ref;

/// Served hosts as the configuration hands them over: lowercase, ASCII, no final dot.
const HOSTS: [&str; 3] = ["example.org", "localhost", "xn--bcher-kva.example"];

/// Runs the oracle on one input; panics on a violation.
pub fn check_jid(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_parse(&text);
    let (authcid, resource) = match text.split_once('\n') {
        Some((authcid, resource)) => (authcid, Some(resource)),
        None => (&*text, None),
    };
    for host in HOSTS {
        check_account(authcid, resource, host);
    }
}

fn check_parse(input: &str) {
    // The shortcut for canonical input agrees with preparing every part.
    let full = crate::address::prepare_jid(input);
    assert_eq!(
        parse_jid(input).as_ref().ok(),
        full.as_ref().ok(),
        "{input:?}: the shortcut and the full preparation disagree"
    );
    let Ok(jid) = full else {
        return;
    };
    let canonical = jid.to_string();
    let again = parse_jid(&canonical)
        .unwrap_or_else(|e| panic!("{canonical:?} (from {input:?}) does not parse again: {e}"));
    assert_eq!(again, jid, "{input:?} is not normalised idempotently");
    assert_eq!(again.to_string(), canonical, "{input:?} prints differently");
    check_parts(&jid, &canonical);
    check_parts(&again, &canonical);
    let plain = Jid::new(&canonical)
        .unwrap_or_else(|e| panic!("canonical {canonical:?} refused by the plain parser: {e}"));
    assert_eq!(plain, jid, "{canonical:?}");
    check_parts(&plain, &canonical);

    let bare_prefix = canonical.split('/').next().unwrap_or_default();
    assert_eq!(jid.bare().as_str(), bare_prefix, "{canonical:?}");
    match jid.resource() {
        Some(_) => {
            let full = FullJid::new(&canonical)
                .unwrap_or_else(|e| panic!("full {canonical:?} refused as FullJid: {e}"));
            assert_eq!(Jid::from(full), jid);
            assert!(BareJid::new(&canonical).is_err(), "{canonical:?}");
        }
        None => {
            let bare = BareJid::new(&canonical)
                .unwrap_or_else(|e| panic!("bare {canonical:?} refused as BareJid: {e}"));
            assert_eq!(Jid::from(bare), jid);
            assert!(FullJid::new(&canonical).is_err(), "{canonical:?}");
        }
    }
}

/// The string of `jid` is `canonical`, and is made of prepared, bounded parts.
fn check_parts(jid: &Jid, canonical: &str) {
    let node = jid.node().map(|n| n.as_str());
    let domain = jid.domain().as_str();
    let resource = jid.resource().map(|r| r.as_str());
    let mut joined = String::new();
    if let Some(node) = node {
        assert_part(
            node,
            NodePart::new(node).map(|p| p.as_str() == node),
            canonical,
        );
        assert!(!node.contains(['@', '/']), "localpart of {canonical:?}");
        joined.push_str(node);
        joined.push('@');
    }
    assert_part(
        domain,
        DomainPart::new(domain).map(|p| p.as_str() == domain),
        canonical,
    );
    assert!(!domain.contains(['@', '/']), "domainpart of {canonical:?}");
    assert!(!domain.ends_with('.'), "final dot kept in {canonical:?}");
    joined.push_str(domain);
    if let Some(resource) = resource {
        assert_part(
            resource,
            ResourcePart::new(resource).map(|p| p.as_str() == resource),
            canonical,
        );
        joined.push('/');
        joined.push_str(resource);
    }
    assert_eq!(joined, canonical, "parts and string disagree");
    assert_eq!(jid.as_str(), canonical);
}

/// A part is 1 to 1023 bytes and preparing it again changes nothing.
fn assert_part(part: &str, stable: Result<bool, jid::Error>, canonical: &str) {
    assert!(
        (1..=1023).contains(&part.len()),
        "part of {} bytes in {canonical:?}",
        part.len()
    );
    match stable {
        Ok(true) => {}
        Ok(false) => panic!("part {part:?} of {canonical:?} changes when prepared again"),
        Err(e) => panic!("part {part:?} of {canonical:?} is refused when prepared again: {e}"),
    }
}

fn check_account(authcid: &str, resource: Option<&str>, host: &str) {
    let Some(user) = account_jid(authcid, host) else {
        return;
    };
    let node = user
        .node()
        .unwrap_or_else(|| panic!("account {user} of {authcid:?} has no localpart"))
        .as_str();
    assert_eq!(user.domain().as_str(), host, "{authcid:?}");
    assert_eq!(user.as_str(), format!("{node}@{host}"));
    assert_eq!(
        account_jid(node, host).as_ref(),
        Some(&user),
        "the localpart of {user} names another account"
    );
    let key = user_ref(&user);
    assert_eq!((key.user.as_str(), key.domain.as_str()), (node, host));
    assert_eq!(
        parse_jid(user.as_str()).ok(),
        Some(Jid::from(user.clone())),
        "{user} is not normalised"
    );

    let Some(requested) = resource else {
        return;
    };
    let wanted = requested.trim();
    match bound_jid(&user, Some(requested)) {
        Some(full) => {
            assert_eq!(full.bare(), user, "{requested:?}");
            if !wanted.is_empty() {
                let prepared = ResourcePart::new(wanted).expect("bound, so valid");
                assert_eq!(full.resource().as_str(), prepared.as_str());
            }
            assert_eq!(FullJid::new(full.as_str()).ok().as_ref(), Some(&full));
            assert_eq!(parse_jid(full.as_str()).ok(), Some(Jid::from(full.clone())));
            check_parts(&Jid::from(full.clone()), full.as_str());
        }
        None => assert!(
            !wanted.is_empty() && ResourcePart::new(wanted).is_err(),
            "bind of {requested:?} refused"
        ),
    }
}
