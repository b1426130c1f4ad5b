//! `GET /.well-known/oauth-authorization-server` (RFC 8414): the issuer and
//! every endpoint, built from the configured issuer (`ServiceConfig::issuer`).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use velocity_domain::scope::Scope;

use crate::Shared;

/// Clients may keep the document this long; it changes only on redeploy.
const MAX_AGE: &str = "public, max-age=300";

pub async fn metadata(State(state): State<Shared>) -> Response {
    let issuer = state.service.issuer();
    let scopes: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    let client_auth = ["client_secret_basic", "client_secret_post", "none"];
    let body = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth/consent"),
        "token_endpoint": format!("{issuer}/api/oauth/token"),
        "revocation_endpoint": format!("{issuer}/api/oauth/revoke"),
        "introspection_endpoint": format!("{issuer}/api/oauth/introspect"),
        "scopes_supported": scopes,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": client_auth,
        "revocation_endpoint_auth_methods_supported": client_auth,
        // Only clients sending their secret (or the admin token, as a bearer).
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
    });
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(MAX_AGE));
    response
}
