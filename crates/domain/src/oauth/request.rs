//! Validating an authorization request (RFC 6749 §4.1.1, §4.1.2.1, RFC 7636).
//!
//! Until the client and its redirect URI are verified, errors are shown on
//! our own page: redirecting to an unverified URI would make us an open
//! redirector. After that, errors go back to the client.

use crate::error::OAuthErrorCode;
use crate::oauth::app::OAuthApp;
use crate::oauth::pkce;
use crate::scope::ScopeSet;

pub(crate) const MAX_STATE_LEN: usize = 1024;

/// The query (GET) or form (POST) parameters, each at most once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorizationRequest {
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub response_type: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthorizeError {
    /// Shown on our own error page, never redirected.
    Page(&'static str),
    /// Sent back to the client's verified redirect URI.
    Redirect(RedirectError),
}

/// An error for the client, to its verified redirect URI, as `error`,
/// `error_description` and `state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectError {
    pub redirect_uri: String,
    pub error: OAuthErrorCode,
    pub description: String,
    pub state: Option<String>,
    /// RFC 9207 `iss`: set by the service (`check_authorization`, `approve`,
    /// `deny`) from its configured issuer, so every redirect carries it.
    pub issuer: Option<String>,
}

impl RedirectError {
    /// Where a browser should be sent.
    pub fn location(&self) -> String {
        let mut params = vec![
            ("error", self.error.as_str()),
            ("error_description", self.description.as_str()),
        ];
        if let Some(state) = &self.state {
            params.push(("state", state));
        }
        if let Some(issuer) = &self.issuer {
            params.push(("iss", issuer));
        }
        redirect_with(&self.redirect_uri, &params)
    }
}

/// A request whose every part has been checked against the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedAuthorization {
    pub app: OAuthApp,
    pub redirect_uri: String,
    pub scopes: ScopeSet,
    pub state: Option<String>,
    pub code_challenge: String,
}

pub(crate) fn validate_authorization(
    request: &AuthorizationRequest,
    app: Option<&OAuthApp>,
) -> Result<ValidatedAuthorization, AuthorizeError> {
    let Some(app) = app else {
        return Err(AuthorizeError::Page(
            if request.client_id.as_deref().is_none_or(str::is_empty) {
                "The request has no client_id."
            } else {
                "No app is registered with this client_id."
            },
        ));
    };
    let redirect_uri = match request.redirect_uri.as_deref() {
        None | Some("") => return Err(AuthorizeError::Page("The request has no redirect_uri.")),
        Some(uri) if !app.has_redirect_uri(uri) => {
            return Err(AuthorizeError::Page(
                "The redirect_uri is not registered for this app (it must match exactly).",
            ));
        }
        Some(uri) => uri.to_owned(),
    };
    let state = match request.state.as_deref() {
        Some(s) if s.len() > MAX_STATE_LEN => {
            return Err(redirect(
                &redirect_uri,
                None,
                OAuthErrorCode::InvalidRequest,
                "state is too long",
            ));
        }
        Some("") | None => None,
        Some(s) => Some(s.to_owned()),
    };
    let fail =
        |error, description: &str| redirect(&redirect_uri, state.clone(), error, description);
    match request.response_type.as_deref() {
        Some("code") => {}
        None | Some("") => {
            return Err(fail(
                OAuthErrorCode::InvalidRequest,
                "response_type is required",
            ));
        }
        Some(_) => {
            return Err(fail(
                OAuthErrorCode::UnsupportedResponseType,
                "only response_type=code is supported",
            ));
        }
    }
    let code_challenge = match request.code_challenge.as_deref() {
        None | Some("") => {
            return Err(fail(
                OAuthErrorCode::InvalidRequest,
                "PKCE is required: send code_challenge",
            ));
        }
        Some(c) => c.to_owned(),
    };
    match request.code_challenge_method.as_deref() {
        Some("S256") => {}
        Some("plain") | None | Some("") => {
            return Err(fail(
                OAuthErrorCode::InvalidRequest,
                "code_challenge_method must be S256",
            ));
        }
        Some(_) => {
            return Err(fail(
                OAuthErrorCode::InvalidRequest,
                "code_challenge_method must be S256",
            ));
        }
    }
    if !pkce::is_valid_challenge(&code_challenge) {
        return Err(fail(
            OAuthErrorCode::InvalidRequest,
            "code_challenge must be 43 base64url characters",
        ));
    }
    let scopes = match request
        .scope
        .as_deref()
        .map(ScopeSet::parse_space_separated)
    {
        None => return Err(fail(OAuthErrorCode::InvalidScope, "scope is required")),
        Some(Err(_)) => return Err(fail(OAuthErrorCode::InvalidScope, "unknown scope")),
        Some(Ok(s)) if s.is_empty() => {
            return Err(fail(OAuthErrorCode::InvalidScope, "scope is required"));
        }
        Some(Ok(s)) if !s.is_subset(app.allowed_scopes) => {
            return Err(fail(
                OAuthErrorCode::InvalidScope,
                "scope exceeds what the app may request",
            ));
        }
        Some(Ok(s)) => s,
    };
    Ok(ValidatedAuthorization {
        app: app.clone(),
        redirect_uri,
        scopes,
        state,
        code_challenge,
    })
}

fn redirect(
    redirect_uri: &str,
    state: Option<String>,
    error: OAuthErrorCode,
    description: &str,
) -> AuthorizeError {
    AuthorizeError::Redirect(RedirectError {
        redirect_uri: redirect_uri.to_owned(),
        error,
        description: description.to_owned(),
        state,
        issuer: None,
    })
}

/// Appends query parameters to a registered redirect URI, keeping its own.
pub(crate) fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(mut url) => {
            {
                let mut pairs = url.query_pairs_mut();
                for (k, v) in params {
                    pairs.append_pair(k, v);
                }
            }
            url.to_string()
        }
        // Registered URIs always parse; fall back to plain concatenation.
        Err(_) => {
            let sep = if redirect_uri.contains('?') { '&' } else { '?' };
            let query: Vec<String> = params
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                    )
                })
                .collect();
            format!("{redirect_uri}{sep}{}", query.join("&"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::oauth::app::{ClientId, ClientType};

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn app() -> OAuthApp {
        OAuthApp {
            client_id: ClientId("app-1".into()),
            name: "Timetracker".into(),
            client_type: ClientType::Public,
            secret_hash: None,
            redirect_uris: vec!["https://tt.example.com/cb".into()],
            allowed_scopes: ScopeSet::parse(["issues:read", "issues:write", "user:read"]).unwrap(),
            previous_secret: None,
            workspace_id: None,
            created_by: None,
            created_at: Timestamp(0),
        }
    }

    fn request() -> AuthorizationRequest {
        AuthorizationRequest {
            client_id: Some("app-1".into()),
            redirect_uri: Some("https://tt.example.com/cb".into()),
            response_type: Some("code".into()),
            scope: Some("issues:read user:read".into()),
            state: Some("xyz".into()),
            code_challenge: Some(CHALLENGE.into()),
            code_challenge_method: Some("S256".into()),
        }
    }

    fn redirect_error(req: AuthorizationRequest) -> (OAuthErrorCode, Option<String>) {
        match validate_authorization(&req, Some(&app())) {
            Err(AuthorizeError::Redirect(RedirectError {
                error,
                state,
                redirect_uri,
                ..
            })) => {
                assert_eq!(redirect_uri, "https://tt.example.com/cb");
                (error, state)
            }
            other => panic!("expected a redirect error, got {other:?}"),
        }
    }

    #[test]
    fn a_good_request_validates() {
        let ok = validate_authorization(&request(), Some(&app())).unwrap();
        assert_eq!(ok.scopes.to_space_separated(), "issues:read user:read");
        assert_eq!(ok.state.as_deref(), Some("xyz"));
    }

    #[test]
    fn unknown_client_or_unregistered_redirect_is_a_page_never_a_redirect() {
        assert!(matches!(
            validate_authorization(&request(), None),
            Err(AuthorizeError::Page(_))
        ));
        for uri in [
            "https://tt.example.com/cb/",
            "https://tt.example.com/cb?x=1",
            "https://tt.example.com/c",
            "https://evil.example.com/cb",
            "HTTPS://tt.example.com/cb",
        ] {
            let req = AuthorizationRequest {
                redirect_uri: Some(uri.into()),
                ..request()
            };
            assert!(
                matches!(
                    validate_authorization(&req, Some(&app())),
                    Err(AuthorizeError::Page(_))
                ),
                "{uri}"
            );
        }
        let req = AuthorizationRequest {
            redirect_uri: None,
            ..request()
        };
        assert!(matches!(
            validate_authorization(&req, Some(&app())),
            Err(AuthorizeError::Page(_))
        ));
    }

    #[test]
    fn other_errors_redirect_with_state() {
        let cases = [
            (
                AuthorizationRequest {
                    response_type: Some("token".into()),
                    ..request()
                },
                OAuthErrorCode::UnsupportedResponseType,
            ),
            (
                AuthorizationRequest {
                    response_type: None,
                    ..request()
                },
                OAuthErrorCode::InvalidRequest,
            ),
            (
                AuthorizationRequest {
                    code_challenge: None,
                    ..request()
                },
                OAuthErrorCode::InvalidRequest,
            ),
            (
                AuthorizationRequest {
                    code_challenge_method: Some("plain".into()),
                    ..request()
                },
                OAuthErrorCode::InvalidRequest,
            ),
            (
                AuthorizationRequest {
                    code_challenge_method: None,
                    ..request()
                },
                OAuthErrorCode::InvalidRequest,
            ),
            (
                AuthorizationRequest {
                    code_challenge: Some("short".into()),
                    ..request()
                },
                OAuthErrorCode::InvalidRequest,
            ),
            (
                AuthorizationRequest {
                    scope: None,
                    ..request()
                },
                OAuthErrorCode::InvalidScope,
            ),
            (
                AuthorizationRequest {
                    scope: Some("issues:read teleport".into()),
                    ..request()
                },
                OAuthErrorCode::InvalidScope,
            ),
            (
                AuthorizationRequest {
                    scope: Some("workspace:admin".into()),
                    ..request()
                },
                OAuthErrorCode::InvalidScope,
            ),
        ];
        for (req, code) in cases {
            assert_eq!(redirect_error(req), (code, Some("xyz".into())));
        }
    }

    #[test]
    fn redirect_keeps_the_registered_query() {
        let err = RedirectError {
            redirect_uri: "https://tt.example.com/cb?tenant=7".into(),
            error: OAuthErrorCode::AccessDenied,
            description: "the user said no".into(),
            state: Some("a b&c".into()),
            issuer: Some("https://auth.example.com".into()),
        };
        assert_eq!(
            err.location(),
            "https://tt.example.com/cb?tenant=7&error=access_denied&error_description=the+user+said+no&state=a+b%26c&iss=https%3A%2F%2Fauth.example.com"
        );
    }
}
