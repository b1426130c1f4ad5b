//! CORS on the token, revocation, introspection and metadata URLs, never on
//! the consent form. An `Origin` is allowed when it is the origin of a
//! registered app's redirect URI (`Service::is_registered_origin`, cached
//! briefly) or one of the configured `VELOCITY_CORS_ORIGINS`. Allowed
//! origins are echoed exactly (never `*`), without credentials mode;
//! others get no CORS headers.
//!
//! The /v1 JSON routes answer CORS for the web app's origins alone
//! (`VELOCITY_WEB_ORIGINS`), in credentials mode, so its Settings pages may
//! send the session cookie from another origin of the same site; no app's
//! origin is allowed there.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{AppState, Shared};

const ALLOW_HEADERS: &str = "Authorization, Content-Type";
/// How long a browser may reuse a preflight answer, in seconds.
const MAX_AGE: &str = "600";

/// For the POST routes (token, revoke, introspect).
pub async fn post_routes(State(state): State<Shared>, request: Request, next: Next) -> Response {
    handle(&state, "POST, OPTIONS", request, next).await
}

/// For the metadata document.
pub async fn get_routes(State(state): State<Shared>, request: Request, next: Next) -> Response {
    handle(&state, "GET, OPTIONS", request, next).await
}

/// For the /v1 JSON routes: the web app's origins, with credentials.
pub async fn web_routes(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed = origin
        .as_ref()
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| state.web_origins.iter().any(|w| w == o));
    let mut response = answer(
        "GET, POST, PUT, PATCH, DELETE, OPTIONS",
        allowed,
        origin.is_some(),
        request,
        next,
    )
    .await;
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let (true, Some(origin)) = (allowed, origin) {
        allow(headers, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    response
}

async fn handle(state: &AppState, methods: &'static str, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed = match &origin {
        Some(origin) => is_allowed(state, origin).await,
        None => false,
    };
    let mut response = answer(methods, allowed, origin.is_some(), request, next).await;
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let (true, Some(origin)) = (allowed, origin) {
        allow(headers, origin);
    }
    response
}

/// A preflight's answer (allowed or not), else the route's own.
async fn answer(
    methods: &'static str,
    allowed: bool,
    has_origin: bool,
    request: Request,
    next: Next,
) -> Response {
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight && has_origin {
        let mut response = (StatusCode::NO_CONTENT, Body::empty()).into_response();
        if allowed {
            let headers = response.headers_mut();
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(methods),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(MAX_AGE),
            );
        }
        response
    } else {
        next.run(request).await
    }
}

fn allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
}

async fn is_allowed(state: &AppState, origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if state.cors_origins.iter().any(|o| o == origin) {
        return true;
    }
    match state.service.is_registered_origin(origin).await {
        Ok(found) => found,
        Err(err) => {
            crate::error::log_if_internal(&err);
            false
        }
    }
}
