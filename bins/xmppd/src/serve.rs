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
use xmppd_auth::{AuthBackend, InternalBackend};
use xmppd_c2s::{C2s, C2sSettings, CertificateSpec, ListenerKind, Tls, TlsSettings};
use xmppd_config::ValidatedConfig;
use xmppd_core::{CoreConfig, Server};
use xmppd_storage::{CredentialStore, SessionStore};
use xmppd_stream::Limits;

use crate::{admin, Failure};

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

async fn serve(config: ValidatedConfig, config_arg: String) -> Result<(), Failure> {
    let server_cfg = &config.server;
    std::fs::create_dir_all(&server_cfg.data_dir)
        .map_err(|e| format!("creating {}: {e}", server_cfg.data_dir.display()))?;
    let store = admin::open_store(&config)?;
    // A previous run of this node may have crashed with sessions recorded as live.
    store
        .clear_sessions(&server_cfg.node_name)
        .await
        .map_err(|e| format!("clearing stale sessions: {e}"))?;

    let core_config = CoreConfig {
        hosts: server_cfg.hosts.clone(),
        node_name: server_cfg.node_name.clone(),
        offline_max: config.offline_max_per_user,
        show_os: server_cfg.show_os,
        max_resources_per_user: config.resources_max_per_user,
        ..CoreConfig::default()
    };
    let server = Server::builder(core_config, store.clone()).build();

    let credentials: Arc<dyn CredentialStore> = store.clone();
    let internal: Arc<dyn AuthBackend> = Arc::new(InternalBackend::new(credentials));
    let auth: HashMap<String, Arc<dyn AuthBackend>> = server_cfg
        .hosts
        .iter()
        .map(|h| (h.clone(), internal.clone()))
        .collect();

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
            .collect(),
        data_dir: server_cfg.data_dir.clone(),
        hosts: server_cfg.hosts.clone(),
        reload_interval: config.tls.reload_interval,
    })
    .map_err(|e| format!("tls: {e}"))?;
    let reloader = tls.spawn_reloader();

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
        queue_len: c2s_cfg.session_queue,
        hide_ip: server_cfg.hide_ip_in_logs,
        handshake_timeout: c2s_cfg.handshake_timeout,
        max_auth_failures: c2s_cfg.max_auth_failures,
    };
    let c2s = match C2s::bind(settings, tls, server, auth).await {
        Ok(c2s) => c2s,
        Err(e) => return Err(bind_failure(&config, e)),
    };

    // Before the banner: whoever reads it may signal us right away.
    let mut signals = Signals::install()?;
    print_banner(&config, &c2s.local_addrs(), &store, &config_arg).await;
    tracing::info!(node = %server_cfg.node_name, "xmppd started");

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let mut running = tokio::spawn(c2s.run(shutdown_rx));
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
    reloader.abort();
    // Whatever did not close in time must not appear connected to `xmppd sessions`.
    if let Err(e) = store.clear_sessions(&server_cfg.node_name).await {
        tracing::warn!("clearing session records: {e}");
    }
    outcome
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
    store: &xmppd_storage::SqliteStore,
    config_arg: &str,
) {
    for (kind, addr) in listeners {
        let kind = match kind {
            ListenerKind::StartTls => "starttls",
            ListenerKind::DirectTls => "direct-tls",
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
