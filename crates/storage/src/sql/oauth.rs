//! OAuth apps, authorization codes, token families and the secrets the
//! replicas share.

use sqlx::{AssertSqlSafe, Pool};
use tracing::instrument;
use velocity_domain::invalidation::Invalidation;
use velocity_domain::oauth::{
    AuthorizationCode, ClientId, FamilyId, Grant, GrantsOf, OAuthApp, OAuthToken, PresentedCode,
    RetiringSecret, TokenId, TokenSeed,
};
use velocity_domain::page::PageRequest;
use velocity_domain::store::StoreResult;
use velocity_domain::{SecretHash, StoreError, Timestamp, WorkspaceId};

use super::invalidations::{execute_logged, log_invalidation};
use super::{Conn, Db};
use crate::claim::{Claim, Form, Key};
use crate::insert::Insert;
use crate::rows::{
    APP_COLUMNS, AppRow, CODE_COLUMNS, CodeRow, GRANT_COLUMNS, GRANT_FROM, GrantRow, TOKEN_COLUMNS,
    TokenRow,
};

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn insert_app(conn: &mut Conn, app: &OAuthApp) -> StoreResult<()> {
    let row = Insert::into("oauth_apps")
        .value("client_id", app.client_id.as_str())
        .value("name", &app.name)
        .value("client_type", app.client_type.as_str())
        .value(
            "secret_hash",
            app.secret_hash.as_ref().map(|h| h.as_bytes().as_slice()),
        )
        .value(
            "previous_secret_hash",
            app.previous_secret
                .as_ref()
                .map(|p| p.hash.as_bytes().as_slice()),
        )
        .value(
            "previous_secret_until",
            app.previous_secret.as_ref().map(|p| p.until.0),
        )
        .value("redirect_uris", app.redirect_uris.join("\n"))
        .value("allowed_scopes", i64::from(app.allowed_scopes.bits()))
        .value(
            "workspace_id",
            app.workspace_id.as_ref().map(|w| w.as_str()),
        )
        .value("created_by", app.created_by.as_ref().map(|u| u.as_str()))
        .value("created_at", app.created_at.0);
    super::insert_row(conn, row, "app").await
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn app(pool: &Pool<Db>, client_id: &ClientId) -> StoreResult<Option<OAuthApp>> {
    let classify = |e| crate::error::classify(e, "app");
    let sql = format!("SELECT {APP_COLUMNS} FROM oauth_apps WHERE client_id = $1");
    sqlx::query_as::<Db, AppRow>(AssertSqlSafe(sql))
        .bind(client_id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(classify)?
        .map(TryInto::try_into)
        .transpose()
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn list_apps(
    pool: &Pool<Db>,
    workspace: Option<&WorkspaceId>,
    page: &PageRequest,
) -> StoreResult<Vec<OAuthApp>> {
    let classify = |e| crate::error::classify(e, "app");
    // Without a cursor, start before every app: no creation time is i64::MIN.
    let (at, key) = page
        .after
        .as_ref()
        .map_or((i64::MIN, ""), |c| (c.at, c.key.as_str()));
    let only_workspace = if workspace.is_some() {
        "workspace_id = $4 AND"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {APP_COLUMNS} FROM oauth_apps \
         WHERE {only_workspace} (created_at > $1 OR (created_at = $1 AND client_id > $2)) \
         ORDER BY created_at, client_id LIMIT $3"
    );
    let mut query = sqlx::query_as::<Db, AppRow>(AssertSqlSafe(sql))
        .bind(at)
        .bind(key)
        .bind(page.fetch_limit());
    if let Some(workspace) = workspace {
        query = query.bind(workspace.as_str());
    }
    query
        .fetch_all(pool)
        .await
        .map_err(classify)?
        .into_iter()
        .map(TryInto::try_into)
        .collect()
}

/// Logs [`Invalidation::App`]: cached copies are stale.
#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn update_app(conn: &mut Conn, app: &OAuthApp) -> StoreResult<bool> {
    let change = sqlx::query(
        "UPDATE oauth_apps SET name = $2, client_type = $3, redirect_uris = $4, \
         allowed_scopes = $5 WHERE client_id = $1",
    )
    .bind(app.client_id.as_str())
    .bind(&app.name)
    .bind(app.client_type.as_str())
    .bind(app.redirect_uris.join("\n"))
    .bind(i64::from(app.allowed_scopes.bits()));
    let invalidation = Invalidation::App(app.client_id.clone());
    let affected = execute_logged(conn, change, invalidation, "app").await?;
    Ok(affected == 1)
}

/// Logs [`Invalidation::App`]: cached copies hold the old secrets.
#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn set_app_secret(
    conn: &mut Conn,
    client_id: &ClientId,
    hash: &SecretHash,
    previous: Option<&RetiringSecret>,
) -> StoreResult<bool> {
    let change = sqlx::query(
        "UPDATE oauth_apps SET secret_hash = $2, previous_secret_hash = $3, \
         previous_secret_until = $4 WHERE client_id = $1",
    )
    .bind(client_id.as_str())
    .bind(hash.as_bytes().as_slice())
    .bind(previous.map(|p| p.hash.as_bytes().as_slice()))
    .bind(previous.map(|p| p.until.0));
    let invalidation = Invalidation::App(client_id.clone());
    let affected = execute_logged(conn, change, invalidation, "app").await?;
    Ok(affected == 1)
}

/// Codes and tokens go with the app (foreign keys cascade), so this logs
/// [`Invalidation::AccessTokens`], and [`Invalidation::App`].
#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn delete_app(conn: &mut Conn, client_id: &ClientId) -> StoreResult<bool> {
    let change =
        sqlx::query("DELETE FROM oauth_apps WHERE client_id = $1").bind(client_id.as_str());
    let affected = execute_logged(conn, change, Invalidation::AccessTokens, "app").await?;
    if affected == 1 {
        log_invalidation(conn, &Invalidation::App(client_id.clone()))
            .await
            .map_err(|e| crate::error::classify(e, "app"))?;
    }
    Ok(affected == 1)
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn code_by_hash(
    pool: &Pool<Db>,
    hash: &SecretHash,
) -> StoreResult<Option<AuthorizationCode>> {
    let classify = |e| crate::error::classify(e, "code");
    let sql = format!("SELECT {CODE_COLUMNS} FROM oauth_codes WHERE code_hash = $1");
    sqlx::query_as::<Db, CodeRow>(AssertSqlSafe(sql))
        .bind(hash.as_bytes().as_slice())
        .fetch_optional(pool)
        .await
        .map_err(classify)?
        .map(TryInto::try_into)
        .transpose()
}

/// Spends the code, if unspent, and issues `tokens`.
pub(super) fn redeem_code(hash: &SecretHash, at: Timestamp, tokens: &[OAuthToken]) -> Claim {
    let mut claim = Claim::draft("code").touching(Key::Code(hash.as_bytes().to_vec()));
    let hash = claim.bind(hash.as_bytes().as_slice());
    let at = claim.bind(at.0);
    let sql = move || {
        format!(
            "UPDATE oauth_codes SET used_at = {at} WHERE code_hash = {hash} AND used_at IS NULL"
        )
    };
    claim.issuing(Form::RedeemCode, sql, tokens)
}

/// Spends the code if it is as presented and unexpired at `at`, and issues
/// `seeds` from its row.
pub(super) fn redeem_presented_code(
    code: &PresentedCode<'_>,
    at: Timestamp,
    seeds: &[TokenSeed],
) -> Claim {
    let mut claim = Claim::draft("code").touching(Key::Code(code.hash.as_bytes().to_vec()));
    let hash = claim.bind(code.hash.as_bytes().as_slice());
    let at = claim.bind(at.0);
    let client = claim.bind(code.client_id.as_str());
    let redirect = claim.bind(code.redirect_uri);
    let challenge = claim.bind(code.code_challenge);
    let sql = move || {
        format!(
            "UPDATE oauth_codes SET used_at = {at} WHERE code_hash = {hash} AND used_at IS NULL \
             AND client_id = {client} AND redirect_uri = {redirect} \
             AND code_challenge = {challenge} AND expires_at > {at}"
        )
    };
    claim.issuing_from_code(Form::RedeemPresentedCode, sql, hash, at, seeds)
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn token_by_hash(
    pool: &Pool<Db>,
    hash: &SecretHash,
) -> StoreResult<Option<OAuthToken>> {
    let classify = |e| crate::error::classify(e, "token");
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM oauth_tokens WHERE token_hash = $1");
    sqlx::query_as::<Db, TokenRow>(AssertSqlSafe(sql))
        .bind(hash.as_bytes().as_slice())
        .fetch_optional(pool)
        .await
        .map_err(classify)?
        .map(TryInto::try_into)
        .transpose()
}

/// An unrotated token is claimed once. With `reuse_since`, a rotated one is
/// claimed again while its rotation is at or after `reuse_since` and the
/// latest of its family (a token further back in the chain is not); a NULL
/// `$3` compares as unknown, so without it no rotated token qualifies.
/// `COALESCE` keeps the first rotation time: a reuse never moves the window.
pub(super) fn rotate_refresh_token(
    id: &TokenId,
    at: Timestamp,
    reuse_since: Option<Timestamp>,
    tokens: &[OAuthToken],
) -> Claim {
    let mut claim = Claim::draft("token").touching(Key::Token(id.as_str().to_owned()));
    let id = claim.bind(id.as_str());
    let at = claim.bind(at.0);
    let since = claim.bind(reuse_since.map(|t| t.0));
    let sql = move || {
        format!(
            "UPDATE oauth_tokens SET rotated_at = COALESCE(rotated_at, {at}) \
             WHERE id = {id} AND kind = 'refresh' AND revoked_at IS NULL \
             AND (rotated_at IS NULL OR (rotated_at >= {since} AND NOT EXISTS ( \
                 SELECT 1 FROM oauth_tokens AS later \
                 WHERE later.family_id = oauth_tokens.family_id \
                 AND later.rotated_at > oauth_tokens.rotated_at)))"
        )
    };
    claim.issuing(Form::RotateRefreshToken, sql, tokens)
}

/// Logs [`Invalidation::AccessTokens`] if the token was active.
#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn revoke_token(
    conn: &mut Conn,
    id: &TokenId,
    at: Timestamp,
) -> StoreResult<bool> {
    let change =
        sqlx::query("UPDATE oauth_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id.as_str())
            .bind(at.0);
    let affected = execute_logged(conn, change, Invalidation::AccessTokens, "token").await?;
    Ok(affected == 1)
}

/// Logs [`Invalidation::AccessTokens`] if any token of the family was
/// active. The grant is marked revoked first, in its own statement (of the
/// same transaction): a family whose tokens all expired is still a grant
/// to end.
#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn revoke_family(
    conn: &mut Conn,
    family_id: &FamilyId,
    at: Timestamp,
) -> StoreResult<u64> {
    let classify = |e| crate::error::classify(e, "grant");
    sqlx::query("UPDATE oauth_grants SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(family_id.as_str())
        .bind(at.0)
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    let change = sqlx::query(
        "UPDATE oauth_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family_id.as_str())
    .bind(at.0);
    execute_logged(conn, change, Invalidation::AccessTokens, "token").await
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn grant(pool: &Pool<Db>, id: &FamilyId) -> StoreResult<Option<Grant>> {
    let classify = |e| crate::error::classify(e, "grant");
    let sql = format!("SELECT {GRANT_COLUMNS} FROM {GRANT_FROM} WHERE g.id = $1");
    sqlx::query_as::<Db, GrantRow>(AssertSqlSafe(sql))
        .bind(id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(classify)?
        .map(TryInto::try_into)
        .transpose()
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn list_grants(
    pool: &Pool<Db>,
    of: GrantsOf<'_>,
    now: Timestamp,
    page: &PageRequest,
) -> StoreResult<Vec<Grant>> {
    let classify = |e| crate::error::classify(e, "grant");
    // Newest first; without a cursor, start after the newest possible grant.
    let (at, key) = page
        .after
        .as_ref()
        .map_or((i64::MAX, ""), |c| (c.at, c.key.as_str()));
    let (owner_column, owner) = match of {
        GrantsOf::User(user) => ("g.user_id", user.as_str()),
        GrantsOf::Workspace(workspace) => ("g.workspace_id", workspace.as_str()),
    };
    let sql = format!(
        "SELECT {GRANT_COLUMNS} FROM {GRANT_FROM} \
         WHERE {owner_column} = $1 AND g.revoked_at IS NULL AND g.expires_at > $5 \
         AND (g.created_at < $2 OR (g.created_at = $2 AND g.id < $3)) \
         ORDER BY g.created_at DESC, g.id DESC LIMIT $4"
    );
    sqlx::query_as::<Db, GrantRow>(AssertSqlSafe(sql))
        .bind(owner)
        .bind(at)
        .bind(key)
        .bind(page.fetch_limit())
        .bind(now.0)
        .fetch_all(pool)
        .await
        .map_err(classify)?
        .into_iter()
        .map(TryInto::try_into)
        .collect()
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn shared_secret(
    conn: &mut Conn,
    name: &str,
    candidate: &[u8; 32],
) -> StoreResult<[u8; 32]> {
    let classify = |e| crate::error::classify(e, "secret");
    sqlx::query(
        "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(candidate.as_slice())
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    let value: Vec<u8> = sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
        .bind(name)
        .fetch_one(conn)
        .await
        .map_err(classify)?;
    <[u8; 32]>::try_from(value.as_slice())
        .map_err(|_| StoreError::Other(format!("server secret {name} is not 32 bytes")))
}
