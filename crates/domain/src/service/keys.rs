use tracing::instrument;

use crate::api_key::{ApiKey, ApiKeyId, KeyKind, KeyOwner};
use crate::clock::Timestamp;
use crate::credential::Secret;
use crate::directory::UserId;
use crate::error::{Error, Reason};
use crate::page::{Page, PageCursor, PageRequest};
use crate::principal::Principal;
use crate::scope::ScopeSet;

use super::{Service, check_name, limits};

/// A caller's request for a new key.
#[derive(Clone, Debug)]
pub struct NewKey {
    pub kind: KeyKind,
    pub workspace_slug: Option<String>,
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<Timestamp>,
}

/// A key to issue, authorisation already settled (the CLI's path).
#[derive(Clone, Debug)]
pub struct KeySpec {
    pub owner: KeyOwner,
    pub created_by: Option<UserId>,
    pub name: String,
    pub scopes: ScopeSet,
    pub expires_at: Option<Timestamp>,
}

impl Service {
    /// CreateKey: workspace keys need an owner/admin role there and never
    /// exceed the creator's scopes; personal keys carry personal scopes.
    #[instrument(skip_all, fields(kind = %request.kind))]
    pub async fn create_key(
        &self,
        caller: &Principal,
        request: NewKey,
    ) -> Result<(ApiKey, Secret), Error> {
        let caller_id = caller
            .user_id
            .clone()
            .ok_or(Error::PermissionDenied(Reason::CredentialKindNotAccepted))?;
        let scopes = parse_scopes(&request.scopes)?;
        check_scope_kind(request.kind, scopes)?;
        let owner = match request.kind {
            KeyKind::Workspace => {
                let slug = request
                    .workspace_slug
                    .as_deref()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| Error::invalid("workspace keys need a workspace_slug"))?;
                let membership = self.administered_workspace(&caller_id, slug).await?;
                if !scopes.is_subset(ScopeSet::of_role(membership.role).effective()) {
                    return Err(Error::PermissionDenied(Reason::ScopeExceedsGrantor));
                }
                KeyOwner::Workspace(membership.workspace.id)
            }
            KeyKind::Personal => {
                if !scopes.is_subset(caller.scopes.only_personal()) {
                    return Err(Error::PermissionDenied(Reason::ScopeExceedsGrantor));
                }
                if self.store.user(&caller_id).await?.is_none() {
                    return Err(Error::NotFound("user"));
                }
                KeyOwner::User(caller_id.clone())
            }
        };
        self.issue_key(KeySpec {
            owner,
            created_by: Some(caller_id),
            name: request.name,
            scopes,
            expires_at: request.expires_at,
        })
        .await
    }

    /// Issues a key whose authorisation is settled: validates the spec,
    /// generates the secret and stores only its hash.
    pub async fn issue_key(&self, spec: KeySpec) -> Result<(ApiKey, Secret), Error> {
        let name = check_name(&spec.name)?.to_owned();
        let now = self.clock.now();
        if spec.scopes.is_empty() {
            return Err(Error::invalid("a key needs at least one scope"));
        }
        let kind = spec.owner.kind();
        check_scope_kind(kind, spec.scopes)?;
        if let Some(expires_at) = spec.expires_at {
            if expires_at <= now {
                return Err(Error::invalid("expires_at must be in the future"));
            }
            if expires_at > now.plus_secs(self.config.max_key_lifetime_secs) {
                return Err(Error::invalid("expires_at is too far in the future"));
            }
        }
        let secret = Secret::generate(kind.credential_kind());
        let key = ApiKey {
            id: ApiKeyId::generate(),
            hash: secret.hash(),
            display: secret.display_form(),
            name,
            scopes: spec.scopes,
            owner: spec.owner,
            created_by: spec.created_by,
            created_at: now,
            expires_at: spec.expires_at,
            revoked_at: None,
            last_used_at: None,
        };
        self.store.insert_api_key(&key).await?;
        self.cache.add_known(&key.hash);
        tracing::info!(key_id = %key.id, kind = %kind, "api key created");
        Ok((key, secret))
    }

    /// RevokeKey: by its creator, by its user, or by an owner/admin of its
    /// workspace. Revoking twice returns the first revocation time.
    #[instrument(skip_all, fields(key_id = %key_id))]
    pub async fn revoke_key(
        &self,
        caller: &Principal,
        key_id: &ApiKeyId,
    ) -> Result<Timestamp, Error> {
        let key = self.key_by_id(key_id).await?;
        let caller_id = caller
            .user_id
            .as_ref()
            .ok_or(Error::PermissionDenied(Reason::CredentialKindNotAccepted))?;
        let mut allowed =
            key.created_by.as_ref() == Some(caller_id) || key.owner.user() == Some(caller_id);
        if !allowed && let Some(workspace) = key.owner.workspace() {
            allowed = self
                .store
                .membership(workspace, caller_id)
                .await?
                .is_some_and(|m| m.role.manages_keys());
        }
        if !allowed {
            return Err(Error::PermissionDenied(Reason::NotKeyOwner));
        }
        self.revoke_key_unchecked(&key.id).await
    }

    /// Revokes with authorisation already settled (the CLI's path).
    pub async fn revoke_key_unchecked(&self, key_id: &ApiKeyId) -> Result<Timestamp, Error> {
        let revoked_at = self
            .store
            .revoke_api_key(key_id, self.clock.now())
            .await?
            .ok_or(Error::NotFound("key"))?;
        self.after_change().await;
        tracing::info!(key_id = %key_id, "api key revoked");
        Ok(revoked_at)
    }

    /// ListKeys: a workspace's keys (owner/admin there), or the caller's own.
    pub async fn list_keys(
        &self,
        caller: &Principal,
        workspace_slug: Option<&str>,
        include_revoked: bool,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>, Error> {
        let caller_id = caller
            .user_id
            .as_ref()
            .ok_or(Error::PermissionDenied(Reason::CredentialKindNotAccepted))?;
        let owner = match workspace_slug.map(str::trim).filter(|s| !s.is_empty()) {
            Some(slug) => KeyOwner::Workspace(
                self.administered_workspace(caller_id, slug)
                    .await?
                    .workspace
                    .id,
            ),
            None => KeyOwner::User(caller_id.clone()),
        };
        self.list_keys_unchecked(&owner, include_revoked, page)
            .await
    }

    pub async fn list_keys_unchecked(
        &self,
        owner: &KeyOwner,
        include_revoked: bool,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>, Error> {
        let rows = self
            .store
            .list_api_keys(owner, include_revoked, page)
            .await?;
        Ok(Page::from_rows(rows, page, |key| {
            PageCursor::new(key.created_at.0, key.id.as_str())
        }))
    }

    async fn key_by_id(&self, key_id: &ApiKeyId) -> Result<ApiKey, Error> {
        if key_id.0.is_empty() || key_id.0.len() > limits::MAX_ID_LEN {
            return Err(Error::invalid("key_id is required"));
        }
        self.store
            .api_key_by_id(key_id)
            .await?
            .ok_or(Error::NotFound("key"))
    }
}

fn check_scope_kind(kind: KeyKind, scopes: ScopeSet) -> Result<(), Error> {
    let fits = match kind {
        KeyKind::Workspace => scopes == scopes.only_workspace(),
        KeyKind::Personal => scopes == scopes.only_personal(),
    };
    if fits {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            Reason::ScopeWrongKind,
            format!("{kind} keys carry {kind} scopes only"),
        ))
    }
}

pub(crate) fn parse_scopes(names: &[String]) -> Result<ScopeSet, Error> {
    if names.len() > limits::MAX_SCOPES {
        return Err(Error::invalid("too many scopes"));
    }
    ScopeSet::parse(names.iter().map(String::as_str))
        .map_err(|_| Error::InvalidArgument(Reason::ScopeUnknown, "unknown scope".into()))
}
