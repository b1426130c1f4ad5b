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

/// The principal's fields a proxy in front of a service passes upstream
/// (Envoy ext_authz, forward-auth), by name: the header is `x-velocity-`
/// and the name with dashes.
pub const UPSTREAM_FIELDS: [&str; 6] = [
    "user_id",
    "workspace_id",
    "workspace_slug",
    "scopes",
    "credential_kind",
    "credential_id",
];

impl Principal {
    /// Those of [`UPSTREAM_FIELDS`] this principal has, with their values.
    pub fn upstream_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = Vec::with_capacity(UPSTREAM_FIELDS.len());
        if let Some(user) = &self.user_id {
            fields.push(("user_id", user.as_str().to_owned()));
        }
        if let Some(workspace) = &self.workspace {
            fields.push(("workspace_id", workspace.id.as_str().to_owned()));
            fields.push(("workspace_slug", workspace.slug.clone()));
        }
        fields.push(("scopes", self.scopes.to_space_separated()));
        fields.push(("credential_kind", self.kind.as_str().to_owned()));
        fields.push(("credential_id", self.credential_id.clone()));
        fields
    }
}

/// The upstream header of a field of [`UPSTREAM_FIELDS`].
pub fn upstream_header(field: &str) -> String {
    format!("x-velocity-{}", field.replace('_', "-"))
}
