//! PostgreSQL: production, and the shared state of several replicas.

use std::sync::Arc;

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::Notify;

use crate::StorageOptions;
use crate::error::StorageError;
use crate::sql_oauth::impl_oauth_store;
use crate::sql_store::impl_store;

/// The NOTIFY channel invalidations are announced on.
pub const INVALIDATION_CHANNEL: &str = "velocity_invalidations";

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

    /// Wakes `notify` whenever another replica commits an invalidation, and
    /// once after every (re)connection, since notifications sent while the
    /// listener was away are lost (the log is not: the woken poll reads it).
    pub async fn listen_for_invalidations(&self, notify: Arc<Notify>) {
        loop {
            match PgListener::connect_with(&self.pool).await {
                Ok(mut listener) => match listener.listen(INVALIDATION_CHANNEL).await {
                    Ok(()) => {
                        notify.notify_one();
                        loop {
                            match listener.recv().await {
                                Ok(_) => notify.notify_one(),
                                Err(err) => {
                                    tracing::warn!(error = %err, "invalidation listener lost; reconnecting");
                                    break;
                                }
                            }
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "cannot LISTEN for invalidations"),
                },
                Err(err) => {
                    tracing::warn!(error = %err, "cannot connect the invalidation listener")
                }
            }
            notify.notify_one();
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl_store!(
    PostgresStore,
    sqlx::Postgres,
    Some("SELECT pg_notify('velocity_invalidations', '')")
);
impl_oauth_store!(PostgresStore, sqlx::Postgres);
