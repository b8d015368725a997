//! XEP-0156 §3: where web clients find the alternative connection methods, at
//! `/.well-known/host-meta` (XRD, RFC 6415) and `/.well-known/host-meta.json` (JRD), readable
//! by pages of any origin (`Access-Control-Allow-Origin: *`).

use hyper::header::{HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};

use crate::framing::escape;
use crate::{full, text, Peer, RequestBody, ResponseBody, Service};

/// The XRD path; the JRD one adds `.json`.
pub const PATH: &str = "/.well-known/host-meta";
pub const PATH_JSON: &str = "/.well-known/host-meta.json";

const REL_WEBSOCKET: &str = "urn:xmpp:alt-connections:websocket";
const REL_BOSH: &str = "urn:xmpp:alt-connections:xbosh";

/// What host-meta advertises.
#[derive(Debug, Clone)]
pub struct HostMeta {
    /// The WebSocket endpoint is served here: advertised at `websocket_url`, or at the URL
    /// host-meta itself was asked on (scheme and `Host`) with the WebSocket path.
    pub websocket: bool,
    /// The public WebSocket URL (behind a proxy it differs from ours).
    pub websocket_url: Option<String>,
    /// The BOSH endpoint is served here: advertised like the WebSocket one.
    pub bosh: bool,
    pub bosh_url: Option<String>,
}

impl HostMeta {
    fn links(&self, req: &Request<RequestBody>, peer: &Peer) -> Vec<(&'static str, String)> {
        let mut links = Vec::new();
        let derived = |secure: &str, plain: &str, path: &str| {
            let host = req.headers().get(HOST)?.to_str().ok()?;
            // Reflects only the asker's own Host; a name with odd characters gets no link.
            let ok = host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
            let scheme = if peer.secure { secure } else { plain };
            ok.then(|| format!("{scheme}://{host}{path}"))
        };
        let websocket = (self.websocket_url.clone()).or_else(|| {
            self.websocket
                .then(|| derived("wss", "ws", crate::websocket::PATH))?
        });
        links.extend(websocket.map(|url| (REL_WEBSOCKET, url)));
        let bosh = (self.bosh_url.clone()).or_else(|| {
            self.bosh
                .then(|| derived("https", "http", crate::bosh::PATH))?
        });
        links.extend(bosh.map(|url| (REL_BOSH, url)));
        links
    }
}

#[async_trait::async_trait]
impl Service for HostMeta {
    async fn call(&self, req: Request<RequestBody>, peer: &Peer) -> Response<ResponseBody> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "Only GET");
            resp.headers_mut()
                .insert("allow", HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        let links = self.links(&req, peer);
        let (body, content_type) = if req.uri().path() == PATH_JSON {
            let links: Vec<_> = (links.iter())
                .map(|(rel, href)| serde_json::json!({ "rel": rel, "href": href }))
                .collect();
            let doc = serde_json::json!({ "links": links });
            (doc.to_string(), "application/json")
        } else {
            let mut doc = String::from(
                "<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n",
            );
            for (rel, href) in &links {
                doc.push_str(&format!("  <Link rel='{rel}' href='{}'/>\n", escape(href)));
            }
            doc.push_str("</XRD>\n");
            (doc, "application/xrd+xml; charset=utf-8")
        };
        let mut resp = Response::new(full(body));
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        resp
    }
}
