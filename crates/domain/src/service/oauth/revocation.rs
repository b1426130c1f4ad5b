//! Revocation (RFC 7009) and introspection (RFC 7662) of OAuth tokens.

use crate::clock::Timestamp;
use crate::credential::{CredentialKind, Secret, SecretHash};
use crate::directory::{UserId, WorkspaceId};
use crate::error::{Error, OAuthErrorCode};
use crate::oauth::{ClientId, FamilyId, OAuthApp, OAuthToken, TokenKind};
use crate::resolve::{VerifiedCredential, resolve_principal};
use crate::scope::ScopeSet;
use crate::service::Service;

use super::apps::ClientAuth;
use super::oauth_error;

/// RFC 7662 introspection answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introspection {
    pub active: bool,
    pub token: Option<IntrospectedToken>,
}

/// What an introspection tells of an active token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntrospectedToken {
    pub kind: TokenKind,
    pub client_id: ClientId,
    pub user_id: UserId,
    pub workspace_id: WorkspaceId,
    /// The scopes granted, as issued.
    pub scopes: ScopeSet,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

impl Introspection {
    const INACTIVE: Introspection = Introspection {
        active: false,
        token: None,
    };

    fn active(token: IntrospectedToken) -> Introspection {
        Introspection {
            active: true,
            token: Some(token),
        }
    }
}

impl Service {
    /// RFC 7009: revoking a refresh token revokes its whole family; an
    /// unknown or foreign-format token is not an error.
    pub async fn revoke_oauth_token(&self, client: &ClientAuth, token: &str) -> Result<(), Error> {
        let app = self.authenticate_client(client).await?;
        let Some(stored) = self.lookup_oauth_token(token).await? else {
            return Ok(());
        };
        if stored.client_id != app.client_id {
            return Err(oauth_error(
                OAuthErrorCode::UnauthorizedClient,
                "the token was issued to another client",
            ));
        }
        let now = self.clock.now();
        match stored.kind {
            TokenKind::Refresh => {
                self.revoke_family(&stored.family_id, now).await?;
            }
            TokenKind::Access => {
                self.store.revoke_token(&stored.id, now).await?;
                self.after_change().await;
            }
        }
        tracing::info!(client_id = %app.client_id, kind = stored.kind.as_str(), "oauth token revoked");
        Ok(())
    }

    /// RFC 7662. `client`, when given, may only see its own tokens; internal
    /// callers (admin token) pass `None` and see all.
    ///
    /// An access token is answered from the verification cache, through the
    /// same filter, cache, membership and rules as Authenticate: active
    /// exactly when Authenticate (no slug, no scope) would accept it, so a
    /// revoked token is inactive here as soon as Authenticate refuses it. A
    /// refresh token, which never authenticates, is looked up in storage.
    pub async fn introspect(
        &self,
        client: Option<&OAuthApp>,
        token: &str,
    ) -> Result<Introspection, Error> {
        let Ok(secret) = Secret::parse(token.trim()) else {
            return Ok(Introspection::INACTIVE);
        };
        let answer = match secret.kind() {
            CredentialKind::AccessToken => self.introspect_access_token(secret.hash()).await?,
            CredentialKind::RefreshToken => self.introspect_refresh_token(&secret.hash()).await?,
            _ => return Ok(Introspection::INACTIVE),
        };
        match answer {
            Some(token) if client.is_none_or(|c| c.client_id == token.client_id) => {
                Ok(Introspection::active(token))
            }
            _ => Ok(Introspection::INACTIVE),
        }
    }

    /// `None` unless Authenticate would accept the token.
    async fn introspect_access_token(
        &self,
        hash: SecretHash,
    ) -> Result<Option<IntrospectedToken>, Error> {
        let verified = match self.verified(CredentialKind::AccessToken, hash).await {
            Ok(verified) => verified,
            Err(Error::Unauthenticated(_)) => return Ok(None),
            Err(err) => return Err(err),
        };
        let VerifiedCredential::AccessToken(grant) = &*verified else {
            return Ok(None);
        };
        let membership = self.membership_for(&verified, None).await?;
        let now = self.clock.now();
        if resolve_principal(&verified, None, membership.as_ref(), ScopeSet::EMPTY, now).is_err() {
            return Ok(None);
        }
        Ok(Some(IntrospectedToken {
            kind: TokenKind::Access,
            client_id: grant.client_id.clone(),
            user_id: grant.user_id.clone(),
            workspace_id: grant.workspace.id.clone(),
            scopes: grant.scopes,
            created_at: grant.created_at,
            expires_at: grant.expires_at,
        }))
    }

    /// `None` unless the refresh token is live: not revoked, rotated or expired.
    async fn introspect_refresh_token(
        &self,
        hash: &SecretHash,
    ) -> Result<Option<IntrospectedToken>, Error> {
        let Some(stored) = self.store.token_by_hash(hash).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        let live = stored.kind == TokenKind::Refresh
            && stored.revoked_at.is_none()
            && stored.rotated_at.is_none()
            && stored.expires_at > now;
        Ok(live.then_some(IntrospectedToken {
            kind: stored.kind,
            client_id: stored.client_id,
            user_id: stored.user_id,
            workspace_id: stored.workspace_id,
            scopes: stored.scopes,
            created_at: stored.created_at,
            expires_at: stored.expires_at,
        }))
    }

    /// Revokes every token of a family, on every replica.
    pub(super) async fn revoke_family(
        &self,
        family_id: &FamilyId,
        now: Timestamp,
    ) -> Result<u64, Error> {
        let revoked = self.store.revoke_family(family_id, now).await?;
        self.after_change().await;
        Ok(revoked)
    }

    async fn lookup_oauth_token(&self, token: &str) -> Result<Option<OAuthToken>, Error> {
        let Ok(secret) = Secret::parse(token.trim()) else {
            return Ok(None);
        };
        if !matches!(
            secret.kind(),
            CredentialKind::AccessToken | CredentialKind::RefreshToken
        ) {
            return Ok(None);
        }
        Ok(self.store.token_by_hash(&secret.hash()).await?)
    }
}
