//! SQLite: the embedded default. One file, WAL mode, migrated at open.
//!
//! The group-commit writer (`crate::writer`) owns the two connections that
//! write: one through sqlx, and one through rusqlite for the grants
//! (`native`), never both in a transaction at once. A pool of read-only
//! connections reads. In WAL mode readers never wait for
//! the writer nor it for them, and with a single writer nothing waits for
//! the write lock either.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};

use velocity_domain::oauth::AuthorizationCode;
use velocity_domain::store::StoreResult;
use velocity_domain::{SecretHash, StoreError};

use crate::claim::Claim;
use crate::error::StorageError;
use crate::writer::{BoxFuture, Writer};
use crate::{Backend, SqlStore, StorageOptions};
use native::NativeConnection;

pub(crate) mod checkpoint;
#[allow(unsafe_code)]
mod gathered_wal;
pub(crate) mod native;

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

/// A WAL emptied by a checkpoint is cut back to this when reused.
const WAL_LIMIT: &str = "67108864";

/// The checkpointer checkpoints; a writer only should it stop.
const WAL_AUTOCHECKPOINT: &str = "20000";

/// The grants' connection's page cache, in KiB: twice SQLite's default,
/// for the index pages every grant reads. Not more: after a B-tree split,
/// which random inserts cause in most commits, SQLite walks the whole
/// cache at COMMIT (docs/performance.md, eighth sitting), and 64 MiB cost
/// more CPU a grant than its reads saved.
const GRANTS_CACHE_KIB: u32 = 4096;

/// The grants' connection's settings, as `PRAGMA …;` statements.
fn grants_pragmas() -> String {
    format!(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; \
         PRAGMA journal_size_limit = {WAL_LIMIT}; \
         PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}; \
         PRAGMA temp_store = MEMORY; PRAGMA cache_size = -{GRANTS_CACHE_KIB};"
    )
}

impl SqliteStore {
    /// A write connection to the database at `path` (migrated, in WAL
    /// mode) opened as the grants' connection is: the same VFS and
    /// settings. For `velocity-grant-floor` (crates/bench), which measures
    /// what a grant's rows cost SQLite with nothing else in the way; the
    /// store itself opens its own.
    pub fn grants_connection(path: &Path) -> Result<rusqlite::Connection, StorageError> {
        let busy_timeout = StorageOptions::default().sqlite_busy_timeout;
        native::connect(path, busy_timeout, &grants_pragmas()).map_err(StorageError::Native)
    }

    pub async fn open(url: &str, options: &StorageOptions) -> Result<Self, StorageError> {
        let common = SqliteConnectOptions::from_str(url)
            .map_err(StorageError::Connect)?
            .foreign_keys(true)
            .busy_timeout(options.sqlite_busy_timeout)
            // No `mmap_size`: a connection that finds the WAL changed since
            // its last transaction (under grant load, nearly every read)
            // unmaps the whole file and faults each page back in, which
            // cost more than the `pread`s it saves (docs/performance.md).
            .pragma("journal_size_limit", WAL_LIMIT);
        let write = common
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed token or revocation survives power loss too.
            .synchronous(SqliteSynchronous::Full)
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT);
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
        // After the migrations, which made the file and put it in WAL mode.
        // Its statement and savepoint journals (an insert that reads a
        // code's row, a batch run again with savepoints) stay in memory: on
        // disk each is a temporary file opened, unlinked and closed per
        // batch.
        let native = NativeConnection::open(
            write.get_filename(),
            options.sqlite_busy_timeout,
            &grants_pragmas(),
        );
        let native = match native {
            Ok(native) => native,
            Err(err) => {
                let _ = writer.close().await;
                pool.close().await;
                return Err(StorageError::Native(err));
            }
        };
        let writer = Writer::spawn(writer, native, write, BEGIN);
        let checkpointer = Checkpointer::spawn(checkpoint, writer.between_batches());
        Ok(SqlStore {
            pool,
            writer: Some(writer),
            checkpointer: Some(checkpointer),
            claims: None,
        })
    }
}

impl SqliteStore {
    fn writer(&self) -> StoreResult<&Writer> {
        self.writer
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("SQLite has no writer".to_owned()))
    }

    /// Runs `op`, which succeeds whole or leaves nothing behind (a single
    /// statement), on the writer with no savepoint of its own.
    pub(crate) async fn write<T, F>(&self, _what: &'static str, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>>
            + Send
            + 'static,
    {
        self.writer()?.submit_contained(op).await
    }

    /// Runs `op`, several statements, atomically: on the writer, in a
    /// savepoint of its batch.
    pub(crate) async fn write_atomic<T, F>(&self, _what: &'static str, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>>
            + Send
            + 'static,
    {
        self.writer()?.submit(op).await
    }
}

impl Backend for sqlx::Sqlite {
    /// Nothing to announce: SQLite has no channel to other processes, which
    /// find new entries by polling the log.
    async fn after_invalidation_logged(_: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        Ok(())
    }

    /// On the writer's locked handle, statement by statement
    /// (`native::run_claim`): no hop to sqlx's thread at all.
    async fn claim(store: &SqliteStore, claim: Claim) -> StoreResult<bool> {
        store
            .writer()?
            .submit_native(move |conn| native::run_claim(conn, &claim))
            .await
    }

    /// The claim and, if it won, the read of its code in the same visit to
    /// the grants' thread and the same transaction.
    async fn claim_code(
        store: &SqliteStore,
        claim: Claim,
        hash: &SecretHash,
    ) -> StoreResult<Option<AuthorizationCode>> {
        let hash = hash.as_bytes().to_vec();
        store
            .writer()?
            .submit_native(move |conn| {
                if !native::run_claim(conn, &claim)? {
                    return Ok(None);
                }
                native::code(conn, &hash).map(Some)
            })
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn grants_settings(conn: &rusqlite::Connection) -> StoreResult<[i64; 4]> {
        let pragma = |name: &str| -> StoreResult<i64> {
            conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
                .map_err(|e| native::classify(e, "pragma"))
        };
        Ok([
            pragma("synchronous")?,
            pragma("foreign_keys")?,
            pragma("temp_store")?,
            pragma("cache_size")?,
        ])
    }

    /// The grants' connection runs with the settings its guarantees rest
    /// on: every commit synced (the gathered WAL's flush depends on it),
    /// references checked, journals in memory, its page cache's size; and
    /// so does the one `grants_connection` opens for the grant floor.
    #[tokio::test]
    async fn the_grants_connection_has_its_settings() {
        let path = std::env::temp_dir().join(format!(
            "velocity-grants-settings-{}.db",
            std::process::id()
        ));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let store = SqliteStore::open(&url, &StorageOptions::default())
            .await
            .unwrap();
        let settings = store
            .writer()
            .unwrap()
            .between_batches()
            .run(|conn| grants_settings(conn))
            .await
            .unwrap();
        // FULL, on, MEMORY, and a size in KiB (negative).
        assert_eq!(settings, [2, 1, 2, -i64::from(GRANTS_CACHE_KIB)]);
        store.close().await;
        let floor = SqliteStore::grants_connection(&path).unwrap();
        assert_eq!(grants_settings(&floor).unwrap(), settings);
        drop(floor);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
