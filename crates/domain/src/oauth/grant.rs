//! What consent produces: authorization codes, then access and refresh
//! tokens, grouped in a family so reuse can revoke them all.

use crate::clock::Timestamp;
use crate::credential::SecretHash;
use crate::directory::{UserId, WorkspaceId, id_type};
use crate::oauth::app::ClientId;

id_type!(
    /// One access or refresh token.
    TokenId
);
id_type!(
    /// The tokens descended from one authorization code; reuse revokes them all.
    FamilyId
);
use crate::scope::ScopeSet;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationCode {
    pub hash: SecretHash,
    pub client_id: ClientId,
    pub redirect_uri: String,
    pub user_id: UserId,
    pub workspace_id: WorkspaceId,
    pub scopes: ScopeSet,
    pub code_challenge: String,
    /// The token family the code's tokens will join.
    pub family_id: FamilyId,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }

    pub fn parse(s: &str) -> Option<TokenKind> {
        match s {
            "access" => Some(TokenKind::Access),
            "refresh" => Some(TokenKind::Refresh),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthToken {
    pub id: TokenId,
    pub hash: SecretHash,
    pub kind: TokenKind,
    pub family_id: FamilyId,
    pub client_id: ClientId,
    pub user_id: UserId,
    pub workspace_id: WorkspaceId,
    pub scopes: ScopeSet,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// For refresh tokens: when it was exchanged for a new pair.
    pub rotated_at: Option<Timestamp>,
}

/// A code as its client presents it at the token endpoint: what storage
/// must find to spend it without reading it first
/// (`OAuthStore::redeem_presented_code`).
#[derive(Clone, Copy, Debug)]
pub struct PresentedCode<'a> {
    pub hash: &'a SecretHash,
    pub client_id: &'a ClientId,
    pub redirect_uri: &'a str,
    /// The S256 challenge of the presented verifier.
    pub code_challenge: &'a str,
}

/// A token minted before the code it is issued for was read: its family,
/// owner and scopes are the code's, taken by storage as it spends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSeed {
    pub id: TokenId,
    pub hash: SecretHash,
    pub kind: TokenKind,
    pub expires_at: Timestamp,
}

/// What a user authorized: an app acting for them in one workspace, with
/// every token of one family. Made when the code is redeemed; each refresh
/// is a use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub id: FamilyId,
    pub client_id: ClientId,
    pub app_name: String,
    pub user_id: UserId,
    pub workspace_id: WorkspaceId,
    pub workspace_slug: String,
    /// The scopes of its newest tokens (a refresh may narrow them).
    pub scopes: ScopeSet,
    pub created_at: Timestamp,
    /// When it last issued tokens (the code's exchange or a refresh).
    pub last_used_at: Timestamp,
    /// When its newest refresh token expires.
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// Whose grants a listing shows.
#[derive(Clone, Copy, Debug)]
pub enum GrantsOf<'a> {
    User(&'a UserId),
    Workspace(&'a WorkspaceId),
}
