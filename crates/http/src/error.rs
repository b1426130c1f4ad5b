//! The one place domain errors become HTTP responses:
//! `{"error": "...", "error_description": "...", "reason": "..."}`, with the
//! status and `error` from the domain's table.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use velocity_domain::{Error, ErrorClass, Reason};

use crate::gateway::RpcFailure;

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
        let mut response = error_response(err.class(), err.json_body(), err.retry_after_secs());
        if let Error::RateLimited(refused) = &err {
            crate::rate_limit::set_budget_headers(response.headers_mut(), &refused.budget());
        }
        response
    }
}

/// A refusal an RPC returned through the gateway, answered as if the
/// domain error behind it had reached this adapter directly: the class is
/// the table's row with the status's gRPC code and the `error` string the
/// status carries (the first row of that code without one), so the HTTP
/// status, body and headers are the same as on every other route. The
/// message is the RPC's public one; codes the table never sends (a bug,
/// or tonic's own) are an internal error whose detail stays in the log.
pub fn rpc_failure(failure: RpcFailure) -> Response {
    let by_code = |c: &ErrorClass| c.grpc_code() == failure.code;
    let class = ErrorClass::ALL
        .into_iter()
        .filter(by_code)
        .find(|c| failure.error.as_deref() == Some(c.error_code()))
        .or_else(|| ErrorClass::ALL.into_iter().find(by_code));
    let (class, description, reason) = match (class, failure.reason.as_deref()) {
        (Some(class), Some(reason)) if !class.is_internal() => (class, failure.message, reason),
        (Some(class), reason) if class == ErrorClass::Unavailable => (
            class,
            Reason::StorageUnavailable.description().to_owned(),
            reason.unwrap_or(Reason::StorageUnavailable.as_str()),
        ),
        _ => {
            tracing::error!(code = failure.code, message = %failure.message, "an RPC failed outside the error table");
            (
                ErrorClass::Internal,
                Reason::Internal.description().to_owned(),
                Reason::Internal.as_str(),
            )
        }
    };
    let body = serde_json::json!({
        "error": class.error_code(),
        "error_description": description,
        "reason": reason,
    });
    error_response(class, body, failure.retry_after_secs)
}

fn error_response(
    class: ErrorClass,
    body: serde_json::Value,
    retry_after: Option<u64>,
) -> Response {
    let status = status_of(class);
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(secs) = retry_after {
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

/// Error responses the framework makes itself (405 with `Allow`, 413 from
/// the body limit, 400/415 rejections), which carry an empty or plain-text
/// body, become `{"error","error_description","reason"}` through the same
/// table, keeping their status and headers (`Allow`, `Cache-Control`). Our
/// own JSON errors and the consent page's HTML error pages pass unchanged.
pub fn framework_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("application/json") || content_type.starts_with("text/html") {
        return response;
    }
    let err = match status {
        StatusCode::NOT_FOUND => Error::NotFound("route"),
        StatusCode::METHOD_NOT_ALLOWED => Error::invalid("method not allowed; see Allow"),
        StatusCode::PAYLOAD_TOO_LARGE => Error::invalid("the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Error::invalid("unsupported content type"),
        s if s.is_server_error() => Error::Internal(format!("framework error {s}")),
        _ => Error::invalid("malformed request"),
    };
    let (parts, _) = response.into_parts();
    let mut rewritten = HttpError(err).into_response();
    *rewritten.status_mut() = status;
    // The framework's headers win (`Allow`, the routes' own layers), the
    // body's own (`Content-Type`, length) come from the new body.
    let mut headers = parts.headers;
    headers.remove(header::CONTENT_TYPE);
    headers.remove(header::CONTENT_LENGTH);
    for (name, value) in rewritten.headers() {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    *rewritten.headers_mut() = headers;
    rewritten
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
            assert!(!response.headers().contains_key("x-ratelimit-limit"));
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

    #[test]
    fn over_a_budget_is_429_with_retry_after_and_the_budget() {
        let refused = velocity_domain::rate_limit::RateLimited {
            limit: 60,
            retry_after: std::time::Duration::from_millis(1500),
            reset_secs: 60,
        };
        let response = HttpError(Error::RateLimited(refused)).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
        assert_eq!(header("retry-after"), "2");
        assert_eq!(header("x-ratelimit-limit"), "60");
        assert_eq!(header("x-ratelimit-remaining"), "0");
        assert_eq!(header("x-ratelimit-reset"), "60");
    }
}

#[cfg(test)]
mod rpc_failure_tests {
    use axum::body::to_bytes;
    use axum::http::HeaderMap;

    use super::*;

    async fn answer(failure: RpcFailure) -> (StatusCode, HeaderMap, serde_json::Value) {
        let response = rpc_failure(failure);
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), 4096).await.unwrap();
        (status, headers, serde_json::from_slice(&body).unwrap())
    }

    fn failure(code: i32, reason: &str, error: Option<&str>) -> RpcFailure {
        RpcFailure {
            code,
            message: "public message".into(),
            reason: Some(reason.into()),
            error: error.map(str::to_owned),
            retry_after_secs: None,
        }
    }

    #[tokio::test]
    async fn the_table_row_comes_from_the_code_and_error_string() {
        let (status, headers, body) =
            answer(failure(16, "CREDENTIAL_MISSING", Some("unauthenticated"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(
            body,
            serde_json::json!({"error": "unauthenticated", "error_description": "public message", "reason": "CREDENTIAL_MISSING"})
        );
        // INVALID_ARGUMENT is several rows; the error string picks one.
        let (status, _, body) = answer(failure(3, "SCOPE_UNKNOWN", Some("invalid_scope"))).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_scope"))
        );
        // Without it, the first row of the code.
        let (status, _, body) = answer(failure(7, "NOT_APP_MANAGER", None)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("permission_denied"))
        );
        let (status, headers, _) = answer(RpcFailure {
            retry_after_secs: Some(9),
            ..failure(8, "TOO_MANY_ATTEMPTS", Some("too_many_attempts"))
        })
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[header::RETRY_AFTER], "9");
    }

    #[tokio::test]
    async fn codes_outside_the_table_and_internals_say_nothing() {
        for code in [2, 4, 12, 13] {
            let (status, _, body) = answer(RpcFailure {
                code,
                message: "detail from 10.0.0.7".into(),
                ..RpcFailure::default()
            })
            .await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{code}");
            assert_eq!(body["reason"], "INTERNAL");
            assert!(!body.to_string().contains("10.0.0.7"));
        }
        let (status, _, body) = answer(RpcFailure {
            message: "pool timed out at 10.0.0.7".into(),
            ..failure(14, "STORAGE_UNAVAILABLE", Some("temporarily_unavailable"))
        })
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!body.to_string().contains("10.0.0.7"));
    }
}
