//! End-to-end SCRAM tests: published vectors, the bundled client against the server, and
//! hostile input.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::{Rng, SeedableRng};
use xmppd_sasl::client::ScramClient;
use xmppd_sasl::*;

const SHA1: Mechanism = Mechanism::Scram {
    alg: HashAlg::Sha1,
    plus: false,
};
const SHA1_PLUS: Mechanism = Mechanism::Scram {
    alg: HashAlg::Sha1,
    plus: true,
};

fn scram(alg: HashAlg, plus: bool) -> Mechanism {
    Mechanism::Scram { alg, plus }
}

fn all_offered() -> Vec<Mechanism> {
    Mechanism::ALL.to_vec()
}

fn non_plus_offered() -> Vec<Mechanism> {
    HashAlg::ALL.iter().map(|a| scram(*a, false)).collect()
}

fn bindings() -> ChannelBindings {
    ChannelBindings {
        tls_exporter: Some(b"exporter-data".to_vec()),
        tls_server_end_point: Some(b"end-point-data".to_vec()),
    }
}

fn keys(alg: HashAlg, password: &str) -> ScramKeys {
    ScramKeys::generate(alg, password, 4096).expect("generate")
}

fn assert_malformed<T: std::fmt::Debug>(r: Result<T, SaslError>, what: &str) {
    match r {
        Err(SaslError::MalformedRequest(_)) => {}
        other => panic!("{what}: expected malformed-request, got {other:?}"),
    }
}

fn assert_cb_error<T: std::fmt::Debug>(r: Result<T, SaslError>, what: &str) {
    match r {
        Err(e @ SaslError::ChannelBinding(_)) => assert_eq!(e.condition(), "not-authorized"),
        other => panic!("{what}: expected channel-binding error, got {other:?}"),
    }
}

/// Runs a full exchange; returns the server's verdict on client-final and whether the client
/// accepted the server signature.
fn run(
    mut server: ScramServer,
    mut client: ScramClient,
    server_keys: Option<&ScramKeys>,
) -> Result<bool, SaslError> {
    server.client_first(&client.client_first())?;
    let server_first = server.server_first(server_keys);
    let client_final = client.client_final(&server_first)?;
    let server_final = server.client_final(&client_final)?;
    Ok(client.verify_server_final(&server_final).is_ok())
}

#[test]
fn rfc5802_sha1_vector() {
    let salt = B64.decode("QSXCR+Q6sek8bf92").expect("salt");
    let keys = ScramKeys::derive(HashAlg::Sha1, "pencil", &salt, 4096).expect("derive");
    let mut server = ScramServer::new(SHA1, ChannelBindings::default(), &[], &[])
        .with_nonce("3rfcNHYJY1ZVvWVs7j");
    let first = server
        .client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
        .expect("first");
    assert_eq!(
        first,
        ClientFirst {
            authcid: "user".into(),
            authzid: None
        }
    );
    assert_eq!(
        server.server_first(Some(&keys)),
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    );
    let server_final = server
        .client_final(
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        )
        .expect("final");
    assert_eq!(server_final, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
}

#[test]
fn rfc7677_sha256_vector() {
    let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
    let keys = ScramKeys::derive(HashAlg::Sha256, "pencil", &salt, 4096).expect("derive");
    let mech = scram(HashAlg::Sha256, false);
    let mut server = ScramServer::new(mech, ChannelBindings::default(), &[], &[])
        .with_nonce("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
    server
        .client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        .expect("first");
    assert_eq!(
        server.server_first(Some(&keys)),
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let server_final = server
        .client_final(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        )
        .expect("final");
    assert_eq!(
        server_final,
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
}

#[test]
fn client_reproduces_rfc_vectors() {
    let mut c = ScramClient::new(HashAlg::Sha1, "user", "pencil", None)
        .with_nonce("fyko+d2lbbFgONRv9qkxdawL");
    assert_eq!(c.client_first(), b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL");
    let cf = c
        .client_final(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
        .expect("final");
    assert_eq!(
        cf,
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
    );
    assert!(c
        .verify_server_final(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
        .is_ok());
    assert!(c
        .verify_server_final(b"v=rmF9pqV8S7suAoZWja4dJRkFsKA=")
        .is_err());
    assert!(c.verify_server_final(b"e=other-error").is_err());

    let mut c = ScramClient::new(HashAlg::Sha256, "user", "pencil", None)
        .with_nonce("rOprNGfwEbeRWgbNEkqO");
    c.client_first();
    let cf = c
        .client_final(
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,\
              i=4096",
        )
        .expect("final");
    assert!(cf.ends_with(b",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="));
    assert!(c
        .verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
        .is_ok());
}

/// The full SCRAM-SHA-1-PLUS example of XEP-0474 §5.3 (version 0.5.0), including its `h`
/// attribute and an unknown `x` extension in client-final-message.
#[test]
fn xep0474_example_vector() {
    let offered = [SHA1, SHA1_PLUS];
    let cb_offered = [CbType::TlsServerEndPoint, CbType::TlsExporter];
    assert_eq!(
        downgrade_protection_hash(HashAlg::Sha1, &offered, &cb_offered),
        "G6k/rBLDqgOhRRaCuuatSDFkJ08="
    );
    let cb = ChannelBindings {
        tls_exporter: Some(b"THIS IS FAKE CB DATA".to_vec()),
        tls_server_end_point: None,
    };
    let salt = B64.decode("QSXCR+Q6sek8bf92").expect("salt");
    let keys = ScramKeys::derive(HashAlg::Sha1, "pencil", &salt, 4096).expect("derive");
    let mut server = ScramServer::new(SHA1_PLUS, cb, &offered, &cb_offered)
        .with_nonce("a09117a6-ac50-4f2f-93f1-93799c2bddf6");
    server
        .client_first(b"p=tls-exporter,,n=user,r=12C4CD5C-E38E-4A98-8F6D-15C38F51CCC6")
        .expect("first");
    assert_eq!(
        String::from_utf8(server.server_first(Some(&keys))).expect("utf8"),
        "r=12C4CD5C-E38E-4A98-8F6D-15C38F51CCC6a09117a6-ac50-4f2f-93f1-93799c2bddf6,\
         s=QSXCR+Q6sek8bf92,i=4096,h=G6k/rBLDqgOhRRaCuuatSDFkJ08="
    );
    let server_final = server
        .client_final(
            b"c=cD10bHMtZXhwb3J0ZXIsLFRISVMgSVMgRkFLRSBDQiBEQVRB,\
              r=12C4CD5C-E38E-4A98-8F6D-15C38F51CCC6a09117a6-ac50-4f2f-93f1-93799c2bddf6,\
              x=19C6532F-1CF4-4A27-A18D-DC9CEA41BBB3,p=M/SIDjT+dfcxUh89jZEypRvFxB4=",
        )
        .expect("final");
    assert_eq!(server_final, b"v=MQrMPvv7yv4x4Cq4W4Ih25EqS2c=");
}

#[test]
fn round_trips_every_hash_with_and_without_binding() {
    for alg in HashAlg::ALL {
        let k = keys(alg, "pencil");
        let server = ScramServer::new(scram(alg, false), bindings(), &all_offered(), &[]);
        let client = ScramClient::new(alg, "user", "pencil", None);
        assert_eq!(run(server, client, Some(&k)), Ok(true), "{alg:?}");
        for cb in CbType::ALL {
            let data = bindings().get(cb).expect("data").to_vec();
            let server =
                ScramServer::new(scram(alg, true), bindings(), &all_offered(), &CbType::ALL);
            let client = ScramClient::new(alg, "user", "pencil", Some((cb, data)));
            assert_eq!(run(server, client, Some(&k)), Ok(true), "{alg:?} {cb:?}");
        }
    }
}

#[test]
fn downgrade_protection_round_trip_and_tampering() {
    let offered = all_offered();
    let cbs = [CbType::TlsExporter];
    let k = keys(HashAlg::Sha256, "pencil");
    let mech = scram(HashAlg::Sha256, false);

    let server = ScramServer::new(mech, bindings(), &offered, &cbs);
    let client = ScramClient::new(HashAlg::Sha256, "user", "pencil", None)
        .expect_downgrade_protection(&offered, &cbs);
    assert_eq!(run(server, client, Some(&k)), Ok(true));

    // The client saw a list stripped of the PLUS variants: the hashes differ.
    let server = ScramServer::new(mech, bindings(), &offered, &cbs);
    let client = ScramClient::new(HashAlg::Sha256, "user", "pencil", None)
        .expect_downgrade_protection(&non_plus_offered(), &[]);
    assert_eq!(run(server, client, Some(&k)), Err(SaslError::NotAuthorized));

    // Same mechanisms, channel-binding types removed in transit.
    let server = ScramServer::new(mech, bindings(), &offered, &cbs);
    let client = ScramClient::new(HashAlg::Sha256, "user", "pencil", None)
        .expect_downgrade_protection(&offered, &[]);
    assert_eq!(run(server, client, Some(&k)), Err(SaslError::NotAuthorized));
}

#[test]
fn downgrade_attribute_present_only_when_something_was_offered() {
    let mut server = ScramServer::new(SHA1, ChannelBindings::default(), &[SHA1], &[]);
    server.client_first(b"n,,n=user,r=abc").expect("first");
    let sf = String::from_utf8(server.server_first(None)).expect("utf8");
    let h = downgrade_protection_hash(HashAlg::Sha1, &[SHA1], &[]);
    assert!(sf.ends_with(&format!(",h={h}")), "{sf}");
    assert_eq!(B64.decode(&h).expect("b64").len(), 20);

    let mut server = ScramServer::new(SHA1, ChannelBindings::default(), &[], &[]);
    server.client_first(b"n,,n=user,r=abc").expect("first");
    let sf = String::from_utf8(server.server_first(None)).expect("utf8");
    assert_eq!(sf.split(',').count(), 3, "{sf}");
}

#[test]
fn ssdp_hash_depends_on_hash_and_is_order_independent() {
    let a = downgrade_protection_hash(HashAlg::Sha256, &[SHA1, SHA1_PLUS], &CbType::ALL);
    let b = downgrade_protection_hash(
        HashAlg::Sha256,
        &[SHA1_PLUS, SHA1],
        &[CbType::TlsServerEndPoint, CbType::TlsExporter],
    );
    assert_eq!(a, b);
    assert_ne!(
        a,
        downgrade_protection_hash(HashAlg::Sha512, &[SHA1, SHA1_PLUS], &CbType::ALL)
    );
    assert_ne!(
        a,
        downgrade_protection_hash(HashAlg::Sha256, &[SHA1, SHA1_PLUS], &[])
    );
    assert_ne!(
        a,
        downgrade_protection_hash(HashAlg::Sha256, &[SHA1], &CbType::ALL)
    );
}

#[test]
fn plus_with_mismatching_binding_data_fails_at_final() {
    let k = keys(HashAlg::Sha256, "pencil");
    let server = ScramServer::new(
        scram(HashAlg::Sha256, true),
        bindings(),
        &all_offered(),
        &[],
    );
    let client = ScramClient::new(
        HashAlg::Sha256,
        "user",
        "pencil",
        Some((
            CbType::TlsExporter,
            b"what the MITM's TLS session exports".to_vec(),
        )),
    );
    assert_cb_error(run(server, client, Some(&k)), "mismatching tls-exporter");
}

#[test]
fn plus_requires_available_binding_type() {
    let only_endpoint = ChannelBindings {
        tls_exporter: None,
        tls_server_end_point: Some(b"ep".to_vec()),
    };
    let mech = scram(HashAlg::Sha512, true);
    for msg in [
        &b"p=tls-exporter,,n=user,r=abc"[..],
        b"p=tls-unique,,n=user,r=abc",
    ] {
        let mut server = ScramServer::new(mech, only_endpoint.clone(), &all_offered(), &[]);
        match server.client_first(msg) {
            Err(e @ SaslError::UnsupportedChannelBinding(_)) => {
                assert_eq!(e.condition(), "not-authorized")
            }
            other => panic!("unavailable type: {other:?}"),
        }
    }
    let mut server = ScramServer::new(mech, only_endpoint, &all_offered(), &[]);
    server
        .client_first(b"p=tls-server-end-point,,n=user,r=abc")
        .expect("available type");
    // A PLUS mechanism without a binding request is inconsistent, whatever the flag.
    for msg in [&b"n,,n=user,r=abc"[..], b"y,,n=user,r=abc"] {
        let mut server = ScramServer::new(mech, bindings(), &all_offered(), &[]);
        assert_cb_error(server.client_first(msg), "PLUS without p=");
    }
    // Binding requested under a non-PLUS mechanism.
    let mut server = ScramServer::new(scram(HashAlg::Sha1, false), bindings(), &all_offered(), &[]);
    assert_cb_error(
        server.client_first(b"p=tls-exporter,,n=user,r=abc"),
        "p= without PLUS",
    );
}

#[test]
fn y_flag_is_a_downgrade_only_when_plus_was_offered() {
    let k = keys(HashAlg::Sha256, "pencil");
    let mech = scram(HashAlg::Sha256, false);
    let server = ScramServer::new(mech, bindings(), &all_offered(), &CbType::ALL);
    let client = ScramClient::new(HashAlg::Sha256, "user", "pencil", None).claim_cb_support();
    assert_cb_error(run(server, client, Some(&k)), "y with PLUS offered");

    let server = ScramServer::new(mech, ChannelBindings::default(), &non_plus_offered(), &[]);
    let client = ScramClient::new(HashAlg::Sha256, "user", "pencil", None).claim_cb_support();
    assert_eq!(run(server, client, Some(&k)), Ok(true));
}

#[test]
fn y_flag_is_accepted_after_a_refused_binding_type_and_still_verified() {
    let k = keys(HashAlg::Sha256, "pencil");
    let mech = scram(HashAlg::Sha256, false);
    // A stream where a -PLUS attempt was refused for tls-unique: the fallback with `y` works.
    let mut attempts = Attempts::new(3);
    let mut plus = ScramServer::new(
        scram(HashAlg::Sha256, true),
        bindings(),
        &all_offered(),
        &[],
    );
    let refused = plus
        .client_first(b"p=tls-unique,,n=user,r=abc")
        .expect_err("tls-unique is not offered");
    assert_eq!(
        refused,
        SaslError::UnsupportedChannelBinding("tls-unique".into())
    );
    assert!(!attempts.fail(
        Some(scram(HashAlg::Sha256, true)),
        Stage::BeforeProof,
        Some(&refused)
    ));
    assert!(attempts.y_flag_explained());
    let server = ScramServer::new(mech, bindings(), &all_offered(), &CbType::ALL).accept_y_flag();
    let client = ScramClient::new(HashAlg::Sha256, "user", "pencil", None).claim_cb_support();
    assert_eq!(run(server, client, Some(&k)), Ok(true));

    // The `y` header is still bound into c=: a client-final that drops it fails.
    let mut server =
        ScramServer::new(mech, bindings(), &all_offered(), &CbType::ALL).accept_y_flag();
    server.client_first(b"y,,n=user,r=abc").expect("first");
    let sf = String::from_utf8(server.server_first(Some(&k))).unwrap();
    let nonce = sf.split(',').next().unwrap();
    let forged = format!(
        "c={},{nonce},p={}",
        B64.encode(b"n,,"),
        B64.encode([0u8; 32])
    );
    assert_cb_error(
        server.client_final(forged.as_bytes()),
        "c= without the y header",
    );
    // Wrong password with `y` accepted is still not-authorized.
    let server = ScramServer::new(mech, bindings(), &all_offered(), &CbType::ALL).accept_y_flag();
    let client = ScramClient::new(HashAlg::Sha256, "user", "wrong", None).claim_cb_support();
    assert_eq!(run(server, client, Some(&k)), Err(SaslError::NotAuthorized));
}

#[test]
fn y_flag_with_a_stripped_mechanism_list_stays_a_downgrade() {
    // An attacker removed the -PLUS mechanisms from what the client saw; the client says `y`
    // on its first attempt. Nothing on the stream explains it, so it is refused.
    let k = keys(HashAlg::Sha256, "pencil");
    let attempts = Attempts::new(3);
    assert!(!attempts.y_flag_explained());
    let server = ScramServer::new(
        scram(HashAlg::Sha256, false),
        bindings(),
        &all_offered(),
        &[],
    );
    let client = ScramClient::new(HashAlg::Sha256, "user", "pencil", None).claim_cb_support();
    assert_cb_error(run(server, client, Some(&k)), "y on a fresh stream");
}

#[test]
fn c_attribute_must_carry_the_same_gs2_header() {
    let k = keys(HashAlg::Sha1, "pencil");
    let mut server = ScramServer::new(SHA1, bindings(), &non_plus_offered(), &[]);
    server.client_first(b"y,,n=user,r=abc").expect("first");
    let sf = server.server_first(Some(&k));
    // A client claiming "n" in client-final after "y" in client-first (c=biws is "n,,").
    let mut client = ScramClient::new(HashAlg::Sha1, "user", "pencil", None).with_nonce("abc");
    client.client_first();
    let cf = client.client_final(&sf).expect("client final");
    assert_cb_error(server.client_final(&cf), "c= mismatch");
}

#[test]
fn wrong_password_is_not_authorized_and_client_rejects_nothing_early() {
    for alg in HashAlg::ALL {
        let k = keys(alg, "pencil");
        let server = ScramServer::new(scram(alg, false), bindings(), &all_offered(), &[]);
        let client = ScramClient::new(alg, "user", "Pencil", None);
        assert_eq!(run(server, client, Some(&k)), Err(SaslError::NotAuthorized));
    }
}

#[test]
fn keys_for_another_hash_fail_at_the_end() {
    let k = keys(HashAlg::Sha1, "pencil");
    let mech = scram(HashAlg::Sha256, false);
    let server = ScramServer::new(mech, bindings(), &all_offered(), &[]);
    let client = ScramClient::new(HashAlg::Sha256, "user", "pencil", None);
    assert_eq!(run(server, client, Some(&k)), Err(SaslError::NotAuthorized));
}

#[test]
fn unknown_user_looks_real_until_the_end() {
    for alg in HashAlg::ALL {
        let mech = scram(alg, false);
        let server_first = |user: &str| {
            let mut s = ScramServer::new(mech, bindings(), &[], &[]);
            s.client_first(format!("n,,n={user},r=abc").as_bytes())
                .expect("first");
            String::from_utf8(s.server_first(None)).expect("utf8")
        };
        let salt_of = |sf: &str| sf.split(',').nth(1).expect("salt").to_owned();
        let a1 = server_first("ghost");
        let a2 = server_first("ghost");
        let b = server_first("phantom");
        // Same salt for the same name (as a real account would have), another for another.
        assert_eq!(salt_of(&a1), salt_of(&a2));
        assert_ne!(salt_of(&a1), salt_of(&b));
        assert_eq!(B64.decode(&salt_of(&a1)[2..]).expect("salt").len(), 16);
        assert!(a1.ends_with(&format!(",i={FAKE_ITERATIONS}")), "{a1}");

        let real = keys(alg, "pencil");
        let server = ScramServer::new(mech, bindings(), &all_offered(), &[]);
        let client = ScramClient::new(alg, "ghost", "pencil", None);
        assert_eq!(run(server, client, None), Err(SaslError::NotAuthorized));
        // Shape of a real server-first: same attributes, same salt length.
        let mut s = ScramServer::new(mech, bindings(), &[], &[]);
        s.client_first(b"n,,n=user,r=abc").expect("first");
        let real_sf = String::from_utf8(s.server_first(Some(&real))).expect("utf8");
        assert_eq!(salt_of(&real_sf).len(), salt_of(&a1).len());
        assert_eq!(real_sf.split(',').count(), a1.split(',').count());
    }
}

#[test]
fn server_nonce_is_fresh_printable_and_extends_client_nonce() {
    let nonce = || {
        let mut s = ScramServer::new(SHA1, ChannelBindings::default(), &[], &[]);
        s.client_first(b"n,,n=user,r=clientnonce").expect("first");
        let sf = String::from_utf8(s.server_first(None)).expect("utf8");
        sf.split(',')
            .next()
            .expect("r")
            .strip_prefix("r=")
            .expect("r=")
            .to_owned()
    };
    let (a, b) = (nonce(), nonce());
    assert_ne!(a, b);
    let server_part = a.strip_prefix("clientnonce").expect("prefix");
    assert_eq!(B64.decode(server_part).expect("base64").len(), 24);
    assert!(a.bytes().all(|c| (0x21..=0x7e).contains(&c) && c != b','));
}

#[test]
fn escaped_and_prepared_usernames() {
    let cases = [
        ("n,,n=a=2Cb,r=abc", "a,b"),
        ("n,,n=a=3Db,r=abc", "a=b"),
        ("n,,n==2C=3D=2C,r=abc", ",=,"),
        // SOFT HYPHEN maps to nothing and ROMAN NUMERAL NINE to "IX" under SASLprep.
        ("n,,n=I\u{ad}X,r=abc", "IX"),
        ("n,,n=\u{2168},r=abc", "IX"),
    ];
    for (msg, want) in cases {
        let mut s = ScramServer::new(SHA1, ChannelBindings::default(), &[], &[]);
        let first = s.client_first(msg.as_bytes()).expect(msg);
        assert_eq!(first.authcid, want, "{msg}");
    }
    let k = keys(HashAlg::Sha256, "pencil");
    let server = ScramServer::new(scram(HashAlg::Sha256, false), bindings(), &[], &[]);
    let client = ScramClient::new(HashAlg::Sha256, "we,ird=user", "pencil", None);
    assert_eq!(run(server, client, Some(&k)), Ok(true));
}

#[test]
fn authzid_is_decoded_and_reported() {
    let mut s = ScramServer::new(SHA1, ChannelBindings::default(), &[], &[]);
    let first = s
        .client_first(b"n,a=admin@example.org,n=user,r=abc")
        .expect("first");
    assert_eq!(first.authzid.as_deref(), Some("admin@example.org"));
    let mut s = ScramServer::new(SHA1, ChannelBindings::default(), &[], &[]);
    let first = s.client_first(b"n,a=x=2Cy,n=user,r=abc").expect("first");
    assert_eq!(first.authzid.as_deref(), Some("x,y"));

    let k = keys(HashAlg::Sha1, "pencil");
    let mut server = ScramServer::new(SHA1, bindings(), &[], &[]);
    let mut client =
        ScramClient::new(HashAlg::Sha1, "user", "pencil", None).with_authzid("other@example.org");
    let first = server.client_first(&client.client_first()).expect("first");
    assert_eq!(first.authzid.as_deref(), Some("other@example.org"));
    let cf = client
        .client_final(&server.server_first(Some(&k)))
        .expect("client final");
    let sf = server
        .client_final(&cf)
        .expect("authzid is inside c=, so it verifies");
    assert!(client.verify_server_final(&sf).is_ok());
}

#[test]
fn malformed_client_first_messages() {
    let long_name = format!("n,,n={},r=abc", "a".repeat(MAX_MESSAGE_LEN));
    let cases: Vec<&[u8]> = vec![
        b"",
        b"n",
        b"n,",
        b"n,,",
        b"x,,n=user,r=abc",
        b"p=,,n=user,r=abc",
        b"n,z=user,n=user,r=abc",
        b"n,a=,n=user,r=abc",
        b"n,a=bad=escape,n=user,r=abc",
        b"n,,m=ext,n=user,r=abc",
        b"n,,r=abc,n=user",
        b"n,,n=user",
        b"n,,n=user,",
        b"n,,n=user,r=",
        b"n,,n=user,r=a b",
        b"n,,n=user,r=\xc3\xa9",
        b"n,,n=,r=abc",
        b"n,,n=us=er,r=abc",
        b"n,,n=us=2cer,r=abc",
        b"n,,n=us=2,r=abc",
        b"n,,n=\x07,r=abc",
        b"n,,n=\xad,r=abc",
        b"n,,n=\xc2\xad,r=abc",
        b"n,,n=user\0x,r=abc",
        b"n,,n=user,r=abc,garbage",
        b"n,,n=user,r=abc,=x",
        b"n,,n=user,r=abc,xy=1",
        b"n,,user,r=abc",
        b"n,,N=user,r=abc",
        b"n,,n=u\xffser,r=abc",
        long_name.as_bytes(),
    ];
    for msg in cases {
        let mut s = ScramServer::new(SHA1, bindings(), &non_plus_offered(), &[]);
        assert_malformed(s.client_first(msg), &String::from_utf8_lossy(msg));
        // A failed exchange stays failed.
        assert!(s.server_first(None).is_empty());
        assert!(s.client_final(b"c=biws,r=abc,p=AAAA").is_err());
    }
}

#[test]
fn client_first_extensions_are_ignored() {
    let mut s = ScramServer::new(SHA1, bindings(), &[], &[]);
    let first = s.client_first(b"n,,n=user,r=abc,x=1,q=two").expect("first");
    assert_eq!(first.authcid, "user");
}

#[test]
fn malformed_client_final_messages() {
    let k = keys(HashAlg::Sha1, "pencil");
    let fresh = || {
        let mut s = ScramServer::new(SHA1, ChannelBindings::default(), &[], &[]).with_nonce("srv");
        s.client_first(b"n,,n=user,r=cli").expect("first");
        s.server_first(Some(&k));
        s
    };
    let proof = B64.encode([0u8; 20]);
    let huge = format!(
        "c=biws,r=clisrv,x={},p={proof}",
        "a".repeat(MAX_MESSAGE_LEN)
    );
    let malformed: Vec<String> = vec![
        String::new(),
        "c=biws".into(),
        "c=biws,r=clisrv".into(),
        format!("r=clisrv,c=biws,p={proof}"),
        format!("c=biws,p={proof}"),
        format!("c=b!ws,r=clisrv,p={proof}"),
        format!("c=biw,r=clisrv,p={proof}"),
        "c=biws,r=clisrv,p=***".into(),
        format!("c=biws,r=clisrv,p={proof},x=1"),
        format!("c=biws,r=clisrv,bad,p={proof}"),
        format!("c=biws,r=clisrv,,p={proof}"),
        format!("x=1,c=biws,r=clisrv,p={proof}"),
        huge,
    ];
    for msg in &malformed {
        assert_malformed(fresh().client_final(msg.as_bytes()), msg);
    }
    assert_malformed(
        fresh().client_final(b"c=biws,r=clisrv,p=\xff"),
        "invalid UTF-8",
    );

    let not_authorized = [
        format!("c=biws,r=clisrvX,p={proof}"),
        format!("c=biws,r=cli,p={proof}"),
        format!("c=biws,r=clisrv,p={proof}"),
        format!("c=biws,r=clisrv,p={}", B64.encode([0u8; 19])),
        format!("c=biws,r=clisrv,p={}", B64.encode([0u8; 32])),
        "c=biws,r=clisrv,p=".to_owned(),
    ];
    for msg in &not_authorized {
        assert_eq!(
            fresh().client_final(msg.as_bytes()),
            Err(SaslError::NotAuthorized),
            "{msg}"
        );
    }
    // "eSws" is "y,,": a different GS2 header than the one sent.
    assert_cb_error(
        fresh().client_final(format!("c=eSws,r=clisrv,p={proof}").as_bytes()),
        "c=",
    );
}

#[test]
fn tampered_or_replayed_proofs_fail() {
    let k = keys(HashAlg::Sha256, "pencil");
    let mech = scram(HashAlg::Sha256, false);
    let mut server = ScramServer::new(mech, bindings(), &[], &[]);
    let mut client = ScramClient::new(HashAlg::Sha256, "user", "pencil", None);
    server.client_first(&client.client_first()).expect("first");
    let cf = client
        .client_final(&server.server_first(Some(&k)))
        .expect("client final");

    // Flip one bit of the proof.
    let text = String::from_utf8(cf.clone()).expect("utf8");
    let (head, proof) = text.rsplit_once(",p=").expect("proof");
    let mut raw = B64.decode(proof).expect("b64");
    raw[0] ^= 1;
    let tampered = format!("{head},p={}", B64.encode(raw));
    let mut other = ScramServer::new(mech, bindings(), &[], &[]);
    other.client_first(&client.client_first()).expect("first");
    other.server_first(Some(&k));
    // Replaying a proof into a new exchange fails: the server nonce differs.
    assert_eq!(other.client_final(&cf), Err(SaslError::NotAuthorized));

    assert_eq!(
        server.client_final(tampered.as_bytes()),
        Err(SaslError::NotAuthorized)
    );
    // The failed exchange cannot be retried with the genuine proof.
    assert!(server.client_final(&cf).is_err());
}

#[test]
fn calls_out_of_order_fail() {
    let mut s = ScramServer::new(SHA1, bindings(), &[], &[]);
    assert!(s.server_first(None).is_empty());
    assert!(s.client_first(b"n,,n=user,r=abc").is_err());

    let mut s = ScramServer::new(SHA1, bindings(), &[], &[]);
    assert_malformed(s.client_final(b"c=biws,r=abc,p=AAAA"), "final first");

    let mut s = ScramServer::new(SHA1, bindings(), &[], &[]);
    s.client_first(b"n,,n=user,r=abc").expect("first");
    assert_malformed(s.client_first(b"n,,n=user,r=abc"), "first twice");

    // A completed exchange does not accept more.
    let k = keys(HashAlg::Sha1, "pencil");
    let mut server = ScramServer::new(SHA1, bindings(), &[], &[]);
    let mut client = ScramClient::new(HashAlg::Sha1, "user", "pencil", None);
    server.client_first(&client.client_first()).expect("first");
    let cf = client
        .client_final(&server.server_first(Some(&k)))
        .expect("client final");
    server.client_final(&cf).expect("success");
    assert!(server.client_final(&cf).is_err());
}

#[test]
fn non_scram_mechanism_is_invalid() {
    for mech in [Mechanism::Plain, Mechanism::External] {
        let mut s = ScramServer::new(mech, bindings(), &[], &[]);
        assert_eq!(
            s.client_first(b"n,,n=user,r=abc"),
            Err(SaslError::InvalidMechanism)
        );
    }
}

#[test]
fn random_input_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5c7a3);
    let k = keys(HashAlg::Sha1, "pencil");
    let alphabet = b"npyrcma=,2CD3-_tls\0\xff\xc3+/ ";
    for _ in 0..3000 {
        let len = rng.gen_range(0..64);
        let msg: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
            .collect();
        let mut s = ScramServer::new(SHA1_PLUS, bindings(), &all_offered(), &CbType::ALL);
        let _ = s.client_first(&msg);
        let mut s = ScramServer::new(SHA1, bindings(), &[], &[]);
        s.client_first(b"n,,n=user,r=abc").expect("first");
        s.server_first(Some(&k));
        let mut tail = b"c=biws,r=".to_vec();
        tail.extend_from_slice(&msg);
        assert!(s.client_final(&tail).is_err());
        let _ = parse_plain(&msg);
    }
}
