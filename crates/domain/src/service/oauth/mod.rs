//! OAuth use-cases, one file per concern: registered apps and client
//! authentication, the consent page, the token endpoint, and revocation with
//! introspection. The gRPC and HTTP adapters both call these, so both behave
//! the same. Authenticate's own look-up of access tokens lives with the other
//! credential look-ups in `authenticate.rs`.

mod app_cache;
mod apps;
mod consent;
mod grants;
pub(crate) mod origins;
mod revocation;
mod token;

pub use apps::{AppChanges, AppManager, ClientAuth, MAX_SECRET_OVERLAP_SECS, NewApp};
pub use origins::{ORIGIN_CACHE_SECS, redirect_uri_origin};
pub use revocation::{IntrospectedToken, Introspection};
pub use token::IssuedTokens;

use crate::error::{Error, OAuthErrorCode};

fn oauth_error(code: OAuthErrorCode, message: impl Into<String>) -> Error {
    Error::OAuth(code, message.into())
}

fn invalid_grant(message: impl Into<String>) -> Error {
    oauth_error(OAuthErrorCode::InvalidGrant, message)
}
