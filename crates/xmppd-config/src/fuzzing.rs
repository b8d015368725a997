//! The configuration fuzzing oracle, shared by the cargo-fuzz target `config` (`fuzz/`) and by
//! a stable test that replays the committed corpus (`fuzz/corpus/config/`) in CI.
//!
//! [`check`] loads its input as the text of `xmppd.toml` (invalid UTF-8 replaced), with
//! relative paths resolved against this crate's directory, so that a document can name files
//! that exist (`Cargo.toml`, `src/lib.rs`). It panics unless:
//! - loading does not panic, and loading the same text again gives the same result;
//! - an error is one line: no line break of any kind, the file name first, then the line
//!   (within the document) and the key when they are known, and at least one of them is;
//! - every JID it accepts (administrators, shared roster members) is a bare JID in the form
//!   the server compares with, the one `jid::BareJid` gives;
//! - a configuration that loads re-validates identically: its settings written back as TOML
//!   load to the same settings (so normalising a host, a JID or a path is idempotent, and
//!   nothing the validator accepts depends on how it was written).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use toml::{Table, Value};

use crate::{
    AdminHttpSettings, AuthBackendKind, BindPassword, DatabaseUrl, ExtDiscoSettings, HttpSettings,
    LdapSettings, LdapTls, MamDefault, MamSettings, MucCreation, MucSettings, Proxy65Settings,
    PubSubCreate, PubSubSettings, SharedGroupSource, Source, TurnSecret, UploadBackend,
    UploadSettings, ValidatedConfig,
};

const FILE: &str = "fuzz.toml";

/// Characters that end a line on some terminal or in some log viewer.
const LINE_BREAKS: [char; 7] = [
    '\n', '\r', '\u{b}', '\u{c}', '\u{85}', '\u{2028}', '\u{2029}',
];

/// How far an input got, so that tests can tell that the corpus reaches both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Refused,
    Loaded,
}

/// Runs the oracle on one input; panics on a violation.
pub fn check(data: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(data);
    let source = Source::new(FILE, text.as_ref(), base_dir().to_path_buf());
    let loaded = source.load();
    assert_eq!(loaded, source.load(), "loading is not deterministic");
    match loaded {
        Err(e) => {
            check_error(&e, &text);
            Outcome::Refused
        }
        Ok(config) => {
            let members = config.shared_groups.iter().flat_map(|g| match &g.source {
                SharedGroupSource::Members(m) => m.as_slice(),
                SharedGroupSource::Ldap { .. } => &[],
            });
            for jid in config.server.admins.iter().chain(members) {
                let canonical = jid::BareJid::new(jid).map(|b| b.to_string());
                assert_eq!(canonical.as_ref(), Ok(jid), "configured JID {jid:?}");
            }
            let written = render(&config);
            let again = Source::new(FILE, written.as_str(), base_dir().to_path_buf()).load();
            match again {
                Ok(again) => assert_eq!(again, config, "settings changed when written back"),
                Err(e) => panic!("settings written back are refused: {e}\n{written}"),
            }
            Outcome::Loaded
        }
    }
}

fn base_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn check_error(e: &crate::ConfigError, text: &str) {
    let shown = e.to_string();
    assert!(
        !shown.contains(LINE_BREAKS),
        "error is not one line: {shown:?}"
    );
    assert!(shown.starts_with(&format!("{FILE}:")), "{shown:?}");
    assert!(
        e.line.is_some() || e.key.is_some(),
        "error names neither a line nor a key: {shown:?}"
    );
    if let Some(line) = e.line {
        let lines = text.split('\n').count();
        assert!(
            (1..=lines).contains(&line),
            "line {line} of a {lines}-line document: {shown:?}"
        );
        assert!(shown.starts_with(&format!("{FILE}:{line}: ")), "{shown:?}");
    }
}

/// The settings as a document that should load to them again.
fn render(c: &ValidatedConfig) -> String {
    let mut doc = Table::new();
    let server = table([
        ("hosts", strings(&c.server.hosts)),
        ("data_dir", path(&c.server.data_dir)),
        ("node_name", c.server.node_name.clone().into()),
        ("log_level", c.server.log_level.as_str().into()),
        ("hide_ip_in_logs", c.server.hide_ip_in_logs.into()),
        ("show_os", c.server.show_os.into()),
        ("admins", strings(&c.server.admins)),
    ]);
    doc.insert("server".into(), server);
    let mut storage = table([
        ("backend", c.storage.backend.as_str().into()),
        ("sqlite_path", path(&c.storage.sqlite_path)),
    ]);
    if let (Some(pg), Value::Table(t)) = (&c.storage.server, &mut storage) {
        match &pg.url {
            DatabaseUrl::Inline(url) => t.insert("url".into(), url.clone().into()),
            DatabaseUrl::File(f) => t.insert("url_file".into(), path(f)),
        };
        if let Some(f) = &pg.password_file {
            t.insert("password_file".into(), path(f));
        }
        t.insert("pool_size".into(), int(pg.pool_size));
        t.insert(
            "connect_timeout_secs".into(),
            int(pg.connect_timeout.as_secs()),
        );
        t.insert("pool_wait_secs".into(), int(pg.pool_wait.as_secs()));
    }
    doc.insert("storage".into(), storage);
    let addrs = |list: &[std::net::SocketAddr]| {
        Value::Array(list.iter().map(|a| a.to_string().into()).collect())
    };
    let c2s = &c.c2s;
    doc.insert(
        "c2s".into(),
        table([
            ("starttls_listen", addrs(&c2s.starttls_listen)),
            ("direct_tls_listen", addrs(&c2s.direct_tls_listen)),
            ("require_starttls", c2s.require_starttls.into()),
            ("max_stanza_bytes", int(c2s.max_stanza_bytes)),
            (
                "pre_auth_max_stanza_bytes",
                int(c2s.pre_auth_max_stanza_bytes),
            ),
            ("session_queue", int(c2s.session_queue)),
            ("session_queue_bytes", int(c2s.session_queue_bytes)),
            ("session_reply_bytes", int(c2s.session_reply_bytes)),
            ("shaper_bytes_per_sec", int(c2s.shaper_bytes_per_sec)),
            ("shaper_burst_bytes", int(c2s.shaper_burst_bytes)),
            ("max_presence_bytes", int(c2s.max_presence_bytes)),
            (
                "handshake_timeout_secs",
                int(c2s.handshake_timeout.as_secs()),
            ),
            ("max_auth_failures", int(c2s.max_auth_failures)),
            ("max_connections", int(c2s.max_connections)),
            ("max_pending_per_ip", int(c2s.max_pending_per_ip)),
            ("stream_management", c2s.stream_management.into()),
            ("resume_timeout_secs", int(c2s.resume_timeout.as_secs())),
            ("sm_max_unacked", int(c2s.sm_max_unacked)),
            ("sm_max_unacked_bytes", int(c2s.sm_max_unacked_bytes)),
            (
                "ping_interval_secs",
                int(c2s.ping_interval.map_or(0, |d| d.as_secs())),
            ),
            ("ping_timeout_secs", int(c2s.ping_timeout.as_secs())),
            ("sasl2", c2s.sasl2.into()),
            (
                "fast_token_lifetime_days",
                int(c2s.fast_token_lifetime.as_secs() / 86_400),
            ),
            ("proxy_protocol_from", networks(&c2s.proxy_protocol_from)),
        ]),
    );
    let certificates = (c.tls.certificates.iter())
        .map(|cert| {
            table([
                ("domain", cert.domain.clone().into()),
                ("cert", path(&cert.cert)),
                ("key", path(&cert.key)),
            ])
        })
        .collect();
    doc.insert(
        "tls".into(),
        table([
            ("reload_interval_secs", int(c.tls.reload_interval.as_secs())),
            (
                "session_resumption",
                Value::Boolean(c.tls.session_resumption),
            ),
            ("certificate", Value::Array(certificates)),
        ]),
    );
    for (section, key, value) in [
        ("offline", "max_per_user", c.offline_max_per_user),
        ("resources", "max_per_user", c.resources_max_per_user),
        ("roster", "max_items", c.roster_max_items),
    ] {
        doc.insert(section.into(), table([(key, int(value))]));
    }
    let backends = (c.auth_backends.iter())
        .map(|(host, kind)| (host.clone(), backend(*kind).into()))
        .collect();
    doc.insert(
        "auth".into(),
        table([
            ("default", backend(AuthBackendKind::Internal).into()),
            ("hosts", Value::Table(backends)),
        ]),
    );
    if let Some(ldap) = &c.ldap {
        doc.insert("ldap".into(), render_ldap(ldap));
    }
    let groups = (c.shared_groups.iter())
        .map(|g| match &g.source {
            SharedGroupSource::Members(members) => table([
                ("name", g.name.clone().into()),
                ("members", strings(members)),
            ]),
            SharedGroupSource::Ldap { dn, host } => table([
                ("name", g.name.clone().into()),
                ("ldap_group", dn.clone().into()),
                ("host", host.clone().into()),
            ]),
        })
        .collect();
    doc.insert(
        "shared_roster".into(),
        table([("group", Value::Array(groups))]),
    );
    let r = &c.registration;
    doc.insert(
        "registration".into(),
        table([
            ("hosts", strings(&r.hosts)),
            ("max_per_ip_per_hour", int(r.max_per_ip_per_hour)),
            ("min_password_length", int(r.min_password_length)),
            ("tombstone_days", int(r.tombstone.as_secs() / 86_400)),
        ]),
    );
    doc.insert("muc".into(), render_muc(&c.muc));
    doc.insert("mam".into(), render_mam(&c.mam));
    if let Some(http) = &c.http {
        doc.insert("http".into(), render_http(http));
    }
    let p = &c.push;
    doc.insert(
        "push".into(),
        table([
            ("include_body", p.include_body.into()),
            ("include_sender", p.include_sender.into()),
            ("max_errors", int(p.max_errors)),
        ]),
    );
    let contact = (c.contact.iter())
        .map(|(host, lists)| {
            let mut entry = Table::new();
            entry.insert("host".into(), host.clone().into());
            for (field, uris) in lists {
                let key = field.trim_end_matches("-addresses");
                entry.insert(key.into(), strings(uris));
            }
            Value::Table(entry)
        })
        .collect();
    doc.insert("contact".into(), Value::Array(contact));
    let personal = &c.personal;
    doc.insert(
        "vcard".into(),
        table([("max_bytes", int(personal.vcard_max_bytes))]),
    );
    doc.insert(
        "private".into(),
        table([("max_bytes", int(personal.private_max_bytes))]),
    );
    doc.insert("pubsub".into(), render_pubsub(&c.pubsub));
    doc.insert("extdisco".into(), render_extdisco(&c.extdisco));
    if let Some(p) = &c.proxy65 {
        doc.insert("proxy65".into(), render_proxy65(p));
    }
    if let Some(u) = &c.upload {
        doc.insert("upload".into(), render_upload(u));
    }
    if let Some(a) = &c.admin_http {
        doc.insert("admin_http".into(), render_admin_http(a));
    }
    if let Some(s) = &c.s2s {
        doc.insert("s2s".into(), render_s2s(s));
    }
    if let Some(a) = &c.acme {
        let mut t = table([
            ("enabled", true.into()),
            ("directory_url", a.directory_url.clone().into()),
            ("contact", strings(&a.contact)),
            ("hosts", strings(&a.hosts)),
            ("dir", path(&a.dir)),
            ("renew_before_days", int(a.renew_before.as_secs() / 86_400)),
            ("check_interval_secs", int(a.check_interval.as_secs())),
            ("retry_interval_secs", int(a.retry_interval.as_secs())),
            (
                "challenge",
                match a.challenge {
                    crate::AcmeChallenge::Http01 => "http-01",
                    crate::AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
                }
                .into(),
            ),
        ]);
        if let (Value::Table(entries), Some(ca)) = (&mut t, &a.ca_file) {
            entries.insert("ca_file".into(), path(ca));
        }
        doc.insert("acme".into(), t);
    }
    doc.to_string()
}

fn render_ldap(l: &LdapSettings) -> Value {
    let tls = match l.tls {
        LdapTls::None => "none",
        LdapTls::StartTls => "starttls",
        LdapTls::Ldaps => "ldaps",
    };
    let mut t = table([
        ("uri", l.uri.clone().into()),
        ("bind_dn", l.bind_dn.clone().into()),
        ("base", l.base.clone().into()),
        ("user_filter", l.user_filter.clone().into()),
        ("uid_attribute", l.uid_attribute.clone().into()),
        ("tls", tls.into()),
        ("pool_size", int(l.pool_size)),
        ("timeout_secs", int(l.timeout.as_secs())),
        (
            "group_member_attribute",
            l.group_member_attribute.clone().into(),
        ),
        ("refresh_secs", int(l.refresh.as_secs())),
        ("scram_cache", l.scram_cache.into()),
    ]);
    let Value::Table(entries) = &mut t else {
        unreachable!("table() builds a table")
    };
    match &l.bind_password {
        BindPassword::None => {}
        BindPassword::Inline(p) => {
            entries.insert("bind_password".into(), p.clone().into());
        }
        BindPassword::File(f) => {
            entries.insert("bind_password_file".into(), path(f));
        }
    }
    if let Some(ca) = &l.ca_file {
        entries.insert("ca_file".into(), path(ca));
    }
    if let Some(group) = &l.admin_group {
        entries.insert("admin_group".into(), group.clone().into());
    }
    t
}

/// The domain template of a service from its domain on each host: `{host}` put back where
/// the host appears in the first service's domain, in the one way that gives every domain.
fn domain_template<'a>(services: impl Iterator<Item = (&'a str, &'a str)>) -> Value {
    let services: Vec<_> = services.collect();
    let Some(&(host, domain)) = services.first() else {
        return Value::String(String::new());
    };
    let fits =
        |template: &String| (services.iter()).all(|(h, d)| template.replace("{host}", h) == *d);
    let every = domain.replace(host, "{host}");
    let each = (domain.match_indices(host))
        .map(|(i, _)| format!("{}{{host}}{}", &domain[..i], &domain[i + host.len()..]));
    let mut candidates = std::iter::once(every).chain(each);
    candidates
        .find(fits)
        .unwrap_or_else(|| domain.to_owned())
        .into()
}

fn pairs(services: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    services.iter().map(|(h, d)| (h.as_str(), d.as_str()))
}

/// Inserts `domain` into a section's table when the service has one.
fn with_domain(mut t: Value, domain: Value) -> Value {
    if let (Value::Table(entries), false) = (&mut t, domain.as_str() == Some("")) {
        entries.insert("domain".into(), domain);
    }
    t
}

fn render_muc(m: &MucSettings) -> Value {
    let creation = match m.creation {
        MucCreation::All => "all",
        MucCreation::Admins => "admins",
    };
    let t = table([
        ("enabled", (!m.services.is_empty()).into()),
        ("creation", creation.into()),
        ("max_rooms_per_user", int(m.max_rooms_per_user)),
        ("max_occupants", int(m.max_occupants)),
        ("max_history", int(m.max_history)),
        ("max_history_bytes", int(m.max_history_bytes)),
        ("messages_per_second", int(m.messages_per_second)),
        ("lease_secs", int(m.lease_secs)),
    ]);
    with_domain(t, domain_template(pairs(&m.services)))
}

fn render_pubsub(p: &PubSubSettings) -> Value {
    let create = match p.create {
        PubSubCreate::Local => "local",
        PubSubCreate::Admins => "admins",
    };
    let t = table([
        ("enabled", (!p.services.is_empty()).into()),
        ("create", create.into()),
        ("max_items", int(p.max_items)),
        ("max_payload_bytes", int(p.max_payload_bytes)),
        ("max_nodes", int(p.max_nodes)),
        ("max_service_nodes", int(p.max_service_nodes)),
        ("caps_cache", int(p.caps_cache)),
    ]);
    with_domain(t, domain_template(pairs(&p.services)))
}

fn render_extdisco(e: &ExtDiscoSettings) -> Value {
    let services = (e.services.iter())
        .map(|s| {
            let mut entry = Table::new();
            entry.insert("type".into(), s.kind.clone().into());
            entry.insert("host".into(), s.host.clone().into());
            entry.insert("port".into(), int(s.port));
            entry.insert("transport".into(), s.transport.clone().into());
            if let Some(name) = &s.name {
                entry.insert("name".into(), name.clone().into());
            }
            match &s.secret {
                TurnSecret::None => {}
                TurnSecret::Inline(secret) => {
                    entry.insert("secret".into(), secret.clone().into());
                }
                TurnSecret::File(f) => {
                    entry.insert("secret_file".into(), path(f));
                }
            }
            Value::Table(entry)
        })
        .collect();
    table([
        ("credentials_ttl_secs", int(e.credentials_ttl.as_secs())),
        ("service", Value::Array(services)),
    ])
}

fn render_s2s(s: &crate::S2sSettings) -> Value {
    let addrs = |list: &[std::net::SocketAddr]| {
        Value::Array(list.iter().map(|a| a.to_string().into()).collect())
    };
    let routes = (s.routes.iter())
        .map(|(domain, (host, port))| (domain.clone(), Value::from(format!("{host}:{port}"))))
        .collect::<Table>();
    let mut t = table([
        ("enabled", true.into()),
        ("listen", addrs(&s.listen)),
        ("direct_tls_listen", addrs(&s.direct_tls_listen)),
        (
            "resolver",
            s.resolver.map(|r| r.to_string()).unwrap_or_default().into(),
        ),
        ("dialback", s.dialback.into()),
        (
            "require_valid_certificates",
            s.require_valid_certificates.into(),
        ),
        ("allow", strings(&s.allow)),
        ("deny", strings(&s.deny)),
        ("stanzas_per_sec", int(s.stanzas_per_sec)),
        ("refuse_strangers", s.refuse_strangers.into()),
        ("connect_timeout_secs", int(s.connect_timeout.as_secs())),
        ("handshake_timeout_secs", int(s.handshake_timeout.as_secs())),
        ("idle_timeout_secs", int(s.idle_timeout.as_secs())),
        ("bidi", s.bidi.into()),
        (
            "ping_interval_secs",
            int(s.ping_interval.map_or(0, |d| d.as_secs())),
        ),
        ("ping_timeout_secs", int(s.ping_timeout.as_secs())),
        ("queue_max", int(s.queue_max)),
        ("max_inbound", int(s.max_inbound)),
        ("max_pending_per_ip", int(s.max_pending_per_ip)),
        ("max_outbound", int(s.max_outbound)),
        ("max_domains_per_stream", int(s.max_domains_per_stream)),
        ("failure_cache_secs", int(s.failure_cache.as_secs())),
        ("allow_private_addresses", s.allow_private_addresses.into()),
        ("routes", Value::Table(routes)),
    ]);
    if let (Value::Table(entries), Some(ca)) = (&mut t, &s.ca_file) {
        entries.insert("ca_file".into(), path(ca));
    }
    t
}

fn render_proxy65(p: &Proxy65Settings) -> Value {
    let services = (p.services.iter()).map(|(h, d, _)| (h.as_str(), d.as_str()));
    // The public host is the configured one when it is not what an empty key gives.
    let public_host = match p.services.first() {
        Some((_, domain, public))
            if *public != p.listen.ip().to_string()
                && !(p.listen.ip().is_unspecified() && public == domain) =>
        {
            public.clone()
        }
        _ => String::new(),
    };
    let t = table([
        ("enabled", true.into()),
        ("listen", p.listen.to_string().into()),
        ("public_host", public_host.into()),
        ("public_port", int(p.public_port)),
        ("allow", strings(&p.allow)),
        ("max_transfers", int(p.max_transfers)),
        ("transfer_bytes_per_sec", int(p.transfer_bytes_per_sec)),
        ("total_bytes_per_sec", int(p.total_bytes_per_sec)),
        ("pairing_timeout_secs", int(p.pairing_timeout.as_secs())),
        ("idle_timeout_secs", int(p.idle_timeout.as_secs())),
        ("max_pending_per_ip", int(p.max_pending_per_ip)),
    ]);
    with_domain(t, domain_template(services))
}

fn render_upload(u: &UploadSettings) -> Value {
    let mut t = table([
        ("enabled", true.into()),
        ("max_file_bytes", int(u.max_file_bytes)),
        (
            "quota_bytes_per_user",
            int(u.quota_bytes_per_user.unwrap_or(0)),
        ),
        ("max_total_bytes", int(u.max_total_bytes.unwrap_or(0))),
        (
            "expire_days",
            Value::Float(
                u.expire_after
                    .map_or(0.0, |d| d.as_secs() as f64 / 86_400.0),
            ),
        ),
        ("expire_interval_secs", int(u.expire_interval.as_secs())),
        ("slot_lifetime_secs", int(u.slot_lifetime.as_secs())),
        ("idle_timeout_secs", int(u.idle_timeout.as_secs())),
        ("secret", u.secret.clone().unwrap_or_default().into()),
        ("cors_origins", strings(&u.cors_origins)),
    ]);
    let Value::Table(entries) = &mut t else {
        unreachable!("table() builds a table")
    };
    match &u.backend {
        UploadBackend::Local { dir, public_url } => {
            entries.insert("dir".into(), path(dir));
            let url = public_url.clone().unwrap_or_default();
            entries.insert("public_url".into(), url.into());
        }
        UploadBackend::External { url, secret } => {
            entries.insert("external_url".into(), url.clone().into());
            entries.insert("external_secret".into(), secret.clone().into());
        }
    }
    with_domain(t, domain_template(pairs(&u.services)))
}

fn render_mam(m: &MamSettings) -> Value {
    let default = match m.default {
        MamDefault::Always => "always",
        MamDefault::Roster => "roster",
        MamDefault::Never => "never",
    };
    let days = m.retention.map_or(0.0, |r| r.as_secs() as f64 / 86_400.0);
    table([
        ("enabled", m.enabled.into()),
        ("retention_days", Value::Float(days)),
        ("max_bytes", int(m.max_bytes.unwrap_or(0))),
        ("default", default.into()),
        ("archive_markers", m.archive_markers.into()),
        ("purge_interval_secs", int(m.purge_interval.as_secs())),
        ("purge_batch", int(m.purge_batch)),
    ])
}

fn networks(list: &[xmppd_realip::Network]) -> Value {
    Value::Array(list.iter().map(|n| n.to_string().into()).collect())
}

fn render_http(h: &HttpSettings) -> Value {
    let addrs = |list: &[std::net::SocketAddr]| {
        Value::Array(list.iter().map(|a| a.to_string().into()).collect())
    };
    table([
        ("enabled", true.into()),
        ("listen", addrs(&h.listen)),
        ("tls_listen", addrs(&h.tls_listen)),
        ("max_body_bytes", int(h.max_body_bytes)),
        ("max_header_bytes", int(h.max_header_bytes)),
        ("header_timeout_secs", int(h.header_timeout.as_secs())),
        ("request_timeout_secs", int(h.request_timeout.as_secs())),
        ("max_connections", int(h.max_connections)),
        ("access_log", h.access_log.into()),
        ("behind_tls_proxy", h.behind_tls_proxy.into()),
        ("websocket", h.websocket.into()),
        ("websocket_origins", strings(&h.websocket_origins)),
        (
            "websocket_url",
            h.websocket_url.clone().unwrap_or_default().into(),
        ),
        ("bosh", h.bosh.into()),
        ("bosh_url", h.bosh_url.clone().unwrap_or_default().into()),
        ("bosh_origins", strings(&h.bosh_origins)),
        ("bosh_max_wait_secs", int(h.bosh_max_wait.as_secs())),
        ("bosh_max_hold", int(h.bosh_max_hold)),
        ("bosh_inactivity_secs", int(h.bosh_inactivity.as_secs())),
        ("proxy_protocol_from", networks(&h.proxy_protocol_from)),
        ("trusted_proxies", networks(&h.trusted_proxies)),
        ("forwarded_header", h.forwarded_header.name().into()),
    ])
}

fn render_admin_http(a: &AdminHttpSettings) -> Value {
    table([
        ("enabled", true.into()),
        (
            "listen",
            Value::Array(a.listen.iter().map(|a| a.to_string().into()).collect()),
        ),
        ("api", a.api.into()),
        ("metrics", a.metrics.into()),
        ("max_body_bytes", int(a.max_body_bytes)),
        ("request_timeout_secs", int(a.request_timeout.as_secs())),
    ])
}

fn backend(kind: AuthBackendKind) -> &'static str {
    match kind {
        AuthBackendKind::Internal => "internal",
        AuthBackendKind::Ldap => "ldap",
    }
}

fn table<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Table(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

fn strings(list: &[String]) -> Value {
    Value::Array(list.iter().map(|s| s.clone().into()).collect())
}

fn path(p: &Path) -> Value {
    // Validated paths are absolute (resolved against an absolute base), so they resolve to
    // themselves; they came from TOML strings, so they are UTF-8.
    p.to_str().expect("a path from TOML is UTF-8").into()
}

fn int(n: impl TryInto<i64>) -> Value {
    Value::Integer(
        n.try_into()
            .unwrap_or_else(|_| panic!("setting beyond i64")),
    )
}
