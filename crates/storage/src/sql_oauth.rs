//! OAuth SQL shared by both backends (see `sql_store` for why one body).

pub(crate) const APP_COLUMNS: &str =
    "client_id, name, client_type, secret_hash, redirect_uris, allowed_scopes, created_at";
pub(crate) const CODE_COLUMNS: &str = "code_hash, client_id, redirect_uri, user_id, workspace_id, scopes, \
     code_challenge, family_id, created_at, expires_at, used_at";
pub(crate) const TOKEN_COLUMNS: &str = "id, token_hash, kind, family_id, client_id, user_id, workspace_id, \
     scopes, created_at, expires_at, revoked_at, rotated_at";

/// Implements `velocity_domain::store::OAuthStore` for `$store` (a `pool`
/// field of `sqlx::Pool<$db>`).
macro_rules! impl_oauth_store {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Runs `claim` (a conditional UPDATE) and, if it changed exactly
            /// one row, stores `tokens` in the same transaction: of any number
            /// of concurrent attempts, one wins. `false` when it lost.
            async fn claim_then_insert(
                &self,
                claim: sqlx::query::Query<'_, $db, <$db as sqlx::Database>::Arguments>,
                tokens: &[velocity_domain::oauth::OAuthToken],
                what: &'static str,
            ) -> velocity_domain::store::StoreResult<bool> {
                let classify = |e| crate::error::classify(e, what);
                let mut tx = self.pool.begin().await.map_err(classify)?;
                let won = claim.execute(&mut *tx).await.map_err(classify)?.rows_affected() == 1;
                if !won {
                    tx.rollback().await.map_err(classify)?;
                    return Ok(false);
                }
                Self::insert_tokens(&mut tx, tokens).await.map_err(classify)?;
                tx.commit().await.map_err(classify)?;
                Ok(true)
            }

            async fn insert_tokens(
                tx: &mut sqlx::Transaction<'static, $db>,
                tokens: &[velocity_domain::oauth::OAuthToken],
            ) -> Result<(), sqlx::Error> {
                for t in tokens {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO oauth_tokens ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                        crate::sql_oauth::TOKEN_COLUMNS
                    )))
                    .bind(&t.id.0)
                    .bind(t.hash.as_bytes().to_vec())
                    .bind(t.kind.as_str())
                    .bind(&t.family_id.0)
                    .bind(&t.client_id.0)
                    .bind(&t.user_id.0)
                    .bind(&t.workspace_id.0)
                    .bind(i64::from(t.scopes.bits()))
                    .bind(t.created_at.0)
                    .bind(t.expires_at.0)
                    .bind(crate::rows::ms(t.revoked_at))
                    .bind(crate::rows::ms(t.rotated_at))
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl velocity_domain::store::OAuthStore for $store {
            async fn insert_app(&self, app: &velocity_domain::oauth::OAuthApp) -> velocity_domain::store::StoreResult<()> {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO oauth_apps ({}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    crate::sql_oauth::APP_COLUMNS
                )))
                .bind(&app.client_id.0)
                .bind(&app.name)
                .bind(app.client_type.as_str())
                .bind(app.secret_hash.map(|h| h.as_bytes().to_vec()))
                .bind(app.redirect_uris.join("\n"))
                .bind(i64::from(app.allowed_scopes.bits()))
                .bind(app.created_at.0)
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(|e| crate::error::classify(e, "app"))
            }

            async fn app(&self, client_id: &velocity_domain::oauth::ClientId) -> velocity_domain::store::StoreResult<Option<velocity_domain::oauth::OAuthApp>> {
                sqlx::query_as::<$db, crate::rows::AppRow>(sqlx::AssertSqlSafe(format!(
                    "SELECT {} FROM oauth_apps WHERE client_id = $1",
                    crate::sql_oauth::APP_COLUMNS
                )))
                .bind(&client_id.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| crate::error::classify(e, "app"))?
                .map(TryInto::try_into)
                .transpose()
            }

            async fn list_apps(&self) -> velocity_domain::store::StoreResult<Vec<velocity_domain::oauth::OAuthApp>> {
                sqlx::query_as::<$db, crate::rows::AppRow>(sqlx::AssertSqlSafe(format!(
                    "SELECT {} FROM oauth_apps ORDER BY created_at LIMIT 1000",
                    crate::sql_oauth::APP_COLUMNS
                )))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| crate::error::classify(e, "app"))?
                .into_iter()
                .map(TryInto::try_into)
                .collect()
            }

            async fn set_app_secret(
                &self,
                client_id: &velocity_domain::oauth::ClientId,
                hash: &velocity_domain::SecretHash,
            ) -> velocity_domain::store::StoreResult<bool> {
                sqlx::query("UPDATE oauth_apps SET secret_hash = $2 WHERE client_id = $1 AND client_type = 'confidential'")
                    .bind(&client_id.0)
                    .bind(hash.as_bytes().to_vec())
                    .execute(&self.pool)
                    .await
                    .map(|done| done.rows_affected() == 1)
                    .map_err(|e| crate::error::classify(e, "app"))
            }

            async fn delete_app(&self, client_id: &velocity_domain::oauth::ClientId) -> velocity_domain::store::StoreResult<bool> {
                let change = sqlx::query("DELETE FROM oauth_apps WHERE client_id = $1")
                    .bind(&client_id.0);
                let affected = self
                    .execute_logged(change, velocity_domain::invalidation::Invalidation::AccessTokens, "app")
                    .await?;
                Ok(affected == 1)
            }

            async fn insert_code(&self, code: &velocity_domain::oauth::AuthorizationCode) -> velocity_domain::store::StoreResult<()> {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO oauth_codes ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    crate::sql_oauth::CODE_COLUMNS
                )))
                .bind(code.hash.as_bytes().to_vec())
                .bind(&code.client_id.0)
                .bind(&code.redirect_uri)
                .bind(&code.user_id.0)
                .bind(&code.workspace_id.0)
                .bind(i64::from(code.scopes.bits()))
                .bind(&code.code_challenge)
                .bind(&code.family_id.0)
                .bind(code.created_at.0)
                .bind(code.expires_at.0)
                .bind(crate::rows::ms(code.used_at))
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(|e| crate::error::classify(e, "code"))
            }

            async fn code_by_hash(
                &self,
                hash: &velocity_domain::SecretHash,
            ) -> velocity_domain::store::StoreResult<Option<velocity_domain::oauth::AuthorizationCode>> {
                sqlx::query_as::<$db, crate::rows::CodeRow>(sqlx::AssertSqlSafe(format!(
                    "SELECT {} FROM oauth_codes WHERE code_hash = $1",
                    crate::sql_oauth::CODE_COLUMNS
                )))
                .bind(hash.as_bytes().to_vec())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| crate::error::classify(e, "code"))?
                .map(TryInto::try_into)
                .transpose()
            }

            async fn redeem_code(
                &self,
                hash: &velocity_domain::SecretHash,
                at: velocity_domain::Timestamp,
                tokens: &[velocity_domain::oauth::OAuthToken],
            ) -> velocity_domain::store::StoreResult<bool> {
                let claim = sqlx::query("UPDATE oauth_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL")
                    .bind(hash.as_bytes().to_vec())
                    .bind(at.0);
                self.claim_then_insert(claim, tokens, "code").await
            }

            async fn token_by_hash(
                &self,
                hash: &velocity_domain::SecretHash,
            ) -> velocity_domain::store::StoreResult<Option<velocity_domain::oauth::OAuthToken>> {
                sqlx::query_as::<$db, crate::rows::TokenRow>(sqlx::AssertSqlSafe(format!(
                    "SELECT {} FROM oauth_tokens WHERE token_hash = $1",
                    crate::sql_oauth::TOKEN_COLUMNS
                )))
                .bind(hash.as_bytes().to_vec())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| crate::error::classify(e, "token"))?
                .map(TryInto::try_into)
                .transpose()
            }

            async fn rotate_refresh_token(
                &self,
                id: &velocity_domain::oauth::TokenId,
                at: velocity_domain::Timestamp,
                tokens: &[velocity_domain::oauth::OAuthToken],
            ) -> velocity_domain::store::StoreResult<bool> {
                let claim = sqlx::query(
                    "UPDATE oauth_tokens SET rotated_at = $2 \
                     WHERE id = $1 AND kind = 'refresh' AND rotated_at IS NULL AND revoked_at IS NULL",
                )
                .bind(&id.0)
                .bind(at.0);
                self.claim_then_insert(claim, tokens, "token").await
            }

            async fn revoke_token(&self, id: &velocity_domain::oauth::TokenId, at: velocity_domain::Timestamp) -> velocity_domain::store::StoreResult<bool> {
                let change = sqlx::query("UPDATE oauth_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                    .bind(&id.0)
                    .bind(at.0);
                let affected = self
                    .execute_logged(change, velocity_domain::invalidation::Invalidation::AccessTokens, "token")
                    .await?;
                Ok(affected == 1)
            }

            async fn shared_secret(&self, name: &str, candidate: &[u8; 32]) -> velocity_domain::store::StoreResult<[u8; 32]> {
                let classify = |e| crate::error::classify(e, "secret");
                sqlx::query("INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                    .bind(name)
                    .bind(candidate.to_vec())
                    .execute(&self.pool)
                    .await
                    .map_err(classify)?;
                let value: Vec<u8> = sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
                    .bind(name)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(classify)?;
                <[u8; 32]>::try_from(value.as_slice())
                    .map_err(|_| velocity_domain::StoreError::Other(format!("server secret {name} is not 32 bytes")))
            }

            async fn revoke_family(&self, family_id: &velocity_domain::oauth::FamilyId, at: velocity_domain::Timestamp) -> velocity_domain::store::StoreResult<u64> {
                let change = sqlx::query("UPDATE oauth_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
                    .bind(&family_id.0)
                    .bind(at.0);
                let affected = self
                    .execute_logged(change, velocity_domain::invalidation::Invalidation::AccessTokens, "token")
                    .await?;
                Ok(affected)
            }
        }
    };
}

pub(crate) use impl_oauth_store;
