//! The administration listener (`[admin_http]`): the REST API under `/api`, the metrics on
//! `/metrics` and the web admin under `/admin`. Plain HTTP on loopback by default; the same
//! HTTP layer, limits and access log as the public listeners, with the section's own body and
//! time limits.

use std::sync::Arc;

use xmppd_c2s::Tls;
use xmppd_config::{AdminHttpSettings, ValidatedConfig};

/// The bound listener, its routes in place; `None` when the section is off.
pub async fn bind(
    config: &ValidatedConfig,
    admin: &AdminHttpSettings,
    tls: Arc<Tls>,
    api: xmppd_api::Api,
    throttle: Arc<xmppd_c2s::AuthThrottle>,
    uploads: Option<Arc<xmppd_upload::Uploads>>,
) -> std::io::Result<xmppd_http::Http> {
    let api = Arc::new(api);
    let mut router = xmppd_http::Router::default();
    if admin.metrics {
        let metrics = xmppd_api::Metrics {
            tokens: api.tokens.clone(),
        };
        router.route(xmppd_api::METRICS_PATH, Arc::new(metrics));
    }
    if admin.webadmin {
        // The file as read at start: what the server runs with.
        let text = match config.source.as_str() {
            "" | xmppd_config::BUILTIN_NAME => String::new(),
            path => std::fs::read_to_string(path).unwrap_or_default(),
        };
        let webadmin = xmppd_webadmin::WebAdmin::new(api.clone(), throttle, &text);
        let webadmin = Arc::new(webadmin.with_uploads(uploads));
        router.route(xmppd_webadmin::PATH, webadmin.clone());
        router.route(xmppd_webadmin::PREFIX, webadmin);
    }
    if admin.api {
        router.route(xmppd_api::PATH, api);
    }
    let defaults = xmppd_config::HttpSection::default();
    let settings = xmppd_http::HttpSettings {
        listen: admin.listen.clone(),
        tls_listen: Vec::new(),
        max_body_bytes: admin.max_body_bytes,
        max_header_bytes: defaults.max_header_bytes as usize,
        header_timeout: std::time::Duration::from_secs(defaults.header_timeout_secs),
        request_timeout: admin.request_timeout,
        max_connections: 256,
        access_log: true,
        hide_ip: config.server.hide_ip_in_logs,
        behind_tls_proxy: admin.behind_tls_proxy,
        // Loopback by default; its metrics are open to loopback peers, so no header may
        // claim to be one.
        proxy_protocol_from: Vec::new(),
        trusted_proxies: Vec::new(),
        forwarded_header: Default::default(),
    };
    xmppd_http::Http::bind(settings, tls, router).await
}
