//! The one place domain errors become HTTP responses:
//! `{"error": "...", "error_description": "...", "reason": "..."}`, with the
//! status and `error` from the domain's table.

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
    StatusCode::from_u16(class.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Outages and bugs are logged with their detail, which callers never see.
pub(crate) fn log_if_internal(err: &Error) {
    match err {
        Error::Unavailable(source) => tracing::warn!(error = %source, "storage unavailable"),
        Error::Internal(detail) => tracing::error!(error = %detail, "internal error"),
        _ => {}
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let err = self.0;
        log_if_internal(&err);
        let class = err.class();
        let status = status_of(class);
        let body = serde_json::json!({
            "error": class.error_code(),
            "error_description": err.public_message(),
            "reason": err.reason().as_str(),
        });
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = err.retry_after_secs() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6749 §5.2: a failed client authentication challenges for
            // the scheme clients authenticate with.
            let challenge = if class == ErrorClass::InvalidClient {
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
            (
                Error::TooManyAttempts {
                    retry_after_secs: 7,
                },
                StatusCode::TOO_MANY_REQUESTS,
            ),
        ];
        for (err, status) in cases {
            let response = HttpError(err).into_response();
            assert_eq!(response.status(), status);
            if status == StatusCode::UNAUTHORIZED {
                assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
            }
            let retry_after = response.headers().get(header::RETRY_AFTER);
            if status == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(retry_after.map(|v| v.to_str().unwrap()), Some("7"));
            } else {
                assert!(retry_after.is_none());
            }
        }
    }
}
