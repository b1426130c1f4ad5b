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
    pub(crate) fn credential_kind(self) -> CredentialKind {
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
    pub hash: SecretHash,
    pub display: String,
    pub name: String,
    pub scopes: ScopeSet,
    /// A workspace for `vel_` keys, a user for `velu_` keys.
    pub owner: KeyOwner,
    pub created_by: Option<UserId>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
}

impl ApiKey {
    pub fn kind(&self) -> KeyKind {
        self.owner.kind()
    }

    pub(crate) fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Whom a key belongs to, which also fixes its kind; a listing covers one
/// owner's keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyOwner {
    Workspace(WorkspaceId),
    User(UserId),
}

impl KeyOwner {
    pub fn kind(&self) -> KeyKind {
        match self {
            KeyOwner::Workspace(_) => KeyKind::Workspace,
            KeyOwner::User(_) => KeyKind::Personal,
        }
    }

    pub fn workspace(&self) -> Option<&WorkspaceId> {
        match self {
            KeyOwner::Workspace(id) => Some(id),
            KeyOwner::User(_) => None,
        }
    }

    pub fn user(&self) -> Option<&UserId> {
        match self {
            KeyOwner::User(id) => Some(id),
            KeyOwner::Workspace(_) => None,
        }
    }
}
