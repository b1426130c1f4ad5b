//! OAuth apps, authorization codes, token families and the secrets the
//! replicas share.

use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Database, Pool};
use tracing::instrument;
use velocity_domain::invalidation::Invalidation;
use velocity_domain::oauth::{
    AuthorizationCode, ClientId, FamilyId, OAuthApp, OAuthToken, TokenId,
};
use velocity_domain::page::PageRequest;
use velocity_domain::store::StoreResult;
use velocity_domain::{SecretHash, StoreError, Timestamp};

use super::invalidations::{execute_logged, log_invalidation};
use super::{Conn, Db};
use crate::insert::Insert;
use crate::rows::{self, APP_COLUMNS, AppRow, CODE_COLUMNS, CodeRow, TOKEN_COLUMNS, TokenRow};

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
        .value("redirect_uris", app.redirect_uris.join("\n"))
        .value("allowed_scopes", i64::from(app.allowed_scopes.bits()))
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
pub(super) async fn list_apps(pool: &Pool<Db>, page: &PageRequest) -> StoreResult<Vec<OAuthApp>> {
    let classify = |e| crate::error::classify(e, "app");
    // Without a cursor, start before every app: no creation time is i64::MIN.
    let (at, key) = page
        .after
        .as_ref()
        .map_or((i64::MIN, ""), |c| (c.at, c.key.as_str()));
    let sql = format!(
        "SELECT {APP_COLUMNS} FROM oauth_apps \
         WHERE created_at > $1 OR (created_at = $1 AND client_id > $2) \
         ORDER BY created_at, client_id LIMIT $3"
    );
    sqlx::query_as::<Db, AppRow>(AssertSqlSafe(sql))
        .bind(at)
        .bind(key)
        .bind(page.fetch_limit())
        .fetch_all(pool)
        .await
        .map_err(classify)?
        .into_iter()
        .map(TryInto::try_into)
        .collect()
}

/// `false` unless a confidential app has that id. Logs
/// [`Invalidation::App`]: cached copies hold the old secret.
#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn set_app_secret(
    conn: &mut Conn,
    client_id: &ClientId,
    hash: &SecretHash,
) -> StoreResult<bool> {
    let change = sqlx::query(
        "UPDATE oauth_apps SET secret_hash = $2 \
         WHERE client_id = $1 AND client_type = 'confidential'",
    )
    .bind(client_id.as_str())
    .bind(hash.as_bytes().as_slice());
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
pub(super) async fn insert_code(conn: &mut Conn, code: &AuthorizationCode) -> StoreResult<()> {
    let row = Insert::into("oauth_codes")
        .value("code_hash", code.hash.as_bytes().as_slice())
        .value("client_id", code.client_id.as_str())
        .value("redirect_uri", &code.redirect_uri)
        .value("user_id", code.user_id.as_str())
        .value("workspace_id", code.workspace_id.as_str())
        .value("scopes", i64::from(code.scopes.bits()))
        .value("code_challenge", &code.code_challenge)
        .value("family_id", code.family_id.as_str())
        .value("created_at", code.created_at.0)
        .value("expires_at", code.expires_at.0)
        .value("used_at", rows::ms(code.used_at));
    super::insert_row(conn, row, "code").await
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

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn redeem_code(
    conn: &mut Conn,
    hash: &SecretHash,
    at: Timestamp,
    tokens: &[OAuthToken],
) -> StoreResult<bool> {
    let claim =
        sqlx::query("UPDATE oauth_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL")
            .bind(hash.as_bytes().as_slice())
            .bind(at.0);
    claim_then_insert(conn, claim, tokens, "code").await
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
#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn rotate_refresh_token(
    conn: &mut Conn,
    id: &TokenId,
    at: Timestamp,
    reuse_since: Option<Timestamp>,
    tokens: &[OAuthToken],
) -> StoreResult<bool> {
    let claim = sqlx::query(
        "UPDATE oauth_tokens SET rotated_at = COALESCE(rotated_at, $2) \
         WHERE id = $1 AND kind = 'refresh' AND revoked_at IS NULL \
         AND (rotated_at IS NULL OR (rotated_at >= $3 AND NOT EXISTS ( \
             SELECT 1 FROM oauth_tokens AS later \
             WHERE later.family_id = oauth_tokens.family_id \
             AND later.rotated_at > oauth_tokens.rotated_at)))",
    )
    .bind(id.as_str())
    .bind(at.0)
    .bind(reuse_since.map(|t| t.0));
    claim_then_insert(conn, claim, tokens, "token").await
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

/// Logs [`Invalidation::AccessTokens`] if any token of the family was active.
#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn revoke_family(
    conn: &mut Conn,
    family_id: &FamilyId,
    at: Timestamp,
) -> StoreResult<u64> {
    let change = sqlx::query(
        "UPDATE oauth_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family_id.as_str())
    .bind(at.0);
    execute_logged(conn, change, Invalidation::AccessTokens, "token").await
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

/// Runs `claim` (a conditional UPDATE) and, if it changed exactly one row,
/// stores `tokens` with it, in the caller's transaction: of any number of
/// concurrent attempts, one wins. `false` when this one lost.
async fn claim_then_insert(
    conn: &mut Conn,
    claim: Query<'_, Db, <Db as Database>::Arguments>,
    tokens: &[OAuthToken],
    what: &'static str,
) -> StoreResult<bool> {
    let classify = |e| crate::error::classify(e, what);
    let won = claim
        .execute(&mut *conn)
        .await
        .map_err(classify)?
        .rows_affected()
        == 1;
    if !won {
        return Ok(false);
    }
    insert_tokens(conn, tokens).await.map_err(classify)?;
    Ok(true)
}

/// One statement for all of them: on SQLite each statement is a round trip
/// to the writer's connection.
async fn insert_tokens(conn: &mut Conn, tokens: &[OAuthToken]) -> Result<(), sqlx::Error> {
    if tokens.is_empty() {
        return Ok(());
    }
    let mut insert = Insert::into("oauth_tokens");
    for (i, token) in tokens.iter().enumerate() {
        if i > 0 {
            insert = insert.row();
        }
        insert = insert
            .value("id", token.id.as_str())
            .value("token_hash", token.hash.as_bytes().as_slice())
            .value("kind", token.kind.as_str())
            .value("family_id", token.family_id.as_str())
            .value("client_id", token.client_id.as_str())
            .value("user_id", token.user_id.as_str())
            .value("workspace_id", token.workspace_id.as_str())
            .value("scopes", i64::from(token.scopes.bits()))
            .value("created_at", token.created_at.0)
            .value("expires_at", token.expires_at.0)
            .value("revoked_at", rows::ms(token.revoked_at))
            .value("rotated_at", rows::ms(token.rotated_at));
    }
    insert.query()?.execute(&mut *conn).await?;
    Ok(())
}
