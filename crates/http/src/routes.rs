//! Every hand-written HTTP route, declared once: the router is built from
//! this table and /openapi.json documents it, so neither can list a route
//! the other lacks. The gateway's routes come from the protos instead
//! (`gateway`), and join both the same way.

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::http::{HeaderValue, Method, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use serde_json::{Value, json};

use crate::metrics::{Exposition, scrape};
use crate::{Shared, consent, discovery, health, token, verify};

/// Which layers a route sits behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Plain,
    /// Uncacheable, CORS for POST (`cors::CorsLayer::token_routes`).
    Token,
    /// CORS for GET (`cors::CorsLayer::metadata`).
    Metadata,
}

pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub group: Group,
    pub handler: MethodRouter<Shared>,
    /// The OpenAPI operation object.
    pub operation: Value,
}

/// The document served at /openapi.json; set once the table it describes
/// is built (the table holds the route that serves it).
pub type Document = Arc<OnceLock<Bytes>>;

fn error_responses(statuses: &[&str]) -> Value {
    let mut map = serde_json::Map::new();
    for status in statuses {
        map.insert(
            (*status).to_owned(),
            json!({"$ref": format!("#/components/responses/Error{status}")}),
        );
    }
    map.insert(
        "default".to_owned(),
        json!({"$ref": "#/components/responses/Error"}),
    );
    Value::Object(map)
}

fn with(mut responses: Value, status: &str, response: Value) -> Value {
    if let Some(map) = responses.as_object_mut() {
        map.insert(status.to_owned(), response);
    }
    responses
}

fn query(name: &str, description: &str, required: bool) -> Value {
    json!({"name": name, "in": "query", "required": required,
           "description": description, "schema": {"type": "string"}})
}

fn form_body(properties: Value, required: &[&str]) -> Value {
    json!({"required": true, "content": {
        "application/x-www-form-urlencoded": {"schema":
            {"type": "object", "properties": properties.clone(), "required": required}},
        "application/json": {"schema":
            {"type": "object", "properties": properties, "required": required}},
    }})
}

fn html(description: &str) -> Value {
    json!({"description": description, "content": {"text/html": {"schema": {"type": "string"}}}})
}

fn redirect(description: &str) -> Value {
    json!({"description": description, "headers": {"Location":
        {"schema": {"type": "string"}, "description": "where the browser goes next"}}})
}

fn text_ok(description: &str) -> Value {
    json!({"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}})
}

fn json_ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// The consent request's parameters (CONTRACT §6).
fn consent_params() -> Vec<Value> {
    vec![
        query("client_id", "the app's client id", true),
        query(
            "redirect_uri",
            "a redirect URI registered for the app, exactly",
            true,
        ),
        query("response_type", "`code`", true),
        query("scope", "space-separated scopes", false),
        query("state", "returned unchanged", false),
        query("code_challenge", "PKCE S256 challenge", true),
        query("code_challenge_method", "`S256` (plain is refused)", true),
    ]
}

/// `scrape`: the exposition `/metrics` serves on this listener, `None` when
/// metrics have a listener of their own (`VELOCITY_METRICS_ADDR`).
pub fn table(document: Document, scrape_on: Option<Arc<dyn Exposition>>) -> Vec<Route> {
    let mut table = vec![
        Route {
            method: Method::GET,
            path: "/healthz",
            group: Group::Plain,
            handler: get(health::healthz),
            operation: json!({
                "operationId": "healthz", "tags": ["ops"],
                "summary": "Liveness: the process answers HTTP; storage is not touched.",
                "responses": {"200": text_ok("`ok`")},
            }),
        },
        Route {
            method: Method::GET,
            path: "/readyz",
            group: Group::Plain,
            handler: get(health::readyz),
            operation: json!({
                "operationId": "readyz", "tags": ["ops"],
                "summary": "Readiness: start-up work done and storage answering.",
                "responses": with(error_responses(&["503"]), "200", text_ok("`ok`")),
            }),
        },
        Route {
            method: Method::GET,
            path: "/oauth/consent",
            group: Group::Plain,
            handler: get(consent::show),
            operation: json!({
                "operationId": "showConsent", "tags": ["oauth"],
                "summary": "The consent page a signed-in user approves an app on (session as Bearer or the web app's cookie).",
                "security": [{"bearer": []}, {"sessionCookie": []}, {}],
                "parameters": consent_params(),
                "responses": {
                    "200": html("the consent page"),
                    "303": redirect("a signed-out browser, sent to sign in; or an error redirected to the app"),
                    "302": redirect("an error redirected to the app"),
                    "400": html("an error page (unknown client, unregistered redirect URI)"),
                    "401": html("signed out, with no sign-in URL configured"),
                    "403": html("refused"),
                    "default": html("an error page"),
                },
            }),
        },
        Route {
            method: Method::POST,
            path: "/oauth/consent",
            group: Group::Plain,
            handler: post(consent::submit),
            operation: json!({
                "operationId": "submitConsent", "tags": ["oauth"],
                "summary": "The consent form: approve or deny, with the page's CSRF token.",
                "security": [{"bearer": []}, {"sessionCookie": []}, {}],
                "requestBody": {"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {
                    "type": "object",
                    "properties": {
                        "client_id": {"type": "string"}, "redirect_uri": {"type": "string"},
                        "response_type": {"type": "string"}, "scope": {"type": "string"},
                        "state": {"type": "string"}, "code_challenge": {"type": "string"},
                        "code_challenge_method": {"type": "string"},
                        "csrf_token": {"type": "string"},
                        "decision": {"type": "string", "enum": ["approve", "deny"]},
                        "workspace": {"type": "string"},
                    }}}}},
                "responses": {
                    "303": redirect("to redirect_uri with `code` or `error`, and `state` and `iss`"),
                    "302": redirect("an error redirected to the app"),
                    "400": html("an error page"),
                    "401": html("signed out"),
                    "403": html("the CSRF token is missing, expired or not this session's"),
                    "default": html("an error page"),
                },
            }),
        },
        Route {
            method: Method::GET,
            path: "/api/auth/verify",
            group: Group::Plain,
            handler: get(verify::verify),
            operation: json!({
                "operationId": "verify", "tags": ["forward-auth"],
                "summary": "Forward-auth for nginx auth_request, Caddy and Traefik: the principal in X-Velocity-* headers.",
                "security": [{"bearer": []}, {}],
                "parameters": [
                    query("scopes", "scopes the request needs (commas or spaces); else the route table decides", false),
                    {"name": "X-Workspace-Slug", "in": "header", "required": false, "schema": {"type": "string"}},
                    {"name": "X-Original-URI", "in": "header", "required": false, "schema": {"type": "string"}},
                    {"name": "X-Forwarded-Method", "in": "header", "required": false, "schema": {"type": "string"}},
                ],
                "responses": with(error_responses(&["400", "401", "403", "503"]), "200",
                    json!({"description": "allowed; the principal in X-Velocity-* headers"})),
            }),
        },
        Route {
            method: Method::POST,
            path: "/api/oauth/token",
            group: Group::Token,
            handler: post(token::token),
            operation: json!({
                "operationId": "token", "tags": ["oauth"],
                "summary": "Token endpoint (RFC 6749): authorization_code and refresh_token grants.",
                "security": [{"clientBasic": []}, {}],
                "requestBody": form_body(json!({
                    "grant_type": {"type": "string", "enum": ["authorization_code", "refresh_token"]},
                    "code": {"type": "string"}, "redirect_uri": {"type": "string"},
                    "code_verifier": {"type": "string"}, "refresh_token": {"type": "string"},
                    "client_id": {"type": "string"}, "client_secret": {"type": "string"},
                    "scope": {"type": "string"},
                }), &["grant_type"]),
                "responses": with(error_responses(&["400", "401", "429"]), "200",
                    json_ok("tokens", json!({"$ref": "#/components/schemas/OAuthTokens"}))),
            }),
        },
        Route {
            method: Method::POST,
            path: "/api/oauth/revoke",
            group: Group::Token,
            handler: post(token::revoke),
            operation: json!({
                "operationId": "revoke", "tags": ["oauth"],
                "summary": "Token revocation (RFC 7009).",
                "security": [{"clientBasic": []}, {}],
                "requestBody": form_body(json!({
                    "token": {"type": "string"}, "token_type_hint": {"type": "string"},
                    "client_id": {"type": "string"}, "client_secret": {"type": "string"},
                }), &["token"]),
                "responses": with(error_responses(&["400", "401", "429"]), "200",
                    json!({"description": "revoked, or not a token of this client"})),
            }),
        },
        Route {
            method: Method::POST,
            path: "/api/oauth/introspect",
            group: Group::Token,
            handler: post(token::introspect),
            operation: json!({
                "operationId": "introspect", "tags": ["oauth"],
                "summary": "Token introspection (RFC 7662) by an app with its secret, or the operator.",
                "security": [{"clientBasic": []}, {"bearer": []}, {}],
                "requestBody": form_body(json!({
                    "token": {"type": "string"}, "token_type_hint": {"type": "string"},
                    "client_id": {"type": "string"}, "client_secret": {"type": "string"},
                }), &["token"]),
                "responses": with(error_responses(&["400", "401", "429"]), "200",
                    json_ok("the token's state", json!({"type": "object",
                        "properties": {"active": {"type": "boolean"}}, "required": ["active"]}))),
            }),
        },
        Route {
            method: Method::GET,
            path: "/.well-known/oauth-authorization-server",
            group: Group::Metadata,
            handler: get(discovery::metadata),
            operation: json!({
                "operationId": "authorizationServerMetadata", "tags": ["oauth"],
                "summary": "Authorization server metadata (RFC 8414).",
                "responses": with(error_responses(&[]), "200", json_ok("the metadata", json!({
                    "type": "object", "required": ["issuer"],
                    "properties": {"issuer": {"type": "string"}}}))),
            }),
        },
        Route {
            method: Method::GET,
            path: "/openapi.json",
            group: Group::Plain,
            handler: get(move || serve_document(document.clone())),
            operation: json!({
                "operationId": "openapi", "tags": ["ops"],
                "summary": "This document: every HTTP route (OpenAPI 3.1).",
                "responses": {"200": json_ok("OpenAPI 3.1", json!({"type": "object"}))},
            }),
        },
    ];
    if let Some(exposition) = scrape_on {
        table.push(Route {
            method: Method::GET,
            path: "/metrics",
            group: Group::Plain,
            handler: get(move || scrape(exposition.clone())),
            operation: json!({
                "operationId": "metrics", "tags": ["ops"],
                "summary": "Prometheus metrics (text format 0.0.4); docs/metrics.md lists them.",
                "responses": {
                    "200": text_ok("the scrape"),
                    "500": {"description": "the scrape could not be rendered (logged)"},
                },
            }),
        });
    }
    table
}

async fn serve_document(document: Document) -> axum::response::Response {
    let body = document.get().cloned().unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
