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

mod checkpoint;

pub(crate) use checkpoint::Checkpointer;

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

/// How much of the file may be memory-mapped (address space, not memory).
const MMAP_BYTES: &str = "268435456";

impl SqliteStore {
    pub async fn open(url: &str, options: &StorageOptions) -> Result<Self, StorageError> {
        let common = SqliteConnectOptions::from_str(url)
            .map_err(StorageError::Connect)?
            .foreign_keys(true)
            .busy_timeout(options.sqlite_busy_timeout)
            // Pages of the file are read in place, not copied in by a
            // syscall each: a reader's page cache starts empty after every
            // commit, so this is most of what a read costs.
            .pragma("mmap_size", MMAP_BYTES)
            // A WAL emptied by a checkpoint is cut back to this when reused.
            .pragma("journal_size_limit", "67108864");
        let write = common
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed token or revocation survives power loss too.
            .synchronous(SqliteSynchronous::Full)
            // The checkpointer does this; the writer only should it stop.
            .pragma("wal_autocheckpoint", "20000");
        let checkpoint = common.clone();
        let mut writer = write.connect().await.map_err(StorageError::Connect)?;
        sqlx::migrate!("../../migrations/sqlite")
            .run(&mut writer)
            .await
            .map_err(StorageError::Migrate)?;
        // WAL is a property of the file, set above by the writer; readers
        // only read, and say so, so a bug cannot make one write.
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.clamp(1, 32))
            // A reader is a thread of this process on a local file: there
            // is no link to test, and the test (a ping) is a round trip to
            // that thread and back, doubling what a read costs.
            .test_before_acquire(false)
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
            checkpointer: Some(Checkpointer::spawn(checkpoint)),
        })
    }
}

impl Backend for sqlx::Sqlite {
    /// Nothing to announce: SQLite has no channel to other processes, which
    /// find new entries by polling the log.
    async fn after_invalidation_logged(_: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        Ok(())
    }

    /// SQLite has no data-modifying CTEs, but runs several statements in
    /// one call to the connection's thread: the claim, then each insert on
    /// the condition that the statement before it changed rows (`changes()`
    /// is the count of the last completed INSERT, UPDATE or DELETE), inside
    /// a savepoint of their own, so the whole is contained
    /// (`crate::writer`).
    fn claim_then(claim: &str, then: &[(String, String)]) -> String {
        let mut sql = format!("SAVEPOINT claim; {claim} RETURNING 1; ");
        for (insert, tail) in then {
            sql.push_str(&format!("{insert} WHERE changes() > 0{tail}; "));
        }
        sql.push_str("RELEASE claim");
        sql
    }

    /// A statement of the savepoint failed and the rest did not run: undo
    /// the ones before it. If even that fails, the transaction is gone, and
    /// the writer's next step says so.
    async fn after_failed_claim(conn: &mut SqliteConnection) {
        let _ = sqlx::raw_sql("ROLLBACK TO claim; RELEASE claim")
            .execute(conn)
            .await;
    }
}
