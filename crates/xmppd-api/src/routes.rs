//! The API's routes as one table: the service dispatches from it and the OpenAPI document
//! (`/api/openapi.json`) is generated from it, so the two cannot drift apart.

use serde_json::{json, Map, Value};

use crate::token::Scope;

/// What a route does (the dispatcher matches on it exhaustively).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    OpenApi,
    ListUsers,
    Register,
    Unregister,
    ChangePassword,
    ListSessions,
    Kick,
    SendMessage,
    Broadcast,
    SetMotd,
    ClearMotd,
    ListRooms,
    CreateRoom,
    DestroyRoom,
    Stats,
}

/// The JSON type of a request field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Boolean,
}

/// One field of a request body.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub about: &'static str,
    /// The values allowed, when they are few.
    pub values: &'static [&'static str],
}

const fn field(name: &'static str, required: bool, about: &'static str) -> Field {
    Field {
        name,
        kind: Kind::String,
        required,
        about,
        values: &[],
    }
}

const fn flag(name: &'static str, about: &'static str) -> Field {
    Field {
        name,
        kind: Kind::Boolean,
        required: false,
        about,
        values: &[],
    }
}

/// One route: a method and a path template whose `{name}` segments are parameters (a last
/// `{jid}` takes the rest of the path, so a full JID's resource may hold `/`).
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub op: Op,
    /// `None`: no token needed.
    pub scope: Option<Scope>,
    pub summary: &'static str,
    pub body: &'static [Field],
    /// The status of success and what the answer holds.
    pub ok: (u16, &'static str),
    /// The refusals particular to the route (beyond 400, 401, 403, 413, 415).
    pub errors: &'static [(u16, &'static str)],
}

const NOT_FOUND: (u16, &str) = (404, "No such account, session, room or host");

pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/api/openapi.json",
        op: Op::OpenApi,
        scope: None,
        summary: "This document",
        body: &[],
        ok: (200, "The OpenAPI 3 description of the API"),
        errors: &[],
    },
    Route {
        method: "GET",
        path: "/api/users",
        op: Op::ListUsers,
        scope: Some(Scope::Read),
        summary: "List the accounts of every host",
        body: &[],
        ok: (200, "`{\"users\": [\"alice@example.org\", ...]}`, sorted per host"),
        errors: &[],
    },
    Route {
        method: "POST",
        path: "/api/users",
        op: Op::Register,
        scope: Some(Scope::Admin),
        summary: "Register an account",
        body: &[
            field("jid", true, "The account's bare JID (user@host, a host of this server)"),
            field("password", true, "Its password (not trimmed)"),
        ],
        ok: (201, "`{\"jid\": ...}`"),
        errors: &[
            (409, "The account exists, or its name belonged to a recently removed account"),
            NOT_FOUND,
        ],
    },
    Route {
        method: "DELETE",
        path: "/api/users/{jid}",
        op: Op::Unregister,
        scope: Some(Scope::Admin),
        summary: "Remove an account and everything stored for it; its sessions end",
        body: &[],
        ok: (200, "`{\"jid\", \"contacts\", \"rooms\"}`: how many rosters and rooms it left"),
        errors: &[NOT_FOUND],
    },
    Route {
        method: "PUT",
        path: "/api/users/{jid}/password",
        op: Op::ChangePassword,
        scope: Some(Scope::Admin),
        summary: "Change an account's password",
        body: &[field("password", true, "The new password (not trimmed)")],
        ok: (200, "`{\"jid\": ...}`"),
        errors: &[NOT_FOUND],
    },
    Route {
        method: "GET",
        path: "/api/sessions",
        op: Op::ListSessions,
        scope: Some(Scope::Read),
        summary: "List the connected sessions",
        body: &[],
        ok: (
            200,
            "`{\"sessions\": [{\"jid\", \"user\", \"resource\", \"ip\", \"port\", \"started\", \"user_agent\"}]}`; `ip` and `port` are null when `server.hide_ip_in_logs` is on",
        ),
        errors: &[],
    },
    Route {
        method: "DELETE",
        path: "/api/sessions/{jid}",
        op: Op::Kick,
        scope: Some(Scope::Admin),
        summary: "End every session of a bare JID, or the one session of a full JID",
        body: &[],
        ok: (200, "`{\"ended\": N}`"),
        errors: &[(404, "No such session")],
    },
    Route {
        method: "POST",
        path: "/api/messages",
        op: Op::SendMessage,
        scope: Some(Scope::Admin),
        summary: "Send a message (stored offline like any message when it cannot be delivered)",
        body: &[
            field("to", true, "The recipient's JID"),
            field("body", true, "The text"),
            field("subject", false, "A subject"),
            field("from", false, "The sender: a served host or an account of one (default: the recipient's host, else the first host)"),
            Field {
                name: "type",
                kind: Kind::String,
                required: false,
                about: "The message type (default `chat`)",
                values: &["chat", "normal", "headline"],
            },
        ],
        ok: (202, "`{\"id\": ...}`: routed"),
        errors: &[],
    },
    Route {
        method: "POST",
        path: "/api/broadcast",
        op: Op::Broadcast,
        scope: Some(Scope::Admin),
        summary: "Send a message from the server to every online session",
        body: &[
            field("body", true, "The text"),
            field("subject", false, "A subject"),
            field("host", false, "Only the sessions of this host"),
        ],
        ok: (200, "`{\"sessions\": N}`: how many sessions took it"),
        errors: &[NOT_FOUND],
    },
    Route {
        method: "PUT",
        path: "/api/motd/{host}",
        op: Op::SetMotd,
        scope: Some(Scope::Admin),
        summary: "Set a host's message of the day (sent at once to its online users)",
        body: &[field("body", true, "The text"), field("subject", false, "A subject")],
        ok: (200, "`{\"host\", \"sessions\"}`: how many sessions took it now"),
        errors: &[NOT_FOUND],
    },
    Route {
        method: "DELETE",
        path: "/api/motd/{host}",
        op: Op::ClearMotd,
        scope: Some(Scope::Admin),
        summary: "Remove a host's message of the day",
        body: &[],
        ok: (200, "`{\"host\": ...}`"),
        errors: &[NOT_FOUND],
    },
    Route {
        method: "GET",
        path: "/api/rooms",
        op: Op::ListRooms,
        scope: Some(Scope::Read),
        summary: "List the chat rooms of every service (persistent ones and those in use)",
        body: &[],
        ok: (200, "`{\"rooms\": [{\"jid\", \"name\", \"listed\"}]}`"),
        errors: &[],
    },
    Route {
        method: "POST",
        path: "/api/rooms",
        op: Op::CreateRoom,
        scope: Some(Scope::Admin),
        summary: "Create a configured chat room",
        body: &[
            field("jid", true, "The room's address (name@conference.host, a chat service of this server)"),
            field("owner", true, "The bare JID of its owner"),
            field("name", false, "Its title"),
            flag("public", "Listed in the service's disco#items (default true)"),
            flag("persistent", "Kept when empty and across restarts (default true)"),
        ],
        ok: (201, "`{\"jid\": ...}`"),
        errors: &[(409, "The room exists"), NOT_FOUND],
    },
    Route {
        method: "DELETE",
        path: "/api/rooms/{jid}",
        op: Op::DestroyRoom,
        scope: Some(Scope::Admin),
        summary: "Destroy a chat room; its occupants are told (XEP-0045 §10.9)",
        body: &[],
        ok: (200, "`{\"jid\": ...}`"),
        errors: &[NOT_FOUND],
    },
    Route {
        method: "GET",
        path: "/api/stats",
        op: Op::Stats,
        scope: Some(Scope::Read),
        summary: "Server statistics",
        body: &[],
        ok: (
            200,
            "`{\"accounts\", \"online_sessions\", \"online_users\", \"rooms\", \"uptime_secs\", \"memory_bytes\"}`; `memory_bytes` is the resident set, null where unknown",
        ),
        errors: &[],
    },
];

/// The route of `method` and `path`, with its parameters (percent-decoded); `Err(true)` when
/// the path exists for other methods (405), `Err(false)` when it does not (404).
pub fn find(method: &str, path: &str) -> Result<(&'static Route, Vec<String>), bool> {
    let mut path_known = false;
    for route in ROUTES {
        if let Some(params) = matches(route.path, path) {
            if route.method == method {
                return Ok((route, params));
            }
            path_known = true;
        }
    }
    Err(path_known)
}

/// The methods allowed on `path` (for `Allow`).
pub fn methods(path: &str) -> Vec<&'static str> {
    (ROUTES.iter())
        .filter(|r| matches(r.path, path).is_some())
        .map(|r| r.method)
        .collect()
}

fn matches(template: &str, path: &str) -> Option<Vec<String>> {
    let mut params = Vec::new();
    let mut rest = path;
    let mut parts = template.split('/').peekable();
    // Both start with "/": the first parts are empty.
    while let Some(part) = parts.next() {
        let (seg, after) = match rest.split_once('/') {
            Some((s, a)) => (s, Some(a)),
            None => (rest, None),
        };
        if part.starts_with('{') {
            // The last parameter of a template ending in it takes the rest of the path.
            let tail = parts.peek().is_none();
            let value = if tail { rest } else { seg };
            if value.is_empty() {
                return None;
            }
            params.push(percent_decode(value)?);
            if tail {
                return Some(params);
            }
        } else if part != seg {
            return None;
        }
        match (after, parts.peek()) {
            (Some(a), Some(_)) => rest = a,
            (None, None) => return Some(params),
            _ => return None,
        }
    }
    None
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The OpenAPI 3 document of [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = operation(route);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "xmppd administration API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "JSON in and out. Errors are `{\"error\": CODE, \"message\": TEXT}`, with `field` naming the request field at fault. Tokens come from `xmppd api-token create`.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {
                "type": "object",
                "required": ["error", "message"],
                "properties": {
                    "error": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": "string"},
                },
            }},
        },
        "paths": paths,
    })
}

fn operation(route: &Route) -> Value {
    let error = |text: &str| {
        json!({"description": text, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}})
    };
    let mut responses = Map::new();
    let (status, text) = route.ok;
    responses.insert(
        status.to_string(),
        json!({"description": text, "content": {"application/json": {"schema": {"type": "object"}}}}),
    );
    if route.scope.is_some() {
        responses.insert(
            "401".into(),
            error("No token, or an unknown, revoked or expired one"),
        );
        responses.insert("403".into(), error("The token's scope does not allow this"));
    }
    if !route.body.is_empty() {
        responses.insert(
            "400".into(),
            error("A field is missing or invalid (`field` names it)"),
        );
        responses.insert("413".into(), error("The body is too large"));
        responses.insert("415".into(), error("The body is not `application/json`"));
    } else if route.path.contains('{') {
        responses.insert("400".into(), error("The address in the path is invalid"));
    }
    for (status, text) in route.errors {
        responses.insert(status.to_string(), error(text));
    }
    let mut op = json!({
        "operationId": format!("{:?}", route.op),
        "summary": route.summary,
        "responses": responses,
    });
    op["security"] = match route.scope {
        Some(_) => json!([{"bearer": []}]),
        None => json!([]),
    };
    if let Some(scope) = route.scope {
        op["x-scope"] = json!(scope.as_str());
    }
    let params: Vec<Value> = (route.path.split('/'))
        .filter_map(|p| p.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if !route.body.is_empty() {
        let mut props = Map::new();
        for f in route.body {
            let mut schema = json!({
                "type": match f.kind { Kind::String => "string", Kind::Boolean => "boolean" },
                "description": f.about,
            });
            if !f.values.is_empty() {
                schema["enum"] = json!(f.values);
            }
            props.insert(f.name.to_owned(), schema);
        }
        let required: Vec<&str> = (route.body.iter())
            .filter(|f| f.required)
            .map(|f| f.name)
            .collect();
        op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {
            "type": "object", "properties": props, "required": required,
        }}}});
    }
    op
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_their_templates() {
        let (r, p) = find("DELETE", "/api/users/alice@example.org").unwrap();
        assert_eq!(
            (r.op, p),
            (Op::Unregister, vec!["alice@example.org".into()])
        );
        let (r, p) = find("PUT", "/api/users/alice@example.org/password").unwrap();
        assert_eq!(
            (r.op, p),
            (Op::ChangePassword, vec!["alice@example.org".into()])
        );
        // A full JID's resource may hold a slash, and be percent-encoded.
        let (r, p) = find("DELETE", "/api/sessions/alice@example.org/a/b%20c").unwrap();
        assert_eq!(
            (r.op, p),
            (Op::Kick, vec!["alice@example.org/a/b c".into()])
        );
        assert_eq!(find("GET", "/api/users").unwrap().0.op, Op::ListUsers);
        assert!(matches!(find("PATCH", "/api/users"), Err(true)));
        assert!(matches!(find("GET", "/api/users/"), Err(false)));
        assert!(matches!(find("GET", "/api/nothing"), Err(false)));
        // A bare JID has no slash: this is the removal's path, with an invalid JID.
        assert!(matches!(find("GET", "/api/users/x/y"), Err(true)));
        assert!(matches!(find("DELETE", "/api/users/%zz"), Err(false)));
        assert_eq!(methods("/api/users"), ["GET", "POST"]);
    }

    #[test]
    fn every_route_is_in_the_document_once_and_reachable() {
        let doc = openapi();
        let mut seen = std::collections::HashSet::new();
        for route in ROUTES {
            assert!(seen.insert((route.method, route.path)), "{route:?} twice");
            let op = &doc["paths"][route.path][route.method.to_ascii_lowercase()];
            assert_eq!(op["operationId"], format!("{:?}", route.op));
            // Its own template, parameters filled in, finds it.
            let path = route.path.replace("{jid}", "a@b").replace("{host}", "b");
            assert_eq!(find(route.method, &path).unwrap().0.op, route.op);
        }
        let documented: usize = (doc["paths"].as_object().unwrap().values())
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(documented, ROUTES.len());
    }
}
