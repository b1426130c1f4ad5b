//! PostgreSQL: production, and the shared state of several replicas.

use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::StorageOptions;
use crate::error::StorageError;
use crate::sql_oauth::impl_oauth_store;
use crate::sql_store::impl_store;

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn open(url: &str, options: &StorageOptions) -> Result<Self, StorageError> {
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect(url)
            .await
            .map_err(StorageError::Connect)?;
        sqlx::migrate!("../../migrations/postgres")
            .run(&pool)
            .await
            .map_err(StorageError::Migrate)?;
        Ok(PostgresStore { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl_store!(PostgresStore, sqlx::Postgres);
impl_oauth_store!(PostgresStore, sqlx::Postgres);
