//! Who is calling: the answer to Authenticate.

use crate::clock::Timestamp;
use crate::directory::{Role, UserId, Workspace};
use crate::oauth::ClientId;
use crate::scope::ScopeSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    WorkspaceKey,
    PersonalKey,
    AccessToken,
    Session,
}

impl PrincipalKind {
    /// As forward-auth's `X-Velocity-Credential-Kind` header says it.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::WorkspaceKey => "workspace_key",
            PrincipalKind::PersonalKey => "personal_key",
            PrincipalKind::AccessToken => "oauth_access_token",
            PrincipalKind::Session => "session",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub kind: PrincipalKind,
    /// Absent only for workspace keys, which act as the workspace itself.
    pub user_id: Option<UserId>,
    pub workspace: Option<Workspace>,
    /// Effective scopes: implications applied.
    pub scopes: ScopeSet,
    /// Key id, token id or session id.
    pub credential_id: String,
    pub expires_at: Option<Timestamp>,
    /// The OAuth app, for access tokens.
    pub client_id: Option<ClientId>,
    /// The membership role that granted workspace scopes, if one did.
    pub role: Option<Role>,
}
