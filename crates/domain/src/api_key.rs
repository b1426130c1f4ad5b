//! Workspace and personal API keys as stored: a hash, never the secret.

use std::fmt;

use crate::clock::Timestamp;
use crate::credential::{CredentialKind, SecretHash};
use crate::directory::{UserId, WorkspaceId, id_type};
use crate::scope::ScopeSet;

id_type!(ApiKeyId);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// `vel_`: belongs to a workspace.
    Workspace,
    /// `velu_`: belongs to a user.
    Personal,
}

impl KeyKind {
    pub fn credential_kind(self) -> CredentialKind {
        match self {
            KeyKind::Workspace => CredentialKind::WorkspaceKey,
            KeyKind::Personal => CredentialKind::PersonalKey,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Workspace => "workspace",
            KeyKind::Personal => "personal",
        }
    }

    pub fn parse(s: &str) -> Option<KeyKind> {
        match s {
            "workspace" => Some(KeyKind::Workspace),
            "personal" => Some(KeyKind::Personal),
            _ => None,
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub kind: KeyKind,
    pub hash: SecretHash,
    pub display: String,
    pub name: String,
    pub scopes: ScopeSet,
    /// Set for workspace keys.
    pub workspace_id: Option<WorkspaceId>,
    /// The owner of a personal key.
    pub user_id: Option<UserId>,
    pub created_by: Option<UserId>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
}

impl ApiKey {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Which keys a listing covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyOwner {
    Workspace(WorkspaceId),
    User(UserId),
}
