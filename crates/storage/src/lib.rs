//! Storage for Velocity Auth: the domain's [`Store`] over sqlx, for SQLite
//! (the embedded default) and PostgreSQL (production, several replicas).
//!
//! One [`SqlStore`] serves both. The SQL is written once, in `src/sql/`,
//! and compiled for each backend by the backend's module (`sqlite`,
//! `postgres`), which keeps only what differs: connecting, migrations
//! (embedded and applied at open) and, through the crate's `Backend`
//! trait, announcing a new invalidation to other replicas.

mod error;
mod insert;
mod postgres;
mod rows;
mod sqlite;

use std::sync::Arc;

pub use error::StorageError;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
use velocity_domain::Store;

/// The domain's store over a sqlx connection pool of backend `DB`
/// ([`SqliteStore`] or [`PostgresStore`]).
pub struct SqlStore<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
}

impl<DB: sqlx::Database> SqlStore<DB> {
    /// The connection pool, for tests and tools that need raw SQL.
    pub fn pool(&self) -> &sqlx::Pool<DB> {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// What a backend adds to the shared SQL.
trait Backend: sqlx::Database {
    /// Runs in the transaction that has just appended to the invalidation
    /// log, before it commits.
    async fn after_invalidation_logged(conn: &mut Self::Connection) -> Result<(), sqlx::Error>;
}

/// The SQLite file used when no `DATABASE_URL` is given.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://velocity-auth.db";

#[derive(Clone, Debug)]
pub struct StorageOptions {
    pub max_connections: u32,
    pub acquire_timeout: std::time::Duration,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            max_connections: 16,
            acquire_timeout: std::time::Duration::from_secs(3),
        }
    }
}

/// An opened, migrated database, chosen by the URL's scheme.
#[derive(Clone)]
pub enum Database {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PostgresStore>),
}

impl Database {
    pub async fn open(url: &str, options: &StorageOptions) -> Result<Database, StorageError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Database::Postgres(Arc::new(
                PostgresStore::open(url, options).await?,
            )))
        } else if url.starts_with("sqlite:") {
            Ok(Database::Sqlite(Arc::new(
                SqliteStore::open(url, options).await?,
            )))
        } else {
            Err(StorageError::UnsupportedUrl)
        }
    }

    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Database::Sqlite(store) => store.clone(),
            Database::Postgres(store) => store.clone(),
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "sqlite",
            Database::Postgres(_) => "postgres",
        }
    }

    /// For backends that can push changes (PostgreSQL LISTEN/NOTIFY): a
    /// task that wakes `notify` when another replica logs an invalidation.
    pub fn spawn_invalidation_listener(
        &self,
        notify: Arc<tokio::sync::Notify>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        match self {
            Database::Postgres(store) => {
                let store = store.clone();
                Some(tokio::spawn(async move {
                    store.listen_for_invalidations(notify).await
                }))
            }
            Database::Sqlite(_) => None,
        }
    }

    pub async fn close(&self) {
        match self {
            Database::Sqlite(store) => store.close().await,
            Database::Postgres(store) => store.close().await,
        }
    }
}
