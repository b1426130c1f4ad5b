use std::sync::Arc;

use tracing::instrument;

use crate::api_key::KeyOwner;
use crate::credential::{CredentialKind, Secret, SecretHash, strip_bearer};
use crate::directory::Membership;
use crate::error::{Error, Reason};
use crate::oauth::TokenKind;
use crate::principal::{Principal, PrincipalKind};
use crate::resolve::{AccessTokenGrant, MembershipKey, VerifiedCredential, resolve_principal};
use crate::scope::{Scope, ScopeSet};
use crate::session::SessionVerifier;
use crate::stats::PresentedKind;

use super::{Service, limits};

impl Service {
    /// Authenticate (CONTRACT §3): who is calling, in which workspace, with
    /// which scopes; refused with a reason otherwise.
    // Debug level: at the default level the hot path creates no span.
    #[instrument(level = "debug", skip_all, fields(slug = slug.unwrap_or_default()))]
    pub async fn authenticate(
        &self,
        credential: &str,
        slug: Option<&str>,
        required_scopes: &[String],
    ) -> Result<Principal, Error> {
        let credential = strip_bearer(credential);
        let result = self.resolve(credential, slug, required_scopes).await;
        self.stats.authenticate.record(
            PresentedKind::of_stripped(credential),
            result.as_ref().err().map(Error::reason),
        );
        result
    }

    /// `credential` without its `Bearer` scheme.
    async fn resolve(
        &self,
        credential: &str,
        slug: Option<&str>,
        required_scopes: &[String],
    ) -> Result<Principal, Error> {
        if required_scopes.len() > limits::MAX_SCOPES {
            return Err(Error::invalid("too many required scopes"));
        }
        let required =
            ScopeSet::parse(required_scopes.iter().map(String::as_str)).map_err(|_| {
                Error::InvalidArgument(Reason::ScopeUnknown, "unknown required scope".to_owned())
            })?;
        let slug = slug.map(str::trim).filter(|s| !s.is_empty());
        let verified = self.verify_credential(credential).await?;
        let membership = self.membership_for(&verified, slug).await?;
        let now = self.clock.now();
        let principal = resolve_principal(&verified, slug, membership.as_ref(), required, now)?;
        if let VerifiedCredential::WorkspaceKey { key, .. }
        | VerifiedCredential::PersonalKey { key, .. } = &*verified
        {
            self.usage.record(&key.id, now);
        }
        Ok(principal)
    }

    /// The signed-in user behind a management call: a session, or a personal
    /// key holding `admin`.
    pub async fn caller(&self, credential: &str) -> Result<Principal, Error> {
        let principal = self.authenticate(credential, None, &[]).await?;
        match principal.kind {
            PrincipalKind::Session => Ok(principal),
            PrincipalKind::PersonalKey if principal.scopes.contains(Scope::Admin) => Ok(principal),
            PrincipalKind::PersonalKey => Err(Error::PermissionDenied(Reason::ScopeMissing)),
            PrincipalKind::WorkspaceKey | PrincipalKind::AccessToken => {
                Err(Error::PermissionDenied(Reason::CredentialKindNotAccepted))
            }
        }
    }

    /// Checks the credential's form and signature or checksum, then what
    /// storage (or the cache in front of it) knows of it. Expiry and
    /// revocation are the rules' business. `credential` is without its
    /// `Bearer` scheme.
    async fn verify_credential(&self, credential: &str) -> Result<Arc<VerifiedCredential>, Error> {
        if credential.is_empty() {
            return Err(Error::Unauthenticated(Reason::CredentialMissing));
        }
        if CredentialKind::of(credential).is_none() {
            return self.verify_session(credential).map(Arc::new);
        }
        let kind = Secret::validate(credential).map_err(Error::Unauthenticated)?;
        let accepted = matches!(
            kind,
            CredentialKind::WorkspaceKey
                | CredentialKind::PersonalKey
                | CredentialKind::AccessToken
        );
        if !accepted {
            return Err(Error::Unauthenticated(Reason::CredentialKindNotAccepted));
        }
        self.verified(kind, SecretHash::of(credential)).await
    }

    /// What storage knows of a key or access token with this hash, through
    /// the filter and the cache: for Authenticate, and for introspection,
    /// which so answers exactly as Authenticate does.
    pub(super) async fn verified(
        &self,
        kind: CredentialKind,
        hash: SecretHash,
    ) -> Result<Arc<VerifiedCredential>, Error> {
        // Never stored: refuse without storage (the filter is cheaper than a
        // cache miss, so it goes first). Tokens minted on another replica a
        // moment ago may not be in our filter yet, so those get a small
        // budget of lookups.
        let answer = self.cache.known().may_contain(&hash);
        self.stats.filter.record_lookup(answer);
        let unseen = answer == Some(false);
        if unseen {
            let retry =
                kind == CredentialKind::AccessToken && self.cache.allow_unknown_token_lookup();
            if !retry {
                return Err(Error::Unauthenticated(Reason::CredentialUnknown));
            }
        } else if let Some(hit) = self.cache.credential(kind, &hash) {
            return Ok(hit);
        }
        // Boxed: a miss is rare and goes to storage anyway, and the
        // lookup's state would otherwise make every warm call's future
        // larger, copied each time it is moved.
        let looked_up = Box::pin(self.lookup_credential(kind, &hash)).await;
        if answer == Some(true)
            && matches!(
                &looked_up,
                Err(Error::Unauthenticated(Reason::CredentialUnknown))
            )
        {
            self.stats.filter.false_positives.add(1);
        }
        let verified = Arc::new(looked_up?);
        self.cache.add_known(&hash);
        self.cache.put_credential(hash, verified.clone());
        Ok(verified)
    }

    fn verify_session(&self, token: &str) -> Result<VerifiedCredential, Error> {
        if !SessionVerifier::looks_like_jwt(token) {
            return Err(Error::Unauthenticated(Reason::CredentialMalformed));
        }
        let verifier = self
            .sessions
            .as_ref()
            .ok_or(Error::Unauthenticated(Reason::CredentialKindNotAccepted))?;
        // A signature check (ES256 especially) costs far more than a hash.
        let token_hash = SecretHash::of(token);
        if let Some(claims) = self.cache.session(&token_hash) {
            let leeway = i64::try_from(verifier.leeway_secs()).unwrap_or(0);
            if claims.exp.saturating_add(leeway) <= self.clock.now().as_secs() {
                return Err(Error::Unauthenticated(Reason::CredentialExpired));
            }
            return Ok(VerifiedCredential::Session { claims });
        }
        let claims = Arc::new(verifier.verify(token).map_err(Error::Unauthenticated)?);
        self.cache.put_session(token_hash, claims.clone());
        Ok(VerifiedCredential::Session { claims })
    }

    /// What storage knows of a key or access token.
    async fn lookup_credential(
        &self,
        kind: CredentialKind,
        hash: &SecretHash,
    ) -> Result<VerifiedCredential, Error> {
        self.count_lookup();
        if kind == CredentialKind::AccessToken {
            return self.lookup_access_token(hash).await;
        }
        let key = self
            .store
            .api_key_by_hash(hash)
            .await?
            .filter(|key| key.hash.ct_eq(hash) && key.kind().credential_kind() == kind)
            .ok_or(Error::Unauthenticated(Reason::CredentialUnknown))?;
        match key.owner.clone() {
            KeyOwner::User(user) => Ok(VerifiedCredential::PersonalKey { key, user }),
            KeyOwner::Workspace(workspace_id) => {
                let workspace = self.workspace_by_id(&workspace_id).await?;
                Ok(VerifiedCredential::WorkspaceKey { key, workspace })
            }
        }
    }

    /// An access token as the resolution rules see it.
    async fn lookup_access_token(&self, hash: &SecretHash) -> Result<VerifiedCredential, Error> {
        let token = self
            .store
            .token_by_hash(hash)
            .await?
            .filter(|t| t.kind == TokenKind::Access && t.hash.ct_eq(hash))
            .ok_or(Error::Unauthenticated(Reason::CredentialUnknown))?;
        let workspace = self.workspace_by_id(&token.workspace_id).await?;
        Ok(VerifiedCredential::AccessToken(AccessTokenGrant {
            token_id: token.id,
            user_id: token.user_id,
            workspace,
            client_id: token.client_id,
            scopes: token.scopes,
            created_at: token.created_at,
            expires_at: token.expires_at,
            revoked_at: token.revoked_at,
        }))
    }

    /// A key's workspace, through the cache (workspaces do not change).
    pub(crate) async fn workspace_by_id(
        &self,
        id: &crate::directory::WorkspaceId,
    ) -> Result<crate::directory::Workspace, Error> {
        if let Some(hit) = self.cache.workspace(id) {
            return Ok(hit);
        }
        self.count_lookup();
        let workspace = self
            .store
            .workspace_by_id(id)
            .await?
            .ok_or(Error::Unauthenticated(Reason::CredentialUnknown))?;
        self.cache.put_workspace(workspace.clone());
        Ok(workspace)
    }

    /// The membership the rules need, through the cache.
    pub(super) async fn membership_for(
        &self,
        verified: &VerifiedCredential,
        slug: Option<&str>,
    ) -> Result<Option<Membership>, Error> {
        let Some(key) = verified.membership_needed(slug) else {
            return Ok(None);
        };
        self.cached_membership(key).await
    }

    /// A membership through the cache (dropped from it by the invalidation
    /// log on every change, like everything Authenticate reads).
    pub(super) async fn cached_membership(
        &self,
        key: MembershipKey,
    ) -> Result<Option<Membership>, Error> {
        if let Some(hit) = self.cache.membership(&key) {
            return Ok(hit);
        }
        self.count_lookup();
        let found = Box::pin(async {
            match &key {
                MembershipKey::BySlug(user, slug) => {
                    self.store.membership_by_slug(user, slug).await
                }
                MembershipKey::ById(user, workspace) => {
                    self.store.membership(workspace, user).await
                }
            }
        })
        .await?;
        self.cache.put_membership(key, found.clone());
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use crate::credential::strip_bearer;

    #[test]
    fn bearer_scheme_is_optional() {
        assert_eq!(strip_bearer("Bearer abc"), "abc");
        assert_eq!(strip_bearer("bearer  abc "), "abc");
        assert_eq!(strip_bearer("abc"), "abc");
        assert_eq!(strip_bearer(""), "");
    }
}
