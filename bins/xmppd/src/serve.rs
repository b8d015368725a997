//! `xmppd serve`: wires the configuration onto storage, core, authentication, TLS and the
//! client listeners, prints where it listens, and runs until SIGINT or SIGTERM.
//!
//! The banner goes to stdout (tests and scripts parse its `xmppd listening:` lines to learn the
//! ports bound when the configuration says port 0); logs go to stderr.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing_subscriber::EnvFilter;
use xmppd_adhoc::motd::Motd;
use xmppd_auth::{AuthBackend, InternalBackend};
use xmppd_blocking::Blocking;
use xmppd_c2s::{C2s, C2sSettings, CertificateSpec, ListenerKind, Tls, TlsSettings};
use xmppd_carbons::CarbonsModule;
use xmppd_config::{
    AuthBackendKind, BindPassword, LdapTls, NestedGroups, SharedGroupSettings, SharedGroupSource,
    ValidatedConfig,
};
use xmppd_core::{BareJid, CoreConfig, Server};
use xmppd_csi::{CsiModule, HeldLimits};
use xmppd_ldap::{Directory, LdapBackend, LdapConfig, Nesting, TlsMode};
use xmppd_mam::module::{MamModule, MamSettings};
use xmppd_mam::query::PageLimits;
use xmppd_mam::{ArchiveStore, DefaultPolicy, Retention, RoomArchives};
use xmppd_personal::{PrivateStorage, VCards};
use xmppd_pubsub::{Pep, PepWatcher, PubSubService};
use xmppd_push::Push;
use xmppd_register::{Register, RegistrationPolicy};
use xmppd_shared_roster::{GroupSource, SharedRoster, StaticGroup};
use xmppd_storage::{CredentialStore, UserDataStore};
use xmppd_stream::Limits;

use crate::stores::{self, Engine, Stores};
use crate::{admin_http, admin_socket, service_stores, Failure};

/// How long in-flight sessions get to close after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub fn run(config: ValidatedConfig, config_arg: Option<String>) -> Result<(), Failure> {
    init_logging(&config);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?
        .block_on(serve(config, config_arg.unwrap_or_default()))
}

fn init_logging(config: &ValidatedConfig) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(config.server.log_level.as_str()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Push notifications (XEP-0357), with what they may tell the app servers.
async fn push_module(
    config: &ValidatedConfig,
    engine: &stores::Engine,
) -> Result<Arc<Push>, Failure> {
    let registrations = service_stores::push(engine).await?;
    let p = &config.push;
    let settings = xmppd_push::Settings {
        disclose: xmppd_push::Disclose {
            sender: p.include_sender,
            body: p.include_body,
        },
        max_errors: p.max_errors,
        ..xmppd_push::Settings::default()
    };
    Ok(Arc::new(Push::new(registrations, settings)))
}

/// Private XML storage with bookmark conversion, and vCards with avatar conversion: both keep
/// data in step with the account's personal eventing nodes.
async fn personal_modules(
    config: &ValidatedConfig,
    stores: &Stores,
    pep: &Arc<Pep>,
) -> Result<(Arc<PrivateStorage>, Arc<VCards>), Failure> {
    let personal = service_stores::personal(&stores.engine).await?;
    let limits = &config.personal;
    let private = Arc::new(PrivateStorage::new(
        personal.clone(),
        pep.clone(),
        limits.private_max_bytes,
    ));
    let vcards = Arc::new(VCards::new(personal, pep.clone(), limits.vcard_max_bytes));
    let watcher: Arc<dyn PepWatcher> = private.clone();
    pep.watch(Arc::downgrade(&watcher));
    let watcher: Arc<dyn PepWatcher> = vcards.clone();
    pep.watch(Arc::downgrade(&watcher));
    Ok((private, vcards))
}

async fn serve(config: ValidatedConfig, config_arg: String) -> Result<(), Failure> {
    let server_cfg = &config.server;
    // Owner only: it holds the database (SCRAM keys), private keys and the admin socket.
    xmppd_storage::create_private_dir_all(&server_cfg.data_dir)
        .map_err(|e| format!("creating {}: {e}", server_cfg.data_dir.display()))?;
    let stores = stores::open(&config).await?;
    // A previous run of this node may have crashed with sessions recorded as live.
    stores
        .core
        .clear_sessions(&server_cfg.node_name)
        .await
        .map_err(|e| format!("clearing stale sessions: {e}"))?;

    let mut core_config = CoreConfig {
        hosts: server_cfg.hosts.clone(),
        node_name: server_cfg.node_name.clone(),
        offline_max: config.offline_max_per_user,
        // A database server may be shared by several processes; a SQLite file is not.
        offline_shared: config.storage.backend != xmppd_config::StorageBackend::Sqlite,
        show_os: server_cfg.show_os,
        max_resources_per_user: config.resources_max_per_user,
        max_roster_items: config.roster_max_items,
        tombstone: config.registration.tombstone,
        max_presence_bytes: config.c2s.max_presence_bytes,
        ..CoreConfig::default()
    };
    core_config.admins = server_cfg.admins.clone();

    let internal: Arc<dyn AuthBackend> = Arc::new(InternalBackend::new(stores.credentials.clone()));
    let directory = open_directory(&config)?;
    let auth = auth_backends(&config, internal, directory.as_ref(), &stores.user_data);
    let shared_roster = shared_roster(&config, directory.as_ref());

    let registration = RegistrationPolicy {
        hosts: config.registration.hosts.clone(),
        max_per_ip_per_hour: config.registration.max_per_ip_per_hour,
        min_password_length: config.registration.min_password_length,
    };
    let register = Arc::new(Register::new(auth.clone(), registration));
    let motd = Arc::new(Motd::new());
    let blocks = service_stores::blocks(&stores.engine).await?;
    // First: what a user blocks must reach neither the presence rules nor the archive.
    let blocking = Blocking::new(blocks, xmppd_blocking::Settings::default());
    let (pep, pubsub_services) = pubsub(&config, &stores).await?;
    let proxy = proxy65(&config).await?;
    let push = push_module(&config, &stores.engine).await?;
    let (private, vcards) = personal_modules(&config, &stores, &pep).await?;
    // Personal eventing before the IM modules: it reads a session's capabilities from the
    // presence they take; vCards too: they put the avatar's hash in it. Push too: offline
    // storage ends the undeliverable chain.
    let builder = Server::builder(core_config, stores.core.clone())
        .module(Arc::new(blocking))
        .module(pep)
        .module(vcards)
        .module(private)
        .module(push)
        .modules(xmppd_im::modules())
        .module(shared_roster.clone())
        .module(Arc::new(xmppd_adhoc::admin::module(
            Arc::new(auth.clone()),
            Arc::new(account_counts(&config, directory.as_ref())),
            motd.clone(),
        )))
        .module(motd.clone())
        .module(register.clone())
        .module(Arc::new(contact_addresses(&config)));
    // Announced only with something to announce.
    let builder = if config.extdisco.services.is_empty() {
        builder
    } else {
        builder.module(Arc::new(extdisco(&config)?))
    };
    let (builder, retention, archive) = match mam_module(&config, &stores.engine).await? {
        Some((module, retention, archive)) => {
            (builder.module(module), Some(retention), Some(archive))
        }
        None => (builder, None, None),
    };
    // After the archive: a received copy carries the id it gives the message.
    let csi = HeldLimits::for_queue(&queue_limits(&config.c2s));
    let builder = builder
        .module(Arc::new(CarbonsModule::new()))
        .module(Arc::new(CsiModule::new(csi)));
    let uploads = upload_service(&config, &stores.engine).await?;
    let mut upload_services: Vec<(String, Arc<dyn xmppd_core::module::Component>)> = Vec::new();
    if let (Some(u), Some(shared)) = (&config.upload, &uploads) {
        for (host, domain) in &u.services {
            let service = xmppd_upload::UploadComponent::new(host, domain, shared.clone());
            upload_services.push((domain.clone(), Arc::new(service)));
        }
    }
    let acme = acme_settings(&config);
    // What ACME obtained earlier serves from the start; the rest is self-signed until then.
    let acme_certificates = (acme.iter().flat_map(|a| &a.certificates)).filter_map(|names| {
        let dir = &acme.as_ref()?.dir;
        let path = xmppd_acme::certificate_path(dir, &names[0]);
        path.is_file().then(|| CertificateSpec {
            domain: names[0].clone(),
            cert: path.clone(),
            key: path,
        })
    });
    let tls = Tls::load(TlsSettings {
        certificates: config
            .tls
            .certificates
            .iter()
            .map(|c| CertificateSpec {
                domain: c.domain.clone(),
                cert: c.cert.clone(),
                key: c.key.clone(),
            })
            .chain(acme_certificates)
            .collect(),
        data_dir: server_cfg.data_dir.clone(),
        hosts: server_cfg.hosts.clone(),
        reload_interval: config.tls.reload_interval,
        session_resumption: config.tls.session_resumption,
    })
    .map_err(|e| format!("tls: {e}"))?;
    let reloader = tls.spawn_reloader();
    let acme = acme.map(|settings| {
        let store = Arc::new(AcmeStore(Arc::clone(&tls)));
        xmppd_acme::Acme::new(settings, store)
    });
    let s2s = crate::federation::federation(&config, &tls)?;
    let builder = match &s2s {
        Some(s2s) => builder.remote(Arc::new(s2s.clone())),
        None => builder,
    };
    let rooms = muc_services(&config, &stores, archive).await?;
    let room_services = rooms.clone();
    let server = (rooms.iter())
        .map(|s| {
            (
                s.domain().to_owned(),
                s.clone() as Arc<dyn xmppd_core::module::Component>,
            )
        })
        .chain(pubsub_services)
        .chain(proxy.iter().flat_map(|p| p.components.clone()))
        .chain(upload_services)
        .fold(builder, |b, (domain, c)| b.component(&domain, c))
        .build();
    let s2s_bound = match &s2s {
        Some(s2s) => {
            s2s.start(&server);
            s2s.listen()
                .await
                .map_err(|e| format!("cannot listen for servers (s2s.listen): {e}"))?
        }
        None => Vec::new(),
    };
    // Read the groups before serving, so the first logins already see them.
    shared_roster.refresh().await;
    let directory_counts = directory.clone();
    let directory_tasks = spawn_directory_tasks(&config, directory, &server, &shared_roster);

    let c2s_cfg = &config.c2s;
    let settings = C2sSettings {
        starttls_listen: c2s_cfg.starttls_listen.clone(),
        direct_tls_listen: c2s_cfg.direct_tls_listen.clone(),
        require_starttls: c2s_cfg.require_starttls,
        pre_auth_limits: Limits {
            max_stanza_bytes: c2s_cfg.pre_auth_max_stanza_bytes,
            ..Limits::PRE_AUTH
        },
        limits: Limits {
            max_stanza_bytes: c2s_cfg.max_stanza_bytes,
            ..Limits::DEFAULT
        },
        queue: queue_limits(c2s_cfg),
        shaper: xmppd_c2s::ShaperSettings {
            bytes_per_sec: c2s_cfg.shaper_bytes_per_sec as u64,
            burst_bytes: c2s_cfg.shaper_burst_bytes as u64,
        },
        hide_ip: server_cfg.hide_ip_in_logs,
        handshake_timeout: c2s_cfg.handshake_timeout,
        max_auth_failures: c2s_cfg.max_auth_failures,
        max_connections: c2s_cfg.max_connections,
        max_pending_per_ip: c2s_cfg.max_pending_per_ip,
        sm: xmppd_c2s::SmSettings {
            enabled: c2s_cfg.stream_management,
            resume_timeout: c2s_cfg.resume_timeout,
            max_unacked: c2s_cfg.sm_max_unacked,
            max_unacked_bytes: c2s_cfg.sm_max_unacked_bytes,
        },
        ping_interval: c2s_cfg.ping_interval,
        ping_timeout: c2s_cfg.ping_timeout,
        sasl2: c2s_cfg.sasl2,
        fast_token_lifetime: c2s_cfg.fast_token_lifetime,
        proxy_protocol_from: c2s_cfg.proxy_protocol_from.clone(),
    };
    let fast_tokens = service_stores::fast_tokens(&stores.engine).await?;
    let api = match &config.admin_http {
        Some(_) => Some(xmppd_api::Api {
            server: server.clone(),
            backends: Arc::new(auth.clone()),
            counts: Arc::new(account_counts(&config, directory_counts.as_ref())),
            motd: motd.clone(),
            rooms,
            tokens: Arc::new(service_stores::api_tokens(&stores.engine).await?),
            hide_ip: server_cfg.hide_ip_in_logs,
        }),
        None => None,
    };
    let admin_socket = admin_socket::start(&config, server.clone(), motd)?;
    let core = server.clone();
    let c2s = match C2s::bind(settings, Arc::clone(&tls), server, auth, vec![register]).await {
        Ok(c2s) => c2s.with_fast_tokens(fast_tokens),
        Err(e) => return Err(bind_failure(&config, e)),
    };
    let admin_http = match (&config.admin_http, api) {
        (Some(admin), Some(api)) => {
            let throttle = c2s.auth_throttle();
            let uploads = uploads.clone();
            match admin_http::bind(&config, admin, tls.clone(), api, throttle, uploads).await {
                Ok(bound) => Some(bound),
                Err(e) => return Err(bind_failure(&config, e)),
            }
        }
        _ => None,
    };
    let http = match &config.http {
        Some(http) => {
            match bind_http(&config, http, tls, &c2s, uploads.as_ref(), acme.as_ref()).await {
                Ok(bound) => Some(bound),
                Err(e) => return Err(bind_failure(&config, e)),
            }
        }
        None => None,
    };

    if let Some(uploads) = &uploads {
        // Slots point at the first HTTPS listener, else the first plain one, unless
        // upload.public_url says otherwise.
        let mut bound = http
            .iter()
            .flat_map(|h| h.local_addrs())
            .collect::<Vec<_>>();
        bound.sort_by_key(|(tls, _)| !tls);
        if let Some((tls, addr)) = bound.first() {
            uploads.set_listener(*tls, addr.port());
        }
    }
    let upload_expiry = uploads.clone().and_then(xmppd_upload::expiry::spawn);

    // Before the banner: whoever reads it may signal us right away.
    let mut signals = Signals::install()?;
    let (proxy_stop, proxy_stopped) = tokio::sync::watch::channel(false);
    for (direct, addr) in &s2s_bound {
        let kind = if *direct { "s2s-direct-tls" } else { "s2s" };
        say(format_args!("xmppd listening: {kind} {addr}"));
    }
    let proxy_task = proxy.map(|p| {
        say(format_args!("xmppd listening: proxy65 {}", p.local));
        tokio::spawn(p.relay.serve(p.listener, proxy_stopped))
    });
    for (tls, addr) in http.iter().flat_map(|h| h.local_addrs()) {
        let kind = if tls { "https" } else { "http" };
        say(format_args!("xmppd listening: {kind} {addr}"));
    }
    for (_, addr) in admin_http.iter().flat_map(|h| h.local_addrs()) {
        say(format_args!("xmppd listening: admin-http {addr}"));
    }
    print_banner(
        &config,
        &c2s.local_addrs(),
        &*stores.credentials,
        &config_arg,
    )
    .await;
    tracing::info!(node = %server_cfg.node_name, "xmppd started");

    let trimmer = crate::trim::spawn();
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let http_rx = shutdown_rx.clone();
    // Started with the listeners: the ACME server validates through the HTTP one.
    let acme_task = acme.map(|acme| tokio::spawn(acme.run(shutdown_rx.clone())));
    let mut running = tokio::spawn(async move {
        let admin_rx = http_rx.clone();
        let http = async move {
            if let Some(http) = http {
                http.run(http_rx).await;
            }
        };
        let admin_http = async move {
            if let Some(admin_http) = admin_http {
                admin_http.run(admin_rx).await;
            }
        };
        tokio::join!(c2s.run(shutdown_rx), http, admin_http);
    });
    let outcome = tokio::select! {
        _ = signals.next() => {
            tracing::info!("shutting down");
            let _ = shutdown_tx.send(true);
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut running).await.is_err() {
                tracing::warn!("sessions still open after {SHUTDOWN_GRACE:?}; exiting anyway");
                running.abort();
            }
            Ok(())
        }
        _ = &mut running => Err(Failure("the client listeners stopped unexpectedly".into())),
    };
    // Sessions kept for resumption end like the connected ones: what they hold is re-routed.
    if tokio::time::timeout(SHUTDOWN_GRACE, core.end_detached())
        .await
        .is_err()
    {
        tracing::warn!("detached sessions still ending after {SHUTDOWN_GRACE:?}");
    }
    reloader.abort();
    let _ = proxy_stop.send(true);
    proxy_task.iter().for_each(|t| t.abort());
    retention.iter().for_each(|t| t.abort());
    upload_expiry.iter().for_each(|t| t.abort());
    acme_task.iter().for_each(|t| t.abort());
    trimmer.iter().for_each(|t| t.abort());
    directory_tasks.iter().for_each(|t| t.abort());
    drop(admin_socket);
    // The other processes on the database take this one's rooms at once.
    for service in &room_services {
        service.release_leases().await;
    }
    // Whatever did not close in time must not appear connected to `xmppd sessions`.
    if let Err(e) = stores.core.clear_sessions(&server_cfg.node_name).await {
        tracing::warn!("clearing session records: {e}");
    }
    outcome
}

/// The HTTP listeners and their services (`[http]`): host-meta, and WebSocket and BOSH streams
/// handed to the c2s driver.
async fn bind_http(
    config: &ValidatedConfig,
    http: &xmppd_config::HttpSettings,
    tls: Arc<Tls>,
    c2s: &C2s,
    uploads: Option<&Arc<xmppd_upload::Uploads>>,
    acme: Option<&xmppd_acme::Acme>,
) -> std::io::Result<xmppd_http::Http> {
    use xmppd_http::{hostmeta, websocket};
    let mut router = xmppd_http::Router::default();
    let host_meta = Arc::new(hostmeta::HostMeta {
        websocket: http.websocket,
        websocket_url: http.websocket_url.clone(),
        bosh: http.bosh,
        bosh_url: http.bosh_url.clone(),
    });
    router.route(hostmeta::PATH, host_meta.clone());
    router.route(hostmeta::PATH_JSON, host_meta);
    if http.websocket {
        let ws = websocket::WebSocket {
            host: c2s.stream_host(),
            origins: http.websocket_origins.clone(),
            // The stanza limit, and room for the namespace each message declares.
            max_message_bytes: config.c2s.max_stanza_bytes + 1024,
        };
        router.route(websocket::PATH, Arc::new(ws));
    }
    if http.bosh {
        let settings = xmppd_http::bosh::BoshSettings {
            max_wait: http.bosh_max_wait,
            max_hold: http.bosh_max_hold,
            inactivity: http.bosh_inactivity,
            origins: http.bosh_origins.clone(),
        };
        let bosh = xmppd_http::bosh::Bosh::new(c2s.stream_host(), settings);
        router.route(xmppd_http::bosh::PATH, Arc::new(bosh));
    }
    if let Some(acme) = acme {
        router.route(xmppd_acme::CHALLENGE_PATH, acme.challenges());
    }
    if let Some(uploads) = uploads.filter(|u| u.serves_files()) {
        let service = Arc::new(xmppd_upload::UploadHttp::new(uploads.clone()));
        // A file's path is its download link: whoever reads the log must not get it.
        (router.route_streaming(xmppd_upload::PATH, service)).redact_in_log(xmppd_upload::PATH);
    }
    let settings = xmppd_http::HttpSettings {
        listen: http.listen.clone(),
        tls_listen: http.tls_listen.clone(),
        max_body_bytes: http.max_body_bytes,
        max_header_bytes: http.max_header_bytes,
        header_timeout: http.header_timeout,
        request_timeout: http.request_timeout,
        max_connections: http.max_connections,
        access_log: http.access_log,
        hide_ip: config.server.hide_ip_in_logs,
        behind_tls_proxy: http.behind_tls_proxy,
        proxy_protocol_from: http.proxy_protocol_from.clone(),
        trusted_proxies: http.trusted_proxies.clone(),
        forwarded_header: http.forwarded_header,
    };
    xmppd_http::Http::bind(settings, tls, router).await
}

/// `[acme]` for the ACME client: per host, the host and the service subdomains it serves.
fn acme_settings(config: &ValidatedConfig) -> Option<xmppd_acme::AcmeSettings> {
    let a = config.acme.as_ref()?;
    let services = (config.muc.services.iter())
        .chain(&config.pubsub.services)
        .chain(config.upload.iter().flat_map(|u| &u.services))
        .map(|(host, domain)| (host, domain))
        .chain((config.proxy65.iter()).flat_map(|p| p.services.iter().map(|(h, d, _)| (h, d))));
    let services: Vec<_> = services.collect();
    let certificates = (a.hosts.iter())
        .map(|host| {
            let subdomains = services.iter().filter(|(h, _)| *h == host);
            std::iter::once(host.clone())
                .chain(subdomains.map(|(_, d)| (*d).clone()))
                .collect()
        })
        .collect();
    Some(xmppd_acme::AcmeSettings {
        directory_url: a.directory_url.clone(),
        contact: a.contact.clone(),
        ca_file: a.ca_file.clone(),
        certificates,
        dir: a.dir.clone(),
        renew_before: a.renew_before,
        check_interval: a.check_interval,
        retry_interval: a.retry_interval,
        challenge: match a.challenge {
            xmppd_config::AcmeChallenge::Http01 => xmppd_acme::Challenge::Http01,
            xmppd_config::AcmeChallenge::TlsAlpn01 => xmppd_acme::Challenge::TlsAlpn01,
        },
    })
}

/// The TLS store, as the ACME client sees it.
struct AcmeStore(Arc<Tls>);

impl xmppd_acme::CertificateStore for AcmeStore {
    fn install(
        &self,
        host: &str,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<(), String> {
        let spec = CertificateSpec {
            domain: host.to_owned(),
            cert: cert.to_owned(),
            key: key.to_owned(),
        };
        self.0.install(spec).map_err(|e| e.to_string())
    }

    fn set_alpn_challenge(&self, name: &str, cert: Vec<u8>, key: Vec<u8>) -> Result<(), String> {
        (self.0.set_acme_challenge(name, cert, key)).map_err(|e| e.to_string())
    }

    fn clear_alpn_challenge(&self, name: &str) {
        self.0.clear_acme_challenge(name);
    }
}

/// The contact addresses (XEP-0157) of each host (`[[contact]]`).
fn contact_addresses(config: &ValidatedConfig) -> xmppd_im::ContactAddresses {
    let hosts = config.contact.iter().map(|(host, lists)| {
        let lists = lists
            .iter()
            .map(|(var, uris)| (var.to_string(), uris.clone()));
        (host.clone(), lists.collect())
    });
    xmppd_im::ContactAddresses::new(hosts)
}

/// External services (XEP-0215, `[extdisco]`), with the TURN secrets read.
fn extdisco(config: &ValidatedConfig) -> Result<xmppd_extdisco::ExtDisco, Failure> {
    let e = &config.extdisco;
    let mut services = Vec::with_capacity(e.services.len());
    for s in &e.services {
        let secret = match &s.secret {
            xmppd_config::TurnSecret::None => None,
            xmppd_config::TurnSecret::Inline(secret) => Some(secret.clone()),
            xmppd_config::TurnSecret::File(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("extdisco secret_file {}: {e}", path.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
        };
        services.push(xmppd_extdisco::ServiceConfig {
            kind: s.kind.clone(),
            host: s.host.clone(),
            port: s.port,
            transport: s.transport.clone(),
            name: s.name.clone(),
            secret,
        });
    }
    Ok(xmppd_extdisco::ExtDisco::new(
        services,
        e.credentials_ttl.as_secs(),
    ))
}

/// The SOCKS5 bytestreams proxy (`[proxy65]`): its listener, bound now so that the banner
/// and the streamhost answers know its port, the relay behind it, and a component per host.
async fn proxy65(config: &ValidatedConfig) -> Result<Option<Proxy65Parts>, Failure> {
    let Some(p) = &config.proxy65 else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(p.listen)
        .await
        .map_err(|e| format!("cannot listen on {} (proxy65.listen): {e}", p.listen))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("proxy65.listen: {e}"))?;
    let relay = xmppd_proxy65::Relay::new(xmppd_proxy65::RelaySettings {
        transfer_bytes_per_sec: p.transfer_bytes_per_sec,
        total_bytes_per_sec: p.total_bytes_per_sec,
        max_transfers: p.max_transfers,
        pairing_timeout: p.pairing_timeout,
        idle_timeout: p.idle_timeout,
        max_pending_per_ip: p.max_pending_per_ip,
    });
    let port = match p.public_port {
        0 => local.port(),
        port => port,
    };
    let allow = match p.allow.is_empty() {
        true => xmppd_proxy65::Allow::Local,
        false => xmppd_proxy65::Allow::Listed(p.allow.clone()),
    };
    let components = (p.services.iter())
        .map(|(_, domain, public)| {
            let proxy =
                xmppd_proxy65::Proxy65::new(domain, public, port, allow.clone(), relay.clone());
            let proxy: Arc<dyn xmppd_core::module::Component> = Arc::new(proxy);
            (domain.clone(), proxy)
        })
        .collect();
    Ok(Some(Proxy65Parts {
        components,
        listener,
        relay,
        local,
    }))
}

struct Proxy65Parts {
    components: Vec<(String, Arc<dyn xmppd_core::module::Component>)>,
    listener: tokio::net::TcpListener,
    relay: Arc<xmppd_proxy65::Relay>,
    local: SocketAddr,
}

/// HTTP file upload (`[upload]`): the state its components, HTTP service and expiry job share;
/// none when it is off.
async fn upload_service(
    config: &ValidatedConfig,
    engine: &stores::Engine,
) -> Result<Option<Arc<xmppd_upload::Uploads>>, Failure> {
    let Some(u) = &config.upload else {
        return Ok(None);
    };
    let settings = xmppd_upload::Settings {
        max_file_bytes: u.max_file_bytes,
        quota_bytes_per_user: u.quota_bytes_per_user,
        max_total_bytes: u.max_total_bytes,
        expire_after: u.expire_after,
        expire_interval: u.expire_interval,
        slot_lifetime: u.slot_lifetime,
        idle_timeout: u.idle_timeout,
        cors_origins: u.cors_origins.clone(),
    };
    Ok(Some(match &u.backend {
        xmppd_config::UploadBackend::Local { dir, public_url } => {
            let (secret, url) = (u.secret.clone(), public_url.clone());
            let store = service_stores::uploads(engine).await?;
            let node = &config.server.node_name;
            xmppd_upload::Uploads::local(settings, store, dir, node, secret, url).await?
        }
        xmppd_config::UploadBackend::External { url, secret } => {
            xmppd_upload::Uploads::external(settings, url.clone(), secret.clone())
        }
    }))
}

/// What one session's queue may hold (`[c2s]`).
fn queue_limits(c2s: &xmppd_config::C2sSettings) -> xmppd_core::QueueLimits {
    xmppd_core::QueueLimits {
        stanzas: c2s.session_queue,
        bytes: c2s.session_queue_bytes,
        reply_bytes: c2s.session_reply_bytes,
    }
}

/// The message archive (`[mam]`): its module, its retention job (accounts' and rooms'
/// archives alike) and its store, none when disabled.
async fn mam_module(
    config: &ValidatedConfig,
    engine: &Engine,
) -> Result<Option<MamParts>, Failure> {
    let m = &config.mam;
    if !m.enabled {
        return Ok(None);
    }
    let archive = service_stores::archive(engine).await?;
    let settings = MamSettings {
        default_policy: match m.default {
            xmppd_config::MamDefault::Always => DefaultPolicy::Always,
            xmppd_config::MamDefault::Roster => DefaultPolicy::Roster,
            xmppd_config::MamDefault::Never => DefaultPolicy::Never,
        },
        markers: m.archive_markers,
        // The carbons module, always added after the archive, moves it onto sent copies.
        sender_ids: true,
        ..MamSettings::default()
    };
    let retention = xmppd_mam::retention::spawn(
        archive.clone(),
        Retention {
            max_age: m.retention,
            max_bytes: m.max_bytes,
            interval: m.purge_interval,
            batch: m.purge_batch,
        },
    );
    Ok(Some((
        Arc::new(MamModule::new(archive.clone(), settings)),
        retention,
        archive,
    )))
}

type MamParts = (
    Arc<MamModule>,
    tokio::task::JoinHandle<()>,
    Arc<dyn ArchiveStore>,
);

/// One multi-user chat service per host (`[muc]`), with its persistent rooms loaded. With the
/// message archive, rooms whose archiving is on keep their messages there (and their history
/// with them); the others, and every room without it, keep their history in memory.
/// Publish-subscribe (`[pubsub]`): personal eventing on every account, and the service on
/// each host's pubsub domain when enabled; both over the same tables.
async fn pubsub(
    config: &ValidatedConfig,
    stores: &Stores,
) -> Result<
    (
        Arc<Pep>,
        Vec<(String, Arc<dyn xmppd_core::module::Component>)>,
    ),
    Failure,
> {
    let p = &config.pubsub;
    let nodes = service_stores::nodes(&stores.engine).await?;
    let limits = xmppd_pubsub::Limits {
        max_items: p.max_items,
        max_payload_bytes: p.max_payload_bytes,
        max_nodes: p.max_nodes,
        max_service_nodes: p.max_service_nodes,
    };
    let engine = Arc::new(xmppd_pubsub::Engine { nodes, limits });
    let policy = match p.create {
        xmppd_config::PubSubCreate::Local => xmppd_pubsub::CreatePolicy::Local,
        xmppd_config::PubSubCreate::Admins => xmppd_pubsub::CreatePolicy::Admins,
    };
    let services = (p.services.iter())
        .map(|(_, domain)| {
            let service = PubSubService::new(domain, engine.clone(), policy);
            let service: Arc<dyn xmppd_core::module::Component> = Arc::new(service);
            (domain.clone(), service)
        })
        .collect();
    Ok((Arc::new(Pep::new(engine, p.caps_cache)), services))
}

async fn muc_services(
    config: &ValidatedConfig,
    stores: &Stores,
    archive: Option<Arc<dyn ArchiveStore>>,
) -> Result<Vec<Arc<xmppd_muc::MucService>>, Failure> {
    let m = &config.muc;
    let mut out = Vec::new();
    for (_, domain) in &m.services {
        let settings = xmppd_muc::MucSettings {
            domain: domain.clone(),
            creation: match m.creation {
                xmppd_config::MucCreation::All => xmppd_muc::Creation::LocalUsers,
                xmppd_config::MucCreation::Admins => xmppd_muc::Creation::Admins,
            },
            max_rooms_per_user: m.max_rooms_per_user,
            limits: xmppd_muc::RoomLimits {
                max_occupants: m.max_occupants,
                max_history: m.max_history,
                messages_per_second: m.messages_per_second,
            },
            occupant_ids: Some(
                xmppd_muc::OccupantIds::load(&*stores.user_data, domain)
                    .await
                    .map_err(|e| format!("reading the occupant id secret of {domain}: {e}"))?,
            ),
            // On a database server several processes may serve the same rooms: each hosts
            // those whose lease it holds. A SQLite file has one process.
            lease: (config.storage.backend != xmppd_config::StorageBackend::Sqlite).then(|| {
                xmppd_muc::LeaseSettings {
                    node: config.server.node_name.clone(),
                    ttl: std::time::Duration::from_secs(m.lease_secs),
                }
            }),
        };
        let memory = xmppd_muc::MemoryArchive::new(m.max_history_bytes);
        let archive: Arc<dyn xmppd_muc::RoomArchive> = match &archive {
            Some(store) => Arc::new(RoomArchives::new(
                store.clone(),
                memory,
                PageLimits::default(),
            )),
            None => Arc::new(memory),
        };
        let service = xmppd_muc::MucService::load(settings, stores.rooms.clone(), archive)
            .await
            .map_err(|e| format!("loading the rooms of {domain}: {e}"))?;
        out.push(service);
    }
    Ok(out)
}

/// The directory of the `[ldap]` section, if there is one (it connects when first used).
fn open_directory(config: &ValidatedConfig) -> Result<Option<Arc<Directory>>, Failure> {
    let Some(ldap) = &config.ldap else {
        return Ok(None);
    };
    let bind_password = match &ldap.bind_password {
        BindPassword::None => String::new(),
        BindPassword::Inline(p) => p.clone(),
        BindPassword::File(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("ldap.bind_password_file {}: {e}", path.display()))?
            .trim_end_matches(['\n', '\r'])
            .to_owned(),
    };
    let directory = Directory::new(LdapConfig {
        uri: ldap.uri.clone(),
        bind_dn: ldap.bind_dn.clone(),
        bind_password,
        base: ldap.base.clone(),
        user_filter: ldap.user_filter.clone(),
        uid_attribute: ldap.uid_attribute.clone(),
        group_member_attribute: ldap.group_member_attribute.clone(),
        tls: match ldap.tls {
            LdapTls::None => TlsMode::None,
            LdapTls::StartTls => TlsMode::StartTls,
            LdapTls::Ldaps => TlsMode::Ldaps,
        },
        ca_file: ldap.ca_file.clone(),
        pool_size: ldap.pool_size,
        timeout: ldap.timeout,
        page_size: ldap.page_size,
        range_size: ldap.range_size,
        nesting: match ldap.nested_groups {
            NestedGroups::Auto => Nesting::Auto,
            NestedGroups::InChain => Nesting::InChain,
            NestedGroups::Recursive => Nesting::Recursive,
        },
        upn_suffixes: ldap.upn_suffixes.clone(),
    })?;
    Ok(Some(directory))
}

/// The backend of every host, as `[auth]` chose it.
fn auth_backends(
    config: &ValidatedConfig,
    internal: Arc<dyn AuthBackend>,
    directory: Option<&Arc<Directory>>,
    user_data: &Arc<dyn UserDataStore>,
) -> HashMap<String, Arc<dyn AuthBackend>> {
    let scram_cache = config.ldap.as_ref().is_some_and(|l| l.scram_cache);
    let ldap = directory.map(|dir| -> Arc<dyn AuthBackend> {
        if scram_cache {
            Arc::new(LdapBackend::with_scram_cache(
                dir.clone(),
                user_data.clone(),
            ))
        } else {
            Arc::new(LdapBackend::new(dir.clone()))
        }
    });
    let backends = config.auth_backends.iter();
    backends
        .map(|(host, kind)| match (kind, &ldap) {
            (AuthBackendKind::Ldap, Some(ldap)) => (host.clone(), ldap.clone()),
            _ => (host.clone(), internal.clone()),
        })
        .collect()
}

/// The directory counts the accounts of LDAP hosts; the others count xmppd's store.
fn account_counts(
    config: &ValidatedConfig,
    directory: Option<&Arc<Directory>>,
) -> xmppd_adhoc::admin::AccountCounts {
    let Some(dir) = directory else {
        return HashMap::new();
    };
    (config.auth_backends.iter())
        .filter(|(_, kind)| **kind == AuthBackendKind::Ldap)
        .map(|(host, _)| (host.clone(), Arc::new(LdapCount(dir.clone())) as _))
        .collect()
}

/// The account count of an LDAP host, for the administration command.
struct LdapCount(Arc<Directory>);

#[async_trait::async_trait]
impl xmppd_adhoc::admin::AccountCount for LdapCount {
    async fn count_accounts(&self) -> Result<(usize, bool), String> {
        (self.0.count_users(xmppd_ldap::COUNT_LIMIT).await).map_err(|e| e.to_string())
    }
}

/// A shared roster group whose members are those of an LDAP group: the directory reads the
/// group, the shared roster module shows it; neither crate knows the other.
struct LdapGroup {
    dir: Arc<Directory>,
    name: String,
    dn: String,
    hosts: Vec<String>,
}

#[async_trait::async_trait]
impl GroupSource for LdapGroup {
    fn name(&self) -> &str {
        &self.name
    }

    async fn members(&self) -> Result<Vec<BareJid>, String> {
        self.dir
            .group_members(&self.dn, &self.hosts)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The shared roster module with a source per `[[shared_roster.group]]` (maybe none).
fn shared_roster(
    config: &ValidatedConfig,
    directory: Option<&Arc<Directory>>,
) -> Arc<SharedRoster> {
    let mut sources: Vec<Arc<dyn GroupSource>> = Vec::new();
    for group in &config.shared_groups {
        let name = group.name.clone();
        match (&group.source, directory) {
            (SharedGroupSource::Members(members), _) => {
                let jids = members.iter().filter_map(|m| BareJid::new(m).ok());
                sources.push(Arc::new(StaticGroup::new(name, jids.collect())));
            }
            (SharedGroupSource::Ldap { dn, host }, Some(dir)) => {
                sources.push(Arc::new(LdapGroup {
                    dir: dir.clone(),
                    name,
                    dn: dn.clone(),
                    hosts: vec![host.clone()],
                }));
            }
            // The configuration is validated: an LDAP group comes with a directory.
            (SharedGroupSource::Ldap { .. }, None) => {}
        }
    }
    Arc::new(SharedRoster::new(sources))
}

/// The LDAP refreshers: the administrators' group and the shared roster groups.
fn spawn_directory_tasks(
    config: &ValidatedConfig,
    directory: Option<Arc<Directory>>,
    server: &Arc<Server>,
    shared_roster: &Arc<SharedRoster>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (Some(ldap), Some(directory)) = (&config.ldap, directory) else {
        return Vec::new();
    };
    let mut tasks = Vec::new();
    let from_ldap = |g: &SharedGroupSettings| matches!(g.source, SharedGroupSource::Ldap { .. });
    if config.shared_groups.iter().any(from_ldap) {
        tasks.push(shared_roster.spawn_refresher(Arc::downgrade(server), ldap.refresh));
    }
    if let Some(group) = &ldap.admin_group {
        let hosts = (config.auth_backends.iter())
            .filter(|(_, kind)| **kind == AuthBackendKind::Ldap)
            .map(|(host, _)| host.clone())
            .collect();
        let server = Arc::downgrade(server);
        let apply = move |admins| {
            if let Some(server) = server.upgrade() {
                server.set_dynamic_admins(admins);
            }
        };
        tasks.push(directory.spawn_group_watch(group.clone(), hosts, ldap.refresh, apply));
    }
    tasks
}

/// SIGINT and SIGTERM handlers.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn install() -> Result<Signals, Failure> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| Failure(format!("installing the {name} handler: {e}")))
        };
        Ok(Signals {
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// One line naming the address that could not be bound.
fn bind_failure(config: &ValidatedConfig, e: std::io::Error) -> Failure {
    let addrs = config
        .c2s
        .starttls_listen
        .iter()
        .chain(&config.c2s.direct_tls_listen);
    let message = e.to_string();
    if addrs.clone().any(|a| message.contains(&a.to_string())) {
        return Failure(message);
    }
    // The listeners are closed again by now: probing finds the address that is unavailable.
    for addr in addrs {
        if let Err(probe) = std::net::TcpListener::bind(addr) {
            return Failure(format!("cannot listen on {addr}: {probe}"));
        }
    }
    Failure(format!("cannot listen: {e}"))
}

async fn print_banner(
    config: &ValidatedConfig,
    listeners: &[(ListenerKind, SocketAddr)],
    store: &dyn CredentialStore,
    config_arg: &str,
) {
    for (kind, addr) in listeners {
        let kind = match kind {
            ListenerKind::StartTls => "starttls",
            ListenerKind::DirectTls => "direct-tls",
            ListenerKind::Carried(_) => continue,
        };
        say(format_args!("xmppd listening: {kind} {addr}"));
    }
    let hosts = &config.server.hosts;
    say(format_args!("xmppd serving hosts: {}", hosts.join(", ")));
    let port = listeners
        .iter()
        .find(|(k, _)| matches!(k, ListenerKind::StartTls))
        .or_else(|| listeners.first())
        .map(|(_, a)| a.port());
    for host in hosts {
        if config.auth_backends.get(host) == Some(&AuthBackendKind::Ldap) {
            // `xmppd register` cannot create these accounts: they are made in the directory.
            say(format_args!(
                "accounts of {host} come from the LDAP directory ([ldap] in the configuration)"
            ));
            continue;
        }
        // A failed lookup only loses a hint; the server itself is up.
        let empty = store
            .list_users(host)
            .await
            .map(|u| u.is_empty())
            .unwrap_or(false);
        if !empty {
            continue;
        }
        say(format_args!(
            "register a first user: xmppd {config_arg}register alice {host}"
        ));
        let self_signed = !config.tls.certificates.iter().any(|c| &c.domain == host);
        if let Some(port) = port {
            let note = if self_signed {
                "; the certificate is self-signed"
            } else {
                ""
            };
            say(format_args!(
                "connect a client to alice@{host} on port {port}{note}"
            ));
        }
    }
}

/// One banner line. A closed stdout (the reader went away) must not take the server down.
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stdout(), "{line}");
}
