//! Behaviour tests of the framer and the serializer, driven through the public API.

use minidom::Element;
use rand::{Rng, SeedableRng};
use rxml::Namespace;

use crate::*;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' \
    xml:lang='en'>";

/// A client stream exercising entities, CDATA, foreign namespaces, namespaced attributes,
/// prefixed children, keepalives and the close.
fn sample_stream() -> String {
    let mut s = String::from(HEADER);
    s.push_str(
        "\n  <auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldA==</auth>",
    );
    s.push_str(
        "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>balcony</resource></bind></iq> ",
    );
    for i in 0..20 {
        s.push_str(&format!(
            "<message to='romeo@example.net/{i}' type=\"chat\" id='m{i}' xml:lang='fr'>\
             <body>Wherefore &amp; why &lt;art&gt; thou &#x263A; &#9731; <![CDATA[<raw> & ]]>{i}\
             </body><x:data xmlns:x='urn:example:x' x:kind='a&apos;b'><x:item n='{i}'/></x:data>\
             <active xmlns='http://jabber.org/protocol/chatstates'/></message>\n\t "
        ));
    }
    s.push_str("<presence><show>away</show><status>\u{e9}t\u{e9} \u{1F600}</status></presence>");
    s.push_str("<stream:features/></stream:stream>");
    s
}

/// Feeds `input` in chunks of the given sizes (cycled), draining events after each chunk.
fn run_chunks(
    input: &[u8],
    sizes: &mut dyn FnMut() -> usize,
    limits: Limits,
) -> (Vec<Event>, Option<FramerError>) {
    let mut framer = Framer::new(limits);
    let mut events = Vec::new();
    let mut rest = input;
    loop {
        loop {
            match framer.next_event() {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => break,
                Err(e) => return (events, Some(e)),
            }
        }
        if rest.is_empty() {
            return (events, None);
        }
        let n = sizes().clamp(1, rest.len());
        framer.feed(&rest[..n]);
        rest = &rest[n..];
    }
}

fn run_whole(input: &[u8], limits: Limits) -> (Vec<Event>, Option<FramerError>) {
    run_chunks(input, &mut || usize::MAX, limits)
}

fn first_error(input: &str) -> FramerError {
    match run_whole(input.as_bytes(), Limits::DEFAULT) {
        (_, Some(e)) => e,
        (events, None) => panic!("no error for {input:?}, got {events:?}"),
    }
}

fn elements(events: &[Event]) -> Vec<&Element> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Element(el) => Some(el),
            _ => None,
        })
        .collect()
}

#[test]
fn sample_stream_events() {
    let input = sample_stream();
    let (events, err) = run_whole(input.as_bytes(), Limits::DEFAULT);
    assert_eq!(err, None);
    let Event::Header(h) = &events[0] else {
        panic!("first event {:?}", events[0])
    };
    assert_eq!(h.to.as_deref(), Some("example.com"));
    assert_eq!(h.from, None);
    assert_eq!(h.version.as_deref(), Some("1.0"));
    assert_eq!(h.lang.as_deref(), Some("en"));
    assert_eq!(h.default_ns.as_deref(), Some(NS_CLIENT));
    assert_eq!(events.last(), Some(&Event::Close));
    let els = elements(&events);
    assert_eq!(els.len(), 24);
    assert!(els[0].is("auth", "urn:ietf:params:xml:ns:xmpp-sasl"));
    assert_eq!(els[0].text(), "AGp1bGlldA==");
    assert!(els[1].is("iq", NS_CLIENT));
    let bind = els[1]
        .get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
        .expect("bind");
    assert!(bind
        .get_child("resource", "urn:ietf:params:xml:ns:xmpp-bind")
        .is_some());

    let msg = els[7];
    assert!(msg.is("message", NS_CLIENT));
    assert_eq!(msg.attr("type"), Some("chat"));
    assert_eq!(msg.attr_ns(rxml::XMLNS_XML, "lang"), Some("fr"));
    let body = msg.get_child("body", NS_CLIENT).expect("body");
    assert_eq!(
        body.text(),
        "Wherefore & why <art> thou \u{263A} \u{2603} <raw> & 5"
    );
    let data = msg.get_child("data", "urn:example:x").expect("x:data");
    assert_eq!(data.attr_ns("urn:example:x", "kind"), Some("a'b"));
    assert!(data.get_child("item", "urn:example:x").is_some());
    assert!(msg.has_child("active", "http://jabber.org/protocol/chatstates"));

    assert!(els[23].is("features", NS_STREAM));
}

#[test]
fn every_split_point_gives_the_same_events() {
    let input = sample_stream();
    let bytes = input.as_bytes();
    assert!(bytes.len() > 3000, "sample should be a few KB");
    let (expected, err) = run_whole(bytes, Limits::DEFAULT);
    assert_eq!(err, None);
    for split in 0..=bytes.len() {
        let mut first = true;
        let (events, err) = run_chunks(
            bytes,
            &mut || {
                let n = if first { split.max(1) } else { usize::MAX };
                first = false;
                n
            },
            Limits::DEFAULT,
        );
        assert_eq!(err, None, "split at {split}");
        assert_eq!(events, expected, "split at {split}");
    }
}

#[test]
fn byte_at_a_time_and_random_chunks_give_the_same_events() {
    let input = sample_stream();
    let bytes = input.as_bytes();
    let (expected, _) = run_whole(bytes, Limits::DEFAULT);
    let (events, err) = run_chunks(bytes, &mut || 1, Limits::DEFAULT);
    assert_eq!(err, None);
    assert_eq!(events, expected);

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x786d7070);
    for _ in 0..200 {
        let max = rng.gen_range(1..200);
        let (events, err) = run_chunks(bytes, &mut || rng.gen_range(1..=max), Limits::DEFAULT);
        assert_eq!(err, None);
        assert_eq!(events, expected);
    }
}

#[test]
fn buffered_counts_unconsumed_bytes() {
    let mut f = Framer::new(Limits::PRE_AUTH);
    f.feed(HEADER.as_bytes());
    assert!(matches!(f.next_event(), Ok(Some(Event::Header(_)))));
    assert_eq!(f.buffered(), 0);
    let starttls = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
    f.feed(&starttls.as_bytes()[..10]);
    assert_eq!(f.next_event(), Ok(None));
    assert_eq!(f.buffered(), 10, "a partial start tag is still buffered");
    f.feed(&starttls.as_bytes()[10..]);
    f.feed(b"\n ");
    assert!(matches!(f.next_event(), Ok(Some(Event::Element(_)))));
    assert_eq!(f.next_event(), Ok(None));
    assert_eq!(f.buffered(), 0, "trailing whitespace is consumed");
    // A client pipelining its TLS ClientHello after <starttls/> must be detectable.
    f.feed(b"\x16\x03\x01");
    assert_eq!(f.buffered(), 3);
}

#[test]
fn reset_after_starttls_accepts_a_new_declaration_and_header() {
    let mut f = Framer::new(Limits::PRE_AUTH);
    f.feed(HEADER.as_bytes());
    f.feed(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert!(matches!(f.next_event(), Ok(Some(Event::Header(_)))));
    let Ok(Some(Event::Element(el))) = f.next_event() else {
        panic!("no starttls")
    };
    assert!(el.is("starttls", "urn:ietf:params:xml:ns:xmpp-tls"));
    assert_eq!(f.buffered(), 0);
    f.reset();
    // Without the reset a second declaration would be a processing instruction.
    f.feed(HEADER.replace("example.com", "example.org").as_bytes());
    let Ok(Some(Event::Header(h))) = f.next_event() else {
        panic!("no second header")
    };
    assert_eq!(h.to.as_deref(), Some("example.org"));

    let mut g = Framer::new(Limits::PRE_AUTH);
    g.feed(HEADER.as_bytes());
    g.feed(HEADER.as_bytes());
    assert!(matches!(g.next_event(), Ok(Some(Event::Header(_)))));
    assert!(g.next_event().is_err());
}

#[test]
fn reset_discards_buffered_input() {
    let mut f = Framer::new(Limits::PRE_AUTH);
    f.feed(HEADER.as_bytes());
    f.feed(b"<message><bo");
    assert!(matches!(f.next_event(), Ok(Some(Event::Header(_)))));
    assert_eq!(f.next_event(), Ok(None));
    assert!(f.buffered() > 0);
    f.reset();
    assert_eq!(f.buffered(), 0);
    f.feed(HEADER.as_bytes());
    assert!(matches!(f.next_event(), Ok(Some(Event::Header(_)))));
}

#[test]
fn restricted_xml_is_rejected() {
    let cases = [
        "<?xml version='1.0'?><!DOCTYPE stream:stream>",
        "<!DOCTYPE foo [<!ENTITY x 'y'>]><stream:stream/>",
        "<!-- hello --><stream:stream/>",
        "<?xml-stylesheet href='x'?><stream:stream/>",
    ];
    for case in cases {
        let e = first_error(case);
        assert_eq!(
            e.condition(),
            StreamErrorCondition::RestrictedXml,
            "{case}: {e}"
        );
    }
    let in_stream = [
        "<message><!-- c --></message>",
        "<!-- c -->",
        "<?foo bar?>",
        "<message><?foo bar?></message>",
        "<!ENTITY x 'y'>",
        "<message><!ENTITY x 'y'></message>",
        "<message><body>&xxe;</body></message>",
        "<message to='&xxe;'/>",
    ];
    for case in in_stream {
        let e = first_error(&format!("{HEADER}{case}"));
        assert_eq!(
            e.condition(),
            StreamErrorCondition::RestrictedXml,
            "{case}: {e}"
        );
    }
}

#[test]
fn malformed_xml_is_rejected() {
    let cases = [
        "<message></iq>",
        "<message><body></message>",
        "<message to='a' to='b'/>",
        "<message xmlns:a='u' xmlns:b='u' a:x='1' b:x='2'/>",
        "<message xmlns:a='u' xmlns:a='v'/>",
        "<message to=a/>",
        "<message>\u{0}</message>",
        "</stream:stream></stream:stream>",
        "<message>&#0;</message>",
    ];
    for case in cases {
        let e = first_error(&format!("{HEADER}{case}"));
        assert_eq!(
            e.condition(),
            StreamErrorCondition::NotWellFormed,
            "{case}: {e}"
        );
    }
    let mut bad_utf8 = HEADER.as_bytes().to_vec();
    bad_utf8.extend_from_slice(b"<message><body>\xff\xfe</body></message>");
    let (_, e) = run_whole(&bad_utf8, Limits::DEFAULT);
    assert_eq!(
        e.map(|e| e.condition()),
        Some(StreamErrorCondition::NotWellFormed)
    );
}

#[test]
fn undeclared_prefixes_are_bad_namespace_prefix() {
    for case in [
        "<foo:message/>",
        "<message foo:to='x'/>",
        "<message><a:b/></message>",
    ] {
        let e = first_error(&format!("{HEADER}{case}"));
        assert_eq!(
            e.condition(),
            StreamErrorCondition::BadNamespacePrefix,
            "{case}: {e}"
        );
    }
}

#[test]
fn the_root_must_be_a_prefixed_stream_element() {
    let wrong_ns = "<stream:stream xmlns:stream='urn:wrong' xmlns='jabber:client'>";
    assert_eq!(
        first_error(wrong_ns).condition(),
        StreamErrorCondition::InvalidNamespace
    );
    let no_ns = "<stream xmlns='jabber:client'>";
    assert_eq!(
        first_error(no_ns).condition(),
        StreamErrorCondition::InvalidNamespace
    );
    let unprefixed = "<stream xmlns='http://etherx.jabber.org/streams'>";
    assert_eq!(
        first_error(unprefixed).condition(),
        StreamErrorCondition::BadNamespacePrefix
    );
    let undeclared = "<stream:stream xmlns='jabber:client'>";
    assert_eq!(
        first_error(undeclared).condition(),
        StreamErrorCondition::BadNamespacePrefix
    );
    let wrong_name = "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>";
    assert_eq!(
        first_error(wrong_name).condition(),
        StreamErrorCondition::NotWellFormed
    );

    let server = "<stream:stream xmlns='jabber:server' \
        xmlns:stream='http://etherx.jabber.org/streams' from='a.example' id='x'><db:result \
        xmlns:db='jabber:server:dialback'/><iq type='get'/>";
    let (events, err) = run_whole(server.as_bytes(), Limits::DEFAULT);
    assert_eq!(err, None);
    let Event::Header(h) = &events[0] else {
        panic!("no header")
    };
    assert_eq!(h.default_ns.as_deref(), Some(NS_SERVER));
    assert_eq!(h.from.as_deref(), Some("a.example"));
    assert_eq!(h.id.as_deref(), Some("x"));
    let els = elements(&events);
    assert!(els[0].is("result", "jabber:server:dialback"));
    assert!(els[1].is("iq", NS_SERVER));
}

/// Feeds `prefix` and then `filler` repeatedly in 4 KiB chunks; returns the error and how many
/// bytes had been fed when it was reported.
fn flood(prefix: &str, filler: &[u8], limits: Limits, max_total: usize) -> (FramerError, usize) {
    let mut f = Framer::new(limits);
    f.feed(prefix.as_bytes());
    let mut fed = prefix.len();
    let chunk: Vec<u8> = filler.iter().copied().cycle().take(4096).collect();
    while fed < max_total {
        loop {
            match f.next_event() {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(e) => {
                    // Nothing of the flood is kept once the stream is dead.
                    assert!(f.input_capacity() <= 2 * 4096 + prefix.len());
                    return (e, fed);
                }
            }
        }
        // What the framer holds never exceeds the limit plus one read.
        assert!(f.buffered() <= limits.max_stanza_bytes.max(MAX_HEADER_BYTES) + 4096);
        f.feed(&chunk);
        fed += chunk.len();
    }
    panic!("no error after {fed} bytes of {prefix:?}");
}

#[test]
fn oversized_stanzas_are_stopped_at_the_limit() {
    let limits = Limits::PRE_AUTH;
    let cap = limits.max_stanza_bytes;
    let prefixes = [
        format!("{HEADER}<message><body>"),
        format!("{HEADER}<message to='"),
        format!("{HEADER}<message "),
        format!("{HEADER}<message><body><![CDATA["),
        format!("{HEADER}<a"),
    ];
    let fillers: [&[u8]; 5] = [b"blah ", b"x", b"\n", b"z", b"aaaa"];
    for (prefix, filler) in prefixes.iter().zip(fillers) {
        let (e, fed) = flood(prefix, filler, limits, 10 << 20);
        assert_eq!(
            e.condition(),
            StreamErrorCondition::PolicyViolation,
            "{prefix}: {e}"
        );
        assert!(
            fed <= HEADER.len() + cap + 2 * 4096,
            "{prefix}: stopped only after {fed}"
        );
    }
}

#[test]
fn the_byte_limit_is_exact_and_follows_set_limits() {
    let limits = Limits {
        max_stanza_bytes: 64,
        ..Limits::DEFAULT
    };
    let stanza = |n: usize| format!("<message><body>{}</body></message>", "a".repeat(n));
    let overhead = stanza(0).len();
    let fits = stanza(64 - overhead);
    let too_big = stanza(64 - overhead + 1);
    let (events, err) = run_whole(format!("{HEADER}{fits} {fits}").as_bytes(), limits);
    assert_eq!(err, None);
    assert_eq!(elements(&events).len(), 2);
    let (_, err) = run_whole(format!("{HEADER}{too_big}").as_bytes(), limits);
    assert_eq!(
        err.map(|e| e.condition()),
        Some(StreamErrorCondition::PolicyViolation)
    );

    let mut f = Framer::new(limits);
    f.feed(HEADER.as_bytes());
    assert!(matches!(f.next_event(), Ok(Some(Event::Header(_)))));
    f.set_limits(Limits::DEFAULT);
    f.feed(too_big.as_bytes());
    assert!(matches!(f.next_event(), Ok(Some(Event::Element(_)))));
}

#[test]
fn depth_element_and_attribute_limits() {
    let limits = Limits::PRE_AUTH;
    let deep_ok = format!(
        "{}{}",
        "<a>".repeat(limits.max_depth),
        "</a>".repeat(limits.max_depth)
    );
    assert_eq!(
        run_whole(format!("{HEADER}{deep_ok}").as_bytes(), limits).1,
        None
    );
    let deep = "<a>".repeat(limits.max_depth + 1);
    let e = run_whole(format!("{HEADER}{deep}").as_bytes(), limits)
        .1
        .expect("depth");
    assert_eq!(e.condition(), StreamErrorCondition::PolicyViolation, "{e}");

    let many = format!("<m>{}</m>", "<a/>".repeat(limits.max_elements));
    let e = run_whole(format!("{HEADER}{many}").as_bytes(), limits)
        .1
        .expect("elements");
    assert_eq!(e.condition(), StreamErrorCondition::PolicyViolation, "{e}");
    let enough = format!("<m>{}</m>", "<a/>".repeat(limits.max_elements - 1));
    assert_eq!(
        run_whole(format!("{HEADER}{enough}").as_bytes(), limits).1,
        None
    );

    let attrs = |n: usize| (0..n).map(|i| format!(" a{i}=''")).collect::<String>();
    let ok = format!("<m{}/>", attrs(limits.max_attributes));
    assert_eq!(
        run_whole(format!("{HEADER}{ok}").as_bytes(), limits).1,
        None
    );
    let bad = format!("<m{}/>", attrs(limits.max_attributes + 1));
    let e = run_whole(format!("{HEADER}{bad}").as_bytes(), limits)
        .1
        .expect("attributes");
    assert_eq!(e.condition(), StreamErrorCondition::PolicyViolation, "{e}");
    // Namespace declarations are attributes too.
    let decls = (0..=limits.max_attributes)
        .map(|i| format!(" xmlns:p{i}='u{i}'"))
        .collect::<String>();
    let e = run_whole(format!("{HEADER}<m{decls}/>").as_bytes(), limits)
        .1
        .expect("decls");
    assert_eq!(e.condition(), StreamErrorCondition::PolicyViolation, "{e}");
}

#[test]
fn header_size_is_capped() {
    let root = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='";
    let (e, fed) = flood(root, b"a", Limits::DEFAULT, 1 << 20);
    assert_eq!(e.condition(), StreamErrorCondition::PolicyViolation, "{e}");
    assert!(fed <= MAX_HEADER_BYTES + 2 * 4096);
    let attrs = (0..=Limits::DEFAULT.max_attributes).map(|i| format!(" a{i}='1'"));
    let root = format!("<stream:stream{}>", attrs.collect::<String>());
    assert_eq!(
        first_error(&root).condition(),
        StreamErrorCondition::PolicyViolation
    );
    // Whitespace after the declaration is accounted to the header, so it is capped too.
    let (e, _) = flood("<?xml version='1.0'?>", b"\n", Limits::DEFAULT, 1 << 20);
    assert_eq!(e.condition(), StreamErrorCondition::PolicyViolation, "{e}");
}

#[test]
fn whitespace_between_stanzas_is_dropped_not_stored() {
    let mut f = Framer::new(Limits::PRE_AUTH);
    f.feed(HEADER.as_bytes());
    assert!(matches!(f.next_event(), Ok(Some(Event::Header(_)))));
    let spaces = vec![b' '; 4096];
    for _ in 0..256 {
        f.feed(&spaces);
        assert_eq!(f.next_event(), Ok(None));
        assert_eq!(f.buffered(), 0);
    }
    f.feed(b"<presence/>");
    assert!(matches!(f.next_event(), Ok(Some(Event::Element(_)))));
}

#[test]
fn errors_are_sticky() {
    let mut f = Framer::new(Limits::DEFAULT);
    f.feed(format!("{HEADER}<a></b>").as_bytes());
    assert!(matches!(f.next_event(), Ok(Some(Event::Header(_)))));
    let e = f.next_event().expect_err("mismatch");
    f.feed(b"<presence/>");
    assert_eq!(f.next_event(), Err(e));
}

#[test]
fn condition_names() {
    assert_eq!(
        StreamErrorCondition::NotWellFormed.as_str(),
        "not-well-formed"
    );
    assert_eq!(
        StreamErrorCondition::UnsupportedStanzaType.as_str(),
        "unsupported-stanza-type"
    );
    assert_eq!(
        FramerError::LimitExceeded(String::new())
            .condition()
            .as_str(),
        "policy-violation"
    );
    assert_eq!(
        FramerError::RestrictedXml(String::new())
            .condition()
            .as_str(),
        "restricted-xml"
    );
}

/// Parses `xml` (top-level elements) inside a jabber:client stream.
fn parse_elements(xml: &[u8]) -> Vec<Element> {
    let mut input = HEADER.as_bytes().to_vec();
    input.extend_from_slice(xml);
    let (events, err) = run_whole(&input, Limits::DEFAULT);
    assert_eq!(err, None, "{}", String::from_utf8_lossy(xml));
    elements(&events).into_iter().cloned().collect()
}

fn to_xml(el: &Element) -> String {
    let mut out = Vec::new();
    serialize(el, NS_CLIENT, &mut out);
    String::from_utf8(out).expect("serializer writes UTF-8")
}

#[test]
fn serialize_round_trips_the_sample() {
    let input = sample_stream();
    let (events, _) = run_whole(input.as_bytes(), Limits::DEFAULT);
    let originals: Vec<Element> = elements(&events).into_iter().cloned().collect();
    let mut out = Vec::new();
    for el in &originals {
        serialize(el, NS_CLIENT, &mut out);
    }
    assert_eq!(parse_elements(&out), originals);
}

#[test]
fn serialize_declares_namespaces_only_where_they_change() {
    let els = parse_elements(
        b"<message xmlns='jabber:client' to='a@b'><body>hi</body>\
          <active xmlns='http://jabber.org/protocol/chatstates'><inner/></active></message>\
          <proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><stream:features><starttls \
          xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>\
          </stream:features>",
    );
    assert_eq!(
        to_xml(&els[0]),
        "<message to='a@b'><body>hi</body><active \
         xmlns='http://jabber.org/protocol/chatstates'><inner/></active></message>"
    );
    assert_eq!(
        to_xml(&els[1]),
        "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
    );
    assert_eq!(
        to_xml(&els[2]),
        "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><bind \
         xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
    );
    // A child back in the stream's default namespace must re-declare it.
    let mut outer = Element::bare("query", "jabber:iq:roster");
    outer.append_child(Element::bare("message", NS_CLIENT));
    let xml = to_xml(&outer);
    assert_eq!(
        xml,
        "<query xmlns='jabber:iq:roster'><message xmlns='jabber:client'/></query>"
    );
    assert_eq!(parse_elements(xml.as_bytes()), vec![outer]);
}

#[test]
fn serialize_escapes_text_and_attributes() {
    let mut el = Element::builder("message", NS_CLIENT)
        .attr(
            rxml::NcName::try_from("id").expect("name"),
            "a'b\"c<d>&e\tf\ng\rh",
        )
        .attr_ns(
            Namespace::XML,
            rxml::NcName::try_from("lang").expect("name"),
            "en",
        )
        .attr_ns(
            Namespace::from("urn:x"),
            rxml::NcName::try_from("y").expect("name"),
            "1",
        )
        .build();
    el.append_text_node("1 < 2 && 3 > 2 ]]> 'q' \"r\"\r\n");
    let xml = to_xml(&el);
    assert!(!xml.contains("a'b"));
    assert!(xml.contains("&apos;") && xml.contains("&quot;") && xml.contains("&lt;d&gt;"));
    assert!(xml.contains("1 &lt; 2 &amp;&amp; 3 &gt; 2 ]]&gt;"));
    assert!(xml.contains("xml:lang='en'"));
    assert_eq!(parse_elements(xml.as_bytes()), vec![el]);
}

#[test]
fn serialize_addressed_rewrites_only_the_top_level_to() {
    let mut el: Element = "<message xmlns='jabber:client' from='room@muc/nick' to='a@x/1' \
        type='groupchat'><body>hi</body><x xmlns='urn:x' to='keep'/></message>"
        .parse()
        .expect("parses");
    let mut out = Vec::new();
    serialize_addressed(&el, NS_CLIENT, "b&c@x/2", &mut out);
    let got = parse_elements(&out);
    assert_eq!(got[0].attr("to"), Some("b&c@x/2"));
    assert_eq!(
        got[0].get_child("x", "urn:x").and_then(|x| x.attr("to")),
        Some("keep")
    );
    // Without a `to` of its own, the element gets one.
    el.attrs_mut().remove(Namespace::none(), "to");
    let mut out = Vec::new();
    serialize_addressed(&el, NS_CLIENT, "c@x/3", &mut out);
    assert_eq!(parse_elements(&out)[0].attr("to"), Some("c@x/3"));
    assert_eq!(
        el.attr("to"),
        None,
        "the shared element itself is unchanged"
    );
}

#[test]
fn serialize_skips_stray_xmlns_attributes() {
    let el = Element::builder("x", "urn:a")
        .attr(rxml::NcName::try_from("xmlns").expect("name"), "urn:b")
        .build();
    let xml = to_xml(&el);
    assert_eq!(xml, "<x xmlns='urn:a'/>");
}

#[test]
fn stream_header_is_parseable_and_escaped() {
    let header = stream_header(
        NS_CLIENT,
        "example.com",
        Some("jul'iet@example.com"),
        "i<d",
        "en",
    );
    assert!(header.starts_with("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "));
    let (events, err) = run_whole(header.as_bytes(), Limits::PRE_AUTH);
    assert_eq!(err, None);
    let expected = StreamHeader {
        to: Some("jul'iet@example.com".into()),
        from: Some("example.com".into()),
        id: Some("i<d".into()),
        version: Some("1.0".into()),
        lang: Some("en".into()),
        default_ns: Some(NS_CLIENT.into()),
    };
    assert_eq!(events, vec![Event::Header(expected)]);
    let no_to = stream_header(NS_SERVER, "example.com", None, "x", "en");
    assert!(!no_to.contains(" to="));
}

#[test]
fn stream_error_is_parseable() {
    let xml = stream_error(
        StreamErrorCondition::PolicyViolation,
        Some("too <big> & bad"),
    );
    let els = parse_elements(xml.as_bytes());
    assert_eq!(els.len(), 1);
    assert!(els[0].is("error", NS_STREAM));
    assert!(els[0].has_child("policy-violation", NS_STREAM_ERRORS));
    let text = els[0].get_child("text", NS_STREAM_ERRORS).expect("text");
    assert_eq!(text.text(), "too <big> & bad");
    let bare = stream_error(StreamErrorCondition::Conflict, None);
    assert_eq!(
        bare,
        "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
    );
}

#[test]
fn serialize_replaces_characters_xml_forbids() {
    let mut el = Element::builder("body", "urn:a").build();
    el.append_text_node("bell\u{7} esc\u{1b}[0m tab\tok");
    let xml = to_xml(&el);
    assert!(!xml.bytes().any(|b| b < 0x20 && b != b'\t'), "{xml:?}");
    let back = parse_elements(xml.as_bytes());
    assert_eq!(back[0].text(), "bell\u{FFFD} esc\u{FFFD}[0m tab\tok");
}

/// Releasing the buffers whenever the input runs dry, wherever the chunks cut the stream
/// (inside names, attribute values, text, entities), yields the same events as not releasing.
#[test]
fn release_idle_between_reads_changes_nothing() {
    let input = sample_stream();
    let (expected, err) = run_whole(input.as_bytes(), Limits::DEFAULT);
    assert_eq!(err, None);
    for size in [1, 2, 3, 7, 64, 500] {
        let run = |release: bool| {
            let mut framer = Framer::new(Limits::DEFAULT);
            let mut events = Vec::new();
            for chunk in input.as_bytes().chunks(size) {
                framer.feed(chunk);
                while let Some(ev) = framer.next_event().unwrap() {
                    events.push(ev);
                }
                if release {
                    framer.release_idle();
                }
            }
            (events, framer.buffered())
        };
        let (events, buffered) = run(true);
        assert_eq!(events, expected, "chunks of {size}");
        // What is left over (the stream's trailing bytes) is the same as without releasing.
        assert_eq!(buffered, run(false).1, "chunks of {size}");
    }
}

/// Between stanzas an idle framer holds no input buffer.
#[test]
fn release_idle_frees_the_input_buffer() {
    let mut framer = Framer::new(Limits::DEFAULT);
    framer.feed(HEADER.as_bytes());
    framer.feed(b"<presence/>");
    while framer.next_event().unwrap().is_some() {}
    framer.release_idle();
    assert_eq!(framer.input_capacity(), 0);
    // A stanza cut short is kept, and completes with the next input.
    framer.feed(b"<message><bo");
    assert_eq!(framer.next_event().unwrap(), None);
    framer.release_idle();
    framer.feed(b"dy>hi</body></message>");
    let Some(Event::Element(el)) = framer.next_event().unwrap() else {
        panic!("no message");
    };
    assert_eq!(
        el.get_child("body", NS_CLIENT).map(Element::text),
        Some("hi".into())
    );
}
