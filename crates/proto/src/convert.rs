//! Conversions between generated types and domain types, kept beside the
//! generated code so every adapter converts the same way.

use velocity_domain::rate_limit::Budget;
use velocity_domain::{ApiKey, KeyKind, Principal, PrincipalKind, Reason, Timestamp};

use crate::pb;

pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.0.div_euclid(1000),
        nanos: (t.0.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn from_timestamp(t: &prost_types::Timestamp) -> Timestamp {
    Timestamp(
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos) / 1_000_000),
    )
}

impl From<PrincipalKind> for pb::PrincipalKind {
    fn from(kind: PrincipalKind) -> Self {
        match kind {
            PrincipalKind::WorkspaceKey => pb::PrincipalKind::WorkspaceKey,
            PrincipalKind::PersonalKey => pb::PrincipalKind::PersonalKey,
            PrincipalKind::AccessToken => pb::PrincipalKind::OauthAccessToken,
            PrincipalKind::Session => pb::PrincipalKind::Session,
        }
    }
}

impl From<Principal> for pb::Principal {
    fn from(p: Principal) -> Self {
        let (workspace_id, workspace_slug) =
            p.workspace.map(|w| (w.id.0, w.slug)).unwrap_or_default();
        pb::Principal {
            kind: pb::PrincipalKind::from(p.kind) as i32,
            user_id: p.user_id.map(|u| u.0).unwrap_or_default(),
            workspace_id,
            workspace_slug,
            scopes: p.scopes.names(),
            credential_id: p.credential_id,
            expires_at: p.expires_at.map(timestamp),
            client_id: p.client_id.map(|c| c.0).unwrap_or_default(),
            role: p.role.map(|r| r.as_str().to_owned()).unwrap_or_default(),
        }
    }
}

impl From<KeyKind> for pb::KeyKind {
    fn from(kind: KeyKind) -> Self {
        match kind {
            KeyKind::Workspace => pb::KeyKind::Workspace,
            KeyKind::Personal => pb::KeyKind::Personal,
        }
    }
}

impl TryFrom<pb::KeyKind> for KeyKind {
    type Error = ();

    fn try_from(kind: pb::KeyKind) -> Result<Self, ()> {
        match kind {
            pb::KeyKind::Workspace => Ok(KeyKind::Workspace),
            pb::KeyKind::Personal => Ok(KeyKind::Personal),
            pb::KeyKind::Unspecified => Err(()),
        }
    }
}

/// A key as listings show it: the display form, never the secret or hash.
impl From<ApiKey> for pb::ApiKey {
    fn from(key: ApiKey) -> Self {
        let kind = pb::KeyKind::from(key.kind()) as i32;
        pb::ApiKey {
            id: key.id.0,
            kind,
            name: key.name,
            display: key.display,
            scopes: key.scopes.names(),
            workspace_id: key
                .owner
                .workspace()
                .map(|w| w.0.clone())
                .unwrap_or_default(),
            user_id: key.owner.user().map(|u| u.0.clone()).unwrap_or_default(),
            created_by: key.created_by.map(|u| u.0).unwrap_or_default(),
            created_at: Some(timestamp(key.created_at)),
            expires_at: key.expires_at.map(timestamp),
            revoked_at: key.revoked_at.map(timestamp),
            last_used_at: key.last_used_at.map(timestamp),
        }
    }
}

impl From<velocity_domain::oauth::OAuthApp> for pb::OAuthApp {
    fn from(app: velocity_domain::oauth::OAuthApp) -> Self {
        pb::OAuthApp {
            client_id: app.client_id.0,
            name: app.name,
            client_type: match app.client_type {
                velocity_domain::oauth::ClientType::Public => pb::ClientType::Public,
                velocity_domain::oauth::ClientType::Confidential => pb::ClientType::Confidential,
            } as i32,
            redirect_uris: app.redirect_uris,
            allowed_scopes: app.allowed_scopes.names(),
            created_at: Some(timestamp(app.created_at)),
            workspace_id: app.workspace_id.map(|w| w.0).unwrap_or_default(),
            created_by: app.created_by.map(|u| u.0).unwrap_or_default(),
            previous_secret_expires_at: app.previous_secret.map(|p| timestamp(p.until)),
        }
    }
}

impl From<velocity_domain::oauth::Grant> for pb::Grant {
    fn from(grant: velocity_domain::oauth::Grant) -> Self {
        pb::Grant {
            id: grant.id.0,
            client_id: grant.client_id.0,
            app_name: grant.app_name,
            user_id: grant.user_id.0,
            workspace_id: grant.workspace_id.0,
            workspace_slug: grant.workspace_slug,
            scopes: grant.scopes.names(),
            granted_at: Some(timestamp(grant.created_at)),
            last_used_at: Some(timestamp(grant.last_used_at)),
            expires_at: Some(timestamp(grant.expires_at)),
        }
    }
}

impl From<velocity_domain::service::IssuedTokens> for pb::TokenResponse {
    fn from(t: velocity_domain::service::IssuedTokens) -> Self {
        pb::TokenResponse {
            access_token: t.access_token.expose().to_owned(),
            token_type: "Bearer".into(),
            expires_in: t.expires_in,
            refresh_token: t.refresh_token.expose().to_owned(),
            scope: t.scopes.to_space_separated(),
            workspace_id: t.workspace_id.0,
        }
    }
}

impl From<Budget> for pb::RateLimit {
    fn from(budget: Budget) -> Self {
        pb::RateLimit {
            limit: budget.limit,
            remaining: budget.remaining,
            reset_seconds: u32::try_from(budget.reset_secs).unwrap_or(u32::MAX),
        }
    }
}

impl From<Reason> for pb::FailureReason {
    fn from(reason: Reason) -> Self {
        pb::FailureReason::from_str_name(reason.as_str()).unwrap_or(pb::FailureReason::Unspecified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for ms in [0, 1, 999, 1_700_000_000_123, -1] {
            assert_eq!(from_timestamp(&timestamp(Timestamp(ms))), Timestamp(ms));
        }
    }

    #[test]
    fn every_reason_has_a_proto_value() {
        use Reason::*;
        for reason in [
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
        ] {
            assert_ne!(
                pb::FailureReason::from(reason),
                pb::FailureReason::Unspecified,
                "{reason}"
            );
        }
    }
}
