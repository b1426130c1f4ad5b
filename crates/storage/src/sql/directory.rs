//! Users, workspaces and memberships, mirrored from the main app.

use sqlx::{AssertSqlSafe, Pool};
use tracing::instrument;
use velocity_domain::invalidation::Invalidation;
use velocity_domain::page::PageRequest;
use velocity_domain::store::StoreResult;
use velocity_domain::{Membership, Role, User, UserId, Workspace, WorkspaceId};

use super::invalidations::execute_logged;
use super::{Conn, Db};
use crate::insert::Insert;
use crate::rows::{
    self, MEMBERSHIP_SELECT, MembershipRow, USER_COLUMNS, UserRow, WORKSPACE_COLUMNS, WorkspaceRow,
};

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn ping(pool: &Pool<Db>) -> StoreResult<()> {
    let classify = |e| crate::error::classify(e, "ping");
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(classify)
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn insert_user(conn: &mut Conn, user: &User) -> StoreResult<()> {
    let row = Insert::into("users")
        .value("id", user.id.as_str())
        .value("email", &user.email)
        .value("name", &user.name)
        .value("created_at", user.created_at.0);
    super::insert_row(conn, row, "user").await
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn user(pool: &Pool<Db>, id: &UserId) -> StoreResult<Option<User>> {
    let classify = |e| crate::error::classify(e, "user");
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    sqlx::query_as::<Db, UserRow>(AssertSqlSafe(sql))
        .bind(id.as_str())
        .fetch_optional(pool)
        .await
        .map(|row| row.map(Into::into))
        .map_err(classify)
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn insert_workspace(conn: &mut Conn, workspace: &Workspace) -> StoreResult<()> {
    let row = Insert::into("workspaces")
        .value("id", workspace.id.as_str())
        .value("slug", &workspace.slug)
        .value("name", &workspace.name)
        .value("created_at", workspace.created_at.0);
    super::insert_row(conn, row, "workspace slug").await
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn workspace_by_slug(
    pool: &Pool<Db>,
    slug: &str,
) -> StoreResult<Option<Workspace>> {
    let classify = |e| crate::error::classify(e, "workspace");
    let sql = format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE slug = $1");
    sqlx::query_as::<Db, WorkspaceRow>(AssertSqlSafe(sql))
        .bind(slug)
        .fetch_optional(pool)
        .await
        .map(|row| row.map(Into::into))
        .map_err(classify)
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn workspace_by_id(
    pool: &Pool<Db>,
    id: &WorkspaceId,
) -> StoreResult<Option<Workspace>> {
    let classify = |e| crate::error::classify(e, "workspace");
    let sql = format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE id = $1");
    sqlx::query_as::<Db, WorkspaceRow>(AssertSqlSafe(sql))
        .bind(id.as_str())
        .fetch_optional(pool)
        .await
        .map(|row| row.map(Into::into))
        .map_err(classify)
}

/// Logs [`Invalidation::Membership`]: the user's cached memberships are stale.
#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn upsert_membership(
    conn: &mut Conn,
    workspace: &WorkspaceId,
    user: &UserId,
    role: Role,
) -> StoreResult<()> {
    let change = sqlx::query(
        "INSERT INTO memberships (workspace_id, user_id, role) VALUES ($1, $2, $3) \
         ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role",
    )
    .bind(workspace.as_str())
    .bind(user.as_str())
    .bind(role.as_str());
    let invalidation = Invalidation::Membership(user.clone());
    execute_logged(conn, change, invalidation, "user or workspace")
        .await
        .map(|_| ())
}

/// Logs [`Invalidation::Membership`] if there was one to delete.
#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn delete_membership(
    conn: &mut Conn,
    workspace: &WorkspaceId,
    user: &UserId,
) -> StoreResult<bool> {
    let change = sqlx::query("DELETE FROM memberships WHERE workspace_id = $1 AND user_id = $2")
        .bind(workspace.as_str())
        .bind(user.as_str());
    let invalidation = Invalidation::Membership(user.clone());
    Ok(execute_logged(conn, change, invalidation, "membership").await? > 0)
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn membership_by_slug(
    pool: &Pool<Db>,
    user: &UserId,
    slug: &str,
) -> StoreResult<Option<Membership>> {
    let classify = |e| crate::error::classify(e, "membership");
    let sql = format!("{MEMBERSHIP_SELECT} WHERE m.user_id = $1 AND w.slug = $2");
    sqlx::query_as::<Db, MembershipRow>(AssertSqlSafe(sql))
        .bind(user.as_str())
        .bind(slug)
        .fetch_optional(pool)
        .await
        .map_err(classify)?
        .map(TryInto::try_into)
        .transpose()
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn membership(
    pool: &Pool<Db>,
    workspace: &WorkspaceId,
    user: &UserId,
) -> StoreResult<Option<Membership>> {
    let classify = |e| crate::error::classify(e, "membership");
    let sql = format!("{MEMBERSHIP_SELECT} WHERE m.workspace_id = $1 AND m.user_id = $2");
    sqlx::query_as::<Db, MembershipRow>(AssertSqlSafe(sql))
        .bind(workspace.as_str())
        .bind(user.as_str())
        .fetch_optional(pool)
        .await
        .map_err(classify)?
        .map(TryInto::try_into)
        .transpose()
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn memberships_of_user(
    pool: &Pool<Db>,
    user: &UserId,
    page: &PageRequest,
) -> StoreResult<Vec<Membership>> {
    let classify = |e| crate::error::classify(e, "membership");
    let sql = format!(
        "{MEMBERSHIP_SELECT} WHERE m.user_id = $1 AND w.slug > $2 ORDER BY w.slug LIMIT $3"
    );
    let after = page.after.as_ref().map_or("", |c| c.key.as_str());
    let rows = sqlx::query_as::<Db, MembershipRow>(AssertSqlSafe(sql))
        .bind(user.as_str())
        .bind(after)
        .bind(page.fetch_limit())
        .fetch_all(pool)
        .await
        .map_err(classify)?;
    rows::memberships(rows)
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn memberships_of_workspace(
    pool: &Pool<Db>,
    workspace: &WorkspaceId,
    page: &PageRequest,
) -> StoreResult<Vec<Membership>> {
    let classify = |e| crate::error::classify(e, "membership");
    let sql = format!(
        "{MEMBERSHIP_SELECT} WHERE m.workspace_id = $1 AND m.user_id > $2 \
         ORDER BY m.user_id LIMIT $3"
    );
    let after = page.after.as_ref().map_or("", |c| c.key.as_str());
    let rows = sqlx::query_as::<Db, MembershipRow>(AssertSqlSafe(sql))
        .bind(workspace.as_str())
        .bind(after)
        .bind(page.fetch_limit())
        .fetch_all(pool)
        .await
        .map_err(classify)?;
    rows::memberships(rows)
}
