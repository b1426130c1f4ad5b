//! SQLite: the embedded default. One file, WAL mode, migrated at open.
//!
//! One connection writes, owned by the group-commit writer (`crate::writer`);
//! a pool of read-only connections reads. In WAL mode readers never wait for
//! the writer nor it for them, and with a single writer nothing waits for
//! the write lock either.

use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};

use crate::error::StorageError;
use crate::writer::Writer;
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

/// Each batch takes the write lock up front, so no statement in it can
/// fail for want of the lock half-way (a deferred transaction would only
/// ask at its first write).
const BEGIN: &str = "BEGIN IMMEDIATE";

impl SqliteStore {
    pub async fn open(url: &str, options: &StorageOptions) -> Result<Self, StorageError> {
        let common = SqliteConnectOptions::from_str(url)
            .map_err(StorageError::Connect)?
            .foreign_keys(true)
            .busy_timeout(options.sqlite_busy_timeout);
        let write = common
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed token or revocation survives power loss too.
            .synchronous(SqliteSynchronous::Full);
        let mut writer = write.connect().await.map_err(StorageError::Connect)?;
        sqlx::migrate!("../../migrations/sqlite")
            .run(&mut writer)
            .await
            .map_err(StorageError::Migrate)?;
        // WAL is a property of the file, set above by the writer; readers
        // only read, and say so, so a bug cannot make one write.
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.clamp(1, 32))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(common.read_only(true))
            .await;
        let pool = match pool {
            Ok(pool) => pool,
            Err(err) => {
                let _ = writer.close().await;
                return Err(StorageError::Connect(err));
            }
        };
        let writer = Writer::spawn(writer, write, BEGIN);
        Ok(SqlStore {
            pool,
            writer: Some(writer),
        })
    }
}

impl Backend for sqlx::Sqlite {
    /// Nothing to announce: SQLite has no channel to other processes, which
    /// find new entries by polling the log.
    async fn after_invalidation_logged(_: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        Ok(())
    }
}
