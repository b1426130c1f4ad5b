//! What the use-cases need from storage. `velocity-storage` implements it for
//! SQLite and PostgreSQL; both must pass the same conformance suite.

use async_trait::async_trait;

use crate::api_key::{ApiKey, ApiKeyId, KeyOwner};
use crate::clock::Timestamp;
use crate::credential::SecretHash;
use crate::directory::{Membership, Role, User, UserId, Workspace, WorkspaceId};
use crate::error::StoreError;

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip, for readiness.
    async fn ping(&self) -> StoreResult<()>;

    async fn insert_user(&self, user: &User) -> StoreResult<()>;
    async fn user(&self, id: &UserId) -> StoreResult<Option<User>>;

    async fn insert_workspace(&self, workspace: &Workspace) -> StoreResult<()>;
    async fn workspace_by_slug(&self, slug: &str) -> StoreResult<Option<Workspace>>;
    async fn workspace_by_id(&self, id: &WorkspaceId) -> StoreResult<Option<Workspace>>;

    /// Creates or changes a membership.
    async fn upsert_membership(
        &self,
        workspace: &WorkspaceId,
        user: &UserId,
        role: Role,
    ) -> StoreResult<()>;
    /// Returns whether a membership was removed.
    async fn delete_membership(&self, workspace: &WorkspaceId, user: &UserId) -> StoreResult<bool>;
    /// The user's membership in the workspace with that slug.
    async fn membership_by_slug(
        &self,
        user: &UserId,
        slug: &str,
    ) -> StoreResult<Option<Membership>>;
    async fn membership(
        &self,
        workspace: &WorkspaceId,
        user: &UserId,
    ) -> StoreResult<Option<Membership>>;
    async fn memberships_of_user(&self, user: &UserId) -> StoreResult<Vec<Membership>>;
    async fn memberships_of_workspace(
        &self,
        workspace: &WorkspaceId,
    ) -> StoreResult<Vec<Membership>>;

    async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<()>;
    async fn api_key_by_hash(&self, hash: &SecretHash) -> StoreResult<Option<ApiKey>>;
    async fn api_key_by_id(&self, id: &ApiKeyId) -> StoreResult<Option<ApiKey>>;
    async fn list_api_keys(
        &self,
        owner: &KeyOwner,
        include_revoked: bool,
    ) -> StoreResult<Vec<ApiKey>>;
    /// Marks the key revoked unless it already is; returns its revocation time.
    async fn revoke_api_key(&self, id: &ApiKeyId, at: Timestamp) -> StoreResult<Option<Timestamp>>;
    /// Records when keys were last used, in one batch.
    async fn record_key_usage(&self, usage: &[(ApiKeyId, Timestamp)]) -> StoreResult<()>;
}
