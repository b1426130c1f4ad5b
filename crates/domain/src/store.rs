//! What the use-cases need from storage. `velocity-storage` implements it for
//! SQLite and PostgreSQL; both must pass the same conformance suite.

use async_trait::async_trait;

use crate::api_key::{ApiKey, ApiKeyId, KeyOwner};
use crate::clock::Timestamp;
use crate::credential::SecretHash;
use crate::directory::{Membership, Role, User, UserId, Workspace, WorkspaceId};
use crate::error::StoreError;
use crate::invalidation::Invalidation;
use crate::oauth::{
    AuthorizationCode, ClientId, FamilyId, Grant, GrantsOf, OAuthApp, OAuthToken, PresentedCode,
    RetiringSecret, TokenId, TokenSeed,
};
use crate::page::PageRequest;

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: OAuthStore + InvalidationStore + Send + Sync + 'static {
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
    /// A user's memberships by workspace slug, after `page.after` (keyed by
    /// slug), at most `page.fetch_limit()`.
    async fn memberships_of_user(
        &self,
        user: &UserId,
        page: &PageRequest,
    ) -> StoreResult<Vec<Membership>>;
    /// A workspace's memberships by user id, after `page.after` (keyed by
    /// user id), at most `page.fetch_limit()`.
    async fn memberships_of_workspace(
        &self,
        workspace: &WorkspaceId,
        page: &PageRequest,
    ) -> StoreResult<Vec<Membership>>;

    async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<()>;
    async fn api_key_by_hash(&self, hash: &SecretHash) -> StoreResult<Option<ApiKey>>;
    async fn api_key_by_id(&self, id: &ApiKeyId) -> StoreResult<Option<ApiKey>>;
    /// An owner's keys, newest first (by creation time, then id), after
    /// `page.after`, at most `page.fetch_limit()`.
    async fn list_api_keys(
        &self,
        owner: &KeyOwner,
        include_revoked: bool,
        page: &PageRequest,
    ) -> StoreResult<Vec<ApiKey>>;
    /// Marks the key revoked unless it already is; returns its revocation time.
    async fn revoke_api_key(&self, id: &ApiKeyId, at: Timestamp) -> StoreResult<Option<Timestamp>>;
    /// Records when keys were last used, in one batch.
    async fn record_key_usage(&self, usage: &[(ApiKeyId, Timestamp)]) -> StoreResult<()>;
}

/// OAuth storage. Redeeming a code and rotating a refresh token are each one
/// transaction around a conditional update, so of any number of concurrent
/// attempts exactly one wins; only a refresh reuse interval (`reuse_since`
/// below) lets more than one claim the same refresh token.
#[async_trait]
pub trait OAuthStore: Send + Sync + 'static {
    async fn insert_app(&self, app: &OAuthApp) -> StoreResult<()>;
    async fn app(&self, client_id: &ClientId) -> StoreResult<Option<OAuthApp>>;
    /// Apps oldest first (by creation time, then client id), after
    /// `page.after`, at most `page.fetch_limit()`: a workspace's, or with
    /// `None` every app.
    async fn list_apps(
        &self,
        workspace: Option<&WorkspaceId>,
        page: &PageRequest,
    ) -> StoreResult<Vec<OAuthApp>>;
    /// Stores the app's name, client type, redirect URIs and scopes;
    /// returns whether it exists.
    async fn update_app(&self, app: &OAuthApp) -> StoreResult<bool>;
    /// Replaces the secret, keeping `previous` (or none) as the retiring
    /// one; returns whether the app exists.
    async fn set_app_secret(
        &self,
        client_id: &ClientId,
        hash: &SecretHash,
        previous: Option<&RetiringSecret>,
    ) -> StoreResult<bool>;
    /// Deletes the app with its codes and tokens; returns whether it existed.
    async fn delete_app(&self, client_id: &ClientId) -> StoreResult<bool>;

    async fn insert_code(&self, code: &AuthorizationCode) -> StoreResult<()>;
    async fn code_by_hash(&self, hash: &SecretHash) -> StoreResult<Option<AuthorizationCode>>;
    /// Marks the code used and stores `tokens`, atomically. `false` (and
    /// nothing stored) when the code was already used.
    async fn redeem_code(
        &self,
        hash: &SecretHash,
        at: Timestamp,
        tokens: &[OAuthToken],
    ) -> StoreResult<bool>;

    /// Spends the code if it is as presented: unspent, issued to that
    /// client for that redirect URI and PKCE challenge, and unexpired at
    /// `at`. Then stores `tokens` (created at `at`) with the code's family,
    /// owner and scopes, and records their grant, all atomically: the code
    /// as stored, now spent. `None`, and nothing changed, when no code is
    /// as presented; the caller then reads it to say why. One round trip
    /// where reading first takes two.
    async fn redeem_presented_code(
        &self,
        code: &PresentedCode<'_>,
        at: Timestamp,
        tokens: &[TokenSeed],
    ) -> StoreResult<Option<AuthorizationCode>>;

    async fn token_by_hash(&self, hash: &SecretHash) -> StoreResult<Option<OAuthToken>>;
    /// Marks a refresh token rotated at `at` and stores `tokens`,
    /// atomically. With `reuse_since` (the refresh reuse interval), a token
    /// already rotated is claimed again if it was rotated at or after
    /// `reuse_since` and no other token of its family was rotated later;
    /// its first `rotated_at` is kept, so a reuse never extends the window.
    /// `false` (and nothing stored) when it is not a refresh token, is
    /// revoked, or was already rotated and does not qualify.
    async fn rotate_refresh_token(
        &self,
        id: &TokenId,
        at: Timestamp,
        reuse_since: Option<Timestamp>,
        tokens: &[OAuthToken],
    ) -> StoreResult<bool>;
    /// Revokes one token; returns whether it was active.
    async fn revoke_token(&self, id: &TokenId, at: Timestamp) -> StoreResult<bool>;
    /// Revokes every token of a family and its grant; returns how many
    /// tokens were active.
    async fn revoke_family(&self, family_id: &FamilyId, at: Timestamp) -> StoreResult<u64>;

    /// The grant a code's redemption made (`redeem_code` stores it with the
    /// tokens, and `rotate_refresh_token` records each use).
    async fn grant(&self, id: &FamilyId) -> StoreResult<Option<Grant>>;
    /// Live grants (not revoked, refresh token unexpired at `now`), newest
    /// first (by creation time, then id), after `page.after`, at most
    /// `page.fetch_limit()`.
    async fn list_grants(
        &self,
        of: GrantsOf<'_>,
        now: Timestamp,
        page: &PageRequest,
    ) -> StoreResult<Vec<Grant>>;

    /// A 32-byte secret shared by every replica: `candidate` is stored if
    /// none exists yet under `name`, and the stored one is returned.
    async fn shared_secret(&self, name: &str, candidate: &[u8; 32]) -> StoreResult<[u8; 32]>;
}

/// The invalidation log and what the known-credential filter is built from.
#[async_trait]
pub trait InvalidationStore: Send + Sync + 'static {
    /// Log entries with an id above `cursor`, oldest first, at most `limit`.
    async fn invalidations_after(
        &self,
        cursor: i64,
        limit: i64,
    ) -> StoreResult<Vec<(i64, Invalidation)>>;
    /// Log entries with ids in `from..=to` (to look again for ids a
    /// PostgreSQL sequence handed out but had not committed when we read).
    async fn invalidations_between(
        &self,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<(i64, Invalidation)>>;
    /// The newest log id (0 when empty).
    async fn invalidation_cursor(&self) -> StoreResult<i64>;
    async fn prune_invalidations(&self, older_than: Timestamp) -> StoreResult<u64>;
    /// API key hashes above `after`, in order, one page at a time.
    async fn key_hashes_after(
        &self,
        after: Option<&SecretHash>,
        limit: i64,
    ) -> StoreResult<Vec<SecretHash>>;
    /// Unexpired access-token hashes above `after`, one page at a time.
    async fn access_token_hashes_after(
        &self,
        after: Option<&SecretHash>,
        limit: i64,
        now: Timestamp,
    ) -> StoreResult<Vec<SecretHash>>;
}
