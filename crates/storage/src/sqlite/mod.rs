//! SQLite: the embedded default. One file, WAL mode, migrated at open.

use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::StorageError;
use crate::{Backend, SqlStore, StorageOptions};

/// The backend the shared SQL of `src/sql/` is compiled for here.
type Db = sqlx::Sqlite;

#[path = "../sql/mod.rs"]
#[expect(
    clippy::duplicate_mod,
    reason = "by design: the shared SQL is compiled once per backend"
)]
mod sql;

pub type SqliteStore = SqlStore<sqlx::Sqlite>;

impl SqliteStore {
    pub async fn open(url: &str, options: &StorageOptions) -> Result<Self, StorageError> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(StorageError::Connect)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed token or revocation survives power loss too.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.clamp(1, 32))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(StorageError::Connect)?;
        sqlx::migrate!("../../migrations/sqlite")
            .run(&pool)
            .await
            .map_err(StorageError::Migrate)?;
        Ok(SqlStore { pool })
    }
}

impl Backend for sqlx::Sqlite {
    /// Nothing to announce: SQLite has no channel to other processes, which
    /// find new entries by polling the log.
    async fn after_invalidation_logged(_: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        Ok(())
    }
}
