//! `GET/POST /oauth/consent`: the page a signed-in user approves an app on.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use velocity_domain::oauth::{AuthorizationRequest, AuthorizeError, ValidatedAuthorization};
use velocity_domain::{Error, ErrorClass, Principal, PrincipalKind, Reason, UserId};

use crate::authorization::AuthorizationHeader;
use crate::error::{log_if_internal, status_of};
use crate::page::{consent_page, error_page};
use crate::params::Params;
use crate::web_session::return_path;
use crate::{AppState, Shared};

/// This page's path, the start of the return path after signing in.
const CONSENT_PATH: &str = "/oauth/consent";

/// What a signed-out user without a sign-in URL to go to is told.
const SIGN_IN: &str = "Sign in to Velocity in this browser, then open this page again.";

pub async fn show(
    State(state): State<Shared>,
    RawQuery(query): RawQuery,
    authorization: AuthorizationHeader,
    headers: HeaderMap,
) -> Response {
    let query = query.unwrap_or_default();
    // A GET only: a signed-out browser is sent to sign in and back here.
    let back = return_path(CONSENT_PATH, Some(&query));
    let consent = match Params::from_form(query.as_bytes()) {
        Ok(params) => {
            Consent::begin(&state, &params, &authorization, &headers, back.as_deref()).await
        }
        Err(_) => Err(unreadable(
            "A parameter was given more than once, or there were too many.",
        )),
    };
    let Consent {
        request,
        user,
        session,
    } = match consent {
        Ok(consent) => consent,
        Err(response) => return response,
    };
    let workspaces = match state.service.consent_workspaces(&user).await {
        Ok(list) => list,
        Err(err) => return failure_page(err),
    };
    let registered_by = match state.service.app_registrant(&request.app).await {
        Ok(name) => name,
        Err(err) => return failure_page(err),
    };
    let now = state.service.clock().now().as_secs();
    let csrf = state.csrf.issue(user.as_str(), &session, now);
    consent_page(&request, &registered_by, &workspaces, &csrf)
}

pub async fn submit(
    State(state): State<Shared>,
    authorization: AuthorizationHeader,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(mut params) = Params::from_form(&body) else {
        return unreadable("A form field was given more than once, or there were too many.");
    };
    let Consent {
        request,
        user,
        session,
    } = match Consent::begin(&state, &params, &authorization, &headers, None).await {
        Ok(consent) => consent,
        Err(response) => return response,
    };
    let now = state.service.clock().now().as_secs();
    let csrf = params.take("csrf_token").unwrap_or_default();
    if !state.csrf.verify(&csrf, user.as_str(), &session, now) {
        return error_page(
            StatusCode::FORBIDDEN,
            "This form has expired or was not issued to you. Go back to the app and start again.",
        );
    }
    match params.get("decision") {
        Some("deny") => Redirect::to(&state.service.deny(&request)).into_response(),
        Some("approve") => {
            let workspace = params.get("workspace").unwrap_or_default();
            match state.service.approve(&user, &request, workspace).await {
                Ok(location) => Redirect::to(&location).into_response(),
                Err(err) => failure_page(err),
            }
        }
        _ => error_page(StatusCode::BAD_REQUEST, "Choose Approve or Deny."),
    }
}

/// What both halves of the flow start from: a valid request and the
/// signed-in user, with the session the CSRF token is bound to.
struct Consent {
    request: ValidatedAuthorization,
    user: UserId,
    session: String,
}

impl Consent {
    async fn begin(
        state: &AppState,
        params: &Params<'_>,
        authorization: &AuthorizationHeader,
        headers: &HeaderMap,
        back: Option<&str>,
    ) -> Result<Consent, Response> {
        let request = checked(state, params).await?;
        let principal = match signed_in(state, authorization, headers).await {
            Ok(principal) => principal,
            Err(SignedOut::Refused(response)) => return Err(response),
            Err(SignedOut::Absent(message)) => {
                return Err(match (&state.web.sign_in, back) {
                    (Some(sign_in), Some(back)) => {
                        Redirect::to(sign_in.location(back).as_str()).into_response()
                    }
                    _ => error_page(StatusCode::UNAUTHORIZED, &format!("{message} {SIGN_IN}")),
                });
            }
        };
        let user = principal
            .user_id
            .ok_or_else(|| error_page(StatusCode::UNAUTHORIZED, SIGN_IN))?;
        Ok(Consent {
            request,
            user,
            session: principal.credential_id,
        })
    }
}

fn unreadable(message: &str) -> Response {
    error_page(StatusCode::BAD_REQUEST, message)
}

/// Validates the request; errors become our page or a redirect to the client.
async fn checked(
    state: &AppState,
    params: &Params<'_>,
) -> Result<ValidatedAuthorization, Response> {
    let field = |name: &str| params.get(name).map(str::to_owned);
    let request = AuthorizationRequest {
        client_id: field("client_id"),
        redirect_uri: field("redirect_uri"),
        response_type: field("response_type"),
        scope: field("scope"),
        state: field("state"),
        code_challenge: field("code_challenge"),
        code_challenge_method: field("code_challenge_method"),
    };
    match state.service.check_authorization(&request).await {
        Ok(Ok(request)) => Ok(request),
        Ok(Err(AuthorizeError::Page(message))) => Err(error_page(StatusCode::BAD_REQUEST, message)),
        Ok(Err(AuthorizeError::Redirect(redirect))) => {
            Err(Redirect::to(&redirect.location()).into_response())
        }
        Err(err) => Err(failure_page(err)),
    }
}

/// Why there is no signed-in user.
enum SignedOut {
    /// No session, or one that is expired or invalid: sign in (again).
    Absent(&'static str),
    /// A credential that is not a session, or an outage: a page.
    Refused(Response),
}

/// The signed-in user: a session token from `Authorization: Bearer`, else
/// the `@supabase/ssr` or legacy cookie (`web_session`); never the query
/// string. Keys and app tokens cannot consent. Any other `Authorization` (a
/// proxy's Basic, say) leaves the cookies to decide.
async fn signed_in(
    state: &AppState,
    authorization: &AuthorizationHeader,
    headers: &HeaderMap,
) -> Result<Principal, SignedOut> {
    let token = authorization
        .bearer()
        .map(str::to_owned)
        .or_else(|| state.web.token(headers));
    let Some(token) = token else {
        return Err(SignedOut::Absent("You are not signed in."));
    };
    match state.service.authenticate(&token, None, &[]).await {
        Ok(principal) if principal.kind == PrincipalKind::Session => Ok(principal),
        Ok(_) => Err(SignedOut::Refused(error_page(
            StatusCode::UNAUTHORIZED,
            "Only a signed-in user can approve an app.",
        ))),
        Err(err) if err.class() == ErrorClass::Unauthenticated => {
            Err(SignedOut::Absent("Your session has expired."))
        }
        Err(err) => Err(SignedOut::Refused(failure_page(err))),
    }
}

/// A domain error as a page: the status from the domain's table (an outage
/// 503, a bad request 400, a bug 500), internals logged and never shown.
fn failure_page(err: Error) -> Response {
    log_if_internal(&err);
    let class = err.class();
    let message = match &err {
        Error::PermissionDenied(Reason::NotAMember) => {
            "You are not a member of that workspace.".to_owned()
        }
        _ if class.is_internal() => {
            "Something went wrong on our side. Try again in a moment.".to_owned()
        }
        other => other.public_message(),
    };
    error_page(status_of(class), &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_take_their_status_from_the_table_and_hide_internals() {
        use axum::body::to_bytes;
        use velocity_domain::StoreError;
        let cases = [
            (
                Error::Unavailable(StoreError::Unavailable("10.0.0.7 refused".into())),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                Error::invalid("workspace is required"),
                StatusCode::BAD_REQUEST,
            ),
            (
                Error::PermissionDenied(Reason::NotAMember),
                StatusCode::FORBIDDEN,
            ),
            (
                Error::Internal("row 12 is corrupt".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (err, status) in cases {
            let response = failure_page(err);
            assert_eq!(response.status(), status);
            let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
            let html = String::from_utf8(body.to_vec()).unwrap();
            assert!(
                !html.contains("10.0.0.7") && !html.contains("row 12"),
                "{html}"
            );
        }
    }
}
