//! The one place domain errors become HTTP responses:
//! `{"error": "...", "error_description": "...", "reason": "..."}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use velocity_domain::{Error, ErrorClass};

#[derive(Debug)]
pub struct HttpError(pub Error);

impl From<Error> for HttpError {
    fn from(err: Error) -> Self {
        HttpError(err)
    }
}

pub fn status_of(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorClass::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorClass::InvalidArgument | ErrorClass::FailedPrecondition => StatusCode::BAD_REQUEST,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::AlreadyExists => StatusCode::CONFLICT,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The `error` code of the JSON body: the OAuth code for OAuth errors,
/// else a snake_case name of the class.
fn error_code(err: &Error) -> &'static str {
    match err {
        Error::OAuth(code, _) => code.as_str(),
        other => match other.class() {
            ErrorClass::Unauthenticated => "unauthenticated",
            ErrorClass::PermissionDenied => "permission_denied",
            ErrorClass::InvalidArgument => "invalid_request",
            ErrorClass::NotFound => "not_found",
            ErrorClass::AlreadyExists => "already_exists",
            ErrorClass::FailedPrecondition => "failed_precondition",
            ErrorClass::Unavailable => "temporarily_unavailable",
            ErrorClass::Internal => "server_error",
        },
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let err = self.0;
        match &err {
            Error::Unavailable(source) => tracing::warn!(error = %source, "storage unavailable"),
            Error::Internal(detail) => tracing::error!(error = %detail, "internal error"),
            _ => {}
        }
        let status = match &err {
            // RFC 6749 §5.2: invalid_client is 401; the other grant errors 400.
            Error::OAuth(velocity_domain::error::OAuthErrorCode::InvalidClient, _) => {
                StatusCode::UNAUTHORIZED
            }
            Error::OAuth(..) => StatusCode::BAD_REQUEST,
            other => status_of(other.class()),
        };
        let body = serde_json::json!({
            "error": error_code(&err),
            "error_description": err.public_message(),
            "reason": err.reason().as_str(),
        });
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::UNAUTHORIZED {
            let challenge = if matches!(err, Error::OAuth(..)) {
                "Basic realm=\"velocity\""
            } else {
                "Bearer"
            };
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use velocity_domain::Reason;
    use velocity_domain::error::OAuthErrorCode;

    #[test]
    fn statuses() {
        let cases = [
            (
                Error::Unauthenticated(Reason::CredentialUnknown),
                StatusCode::UNAUTHORIZED,
            ),
            (
                Error::PermissionDenied(Reason::ScopeMissing),
                StatusCode::FORBIDDEN,
            ),
            (Error::NotFound("route"), StatusCode::NOT_FOUND),
            (
                Error::OAuth(OAuthErrorCode::InvalidClient, "x".into()),
                StatusCode::UNAUTHORIZED,
            ),
            (
                Error::OAuth(OAuthErrorCode::InvalidGrant, "x".into()),
                StatusCode::BAD_REQUEST,
            ),
            (
                Error::Internal("detail".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (err, status) in cases {
            let response = HttpError(err).into_response();
            assert_eq!(response.status(), status);
            if status == StatusCode::UNAUTHORIZED {
                assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
            }
        }
    }
}
