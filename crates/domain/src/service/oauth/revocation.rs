//! Revocation (RFC 7009) and introspection (RFC 7662) of OAuth tokens.

use crate::clock::Timestamp;
use crate::credential::{CredentialKind, Secret};
use crate::error::{Error, OAuthErrorCode};
use crate::oauth::{FamilyId, OAuthApp, OAuthToken, TokenKind};
use crate::service::Service;

use super::apps::ClientAuth;
use super::oauth_error;

/// RFC 7662 introspection answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introspection {
    pub active: bool,
    pub token: Option<OAuthToken>,
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
    pub async fn introspect(
        &self,
        client: Option<&OAuthApp>,
        token: &str,
    ) -> Result<Introspection, Error> {
        let inactive = Introspection {
            active: false,
            token: None,
        };
        let Some(stored) = self.lookup_oauth_token(token).await? else {
            return Ok(inactive);
        };
        if client.is_some_and(|c| c.client_id != stored.client_id) {
            return Ok(inactive);
        }
        let now = self.clock.now();
        let active =
            stored.revoked_at.is_none() && stored.rotated_at.is_none() && stored.expires_at > now;
        if !active {
            return Ok(inactive);
        }
        if stored.kind == TokenKind::Access
            && self
                .store
                .membership(&stored.workspace_id, &stored.user_id)
                .await?
                .is_none()
        {
            return Ok(inactive);
        }
        Ok(Introspection {
            active: true,
            token: Some(stored),
        })
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
