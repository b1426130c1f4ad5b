//! CORS on the token, revocation, introspection and metadata URLs, never on
//! the consent form. An `Origin` is allowed when it is the origin of a
//! registered app's redirect URI (`Service::is_registered_origin`, cached
//! briefly) or one of the configured `VELOCITY_CORS_ORIGINS`. Allowed
//! origins are echoed exactly (never `*`), without credentials mode;
//! others get no CORS headers.

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

async fn handle(state: &AppState, methods: &'static str, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed = match &origin {
        Some(origin) => is_allowed(state, origin).await,
        None => false,
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight && origin.is_some() {
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
    };
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let (true, Some(origin)) = (allowed, origin) {
        allow(headers, origin);
    }
    response
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
