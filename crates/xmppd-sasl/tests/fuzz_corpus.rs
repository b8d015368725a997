//! Replays the committed `sasl` fuzz corpus, and seeded mutations of it, through the SASL
//! oracle (`xmppd_sasl::fuzzing::check`) on stable Rust.

#[path = "../../../fuzz/replay.rs"]
mod replay;

/// The pieces of the SCRAM and PLAIN grammars, and the template's placeholders.
const TOKENS: &[&[u8]] = &[
    b",",
    b"=",
    b"\0",
    b"\n",
    b"n,,",
    b"y,,",
    b"p=tls-exporter,",
    b"p=tls-server-end-point,",
    b"a=",
    b"n=",
    b"r=",
    b"m=",
    b"c=",
    b",p=",
    b"=2C",
    b"=3D",
    b"{c}",
    b"{r}",
    b"{p}",
    b"biws",
    "\u{ad}".as_bytes(),
    "\u{a0}".as_bytes(),
    "\u{2168}".as_bytes(),
    "\u{5d0}".as_bytes(),
];

#[test]
fn sasl_corpus_and_mutations_pass_the_oracle() {
    replay::replay_corpus("sasl", 20, 40, TOKENS, |data| {
        xmppd_sasl::fuzzing::check(data);
    });
}

/// The seeds reach every end of an exchange, so the oracle is not vacuously satisfied.
#[test]
fn seeds_reach_every_outcome() {
    use xmppd_sasl::fuzzing::{check, Outcome::*};
    let outcome = |name: &str| check(&replay::seed("sasl", name));
    for (seed, expected) in [
        ("sha1_success", Authenticated),
        ("sha256_plus_exporter_success", Authenticated),
        ("sha512_plus_end_point_authzid", Authenticated),
        ("y_flag_without_plus_offered", Authenticated),
        ("saslname_escapes", Authenticated),
        ("extensions", Authenticated),
        ("saslprep_username", Authenticated),
        ("no_advertisement", Authenticated),
        ("wrong_proof", FinalRefused),
        ("unknown_user_right_password", FinalRefused),
        ("cb_mismatch", FinalRefused),
        ("nonce_mismatch", FinalRefused),
        ("bad_proof_base64", FinalRefused),
        ("y_flag_downgrade", FirstRefused),
        ("y_flag_explained", Authenticated),
        ("y_flag_explained_plus_still_needs_binding", FirstRefused),
        ("p_flag_without_plus", FirstRefused),
        ("plus_with_n_flag", FirstRefused),
        ("plus_unsupported_type", FirstRefused),
        ("plus_type_without_data", FirstRefused),
        ("gs2_bad_flag", FirstRefused),
        ("mandatory_extension", FirstRefused),
        ("no_final", NoFinal),
        ("plain", PlainAccepted),
        ("plain_nul_in_field", PlainRefused),
    ] {
        assert_eq!(outcome(seed), expected, "{seed}");
    }
}
