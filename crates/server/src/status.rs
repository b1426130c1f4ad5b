//! The one place domain errors become `tonic::Status`: the domain's table
//! gives the code, the reason travels as `google.rpc.ErrorInfo`, and a wait
//! before retrying as `google.rpc.RetryInfo`. Internal details are logged
//! here and never returned.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use velocity_domain::{Error, ErrorClass};

pub use velocity_proto::ERROR_DOMAIN;

/// `google.rpc.ErrorInfo.metadata` key of the error table's `error` string.
pub const ERROR_METADATA_KEY: &str = "error";

pub fn code_of(class: ErrorClass) -> Code {
    Code::from_i32(class.grpc_code())
}

/// Outages and bugs are logged with their detail, which callers never see.
fn log_if_internal(err: &Error) {
    match err {
        Error::Unavailable(source) => tracing::warn!(error = %source, "storage unavailable"),
        Error::Internal(detail) => tracing::error!(error = %detail, "internal error"),
        _ => {}
    }
}

pub fn to_status(err: Error) -> Status {
    log_if_internal(&err);
    let reason = err.reason();
    // The table's `error` string rides along, so the HTTP gateway (and any
    // caller) can tell `invalid_scope` from `invalid_request`, which share
    // INVALID_ARGUMENT.
    let metadata = std::collections::HashMap::from([(
        ERROR_METADATA_KEY.to_owned(),
        err.class().error_code().to_owned(),
    )]);
    let mut details = ErrorDetails::with_error_info(reason.as_str(), ERROR_DOMAIN, metadata);
    if let Some(secs) = err.retry_after_secs() {
        details.set_retry_info(Some(Duration::from_secs(secs)));
    }
    Status::with_error_details(code_of(err.class()), err.public_message(), details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use velocity_domain::error::OAuthErrorCode;
    use velocity_domain::{Reason, StoreError};

    #[test]
    fn classes_map_to_codes_and_reasons_travel() {
        let cases = [
            (
                Error::Unauthenticated(Reason::CredentialRevoked),
                Code::Unauthenticated,
            ),
            (
                Error::PermissionDenied(Reason::ScopeMissing),
                Code::PermissionDenied,
            ),
            (Error::invalid("bad"), Code::InvalidArgument),
            (Error::NotFound("key"), Code::NotFound),
            (Error::AlreadyExists("workspace slug"), Code::AlreadyExists),
            (
                Error::Unavailable(StoreError::Unavailable("pool timed out".into())),
                Code::Unavailable,
            ),
            (Error::Internal("boom at line 3".into()), Code::Internal),
            (
                Error::OAuth(OAuthErrorCode::InvalidClient, "unknown client".into()),
                Code::Unauthenticated,
            ),
            (
                Error::OAuth(OAuthErrorCode::InvalidGrant, "used".into()),
                Code::FailedPrecondition,
            ),
        ];
        for (err, code) in cases {
            let reason = err.reason();
            let class = err.class();
            let status = to_status(err);
            assert_eq!(status.code(), code);
            let info = status.get_details_error_info().unwrap();
            assert_eq!(info.reason, reason.as_str());
            assert_eq!(info.domain, ERROR_DOMAIN);
            assert_eq!(
                info.metadata.get(ERROR_METADATA_KEY).map(String::as_str),
                Some(class.error_code())
            );
        }
    }

    #[test]
    fn too_many_attempts_is_resource_exhausted_with_retry_info() {
        let status = to_status(Error::TooManyAttempts {
            retry_after_secs: 12,
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "TOO_MANY_ATTEMPTS"
        );
        assert_eq!(
            status.get_details_retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(12))
        );
        assert!(
            to_status(Error::invalid("x"))
                .get_details_retry_info()
                .is_none()
        );
    }

    #[test]
    fn internals_are_not_returned() {
        let status = to_status(Error::Unavailable(StoreError::Unavailable(
            "connect to 10.0.0.1 refused".into(),
        )));
        assert!(!status.message().contains("10.0.0.1"));
        let status = to_status(Error::Internal("secret detail".into()));
        assert!(!status.message().contains("secret"));
    }
}
