//! Forward-auth (nginx `auth_request`, Caddy `forward_auth`, Traefik
//! `forwardAuth`): `GET /api/auth/verify` answers for the request a proxy
//! is about to pass upstream. 200 carries the principal in `X-Velocity-*`
//! headers for the proxy to copy; 401 and 403 carry the JSON error body
//! and a `WWW-Authenticate` challenge (RFC 6750 §3) the proxy can relay.
//! A storage outage is a 503, which proxies treat as a failure of the
//! check, never as an allow.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use velocity_domain::authorization::Authorization;
use velocity_domain::principal::upstream_header;
use velocity_domain::{Error, ErrorClass, Principal, Reason};

use crate::error::HttpError;
use crate::params::Params;
use crate::{AppState, Shared};

/// The caller's workspace, as the Velocity API takes it.
const WORKSPACE_HEADER: &str = "x-workspace-slug";

/// Longest `X-Workspace-Slug` read; slugs are far shorter.
const MAX_SLUG_LEN: usize = 128;

pub async fn verify(
    State(state): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match check(&state, query.as_deref(), &headers).await {
        Ok(principal) => allowed(&principal),
        Err(err) => refused(err),
    }
}

async fn check(
    state: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Principal, Error> {
    let credential = match headers.get(header::AUTHORIZATION) {
        None => "",
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| Error::Unauthenticated(Reason::CredentialMalformed))?;
            Authorization::bearer_or_bare(value)?
        }
    };
    let slug = match headers.get(WORKSPACE_HEADER) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|s| s.len() <= MAX_SLUG_LEN)
                .ok_or_else(|| Error::invalid("X-Workspace-Slug is not a workspace slug"))?
                .trim(),
        ),
    }
    .filter(|s| !s.is_empty());
    let method = header_str(headers, "x-forwarded-method").unwrap_or("GET");
    let uri = header_str(headers, "x-original-uri")
        .or_else(|| header_str(headers, "x-forwarded-uri"))
        .unwrap_or("/");
    let scopes = match required_scopes(query)? {
        Some(scopes) => scopes,
        None => state.route_scopes.scopes_for(method, uri).to_vec(),
    };
    // The path only: a query string may carry a token.
    let path = uri.split(['?', '#']).next().unwrap_or_default();
    tracing::debug!(method, path, "forward-auth check");
    state.service.authenticate(credential, slug, &scopes).await
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `?scopes=issues:write,projects:read` (commas or spaces); `None` when
/// absent, and then the route table decides.
fn required_scopes(query: Option<&str>) -> Result<Option<Vec<String>>, Error> {
    let params = Params::from_form(query.unwrap_or_default().as_bytes())
        .map_err(|_| Error::invalid("a query parameter was given more than once"))?;
    Ok(params.get("scopes").map(|list| {
        list.split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }))
}

fn allowed(principal: &Principal) -> Response {
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    for (name, value) in principal.upstream_fields() {
        // Every value is ours (ids, slugs, scope names), so always valid;
        // an invalid one is left out rather than answered wrongly.
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(upstream_header(name)),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    response
}

/// The error table's status and body; a missing scope also says so in the
/// challenge, as RFC 6750 §3.1 has it.
fn refused(err: Error) -> Response {
    let insufficient_scope =
        err.class() == ErrorClass::PermissionDenied && err.reason() == Reason::ScopeMissing;
    let mut response = HttpError(err).into_response();
    if insufficient_scope {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"insufficient_scope\""),
        );
    }
    response
}
