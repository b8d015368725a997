//! xmppd's administration over HTTP: the REST API under `/api` (JSON in and out, scoped and
//! expiring bearer tokens), served on the administration listener (`[admin_http]`, loopback by
//! default) through `xmppd-http`.
//!
//! The routes are one table ([`routes::ROUTES`]): the service dispatches from it and
//! `/api/openapi.json` is generated from it. The operations reuse the server's own: account
//! removal through [`Server::remove_account`], announcements, ending sessions and account
//! counts through the XEP-0133 commands' actions (`xmppd_adhoc::admin`), the message of the
//! day through [`Motd`], rooms through [`MucService`]. See docs/API.md.

pub mod routes;
pub mod token;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use http_body_util::BodyExt;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use jid::BareJid;
use serde_json::{json, Map, Value};
use xmppd_adhoc::admin::{AccountCounts, Backends};
use xmppd_adhoc::motd::Motd;
use xmppd_auth::AuthError;
use xmppd_core::address::{parse_jid, Bare};
use xmppd_core::stanza::{self, elem, text_elem, NS_CLIENT};
use xmppd_core::{user_ref, Context, Outbox, Server};
use xmppd_http::{full, Peer, RequestBody, ResponseBody};
use xmppd_muc::{CreateRoomError, MucService, NewRoom};
use xmppd_storage::StorageError;

use routes::{Field, Kind, Op, Route};
use token::{ApiTokens, Refusal, Scope};

/// The path prefix the API is routed under.
pub const PATH: &str = "/api/";

/// What the API works on.
pub struct Api {
    pub server: Arc<Server>,
    pub backends: Arc<Backends>,
    pub counts: Arc<AccountCounts>,
    pub motd: Arc<Motd>,
    pub rooms: Vec<Arc<MucService>>,
    pub tokens: Arc<ApiTokens>,
    /// `server.hide_ip_in_logs`: sessions are listed without their address.
    pub hide_ip: bool,
}

/// A refusal, as the client reads it: `{"error", "message", "field"?}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<&'static str>,
    /// RFC 6750 §3: the `WWW-Authenticate` challenge of a 401 or a 403.
    challenge: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            challenge: None,
        }
    }

    fn field(field: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            field: Some(field),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message)
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, "exists", message)
    }

    fn internal(message: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %message, "API request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            message.to_string(),
        )
    }

    fn unauthorized(message: &str, error: Option<&str>) -> Self {
        let challenge = match error {
            Some(e) => {
                format!("Bearer realm=\"xmppd\", error=\"{e}\", error_description=\"{message}\"")
            }
            None => "Bearer realm=\"xmppd\"".to_owned(),
        };
        ApiError {
            challenge: Some(challenge),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
    }

    /// The HTTP status of the refusal.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What went wrong, for a person to read.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn response(self) -> Response<ResponseBody> {
        let mut body = json!({"error": self.code, "message": self.message});
        if let Some(f) = self.field {
            body["field"] = json!(f);
        }
        let mut resp = json_response(self.status, &body);
        if let Some(c) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            resp.headers_mut().insert("www-authenticate", c);
        }
        resp
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<ResponseBody> {
    let mut text = serde_json::to_vec_pretty(body).unwrap_or_default();
    text.push(b'\n');
    let mut resp = Response::new(full(text));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The bearer token of `req`, if it carries one.
pub fn bearer<B>(req: &Request<B>) -> Option<&str> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks the request's token against `needed`: 401 without a valid one, 403 when its scope
/// is too narrow.
pub async fn authorize<B>(
    tokens: &ApiTokens,
    req: &Request<B>,
    needed: Scope,
) -> Result<(), ApiError> {
    let Some(token) = bearer(req) else {
        return Err(ApiError::unauthorized("a bearer token is needed", None));
    };
    match tokens.authorize(token, stanza::now_ms()).await {
        Ok(scope) if scope.allows(needed) => Ok(()),
        Ok(scope) => Err(ApiError {
            challenge: Some(format!(
                "Bearer realm=\"xmppd\", error=\"insufficient_scope\", scope=\"{}\"",
                needed.as_str()
            )),
            ..ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("a token of scope {} cannot do this", scope.as_str()),
            )
        }),
        Err(Refusal::Expired) => Err(ApiError::unauthorized(
            "the token expired",
            Some("invalid_token"),
        )),
        Err(Refusal::Invalid) => Err(ApiError::unauthorized(
            "the token is not valid",
            Some("invalid_token"),
        )),
    }
}

/// A request's JSON object, checked against the route's fields.
struct Body(Map<String, Value>);

impl Body {
    async fn read(route: &Route, req: Request<RequestBody>) -> Result<Body, ApiError> {
        if route.body.is_empty() {
            return Ok(Body(Map::new()));
        }
        let json = (req.headers().get(CONTENT_TYPE))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be application/json",
            ));
        }
        let bytes = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "the body is too large",
                ))
            }
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("reading the body: {e}"),
                ))
            }
        };
        let map = match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_json",
                    "the body must be a JSON object",
                ))
            }
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_json",
                    format!("invalid JSON: {e}"),
                ))
            }
        };
        Body::check(route, map)
    }

    /// `map` checked against the route's fields: each known and of its type, none missing.
    fn check(route: &Route, map: Map<String, Value>) -> Result<Body, ApiError> {
        for (name, value) in &map {
            let Some(f) = route.body.iter().find(|f| f.name == name) else {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "unknown_field",
                    format!("unknown field {name:?}"),
                ));
            };
            check_field(f, value)?;
        }
        if let Some(f) = route
            .body
            .iter()
            .find(|f| f.required && !map.contains_key(f.name))
        {
            return Err(ApiError::field(f.name, format!("{} is missing", f.name)));
        }
        Ok(Body(map))
    }

    fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// A required string (present: [`Body::read`] checked it).
    fn text(&self, name: &str) -> &str {
        self.str(name).unwrap_or_default()
    }

    fn flag(&self, name: &str, default: bool) -> bool {
        self.0.get(name).and_then(Value::as_bool).unwrap_or(default)
    }
}

fn check_field(f: &Field, value: &Value) -> Result<(), ApiError> {
    match (f.kind, value) {
        (Kind::String, Value::String(s)) => {
            if f.required && s.is_empty() {
                return Err(ApiError::field(f.name, format!("{} is empty", f.name)));
            }
            if !f.values.is_empty() && !f.values.contains(&s.as_str()) {
                let allowed = f.values.join(", ");
                return Err(ApiError::field(
                    f.name,
                    format!("{} must be one of {allowed}", f.name),
                ));
            }
            Ok(())
        }
        (Kind::Boolean, Value::Bool(_)) => Ok(()),
        (Kind::String, _) => Err(ApiError::field(
            f.name,
            format!("{} must be a string", f.name),
        )),
        (Kind::Boolean, _) => Err(ApiError::field(
            f.name,
            format!("{} must be true or false", f.name),
        )),
    }
}

#[async_trait]
impl xmppd_http::Service for Api {
    async fn call(&self, req: Request<RequestBody>, _peer: &Peer) -> Response<ResponseBody> {
        let path = req.uri().path().to_owned();
        let (route, params) = match routes::find(req.method().as_str(), &path) {
            Ok(found) => found,
            Err(true) => {
                let allow = routes::methods(&path).join(", ");
                let mut resp = ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("{} is not allowed here (allowed: {allow})", req.method()),
                )
                .response();
                if let Ok(v) = HeaderValue::from_str(&allow) {
                    resp.headers_mut().insert(ALLOW, v);
                }
                return resp;
            }
            Err(false) => return ApiError::not_found(format!("no route {path}")).response(),
        };
        let answer = async {
            if let Some(needed) = route.scope {
                authorize(&self.tokens, &req, needed).await?;
            }
            let body = Body::read(route, req).await?;
            self.run(route.op, &params, &body).await
        };
        match answer.await {
            Ok(value) => json_response(
                StatusCode::from_u16(route.ok.0).unwrap_or(StatusCode::OK),
                &value,
            ),
            Err(e) => e.response(),
        }
    }
}

/// A served account's bare JID from field (or path parameter) `name`.
fn account(cx: &Context<'_>, name: &'static str, text: &str) -> Result<BareJid, ApiError> {
    match user_bare(text) {
        Some(j) if cx.is_local_host(j.domain().as_str()) => Ok(j),
        Some(j) => Err(ApiError::not_found(format!(
            "{} is not a host of this server",
            j.domain()
        ))),
        _ => Err(ApiError::field(
            name,
            format!("{text:?} is not a user's bare JID"),
        )),
    }
}

/// `text` if it is a user's bare JID (a localpart, no resource).
fn user_bare(text: &str) -> Option<BareJid> {
    let jid = parse_jid(text).ok()?;
    (jid.node().is_some() && jid.resource().is_none()).then(|| jid.bare())
}

fn host<'h>(cx: &Context<'_>, text: &'h str) -> Result<&'h str, ApiError> {
    match cx.is_local_host(text) {
        true => Ok(text),
        false => Err(ApiError::not_found(format!(
            "{text} is not a host of this server"
        ))),
    }
}

fn storage(e: StorageError) -> ApiError {
    ApiError::internal(format!("storage: {e}"))
}

/// The resident set of this process, from `/proc` (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl Api {
    /// Runs the operation `op` as its route does (the first route of that operation): `params`
    /// are the path's parameters, `body` the request's fields, checked against the route's
    /// like a JSON body. For callers other than the REST API (the web admin), so that an
    /// operation is written once.
    pub async fn perform(
        &self,
        op: Op,
        params: &[String],
        body: Map<String, Value>,
    ) -> Result<Value, ApiError> {
        let route = (routes::ROUTES.iter().find(|r| r.op == op))
            .ok_or_else(|| ApiError::internal(format!("no route for {op:?}")))?;
        let body = Body::check(route, body)?;
        self.run(op, params, &body).await
    }

    async fn run(&self, op: Op, params: &[String], body: &Body) -> Result<Value, ApiError> {
        let server = &self.server;
        let param = |i: usize| params.get(i).map(String::as_str).unwrap_or_default();
        let mut outbox = Outbox::default();
        let mut cx = Context::new(server, &mut outbox);
        let value = match op {
            Op::OpenApi => routes::openapi(),
            Op::ListUsers => {
                let mut users = Vec::new();
                for h in server.hosts() {
                    let mut names = server.store().list_users(h).await.map_err(storage)?;
                    names.sort();
                    users.extend(names.into_iter().map(|u| format!("{u}@{h}")));
                }
                json!({"users": users})
            }
            Op::Register => {
                let jid = account(&cx, "jid", body.text("jid"))?;
                let backend = self.backend(&jid)?;
                match backend
                    .create_user(&user_ref(&jid), body.text("password"))
                    .await
                {
                    Ok(()) => json!({"jid": jid.as_str()}),
                    Err(e) => return Err(self.auth_error(e, &jid)),
                }
            }
            Op::Unregister => {
                let jid = account(&cx, "jid", param(0))?;
                match server.remove_account(&jid, None).await {
                    Ok(r) => {
                        json!({"jid": jid.as_str(), "contacts": r.contacts.len(), "rooms": r.rooms.len()})
                    }
                    Err(StorageError::NoSuchUser) => {
                        return Err(ApiError::not_found(format!("no account {jid}")))
                    }
                    Err(e) => return Err(storage(e)),
                }
            }
            Op::ChangePassword => {
                let jid = account(&cx, "jid", param(0))?;
                let backend = self.backend(&jid)?;
                let user = user_ref(&jid);
                match backend.user_exists(&user).await {
                    Ok(true) => {}
                    Ok(false) => return Err(ApiError::not_found(format!("no account {jid}"))),
                    Err(e) => return Err(self.auth_error(e, &jid)),
                }
                match backend.set_password(&user, body.text("password")).await {
                    Ok(()) => json!({"jid": jid.as_str()}),
                    Err(e) => return Err(self.auth_error(e, &jid)),
                }
            }
            Op::ListSessions => {
                let records = server.store().sessions().await.map_err(storage)?;
                let records: HashMap<&str, _> =
                    records.iter().map(|r| (r.jid.as_str(), r)).collect();
                let mut online = cx.online();
                online.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                let sessions: Vec<Value> = (online.iter())
                    .map(|jid| {
                        let rec = records.get(jid.as_str());
                        let peer = rec
                            .map(|r| r.peer.as_str())
                            .filter(|p| !p.is_empty() && !self.hide_ip);
                        let addr = peer.and_then(|p| p.parse::<std::net::SocketAddr>().ok());
                        json!({
                            "jid": jid.as_str(),
                            "user": jid.bare().as_str(),
                            "resource": jid.resource().as_str(),
                            "ip": addr.map(|a| a.ip().to_string()).or(peer.map(str::to_owned)),
                            "port": addr.map(|a| a.port()),
                            "started": rec.map(|r| stanza::xep82_datetime(r.started_ms)),
                            "user_agent": rec.map(|r| r.user_agent.as_str()).filter(|a| !a.is_empty()),
                        })
                    })
                    .collect();
                json!({"sessions": sessions})
            }
            Op::Kick => {
                let jid = match parse_jid(param(0)) {
                    Ok(j) if j.node().is_some() => j,
                    _ => {
                        return Err(ApiError::field(
                            "jid",
                            format!("{:?} is not a user's JID", param(0)),
                        ))
                    }
                };
                match xmppd_adhoc::admin::end_session(&cx, &jid) {
                    0 => return Err(ApiError::not_found(format!("{jid} has no session"))),
                    n => json!({"ended": n}),
                }
            }
            Op::SendMessage => {
                let to = parse_jid(body.text("to"))
                    .map_err(|e| ApiError::field("to", format!("invalid JID: {e}")))?;
                let from = match body.str("from") {
                    Some(f) => match parse_jid(f) {
                        Ok(j) if cx.is_local_host(j.domain().as_str()) => j.to_string(),
                        _ => {
                            let why = "from must be a served host or an account of one";
                            return Err(ApiError::field("from", why));
                        }
                    },
                    None if cx.is_local_host(to.domain().as_str()) => to.domain().to_string(),
                    None => server.hosts().first().cloned().unwrap_or_default(),
                };
                let id = format!("api-{}", cx.next_id());
                let kind = body.str("type").unwrap_or("chat");
                let to_text = to.to_string();
                let mut msg = elem(
                    "message",
                    NS_CLIENT,
                    &[
                        ("from", &from),
                        ("to", &to_text),
                        ("type", kind),
                        ("id", &id),
                    ],
                );
                if let Some(s) = body.str("subject").filter(|s| !s.is_empty()) {
                    msg.append_child(text_elem("subject", NS_CLIENT, s));
                }
                msg.append_child(text_elem("body", NS_CLIENT, body.text("body")));
                cx.send(msg);
                json!({"id": id})
            }
            Op::Broadcast => {
                let only = body.str("host").map(|h| host(&cx, h)).transpose()?;
                let subject = body.str("subject");
                let n = xmppd_adhoc::admin::announce(&mut cx, only, subject, body.text("body"));
                json!({"sessions": n})
            }
            Op::SetMotd | Op::ClearMotd => {
                let h = host(&cx, param(0))?.to_owned();
                let text = (op == Op::SetMotd).then(|| (body.str("subject"), body.text("body")));
                let n = self.motd.set(&mut cx, &h, text).await.map_err(storage)?;
                match op {
                    Op::SetMotd => json!({"host": h, "sessions": n}),
                    _ => json!({"host": h}),
                }
            }
            Op::ListRooms => {
                let rooms: Vec<Value> = (self.rooms.iter())
                    .flat_map(|s| s.rooms())
                    .map(|r| json!({"jid": r.jid.as_str(), "name": r.name, "listed": r.listed}))
                    .collect();
                json!({"rooms": rooms})
            }
            Op::CreateRoom => {
                let (jid, service) = self.room("jid", body.text("jid"))?;
                let owner = user_bare(body.text("owner"))
                    .ok_or_else(|| ApiError::field("owner", "owner must be a user's bare JID"))?;
                let new = NewRoom {
                    jid: jid.clone(),
                    owner,
                    name: body.str("name").unwrap_or_default().to_owned(),
                    public: body.flag("public", true),
                    persistent: body.flag("persistent", true),
                };
                match service.create_room(new).await {
                    Ok(()) => json!({"jid": jid.as_str()}),
                    Err(CreateRoomError::Exists) => {
                        return Err(ApiError::conflict(format!("the room {jid} exists")))
                    }
                    Err(CreateRoomError::Storage(e)) => return Err(storage(e)),
                    Err(CreateRoomError::HostedElsewhere) => {
                        return Err(ApiError::conflict(format!(
                            "the room {jid} is hosted by another server process"
                        )))
                    }
                }
            }
            Op::DestroyRoom => {
                let (jid, service) = self.room("jid", param(0))?;
                match service.destroy_room(&cx, &jid, None).await {
                    true => json!({"jid": jid.as_str()}),
                    false => return Err(ApiError::not_found(format!("no room {jid}"))),
                }
            }
            Op::Stats => {
                let mut accounts = 0;
                for h in server.hosts() {
                    let counted = xmppd_adhoc::admin::count_accounts(
                        server.store().as_ref(),
                        &self.counts,
                        h,
                    )
                    .await;
                    accounts += counted.map_err(ApiError::internal)?.0;
                }
                let online = cx.online();
                let users: BTreeSet<BareJid> = online.iter().map(|j| j.bare()).collect();
                let rooms: usize = self.rooms.iter().map(|s| s.room_count()).sum();
                json!({
                    "accounts": accounts,
                    "online_sessions": online.len(),
                    "online_users": users.len(),
                    "rooms": rooms,
                    "uptime_secs": cx.uptime_secs(),
                    "memory_bytes": resident_bytes(),
                })
            }
        };
        drop(cx);
        server.drain(&mut outbox).await;
        Ok(value)
    }

    fn backend(&self, jid: &BareJid) -> Result<&Arc<dyn xmppd_auth::AuthBackend>, ApiError> {
        (self.backends.get(jid.domain().as_str())).ok_or_else(|| {
            ApiError::not_found(format!("{} is not a host of this server", jid.domain()))
        })
    }

    fn auth_error(&self, e: AuthError, jid: &BareJid) -> ApiError {
        match e {
            AuthError::AlreadyExists => ApiError::conflict(format!("the account {jid} exists")),
            AuthError::Tombstoned { .. } => ApiError::conflict(format!(
                "the name {jid} belonged to an account removed recently (registration.tombstone_days)"
            )),
            AuthError::NoSuchUser => ApiError::not_found(format!("no account {jid}")),
            AuthError::InvalidPassword(why) => ApiError::field("password", why),
            AuthError::Unsupported => ApiError::field(
                "jid",
                format!("the accounts of {} live in a directory: manage them there", jid.domain()),
            ),
            e => ApiError::internal(e),
        }
    }

    /// A room's bare JID from field `name`, and the chat service it belongs to.
    fn room(
        &self,
        name: &'static str,
        text: &str,
    ) -> Result<(BareJid, &Arc<MucService>), ApiError> {
        let jid = user_bare(text)
            .ok_or_else(|| ApiError::field(name, format!("{text:?} is not a room's bare JID")))?;
        let service = (self.rooms.iter())
            .find(|s| s.domain() == jid.domain().as_str())
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "{} is not a chat service of this server",
                    jid.domain()
                ))
            })?;
        Ok((jid, service))
    }
}

/// `/metrics`: the Prometheus text exposition of `xmppd_metrics`. Open to loopback peers;
/// from elsewhere (a listener on another address) it needs a token of any scope, since every
/// scope includes `metrics`.
pub struct Metrics {
    pub tokens: Arc<ApiTokens>,
}

/// The path of [`Metrics`].
pub const METRICS_PATH: &str = "/metrics";

/// Whether `peer` may read the metrics without a token.
pub fn metrics_open_to(peer: &std::net::SocketAddr) -> bool {
    match peer.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback(),
        std::net::IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[async_trait]
impl xmppd_http::Service for Metrics {
    async fn call(&self, req: Request<RequestBody>, peer: &Peer) -> Response<ResponseBody> {
        if !matches!(*req.method(), hyper::Method::GET | hyper::Method::HEAD) {
            let mut resp = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "only GET",
            )
            .response();
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        if !metrics_open_to(&peer.addr) {
            if let Err(e) = authorize(&self.tokens, &req, Scope::Metrics).await {
                return e.response();
            }
        }
        let mut resp = Response::new(full(xmppd_metrics::encode()));
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_open_to_loopback_only() {
        let open = |a: &str| metrics_open_to(&a.parse().unwrap());
        assert!(open("127.0.0.1:1") && open("127.8.9.1:1") && open("[::1]:1"));
        assert!(open("[::ffff:127.0.0.1]:1"));
        assert!(!open("10.0.0.1:1") && !open("[2001:db8::1]:1") && !open("[::ffff:10.0.0.1]:1"));
    }
}
