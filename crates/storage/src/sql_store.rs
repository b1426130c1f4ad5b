//! The SQL both backends share. SQLite and PostgreSQL accept the same `$n`
//! placeholders and `RETURNING`, and our rows use only text, i64 and bytes,
//! so one body of queries serves both; each backend module instantiates it
//! for its own pool type and keeps what differs (pragmas, LISTEN/NOTIFY).

pub(crate) const USER_COLUMNS: &str = "id, email, name, created_at";

pub(crate) const MEMBERSHIP_SELECT: &str = "SELECT w.id, w.slug, w.name, w.created_at, m.user_id, m.role \
     FROM memberships m JOIN workspaces w ON w.id = m.workspace_id";

pub(crate) const API_KEY_COLUMNS: &str = "id, kind, key_hash, display, name, scopes, workspace_id, \
     user_id, created_by, created_at, expires_at, revoked_at, last_used_at";

/// Milliseconds since the epoch by the machine's clock, for log rows.
pub(crate) fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Keys per usage UPDATE (two parameters each, well under SQLite's limit).
pub(crate) const USAGE_CHUNK: usize = 500;

/// `UPDATE … FROM (SELECT $1, $2 UNION ALL …)`: SQLite (3.33+) and
/// PostgreSQL both accept it; never moves `last_used_at` backwards.
pub(crate) fn usage_update(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|i| format!("SELECT ${} AS id, ${} AS at", 2 * i + 1, 2 * i + 2))
        .collect();
    format!(
        "UPDATE api_keys SET last_used_at = u.at FROM ({}) AS u \
         WHERE api_keys.id = u.id AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < u.at)",
        values.join(" UNION ALL ")
    )
}

pub(crate) fn decode_invalidations(
    rows: Vec<(i64, String)>,
) -> Vec<(i64, velocity_domain::invalidation::Invalidation)> {
    rows.into_iter()
        .filter_map(|(id, payload)| {
            let decoded = velocity_domain::invalidation::Invalidation::decode(&payload);
            if decoded.is_none() {
                tracing::warn!(id, "unreadable invalidation skipped");
            }
            decoded.map(|inv| (id, inv))
        })
        .collect()
}

/// Implements `velocity_domain::Store` for `$store`, whose `pool` field is a
/// `sqlx::Pool<$db>`. `$notify` is the statement, if any, that wakes other
/// replicas when an invalidation commits.
macro_rules! impl_store {
    ($store:ty, $db:ty, $notify:expr) => {
        impl $store {
            /// Runs `change` and, if it touched any row, logs `invalidation`
            /// in the same transaction; returns the rows touched.
            async fn execute_logged(
                &self,
                change: sqlx::query::Query<'_, $db, <$db as sqlx::Database>::Arguments>,
                invalidation: velocity_domain::invalidation::Invalidation,
                what: &'static str,
            ) -> velocity_domain::store::StoreResult<u64> {
                let classify = |e| crate::error::classify(e, what);
                let mut tx = self.pool.begin().await.map_err(classify)?;
                let affected = change.execute(&mut *tx).await.map_err(classify)?.rows_affected();
                if affected > 0 {
                    Self::log_invalidation(&mut tx, &invalidation).await.map_err(classify)?;
                }
                tx.commit().await.map_err(classify)?;
                Ok(affected)
            }

            /// Appends to the invalidation log inside the caller's transaction.
            async fn log_invalidation(
                tx: &mut sqlx::Transaction<'static, $db>,
                invalidation: &velocity_domain::invalidation::Invalidation,
            ) -> Result<(), sqlx::Error> {
                sqlx::query("INSERT INTO invalidations (payload, created_at) VALUES ($1, $2)")
                    .bind(invalidation.encode())
                    .bind(crate::sql_store::wall_clock_ms())
                    .execute(&mut **tx)
                    .await?;
                let notify: Option<&'static str> = $notify;
                if let Some(statement) = notify {
                    sqlx::query(statement).execute(&mut **tx).await?;
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl velocity_domain::store::InvalidationStore for $store {
            async fn invalidations_after(
                &self,
                cursor: i64,
                limit: i64,
            ) -> velocity_domain::store::StoreResult<Vec<(i64, velocity_domain::invalidation::Invalidation)>> {
                let rows: Vec<(i64, String)> =
                    sqlx::query_as("SELECT id, payload FROM invalidations WHERE id > $1 ORDER BY id LIMIT $2")
                        .bind(cursor)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(|e| crate::error::classify(e, "invalidation"))?;
                Ok(crate::sql_store::decode_invalidations(rows))
            }

            async fn invalidations_between(
                &self,
                from: i64,
                to: i64,
            ) -> velocity_domain::store::StoreResult<Vec<(i64, velocity_domain::invalidation::Invalidation)>> {
                let rows: Vec<(i64, String)> =
                    sqlx::query_as("SELECT id, payload FROM invalidations WHERE id >= $1 AND id <= $2 ORDER BY id")
                        .bind(from)
                        .bind(to)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(|e| crate::error::classify(e, "invalidation"))?;
                Ok(crate::sql_store::decode_invalidations(rows))
            }

            async fn invalidation_cursor(&self) -> velocity_domain::store::StoreResult<i64> {
                sqlx::query_scalar::<$db, Option<i64>>("SELECT MAX(id) FROM invalidations")
                    .fetch_one(&self.pool)
                    .await
                    .map(|max| max.unwrap_or(0))
                    .map_err(|e| crate::error::classify(e, "invalidation"))
            }

            async fn prune_invalidations(&self, older_than: velocity_domain::Timestamp) -> velocity_domain::store::StoreResult<u64> {
                sqlx::query("DELETE FROM invalidations WHERE created_at < $1")
                    .bind(older_than.0)
                    .execute(&self.pool)
                    .await
                    .map(|done| done.rows_affected())
                    .map_err(|e| crate::error::classify(e, "invalidation"))
            }

            async fn key_hashes_after(
                &self,
                after: Option<&velocity_domain::SecretHash>,
                limit: i64,
            ) -> velocity_domain::store::StoreResult<Vec<velocity_domain::SecretHash>> {
                let rows: Vec<Vec<u8>> = sqlx::query_scalar(
                    "SELECT key_hash FROM api_keys WHERE key_hash > $1 ORDER BY key_hash LIMIT $2",
                )
                .bind(after.map(|h| h.as_bytes().to_vec()).unwrap_or_default())
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| crate::error::classify(e, "key"))?;
                Ok(rows.iter().filter_map(|b| velocity_domain::SecretHash::from_slice(b)).collect())
            }

            async fn access_token_hashes_after(
                &self,
                after: Option<&velocity_domain::SecretHash>,
                limit: i64,
                now: velocity_domain::Timestamp,
            ) -> velocity_domain::store::StoreResult<Vec<velocity_domain::SecretHash>> {
                let rows: Vec<Vec<u8>> = sqlx::query_scalar(
                    "SELECT token_hash FROM oauth_tokens WHERE token_hash > $1 AND kind = 'access' \
                     AND expires_at > $3 AND revoked_at IS NULL ORDER BY token_hash LIMIT $2",
                )
                .bind(after.map(|h| h.as_bytes().to_vec()).unwrap_or_default())
                .bind(limit)
                .bind(now.0)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| crate::error::classify(e, "token"))?;
                Ok(rows.iter().filter_map(|b| velocity_domain::SecretHash::from_slice(b)).collect())
            }
        }

        #[async_trait::async_trait]
        impl velocity_domain::Store for $store {
            async fn ping(&self) -> velocity_domain::store::StoreResult<()> {
                sqlx::query("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| crate::error::classify(e, "ping"))
            }

            async fn insert_user(&self, user: &velocity_domain::User) -> velocity_domain::store::StoreResult<()> {
                sqlx::query("INSERT INTO users (id, email, name, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&user.id.0)
                    .bind(&user.email)
                    .bind(&user.name)
                    .bind(user.created_at.0)
                    .execute(&self.pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| crate::error::classify(e, "user"))
            }

            async fn user(&self, id: &velocity_domain::UserId) -> velocity_domain::store::StoreResult<Option<velocity_domain::User>> {
                sqlx::query_as::<$db, crate::rows::UserRow>(
                    sqlx::AssertSqlSafe(format!("SELECT {} FROM users WHERE id = $1", crate::sql_store::USER_COLUMNS)),
                )
                .bind(&id.0)
                .fetch_optional(&self.pool)
                .await
                .map(|row| row.map(Into::into))
                .map_err(|e| crate::error::classify(e, "user"))
            }

            async fn insert_workspace(&self, workspace: &velocity_domain::Workspace) -> velocity_domain::store::StoreResult<()> {
                sqlx::query("INSERT INTO workspaces (id, slug, name, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&workspace.id.0)
                    .bind(&workspace.slug)
                    .bind(&workspace.name)
                    .bind(workspace.created_at.0)
                    .execute(&self.pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| crate::error::classify(e, "workspace slug"))
            }

            async fn workspace_by_slug(&self, slug: &str) -> velocity_domain::store::StoreResult<Option<velocity_domain::Workspace>> {
                sqlx::query_as::<$db, crate::rows::WorkspaceRow>(
                    "SELECT id, slug, name, created_at FROM workspaces WHERE slug = $1",
                )
                .bind(slug)
                .fetch_optional(&self.pool)
                .await
                .map(|row| row.map(Into::into))
                .map_err(|e| crate::error::classify(e, "workspace"))
            }

            async fn workspace_by_id(&self, id: &velocity_domain::WorkspaceId) -> velocity_domain::store::StoreResult<Option<velocity_domain::Workspace>> {
                sqlx::query_as::<$db, crate::rows::WorkspaceRow>(
                    "SELECT id, slug, name, created_at FROM workspaces WHERE id = $1",
                )
                .bind(&id.0)
                .fetch_optional(&self.pool)
                .await
                .map(|row| row.map(Into::into))
                .map_err(|e| crate::error::classify(e, "workspace"))
            }

            async fn upsert_membership(
                &self,
                workspace: &velocity_domain::WorkspaceId,
                user: &velocity_domain::UserId,
                role: velocity_domain::Role,
            ) -> velocity_domain::store::StoreResult<()> {
                let change = sqlx::query(
                    "INSERT INTO memberships (workspace_id, user_id, role) VALUES ($1, $2, $3) \
                     ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role",
                )
                .bind(&workspace.0)
                .bind(&user.0)
                .bind(role.as_str());
                let invalidation = velocity_domain::invalidation::Invalidation::Membership(user.clone());
                self.execute_logged(change, invalidation, "user or workspace").await.map(|_| ())
            }

            async fn delete_membership(
                &self,
                workspace: &velocity_domain::WorkspaceId,
                user: &velocity_domain::UserId,
            ) -> velocity_domain::store::StoreResult<bool> {
                let change = sqlx::query("DELETE FROM memberships WHERE workspace_id = $1 AND user_id = $2")
                    .bind(&workspace.0)
                    .bind(&user.0);
                let invalidation = velocity_domain::invalidation::Invalidation::Membership(user.clone());
                Ok(self.execute_logged(change, invalidation, "membership").await? > 0)
            }

            async fn membership_by_slug(
                &self,
                user: &velocity_domain::UserId,
                slug: &str,
            ) -> velocity_domain::store::StoreResult<Option<velocity_domain::Membership>> {
                sqlx::query_as::<$db, crate::rows::MembershipRow>(sqlx::AssertSqlSafe(format!(
                    "{} WHERE m.user_id = $1 AND w.slug = $2",
                    crate::sql_store::MEMBERSHIP_SELECT
                )))
                .bind(&user.0)
                .bind(slug)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| crate::error::classify(e, "membership"))?
                .map(TryInto::try_into)
                .transpose()
            }

            async fn membership(
                &self,
                workspace: &velocity_domain::WorkspaceId,
                user: &velocity_domain::UserId,
            ) -> velocity_domain::store::StoreResult<Option<velocity_domain::Membership>> {
                sqlx::query_as::<$db, crate::rows::MembershipRow>(sqlx::AssertSqlSafe(format!(
                    "{} WHERE m.workspace_id = $1 AND m.user_id = $2",
                    crate::sql_store::MEMBERSHIP_SELECT
                )))
                .bind(&workspace.0)
                .bind(&user.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| crate::error::classify(e, "membership"))?
                .map(TryInto::try_into)
                .transpose()
            }

            async fn memberships_of_user(
                &self,
                user: &velocity_domain::UserId,
            ) -> velocity_domain::store::StoreResult<Vec<velocity_domain::Membership>> {
                let rows = sqlx::query_as::<$db, crate::rows::MembershipRow>(sqlx::AssertSqlSafe(format!(
                    "{} WHERE m.user_id = $1 ORDER BY w.slug LIMIT 1000",
                    crate::sql_store::MEMBERSHIP_SELECT
                )))
                .bind(&user.0)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| crate::error::classify(e, "membership"))?;
                crate::rows::memberships(rows)
            }

            async fn memberships_of_workspace(
                &self,
                workspace: &velocity_domain::WorkspaceId,
            ) -> velocity_domain::store::StoreResult<Vec<velocity_domain::Membership>> {
                let rows = sqlx::query_as::<$db, crate::rows::MembershipRow>(sqlx::AssertSqlSafe(format!(
                    "{} WHERE m.workspace_id = $1 ORDER BY m.user_id LIMIT 10000",
                    crate::sql_store::MEMBERSHIP_SELECT
                )))
                .bind(&workspace.0)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| crate::error::classify(e, "membership"))?;
                crate::rows::memberships(rows)
            }

            async fn insert_api_key(&self, key: &velocity_domain::ApiKey) -> velocity_domain::store::StoreResult<()> {
                let change = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO api_keys ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    crate::sql_store::API_KEY_COLUMNS
                )))
                .bind(&key.id.0)
                .bind(key.kind().as_str())
                .bind(key.hash.as_bytes().to_vec())
                .bind(&key.display)
                .bind(&key.name)
                .bind(i64::from(key.scopes.bits()))
                .bind(key.owner.workspace().map(|w| w.0.clone()))
                .bind(key.owner.user().map(|u| u.0.clone()))
                .bind(key.created_by.as_ref().map(|u| u.0.clone()))
                .bind(key.created_at.0)
                .bind(crate::rows::ms(key.expires_at))
                .bind(crate::rows::ms(key.revoked_at))
                .bind(crate::rows::ms(key.last_used_at));
                let invalidation = velocity_domain::invalidation::Invalidation::KeyCreated(key.hash);
                self.execute_logged(change, invalidation, "key").await.map(|_| ())
            }

            async fn api_key_by_hash(
                &self,
                hash: &velocity_domain::SecretHash,
            ) -> velocity_domain::store::StoreResult<Option<velocity_domain::ApiKey>> {
                sqlx::query_as::<$db, crate::rows::ApiKeyRow>(sqlx::AssertSqlSafe(format!(
                    "SELECT {} FROM api_keys WHERE key_hash = $1",
                    crate::sql_store::API_KEY_COLUMNS
                )))
                .bind(hash.as_bytes().to_vec())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| crate::error::classify(e, "key"))?
                .map(TryInto::try_into)
                .transpose()
            }

            async fn api_key_by_id(
                &self,
                id: &velocity_domain::ApiKeyId,
            ) -> velocity_domain::store::StoreResult<Option<velocity_domain::ApiKey>> {
                sqlx::query_as::<$db, crate::rows::ApiKeyRow>(sqlx::AssertSqlSafe(format!(
                    "SELECT {} FROM api_keys WHERE id = $1",
                    crate::sql_store::API_KEY_COLUMNS
                )))
                .bind(&id.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| crate::error::classify(e, "key"))?
                .map(TryInto::try_into)
                .transpose()
            }

            async fn list_api_keys(
                &self,
                owner: &velocity_domain::api_key::KeyOwner,
                include_revoked: bool,
            ) -> velocity_domain::store::StoreResult<Vec<velocity_domain::ApiKey>> {
                let (column, id, kind) = match owner {
                    velocity_domain::api_key::KeyOwner::Workspace(w) => ("workspace_id", &w.0, "workspace"),
                    velocity_domain::api_key::KeyOwner::User(u) => ("user_id", &u.0, "personal"),
                };
                let revoked = if include_revoked { "" } else { " AND revoked_at IS NULL" };
                let rows = sqlx::query_as::<$db, crate::rows::ApiKeyRow>(sqlx::AssertSqlSafe(format!(
                    "SELECT {} FROM api_keys WHERE {column} = $1 AND kind = $2{revoked} \
                     ORDER BY created_at DESC LIMIT 1000",
                    crate::sql_store::API_KEY_COLUMNS
                )))
                .bind(id)
                .bind(kind)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| crate::error::classify(e, "key"))?;
                crate::rows::api_keys(rows)
            }

            async fn revoke_api_key(
                &self,
                id: &velocity_domain::ApiKeyId,
                at: velocity_domain::Timestamp,
            ) -> velocity_domain::store::StoreResult<Option<velocity_domain::Timestamp>> {
                let classify = |e| crate::error::classify(e, "key");
                let mut tx = self.pool.begin().await.map_err(classify)?;
                // COALESCE keeps the first revocation time: revoking is idempotent.
                let row: Option<(i64, Vec<u8>)> = sqlx::query_as(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 \
                     RETURNING revoked_at, key_hash",
                )
                .bind(&id.0)
                .bind(at.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
                let Some((revoked_at, hash)) = row else {
                    tx.rollback().await.map_err(classify)?;
                    return Ok(None);
                };
                if let Some(hash) = velocity_domain::SecretHash::from_slice(&hash) {
                    Self::log_invalidation(&mut tx, &velocity_domain::invalidation::Invalidation::KeyRevoked(hash))
                        .await
                        .map_err(classify)?;
                }
                tx.commit().await.map_err(classify)?;
                Ok(Some(velocity_domain::Timestamp(revoked_at)))
            }

            async fn record_key_usage(
                &self,
                usage: &[(velocity_domain::ApiKeyId, velocity_domain::Timestamp)],
            ) -> velocity_domain::store::StoreResult<()> {
                let classify = |e| crate::error::classify(e, "key usage");
                let mut tx = self.pool.begin().await.map_err(classify)?;
                // One statement per chunk: a flush after a burst of distinct
                // keys must not become tens of thousands of round trips.
                for chunk in usage.chunks(crate::sql_store::USAGE_CHUNK) {
                    let sql = crate::sql_store::usage_update(chunk.len());
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for (id, at) in chunk {
                        query = query.bind(&id.0).bind(at.0);
                    }
                    query.execute(&mut *tx).await.map_err(classify)?;
                }
                tx.commit().await.map_err(classify)
            }
        }
    };
}

pub(crate) use impl_store;
