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
