//! The SQL both backends share, written once against `Db`.
//!
//! SQLite and PostgreSQL accept the same `$n` placeholders, `RETURNING` and
//! `ON CONFLICT`, and our columns hold only text, i64 and bytes, so one body
//! of queries serves both. This directory is not a module of the crate
//! root: each backend module defines `type Db` (its `sqlx::Database`, which
//! implements [`crate::Backend`]) and includes it with
//! `#[path = "../sql/mod.rs"] mod sql;`, so the same plain code is compiled
//! once per backend. rustfmt formats it and errors point at these lines.
//!
//! Here the domain's traits are implemented by forwarding each call to the
//! file of its concern, where the SQL is. Reads run on the pool; writes are
//! functions of one connection, handed to the backend's `write` (one
//! statement) or `write_atomic` (several, as one) with owned copies of
//! their arguments, since on SQLite they run on the writer's task. A
//! grant's write (a code stored or spent, a refresh token rotated) is a
//! `crate::claim::Claim`, which the backend runs (`crate::Backend::claim`).

mod directory;
mod invalidations;
mod keys;
mod oauth;

use async_trait::async_trait;
use velocity_domain::api_key::KeyOwner;
use velocity_domain::invalidation::Invalidation;
use velocity_domain::oauth::{
    AuthorizationCode, ClientId, FamilyId, Grant, GrantsOf, OAuthApp, OAuthToken, PresentedCode,
    RetiringSecret, TokenId, TokenSeed,
};
use velocity_domain::page::PageRequest;
use velocity_domain::store::{InvalidationStore, OAuthStore, StoreResult};
use velocity_domain::{
    ApiKey, ApiKeyId, Membership, Role, SecretHash, Store, Timestamp, User, UserId, Workspace,
    WorkspaceId,
};

use super::Db;
use crate::claim::Claim;
use crate::insert::Insert;
use crate::writer::BoxFuture;
use crate::{Backend, SqlStore};

/// The connection a write runs on, inside the transaction its caller chose.
type Conn = <Db as sqlx::Database>::Connection;

#[async_trait]
impl Store for SqlStore<Db> {
    async fn ping(&self) -> StoreResult<()> {
        if !self.accepts_writes() {
            return Err(velocity_domain::StoreError::Unavailable(
                "the storage writer has stopped".to_owned(),
            ));
        }
        directory::ping(&self.pool).await
    }

    async fn insert_user(&self, user: &User) -> StoreResult<()> {
        let user = user.clone();
        self.write("user", move |conn: &mut Conn| -> BoxFuture<'_, _> {
            Box::pin(async move { directory::insert_user(conn, &user).await })
        })
        .await
    }

    async fn user(&self, id: &UserId) -> StoreResult<Option<User>> {
        directory::user(&self.pool, id).await
    }

    async fn insert_workspace(&self, workspace: &Workspace) -> StoreResult<()> {
        let workspace = workspace.clone();
        self.write("workspace", move |conn: &mut Conn| -> BoxFuture<'_, _> {
            Box::pin(async move { directory::insert_workspace(conn, &workspace).await })
        })
        .await
    }

    async fn workspace_by_slug(&self, slug: &str) -> StoreResult<Option<Workspace>> {
        directory::workspace_by_slug(&self.pool, slug).await
    }

    async fn workspace_by_id(&self, id: &WorkspaceId) -> StoreResult<Option<Workspace>> {
        directory::workspace_by_id(&self.pool, id).await
    }

    async fn upsert_membership(
        &self,
        workspace: &WorkspaceId,
        user: &UserId,
        role: Role,
    ) -> StoreResult<()> {
        let (workspace, user) = (workspace.clone(), user.clone());
        self.write_atomic("membership", move |conn: &mut Conn| -> BoxFuture<'_, _> {
            Box::pin(
                async move { directory::upsert_membership(conn, &workspace, &user, role).await },
            )
        })
        .await
    }

    async fn delete_membership(&self, workspace: &WorkspaceId, user: &UserId) -> StoreResult<bool> {
        let (workspace, user) = (workspace.clone(), user.clone());
        self.write_atomic("membership", move |conn: &mut Conn| -> BoxFuture<'_, _> {
            Box::pin(async move { directory::delete_membership(conn, &workspace, &user).await })
        })
        .await
    }

    async fn membership_by_slug(
        &self,
        user: &UserId,
        slug: &str,
    ) -> StoreResult<Option<Membership>> {
        directory::membership_by_slug(&self.pool, user, slug).await
    }

    async fn membership(
        &self,
        workspace: &WorkspaceId,
        user: &UserId,
    ) -> StoreResult<Option<Membership>> {
        directory::membership(&self.pool, workspace, user).await
    }

    async fn memberships_of_user(
        &self,
        user: &UserId,
        page: &PageRequest,
    ) -> StoreResult<Vec<Membership>> {
        directory::memberships_of_user(&self.pool, user, page).await
    }

    async fn memberships_of_workspace(
        &self,
        workspace: &WorkspaceId,
        page: &PageRequest,
    ) -> StoreResult<Vec<Membership>> {
        directory::memberships_of_workspace(&self.pool, workspace, page).await
    }

    async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        let key = key.clone();
        self.write_atomic("key", move |conn: &mut Conn| -> BoxFuture<'_, _> {
            Box::pin(async move { keys::insert_api_key(conn, &key).await })
        })
        .await
    }

    async fn api_key_by_hash(&self, hash: &SecretHash) -> StoreResult<Option<ApiKey>> {
        keys::api_key_by_hash(&self.pool, hash).await
    }

    async fn api_key_by_id(&self, id: &ApiKeyId) -> StoreResult<Option<ApiKey>> {
        keys::api_key_by_id(&self.pool, id).await
    }

    async fn list_api_keys(
        &self,
        owner: &KeyOwner,
        include_revoked: bool,
        page: &PageRequest,
    ) -> StoreResult<Vec<ApiKey>> {
        keys::list_api_keys(&self.pool, owner, include_revoked, page).await
    }

    async fn revoke_api_key(&self, id: &ApiKeyId, at: Timestamp) -> StoreResult<Option<Timestamp>> {
        let id = id.clone();
        self.write_atomic("key", move |conn: &mut Conn| -> BoxFuture<'_, _> {
            Box::pin(async move { keys::revoke_api_key(conn, &id, at).await })
        })
        .await
    }

    async fn record_key_usage(&self, usage: &[(ApiKeyId, Timestamp)]) -> StoreResult<()> {
        let usage = usage.to_vec();
        self.write_atomic("key usage", move |conn: &mut Conn| -> BoxFuture<'_, _> {
            Box::pin(async move { keys::record_key_usage(conn, &usage).await })
        })
        .await
    }
}

#[async_trait]
impl OAuthStore for SqlStore<Db> {
    async fn insert_app(&self, app: &OAuthApp) -> StoreResult<()> {
        let app = app.clone();
        self.write("app", move |conn: &mut Conn| -> BoxFuture<'_, _> {
            Box::pin(async move { oauth::insert_app(conn, &app).await })
        })
        .await
    }

    async fn app(&self, client_id: &ClientId) -> StoreResult<Option<OAuthApp>> {
        oauth::app(&self.pool, client_id).await
    }

    async fn list_apps(
        &self,
        workspace: Option<&WorkspaceId>,
        page: &PageRequest,
    ) -> StoreResult<Vec<OAuthApp>> {
        oauth::list_apps(&self.pool, workspace, page).await
    }

    async fn update_app(&self, app: &OAuthApp) -> StoreResult<bool> {
        let app = app.clone();
        self.write_atomic("app", move |conn: &mut Conn| -> BoxFuture<'_, _> {
            Box::pin(async move { oauth::update_app(conn, &app).await })
        })
        .await
    }

    async fn set_app_secret(
        &self,
        client_id: &ClientId,
        hash: &SecretHash,
        previous: Option<&RetiringSecret>,
    ) -> StoreResult<bool> {
        let (client_id, hash, previous) = (client_id.clone(), *hash, previous.cloned());
        self.write_atomic("app", move |conn: &mut Conn| -> BoxFuture<'_, _> {
            Box::pin(async move {
                oauth::set_app_secret(conn, &client_id, &hash, previous.as_ref()).await
            })
        })
        .await
    }

    async fn delete_app(&self, client_id: &ClientId) -> StoreResult<bool> {
        let client_id = client_id.clone();
        self.write_atomic("app", move |conn: &mut Conn| -> BoxFuture<'_, _> {
            Box::pin(async move { oauth::delete_app(conn, &client_id).await })
        })
        .await
    }

    async fn insert_code(&self, code: &AuthorizationCode) -> StoreResult<()> {
        <Db as Backend>::claim(self, Claim::new_code(code))
            .await
            .map(|_| ())
    }

    async fn code_by_hash(&self, hash: &SecretHash) -> StoreResult<Option<AuthorizationCode>> {
        oauth::code_by_hash(&self.pool, hash).await
    }

    async fn redeem_code(
        &self,
        hash: &SecretHash,
        at: Timestamp,
        tokens: &[OAuthToken],
    ) -> StoreResult<bool> {
        <Db as Backend>::claim(self, oauth::redeem_code(hash, at, tokens)).await
    }

    async fn token_by_hash(&self, hash: &SecretHash) -> StoreResult<Option<OAuthToken>> {
        oauth::token_by_hash(&self.pool, hash).await
    }

    async fn redeem_presented_code(
        &self,
        code: &PresentedCode<'_>,
        at: Timestamp,
        tokens: &[TokenSeed],
    ) -> StoreResult<Option<AuthorizationCode>> {
        let claim = oauth::redeem_presented_code(code, at, tokens);
        <Db as Backend>::claim_code(self, claim, code.hash).await
    }

    async fn rotate_refresh_token(
        &self,
        id: &TokenId,
        at: Timestamp,
        reuse_since: Option<Timestamp>,
        tokens: &[OAuthToken],
    ) -> StoreResult<bool> {
        let claim = oauth::rotate_refresh_token(id, at, reuse_since, tokens);
        <Db as Backend>::claim(self, claim).await
    }

    async fn revoke_token(&self, id: &TokenId, at: Timestamp) -> StoreResult<bool> {
        let id = id.clone();
        self.write_atomic("token", move |conn: &mut Conn| -> BoxFuture<'_, _> {
            Box::pin(async move { oauth::revoke_token(conn, &id, at).await })
        })
        .await
    }

    async fn revoke_family(&self, family_id: &FamilyId, at: Timestamp) -> StoreResult<u64> {
        let family_id = family_id.clone();
        self.write_atomic("token", move |conn: &mut Conn| -> BoxFuture<'_, _> {
            Box::pin(async move { oauth::revoke_family(conn, &family_id, at).await })
        })
        .await
    }

    async fn grant(&self, id: &FamilyId) -> StoreResult<Option<Grant>> {
        oauth::grant(&self.pool, id).await
    }

    async fn list_grants(
        &self,
        of: GrantsOf<'_>,
        now: Timestamp,
        page: &PageRequest,
    ) -> StoreResult<Vec<Grant>> {
        oauth::list_grants(&self.pool, of, now, page).await
    }

    async fn shared_secret(&self, name: &str, candidate: &[u8; 32]) -> StoreResult<[u8; 32]> {
        let (name, candidate) = (name.to_owned(), *candidate);
        self.write_atomic("secret", move |conn: &mut Conn| -> BoxFuture<'_, _> {
            Box::pin(async move { oauth::shared_secret(conn, &name, &candidate).await })
        })
        .await
    }
}

#[async_trait]
impl InvalidationStore for SqlStore<Db> {
    async fn invalidations_after(
        &self,
        cursor: i64,
        limit: i64,
    ) -> StoreResult<Vec<(i64, Invalidation)>> {
        invalidations::invalidations_after(&self.pool, cursor, limit).await
    }

    async fn invalidations_between(
        &self,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<(i64, Invalidation)>> {
        invalidations::invalidations_between(&self.pool, from, to).await
    }

    async fn invalidation_cursor(&self) -> StoreResult<i64> {
        invalidations::invalidation_cursor(&self.pool).await
    }

    async fn prune_invalidations(&self, older_than: Timestamp) -> StoreResult<u64> {
        self.write("invalidation", move |conn: &mut Conn| -> BoxFuture<'_, _> {
            Box::pin(async move { invalidations::prune_invalidations(conn, older_than).await })
        })
        .await
    }

    async fn key_hashes_after(
        &self,
        after: Option<&SecretHash>,
        limit: i64,
    ) -> StoreResult<Vec<SecretHash>> {
        invalidations::key_hashes_after(&self.pool, after, limit).await
    }

    async fn access_token_hashes_after(
        &self,
        after: Option<&SecretHash>,
        limit: i64,
        now: Timestamp,
    ) -> StoreResult<Vec<SecretHash>> {
        invalidations::access_token_hashes_after(&self.pool, after, limit, now).await
    }
}

/// Runs one INSERT; `what` names the row in conflict and reference errors.
async fn insert_row(conn: &mut Conn, row: Insert<Db>, what: &'static str) -> StoreResult<()> {
    let classify = |e| crate::error::classify(e, what);
    row.query()
        .map_err(classify)?
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(classify)
}
