//! OAuth 2.0 authorization code + PKCE for third-party apps (RFC 6749,
//! RFC 7636, RFC 9700): the rules, as pure functions and types.

pub mod app;
pub mod grant;
pub mod pkce;
pub mod request;

pub use app::{ClientId, ClientType, OAuthApp, RetiringSecret};
pub use grant::{
    AuthorizationCode, FamilyId, Grant, GrantsOf, OAuthToken, PresentedCode, TokenId, TokenKind,
    TokenSeed,
};
pub use request::{AuthorizationRequest, AuthorizeError, RedirectError, ValidatedAuthorization};

/// Access tokens live one hour (CONTRACT §1).
pub(crate) const ACCESS_TOKEN_SECS: i64 = 3600;
/// Refresh tokens live 60 days, rotated on every use.
pub(crate) const REFRESH_TOKEN_SECS: i64 = 60 * 24 * 3600;
/// Authorization codes live 10 minutes and are single use.
pub(crate) const CODE_SECS: i64 = 600;
