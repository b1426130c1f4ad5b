//! API keys and their usage.

use sqlx::{AssertSqlSafe, Pool};
use tracing::instrument;
use velocity_domain::api_key::KeyOwner;
use velocity_domain::invalidation::Invalidation;
use velocity_domain::page::PageRequest;
use velocity_domain::store::StoreResult;
use velocity_domain::{ApiKey, ApiKeyId, SecretHash, Timestamp};

use super::invalidations::{execute_logged, log_invalidation};
use super::{Conn, Db};
use crate::insert::Insert;
use crate::rows::{self, API_KEY_COLUMNS, ApiKeyRow};

/// Keys per usage UPDATE (two parameters each, well under SQLite's limit).
const USAGE_CHUNK: usize = 500;

/// Logs [`Invalidation::KeyCreated`]: known-key filters must learn the hash.
#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn insert_api_key(conn: &mut Conn, key: &ApiKey) -> StoreResult<()> {
    let classify = |e| crate::error::classify(e, "key");
    let change = Insert::into("api_keys")
        .value("id", key.id.as_str())
        .value("kind", key.kind().as_str())
        .value("key_hash", key.hash.as_bytes().as_slice())
        .value("display", &key.display)
        .value("name", &key.name)
        .value("scopes", i64::from(key.scopes.bits()))
        .value("workspace_id", key.owner.workspace().map(|w| w.as_str()))
        .value("user_id", key.owner.user().map(|u| u.as_str()))
        .value("created_by", key.created_by.as_ref().map(|u| u.as_str()))
        .value("created_at", key.created_at.0)
        .value("expires_at", rows::ms(key.expires_at))
        .value("revoked_at", rows::ms(key.revoked_at))
        .value("last_used_at", rows::ms(key.last_used_at))
        .query()
        .map_err(classify)?;
    let invalidation = Invalidation::KeyCreated(key.hash);
    execute_logged(conn, change, invalidation, "key")
        .await
        .map(|_| ())
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn api_key_by_hash(
    pool: &Pool<Db>,
    hash: &SecretHash,
) -> StoreResult<Option<ApiKey>> {
    let classify = |e| crate::error::classify(e, "key");
    let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1");
    sqlx::query_as::<Db, ApiKeyRow>(AssertSqlSafe(sql))
        .bind(hash.as_bytes().as_slice())
        .fetch_optional(pool)
        .await
        .map_err(classify)?
        .map(TryInto::try_into)
        .transpose()
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn api_key_by_id(pool: &Pool<Db>, id: &ApiKeyId) -> StoreResult<Option<ApiKey>> {
    let classify = |e| crate::error::classify(e, "key");
    let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1");
    sqlx::query_as::<Db, ApiKeyRow>(AssertSqlSafe(sql))
        .bind(id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(classify)?
        .map(TryInto::try_into)
        .transpose()
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn list_api_keys(
    pool: &Pool<Db>,
    owner: &KeyOwner,
    include_revoked: bool,
    page: &PageRequest,
) -> StoreResult<Vec<ApiKey>> {
    let classify = |e| crate::error::classify(e, "key");
    let (column, id, kind) = match owner {
        KeyOwner::Workspace(w) => ("workspace_id", w.as_str(), "workspace"),
        KeyOwner::User(u) => ("user_id", u.as_str(), "personal"),
    };
    let revoked = if include_revoked {
        ""
    } else {
        " AND revoked_at IS NULL"
    };
    // Newest first; without a cursor, start after the newest possible key.
    let (at, key) = page
        .after
        .as_ref()
        .map_or((i64::MAX, ""), |c| (c.at, c.key.as_str()));
    let sql = format!(
        "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE {column} = $1 AND kind = $2{revoked} \
         AND (created_at < $3 OR (created_at = $3 AND id < $4)) \
         ORDER BY created_at DESC, id DESC LIMIT $5"
    );
    let rows = sqlx::query_as::<Db, ApiKeyRow>(AssertSqlSafe(sql))
        .bind(id)
        .bind(kind)
        .bind(at)
        .bind(key)
        .bind(page.fetch_limit())
        .fetch_all(pool)
        .await
        .map_err(classify)?;
    rows::api_keys(rows)
}

/// Logs [`Invalidation::KeyRevoked`] whenever the key exists, revoked
/// before or not: revoking is idempotent and keeps the first time.
#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn revoke_api_key(
    conn: &mut Conn,
    id: &ApiKeyId,
    at: Timestamp,
) -> StoreResult<Option<Timestamp>> {
    let classify = |e| crate::error::classify(e, "key");
    let row: Option<(i64, Vec<u8>)> = sqlx::query_as(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 \
         RETURNING revoked_at, key_hash",
    )
    .bind(id.as_str())
    .bind(at.0)
    .fetch_optional(&mut *conn)
    .await
    .map_err(classify)?;
    let Some((revoked_at, hash)) = row else {
        return Ok(None);
    };
    if let Some(hash) = SecretHash::from_slice(&hash) {
        log_invalidation(conn, &Invalidation::KeyRevoked(hash))
            .await
            .map_err(classify)?;
    }
    Ok(Some(Timestamp(revoked_at)))
}

/// Never moves `last_used_at` backwards; unknown keys are skipped.
#[instrument(level = "debug", skip_all, fields(keys = usage.len()), err(level = "debug"))]
pub(super) async fn record_key_usage(
    conn: &mut Conn,
    usage: &[(ApiKeyId, Timestamp)],
) -> StoreResult<()> {
    let classify = |e| crate::error::classify(e, "key usage");
    // One statement per chunk: a flush after a burst of distinct keys must
    // not become tens of thousands of round trips.
    for chunk in usage.chunks(USAGE_CHUNK) {
        let mut query = sqlx::query(AssertSqlSafe(usage_update(chunk.len())));
        for (id, at) in chunk {
            query = query.bind(id.as_str()).bind(at.0);
        }
        query.execute(&mut *conn).await.map_err(classify)?;
    }
    Ok(())
}

/// `UPDATE … FROM (SELECT $1, $2 UNION ALL …)` for `rows` (id, time) pairs:
/// SQLite (3.33+) and PostgreSQL both accept it.
fn usage_update(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|i| format!("SELECT ${} AS id, ${} AS at", 2 * i + 1, 2 * i + 2))
        .collect();
    format!(
        "UPDATE api_keys SET last_used_at = u.at FROM ({}) AS u \
         WHERE api_keys.id = u.id \
         AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < u.at)",
        values.join(" UNION ALL ")
    )
}
