//! xmppd's web admin: server-rendered pages under `/admin` on the administration listener
//! (`[admin_http]`, loopback by default), for an administrator's browser.
//!
//! **Login.** An administrator (`server.admins`, or a directory's admin group: the same
//! `is_admin` as the ad-hoc commands) logs in with the account's password, checked by the
//! host's authentication backend exactly as SASL PLAIN checks it, through the c2s listeners'
//! own throttle (per address and account), so guesses here and over XMPP count together. A
//! disabled account, or one that is not an administrator, is refused. See [`session`] for the
//! cookie, the session's lifetime and the CSRF tokens.
//!
//! **Operations** are the REST API's ([`xmppd_api::Api::perform`]): the page's form fields
//! become the operation's fields and are checked the same way. Disabling an account is the
//! server's own ([`Server::set_disabled`], as XEP-0133's disable-user).
//!
//! **Pages** work without script: every value is escaped by the templates (maud escapes
//! whatever it interpolates unless told otherwise), and every answer carries a
//! Content-Security-Policy without script, `frame-ancestors 'none'` and `X-Frame-Options`,
//! `nosniff` and `Cache-Control: no-store`. See docs/HTTP.md.

pub mod config_view;
pub mod plot;
pub mod session;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http_body_util::BodyExt;
use hyper::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, LOCATION, REFERER,
    SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};
use jid::BareJid;
use maud::{html, Markup, DOCTYPE};
use serde_json::{Map, Value};
use xmppd_api::routes::Op;
use xmppd_api::Api;
use xmppd_auth::AuthError;
use xmppd_c2s::AuthThrottle;
use xmppd_core::address::{parse_jid, Bare};
use xmppd_core::user_ref;
use xmppd_http::{full, Peer, RequestBody, ResponseBody};
use xmppd_upload::Uploads;

use plot::Samples;
use session::{Session, Sessions};

/// The page the web admin answers on (redirected to [`PREFIX`]).
pub const PATH: &str = "/admin";
/// Everything under it.
pub const PREFIX: &str = "/admin/";

/// No script anywhere; styles from our own sheet; forms post only to us; never framed.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

const STYLE: &str = include_str!("style.css");

/// Users listed on one page at most (the search narrows).
const MAX_LISTED: usize = 500;

/// Accounts listed on the uploads page at most, those holding the most first.
const MAX_UPLOADERS: usize = 100;

/// The web admin.
pub struct WebAdmin {
    api: Arc<Api>,
    throttle: Arc<AuthThrottle>,
    sessions: Sessions,
    samples: Arc<Samples>,
    /// The configuration file as shown, secrets hidden.
    config: String,
    /// HTTP file upload, when configured.
    uploads: Option<Arc<Uploads>>,
}

impl WebAdmin {
    /// The web admin over `api`'s operations, logins throttled by `throttle`; `config_text` is
    /// the configuration file the server started with (empty for the built-in defaults).
    /// Starts sampling the metrics for the overview's plot.
    pub fn new(api: Arc<Api>, throttle: Arc<AuthThrottle>, config_text: &str) -> WebAdmin {
        let samples = Arc::new(Samples::default());
        samples.spawn_sampler();
        let config = match config_text.trim() {
            "" => "# no configuration file: the built-in defaults\n".to_owned(),
            text => config_view::redacted(text),
        };
        WebAdmin {
            api,
            throttle,
            sessions: Sessions::default(),
            samples,
            config,
            uploads: None,
        }
    }

    /// With the uploads page showing what `uploads` keeps.
    pub fn with_uploads(mut self, uploads: Option<Arc<Uploads>>) -> WebAdmin {
        self.uploads = uploads;
        self
    }
}

/// A request, as the handlers see it.
struct Call<'r> {
    path: &'r str,
    query: HashMap<String, String>,
    peer: &'r Peer,
}

#[async_trait]
impl xmppd_http::Service for WebAdmin {
    async fn call(&self, req: Request<RequestBody>, peer: &Peer) -> Response<ResponseBody> {
        let mut resp = self.answer(req, peer).await;
        let headers = resp.headers_mut();
        headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
        resp
    }
}

impl WebAdmin {
    async fn answer(&self, req: Request<RequestBody>, peer: &Peer) -> Response<ResponseBody> {
        let uri_path = req.uri().path().to_owned();
        let Some(path) = uri_path.strip_prefix(PREFIX) else {
            return redirect(PREFIX);
        };
        let call = Call {
            path,
            query: parse_form(req.uri().query().unwrap_or("").as_bytes()),
            peer,
        };
        let cookies = (req.headers().get_all(COOKIE).iter())
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join("; ");
        let sid = session::cookie(&cookies, session::COOKIE).map(str::to_owned);
        let now = Instant::now();
        let current = sid.as_deref().and_then(|id| self.sessions.get(id, now));
        let method = req.method().clone();
        match (&method, path) {
            (&Method::GET | &Method::HEAD, "style.css") => {
                return with_type(full(STYLE), "text/css; charset=utf-8")
            }
            (&Method::GET | &Method::HEAD, "login") if current.is_some() => {
                return redirect(PREFIX)
            }
            (&Method::GET | &Method::HEAD, "login") => return login_page(&call, None),
            (&Method::POST, "login") => {
                let login_token = session::cookie(&cookies, session::LOGIN_COOKIE);
                let login_token = login_token.map(str::to_owned);
                return self.login(req, &call, login_token).await;
            }
            _ => {}
        }
        let (Some(sid), Some(session)) = (sid, current) else {
            return match method {
                Method::POST => forbidden("Log in first."),
                _ => redirect(&format!("{PREFIX}login")),
            };
        };
        match method {
            Method::GET | Method::HEAD => self.page(&call, &session).await,
            Method::POST => {
                if !same_origin(&req, peer) {
                    return forbidden("This form was sent from another site.");
                }
                let form = match read_form(req).await {
                    Ok(f) => f,
                    Err(resp) => return resp,
                };
                if !session::token_matches(form.get("csrf").map(String::as_str), &session.csrf) {
                    return forbidden("The form's token is missing or wrong: reload the page.");
                }
                if path == "logout" {
                    self.sessions.close(&sid);
                    let mut resp = redirect(&format!("{PREFIX}login"));
                    let gone = session::set_cookie(session::COOKIE, "", Duration::ZERO, false);
                    set_cookie_header(&mut resp, &gone);
                    return resp;
                }
                let (next, outcome) = self.act(path, &form).await;
                match outcome {
                    Ok(done) => self.sessions.flash(&sid, false, done),
                    Err(why) => self.sessions.flash(&sid, true, why),
                }
                redirect(&next)
            }
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "Only GET and POST."),
        }
    }

    /// POST `login`: the form's token against its cookie, then the password through the
    /// backend under the throttle, then the administrator check.
    async fn login(
        &self,
        req: Request<RequestBody>,
        call: &Call<'_>,
        login_token: Option<String>,
    ) -> Response<ResponseBody> {
        if !same_origin(&req, call.peer) {
            return forbidden("This form was sent from another site.");
        }
        let form = match read_form(req).await {
            Ok(f) => f,
            Err(resp) => return resp,
        };
        let expected = login_token.unwrap_or_default();
        if !session::token_matches(form.get("csrf").map(String::as_str), &expected) {
            return forbidden("The form's token is missing or wrong: reload the page.");
        }
        let (name, password) = (field(&form, "jid"), field(&form, "password"));
        let refused = |why: &str| {
            let mut resp = login_page(call, Some(why));
            *resp.status_mut() = StatusCode::FORBIDDEN;
            resp
        };
        let server = &self.api.server;
        let jid = match parse_jid(name) {
            Ok(j) if j.node().is_some() && j.resource().is_none() => j.bare(),
            _ => return refused("Give the account's address, as user@host."),
        };
        let Some(backend) = self.api.backends.get(jid.domain().as_str()) else {
            return refused("Wrong address or password.");
        };
        // The throttle's key is the one SASL uses for this account: guesses count together.
        let (ip, account) = (call.peer.addr.ip(), jid.to_string());
        tokio::time::sleep(self.throttle.reserve(ip, &account, Instant::now())).await;
        let checked = match password {
            "" => Ok(false),
            p => backend.check_password(&user_ref(&jid), p).await,
        };
        match checked {
            Ok(true) => {}
            Ok(false) | Err(AuthError::NoSuchUser) => {
                let delay = self.throttle.record_failure(ip, &account, Instant::now());
                tokio::time::sleep(delay).await;
                tracing::info!(account = %jid, "web admin: wrong password");
                return refused("Wrong address or password.");
            }
            Err(AuthError::AccountDisabled) => return refused("This account is disabled."),
            Err(e) => {
                tracing::warn!(error = %e, "web admin: the password could not be checked");
                let mut resp = login_page(call, Some("The password cannot be checked now."));
                *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                return resp;
            }
        }
        self.throttle.record_success(ip, &account);
        if server.is_disabled(&jid).await {
            return refused("This account is disabled.");
        }
        if !server.is_admin(&jid) {
            tracing::info!(account = %jid, "web admin: login refused, not an administrator");
            return refused("This account is not an administrator.");
        }
        tracing::info!(admin = %jid, "web admin: logged in");
        let id = self.sessions.open(jid, Instant::now());
        let mut resp = redirect(PREFIX);
        let secure = call.peer.secure;
        let cookie = session::set_cookie(session::COOKIE, &id, session::LIFETIME, secure);
        set_cookie_header(&mut resp, &cookie);
        let done = session::set_cookie(session::LOGIN_COOKIE, "", Duration::ZERO, secure);
        set_cookie_header(&mut resp, &done);
        resp
    }

    /// A GET page.
    async fn page(&self, call: &Call<'_>, session: &Session) -> Response<ResponseBody> {
        let body = match call.path {
            "" => self.overview().await,
            "users" => self.users(call, session).await,
            "user" => self.user(call, session).await,
            "rooms" => self.rooms(session).await,
            "room" => self.room(call, session).await,
            "uploads" => self.uploads().await,
            "announce" => self.announce(session).await,
            "config" => Ok(html! {
                h1 { "Configuration" }
                p { "The file the server started with; passwords, secrets and tokens hidden." }
                pre class="config" { (self.config) }
            }),
            _ => return text(StatusCode::NOT_FOUND, "No such page."),
        };
        match body {
            Ok(body) => html_response(StatusCode::OK, layout(Some(session), body)),
            Err(PageError { status, why }) => html_response(
                status,
                layout(Some(session), html! { p class="error" { (why) } }),
            ),
        }
    }

    /// [`Self::perform`] for a form's action, whose outcome is shown as a message.
    async fn perform_action(
        &self,
        op: Op,
        params: &[&str],
        body: &[(&str, &str)],
    ) -> Result<Value, String> {
        (self.perform(op, params, body).await).map_err(|e| e.why)
    }

    async fn perform(
        &self,
        op: Op,
        params: &[&str],
        body: &[(&str, &str)],
    ) -> Result<Value, PageError> {
        let params: Vec<String> = params.iter().map(|p| (*p).to_owned()).collect();
        let body: Map<String, Value> = (body.iter())
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect();
        (self.api.perform(op, &params, body).await).map_err(|e| PageError {
            status: e.status(),
            why: e.message().to_owned(),
        })
    }

    async fn overview(&self) -> Result<Markup, PageError> {
        let stats = self.perform(Op::Stats, &[], &[]).await?;
        let samples = self.samples.all();
        let rate = samples.last().map_or(0.0, |s| s.messages_per_sec);
        let n = |k: &str| {
            stats[k]
                .as_u64()
                .map_or_else(|| "?".into(), |v| v.to_string())
        };
        let memory = (stats["memory_bytes"].as_u64()).map_or_else(
            || "unknown".into(),
            |b| format!("{:.1} MiB", b as f64 / 1048576.0),
        );
        let uptime = uptime(stats["uptime_secs"].as_u64().unwrap_or(0));
        Ok(html! {
            h1 { "Overview" }
            table class="stats" {
                tr { th { "Online users" } td id="online-users" { (n("online_users")) } }
                tr { th { "Online sessions" } td id="online-sessions" { (n("online_sessions")) } }
                tr { th { "Accounts" } td id="accounts" { (n("accounts")) } }
                tr { th { "Rooms" } td id="rooms" { (n("rooms")) } }
                tr { th { "Uptime" } td { (uptime) } }
                tr { th { "Memory (resident)" } td { (memory) } }
                tr { th { "Messages per second" } td { (format!("{rate:.2}")) } }
            }
            (plot::chart("Connected sessions", &samples, |s| s.sessions as f64))
            (plot::chart("Messages per second", &samples, |s| s.messages_per_sec))
        })
    }

    async fn users(&self, call: &Call<'_>, session: &Session) -> Result<Markup, PageError> {
        let listed = self.perform(Op::ListUsers, &[], &[]).await?;
        let sessions = self.perform(Op::ListSessions, &[], &[]).await?;
        let mut online: HashMap<&str, usize> = HashMap::new();
        for s in sessions["sessions"].as_array().into_iter().flatten() {
            *online
                .entry(s["user"].as_str().unwrap_or_default())
                .or_default() += 1;
        }
        let q = call
            .query
            .get("q")
            .map(|q| q.trim().to_lowercase())
            .unwrap_or_default();
        let all: Vec<&str> = (listed["users"].as_array().into_iter().flatten())
            .filter_map(Value::as_str)
            .collect();
        let found: Vec<&str> = all
            .iter()
            .copied()
            .filter(|u| u.contains(q.as_str()))
            .collect();
        let hosts = self.api.server.hosts();
        Ok(html! {
            h1 { "Users" }
            form method="get" action="users" class="search" {
                input type="search" name="q" value=(q) placeholder="Search accounts";
                button type="submit" { "Search" }
            }
            p { (found.len()) " of " (all.len()) " accounts"
                @if found.len() > MAX_LISTED { ", the first " (MAX_LISTED) " shown" } }
            table class="list" {
                tr { th { "Account" } th { "Sessions" } }
                @for u in found.iter().take(MAX_LISTED) {
                    tr {
                        td { a href={ "user?jid=" (encode(u)) } { (u) } }
                        td { (online.get(u).copied().unwrap_or(0)) }
                    }
                }
            }
            h2 { "Create an account" }
            (form("users/create", &session.csrf, html! {
                label { "Address " input type="text" name="jid" required
                    placeholder={ "user@" (hosts.first().map(String::as_str).unwrap_or("example.org")) }; }
                label { "Password " input type="password" name="password" required autocomplete="new-password"; }
                button type="submit" { "Create" }
            }))
        })
    }

    async fn user(&self, call: &Call<'_>, session: &Session) -> Result<Markup, PageError> {
        let jid = self
            .account(call.query.get("jid").map(String::as_str).unwrap_or(""))
            .await?;
        let j = jid.to_string();
        let server = &self.api.server;
        let disabled = server.is_disabled(&jid).await;
        let sessions = self.perform(Op::ListSessions, &[], &[]).await?;
        let mine: Vec<&Value> = (sessions["sessions"].as_array().into_iter().flatten())
            .filter(|s| s["user"].as_str() == Some(j.as_str()))
            .collect();
        let csrf = &session.csrf;
        Ok(html! {
            h1 { "Account " (j) }
            p {
                @if disabled { strong { "Disabled" } ": it cannot log in." } @else { "Enabled." }
                @if server.is_admin(&jid) { " An administrator." }
            }
            h2 { "Sessions" }
            @if mine.is_empty() { p { "None." } } @else {
                table class="list" {
                    tr { th { "Resource" } th { "Address" } th { "Since" } th { "Client" } th {} }
                    @for s in &mine {
                        tr {
                            td class="resource" { (s["resource"].as_str().unwrap_or_default()) }
                            td { (s["ip"].as_str().unwrap_or("")) }
                            td { (s["started"].as_str().unwrap_or("")) }
                            td { (s["user_agent"].as_str().unwrap_or("")) }
                            td { (form("sessions/kick", csrf, html! {
                                input type="hidden" name="jid" value=(s["jid"].as_str().unwrap_or_default());
                                button type="submit" { "Kick" }
                            })) }
                        }
                    }
                }
                (form("sessions/kick", csrf, html! {
                    input type="hidden" name="jid" value=(j);
                    button type="submit" { "Kick every session" }
                }))
            }
            h2 { "Password" }
            (form("users/password", csrf, html! {
                input type="hidden" name="jid" value=(j);
                label { "New password " input type="password" name="password" required autocomplete="new-password"; }
                button type="submit" { "Change" }
            }))
            h2 { @if disabled { "Enable" } @else { "Disable" } }
            @if disabled {
                (form("users/enable", csrf, html! {
                    input type="hidden" name="jid" value=(j);
                    button type="submit" { "Enable the account" }
                }))
            } @else {
                (form("users/disable", csrf, html! {
                    input type="hidden" name="jid" value=(j);
                    p { "Its sessions end and it cannot log in until enabled again." }
                    button type="submit" { "Disable the account" }
                }))
            }
            h2 { "Delete" }
            (form("users/delete", csrf, html! {
                input type="hidden" name="jid" value=(j);
                p { "Removes the account and everything stored for it." }
                label { input type="checkbox" name="confirm" value="yes" required; " I am sure" }
                button type="submit" class="danger" { "Delete the account" }
            }))
        })
    }

    async fn rooms(&self, session: &Session) -> Result<Markup, PageError> {
        let rooms = self.perform(Op::ListRooms, &[], &[]).await?;
        let list: Vec<&Value> = rooms["rooms"].as_array().into_iter().flatten().collect();
        let csrf = &session.csrf;
        Ok(html! {
            h1 { "Rooms" }
            @if list.is_empty() { p { "No rooms." } } @else {
                table class="list" {
                    tr { th { "Room" } th { "Name" } th { "Listed" } th {} }
                    @for r in &list {
                        @let jid = r["jid"].as_str().unwrap_or_default();
                        tr {
                            td class="room" { a href={ "room?jid=" (encode(jid)) } { (jid) } }
                            td { (r["name"].as_str().unwrap_or_default()) }
                            td { @if r["listed"].as_bool() == Some(true) { "yes" } @else { "no" } }
                            td { (form("rooms/destroy", csrf, html! {
                                input type="hidden" name="jid" value=(jid);
                                label { input type="checkbox" name="confirm" value="yes" required; " sure" }
                                button type="submit" class="danger" { "Destroy" }
                            })) }
                        }
                    }
                }
            }
        })
    }

    /// One room: who is in it, as its task sees it (real addresses whatever the room shows
    /// its occupants).
    async fn room(&self, call: &Call<'_>, session: &Session) -> Result<Markup, PageError> {
        let text = call.query.get("jid").map(String::as_str).unwrap_or("");
        let jid = match parse_jid(text) {
            Ok(j) if j.node().is_some() && j.resource().is_none() => j.bare(),
            _ => {
                return Err(PageError::bad_request(format!(
                    "{text:?} is not a room's address"
                )))
            }
        };
        let service = (self.api.rooms.iter())
            .find(|s| s.domain() == jid.domain().as_str())
            .ok_or_else(|| {
                PageError::not_found(format!(
                    "{} is not a chat service of this server",
                    jid.domain()
                ))
            })?;
        let occupants = (service.occupants(&jid).await)
            .ok_or_else(|| PageError::not_found(format!("no room {jid}")))?;
        let j = jid.to_string();
        Ok(html! {
            h1 { "Room " (j) }
            h2 { "Occupants" }
            @if occupants.is_empty() { p { "Nobody is in the room." } } @else {
                p { (occupants.len()) " in the room." }
                table class="list occupants" {
                    tr { th { "Nick" } th { "Role" } th { "Affiliation" } th { "Address" } th { "Sessions" } }
                    @for o in &occupants {
                        tr {
                            td class="nick" { (o.nick) }
                            td { (o.role.as_str()) }
                            td { (o.affiliation.as_str()) }
                            td { a href={ "user?jid=" (encode(o.real.as_str())) } { (o.real.as_str()) } }
                            td { @for (i, s) in o.sessions.iter().enumerate() {
                                @if i > 0 { ", " } (s.resource().as_str())
                            } }
                        }
                    }
                }
            }
            h2 { "Destroy" }
            (form("rooms/destroy", &session.csrf, html! {
                input type="hidden" name="jid" value=(j);
                p { "Its occupants are told and leave; a persistent room is removed." }
                label { input type="checkbox" name="confirm" value="yes" required; " I am sure" }
                button type="submit" class="danger" { "Destroy the room" }
            }))
        })
    }

    /// What the accounts keep through HTTP file upload, against the quota and the cap.
    async fn uploads(&self) -> Result<Markup, PageError> {
        let Some(uploads) = &self.uploads else {
            return Ok(html! {
                h1 { "Uploads" }
                p class="not-configured" { "HTTP file upload is not configured (no [upload] section)." }
            });
        };
        let (quota, cap) = uploads.limits();
        let bytes = |b: Option<u64>| b.map_or_else(|| "none".to_owned(), size);
        let Some(usage) = uploads.usage(MAX_UPLOADERS).await else {
            return Ok(html! {
                h1 { "Uploads" }
                p { "Files are kept by an external upload service: this server does not know their sizes." }
                table class="stats" {
                    tr { th { "Quota per account" } td { (bytes(quota)) } }
                }
            });
        };
        let (top, total) = usage.map_err(|e| format!("reading the uploads: {e}"))?;
        Ok(html! {
            h1 { "Uploads" }
            p { "Space counts every slot handed out, uploaded or not, as the quota does." }
            table class="stats" {
                tr { th { "Quota per account" } td id="upload-quota" { (bytes(quota)) } }
                tr { th { "Cap on all files" } td id="upload-cap" { (bytes(cap)) } }
                tr { th { "Used by all" } td id="upload-total" { (size(total)) } }
            }
            @if top.is_empty() { p { "No files." } } @else {
                @if top.len() == MAX_UPLOADERS { p { "The " (MAX_UPLOADERS) " accounts holding the most." } }
                table class="list uploaders" {
                    tr { th { "Account" } th { "Bytes" } th { "Files" } th { "Of the quota" } }
                    @for u in &top {
                        tr {
                            td class="owner" { a href={ "user?jid=" (encode(&u.owner)) } { (u.owner) } }
                            td class="bytes" title=(size(u.bytes)) { (u.bytes) }
                            td class="files" { (u.files) }
                            td { @if let Some(q) = quota.filter(|q| *q > 0) {
                                (format!("{:.0} %", u.bytes as f64 * 100.0 / q as f64))
                            } }
                        }
                    }
                }
            }
        })
    }

    async fn announce(&self, session: &Session) -> Result<Markup, PageError> {
        let server = &self.api.server;
        let mut motds = BTreeMap::new();
        for h in server.hosts() {
            motds.insert(h.clone(), self.api.motd.get(server.store(), h).await);
        }
        let csrf = &session.csrf;
        Ok(html! {
            h1 { "Announcements" }
            h2 { "Broadcast" }
            p { "A message to every online session, from the host." }
            (form("broadcast", csrf, html! {
                label { "Hosts " select name="host" {
                    option value="" { "all" }
                    @for h in server.hosts() { option value=(h) { (h) } }
                } }
                label { "Subject " input type="text" name="subject"; }
                label { "Message " textarea name="body" required rows="4" {} }
                button type="submit" { "Send" }
            }))
            h2 { "Message of the day" }
            p { "Sent to each user at login until it changes, and at once to those online." }
            @for (h, m) in &motds {
                h3 { (h) }
                @if let Some(m) = m {
                    p class="motd" { "Now: " @if let Some(s) = &m.subject { strong { (s) } " " } (m.body) }
                } @else { p { "None." } }
                (form("motd", csrf, html! {
                    input type="hidden" name="host" value=(h);
                    label { "Subject " input type="text" name="subject"; }
                    label { "Message " textarea name="body" required rows="3" {} }
                    button type="submit" { "Set" }
                }))
                @if m.is_some() {
                    (form("motd/clear", csrf, html! {
                        input type="hidden" name="host" value=(h);
                        button type="submit" { "Remove" }
                    }))
                }
            }
        })
    }

    /// A served account's bare JID that exists.
    async fn account(&self, text: &str) -> Result<BareJid, PageError> {
        let jid = match parse_jid(text) {
            Ok(j) if j.node().is_some() && j.resource().is_none() => j.bare(),
            _ => {
                let why = format!("{text:?} is not an account's address");
                return Err(PageError::bad_request(why));
            }
        };
        let backend = (self.api.backends.get(jid.domain().as_str())).ok_or_else(|| {
            PageError::not_found(format!("{} is not a host of this server", jid.domain()))
        })?;
        match backend.user_exists(&user_ref(&jid)).await {
            Ok(true) => Ok(jid),
            Ok(false) => Err(PageError::not_found(format!("no account {jid}"))),
            Err(e) => Err(format!("cannot check the account: {e}").into()),
        }
    }

    /// A POST action: where to go next, and what it did or why it failed.
    async fn act(
        &self,
        path: &str,
        form: &HashMap<String, String>,
    ) -> (String, Result<String, String>) {
        let f = |name: &str| field(form, name);
        let opt = |name: &str| Some(f(name)).filter(|v| !v.trim().is_empty());
        let user_page = format!("{PREFIX}user?jid={}", encode(f("jid")));
        let confirmed = f("confirm") == "yes";
        match path {
            "users/create" => {
                let done = self
                    .perform_action(
                        Op::Register,
                        &[],
                        &[("jid", f("jid")), ("password", f("password"))],
                    )
                    .await;
                let next = match done {
                    Ok(_) => user_page,
                    Err(_) => format!("{PREFIX}users"),
                };
                (next, done.map(|_| format!("Account {} created.", f("jid"))))
            }
            "users/password" => {
                let done = self
                    .perform_action(
                        Op::ChangePassword,
                        &[f("jid")],
                        &[("password", f("password"))],
                    )
                    .await;
                (user_page, done.map(|_| "Password changed.".into()))
            }
            "users/disable" | "users/enable" => {
                let disable = path == "users/disable";
                let done = match self.account(f("jid")).await {
                    Ok(jid) => match self.api.server.set_disabled(&jid, disable).await {
                        Ok(()) if disable => {
                            self.sessions.close_all_of(&jid);
                            Ok(format!("{jid} is disabled; its sessions ended."))
                        }
                        Ok(()) => Ok(format!("{jid} is enabled.")),
                        Err(e) => Err(format!("storage: {e}")),
                    },
                    Err(e) => Err(e.why),
                };
                (user_page, done)
            }
            "users/delete" if !confirmed => (user_page, Err("Tick the box to confirm.".into())),
            "users/delete" => {
                let done = self.perform_action(Op::Unregister, &[f("jid")], &[]).await;
                if done.is_ok() {
                    if let Ok(jid) = f("jid").parse::<BareJid>() {
                        self.sessions.close_all_of(&jid);
                    }
                }
                let next = match done {
                    Ok(_) => format!("{PREFIX}users"),
                    Err(_) => user_page,
                };
                (next, done.map(|_| format!("Account {} deleted.", f("jid"))))
            }
            "sessions/kick" => {
                let bare = f("jid").split('/').next().unwrap_or_default();
                let next = format!("{PREFIX}user?jid={}", encode(bare));
                let done = self.perform_action(Op::Kick, &[f("jid")], &[]).await;
                (
                    next,
                    done.map(|v| format!("{} session(s) ended.", v["ended"])),
                )
            }
            "rooms/destroy" if !confirmed => (
                format!("{PREFIX}rooms"),
                Err("Tick the box to confirm.".into()),
            ),
            "rooms/destroy" => {
                let done = self.perform_action(Op::DestroyRoom, &[f("jid")], &[]).await;
                let done = done.map(|_| format!("Room {} destroyed.", f("jid")));
                (format!("{PREFIX}rooms"), done)
            }
            "broadcast" => {
                let mut body = vec![("body", f("body"))];
                body.extend(opt("subject").map(|s| ("subject", s)));
                body.extend(opt("host").map(|h| ("host", h)));
                let done = self.perform_action(Op::Broadcast, &[], &body).await;
                let done = done.map(|v| format!("Sent to {} session(s).", v["sessions"]));
                (format!("{PREFIX}announce"), done)
            }
            "motd" => {
                let mut body = vec![("body", f("body"))];
                body.extend(opt("subject").map(|s| ("subject", s)));
                let done = self.perform_action(Op::SetMotd, &[f("host")], &body).await;
                let done = done.map(|v| {
                    format!(
                        "Message of the day set; sent to {} session(s).",
                        v["sessions"]
                    )
                });
                (format!("{PREFIX}announce"), done)
            }
            "motd/clear" => {
                let done = self.perform_action(Op::ClearMotd, &[f("host")], &[]).await;
                let done = done.map(|_| "Message of the day removed.".to_owned());
                (format!("{PREFIX}announce"), done)
            }
            _ => (PREFIX.to_owned(), Err("No such action.".into())),
        }
    }
}

fn field<'f>(form: &'f HashMap<String, String>, name: &str) -> &'f str {
    form.get(name).map(String::as_str).unwrap_or_default()
}

/// A form posting to `action` (relative to `/admin/`) with the session's token.
fn form(action: &str, csrf: &str, inner: Markup) -> Markup {
    html! {
        form method="post" action={ (PREFIX) (action) } {
            input type="hidden" name="csrf" value=(csrf);
            (inner)
        }
    }
}

/// `a=b&c=d` (a query or a urlencoded body); the first of repeated names wins.
fn parse_form(bytes: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(bytes) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

/// `s` percent-encoded for a query's value.
fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The urlencoded body of a POST; refusals as answers.
async fn read_form(
    req: Request<RequestBody>,
) -> Result<HashMap<String, String>, Response<ResponseBody>> {
    let urlencoded = (req.headers().get(CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !urlencoded {
        return Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Forms are sent as application/x-www-form-urlencoded.",
        ));
    }
    match req.into_body().collect().await {
        Ok(b) => Ok(parse_form(&b.to_bytes())),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The form is too large.",
        )),
        Err(e) => Err(text(
            StatusCode::BAD_REQUEST,
            &format!("Reading the form: {e}"),
        )),
    }
}

/// Whether a POST comes from our own pages, as far as the browser tells: its `Origin`, else
/// its `Referer`, must be this listener's own (scheme and `Host`). Requests with neither (not
/// from a browser, or a browser that strips both) rely on the CSRF token alone.
fn same_origin(req: &Request<RequestBody>, peer: &Peer) -> bool {
    if req.headers().contains_key(hyper::header::ORIGIN) {
        return xmppd_http::origin_allowed(req, peer, &[]);
    }
    let Some(referer) = req.headers().get(REFERER) else {
        return true;
    };
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok());
    match (referer.to_str(), host) {
        (Ok(r), Some(host)) => {
            let own = format!("{}://{}/", peer.scheme(), host).to_ascii_lowercase();
            r.to_ascii_lowercase().starts_with(&own)
        }
        _ => false,
    }
}

/// `bytes` for a reader: in KiB, MiB or GiB from 1 KiB on, exact below.
fn size(bytes: u64) -> String {
    let units = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    match units.iter().find(|(_, n)| bytes >= *n) {
        Some((unit, n)) => format!("{:.1} {unit}", bytes as f64 / *n as f64),
        None => format!("{bytes} B"),
    }
}

fn uptime(secs: u64) -> String {
    let (d, h, m) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60);
    match (d, h) {
        (0, 0) => format!("{m} min"),
        (0, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h {m} min"),
    }
}

fn layout(session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "xmppd administration" }
                link rel="stylesheet" href={ (PREFIX) "style.css" };
            }
            body {
                @if let Some(s) = session {
                    nav {
                        a href=(PREFIX) { "Overview" }
                        a href={ (PREFIX) "users" } { "Users" }
                        a href={ (PREFIX) "rooms" } { "Rooms" }
                        a href={ (PREFIX) "uploads" } { "Uploads" }
                        a href={ (PREFIX) "announce" } { "Announcements" }
                        a href={ (PREFIX) "config" } { "Configuration" }
                        span class="who" { (s.admin.as_str()) }
                        (form("logout", &s.csrf, html! { button type="submit" { "Log out" } }))
                    }
                    @if let Some((error, text)) = &s.flash {
                        p class=(if *error { "flash error" } else { "flash" }) role="status" { (text) }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn login_page(call: &Call<'_>, error: Option<&str>) -> Response<ResponseBody> {
    let token = session::random_token();
    let body = html! {
        h1 { "xmppd administration" }
        @if let Some(e) = error { p class="flash error" role="alert" { (e) } }
        form method="post" action={ (PREFIX) "login" } class="login" {
            input type="hidden" name="csrf" value=(token);
            label { "Address " input type="text" name="jid" required autocomplete="username"
                placeholder="admin@example.org"; }
            label { "Password " input type="password" name="password" required
                autocomplete="current-password"; }
            button type="submit" { "Log in" }
        }
    };
    let mut resp = html_response(StatusCode::OK, layout(None, body));
    let cookie = session::set_cookie(
        session::LOGIN_COOKIE,
        &token,
        Duration::from_secs(3600),
        call.peer.secure,
    );
    set_cookie_header(&mut resp, &cookie);
    resp
}

fn set_cookie_header(resp: &mut Response<ResponseBody>, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
}

fn html_response(status: StatusCode, page: Markup) -> Response<ResponseBody> {
    let mut resp = with_type(full(page.into_string()), "text/html; charset=utf-8");
    *resp.status_mut() = status;
    resp
}

fn with_type(body: ResponseBody, content_type: &'static str) -> Response<ResponseBody> {
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn text(status: StatusCode, body: &str) -> Response<ResponseBody> {
    xmppd_http::text(status, body)
}

fn forbidden(why: &str) -> Response<ResponseBody> {
    text(StatusCode::FORBIDDEN, why)
}

/// 303: the browser follows with a GET (Post/Redirect/Get: reloading does not post again).
fn redirect(location: &str) -> Response<ResponseBody> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

/// Why a page cannot be shown, with the status it is answered with: an address that names
/// nothing here is 404 and a malformed one 400, as the REST API answers them; anything else
/// (storage) is 500.
#[derive(Debug)]
struct PageError {
    status: StatusCode,
    why: String,
}

impl PageError {
    fn not_found(why: String) -> PageError {
        PageError {
            status: StatusCode::NOT_FOUND,
            why,
        }
    }

    fn bad_request(why: String) -> PageError {
        PageError {
            status: StatusCode::BAD_REQUEST,
            why,
        }
    }
}

impl From<String> for PageError {
    fn from(why: String) -> PageError {
        PageError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            why,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_in_pages() {
        let evil = "<script>alert(1)</script>\"'&";
        let page = form("x", evil, html! { p { (evil) } td title=(evil) {} }).into_string();
        assert!(!page.contains("<script>"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;'&amp;"),
            "{page}"
        );
        assert!(
            !page.contains("\"'&\""),
            "attributes are escaped too: {page}"
        );
    }

    #[test]
    fn forms_and_queries_are_decoded_and_encoded() {
        let f = parse_form(b"jid=a%40b.org&password=p+w%26&jid=second");
        assert_eq!(field(&f, "jid"), "a@b.org");
        assert_eq!(field(&f, "password"), "p w&");
        assert_eq!(field(&f, "missing"), "");
        assert_eq!(encode("a b&c/d@e"), "a+b%26c%2Fd%40e");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 << 20), "5.0 MiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn uptime_reads_well() {
        assert_eq!(uptime(59), "0 min");
        assert_eq!(uptime(3 * 3600 + 120), "3 h 2 min");
        assert_eq!(uptime(2 * 86400 + 3600), "2 d 1 h 0 min");
    }
}
