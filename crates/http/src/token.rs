//! `POST /api/oauth/token`, `/api/oauth/revoke` (RFC 7009) and
//! `/api/oauth/introspect` (RFC 7662): thin translations to the use-cases
//! the gRPC API calls too. `Cache-Control: no-store` and `Pragma: no-cache`
//! are set on every response of these routes by their layer (`no_store`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use velocity_domain::error::OAuthErrorCode;
use velocity_domain::oauth::TokenKind;
use velocity_domain::service::Introspection;
use velocity_domain::{Authorization, Error};

use crate::authorization::{AuthorizationHeader, client_credentials_of};
use crate::params::{ContentType, Params};
use crate::peer::PeerAddress;
use crate::{HttpError, Shared};

pub async fn token(
    State(state): State<Shared>,
    PeerAddress(address): PeerAddress,
    authorization: AuthorizationHeader,
    content_type: ContentType,
    body: Bytes,
) -> Result<Response, HttpError> {
    let mut params = Params::from_body(&content_type, &body)?;
    let client = params.client_auth(&authorization, address)?;
    // Per address and per client_id (docs/limits.md), before any secret
    // is checked or storage reached.
    let budget = state
        .service
        .count_token_request(&client.client_id.0, address)
        .await?;
    let tokens = match params.get("grant_type") {
        Some("authorization_code") => {
            state
                .service
                .exchange_code(
                    &client,
                    params.get("code").unwrap_or_default(),
                    params.get("redirect_uri").unwrap_or_default(),
                    params.get("code_verifier").unwrap_or_default(),
                )
                .await?
        }
        Some("refresh_token") => {
            state
                .service
                .refresh(
                    &client,
                    params.get("refresh_token").unwrap_or_default(),
                    params.get("scope"),
                )
                .await?
        }
        None | Some("") => {
            return Err(oauth(
                OAuthErrorCode::InvalidRequest,
                "grant_type is required",
            ));
        }
        Some(_) => {
            return Err(oauth(
                OAuthErrorCode::UnsupportedGrantType,
                "use authorization_code or refresh_token",
            ));
        }
    };
    // The workspace the grant is for, as the gRPC TokenResponse names it,
    // plus its slug (through the service's workspace cache).
    let workspace_slug = state.service.workspace_slug(&tokens.workspace_id).await?;
    let body = TokenBody {
        access_token: tokens.access_token.expose(),
        expires_in: tokens.expires_in,
        refresh_token: tokens.refresh_token.expose(),
        scope: tokens.scopes.to_space_separated(),
        token_type: "Bearer",
        workspace_id: &tokens.workspace_id.0,
        workspace_slug: &workspace_slug,
    };
    let mut response = Json(body).into_response();
    if let Some(budget) = budget {
        crate::rate_limit::set_budget_headers(response.headers_mut(), &budget);
    }
    Ok(response)
}

pub async fn revoke(
    State(state): State<Shared>,
    PeerAddress(address): PeerAddress,
    authorization: AuthorizationHeader,
    content_type: ContentType,
    body: Bytes,
) -> Result<Response, HttpError> {
    let mut params = Params::from_body(&content_type, &body)?;
    let client = params.client_auth(&authorization, address)?;
    let token = params
        .get("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| oauth(OAuthErrorCode::InvalidRequest, "token is required"))?;
    state.service.revoke_oauth_token(&client, token).await?;
    Ok(StatusCode::OK.into_response())
}

/// Callers: a client authenticating with its secret (its own tokens), or
/// an internal service with `Authorization: Bearer <admin token>` (every
/// token).
pub async fn introspect(
    State(state): State<Shared>,
    PeerAddress(address): PeerAddress,
    authorization: AuthorizationHeader,
    content_type: ContentType,
    body: Bytes,
) -> Result<Response, HttpError> {
    let mut params = Params::from_body(&content_type, &body)?;
    // Parsed (base64 and form decoding) once, for the bearer token and
    // else the client's credentials.
    let parsed = authorization.parsed();
    let caller = match parsed {
        Some(Ok(Authorization::Bearer(token))) => {
            if state.admin.check(token).is_err() {
                return Err(oauth(OAuthErrorCode::InvalidClient, "unknown bearer token"));
            }
            None
        }
        parsed => {
            // PKCE alone proves nothing here: introspection needs the
            // client's secret, whatever its type.
            let client = params.client_auth_with(client_credentials_of(parsed)?, address)?;
            if client.client_secret.as_deref().is_none_or(str::is_empty) {
                return Err(oauth(
                    OAuthErrorCode::InvalidClient,
                    "introspection needs the client secret",
                ));
            }
            Some(state.service.authenticate_client(&client).await?)
        }
    };
    let token = params
        .get("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| oauth(OAuthErrorCode::InvalidRequest, "token is required"))?;
    let answer = state.service.introspect(caller.as_deref(), token).await?;
    Ok(Json(IntrospectionBody::of(&answer)).into_response())
}

/// RFC 6749 §5.1's answer, with the grant's workspace, serialized straight
/// from the issued tokens (no intermediate JSON tree; fields in
/// alphabetical order, as the answer has always had them).
#[derive(Serialize)]
struct TokenBody<'a> {
    access_token: &'a str,
    expires_in: i64,
    refresh_token: &'a str,
    scope: String,
    token_type: &'static str,
    workspace_id: &'a str,
    workspace_slug: &'a str,
}

/// RFC 7662 §2.2's answer, serialized straight from the domain's (no
/// intermediate JSON tree). Fields in alphabetical order, as the answer
/// has always had them; an inactive token is `{"active":false}` alone.
#[derive(Serialize)]
#[serde(untagged)]
enum IntrospectionBody<'a> {
    Active(ActiveToken<'a>),
    Inactive { active: bool },
}

#[derive(Serialize)]
struct ActiveToken<'a> {
    active: bool,
    client_id: &'a str,
    exp: i64,
    iat: i64,
    scope: String,
    sub: &'a str,
    token_type: &'static str,
    workspace_id: &'a str,
}

impl<'a> IntrospectionBody<'a> {
    fn of(answer: &'a Introspection) -> Self {
        match &answer.token {
            Some(t) if answer.active => IntrospectionBody::Active(ActiveToken {
                active: true,
                client_id: &t.client_id.0,
                exp: t.expires_at.as_secs(),
                iat: t.created_at.as_secs(),
                scope: t.scopes.to_space_separated(),
                sub: &t.user_id.0,
                token_type: match t.kind {
                    TokenKind::Access => "Bearer",
                    TokenKind::Refresh => "refresh_token",
                },
                workspace_id: &t.workspace_id.0,
            }),
            _ => IntrospectionBody::Inactive { active: false },
        }
    }
}

fn oauth(code: OAuthErrorCode, message: &str) -> HttpError {
    HttpError(Error::OAuth(code, message.to_owned()))
}

/// RFC 6749 §5.1 (and RFC 7009, RFC 7662, whose answers carry token
/// data): no cache may keep any response of these routes, errors and
/// rejections by the framework (405, 413) included. A layer on the routes,
/// so no handler can forget it (`cors::CorsLayer::token_routes`).
pub(crate) fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}
