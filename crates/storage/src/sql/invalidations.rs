//! The invalidation log, written in the same transaction as each change
//! that makes cached answers stale, and the hash lists known-credential
//! filters are built from.

use sqlx::query::Query;
use sqlx::{Database, Pool};
use tracing::instrument;
use velocity_domain::invalidation::Invalidation;
use velocity_domain::store::StoreResult;
use velocity_domain::{SecretHash, Timestamp};

use super::{Conn, Db};
use crate::Backend;
use crate::insert::Insert;

/// Runs `change` and, if it touched any row, logs `invalidation` with it:
/// the caller's transaction ([`crate::SqlStore::write_atomic`]) makes the
/// two one. Returns the rows touched.
pub(super) async fn execute_logged(
    conn: &mut Conn,
    change: Query<'_, Db, <Db as Database>::Arguments>,
    invalidation: Invalidation,
    what: &'static str,
) -> StoreResult<u64> {
    let classify = |e| crate::error::classify(e, what);
    let affected = change
        .execute(&mut *conn)
        .await
        .map_err(classify)?
        .rows_affected();
    if affected > 0 {
        log_invalidation(conn, &invalidation)
            .await
            .map_err(classify)?;
    }
    Ok(affected)
}

/// Appends to the log inside the caller's transaction, then lets the
/// backend announce it (PostgreSQL: NOTIFY, delivered on commit).
pub(super) async fn log_invalidation(
    conn: &mut Conn,
    invalidation: &Invalidation,
) -> Result<(), sqlx::Error> {
    Insert::into("invalidations")
        .value("payload", invalidation.encode())
        .value("created_at", wall_clock_ms())
        .query()?
        .execute(&mut *conn)
        .await?;
    Db::after_invalidation_logged(conn).await
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn invalidations_after(
    pool: &Pool<Db>,
    cursor: i64,
    limit: i64,
) -> StoreResult<Vec<(i64, Invalidation)>> {
    let classify = |e| crate::error::classify(e, "invalidation");
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, payload FROM invalidations WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(cursor)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(classify)?;
    Ok(decode(rows))
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn invalidations_between(
    pool: &Pool<Db>,
    from: i64,
    to: i64,
) -> StoreResult<Vec<(i64, Invalidation)>> {
    let classify = |e| crate::error::classify(e, "invalidation");
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, payload FROM invalidations WHERE id >= $1 AND id <= $2 ORDER BY id",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
    .map_err(classify)?;
    Ok(decode(rows))
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn invalidation_cursor(pool: &Pool<Db>) -> StoreResult<i64> {
    let classify = |e| crate::error::classify(e, "invalidation");
    sqlx::query_scalar::<Db, Option<i64>>("SELECT MAX(id) FROM invalidations")
        .fetch_one(pool)
        .await
        .map(|max| max.unwrap_or(0))
        .map_err(classify)
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn prune_invalidations(
    conn: &mut Conn,
    older_than: Timestamp,
) -> StoreResult<u64> {
    let classify = |e| crate::error::classify(e, "invalidation");
    sqlx::query("DELETE FROM invalidations WHERE created_at < $1")
        .bind(older_than.0)
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
        .map_err(classify)
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn key_hashes_after(
    pool: &Pool<Db>,
    after: Option<&SecretHash>,
    limit: i64,
) -> StoreResult<Vec<SecretHash>> {
    let classify = |e| crate::error::classify(e, "key");
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT key_hash FROM api_keys WHERE key_hash > $1 ORDER BY key_hash LIMIT $2",
    )
    .bind(after.map_or(&[][..], |h| h.as_bytes().as_slice()))
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(classify)?;
    Ok(hashes(rows))
}

#[instrument(level = "debug", skip_all, err(level = "debug"))]
pub(super) async fn access_token_hashes_after(
    pool: &Pool<Db>,
    after: Option<&SecretHash>,
    limit: i64,
    now: Timestamp,
) -> StoreResult<Vec<SecretHash>> {
    let classify = |e| crate::error::classify(e, "token");
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT token_hash FROM oauth_tokens WHERE token_hash > $1 AND kind = 'access' \
         AND expires_at > $3 AND revoked_at IS NULL ORDER BY token_hash LIMIT $2",
    )
    .bind(after.map_or(&[][..], |h| h.as_bytes().as_slice()))
    .bind(limit)
    .bind(now.0)
    .fetch_all(pool)
    .await
    .map_err(classify)?;
    Ok(hashes(rows))
}

/// Milliseconds since the epoch by the machine's clock, for log rows.
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn decode(rows: Vec<(i64, String)>) -> Vec<(i64, Invalidation)> {
    rows.into_iter()
        .filter_map(|(id, payload)| {
            let decoded = Invalidation::decode(&payload);
            if decoded.is_none() {
                tracing::warn!(id, "unreadable invalidation skipped");
            }
            decoded.map(|invalidation| (id, invalidation))
        })
        .collect()
}

fn hashes(rows: Vec<Vec<u8>>) -> Vec<SecretHash> {
    rows.iter()
        .filter_map(|bytes| SecretHash::from_slice(bytes))
        .collect()
}
