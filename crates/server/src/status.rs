//! The one place domain errors become `tonic::Status`: a class picks the
//! code, the reason travels as `google.rpc.ErrorInfo`. Internal details are
//! logged here and never returned.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use velocity_domain::{Error, ErrorClass};

pub use velocity_proto::ERROR_DOMAIN;

pub fn code_of(class: ErrorClass) -> Code {
    match class {
        ErrorClass::Unauthenticated => Code::Unauthenticated,
        ErrorClass::PermissionDenied => Code::PermissionDenied,
        ErrorClass::InvalidArgument => Code::InvalidArgument,
        ErrorClass::NotFound => Code::NotFound,
        ErrorClass::AlreadyExists => Code::AlreadyExists,
        ErrorClass::FailedPrecondition => Code::FailedPrecondition,
        ErrorClass::Unavailable => Code::Unavailable,
        ErrorClass::Internal => Code::Internal,
    }
}

pub fn to_status(err: Error) -> Status {
    match &err {
        Error::Unavailable(source) => tracing::warn!(error = %source, "storage unavailable"),
        Error::Internal(detail) => tracing::error!(error = %detail, "internal error"),
        _ => {}
    }
    let reason = err.reason();
    Status::with_error_details(
        code_of(err.class()),
        err.public_message(),
        ErrorDetails::with_error_info(
            reason.as_str(),
            ERROR_DOMAIN,
            std::collections::HashMap::new(),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
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
        ];
        for (err, code) in cases {
            let reason = err.reason();
            let status = to_status(err);
            assert_eq!(status.code(), code);
            let info = status.get_details_error_info().unwrap();
            assert_eq!(info.reason, reason.as_str());
            assert_eq!(info.domain, ERROR_DOMAIN);
        }
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
