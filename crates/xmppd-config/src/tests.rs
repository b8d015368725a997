use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

fn load(text: &str) -> Result<ValidatedConfig, ConfigError> {
    Source::new("t.toml", text, PathBuf::from("/etc/xmppd")).load()
}

fn err(text: &str) -> ConfigError {
    load(text).expect_err("config should be rejected")
}

#[test]
fn mam_section_defaults_and_limits() {
    let c = load("").unwrap();
    assert!(c.mam.enabled);
    assert_eq!(c.mam.retention, Some(Duration::from_secs(365 * 86_400)));
    assert_eq!((c.mam.max_bytes, c.mam.default), (None, MamDefault::Always));
    let c = load("[mam]\nretention_days = 0.5\nmax_bytes = 1000\ndefault = \"roster\"\n").unwrap();
    assert_eq!(c.mam.retention, Some(Duration::from_secs(43_200)));
    assert_eq!(
        (c.mam.max_bytes, c.mam.default),
        (Some(1000), MamDefault::Roster)
    );
    assert_eq!(
        load("[mam]\nretention_days = 0\n").unwrap().mam.retention,
        None
    );
    let e = err("[mam]\nretention_days = -1\n");
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("mam.retention_days"), Some(2))
    );
    assert_eq!(
        err("[mam]\ndefault = \"sometimes\"\n").key.as_deref(),
        Some("mam.default")
    );
}

#[test]
fn push_section_keeps_sender_and_body_private_by_default() {
    let p = load("").unwrap().push;
    assert_eq!(
        (p.include_body, p.include_sender, p.max_errors),
        (false, false, 3)
    );
    let p = load("[push]\ninclude_body = true\ninclude_sender = true\nmax_errors = 1\n")
        .unwrap()
        .push;
    assert_eq!(
        (p.include_body, p.include_sender, p.max_errors),
        (true, true, 1)
    );
    let e = err("[push]\nmax_errors = 0\n");
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("push.max_errors"), Some(2))
    );
    let e = err("[push]\ninclude_body = \"yes\"\n");
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("push.include_body"), Some(2))
    );
    assert!(!e.to_string().contains('\n'), "{e}");
    let e = err("[push]\ninclude_bodies = true\n");
    assert!(e.message.contains("unknown key"), "{e}");
}

#[test]
fn vcard_and_private_sections_bound_their_documents() {
    let p = load("").unwrap().personal;
    assert_eq!((p.vcard_max_bytes, p.private_max_bytes), (131_072, 65_536));
    let p = load("[vcard]\nmax_bytes = 4096\n[private]\nmax_bytes = 2048\n")
        .unwrap()
        .personal;
    assert_eq!((p.vcard_max_bytes, p.private_max_bytes), (4096, 2048));
    let e = err("[vcard]\nmax_bytes = 10\n");
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("vcard.max_bytes"), Some(2))
    );
    let e = err("[private]\nmax_bytes = 0\n");
    assert_eq!(e.key.as_deref(), Some("private.max_bytes"));
}

#[test]
fn muc_section_gives_one_service_per_host() {
    let c = load("[server]\nhosts = [\"a.org\", \"b.org\"]\n").unwrap();
    let expected = [("a.org", "conference.a.org"), ("b.org", "conference.b.org")];
    let got: Vec<(&str, &str)> = c
        .muc
        .services
        .iter()
        .map(|(h, d)| (h.as_str(), d.as_str()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(c.muc.creation, MucCreation::All);
    let c = load("[muc]\ndomain = \"Chat.Example.org\"\ncreation = \"admins\"\n").unwrap();
    assert_eq!(c.muc.services[0].1, "chat.example.org");
    assert_eq!(c.muc.creation, MucCreation::Admins);
    assert!(load("[muc]\nenabled = false\n")
        .unwrap()
        .muc
        .services
        .is_empty());
    let e = err("[server]\nhosts = [\"a.org\", \"b.org\"]\n[muc]\ndomain = \"chat.org\"\n");
    assert_eq!((e.key.as_deref(), e.line), (Some("muc.domain"), Some(4)));
    let e = err("[muc]\nmax_occupants = 0\n");
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("muc.max_occupants"), Some(2))
    );
    assert_eq!(
        err("[muc]\ndomain = \"localhost\"\n").key.as_deref(),
        Some("muc.domain")
    );
}

#[test]
fn empty_file_gives_defaults() {
    let c = load("").unwrap();
    assert_eq!(c.server.hosts, vec!["localhost".to_string()]);
    assert_eq!(c.server.data_dir, PathBuf::from("/etc/xmppd/data"));
    assert_eq!(
        c.storage.sqlite_path,
        PathBuf::from("/etc/xmppd/data/xmppd.sqlite")
    );
    assert_eq!(c.server.log_level, LogLevel::Info);
    assert!(!c.server.hide_ip_in_logs && !c.server.show_os);
    assert!(!c.server.node_name.is_empty());
    assert_eq!(
        c.c2s.starttls_listen,
        vec!["0.0.0.0:5222".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(
        c.c2s.direct_tls_listen,
        vec!["0.0.0.0:5223".parse::<SocketAddr>().unwrap()]
    );
    assert!(c.c2s.require_starttls);
    assert_eq!(c.c2s.max_stanza_bytes, 262_144);
    assert_eq!(c.c2s.pre_auth_max_stanza_bytes, 8192);
    assert_eq!(c.c2s.session_queue, 512);
    assert_eq!(c.c2s.session_queue_bytes, 1 << 20);
    assert_eq!(c.c2s.session_reply_bytes, 4 << 20);
    assert_eq!(c.c2s.shaper_bytes_per_sec, 65_536);
    assert_eq!(c.c2s.shaper_burst_bytes, 524_288);
    assert_eq!(c.c2s.max_presence_bytes, 16_384);
    assert_eq!(c.muc.max_history_bytes, 262_144);
    assert_eq!(c.c2s.handshake_timeout, Duration::from_secs(30));
    assert_eq!(c.c2s.max_auth_failures, 3);
    assert!(c.c2s.stream_management);
    assert_eq!(c.c2s.resume_timeout, Duration::from_secs(300));
    assert_eq!(
        (c.c2s.sm_max_unacked, c.c2s.sm_max_unacked_bytes),
        (1024, 1 << 20)
    );
    assert_eq!(c.c2s.ping_interval, Some(Duration::from_secs(240)));
    assert_eq!(c.c2s.ping_timeout, Duration::from_secs(60));
    assert_eq!(c.tls.reload_interval, Duration::from_secs(60));
    assert!(c.tls.certificates.is_empty());
    assert_eq!(c.offline_max_per_user, 1000);
    assert_eq!(c.resources_max_per_user, 16);
    assert_eq!(c.roster_max_items, 5000);
}

#[test]
fn builtin_resolves_against_cwd() {
    let c = Source::builtin(PathBuf::from("/srv/x")).load().unwrap();
    assert_eq!(c.server.data_dir, PathBuf::from("/srv/x/data"));
    assert_eq!(c.source, BUILTIN_NAME);
}

#[test]
fn hosts_are_lowercased_and_checked() {
    let c = load("[server]\nhosts = [\"Example.ORG\", \"chat.example.org.\"]\n").unwrap();
    assert_eq!(c.server.hosts, vec!["example.org", "chat.example.org"]);

    let e = err("[server]\nhosts = [\n  \"a.org\",\n  \"A.org\",\n]\n");
    assert_eq!(e.line, Some(4));
    assert_eq!(e.key.as_deref(), Some("server.hosts"));
    assert!(e.message.contains("duplicate"), "{e}");

    let e = err("\n[server]\nhosts = [\"bad domain\"]\n");
    assert_eq!(
        e.to_string(),
        format!("t.toml:3: server.hosts: {}", e.message)
    );
    assert!(e.message.contains("bad domain"));

    let e = err("[server]\nhosts = []\n");
    assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("server.hosts")));

    for bad in ["-a.org", "a..org", "ä.org", ""] {
        assert!(normalise_domain(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn two_services_cannot_share_a_domain() {
    let e = err("[proxy65]\nenabled = true\ndomain = \"conference.{host}\"\n");
    assert_eq!(e.key.as_deref(), Some("proxy65.domain"));
    assert_eq!(e.line, Some(3));
    assert!(
        e.message
            .contains("\"conference.localhost\" is already muc.domain's domain"),
        "{e}"
    );
    let e = err("[pubsub]\ndomain = \"conference.{host}\"\n");
    assert_eq!(e.key.as_deref(), Some("pubsub.domain"));
    assert!(load("[proxy65]\nenabled = true\n").is_ok());
}

#[test]
fn acme_needs_http_and_takes_served_hosts_without_certificates() {
    let http = "[http]\nenabled = true\n";
    let acme = "[acme]\nenabled = true\ndirectory_url = \"https://acme.test/dir\"\n";
    let e = err(acme);
    assert_eq!(e.key.as_deref(), Some("acme.enabled"));
    // Over TLS the challenge needs no HTTP listener.
    let alpn = load(&format!("{acme}challenge = \"tls-alpn-01\"\n")).unwrap();
    assert_eq!(alpn.acme.unwrap().challenge, AcmeChallenge::TlsAlpn01);
    let e = err(&format!("{acme}challenge = \"dns-01\"\n"));
    assert_eq!(e.key.as_deref(), Some("acme.challenge"));
    let c = load(&format!("{http}{acme}")).unwrap();
    let a = c.acme.unwrap();
    assert_eq!(a.hosts, ["localhost"]);
    assert_eq!(a.renew_before, Duration::from_secs(30 * 86_400));
    let e = err(&format!("{http}{acme}hosts = [\"elsewhere.org\"]\n"));
    assert!(
        e.to_string().contains("acme.hosts") && e.message.contains("elsewhere.org"),
        "{e}"
    );
    let e = err(&format!(
        "{http}[acme]\nenabled = true\ndirectory_url = \"http://x\"\n"
    ));
    assert_eq!(e.key.as_deref(), Some("acme.directory_url"));
    let e = err(&format!("{http}{acme}contact = [\"hostmaster@x\"]\n"));
    assert!(
        e.to_string().contains("acme.contact") && e.message.contains("mailto"),
        "{e}"
    );
    let dir = env!("CARGO_MANIFEST_DIR");
    let cert = format!(
        "[[tls.certificate]]\ndomain = \"localhost\"\ncert = \"{dir}/Cargo.toml\"\nkey = \"{dir}/src/lib.rs\"\n"
    );
    let e = err(&format!("{http}{acme}{cert}"));
    assert_eq!(e.key.as_deref(), Some("acme.hosts"));
}

#[test]
fn bad_listen_address_names_key_and_line() {
    let text = "# c\n[c2s]\nrequire_starttls = false\nstarttls_listen = [\"0.0.0.0:99999\"]\n";
    let e = err(text);
    assert_eq!(
        e.to_string(),
        "t.toml:4: c2s.starttls_listen: invalid socket address \"0.0.0.0:99999\" \
         (expected IP:PORT)"
    );
}

#[test]
fn listen_addresses_parse_and_clash() {
    let c = load("[c2s]\nstarttls_listen = [\"[::]:5222\", \"127.0.0.1:0\"]\n").unwrap();
    assert_eq!(
        c.c2s.starttls_listen[0],
        "[::]:5222".parse::<SocketAddr>().unwrap()
    );

    let e = err("[c2s]\nstarttls_listen = [\"0.0.0.0:5223\"]\n");
    assert_eq!(e.key.as_deref(), Some("c2s.direct_tls_listen"));
    assert!(e.message.contains("listed twice"), "{e}");
    // The clashing default has no line of its own: the error points at its section.
    assert_eq!(e.line, Some(1));

    let e = err("[c2s]\nstarttls_listen = []\ndirect_tls_listen = []\n");
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(2), Some("c2s.starttls_listen"))
    );
}

#[test]
fn numeric_limits_name_their_key() {
    let cases = [
        ("[c2s]\nmax_stanza_bytes = 9999\n", "c2s.max_stanza_bytes"),
        (
            "[c2s]\npre_auth_max_stanza_bytes = 100\n",
            "c2s.pre_auth_max_stanza_bytes",
        ),
        ("[c2s]\nsession_queue = 0\n", "c2s.session_queue"),
        (
            "[c2s]\nsession_queue_bytes = 100000\n",
            "c2s.session_queue_bytes",
        ),
        (
            "[c2s]\nsession_reply_bytes = 2000000000\n",
            "c2s.session_reply_bytes",
        ),
        (
            "[c2s]\nshaper_bytes_per_sec = 100\n",
            "c2s.shaper_bytes_per_sec",
        ),
        (
            "[c2s]\nshaper_burst_bytes = 2000000000\n",
            "c2s.shaper_burst_bytes",
        ),
        (
            "[c2s]\nmax_presence_bytes = 1000\n",
            "c2s.max_presence_bytes",
        ),
        (
            "[muc]\nmax_history_bytes = 2000000000\n",
            "muc.max_history_bytes",
        ),
        (
            "[c2s]\nhandshake_timeout_secs = 0\n",
            "c2s.handshake_timeout_secs",
        ),
        ("[c2s]\nmax_auth_failures = 0\n", "c2s.max_auth_failures"),
        ("[c2s]\nmax_connections = 0\n", "c2s.max_connections"),
        ("[c2s]\nmax_pending_per_ip = 0\n", "c2s.max_pending_per_ip"),
        (
            "[c2s]\nproxy_protocol_from = [\"10.0.0.0/33\"]\n",
            "c2s.proxy_protocol_from",
        ),
        (
            "[c2s]\nproxy_protocol_from = [\"10.0.0.5\", \"10.0.0.5/32\"]\n",
            "c2s.proxy_protocol_from",
        ),
        (
            "[http]\ntrusted_proxies = [\"proxy.example\"]\nenabled = true\n",
            "http.trusted_proxies",
        ),
        (
            "[http]\nproxy_protocol_from = [\"::1/\"]\nenabled = true\n",
            "http.proxy_protocol_from",
        ),
        (
            "[http]\nforwarded_header = \"x-real-ip\"\nenabled = true\n",
            "http.forwarded_header",
        ),
        (
            "[c2s]\nresume_timeout_secs = 0\n",
            "c2s.resume_timeout_secs",
        ),
        ("[c2s]\nsm_max_unacked = 0\n", "c2s.sm_max_unacked"),
        (
            "[c2s]\nsm_max_unacked_bytes = 1000\n",
            "c2s.sm_max_unacked_bytes",
        ),
        (
            "[c2s]\nping_interval_secs = 100000\n",
            "c2s.ping_interval_secs",
        ),
        ("[c2s]\nping_timeout_secs = 0\n", "c2s.ping_timeout_secs"),
        (
            "[c2s]\nfast_token_lifetime_days = 0\n",
            "c2s.fast_token_lifetime_days",
        ),
        ("[c2s]\nstream_management = 1\n", "c2s.stream_management"),
        (
            "[tls]\nreload_interval_secs = 0\n",
            "tls.reload_interval_secs",
        ),
        ("[resources]\nmax_per_user = 0\n", "resources.max_per_user"),
        ("[offline]\nmax_per_user = -1\n", "offline.max_per_user"),
    ];
    for (text, key) in cases {
        let e = err(text);
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some(key)),
            "{text}: {e}"
        );
    }
    // The queue must hold the largest stanza; raising that alone names the queue.
    let e = err("[c2s]\nmax_stanza_bytes = 2000000\n");
    assert_eq!(e.key.as_deref(), Some("c2s.session_queue_bytes"), "{e}");
    assert!(e.message.contains("c2s.max_stanza_bytes"), "{e}");
    let c = load("[c2s]\nshaper_bytes_per_sec = 0\nsession_reply_bytes = 0\n").unwrap();
    assert_eq!(
        (c.c2s.shaper_bytes_per_sec, c.c2s.session_reply_bytes),
        (0, 0)
    );
    let c = load("[offline]\nmax_per_user = 0\n").unwrap();
    assert_eq!(c.offline_max_per_user, 0);
}

#[test]
fn pre_auth_limit_may_not_exceed_the_post_auth_one() {
    let e = err("[c2s]\nmax_stanza_bytes = 10000\npre_auth_max_stanza_bytes = 20000\n");
    assert_eq!(e.line, Some(3));
}

#[test]
fn unknown_keys_are_rejected_with_their_line() {
    let e = err("[server]\nhosts = [\"a.org\"]\n\n[c2s]\nrequire_startls = false\n");
    assert_eq!(e.line, Some(5));
    assert_eq!(e.key.as_deref(), Some("c2s.require_startls"));
    assert!(e.message.contains("unknown key"), "{e}");

    let e = err("[server]\nhosts = [\"a.org\"]\n[serverr]\n");
    assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("serverr")));

    let e = err("[[tls.certificate]]\ndomain = \"localhost\"\ncert = \"c\"\nkey = \"k\"\npw = 1\n");
    assert_eq!(e.line, Some(5));
    assert_eq!(e.key.as_deref(), Some("tls.certificate[0].pw"));
}

#[test]
fn wrong_types_and_enums_are_rejected_with_their_line() {
    let e = err("[server]\n\nlog_level = \"loud\"\n");
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(3), Some("server.log_level"))
    );
    let e = err("[c2s]\nrequire_starttls = \"yes\"\n");
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(2), Some("c2s.require_starttls"))
    );
    let e = err("[storage]\nbackend = \"postgres\"\n");
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(2), Some("storage.backend"))
    );
}

#[test]
fn other_spellings_are_located_too() {
    // Dotted keys and inline tables name the same paths as sections do.
    let e = err("# x\nc2s.max_stanza_bytes = 1\n");
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(2), Some("c2s.max_stanza_bytes"))
    );
    let e = err("\nserver = { hosts = [\"a.org\"], colour = 1 }\n");
    assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("server.colour")));
    // A list element of the wrong type is named by its list, on the element's line.
    let e = err("[server]\nhosts = [\n\"a.org\",\n1,\n]\n");
    assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("server.hosts")));
    // A section given as a scalar.
    let e = err("\nserver = 5\n");
    assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("server")));
    // Overflowing the integer type.
    let e = err("[c2s]\nmax_auth_failures = 99999999999\n");
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(2), Some("c2s.max_auth_failures"))
    );
}

#[test]
fn syntax_errors_are_one_line_with_a_line_number() {
    let e = err("[server]\nhosts = [\"a.org\"\n[c2s]\n");
    assert!(e.line.is_some());
    let shown = e.to_string();
    assert!(!shown.contains('\n'), "{shown}");
    assert!(shown.starts_with("t.toml:"), "{shown}");
}

#[test]
fn line_breaks_quoted_from_the_document_are_escaped() {
    for (text, expect) in [
        (
            "[auth.hosts]\n\"a\\nb\" = \"ldap\"\n",
            "t.toml:2: auth.hosts.a\\nb: ",
        ),
        ("[server]\n\"x\\ry\" = 1\n", "t.toml:2: server.x\\ry: "),
        (
            "[server]\n\"x\\u2028y\" = 1\n",
            "t.toml:2: server.x\\u{2028}y: ",
        ),
    ] {
        let shown = err(text).to_string();
        assert!(shown.starts_with(expect), "{shown}");
        assert!(!shown.contains(['\n', '\r', '\u{2028}']), "{shown:?}");
    }
}

#[test]
fn relative_paths_resolve_against_the_file_directory() {
    let c = load("[server]\ndata_dir = \"var\"\n[storage]\nsqlite_path = \"db/x.db\"\n").unwrap();
    assert_eq!(c.server.data_dir, PathBuf::from("/etc/xmppd/var"));
    assert_eq!(
        c.storage.sqlite_path,
        PathBuf::from("/etc/xmppd/var/db/x.db")
    );
    let c =
        load("[server]\ndata_dir = \"/abs\"\n[storage]\nsqlite_path = \"/db.sqlite\"\n").unwrap();
    assert_eq!(c.server.data_dir, PathBuf::from("/abs"));
    assert_eq!(c.storage.sqlite_path, PathBuf::from("/db.sqlite"));
}

#[test]
fn read_resolves_against_the_file_and_names_it() {
    let dir = scratch_dir("read");
    let file = dir.join("conf.toml");
    std::fs::write(&file, "[server]\ndata_dir = \"d\"\n").unwrap();
    let c = Source::read(&file).unwrap().load().unwrap();
    assert_eq!(c.server.data_dir, dir.join("d"));
    assert_eq!(c.source, file.display().to_string());

    let missing = Source::read(&dir.join("nope.toml")).unwrap_err();
    assert!(missing.to_string().contains("nope.toml"), "{missing}");
}

#[test]
fn certificates_resolve_and_must_exist_and_match_a_host() {
    let dir = scratch_dir("certs");
    std::fs::create_dir_all(dir.join("tls")).unwrap();
    std::fs::write(dir.join("tls/a.pem"), "x").unwrap();
    std::fs::write(dir.join("tls/a.key"), "x").unwrap();
    let src = |extra: &str| {
        let text = format!(
            "[server]\nhosts = [\"a.org\"]\n[[tls.certificate]]\ndomain = \"A.org\"\n\
             cert = \"tls/a.pem\"\nkey = \"tls/a.key\"\n{extra}"
        );
        Source::new("t.toml", text, dir.clone())
    };
    let c = src("").load().unwrap();
    assert_eq!(
        c.tls.certificates,
        vec![CertificateSettings {
            domain: "a.org".into(),
            cert: dir.join("tls/a.pem"),
            key: dir.join("tls/a.key"),
        }]
    );

    let e = src("[[tls.certificate]]\ndomain = \"b.org\"\ncert = \"x\"\nkey = \"y\"\n")
        .load()
        .unwrap_err();
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(8), Some("tls.certificate[1].domain"))
    );

    let e = src("[[tls.certificate]]\ndomain = \"a.org\"\ncert = \"x\"\nkey = \"y\"\n")
        .load()
        .unwrap_err();
    assert!(e.message.contains("second certificate"), "{e}");

    let text = "[[tls.certificate]]\ndomain = \"localhost\"\ncert = \"tls/a.pem\"\n\
                key = \"tls/missing.key\"\n";
    let e = Source::new("t.toml", text, dir.clone()).load().unwrap_err();
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(4), Some("tls.certificate[0].key"))
    );
    assert!(e.message.contains("file not found"), "{e}");

    let e = err("[[tls.certificate]]\ndomain = \"localhost\"\ncert = \"c\"\n");
    assert!(e.message.contains("missing field `key`"), "{e}");
    assert_eq!(e.key.as_deref(), Some("tls.certificate[0]"));
}

#[test]
fn registration_is_off_by_default_and_hosts_must_be_served() {
    let c = load("").unwrap();
    assert!(c.registration.hosts.is_empty());
    assert_eq!(c.registration.max_per_ip_per_hour, 5);
    assert_eq!(c.registration.min_password_length, 8);
    assert_eq!(c.registration.tombstone, Duration::from_secs(30 * 86_400));
    let c = load(
        "[registration]\nhosts = [\"LocalHost\"]\nmax_per_ip_per_hour = 0\ntombstone_days = 0\n",
    )
    .unwrap();
    assert_eq!(c.registration.hosts, vec!["localhost"]);
    assert_eq!(c.registration.max_per_ip_per_hour, 0);
    assert_eq!(c.registration.tombstone, Duration::ZERO);
    let e = err("[registration]\ntombstone_days = 100000\n");
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(2), Some("registration.tombstone_days"))
    );
    let e = err("[registration]\nhosts = [\"other.org\"]\n");
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(2), Some("registration.hosts"))
    );
    let e = err("[registration]\nmin_password_length = 0\n");
    assert_eq!(
        (e.line, e.key.as_deref()),
        (Some(2), Some("registration.min_password_length"))
    );
}

#[test]
fn example_file_is_valid() {
    let text = include_str!("../../../examples/xmppd.toml");
    let c = Source::new("examples/xmppd.toml", text, PathBuf::from("/x")).load();
    let c = c.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.source, "examples/xmppd.toml");
}

/// A fresh directory under the system temp dir (removed first if a previous run left it).
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xmppd-config-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn http_section_is_off_by_default_and_loopback_when_on() {
    assert_eq!(load("").unwrap().http, None);
    let c = load("[http]\nenabled = true\n").unwrap();
    let http = c.http.unwrap();
    assert_eq!(
        http.listen,
        vec!["127.0.0.1:5280".parse::<SocketAddr>().unwrap()]
    );
    assert!(http.tls_listen.is_empty() && http.websocket && !http.behind_tls_proxy);
    assert!(http.trusted_proxies.is_empty() && http.proxy_protocol_from.is_empty());
    let proxied = load(
        "[c2s]\nproxy_protocol_from = [\" 10.0.0.9/8 \", \"::1\"]\n\
         [http]\nenabled = true\ntrusted_proxies = [\"127.0.0.1\"]\nforwarded_header = \"Forwarded\"\n",
    )
    .unwrap();
    let shown =
        |list: &[xmppd_realip::Network]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert_eq!(
        shown(&proxied.c2s.proxy_protocol_from),
        ["10.0.0.0/8", "::1/128"]
    );
    let proxied_http = proxied.http.unwrap();
    assert_eq!(shown(&proxied_http.trusted_proxies), ["127.0.0.1/32"]);
    assert_eq!(
        proxied_http.forwarded_header,
        xmppd_realip::forwarded::ForwardedHeader::Forwarded
    );
    assert_eq!(http.header_timeout, Duration::from_secs(10));
    let c = load(
        "[http]\nenabled = true\ntls_listen = [\"0.0.0.0:5443\"]\n\
         websocket_origins = [\"HTTPS://Chat.Example.org/\", \"*\"]\n\
         websocket_url = \"wss://chat.example.org/ws\"\n",
    )
    .unwrap()
    .http
    .unwrap();
    assert_eq!(c.websocket_origins, ["https://chat.example.org", "*"]);
    assert_eq!(
        c.websocket_url.as_deref(),
        Some("wss://chat.example.org/ws")
    );
    assert_eq!(c.bosh_url, None);
    assert!(c.bosh && c.bosh_origins.is_empty() && c.bosh_max_hold == 1);
    assert_eq!(c.bosh_max_wait, Duration::from_secs(30));
    assert_eq!(c.bosh_inactivity, Duration::from_secs(60));
    let c = load(
        "[http]\nenabled = true\nbosh = false\nbosh_origins = [\"https://Web.Example.org\"]\n\
         bosh_max_wait_secs = 50\nbosh_max_hold = 2\nbosh_inactivity_secs = 5\n",
    )
    .unwrap()
    .http
    .unwrap();
    assert!(!c.bosh && c.bosh_max_hold == 2);
    assert_eq!(c.bosh_origins, ["https://web.example.org"]);
    assert_eq!(c.bosh_max_wait, Duration::from_secs(50));
    assert_eq!(c.bosh_inactivity, Duration::from_secs(5));
}

#[test]
fn http_errors_name_their_key() {
    let key = |text: &str| err(text).key.unwrap();
    assert_eq!(
        key("[http]\nenabled = true\nlisten = [\"nope\"]\n"),
        "http.listen"
    );
    assert_eq!(
        key("[http]\nenabled = true\nlisten = []\ntls_listen = []\n"),
        "http.listen"
    );
    // The same address as a c2s listener.
    assert_eq!(
        key("[c2s]\nstarttls_listen = [\"127.0.0.1:5222\"]\n[http]\nenabled = true\nlisten = [\"127.0.0.1:5222\"]\n"),
        "http.listen"
    );
    assert_eq!(
        key("[http]\nenabled = true\nwebsocket_origins = [\"chat.example.org\"]\n"),
        "http.websocket_origins"
    );
    assert_eq!(
        key("[http]\nenabled = true\nwebsocket_url = \"https://x/ws\"\n"),
        "http.websocket_url"
    );
    assert_eq!(
        key("[http]\nenabled = true\nheader_timeout_secs = 0\n"),
        "http.header_timeout_secs"
    );
    assert_eq!(
        key("[http]\nenabled = true\nmax_header_bytes = 100\n"),
        "http.max_header_bytes"
    );
    assert_eq!(
        key("[http]\nenabled = true\nbosh_origins = [\"x\"]\n"),
        "http.bosh_origins"
    );
    // A held request must be answered before the HTTP layer's deadline.
    let e = err("[http]\nenabled = true\nbosh_max_wait_secs = 60\n");
    assert_eq!(e.key.as_deref(), Some("http.bosh_max_wait_secs"));
    assert!(e.to_string().contains("http.request_timeout_secs"), "{e}");
    assert_eq!(
        key("[http]\nenabled = true\nbosh_max_hold = 0\n"),
        "http.bosh_max_hold"
    );
    assert_eq!(
        key("[http]\nenabled = true\nbosh_inactivity_secs = 0\n"),
        "http.bosh_inactivity_secs"
    );
    let e = err("[http]\nenabled = true\nbosh_url = \"ftp://x\"\n");
    assert_eq!(e.line, Some(3));
    assert!(e.to_string().lines().count() == 1, "{e}");
}

#[test]
fn contact_addresses_per_host_with_a_default() {
    let c = load(
        "[server]\nhosts = [\"a.example\", \"b.example\", \"c.example\"]\n\
         [[contact]]\nabuse = [\"mailto:abuse@example.net\"]\n\
         [[contact]]\nhost = \"B.example\"\nstatus = [\"https://status.b.example/\"]\n",
    )
    .unwrap();
    let abuse = vec![(
        "abuse-addresses",
        vec!["mailto:abuse@example.net".to_string()],
    )];
    assert_eq!(c.contact.get("a.example"), Some(&abuse));
    assert_eq!(c.contact.get("c.example"), Some(&abuse));
    let status = vec![(
        "status-addresses",
        vec!["https://status.b.example/".to_string()],
    )];
    assert_eq!(c.contact.get("b.example"), Some(&status));
    assert!(load("").unwrap().contact.is_empty());

    let e = err("[[contact]]\nhost = \"elsewhere.example\"\nabuse = [\"mailto:a@b\"]\n");
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("contact[0].host"), Some(2))
    );
    let e = err("[[contact]]\nabuse = [\"mailto:a@b\", \"abuse@example.org\"]\n");
    assert_eq!(e.key.as_deref(), Some("contact[0].abuse"));
    assert!(e.message.contains("not a URI"), "{}", e.message);
    let e = err("[[contact]]\nabuse = [\"mailto:a@b\"]\n[[contact]]\nadmin = [\"mailto:c@d\"]\n");
    assert_eq!((e.key.as_deref(), e.line), (Some("contact"), Some(3)));
    assert!(err("[[contact]]\nabuze = [\"mailto:a@b\"]\n")
        .message
        .contains("unknown key"));
}

#[test]
fn extdisco_services_defaults_and_checks() {
    let c = load(
        "[[extdisco.service]]\ntype = \"turn\"\nhost = \"turn.example.org\"\nsecret = \"s\"\n\
         [[extdisco.service]]\ntype = \"stuns\"\nhost = \"192.0.2.1\"\n",
    )
    .unwrap();
    let [turn, stuns] = &c.extdisco.services[..] else {
        panic!("two services expected")
    };
    assert_eq!((turn.port, turn.transport.as_str()), (3478, "udp"));
    assert_eq!(turn.secret, TurnSecret::Inline("s".into()));
    assert_eq!((stuns.port, stuns.transport.as_str()), (5349, "tcp"));
    assert_eq!(c.extdisco.credentials_ttl, Duration::from_secs(86_400));

    let e = err("[[extdisco.service]]\ntype = \"ftp\"\nhost = \"h\"\n");
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("extdisco.service[0].type"), Some(2))
    );
    let e = err("[[extdisco.service]]\ntype = \"stun\"\nhost = \"h\"\nsecret = \"s\"\n");
    assert_eq!(e.key.as_deref(), Some("extdisco.service[0].secret"));
    let e = err("[[extdisco.service]]\ntype = \"turn\"\nhost = \"h\"\nsecret_file = \"nope\"\n");
    assert!(e.message.contains("file not found"), "{}", e.message);
    let e = err("[extdisco]\ncredentials_ttl_secs = 1\n");
    assert_eq!(e.key.as_deref(), Some("extdisco.credentials_ttl_secs"));
}

#[test]
fn proxy65_off_by_default_and_its_public_address() {
    assert_eq!(load("").unwrap().proxy65, None);
    let c = load("[proxy65]\nenabled = true\n").unwrap();
    let p = c.proxy65.unwrap();
    assert_eq!(p.listen, "0.0.0.0:7777".parse::<SocketAddr>().unwrap());
    // Bound to every address: clients are given the proxy's domain.
    assert_eq!(
        p.services,
        [(
            "localhost".to_string(),
            "proxy.localhost".to_string(),
            "proxy.localhost".to_string()
        )]
    );
    assert!(p.allow.is_empty());
    let c = load("[proxy65]\nenabled = true\nlisten = \"127.0.0.1:0\"\nallow = [\"Example.org\", \"Bob@Example.org\"]\n")
        .unwrap();
    let p = c.proxy65.unwrap();
    assert_eq!(p.services[0].2, "127.0.0.1");
    assert_eq!(p.allow, ["example.org", "bob@example.org"]);
    let c =
        load("[proxy65]\nenabled = true\npublic_host = \"files.example.org\"\npublic_port = 443\n")
            .unwrap();
    let p = c.proxy65.unwrap();
    assert_eq!(
        (p.services[0].2.as_str(), p.public_port),
        ("files.example.org", 443)
    );

    let e = err("[proxy65]\nenabled = true\nlisten = \"7777\"\n");
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("proxy65.listen"), Some(3))
    );
    let e = err("[proxy65]\nenabled = true\nallow = [\"not a jid@\"]\n");
    assert_eq!(e.key.as_deref(), Some("proxy65.allow"));
    let e = err("[proxy65]\nenabled = true\nmax_transfers = 0\n");
    assert_eq!(e.key.as_deref(), Some("proxy65.max_transfers"));
}

#[test]
fn upload_section_is_off_by_default_and_needs_http() {
    assert_eq!(load("").unwrap().upload, None);
    let on = "[http]\nenabled = true\n[upload]\nenabled = true\n";
    let u = load(on).unwrap().upload.unwrap();
    assert_eq!(
        u.services,
        [("localhost".to_string(), "upload.localhost".to_string())]
    );
    assert_eq!(
        u.backend,
        UploadBackend::Local {
            dir: PathBuf::from("/etc/xmppd/data/upload"),
            public_url: None
        }
    );
    assert_eq!(u.max_file_bytes, 100 << 20);
    assert_eq!(u.expire_after, Some(Duration::from_secs(30 * 86_400)));
    assert_eq!((u.secret, u.max_total_bytes), (None, None));
    let u = load(&format!(
        "{on}public_url = \"https://files.example.org/up/\"\nexpire_days = 0\n\
         quota_bytes_per_user = 0\ncors_origins = [\"HTTPS://App.Example.org/\"]\n"
    ))
    .unwrap()
    .upload
    .unwrap();
    assert!(
        matches!(u.backend, UploadBackend::Local { public_url: Some(ref p), .. }
        if p == "https://files.example.org/up")
    );
    assert_eq!((u.expire_after, u.quota_bytes_per_user), (None, None));
    assert_eq!(u.cors_origins, ["https://app.example.org"]);
    // An external service needs no HTTP listener here, but its secret.
    let ext = "[upload]\nenabled = true\nexternal_url = \"https://up.example.org/share\"\n";
    let u = load(&format!("{ext}external_secret = \"s3cret\"\n"))
        .unwrap()
        .upload
        .unwrap();
    assert_eq!(
        u.backend,
        UploadBackend::External {
            url: "https://up.example.org/share/".into(),
            secret: "s3cret".into()
        }
    );
}

#[test]
fn upload_errors_name_their_key() {
    let key = |text: &str| err(text).key.unwrap();
    let e = err("[upload]\nenabled = true\n");
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("upload.enabled"), Some(2))
    );
    assert!(e.to_string().lines().count() == 1, "{e}");
    let on = "[http]\nenabled = true\n[upload]\nenabled = true\n";
    for (line, k) in [
        ("max_file_bytes = 0", "upload.max_file_bytes"),
        ("expire_days = -2", "upload.expire_days"),
        ("expire_interval_secs = 0", "upload.expire_interval_secs"),
        ("slot_lifetime_secs = 0", "upload.slot_lifetime_secs"),
        ("public_url = \"ftp://x\"", "upload.public_url"),
        ("public_url = \"https://x/?a=b\"", "upload.public_url"),
        (
            "cors_origins = [\"app.example.org\"]",
            "upload.cors_origins",
        ),
        ("secret = \"short\"", "upload.secret"),
        ("external_url = \"https://x\"", "upload.external_secret"),
        ("external_url = \"x\"", "upload.external_url"),
        ("dir = \"\"", "upload.dir"),
        ("domain = \"localhost\"", "upload.domain"),
    ] {
        assert_eq!(key(&format!("{on}{line}\n")), k, "{line}");
    }
}

#[test]
fn admin_http_is_off_by_default_and_loopback_when_on() {
    assert_eq!(load("").unwrap().admin_http, None);
    let admin = load("[admin_http]\nenabled = true\n")
        .unwrap()
        .admin_http
        .unwrap();
    assert_eq!(
        admin.listen,
        vec!["127.0.0.1:5290".parse::<SocketAddr>().unwrap()]
    );
    assert!(admin.api && admin.metrics);
    assert_eq!(admin.max_body_bytes, 64 * 1024);
    let key = |text: &str| err(text).key.unwrap();
    assert_eq!(
        key("[admin_http]\nenabled = true\nlisten = []\n"),
        "admin_http.listen"
    );
    // Not the address of another listener.
    assert_eq!(
        key(
            "[http]\nenabled = true\n[admin_http]\nenabled = true\nlisten = [\"127.0.0.1:5280\"]\n"
        ),
        "admin_http.listen"
    );
    assert_eq!(
        key("[admin_http]\nenabled = true\nmax_body_bytes = 10\n"),
        "admin_http.max_body_bytes"
    );
}

#[test]
fn s2s_off_by_default_and_its_errors_name_their_key() {
    assert_eq!(load("").unwrap().s2s, None);
    let s = load("[s2s]\nenabled = true\n").unwrap().s2s.unwrap();
    assert_eq!(s.listen, ["0.0.0.0:5269".parse::<SocketAddr>().unwrap()]);
    assert!(s.dialback && !s.require_valid_certificates);
    assert_eq!((s.resolver, s.ca_file), (None, None));
    assert_eq!(
        (s.max_inbound, s.max_pending_per_ip, s.max_outbound),
        (1000, 8, 1000)
    );
    assert_eq!(s.failure_cache, std::time::Duration::from_secs(60));
    assert!(!s.allow_private_addresses);
    assert!(s.bidi);
    assert_eq!(s.ping_interval, Some(Duration::from_secs(300)));
    assert_eq!(s.ping_timeout, Duration::from_secs(60));
    let s = load("[s2s]\nenabled = true\nbidi = false\nping_interval_secs = 0\n");
    let s = s.unwrap().s2s.unwrap();
    assert!(!s.bidi && s.ping_interval.is_none());
    let s = load(
        "[s2s]\nenabled = true\nresolver = \"127.0.0.1:5353\"\ndeny = [\"Evil.Example\"]\n\
         [s2s.routes]\n\"b.example\" = \"127.0.0.3:5269\"\n",
    )
    .unwrap()
    .s2s
    .unwrap();
    assert_eq!(s.resolver, Some("127.0.0.1:5353".parse().unwrap()));
    assert_eq!(s.deny, ["evil.example"]);
    assert_eq!(s.routes["b.example"], ("127.0.0.3".to_owned(), 5269));

    let e = err("[s2s]\nenabled = true\nresolver = \"localhost\"\n");
    assert_eq!((e.key.as_deref(), e.line), (Some("s2s.resolver"), Some(3)));
    let e = err("[s2s]\nenabled = true\nca_file = \"missing.pem\"\n");
    assert_eq!(e.key.as_deref(), Some("s2s.ca_file"));
    let e = err("[s2s]\nenabled = true\nlisten = [\"5269\"]\n");
    assert_eq!(e.key.as_deref(), Some("s2s.listen"));
    let e = err("[s2s]\nenabled = true\nidle_timeout_secs = 0\n");
    assert_eq!(e.key.as_deref(), Some("s2s.idle_timeout_secs"));
    for key in [
        "max_inbound",
        "max_pending_per_ip",
        "max_outbound",
        "max_domains_per_stream",
    ] {
        let e = err(&format!("[s2s]\nenabled = true\n{key} = 0\n"));
        assert_eq!(e.key.as_deref(), Some(format!("s2s.{key}").as_str()));
    }
    let s = load("[s2s]\nenabled = true\nfailure_cache_secs = 0\n")
        .unwrap()
        .s2s
        .unwrap();
    assert!(s.failure_cache.is_zero());
    let e = err("[s2s]\nenabled = true\nping_timeout_secs = 0\n");
    assert_eq!(e.key.as_deref(), Some("s2s.ping_timeout_secs"));
    let e = err("[s2s]\nenabled = true\n[s2s.routes]\n\"b.example\" = \"nowhere\"\n");
    assert!(e.to_string().contains("s2s.routes"), "{e}");
}
