//! Forward-auth (nginx `auth_request`, Caddy `forward_auth`, Traefik
//! `forwardAuth`): `GET /api/auth/verify` answers for the request a proxy
//! is about to pass upstream. 200 carries the principal in `X-Velocity-*`
//! headers for the proxy to copy; 401 and 403 carry the JSON error body
//! and a `WWW-Authenticate` challenge (RFC 6750 §3) the proxy can relay.
//! A storage outage is a 503, which proxies treat as a failure of the
//! check, never as an allow.
//!
//! Budgets (docs/limits.md): an allowed call spends its credential's, a
//! call without a valid credential its client address's; both answers
//! carry `X-RateLimit-*`, and over the budget the answer is 429 with
//! `Retry-After`. The client address is the proxy's `X-Real-IP`, else the
//! last `X-Forwarded-For` entry (the one the proxy added), else the
//! connection's: only the proxy should be able to reach this route.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;
use velocity_domain::authorization::Authorization;
use velocity_domain::principal::upstream_header;
use velocity_domain::rate_limit::Budget;
use velocity_domain::{Error, ErrorClass, Principal, Reason};

use crate::error::HttpError;
use crate::params::Params;
use crate::peer::PeerAddress;
use crate::rate_limit::set_budget_headers;
use crate::{AppState, Shared};

/// The caller's workspace, as the Velocity API takes it.
const WORKSPACE_HEADER: &str = "x-workspace-slug";

/// Longest `X-Workspace-Slug` read; slugs are far shorter.
const MAX_SLUG_LEN: usize = 128;

pub async fn verify(
    State(state): State<Shared>,
    PeerAddress(peer): PeerAddress,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match check(&state, query.as_deref(), &headers).await {
        Ok((principal, budget)) => with_budget(allowed(&principal), budget),
        Err(err) if err.class() == ErrorClass::Unauthenticated => {
            let address = client_address(&headers).or(peer);
            match state.service.count_anonymous(address).await {
                Ok(budget) => with_budget(refused(err), budget),
                Err(over) => refused(over),
            }
        }
        Err(err) => refused(err),
    }
}

fn with_budget(mut response: Response, budget: Option<Budget>) -> Response {
    if let Some(budget) = budget {
        set_budget_headers(response.headers_mut(), &budget);
    }
    response
}

/// The address the proxy saw the request come from, as it tells us.
fn client_address(headers: &HeaderMap) -> Option<IpAddr> {
    if let Some(real_ip) = header_str(headers, "x-real-ip") {
        return real_ip.trim().parse().ok();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|list| list.rsplit(',').next())
        .and_then(|last| last.trim().parse().ok())
}

async fn check(
    state: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<(Principal, Option<Budget>), Error> {
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
    state
        .service
        .authenticate_counted(credential, slug, &scopes)
        .await
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `?scopes=issues:write,projects:read` (commas or spaces); `None` when
/// absent, and then the route table decides.
fn required_scopes(query: Option<&str>) -> Result<Option<Vec<String>>, Error> {
    let params = Params::from_form(query.unwrap_or_default().as_bytes()).map_err(|_| {
        Error::invalid("a query parameter was given more than once, or there were too many")
    })?;
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
