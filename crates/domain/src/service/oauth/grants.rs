//! The apps a user has authorized: listed by the user (or a workspace's
//! owners and admins, for the workspace) and revoked whole, every token of
//! the grant at once, on every replica.

use tracing::instrument;

use crate::clock::Timestamp;
use crate::error::{Error, Reason};
use crate::oauth::{FamilyId, Grant, GrantsOf};
use crate::page::{Page, PageCursor, PageRequest};
use crate::principal::Principal;
use crate::service::{Service, limits};

impl Service {
    /// ListGrants: the caller's live grants, in every workspace; with a
    /// slug, every member's live grants there (owners and admins only).
    pub async fn list_grants(
        &self,
        caller: &Principal,
        workspace_slug: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<Grant>, Error> {
        let user = caller
            .user_id
            .as_ref()
            .ok_or(Error::PermissionDenied(Reason::CredentialKindNotAccepted))?;
        let now = self.clock.now();
        let rows = match workspace_slug.map(str::trim).filter(|s| !s.is_empty()) {
            None => {
                self.store
                    .list_grants(GrantsOf::User(user), now, page)
                    .await?
            }
            Some(slug) => {
                let membership = self.administered_workspace(user, slug).await?;
                let workspace = GrantsOf::Workspace(&membership.workspace.id);
                self.store.list_grants(workspace, now, page).await?
            }
        };
        Ok(Page::from_rows(rows, page, |grant| {
            PageCursor::new(grant.created_at.0, grant.id.as_str())
        }))
    }

    /// RevokeGrant: by the user who granted it, or an owner/admin of its
    /// workspace. Revoking twice returns the first revocation time.
    #[instrument(skip_all, fields(grant_id = %grant_id))]
    pub async fn revoke_grant(
        &self,
        caller: &Principal,
        grant_id: &FamilyId,
    ) -> Result<Timestamp, Error> {
        let user = caller
            .user_id
            .as_ref()
            .ok_or(Error::PermissionDenied(Reason::CredentialKindNotAccepted))?;
        if grant_id.0.is_empty() || grant_id.0.len() > limits::MAX_ID_LEN {
            return Err(Error::invalid("grant_id is required"));
        }
        let grant = self
            .store
            .grant(grant_id)
            .await?
            .ok_or(Error::NotFound("grant"))?;
        let allowed = &grant.user_id == user
            || self
                .store
                .membership(&grant.workspace_id, user)
                .await?
                .is_some_and(|m| m.role.manages_keys());
        if !allowed {
            return Err(Error::PermissionDenied(Reason::NotGrantHolder));
        }
        if let Some(revoked_at) = grant.revoked_at {
            return Ok(revoked_at);
        }
        let now = self.clock.now();
        let tokens = self.revoke_family(grant_id, now).await?;
        tracing::info!(client_id = %grant.client_id, tokens, "grant revoked");
        Ok(now)
    }
}
