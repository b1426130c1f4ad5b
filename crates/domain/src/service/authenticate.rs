use tracing::instrument;

use crate::api_key::KeyKind;
use crate::credential::{CredentialKind, Secret};
use crate::directory::Membership;
use crate::error::{Error, Reason};
use crate::principal::{Principal, PrincipalKind};
use crate::resolve::{MembershipLookup, VerifiedCredential, resolve_principal};
use crate::scope::{Scope, ScopeSet};
use crate::session::SessionVerifier;

use super::{Service, limits};

impl Service {
    /// Authenticate (CONTRACT §3): who is calling, in which workspace, with
    /// which scopes; refused with a reason otherwise.
    #[instrument(skip_all, fields(slug = slug.unwrap_or_default()))]
    pub async fn authenticate(
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
        | VerifiedCredential::PersonalKey { key } = &verified
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
    /// storage knows of it. Expiry and revocation are the rules' business.
    async fn verify_credential(&self, credential: &str) -> Result<VerifiedCredential, Error> {
        let credential = strip_bearer(credential);
        if credential.is_empty() {
            return Err(Error::Unauthenticated(Reason::CredentialMissing));
        }
        if CredentialKind::of(credential).is_none() {
            if !SessionVerifier::looks_like_jwt(credential) {
                return Err(Error::Unauthenticated(Reason::CredentialMalformed));
            }
            let verifier = self
                .sessions
                .as_ref()
                .ok_or(Error::Unauthenticated(Reason::CredentialKindNotAccepted))?;
            let claims = verifier
                .verify(credential)
                .map_err(Error::Unauthenticated)?;
            return Ok(VerifiedCredential::Session { claims });
        }
        let secret = Secret::parse(credential).map_err(Error::Unauthenticated)?;
        let hash = secret.hash();
        match secret.kind() {
            CredentialKind::WorkspaceKey | CredentialKind::PersonalKey => {
                let key = self
                    .store
                    .api_key_by_hash(&hash)
                    .await?
                    .filter(|key| {
                        key.hash.ct_eq(&hash) && key.kind.credential_kind() == secret.kind()
                    })
                    .ok_or(Error::Unauthenticated(Reason::CredentialUnknown))?;
                match key.kind {
                    KeyKind::Personal => Ok(VerifiedCredential::PersonalKey { key }),
                    KeyKind::Workspace => {
                        let workspace_id = key.workspace_id.as_ref().ok_or_else(|| {
                            Error::Internal("workspace key without workspace".into())
                        })?;
                        let workspace = self
                            .store
                            .workspace_by_id(workspace_id)
                            .await?
                            .ok_or(Error::Unauthenticated(Reason::CredentialUnknown))?;
                        Ok(VerifiedCredential::WorkspaceKey { key, workspace })
                    }
                }
            }
            CredentialKind::AccessToken => self.verify_access_token(&hash).await,
            CredentialKind::RefreshToken
            | CredentialKind::AuthorizationCode
            | CredentialKind::ClientSecret => {
                Err(Error::Unauthenticated(Reason::CredentialKindNotAccepted))
            }
        }
    }

    async fn membership_for(
        &self,
        verified: &VerifiedCredential,
        slug: Option<&str>,
    ) -> Result<Option<Membership>, Error> {
        let lookup = match verified {
            VerifiedCredential::Session { claims } => {
                return match slug {
                    Some(slug) => Ok(self
                        .store
                        .membership_by_slug(&crate::directory::UserId(claims.sub.clone()), slug)
                        .await?),
                    None => Ok(None),
                };
            }
            other => other.membership_needed(slug),
        };
        Ok(match lookup {
            None => None,
            Some((user, MembershipLookup::BySlug(slug))) => {
                self.store.membership_by_slug(user, slug).await?
            }
            Some((user, MembershipLookup::ById(workspace))) => {
                self.store.membership(workspace, user).await?
            }
        })
    }
}

/// Tolerates a credential passed with its `Bearer ` scheme.
pub(crate) fn strip_bearer(credential: &str) -> &str {
    let trimmed = credential.trim();
    match trimmed.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => trimmed[7..].trim_start(),
        _ => trimmed,
    }
}

#[cfg(test)]
mod tests {
    use super::strip_bearer;

    #[test]
    fn bearer_scheme_is_optional() {
        assert_eq!(strip_bearer("Bearer abc"), "abc");
        assert_eq!(strip_bearer("bearer  abc "), "abc");
        assert_eq!(strip_bearer("abc"), "abc");
        assert_eq!(strip_bearer(""), "");
    }
}
