//! Storage for Velocity Auth: the domain's [`Store`] over sqlx, for SQLite
//! (the embedded default) and PostgreSQL (production, several replicas).
//!
//! One [`SqlStore`] serves both. The SQL is written once, in `src/sql/`,
//! and compiled for each backend by the backend's module (`sqlite`,
//! `postgres`), which keeps only what differs: connecting, migrations
//! (embedded and applied at open) and, through the crate's `Backend`
//! trait, announcing a new invalidation to other replicas.
//!
//! Writes are functions of one connection that never open a transaction
//! themselves; each backend's `write` and `write_atomic` decide where they
//! run. On SQLite every write goes to one task that owns the write
//! connections (sqlx's, and rusqlite's for the grants) and commits many at
//! once (`writer`); reads use a pool of read-only connections, so nothing
//! ever waits for SQLite's write lock.
//! On PostgreSQL a write takes a pooled connection (and a transaction when
//! it has several statements). A grant's write is data (`claim`), which
//! each backend runs its fastest way.

mod claim;
mod error;
mod insert;
mod postgres;
mod rows;
mod sqlite;
mod writer;

use std::sync::Arc;

pub use error::{ERROR_CLASSES, StorageError, error_counts};
pub use postgres::PostgresStore;
pub use postgres::claims::{ClaimStats, ClaimsHeld};
pub use sqlite::SqliteStore;
use velocity_domain::oauth::AuthorizationCode;
use velocity_domain::store::StoreResult;
use velocity_domain::{SecretHash, Store};
pub use writer::{WriterStats, WritesHeld};

use crate::claim::Claim;
use crate::writer::Writer;

/// The domain's store over sqlx for backend `DB` ([`SqliteStore`] or
/// [`PostgresStore`]).
pub struct SqlStore<DB: sqlx::Database> {
    /// Reads, and on PostgreSQL writes too. On SQLite its connections are
    /// read-only.
    pool: sqlx::Pool<DB>,
    /// SQLite: the one connection every write goes through, group-committed.
    writer: Option<Writer>,
    /// SQLite: copies the WAL into the file off the writer's commit path.
    checkpointer: Option<sqlite::Checkpointer>,
    /// PostgreSQL: sends the grants' claims several to a statement.
    claims: Option<postgres::claims::ClaimBatcher>,
}

impl<DB: sqlx::Database> SqlStore<DB> {
    /// The connection pool, for tests and tools that need raw SQL. On
    /// SQLite it only reads.
    pub fn pool(&self) -> &sqlx::Pool<DB> {
        &self.pool
    }

    /// Finishes queued writes, then closes every connection.
    pub async fn close(&self) {
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.close().await;
        }
        if let Some(claims) = &self.claims {
            claims.close().await;
        }
        self.pool.close().await;
    }

    /// What the group-commit writer has done (SQLite), `None` without one.
    pub fn writer_stats(&self) -> Option<&WriterStats> {
        self.writer.as_ref().map(Writer::stats)
    }

    /// What the claim batcher has done (PostgreSQL), `None` without one.
    pub fn claim_stats(&self) -> Option<&ClaimStats> {
        self.claims
            .as_ref()
            .map(postgres::claims::ClaimBatcher::stats)
    }

    /// The pool's connections now: open, of which idle, and the most it opens.
    pub fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
    }

    /// Writes waiting for the writer (SQLite; always 0 without one).
    pub fn queued_writes(&self) -> usize {
        self.writer.as_ref().map_or(0, Writer::queued)
    }

    /// Keeps the writer (SQLite) inside one transaction until the guard is
    /// released, so the writes submitted meanwhile run in that transaction
    /// together: how tests put racing claims in one batch. `None` without a
    /// writer.
    pub async fn hold_writes(&self) -> Option<WritesHeld> {
        match &self.writer {
            Some(writer) => Some(writer.hold().await),
            None => None,
        }
    }

    /// Keeps PostgreSQL's claims queued until the guard is released, so the
    /// claims submitted meanwhile go in one statement: how tests put claims
    /// together. `None` without a batcher.
    pub async fn hold_claims(&self) -> Option<ClaimsHeld> {
        match &self.claims {
            Some(claims) => Some(claims.hold().await),
            None => None,
        }
    }

    /// Claims waiting for a statement (PostgreSQL; always 0 without one).
    pub fn queued_claims(&self) -> usize {
        self.claims
            .as_ref()
            .map_or(0, postgres::claims::ClaimBatcher::queued)
    }

    /// Whether writes can be taken: false once the writer's task is gone.
    fn accepts_writes(&self) -> bool {
        self.writer.as_ref().is_none_or(Writer::is_running)
    }
}

/// A pool's connections at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// What a backend adds to the shared SQL.
trait Backend: sqlx::Database {
    /// Runs in the transaction that has just appended to the invalidation
    /// log, before it commits.
    async fn after_invalidation_logged(conn: &mut Self::Connection) -> Result<(), sqlx::Error>;

    /// Runs `claim` and, only if it changed a row, what it issues; whether
    /// it did. Either all of it happens or none of it does.
    async fn claim(store: &SqlStore<Self>, claim: Claim) -> StoreResult<bool>;

    /// As [`Self::claim`] for a claim on the code `hash`: the code as
    /// stored once the claim changed it, or `None`.
    async fn claim_code(
        store: &SqlStore<Self>,
        claim: Claim,
        hash: &SecretHash,
    ) -> StoreResult<Option<AuthorizationCode>>;
}

/// The SQLite file used when no `DATABASE_URL` is given.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://velocity-auth.db";

#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// Pooled connections: on SQLite the readers (its one writer apart).
    pub max_connections: u32,
    pub acquire_timeout: std::time::Duration,
    /// SQLite: how long a connection waits for a lock another *process*
    /// holds (the CLI writing while the server runs). Within one process
    /// there is one writer, and WAL readers take no lock a writer holds, so
    /// our own connections never wait for each other; tests set zero to
    /// prove it.
    pub sqlite_busy_timeout: std::time::Duration,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            max_connections: 16,
            acquire_timeout: std::time::Duration::from_secs(3),
            sqlite_busy_timeout: std::time::Duration::from_secs(5),
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

    /// The connection pool's use (on SQLite, the readers' pool; its one
    /// writer apart) and writes queued for the SQLite writer.
    pub fn pool_stats(&self) -> (PoolStats, usize) {
        match self {
            Database::Sqlite(store) => (store.pool_stats(), store.queued_writes()),
            Database::Postgres(store) => (store.pool_stats(), 0),
        }
    }

    /// What SQLite's group-commit writer has done; `None` on PostgreSQL.
    pub fn writer_stats(&self) -> Option<&WriterStats> {
        match self {
            Database::Sqlite(store) => store.writer_stats(),
            Database::Postgres(_) => None,
        }
    }

    /// What PostgreSQL's claim batcher has done; `None` on SQLite.
    pub fn claim_stats(&self) -> Option<&ClaimStats> {
        match self {
            Database::Postgres(store) => store.claim_stats(),
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
