//! The domain's one error type, and the classes the edges map to transport
//! codes (gRPC status in `server`, HTTP status in `http`).

use std::fmt;

/// Machine-readable reason for a refusal. The names are the public
/// `velocity.auth.v1.FailureReason` values.
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
}

impl Reason {
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
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the edges classify an error; each adapter maps a class to its own
/// status code in one table.
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
}

/// A storage failure, as the domain sees it.
#[derive(Debug, thiserror::Error)]
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
            Error::OAuth(code, _) => code.class(),
            Error::Unavailable(_) => ErrorClass::Unavailable,
            Error::Internal(_) => ErrorClass::Internal,
        }
    }

    /// The message an outside caller may see: internals stay in logs.
    pub fn public_message(&self) -> String {
        match self {
            Error::Unavailable(_) => Reason::StorageUnavailable.description().to_owned(),
            Error::Internal(_) => Reason::Internal.description().to_owned(),
            Error::OAuth(_, message) => message.clone(),
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
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthErrorCode::InvalidRequest => "invalid_request",
            OAuthErrorCode::InvalidClient => "invalid_client",
            OAuthErrorCode::InvalidGrant => "invalid_grant",
            OAuthErrorCode::UnauthorizedClient => "unauthorized_client",
            OAuthErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorCode::InvalidScope => "invalid_scope",
            OAuthErrorCode::AccessDenied => "access_denied",
            OAuthErrorCode::UnsupportedResponseType => "unsupported_response_type",
        }
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
            OAuthErrorCode::InvalidClient => ErrorClass::Unauthenticated,
            OAuthErrorCode::UnauthorizedClient | OAuthErrorCode::AccessDenied => {
                ErrorClass::PermissionDenied
            }
            OAuthErrorCode::InvalidGrant => ErrorClass::FailedPrecondition,
            OAuthErrorCode::InvalidRequest
            | OAuthErrorCode::UnsupportedGrantType
            | OAuthErrorCode::InvalidScope
            | OAuthErrorCode::UnsupportedResponseType => ErrorClass::InvalidArgument,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
