// Over 400 lines on purpose: every public reason and the one error-to-status table in one place.
//! The domain's one error type, and the one table from its classes to
//! transport codes: the gRPC code `server` sends, the HTTP status and
//! `error` string `http` sends. Numbers and strings only, no transport types.

use std::fmt;

use crate::rate_limit::RateLimited;

/// Machine-readable reason for a refusal. The names are the public
/// `velocity.auth.v1.FailureReason` values. A new one is listed in
/// [`Reason::ALL`] too (the metrics index by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    CredentialMissing,
    CredentialMalformed,
    CredentialChecksumMismatch,
    CredentialUnknown,
    CredentialExpired,
    CredentialRevoked,
    CredentialKindNotAccepted,
    SessionInvalid,
    SessionAnonymous,
    WorkspaceMismatch,
    WorkspaceUnknown,
    NotAMember,
    ScopeMissing,
    ScopeExceedsGrantor,
    ScopeUnknown,
    RoleInsufficient,
    NotKeyOwner,
    NotAppManager,
    NotGrantHolder,
    OriginNotAllowed,
    AdminTokenInvalid,
    InvalidArgument,
    NotFound,
    AlreadyExists,
    StorageUnavailable,
    Internal,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    ScopeWrongKind,
    ScopeExceedsGrant,
    TooManyAttempts,
    RateLimited,
}

impl Reason {
    /// Every reason, in declaration order: `reason as usize` indexes it (the
    /// metrics count by it, `stats.rs`). A new reason goes here too.
    pub const ALL: [Reason; 33] = [
        Reason::CredentialMissing,
        Reason::CredentialMalformed,
        Reason::CredentialChecksumMismatch,
        Reason::CredentialUnknown,
        Reason::CredentialExpired,
        Reason::CredentialRevoked,
        Reason::CredentialKindNotAccepted,
        Reason::SessionInvalid,
        Reason::SessionAnonymous,
        Reason::WorkspaceMismatch,
        Reason::WorkspaceUnknown,
        Reason::NotAMember,
        Reason::ScopeMissing,
        Reason::ScopeExceedsGrantor,
        Reason::ScopeUnknown,
        Reason::RoleInsufficient,
        Reason::NotKeyOwner,
        Reason::NotAppManager,
        Reason::NotGrantHolder,
        Reason::OriginNotAllowed,
        Reason::AdminTokenInvalid,
        Reason::InvalidArgument,
        Reason::NotFound,
        Reason::AlreadyExists,
        Reason::StorageUnavailable,
        Reason::Internal,
        Reason::InvalidClient,
        Reason::InvalidGrant,
        Reason::UnauthorizedClient,
        Reason::ScopeWrongKind,
        Reason::ScopeExceedsGrant,
        Reason::TooManyAttempts,
        Reason::RateLimited,
    ];

    /// The proto enum value name, as sent in `google.rpc.ErrorInfo.reason`
    /// and in HTTP error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::CredentialMissing => "CREDENTIAL_MISSING",
            Reason::CredentialMalformed => "CREDENTIAL_MALFORMED",
            Reason::CredentialChecksumMismatch => "CREDENTIAL_CHECKSUM_MISMATCH",
            Reason::CredentialUnknown => "CREDENTIAL_UNKNOWN",
            Reason::CredentialExpired => "CREDENTIAL_EXPIRED",
            Reason::CredentialRevoked => "CREDENTIAL_REVOKED",
            Reason::CredentialKindNotAccepted => "CREDENTIAL_KIND_NOT_ACCEPTED",
            Reason::SessionInvalid => "SESSION_INVALID",
            Reason::SessionAnonymous => "SESSION_ANONYMOUS",
            Reason::WorkspaceMismatch => "WORKSPACE_MISMATCH",
            Reason::WorkspaceUnknown => "WORKSPACE_UNKNOWN",
            Reason::NotAMember => "NOT_A_MEMBER",
            Reason::ScopeMissing => "SCOPE_MISSING",
            Reason::ScopeExceedsGrantor => "SCOPE_EXCEEDS_GRANTOR",
            Reason::ScopeUnknown => "SCOPE_UNKNOWN",
            Reason::RoleInsufficient => "ROLE_INSUFFICIENT",
            Reason::NotKeyOwner => "NOT_KEY_OWNER",
            Reason::NotAppManager => "NOT_APP_MANAGER",
            Reason::NotGrantHolder => "NOT_GRANT_HOLDER",
            Reason::OriginNotAllowed => "ORIGIN_NOT_ALLOWED",
            Reason::AdminTokenInvalid => "ADMIN_TOKEN_INVALID",
            Reason::InvalidArgument => "INVALID_ARGUMENT",
            Reason::NotFound => "NOT_FOUND",
            Reason::AlreadyExists => "ALREADY_EXISTS",
            Reason::StorageUnavailable => "STORAGE_UNAVAILABLE",
            Reason::Internal => "INTERNAL",
            Reason::InvalidClient => "INVALID_CLIENT",
            Reason::InvalidGrant => "INVALID_GRANT",
            Reason::UnauthorizedClient => "UNAUTHORIZED_CLIENT",
            Reason::ScopeWrongKind => "SCOPE_WRONG_KIND",
            Reason::ScopeExceedsGrant => "SCOPE_EXCEEDS_GRANT",
            Reason::TooManyAttempts => "TOO_MANY_ATTEMPTS",
            Reason::RateLimited => "RATE_LIMITED",
        }
    }

    /// A short public description; never includes caller data.
    pub fn description(self) -> &'static str {
        match self {
            Reason::CredentialMissing => "no credential was presented",
            Reason::CredentialMalformed => "the credential is malformed",
            Reason::CredentialChecksumMismatch => "the credential fails its checksum",
            Reason::CredentialUnknown => "the credential is not known",
            Reason::CredentialExpired => "the credential has expired",
            Reason::CredentialRevoked => "the credential has been revoked",
            Reason::CredentialKindNotAccepted => "this kind of credential is not accepted here",
            Reason::SessionInvalid => "the session token is invalid",
            Reason::SessionAnonymous => "anonymous sessions are not accepted",
            Reason::WorkspaceMismatch => "the credential belongs to another workspace",
            Reason::WorkspaceUnknown => "no such workspace",
            Reason::NotAMember => "the user is not a member of that workspace",
            Reason::ScopeMissing => "the credential lacks a required scope",
            Reason::ScopeExceedsGrantor => "requested scopes exceed what the grantor holds",
            Reason::ScopeUnknown => "unknown scope",
            Reason::RoleInsufficient => "the user's role does not allow this",
            Reason::NotKeyOwner => "the caller may not manage that key",
            Reason::NotAppManager => "the caller may not manage that app",
            Reason::NotGrantHolder => "the caller may not see or revoke that grant",
            Reason::OriginNotAllowed => {
                "a request authenticated by the session cookie must come from an allowed Origin"
            }
            Reason::AdminTokenInvalid => "a valid admin token is required",
            Reason::InvalidArgument => "invalid argument",
            Reason::NotFound => "not found",
            Reason::AlreadyExists => "already exists",
            Reason::StorageUnavailable => "storage is unavailable; retry",
            Reason::Internal => "internal error",
            Reason::InvalidClient => "client authentication failed",
            Reason::InvalidGrant => "the grant is invalid, expired, revoked or already used",
            Reason::UnauthorizedClient => "the client is not allowed this grant",
            Reason::ScopeWrongKind => {
                "workspace keys carry workspace scopes, personal keys personal scopes"
            }
            Reason::ScopeExceedsGrant => "requested scopes exceed the original grant",
            Reason::TooManyAttempts => "too many failed client authentications; retry later",
            Reason::RateLimited => "too many requests; retry later",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the edges classify an error. Each class is one row of the table in
/// [`ErrorClass::row`], so gRPC, HTTP and OAuth bodies cannot disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    Unauthenticated,
    PermissionDenied,
    InvalidArgument,
    NotFound,
    AlreadyExists,
    /// A precondition of the resource's state failed (e.g. a used code).
    FailedPrecondition,
    Unavailable,
    Internal,
    // RFC 6749 §5.2 (and §4.1.2.1) codes whose `error` string or HTTP
    // status differs from the general class they resemble. `invalid_request`
    // needs no row of its own: it is `InvalidArgument`.
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    AccessDenied,
    UnsupportedResponseType,
    /// Too many failed client authentications: retry after the time the
    /// error carries. Not an RFC 6749 code (docs/limits.md).
    TooManyAttempts,
    /// Over a request budget (rate_limit.rs): retry after the time the
    /// error carries.
    RateLimited,
}

/// `google.rpc.Code` values, so the table reads as names.
mod grpc {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const ALREADY_EXISTS: i32 = 6;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 17] = [
        ErrorClass::Unauthenticated,
        ErrorClass::PermissionDenied,
        ErrorClass::InvalidArgument,
        ErrorClass::NotFound,
        ErrorClass::AlreadyExists,
        ErrorClass::FailedPrecondition,
        ErrorClass::Unavailable,
        ErrorClass::Internal,
        ErrorClass::InvalidClient,
        ErrorClass::InvalidGrant,
        ErrorClass::UnauthorizedClient,
        ErrorClass::UnsupportedGrantType,
        ErrorClass::InvalidScope,
        ErrorClass::AccessDenied,
        ErrorClass::UnsupportedResponseType,
        ErrorClass::TooManyAttempts,
        ErrorClass::RateLimited,
    ];

    /// The one table: gRPC code, HTTP status, and the `error` string of
    /// JSON and OAuth bodies. OAuth rows follow RFC 6749 §5.2 on HTTP (401
    /// for `invalid_client`, else 400) and the nearest gRPC code.
    const fn row(self) -> (i32, u16, &'static str) {
        match self {
            ErrorClass::Unauthenticated => (grpc::UNAUTHENTICATED, 401, "unauthenticated"),
            ErrorClass::PermissionDenied => (grpc::PERMISSION_DENIED, 403, "permission_denied"),
            ErrorClass::InvalidArgument => (grpc::INVALID_ARGUMENT, 400, "invalid_request"),
            ErrorClass::NotFound => (grpc::NOT_FOUND, 404, "not_found"),
            ErrorClass::AlreadyExists => (grpc::ALREADY_EXISTS, 409, "already_exists"),
            ErrorClass::FailedPrecondition => {
                (grpc::FAILED_PRECONDITION, 400, "failed_precondition")
            }
            ErrorClass::Unavailable => (grpc::UNAVAILABLE, 503, "temporarily_unavailable"),
            ErrorClass::Internal => (grpc::INTERNAL, 500, "server_error"),
            ErrorClass::InvalidClient => (grpc::UNAUTHENTICATED, 401, "invalid_client"),
            ErrorClass::InvalidGrant => (grpc::FAILED_PRECONDITION, 400, "invalid_grant"),
            ErrorClass::UnauthorizedClient => (grpc::PERMISSION_DENIED, 400, "unauthorized_client"),
            ErrorClass::UnsupportedGrantType => {
                (grpc::INVALID_ARGUMENT, 400, "unsupported_grant_type")
            }
            ErrorClass::InvalidScope => (grpc::INVALID_ARGUMENT, 400, "invalid_scope"),
            ErrorClass::AccessDenied => (grpc::PERMISSION_DENIED, 403, "access_denied"),
            ErrorClass::UnsupportedResponseType => {
                (grpc::INVALID_ARGUMENT, 400, "unsupported_response_type")
            }
            ErrorClass::TooManyAttempts => (grpc::RESOURCE_EXHAUSTED, 429, "too_many_attempts"),
            ErrorClass::RateLimited => (grpc::RESOURCE_EXHAUSTED, 429, "rate_limited"),
        }
    }

    /// The `google.rpc.Code` value.
    pub const fn grpc_code(self) -> i32 {
        self.row().0
    }

    pub const fn http_status(self) -> u16 {
        self.row().1
    }

    /// The `error` of an HTTP error body (an RFC 6749 code where one applies).
    pub const fn error_code(self) -> &'static str {
        self.row().2
    }

    /// Outages and bugs: the classes whose detail an adapter logs.
    pub const fn is_internal(self) -> bool {
        matches!(self, ErrorClass::Unavailable | ErrorClass::Internal)
    }
}

/// A storage failure, as the domain sees it. `Clone`: one failure may be
/// every caller's answer (a batch that could not commit).
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or timed out: retryable.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness constraint refused the write.
    #[error("conflict on {0}")]
    Conflict(&'static str),
    /// A referenced row does not exist.
    #[error("missing reference: {0}")]
    MissingReference(&'static str),
    /// Anything else: a bug or corrupt data.
    #[error("storage error: {0}")]
    Other(String),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unauthenticated: {}", .0.description())]
    Unauthenticated(Reason),
    #[error("permission denied: {}", .0.description())]
    PermissionDenied(Reason),
    #[error("{1}")]
    InvalidArgument(Reason, String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    /// OAuth grant and client errors (RFC 6749 §5.2), also used by the RPCs.
    #[error("{code}: {message}", code = .0.as_str(), message = .1)]
    OAuth(OAuthErrorCode, String),
    /// An OAuth error whose reason is narrower than its code's (e.g.
    /// `invalid_scope` for a scope beyond the grant, not an unknown one).
    #[error("{code}: {message}", code = .0.as_str(), message = .2)]
    OAuthWithReason(OAuthErrorCode, Reason, String),
    /// Too many failed client authentications: refused, before any secret
    /// is checked, for this many seconds.
    #[error("too many failed client authentications; retry in {retry_after_secs} s")]
    TooManyAttempts { retry_after_secs: u64 },
    /// Over a request budget.
    #[error("rate limit of {} requests reached; retry in {} s", .0.limit, .0.retry_after_secs())]
    RateLimited(RateLimited),
    #[error("storage unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(String),
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::InvalidArgument(Reason::InvalidArgument, message.into())
    }

    pub fn reason(&self) -> Reason {
        match self {
            Error::Unauthenticated(reason) | Error::PermissionDenied(reason) => *reason,
            Error::InvalidArgument(reason, _) => *reason,
            Error::NotFound(_) => Reason::NotFound,
            Error::AlreadyExists(_) => Reason::AlreadyExists,
            Error::OAuth(code, _) => code.reason(),
            Error::OAuthWithReason(_, reason, _) => *reason,
            Error::TooManyAttempts { .. } => Reason::TooManyAttempts,
            Error::RateLimited(_) => Reason::RateLimited,
            Error::Unavailable(_) => Reason::StorageUnavailable,
            Error::Internal(_) => Reason::Internal,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Unauthenticated(_) => ErrorClass::Unauthenticated,
            Error::PermissionDenied(_) => ErrorClass::PermissionDenied,
            Error::InvalidArgument(..) => ErrorClass::InvalidArgument,
            Error::NotFound(_) => ErrorClass::NotFound,
            Error::AlreadyExists(_) => ErrorClass::AlreadyExists,
            Error::OAuth(code, _) | Error::OAuthWithReason(code, ..) => code.class(),
            Error::TooManyAttempts { .. } => ErrorClass::TooManyAttempts,
            Error::RateLimited(_) => ErrorClass::RateLimited,
            Error::Unavailable(_) => ErrorClass::Unavailable,
            Error::Internal(_) => ErrorClass::Internal,
        }
    }

    /// Seconds the caller should wait before retrying, where the error says.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::TooManyAttempts { retry_after_secs } => Some(*retry_after_secs),
            Error::RateLimited(refused) => Some(refused.retry_after_secs()),
            _ => None,
        }
    }

    /// The JSON body every HTTP-shaped refusal carries (HTTP routes,
    /// forward-auth, Envoy's denied responses):
    /// `{"error", "error_description", "reason"}`.
    pub fn json_body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": self.class().error_code(),
            "error_description": self.public_message(),
            "reason": self.reason().as_str(),
        })
    }

    /// The message an outside caller may see: internals stay in logs.
    pub fn public_message(&self) -> String {
        match self {
            Error::Unavailable(_) => Reason::StorageUnavailable.description().to_owned(),
            Error::Internal(_) => Reason::Internal.description().to_owned(),
            Error::OAuth(_, message) | Error::OAuthWithReason(_, _, message) => message.clone(),
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(_) => Error::Unavailable(err),
            StoreError::Conflict(what) => Error::AlreadyExists(what),
            StoreError::MissingReference(what) => Error::NotFound(what),
            StoreError::Other(detail) => Error::Internal(detail),
        }
    }
}

/// RFC 6749 §5.2 (and §4.1.2.1) error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    AccessDenied,
    UnsupportedResponseType,
}

impl OAuthErrorCode {
    /// The RFC 6749 code, from the table's `error` column.
    pub fn as_str(self) -> &'static str {
        self.class().error_code()
    }

    pub fn reason(self) -> Reason {
        match self {
            OAuthErrorCode::InvalidClient => Reason::InvalidClient,
            OAuthErrorCode::InvalidGrant => Reason::InvalidGrant,
            OAuthErrorCode::UnauthorizedClient => Reason::UnauthorizedClient,
            OAuthErrorCode::InvalidScope => Reason::ScopeUnknown,
            OAuthErrorCode::AccessDenied => Reason::RoleInsufficient,
            OAuthErrorCode::InvalidRequest
            | OAuthErrorCode::UnsupportedGrantType
            | OAuthErrorCode::UnsupportedResponseType => Reason::InvalidArgument,
        }
    }

    pub fn class(self) -> ErrorClass {
        match self {
            OAuthErrorCode::InvalidRequest => ErrorClass::InvalidArgument,
            OAuthErrorCode::InvalidClient => ErrorClass::InvalidClient,
            OAuthErrorCode::InvalidGrant => ErrorClass::InvalidGrant,
            OAuthErrorCode::UnauthorizedClient => ErrorClass::UnauthorizedClient,
            OAuthErrorCode::UnsupportedGrantType => ErrorClass::UnsupportedGrantType,
            OAuthErrorCode::InvalidScope => ErrorClass::InvalidScope,
            OAuthErrorCode::AccessDenied => ErrorClass::AccessDenied,
            OAuthErrorCode::UnsupportedResponseType => ErrorClass::UnsupportedResponseType,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_gives_every_class_a_grpc_code_http_status_and_error() {
        use ErrorClass::*;
        let expected = [
            (Unauthenticated, 16, 401, "unauthenticated"),
            (PermissionDenied, 7, 403, "permission_denied"),
            (InvalidArgument, 3, 400, "invalid_request"),
            (NotFound, 5, 404, "not_found"),
            (AlreadyExists, 6, 409, "already_exists"),
            (FailedPrecondition, 9, 400, "failed_precondition"),
            (Unavailable, 14, 503, "temporarily_unavailable"),
            (Internal, 13, 500, "server_error"),
            (InvalidClient, 16, 401, "invalid_client"),
            (InvalidGrant, 9, 400, "invalid_grant"),
            (UnauthorizedClient, 7, 400, "unauthorized_client"),
            (UnsupportedGrantType, 3, 400, "unsupported_grant_type"),
            (InvalidScope, 3, 400, "invalid_scope"),
            (AccessDenied, 7, 403, "access_denied"),
            (UnsupportedResponseType, 3, 400, "unsupported_response_type"),
            (TooManyAttempts, 8, 429, "too_many_attempts"),
            (RateLimited, 8, 429, "rate_limited"),
        ];
        assert_eq!(expected.len(), ErrorClass::ALL.len());
        for (class, (listed, grpc, http, error)) in ErrorClass::ALL.into_iter().zip(expected) {
            assert_eq!(
                class, listed,
                "ALL and this table list classes in one order"
            );
            assert_eq!(
                (class.grpc_code(), class.http_status(), class.error_code()),
                (grpc, http, error),
                "{class:?}"
            );
        }
    }

    #[test]
    fn oauth_codes_keep_their_rfc6749_names_through_the_table() {
        use OAuthErrorCode::*;
        for (code, name) in [
            (InvalidRequest, "invalid_request"),
            (InvalidClient, "invalid_client"),
            (InvalidGrant, "invalid_grant"),
            (UnauthorizedClient, "unauthorized_client"),
            (UnsupportedGrantType, "unsupported_grant_type"),
            (InvalidScope, "invalid_scope"),
            (AccessDenied, "access_denied"),
            (UnsupportedResponseType, "unsupported_response_type"),
        ] {
            assert_eq!(code.as_str(), name);
            assert_eq!(Error::OAuth(code, String::new()).class().error_code(), name);
        }
    }
}
