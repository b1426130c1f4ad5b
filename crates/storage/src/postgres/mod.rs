//! PostgreSQL: production, and the shared state of several replicas.

use std::sync::Arc;

use sqlx::postgres::{PgConnection, PgListener, PgPoolOptions};
use tokio::sync::Notify;

use crate::error::StorageError;
use crate::{Backend, SqlStore, StorageOptions};

/// The backend the shared SQL of `src/sql/` is compiled for here.
type Db = sqlx::Postgres;

#[path = "../sql/mod.rs"]
#[expect(
    clippy::duplicate_mod,
    reason = "by design: the shared SQL is compiled once per backend"
)]
mod sql;

/// The NOTIFY channel invalidations are announced on.
pub const INVALIDATION_CHANNEL: &str = "velocity_invalidations";

pub type PostgresStore = SqlStore<sqlx::Postgres>;

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
        // Writes take pooled connections: PostgreSQL has no single-writer
        // lock, and commits of concurrent transactions share fsyncs there.
        Ok(SqlStore {
            pool,
            writer: None,
            checkpointer: None,
        })
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
}

impl Backend for sqlx::Postgres {
    /// Wakes every replica listening on [`INVALIDATION_CHANNEL`]; PostgreSQL
    /// delivers it only if the transaction commits.
    async fn after_invalidation_logged(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(INVALIDATION_CHANNEL)
            .execute(conn)
            .await
            .map(|_| ())
    }
}
